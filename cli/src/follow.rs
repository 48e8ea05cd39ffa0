//! `barsync follow [SERVER|all]`: the long-running WAL follower, in the foreground (one thread
//! per server), until SIGTERM, SIGINT or SIGHUP; it then finishes the batch in flight and exits
//! 0. The loop itself is `barsync_sync::passive::follow`; this turns flags into its options,
//! signals into its stop flag, and its events into lines (no progress bars: a service's log).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use barsync_sync::config::Config;
use barsync_sync::passive::{
    follow, Events, FetchEvents, FollowOptions, PassiveOptions, PassiveServer,
};
use barsync_sync::ssh_liveness::Liveness;

use crate::output::ui;

pub const AFTER_HELP: &str = concat!(
    "Examples:
  barsync follow pg                          # ship each WAL of pg as soon as the primary has it
  barsync follow                             # every passive server (as `all`)
  systemctl enable --now barsync-follow@pg   # the packaged unit (packaging/)

Starts with one sync-info and a WAL sync as `cron`'s (filling any gap), then keeps one
session to the primary, where barsync waits on the primary's xlog db and sends each new line
at once (an older barsync or SFTP: the xlog db is looked at every --poll-interval). Each new
WAL is copied, verified, fsynced and listed in the xlog db exactly as `sync-wals` does, under
the same locks, so `barsync cron` (for backups) and Barman run next to it. A cut session is
reopened with a growing pause; WALs archived meanwhile are shipped first, in order.
SIGTERM, SIGINT or SIGHUP: the batch in flight is finished, then exit 0.
With --partial, the primary's streaming/*.partial files are also kept up to date in
<backup_directory>/barsync-partial/ (the README says how to recover with them).
`barsync status` and `check` show the lag (`follow_max_lag`, default 5 minutes).
",
    exit_codes!()
);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Barman configuration file (default: ~/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Server name, or `all` (every passive server that is not disabled)
    #[arg(default_value = "all", add = clap_complete::ArgValueCompleter::new(crate::generate::passive_servers))]
    server: String,
    /// The barsync program on the primary (started as `barsync serve`)
    #[arg(long, default_value = "barsync")]
    remote_barsync: String,
    /// Copy over SFTP even if barsync is installed on the primary (the xlog db is then looked
    /// at every --poll-interval)
    #[arg(long)]
    sftp: bool,
    /// SSH transport for primary_ssh_command: auto, in-process (libssh2) or subprocess (ssh)
    #[arg(long, value_enum, default_value = "auto")]
    transport: crate::passive::Transport,
    /// Seconds between two looks at the primary's xlog db when the primary cannot watch it
    /// (an older barsync, or SFTP)
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    poll_interval: f64,
    /// Also copy the primary's in-progress streaming WAL (`streaming/*.partial`, written by
    /// its `receive-wal`) into <backup_directory>/barsync-partial/ (never into wals/), at least
    /// every second; needs barsync on the primary
    #[arg(long)]
    partial: bool,
    /// Longest pause in seconds between two attempts to reach the primary again
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    max_backoff: f64,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= 3600.0 => Ok(value),
        _ => Err(format!(
            "'{text}' is not a number of seconds (more than 0, at most 3600)"
        )),
    }
}

/// Set by SIGTERM, SIGINT and SIGHUP; every follower thread looks at it.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> std::io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); the sigaction
        // structure is fully initialised before the call.
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A service's events: information and warnings as lines, no progress display.
struct FollowEvents;

impl Events for FollowEvents {
    fn info(&self, message: &str) {
        ui().info(message);
    }
}

impl FetchEvents for FollowEvents {
    fn warning(&self, message: &str) {
        ui().warning(message);
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let servers = crate::passive::servers_named(&config, &args.server)?;
    if servers.is_empty() {
        ui().error("no passive server to follow");
        return Ok(ExitCode::from(1));
    }
    install_signal_handlers()?;
    let passive_options = PassiveOptions {
        remote_barsync: args.remote_barsync.clone(),
        transport: args.transport.into(),
        // One session is enough for WALs as they come; a long gap opens one more.
        jobs: Some(2),
        config_file: config.config_file().to_path_buf(),
        force_sftp: args.sftp,
        // A link that dies without a word is noticed in seconds, not a minute.
        liveness: Liveness::FOLLOW,
        ..PassiveOptions::default()
    };
    let options = FollowOptions {
        poll_interval: Duration::from_secs_f64(args.poll_interval),
        max_backoff: Duration::from_secs_f64(args.max_backoff),
        partial: args.partial,
        ..FollowOptions::default()
    };
    let events = FollowEvents;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .map(|server| {
                let (passive_options, options, events) = (&passive_options, &options, &events);
                scope.spawn(move || {
                    let passive = PassiveServer::new(server, passive_options, events)?;
                    follow(&passive, options, &STOP)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| match handle.join() {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("a follower thread panicked".to_owned()),
            })
            .collect()
    });
    for failure in &failures {
        ui().error(failure);
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
