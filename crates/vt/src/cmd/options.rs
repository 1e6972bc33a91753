//! virt-install style option values: `key=value,key=value`, with
//! `"quoted values"` and values that contain commas (a `kernel_args` of
//! `console=ttyS0,115200`, a `peers=vm2,vm3` list): a comma starts a new
//! pair only when a known key and `=` follow it.

/// Splits `spec` into pairs; a bare word (no `=`) is a pair with an empty
/// key. Errors name an unknown key.
pub fn pairs(spec: &str, keys: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for piece in split_commas(spec) {
        let key = piece.split_once('=').map(|(k, _)| k);
        match key {
            Some(k) if keys.contains(&k) => {
                let v = piece[k.len() + 1..].to_string();
                out.push((k.to_string(), unquote(&v)));
            }
            _ if !out.is_empty() && out.last().is_some_and(|(k, _)| takes_commas(k)) => {
                if let Some((_, v)) = out.last_mut() {
                    v.push(',');
                    v.push_str(&unquote(&piece));
                }
            }
            Some(k) => {
                return Err(format!(
                    "unknown key '{k}' in '{spec}' (known: {})",
                    keys.join(", ")
                ))
            }
            None => out.push((String::new(), unquote(&piece))),
        }
    }
    Ok(out)
}

fn takes_commas(key: &str) -> bool {
    matches!(key, "kernel_args" | "cmdline" | "extra_args" | "peers")
}

/// Splits on commas outside double quotes.
fn split_commas(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
            ',' if !quoted => out.push(String::new()),
            _ => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

fn unquote(s: &str) -> String {
    s.replace('"', "")
}

/// Parses `on`/`yes`/`true`/`1` and `off`/`no`/`false`/`0`.
pub fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("{key}={v}: expected on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        pairs(s, &["kernel", "initrd", "kernel_args", "path", "size"]).unwrap()
    }

    #[test]
    fn plain_pairs() {
        assert_eq!(
            p("path=myvm.img,size=10"),
            [
                ("path".into(), "myvm.img".into()),
                ("size".into(), "10".into())
            ]
        );
    }

    #[test]
    fn kernel_args_keep_spaces_commas_and_equals() {
        let v = p(r#"kernel=/k,initrd=/i,kernel_args="console=ttyS0,115200 root=/dev/vda quiet""#);
        assert_eq!(v[0], ("kernel".into(), "/k".into()));
        assert_eq!(v[1], ("initrd".into(), "/i".into()));
        assert_eq!(
            v[2],
            (
                "kernel_args".into(),
                "console=ttyS0,115200 root=/dev/vda quiet".into()
            )
        );
        // The shell already removed the quotes.
        let v = p("kernel=/k,kernel_args=console=ttyS0,115200 panic=1");
        assert_eq!(v[1].1, "console=ttyS0,115200 panic=1");
    }

    #[test]
    fn unknown_keys_and_bare_words() {
        let e = pairs("path=a,bus=scsi", &["path"]).unwrap_err();
        assert!(e.contains("unknown key 'bus'"), "{e}");
        assert_eq!(
            pairs("none", &["bridge"]).unwrap(),
            [("".into(), "none".into())]
        );
        assert!(boolean("ro", "maybe").is_err());
    }
}
