//! `barsync bench` in a build without the `bench` feature: a hidden command that takes any
//! arguments and answers, as a usage error (status 2), how to build the harness. The harness
//! reuses the end-to-end test fixtures (sshd, initdb, pgbench), which the shipped binary does
//! not carry.

use std::ffi::OsString;
use std::process::ExitCode;

/// Whatever follows `bench`, `--help` included: the answer is the same.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    ignored: Vec<OsString>,
}

/// The usage error; it exits the process.
pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    clap::Error::raw(
        clap::error::ErrorKind::InvalidSubcommand,
        "this barsync was built without the benchmark harness; `barsync bench` needs \
         `cargo build --release -p barsync --features bench` \
         (or `cargo run --release -p barsync --features bench -- bench ...`)\n",
    )
    .exit()
}
