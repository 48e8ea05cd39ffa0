//! What the operator sees besides the results: verbosity (`-q`, `-v`), logging through
//! `tracing` to stderr and to Barman's `log_file`, progress bars on a terminal (indicatif) and
//! plain progress lines everywhere else, and the passive commands' [`Events`] turned into all
//! of these.
//!
//! Streams: Barman-style information (and the summaries) on stdout, unless `-q` or `--json`
//! (then stdout holds only the JSON document and the information goes to stderr); warnings and
//! errors on stderr as `WARNING: ...`/`ERROR: ...`; bars on stderr when it is a terminal,
//! otherwise one line per finished copy and one every ~10 s while one runs. The log file gets
//! every line with a timestamp, in Barman's layout.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use barsync_sync::passive::{BackupOutcome, Events, FetchEvents, SyncFailure, WalsOutcome};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use transfer_engine::names::shown_path;
use transfer_engine::protocol::FetchReport;
use transfer_engine::FileError;

/// tracing targets with a meaning here.
const TARGET_OUT: &str = "barsync::out";
const TARGET_PROGRESS: &str = "barsync::progress";
/// Plain progress lines while a copy runs, when there is no bar.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How much to say: `-q` (-1), default (0), `-v` (1), `-vv` (2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Verbosity(pub i8);

impl Verbosity {
    pub fn from_flags(quiet: bool, verbose: u8) -> Verbosity {
        if quiet {
            Verbosity(-1)
        } else {
            Verbosity(verbose.min(2) as i8)
        }
    }

    fn stderr_level(self) -> Level {
        match self.0 {
            i8::MIN..=-1 => Level::WARN,
            0 => Level::INFO,
            1 => Level::DEBUG,
            _ => Level::TRACE,
        }
    }
}

/// The process-wide output state.
pub struct Ui {
    verbosity: Verbosity,
    json: bool,
    bars: bool,
    multi: MultiProgress,
}

static UI: OnceLock<Ui> = OnceLock::new();

/// Warnings found before [`init`] (about the configuration), printed and logged by it.
static PENDING_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Queues a warning found before [`init`]; `init` prints it and writes it to the log file.
pub fn warn_once_initialised(message: String) {
    PENDING_WARNINGS.lock().unwrap().push(message);
}

/// Set once stdout's reader is gone (`barsync status | head`): later output is dropped.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a typed document as pretty JSON on stdout: the one renderer of every `--json`
/// output (each command's document is a `Serialize` type, never hand-built).
pub fn print_document(document: &impl serde::Serialize) {
    stdout_line(&serde_json::to_string_pretty(document).expect("plain data serializes"));
}

/// What `--json` prints for a command that failed as a whole, or for one server of a command
/// over several that failed: `ok` false and the errors.
#[derive(serde::Serialize)]
pub struct FailureDocument<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a str>,
    ok: bool,
    errors: Vec<String>,
}

impl<'a> FailureDocument<'a> {
    /// Command `command` failed with `message`.
    pub fn command(command: &'a str, message: String) -> FailureDocument<'a> {
        FailureDocument {
            command: Some(command),
            server: None,
            ok: false,
            errors: vec![message],
        }
    }

    /// Server `server` failed with `message`.
    pub fn server(server: &'a str, message: String) -> FailureDocument<'a> {
        FailureDocument {
            command: None,
            server: Some(server),
            ok: false,
            errors: vec![message],
        }
    }
}

/// Writes `text` and a newline to stdout. Once the reader has gone (a closed pipe), output
/// stops, silently, and the command goes on to its own exit status: no panic (as `println!`
/// would), and a cron whose output nobody reads any more still finishes its work.
pub fn stdout_line(text: &str) {
    use std::sync::atomic::Ordering;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if written.is_err() {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

/// The output state ([`init`] sets it; until then, defaults).
pub fn ui() -> &'static Ui {
    UI.get_or_init(|| Ui::new(Verbosity(0), false))
}

impl Ui {
    fn new(verbosity: Verbosity, json: bool) -> Ui {
        let bars = std::io::stderr().is_terminal() && verbosity.0 >= 0;
        let multi = MultiProgress::with_draw_target(if bars {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        });
        Ui {
            verbosity,
            json,
            bars,
            multi,
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    pub fn quiet(&self) -> bool {
        self.verbosity.0 < 0
    }

    /// A Barman-style information line: stdout (and the log file), or stderr under `--json`.
    pub fn info(&self, message: &str) {
        if self.json {
            tracing::info!("{message}");
            return;
        }
        tracing::info!(target: TARGET_OUT, "{message}");
        if !self.quiet() {
            self.suspend(|| {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{message}");
                let _ = stdout.flush();
            });
        }
    }

    /// A result line (a summary, a table row): stdout even with `-q`, never under `--json`.
    pub fn result(&self, message: &str) {
        tracing::info!(target: TARGET_OUT, "{message}");
        if !self.json {
            self.suspend(|| stdout_line(message));
        }
    }

    /// A line for stdout only (not the log file), unless `--json`: output that is the answer
    /// itself and would flood the log if written there on every run (`check`).
    pub fn print(&self, message: &str) {
        if !self.json {
            self.suspend(|| stdout_line(message));
        }
    }

    /// A line for the log file only: INFO, or WARNING when `!ok`.
    pub fn log_only(&self, ok: bool, message: &str) {
        if ok {
            tracing::info!(target: TARGET_OUT, "{message}");
        } else {
            tracing::warn!(target: TARGET_OUT, "{message}");
        }
    }

    pub fn warning(&self, message: &str) {
        tracing::warn!("{message}");
    }

    pub fn error(&self, message: &str) {
        tracing::error!("{message}");
    }

    /// Runs `f` with the bars hidden (so a printed line does not tear them).
    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.bars {
            self.multi.suspend(f)
        } else {
            f()
        }
    }

    /// A progress display for a copy of `files` files and `bytes` bytes (`None`: not known
    /// in advance; the bar then shows what is done, with no ETA).
    pub fn job(&self, label: &str, files: Option<u64>, bytes: Option<u64>) -> Job {
        let bar = self.bars.then(|| {
            let bar = match bytes {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:>16} {bytes} {binary_bytes_per_sec} {elapsed} {msg}",
                    )
                    .expect("valid template"),
                ),
            };
            let bar = self.multi.add(bar);
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let job = Job {
            label: label.to_owned(),
            files,
            bytes,
            state: Mutex::new(JobState {
                files: 0,
                bytes: 0,
                failed: 0,
                last_line: Instant::now(),
            }),
            start: Instant::now(),
            bar,
        };
        job.update_message(0);
        job
    }
}

/// One copy in progress: a bar on a terminal, plain lines otherwise.
pub struct Job {
    label: String,
    files: Option<u64>,
    bytes: Option<u64>,
    state: Mutex<JobState>,
    start: Instant,
    bar: Option<ProgressBar>,
}

struct JobState {
    files: u64,
    bytes: u64,
    failed: u64,
    last_line: Instant,
}

impl Job {
    fn update_message(&self, files: u64) {
        if let Some(bar) = &self.bar {
            bar.set_message(match self.files {
                Some(total) => format!("{files}/{total} files"),
                None => format!("{files} files"),
            });
        }
    }

    /// One file finished (`len` more bytes), or failed.
    pub fn file_done(&self, len: u64, ok: bool) {
        let mut state = self.state.lock().unwrap();
        state.files += 1;
        if !ok {
            state.failed += 1;
        }
        self.update_message(state.files);
        self.add_bytes(&mut state, len);
    }

    /// `len` bytes of a file still in progress (a part of a split file) arrived.
    pub fn bytes_done(&self, len: u64) {
        let mut state = self.state.lock().unwrap();
        self.add_bytes(&mut state, len);
    }

    fn add_bytes(&self, state: &mut JobState, len: u64) {
        state.bytes += len;
        if let Some(bar) = &self.bar {
            bar.inc(len);
        }
        if state.last_line.elapsed() >= PROGRESS_EVERY {
            state.last_line = Instant::now();
            tracing::info!(target: TARGET_PROGRESS, "{}", self.line(state, false));
        }
    }

    fn line(&self, state: &JobState, finished: bool) -> String {
        let seconds = self.start.elapsed().as_secs_f64();
        let mut line = format!("{}: {} files", self.label, state.files);
        if let (false, Some(total)) = (finished, self.files) {
            let _ = write!(line, " of {total}");
        }
        let _ = write!(line, ", {}", mib(state.bytes));
        if let (false, Some(total)) = (finished, self.bytes) {
            let _ = write!(
                line,
                " of {} ({:.0}%)",
                mib(total),
                100.0 * state.bytes as f64 / total.max(1) as f64
            );
        }
        let _ = write!(
            line,
            ", {:.1} s, {}/s",
            seconds,
            mib((state.bytes as f64 / seconds.max(1e-3)) as u64)
        );
        if state.failed > 0 {
            let _ = write!(line, ", {} failed", state.failed);
        }
        if finished {
            line.push_str(", done");
        }
        line
    }

    /// The copy is over: the bar goes, one line says what was done.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let state = self.state.lock().unwrap();
        tracing::info!(target: TARGET_PROGRESS, "{}", self.line(&state, true));
    }
}

/// `12.3 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The passive commands' events: information through [`Ui`], a [`Job`] per planned copy.
pub struct PassiveEvents {
    current: Mutex<Option<Job>>,
    pub files: std::sync::atomic::AtomicU64,
    /// Bytes already shown for the parts of split files still in progress, by path.
    parts: Mutex<std::collections::HashMap<PathBuf, u64>>,
    /// Servers whose full disk was already explained (once per run is enough).
    disk_full: Mutex<std::collections::BTreeSet<String>>,
}

impl PassiveEvents {
    pub fn new() -> PassiveEvents {
        PassiveEvents {
            current: Mutex::new(None),
            files: std::sync::atomic::AtomicU64::new(0),
            parts: Mutex::new(std::collections::HashMap::new()),
            disk_full: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// Says what a copy stopped by a full disk means, once per server.
    pub fn explain_failure(&self, server: &str, failure: &SyncFailure) {
        if failure.is_out_of_space() && self.disk_full.lock().unwrap().insert(server.to_owned()) {
            ui().error(&format!(
                "server {server}: this node's disk is full: the copy stopped there and nothing \
                 was published half-written; free space where the server's backups and WALs \
                 are written, then run barsync cron again (it resumes)"
            ));
        }
    }

    /// Ends the current progress display, if any.
    pub fn finish(&self) {
        if let Some(job) = self.current.lock().unwrap().take() {
            job.finish();
        }
    }
}

impl Events for PassiveEvents {
    fn info(&self, message: &str) {
        ui().info(message);
    }

    fn backup_finished(
        &self,
        server: &str,
        id: &str,
        outcome: &Result<BackupOutcome, SyncFailure>,
    ) {
        self.finish();
        match outcome {
            Ok(outcome) => ui().info(&crate::passive::backup_line(server, outcome)),
            Err(error) => {
                ui().error(&format!("server {server} backup {id}: {error}"));
                self.explain_failure(server, error);
            }
        }
    }

    fn wals_finished(&self, server: &str, outcome: &Result<WalsOutcome, SyncFailure>) {
        self.finish();
        match outcome {
            Ok(outcome) => {
                if let Some(line) = crate::passive::wals_line(server, outcome) {
                    ui().info(&line);
                }
            }
            Err(error) => {
                ui().error(&error.message);
                self.explain_failure(server, error);
            }
        }
    }

    fn plan(&self, label: &str, files: u64, bytes: u64) {
        self.finish();
        tracing::debug!("{label}: {files} files, {} to sync", mib(bytes));
        let label = if label == "WALs" {
            "WALs".to_owned()
        } else {
            format!("backup {label}")
        };
        *self.current.lock().unwrap() = Some(ui().job(&label, Some(files), Some(bytes)));
    }
}

impl FetchEvents for PassiveEvents {
    fn warning(&self, message: &str) {
        ui().warning(message);
    }

    fn part_done(&self, path: &Path, bytes: u64) {
        *self
            .parts
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default() += bytes;
        if let Some(job) = &*self.current.lock().unwrap() {
            job.bytes_done(bytes);
        }
    }

    fn file_done(&self, path: &Path, result: &Result<FetchReport, FileError>) {
        self.files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shown = self.parts.lock().unwrap().remove(path).unwrap_or(0);
        let done = {
            let current = self.current.lock().unwrap();
            if let Some(job) = &*current {
                let len = result.as_ref().map(|r| r.len).unwrap_or(0);
                job.file_done(len.saturating_sub(shown), result.is_ok());
                let state = job.state.lock().unwrap();
                job.files.is_some_and(|total| state.files >= total)
            } else {
                false
            }
        };
        if done {
            self.finish();
        }
        match result {
            Ok(report) => {
                let how = if report.linked {
                    "linked".to_owned()
                } else {
                    format!(
                        "{} received, {} reused",
                        mib(report.received_bytes),
                        mib(report.reused_bytes)
                    )
                };
                let path = shown_path(path);
                tracing::debug!("{path}: {} ({how})", mib(report.len));
                tracing::trace!(
                    "{path}: {} bytes; {} bytes received, {} bytes of signature sent, {} bytes reused{}{}; verified by {}{}",
                    report.len,
                    report.received_bytes,
                    report.signature_bytes,
                    report.reused_bytes,
                    report.copied_by.map(|how| format!(" (by {how})")).unwrap_or_default(),
                    if report.linked { ", hard-linked to the previous backup's copy" } else { "" },
                    report.verified_by,
                    report
                        .basis_problem
                        .as_deref()
                        .map(|p| format!("; {p}"))
                        .unwrap_or_default()
                );
            }
            Err(message) => tracing::debug!("failed: {message}"),
        }
    }
}

/// Sets up verbosity, `--json`, and logging (stderr, and `log_file` when given).
pub fn init(verbosity: Verbosity, json: bool, log_file: Option<(PathBuf, Level)>) {
    let _ = UI.set(Ui::new(verbosity, json));
    let ui = ui();
    let file = log_file.and_then(|(path, level)| match open_log(&path) {
        Ok(file) => Some(Sink::File {
            file: Mutex::new(file),
            level,
        }),
        Err(error) => {
            eprintln!(
                "WARNING: cannot open log_file {}: {error}; logging to stderr only",
                path.display()
            );
            None
        }
    });
    let subscriber = tracing_subscriber::registry()
        .with(Sink::Stderr {
            level: ui.verbosity.stderr_level(),
            progress_lines: !ui.bars,
            timestamps: !std::io::stderr().is_terminal(),
        })
        .with(file);
    let _ = tracing::subscriber::set_global_default(subscriber);
    for message in std::mem::take(&mut *PENDING_WARNINGS.lock().unwrap()) {
        ui.warning(&message);
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Where log events go.
enum Sink {
    /// stderr: warnings and errors as Barman prints them, information at the verbosity's
    /// level (never what is already on stdout), progress lines when there are no bars; each
    /// line timestamped when stderr is not a terminal (a cron mail, a log collector).
    Stderr {
        level: Level,
        progress_lines: bool,
        timestamps: bool,
    },
    /// Barman's `log_file`: every event at `level` or above, timestamped.
    File {
        file: Mutex<std::fs::File>,
        level: Level,
    },
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Sink {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        let mut message = Message::default();
        event.record(&mut message);
        let message = message.0;
        match self {
            Sink::Stderr {
                level: max,
                progress_lines,
                timestamps,
            } => {
                let target = meta.target();
                if level > *max
                    || target == TARGET_OUT
                    || (target == TARGET_PROGRESS && !progress_lines)
                {
                    return;
                }
                let prefix = match level {
                    Level::ERROR => "ERROR: ",
                    Level::WARN => "WARNING: ",
                    _ => "",
                };
                let stamp = if *timestamps {
                    format!("{} ", timestamp())
                } else {
                    String::new()
                };
                ui().suspend(|| {
                    let mut stderr = std::io::stderr().lock();
                    let _ = writeln!(stderr, "{stamp}{prefix}{message}");
                });
            }
            Sink::File { file, level: max } => {
                if level > *max {
                    return;
                }
                let name = match level {
                    Level::ERROR => "ERROR",
                    Level::WARN => "WARNING",
                    Level::INFO => "INFO",
                    _ => "DEBUG",
                };
                let line = format!(
                    "{} [{}] barsync {name}: {message}\n",
                    timestamp(),
                    std::process::id()
                );
                let _ = file.lock().unwrap().write_all(line.as_bytes());
            }
        }
    }
}

/// Local time as Barman's log lines show it: `2024-01-01 12:00:00,123`.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r only writes the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the types localtime_r reads and writes.
    unsafe { libc::localtime_r(&seconds, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_millis()
    )
}

/// `[barman]`'s `log_file` with its level as tracing's.
pub fn barman_log_file(config: &barsync_sync::config::Config) -> Option<(PathBuf, Level)> {
    use barsync_sync::config::LogLevel;
    let log = config.log_file()?;
    let level = match log.level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error => Level::ERROR,
    };
    Some((log.path, level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(len: u64) -> Result<FetchReport, FileError> {
        Ok(FetchReport {
            len,
            digest: None,
            verified_by: transfer_engine::VerifiedBy::BarsyncDigestByParts,
            received_bytes: 0,
            signature_bytes: 0,
            reused_bytes: 0,
            copied_by: None,
            basis_problem: None,
            linked: false,
        })
    }

    fn shown(events: &PassiveEvents) -> (u64, u64) {
        let current = events.current.lock().unwrap();
        let state = current.as_ref().unwrap().state.lock().unwrap();
        (state.files, state.bytes)
    }

    #[test]
    fn parts_move_the_progress_and_their_file_is_counted_once() {
        let events = PassiveEvents::new();
        events.plan("20240102T120000", 3, 300);
        events.file_done(Path::new("/p/small"), &report(100));
        events.part_done(Path::new("/p/big"), 64);
        events.part_done(Path::new("/p/big"), 64);
        assert_eq!(shown(&events), (1, 228), "parts show bytes, not files");
        events.file_done(Path::new("/p/big"), &report(150));
        assert_eq!(
            shown(&events),
            (2, 250),
            "the file adds only what its parts did not"
        );
        events.part_done(Path::new("/p/failed"), 10);
        let cut = FileError::new(transfer_engine::FileErrorKind::SessionLost, "cut");
        events.file_done(Path::new("/p/failed"), &Err(cut));
        assert!(events.current.lock().unwrap().is_none(), "every file done");
    }
}
