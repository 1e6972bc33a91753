//! A VMM's cgroup: memory, CPU and pids limits (cgroups(7), the kernel's
//! `Documentation/admin-guide/cgroup-v2.rst` and `cgroup-v1/*.rst`).
//!
//! Hosts differ: pure cgroup v2, hybrid (v1 controllers plus an empty v2
//! tree, as on this project's machines), or v1. Each controller is taken
//! from the hierarchy that has it: a v1 mount of its own, else the v2
//! mount when its root lists it in `cgroup.controllers`. The group is
//! `<mount>/vt/<name>` in each hierarchy used; [`Cgroup::limits`] says
//! which limits are in force.

use std::io;
use std::path::{Path, PathBuf};

/// What to limit; `None` leaves the kernel's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory in bytes (guest RAM plus the VMM's own).
    pub memory_bytes: Option<u64>,
    /// Relative CPU weight, 1–10000 (v2 `cpu.weight`, default 100; v1
    /// `cpu.shares` = weight × 1024 / 100).
    pub cpu_weight: Option<u32>,
    /// CPU time per period, in percent of one host CPU (`cpu.max`,
    /// `cpu.cfs_quota_us` with a 100 ms period).
    pub cpu_quota_percent: Option<u32>,
    /// Tasks (threads) at most.
    pub pids: Option<u64>,
}

/// Why a cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("the {0} controller is not available on this host (neither cgroup v1 nor v2 has it)")]
    NoController(&'static str),
    #[error("cannot write {1} to {0}")]
    Write(String, String, #[source] io::Error),
    #[error("cannot create {0}")]
    Create(String, #[source] io::Error),
}

/// Where each controller lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The cgroup2 mount, if any.
    pub v2: Option<PathBuf>,
    /// Controllers enabled at the v2 root.
    pub v2_controllers: Vec<String>,
    /// `(controller, mount)` of v1 hierarchies.
    pub v1: Vec<(String, PathBuf)>,
}

impl Layout {
    /// Keeps only the limits this host can enforce; returns the names of
    /// the controllers that are missing for the rest.
    pub fn enforceable(&self, want: &CgroupLimits) -> (CgroupLimits, Vec<&'static str>) {
        let mut out = *want;
        let mut missing = Vec::new();
        if want.memory_bytes.is_some() && !self.has("memory") {
            out.memory_bytes = None;
            missing.push("memory");
        }
        if (want.cpu_weight.is_some() || want.cpu_quota_percent.is_some()) && !self.has("cpu") {
            out.cpu_weight = None;
            out.cpu_quota_percent = None;
            missing.push("cpu");
        }
        if want.pids.is_some() && !self.has("pids") {
            out.pids = None;
            missing.push("pids");
        }
        (out, missing)
    }

    /// Reads `/proc/self/mountinfo` and the v2 root's `cgroup.controllers`.
    pub fn detect() -> Layout {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut l = Layout::parse(&info);
        if let Some(v2) = &l.v2 {
            l.v2_controllers = std::fs::read_to_string(v2.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        l
    }

    /// The mounts in a mountinfo text (proc(5)).
    pub fn parse(mountinfo: &str) -> Layout {
        let mut l = Layout::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount) = left.split(' ').nth(4) else {
                continue;
            };
            let mut r = right.split(' ');
            let (fstype, _src, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
            match fstype {
                Some("cgroup2") if l.v2.is_none() => l.v2 = Some(mount.into()),
                Some("cgroup") => {
                    for c in opts.split(',') {
                        if ["memory", "cpu", "pids"].contains(&c) {
                            l.v1.push((c.to_string(), mount.into()));
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// Whether `controller` (`memory`, `cpu`, `pids`) is available.
    pub fn has(&self, controller: &'static str) -> bool {
        self.place(controller, "x").is_ok()
    }

    /// `(directory for group `vt/<name>`, is v2)` for `controller`.
    fn place(&self, controller: &'static str, name: &str) -> Result<(PathBuf, bool), CgroupError> {
        if let Some((_, m)) = self.v1.iter().find(|(c, _)| c == controller) {
            return Ok((m.join("vt").join(name), false));
        }
        match &self.v2 {
            Some(m) if self.v2_controllers.iter().any(|c| c == controller) => {
                Ok((m.join("vt").join(name), true))
            }
            _ => Err(CgroupError::NoController(controller)),
        }
    }
}

/// A VMM's cgroup in every hierarchy it uses.
#[derive(Debug, Default)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    limits: Vec<String>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value)
        .map_err(|e| CgroupError::Write(path.display().to_string(), value.to_string(), e))
}

impl Cgroup {
    /// Creates `vt/<name>` where each wanted controller lives and writes
    /// the limits. Errors: a controller the host lacks
    /// ([`CgroupError::NoController`]) or a write the kernel refuses; on
    /// error nothing is left behind.
    pub fn create(layout: &Layout, name: &str, want: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        let mut cg = Cgroup::default();
        let r = cg.fill(layout, name, want);
        if r.is_err() {
            cg.remove();
        }
        r.map(|()| cg)
    }

    /// Makes `dir` (`<mount>/vt/<name>`) and, on v2, enables `controller`
    /// for it in the root's and `vt`'s `cgroup.subtree_control` (done for
    /// each controller, even when the directory exists already: one v2
    /// group serves all of them).
    fn dir(&mut self, dir: &Path, v2: bool, controller: &str) -> Result<(), CgroupError> {
        let create = |d: &Path| {
            std::fs::create_dir_all(d).map_err(|e| CgroupError::Create(d.display().to_string(), e))
        };
        if v2 {
            let vt = dir.parent().unwrap_or(dir);
            let root = vt.parent().unwrap_or(vt);
            let enable = format!("+{controller}");
            write(&root.join("cgroup.subtree_control"), &enable)?;
            create(vt)?;
            write(&vt.join("cgroup.subtree_control"), &enable)?;
        }
        if !self.dirs.iter().any(|d| d == dir) {
            create(dir)?;
            self.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    fn set(&mut self, dir: &Path, file: &str, value: String) -> Result<(), CgroupError> {
        write(&dir.join(file), &value)?;
        self.limits.push(format!("{file}={value}"));
        Ok(())
    }

    fn fill(
        &mut self,
        layout: &Layout,
        name: &str,
        want: &CgroupLimits,
    ) -> Result<(), CgroupError> {
        if let Some(bytes) = want.memory_bytes {
            let (d, v2) = layout.place("memory", name)?;
            self.dir(&d, v2, "memory")?;
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            self.set(&d, file, bytes.to_string())?;
        }
        if want.cpu_weight.is_some() || want.cpu_quota_percent.is_some() {
            let (d, v2) = layout.place("cpu", name)?;
            self.dir(&d, v2, "cpu")?;
            if let Some(w) = want.cpu_weight {
                let w = w.clamp(1, 10_000);
                match v2 {
                    true => self.set(&d, "cpu.weight", w.to_string())?,
                    false => self.set(
                        &d,
                        "cpu.shares",
                        (u64::from(w) * 1024 / 100).max(2).to_string(),
                    )?,
                }
            }
            if let Some(p) = want.cpu_quota_percent {
                let quota = u64::from(p.max(1)) * 1000; // of a 100 000 µs period
                match v2 {
                    true => self.set(&d, "cpu.max", format!("{quota} 100000"))?,
                    false => {
                        self.set(&d, "cpu.cfs_period_us", "100000".into())?;
                        self.set(&d, "cpu.cfs_quota_us", quota.to_string())?;
                    }
                }
            }
        }
        if let Some(n) = want.pids {
            let (d, v2) = layout.place("pids", name)?;
            self.dir(&d, v2, "pids")?;
            self.set(&d, "pids.max", n.to_string())?;
        }
        Ok(())
    }

    /// Moves process `pid` (all its threads) into the group.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        self.dirs
            .iter()
            .try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// The limits written, as `file=value`.
    pub fn limits(&self) -> &[String] {
        &self.limits
    }

    /// The group's directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Removes the group's directories (they must hold no process);
    /// failures are ignored (a later start retries).
    pub fn remove(&self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// Removes `vt/<name>` from every hierarchy of `layout` (a leftover
    /// of a VMM that is gone).
    pub fn remove_stale(layout: &Layout, name: &str) {
        for c in ["memory", "cpu", "pids"] {
            if let Ok((d, _)) = layout.place(c, name) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

    #[test]
    fn parses_hybrid_and_places_v1_first() {
        let l = Layout::parse(HYBRID);
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(l.v1.len(), 3);
        let (d, v2) = l.place("cpu", "a").unwrap();
        assert_eq!(d, Path::new("/sys/fs/cgroup/cpu,cpuacct/vt/a"));
        assert!(!v2);
        let v2only = Layout {
            v2: Some("/cg".into()),
            v2_controllers: vec!["memory".into()],
            v1: vec![],
        };
        assert_eq!(
            v2only.place("memory", "a").unwrap(),
            ("/cg/vt/a".into(), true)
        );
        let e = v2only.place("pids", "a").unwrap_err().to_string();
        assert!(e.contains("pids controller is not available"), "{e}");
    }

    #[test]
    fn limits_reach_the_kernel() {
        let l = Layout::detect();
        if !crate::is_root() || l.place("memory", "x").is_err() || l.place("pids", "x").is_err() {
            return;
        }
        let name = format!("test-{}", std::process::id());
        let want = CgroupLimits {
            memory_bytes: Some(64 << 20),
            cpu_weight: Some(50),
            cpu_quota_percent: Some(150),
            pids: Some(7),
        };
        let cg = Cgroup::create(&l, &name, &want).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        cg.add(child.id()).unwrap();
        let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        assert!(cgroup.contains(&format!("/vt/{name}")), "{cgroup}");
        let (mem, _) = l.place("memory", &name).unwrap();
        let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(mem.join("memory.max")))
            .unwrap();
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
        assert!(
            cg.limits().iter().any(|s| s == "pids.max=7"),
            "{:?}",
            cg.limits()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        cg.remove();
        assert!(cg.dirs().iter().all(|d| !d.exists()));
    }
}
