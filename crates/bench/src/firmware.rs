//! `vt-bench firmware`: the Debian test image (scripts/guest-image.sh,
//! GRUB for BIOS) booted through Debian's SeaBIOS under `vt-vmm --firmware`
//! and under `qemu-system-x86_64 -M pc` with the same SeaBIOS and image,
//! interleaved, in the lab; timed from the VMM's start to GRUB's first line
//! (`VT-IMAGE grub`) and to systemd's marker (`VT-IMAGE-BOOTED`). The lab
//! runs this binary as `vt-bench firmware-inner`, which prints one
//! `VTBENCH-RESULT <json>` line (as `linux` does).

use crate::host::{self, Facts};
use crate::linux::{parse_result, InnerResult};
use crate::run::{Exit, Running};
use crate::stats::{Series, Table};
use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct FirmwareArgs {
    /// Measured boots per VMM
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Unmeasured boots per VMM first
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// The BIOS disk image [default: the guest dir's debian-test-bios.img]
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Lab (L1) memory
    #[arg(long, value_name = "MIB", default_value_t = 3072)]
    pub lab_memory: u32,
    /// Give up on the whole lab run after this long
    #[arg(long, value_name = "SECS", default_value_t = 2400)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FirmwareInnerArgs {
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, value_name = "PATH")]
    pub vmm: PathBuf,
    #[arg(long, value_name = "PATH", default_value = host::DEFAULT_QEMU)]
    pub qemu: String,
    /// The disk (the image, as the lab's /dev/vda)
    #[arg(long, value_name = "PATH")]
    pub disk: PathBuf,
}

/// Debian's SeaBIOS, for both VMMs (the lab carries it to the same path).
const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
const GRUB_LINE: &[u8] = b"VT-IMAGE grub";
const MARKER: &[u8] = b"VT-IMAGE-BOOTED";
const MEMORY_MIB: u32 = 512;
const CPUS: u32 = 2;
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

fn ours_cmd(vmm: &Path, disk: &Path) -> Command {
    let mut c = Command::new(vmm);
    c.args(["--firmware", SEABIOS])
        .arg("--disk")
        .arg(format!("path={}", disk.display()))
        .args(["--cpus", &CPUS.to_string()])
        .args(["--memory", &MEMORY_MIB.to_string()]);
    c
}

fn qemu_cmd(qemu: &str, disk: &Path) -> Command {
    let mut c = Command::new(qemu);
    c.args(["-M", "pc,accel=kvm", "-cpu", "host"])
        .args(["-smp", &CPUS.to_string(), "-m", &MEMORY_MIB.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-bios", SEABIOS])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk.display()));
    c
}

/// The image's kernel command line (its grub.cfg's first entry).
const CMDLINE: &str = "root=UUID=5e1f7a3c-0b7e-4d2a-9c51-7ee1da9e0001 rw console=ttyS0,115200n8";

fn ours_direct(vmm: &Path, disk: &Path, kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new(vmm);
    c.arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["--cmdline", CMDLINE])
        .arg("--disk")
        .arg(format!("path={}", disk.display()))
        .args(["--cpus", &CPUS.to_string()])
        .args(["--memory", &MEMORY_MIB.to_string()]);
    c
}

fn qemu_direct(qemu: &str, disk: &Path, kernel: &Path, initrd: &Path) -> Command {
    let mut c = qemu_cmd(qemu, disk);
    c.arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", CMDLINE]);
    c
}

/// Copies the image's kernel and initramfs out of its root (partition 1,
/// mounted read-only for the copy): (vmlinuz, initrd) in `to`.
fn extract_kernel(disk: &Path, to: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mnt = to.join("root");
    std::fs::create_dir_all(&mnt)?;
    let part = format!("{}1", disk.display());
    let ok = Command::new("mount")
        .args(["-o", "ro", &part])
        .arg(&mnt)
        .status()?
        .success();
    if !ok {
        bail!("cannot mount {part}");
    }
    let copy = || -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut found = (None, None);
        for e in std::fs::read_dir(mnt.join("boot"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let slot = if name.starts_with("vmlinuz-") {
                &mut found.0
            } else if name.starts_with("initrd.img-") {
                &mut found.1
            } else {
                continue;
            };
            let dst = to.join(&name);
            std::fs::copy(e.path(), &dst)?;
            *slot = Some(dst);
        }
        match found {
            (Some(k), Some(i)) => Ok((k, i)),
            _ => bail!("no vmlinuz-*/initrd.img-* in the image's /boot"),
        }
    };
    let r = copy();
    let _ = Command::new("umount").arg(&mnt).status();
    r
}

/// One boot: ms to GRUB's line (when `grub`), to the marker, to the exit;
/// peak RSS MiB.
fn boot(name: &str, mut cmd: Command, grub: bool) -> anyhow::Result<[f64; 4]> {
    let what = format!("{name}: {}", crate::run::describe(&cmd));
    let mut r = Running::spawn(&mut cmd, BOOT_TIMEOUT).context(what.clone())?;
    let grub = if grub {
        r.read_until(GRUB_LINE)?
    } else {
        Some(Duration::ZERO)
    };
    let marker = r.read_until(MARKER)?;
    let f = r.finish()?;
    if f.timed_out || f.exit != Exit::Code(0) {
        bail!("{what}: {}\n{}", f.exit, f.tail());
    }
    let (Some(grub), Some(marker)) = (grub, marker) else {
        bail!("{what}: no GRUB line or marker on the serial\n{}", f.tail());
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok([
        ms(grub),
        ms(marker),
        ms(f.exit_at),
        f.maxrss_kib as f64 / 1024.0,
    ])
}

/// In the lab: the image under each VMM, alternately, through SeaBIOS and
/// GRUB; then its kernel and initramfs booted directly.
pub fn inner(args: &FirmwareInnerArgs) -> anyhow::Result<()> {
    let facts = Facts::gather(&args.qemu);
    let mut tables = vec![through_firmware(args)];
    let dir = std::env::temp_dir().join("vt-bench-firmware");
    match extract_kernel(&args.disk, &dir) {
        Ok((k, i)) => tables.push(direct(args, &k, &i)),
        Err(e) => eprintln!("vt-bench: no direct-boot comparison: {e:#}"),
    }
    let result = InnerResult { facts, tables };
    println!("VTBENCH-RESULT {}", serde_json::to_string(&result)?);
    Ok(())
}

/// The same kernel, initramfs and root, booted without firmware.
fn direct(args: &FirmwareInnerArgs, kernel: &Path, initrd: &Path) -> Table {
    let mut series = [
        Series::new("start → systemd marker (`VT-IMAGE-BOOTED`)", "ms"),
        Series::new("start → process exit (guest `systemctl poweroff`)", "ms"),
    ];
    let mut notes = vec![format!(
        "the image's own kernel and initramfs (copied out of its /boot), cmdline `{CMDLINE}`, \
         the same disk, {MEMORY_MIB} MiB, {CPUS} vCPUs; vt-vmm loads the kernel itself, QEMU \
         `-M pc -kernel` goes through SeaBIOS and its linuxboot_dma option ROM; compare with \
         the table above for what firmware and GRUB cost"
    )];
    for i in 0..args.warmup + args.runs {
        let n = format!("direct run {}/{}", i + 1, args.warmup + args.runs);
        eprintln!("vt-bench: {n}");
        let o = boot(
            "vt-vmm",
            ours_direct(&args.vmm, &args.disk, kernel, initrd),
            false,
        );
        let q = boot(
            "QEMU",
            qemu_direct(&args.qemu, &args.disk, kernel, initrd),
            false,
        );
        let (o, q) = match (o, q) {
            (Ok(o), Ok(q)) => (o, q),
            (o, q) => {
                let e = o.err().or(q.err()).map(|e| format!("{e:#}"));
                notes.push(format!(
                    "**FAILED, series incomplete:** {}",
                    e.unwrap_or_default().replace('\n', " ")
                ));
                break;
            }
        };
        if i < args.warmup {
            continue;
        }
        for (s, (o, q)) in series.iter_mut().zip([(o[1], q[1]), (o[2], q[2])]) {
            s.ours.push(o);
            s.qemu.push(q);
        }
    }
    let shown = |p: &Path| Path::new("/tmp").join(p.file_name().unwrap_or_default());
    Table {
        title: "The same image's kernel booted directly, no firmware (lab)".into(),
        command: String::new(),
        ours_cmd: crate::run::describe(&ours_direct(
            Path::new("vt-vmm"),
            Path::new("/dev/vda"),
            &shown(kernel),
            &shown(initrd),
        )),
        qemu_cmd: crate::run::describe(&qemu_direct(
            &args.qemu,
            Path::new("/dev/vda"),
            &shown(kernel),
            &shown(initrd),
        )),
        notes,
        series: series.to_vec(),
    }
}

/// Through SeaBIOS and GRUB.
fn through_firmware(args: &FirmwareInnerArgs) -> Table {
    let mut series = [
        Series::new("start → GRUB's first line (`VT-IMAGE grub`)", "ms"),
        Series::new("start → systemd marker (`VT-IMAGE-BOOTED`)", "ms"),
        Series::new("start → process exit (guest `systemctl poweroff`)", "ms"),
        Series::new("peak RSS (ru_maxrss)", "MiB"),
    ];
    let mut notes = vec![format!(
        "{MEMORY_MIB} MiB, {CPUS} vCPUs; Debian 12 image from scripts/guest-image.sh (GRUB for \
         BIOS, ext4 root on virtio-blk, systemd; a one-shot unit prints the marker and powers \
         off); the same Debian SeaBIOS 1.16.2 ({SEABIOS}) for both; runs interleaved, {} \
         warm-up boot(s) each first",
        args.warmup
    )];
    for i in 0..args.warmup + args.runs {
        let n = format!("run {}/{}", i + 1, args.warmup + args.runs);
        eprintln!("vt-bench: {n}: vt-vmm");
        let o = boot("vt-vmm", ours_cmd(&args.vmm, &args.disk), true);
        eprintln!("vt-bench: {n}: QEMU");
        let q = boot("QEMU", qemu_cmd(&args.qemu, &args.disk), true);
        let (o, q) = match (o, q) {
            (Ok(o), Ok(q)) => (o, q),
            (o, q) => {
                let e = o.err().or(q.err()).map(|e| format!("{e:#}"));
                notes.push(format!(
                    "**FAILED, series incomplete:** {}",
                    e.unwrap_or_default().replace('\n', " ")
                ));
                break;
            }
        };
        eprintln!("vt-bench: {n}: marker at {:.0} ms vs {:.0} ms", o[1], q[1]);
        if i < args.warmup {
            continue;
        }
        for (s, (o, q)) in series.iter_mut().zip(o.into_iter().zip(q)) {
            s.ours.push(o);
            s.qemu.push(q);
        }
    }
    let disk = Path::new("/dev/vda");
    Table {
        title: "Debian disk image through SeaBIOS and GRUB to systemd (lab)".into(),
        command: String::new(),
        ours_cmd: crate::run::describe(&ours_cmd(Path::new("vt-vmm"), disk)),
        qemu_cmd: crate::run::describe(&qemu_cmd(&args.qemu, disk)),
        notes,
        series: series.to_vec(),
    }
}

/// On the host: boots the lab with the image as its /dev/vda (writes go to
/// QEMU's snapshot, the image stays as built) and runs the inner half.
pub fn run(args: &FirmwareArgs) -> anyhow::Result<InnerResult> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    let image = args
        .image
        .clone()
        .unwrap_or_else(|| lab::artifacts::default_guest_dir().join("debian-test-bios.img"));
    if !image.exists() {
        bail!(
            "{} missing: run scripts/guest-image.sh first",
            image.display()
        );
    }
    let exe = std::env::current_exe().context("locating vt-bench")?;
    let lab = lab::Lab::new()
        .memory_mib(args.lab_memory)
        .timeout(Duration::from_secs(args.timeout))
        .with_qemu()
        .add_binary(&exe, "/vt/vt-bench")
        .add_binary(&vmm, "/vt/vt-vmm")
        .qemu_arg("-drive")
        .qemu_arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            image.display()
        ));
    let script = format!(
        "R=\"$VTLAB_ROOT\"; \"$R/vt/vt-bench\" firmware-inner --runs {} --warmup {} \
         --vmm \"$R/vt/vt-vmm\" --disk /dev/vda",
        args.runs, args.warmup
    );
    let out = lab.run_auto(&script).context("lab run")?;
    if out.exit_code != 0 {
        let tail: Vec<&str> = out.stdout.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "firmware-inner failed (exit {}):\n{}",
            out.exit_code,
            tail.join("\n")
        );
    }
    let mut result = parse_result(&out.stdout)?;
    for t in &mut result.tables {
        t.command = format!(
            "vt-bench firmware --runs {} --warmup {} --vmm {}",
            args.runs,
            args.warmup,
            vmm.display()
        );
        t.notes.push(match out.boot {
            Some(b) => format!(
                "ran in the lab: L1 = QEMU TCG with nested SVM, {} MiB; lab boot {:.1} s, \
                 whole lab run {:.0} s",
                args.lab_memory,
                b.as_secs_f64(),
                out.duration.as_secs_f64()
            ),
            None => "ran directly on this host's hardware /dev/kvm".into(),
        });
    }
    Ok(result)
}
