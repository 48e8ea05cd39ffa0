//! Small helpers around child processes and files: checking and describing a command's
//! output, and the tail of a log file.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Output;

pub(super) fn check_output(output: &Output, what: &str) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

pub(super) fn describe(what: &str, output: &Output) -> String {
    format!(
        "--- {what}: {}\nstdout:\n{}\nstderr:\n{}\n",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|error| format!("({error})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
