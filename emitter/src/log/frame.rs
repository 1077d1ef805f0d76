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

use floe_engine::{Event, encode_event, is_truncated_event};

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
pub(super) enum Parsed {
    /// A checked frame of this total length.
    Frame(usize),
    /// The buffer ends inside the frame; this many bytes are needed in all.
    Incomplete(usize),
    /// A header whose length is outside `1..=MAX_PAYLOAD`.
    BadLength(usize),
    /// A complete frame of this total length whose checksum does not match.
    BadChecksum {
        /// Total length the header claims.
        total: usize,
        /// What the checksums are.
        reason: String,
    },
}

pub(super) fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER_LEN {
        return Parsed::Incomplete(HEADER_LEN);
    }
    let len_bytes = [buf[0], buf[1], buf[2], buf[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Parsed::BadLength(len);
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Parsed::Incomplete(total);
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let computed = checksum(len_bytes, &buf[HEADER_LEN..total]);
    if stored != computed {
        return Parsed::BadChecksum {
            total,
            reason: format!(
                "checksum mismatch in a complete {len}-byte frame: stored {stored:08x}, computed {computed:08x}"
            ),
        };
    }
    Parsed::Frame(total)
}

/// Positioned reads: a segment file, or bytes in memory (tests, fuzzing).
pub(super) trait Source {
    /// Fills `buf` from byte `pos`.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, pos)
    }
}

impl Source for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        let start = usize::try_from(pos).unwrap_or(usize::MAX);
        match start.checked_add(buf.len()) {
            Some(end) if end <= self.len() => {
                buf.copy_from_slice(&self[start..end]);
                Ok(())
            }
            _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// Why the bytes at some position are not a whole, valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Damage {
    /// Fewer bytes than a header are left.
    PartialHeader,
    /// The header's length is impossible.
    BadLength(usize),
    /// The frame runs past the end of the region.
    PastEnd {
        /// Total length the header claims.
        need: usize,
        /// Bytes left.
        available: u64,
    },
    /// A complete frame whose checksum does not match.
    BadChecksum {
        /// Total length the header claims.
        total: usize,
        /// What the checksums are.
        reason: String,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::PartialHeader => write!(f, "fewer than {HEADER_LEN} bytes, a partial header"),
            Damage::BadLength(len) => {
                write!(f, "frame length {len} is outside 1..={MAX_PAYLOAD}")
            }
            Damage::PastEnd { need, available } => write!(
                f,
                "a frame of {need} bytes runs past the end ({available} bytes left)"
            ),
            Damage::BadChecksum { reason, .. } => f.write_str(reason),
        }
    }
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
        damage: Damage,
    },
}

/// Walks the frames in bytes `[start, end)` of a source with positioned
/// reads, checking each checksum. Reads are buffered and never go past `end`.
pub(super) struct Scanner<'f, S: Source + ?Sized = File> {
    file: &'f S,
    path: &'f Path,
    /// File position of `buf[head]`.
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    head: usize,
    chunk: usize,
}

impl<'f, S: Source + ?Sized> Scanner<'f, S> {
    /// A scanner over `[start, end)` reading at least `chunk` bytes at a time.
    pub(super) fn new(file: &'f S, path: &'f Path, start: u64, end: u64, chunk: usize) -> Self {
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
    /// After `Bad` the scanner stays where it is.
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
                Parsed::BadLength(len) => {
                    return Ok(Scanned::Bad {
                        pos: self.pos,
                        damage: Damage::BadLength(len),
                    });
                }
                Parsed::BadChecksum { total, reason } => {
                    return Ok(Scanned::Bad {
                        pos: self.pos,
                        damage: Damage::BadChecksum { total, reason },
                    });
                }
                Parsed::Incomplete(need) => {
                    let have = self.buf.len() - self.head;
                    let available = self.end - self.pos;
                    if have == 0 && available == 0 {
                        return Ok(Scanned::End);
                    }
                    if need as u64 > available {
                        let damage = if available < HEADER_LEN as u64 {
                            Damage::PartialHeader
                        } else {
                            Damage::PastEnd { need, available }
                        };
                        return Ok(Scanned::Bad {
                            pos: self.pos,
                            damage,
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

/// Bytes of checksums [`next_valid_frame`] may compute before it gives up:
/// a bound on the time an adversarial tail can cost an open (~50 ms).
const RESYNC_HASH_BUDGET: usize = 512 << 20;

/// The first position at or after `from` in `buf` where a whole frame with a
/// matching checksum starts. `Err(())` when the hashing budget ran out before
/// every position was tried (the answer is unknown).
pub(super) fn next_valid_frame(buf: &[u8], from: usize) -> Result<Option<usize>, ()> {
    let mut budget = RESYNC_HASH_BUDGET;
    let mut q = from;
    while q + HEADER_LEN < buf.len() {
        let rest = &buf[q..];
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > 0 && len <= MAX_PAYLOAD && HEADER_LEN + len <= rest.len() {
            if len > budget {
                return Err(());
            }
            budget -= len;
            if matches!(parse(rest), Parsed::Frame(_)) {
                return Ok(Some(q));
            }
        }
        q += 1;
    }
    Ok(None)
}

/// What the first bad bytes of a segment are, from `rest` (the bytes from the
/// bad position to the end of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The tail of an interrupted write: nothing after it was acknowledged.
    Torn(String),
    /// Damage to written data: refusing is the only way not to lose records.
    Corrupt(String),
}

/// Tells a torn tail from corruption, at the first bad position of the last
/// segment of a partition (`last`) or of a sealed one.
///
/// The rule: a write is torn only at the very end of what was written, and
/// a frame is written as one sequence of bytes, so a torn tail is a *prefix*
/// of a frame: a partial header, or a header whose frame runs past the end
/// followed by the beginning of an event's encoding. (The filesystems floe
/// runs on extend a file only after its data is written, so a crash leaves a
/// prefix of the appended bytes, or zeros; not other bytes.) A zero-filled
/// tail is torn too. Everything else is corruption:
/// - a complete frame whose checksum fails, wherever it is;
/// - any damage in a sealed segment (it was fsync'd whole before the next
///   segment was created);
/// - a length outside `1..=MAX_PAYLOAD` on anything but zeros;
/// - a length past the end followed anywhere by a valid frame: a torn write
///   is the last thing in the file, so valid data after it means the length
///   itself was damaged;
/// - a length past the end followed by bytes that are not the beginning of
///   an event (a whole event means only the length was damaged).
///
/// What stays ambiguous: damage confined to the last frame that rewrites its
/// length to point past the end *and* leaves the bytes after it looking like
/// a cut event reads exactly like a torn write and is truncated. The lake
/// check at open (a log must reach the lake's committed offsets) catches it
/// once that record was landed. A false "corrupt" (random bytes of a torn
/// frame that happen to form a valid frame, about 2^-32 per position) makes
/// floe refuse and ask for `floe repair`; it never drops a record.
pub(super) fn classify(rest: &[u8], damage: &Damage, last: bool) -> Verdict {
    if !last {
        return Verdict::Corrupt(format!("{damage} (in a sealed segment)"));
    }
    match damage {
        Damage::PartialHeader => Verdict::Torn(damage.to_string()),
        Damage::BadChecksum { .. } => Verdict::Corrupt(damage.to_string()),
        _ if rest.iter().all(|&b| b == 0) => Verdict::Torn(format!("{} zero bytes", rest.len())),
        Damage::BadLength(_) => Verdict::Corrupt(damage.to_string()),
        Damage::PastEnd { .. } => {
            match next_valid_frame(rest, 1) {
                Ok(Some(q)) => {
                    return Verdict::Corrupt(format!(
                        "{damage}, but a valid frame follows {q} bytes later: the length prefix is damaged"
                    ));
                }
                Ok(None) => {}
                Err(()) => {
                    return Verdict::Corrupt(format!(
                        "{damage}, and the {} bytes after it are too many to rule out valid frames",
                        rest.len()
                    ));
                }
            }
            if is_truncated_event(&rest[HEADER_LEN..]) {
                Verdict::Torn(damage.to_string())
            } else {
                Verdict::Corrupt(format!(
                    "{damage}, but the bytes after its header are not the beginning of an event: the frame is damaged"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::sample_event;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        let len = (payload.len() as u32).to_le_bytes();
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&checksum(len, payload).to_le_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn event_frame(seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        push_frame(&mut out, &sample_event(seq, seq * 7919)).unwrap();
        out
    }

    fn past_end(rest: &[u8]) -> Damage {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        Damage::PastEnd {
            need: HEADER_LEN + len,
            available: rest.len() as u64,
        }
    }

    #[test]
    fn parse_reports_each_failure() {
        let frame = frame(b"abc");
        assert_eq!(parse(&frame), Parsed::Frame(11));
        assert_eq!(parse(&frame[..5]), Parsed::Incomplete(8));
        assert_eq!(parse(&frame[..9]), Parsed::Incomplete(11));
        let mut bad = frame.clone();
        bad[10] ^= 1;
        assert!(
            matches!(parse(&bad), Parsed::BadChecksum { total: 11, reason } if reason.contains("checksum mismatch"))
        );
        assert_eq!(parse(&[0; 8]), Parsed::BadLength(0));
    }

    #[test]
    fn a_torn_tail_is_a_prefix_of_a_frame() {
        let whole = event_frame(3);
        for cut in 1..whole.len() {
            let rest = &whole[..cut];
            let damage = if cut < HEADER_LEN {
                Damage::PartialHeader
            } else {
                past_end(rest)
            };
            assert!(
                matches!(classify(rest, &damage, true), Verdict::Torn(_)),
                "cut at {cut}"
            );
            assert!(matches!(
                classify(rest, &damage, false),
                Verdict::Corrupt(_)
            ));
        }
        // Zeros (a zero-filled tail) are torn too.
        assert!(matches!(
            classify(&[0; 40], &Damage::BadLength(0), true),
            Verdict::Torn(_)
        ));
    }

    #[test]
    fn a_damaged_length_is_corruption() {
        let mut bytes = event_frame(1);
        bytes.extend(event_frame(2));
        // The first length now points past the end of the file.
        bytes[2] = 0x10;
        assert!(
            matches!(classify(&bytes, &past_end(&bytes), true), Verdict::Corrupt(r) if r.contains("valid frame follows"))
        );
        // The same on the last frame alone: the whole event is still there.
        let mut last = event_frame(4);
        last[1] = 0x40;
        assert!(
            matches!(classify(&last, &past_end(&last), true), Verdict::Corrupt(r) if r.contains("not the beginning of an event"))
        );
        // A cut frame whose payload is damaged before the cut.
        let mut cut = event_frame(5);
        cut.truncate(40);
        cut[HEADER_LEN] = 9; // the format byte
        assert!(matches!(
            classify(&cut, &past_end(&cut), true),
            Verdict::Corrupt(_)
        ));
        // Garbage is not a torn write.
        let garbage = b"\x13\x37 not a frame at all, just garbage";
        let len = u32::from_le_bytes(garbage[..4].try_into().unwrap()) as usize;
        assert!(matches!(
            classify(garbage, &Damage::BadLength(len), true),
            Verdict::Corrupt(_)
        ));
    }

    #[test]
    fn a_complete_frame_with_a_bad_checksum_is_corruption() {
        let mut bytes = event_frame(6);
        bytes[20] ^= 0x80;
        let Parsed::BadChecksum { total, reason } = parse(&bytes) else {
            panic!("expected a checksum failure")
        };
        let damage = Damage::BadChecksum { total, reason };
        assert!(matches!(
            classify(&bytes, &damage, true),
            Verdict::Corrupt(_)
        ));
    }

    #[test]
    fn the_scanner_reads_bytes_in_memory_like_a_file() {
        let mut bytes = frame(b"one");
        bytes.extend(frame(b"two"));
        bytes.extend(&frame(b"three")[..6]);
        let path = Path::new("memory");
        let mut scanner = Scanner::new(&bytes[..], path, 0, bytes.len() as u64, 4);
        assert!(
            matches!(scanner.next().unwrap(), Scanned::Frame { pos: 0, payload } if payload == b"one")
        );
        assert!(
            matches!(scanner.next().unwrap(), Scanned::Frame { pos: 11, payload } if payload == b"two")
        );
        assert!(matches!(
            scanner.next().unwrap(),
            Scanned::Bad {
                pos: 22,
                damage: Damage::PartialHeader
            }
        ));
        assert_eq!(next_valid_frame(&bytes, 1), Ok(Some(11)));
        assert_eq!(next_valid_frame(&bytes, 12), Ok(None));
    }
}
