//! The `Lab` builder: what to carry into the L1 and how big it is; `run` boots
//! it in QEMU (TCG, AMD CPU with SVM + NPT) and runs one shell command there.

use crate::artifacts::{self, GuestArtifacts};
use crate::error::LabError;
use crate::host::HostKind;
use crate::initramfs::Initramfs;
use crate::tempdir::TempDir;
use crate::{libs, output, process};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

pub use crate::output::LabOutput;

/// Serialises lab boots within one process (tests run in parallel threads;
/// two TCG machines on two cores only slow each other down).
static LAB_LOCK: Mutex<()> = Mutex::new(());

/// Serialises lab boots across processes too (several test binaries, a
/// benchmark and a developer's run on one 2-core machine): an exclusive
/// `flock` on `/tmp/vt-lab.lock`, held until the returned file is dropped.
/// Without the file (read-only /tmp) the boot goes ahead unserialised.
fn host_lock() -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/vt-lab.lock")
        .ok()?;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is touched.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Some(f);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

const L1_INIT: &str = include_str!("l1-init.sh");

/// A file to carry from the host into the L1 (or the direct run's root).
#[derive(Debug, Clone)]
pub(crate) struct Carry {
    pub host: PathBuf,
    pub guest: String,
    /// Also carry its shared libraries and dynamic loader.
    pub binary: bool,
}

/// How to run a command on a hardware-virtualization `/dev/kvm`.
#[derive(Debug, Clone)]
pub struct Lab {
    pub(crate) guest_dir: Option<PathBuf>,
    pub(crate) memory_mib: u32,
    pub(crate) cpus: u32,
    pub(crate) timeout: Duration,
    pub(crate) carry: Vec<Carry>,
    pub(crate) qemu_args: Vec<String>,
    pub(crate) kernel_args: Vec<String>,
    pub(crate) verbose: bool,
    pub(crate) with_guest: bool,
    pub(crate) with_qemu: bool,
    pub(crate) retries: u32,
}

/// Where [`Lab::with_guest_artifacts`] puts the L2 guest files.
pub const GUEST_DIR_IN_LAB: &str = "/guest";

/// Firmware QEMU needs for `-kernel` boots of a `pc` machine (host paths,
/// carried to the same paths; Debian's QEMU searches them there).
const QEMU_FIRMWARE: [&str; 4] = [
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/qemu/pvh.bin",
];
const QEMU_BINARY: &str = "/usr/bin/qemu-system-x86_64";

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Lab {
    /// 3072 MiB, 2 vCPUs, 300 s; live echo of the console when `VT_LAB_VERBOSE=1`.
    pub fn new() -> Lab {
        Lab {
            guest_dir: None,
            memory_mib: 3072,
            cpus: 2,
            timeout: Duration::from_secs(300),
            carry: Vec::new(),
            qemu_args: Vec::new(),
            kernel_args: Vec::new(),
            verbose: std::env::var("VT_LAB_VERBOSE").is_ok_and(|v| v == "1"),
            with_guest: false,
            with_qemu: false,
            retries: 1,
        }
    }

    /// How many times a wedged lab (timeout, or L1 gone without its exit
    /// marker) is started again before the error is returned; default 1.
    /// The L1 (nested SVM under QEMU TCG) has been seen to hang or reset
    /// now and then, independently of what runs in it.
    pub fn retries(mut self, n: u32) -> Lab {
        self.retries = n;
        self
    }

    /// Where the guest artifacts are (default: `$VT_GUEST_DIR` or `<repo>/target/guest`).
    pub fn guest_dir(mut self, dir: impl Into<PathBuf>) -> Lab {
        self.guest_dir = Some(dir.into());
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Lab {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, n: u32) -> Lab {
        self.cpus = n;
        self
    }

    /// For the QEMU run (boot included) or the direct command; building the
    /// artifacts and the initramfs comes before and is not counted.
    pub fn timeout(mut self, t: Duration) -> Lab {
        self.timeout = t;
        self
    }

    /// Echo the console live to stderr.
    pub fn verbose(mut self, on: bool) -> Lab {
        self.verbose = on;
        self
    }

    /// Carries a host file to `guest_path` (absolute; not under /dev, /proc,
    /// /sys, which get mounted over, nor /lab or /init) with its permissions.
    pub fn add_file(mut self, host: impl AsRef<Path>, guest_path: &str) -> Lab {
        self.carry.push(Carry {
            host: host.as_ref().to_path_buf(),
            guest: guest_path.to_string(),
            binary: false,
        });
        self
    }

    /// Carries an ELF binary plus its shared libraries and loader (same paths).
    pub fn add_binary(mut self, host: impl AsRef<Path>, guest_path: &str) -> Lab {
        self.carry.push(Carry {
            host: host.as_ref().to_path_buf(),
            guest: guest_path.to_string(),
            binary: true,
        });
        self
    }

    /// Carries the L2 guest artifacts to `/guest/{vmlinuz,vmlinux,initramfs.cpio.gz}`.
    pub fn with_guest_artifacts(mut self) -> Lab {
        self.with_guest = true;
        self
    }

    /// Carries this host's QEMU (`/usr/bin/qemu-system-x86_64` and the firmware
    /// for `-kernel` boots) to the same paths, as a peer VMM to compare with.
    pub fn with_qemu(mut self) -> Lab {
        self.with_qemu = true;
        self
    }

    /// Extra QEMU arguments (devices, `-machine q35`, ...).
    pub fn qemu_arg(mut self, arg: impl Into<String>) -> Lab {
        self.qemu_args.push(arg.into());
        self
    }

    /// Extra L1 kernel command-line words.
    pub fn kernel_arg(mut self, arg: impl Into<String>) -> Lab {
        self.kernel_args.push(arg.into());
        self
    }

    /// Boots the lab and runs `command` under `sh -c` in the L1 as root, with
    /// cwd `/` and the carried files in place. Returns its output (stdout and
    /// stderr merged) and exit code.
    pub fn run(&self, command: &str) -> Result<LabOutput, LabError> {
        let _guard = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _host_guard = host_lock();
        let mut attempt = 0;
        loop {
            match self.run_once(command) {
                Err(e @ (LabError::Timeout { .. } | LabError::NoExitMarker { .. }))
                    if attempt < self.retries =>
                {
                    attempt += 1;
                    let first = e.to_string();
                    let first = first.lines().next().unwrap_or_default();
                    eprintln!(
                        "lab: the L1 wedged ({first}); starting it again ({attempt}/{})",
                        self.retries
                    );
                }
                other => return other,
            }
        }
    }

    fn run_once(&self, command: &str) -> Result<LabOutput, LabError> {
        let arts = artifacts::ensure(self.guest_dir.as_deref())?;
        let tmp = TempDir::new("l1").map_err(LabError::TempDir)?;
        let initrd = tmp.path().join("initramfs.cpio");
        self.l1_initramfs(&arts, command)?.write(&initrd)?;
        let mut cmd = self.qemu_command(&arts, &initrd);
        let captured = process::run(&mut cmd, self.timeout, self.verbose, output::START)
            .map_err(LabError::from_spawn)?;
        output::from_lab(captured, self.timeout)
    }

    /// Runs `command` on this host under `sh -c`, carried files linked into a
    /// temporary root that is the cwd and `$VTLAB_ROOT`.
    pub fn run_direct(&self, command: &str) -> Result<LabOutput, LabError> {
        let root = TempDir::new("direct").map_err(LabError::TempDir)?;
        let arts = match self.with_guest {
            true => Some(artifacts::ensure(self.guest_dir.as_deref())?),
            false => None,
        };
        for c in &self.carried(arts.as_ref()) {
            let rel = crate::initramfs::normalize(&c.guest)?;
            let dest = root.path().join(rel);
            let link = |source| LabError::Link {
                path: dest.clone(),
                source,
            };
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(link)?;
            }
            let host = std::fs::canonicalize(&c.host).map_err(|source| LabError::Link {
                path: c.host.clone(),
                source,
            })?;
            std::os::unix::fs::symlink(host, &dest).map_err(link)?;
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("exec 2>&1\n{command}"))
            .current_dir(root.path())
            .env("VTLAB_HOST", "direct")
            .env("VTLAB_ROOT", root.path());
        let captured = process::run(&mut cmd, self.timeout, self.verbose, b"")?;
        output::from_direct(captured, self.timeout)
    }

    /// [`Lab::run`] or [`Lab::run_direct`], as [`HostKind::detect`] decides.
    pub fn run_auto(&self, command: &str) -> Result<LabOutput, LabError> {
        match HostKind::detect()? {
            HostKind::Lab => self.run(command),
            HostKind::Direct => self.run_direct(command),
        }
    }

    fn l1_initramfs(&self, arts: &GuestArtifacts, command: &str) -> Result<Initramfs, LabError> {
        let mut fs = Initramfs::new();
        fs.host_file("/bin/busybox", &arts.busybox, Some(0o755))?;
        fs.symlink("/bin/sh", "busybox")?;
        fs.char_dev("/dev/console", 5, 1)?;
        for d in ["/proc", "/sys", "/tmp", "/root", "/run"] {
            fs.dir(d)?;
        }
        let order = arts.lab_module_order()?;
        for m in &order {
            let host = arts.lab_modules.join(format!("{m}.ko"));
            fs.host_file(&format!("/lab/modules/{m}.ko"), &host, Some(0o644))?;
        }
        fs.data(
            "/lab/modules/load-order",
            order.join("\n").as_bytes(),
            0o644,
        )?;
        fs.data("/lab/command", command.as_bytes(), 0o644)?;
        fs.data("/init", L1_INIT.as_bytes(), 0o755)?;

        let mut lib_dirs: Vec<String> = Vec::new();
        for c in &self.carried(Some(arts)) {
            fs.new_host_file(&c.guest, &c.host, None)?;
            if !c.binary {
                continue;
            }
            for lib in libs::needed(&c.host)? {
                let guest = lib.to_string_lossy().into_owned();
                if !fs.contains(&guest) {
                    fs.host_file(&guest, &lib, None)?;
                }
                if let Some(dir) = lib.parent().map(|d| d.to_string_lossy().into_owned()) {
                    if !lib_dirs.contains(&dir) {
                        lib_dirs.push(dir);
                    }
                }
            }
        }
        if !lib_dirs.is_empty() {
            let env = format!("export LD_LIBRARY_PATH={}\n", lib_dirs.join(":"));
            fs.data("/lab/env", env.as_bytes(), 0o644)?;
        }
        Ok(fs)
    }

    /// The carried files, with those the `with_*` switches add.
    fn carried(&self, arts: Option<&GuestArtifacts>) -> Vec<Carry> {
        let mut all = self.carry.clone();
        let file = |host: &Path, guest: String, binary| Carry {
            host: host.to_path_buf(),
            guest,
            binary,
        };
        if let (true, Some(a)) = (self.with_guest, arts) {
            for p in [&a.vmlinuz, &a.vmlinux, &a.initramfs] {
                if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    all.push(file(p, format!("{GUEST_DIR_IN_LAB}/{name}"), false));
                }
            }
        }
        if self.with_qemu {
            all.push(file(Path::new(QEMU_BINARY), QEMU_BINARY.into(), true));
            for fw in QEMU_FIRMWARE.iter().filter(|p| Path::new(p).exists()) {
                all.push(file(Path::new(fw), fw.to_string(), false));
            }
        }
        all
    }

    fn qemu_command(&self, arts: &GuestArtifacts, initrd: &Path) -> Command {
        let qemu = std::env::var("VT_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        // mitigations=off: the L1 is a throw-away test box, and it boots ~10% faster.
        let mut append = vec![
            "console=ttyS0",
            "quiet",
            "loglevel=1",
            "panic=-1",
            "mitigations=off",
        ];
        append.extend(self.kernel_args.iter().map(String::as_str));
        let mut cmd = Command::new(qemu);
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "EPYC-Milan,+svm,+npt"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-serial", "stdio"])
            .arg("-kernel")
            .arg(&arts.vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", &append.join(" ")])
            .args(&self.qemu_args);
        cmd
    }
}
