//! The shared libraries and dynamic loader an ELF binary needs, from `ldd`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LibsError {
    #[error("cannot run ldd on {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ldd {binary}: {message}")]
    Ldd { binary: PathBuf, message: String },
}

/// Absolute host paths of the libraries (and the loader) `binary` needs;
/// empty for a static binary. They go to the same paths in the guest.
pub fn needed(binary: &Path) -> Result<Vec<PathBuf>, LibsError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| LibsError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = format!("{stdout}{stderr}");
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(LibsError::Ldd {
            binary: binary.to_path_buf(),
            message: text.trim().to_string(),
        });
    }
    let (libs, missing) = parse(&stdout);
    if !missing.is_empty() {
        return Err(LibsError::Ldd {
            binary: binary.to_path_buf(),
            message: format!("libraries not found: {}", missing.join(", ")),
        });
    }
    Ok(libs)
}

/// Parses `ldd` output into (absolute paths, names marked "not found").
pub fn parse(ldd: &str) -> (Vec<PathBuf>, Vec<String>) {
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in ldd.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    missing.push(name.trim().to_string());
                    continue;
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            // The loader line: "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso has no path.
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            let p = PathBuf::from(path);
            if !libs.contains(&p) {
                libs.push(p);
            }
        }
    }
    (libs, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd4d1e8000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0a)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f09)\n\
            \tlibfoo.so => not found\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0b)\n";
        let (libs, missing) = parse(text);
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(missing, ["libfoo.so"]);
    }

    #[test]
    fn finds_libs_of_a_host_binary() {
        let libs = needed(Path::new("/bin/sh")).unwrap();
        assert!(libs.iter().any(|p| p.to_string_lossy().contains("libc.so")));
        assert!(libs
            .iter()
            .any(|p| p.to_string_lossy().contains("ld-linux")));
    }
}
