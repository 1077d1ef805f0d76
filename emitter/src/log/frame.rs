//! Record frames and a scanner that walks them in a segment file.
//!
//! A frame is `u32 length | u32 checksum | payload`, little-endian, where the
//! payload is one event in the engine's binary codec and the checksum is the
//! CRC-32 (IEEE, `crc32fast`, hardware-accelerated) of the four length bytes
//! followed by the payload. Covering the length means a flipped length bit is
//! caught even when the wrong length still lands inside the file. Offsets are
//! not stored: a record's offset is its segment's base offset plus its index
//! in the segment, so recovery only has to count frames.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use floe_engine::{Event, encode_event};

use crate::error::{Error, Result};

/// Bytes before the payload.
pub(super) const HEADER_LEN: usize = 8;

/// Largest payload a frame may carry. Larger lengths read back from disk are
/// treated as corruption, so raising this later stays compatible.
pub(super) const MAX_PAYLOAD: usize = 32 << 20;

/// Appends the frame of `event` to `out`.
pub(super) fn push_frame(out: &mut Vec<u8>, event: &Event) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    encode_event(event, out);
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_PAYLOAD {
        out.truncate(start);
        return Err(Error::RecordTooLarge {
            size: len,
            limit: MAX_PAYLOAD,
        });
    }
    let len_bytes = (len as u32).to_le_bytes();
    let crc = checksum(len_bytes, &out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// Total length of the well-formed frame at the start of `buf` (which this
/// process built with [`push_frame`]).
pub(super) fn frame_len(buf: &[u8]) -> usize {
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    HEADER_LEN + len as usize
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// A checked frame of this total length.
    Frame(usize),
    /// The buffer ends inside the frame; this many bytes are needed in all.
    Incomplete(usize),
    /// Not a frame.
    Invalid(String),
}

fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER_LEN {
        return Parsed::Incomplete(HEADER_LEN);
    }
    let len_bytes = [buf[0], buf[1], buf[2], buf[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Parsed::Invalid(format!("frame length {len} is outside 1..={MAX_PAYLOAD}"));
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Parsed::Incomplete(total);
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let computed = checksum(len_bytes, &buf[HEADER_LEN..total]);
    if stored != computed {
        return Parsed::Invalid(format!(
            "checksum mismatch in a {len}-byte frame: stored {stored:08x}, computed {computed:08x}"
        ));
    }
    Parsed::Frame(total)
}

/// One step of a [`Scanner`].
#[derive(Debug)]
pub(super) enum Scanned<'a> {
    /// A checked frame starting at byte `pos` of the file.
    Frame {
        /// Byte position of the frame in the file.
        pos: u64,
        /// The payload (codec bytes).
        payload: &'a [u8],
    },
    /// The region ended exactly after a frame.
    End,
    /// The bytes at `pos` are not a whole, valid frame.
    Bad {
        /// Byte position of the first bad byte.
        pos: u64,
        /// What is wrong with them.
        reason: String,
    },
}

/// Walks the frames in bytes `[start, end)` of a file with positioned reads,
/// checking each checksum. Reads are buffered and never go past `end`.
pub(super) struct Scanner<'f> {
    file: &'f File,
    path: &'f Path,
    /// File position of `buf[head]`.
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    head: usize,
    chunk: usize,
}

impl<'f> Scanner<'f> {
    /// A scanner over `[start, end)` reading at least `chunk` bytes at a time.
    pub(super) fn new(file: &'f File, path: &'f Path, start: u64, end: u64, chunk: usize) -> Self {
        Scanner {
            file,
            path,
            pos: start,
            end,
            buf: Vec::new(),
            head: 0,
            chunk: chunk.max(HEADER_LEN),
        }
    }

    /// The next frame, the end, or what is wrong at the current position.
    pub(super) fn next(&mut self) -> Result<Scanned<'_>> {
        loop {
            match parse(&self.buf[self.head..]) {
                Parsed::Frame(total) => {
                    let start = self.head;
                    let pos = self.pos;
                    self.head += total;
                    self.pos += total as u64;
                    return Ok(Scanned::Frame {
                        pos,
                        payload: &self.buf[start + HEADER_LEN..start + total],
                    });
                }
                Parsed::Invalid(reason) => {
                    return Ok(Scanned::Bad {
                        pos: self.pos,
                        reason,
                    });
                }
                Parsed::Incomplete(need) => {
                    let have = self.buf.len() - self.head;
                    let available = self.end - self.pos;
                    if have == 0 && available == 0 {
                        return Ok(Scanned::End);
                    }
                    if need as u64 > available {
                        return Ok(Scanned::Bad {
                            pos: self.pos,
                            reason: format!(
                                "a frame of {need} bytes runs past the end ({available} bytes left)"
                            ),
                        });
                    }
                    self.fill(need)?;
                }
            }
        }
    }

    /// Makes at least `need` bytes from `pos` available in the buffer.
    fn fill(&mut self, need: usize) -> Result<()> {
        self.buf.drain(..self.head);
        self.head = 0;
        // `next` only calls this with fewer than `need` bytes buffered and at
        // least `need` bytes left before `end`.
        let have = self.buf.len();
        let read_at = self.pos + have as u64;
        let n = ((need.max(self.chunk) - have) as u64).min(self.end - read_at) as usize;
        self.buf.resize(have + n, 0);
        self.file
            .read_exact_at(&mut self.buf[have..], read_at)
            .map_err(|e| Error::io("reading segment", self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_each_failure() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&3u32.to_le_bytes());
        frame.extend_from_slice(&checksum(3u32.to_le_bytes(), b"abc").to_le_bytes());
        frame.extend_from_slice(b"abc");
        assert_eq!(parse(&frame), Parsed::Frame(11));
        assert_eq!(parse(&frame[..5]), Parsed::Incomplete(8));
        assert_eq!(parse(&frame[..9]), Parsed::Incomplete(11));
        let mut bad = frame.clone();
        bad[10] ^= 1;
        assert!(matches!(parse(&bad), Parsed::Invalid(r) if r.contains("checksum mismatch")));
        assert!(matches!(parse(&[0; 8]), Parsed::Invalid(r) if r.contains("frame length 0")));
    }
}
