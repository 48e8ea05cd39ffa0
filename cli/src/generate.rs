//! `barsync generate man [DIR]` and `barsync generate completions SHELL`: the man pages and
//! shell completions, generated from the clap definitions (hidden; for packagers). Also the
//! completers of dynamic completion (`source <(COMPLETE=bash barsync)`), which offer the passive
//! server names of the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

pub const USAGE: &str = "Examples:
  barsync generate man target/man                 # barsync.1 and barsync-<command>.1
  barsync generate completions bash > /etc/bash_completion.d/barsync
  barsync generate completions zsh > ~/.zfunc/_barsync";

#[derive(clap::Args)]
#[command(after_help = USAGE)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Man pages: barsync.1 and one per command, into DIR (default: stdout, barsync.1 only)
    Man {
        /// Directory to write the pages to
        dir: Option<PathBuf>,
    },
    /// Shell completions on stdout
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

pub fn run<C: CommandFactory>(args: &Args) -> Result<ExitCode> {
    let command = C::command();
    match &args.what {
        What::Man { dir: None } => {
            clap_mangen::Man::new(command).render(&mut std::io::stdout().lock())?;
        }
        What::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        What::Completions { shell } => {
            let mut command = command;
            clap_complete::generate(*shell, &mut command, "barsync", &mut std::io::stdout());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Completes a server name: the passive servers of the configuration found at the default
/// locations (the command line's `-c` is not known while completing).
pub fn passive_servers(current: &std::ffi::OsStr) -> Vec<clap_complete::CompletionCandidate> {
    server_candidates(current, false)
}

/// Completes a server name or `all`.
pub fn passive_servers_or_all(
    current: &std::ffi::OsStr,
) -> Vec<clap_complete::CompletionCandidate> {
    server_candidates(current, true)
}

fn server_candidates(
    current: &std::ffi::OsStr,
    all: bool,
) -> Vec<clap_complete::CompletionCandidate> {
    let prefix = current.to_string_lossy();
    let mut names: Vec<String> = barsync_sync::config::Config::load(None)
        .and_then(|config| config.servers())
        .map(|servers| {
            servers
                .into_iter()
                .filter(|s| s.is_passive() && !s.is_disabled())
                .map(|s| s.name().to_owned())
                .collect()
        })
        .unwrap_or_default();
    if all {
        names.push("all".to_owned());
    }
    names
        .into_iter()
        .filter(|name| name.starts_with(prefix.as_ref()))
        .map(clap_complete::CompletionCandidate::new)
        .collect()
}
