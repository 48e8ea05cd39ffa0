//! The `barsync` binary: turns flags into library calls and results into text.
use clap::{Parser, Subcommand};

mod copy;
mod demo;
mod passive;
mod serve;
mod sync_info;

#[derive(Parser)]
#[command(
    name = "barsync",
    version,
    about = "Barman passive-node sync with an in-process delta-transfer engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // SUBCOMMANDS: one variant per command, each handled by its own module.
    /// Copy files and trees, rsync-style, through the barsync protocol
    Copy(copy::Args),
    /// Sync a sample cluster through the delta engine and verify it (needs nothing installed)
    Demo(demo::Args),
    /// Serve files to a barsync client on stdin/stdout (run by the client over SSH)
    Serve(serve::Args),
    /// Print the server's sync-info JSON as `barman sync-info` does (or ask the primary)
    SyncInfo(sync_info::Args),
    /// Copy one backup of the primary to this passive node (as `barman sync-backup`)
    SyncBackup(passive::SyncBackupArgs),
    /// Copy the primary's new WAL files to this passive node (as `barman sync-wals`)
    SyncWals(passive::SyncWalsArgs),
    /// Sync every passive server: sync-info, all missing backups, WALs (as `barman cron`)
    Cron(passive::CronArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Copy(args) => report(copy::run(&args)),
        Command::Demo(args) => report(demo::run(&args)),
        Command::Serve(args) => report(serve::run(&args)),
        Command::SyncInfo(args) => sync_info::run(&args),
        Command::SyncBackup(args) => report(passive::run_sync_backup(&args)),
        Command::SyncWals(args) => report(passive::run_sync_wals(&args)),
        Command::Cron(args) => report(passive::run_cron_command(&args)),
    }
}

/// Prints an error chain the way Barman prints errors, and maps it to exit status 1.
fn report(result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("ERROR: {error:#}");
        std::process::ExitCode::from(1)
    })
}
