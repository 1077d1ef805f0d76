//! Segment files: naming, the sparse index, recovery on open and reads.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use floe_engine::{Offset, Record, decode_event};

use super::frame::{self, Scanned, Scanner, Source, Verdict};
use crate::error::{Error, Result};

/// Bytes between two entries of the sparse index: a read scans at most about
/// this much before reaching its first record.
pub(super) const INDEX_INTERVAL: u64 = 8 * 1024;

/// Read size when scanning a whole segment on open.
const RECOVERY_CHUNK: usize = 1 << 20;

/// `<base offset, 20 digits>.seg`: names sort in offset order.
pub(super) fn file_name(base: Offset) -> String {
    format!("{base:020}.seg")
}

/// The base offset a segment file name encodes, if it is one.
pub(super) fn parse_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A sparse index entry: the record at `offset` starts at byte `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    pub(super) offset: Offset,
    pub(super) pos: u64,
}

/// A segment as readers see it: only committed records (fsync'd under
/// `FsyncPolicy::Always`). The writer may have written further.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) base: Offset,
    pub(super) path: PathBuf,
    /// Opened for reading (and appending, for the writer); reads use `pread`.
    pub(super) file: Arc<File>,
    /// Committed bytes.
    pub(super) len: u64,
    /// Committed records.
    pub(super) records: u64,
    /// Entries at least [`INDEX_INTERVAL`] bytes apart, ascending; the
    /// segment start `(base, 0)` is implicit.
    pub(super) index: Vec<IndexEntry>,
}

impl Segment {
    /// One past the last committed offset.
    pub(super) fn end_offset(&self) -> Offset {
        self.base + self.records
    }

    /// The closest indexed position at or before `offset`.
    pub(super) fn seek(&self, offset: Offset) -> IndexEntry {
        let i = self.index.partition_point(|e| e.offset <= offset);
        match i {
            0 => IndexEntry {
                offset: self.base,
                pos: 0,
            },
            _ => self.index[i - 1],
        }
    }

    /// Opens and checks a segment file of `partition`, rebuilding its index.
    ///
    /// Every frame's checksum is verified. A torn tail (see
    /// [`frame::classify`]) in the last segment of a partition is truncated
    /// away and logged: a crash during a write, nothing after it was
    /// acknowledged under `FsyncPolicy::Always`. Anything else is corruption
    /// and fails with [`Error::CorruptRecord`].
    pub(super) fn load(partition: u32, path: PathBuf, base: Offset, last: bool) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .append(last)
            .open(&path)
            .map_err(|e| Error::io("opening segment", &path, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of segment", &path, e))?
            .len();
        let checked = check(&file, &path, size, base, last, |_, _| {})?;
        let valid_len = match checked.outcome {
            Outcome::Clean => size,
            Outcome::Torn { pos, reason } => {
                tracing::warn!(
                    path = %path.display(),
                    at = pos,
                    dropped_bytes = size - pos,
                    records = checked.records,
                    %reason,
                    "truncating the torn tail of a segment"
                );
                pos
            }
            Outcome::Corrupt { pos, reason } => {
                return Err(Error::CorruptRecord {
                    partition,
                    path,
                    byte: pos,
                    record: base + checked.records,
                    reason,
                });
            }
        };
        if valid_len < size {
            file.set_len(valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("truncating the torn tail of segment", &path, e))?;
        }
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            len: valid_len,
            records: checked.records,
            index: checked.index,
        })
    }
}

/// How the frames of a segment end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Exactly after a valid frame (or the file is empty).
    Clean,
    /// In a torn tail starting at byte `pos`, which opening truncates.
    Torn {
        /// Where the torn bytes start.
        pos: u64,
        /// What they look like.
        reason: String,
    },
    /// At damage starting at byte `pos`.
    Corrupt {
        /// Where the damage starts.
        pos: u64,
        /// Why it is corruption and not a torn tail.
        reason: String,
    },
}

/// What [`check`] found: the valid frames before the first bad byte.
#[derive(Debug)]
pub(super) struct Checked {
    /// Valid frames before the outcome's position.
    pub(super) records: u64,
    /// The sparse index of those frames.
    pub(super) index: Vec<IndexEntry>,
    /// How the frames end.
    pub(super) outcome: Outcome,
}

/// Scans a segment's `size` bytes from the start, calling `on_frame` with
/// every valid frame's position and payload, up to the first bad byte, which
/// [`frame::classify`] judges.
pub(super) fn check<S: Source + ?Sized>(
    source: &S,
    path: &Path,
    size: u64,
    base: Offset,
    last: bool,
    mut on_frame: impl FnMut(u64, &[u8]),
) -> Result<Checked> {
    let mut records = 0;
    let mut index = Vec::new();
    let mut last_indexed = 0;
    let mut scanner = Scanner::new(source, path, 0, size, RECOVERY_CHUNK);
    let outcome = loop {
        match scanner.next()? {
            Scanned::Frame { pos, payload } => {
                if pos - last_indexed >= INDEX_INTERVAL {
                    index.push(IndexEntry {
                        offset: base + records,
                        pos,
                    });
                    last_indexed = pos;
                }
                on_frame(pos, payload);
                records += 1;
            }
            Scanned::End => break Outcome::Clean,
            Scanned::Bad { pos, damage } => {
                let mut rest = vec![0; (size - pos) as usize];
                source
                    .read_exact_at(&mut rest, pos)
                    .map_err(|e| Error::io("reading segment", path, e))?;
                break match frame::classify(&rest, &damage, last) {
                    Verdict::Torn(reason) => Outcome::Torn { pos, reason },
                    Verdict::Corrupt(reason) => Outcome::Corrupt { pos, reason },
                };
            }
        }
    };
    Ok(Checked {
        records,
        index,
        outcome,
    })
}

/// The committed part of one segment that a read covers, captured under the
/// partition lock and then read without it.
#[derive(Debug)]
pub(super) struct ReadSlice {
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
    /// Where to start scanning.
    pub(super) start: IndexEntry,
    /// Committed bytes of the segment.
    pub(super) end_pos: u64,
}

impl ReadSlice {
    pub(super) fn of(segment: &Segment, from: Offset) -> ReadSlice {
        ReadSlice {
            file: Arc::clone(&segment.file),
            path: segment.path.clone(),
            start: segment.seek(from),
            end_pos: segment.len,
        }
    }

    /// Appends the records from offset `from` on to `out` until `out` holds `max`.
    pub(super) fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<()> {
        let chunk = (max.saturating_mul(1024)).clamp(64 << 10, 1 << 20);
        let mut scanner =
            Scanner::new(&*self.file, &self.path, self.start.pos, self.end_pos, chunk);
        let mut offset = self.start.offset;
        while out.len() < max {
            match scanner.next()? {
                Scanned::Frame { pos, payload } => {
                    if offset >= from {
                        let event = decode_event(payload).map_err(|e| Error::Corrupt {
                            path: self.path.clone(),
                            offset: pos,
                            reason: format!("record {offset} does not decode: {e}"),
                        })?;
                        out.push(Record {
                            partition,
                            offset,
                            event,
                        });
                    }
                    offset += 1;
                }
                Scanned::End => break,
                Scanned::Bad { pos, damage } => {
                    return Err(Error::Corrupt {
                        path: self.path.clone(),
                        offset: pos,
                        reason: format!("{damage} (in committed data)"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Creates an empty segment file (which must not exist yet).
pub(super) fn create(dir: &Path, base: Offset) -> Result<(PathBuf, File)> {
    let path = dir.join(file_name(base));
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("creating segment", &path, e))?;
    Ok((path, file))
}

/// Makes a directory's entries (created, renamed files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_sort() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_file_name("00000000000000000042.tmp"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn seek_finds_the_closest_entry_at_or_before() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = create(dir.path(), 100).unwrap();
        let segment = Segment {
            base: 100,
            path,
            file: Arc::new(file),
            len: 0,
            records: 0,
            index: vec![
                IndexEntry {
                    offset: 110,
                    pos: 9000,
                },
                IndexEntry {
                    offset: 120,
                    pos: 18000,
                },
            ],
        };
        assert_eq!(
            segment.seek(100),
            IndexEntry {
                offset: 100,
                pos: 0
            }
        );
        assert_eq!(segment.seek(109).pos, 0);
        assert_eq!(segment.seek(110).pos, 9000);
        assert_eq!(segment.seek(119).pos, 9000);
        assert_eq!(segment.seek(500).pos, 18000);
    }
}
