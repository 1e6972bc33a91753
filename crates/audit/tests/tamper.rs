//! The trail against each kind of tampering: `verify` finds it and says
//! where (file, line, record); a trail left alone verifies clean across
//! rotation; `verify` never panics on garbage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use audit::record::{decode, Record};
use audit::{verify, Config, Entry, Filter, Key, Outcome, Trail};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn trail(&self) -> PathBuf {
        self.0.join("trail")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key() -> Key {
    Key::from_bytes([7; 32])
}

fn config(dir: &Path, max_file_bytes: u64, max_files: usize) -> Config {
    Config {
        max_file_bytes,
        max_files,
        checkpoint_every: 10,
        checkpoint_interval: Duration::from_secs(3600),
        ..Config::new(dir.to_path_buf(), key())
    }
}

fn entry(i: u32) -> Entry {
    Entry {
        uid: Some(1000 + i % 3),
        gid: Some(1000),
        pid: Some(4000 + i as i32),
        vm: Some(format!("vm{}", i % 2)),
        key: i.is_multiple_of(5).then(|| "img".to_string()),
        ..Entry::new(
            if i.is_multiple_of(4) { "start" } else { "stop" },
            if i.is_multiple_of(7) {
                Outcome::Denied
            } else {
                Outcome::Ok
            },
            format!("request {i}"),
        )
    }
}

/// A trail of `n` records (plus its own), in one file.
fn make(dir: &Dir, n: u32) -> PathBuf {
    let mut t = Trail::open(config(&dir.trail(), 1 << 30, 4)).unwrap();
    for i in 0..n {
        t.append(entry(i)).unwrap();
    }
    dir.trail().join("trail-000001.log")
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.join("\n") + "\n").unwrap();
}

fn check(dir: &Dir) -> audit::Report {
    verify(&dir.trail(), Some(&key())).unwrap()
}

/// The `audit.open` records that found something wrong.
fn failed_opens(dir: &Dir) -> Vec<Record> {
    let f = Filter {
        action: Some("audit.open".into()),
        result: Some(Outcome::Failed),
        ..Filter::default()
    };
    audit::search(&dir.trail(), &f, 10).unwrap()
}

/// The one problem (or the first) and the report, printed on failure.
fn first(r: &audit::Report) -> &audit::Problem {
    assert!(!r.ok, "expected a problem: {r:?}");
    &r.problems[0]
}

#[test]
fn an_untouched_trail_verifies_across_rotation_and_expiry() {
    let dir = Dir::new("clean");
    let mut t = Trail::open(config(&dir.trail(), 4096, 3)).unwrap();
    for i in 0..300 {
        t.append(entry(i)).unwrap();
    }
    drop(t);
    let files = audit::files::list(&dir.trail()).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files[0].0 > 1, "old files were expired: {files:?}");
    let r = check(&dir);
    assert!(r.ok, "{r:?}");
    assert!(r.seals_checked && r.checkpoints >= 3, "{r:?}");
    // Reopening continues the chain.
    let mut t = Trail::open(config(&dir.trail(), 4096, 3)).unwrap();
    t.append(entry(1)).unwrap();
    drop(t);
    let r = check(&dir);
    assert!(r.ok, "{r:?}");
    // Without the key, the chain is still checked.
    let r = verify(&dir.trail(), None).unwrap();
    assert!(r.ok && !r.seals_checked && r.checkpoints == 0, "{r:?}");
}

#[test]
fn an_edited_record_is_found() {
    let dir = Dir::new("edit");
    let f = make(&dir, 30);
    let mut l = lines(&f);
    assert!(l[5].contains("\"uid\":"));
    l[5] = l[5].replacen("\"result\":\"ok\"", "\"result\":\"denied\"", 1);
    l[5] = l[5].replacen("\"result\":\"denied\"", "\"result\":\"failed\"", 1);
    write_lines(&f, &l);
    let r = check(&dir);
    let p = first(&r);
    assert_eq!(
        (p.file.as_str(), p.line, p.seq),
        ("trail-000001.log", 6, Some(6)),
        "{r:?}"
    );
    assert!(p.what.contains("edited"), "{p}");
    assert_eq!(r.problems.len(), 1, "{r:?}");
}

#[test]
fn a_deleted_record_is_found() {
    let dir = Dir::new("delete");
    let f = make(&dir, 30);
    let mut l = lines(&f);
    l.remove(9); // record 10
    write_lines(&f, &l);
    let r = check(&dir);
    let p = first(&r);
    assert_eq!((p.line, p.seq), (10, Some(11)), "{r:?}");
    assert!(p.what.contains("record 10 missing"), "{p}");
}

#[test]
fn reordered_records_are_found() {
    let dir = Dir::new("reorder");
    let f = make(&dir, 30);
    let mut l = lines(&f);
    l.swap(14, 15); // records 15 and 16
    write_lines(&f, &l);
    let r = check(&dir);
    let p = first(&r);
    assert_eq!((p.line, p.seq), (15, Some(16)), "{r:?}");
    assert!(p.what.contains("record 15 missing"), "{r:?}");
    assert!(
        r.problems
            .iter()
            .any(|p| p.line == 16 && p.what.contains("out of order")),
        "{r:?}"
    );
}

#[test]
fn an_inserted_record_is_found_even_with_the_chain_rebuilt() {
    let dir = Dir::new("insert");
    let f = make(&dir, 30);
    let l = lines(&f);
    // A copy of an old record put in later: out of order.
    let mut copy = l.clone();
    copy.insert(20, l[3].clone());
    write_lines(&f, &copy);
    let r = check(&dir);
    let p = first(&r);
    assert_eq!((p.line, p.seq), (21, Some(4)), "{r:?}");
    assert!(p.what.contains("out of order"), "{p}");

    // A forged record, and every later record renumbered and re-hashed
    // (what someone without the key can do): the chain is consistent, so
    // only the seals show it.
    let mut forged: Vec<Record> = l.iter().map(|s| decode(s.as_bytes()).unwrap().0).collect();
    let mut fake = forged[4].clone();
    fake.entry.detail = "nothing happened".into();
    forged.insert(5, fake);
    let mut prev = audit::record::GENESIS.to_string();
    let mut out = Vec::new();
    for (i, r) in forged.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
        r.prev = prev.clone();
        let (line, hash) = r.encode();
        out.push(line);
        prev = hash;
    }
    write_lines(&f, &out);
    let unkeyed = verify(&dir.trail(), None).unwrap();
    // Without the key only the head's record number gives it away.
    assert!(
        unkeyed.problems.iter().all(|p| p.file == "head"),
        "{unkeyed:?}"
    );
    let r = check(&dir);
    let p = first(&r);
    assert_eq!(
        (p.line, p.seq),
        (12, Some(12)),
        "the first checkpoint after it: {r:?}"
    );
    assert!(p.what.contains("seal is wrong"), "{p}");
}

#[test]
fn truncation_is_found() {
    let dir = Dir::new("truncate");
    let f = make(&dir, 30);
    let full = std::fs::read(&f).unwrap();
    // Cut inside the last record.
    std::fs::write(&f, &full[..full.len() - 20]).unwrap();
    let r = check(&dir);
    let n = lines(&f).len() as u64;
    let p = first(&r);
    assert_eq!((p.file.as_str(), p.line), ("trail-000001.log", n), "{r:?}");
    assert!(p.what.contains("cut off"), "{p}");
    // Whole records cut from the end: the sealed head tells.
    let mut l = lines(&f);
    l.truncate(25);
    write_lines(&f, &l);
    let r = check(&dir);
    let p = first(&r);
    assert_eq!(p.file, "head", "{r:?}");
    assert!(p.what.contains("records 26-"), "{p}");
    assert!(p.what.contains("truncated"), "{p}");
    // vtd reopening it writes that into the trail for good.
    let t = Trail::open(config(&dir.trail(), 1 << 30, 4)).unwrap();
    drop(t);
    let found = failed_opens(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].entry.detail.contains("the head named record"),
        "{found:?}"
    );
}

#[test]
fn a_record_cut_by_a_crash_is_reported_once_and_the_trail_goes_on() {
    let dir = Dir::new("crash");
    let f = make(&dir, 20);
    let full = std::fs::read(&f).unwrap();
    let cut = full.len() - 30;
    std::fs::write(&f, &full[..cut]).unwrap();
    let n = full[..cut].iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let mut t = Trail::open(config(&dir.trail(), 1 << 30, 4)).unwrap();
    t.append(entry(99)).unwrap();
    drop(t);
    // The damage stays visible where it is; nothing after it is blamed.
    let r = check(&dir);
    assert_eq!(r.problems.len(), 1, "{r:?}");
    let p = &r.problems[0];
    assert_eq!((p.file.as_str(), p.line), ("trail-000001.log", n), "{r:?}");
    assert!(p.what.contains("cut off"), "{p}");
    assert!(dir.trail().join("trail-000002.log").exists());
    let opened = failed_opens(&dir);
    assert!(
        opened
            .iter()
            .any(|r| r.entry.detail.contains("ends in a damaged record")),
        "{opened:?}"
    );
}

#[test]
fn a_removed_rotated_file_is_found() {
    let dir = Dir::new("rmfile");
    let mut t = Trail::open(config(&dir.trail(), 2048, 100)).unwrap();
    for i in 0..100 {
        t.append(entry(i)).unwrap();
    }
    drop(t);
    let files = audit::files::list(&dir.trail()).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    assert!(check(&dir).ok);
    // A middle file.
    std::fs::remove_file(&files[2].1).unwrap();
    let r = check(&dir);
    let p = first(&r);
    assert_eq!((p.file.as_str(), p.line), ("trail-000004.log", 0), "{r:?}");
    assert!(p.what.contains("trail-000003.log missing"), "{p}");
    // The oldest file, which no rotation record expired.
    let dir = Dir::new("rmfirst");
    let mut t = Trail::open(config(&dir.trail(), 2048, 100)).unwrap();
    for i in 0..100 {
        t.append(entry(i)).unwrap();
    }
    drop(t);
    std::fs::remove_file(dir.trail().join("trail-000001.log")).unwrap();
    let r = check(&dir);
    let p = first(&r);
    assert_eq!(p.file, "trail-000002.log", "{r:?}");
    assert!(p.what.contains("no rotation record"), "{p}");
}

#[test]
fn search_filters() {
    let dir = Dir::new("search");
    make(&dir, 40);
    let s = |f: Filter| audit::search(&dir.trail(), &f, 1000).unwrap();
    let all = s(Filter::default());
    assert!(all.len() > 40);
    let by_vm = s(Filter {
        vm: Some("vm1".into()),
        ..Filter::default()
    });
    assert_eq!(by_vm.len(), 20);
    assert!(by_vm.iter().all(|r| r.entry.vm.as_deref() == Some("vm1")));
    let f = Filter {
        action: Some("start".into()),
        uid: Some(1001),
        result: Some(Outcome::Ok),
        ..Filter::default()
    };
    let got = s(f.clone());
    let want: Vec<u32> = (0..40)
        .filter(|i| i % 4 == 0 && i % 3 == 1 && i % 7 != 0)
        .collect();
    assert_eq!(got.len(), want.len(), "{got:?}");
    assert!(got.iter().all(|r| f.matches(r)));
    assert_eq!(
        s(Filter {
            key: Some("img".into()),
            ..Filter::default()
        })
        .len(),
        8
    );
    // Actions match by prefix up to a dot.
    assert!(!s(Filter {
        action: Some("audit".into()),
        ..Filter::default()
    })
    .is_empty());
    assert!(s(Filter {
        action: Some("sta".into()),
        ..Filter::default()
    })
    .is_empty());
    // Time window and limit (the newest).
    let mid = all[20].time_ms;
    assert!(s(Filter {
        since_ms: Some(mid),
        ..Filter::default()
    })
    .iter()
    .all(|r| r.time_ms >= mid));
    assert!(s(Filter {
        until_ms: Some(0),
        ..Filter::default()
    })
    .is_empty());
    let last3 = audit::search(&dir.trail(), &Filter::default(), 3).unwrap();
    assert_eq!(last3.len(), 3);
    assert_eq!(last3[2].seq, all.last().unwrap().seq);
}

/// Records with the largest numbers a forger could write (each with a
/// valid hash of its own): reported, no overflow.
#[test]
fn extreme_numbers_do_not_overflow() {
    let dir = Dir::new("extreme");
    let f = make(&dir, 3);
    let mut l = lines(&f);
    let mut r = decode(l[1].as_bytes()).unwrap().0;
    r.seq = u64::MAX;
    r.expired = Some(audit::record::Expired {
        file: u64::MAX,
        last_hash: "x".into(),
    });
    l[1] = r.encode().0;
    write_lines(&f, &l);
    std::fs::write(
        dir.trail().join("head"),
        format!("{{\"seq\":{},\"hash\":\"\",\"seal\":\"\"}}", u64::MAX),
    )
    .unwrap();
    let r = check(&dir);
    assert!(!r.ok, "{r:?}");
    let r = verify(&dir.trail(), None).unwrap();
    assert!(!r.ok, "{r:?}");
    // vtd reopening it refuses to go on rather than wrap around.
    let l = lines(&f);
    let last = decode(l.last().unwrap().as_bytes()).unwrap().0;
    let mut top = last.clone();
    top.seq = u64::MAX;
    top.prev = decode(l.last().unwrap().as_bytes()).unwrap().1;
    let mut all = l.clone();
    all.push(top.encode().0);
    write_lines(&f, &all);
    assert!(Trail::open(config(&dir.trail(), 1 << 30, 4)).is_err());
}

/// Random files and random damage to a real trail: verify reports, never
/// panics.
#[test]
fn verify_never_panics_on_garbage() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let dir = Dir::new("garbage");
    let f = make(&dir, 20);
    let good = std::fs::read(&f).unwrap();
    for round in 0..300 {
        let data: Vec<u8> = match round % 3 {
            // Pure noise, sometimes with newlines and braces.
            0 => (0..rnd() % 4000)
                .map(|_| match rnd() % 8 {
                    0 => b'\n',
                    1 => b'{',
                    _ => rnd() as u8,
                })
                .collect(),
            // The real trail with bytes flipped.
            1 => {
                let mut d = good.clone();
                for _ in 0..1 + rnd() % 8 {
                    let i = (rnd() as usize) % d.len();
                    d[i] = rnd() as u8;
                }
                d
            }
            // The real trail cut and spliced.
            _ => {
                let a = (rnd() as usize) % good.len();
                let b = (rnd() as usize) % good.len();
                let mut d = good[..a.min(b)].to_vec();
                d.extend_from_slice(&good[a.max(b)..]);
                d.extend_from_slice(&good[..(rnd() as usize) % good.len()]);
                d
            }
        };
        std::fs::write(&f, &data).unwrap();
        if round % 10 == 0 {
            std::fs::write(dir.trail().join("head"), &data[..data.len().min(300)]).unwrap();
        }
        let r = verify(&dir.trail(), Some(&key())).unwrap();
        if data != good {
            assert!(!r.ok || round % 3 == 2, "round {round}: damage not found");
        }
    }
}

#[test]
fn a_rollback_to_an_earlier_head_is_found_by_the_anchor() {
    let dir = Dir::new("rollback");
    let anchor = dir.0.join("audit.key.seq");
    let cfg = || Config {
        anchor: Some(anchor.clone()),
        ..config(&dir.trail(), 1 << 30, 4)
    };
    let mut t = Trail::open(cfg()).unwrap();
    for i in 0..5 {
        t.append(entry(i)).unwrap();
    }
    drop(t);
    // The attacker keeps the head and the file as they are now...
    let f = dir.trail().join("trail-000001.log");
    let old_head = std::fs::read(dir.trail().join("head")).unwrap();
    let old_len = std::fs::metadata(&f).unwrap().len();
    // ...more is recorded (checkpoints among it: every 10 records)...
    let mut t = Trail::open(cfg()).unwrap();
    for i in 5..40 {
        t.append(entry(i)).unwrap();
    }
    drop(t);
    let anchored = audit::anchor::read(&anchor).expect("anchor written");
    // ...and is rolled back: the file cut back, the old head restored.
    let full = std::fs::read(&f).unwrap();
    std::fs::write(&f, &full[..old_len as usize]).unwrap();
    std::fs::write(dir.trail().join("head"), &old_head).unwrap();
    // The trail alone is consistent: without the anchor, verify passes.
    let r = check(&dir);
    assert!(r.ok, "{r:?}");
    // With the anchor it does not.
    let mut r = check(&dir);
    audit::anchor::check(&mut r, &anchor);
    let p = first(&r);
    assert_eq!(
        (p.file.as_str(), p.seq),
        ("anchor", Some(anchored)),
        "{r:?}"
    );
    assert!(p.what.contains("rolled back"), "{p}");
    // A vtd opening it writes that into the trail for good.
    drop(Trail::open(cfg()).unwrap());
    let found = failed_opens(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].entry.detail.contains("rolled back"), "{found:?}");
}
