//! The receiving side of pushes in `barsync serve`: files, directories, symlinks and removals
//! sent by a client, written only below the server's roots.
//!
//! Every write goes through a handle on the parent directory reached with
//! [`crate::confine::open_below`] (no symlink followed), then `openat`/`mkdirat`/`symlinkat`/
//! `unlinkat`/`renameat` by name inside it. For a pushed file the server answers the `PushFile`
//! header at once with the signature of its current copy (the basis), queues it, and receives
//! its delta when the client sends it; headers may run ahead of deltas (the client bounds how
//! far), so a batch of small files costs no round trip per file.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{mkdirat, openat, statat, symlinkat, AtFlags, FileType, Mode, OFlags};

use super::client::MAX_IN_FLIGHT;
use super::frame::{FrameReader, FrameWriter, Kind};
use super::literal::LiteralDecoder;
use super::receiver::{receive_file, send_signature, Incoming};
use super::sender::send_request_error;
use super::ProtocolError;
use crate::confine::{open_below, RelativePath, Roots};
use crate::fs::{remove_at as remove_entry, MappedFile, TempFile};
use crate::names::shown_path;
use crate::signature::{signature, signature_of_map, Signature, SignatureOptions};

/// Pushed files whose signature was sent but whose delta has not arrived yet (each holds a
/// directory handle and a basis map). A client pushes at most [`MAX_IN_FLIGHT`] ahead.
pub const MAX_QUEUED_PUSHES: usize = 256;
const _: () = assert!(
    MAX_IN_FLIGHT <= MAX_QUEUED_PUSHES,
    "a client's push window fits the server's queue"
);

struct QueuedPush {
    id: u32,
    label: String,
    dir: OwnedFd,
    dir_path: PathBuf,
    name: OsString,
    basis: Option<MappedFile>,
    signature: Signature,
    size: u64,
}

/// Push state of one session.
#[derive(Default)]
pub(super) struct PushReceiver {
    queue: VecDeque<QueuedPush>,
    literals: LiteralDecoder,
}

/// The parent directory (as a handle) and the name of a path from the client.
fn parent_and_name(roots: &Roots, path: &Path) -> Result<(OwnedFd, PathBuf, OsString), String> {
    let (root, relative) = roots.resolve(path).map_err(|e| e.to_string())?;
    let shown = shown_path(path);
    let Some(name) = relative.components().last().map(ToOwned::to_owned) else {
        return Err(format!("refused path {shown}: it names a root itself"));
    };
    let parent = relative
        .as_path()
        .parent()
        .map_or_else(
            || Ok(RelativePath::new("").expect("empty is valid")),
            RelativePath::from_path,
        )
        .map_err(|e| e.to_string())?;
    let dir =
        open_below(root, &parent, true).map_err(|e| format!("{shown}: parent directory: {e}"))?;
    Ok((dir, root.join(parent.as_path()), name))
}

fn send_done<W: Write>(
    writer: &mut FrameWriter<W>,
    id: u32,
    result: Result<(), String>,
) -> Result<(), ProtocolError> {
    let (ok, message) = match result {
        Ok(()) => (1, String::new()),
        Err(message) => (0, message),
    };
    writer.start().u32(id).u8(ok).str(&message);
    Ok(writer.send(Kind::PushDone)?)
}

impl PushReceiver {
    /// A `PushFile` header: answers with the signature of the current copy, or a refusal.
    pub fn file_header<W: Write>(
        &mut self,
        writer: &mut FrameWriter<W>,
        roots: &Roots,
        id: u32,
        path: &Path,
        size: u64,
    ) -> Result<(), ProtocolError> {
        if self.queue.len() >= MAX_QUEUED_PUSHES {
            return Err(ProtocolError::Malformed(format!(
                "more than {MAX_QUEUED_PUSHES} pushed files ahead of their data"
            )));
        }
        let (dir, dir_path, name) = match parent_and_name(roots, path) {
            Ok(found) => found,
            Err(message) => return send_request_error(writer, id, &message, None),
        };
        let basis = match openat(
            &dir,
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let file = std::fs::File::from(fd);
                match file.metadata() {
                    Ok(meta) if meta.is_file() => MappedFile::from_file(&file).ok(),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        let signature = match &basis {
            Some(map) => signature_of_map(map, &SignatureOptions::default()),
            None => signature(&[], &SignatureOptions::default()),
        };
        let mut encoded = Vec::new();
        signature.encode(&mut encoded);
        writer.start().u32(id).u64(encoded.len() as u64);
        writer.send(Kind::PushSignature)?;
        send_signature(writer, id, &encoded)?;
        let label = shown_path(path);
        self.queue.push_back(QueuedPush {
            id,
            label,
            dir,
            dir_path,
            name,
            basis,
            signature,
            size,
        });
        Ok(())
    }

    /// The first frame of a pushed file's data (already read): receives the whole file.
    pub fn file_data<R: Read, W: Write>(
        &mut self,
        reader: &mut FrameReader<R>,
        writer: &mut FrameWriter<W>,
        id: u32,
    ) -> Result<(), ProtocolError> {
        let Some(push) = self.queue.pop_front() else {
            return Err(ProtocolError::Malformed(format!(
                "data for request {id}, which was not announced"
            )));
        };
        if push.id != id {
            return Err(ProtocolError::Malformed(format!(
                "data for request {id} while request {} was next",
                push.id
            )));
        }
        reader.replay_last();
        let incoming = Incoming {
            id,
            label: &push.label,
            peer: "client",
            basis: push.basis.as_deref().unwrap_or(&[]),
            basis_map: push.basis.as_ref(),
            signature: &push.signature,
            max_len: Some(push.size),
            part: false,
            mode_mask: 0o7777,
        };
        let make_temp = || {
            TempFile::in_directory(
                push.dir.as_fd().try_clone_to_owned()?,
                push.dir_path.clone(),
                &push.name,
            )
        };
        let result = receive_file(reader, &incoming, make_temp, &mut self.literals, None)?;
        send_done(writer, id, result.map(drop).map_err(|e| e.detail))
    }

    /// Answers a directory, symlink or removal request with a refusal, doing nothing.
    pub fn refuse<W: Write>(
        writer: &mut FrameWriter<W>,
        id: u32,
        message: String,
    ) -> Result<(), ProtocolError> {
        send_done(writer, id, Err(message))
    }

    /// `MakeDirectory`: creates the directory (replacing a file or symlink of that name).
    pub fn make_directory<W: Write>(
        writer: &mut FrameWriter<W>,
        roots: &Roots,
        id: u32,
        path: &Path,
        mode: u32,
    ) -> Result<(), ProtocolError> {
        let shown = shown_path(path);
        let result = parent_and_name(roots, path).and_then(|(dir, _, name)| {
            match statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                    return Ok(())
                }
                Ok(_) => remove_entry(&dir, &name).map_err(|e| format!("{shown}: {e}"))?,
                Err(_) => {}
            }
            mkdirat(&dir, &name, Mode::from_raw_mode(mode & 0o7777))
                .map_err(|e| format!("{shown}: {}", std::io::Error::from(e)))
        });
        send_done(writer, id, result)
    }

    /// `MakeSymlink`: creates the symlink as given (it is never followed by the server).
    pub fn make_symlink<W: Write>(
        writer: &mut FrameWriter<W>,
        roots: &Roots,
        id: u32,
        path: &Path,
        target: &Path,
    ) -> Result<(), ProtocolError> {
        let shown = shown_path(path);
        let result = parent_and_name(roots, path).and_then(|(dir, _, name)| {
            if statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                remove_entry(&dir, &name).map_err(|e| format!("{shown}: {e}"))?;
            }
            symlinkat(target, &dir, &name)
                .map_err(|e| format!("{shown}: {}", std::io::Error::from(e)))
        });
        send_done(writer, id, result)
    }

    /// `Remove`: removes a file, symlink or whole directory below a root.
    pub fn remove<W: Write>(
        writer: &mut FrameWriter<W>,
        roots: &Roots,
        id: u32,
        path: &Path,
    ) -> Result<(), ProtocolError> {
        let result = parent_and_name(roots, path).and_then(|(dir, _, name)| {
            remove_entry(&dir, &name).map_err(|e| format!("{}: {e}", shown_path(path)))
        });
        send_done(writer, id, result)
    }
}
