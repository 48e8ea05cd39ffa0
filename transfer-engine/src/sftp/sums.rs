//! The host's checksum tool (`b3sum`, else `sha256sum`), run through the user's transport: one
//! `sh` per SFTP session (`ssh … host sh`: one more ssh connection, not one per batch), which
//! reads what to run on its standard input while the files are downloaded.
//!
//! The session first sends a probe (`command -v` of `b3sum`, `sha256sum` and `openssl`); then,
//! for each batch of files, the tool over groups of up to [`SUM_GROUP_FILES`] names, each group between
//! two marker lines (`#barsync-sums N`, `#barsync-end N`), so that a reader thread can tell
//! which output belongs to which group and when a group is complete. The names travel as
//! bytes, single-quoted in the script, never through the command line of ssh. A name the
//! tools print escaped or lossily (not UTF-8, or holding a backslash, a newline or a carriage
//! return) gets a group of its own, where the one hash printed is its hash whatever name comes
//! with it; in the other groups a hash is matched to its file by the name printed. Relative
//! names get `./`, so none is taken for an option or for standard input; the tool's own
//! standard input is `/dev/null`, so it cannot eat the script. Output lines are bounded.
//!
//! SHA-256 is computed by the host's `openssl dgst -sha256` when it has one (OpenSSL uses the
//! CPU's SHA instructions: three times faster than coreutils' `sha256sum` on this project's
//! machine, which matters on a primary that hashes a whole backup), else by `sha256sum`.
//!
//! A host that refuses `sh` (a key pinned to a forced command) answers nothing: the probe
//! finds no tool, and files are checked by size and mtime. When the shell ends early, the
//! session starts another one (a few times at most); a file whose hash never came is checked
//! by itself or fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use barsync_transport::Transport;

use super::checksum::Verification;

/// Runs commands on the SFTP host.
pub trait RemoteShell: Send + Sync {
    /// Starts `command` (a line for the host's shell) on the host.
    fn start(&self, command: &str) -> Result<ShellProcess, String>;
}

/// A command running on the host.
pub struct ShellProcess {
    /// Its standard input (dropping it sends EOF).
    pub input: Box<dyn Write + Send>,
    /// Its standard output.
    pub output: Box<dyn Read + Send>,
    /// Waits for it to end; called once its output has ended.
    pub wait: Box<dyn FnOnce() + Send>,
}

impl ShellProcess {
    /// A local child started with piped stdin and stdout (a stand-in host, in tests).
    pub fn from_child(mut child: std::process::Child) -> ShellProcess {
        let input = child.stdin.take().expect("stdin piped");
        let output = child.stdout.take().expect("stdout piped");
        ShellProcess {
            input: Box::new(input),
            output: Box::new(output),
            wait: Box::new(move || {
                let _ = child.wait();
            }),
        }
    }
}

/// Commands through a transport: the user's ssh command as `ssh … host CMD` (libssh2's exec
/// channel when there is no ssh program).
pub struct TransportShell(pub Arc<dyn Transport>);

impl RemoteShell for TransportShell {
    fn start(&self, command: &str) -> Result<ShellProcess, String> {
        let (reader, writer, exit) = self.0.open(command).map_err(|e| e.to_string())?.split();
        Ok(ShellProcess {
            input: Box::new(writer),
            output: Box::new(reader),
            wait: Box::new(move || {
                let _ = exit.wait();
            }),
        })
    }
}

/// The host tool's hashes of remote files (lowercase hex), by path.
pub(super) type RemoteSums = HashMap<PathBuf, String>;

/// Files, and bytes of names, in one run of the tool (one group): within the host's limit on
/// a command line (`ARG_MAX`: at least 128 KiB for one argument on Linux, 2 MiB for all).
pub const SUM_GROUP_FILES: usize = 256;
const SUM_GROUP_BYTES: usize = 96 * 1024;
/// Longer output lines are cut (a hash line is a hash, two spaces and a name of at most 4 KiB).
const MAX_LINE: usize = 16 * 1024;
/// Lines of the probe's answer kept.
const MAX_PROBE_LINES: usize = 16;
/// Shells started per session: the first and two more when one ends early.
const MAX_STARTS: usize = 3;

const PROBE_END: &[u8] = b"#barsync-probe";
const GROUP_START: &[u8] = b"#barsync-sums ";
const GROUP_END: &[u8] = b"#barsync-end ";

/// How a group's output lines are matched to its files.
enum Names {
    /// One file: the one hash printed is its hash.
    One(PathBuf),
    /// Several plain names, printed as given: by the name (the argument) printed.
    Many(HashMap<Vec<u8>, PathBuf>),
}

struct Group {
    names: Names,
    sums: RemoteSums,
    done: bool,
}

/// The program that hashes on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tool {
    pub verification: Verification,
    /// How messages name it.
    pub name: &'static str,
    /// The command line before the file names.
    command: &'static str,
}

const B3SUM: Tool = Tool {
    verification: Verification::RemoteBlake3,
    name: "b3sum",
    command: "b3sum --",
};
const OPENSSL_SHA256: Tool = Tool {
    verification: Verification::RemoteSha256,
    name: "openssl dgst -sha256",
    // OpenSSL's options end at the first name; every name here starts with `/` or `./`.
    command: "openssl dgst -sha256 -r",
};
const SHA256SUM: Tool = Tool {
    verification: Verification::RemoteSha256,
    name: "sha256sum",
    command: "sha256sum --",
};

#[derive(Default)]
struct State {
    /// The probe's finding, once it is known (`Some(None)`: no tool).
    tool: Option<Option<Tool>>,
    groups: HashMap<usize, Group>,
    /// The shell's output ended.
    ended: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One `sh` on the host, running the checksum tool for the session.
struct Shell {
    shared: Arc<Shared>,
    /// Script text for the writer thread; dropping it ends the shell's input.
    script: Option<mpsc::Sender<Vec<u8>>>,
}

impl Shell {
    /// Starts `sh` through `remote`, sends the probe, and starts the threads that write its
    /// input and read its output.
    fn start(remote: &dyn RemoteShell) -> Result<Shell, String> {
        let process = remote.start("sh")?;
        let shared = Arc::new(Shared::default());
        let (script, lines) = mpsc::channel::<Vec<u8>>();
        let mut input = process.input;
        std::thread::Builder::new()
            .name("barsync-sums-in".into())
            .spawn(move || {
                for text in lines {
                    if input.write_all(&text).and_then(|()| input.flush()).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let reader_state = shared.clone();
        let (output, wait) = (process.output, process.wait);
        std::thread::Builder::new()
            .name("barsync-sums-out".into())
            .spawn(move || {
                read_output(&reader_state, output);
                wait();
            })
            .map_err(|e| e.to_string())?;
        let shell = Shell {
            shared,
            script: Some(script),
        };
        shell.send(
            b"command -v b3sum; command -v sha256sum; command -v openssl; echo '#barsync-probe'\n"
                .to_vec(),
        );
        Ok(shell)
    }

    fn send(&self, text: Vec<u8>) {
        if let Some(script) = &self.script {
            let _ = script.send(text);
        }
    }

    /// The probe's finding (waits for it; none when the shell ended first).
    fn tool(&self) -> Option<Tool> {
        let mut state = self.shared.lock();
        loop {
            if let Some(tool) = state.tool {
                return tool;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn ended(&self) -> bool {
        self.shared.lock().ended
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // The writer thread ends, closing the shell's input: `sh` ends after its current command.
        self.script.take();
    }
}

/// Reads the shell's output to its end, filling the shared state.
fn read_output(shared: &Shared, output: Box<dyn Read + Send>) {
    let mut reader = BufReader::with_capacity(64 * 1024, output);
    let mut line = Vec::new();
    let mut probe: Vec<Vec<u8>> = Vec::new();
    let mut current: Option<usize> = None;
    while read_line_bounded(&mut reader, &mut line) {
        let mut state = shared.lock();
        if state.tool.is_none() {
            if line == PROBE_END {
                state.tool = Some(tool_from_probe(&probe));
                shared.changed.notify_all();
            } else if probe.len() < MAX_PROBE_LINES {
                probe.push(line.clone());
            }
            continue;
        }
        if let Some(number) = line.strip_prefix(GROUP_START) {
            current = parse_number(number).filter(|n| state.groups.contains_key(n));
        } else if let Some(number) = line.strip_prefix(GROUP_END) {
            if let Some(group) = parse_number(number).and_then(|n| state.groups.get_mut(&n)) {
                group.done = true;
            }
            current = None;
            shared.changed.notify_all();
        } else if let Some(group) = current.and_then(|n| state.groups.get_mut(&n)) {
            if let Some((name, hash)) = parse_sum_line(&line) {
                match &group.names {
                    Names::One(path) => {
                        group.sums.entry(path.clone()).or_insert(hash);
                    }
                    Names::Many(names) => {
                        if let Some(path) = names.get(&name) {
                            group.sums.insert(path.clone(), hash);
                        }
                    }
                }
            }
        }
    }
    let mut state = shared.lock();
    state.ended = true;
    if state.tool.is_none() {
        state.tool = Some(tool_from_probe(&probe));
    }
    shared.changed.notify_all();
}

/// Reads one line (without its newline) into `line`, keeping at most [`MAX_LINE`] bytes of
/// it; `false` at the end of the output or on an error.
fn read_line_bounded(reader: &mut impl BufRead, line: &mut Vec<u8>) -> bool {
    line.clear();
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        if available.is_empty() {
            return any;
        }
        any = true;
        let (taken, found) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        let content = if found { taken - 1 } else { taken };
        line.extend_from_slice(&available[..content.min(room)]);
        reader.consume(taken);
        if found {
            return true;
        }
    }
}

fn parse_number(text: &[u8]) -> Option<usize> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// What the probe's lines (`command -v` of each program) show: `b3sum`, else SHA-256 by
/// `openssl`, else by `sha256sum`, else none.
fn tool_from_probe(lines: &[Vec<u8>]) -> Option<Tool> {
    let found = |program: &[u8]| {
        lines
            .iter()
            .any(|l| l.ends_with(program) && l[..l.len() - program.len()].ends_with(b"/"))
    };
    if found(b"b3sum") {
        Some(B3SUM)
    } else if found(b"openssl") {
        Some(OPENSSL_SHA256)
    } else if found(b"sha256sum") {
        Some(SHA256SUM)
    } else {
        None
    }
}

/// Whether the tools print `name` exactly as it was given.
fn printed_as_given(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok() && !name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'))
}

/// `word` single-quoted for `sh` (any byte survives: the quotes end, `\'` adds one, they
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

/// The argument naming `remote` for the tool: a relative path gets `./`.
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

/// The script that hashes `remotes` with `command` (the tool's, before the names) in groups
/// numbered from `first`, and the groups' names.
fn sum_script(command: &str, remotes: &[&Path], first: usize) -> (Vec<u8>, Vec<Names>) {
    let mut script = Vec::new();
    let mut groups: Vec<Names> = Vec::new();
    let mut close = |words: &[u8], names: Names, groups: &mut Vec<Names>| {
        let number = first + groups.len();
        script.extend_from_slice(format!("echo '#barsync-sums {number}'\n{command}").as_bytes());
        script.extend_from_slice(words);
        script.extend_from_slice(format!(" </dev/null\necho '#barsync-end {number}'\n").as_bytes());
        groups.push(names);
    };
    let mut words: Vec<u8> = Vec::new();
    let mut many: HashMap<Vec<u8>, PathBuf> = HashMap::new();
    for remote in remotes {
        let arg = argument(remote);
        let word = quoted(&arg);
        if !printed_as_given(&arg) {
            let mut one = vec![b' '];
            one.extend_from_slice(&word);
            close(&one, Names::One(remote.to_path_buf()), &mut groups);
            continue;
        }
        if !many.is_empty()
            && (many.len() >= SUM_GROUP_FILES || words.len() + 1 + word.len() > SUM_GROUP_BYTES)
        {
            close(&words, Names::Many(std::mem::take(&mut many)), &mut groups);
            words.clear();
        }
        words.push(b' ');
        words.extend_from_slice(&word);
        many.insert(arg, remote.to_path_buf());
    }
    if !many.is_empty() {
        close(&words, Names::Many(many), &mut groups);
    }
    (script, groups)
}

/// One line of `b3sum`, `sha256sum` or `openssl dgst -r` output: `HASH  PATH` (`HASH *PATH`
/// for OpenSSL, or coreutils in binary mode), or, for a name holding a backslash, a newline or
/// a carriage return, `\HASH  ESCAPED` (`\\`, `\n`, `\r`), as they all print them: (path,
/// lowercase hash). `None` for what is not such a line.
pub(super) fn parse_sum_line(line: &[u8]) -> Option<(Vec<u8>, String)> {
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let split = line.iter().position(|b| !b.is_ascii_hexdigit())?;
    let hash = &line[..split];
    let name = match &line[split..] {
        [b' ', b' ' | b'*', name @ ..] => name,
        _ => return None,
    };
    if hash.is_empty() || hash.len() > 128 {
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

/// The groups of one batch of files sent to the host's shell.
pub(super) struct Pending {
    groups: Vec<usize>,
    shared: Option<Arc<Shared>>,
}

impl Pending {
    /// Nothing asked (no tool, no shell, no file).
    pub(super) fn none() -> Pending {
        Pending {
            groups: Vec::new(),
            shared: None,
        }
    }

    /// Waits until every group of the batch has its hashes (or the shell ended) and returns
    /// them. A file the tool could not read has none.
    pub(super) fn wait(self) -> RemoteSums {
        let Some(shared) = self.shared else {
            return RemoteSums::new();
        };
        let mut state = shared.lock();
        while !state.ended
            && !self
                .groups
                .iter()
                .all(|n| state.groups.get(n).is_none_or(|g| g.done))
        {
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let mut sums = RemoteSums::new();
        for number in &self.groups {
            if let Some(group) = state.groups.remove(number) {
                sums.extend(group.sums);
            }
        }
        sums
    }
}

/// The session's way to the host's checksum tool: the shell, started again when it ends.
pub(super) struct Sums {
    remote: Arc<dyn RemoteShell>,
    shell: Option<Shell>,
    starts: usize,
    tool: Option<Tool>,
    next_group: usize,
}

impl Sums {
    /// Starts the shell and sends the probe (see [`Sums::tool`]).
    pub(super) fn start(remote: Arc<dyn RemoteShell>) -> Sums {
        let shell = Shell::start(&*remote).ok();
        Sums {
            remote,
            shell,
            starts: 1,
            tool: None,
            next_group: 0,
        }
    }

    /// Waits for the probe: the tool the host offers, if any.
    pub(super) fn find_tool(&mut self) -> Option<Tool> {
        self.tool = self.shell.as_ref().and_then(Shell::tool);
        self.tool
    }

    /// A live shell: the current one, or a new one when it ended (a few times at most).
    fn live_shell(&mut self) -> Option<&Shell> {
        if self.shell.as_ref().is_none_or(Shell::ended) && self.starts < MAX_STARTS {
            self.starts += 1;
            self.shell = Shell::start(&*self.remote).ok();
            if let Some(shell) = &self.shell {
                shell.tool();
            }
        }
        self.shell.as_ref()
    }

    /// Sends the hashing of `remotes` to the host; the result comes with [`Pending::wait`].
    pub(super) fn submit(&mut self, remotes: &[&Path]) -> Pending {
        let Some(tool) = self.tool else {
            return Pending::none();
        };
        if remotes.is_empty() {
            return Pending::none();
        }
        let first = self.next_group;
        let Some(shell) = self.live_shell() else {
            return Pending::none();
        };
        let (script, names) = sum_script(tool.command, remotes, first);
        let groups: Vec<usize> = (first..first + names.len()).collect();
        {
            let mut state = shell.shared.lock();
            for (number, names) in groups.iter().zip(names) {
                state.groups.insert(
                    *number,
                    Group {
                        names,
                        sums: RemoteSums::new(),
                        done: false,
                    },
                );
            }
        }
        shell.send(script);
        let shared = shell.shared.clone();
        self.next_group = first + groups.len();
        Pending {
            groups,
            shared: Some(shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

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
        // OpenSSL's `dgst -r` (and coreutils' binary mode): one space and a star.
        assert_eq!(
            line(format!("{hash} */b/a *b")),
            Some((b"/b/a *b".to_vec(), hash.clone()))
        );
        assert_eq!(
            line(format!("\\{hash} */b/new\\nline")),
            Some((b"/b/new\nline".to_vec(), hash.clone()))
        );
        assert_eq!(line(format!("{hash} /b/one-space")), None);
        assert_eq!(line(format!("{hash}x  /b/not-hex")), None);
        assert_eq!(line("sha256sum: /b/x: No such file".into()), None);
        assert_eq!(line(String::new()), None);
    }

    #[test]
    fn the_probe_prefers_b3sum_then_openssl_then_sha256sum() {
        let probe = |lines: &[&str]| {
            tool_from_probe(
                &lines
                    .iter()
                    .map(|l| l.as_bytes().to_vec())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(probe(&["/usr/bin/sha256sum"]), Some(SHA256SUM));
        assert_eq!(
            probe(&["/usr/bin/sha256sum", "/usr/bin/openssl"]),
            Some(OPENSSL_SHA256)
        );
        assert_eq!(
            probe(&["/usr/bin/b3sum", "/usr/bin/sha256sum", "/usr/bin/openssl"]),
            Some(B3SUM)
        );
        assert_eq!(probe(&["/opt/bin/not-openssl", "openssl"]), None);
        assert_eq!(probe(&[]), None);
    }

    #[test]
    fn lines_are_bounded() {
        let mut text = vec![b'a'; MAX_LINE * 3];
        text.extend_from_slice(b"\nnext\nlast");
        let mut reader = BufReader::with_capacity(100, &text[..]);
        let mut line = Vec::new();
        assert!(read_line_bounded(&mut reader, &mut line));
        assert_eq!(line.len(), MAX_LINE);
        assert!(read_line_bounded(&mut reader, &mut line));
        assert_eq!(line, b"next");
        assert!(read_line_bounded(&mut reader, &mut line));
        assert_eq!(line, b"last");
        assert!(!read_line_bounded(&mut reader, &mut line));
    }

    /// A local `sh` standing in for the host's.
    struct LocalShell(PathBuf);

    impl RemoteShell for LocalShell {
        fn start(&self, command: &str) -> Result<ShellProcess, String> {
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .current_dir(&self.0)
                .env("PATH", &self.0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            Ok(ShellProcess::from_child(child))
        }
    }

    /// The script runs under a real `sh` with a stand-in `sha256sum` that prints names the way
    /// the real tools may (a name it cannot print plainly comes out garbled), and every file
    /// gets its own hash back, whatever its name; a missing file gets none; a relative `-` is a
    /// file, not standard input; later batches go through the same shell.
    #[test]
    fn every_name_gets_its_own_hash_back_through_one_shell() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("sha256sum");
        std::fs::write(
            &tool,
            "#!/bin/sh\n[ \"$1\" = -- ] && shift\nfor f in \"$@\"; do\n  \
             [ -e \"$f\" ] || { echo \"fake: missing\" >&2; continue; }\n  \
             h=$(/usr/bin/cksum < \"$f\" | /usr/bin/cut -d' ' -f1)\n  \
             case \"$f\" in *[!\\ -~]*) n=GARBLED ;; *) n=$f ;; esac\n  \
             printf '%064d  %s\\n' \"$h\" \"$n\"\ndone\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The host's PATH has `sh` and the stand-in tool only.
        std::os::unix::fs::symlink("/bin/sh", dir.path().join("sh")).unwrap();
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
        let expected = |len: usize| {
            let path = dir.path().join(format!("expected-{len}"));
            std::fs::write(&path, vec![b'x'; len]).unwrap();
            let out = Command::new("cksum")
                .stdin(File::open(&path).unwrap())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let value: u64 = text.split(' ').next().unwrap().parse().unwrap();
            format!("{value:064}")
        };
        let mut sums = Sums::start(Arc::new(LocalShell(dir.path().to_path_buf())));
        assert_eq!(sums.find_tool(), Some(SHA256SUM));
        let first = sums.submit(&all);
        let second = sums.submit(&[Path::new("plain")]);
        let got = first.wait();
        for (i, remote) in remotes.iter().enumerate() {
            assert_eq!(
                got.get(remote),
                Some(&expected(i + 1)),
                "{remote:?}: {got:?}"
            );
        }
        assert_eq!(got.get(&missing), None);
        assert_eq!(got.get(Path::new("-")), Some(&expected(9)));
        assert_eq!(got.get(Path::new("plain")), Some(&expected(1)));
        assert_eq!(second.wait().get(Path::new("plain")), Some(&expected(1)));
        assert_eq!(sums.starts, 1, "one shell for both batches");
        // The plain names shared one run of the tool.
        let (_, groups) = sum_script("x", &all, 0);
        assert!(groups.len() < all.len(), "{} groups", groups.len());
    }

    /// A host that refuses the shell (a forced command) offers no tool.
    #[test]
    fn a_refused_shell_means_size_and_mtime() {
        struct Refusing;
        impl RemoteShell for Refusing {
            fn start(&self, _: &str) -> Result<ShellProcess, String> {
                let child = Command::new("sh")
                    .args(["-c", "echo refused >&2; exit 1"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                Ok(ShellProcess::from_child(child))
            }
        }
        let mut sums = Sums::start(Arc::new(Refusing));
        assert_eq!(sums.find_tool(), None);
        assert!(sums.submit(&[Path::new("/x")]).wait().is_empty());
    }
}
