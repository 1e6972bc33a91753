//! Man pages generated from the clap definitions (`vt man --dir`), one per
//! verb, each rendered by groff without an error and by `man -l`; `--help`
//! carries examples.

use std::path::PathBuf;
use std::process::Command;

fn vt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vt"))
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vt-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn every_verb_has_a_man_page_that_renders() {
    let dir = scratch();
    let out = vt().arg("man").arg("--dir").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "vt.1",
        "vt-create.1",
        "vt-edit.1",
        "vt-define.1",
        "vt-dumpdef.1",
        "vt-autostart.1",
        "vt-shutdown.1",
        "vt-reboot.1",
        "vt-reset.1",
        "vt-net-define.1",
        "vt-image-convert.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "no {want} in {pages:?}");
    }
    // The hidden generator has no page.
    assert!(!pages.iter().any(|p| p == "vt-man.1"));
    let Some(groff) = which("groff") else {
        eprintln!("skipped rendering: no groff");
        return;
    };
    for p in &pages {
        let out = Command::new(&groff)
            .args(["-man", "-Tutf8", "-z"])
            .arg(dir.join(p))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // A long unbreakable option spec only cannot be justified: a
        // typesetting note, not an error in the page.
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("cannot adjust line"))
            .collect();
        assert!(out.status.success() && errors.is_empty(), "{p}: {err}");
    }
    if let Some(man) = which("man") {
        let out = Command::new(man)
            .arg("-l")
            .arg(dir.join("vt-create.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("vt-create - Define a VM"), "{text}");
        assert!(text.contains("--network"), "{text}");
        assert!(text.contains("Examples:"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_has_examples() {
    for args in [
        &["--help"][..],
        &["create", "--help"],
        &["edit", "--help"],
        &["shutdown", "--help"],
    ] {
        let out = vt().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(text.contains("Example"), "{args:?}: {text}");
        assert!(text.contains("  vt "), "{args:?}: {text}");
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
