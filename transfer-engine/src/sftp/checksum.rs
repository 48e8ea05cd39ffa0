//! The host's checksum tool (`b3sum`, else `sha256sum`, found once per session), run through
//! the user's transport ([`RemoteShell`]: `ssh host CMD`, one connection per command), and how
//! its answers are compared with the hash of a local file: what [`Verification`] a copy gets.
//!
//! One command hashes a whole batch of files: `sh` reads a script on its standard input that
//! runs the tool on groups of up to [`SUM_GROUP_FILES`] names, each group after a marker line,
//! so the names travel as bytes (never in the command line, never through a quoting round
//! trip of the transport), and the output is matched to the files by group and name. A name
//! the tools print escaped or lossily (not UTF-8, or holding a backslash, a newline or a
//! carriage return) gets a group of its own, where the one hash printed is its hash whatever
//! name is printed with it. Batches run on a thread of their own while files are downloaded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use barsync_transport::Transport;
use sha2::Digest;

use super::{FetchFailure, SftpSource};
use crate::fs::{MappedFile, RELEASE_EVERY};
use crate::names::shown_path;

/// How a file copied over SFTP was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verification {
    /// The remote `b3sum` agreed with the local copy's blake3.
    RemoteBlake3,
    /// The remote `sha256sum` agreed with the local copy's SHA-256.
    RemoteSha256,
    /// No checksum tool on the host: size and mtime were unchanged across the copy.
    SizeAndMtime,
}

impl Verification {
    /// How a report names this verification.
    pub fn label(self) -> &'static str {
        match self {
            Verification::RemoteBlake3 => "SFTP, remote b3sum",
            Verification::RemoteSha256 => "SFTP, remote sha256sum",
            Verification::SizeAndMtime => "SFTP, size and mtime only",
        }
    }

    /// The host's tool behind this check (`None`: size and mtime only).
    pub(super) fn tool(self) -> Option<&'static str> {
        match self {
            Verification::RemoteBlake3 => Some("b3sum"),
            Verification::RemoteSha256 => Some("sha256sum"),
            Verification::SizeAndMtime => None,
        }
    }

    /// The hash the host's tool would print for the content of `file` (lowercase hex), read
    /// through a map released as it goes; `Ok(None)` without a tool. An error when the file
    /// changed while it was read: the hash would not be of any one version of it.
    pub(super) fn hash_local(self, file: &File) -> io::Result<Option<String>> {
        if self == Verification::SizeAndMtime {
            return Ok(None);
        }
        let map = MappedFile::from_file(file)?;
        let mut blake3 = blake3::Hasher::new();
        let mut sha256 = sha2::Sha256::new();
        let mut at = 0;
        while at < map.len() {
            let end = (at + RELEASE_EVERY).min(map.len());
            match self {
                Verification::RemoteBlake3 => {
                    blake3.update(&map[at..end]);
                }
                _ => sha256.update(&map[at..end]),
            }
            map.release(at..end);
            at = end;
        }
        if map.changed() {
            return Err(io::Error::other("the file changed while it was hashed"));
        }
        Ok(Some(match self {
            Verification::RemoteBlake3 => blake3.finalize().to_hex().to_string(),
            _ => sha256
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }))
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verification::RemoteBlake3 => "remote b3sum",
            Verification::RemoteSha256 => "remote sha256sum",
            Verification::SizeAndMtime => "size and mtime only (no checksum tool on the host)",
        })
    }
}

/// Runs shell commands on the SFTP host.
pub trait RemoteShell: Send + Sync {
    /// Runs `command` (a line for the host's shell) with `input` on its standard input and
    /// returns its standard output (at most [`MAX_SHELL_OUTPUT`] bytes). The command's own exit
    /// status is not an error (a tool that could not read one file still hashed the others);
    /// not reaching the host is.
    fn run(&self, command: &str, input: &[u8]) -> Result<Vec<u8>, String>;
}

/// The most output kept from one command.
pub const MAX_SHELL_OUTPUT: u64 = 64 << 20;

/// Commands through a transport: the user's ssh command as `ssh … host CMD` (or libssh2's exec
/// channel when there is no ssh program), one connection per command.
pub struct TransportShell(pub Arc<dyn Transport>);

impl RemoteShell for TransportShell {
    fn run(&self, command: &str, input: &[u8]) -> Result<Vec<u8>, String> {
        let stream = self.0.open(command).map_err(|e| e.to_string())?;
        let (mut reader, mut writer, exit) = stream.split();
        let mut output = Vec::new();
        let read = std::thread::scope(|scope| {
            // The input is written while the output is read: neither side waits on a full pipe.
            scope.spawn(move || {
                let _ = writer.write_all(input);
                let _ = writer.close_write();
            });
            (&mut reader)
                .take(MAX_SHELL_OUTPUT)
                .read_to_end(&mut output)
        });
        drop(reader);
        let exit = exit.wait().map_err(|e| e.to_string())?;
        read.map_err(|e| format!("{}: reading the output of `{command}`: {e}", self.0.peer()))?;
        let _ = exit;
        Ok(output)
    }
}

/// The best checksum tool on the host: `b3sum`, else `sha256sum`, else none.
pub(super) fn find_checksum_tool(shell: &dyn RemoteShell) -> Verification {
    let found = shell
        .run("command -v b3sum; command -v sha256sum", b"")
        .unwrap_or_default();
    let found = String::from_utf8_lossy(&found);
    if found.lines().any(|l| l.ends_with("/b3sum")) {
        Verification::RemoteBlake3
    } else if found.lines().any(|l| l.ends_with("/sha256sum")) {
        Verification::RemoteSha256
    } else {
        Verification::SizeAndMtime
    }
}

/// The host tool's hashes of remote files (lowercase hex), by path.
pub(super) type RemoteSums = HashMap<PathBuf, String>;

/// Files, and bytes of names, in one run of the tool (one group of the script): within the
/// host's limit on a command line's length (`ARG_MAX`, at least 128 KiB on Linux for one
/// argument, 2 MiB for all).
pub const SUM_GROUP_FILES: usize = 256;
const SUM_GROUP_BYTES: usize = 96 * 1024;

/// The marker line before each group's output.
const MARKER: &[u8] = b"#barsync-sums ";

/// How a group's output lines are matched to its files.
enum Group {
    /// One file: the one hash printed is its hash.
    One(PathBuf),
    /// Several plain names, printed as given: by the name (the argument) printed.
    Many(HashMap<Vec<u8>, PathBuf>),
}

/// Whether the tools print `name` exactly as it was given.
fn printed_as_given(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok() && !name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'))
}

/// `word` single-quoted for `sh` (any byte survives: quotes end, `\'` adds one, quotes
/// start again).
fn quoted(word: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(word.len() + 2);
    out.push(b'\'');
    for &byte in word {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
    out
}

/// The argument naming `remote` for the tool: a relative path gets `./`, so that no name is
/// taken for an option or for `-` (standard input).
fn argument(remote: &Path) -> Vec<u8> {
    let bytes = remote.as_os_str().as_bytes();
    if bytes.starts_with(b"/") {
        bytes.to_vec()
    } else {
        let mut out = b"./".to_vec();
        out.extend_from_slice(bytes);
        out
    }
}

/// The script that hashes `remotes` with `tool`, and how to read its output.
fn sum_script(tool: &str, remotes: &[&Path]) -> (Vec<u8>, Vec<Group>) {
    let mut script = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut many: HashMap<Vec<u8>, PathBuf> = HashMap::new();
    let close_group = |script: &mut Vec<u8>, groups: &mut Vec<Group>, line: &mut Vec<u8>, group| {
        script.extend_from_slice(
            format!(
                "echo '{}{}'\n",
                String::from_utf8_lossy(MARKER),
                groups.len()
            )
            .as_bytes(),
        );
        script.extend_from_slice(format!("{tool} --").as_bytes());
        script.extend_from_slice(line);
        script.extend_from_slice(b" </dev/null\n");
        line.clear();
        groups.push(group);
    };
    for remote in remotes {
        let arg = argument(remote);
        let word = quoted(&arg);
        if !printed_as_given(&arg) {
            let mut one = vec![b' '];
            one.extend_from_slice(&word);
            close_group(
                &mut script,
                &mut groups,
                &mut one,
                Group::One(remote.to_path_buf()),
            );
            continue;
        }
        if !many.is_empty()
            && (many.len() >= SUM_GROUP_FILES || line.len() + 1 + word.len() > SUM_GROUP_BYTES)
        {
            let group = Group::Many(std::mem::take(&mut many));
            close_group(&mut script, &mut groups, &mut line, group);
        }
        line.push(b' ');
        line.extend_from_slice(&word);
        many.insert(arg, remote.to_path_buf());
    }
    if !many.is_empty() {
        close_group(&mut script, &mut groups, &mut line, Group::Many(many));
    }
    (script, groups)
}

/// The hashes in the output of a [`sum_script`], by path.
fn parse_sums(output: &[u8], groups: &[Group]) -> RemoteSums {
    let mut sums = RemoteSums::new();
    let mut current: Option<&Group> = None;
    for line in output.split(|&b| b == b'\n') {
        if let Some(number) = line.strip_prefix(MARKER) {
            current = std::str::from_utf8(number)
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| groups.get(n));
            continue;
        }
        let Some((name, hash)) = parse_sum_line(line) else {
            continue;
        };
        match current {
            Some(Group::One(path)) => {
                sums.entry(path.clone()).or_insert(hash);
            }
            Some(Group::Many(names)) => {
                if let Some(path) = names.get(&name) {
                    sums.insert(path.clone(), hash);
                }
            }
            None => {}
        }
    }
    sums
}

/// One line of `b3sum` or `sha256sum` output: `HASH  PATH`, or, for a name holding a
/// backslash, a newline or a carriage return, `\\HASH  ESCAPED` (`\\\\`, `\\n`, `\\r`), as GNU
/// coreutils and b3sum print them: (path, lowercase hash). `None` for what is not such a line.
fn parse_sum_line(line: &[u8]) -> Option<(Vec<u8>, String)> {
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let split = line.windows(2).position(|pair| pair == b"  ")?;
    let (hash, name) = (&line[..split], &line[split + 2..]);
    if hash.is_empty() || hash.len() > 128 || !hash.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let name = if escaped {
        let mut out = Vec::with_capacity(name.len());
        let mut bytes = name.iter();
        while let Some(&b) = bytes.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match bytes.next()? {
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                _ => return None,
            }
        }
        out
    } else {
        name.to_vec()
    };
    let hash = String::from_utf8(hash.to_ascii_lowercase()).ok()?;
    Some((name, hash))
}

/// A batch of remote hashes being computed on a thread.
pub(super) struct SumsJob(Option<JoinHandle<RemoteSums>>);

impl SumsJob {
    /// The hashes (empty when the run failed: each file is then asked for alone).
    pub(super) fn wait(self) -> RemoteSums {
        self.0
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

/// Runs the tool over `remotes` in one command; empty sums without a tool or a shell.
fn remote_sums_now(shell: &dyn RemoteShell, check: Verification, remotes: &[&Path]) -> RemoteSums {
    let Some(tool) = check.tool() else {
        return RemoteSums::new();
    };
    if remotes.is_empty() {
        return RemoteSums::new();
    }
    let (script, groups) = sum_script(tool, remotes);
    match shell.run("sh", &script) {
        Ok(output) => parse_sums(&output, &groups),
        Err(_) => RemoteSums::new(),
    }
}

impl SftpSource {
    /// Starts hashing `remotes` on the host (one command for all of them), on a thread.
    pub(super) fn start_sums(&self, remotes: Vec<PathBuf>) -> SumsJob {
        let (Some(shell), Some(_)) = (self.shell.clone(), self.check.tool()) else {
            return SumsJob(None);
        };
        if remotes.is_empty() {
            return SumsJob(None);
        }
        let check = self.check;
        SumsJob(
            std::thread::Builder::new()
                .name("barsync-sftp-sums".into())
                .spawn(move || {
                    let paths: Vec<&Path> = remotes.iter().map(PathBuf::as_path).collect();
                    remote_sums_now(&*shell, check, &paths)
                })
                .ok(),
        )
    }

    /// The host tool's hashes of `remotes`, by path, in one command. Empty without a tool; a
    /// file the tool could not read (or a run that failed) has no entry, and its caller asks
    /// again for that file alone or copies it.
    pub(super) fn remote_sums(&self, remotes: &[&Path]) -> RemoteSums {
        match &self.shell {
            Some(shell) => remote_sums_now(&**shell, self.check, remotes),
            None => RemoteSums::new(),
        }
    }

    /// Compares the local copy with the host tool's hash of `remote`, asked for this one file.
    pub(super) fn verify(&self, remote: &Path, local: &File) -> Result<(), FetchFailure> {
        let Some(tool) = self.check.tool() else {
            return Ok(());
        };
        let sums = self.remote_sums(&[remote]);
        let Some(theirs) = sums.get(remote) else {
            return Err(FetchFailure::Other(format!(
                "{}: running {tool} on the host gave no hash",
                shown_path(remote)
            )));
        };
        self.compare_with(remote, local, theirs)
    }

    /// Compares the local copy's hash with `theirs`, the host tool's hash of `remote`.
    pub(super) fn compare_with(
        &self,
        remote: &Path,
        local: &File,
        theirs: &str,
    ) -> Result<(), FetchFailure> {
        let remote = shown_path(remote);
        let Some(tool) = self.check.tool() else {
            return Ok(());
        };
        let ours = self
            .check
            .hash_local(local)
            .map_err(|e| FetchFailure::Other(format!("{remote}: the local copy: {e}")))?
            .unwrap_or_default();
        if ours == theirs {
            Ok(())
        } else {
            Err(FetchFailure::Mismatch(format!(
                "{remote}: {tool} on the host says {theirs}, the copy hashes to {ours}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_lines_plain_and_escaped() {
        let hash = "ab".repeat(32);
        let line = |text: String| parse_sum_line(text.as_bytes());
        assert_eq!(
            line(format!("{}  /b/a  b", hash.to_uppercase())),
            Some((b"/b/a  b".to_vec(), hash.clone()))
        );
        assert_eq!(
            line(format!("\\{hash}  /b/new\\nline\\\\back\\rcr")),
            Some((b"/b/new\nline\\back\rcr".to_vec(), hash.clone()))
        );
        assert_eq!(line(format!("\\{hash}  /b/odd\\t")), None);
        assert_eq!(line("sha256sum: /b/x: No such file".into()), None);
        assert_eq!(line(String::new()), None);
    }

    /// The script runs under a real `sh` with a stand-in tool that prints names the way the
    /// real tools may (a name it cannot print plainly comes out garbled), and every file gets
    /// its own hash back, whatever its name; a missing file gets none; a relative `-` is a
    /// file, not standard input.
    #[test]
    fn a_sum_script_maps_every_name_back_to_its_file() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("fakesum");
        std::fs::write(
            &tool,
            "#!/bin/sh\n[ \"$1\" = -- ] && shift\nfor f in \"$@\"; do\n  \
             [ -e \"$f\" ] || { echo \"fakesum: missing\" >&2; continue; }\n  \
             h=$(cksum < \"$f\" | cut -d' ' -f1)\n  \
             case \"$f\" in *[!\\ -~]*) n=GARBLED ;; *) n=$f ;; esac\n  \
             printf '%064d  %s\\n' \"$h\" \"$n\"\ndone\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let names: Vec<&[u8]> = vec![
            b"plain",
            b"two  spaces",
            b"caf\xe9",
            b"new\nline",
            b"back\\slash",
            b"it's",
        ];
        let mut remotes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let path = dir.path().join(std::ffi::OsStr::from_bytes(name));
            std::fs::write(&path, vec![b'x'; i + 1]).unwrap();
            remotes.push(path);
        }
        std::fs::write(dir.path().join("-"), vec![b'x'; 9]).unwrap();
        let missing = dir.path().join("missing");
        let mut all: Vec<&Path> = remotes.iter().map(PathBuf::as_path).collect();
        all.extend([missing.as_path(), Path::new("-"), Path::new("plain")]);
        let (script, groups) = sum_script(tool.to_str().unwrap(), &all);
        let script_path = dir.path().join("script");
        std::fs::write(&script_path, &script).unwrap();
        let output = std::process::Command::new("sh")
            .current_dir(dir.path())
            .stdin(File::open(&script_path).unwrap())
            .output()
            .unwrap();
        let sums = parse_sums(&output.stdout, &groups);
        let expected = |len: usize| {
            let path = dir.path().join(format!("expected-{len}"));
            std::fs::write(&path, vec![b'x'; len]).unwrap();
            let out = std::process::Command::new("cksum")
                .stdin(File::open(&path).unwrap())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let value: u64 = text.split(' ').next().unwrap().parse().unwrap();
            format!("{value:064}")
        };
        for (i, remote) in remotes.iter().enumerate() {
            assert_eq!(
                sums.get(remote),
                Some(&expected(i + 1)),
                "{remote:?}: {sums:?}"
            );
        }
        assert_eq!(sums.get(&missing), None);
        assert_eq!(sums.get(Path::new("-")), Some(&expected(9)));
        assert_eq!(sums.get(Path::new("plain")), Some(&expected(1)));
        // The plain names shared one run of the tool.
        assert!(groups.len() < all.len(), "{} groups", groups.len());
    }

    #[test]
    fn local_hashes_are_what_the_tools_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            Verification::RemoteSha256
                .hash_local(&file)
                .unwrap()
                .unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Verification::RemoteBlake3
                .hash_local(&file)
                .unwrap()
                .unwrap(),
            blake3::hash(b"abc").to_hex().to_string()
        );
        assert_eq!(Verification::SizeAndMtime.hash_local(&file).unwrap(), None);
    }
}
