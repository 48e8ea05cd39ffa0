//! `barsync check SERVER`: `barman check` for a passive node. One line per check, `OK` or
//! `FAILED (reason)`, exit status 1 when any failed: the configuration (settings Barman
//! ignores or misreads), the ssh connection to the primary (run as Barman runs it,
//! `<primary_ssh_command> -o BatchMode=yes true`), its host key, clean output, barsync and
//! barman on the primary, whether its `barsync serve` is read-only (a session opened as the
//! passive opens them), the local directories (created when missing, as Barman's check does,
//! then written to), WAL compression against the primary's (from `primary.info`), and how old
//! the last synced backup and WAL are. Always the same checks in the same order (for
//! monitoring), as text, `--json` or `--nagios`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use barsync_sync::backup_info::BackupStatus;
use barsync_sync::catalog::load_backups;
use barsync_sync::config::{Config, OptionValue, ServerConfig};
use barsync_sync::passive::cron::{cron_lock, CronLock};
use barsync_sync::syncinfo::{load_primary_info, shell_quote};
use serde_json::{json, Value};

use crate::output::ui;

pub const AFTER_HELP: &str = concat!(
    "Examples:
  barsync check pg                        # one server
  barsync check -c /etc/barman.conf all   # every passive server
  barsync check --json pg                 # for monitoring: ok, then each check's name, ok, detail
  barsync check --nagios all              # a Nagios plugin, as `barman check --nagios`

Checks: configuration (no setting of the server's section or of [barman] that Barman ignores
or misreads: a misspelt option, an invalid value, a `; comment` kept in a value), ssh (the
primary answers `true` in batch mode), ssh host key (a changed key is reported as such),
ssh output clean, barsync and barman on the primary's PATH, barsync serve (read-only or
read-write, from a session opened as the passive opens them), directories (created when
missing, then written to), compression (the same as the primary's, from primary.info),
primary.info (present), cron lock (not held by a run with no progress for 30 minutes),
failed backups, last synced backup and last synced WAL (their age; FAILED beyond
last_backup_maximum_age / last_wal_maximum_age when set). The same checks are printed
whatever happens; those that need an unreachable primary fail as \"not checked\".
",
    exit_codes!()
);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Barman configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// The barsync program on the primary
    #[arg(long, default_value = "barsync")]
    remote_barsync: String,
    /// Server name (a passive server section), or `all`
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::generate::passive_servers_or_all))]
    server: String,
    /// Print the checks as one JSON document on stdout instead of lines
    #[arg(long, conflicts_with = "nagios")]
    pub json: bool,
    /// Nagios plugin output, as `barman check --nagios`: one status line, then one line per
    /// failed check; exit status 0 (OK) or 2 (CRITICAL)
    #[arg(long)]
    pub nagios: bool,
}

/// The outcome of one check.
struct Check {
    name: &'static str,
    result: Result<String, String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match run_checks(args) {
        Err(error) if args.nagios => {
            println!("BARSYNC CRITICAL - {error:#}");
            Ok(ExitCode::from(2))
        }
        result => result,
    }
}

fn run_checks(args: &Args) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let servers = crate::passive::servers_named(&config, &args.server)?;
    let mut failed = false;
    let mut documents = Vec::new();
    let mut results = Vec::new();
    for server in &servers {
        let checks = check_server(server, &args.remote_barsync);
        let failures: Vec<String> = checks
            .iter()
            .filter(|check| check.result.is_err())
            .map(check_line)
            .map(|line| line.trim().to_owned())
            .collect();
        failed |= !failures.is_empty();
        // The log gets one line per server, not the whole report on every run.
        ui().log_only(
            failures.is_empty(),
            &if failures.is_empty() {
                format!("Check of server {}: OK", server.name())
            } else {
                format!("Check of server {}: {}", server.name(), failures.join("; "))
            },
        );
        if args.json {
            documents.push(server_json(server.name(), failures.is_empty(), &checks));
        } else if !args.nagios {
            ui().print(&format!("Server {}:", server.name()));
            for check in &checks {
                ui().print(&check_line(check));
            }
        }
        results.push((server.name().to_owned(), checks));
    }
    if args.nagios {
        print_nagios(&results);
        return Ok(if failed {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    if args.json {
        crate::passive::print_json(&json!({
            "command": "check",
            "ok": !failed,
            "servers": documents,
        }));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `\tNAME: OK (detail)` or `\tNAME: FAILED (reason)`, as Barman prints a check.
fn check_line(check: &Check) -> String {
    match &check.result {
        Ok(detail) if detail.is_empty() => format!("\t{}: OK", check.name),
        Ok(detail) => format!("\t{}: OK ({detail})", check.name),
        Err(reason) => format!("\t{}: FAILED ({reason})", check.name),
    }
}

/// The checks as a Nagios plugin reports them, in the shape of `barman check --nagios`.
fn print_nagios(results: &[(String, Vec<Check>)]) {
    let failing: Vec<&(String, Vec<Check>)> = results
        .iter()
        .filter(|(_, checks)| checks.iter().any(|c| c.result.is_err()))
        .collect();
    if failing.is_empty() {
        match results {
            [] => println!("BARSYNC OK - No server configured"),
            [(name, _)] => println!("BARSYNC OK - Ready to serve the Espresso backup for {name}"),
            _ => println!(
                "BARSYNC OK - Ready to serve the Espresso backup for {} servers * {}",
                results.len(),
                results
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(" * ")
            ),
        }
        return;
    }
    let summaries: Vec<String> = failing
        .iter()
        .map(|(name, checks)| {
            let names: Vec<&str> = checks
                .iter()
                .filter(|c| c.result.is_err())
                .map(|c| c.name)
                .collect();
            format!("{name} FAILED: {}", names.join(", "))
        })
        .collect();
    if results.len() == 1 {
        println!(
            "BARSYNC CRITICAL - server {} has issues * {}",
            results[0].0,
            summaries.join(" * ")
        );
    } else {
        println!(
            "BARSYNC CRITICAL - {} server out of {} have issues * {}",
            failing.len(),
            results.len(),
            summaries.join(" * ")
        );
    }
    for (name, checks) in failing {
        for check in checks {
            if let Err(reason) = &check.result {
                println!("{name}.{}: FAILED ({reason})", check.name);
            }
        }
    }
}

/// One server's checks as JSON: each with its name, `ok`, and the detail or the reason.
fn server_json(name: &str, ok: bool, checks: &[Check]) -> Value {
    let checks: Vec<Value> = checks
        .iter()
        .map(|check| match &check.result {
            Ok(detail) => json!({"name": check.name, "ok": true, "detail": detail}),
            Err(reason) => json!({"name": check.name, "ok": false, "detail": reason}),
        })
        .collect();
    json!({"server": name, "ok": ok, "checks": checks})
}

fn check_server(server: &ServerConfig, remote_barsync: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    let check = |name: &'static str, result: Result<String, String>| Check { name, result };
    checks.push(check(
        "configuration",
        crate::passive::configuration_check(server),
    ));
    let Some(ssh) = server
        .primary_ssh_command()
        .filter(|c| !c.trim().is_empty())
    else {
        checks.push(check(
            "passive node",
            Err("primary_ssh_command is not set: this server is not a passive node".into()),
        ));
        return checks;
    };
    checks.extend(ssh_checks(server, ssh, remote_barsync));
    // Also when the look for programs was refused (a key pinned to `barsync serve
    // --read-only` on the primary refuses shell commands): the session says what the shell
    // could not. Always the line, for a stable set of checks.
    let reached = checks.iter().any(|c| c.name == "ssh" && c.result.is_ok());
    checks.push(check(
        "barsync serve",
        if reached {
            serve_mode(server, remote_barsync)
        } else {
            Err("not checked: the primary was not reached".into())
        },
    ));
    checks.push(check("directories", directories(server)));
    let primary = load_primary_info(server);
    let primary_info_saved = server.primary_info_path().exists();
    checks.push(check(
        "primary.info",
        match &primary {
            Err(_) if !primary_info_saved => {
                Ok("not saved yet: the first `barsync cron` saves it".into())
            }
            Ok(info) => Ok(format!(
                "{} backups and {} WALs listed by the primary{}",
                info.backups.len(),
                info.wals.len(),
                barsync_sync::fsutil::age_seconds(&server.primary_info_path())
                    .map(|a| format!(", saved {} ago", human(a)))
                    .unwrap_or_default()
            )),
            Err(error) => Err(format!("{error}; run `barsync cron` first")),
        },
    ));
    checks.push(check(
        "compression",
        match &primary {
            Ok(info) => {
                let theirs = info.config.compression.as_deref();
                let ours = server.compression();
                if theirs == ours {
                    Ok(format!("{} on both nodes", ours.unwrap_or("none")))
                } else {
                    Err(format!(
                        "the primary stores WALs with compression {}, this node is configured with {}: WAL sync stops until they match",
                        theirs.unwrap_or("None"),
                        ours.unwrap_or("None")
                    ))
                }
            }
            Err(_) => Ok("not checked: no primary.info yet".into()),
        },
    ));
    checks.push(check(
        "cron lock",
        match cron_lock(server) {
            CronLock::Free => Ok("not held".into()),
            CronLock::Running(holder) => Ok(format!(
                "held by process {}, a cron run making progress ({} ago)",
                holder.pid,
                human(holder.idle_seconds)
            )),
            CronLock::Stale(holder) => Err(format!(
                "held by process {} with no progress for {}: that run may be hung, and every later cron skips this server",
                holder.pid,
                human(holder.idle_seconds)
            )),
        },
    ));
    let backups = load_backups(server);
    checks.push(check(
        "failed backups",
        match &backups {
            Ok(entries) => {
                let failed: Vec<&str> = entries
                    .iter()
                    .filter(|e| e.info.status().ok() == Some(BackupStatus::Failed))
                    .map(|e| e.info.backup_id())
                    .collect();
                if failed.is_empty() {
                    Ok("there are 0 failed backups".into())
                } else {
                    Err(format!(
                        "there are {} failed backups: {} (the next cron retries them)",
                        failed.len(),
                        failed.join(", ")
                    ))
                }
            }
            Err(error) => Err(error.to_string()),
        },
    ));
    checks.push(check(
        "last synced backup",
        match &backups {
            Ok(entries) => {
                let last = entries
                    .iter()
                    .filter(|e| e.info.status().ok() == Some(BackupStatus::Done))
                    .max_by(|a, b| a.info.backup_id().cmp(b.info.backup_id()));
                match last {
                    None => never_synced(server, "last_backup_maximum_age", "backup"),
                    Some(entry) => {
                        let id = entry.info.backup_id();
                        let ended = entry
                            .info
                            .time("end_time")
                            .ok()
                            .flatten()
                            .map(|t| now_seconds() - t.unix_seconds() as f64);
                        within(server, "last_backup_maximum_age", id, ended)
                    }
                }
            }
            Err(error) => Err(error.to_string()),
        },
    ));
    checks.push(check(
        "last synced WAL",
        match barsync_sync::xlogdb::read_entries(server) {
            Ok(entries) => match entries.iter().max_by(|a, b| a.name.cmp(&b.name)) {
                None => never_synced(server, "last_wal_maximum_age", "WAL"),
                Some(last) => within(
                    server,
                    "last_wal_maximum_age",
                    &last.name,
                    Some(now_seconds() - last.time),
                ),
            },
            Err(error) => Err(error.to_string()),
        },
    ));
    checks
}

/// Nothing synced yet: FAILED when the server sets a maximum age `option` (as Barman's check
/// fails without backups then), else OK: a new node is ready for its first cron.
fn never_synced(server: &ServerConfig, option: &str, what: &str) -> Result<String, String> {
    match server.get(option) {
        OptionValue::Interval { .. } => Err(format!("no {what} synced yet, and {option} is set")),
        _ => Ok(format!(
            "no {what} synced yet: the next `barsync cron` copies the primary's"
        )),
    }
}

/// Whether the primary's `barsync serve` refuses writes, from the `Hello` of a session opened
/// as the passive opens them (roots from `primary.info`). Read-write is OK, with a hint.
fn serve_mode(server: &ServerConfig, remote_barsync: &str) -> Result<String, String> {
    use barsync_sync::passive::primary_link::PrimaryLink;
    use barsync_sync::passive::{PassiveOptions, Quiet};
    let Ok(primary) = load_primary_info(server) else {
        return Ok("not checked: no primary.info yet (run `barsync cron`)".into());
    };
    let options = PassiveOptions {
        remote_barsync: remote_barsync.to_owned(),
        ..PassiveOptions::default()
    };
    let link = PrimaryLink::new(server, &primary, &options).map_err(|e| e.to_string())?;
    let session = link.open(&Quiet).map_err(|e| e.to_string())?;
    let read_only = session.serves_read_only();
    session.close()?;
    match read_only {
        Some(true) => Ok("read-only: the primary refuses any write from this node".into()),
        Some(false) => Ok("read-write: pin this node's key to `barsync serve --read-only` on the primary (README, \"A read-only key on the primary\")".into()),
        None => Ok("not checked: the primary is reached over SFTP".into()),
    }
}

/// OK with the age of `what`, or FAILED when older than the server's `option`.
fn within(
    server: &ServerConfig,
    option: &str,
    what: &str,
    age: Option<f64>,
) -> Result<String, String> {
    let Some(age) = age else {
        return Ok(format!("{what}, age unknown"));
    };
    let limit = match server.get(option) {
        OptionValue::Interval { days, seconds } => Some((days * 86_400 + seconds) as f64),
        _ => None,
    };
    match limit {
        Some(limit) if age > limit => Err(format!(
            "{what} is {} old, more than {option} ({})",
            human(age),
            human(limit)
        )),
        _ => Ok(format!("{what}, {} old", human(age))),
    }
}

/// Seconds since the epoch, now.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `3 days 4 hours`, `12 minutes`, `40 seconds`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{s} seconds"),
        (0, 0, m) => format!("{m} minutes"),
        (0, h, m) => format!("{h} hours {m} minutes"),
        (d, h, _) => format!("{d} days {h} hours"),
    }
}

/// The ssh checks, from two commands run through `primary_ssh_command` as Barman runs it.
fn ssh_checks(server: &ServerConfig, ssh: &str, remote_barsync: &str) -> Vec<Check> {
    let is_ssh = ssh
        .split_whitespace()
        .next()
        .and_then(|word| Path::new(word).file_name())
        .is_some_and(|name| name == "ssh");
    // Barman adds StrictHostKeyChecking=no; barsync keeps the configured policy, so that a
    // changed host key is seen here rather than ignored.
    let options = if is_ssh {
        " -o BatchMode=yes -o ConnectTimeout=10"
    } else {
        ""
    };
    let prefix = format!("{ssh}{options}");
    // The same checks in the same order whatever happens, for monitoring: those that need
    // the primary fail as "not checked" when it cannot be reached.
    let (status, stdout, stderr) = match run_remote(server, &prefix, "true") {
        Ok(output) => output,
        Err(error) => (None, String::new(), format!("cannot run /bin/sh: {error}")),
    };
    let said = last_lines(&stderr);
    let changed = stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED");
    let unverified = stderr.contains("Host key verification failed")
        || stderr.contains("host key")
            && (stderr.contains("not known") || stderr.contains("mismatch"));
    let connected = status == Some(0);
    let unreached = || Err("not checked: the primary was not reached".to_owned());
    let mut checks = vec![Check {
        name: "ssh host key",
        result: if changed {
            Err(format!(
                "the primary's host key has CHANGED since it was recorded in known_hosts: a new key, or someone in between; check it, then replace the old line (ssh-keygen -R HOST). ssh said: {said}"
            ))
        } else if unverified {
            Err(format!("the primary's host key cannot be verified: {said}"))
        } else if !is_ssh {
            Ok("not checked: primary_ssh_command is not ssh".into())
        } else if connected {
            Ok("known and unchanged".into())
        } else {
            Err("not verified: the primary was not reached".into())
        },
    }];
    checks.push(Check {
        name: "ssh",
        result: if connected {
            Ok("Barman primary node".into())
        } else {
            Err(format!(
                "Connection failed using '{prefix}' return code {}{}",
                status.map_or("none (killed)".to_owned(), |c| c.to_string()),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ))
        },
    });
    checks.push(Check {
        name: "ssh output clean",
        result: if !connected {
            unreached()
        } else if stdout.trim().is_empty() {
            Ok(String::new())
        } else {
            Err(format!(
                "the primary's shell printed {:?} for `true`: it would corrupt sync-info and sessions",
                stdout.trim()
            ))
        },
    });
    let programs = [remote_barsync, "barman"];
    let script = programs
        .iter()
        .map(|p| {
            format!(
                "printf '%s\\n' \"$(command -v {} 2>/dev/null)\"",
                shell_quote(p)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let found: Vec<String> = if !connected {
        Vec::new()
    } else {
        match run_remote(server, &prefix, &script) {
            Ok((Some(0), out, _)) => out.lines().map(str::to_owned).collect(),
            Ok((_, _, err)) => vec![format!("!{}", last_lines(&err)); 2],
            Err(error) => vec![format!("!{error}"); 2],
        }
    };
    for (index, (name, program)) in [
        ("barsync on the primary", remote_barsync),
        ("barman on the primary", "barman"),
    ]
    .into_iter()
    .enumerate()
    {
        let line = found.get(index).map(String::as_str).unwrap_or("");
        let result = match line {
            _ if !connected => unreached(),
            // Without barsync there, syncs still work, whole files over SFTP verified by the
            // primary's checksum program: a supported setup, not a failure.
            "" if index == 0 => Ok(format!("not installed: whole files over SFTP, verified by the primary's b3sum or sha256sum (install `{program}` there for delta transfers)")),
            "" => Err("`barman` is not on the primary's PATH: sync-info cannot run (or use `barsync cron --remote barsync`)".to_owned()),
            error if error.starts_with('!') => Err(format!("cannot look: {}", &error[1..])),
            path => Ok(path.to_owned()),
        };
        checks.push(Check { name, result });
    }
    checks
}

/// Runs `<prefix> '<command>'` through /bin/sh (with the server's `path_prefix`): exit code,
/// stdout, stderr.
fn run_remote(
    server: &ServerConfig,
    prefix: &str,
    command: &str,
) -> std::io::Result<(Option<i32>, String, String)> {
    let mut shell = Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(format!("{prefix} {}", shell_quote(command)))
        .stdin(Stdio::null());
    if let Some(path_prefix) = server.text("path_prefix").filter(|p| !p.is_empty()) {
        let path = std::env::var("PATH").unwrap_or_default();
        shell.env("PATH", format!("{path_prefix}:{path}"));
    }
    let output = shell.output()?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The meaningful end of an error output, on one line.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@'))
        .collect();
    let start = lines.len().saturating_sub(2);
    lines[start..].join(" ")
}

/// The server's directories exist (created when missing, as Barman's check does) and can be
/// written to.
fn directories(server: &ServerConfig) -> Result<String, String> {
    let directories = [
        server.backup_directory(),
        server.basebackups_directory(),
        server.meta_directory(),
        server.wals_directory(),
        server.lock_directory(),
    ];
    for directory in &directories {
        std::fs::create_dir_all(directory)
            .map_err(|e| format!("{}: cannot create: {e}", directory.display()))?;
        let probe = directory.join(format!(".barsync-check-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| format!("{}: not writable: {e}", directory.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(String::new())
}
