//! Checks of the transfer engine's decoders of outside input: protocol frames and whole client
//! sessions (`frame_decode`), ssh command strings and ssh_config text (`ssh_command_parse`), and
//! paths from a peer (`path_validate`, with [`super::sync_checks::wal_and_backup_names`]).
//!
//! Shared by the fuzz targets and `transfer-engine/tests/fuzz_corpus.rs` (included there with
//! `#[path]`), so only `std` and `transfer_engine` may be used here.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use barsync_transport::ssh_command::{split_shell_words, SshCommand};
use barsync_transport::ssh_config::SshConfig;
use transfer_engine::confine::{RelativePath, Roots, MAX_PATH_LEN};
use transfer_engine::delta::MAX_LITERAL_RUN;
use transfer_engine::protocol::client::ClientOptions;
use transfer_engine::protocol::frame::{Fields, FrameReader, FrameWriter, Kind, MAX_PAYLOAD};
use transfer_engine::protocol::literal::LiteralDecoder;
use transfer_engine::protocol::{Client, EntryKind, FetchRequest, ProtocolError, PushItem};

/// `frame_decode`: `data` is what a server sent. Decodes it frame by frame (every field of every
/// kind, literals decompressed), then runs a whole client session against it.
pub fn frame_decode(data: &[u8]) {
    frames(data);
    client_session(data);
}

/// Reads frames until the end or an error. Properties: the frames read re-encode to exactly the
/// bytes consumed, `replay_last` gives the same frame again, and a clean end of stream comes
/// only after the last byte.
pub fn frames(data: &[u8]) {
    let mut reader = FrameReader::new(data);
    let mut rebuilt = FrameWriter::new(Vec::new());
    let mut literals = LiteralDecoder::default();
    loop {
        let (kind, payload) = match reader.read_frame() {
            Ok(Some((kind, payload))) => (kind, payload.to_vec()),
            Ok(None) => {
                assert_eq!(
                    reader.bytes,
                    data.len() as u64,
                    "clean end before the last byte"
                );
                break;
            }
            Err(_) => break,
        };
        rebuilt.start().rest(&payload);
        rebuilt.send(kind).expect("writing to a Vec");
        reader.replay_last();
        let (again_kind, again_payload) = reader.expect_frame().expect("replayed frame");
        assert_eq!((again_kind, again_payload), (kind, &payload[..]));
        let _ = decode_payload(kind, &payload, &mut literals);
    }
    let consumed = reader.bytes as usize;
    assert_eq!(rebuilt.into_inner(), &data[..consumed]);
}

/// Decodes one listing entry's record (a `ListEntry` after its request number, or one
/// record of a `ListBatch`).
fn decode_entry(fields: &mut Fields<'_>) -> Result<(), ProtocolError> {
    let path = fields.path()?;
    if let Ok(path) = RelativePath::from_path(path) {
        relative_path_properties(path.as_bytes(), &path);
    }
    let entry_kind = fields.u8()?;
    fields.u64()?;
    fields.i64()?;
    fields.u32()?;
    fields.u32()?;
    if entry_kind == EntryKind::Symlink as u8 {
        fields.path()?;
    }
    Ok(())
}

/// Decodes a payload by the layout of its kind, as the protocol's readers do.
fn decode_payload(
    kind: Kind,
    payload: &[u8],
    literals: &mut LiteralDecoder,
) -> Result<(), ProtocolError> {
    let mut fields = Fields::new(kind, payload);
    match kind {
        Kind::Hello => {
            fields.array::<4>()?;
            fields.u32()?;
            fields.u32()?;
            fields.str()?;
        }
        Kind::Fatal => {
            fields.str()?;
        }
        Kind::List => {
            fields.u32()?;
            fields.path()?;
            fields.u8()?;
        }
        Kind::FileRequest => {
            fields.u32()?;
            fields.path()?;
            fields.u64()?;
            fields.u8()?;
            fields.u8()?;
        }
        Kind::RangeRequest => {
            fields.u32()?;
            fields.path()?;
            fields.u64()?;
            fields.u64()?;
            fields.u64()?;
            fields.u8()?;
            fields.u8()?;
        }
        Kind::SignatureChunk => {
            fields.u32()?;
            fields.rest();
        }
        Kind::Watch => {
            fields.u32()?;
            fields.path()?;
            fields.u64()?;
            fields.u64()?;
            fields.u64()?;
            fields.u32()?;
            fields.u32()?;
        }
        Kind::Watched => {
            fields.u32()?;
            fields.u64()?;
            fields.u64()?;
            fields.i64()?;
            fields.u8()?;
            fields.bytes()?;
        }
        Kind::Probe => {
            fields.u32()?;
            fields.u32()?;
        }
        Kind::Probed => {
            fields.u32()?;
            fields.rest();
        }
        Kind::RequestsDone | Kind::ServerDone => {}
        Kind::PushFile => {
            fields.u32()?;
            fields.path()?;
            fields.u64()?;
        }
        Kind::MakeDirectory => {
            fields.u32()?;
            fields.path()?;
            fields.u32()?;
        }
        Kind::MakeSymlink => {
            fields.u32()?;
            fields.path()?;
            fields.path()?;
        }
        Kind::Remove => {
            fields.u32()?;
            fields.path()?;
        }
        Kind::RequestError => {
            fields.u32()?;
            fields.str()?;
        }
        Kind::ListEntry => {
            fields.u32()?;
            decode_entry(&mut fields)?;
        }
        Kind::ListBatch => {
            fields.u32()?;
            let encoding = fields.u8()?;
            let raw_len = fields.u32()? as usize;
            let records = literals.decode(encoding, raw_len, fields.rest(), MAX_PAYLOAD)?;
            assert_eq!(records.len(), raw_len, "decoded batch length");
            let mut records = Fields::new(kind, records);
            while !records.is_empty() {
                decode_entry(&mut records)?;
            }
        }
        Kind::ListEnd => {
            fields.u32()?;
        }
        Kind::FileBegin => {
            fields.u32()?;
            fields.u64()?;
            fields.i64()?;
            fields.u32()?;
            fields.u32()?;
            fields.u8()?;
        }
        Kind::Copy => {
            fields.u32()?;
            fields.u64()?;
            fields.u64()?;
        }
        Kind::Literal => {
            fields.u32()?;
            let encoding = fields.u8()?;
            let raw_len = fields.u32()? as usize;
            let data = literals.decode(encoding, raw_len, fields.rest(), MAX_LITERAL_RUN)?;
            assert_eq!(data.len(), raw_len, "decoded literal length");
        }
        Kind::FileEnd => {
            fields.u32()?;
            fields.u64()?;
            fields.array::<32>()?;
        }
        Kind::PushSignature => {
            fields.u32()?;
            fields.u64()?;
        }
        Kind::PushDone => {
            fields.u32()?;
            fields.u8()?;
            fields.str()?;
        }
    }
    fields.end()
}

/// Largest file the fuzzed client accepts (keeps files written per input small).
const SESSION_MAX_LEN: u64 = 256 * 1024;

/// The local basis of the session's fetches (and the in-place destination's content).
pub fn session_basis() -> Vec<u8> {
    (0..12_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

/// The local file the session pushes.
pub fn session_push_source() -> Vec<u8> {
    (0..9_000u32).map(|i| (i * 17 % 253) as u8).collect()
}

/// The files that may be in the session's directory after a fetch: its inputs, the fetched
/// files (which never verify under fuzzing: digests are keyed by the client's random signature
/// key) and the partial files kept when the session breaks in the middle of a file.
const SESSION_FILES: [&str; 9] = [
    "basis",
    "c",
    "push-source",
    "a",
    "b",
    "d",
    "a.partial",
    "b.partial",
    "d.partial",
];

/// The directory of the client session's files.
fn session_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir("session"))
}

/// This process's scratch directory `barsync-fuzz-{label}-{pid}` (in /dev/shm when there is
/// one), created once; those left by processes that are gone are removed first (libFuzzer
/// exits without running destructors).
fn scratch_dir(label: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let prefix = format!("barsync-fuzz-{label}-");
    if Path::new("/proc/self").exists() {
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(&prefix)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// The client side of a whole session against server bytes `data`: connect, a recursive
/// listing, four fetches (new, with a basis, in place, linked if identical), a push of four
/// items, finish.
pub fn client_session(data: &[u8]) {
    run_client_session(data, io::sink(), session_dir(), Path::new("/srv/fuzz"));
}

/// Runs the session of [`client_session`] over `input`/`output`, with the local files in `dir`
/// (reset first) and the remote files under `remote_root`. Used with a real server to make the
/// seed corpus (`examples/frame_decode_seeds.rs`). Properties: every fetch and push answers
/// every request in order, a verified file exists with the announced length, no temporary file
/// is left behind. Returns how many of the eight requests succeeded.
pub fn run_client_session<R: Read, W: Write + Send>(
    input: R,
    output: W,
    dir: &Path,
    remote_root: &Path,
) -> usize {
    let work = dir.join("w");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("creating the work directory");
    std::fs::write(work.join("basis"), session_basis()).expect("writing the basis");
    std::fs::write(work.join("c"), session_basis()).expect("writing the in-place file");
    std::fs::write(work.join("push-source"), session_push_source()).expect("writing");

    let options = ClientOptions {
        compression: Some(3),
        ..ClientOptions::default()
    };
    let Ok(mut client) = Client::connect(input, output, options) else {
        return 0;
    };
    match client.list(remote_root, true) {
        Err(_) => return 0,
        Ok(Err(_)) => {}
        Ok(Ok(entries)) => {
            for entry in entries {
                relative_path_properties(entry.path.as_bytes(), &entry.path);
                assert!(entry.mode <= 0o7777);
                assert_eq!(entry.target.is_some(), entry.kind == EntryKind::Symlink);
            }
        }
    }

    let remote = |name: &str| remote_root.join(name);
    let request = |remote_name: &str, destination: &str, basis: Option<&str>| FetchRequest {
        remote_path: remote(remote_name),
        destination: transfer_engine::confine::Destination::trusted(&work.join(destination))
            .unwrap(),
        basis: basis.map(|name| work.join(name)),
        max_len: Some(SESSION_MAX_LEN),
        partial: Some(work.join(format!("{destination}.partial"))),
        target: transfer_engine::protocol::FetchTarget::NEW_FILE,
    };
    let requests = [
        request("new.bin", "a", None),
        request("changed.bin", "b", Some("basis")),
        FetchRequest {
            target: transfer_engine::protocol::FetchTarget::WholeFile(
                transfer_engine::protocol::WriteMode::InPlace,
            ),
            ..request("inplace.bin", "c", Some("c"))
        },
        FetchRequest {
            target: transfer_engine::protocol::FetchTarget::WholeFile(
                transfer_engine::protocol::WriteMode::LinkIdentical,
            ),
            ..request("same.bin", "d", Some("basis"))
        },
    ];
    let fetched = client.fetch(&requests, |_| {});
    check_no_temporary_files(&work);
    let Ok(outcomes) = fetched else { return 0 };
    assert_eq!(outcomes.len(), requests.len());
    let fetched = outcomes
        .iter()
        .filter(|outcome| outcome.result.is_ok())
        .count();
    for (index, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.index, index);
        assert_eq!(outcome.remote_path, requests[index].remote_path);
        if let Ok(report) = &outcome.result {
            assert!(report.len <= SESSION_MAX_LEN);
            let written =
                std::fs::metadata(requests[index].destination.path()).expect("fetched file");
            assert_eq!(written.len(), report.len);
        }
    }

    let items = [
        PushItem::Directory {
            remote_path: remote("pushed-dir"),
            mode: 0o750,
        },
        PushItem::File {
            local: work.join("push-source"),
            remote_path: remote("pushed.bin"),
        },
        PushItem::Symlink {
            remote_path: remote("pushed-link"),
            target: "pushed.bin".into(),
        },
        PushItem::Remove {
            remote_path: remote("old.bin"),
        },
    ];
    let Ok(outcomes) = client.push(&items, |_| {}) else {
        return fetched;
    };
    assert_eq!(outcomes.len(), items.len());
    for (index, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.index, index);
        assert_eq!(outcome.remote_path, items[index].remote_path());
    }
    let _ = client.finish();
    fetched
        + outcomes
            .iter()
            .filter(|outcome| outcome.result.is_ok())
            .count()
}

fn check_no_temporary_files(work: &Path) {
    for entry in std::fs::read_dir(work).expect("listing the work directory") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            SESSION_FILES.contains(&name.as_ref()),
            "file {name:?} left in the session directory"
        );
    }
}

/// `ssh_command_parse`: `data` is an ssh command string, optionally followed by a NUL and
/// ssh_config text. Properties: quoting the words back gives the same words; a parsed command
/// has the words of its text, a non-empty destination host, and resolves (with and without the
/// config) to a target with a non-zero port.
pub fn ssh_command_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (command, config_text) = match text.split_once('\0') {
        Some((command, config)) => (command, Some(config)),
        None => (text, None),
    };
    if let Ok(words) = split_shell_words(command) {
        let quoted: Vec<String> = words
            .iter()
            .map(|word| format!("'{}'", word.replace('\'', "'\\''")))
            .collect();
        assert_eq!(split_shell_words(&quoted.join(" ")).as_ref(), Ok(&words));
    }
    let config = config_text.and_then(|text| SshConfig::parse(text, Path::new("fuzz_config")).ok());
    let Ok(parsed) = SshCommand::parse(command) else {
        return;
    };
    assert_eq!(parsed.text(), command);
    assert_eq!(Ok(parsed.words()), split_shell_words(command).as_deref());
    assert_eq!(parsed.program(), parsed.words()[0]);
    assert!(!parsed.destination_host().is_empty());
    let _ = parsed.peer();
    for config in [None, config.as_ref()] {
        if let Some(config) = config {
            let _ = config.lines_for_host(parsed.destination_host());
        }
        let target = parsed.resolve(config);
        assert_ne!(target.port, 0);
        assert_eq!(target.alias, parsed.destination_host());
        let _ = target.peer();
        let _ = target.check_in_process_support();
    }
}

/// `path_validate` (engine half): each line of `data`, and the whole of it, as a path from a
/// peer. Properties: an accepted relative path is not absolute, has no empty, `.` or `..`
/// component, no NUL and at most 4096 bytes, and stays below the directory it is joined to;
/// every other character, control characters included, is accepted (names are bytes, as in the
/// file system); `Roots::resolve` gives a root and such a path, and an absolute path it accepts
/// names that root plus that path.
pub fn relative_paths(data: &[u8]) {
    for candidate in std::iter::once(data).chain(data.split(|&b| b == b'\n')) {
        // The grammar: accepted exactly when these hold (any other byte is legal in a name,
        // UTF-8 or not).
        let grammatical = candidate.len() <= MAX_PATH_LEN
            && !candidate.starts_with(b"/")
            && !candidate.contains(&0)
            && (candidate.is_empty()
                || candidate
                    .split(|&b| b == b'/')
                    .all(|c| !matches!(c, b"" | b"." | b"..")));
        assert_eq!(
            RelativePath::from_bytes(candidate).is_ok(),
            grammatical,
            "grammar and RelativePath::from_bytes disagree on {candidate:?}"
        );
        if let Ok(path) = RelativePath::from_bytes(candidate) {
            relative_path_properties(candidate, &path);
            if let Ok(joined) = path.join("child") {
                relative_path_properties(joined.as_bytes(), &joined);
            }
        }
        let as_path = Path::new(OsStr::from_bytes(candidate));
        if !candidate.contains(&b'/') {
            let root = RelativePath::new("").expect("the empty path is the root");
            assert_eq!(
                root.join(as_path).ok(),
                RelativePath::from_bytes(candidate).ok(),
                "join on the root is from_bytes"
            );
        }
        if let Ok((root, relative)) = roots().resolve(as_path) {
            relative_path_properties(relative.as_bytes(), &relative);
            assert_eq!(root, roots_dir());
            if candidate.starts_with(b"/") {
                let expected = root.join(relative.as_path());
                let trimmed: PathBuf = as_path.components().collect();
                let expected: PathBuf = expected.components().collect();
                assert_eq!(trimmed, expected);
            }
        }
    }
}

fn roots_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::fs::canonicalize(std::env::temp_dir()).expect("temp dir"))
}

fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| Roots::new(vec![roots_dir().to_path_buf()]).expect("roots"))
}

fn relative_path_properties(bytes: &[u8], path: &RelativePath) {
    assert_eq!(path.as_bytes(), bytes);
    assert!(bytes.len() <= MAX_PATH_LEN);
    assert!(
        !bytes.starts_with(b"/"),
        "absolute path accepted: {bytes:?}"
    );
    assert!(!bytes.contains(&0), "NUL accepted: {bytes:?}");
    if bytes.is_empty() {
        assert_eq!(path.components().count(), 0);
        return;
    }
    for component in bytes.split(|&b| b == b'/') {
        assert!(
            !matches!(component, b"" | b"." | b".."),
            "component {component:?} accepted in {bytes:?}"
        );
    }
    assert_eq!(
        path.components()
            .map(OsStr::as_bytes)
            .collect::<Vec<_>>()
            .join(&b'/'),
        bytes
    );
    let text = Path::new(OsStr::from_bytes(bytes));
    let below = Path::new("/root-dir").join(text);
    assert!(below.starts_with("/root-dir"));
    assert!(text
        .components()
        .all(|component| matches!(component, Component::Normal(_))));
}

/// `sftp_reply_decode`: `data` is what an SFTP server sent. Decodes it packet by packet, then
/// runs a whole SFTP session against it.
pub fn sftp_reply_decode(data: &[u8]) {
    sftp_packets(data);
    sftp_session(data);
}

/// Reads SFTP packets until the end or an error. Properties: framing consumes exactly the
/// packets read, none beyond the packet limit; a decoded reply stays within its packet and
/// its limits (handles, names, extensions); a listed name that passes the check is one path
/// component.
pub fn sftp_packets(data: &[u8]) {
    use transfer_engine::sftp::wire::{
        check_listed_name, decode_reply, read_frame, Reply, MAX_EXTENSIONS, MAX_HANDLE, MAX_NAME,
        MAX_PACKET,
    };
    let mut reader = data;
    let mut packet = Vec::new();
    let mut consumed = 0;
    while read_frame(&mut reader, &mut packet).is_ok() {
        consumed += 4 + packet.len();
        assert_eq!(data.len() - reader.len(), consumed);
        assert!(!packet.is_empty() && packet.len() <= MAX_PACKET);
        let Ok(reply) = decode_reply(&packet) else {
            continue;
        };
        match reply {
            Reply::Version { extensions, .. } => {
                assert!(extensions.len() <= MAX_EXTENSIONS);
                for (name, value) in extensions {
                    assert!(name.len() <= MAX_NAME && value.len() <= MAX_NAME);
                }
            }
            Reply::Handle { handle, .. } => assert!(handle.len() <= MAX_HANDLE),
            Reply::Data { data, .. } => assert!(data.len() + 9 <= packet.len()),
            Reply::Name { entries, .. } => {
                assert!(entries.len() * 12 + 9 <= packet.len());
                for entry in entries {
                    assert!(entry.name.len() <= MAX_NAME);
                    if check_listed_name(entry.name).is_ok() {
                        assert!(!entry.name.is_empty());
                        assert!(!entry.name.contains(&b'/') && !entry.name.contains(&0));
                    }
                }
            }
            Reply::Status { message, .. } => assert!(message.len() < packet.len()),
            Reply::Attrs { .. } | Reply::ExtendedReply { .. } => {}
        }
    }
}

/// The files that may be in the SFTP session's directory: its inputs, the fetched files and
/// their partial copies.
const SFTP_SESSION_FILES: [&str; 8] = [
    "basis",
    "push-source",
    "a",
    "b",
    "c",
    ".a.barsync-partial",
    ".b.barsync-partial",
    ".c.barsync-partial",
];

/// The SFTP session of [`run_sftp_session`] against server bytes `data`.
pub fn sftp_session(data: &[u8]) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir("sftp"));
    run_sftp_session(
        Box::new(io::Cursor::new(data.to_vec())),
        Box::new(io::sink()),
        dir,
        Path::new("/srv/fuzz"),
    );
}

/// Runs an SFTP session over `input`/`output` (no shell on the host: files are checked by size
/// and mtime), with the local files in `dir` (reset first) and the remote files under
/// `remote_root`: a recursive listing, three fetches (new, resumed from a partial copy, with a
/// basis to link), a push of four items. Used with a real `sftp-server` to make the seed corpus
/// (`examples/sftp_seeds.rs`). Properties: listed entries are valid; every fetch and push
/// reports each of its files once; a fetched file exists with the reported length, within the
/// limit; no file is left but the expected ones. Returns how many of the seven requests
/// succeeded.
pub fn run_sftp_session(
    input: Box<dyn Read + Send>,
    output: Box<dyn Write + Send>,
    dir: &Path,
    remote_root: &Path,
) -> usize {
    use transfer_engine::confine::Destination;
    use transfer_engine::sftp::{SftpFile, SftpSource};
    let work = dir.join("w");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("creating the work directory");
    std::fs::write(work.join("basis"), session_basis()).expect("writing the basis");
    std::fs::write(work.join("push-source"), session_push_source()).expect("writing");
    // A partial copy to resume from.
    std::fs::write(work.join(".b.barsync-partial"), &session_basis()[..3000]).expect("writing");

    let Ok(mut source) = SftpSource::over_stream(input, output, "fuzz-peer".into(), None) else {
        return 0;
    };
    if let Ok(entries) = source.list(remote_root, true) {
        for entry in entries {
            relative_path_properties(entry.path.as_bytes(), &entry.path);
            assert!(entry.mode <= 0o7777);
            assert_eq!(entry.target.is_some(), entry.kind == EntryKind::Symlink);
        }
    }
    let remotes = [
        remote_root.join("new.bin"),
        remote_root.join("changed.bin"),
        remote_root.join("same.bin"),
    ];
    let destinations: Vec<Destination> = ["a", "b", "c"]
        .iter()
        .map(|name| Destination::trusted(&work.join(name)).expect("a destination"))
        .collect();
    let partials: Vec<std::ffi::OsString> = ["a", "b", "c"]
        .iter()
        .map(|name| format!(".{name}.barsync-partial").into())
        .collect();
    let basis = work.join("basis");
    let files: Vec<SftpFile<'_>> = (0..3)
        .map(|i| SftpFile {
            remote: &remotes[i],
            destination: &destinations[i],
            partial: &partials[i],
            max_len: Some(SESSION_MAX_LEN),
            link_basis: (i == 2).then_some(basis.as_path()),
        })
        .collect();
    let mut reported = [0usize; 3];
    let mut fetched = 0;
    source.fetch_many(&files, &mut |index, result| {
        reported[index] += 1;
        if let Ok(report) = result {
            fetched += 1;
            assert!(report.len <= SESSION_MAX_LEN);
            let written = std::fs::metadata(destinations[index].path()).expect("fetched file");
            assert_eq!(written.len(), report.len);
        }
    });
    assert_eq!(reported, [1, 1, 1], "each file reported once");
    check_only(&work, &SFTP_SESSION_FILES);

    let items = [
        PushItem::Directory {
            remote_path: remote_root.join("pushed-dir"),
            mode: 0o750,
        },
        PushItem::File {
            local: work.join("push-source"),
            remote_path: remote_root.join("pushed.bin"),
        },
        PushItem::Symlink {
            remote_path: remote_root.join("pushed-link"),
            target: "pushed.bin".into(),
        },
        PushItem::Remove {
            remote_path: remote_root.join("old.bin"),
        },
    ];
    let Ok(outcomes) = source.apply_items(&items, &mut |_| {}) else {
        return fetched;
    };
    let mut seen = [0usize; 4];
    for outcome in &outcomes {
        seen[outcome.index] += 1;
        assert_eq!(outcome.remote_path, items[outcome.index].remote_path());
    }
    assert_eq!(seen, [1, 1, 1, 1], "each item reported once");
    let _ = source.close();
    fetched + outcomes.iter().filter(|o| o.result.is_ok()).count()
}

/// Fails when `work` holds a file not named in `allowed`.
fn check_only(work: &Path, allowed: &[&str]) {
    for entry in std::fs::read_dir(work).expect("listing the work directory") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            allowed.contains(&name.as_ref()),
            "file {name:?} left in the session directory"
        );
    }
}
