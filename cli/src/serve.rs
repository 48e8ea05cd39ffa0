//! `barsync serve --root DIR...`: the far end of a session, speaking the protocol on stdin and
//! stdout (started over SSH by the other side, as `rsync --server` is). With `--read-only`
//! (what a primary pins in the passive's `authorized_keys`, as rsync's `rrsync -ro`) every
//! push is refused.

use std::io::{stdin, stdout};
use std::path::PathBuf;

use anyhow::{Context, Result};
use transfer_engine::confine::Roots;
use transfer_engine::protocol::{serve_with, ServeOptions};

pub const AFTER_HELP: &str = concat!(
    "Examples (run by barsync itself, over ssh; not by hand):
  ssh primary barsync serve --root /var/lib/barman/pg/base --root /var/lib/barman/pg/wals

Nothing outside the --root directories is ever read or written; every path component is
opened with O_NOFOLLOW from a directory handle. With --read-only nothing is ever written:
every push (file, directory, symlink, removal) is refused. A primary can pin a passive's key
to it in authorized_keys:
  command=\"barsync serve --read-only --root /var/lib/barman\",no-pty ssh-ed25519 AAAA... passive
",
    exit_codes!()
);

#[derive(clap::Args)]
pub struct Args {
    /// A directory this side may serve (repeatable); nothing outside these is ever read.
    #[arg(long = "root", required = true, value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// Refuse every write (push of a file, directory, symlink, removal): serve reads only
    #[arg(long)]
    read_only: bool,
}

pub fn run(args: &Args) -> Result<std::process::ExitCode> {
    let roots = Roots::new(args.roots.clone()).context("barsync serve")?;
    // Larger pipe buffers towards sshd (a hint; ignored when stdin/stdout are not pipes).
    barsync_transport::enlarge_pipe(&std::io::stdin());
    barsync_transport::enlarge_pipe(&std::io::stdout());
    let options = ServeOptions {
        read_only: args.read_only,
    };
    serve_with(stdin().lock(), stdout().lock(), &roots, options).context("barsync serve")?;
    Ok(std::process::ExitCode::SUCCESS)
}
