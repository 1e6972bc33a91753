//! `vt-logger --max-bytes N --files K PATH`: copies its standard input
//! into the log file PATH, capped at N bytes and rotated with K old files
//! kept ([`vt_log::rotate`]), until the input ends. `vtd` runs one per
//! VM on the read end of the pipe the VMM writes its serial console to,
//! in its own session, so the console is logged while `vtd` restarts (as
//! libvirt's virtlogd does); it ends when the VMM's end closes.

use std::path::PathBuf;
use std::process::ExitCode;

use vt_log::rotate::{copy_until_eof, Limits};

fn usage() -> ExitCode {
    eprintln!("usage: vt-logger --max-bytes N --files K PATH");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut max, mut files, mut path) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--max-bytes" => max = it.next().and_then(|v| v.parse::<u64>().ok()),
            "--files" => files = it.next().and_then(|v| v.parse::<u32>().ok()),
            p if !p.starts_with('-') && path.is_none() => path = Some(PathBuf::from(p)),
            _ => return usage(),
        }
    }
    let (Some(max_bytes), Some(files), Some(path)) = (max, files, path) else {
        return usage();
    };
    if max_bytes == 0 {
        return usage();
    }
    match copy_until_eof(std::io::stdin().lock(), &path, Limits { max_bytes, files }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vt-logger: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
