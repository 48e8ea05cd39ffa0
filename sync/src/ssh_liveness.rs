//! What barsync adds to `primary_ssh_command` when it is `ssh`, so that a primary that cannot
//! be reached, or stops answering, fails the run instead of hanging it (and every later cron
//! behind its lock): a connect timeout, which OpenSSH also applies to the banner exchange, and
//! keep-alives that end a session the primary no longer answers. Options the command already
//! sets are left as they are (ssh takes the first value it is given, and `-o` on the command
//! line wins over `~/.ssh/config`); a wrapper that is not `ssh` is run as it is.
//!
//! Two settings: [`Liveness::DEFAULT`] (a dead session noticed within a minute) for `cron` and
//! the other one-shot commands, and [`Liveness::FOLLOW`] (within about 15 s) for `follow`, whose
//! sessions are never quiet for long when the link works (the primary answers each watch within
//! seconds), and whose point is to be back soon after a link that died without a word.

/// Seconds to connect and exchange banners.
pub const CONNECT_TIMEOUT_SECONDS: u32 = 10;
/// Seconds between keep-alives on a quiet session.
pub const SERVER_ALIVE_INTERVAL_SECONDS: u32 = 15;
/// Unanswered keep-alives before the session is declared dead (a minute in all).
pub const SERVER_ALIVE_COUNT_MAX: u32 = 4;

/// How soon a session whose primary went silent is declared dead: a keep-alive after
/// `interval_seconds` without a word from the primary, and the end after `count_max`
/// unanswered ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub interval_seconds: u32,
    pub count_max: u32,
}

impl Liveness {
    /// [`SERVER_ALIVE_INTERVAL_SECONDS`] × [`SERVER_ALIVE_COUNT_MAX`]: a minute.
    pub const DEFAULT: Liveness = Liveness {
        interval_seconds: SERVER_ALIVE_INTERVAL_SECONDS,
        count_max: SERVER_ALIVE_COUNT_MAX,
    };
    /// `follow`'s sessions: 5 s × 3, about 15 s.
    pub const FOLLOW: Liveness = Liveness {
        interval_seconds: 5,
        count_max: 3,
    };
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::DEFAULT
    }
}

/// `command` with the liveness options it does not set yet, when it runs `ssh`
/// ([`Liveness::DEFAULT`]).
pub fn with_liveness(command: &str) -> String {
    with_liveness_of(command, Liveness::DEFAULT)
}

/// `command` with the options of `liveness` it does not set yet, when it runs `ssh`.
pub fn with_liveness_of(command: &str, liveness: Liveness) -> String {
    let is_ssh = command
        .split_whitespace()
        .next()
        .and_then(|word| std::path::Path::new(word).file_name())
        .is_some_and(|name| name == "ssh");
    if !is_ssh {
        return command.to_owned();
    }
    let lower = command.to_ascii_lowercase();
    let mut text = command.to_owned();
    for (option, value) in [
        ("ConnectTimeout", CONNECT_TIMEOUT_SECONDS),
        ("ServerAliveInterval", liveness.interval_seconds),
        ("ServerAliveCountMax", liveness.count_max),
    ] {
        if !lower.contains(&option.to_ascii_lowercase()) {
            text.push_str(&format!(" -o {option}={value}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{with_liveness, with_liveness_of, Liveness};

    #[test]
    fn ssh_gets_the_options_it_does_not_set_and_wrappers_are_left_alone() {
        assert_eq!(
            with_liveness("ssh barman@pg"),
            "ssh barman@pg -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
        );
        assert_eq!(
            with_liveness("/usr/bin/ssh -o connecttimeout=3 barman@pg"),
            "/usr/bin/ssh -o connecttimeout=3 barman@pg -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
        );
        assert_eq!(with_liveness("my-ssh-wrapper pg"), "my-ssh-wrapper pg");
        assert_eq!(
            with_liveness_of("ssh -o ServerAliveCountMax=9 pg", Liveness::FOLLOW),
            "ssh -o ServerAliveCountMax=9 pg -o ConnectTimeout=10 -o ServerAliveInterval=5"
        );
    }
}
