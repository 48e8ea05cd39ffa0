//! The `barsync` binary: turns flags into library calls and results into text, progress and
//! JSON. Exit codes follow Barman: 0 success, 1 failure, 2 usage error.
use clap::{Parser, Subcommand};

/// The exit status paragraph of every command's `--help` (a literal, for `concat!`).
macro_rules! exit_codes {
    () => {
        "\nExit status (as Barman's):\n  0  success\n  1  failure: an error, a file that could not be copied, a failed check\n  2  usage error (unknown option, missing argument)"
    };
}

#[cfg(feature = "bench")]
mod bench;
#[cfg(not(feature = "bench"))]
#[path = "bench_not_built.rs"]
mod bench;
mod check;
mod copy;
mod copy_sessions;
mod demo;
mod follow;
mod generate;
mod list_backups;
mod output;
mod passive;
mod serve;
mod status;
mod sync_info;

const MAIN_AFTER_HELP: &str = concat!(
    "Examples:
  barsync demo                          # a sample primary and passive, synced twice, verified
  barsync cron -c /etc/barman.conf      # what a passive node runs every minute
  barsync check pg                      # is the passive node of server pg ready?
  barsync list-backups pg               # the primary's and the passive's backups side by side
  barsync sync-backup pg latest --json  # one backup, machine-readable summary
",
    exit_codes!()
);

#[derive(Parser)]
#[command(
    name = "barsync",
    version,
    about = "Barman passive-node sync with an in-process delta-transfer engine",
    long_about = "Barman passive-node sync with an in-process delta-transfer engine.\n\n\
        barsync does the job of a Barman passive node (sync-info, sync-backup, sync-wals, \
        cron) on the same catalog, locks and formats as Barman 3.20.1, copying files through \
        its own delta engine (barsync serve on the primary, or SFTP when barsync is not there).",
    after_help = MAIN_AFTER_HELP
)]
struct Cli {
    /// Barman configuration file, for the passive commands (as `barman -c FILE COMMAND`; the
    /// command's own -c wins)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Print only warnings and errors (no information lines, no progress)
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More detail on stderr: every file as it is copied (-vv: its bytes each way, how it was verified)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // SUBCOMMANDS: one variant per command, each handled by its own module.
    /// Copy files and trees, rsync-style, through the barsync protocol
    #[command(after_help = copy::AFTER_HELP)]
    Copy(copy::Args),
    /// Sync a sample Barman primary to a passive node and verify it (needs nothing installed)
    #[command(after_help = demo::AFTER_HELP)]
    Demo(demo::Args),
    /// Serve files to a barsync client on stdin/stdout (run by the client over SSH)
    #[command(after_help = serve::AFTER_HELP)]
    Serve(serve::Args),
    /// Print the server's sync-info JSON as `barman sync-info` does (or ask the primary)
    #[command(after_help = sync_info::AFTER_HELP)]
    SyncInfo(sync_info::Args),
    /// Copy one backup of the primary to this passive node (as `barman sync-backup`)
    #[command(after_help = passive::SYNC_BACKUP_HELP)]
    SyncBackup(passive::SyncBackupArgs),
    /// Copy the primary's new WAL files to this passive node (as `barman sync-wals`)
    #[command(after_help = passive::SYNC_WALS_HELP)]
    SyncWals(passive::SyncWalsArgs),
    /// Sync every passive server: sync-info, all missing backups, WALs (as `barman cron`)
    #[command(after_help = passive::CRON_HELP)]
    Cron(passive::CronArgs),
    /// barsync against rsync and Barman's passive sync, side by side (workloads W1 to W10)
    #[cfg_attr(not(feature = "bench"), command(hide = true))]
    Bench(bench::Args),
    /// Ship each new WAL to this passive node as soon as the primary archives it (long-running)
    #[command(after_help = follow::AFTER_HELP)]
    Follow(follow::Args),
    /// Check a passive node: ssh to the primary, host key, programs, directories, freshness
    #[command(after_help = check::AFTER_HELP)]
    Check(check::Args),
    /// The primary's and this passive node's backups side by side, with sizes
    #[command(after_help = list_backups::AFTER_HELP)]
    ListBackups(list_backups::Args),
    /// Each passive server at a glance: last backup, WAL lag, last cron run, disk use
    #[command(after_help = status::AFTER_HELP)]
    Status(status::Args),
    /// Write the man page or shell completions (for packagers)
    #[command(hide = true)]
    Generate(generate::Args),
}

impl Command {
    /// The command's `-c` option, for the commands that read Barman's configuration.
    fn config_option(&mut self) -> Option<&mut Option<std::path::PathBuf>> {
        match self {
            Command::SyncBackup(a) => Some(&mut a.common.config),
            Command::SyncWals(a) => Some(&mut a.common.config),
            Command::Cron(a) => Some(&mut a.common.config),
            Command::Follow(a) => Some(&mut a.config),
            Command::Check(a) => Some(&mut a.config),
            Command::ListBackups(a) => Some(&mut a.config),
            Command::SyncInfo(a) => Some(&mut a.config),
            Command::Status(a) => Some(&mut a.config),
            _ => None,
        }
    }

    /// The configuration file the command reads (`Some(None)`: the default locations), for
    /// Barman's `log_file`; `None` for commands that read none.
    fn config(&mut self) -> Option<Option<&std::path::Path>> {
        self.config_option().map(|config| config.as_deref())
    }

    fn json(&self) -> bool {
        match self {
            Command::Copy(a) => a.json,
            Command::SyncBackup(a) => a.common.json,
            Command::SyncWals(a) => a.common.json,
            Command::Cron(a) => a.common.json,
            Command::ListBackups(a) => a.json,
            Command::Check(a) => a.json,
            Command::Status(a) => a.json,
            _ => false,
        }
    }
}

fn main() -> std::process::ExitCode {
    // `COMPLETE=bash barsync` prints the shell's completion script; the script calls back here.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let mut cli = Cli::parse();
    if let Some(config) = cli.config.take() {
        match cli.command.config_option() {
            Some(option) => {
                option.get_or_insert(config);
            }
            None => {
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "-c/--config before the command is for the commands that read Barman's \
                         configuration (cron, follow, sync-backup, sync-wals, sync-info, check, \
                         status, list-backups)",
                    )
                    .exit();
            }
        }
    }
    // sync-info checks barman_user itself (it also runs on the primary, as Barman's).
    let passive_config = match cli.command {
        Command::SyncInfo(_) => None,
        _ => cli
            .command
            .config()
            .map(|path| path.map(std::path::Path::to_path_buf)),
    };
    if let Some(status) = passive::preflight(passive_config.as_ref().map(|path| path.as_deref())) {
        return status;
    }
    let log_file = cli
        .command
        .config()
        .and_then(|path| barsync_sync::config::Config::load(path).ok())
        .and_then(|config| output::barman_log_file(&config));
    output::init(
        output::Verbosity::from_flags(cli.quiet, cli.verbose),
        cli.command.json(),
        log_file,
    );
    match cli.command {
        Command::Copy(args) => report("copy", copy::run(&args)),
        Command::Demo(args) => report("demo", demo::run(&args)),
        Command::Serve(args) => report("serve", serve::run(&args)),
        Command::SyncInfo(args) => sync_info::run(&args),
        Command::SyncBackup(args) => report("sync-backup", passive::run_sync_backup(&args)),
        Command::SyncWals(args) => report("sync-wals", passive::run_sync_wals(&args)),
        Command::Cron(args) => report("cron", passive::run_cron_command(&args)),
        Command::Follow(args) => report("follow", follow::run(&args)),
        Command::Bench(args) => report("bench", bench::run(&args)),
        Command::Check(args) => report("check", check::run(&args)),
        Command::ListBackups(args) => report("list-backups", list_backups::run(&args)),
        Command::Status(args) => report("status", status::run(&args)),
        Command::Generate(args) => report("generate", generate::run::<Cli>(&args)),
    }
}

/// Prints an error chain the way Barman prints errors (and, under `--json`, a JSON document
/// naming it), and maps it to exit status 1.
fn report(command: &str, result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    result.unwrap_or_else(|error| {
        let message = format!("{error:#}");
        output::ui().error(&message);
        if output::ui().json() {
            output::print_document(&output::FailureDocument::command(command, message));
        }
        std::process::ExitCode::from(1)
    })
}
