//! Times and messages as an operator reads them: the current time in seconds since the epoch
//! ([`now_seconds`]), a duration in words ([`human_duration`]: `3 days 4 hours`), and another
//! program's error output on one line ([`one_line`]).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `3 days 4 hours`, `12 minutes`, `40 seconds`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{s} seconds"),
        (0, 0, m) => format!("{m} minutes"),
        (0, h, 0) => format!("{h} hours"),
        (0, h, m) => format!("{h} hours {m} minutes"),
        (d, h, _) => format!("{d} days {h} hours"),
    }
}

/// Another program's error output (ssh's, the primary's) as one line of a message: each line
/// trimmed, empty lines and ssh's `@@@@` banner lines dropped, the rest joined with spaces. A
/// multi-line error would otherwise break the log's one-line-per-message shape.
pub fn one_line(text: &str) -> String {
    meaningful_lines(text).join(" ")
}

/// The lines of another program's error output worth showing: trimmed, without empty lines and
/// ssh's `@@@@` banner lines.
pub fn meaningful_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.chars().all(|c| c == '@'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{human_duration, one_line};

    #[test]
    fn error_output_on_one_line() {
        let ssh = "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\nHost key verification failed.\n";
        assert_eq!(
            one_line(ssh),
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @ IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY! Host key verification failed."
        );
        assert_eq!(one_line("\n"), "");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(human_duration(40.0), "40 seconds");
        assert_eq!(human_duration(12.0 * 60.0 + 5.0), "12 minutes");
        assert_eq!(human_duration(3.0 * 3600.0 + 60.0), "3 hours 1 minutes");
        assert_eq!(human_duration(7200.0 + 30.0), "2 hours");
        assert_eq!(
            human_duration(86_400.0 * 3.0 + 4.0 * 3600.0),
            "3 days 4 hours"
        );
        assert_eq!(human_duration(-5.0), "0 seconds");
    }
}
