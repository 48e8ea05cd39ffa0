//! `barsync sync-info [-c CONFIG] [--primary] SERVER [LAST_WAL [LAST_POSITION]]`: prints the
//! server's sync-info JSON exactly as `barman sync-info` does, or asks the primary for its own.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use barsync_sync::syncinfo::{run_sync_info, RemoteProgram, SyncInfoArgs};

pub const AFTER_HELP: &str = concat!(
    "Examples:
  barsync sync-info pg                                   # this node's catalog, as `barman sync-info pg`
  barsync sync-info pg 000000010000000000000004 503      # only the WALs after that xlog db line
  barsync sync-info --primary pg                         # ask the primary, save primary.info
  barsync sync-info --primary --remote barsync pg        # the primary runs barsync instead of Barman

On a primary, `barsync sync-info` can stand in for `barman sync-info`: a Barman passive
(or `barsync cron --remote barsync`) reads its output as Barman's.
",
    exit_codes!()
);

/// The program that answers `--primary` requests on the primary node.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Remote {
    /// `barman sync-info ...` (what a Barman passive runs)
    Barman,
    /// `barsync sync-info ...` (barsync installed on the primary)
    Barsync,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Barman configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Ask the primary node (through primary_ssh_command) and save its answer as primary.info
    #[arg(long)]
    primary: bool,
    /// Program run on the primary for --primary
    #[arg(long, value_enum, default_value = "barman")]
    remote: Remote,
    #[command(flatten)]
    bounds: crate::passive::SyncInfoBounds,
    /// Server name (a section of the configuration)
    server: String,
    /// Last WAL the requester already has
    last_wal: Option<String>,
    /// Byte offset of that WAL's line in the primary's xlog db (0 is valid)
    #[arg(allow_hyphen_values = true)]
    last_position: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let outcome = run_sync_info(&SyncInfoArgs {
        config: args.config.as_deref(),
        server: &args.server,
        last_wal: args.last_wal.as_deref(),
        last_position: args.last_position.as_deref(),
        primary: args.primary,
        remote_program: match args.remote {
            Remote::Barman => RemoteProgram::Barman,
            Remote::Barsync => RemoteProgram::Barsync,
        },
        limits: args.bounds.limits(),
    });
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&outcome.stdout);
    let _ = stdout.flush();
    let mut stderr = std::io::stderr().lock();
    for line in &outcome.stderr {
        let _ = writeln!(stderr, "{line}");
    }
    ExitCode::from(outcome.exit_code)
}
