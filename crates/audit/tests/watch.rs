//! fanotify watches on a real file: a `cat` spawned here is reported
//! with its pid, executable and uid (even though it exits at once), a
//! write, a chmod; a process reading the file thousands of times gives
//! one record and one summary, not thousands. Needs root (fanotify).

use std::io::{Read, Seek, Write};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use audit::fanotify::{Access, Kind, Watch, Watcher};

fn watcher() -> Option<Arc<Watcher>> {
    match Watcher::new() {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            eprintln!("skipped: fanotify_init: {e} (needs root)");
            None
        }
    }
}

fn next(rx: &mpsc::Receiver<Access>, what: impl Fn(&Access) -> bool) -> Access {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let a = rx.recv_timeout(left).expect("no such access reported");
        if what(&a) {
            return a;
        }
    }
}

#[test]
fn accesses_are_reported_with_pid_exe_and_uid_and_coalesced() {
    let Some(w) = watcher() else { return };
    let dir = std::env::temp_dir().join(format!("audit-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("image.raw");
    std::fs::write(&file, vec![1u8; 64 << 10]).unwrap();
    let other = dir.join("other.raw");
    std::fs::write(&other, b"x").unwrap();
    let watch = w
        .add(Watch {
            id: 0,
            path: file.clone(),
            perms: "rwa".parse().unwrap(),
            key: "img".into(),
            image_of: None,
        })
        .unwrap();
    assert_eq!(w.list(), vec![watch.clone()]);
    let (tx, rx) = mpsc::channel();
    let runner = w.clone();
    std::thread::spawn(move || {
        runner.run(Duration::from_millis(500), move |a| {
            let _ = tx.send(a);
        })
    });

    // A host process reading it, gone a moment later.
    let cat = std::process::Command::new("cat")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = cat.id() as i32;
    let status = cat.wait_with_output().unwrap().status;
    assert!(status.success());
    let open = next(&rx, |a| a.pid == pid && a.kind == Kind::Open);
    assert_eq!(open.watch.key, "img");
    assert!(
        open.exe.as_deref().is_some_and(|e| e.ends_with("/cat")),
        "{open:?}"
    );
    assert_eq!(open.uid, Some(unsafe_getuid()));
    let read = next(&rx, |a| a.pid == pid && a.kind == Kind::Read);
    assert_eq!(read.count, 1);

    // Thousands of reads by this process, in batches a little apart (the
    // kernel merges events still queued): one record, then one summary.
    let me = std::process::id() as i32;
    let mut f = std::fs::File::open(&file).unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..4 {
        for _ in 0..500 {
            f.rewind().unwrap();
            f.read_exact(&mut buf).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = next(&rx, |a| a.pid == me && a.kind == Kind::Read);
    assert!(!first.repeated);
    assert!(
        first.exe.as_deref().is_some_and(|e| e.contains("watch")),
        "{first:?}"
    );
    let summary = next(&rx, |a| a.pid == me && a.kind == Kind::Read);
    assert!(summary.repeated && summary.count >= 1, "{summary:?}");

    // A write and an attribute change.
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all(b"changed").unwrap();
    next(&rx, |a| a.pid == me && a.kind == Kind::Write);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    next(&rx, |a| a.pid == me && a.kind == Kind::Attr);

    // Another file is not watched; after remove, neither is this one.
    std::fs::read(&other).unwrap();
    assert!(w.remove(watch.id));
    assert!(!w.remove(watch.id));
    std::thread::sleep(Duration::from_millis(700));
    while rx.try_recv().is_ok() {}
    std::fs::read(&file).unwrap();
    std::fs::read(&other).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<Access> = rx.try_iter().filter(|a| !a.repeated).collect();
    assert!(late.is_empty(), "{late:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn unsafe_getuid() -> u32 {
    // SAFETY: getuid has no arguments and cannot fail.
    unsafe { libc::getuid() }
}

#[test]
fn a_missing_path_is_a_clear_error() {
    let Some(w) = watcher() else { return };
    let e = w
        .add(Watch {
            id: 0,
            path: "/nonexistent/disk.img".into(),
            perms: "r".parse().unwrap(),
            key: "k".into(),
            image_of: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/disk.img"), "{e}");
    assert!(w.list().is_empty());
}
