//! Frames: `kind (u8) | payload length (u32 LE) | payload`, and the payload field encodings.
//!
//! The reader never trusts a length: payloads above [`MAX_PAYLOAD`] are refused before anything
//! is allocated, unknown kinds are refused, and [`Fields`] refuses truncated or trailing bytes.

use std::io::{self, Read, Write};

use super::ProtocolError;

/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The frame kinds. Client → server: `Hello`, `List`, `FileRequest`, `SignatureChunk`,
/// `RequestsDone`, `Watch`, and for pushes `PushFile`, `MakeDirectory`, `MakeSymlink`, `Remove`.
/// Server → client: `Hello`, `ListEntry`, `ListBatch`, `ListEnd`, `ServerDone`, `Watched`, and for pushes
/// `PushSignature`, `PushDone`. Whichever side sends a file: `FileBegin`, `Copy`, `Literal`,
/// `FileEnd`, `RequestError` (and the receiving side sends `SignatureChunk`). Either way: `Fatal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Both sides, first: magic, protocol version, feature bits, agent string.
    Hello = 1,
    /// Either side: the session ends, with the reason.
    Fatal = 2,
    /// Request: list a path (recursively or one level).
    List = 10,
    /// Request: a file, with the length of the signature that follows and the zstd level.
    FileRequest = 11,
    /// A piece of the signature of a request's basis.
    SignatureChunk = 12,
    /// The client has no more requests.
    RequestsDone = 13,
    /// Push request: a file the client sends, with its size.
    PushFile = 14,
    /// Push request: create a directory.
    MakeDirectory = 15,
    /// Push request: create a symlink.
    MakeSymlink = 16,
    /// Push request: remove a file, symlink or empty directory.
    Remove = 17,
    /// Request: a byte range of a file, answered as if the range were a whole file.
    RangeRequest = 18,
    /// Request: wait until a file differs from what the client saw (or a timeout), then send
    /// its bytes from an offset (`watch.rs`).
    Watch = 19,
    /// Answer to `List`: one entry.
    ListEntry = 20,
    /// Answer to `List`: no more entries.
    ListEnd = 21,
    /// A file's answer starts: its length, mtime, mode and digest block size.
    FileBegin = 22,
    /// Delta operation: copy a run of the basis's blocks.
    Copy = 23,
    /// Delta operation: literal bytes (raw or zstd).
    Literal = 24,
    /// A file's answer ends: its length and digest.
    FileEnd = 25,
    /// In place of an answer (or ending one): the request failed, in words, and with
    /// `FEATURE_ERROR_KINDS` its kind as one more byte.
    RequestError = 26,
    /// Answer to `RequestsDone`: the server is done too.
    ServerDone = 27,
    /// Answer to `PushFile`: the signature of the server's current copy.
    PushSignature = 28,
    /// Answer to a push request: done or refused, with the reason.
    PushDone = 29,
    /// Answer to `Watch`: the file's length, inode, mtime, whether it changed, and its bytes.
    Watched = 30,
    /// Answer to `List`, to a peer that announced `FEATURE_LIST_BATCH`: many entries at once,
    /// their records (a `ListEntry` payload without the request number, one after another)
    /// raw or zstd-compressed as a literal is.
    ListBatch = 31,
    /// Request, to a peer that announced `FEATURE_PROBE`: send this many bytes (`probe.rs`).
    Probe = 32,
    /// Answer to `Probe`: some of the bytes.
    Probed = 33,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        use Kind::*;
        Some(match byte {
            1 => Hello,
            2 => Fatal,
            10 => List,
            11 => FileRequest,
            12 => SignatureChunk,
            13 => RequestsDone,
            14 => PushFile,
            15 => MakeDirectory,
            16 => MakeSymlink,
            17 => Remove,
            18 => RangeRequest,
            19 => Watch,
            20 => ListEntry,
            21 => ListEnd,
            22 => FileBegin,
            23 => Copy,
            24 => Literal,
            25 => FileEnd,
            26 => RequestError,
            27 => ServerDone,
            28 => PushSignature,
            29 => PushDone,
            30 => Watched,
            31 => ListBatch,
            32 => Probe,
            33 => Probed,
            _ => return None,
        })
    }
}

/// Reads frames into a reused buffer.
pub struct FrameReader<R: Read> {
    input: R,
    buffer: Vec<u8>,
    last_kind: Option<Kind>,
    replay: bool,
    /// Bytes read so far, headers included.
    pub bytes: u64,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a byte stream.
    pub fn new(input: R) -> Self {
        FrameReader {
            input,
            buffer: Vec::new(),
            last_kind: None,
            replay: false,
            bytes: 0,
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream (between frames).
    pub fn read_frame(&mut self) -> Result<Option<(Kind, &[u8])>, ProtocolError> {
        if self.replay {
            self.replay = false;
            let kind = self.last_kind.expect("replay follows a frame");
            return Ok(Some((kind, &self.buffer)));
        }
        let mut header = [0u8; 5];
        let mut got = 0;
        while got < header.len() {
            match self.input.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(ProtocolError::Truncated),
                Ok(n) => got += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ProtocolError::Io(error)),
            }
        }
        let kind = Kind::from_byte(header[0]).ok_or(ProtocolError::Malformed(format!(
            "unknown frame kind {}",
            header[0]
        )))?;
        let len = u32::from_le_bytes(header[1..].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::Malformed(format!(
                "{kind:?} frame of {len} bytes (limit {MAX_PAYLOAD})"
            )));
        }
        self.buffer.resize(len, 0);
        self.input
            .read_exact(&mut self.buffer)
            .map_err(|error| match error.kind() {
                io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
                _ => ProtocolError::Io(error),
            })?;
        self.bytes += 5 + len as u64;
        self.last_kind = Some(kind);
        Ok(Some((kind, &self.buffer)))
    }

    /// Makes the next read return the frame just read again (for a dispatcher that hands the
    /// frame to a reader of its own).
    pub fn replay_last(&mut self) {
        assert!(self.last_kind.is_some(), "nothing to replay");
        self.replay = true;
    }

    /// The underlying stream.
    pub fn inner(&self) -> &R {
        &self.input
    }

    /// The next frame, which must exist.
    pub fn expect_frame(&mut self) -> Result<(Kind, &[u8]), ProtocolError> {
        self.read_frame()?.ok_or(ProtocolError::Truncated)
    }
}

/// Writes frames.
pub struct FrameWriter<W: Write> {
    output: W,
    payload: Vec<u8>,
    /// Bytes written so far, headers included.
    pub bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Wraps a byte stream (callers should give a buffered one).
    pub fn new(output: W) -> Self {
        FrameWriter {
            output,
            payload: Vec::new(),
            bytes: 0,
        }
    }

    /// Starts a frame payload; fill it with [`Payload`] methods, then [`FrameWriter::send`].
    pub fn start(&mut self) -> Payload<'_> {
        self.payload.clear();
        Payload(&mut self.payload)
    }

    /// Sends the payload built since [`FrameWriter::start`] as a frame of `kind`.
    pub fn send(&mut self, kind: Kind) -> io::Result<()> {
        assert!(
            self.payload.len() <= MAX_PAYLOAD,
            "payload of {} bytes",
            self.payload.len()
        );
        let mut header = [0u8; 5];
        header[0] = kind as u8;
        header[1..].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        self.output.write_all(&header)?;
        self.output.write_all(&self.payload)?;
        self.bytes += 5 + self.payload.len() as u64;
        Ok(())
    }

    /// Flushes the underlying stream.
    pub fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }

    /// The underlying stream.
    pub fn into_inner(self) -> W {
        self.output
    }
}

/// Builder of a frame payload.
pub struct Payload<'a>(&'a mut Vec<u8>);

impl Payload<'_> {
    /// A payload builder appending to `buffer` (records packed inside one frame).
    pub fn appending(buffer: &mut Vec<u8>) -> Payload<'_> {
        Payload(buffer)
    }

    /// Appends a byte.
    pub fn u8(self, value: u8) -> Self {
        self.0.push(value);
        self
    }
    /// Appends a u32, little-endian.
    pub fn u32(self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }
    /// Appends a u64, little-endian.
    pub fn u64(self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }
    /// Appends an i64, little-endian.
    pub fn i64(self, value: i64) -> Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }
    /// A string: u32 length, then UTF-8 bytes.
    pub fn str(self, value: &str) -> Self {
        self.bytes(value.as_bytes())
    }
    /// A path or file name: its bytes (names need not be UTF-8), with a u32 length.
    pub fn path(self, value: &std::path::Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        self.bytes(value.as_os_str().as_bytes())
    }
    /// Bytes with a u32 length.
    pub fn bytes(self, value: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.0.extend_from_slice(value);
        self
    }
    /// Bytes to the end of the payload (no length).
    pub fn rest(self, value: &[u8]) -> Self {
        self.0.extend_from_slice(value);
        self
    }
    /// Direct access, for encoders that write in place (compression).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.0
    }
}

/// Reader of a frame payload's fields.
pub struct Fields<'a> {
    data: &'a [u8],
    kind: Kind,
}

impl<'a> Fields<'a> {
    /// Reads the fields of a `kind` frame's payload `data`.
    pub fn new(kind: Kind, data: &'a [u8]) -> Self {
        Fields { data, kind }
    }

    /// Whether every field has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtocolError> {
        if self.data.len() < len {
            return Err(ProtocolError::Malformed(format!(
                "{:?} frame is truncated",
                self.kind
            )));
        }
        let (head, tail) = self.data.split_at(len);
        self.data = tail;
        Ok(head)
    }
    /// A byte.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A little-endian i64.
    pub fn i64(&mut self) -> Result<i64, ProtocolError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    /// A path or file name written by `path` of the frame writer: any bytes.
    pub fn path(&mut self) -> Result<&'a std::path::Path, ProtocolError> {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(
            self.bytes()?,
        )))
    }
    /// A length-prefixed string (refused if not UTF-8).
    pub fn str(&mut self) -> Result<&'a str, ProtocolError> {
        let kind = self.kind;
        std::str::from_utf8(self.bytes()?).map_err(|_| {
            ProtocolError::Malformed(format!("{kind:?} frame has a string that is not UTF-8"))
        })
    }
    /// `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    /// One more byte if the frame has one, `None` at its end (a field newer peers add).
    pub fn optional_u8(&mut self) -> Result<Option<u8>, ProtocolError> {
        if self.data.is_empty() {
            Ok(None)
        } else {
            self.u8().map(Some)
        }
    }
    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
    /// Fails if bytes are left over.
    pub fn end(self) -> Result<(), ProtocolError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed(format!(
                "{:?} frame has {} trailing bytes",
                self.kind,
                self.data.len()
            )))
        }
    }
}
