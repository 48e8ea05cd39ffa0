//! Unit tests of the ssh command parser and of config resolution.

use super::*;

#[test]
fn shell_words_handle_quotes_and_escapes() {
    let words =
        split_shell_words(r#"ssh -o "ProxyCommand ssh -W %h:%p gw" -i '/k e y' a\ b "x\"y" """#)
            .unwrap();
    assert_eq!(
        words,
        [
            "ssh",
            "-o",
            "ProxyCommand ssh -W %h:%p gw",
            "-i",
            "/k e y",
            "a b",
            "x\"y",
            ""
        ]
    );
    assert!(split_shell_words("ssh 'open").is_err());
    assert!(split_shell_words("ssh \"open").is_err());
    assert!(split_shell_words("ssh \\").is_err());
}

#[test]
fn barman_style_command_is_parsed() {
    let command = SshCommand::parse("ssh -q -p 2222 -i /keys/id -o StrictHostKeyChecking=accept-new -o 'ConnectTimeout 7' -C -T postgres@pg1").unwrap();
    let target = command.resolve(None);
    assert_eq!(
        (target.user.as_str(), target.host_name.as_str(), target.port),
        ("postgres", "pg1", 2222)
    );
    assert_eq!(target.identity_files, [PathBuf::from("/keys/id")]);
    assert_eq!(
        target.strict_host_key_checking,
        StrictHostKeyChecking::AcceptNew
    );
    assert_eq!(target.connect_timeout, Some(Duration::from_secs(7)));
    assert!(target.compression);
    assert!(
        target.in_process_blockers.is_empty(),
        "{:?}",
        target.in_process_blockers
    );
    assert_eq!(target.peer().to_string(), "postgres@pg1:2222");
}

#[test]
fn clustered_and_attached_flags_and_options_after_host() {
    let command = SshCommand::parse("/usr/bin/ssh -qTp2200 -lbob host -o User=ignored").unwrap();
    let target = command.resolve(None);
    assert_eq!((target.user.as_str(), target.port), ("bob", 2200));
}

#[test]
fn defaults_are_strict_with_default_keys_and_known_hosts() {
    let target = SshCommand::parse("ssh host").unwrap().resolve(None);
    assert_eq!(target.port, 22);
    assert_eq!(target.strict_host_key_checking, StrictHostKeyChecking::Yes);
    assert!(target.identity_files[0].ends_with(".ssh/id_ed25519"));
    assert!(target.user_known_hosts_files[0].ends_with(".ssh/known_hosts"));
    assert!(target.use_agent);
}

#[test]
fn proxy_jump_control_master_and_unknown_options_need_the_subprocess() {
    for (command, needle) in [
        ("ssh -J gw host", "ProxyJump"),
        ("ssh -o ProxyCommand='nc %h %p' host", "proxycommand"),
        ("ssh -o ControlMaster=auto host", "controlmaster"),
        ("ssh -L 1:a:2 host", "-L"),
        ("ssh -o Frobnicate=yes host", "frobnicate"),
        ("sshpass -p x host", "not ssh"),
        ("ssh host uptime", "remote command"),
    ] {
        let target = SshCommand::parse(command).unwrap().resolve(None);
        let error = target.check_in_process_support().unwrap_err().to_string();
        assert!(error.contains(needle), "{command}: {error}");
    }
    let harmless =
        SshCommand::parse("ssh -o ProxyCommand=none -o ControlMaster=no -o BatchMode=yes host")
            .unwrap();
    assert!(harmless.resolve(None).check_in_process_support().is_ok());
}

#[test]
fn malformed_commands_are_errors() {
    for command in [
        "",
        "ssh",
        "ssh -p",
        "ssh -p x host",
        "ssh -o Port host",
        "ssh -Z host",
        "ssh @host",
    ] {
        assert!(SshCommand::parse(command).is_err(), "{command}");
    }
    let error = SshCommand::parse("ssh -o StrictHostKeyChecking=maybe host").unwrap_err();
    assert!(
        error.to_string().contains("StrictHostKeyChecking"),
        "{error}"
    );
}

#[test]
fn config_applies_after_command_line_and_first_value_wins() {
    let config_text = "Host db\n  HostName 127.0.0.9\n  User cfguser\n  Port 2022\n  IdentityFile ~/.ssh/db_key\n  UserKnownHostsFile /kh/%h_%p\n  StrictHostKeyChecking no\n  ServerAliveInterval 5\nHost *\n  Port 9\n  ConnectTimeout 3\n";
    let config = SshConfig::parse(config_text, Path::new("/cfg")).unwrap();
    let target = SshCommand::parse("ssh -p 2200 -i /cli_key db")
        .unwrap()
        .resolve(Some(&config));
    assert_eq!(target.host_name, "127.0.0.9");
    assert_eq!(target.port, 2200, "command line wins");
    assert_eq!(target.user, "cfguser");
    assert_eq!(
        target.identity_files.len(),
        2,
        "IdentityFile accumulates: {:?}",
        target.identity_files
    );
    assert_eq!(target.identity_files[0], PathBuf::from("/cli_key"));
    assert_eq!(
        target.user_known_hosts_files,
        [PathBuf::from("/kh/127.0.0.9_2200")]
    );
    assert_eq!(target.strict_host_key_checking, StrictHostKeyChecking::No);
    assert_eq!(target.server_alive_interval, Some(Duration::from_secs(5)));
    assert_eq!(target.connect_timeout, Some(Duration::from_secs(3)));
    let other = SshCommand::parse("ssh other")
        .unwrap()
        .resolve(Some(&config));
    assert_eq!((other.host_name.as_str(), other.port), ("other", 9));
}

#[test]
fn config_with_proxy_jump_blocks_in_process() {
    let config = SshConfig::parse("Host jumped\n  ProxyJump gw\n", Path::new("/cfg")).unwrap();
    let target = SshCommand::parse("ssh jumped")
        .unwrap()
        .resolve(Some(&config));
    let error = target.check_in_process_support().unwrap_err().to_string();
    assert!(
        error.contains("/cfg:2") && error.contains("proxyjump"),
        "{error}"
    );
}
