//! Any bytes as an audit trail: the first line is taken as the `head`
//! file, the rest split at form feeds into trail files 1, 2, ...; `verify`
//! (with and without a key), `search` and reopening for appending must not
//! panic, and a trail with a problem is never reported intact.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vt-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (head, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    std::fs::write(dir.join("head"), head).unwrap();
    for (i, part) in rest.split(|b| *b == 0x0c).enumerate().take(8) {
        std::fs::write(dir.join(audit::files::name(i as u64 + 1)), part).unwrap();
    }
    let key = audit::Key::from_bytes([3; 32]);
    let keyed = audit::verify(&dir, Some(&key)).unwrap();
    assert_eq!(keyed.ok, keyed.problems.is_empty() && keyed.more_problems == 0);
    let _ = audit::verify(&dir, None).unwrap();
    let _ = audit::search(&dir, &audit::Filter::default(), 10).unwrap();
    let _ = audit::Trail::open(audit::Config::new(dir.clone(), key));
    let _ = std::fs::remove_dir_all(&dir);
});
