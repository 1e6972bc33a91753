//! `vt image ...`: disk images with qemu-img's verbs, flags and meanings
//! (`create`, `info`, `check`, `convert`, `resize`, `map`, `snapshot`,
//! `rebase`, `commit`), on the `disk` crate,
//! with no VM and no daemon; and `fetch-linux`, the guest artifacts.
//!
//! Exit codes as qemu-img's: 0 ok, 1 failed; `check` 2 for corruptions, 3
//! for leaks only, 63 for a format without checks.

mod convert;
mod info;
mod progress;
mod size;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use disk::check::Repair;
use disk::create::{CreateOptions, Preallocation};
use disk::DiskFormat;

use crate::cmd::output::Format;
pub use info::human_size;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build the Linux guest artifacts (kernel, vmlinux, initramfs, lab
    /// modules) from Debian packages; cached once built.
    FetchLinux {
        /// Output directory [default: $VT_GUEST_DIR or <repo>/target/guest]
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Create an image (raw or qcow2), as `qemu-img create`.
    Create {
        /// Format: raw or qcow2.
        #[arg(short = 'f', default_value = "raw")]
        format: String,
        /// Backing file (qcow2), stored as given: relative to the new image's directory.
        #[arg(short = 'b')]
        backing: Option<String>,
        /// Backing file format (raw or qcow2); required with -b.
        #[arg(short = 'F')]
        backing_format: Option<String>,
        /// Options: cluster_size=SIZE, preallocation=off|metadata|full, lazy_refcounts=on|off, compat=1.1.
        #[arg(short = 'o')]
        options: Option<String>,
        /// Quiet.
        #[arg(short = 'q')]
        quiet: bool,
        file: PathBuf,
        /// Size in bytes, or with K, M, G, T (powers of 1024); from the backing file when omitted.
        size: Option<String>,
    },
    /// Show an image's format, sizes, backing file and flags, as `qemu-img info`
    /// (`--output=json` gives qemu-img's JSON).
    Info {
        /// Format (raw or qcow2); probed when omitted.
        #[arg(short = 'f')]
        format: Option<String>,
        /// Show every image of the backing chain, top first.
        #[arg(long)]
        backing_chain: bool,
        file: PathBuf,
    },
    /// Check a qcow2 image's metadata, as `qemu-img check`: exit 0 clean,
    /// 2 corruptions, 3 leaked clusters.
    Check {
        /// Format; probed when omitted.
        #[arg(short = 'f')]
        format: Option<String>,
        /// Repair: leaks, or all.
        #[arg(short = 'r')]
        repair: Option<String>,
        /// Quiet.
        #[arg(short = 'q')]
        quiet: bool,
        file: PathBuf,
    },
    /// Copy an image into a new one, maybe in another format, as `qemu-img
    /// convert` (zero areas are left unallocated).
    Convert {
        /// Source format; probed when omitted.
        #[arg(short = 'f')]
        format: Option<String>,
        /// Output format (raw or qcow2).
        #[arg(short = 'O', default_value = "raw")]
        output_format: String,
        /// Output options, as for create.
        #[arg(short = 'o')]
        options: Option<String>,
        /// Compress the output (qcow2).
        #[arg(short = 'c')]
        compress: bool,
        /// Show a progress bar (on a terminal only).
        #[arg(short = 'p')]
        progress: bool,
        /// Quiet.
        #[arg(short = 'q')]
        quiet: bool,
        source: PathBuf,
        dest: PathBuf,
    },
    /// Show where each guest range lives, as `qemu-img map` (`--output=json`
    /// gives its JSON).
    Map {
        /// Format; probed when omitted.
        #[arg(short = 'f')]
        format: Option<String>,
        file: PathBuf,
    },
    /// Internal snapshots of a stopped qcow2 image, as `qemu-img snapshot`:
    /// `-l` lists, `-c` creates, `-a` applies, `-d` deletes (by ID or name).
    Snapshot {
        /// List the snapshots.
        #[arg(short = 'l')]
        list: bool,
        /// Create a snapshot named NAME of the current content.
        #[arg(short = 'c', value_name = "NAME")]
        create: Option<String>,
        /// Revert the image to a snapshot (ID or name).
        #[arg(short = 'a', value_name = "NAME")]
        apply: Option<String>,
        /// Delete a snapshot (ID or name).
        #[arg(short = 'd', value_name = "NAME")]
        delete: Option<String>,
        file: PathBuf,
    },
    /// Give a qcow2 image another backing file, as `qemu-img rebase`: by
    /// default (safe mode) clusters whose content would change are first
    /// copied into the image; `-u` only rewrites the header.
    Rebase {
        /// Format of the image (qcow2).
        #[arg(short = 'f')]
        format: Option<String>,
        /// The new backing file (relative to the image's directory), or ""
        /// for none.
        #[arg(short = 'b')]
        backing: String,
        /// The new backing file's format (stored in the header).
        #[arg(short = 'F')]
        backing_format: Option<String>,
        /// Unsafe: only rewrite the header (the content may change).
        #[arg(short = 'u')]
        unsafe_: bool,
        /// Show a progress bar (on a terminal).
        #[arg(short = 'p')]
        progress: bool,
        /// Quiet.
        #[arg(short = 'q')]
        quiet: bool,
        file: PathBuf,
    },
    /// Write a qcow2 image's data into its backing file, as `qemu-img
    /// commit`, then empty the image.
    Commit {
        /// Format of the image (qcow2).
        #[arg(short = 'f')]
        format: Option<String>,
        /// Commit into this deeper image of the chain instead of the
        /// backing file.
        #[arg(short = 'b')]
        base: Option<PathBuf>,
        /// Do not empty the image afterwards.
        #[arg(short = 'd')]
        keep: bool,
        /// Show a progress bar (on a terminal).
        #[arg(short = 'p')]
        progress: bool,
        /// Quiet.
        #[arg(short = 'q')]
        quiet: bool,
        file: PathBuf,
    },
    /// Change an image's virtual size, as `qemu-img resize`: SIZE, +SIZE or -SIZE.
    Resize {
        /// Format; probed when omitted.
        #[arg(short = 'f')]
        format: Option<String>,
        /// Allow shrinking (data past the new end is lost).
        #[arg(long)]
        shrink: bool,
        /// Quiet.
        #[arg(short = 'q')]
        quiet: bool,
        file: PathBuf,
        #[arg(allow_hyphen_values = true)]
        size: String,
    },
}

fn format(v: &str) -> anyhow::Result<DiskFormat> {
    DiskFormat::parse(v).map_err(|_| anyhow!("unknown format '{v}' (raw and qcow2 are supported)"))
}

/// Refuses `-f` naming anything but qcow2 (for verbs only qcow2 has).
fn qcow2_only(v: &Option<String>) -> anyhow::Result<()> {
    match opt_format(v)? {
        None | Some(DiskFormat::Qcow2) => Ok(()),
        Some(_) => bail!("this works on qcow2 images only"),
    }
}

fn opt_format(v: &Option<String>) -> anyhow::Result<Option<DiskFormat>> {
    v.as_deref().map(format).transpose()
}

/// Applies qemu-img's `-o key=value,...` to `o`.
fn apply_options(o: &mut CreateOptions, spec: &str) -> anyhow::Result<()> {
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("option '{kv}' is not key=value"))?;
        match k {
            "cluster_size" => o.cluster_size = Some(size::parse(v)?),
            "preallocation" => {
                o.preallocation = Preallocation::parse(v).ok_or_else(|| {
                    anyhow!("preallocation must be off, metadata or full, not '{v}'")
                })?
            }
            "lazy_refcounts" => o.lazy_refcounts = on_off(v)?,
            "compat" if matches!(v, "1.1" | "v3") => o.v2 = false,
            "compat" if matches!(v, "0.10" | "v2") => o.v2 = true,
            "compat" => bail!("compat must be 0.10 or 1.1, not '{v}'"),
            "size" => o.size = Some(size::parse(v)?),
            _ => bail!(
                "unknown option '{k}' (cluster_size, preallocation, lazy_refcounts, compat, size)"
            ),
        }
    }
    Ok(())
}

fn on_off(v: &str) -> anyhow::Result<bool> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => bail!("'{v}' is not on or off"),
    }
}

/// Runs one `vt image` verb; `output` is the global `--output` (`json`
/// for `info` and `map`). Returns qemu-img's exit status for the verb.
pub fn run(cmd: ImageCommand, output: Format) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::FetchLinux { dir } => {
            let arts = lab::artifacts::fetch(dir.as_deref())?;
            for p in [
                &arts.vmlinuz,
                &arts.vmlinux,
                &arts.initramfs,
                &arts.lab_modules,
            ] {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Create {
            format: f,
            backing,
            backing_format,
            options,
            quiet,
            file,
            size,
        } => {
            let mut o = CreateOptions {
                format: Some(format(&f)?),
                size: size.as_deref().map(size::parse).transpose()?,
                ..Default::default()
            };
            if let Some(spec) = &options {
                apply_options(&mut o, spec)?;
            }
            if let Some(b) = backing {
                let Some(bf) = backing_format else {
                    bail!("a backing file needs its format (-F raw|qcow2)");
                };
                o.backing = Some((b, format(&bf)?));
            }
            let size = disk::create::create(&file, &o)?;
            if !quiet {
                println!(
                    "Formatting '{}', fmt={} size={size}",
                    file.display(),
                    o.format.map_or("raw", |f| f.name())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Info {
            format: f,
            backing_chain: false,
            file,
        } => {
            let i = disk::info::info(&file, opt_format(&f)?)?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&info::json(&i))?),
                Format::Table => print!("{}", info::human(&i)),
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Info {
            format: f,
            backing_chain: true,
            file,
        } => {
            let chain = disk::info::chain(&file, opt_format(&f)?)?;
            match output {
                Format::Json => {
                    let all: Vec<_> = chain.iter().map(info::json).collect();
                    println!("{}", serde_json::to_string_pretty(&all)?)
                }
                Format::Table => {
                    let all: Vec<_> = chain.iter().map(info::human).collect();
                    print!("{}", all.join("\n"))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Check {
            format: f,
            repair,
            quiet,
            file,
        } => {
            let fmt = match opt_format(&f)? {
                Some(f) => f,
                None => disk::info::info(&file, None)?.format,
            };
            if fmt == DiskFormat::Raw {
                eprintln!("vt: This image format does not support checks");
                return Ok(ExitCode::from(63));
            }
            let repair = match repair.as_deref() {
                None => Repair::None,
                Some("leaks") => Repair::Leaks,
                Some("all") => Repair::All,
                Some(r) => bail!("-r takes leaks or all, not '{r}'"),
            };
            let report = disk::check::check(&file, repair)?;
            if !quiet {
                print!("{}", report.text());
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        ImageCommand::Convert {
            format: f,
            output_format,
            options,
            compress,
            progress,
            quiet,
            source,
            dest,
        } => {
            let mut o = CreateOptions {
                format: Some(format(&output_format)?),
                ..Default::default()
            };
            if let Some(spec) = &options {
                apply_options(&mut o, spec)?;
            }
            if compress && o.format != Some(DiskFormat::Qcow2) {
                bail!("compression not supported for this file format (qcow2 has it)");
            }
            if compress && o.preallocation != Preallocation::Off {
                bail!("compression and preallocation cannot be combined");
            }
            let c = convert::Convert {
                source: &source,
                source_format: opt_format(&f)?,
                dest: &dest,
                create: o,
                progress: progress && !quiet,
                compress,
            };
            c.run()?;
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Map { format: f, file } => {
            let fmt = match opt_format(&f)? {
                Some(f) => f,
                None => disk::info::info(&file, None)?.format,
            };
            let extents = match fmt {
                DiskFormat::Raw => disk::map::map_raw(&file)?,
                DiskFormat::Qcow2 => disk::map::map(&file)?,
            };
            match output {
                Format::Json => print!("{}", info::map_json(&extents)),
                Format::Table => {
                    print!("{}", info::map_human(&extents));
                    if extents.iter().any(|e| e.data && e.offset.is_none()) {
                        bail!("File contains external, encrypted or compressed clusters.");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Snapshot {
            list,
            create,
            apply,
            delete,
            file,
        } => {
            use disk::snapshot::edit;
            match (list, create, apply, delete) {
                (true, None, None, None) => {
                    let snaps = disk::snapshot::list(&file)?;
                    print!("{}", info::snapshot_table(&snaps));
                }
                (false, Some(n), None, None) => edit::create(&file, &n)?,
                (false, None, Some(n), None) => edit::apply(&file, &n)?,
                (false, None, None, Some(n)) => edit::delete(&file, &n)?,
                _ => bail!("give exactly one of -l, -c NAME, -a SNAPSHOT, -d SNAPSHOT"),
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Rebase {
            format: f,
            backing,
            backing_format,
            unsafe_,
            progress,
            quiet,
            file,
        } => {
            qcow2_only(&f)?;
            let new = if backing.is_empty() {
                None
            } else {
                let Some(bf) = &backing_format else {
                    bail!(
                        "rebase needs -F FMT with -b (the backing format is stored, never probed)"
                    );
                };
                Some(disk::rebase::NewBacking {
                    name: &backing,
                    format: format(bf)?,
                })
            };
            let bar = progress::bar(progress && !quiet, 0);
            disk::rebase::rebase(&file, new, unsafe_, &mut progress::callback(&bar))?;
            if let Some(b) = bar {
                b.finish();
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Commit {
            format: f,
            base,
            keep,
            progress,
            quiet,
            file,
        } => {
            qcow2_only(&f)?;
            let bar = progress::bar(progress && !quiet, 0);
            disk::commit::commit(&file, base.as_deref(), keep, &mut progress::callback(&bar))?;
            if let Some(b) = bar {
                b.finish();
            }
            if !quiet {
                println!("Image committed.");
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Resize {
            format: f,
            shrink,
            quiet,
            file,
            size,
        } => {
            let fmt = opt_format(&f)?;
            let current = disk::info::info(&file, fmt)?.virtual_size;
            let new = size::relative(current, &size)?;
            disk::resize::resize(&file, fmt, new, shrink)?;
            if !quiet {
                println!("Image resized.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
