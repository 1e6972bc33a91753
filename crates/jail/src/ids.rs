//! The uid/gid range the manager owns: one id per running VM, never one a
//! host user or group has (passwd(5), group(5)).

use std::path::Path;

/// Default first id of the range: high above normal users and
/// systemd's dynamic and container ranges (which end below 0x7000_0000).
pub const DEFAULT_BASE: u32 = 0x7000_0000;
/// Ids in the range: at most this many VMs run at once.
pub const RANGE: u32 = 65_536;

/// A range that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("the VM uid range must start above 65535 and end below 4294967294 (got {0})")]
    Bounds(u32),
    #[error("the VM uid range {base}..{end} holds {kind} '{name}' ({id}) of {file}: choose another --vm-uid-base")]
    Collision {
        base: u32,
        end: u64,
        kind: &'static str,
        name: String,
        id: u32,
        file: String,
    },
}

/// The files [`check_range`] reads: passwd(5), group(5), subuid(5) and
/// subgid(5) (`name:first:count` ranges handed to user namespaces).
#[derive(Debug, Clone)]
pub struct IdFiles<'a> {
    pub passwd: &'a Path,
    pub group: &'a Path,
    pub subuid: &'a Path,
    pub subgid: &'a Path,
}

impl IdFiles<'static> {
    /// The host's own files under /etc.
    pub fn host() -> Self {
        IdFiles {
            passwd: Path::new("/etc/passwd"),
            group: Path::new("/etc/group"),
            subuid: Path::new("/etc/subuid"),
            subgid: Path::new("/etc/subgid"),
        }
    }
}

/// Checks that `[base, base + RANGE)` is valid and that no user, group or
/// subordinate id range in `files` has an id in it (unreadable files count
/// as empty). Users only a network directory (LDAP, sssd) knows are not
/// seen: choose a base outside their ranges.
pub fn check_range(base: u32, files: &IdFiles) -> Result<(), IdError> {
    let end = u64::from(base) + u64::from(RANGE);
    if base <= 65_535 || end > 0xffff_fffe {
        return Err(IdError::Bounds(base));
    }
    for (file, kind) in [
        (files.subuid, "subordinate uids"),
        (files.subgid, "subordinate gids"),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let mut f = line.split(':');
            let (Some(name), Some(first), Some(count)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let (Ok(first), Ok(count)) = (first.parse::<u64>(), count.trim().parse::<u64>()) else {
                continue;
            };
            if first < end && first.saturating_add(count) > u64::from(base) {
                return Err(IdError::Collision {
                    base,
                    end,
                    kind,
                    name: name.to_string(),
                    id: u32::try_from(first).unwrap_or(u32::MAX),
                    file: file.display().to_string(),
                });
            }
        }
    }
    let (passwd, group) = (files.passwd, files.group);
    for (file, kind) in [(passwd, "user"), (group, "group")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let mut f = line.split(':');
            let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(id) = id.parse::<u32>() else { continue };
            if u64::from(id) >= u64::from(base) && u64::from(id) < end {
                return Err(IdError::Collision {
                    base,
                    end,
                    kind,
                    name: name.to_string(),
                    id,
                    file: file.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_and_bounds() {
        let dir = std::env::temp_dir().join(format!("vt-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (p, g) = (dir.join("passwd"), dir.join("group"));
        std::fs::write(
            &p,
            "root:x:0:0::/root:/bin/sh\nvm:x:1879048200:1::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(&g, "root:x:0:\n").unwrap();
        let (su, sg) = (dir.join("subuid"), dir.join("subgid"));
        std::fs::write(&su, "alice:100000:65536\n").unwrap();
        let files = IdFiles {
            passwd: &p,
            group: &g,
            subuid: &su,
            subgid: &sg,
        };
        let e = check_range(DEFAULT_BASE, &files).unwrap_err();
        assert!(e.to_string().contains("user 'vm' (1879048200)"), "{e}");
        assert!(check_range(DEFAULT_BASE + RANGE, &files).is_ok());
        assert_eq!(check_range(1000, &files), Err(IdError::Bounds(1000)));
        assert!(check_range(u32::MAX - 10, &files).is_err());
        // A subordinate range overlapping ours (rootless containers).
        let e = check_range(100_000 + 60_000, &files).unwrap_err();
        assert!(e.to_string().contains("subordinate uids 'alice'"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
