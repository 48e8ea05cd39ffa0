//! `barsync copy [-r] [--delete] [--dry-run] [--checksum] [-e SSH] SRC DST`: rsync-style copies
//! through the barsync protocol. The remote end (`[user@]host:path`, source or destination)
//! runs `barsync serve` started over SSH; a local-to-local copy is served by a thread of this
//! process. A remote pull runs on `-j` sessions through the engine's fetch pool
//! ([`crate::copy_sessions`]), which splits very large files into parts they share; `--bwlimit`
//! is one budget for all of them. A progress line (bytes, rate, files) runs on a terminal;
//! `--json` prints the summary as one JSON document.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use barsync_transport::{choose_transport, memory_pipe};
use transfer_engine::confine::Roots;
use transfer_engine::copy::{pull, pull_pooled, push, CopyOptions, CopyReport, PullPool};
use transfer_engine::fetch::throttle::Throttle;
use transfer_engine::fetch::{FetchEvents, PoolSettings, Retry, SessionSource};
use transfer_engine::names::shown_path;
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::{serve, Client, FetchReport};
use transfer_engine::sftp::SftpSource;

use crate::copy_sessions::{session_failed, NoBarsync, RemoteSessions};
use crate::output::{ui, Job};

pub const AFTER_HELP: &str = concat!(
    "Examples:
  barsync copy -r primary:/var/lib/barman/pg/base/20240101T120000/ /srv/copy/   # pull the contents
  barsync copy -r --delete /srv/copy backup@dr:/srv/mirror                      # push, mirror deletions
  barsync copy -e \"ssh -p 2222 -i ~/.ssh/barman\" -r primary:/data/ /data/       # any ssh command
  barsync copy -r -n /srv/a/ /srv/b/                                            # dry run, local
  barsync copy -r --json primary:/data/ /data/                                  # JSON summary

The far side needs barsync on its PATH (--remote-barsync otherwise); without it, files are
copied whole over SFTP and verified by the host's b3sum or sha256sum.
",
    exit_codes!()
);

#[derive(clap::Args)]
pub struct Args {
    /// Copy directories recursively.
    #[arg(short, long)]
    recursive: bool,
    /// Delete files in DST that are not in SRC.
    #[arg(long)]
    delete: bool,
    /// Show what would be done, change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Compare files by content rather than size and modification time.
    #[arg(short, long)]
    checksum: bool,
    /// Update existing files in place, writing only the changed blocks (as rsync --inplace;
    /// a failed update leaves the file modified until the next run).
    #[arg(long)]
    inplace: bool,
    /// The ssh command for remote endpoints, as rsync's -e (e.g. "ssh -p 2222").
    #[arg(short = 'e', long = "rsh", default_value = "ssh")]
    ssh_command: String,
    /// zstd level for data on the wire (0: off). Without it: 3, or 1 when the link measured
    /// at least 400 Mbit/s once a session has asked for 64 MiB of new files (loopback, a LAN).
    #[arg(long)]
    compress_level: Option<i32>,
    /// Program to run on the remote side.
    #[arg(long, default_value = "barsync")]
    remote_barsync: String,
    /// Sessions for a remote pull: files (and parts of very large files) are shared among
    /// them, largest first.
    #[arg(short = 'j', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Files of at least twice this size are pulled in parts of this size, shared by the
    /// sessions (bytes, or with K, M, G: 64M, 1G); 0 never splits.
    #[arg(long, default_value = "64M", value_parser = crate::passive::parse_size)]
    part_size: u64,
    /// Bandwidth limit of a remote pull in KiB/s, shared by all its sessions (0: none).
    #[arg(long, default_value_t = 0)]
    bwlimit: u64,
    /// Which SSH transport: auto, in-process (libssh2) or subprocess (the ssh command).
    #[arg(long, value_enum, default_value = "auto")]
    transport: crate::passive::Transport,
    /// Print the summary as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    // (help as attributes: rustdoc would read `[user@]` as a link)
    #[arg(
        help = "Source: a local path or [user@]host:path (a trailing slash copies the contents)."
    )]
    source: String,
    #[arg(help = "Destination: a local path or [user@]host:path.")]
    destination: String,
}

/// `[user@]host:path` → (`[user@]host`, `path`); a local path → None (as rsync: a colon before
/// any slash makes it remote).
fn split_remote(endpoint: &str) -> Option<(&str, &str)> {
    let colon = endpoint.find(':')?;
    let slash = endpoint.find('/').unwrap_or(usize::MAX);
    (colon < slash && colon > 0).then(|| (&endpoint[..colon], &endpoint[colon + 1..]))
}

/// The directory to serve and the request path below it: a trailing slash serves the directory
/// itself; otherwise its parent, so that both files and directories can be named.
fn root_and_request(path: &str) -> (String, String) {
    if path.ends_with('/') || path.is_empty() || path == "." {
        let root = if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        };
        return (root, String::new());
    }
    let as_path = Path::new(path);
    let parent = as_path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into());
    let name = as_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, name)
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

pub fn run(args: &Args) -> Result<std::process::ExitCode> {
    let options = CopyOptions {
        recursive: args.recursive,
        delete: args.delete,
        dry_run: args.dry_run,
        checksum: args.checksum,
        in_place: args.inplace,
    };
    let contents = args.source.ends_with('/');
    let start = Instant::now();
    let job = ui().job("copy", None, None);
    let job = &job;
    let report = match (split_remote(&args.source), split_remote(&args.destination)) {
        (Some(_), Some(_)) => {
            bail!("both SRC and DST are remote: run barsync on one of the two hosts")
        }
        (Some((host, path)), None) => {
            let (root, request) = root_and_request(path);
            let destination = PathBuf::from(&args.destination);
            let progress = |outcome: &transfer_engine::protocol::FetchOutcome| {
                fetched(job, outcome);
            };
            let sessions = remote_sessions(args, host, &root);
            let events = CopyEvents {
                job,
                parts_shown: Mutex::new(HashMap::new()),
            };
            match sessions.open(&events) {
                Ok(first) => {
                    let pool = PullPool {
                        sessions: &sessions,
                        settings: PoolSettings {
                            workers: usize::from(args.jobs),
                            // As rsync: a failed file is reported, not fetched again.
                            retry: Retry {
                                times: 0,
                                sleep: std::time::Duration::ZERO,
                            },
                            part_size: args.part_size,
                        },
                        events: &events,
                    };
                    pull_pooled(
                        &pool,
                        first,
                        Path::new(&request),
                        contents,
                        &destination,
                        &options,
                    )
                    .with_context(|| format!("copying from {host}"))?
                }
                Err(error) if error.downcast_ref::<NoBarsync>().is_some() => {
                    ui().warning(&format!("{error}; falling back to SFTP (whole files)"));
                    sftp_pull(args, host, path, contents, &destination, &options, progress)?
                }
                Err(error) => return Err(error),
            }
        }
        (None, Some((host, path))) => {
            let (root, request) = root_and_request(path);
            let source = PathBuf::from(args.source.trim_end_matches('/'));
            let source = if source.as_os_str().is_empty() {
                PathBuf::from("/")
            } else {
                source
            };
            let progress = |outcome: &transfer_engine::protocol::PushOutcome| {
                job.file_done(0, outcome.result.is_ok());
                print_outcome(&outcome.remote_path, outcome.result.as_ref().map(|_| 0));
            };
            let session = with_session(args, host, &root, |client| {
                Ok(push(
                    client,
                    &source,
                    contents,
                    Path::new(&request),
                    &options,
                    progress,
                )?)
            });
            match session {
                Err(error) if error.downcast_ref::<NoBarsync>().is_some() => {
                    ui().warning(&format!("{error}; falling back to SFTP (whole files)"));
                    let mut target = open_sftp(args, host)?;
                    let remote = if path.is_empty() {
                        "."
                    } else {
                        path.trim_end_matches('/')
                    };
                    let report = push(
                        &mut target,
                        &source,
                        contents,
                        Path::new(remote),
                        &options,
                        progress,
                    )?;
                    target.close().map_err(anyhow::Error::msg)?;
                    report
                }
                other => other?,
            }
        }
        (None, None) => copy_locally(args, contents, &options, |outcome| fetched(job, outcome))?,
    };
    job.finish();
    print_report(args, &report, start.elapsed().as_secs_f64());
    Ok(if report.errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// The level when `--compress-level` is not given and the link is not fast.
const DEFAULT_COMPRESS_LEVEL: i32 = 3;

fn client_options(args: &Args) -> ClientOptions {
    match args.compress_level {
        None => ClientOptions {
            compression: Some(DEFAULT_COMPRESS_LEVEL),
            adapt_compression: true,
        },
        Some(level) => ClientOptions {
            compression: (level > 0).then_some(level),
            adapt_compression: false,
        },
    }
}

/// The sessions of a pull from `host`, serving `root`.
fn remote_sessions(args: &Args, host: &str, root: &str) -> RemoteSessions {
    RemoteSessions {
        ssh_command: format!("{} {host}", args.ssh_command),
        transport: args.transport.into(),
        serve_command: format!(
            "{} serve --root {}",
            shell_quote(&args.remote_barsync),
            shell_quote(root)
        ),
        remote_barsync: args.remote_barsync.clone(),
        client_options: client_options(args),
        throttle: (args.bwlimit > 0).then(|| Throttle::from_kib_per_second(args.bwlimit)),
    }
}

/// Progress of a pooled pull: files as they finish, split files part by part.
struct CopyEvents<'a> {
    job: &'a Job,
    /// Bytes of each split file already shown by its parts.
    parts_shown: Mutex<HashMap<PathBuf, u64>>,
}

impl FetchEvents for CopyEvents<'_> {
    fn warning(&self, message: &str) {
        ui().warning(message);
    }

    fn file_done(&self, path: &Path, result: &Result<FetchReport, transfer_engine::FileError>) {
        let shown = self.parts_shown.lock().unwrap().remove(path).unwrap_or(0);
        let len = result.as_ref().map(|r| r.len).unwrap_or(0);
        self.job
            .file_done(len.saturating_sub(shown), result.is_ok());
        print_outcome(path, result.as_ref().map(|r| r.len));
    }

    fn part_done(&self, path: &Path, bytes: u64) {
        *self
            .parts_shown
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default() += bytes;
        self.job.bytes_done(bytes);
    }
}

fn fetched(job: &Job, outcome: &transfer_engine::protocol::FetchOutcome) {
    let len = outcome.result.as_ref().map(|r| r.len);
    job.file_done(*len.as_ref().unwrap_or(&0), len.is_ok());
    print_outcome(&outcome.remote_path, outcome.result.as_ref().map(|r| r.len));
}

/// One file done, at `-v` (errors are in the summary).
fn print_outcome(path: &Path, result: Result<u64, impl std::fmt::Display>) {
    match result {
        Ok(len) => tracing::debug!("{} ({len} bytes)", shown_path(path)),
        Err(message) => tracing::debug!("failed: {message}"),
    }
}

type RemoteClient = Client<barsync_transport::StreamReader, barsync_transport::StreamWriter>;

/// Starts `barsync serve --root ROOT` on `host` and runs `work` in the session.
fn with_session(
    args: &Args,
    host: &str,
    root: &str,
    work: impl FnOnce(&mut RemoteClient) -> Result<CopyReport>,
) -> Result<CopyReport> {
    let transport = choose_transport(
        &format!("{} {host}", args.ssh_command),
        args.transport.into(),
    )?;
    let command = format!(
        "{} serve --root {}",
        shell_quote(&args.remote_barsync),
        shell_quote(root)
    );
    let stream = transport.open(&command)?;
    let peer = stream.peer().clone();
    let (reader, writer, exit) = stream.split();
    let session = Client::connect(reader, writer, client_options(args)).map(|mut client| {
        let report = work(&mut client);
        let finished = client.finish();
        (report, finished)
    });
    let status = exit.wait();
    let (report, finished) = match session {
        Ok(parts) => parts,
        Err(error) => {
            return Err(session_failed(
                &peer.to_string(),
                &args.remote_barsync,
                error,
                status,
            ))
        }
    };
    let report = report.with_context(|| format!("copying with {peer}"))?;
    finished.with_context(|| format!("closing the session with {peer}"))?;
    Ok(report)
}

/// An SFTP session on `host`, for hosts without barsync: through the transport the barsync
/// session would have used (the `-e` command with `-s … sftp`; libssh2 only when there is no
/// ssh program), the checksum tool too.
fn open_sftp(args: &Args, host: &str) -> Result<SftpSource> {
    let transport = choose_transport(
        &format!("{} {host}", args.ssh_command),
        args.transport.into(),
    )?;
    let source = SftpSource::open(std::sync::Arc::from(transport)).context("starting SFTP")?;
    tracing::info!("SFTP: files will be verified by {}", source.verification());
    Ok(source)
}

/// Pull over SFTP, for hosts without barsync.
fn sftp_pull(
    args: &Args,
    host: &str,
    path: &str,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
    progress: impl FnMut(&transfer_engine::protocol::FetchOutcome),
) -> Result<CopyReport> {
    let mut source = open_sftp(args, host)?;
    if args.bwlimit > 0 {
        let throttle = Throttle::from_kib_per_second(args.bwlimit);
        source.set_read_hook(Box::new(move |bytes| throttle.consume(bytes)));
    }
    let source_path = if path.is_empty() { "." } else { path };
    let report = pull(
        &mut source,
        Path::new(source_path),
        contents,
        destination,
        options,
        progress,
    )?;
    source.close().map_err(anyhow::Error::msg)?;
    Ok(report)
}

fn copy_locally(
    args: &Args,
    contents: bool,
    options: &CopyOptions,
    progress: impl FnMut(&transfer_engine::protocol::FetchOutcome),
) -> Result<CopyReport> {
    let (root, request) = root_and_request(&args.source);
    let roots = Roots::new(vec![PathBuf::from(&root)])
        .with_context(|| format!("source {}", args.source))?;
    let (to_server, server_in) = memory_pipe(1 << 20);
    let (server_out, from_server) = memory_pipe(1 << 20);
    let server = std::thread::spawn(move || serve(server_in, server_out, &roots));
    let mut client = Client::connect(from_server, to_server, client_options(args))?;
    let report = pull(
        &mut client,
        Path::new(&request),
        contents,
        Path::new(&args.destination),
        options,
        progress,
    );
    client.finish()?;
    server.join().expect("server thread")?;
    Ok(report?)
}

/// What `copy --json` prints.
#[derive(serde::Serialize)]
struct CopyDocument<'a> {
    command: &'static str,
    ok: bool,
    source: &'a str,
    destination: &'a str,
    dry_run: bool,
    files: u64,
    files_transferred: u64,
    files_up_to_date: u64,
    symlinks: u64,
    deleted: u64,
    sessions: u64,
    split_files: u64,
    parts: u64,
    bytes_synced: u64,
    bytes_on_the_wire: u64,
    bytes_received: u64,
    bytes_sent: u64,
    bytes_reused: u64,
    bytes_reused_by: &'a std::collections::BTreeMap<&'static str, u64>,
    verified: &'a std::collections::BTreeMap<&'static str, u64>,
    duration_seconds: f64,
    plan: &'a [String],
    errors: &'a [String],
}

impl<'a> CopyDocument<'a> {
    fn new(args: &'a Args, report: &'a CopyReport, seconds: f64) -> CopyDocument<'a> {
        CopyDocument {
            command: "copy",
            ok: report.errors.is_empty(),
            source: &args.source,
            destination: &args.destination,
            dry_run: args.dry_run,
            files: report.files,
            files_transferred: report.transferred,
            files_up_to_date: report.skipped,
            symlinks: report.symlinks,
            deleted: report.deleted,
            sessions: report.sessions,
            split_files: report.split_files,
            parts: report.parts,
            bytes_synced: report.bytes,
            bytes_on_the_wire: report.received_bytes + report.sent_bytes,
            bytes_received: report.received_bytes,
            bytes_sent: report.sent_bytes,
            bytes_reused: report.reused_bytes,
            bytes_reused_by: &report.reused_by,
            verified: &report.verified_by,
            duration_seconds: (seconds * 1000.0).round() / 1000.0,
            plan: &report.plan,
            errors: &report.errors,
        }
    }
}

fn print_report(args: &Args, report: &CopyReport, seconds: f64) {
    for error in &report.errors {
        ui().error(error);
    }
    if args.json {
        crate::output::print_document(&CopyDocument::new(args, report, seconds));
        return;
    }
    for line in &report.plan {
        ui().result(line);
    }
    for (how, count) in &report.verified_by {
        ui().info(&format!("verified by {how}: {count} files"));
    }
    for (how, bytes) in &report.reused_by {
        ui().info(&format!(
            "reused by {how}: {:.1} MiB",
            *bytes as f64 / 1048576.0
        ));
    }
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    ui().result(&format!(
        "{}{} files: {} transferred, {} up to date{}{}; {:.1} MiB synced, {:.2} MiB received, {:.2} MiB sent, {:.1} MiB reused; {:.2} s",
        if args.dry_run { "dry run: " } else { "" },
        report.files,
        report.transferred,
        report.skipped,
        if report.symlinks > 0 { format!(", {} symlinks", report.symlinks) } else { String::new() },
        if report.deleted > 0 { format!(", {} deleted", report.deleted) } else { String::new() },
        mib(report.bytes),
        mib(report.received_bytes),
        mib(report.sent_bytes),
        mib(report.reused_bytes),
        seconds
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_rsync() {
        assert_eq!(split_remote("host:/x"), Some(("host", "/x")));
        assert_eq!(split_remote("u@h:rel/p"), Some(("u@h", "rel/p")));
        assert_eq!(split_remote("/local/a:b"), None);
        assert_eq!(split_remote("./a:b"), None);
        assert_eq!(split_remote("plain"), None);
        assert_eq!(root_and_request("/a/b/"), ("/a/b/".into(), String::new()));
        assert_eq!(root_and_request("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(root_and_request("b"), (".".into(), "b".into()));
        assert_eq!(shell_quote("/a b"), "'/a b'");
    }
}
