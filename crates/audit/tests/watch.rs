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

/// A temporary directory with a VM image `img` and an admin-watched
/// `secret`, both watched by `w` (the image with `image_of` set).
fn two_watches(w: &Watcher, tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("audit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (img, secret) = (dir.join("img"), dir.join("secret"));
    std::fs::write(&img, b"i").unwrap();
    std::fs::write(&secret, b"s").unwrap();
    w.add(Watch {
        id: 0,
        path: img.clone(),
        perms: "rw".parse().unwrap(),
        key: "image:vm".into(),
        image_of: Some("vm".into()),
    })
    .unwrap();
    w.add(Watch {
        id: 0,
        path: secret.clone(),
        perms: "r".parse().unwrap(),
        key: "secret".into(),
        image_of: None,
    })
    .unwrap();
    (img, secret)
}

/// A `cat` of `path`, and whether it ended within `within`.
fn cat(path: &std::path::Path) -> std::process::Child {
    std::process::Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn ends_within(c: &mut std::process::Child, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if c.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn image_openers_never_wait_and_closing_frees_waiting_openers() {
    let Some(w) = watcher() else { return };
    let (img, secret) = two_watches(&w, "stall");
    // Nobody reads events (a stalled watcher). An image's opener goes on.
    let mut c = cat(&img);
    assert!(
        ends_within(&mut c, Duration::from_secs(5)),
        "image open waited"
    );
    // An admin watch's opener waits for the answer (a permission event)...
    let mut waiting = cat(&secret);
    assert!(!ends_within(&mut waiting, Duration::from_millis(500)));
    // ...until the groups are closed: the kernel allows it.
    w.close();
    assert!(ends_within(&mut waiting, Duration::from_secs(5)));
    assert!(waiting.wait().unwrap().success());
    assert!(w
        .add(Watch {
            id: 0,
            ..w.list()[0].clone()
        })
        .is_err());
    std::fs::remove_dir_all(img.parent().unwrap()).unwrap();
}

#[test]
fn symbolic_links_are_not_watched() {
    let Some(w) = watcher() else { return };
    let dir = std::env::temp_dir().join(format!("audit-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("target"), b"t").unwrap();
    std::os::unix::fs::symlink(dir.join("target"), dir.join("link")).unwrap();
    let e = w
        .add(Watch {
            id: 0,
            path: dir.join("link"),
            perms: "r".parse().unwrap(),
            key: "image:vm".into(),
            image_of: Some("vm".into()),
        })
        .unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(w.list().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dead_watch_thread_leaves_no_opener_waiting() {
    let Some(w) = watcher() else { return };
    let (img, secret) = two_watches(&w, "dead");
    let (tx, rx) = mpsc::channel();
    let runner = w.clone();
    let t = std::thread::spawn(move || {
        runner.run(Duration::from_millis(100), move |a| {
            let _ = tx.send(a);
        })
    });
    // A transient error (out of descriptors) is retried: events still come.
    w.inject_error(libc::EMFILE);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = cat(&secret);
    assert!(ends_within(&mut c, Duration::from_secs(5)));
    next(&rx, |a| a.kind == Kind::Open && a.pid == c.id() as i32);
    // A fatal one ends the thread, which closes the groups.
    w.inject_error(libc::EBADF);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !t.is_finished() {
        assert!(std::time::Instant::now() < deadline, "run did not return");
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = t.join().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    // Nobody answers any more, yet nobody waits.
    for p in [&secret, &img] {
        let mut c = cat(p);
        assert!(ends_within(&mut c, Duration::from_secs(5)), "{p:?} waited");
    }
    std::fs::remove_dir_all(img.parent().unwrap()).unwrap();
}
