//! Issue 15: a bounded fault-injection loop. Random define / start / stop /
//! undefine / restart of `vtd`, `kill -9` of `vtd` in the middle of a
//! request and of VMMs at random, corrupt and truncated state files; after
//! every step the invariant is checked against `/proc` (every VMM belongs
//! to exactly one VM vtd lists, no VM has two, vtd's running VMs are those
//! that run), and at the end (and every 50 steps) no name is wedged: each
//! can be stopped, undefined and defined again.
//!
//! `VT_FAULT_ITERATIONS` (default 500, about 8 s) and `VT_FAULT_SEED` (default: the
//! clock; printed) choose the run; `vt-bench faults` runs it longer.

mod common;

use std::time::{Duration, Instant};

use api::manager::{VmState, VmStatus};
use common::{live_vmms_under, require_kvm, Vtd};

const NAMES: [&str; 3] = ["f0", "f1", "f2"];

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

fn kill9(pid: u32) {
    // SAFETY: kill has no memory effects; the pid is a VMM of this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// The invariant, given a moment to settle (a killed VMM's end reaches
/// vtd through its supervisor thread).
fn settled(vtd: &Vtd) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match vtd.check_invariant() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn status(vtd: &Vtd, name: &str) -> Option<VmStatus> {
    let r = vtd.call("GET", &format!("/vms/{name}"), None);
    (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap())
}

/// Every name can be stopped, undefined and defined again: none wedged.
fn no_name_wedged(vtd: &Vtd) -> Result<(), String> {
    for name in NAMES {
        if let Some(s) = status(vtd, name) {
            if s.state.is_active() || s.state == VmState::Unknown {
                let r = vtd.call("POST", &format!("/vms/{name}/stop"), None);
                // 409: unknown with no VMM left.
                if r.status != 200 && r.status != 409 {
                    return Err(format!("stop {name}: {} {}", r.status, r.text()));
                }
            }
            let r = vtd.call("DELETE", &format!("/vms/{name}"), None);
            if r.status != 204 {
                return Err(format!("undefine {name}: {} {}", r.status, r.text()));
            }
        }
        let body = format!(r#"{{"name":"{name}","memory_mib":16}}"#);
        let r = vtd.call("POST", "/vms", Some(&body));
        if r.status != 201 {
            return Err(format!("define {name}: {} {}", r.status, r.text()));
        }
    }
    Ok(())
}

/// One request, as the loop sends them (the answer does not matter: the
/// state afterwards does).
fn request(vtd_socket: &std::path::Path, op: u64, name: &str) -> Option<u16> {
    let path = match op {
        0 => "/vms".to_string(),
        1 => format!("/vms/{name}/start"),
        2 => format!("/vms/{name}/stop"),
        _ => format!("/vms/{name}"),
    };
    let (method, body) = match op {
        0 => (
            "POST",
            Some(format!(r#"{{"name":"{name}","memory_mib":16}}"#)),
        ),
        3 => ("DELETE", None),
        _ => ("POST", None),
    };
    vt_http::call_with_timeout(
        vtd_socket,
        method,
        &path,
        body.map(String::into_bytes),
        Some(Duration::from_secs(20)),
    )
    .ok()
    .map(|r| r.status)
}

fn corrupt(rng: &mut Rng, vtd: &Vtd) {
    let name = rng.pick(&NAMES);
    let dir = vtd.state.join("vms").join(name);
    if !dir.is_dir() {
        return;
    }
    match rng.below(4) {
        0 => {
            let _ = std::fs::write(dir.join("runtime.json"), b"\x00\xffnot json");
        }
        1 => {
            let def = dir.join("definition.json");
            if let Ok(text) = std::fs::read(&def) {
                let cut = rng.below(text.len() as u64 + 1) as usize;
                let _ = std::fs::write(&def, &text[..cut]);
            }
        }
        2 => {
            let _ = std::fs::write(dir.join(".runtime.json.tmp.1.1"), b"{\"pid\":");
        }
        _ => {
            let _ = std::fs::create_dir_all(
                vtd.state.join("vms").join(format!(".creating.{name}.9.9")),
            );
        }
    }
}

#[test]
fn kill_9_and_corruption_at_random_never_break_the_invariant() {
    require_kvm!();
    run_loop("faults", &[], 500);
}

/// The same with `vtd --jail off`: VMMs spawned by fork and exec, with no
/// gate holding them until `runtime.json` is written.
#[test]
fn the_same_with_unjailed_vmms() {
    require_kvm!();
    run_loop("faults-nojail", &["--jail", "off"], 200);
}

/// `default` steps (or `VT_FAULT_ITERATIONS`) against a vtd with `args`.
fn run_loop(name: &str, args: &[&str], default: u64) {
    let iterations: u64 = std::env::var("VT_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let seed: u64 = std::env::var("VT_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("fault injection ({name}): {iterations} iterations, VT_FAULT_SEED={seed}");
    let mut rng = Rng(seed);
    let mut vtd = Vtd::start_with_args(name, args);
    let started = Instant::now();
    let mut counts = [0u32; 7];
    let (mut started_vms, mut most_running) = (0u32, 0usize);
    for i in 0..iterations {
        let op = rng.below(7);
        counts[op as usize] += 1;
        let name = rng.pick(&NAMES);
        match op {
            0..=3 => {
                let status = request(&vtd.socket, op, name);
                if op == 1 && status == Some(200) {
                    started_vms += 1;
                }
            }
            4 => {
                // kill -9 of vtd at a random point of a request.
                let sock = vtd.socket.clone();
                let req_op = rng.below(4);
                let t = std::thread::spawn(move || {
                    request(&sock, req_op, name);
                });
                std::thread::sleep(Duration::from_micros(rng.below(40_000)));
                vtd.kill9();
                let _ = t.join();
                vtd.restart();
            }
            5 => {
                let live = live_vmms_under(&vtd.state);
                if !live.is_empty() {
                    let v = &live[rng.below(live.len() as u64) as usize];
                    kill9(v.pid);
                }
            }
            _ => {
                vtd.kill9();
                corrupt(&mut rng, &vtd);
                vtd.restart();
            }
        }
        most_running = most_running.max(live_vmms_under(&vtd.state).len());
        if let Err(e) = settled(&vtd) {
            panic!("iteration {i} (op {op}, {name}), VT_FAULT_SEED={seed}: {e}");
        }
        if i % 50 == 49 {
            if let Err(e) = no_name_wedged(&vtd) {
                panic!("iteration {i}, VT_FAULT_SEED={seed}: a wedged name: {e}");
            }
        }
    }
    no_name_wedged(&vtd).unwrap_or_else(|e| panic!("VT_FAULT_SEED={seed}: {e}"));
    settled(&vtd).unwrap();
    eprintln!(
        "fault injection ({name}): {iterations} iterations in {:.1}s, ops (define, start, stop, undefine, kill vtd, kill vmm, corrupt) = {counts:?}, {started_vms} VMs started, at most {most_running} VMMs at once",
        started.elapsed().as_secs_f64()
    );
    // The loop did exercise running VMs.
    assert!(iterations < 50 || started_vms > 0);
}
