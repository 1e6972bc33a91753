//! `vt setmem NAME SIZE`: resizes a running guest through its balloon
//! (`PUT /vms/NAME/balloon` with the memory the guest should give back).

use api::control::{BalloonInfo, BalloonRequest};
use api::manager::VmStatus;

use super::client::{CliError, CliResult, Client};
use super::output::{print_json, Format};

/// Parses `SIZE`: MiB, or a number with `M` / `G` (MiB / GiB).
pub fn parse_mib(size: &str) -> Result<u64, String> {
    let (num, mult) = match size.strip_suffix(['G', 'g']) {
        Some(n) => (n, 1024),
        None => (size.strip_suffix(['M', 'm']).unwrap_or(size), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("size '{size}': expected MiB, or a number with M or G"))
}

pub fn run(c: &Client, name: &str, size: &str, format: Format) -> CliResult {
    let want = parse_mib(size).map_err(CliError::usage)?;
    let vm: VmStatus = c.json("GET", &format!("/vms/{name}"), None)?;
    let total = vm.definition.memory_mib;
    if want > total {
        return Err(CliError::usage(format!(
            "{name} has {total} MiB of memory: it cannot be given {want} MiB (at most its defined size)"
        )));
    }
    let req = BalloonRequest {
        size_mib: total - want,
    };
    let body = serde_json::to_vec(&req).map_err(|e| CliError::usage(e.to_string()))?;
    let info: BalloonInfo = c.json("PUT", &format!("/vms/{name}/balloon"), Some(body))?;
    match format {
        Format::Json => print_json(&info),
        Format::Table => println!(
            "{name}: {want} MiB asked of {total} MiB (balloon {} MiB; the guest holds {} MiB in it now)",
            info.size_mib, info.actual_mib
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_mib;

    #[test]
    fn sizes() {
        assert_eq!(parse_mib("512"), Ok(512));
        assert_eq!(parse_mib("512M"), Ok(512));
        assert_eq!(parse_mib("2G"), Ok(2048));
        assert!(parse_mib("").is_err());
        assert!(parse_mib("1T").is_err());
        assert!(parse_mib("-1").is_err());
        assert!(parse_mib(&format!("{}G", u64::MAX)).is_err());
    }
}
