//! `barsync check SERVER`: `barman check` for a passive node, rendered from the typed report
//! of [`barsync_sync::check`]. One line per check, `OK` or `FAILED (reason)`, exit status 1
//! when any failed: the configuration (settings Barman
//! ignores or misreads), the ssh connection to the primary (run as Barman runs it,
//! `<primary_ssh_command> -o BatchMode=yes true`), its host key, clean output, barsync and
//! barman on the primary, whether its `barsync serve` is read-only (a session opened as the
//! passive opens them), the local directories (created when missing, as Barman's check does,
//! then written to), WAL compression against the primary's (from `primary.info`), and how old
//! the last synced backup and WAL are. Always the same checks in the same order (for
//! monitoring), as text, `--json` or `--nagios`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use barsync_sync::check::{check_server, ServerChecks};
use barsync_sync::config::Config;
use serde::Serialize;

use crate::output::ui;

/// `println!` through [`crate::output::stdout_line`] (no panic on a closed pipe).
macro_rules! outln {
    ($($arg:tt)*) => {
        crate::output::stdout_line(&format!($($arg)*))
    };
}

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

pub fn run(args: &Args) -> Result<ExitCode> {
    match run_checks(args) {
        Err(error) if args.nagios => {
            outln!("BARSYNC CRITICAL - {error:#}");
            Ok(ExitCode::from(2))
        }
        result => result,
    }
}

/// What `check --json` prints.
#[derive(Serialize)]
struct CheckDocument {
    command: &'static str,
    ok: bool,
    servers: Vec<ServerChecks>,
}

fn run_checks(args: &Args) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let servers = crate::passive::servers_named(&config, &args.server)?;
    let mut results = Vec::new();
    for server in &servers {
        let report = check_server(server, &args.remote_barsync);
        let failures: Vec<String> = report
            .failures()
            .map(|check| check.line().trim().to_owned())
            .collect();
        // The log gets one line per server, not the whole report on every run.
        ui().log_only(
            report.ok,
            &if report.ok {
                format!("Check of server {}: OK", report.server)
            } else {
                format!("Check of server {}: {}", report.server, failures.join("; "))
            },
        );
        if !args.json && !args.nagios {
            ui().print(&format!("Server {}:", report.server));
            for check in &report.checks {
                ui().print(&check.line());
            }
        }
        results.push(report);
    }
    let ok = results.iter().all(|report| report.ok);
    if args.nagios {
        print_nagios(&results);
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    if args.json {
        crate::output::print_document(&CheckDocument {
            command: "check",
            ok,
            servers: results,
        });
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The checks as a Nagios plugin reports them, in the shape of `barman check --nagios`.
fn print_nagios(results: &[ServerChecks]) {
    let failing: Vec<&ServerChecks> = results.iter().filter(|report| !report.ok).collect();
    if failing.is_empty() {
        match results {
            [] => outln!("BARSYNC OK - No server configured"),
            [report] => outln!(
                "BARSYNC OK - Ready to serve the Espresso backup for {}",
                report.server
            ),
            _ => outln!(
                "BARSYNC OK - Ready to serve the Espresso backup for {} servers * {}",
                results.len(),
                results
                    .iter()
                    .map(|report| report.server.as_str())
                    .collect::<Vec<_>>()
                    .join(" * ")
            ),
        }
        return;
    }
    let summaries: Vec<String> = failing
        .iter()
        .map(|report| {
            let names: Vec<&str> = report.failures().map(|check| check.name).collect();
            format!("{} FAILED: {}", report.server, names.join(", "))
        })
        .collect();
    if results.len() == 1 {
        outln!(
            "BARSYNC CRITICAL - server {} has issues * {}",
            results[0].server,
            summaries.join(" * ")
        );
    } else {
        outln!(
            "BARSYNC CRITICAL - {} server out of {} have issues * {}",
            failing.len(),
            results.len(),
            summaries.join(" * ")
        );
    }
    for report in failing {
        for check in report.failures() {
            outln!(
                "{}.{}: FAILED ({})",
                report.server,
                check.name,
                check.detail
            );
        }
    }
}
