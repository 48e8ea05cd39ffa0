//! `barsync serve --root DIR...`: the far end of a session, speaking the protocol on stdin and
//! stdout (started over SSH by the other side, as `rsync --server` is).

use std::io::{stdin, stdout};
use std::path::PathBuf;

use anyhow::{Context, Result};
use transfer_engine::confine::Roots;
use transfer_engine::protocol::serve;

pub const AFTER_HELP: &str = concat!(
    "Examples (run by barsync itself, over ssh; not by hand):
  ssh primary barsync serve --root /var/lib/barman/pg/base --root /var/lib/barman/pg/wals

Nothing outside the --root directories is ever read or written; every path component is
opened with O_NOFOLLOW from a directory handle.
",
    exit_codes!()
);

#[derive(clap::Args)]
pub struct Args {
    /// A directory this side may serve (repeatable); nothing outside these is ever read.
    #[arg(long = "root", required = true, value_name = "DIR")]
    roots: Vec<PathBuf>,
}

pub fn run(args: &Args) -> Result<std::process::ExitCode> {
    let roots = Roots::new(args.roots.clone()).context("barsync serve")?;
    // Larger pipe buffers towards sshd (a hint; ignored when stdin/stdout are not pipes).
    transfer_engine::transport::enlarge_pipe(&std::io::stdin());
    transfer_engine::transport::enlarge_pipe(&std::io::stdout());
    serve(stdin().lock(), stdout().lock(), &roots).context("barsync serve")?;
    Ok(std::process::ExitCode::SUCCESS)
}
