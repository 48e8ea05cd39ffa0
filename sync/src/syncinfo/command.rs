//! The `sync-info` command as a whole, from its arguments to its stdout, stderr lines and exit
//! code, behaving as `barman sync-info` does: 0 on success, 1 with `ERROR: ...` on a sync error,
//! 2 for a bad argument (LAST_POSITION 0 is accepted: the fix of Barman's wedge bug).

use std::path::Path;

use super::{fetch_primary_info, sync_info_text, RemoteProgram, SyncPoint};
use crate::config::{Config, ConfigError, ServerConfig};
use crate::python::parse_int;

/// The arguments of `sync-info [-c CONFIG] [--primary] SERVER [LAST_WAL [LAST_POSITION]]`.
#[derive(Debug, Clone, Default)]
pub struct SyncInfoArgs<'a> {
    pub config: Option<&'a Path>,
    pub server: &'a str,
    pub last_wal: Option<&'a str>,
    pub last_position: Option<&'a str>,
    pub primary: bool,
    pub remote_program: RemoteProgram,
    /// Bounds on the primary's answer (with `primary`).
    pub limits: super::SyncInfoLimits,
}

/// What the command prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub stdout: Vec<u8>,
    /// Lines for stderr, without their newline.
    pub stderr: Vec<String>,
    pub exit_code: u8,
}

/// Exit code of a sync error (Barman's `output.error` then `close_and_exit`).
pub const EXIT_SYNC_ERROR: u8 = 1;
/// Exit code of an invalid argument (argparse).
pub const EXIT_BAD_ARGUMENTS: u8 = 2;

impl CommandOutcome {
    fn failure(exit_code: u8, stderr: Vec<String>) -> CommandOutcome {
        CommandOutcome {
            stdout: Vec::new(),
            stderr,
            exit_code,
        }
    }
}

/// `utils.check_positive` without its rejection of 0: the reason text is argparse's.
pub fn parse_last_position(text: &str) -> Result<u64, String> {
    let value = parse_int(text).ok_or_else(|| format!("'{text}' is not a valid input"))?;
    u64::try_from(value).map_err(|_| format!("'{text}' is not a valid positive integer"))
}

/// Reads the configuration and the server as Barman's `get_server` does. On success also
/// returns the warning lines Barman prints; on failure the lines of the error.
fn load_server(
    args: &SyncInfoArgs<'_>,
) -> Result<(Config, ServerConfig, Vec<String>), Vec<String>> {
    let error_line = |error: &dyn std::fmt::Display| vec![format!("ERROR: {error}")];
    if args.server == "all" {
        return Err(vec![
            "ERROR: You cannot use 'all' in a single server context".to_owned(),
        ]);
    }
    let config = Config::load(args.config).map_err(|error| match error {
        ConfigError::Missing(_) => vec![error.to_string()],
        other => error_line(&other),
    })?;
    config.check_user().map_err(|e| error_line(&e))?;
    let mut lines: Vec<String> = config
        .all_option_warnings()
        .map_err(|e| error_line(&e))?
        .iter()
        .map(|w| format!("WARNING: {w}"))
        .collect();
    let global_errors = config.global_path_conflicts().map_err(|e| error_line(&e))?;
    if !global_errors.is_empty() {
        lines.extend(global_errors.iter().map(|e| format!("ERROR: {e}")));
        return Err(lines);
    }
    let server = match config.server(args.server).map_err(|e| error_line(&e))? {
        Some(server) => server,
        None => {
            lines.push(format!("ERROR: Unknown server '{}'", args.server));
            return Err(lines);
        }
    };
    lines.extend(
        server
            .setup_warnings
            .iter()
            .map(|w| format!("WARNING: {w}")),
    );
    Ok((config, server, lines))
}

/// Runs sync-info and returns what to print.
pub fn run_sync_info(args: &SyncInfoArgs<'_>) -> CommandOutcome {
    let last_position = match args.last_position.map(parse_last_position).transpose() {
        Ok(position) => position,
        Err(reason) => {
            return CommandOutcome::failure(
                EXIT_BAD_ARGUMENTS,
                vec![format!(
                    "barsync sync-info: error: argument last_position: {reason}"
                )],
            )
        }
    };
    let (config, server, mut stderr) = match load_server(args) {
        Ok(loaded) => loaded,
        Err(lines) => return CommandOutcome::failure(EXIT_SYNC_ERROR, lines),
    };
    let point = SyncPoint {
        last_wal: args.last_wal.map(str::to_owned),
        last_position,
    };
    let result = if args.primary {
        let mut warn = |message: String| stderr.push(format!("WARNING: {message}"));
        fetch_primary_info(
            &server,
            config.config_file(),
            args.remote_program,
            &point,
            &args.limits,
            &mut warn,
        )
        .and_then(|answer| {
            let text = String::from_utf8(answer.raw).unwrap_or_default();
            let document = crate::python::json::parse(&text).map_err(|source| {
                super::PrimaryInfoError::Json {
                    server: server.name().to_owned(),
                    source,
                }
            })?;
            Ok(format!("{}\n", document.dump_indented()))
        })
    } else {
        sync_info_text(&server, &point)
    };
    match result {
        Ok(text) => CommandOutcome {
            stdout: text.into_bytes(),
            stderr,
            exit_code: 0,
        },
        Err(error) => {
            stderr.push(format!("ERROR: {error}"));
            CommandOutcome::failure(EXIT_SYNC_ERROR, stderr)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_position_like_check_positive_but_zero_allowed() {
        assert_eq!(super::parse_last_position("503"), Ok(503));
        assert_eq!(super::parse_last_position("0"), Ok(0));
        assert_eq!(
            super::parse_last_position("abc"),
            Err("'abc' is not a valid input".to_owned())
        );
        assert_eq!(
            super::parse_last_position("-1"),
            Err("'-1' is not a valid positive integer".to_owned())
        );
    }
}
