//! Sizes as qemu-img reads them: a number (decimals allowed) with an
//! optional suffix, powers of 1024: `B`, `K`/`k`, `M`, `G`, `T`, `P`, `E`.

use anyhow::{anyhow, bail};

/// Parses `10G`, `512`, `1.5M`; the result is rounded down to a byte.
pub fn parse(v: &str) -> anyhow::Result<u64> {
    let bad = || anyhow!("invalid size '{v}' (a number with K, M, G, T, P or E)");
    let (num, shift) = match v.char_indices().last() {
        Some((i, c)) => match c.to_ascii_uppercase() {
            'B' => (&v[..i], 0),
            'K' => (&v[..i], 10),
            'M' => (&v[..i], 20),
            'G' => (&v[..i], 30),
            'T' => (&v[..i], 40),
            'P' => (&v[..i], 50),
            'E' => (&v[..i], 60),
            _ => (v, 0),
        },
        None => return Err(bad()),
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let bytes = f * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `SIZE`, `+SIZE` or `-SIZE` relative to `current` (resize).
pub fn relative(current: u64, v: &str) -> anyhow::Result<u64> {
    if let Some(d) = v.strip_prefix('+') {
        current
            .checked_add(parse(d)?)
            .ok_or_else(|| anyhow!("size overflows"))
    } else if let Some(d) = v.strip_prefix('-') {
        match current.checked_sub(parse(d)?) {
            Some(n) if n > 0 => Ok(n),
            _ => bail!("cannot shrink below zero"),
        }
    } else {
        parse(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("512").unwrap(), 512);
        assert_eq!(parse("64k").unwrap(), 65536);
        assert_eq!(parse("1M").unwrap(), 1 << 20);
        assert_eq!(parse("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse("2T").unwrap(), 2 << 40);
        assert!(parse("").is_err());
        assert!(parse("G").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99999999E").is_err());
        assert_eq!(relative(1 << 20, "+1M").unwrap(), 2 << 20);
        assert_eq!(relative(2 << 20, "-1M").unwrap(), 1 << 20);
        assert!(relative(1 << 20, "-1M").is_err());
        assert_eq!(relative(1, "4K").unwrap(), 4096);
    }
}
