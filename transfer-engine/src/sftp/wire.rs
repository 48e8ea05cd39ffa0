//! SFTP version 3 packets (draft-ietf-secsh-filexfer-02) and their framing: encoding the
//! requests barsync sends, decoding the replies it accepts. Pure bytes, no I/O but
//! [`read_frame`].
//!
//! Everything that comes from the server is checked before it is used: a packet is at most
//! [`MAX_PACKET`] bytes (its length is refused before anything is allocated), every string is
//! bounded by the bytes present and by a limit of its kind ([`MAX_HANDLE`], [`MAX_NAME`]), a
//! count of names or extensions cannot promise more entries than the bytes could hold, and
//! nothing panics on any input (the `sftp_reply_decode` fuzz target runs [`decode_reply`]).
//! A name in a directory listing is a single component: empty names and names holding `/` or
//! NUL are refused (`.` and `..` are passed on for the caller to skip). Bytes after a reply's
//! last field are ignored, as OpenSSH's client does.

use std::io::{self, Read};

/// The protocol version barsync speaks.
pub const VERSION: u32 = 3;
/// The largest packet accepted from the server (type byte and payload; OpenSSH's own limit is
/// 256 KiB): larger lengths are refused before anything is allocated.
pub const MAX_PACKET: usize = 256 * 1024 + 1024;
/// The largest handle accepted (the draft's limit).
pub const MAX_HANDLE: usize = 256;
/// The largest name or path accepted in a reply (`PATH_MAX`).
pub const MAX_NAME: usize = 4096;
/// The most extensions a VERSION reply may announce.
pub const MAX_EXTENSIONS: usize = 64;

/// Request and reply types.
pub mod kind {
    /// `SSH_FXP_INIT`.
    pub const INIT: u8 = 1;
    /// `SSH_FXP_VERSION`.
    pub const VERSION: u8 = 2;
    /// `SSH_FXP_OPEN`.
    pub const OPEN: u8 = 3;
    /// `SSH_FXP_CLOSE`.
    pub const CLOSE: u8 = 4;
    /// `SSH_FXP_READ`.
    pub const READ: u8 = 5;
    /// `SSH_FXP_WRITE`.
    pub const WRITE: u8 = 6;
    /// `SSH_FXP_LSTAT`.
    pub const LSTAT: u8 = 7;
    /// `SSH_FXP_FSTAT`.
    pub const FSTAT: u8 = 8;
    /// `SSH_FXP_SETSTAT`.
    pub const SETSTAT: u8 = 9;
    /// `SSH_FXP_FSETSTAT`.
    pub const FSETSTAT: u8 = 10;
    /// `SSH_FXP_OPENDIR`.
    pub const OPENDIR: u8 = 11;
    /// `SSH_FXP_READDIR`.
    pub const READDIR: u8 = 12;
    /// `SSH_FXP_REMOVE`.
    pub const REMOVE: u8 = 13;
    /// `SSH_FXP_MKDIR`.
    pub const MKDIR: u8 = 14;
    /// `SSH_FXP_RMDIR`.
    pub const RMDIR: u8 = 15;
    /// `SSH_FXP_REALPATH`.
    pub const REALPATH: u8 = 16;
    /// `SSH_FXP_STAT`.
    pub const STAT: u8 = 17;
    /// `SSH_FXP_RENAME`.
    pub const RENAME: u8 = 18;
    /// `SSH_FXP_READLINK`.
    pub const READLINK: u8 = 19;
    /// `SSH_FXP_SYMLINK`.
    pub const SYMLINK: u8 = 20;
    /// `SSH_FXP_STATUS`.
    pub const STATUS: u8 = 101;
    /// `SSH_FXP_HANDLE`.
    pub const HANDLE: u8 = 102;
    /// `SSH_FXP_DATA`.
    pub const DATA: u8 = 103;
    /// `SSH_FXP_NAME`.
    pub const NAME: u8 = 104;
    /// `SSH_FXP_ATTRS`.
    pub const ATTRS: u8 = 105;
    /// `SSH_FXP_EXTENDED`.
    pub const EXTENDED: u8 = 200;
    /// `SSH_FXP_EXTENDED_REPLY`.
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Status codes.
pub mod status {
    /// `SSH_FX_OK`.
    pub const OK: u32 = 0;
    /// `SSH_FX_EOF`.
    pub const EOF: u32 = 1;
    /// `SSH_FX_NO_SUCH_FILE`.
    pub const NO_SUCH_FILE: u32 = 2;
    /// `SSH_FX_PERMISSION_DENIED`.
    pub const PERMISSION_DENIED: u32 = 3;
    /// `SSH_FX_FAILURE`.
    pub const FAILURE: u32 = 4;
    /// `SSH_FX_BAD_MESSAGE`.
    pub const BAD_MESSAGE: u32 = 5;
    /// `SSH_FX_NO_CONNECTION`.
    pub const NO_CONNECTION: u32 = 6;
    /// `SSH_FX_CONNECTION_LOST`.
    pub const CONNECTION_LOST: u32 = 7;
    /// `SSH_FX_OP_UNSUPPORTED`.
    pub const OP_UNSUPPORTED: u32 = 8;
}

/// Flags of `SSH_FXP_OPEN`.
pub mod open_flags {
    /// `SSH_FXF_READ`.
    pub const READ: u32 = 0x01;
    /// `SSH_FXF_WRITE`.
    pub const WRITE: u32 = 0x02;
    /// `SSH_FXF_APPEND`.
    pub const APPEND: u32 = 0x04;
    /// `SSH_FXF_CREAT`.
    pub const CREATE: u32 = 0x08;
    /// `SSH_FXF_TRUNC`.
    pub const TRUNCATE: u32 = 0x10;
    /// `SSH_FXF_EXCL`.
    pub const EXCLUSIVE: u32 = 0x20;
}

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// What a reply from the server broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A packet length beyond [`MAX_PACKET`].
    #[error("a packet of {0} bytes (at most {MAX_PACKET} are accepted)")]
    TooLong(u64),
    /// A packet without even its type byte.
    #[error("an empty packet")]
    Empty,
    /// A field runs past the end of its packet.
    #[error("a truncated {0} packet")]
    Truncated(&'static str),
    /// A reply type barsync never asks for.
    #[error("a packet of unknown type {0}")]
    UnknownType(u8),
    /// A handle longer than [`MAX_HANDLE`].
    #[error("a handle of {0} bytes (at most {MAX_HANDLE})")]
    HandleTooLong(usize),
    /// A name or path longer than [`MAX_NAME`].
    #[error("a name of {0} bytes (at most {MAX_NAME})")]
    NameTooLong(usize),
    /// More entries announced than the packet holds.
    #[error("{count} {what} announced in {bytes} bytes")]
    BadCount {
        /// What was counted.
        what: &'static str,
        /// How many were announced.
        count: u32,
        /// The bytes left for them.
        bytes: usize,
    },
    /// A listed name that is not a single path component.
    #[error("an invalid file name {0} (empty, or holding `/` or NUL)")]
    BadName(String),
}

/// File attributes (only the fields the server sent are `Some`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner and group ids.
    pub uid_gid: Option<(u32, u32)>,
    /// `st_mode`: type and permission bits.
    pub permissions: Option<u32>,
    /// (atime, mtime), seconds since the epoch.
    pub times: Option<(u32, u32)>,
}

/// The file type bits of `st_mode`.
const S_IFMT: u32 = 0o170000;

impl Attrs {
    /// The type bits of the mode (`0o100000` a regular file...), 0 when the mode is unknown.
    pub fn file_type(&self) -> u32 {
        self.permissions.unwrap_or(0) & S_IFMT
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == 0o100000
    }
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == 0o040000
    }
    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == 0o120000
    }
    /// The modification time, when known.
    pub fn mtime(&self) -> Option<u32> {
        self.times.map(|(_, mtime)| mtime)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if self.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if self.permissions.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if self.times.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        put_u32(out, flags);
        if let Some(size) = self.size {
            put_u64(out, size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            put_u32(out, uid);
            put_u32(out, gid);
        }
        if let Some(permissions) = self.permissions {
            put_u32(out, permissions);
        }
        if let Some((atime, mtime)) = self.times {
            put_u32(out, atime);
            put_u32(out, mtime);
        }
    }

    fn decode(input: &mut Input<'_>) -> Result<Attrs, WireError> {
        let flags = input.u32()?;
        let mut attrs = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            attrs.size = Some(input.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            attrs.uid_gid = Some((input.u32()?, input.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            attrs.permissions = Some(input.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            attrs.times = Some((input.u32()?, input.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            // Each extended pair is two strings of at least 4 bytes each.
            let count = input.u32()?;
            input.check_count("extended attributes", count, 8)?;
            for _ in 0..count {
                input.string(MAX_PACKET)?;
                input.string(MAX_PACKET)?;
            }
        }
        Ok(attrs)
    }
}

/// One entry of a NAME reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameEntry<'a> {
    /// The file name (for READDIR, one component; see [`check_listed_name`]).
    pub name: &'a [u8],
    /// Its attributes, as the server sent them.
    pub attrs: Attrs,
}

/// A reply from the server, borrowing the packet it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The answer to INIT.
    Version {
        /// The protocol version the server speaks.
        version: u32,
        /// (name, data) of each extension announced.
        extensions: Vec<(&'a [u8], &'a [u8])>,
    },
    /// Success or failure of a request.
    Status {
        /// The request answered.
        id: u32,
        /// A [`status`] code.
        code: u32,
        /// The server's message (may be empty: some servers leave it out).
        message: &'a [u8],
    },
    /// An open file or directory.
    Handle {
        /// The request answered.
        id: u32,
        /// The handle, for later requests.
        handle: &'a [u8],
    },
    /// Bytes read.
    Data {
        /// The request answered.
        id: u32,
        /// The bytes.
        data: &'a [u8],
    },
    /// Names (of a directory, of a symlink's target, of a real path).
    Name {
        /// The request answered.
        id: u32,
        /// The names with their attributes.
        entries: Vec<NameEntry<'a>>,
    },
    /// A file's attributes.
    Attrs {
        /// The request answered.
        id: u32,
        /// The attributes.
        attrs: Attrs,
    },
    /// The answer to an extension request.
    ExtendedReply {
        /// The request answered.
        id: u32,
        /// Its data, as the extension defines it.
        data: &'a [u8],
    },
}

impl Reply<'_> {
    /// The request id the reply answers (`None` for VERSION).
    pub fn id(&self) -> Option<u32> {
        match self {
            Reply::Version { .. } => None,
            Reply::Status { id, .. }
            | Reply::Handle { id, .. }
            | Reply::Data { id, .. }
            | Reply::Name { id, .. }
            | Reply::Attrs { id, .. }
            | Reply::ExtendedReply { id, .. } => Some(*id),
        }
    }

    /// How the reply is named in messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Reply::Version { .. } => "VERSION",
            Reply::Status { .. } => "STATUS",
            Reply::Handle { .. } => "HANDLE",
            Reply::Data { .. } => "DATA",
            Reply::Name { .. } => "NAME",
            Reply::Attrs { .. } => "ATTRS",
            Reply::ExtendedReply { .. } => "EXTENDED_REPLY",
        }
    }
}

/// A reader over a packet's bytes: every read is bounded by what is left.
struct Input<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.bytes.len() {
            return Err(WireError::Truncated(self.what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    /// A string of at most `max` bytes (a longer one is refused by the caller's limit).
    fn string(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        if len > self.bytes.len() {
            return Err(WireError::Truncated(self.what));
        }
        if len > max {
            return Err(if max == MAX_HANDLE {
                WireError::HandleTooLong(len)
            } else {
                WireError::NameTooLong(len)
            });
        }
        self.take(len)
    }
    /// Refuses a count of entries of at least `min_entry` bytes each that the rest cannot hold.
    fn check_count(
        &self,
        what: &'static str,
        count: u32,
        min_entry: usize,
    ) -> Result<(), WireError> {
        if (count as usize).saturating_mul(min_entry) > self.bytes.len() {
            return Err(WireError::BadCount {
                what,
                count,
                bytes: self.bytes.len(),
            });
        }
        Ok(())
    }
}

/// Decodes one packet (its type byte and payload, without the length).
pub fn decode_reply(packet: &[u8]) -> Result<Reply<'_>, WireError> {
    let (&kind, payload) = packet.split_first().ok_or(WireError::Empty)?;
    let what = match kind {
        kind::VERSION => "VERSION",
        kind::STATUS => "STATUS",
        kind::HANDLE => "HANDLE",
        kind::DATA => "DATA",
        kind::NAME => "NAME",
        kind::ATTRS => "ATTRS",
        kind::EXTENDED_REPLY => "EXTENDED_REPLY",
        other => return Err(WireError::UnknownType(other)),
    };
    let mut input = Input {
        bytes: payload,
        what,
    };
    if kind == kind::VERSION {
        let version = input.u32()?;
        let mut extensions = Vec::new();
        while !input.bytes.is_empty() {
            if extensions.len() == MAX_EXTENSIONS {
                return Err(WireError::BadCount {
                    what: "extensions",
                    count: MAX_EXTENSIONS as u32 + 1,
                    bytes: payload.len(),
                });
            }
            let name = input.string(MAX_NAME)?;
            let data = input.string(MAX_NAME)?;
            extensions.push((name, data));
        }
        return Ok(Reply::Version {
            version,
            extensions,
        });
    }
    let id = input.u32()?;
    Ok(match kind {
        kind::STATUS => {
            let code = input.u32()?;
            // The message and language tag are optional in practice (old servers omit them).
            let message = if input.bytes.is_empty() {
                &[][..]
            } else {
                input.string(MAX_PACKET)?
            };
            Reply::Status { id, code, message }
        }
        kind::HANDLE => Reply::Handle {
            id,
            handle: input.string(MAX_HANDLE)?,
        },
        kind::DATA => Reply::Data {
            id,
            data: input.string(MAX_PACKET)?,
        },
        kind::NAME => {
            let count = input.u32()?;
            // name, long name, attribute flags: at least 12 bytes an entry.
            input.check_count("names", count, 12)?;
            let mut entries = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let name = input.string(MAX_NAME)?;
                input.string(MAX_PACKET)?; // the `ls -l` line, unused
                let attrs = Attrs::decode(&mut input)?;
                entries.push(NameEntry { name, attrs });
            }
            Reply::Name { id, entries }
        }
        kind::ATTRS => Reply::Attrs {
            id,
            attrs: Attrs::decode(&mut input)?,
        },
        _ => Reply::ExtendedReply {
            id,
            data: input.bytes,
        },
    })
}

/// Refuses a listed name that is not one path component (empty, or holding `/` or NUL).
pub fn check_listed_name(name: &[u8]) -> Result<(), WireError> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(WireError::BadName(crate::names::shown_bytes(name)));
    }
    Ok(())
}

/// A request barsync sends. Paths and handles are bytes.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Opens a file.
    Open {
        /// The path.
        path: &'a [u8],
        /// [`open_flags`].
        flags: u32,
        /// The attributes to set.
        attrs: &'a Attrs,
    },
    /// Closes a handle.
    Close {
        /// The handle.
        handle: &'a [u8],
    },
    /// Reads bytes of an open file.
    Read {
        /// The handle.
        handle: &'a [u8],
        /// Where in the file.
        offset: u64,
        /// How many bytes.
        len: u32,
    },
    /// Writes bytes to an open file.
    Write {
        /// The handle.
        handle: &'a [u8],
        /// Where in the file.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// Attributes of a path, not following a symlink.
    Lstat {
        /// The path.
        path: &'a [u8],
    },
    /// Attributes of a path, following symlinks.
    Stat {
        /// The path.
        path: &'a [u8],
    },
    /// Attributes of an open file.
    Fstat {
        /// The handle.
        handle: &'a [u8],
    },
    /// Sets attributes of a path.
    Setstat {
        /// The path.
        path: &'a [u8],
        /// The attributes to set.
        attrs: &'a Attrs,
    },
    /// Sets attributes of an open file.
    Fsetstat {
        /// The handle.
        handle: &'a [u8],
        /// The attributes to set.
        attrs: &'a Attrs,
    },
    /// Opens a directory.
    Opendir {
        /// The path.
        path: &'a [u8],
    },
    /// The next names of an open directory.
    Readdir {
        /// The handle.
        handle: &'a [u8],
    },
    /// Removes a file.
    Remove {
        /// The path.
        path: &'a [u8],
    },
    /// Creates a directory.
    Mkdir {
        /// The path.
        path: &'a [u8],
        /// The attributes to set.
        attrs: &'a Attrs,
    },
    /// Removes an empty directory.
    Rmdir {
        /// The path.
        path: &'a [u8],
    },
    /// The canonical form of a path.
    Realpath {
        /// The path.
        path: &'a [u8],
    },
    /// Renames a path (SFTP v3: fails when the target exists).
    Rename {
        /// The path renamed.
        from: &'a [u8],
        /// Its new path.
        to: &'a [u8],
    },
    /// The target of a symlink.
    Readlink {
        /// The path.
        path: &'a [u8],
    },
    /// The two paths in the order they go on the wire: the draft says (link path, target),
    /// OpenSSH's server reads (target, link path); the client picks.
    Symlink {
        /// The first path on the wire.
        first: &'a [u8],
        /// The second path on the wire.
        second: &'a [u8],
    },
    /// An extension request (`posix-rename@openssh.com`, `fsync@openssh.com`...): its name,
    /// then its fields as strings.
    Extended {
        /// The extension's name.
        name: &'a str,
        /// Its fields.
        strings: &'a [&'a [u8]],
    },
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Appends the framed INIT packet.
pub fn encode_init(out: &mut Vec<u8>) {
    put_u32(out, 5);
    out.push(kind::INIT);
    put_u32(out, VERSION);
}

/// Appends `request` with `id`, framed (length first), to `out`.
pub fn encode(out: &mut Vec<u8>, id: u32, request: &Request<'_>) {
    let start = out.len();
    put_u32(out, 0); // the length, set below
    let path_request = |out: &mut Vec<u8>, kind: u8, path: &[u8]| {
        out.push(kind);
        put_u32(out, id);
        put_string(out, path);
    };
    match *request {
        Request::Open { path, flags, attrs } => {
            path_request(out, kind::OPEN, path);
            put_u32(out, flags);
            attrs.encode(out);
        }
        Request::Close { handle } => path_request(out, kind::CLOSE, handle),
        Request::Read {
            handle,
            offset,
            len,
        } => {
            path_request(out, kind::READ, handle);
            put_u64(out, offset);
            put_u32(out, len);
        }
        Request::Write {
            handle,
            offset,
            data,
        } => {
            path_request(out, kind::WRITE, handle);
            put_u64(out, offset);
            put_string(out, data);
        }
        Request::Lstat { path } => path_request(out, kind::LSTAT, path),
        Request::Stat { path } => path_request(out, kind::STAT, path),
        Request::Fstat { handle } => path_request(out, kind::FSTAT, handle),
        Request::Setstat { path, attrs } => {
            path_request(out, kind::SETSTAT, path);
            attrs.encode(out);
        }
        Request::Fsetstat { handle, attrs } => {
            path_request(out, kind::FSETSTAT, handle);
            attrs.encode(out);
        }
        Request::Opendir { path } => path_request(out, kind::OPENDIR, path),
        Request::Readdir { handle } => path_request(out, kind::READDIR, handle),
        Request::Remove { path } => path_request(out, kind::REMOVE, path),
        Request::Mkdir { path, attrs } => {
            path_request(out, kind::MKDIR, path);
            attrs.encode(out);
        }
        Request::Rmdir { path } => path_request(out, kind::RMDIR, path),
        Request::Realpath { path } => path_request(out, kind::REALPATH, path),
        Request::Rename { from, to } => {
            path_request(out, kind::RENAME, from);
            put_string(out, to);
        }
        Request::Readlink { path } => path_request(out, kind::READLINK, path),
        Request::Symlink { first, second } => {
            path_request(out, kind::SYMLINK, first);
            put_string(out, second);
        }
        Request::Extended { name, strings } => {
            path_request(out, kind::EXTENDED, name.as_bytes());
            for string in strings {
                put_string(out, string);
            }
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Why no packet could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended at a packet boundary.
    #[error("the connection was closed")]
    Closed,
    /// The stream failed, or ended inside a packet.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The length is refused.
    #[error("{0}")]
    Wire(#[from] WireError),
}

/// Reads one packet (type byte and payload) into `buffer`, refusing a length beyond
/// [`MAX_PACKET`] before reading it.
pub fn read_frame(reader: &mut impl Read, buffer: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut length = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut length[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection was closed inside a packet length",
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(length) as usize;
    if len > MAX_PACKET {
        return Err(WireError::TooLong(len as u64).into());
    }
    if len == 0 {
        return Err(WireError::Empty.into());
    }
    buffer.clear();
    buffer.resize(len, 0);
    reader.read_exact(buffer).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the connection was closed inside a packet of {len} bytes"),
            ))
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_u32(&mut out, body.len() as u32 + 1);
        out.push(kind);
        out.extend_from_slice(body);
        out
    }

    fn read(bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut buffer = Vec::new();
        read_frame(&mut &bytes[..], &mut buffer).map(|()| buffer)
    }

    #[test]
    fn requests_encode_as_the_draft_says() {
        // (length, type, id, fields...) as big-endian words and strings.
        let words = |parts: &[&[u8]]| parts.concat();
        let mut out = Vec::new();
        encode(
            &mut out,
            7,
            &Request::Read {
                handle: b"h1",
                offset: 1 << 33,
                len: 32768,
            },
        );
        let expected = words(&[
            &23u32.to_be_bytes(),
            &[kind::READ],
            &7u32.to_be_bytes(),
            &2u32.to_be_bytes(),
            b"h1",
            &(1u64 << 33).to_be_bytes(),
            &32768u32.to_be_bytes(),
        ]);
        assert_eq!(out, expected);
        out.clear();
        let attrs = Attrs {
            permissions: Some(0o644),
            times: Some((1, 2)),
            ..Attrs::default()
        };
        encode(
            &mut out,
            1,
            &Request::Setstat {
                path: b"p",
                attrs: &attrs,
            },
        );
        let expected = words(&[
            &26u32.to_be_bytes(),
            &[kind::SETSTAT],
            &1u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            b"p",
            &(ATTR_PERMISSIONS | ATTR_ACMODTIME).to_be_bytes(),
            &0o644u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            &2u32.to_be_bytes(),
        ]);
        assert_eq!(out, expected);
        out.clear();
        encode(
            &mut out,
            3,
            &Request::Extended {
                name: "posix-rename@openssh.com",
                strings: &[b"a", b"b"],
            },
        );
        let expected = words(&[
            &43u32.to_be_bytes(),
            &[kind::EXTENDED],
            &3u32.to_be_bytes(),
            &24u32.to_be_bytes(),
            b"posix-rename@openssh.com",
            &1u32.to_be_bytes(),
            b"a",
            &1u32.to_be_bytes(),
            b"b",
        ]);
        assert_eq!(out, expected);
        out.clear();
        encode_init(&mut out);
        assert_eq!(out, [0, 0, 0, 5, kind::INIT, 0, 0, 0, 3]);
    }

    #[test]
    fn replies_decode_and_bound_every_field() {
        let mut body = Vec::new();
        put_u32(&mut body, 9);
        put_u32(&mut body, 2);
        put_string(&mut body, b"file");
        put_string(&mut body, b"-rw-r--r-- 1 x x 3 Jan 1 file");
        put_u32(&mut body, ATTR_SIZE | ATTR_PERMISSIONS);
        put_u64(&mut body, 3);
        put_u32(&mut body, 0o100644);
        put_string(&mut body, b"dir");
        put_string(&mut body, b"");
        put_u32(&mut body, ATTR_PERMISSIONS | ATTR_EXTENDED);
        put_u32(&mut body, 0o040755);
        put_u32(&mut body, 1);
        put_string(&mut body, b"k");
        put_string(&mut body, b"v");
        let packet = read(&framed(kind::NAME, &body)).unwrap();
        let Reply::Name { id, entries } = decode_reply(&packet).unwrap() else {
            panic!("not a NAME");
        };
        assert_eq!(id, 9);
        assert_eq!(entries[0].name, b"file");
        assert!(entries[0].attrs.is_file());
        assert_eq!(entries[0].attrs.size, Some(3));
        assert!(entries[1].attrs.is_dir());

        // Every truncation of it is an error, never a panic.
        for cut in 0..packet.len() {
            assert!(decode_reply(&packet[..cut]).is_err(), "cut at {cut}");
        }

        // A count the bytes cannot hold is refused before anything is reserved.
        let mut body = Vec::new();
        put_u32(&mut body, 1);
        put_u32(&mut body, u32::MAX);
        assert_eq!(
            decode_reply(&framed(kind::NAME, &body)[4..]),
            Err(WireError::BadCount {
                what: "names",
                count: u32::MAX,
                bytes: 0
            })
        );
        // A string longer than the packet.
        let mut body = Vec::new();
        put_u32(&mut body, 1);
        put_u32(&mut body, 1000);
        body.extend_from_slice(b"short");
        assert_eq!(
            decode_reply(&framed(kind::DATA, &body)[4..]),
            Err(WireError::Truncated("DATA"))
        );
        // A handle beyond the draft's limit.
        let mut body = Vec::new();
        put_u32(&mut body, 1);
        put_string(&mut body, &[1; 300]);
        assert_eq!(
            decode_reply(&framed(kind::HANDLE, &body)[4..]),
            Err(WireError::HandleTooLong(300))
        );
        assert_eq!(decode_reply(&[kind::READ]), Err(WireError::UnknownType(5)));
        assert_eq!(decode_reply(&[]), Err(WireError::Empty));
    }

    #[test]
    fn status_without_message_and_version_extensions() {
        let mut body = Vec::new();
        put_u32(&mut body, 4);
        put_u32(&mut body, status::EOF);
        assert_eq!(
            decode_reply(&framed(kind::STATUS, &body)[4..]),
            Ok(Reply::Status {
                id: 4,
                code: status::EOF,
                message: b""
            })
        );
        let mut body = Vec::new();
        put_u32(&mut body, 3);
        put_string(&mut body, b"posix-rename@openssh.com");
        put_string(&mut body, b"1");
        let packet = framed(kind::VERSION, &body);
        let reply = decode_reply(&packet[4..]).unwrap();
        assert_eq!(
            reply,
            Reply::Version {
                version: 3,
                extensions: vec![(&b"posix-rename@openssh.com"[..], &b"1"[..])]
            }
        );
        // Too many extensions.
        let mut body = Vec::new();
        put_u32(&mut body, 3);
        for _ in 0..=MAX_EXTENSIONS {
            put_string(&mut body, b"x");
            put_string(&mut body, b"");
        }
        assert!(matches!(
            decode_reply(&framed(kind::VERSION, &body)[4..]),
            Err(WireError::BadCount { .. })
        ));
    }

    #[test]
    fn frames_refuse_huge_lengths_and_report_truncation() {
        assert!(matches!(
            read(&[0xff, 0xff, 0xff, 0xf0, 2]),
            Err(FrameError::Wire(WireError::TooLong(0xffff_fff0)))
        ));
        assert!(matches!(read(&[]), Err(FrameError::Closed)));
        assert!(matches!(read(&[0, 0]), Err(FrameError::Io(_))));
        assert!(matches!(read(&[0, 0, 0, 9, 2, 0]), Err(FrameError::Io(_))));
        assert!(matches!(
            read(&[0, 0, 0, 0]),
            Err(FrameError::Wire(WireError::Empty))
        ));
        assert_eq!(read(&[0, 0, 0, 1, 2]).unwrap(), [2]);
    }

    #[test]
    fn listed_names_are_single_components() {
        assert!(check_listed_name(b"file").is_ok());
        assert!(check_listed_name(b"caf\xe9").is_ok());
        assert!(check_listed_name(b"..").is_ok()); // skipped by the caller
        for bad in [&b""[..], b"../escape", b"a/b", b"nul\0"] {
            assert!(
                matches!(check_listed_name(bad), Err(WireError::BadName(_))),
                "{bad:?}"
            );
        }
    }
}
