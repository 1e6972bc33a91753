//! Named sections of BENCHMARKS.md that a benchmark owns and rewrites in
//! place (between `<!-- vt-bench NAME: begin -->` and `... end -->`), so
//! that `vt-bench all` and the others do not erase each other's results.

use std::path::Path;

use anyhow::Context;

pub fn begin(name: &str) -> String {
    format!("<!-- vt-bench {name}: begin -->")
}

pub fn end(name: &str) -> String {
    format!("<!-- vt-bench {name}: end -->")
}

/// `body` wrapped in the section's markers.
pub fn wrap(name: &str, body: &str) -> String {
    format!("{}\n{}\n{}\n", begin(name), body.trim_end(), end(name))
}

/// Replaces section `name` of `out` with `section` (already wrapped), or
/// appends it.
pub fn write(out: &Path, name: &str, section: &str) -> anyhow::Result<()> {
    let (b, e) = (begin(name), end(name));
    let old = std::fs::read_to_string(out).unwrap_or_default();
    let new = match (old.find(&b), old.find(&e)) {
        (Some(bi), Some(ei)) if ei > bi => format!(
            "{}{section}{}",
            &old[..bi],
            &old[ei + e.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n\n{section}", old.trim_end()),
    };
    std::fs::write(out, new).with_context(|| format!("writing {}", out.display()))
}

/// Writes `section` (already wrapped) into `out` in place of section
/// `name`, or prints it when there is no `out`.
pub fn emit(out: Option<&Path>, name: &str, section: &str) -> anyhow::Result<()> {
    match out {
        Some(out) => write(out, name, section),
        None => {
            print!("{section}");
            Ok(())
        }
    }
}

/// Section `name` of `out` as it is now, markers included.
pub fn existing(out: &Path, name: &str) -> Option<String> {
    let (b, e) = (begin(name), end(name));
    let old = std::fs::read_to_string(out).ok()?;
    let bi = old.find(&b)?;
    let ei = old.find(&e)?;
    (ei > bi).then(|| format!("{}\n", &old[bi..ei + e.len()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_and_appended_once() {
        let p = std::env::temp_dir().join(format!("vt-section-{}.md", std::process::id()));
        std::fs::write(&p, "# Report\n\ntext\n").unwrap();
        write(&p, "io", &wrap("io", "one")).unwrap();
        write(&p, "api", &wrap("api", "A")).unwrap();
        write(&p, "io", &wrap("io", "two")).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s.matches("vt-bench io: begin").count(), 1);
        assert!(s.contains("two") && !s.contains("one") && s.contains("A"));
        assert!(
            s.find("two").unwrap() < s.find("A").unwrap(),
            "kept its place"
        );
        assert_eq!(
            existing(&p, "api").unwrap(),
            format!("{}\n", wrap("api", "A").trim_end())
        );
        let _ = std::fs::remove_file(&p);
    }
}
