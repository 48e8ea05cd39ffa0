//! The SFTP client: one session over any byte stream (the `sftp` subsystem of the user's ssh,
//! or of libssh2 when no ssh program exists), its INIT/VERSION handshake and extensions, the
//! request ids, and the calls the fallback needs, one round trip each. Pipelined work (many
//! requests in flight: `download.rs`, listings, uploads) uses [`SftpClient::send`] and
//! [`SftpClient::receive`] directly and matches replies by id.
//!
//! A failure of the session (the stream broke or closed, a reply that does not parse, a reply
//! to nothing asked) is an [`SftpError`] naming the peer, and every later call fails with it at
//! once; a server's refusal of one request ([`SftpError::Status`]) concerns that request only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};

use super::wire::{
    self, decode_reply, encode, encode_init, read_frame, status, Attrs, FrameError, Reply, Request,
    WireError,
};

/// Why an SFTP call failed.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The server refused or failed this one request; the session goes on.
    #[error("{}", status_text(*.code, .message))]
    Status {
        /// The draft's status code (one of [`super::wire::status`]).
        code: u32,
        /// The server's message.
        message: String,
    },
    /// The session cannot go on.
    #[error("{peer}: SFTP: {reason}")]
    Session {
        /// The server.
        peer: String,
        /// What broke.
        reason: String,
    },
}

impl SftpError {
    /// Whether the session is unusable after this error (anything but a refusal).
    pub fn is_session(&self) -> bool {
        matches!(self, SftpError::Session { .. })
    }

    /// The kind of per-file failure this is: a missing file, a refusal, another failure of
    /// the server's, or the session lost.
    pub fn file_kind(&self) -> crate::file_error::FileErrorKind {
        use crate::file_error::FileErrorKind;
        match self {
            SftpError::Status { code, .. } => match *code {
                super::wire::status::NO_SUCH_FILE => FileErrorKind::Missing,
                super::wire::status::PERMISSION_DENIED => FileErrorKind::Refused,
                _ => FileErrorKind::Remote,
            },
            SftpError::Session { .. } => FileErrorKind::SessionLost,
        }
    }

    /// The status code of a refusal.
    pub fn status_code(&self) -> Option<u32> {
        match self {
            SftpError::Status { code, .. } => Some(*code),
            SftpError::Session { .. } => None,
        }
    }
}

/// A status as messages show it: the server's words, else the draft's name for the code.
fn status_text(code: u32, message: &str) -> String {
    if !message.is_empty() {
        return message.to_owned();
    }
    match code {
        status::OK => "OK".into(),
        status::EOF => "end of file".into(),
        status::NO_SUCH_FILE => "No such file".into(),
        status::PERMISSION_DENIED => "Permission denied".into(),
        status::FAILURE => "Failure".into(),
        status::BAD_MESSAGE => "Bad message".into(),
        status::OP_UNSUPPORTED => "Operation unsupported".into(),
        other => format!("error status {other}"),
    }
}

/// A name from a directory listing, with the attributes the server sent with it.
pub type Listed = (Vec<u8>, Attrs);

/// What the server announced in its VERSION reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `posix-rename@openssh.com`: a rename that replaces its target.
    pub posix_rename: bool,
    /// `fsync@openssh.com`.
    pub fsync: bool,
    /// `limits@openssh.com`.
    pub limits: bool,
    /// Any `@openssh.com` extension: the server is OpenSSH's (or speaks as it does), which takes
    /// SYMLINK's paths in the reverse of the draft's order.
    pub openssh: bool,
}

/// Sizes of reads and writes the session uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes asked by one READ.
    pub read: u32,
    /// Bytes sent by one WRITE.
    pub write: u32,
}

/// What one READ or WRITE moves when the server does not say (`limits@openssh.com`):
/// OpenSSH's client's default, which every server accepts.
const DEFAULT_CHUNK: u32 = 32 * 1024;
/// The most one READ or WRITE moves, whatever the server allows: the best of 32, 64, 128 and
/// 255 KiB measured through OpenSSH here (docs/engine.md, "SFTP fallback").
pub const MAX_CHUNK: u32 = 255 * 1024;

/// Requests in flight at once in [`SftpClient::pipeline`] (listings, attribute updates).
pub const PIPELINE_WINDOW: usize = 64;

/// I/O and buffers, apart from the rest so that a reply can borrow them while the caller
/// reads the peer's name.
struct Link {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: BufWriter<Box<dyn Write + Send>>,
    /// The last packet received.
    packet: Vec<u8>,
    /// Requests are encoded here, then written.
    out: Vec<u8>,
    /// Bytes written but not flushed yet.
    unflushed: bool,
}

/// One SFTP session.
pub struct SftpClient {
    link: Link,
    peer: String,
    next_id: u32,
    extensions: Extensions,
    limits: Limits,
    /// Set by the first session error; every later call fails with it.
    broken: RefCell<Option<String>>,
}

impl SftpClient {
    /// Sends INIT, reads VERSION (version 3 at least), and asks `limits@openssh.com` when the
    /// server offers it. `peer` names the server in every error.
    pub fn start(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        peer: String,
    ) -> Result<SftpClient, SftpError> {
        let mut client = SftpClient {
            link: Link {
                reader: BufReader::with_capacity(256 * 1024, reader),
                writer: BufWriter::with_capacity(256 * 1024, writer),
                packet: Vec::new(),
                out: Vec::new(),
                unflushed: false,
            },
            peer,
            next_id: 1,
            extensions: Extensions::default(),
            limits: Limits {
                read: DEFAULT_CHUNK,
                write: DEFAULT_CHUNK,
            },
            broken: RefCell::new(None),
        };
        client.link.out.clear();
        encode_init(&mut client.link.out);
        let init = std::mem::take(&mut client.link.out);
        client.write_bytes(&init)?;
        client.link.out = init;
        let extensions = match client.receive()? {
            Reply::Version {
                version,
                extensions,
            } if version >= wire::VERSION => {
                let mut found = Extensions::default();
                for (name, _) in extensions {
                    match name {
                        b"posix-rename@openssh.com" => found.posix_rename = true,
                        b"fsync@openssh.com" => found.fsync = true,
                        b"limits@openssh.com" => found.limits = true,
                        _ => {}
                    }
                    if name.ends_with(b"@openssh.com") {
                        found.openssh = true;
                    }
                }
                Ok(found)
            }
            Reply::Version { version, .. } => Err(format!(
                "the server speaks SFTP version {version}, barsync needs version 3"
            )),
            other => Err(format!(
                "the server answered INIT with {} instead of VERSION",
                other.kind_name()
            )),
        };
        client.extensions = extensions.map_err(|reason| client.fail(reason))?;
        if client.extensions.limits {
            client.limits = client.ask_limits()?;
        }
        Ok(client)
    }

    /// The server, as errors name it.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// What the server announced.
    pub fn extensions(&self) -> Extensions {
        self.extensions
    }

    /// The read and write sizes in use.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A session error naming the peer; the session is unusable from now on.
    pub fn fail(&self, reason: impl Into<String>) -> SftpError {
        let reason = reason.into();
        let mut broken = self.broken.borrow_mut();
        if broken.is_none() {
            *broken = Some(reason.clone());
        }
        SftpError::Session {
            peer: self.peer.clone(),
            reason,
        }
    }

    /// The error that broke the session, if one did.
    pub fn session_error(&self) -> Option<SftpError> {
        self.check_usable().err()
    }

    fn check_usable(&self) -> Result<(), SftpError> {
        match &*self.broken.borrow() {
            Some(reason) => Err(SftpError::Session {
                peer: self.peer.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), SftpError> {
        self.check_usable()?;
        if let Err(e) = self.link.writer.write_all(bytes) {
            return Err(self.fail(format!("sending a request: {e}")));
        }
        self.link.unflushed = true;
        Ok(())
    }

    /// Queues `request` (sent at the latest by the next [`SftpClient::receive`]); its id.
    pub fn send(&mut self, request: &Request<'_>) -> Result<u32, SftpError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut out = std::mem::take(&mut self.link.out);
        out.clear();
        encode(&mut out, id, request);
        let sent = self.write_bytes(&out);
        self.link.out = out;
        sent.map(|()| id)
    }

    /// Sends what is queued.
    pub fn flush(&mut self) -> Result<(), SftpError> {
        self.check_usable()?;
        if self.link.unflushed {
            if let Err(e) = self.link.writer.flush() {
                return Err(self.fail(format!("sending requests: {e}")));
            }
            self.link.unflushed = false;
        }
        Ok(())
    }

    /// Sends what is queued, then reads the next packet (see [`SftpClient::reply`]).
    pub fn read_packet(&mut self) -> Result<(), SftpError> {
        // Requests are sent only when the next reply is not already here in full: replies
        // that came together are answered by one write of many requests (fewer, larger SSH
        // packets), and nothing waits on a request still in the buffer.
        if !whole_packet_buffered(self.link.reader.buffer()) {
            self.flush()?;
        }
        let reason = match read_frame(&mut self.link.reader, &mut self.link.packet) {
            Ok(()) => return Ok(()),
            Err(FrameError::Closed) => "the server closed the connection".to_owned(),
            Err(FrameError::Io(error)) => format!("reading a reply: {error}"),
            Err(FrameError::Wire(error)) => format!("broken reply: {error}"),
        };
        Err(self.fail(reason))
    }

    /// The last packet read, decoded. (A shared borrow: the caller may still call
    /// [`SftpClient::fail`] while it holds the reply.)
    pub fn reply(&self) -> Result<Reply<'_>, SftpError> {
        decode_reply(&self.link.packet).map_err(|error| self.fail(format!("broken reply: {error}")))
    }

    /// Sends what is queued, then reads and decodes the next reply.
    pub fn receive(&mut self) -> Result<Reply<'_>, SftpError> {
        self.read_packet()?;
        self.reply()
    }

    /// A reply that answers a request it should not, or with a type it should not have.
    pub fn unexpected(&self, what: String) -> SftpError {
        self.fail(format!("unexpected reply: {what}"))
    }

    /// Sends `request` alone and reads its reply (nothing else may be in flight).
    fn call(&mut self, request: &Request<'_>) -> Result<Reply<'_>, SftpError> {
        let id = self.send(request)?;
        self.read_packet()?;
        let reply = self.reply()?;
        if reply.id() != Some(id) {
            return Err(self.unexpected(format!(
                "an answer to request {:?} while waiting for {id}",
                reply.id()
            )));
        }
        Ok(reply)
    }

    /// A call answered by a STATUS: `Ok` for OK, the refusal otherwise.
    fn call_status(&mut self, request: &Request<'_>) -> Result<(), SftpError> {
        let result = match self.call(request)? {
            Reply::Status { code, message, .. } => status_result(code, message),
            other => Err(other.kind_name()),
        };
        result.map_err(|kind| self.unexpected(format!("{kind} instead of STATUS")))?
    }

    fn call_attrs(&mut self, request: &Request<'_>) -> Result<Attrs, SftpError> {
        let result = match self.call(request)? {
            Reply::Attrs { attrs, .. } => Ok(Ok(attrs)),
            Reply::Status { code, message, .. } => Ok(status_error(code, message)),
            other => Err(other.kind_name()),
        };
        result.map_err(|kind| self.unexpected(format!("{kind} instead of ATTRS")))?
    }

    fn call_handle(&mut self, request: &Request<'_>) -> Result<Vec<u8>, SftpError> {
        let result = match self.call(request)? {
            Reply::Handle { handle, .. } => Ok(Ok(handle.to_vec())),
            Reply::Status { code, message, .. } => Ok(status_error(code, message)),
            other => Err(other.kind_name()),
        };
        result.map_err(|kind| self.unexpected(format!("{kind} instead of HANDLE")))?
    }

    /// A call answered by one name (READLINK, REALPATH).
    fn call_one_name(&mut self, request: &Request<'_>) -> Result<Vec<u8>, SftpError> {
        let result = match self.call(request)? {
            Reply::Name { entries, .. } if entries.len() == 1 => Ok(Ok(entries[0].name.to_vec())),
            Reply::Name { entries, .. } => Err(format!("NAME with {} names", entries.len())),
            Reply::Status { code, message, .. } => Ok(status_error(code, message)),
            other => Err(other.kind_name().to_owned()),
        };
        result.map_err(|kind| self.unexpected(format!("{kind} instead of one NAME")))?
    }

    /// A path's attributes, not following a symlink.
    pub fn lstat(&mut self, path: &[u8]) -> Result<Attrs, SftpError> {
        self.call_attrs(&Request::Lstat { path })
    }

    /// A path's attributes, following symlinks.
    pub fn stat(&mut self, path: &[u8]) -> Result<Attrs, SftpError> {
        self.call_attrs(&Request::Stat { path })
    }

    /// An open file's attributes.
    pub fn fstat(&mut self, handle: &[u8]) -> Result<Attrs, SftpError> {
        self.call_attrs(&Request::Fstat { handle })
    }

    /// Opens a file (`flags` from [`wire::open_flags`]); `attrs` apply when it is created.
    pub fn open(&mut self, path: &[u8], flags: u32, attrs: &Attrs) -> Result<Vec<u8>, SftpError> {
        self.call_handle(&Request::Open { path, flags, attrs })
    }

    /// Opens a directory for [`SftpClient::readdir`].
    pub fn opendir(&mut self, path: &[u8]) -> Result<Vec<u8>, SftpError> {
        self.call_handle(&Request::Opendir { path })
    }

    /// The next names of an open directory (each checked: one path component), `None` at
    /// its end.
    pub fn readdir(&mut self, handle: &[u8]) -> Result<Option<Vec<Listed>>, SftpError> {
        let result = match self.call(&Request::Readdir { handle })? {
            Reply::Name { entries, .. } => entries
                .iter()
                .map(|entry| {
                    wire::check_listed_name(entry.name)?;
                    Ok((entry.name.to_vec(), entry.attrs))
                })
                .collect::<Result<Vec<_>, WireError>>()
                .map(|names| Ok(Some(names)))
                .map_err(|e| format!("broken reply: {e}")),
            Reply::Status {
                code: status::EOF, ..
            } => Ok(Ok(None)),
            Reply::Status { code, message, .. } => Ok(status_error(code, message)),
            other => Err(format!(
                "unexpected reply: {} instead of NAME",
                other.kind_name()
            )),
        };
        result.map_err(|reason| self.fail(reason))?
    }

    /// Closes a handle.
    pub fn close(&mut self, handle: &[u8]) -> Result<(), SftpError> {
        self.call_status(&Request::Close { handle })
    }

    /// Sets a path's attributes (those that are `Some`).
    pub fn setstat(&mut self, path: &[u8], attrs: &Attrs) -> Result<(), SftpError> {
        self.call_status(&Request::Setstat { path, attrs })
    }

    /// Sets an open file's attributes (those that are `Some`).
    pub fn fsetstat(&mut self, handle: &[u8], attrs: &Attrs) -> Result<(), SftpError> {
        self.call_status(&Request::Fsetstat { handle, attrs })
    }

    /// Removes a file (or a symlink, not what it points at).
    pub fn remove(&mut self, path: &[u8]) -> Result<(), SftpError> {
        self.call_status(&Request::Remove { path })
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, path: &[u8], attrs: &Attrs) -> Result<(), SftpError> {
        self.call_status(&Request::Mkdir { path, attrs })
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, path: &[u8]) -> Result<(), SftpError> {
        self.call_status(&Request::Rmdir { path })
    }

    /// A symlink's target.
    pub fn readlink(&mut self, path: &[u8]) -> Result<Vec<u8>, SftpError> {
        self.call_one_name(&Request::Readlink { path })
    }

    /// A path's canonical form, on the server.
    pub fn realpath(&mut self, path: &[u8]) -> Result<Vec<u8>, SftpError> {
        self.call_one_name(&Request::Realpath { path })
    }

    /// Renames `from` to `to`, replacing `to` when the server offers
    /// `posix-rename@openssh.com`; a plain SFTP v3 RENAME otherwise, which fails when `to`
    /// exists.
    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), SftpError> {
        if self.extensions.posix_rename {
            self.call_status(&Request::Extended {
                name: "posix-rename@openssh.com",
                strings: &[from, to],
            })
        } else {
            self.call_status(&Request::Rename { from, to })
        }
    }

    /// Creates the symlink `link` pointing at `target`. OpenSSH's server reads SYMLINK's
    /// paths in the reverse of the draft's order (target first); servers that announce
    /// OpenSSH's extensions get that order, the others the draft's.
    pub fn symlink(&mut self, target: &[u8], link: &[u8]) -> Result<(), SftpError> {
        let (first, second) = if self.extensions.openssh {
            (target, link)
        } else {
            (link, target)
        };
        self.call_status(&Request::Symlink { first, second })
    }

    /// `fsync@openssh.com` on an open file; `Ok(false)` when the server does not offer it.
    pub fn fsync(&mut self, handle: &[u8]) -> Result<bool, SftpError> {
        if !self.extensions.fsync {
            return Ok(false);
        }
        self.call_status(&Request::Extended {
            name: "fsync@openssh.com",
            strings: &[handle],
        })
        .map(|()| true)
    }

    /// Sends `request(i)` for each `i` below `count`, up to [`PIPELINE_WINDOW`] in flight, and
    /// hands each reply to `each(i, reply)`, in the order they come. An `Err` from `each` (a
    /// reply of the wrong type) ends the session.
    pub fn pipeline<'r>(
        &mut self,
        count: usize,
        request: &mut dyn FnMut(usize) -> Request<'r>,
        each: &mut dyn FnMut(usize, Reply<'_>) -> Result<(), String>,
    ) -> Result<(), SftpError> {
        let mut in_flight: HashMap<u32, usize> = HashMap::new();
        let mut next = 0;
        while next < count || !in_flight.is_empty() {
            while next < count && in_flight.len() < PIPELINE_WINDOW {
                let id = self.send(&request(next))?;
                in_flight.insert(id, next);
                next += 1;
            }
            self.read_packet()?;
            let reply = self.reply()?;
            let Some(index) = reply.id().and_then(|id| in_flight.remove(&id)) else {
                return Err(
                    self.unexpected(format!("an answer to request {:?}, not asked", reply.id()))
                );
            };
            if let Err(reason) = each(index, reply) {
                return Err(self.fail(format!("unexpected reply: {reason}")));
            }
        }
        Ok(())
    }

    /// Asks `limits@openssh.com` for the largest read and write, and keeps them within
    /// [`MAX_CHUNK`] (a server that says 0 or an absurdly small size gets the default).
    fn ask_limits(&mut self) -> Result<Limits, SftpError> {
        let result = match self.call(&Request::Extended {
            name: "limits@openssh.com",
            strings: &[],
        })? {
            Reply::ExtendedReply { data, .. } if data.len() >= 32 => {
                let field =
                    |at: usize| u64::from_be_bytes(data[at..at + 8].try_into().expect("8 bytes"));
                let pick = |value: u64| {
                    if value < 1024 {
                        DEFAULT_CHUNK
                    } else {
                        value.min(u64::from(MAX_CHUNK)) as u32
                    }
                };
                // max-packet-length, max-read-length, max-write-length, max-open-handles.
                Ok(Limits {
                    read: pick(field(8)),
                    write: pick(field(16)),
                })
            }
            Reply::Status { .. } => Ok(Limits {
                read: DEFAULT_CHUNK,
                write: DEFAULT_CHUNK,
            }),
            other => Err(other.kind_name()),
        };
        result.map_err(|kind| self.unexpected(format!("{kind} to limits@openssh.com")))
    }
}

/// Whether `buffered` starts with a whole packet (its length and all its bytes).
fn whole_packet_buffered(buffered: &[u8]) -> bool {
    match buffered.get(..4) {
        Some(length) => {
            let len = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
            buffered.len() - 4 >= len
        }
        None => false,
    }
}

/// A STATUS as a result: OK is `Ok`, anything else the refusal.
pub fn status_result(code: u32, message: &[u8]) -> Result<Result<(), SftpError>, &'static str> {
    Ok(if code == status::OK {
        Ok(())
    } else {
        status_error(code, message)
    })
}

/// A refusal from a STATUS.
pub fn status_error<T>(code: u32, message: &[u8]) -> Result<T, SftpError> {
    Err(SftpError::Status {
        code,
        message: crate::names::shown_bytes(message),
    })
}
