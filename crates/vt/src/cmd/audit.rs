//! `vt audit`: search and verify the audit trail (through `vtd`, or
//! offline on a trail directory with `--dir`, as `ausearch -if`), and the
//! file watches (`auditctl -w`).

use std::path::PathBuf;

use audit::search::{format_time, parse_time};
use audit::{Filter, Record, Report};
use clap::{Args, Subcommand};

use super::client::{CliError, CliResult, Client};
use super::output::{print_json, table, Format};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Records by VM, key, action, uid, pid, time and result (ausearch).
    Search(SearchArgs),
    /// Check the trail: each record's hash, the chain, the files, the
    /// seals. Exit 1 when anything is wrong.
    Verify(Offline),
    /// File-access watches (auditctl -w).
    #[command(subcommand)]
    Watch(WatchCommand),
}

/// Reading a trail directory directly instead of asking vtd.
#[derive(Args)]
pub struct Offline {
    /// A trail directory (e.g. /var/lib/vt/audit, or a copy): read it
    /// here, without vtd.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The sealing key, to check the seals offline (default: `audit.key`
    /// beside DIR, when readable).
    #[arg(long, value_name = "PATH", requires = "dir")]
    key_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Records about this VM (its actions, its VMM's file accesses).
    #[arg(long, value_name = "NAME")]
    vm: Option<String>,
    /// A watch's key (`image:NAME` for VM NAME's images).
    #[arg(long, short = 'k', value_name = "KEY")]
    key: Option<String>,
    /// An action (`start`, `define`, ...) or a family (`lifecycle`, `watch`, `audit`).
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// The acting user.
    #[arg(long, value_name = "UID")]
    uid: Option<u32>,
    /// The acting process.
    #[arg(long, value_name = "PID")]
    pid: Option<i32>,
    /// From this time: now, today, seconds since 1970,
    /// 2026-11-29T17:00:00Z, or an age (10m, 2h, 1d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Up to this time (same forms).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// ok, denied or failed.
    #[arg(long, value_name = "RESULT")]
    result: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    #[command(flatten)]
    offline: Offline,
}

#[derive(Subcommand)]
pub enum WatchCommand {
    /// Watch a file: every access of the given kinds is recorded with
    /// the process's pid, executable and uid.
    Add {
        path: PathBuf,
        /// r: open and read; w: write; x: execute; a: attribute change.
        #[arg(long, short = 'p', default_value = "rwa")]
        perm: String,
        /// The key to search by.
        #[arg(long, short = 'k')]
        key: String,
    },
    /// List the watches (a VM's image watches included).
    List,
    /// Remove a watch by its id (from `list`).
    Remove { id: u64 },
}

/// `%`-escapes a query value.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn key_beside(dir: &std::path::Path) -> Option<PathBuf> {
    let k = dir.parent()?.join("audit.key");
    k.is_file().then_some(k)
}

fn load_key(o: &Offline, dir: &std::path::Path) -> CliResult<Option<audit::Key>> {
    let Some(path) = o.key_file.clone().or_else(|| key_beside(dir)) else {
        return Ok(None);
    };
    audit::Key::load(&path)
        .map(Some)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

fn io_err(dir: &std::path::Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError {
        code: 1,
        message: format!("{}: {e}", dir.display()),
    }
}

pub fn run(c: &Client, cmd: AuditCommand, f: Format) -> CliResult {
    match cmd {
        AuditCommand::Search(a) => search(c, a, f),
        AuditCommand::Verify(o) => verify(c, o, f),
        AuditCommand::Watch(w) => watch(c, w, f),
    }
}

fn search(c: &Client, a: SearchArgs, f: Format) -> CliResult {
    let records: Vec<Record> = match &a.offline.dir {
        Some(dir) => {
            let now = audit::trail::now_ms();
            let time = |t: &Option<String>| {
                t.as_deref()
                    .map(|t| parse_time(t, now).map_err(CliError::usage))
                    .transpose()
            };
            let filter = Filter {
                vm: a.vm.clone(),
                key: a.key.clone(),
                action: a.action.clone(),
                uid: a.uid,
                pid: a.pid,
                since_ms: time(&a.since)?,
                until_ms: time(&a.until)?,
                result: a
                    .result
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(CliError::usage)?,
            };
            audit::search(dir, &filter, a.limit).map_err(io_err(dir))?
        }
        None => {
            let mut q = vec![format!("limit={}", a.limit)];
            let mut add = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    q.push(format!("{k}={}", escape(&v)));
                }
            };
            add("vm", a.vm);
            add("key", a.key);
            add("action", a.action);
            add("uid", a.uid.map(|u| u.to_string()));
            add("pid", a.pid.map(|p| p.to_string()));
            add("since", a.since);
            add("until", a.until);
            add("result", a.result);
            c.json("GET", &format!("/audit?{}", q.join("&")), None)?
        }
    };
    if f == Format::Json {
        print_json(&records);
        return Ok(());
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let e = &r.entry;
            let mut detail = e.detail.clone();
            if let Some(x) = &e.exe {
                detail = format!("{detail} [exe {x}]");
            }
            vec![
                r.seq.to_string(),
                format_time(r.time_ms),
                e.action.clone(),
                e.result.as_str().to_string(),
                opt(e.vm.clone()),
                opt(e.key.clone()),
                opt(e.uid.map(|u| u.to_string())),
                opt(e.pid.map(|p| p.to_string())),
                detail,
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "TIME", "ACTION", "RESULT", "VM", "KEY", "UID", "PID", "DETAIL",
        ],
        &rows,
    );
    Ok(())
}

fn verify(c: &Client, o: Offline, f: Format) -> CliResult {
    let report: Report = match &o.dir {
        Some(dir) => {
            let key = load_key(&o, dir)?;
            let mut r = audit::verify(dir, key.as_ref()).map_err(io_err(dir))?;
            // The anchor beside the key, when the key is found.
            if let Some(path) = o.key_file.clone().or_else(|| key_beside(dir)) {
                audit::anchor::check(&mut r, &audit::anchor::path_for(&path));
            }
            r
        }
        None => c.json("GET", "/audit/verify", None)?,
    };
    if f == Format::Json {
        print_json(&report);
    } else {
        let range = match (report.first_seq, report.last_seq) {
            (Some(a), Some(b)) => format!(" (records {a}-{b})"),
            _ => String::new(),
        };
        let seals = if report.seals_checked {
            let through = report
                .sealed_through
                .map_or(String::new(), |s| format!(", the last through record {s}"));
            format!(
                "seals checked: {} valid checkpoint(s){through}, and the head",
                report.checkpoints
            )
        } else {
            "seals not checked (no key: give --key-file)".to_string()
        };
        let verdict = if report.ok {
            "intact"
        } else {
            "TAMPERED OR DAMAGED"
        };
        println!(
            "trail {verdict}: {} records in {} files{range}; {seals}",
            report.records, report.files
        );
        for p in &report.problems {
            println!("  {p}");
        }
        if report.more_problems > 0 {
            println!("  ... and {} more problems", report.more_problems);
        }
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError {
            code: 1,
            message: format!(
                "the audit trail failed verification ({} problems)",
                report.problems.len() as u64 + report.more_problems
            ),
        })
    }
}

fn watch(c: &Client, w: WatchCommand, f: Format) -> CliResult {
    match w {
        WatchCommand::Add { path, perm, key } => {
            let path = std::path::absolute(&path).unwrap_or(path);
            let body = serde_json::json!({ "path": path, "perms": perm, "key": key });
            let added: audit::fanotify::Watch = c.json(
                "POST",
                "/audit/watches",
                Some(body.to_string().into_bytes()),
            )?;
            if f == Format::Json {
                print_json(&added);
            } else {
                println!("watch {} added on {}", added.id, added.path.display());
            }
            Ok(())
        }
        WatchCommand::List => {
            let all: Vec<audit::fanotify::Watch> = c.json("GET", "/audit/watches", None)?;
            if f == Format::Json {
                print_json(&all);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|w| {
                    vec![
                        w.id.to_string(),
                        w.perms.to_string(),
                        w.key.clone(),
                        w.path.display().to_string(),
                    ]
                })
                .collect();
            table(&["ID", "PERM", "KEY", "PATH"], &rows);
            Ok(())
        }
        WatchCommand::Remove { id } => {
            c.call("DELETE", &format!("/audit/watches/{id}"), None)?;
            if f == Format::Table {
                println!("watch {id} removed");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_escaped() {
        assert_eq!(super::escape("image:a b"), "image%3Aa%20b");
        assert_eq!(super::escape("vm-1_x.y"), "vm-1_x.y");
    }
}
