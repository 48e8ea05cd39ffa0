//! The `barsync` binary: turns flags into library calls and results into text.
use clap::{Parser, Subcommand};

mod sync_info;

#[derive(Parser)]
#[command(name = "barsync", version, about = "Barman passive-node sync with an in-process delta-transfer engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // SUBCOMMANDS: one variant per command, each handled by its own module.
    /// Print the server's sync-info JSON as `barman sync-info` does (or ask the primary)
    SyncInfo(sync_info::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::SyncInfo(args) => sync_info::run(&args),
    }
}
