//! Rebuilding a damaged partition from what survives: the lake's events and
//! the log's valid frames.
//!
//! A repair runs on a closed log (it takes the directory's lock) in three
//! steps, so that a dry run shows exactly what a real one would do:
//! 1. [`LogRepair::scan`] walks a partition's segment files leniently: every
//!    valid frame, every damaged region (file, bytes, how many records it can
//!    have held), the torn tail, and an upper bound on the offsets the log
//!    ever handed out.
//! 2. [`PartitionScan::plan`] merges that with the lake's events of the
//!    partition (at their original offsets, all of them below the lake's
//!    committed offset `C`): offsets below `C` come from the lake; valid
//!    frames the lake does not hold keep their offsets when those are known
//!    and at or above `C`, and otherwise get fresh offsets above everything
//!    the log can have handed out (events are idempotent and order-free per
//!    entity, so only uniqueness matters). What neither source holds is
//!    reported, range by range, and declared in the partition's `gaps` file.
//! 3. [`LogRepair::apply`] writes the new partition beside the old one, syncs
//!    it, and swaps the directories; the damaged directory is kept as
//!    `p-NNNN.damaged-<ms>` for inspection.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use floe_engine::{Event, Offset, Record, decode_event};
use uuid::Uuid;

use super::frame::{self, Damage, HEADER_LEN, Parsed, Verdict};
use super::options::LogOptions;
use super::{gaps, segment, store};
use crate::error::{Error, Result};

/// The smallest frame there can be: a header and an event whose strings are
/// all empty and which has no state. A damaged region of `n` bytes held at
/// most `ceil(n / MIN_FRAME_LEN)` records.
pub(super) const MIN_FRAME_LEN: u64 = HEADER_LEN as u64 + 67;

/// A repair session: holds the log directory's lock (no log can open it
/// meanwhile) and checks its meta file.
#[derive(Debug)]
pub struct LogRepair {
    dir: PathBuf,
    options: LogOptions,
    _lock: File,
}

/// One thing a lenient scan found, in file order.
#[derive(Debug)]
enum Piece {
    /// A valid frame; `offset` is `None` when damage of unknown size came
    /// before it in its segment and nothing after it fixes its position.
    Frame {
        event: Box<Event>,
        offset: Option<Offset>,
    },
    /// Damaged bytes.
    Damaged(DamagedRegion),
}

/// Damaged bytes of a segment and how many records they can have held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRegion {
    /// The segment file.
    pub path: PathBuf,
    /// Byte range in the file.
    pub bytes: Range<u64>,
    /// Offset of the first record the region held, when known.
    pub first_offset: Option<Offset>,
    /// How many records the region held (exact when both ends are equal).
    pub records: RangeInclusive<u64>,
    /// What is wrong.
    pub reason: String,
}

/// A torn tail a repair drops, as opening the log would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the torn bytes start.
    pub at: u64,
    /// How many bytes are dropped.
    pub bytes: u64,
}

/// What [`LogRepair::scan`] found in one partition.
#[derive(Debug)]
pub struct PartitionScan {
    partition: u32,
    /// First offset the partition's files hold (retention deleted the rest).
    low: Offset,
    pieces: Vec<Piece>,
    gaps: Vec<Range<Offset>>,
    torn: Option<TornTail>,
    /// No offset the log handed out is at or above this.
    upper: Offset,
    /// Holes between segments that no gap declares (missing files).
    missing: Vec<Range<Offset>>,
}

/// Offsets that neither the log nor the lake holds after a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    /// The offsets.
    pub offsets: Range<Offset>,
    /// Declared lost by an earlier repair (nothing new is lost here).
    pub earlier: bool,
}

/// What a repair of one partition does (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The pipeline partition.
    pub partition: u32,
    /// First offset of the repaired partition.
    pub low: Offset,
    /// The lake's committed next offset for the partition.
    pub lake_committed: Offset,
    /// Upper bound of the offsets the damaged log had handed out.
    pub log_high: Offset,
    /// The high watermark after the repair (new records get offsets from here).
    pub new_high: Offset,
    /// Records rebuilt from the lake.
    pub from_lake: u64,
    /// Valid frames kept from the log that the lake does not hold.
    pub from_log: u64,
    /// Of `from_log`, frames whose offset was unknown or taken by the lake's
    /// record, placed at fresh offsets at the end.
    pub renumbered: u64,
    /// Damaged regions found in the segment files.
    pub damage: Vec<DamagedRegion>,
    /// Holes between segment files that no gap declared.
    pub missing: Vec<Range<Offset>>,
    /// A torn tail dropped (never acknowledged under `fsync = always`).
    pub torn_tail: Option<TornTail>,
    /// Offsets that neither source holds: unrecoverable.
    pub lost: Vec<LostRange>,
    /// Whether the partition needs rewriting at all.
    pub needed: bool,
}

/// A planned repair: the report and the records the new partition holds.
#[derive(Debug)]
pub struct RepairPlan {
    /// What the repair does.
    pub report: RepairReport,
    records: BTreeMap<Offset, Event>,
}

impl LogRepair {
    /// Locks the log in `dir` for a repair. The log must exist with
    /// `options.partitions` partitions.
    pub fn open(dir: &Path, options: LogOptions) -> Result<LogRepair> {
        options.validate()?;
        if !dir.join(store::META_FILE).exists() {
            return Err(Error::InvalidOptions(format!(
                "{} holds no embedded log (no {} file)",
                dir.display(),
                store::META_FILE
            )));
        }
        let lock = store::lock(dir)?;
        store::check_meta(dir, options.partitions)?;
        Ok(LogRepair {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
        })
    }

    /// Scans one partition's segment files without changing them.
    pub fn scan(&self, partition: u32) -> Result<PartitionScan> {
        if partition >= self.options.partitions {
            return Err(Error::UnknownPartition {
                partition,
                partitions: self.options.partitions,
            });
        }
        let dir = store::partition_dir(&self.dir, partition);
        store::finish_interrupted_repair(&self.dir, partition, &dir)?;
        let bases = if dir.exists() {
            store::list_segments(&dir)?
        } else {
            Vec::new()
        };
        let gaps = if dir.exists() {
            gaps::read(&dir)?
        } else {
            Vec::new()
        };
        let mut scan = PartitionScan {
            partition,
            low: bases.first().copied().unwrap_or(0),
            pieces: Vec::new(),
            gaps,
            torn: None,
            upper: bases.first().copied().unwrap_or(0),
            missing: Vec::new(),
        };
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment::file_name(base));
            let bytes = fs::read(&path).map_err(|e| Error::io("reading segment", &path, e))?;
            let next_base = bases.get(i + 1).copied();
            scan.segment(path, &bytes, base, next_base);
        }
        Ok(scan)
    }

    /// Writes the planned partition and swaps it in (no-op when not needed).
    pub fn apply(&self, plan: &RepairPlan) -> Result<()> {
        let report = &plan.report;
        if !report.needed {
            return Ok(());
        }
        let partition = report.partition;
        let dir = store::partition_dir(&self.dir, partition);
        let building = store::repair_dir(&self.dir, partition);
        if building.exists() {
            fs::remove_dir_all(&building)
                .map_err(|e| Error::io("removing an unfinished repair", &building, e))?;
        }
        fs::create_dir_all(&building)
            .map_err(|e| Error::io("creating the repair directory", &building, e))?;
        write_segments(&building, plan, self.options.segment_bytes)?;
        let holes: Vec<Range<Offset>> = report.lost.iter().map(|l| l.offsets.clone()).collect();
        gaps::write(&building, &holes)?;
        let marker = building.join(store::REPAIRED_MARKER);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("writing the repair marker", &marker, e))?;
        segment::sync_dir(&building)?;
        // From here a crash is finished by the next open or repair (see
        // `store::finish_interrupted_repair`).
        if dir.exists() {
            let kept = self.dir.join(format!(
                "p-{partition:04}.damaged-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            ));
            fs::rename(&dir, &kept)
                .map_err(|e| Error::io("moving the damaged partition to", &kept, e))?;
            segment::sync_dir(&self.dir)?;
        }
        fs::rename(&building, &dir)
            .map_err(|e| Error::io("moving the repaired partition into", &dir, e))?;
        segment::sync_dir(&self.dir)?;
        let marker = dir.join(store::REPAIRED_MARKER);
        fs::remove_file(&marker).map_err(|e| Error::io("removing", &marker, e))?;
        segment::sync_dir(&dir)
    }
}

impl PartitionScan {
    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// First offset the partition's files hold: the lake's events from here
    /// up to its committed offset are what [`PartitionScan::plan`] needs.
    pub fn low(&self) -> Offset {
        self.low
    }

    /// Whether any frame is damaged, or a segment file is missing.
    pub fn is_damaged(&self) -> bool {
        !self.missing.is_empty() || self.pieces.iter().any(|p| matches!(p, Piece::Damaged(_)))
    }

    /// No offset the log handed out is at or above this (the high watermark
    /// when nothing is damaged).
    pub fn high_bound(&self) -> Offset {
        self.upper
    }

    /// The report of a partition a repair leaves alone.
    pub fn healthy_report(&self, committed: Offset) -> RepairReport {
        RepairReport {
            partition: self.partition,
            low: self.low,
            lake_committed: committed,
            log_high: self.upper,
            new_high: self.upper,
            from_lake: 0,
            from_log: 0,
            renumbered: 0,
            damage: Vec::new(),
            missing: Vec::new(),
            torn_tail: self.torn.clone(),
            lost: Vec::new(),
            needed: false,
        }
    }

    /// Scans one segment's bytes into pieces.
    fn segment(&mut self, path: PathBuf, bytes: &[u8], base: Offset, next_base: Option<Offset>) {
        let last = next_base.is_none();
        self.upper = self.upper.max(base);
        let mut next = Some(base);
        let mut pos = 0usize;
        // Pieces of this segment after the last damage of unknown size.
        let mut unanchored_from = None;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let damage = match frame::parse(rest) {
                Parsed::Frame(total) => match decode_event(&rest[HEADER_LEN..total]) {
                    Ok(event) => {
                        self.pieces.push(Piece::Frame {
                            event: Box::new(event),
                            offset: next,
                        });
                        self.upper = match next {
                            Some(o) => self.upper.max(o + 1),
                            None => self.upper + 1,
                        };
                        next = next.map(|o| o + 1);
                        pos += total;
                        continue;
                    }
                    // A checksum that matches bytes that are not an event:
                    // one record, written wrong.
                    Err(e) => Damage::BadChecksum {
                        total,
                        reason: format!("the frame's checksum matches but it does not decode: {e}"),
                    },
                },
                // `rest` runs to the end of the file: incomplete is past it.
                Parsed::Incomplete(_) if rest.len() < HEADER_LEN => Damage::PartialHeader,
                Parsed::Incomplete(need) => Damage::PastEnd {
                    need,
                    available: rest.len() as u64,
                },
                Parsed::BadLength(len) => Damage::BadLength(len),
                Parsed::BadChecksum { total, reason } => Damage::BadChecksum { total, reason },
            };
            let reason = match frame::classify(rest, &damage, last) {
                Verdict::Torn(_) => {
                    self.torn = Some(TornTail {
                        path: path.clone(),
                        at: pos as u64,
                        bytes: rest.len() as u64,
                    });
                    break;
                }
                Verdict::Corrupt(reason) => reason,
            };
            let start = pos as u64;
            // A complete frame followed by a valid one (or the end): its
            // length was right, so it is exactly one lost record.
            let single = match damage {
                Damage::BadChecksum { total, .. } => (total == rest.len()
                    || matches!(frame::parse(&rest[total..]), Parsed::Frame(_)))
                .then_some(total),
                _ => None,
            };
            let (end, records) = match single {
                Some(total) => (pos + total, 1..=1),
                None => {
                    let end = match frame::next_valid_frame(bytes, pos + 1) {
                        Ok(Some(q)) => q,
                        _ => bytes.len(),
                    };
                    (end, 1..=((end - pos) as u64).div_ceil(MIN_FRAME_LEN))
                }
            };
            self.upper = match next {
                Some(o) => self.upper.max(o + records.end()),
                None => self.upper + records.end(),
            };
            self.pieces.push(Piece::Damaged(DamagedRegion {
                path: path.clone(),
                bytes: start..end as u64,
                first_offset: next,
                records: records.clone(),
                reason,
            }));
            next = match single {
                Some(_) => next.map(|o| o + 1),
                None => {
                    unanchored_from = Some(self.pieces.len());
                    None
                }
            };
            pos = end;
        }
        let Some(next_base) = next_base else { return };
        // The segment ends where the next one starts, or where a declared
        // gap before it starts.
        let end = self
            .gaps
            .iter()
            .find(|g| g.end == next_base)
            .map_or(next_base, |g| g.start);
        match next {
            Some(reached) if reached != end => {
                // A hole no gap declares, or a segment that overlaps the
                // next: the offsets in between are unaccounted for.
                if reached < next_base {
                    self.missing.push(reached..next_base);
                }
            }
            Some(_) => {}
            None => {
                // Count back from the segment's end: the frames after the
                // last damage are the segment's last records.
                let from = unanchored_from.expect("set with `next = None`");
                let frames = self.pieces[from..]
                    .iter()
                    .filter(|p| matches!(p, Piece::Frame { .. }))
                    .count() as u64;
                let mut offset = end.saturating_sub(frames);
                for piece in &mut self.pieces[from..] {
                    if let Piece::Frame { offset: o, .. } = piece {
                        *o = Some(offset);
                        offset += 1;
                    }
                }
            }
        }
        // A sealed segment's records end at the next one's base, exactly.
        self.upper = self.upper.max(next_base);
    }

    /// Merges the scan with the lake's events of this partition: `lake`
    /// holds the lake's records of the partition from [`PartitionScan::low`]
    /// up to `committed` (its committed next offset), at their offsets.
    pub fn plan(&self, lake: Vec<Record>, committed: Offset) -> Result<RepairPlan> {
        let mut records: BTreeMap<Offset, Event> = BTreeMap::new();
        let mut lake_ids: HashMap<Uuid, Offset> = HashMap::new();
        for record in lake {
            if record.partition != self.partition
                || record.offset < self.low
                || record.offset >= committed
            {
                continue;
            }
            lake_ids.insert(record.event.event_id, record.offset);
            records.insert(record.offset, record.event);
        }
        let from_lake = records.len() as u64;
        let (mut from_log, mut unplaced) = (0u64, Vec::new());
        for piece in &self.pieces {
            let Piece::Frame { event, offset } = piece else {
                continue;
            };
            if lake_ids.contains_key(&event.event_id) {
                continue; // the lake holds it, at its original offset
            }
            from_log += 1;
            match offset {
                Some(o) if *o >= committed && !records.contains_key(o) => {
                    records.insert(*o, (**event).clone());
                }
                // Unknown position, or an offset below the lake's: the lake
                // holds every offset below `committed`, so this offset was
                // handed out twice (a log truncated and written again).
                _ => unplaced.push((**event).clone()),
            }
        }
        let base = [
            committed,
            self.upper,
            records.last_key_value().map_or(0, |(o, _)| o + 1),
            self.low,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let renumbered = unplaced.len() as u64;
        for (i, event) in unplaced.into_iter().enumerate() {
            records.insert(base + i as Offset, event);
        }
        let new_high = base + renumbered;
        let lost = holes(self.low, new_high, &records)
            .into_iter()
            .map(|offsets| LostRange {
                earlier: self
                    .gaps
                    .iter()
                    .any(|g| g.start <= offsets.start && offsets.end <= g.end),
                offsets,
            })
            .collect::<Vec<_>>();
        let damage: Vec<DamagedRegion> = self
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Damaged(d) => Some(d.clone()),
                Piece::Frame { .. } => None,
            })
            .collect();
        let needed = !damage.is_empty()
            || !self.missing.is_empty()
            || self.upper < committed
            || renumbered > 0;
        Ok(RepairPlan {
            report: RepairReport {
                partition: self.partition,
                low: self.low,
                lake_committed: committed,
                log_high: self.upper,
                new_high,
                from_lake,
                from_log,
                renumbered,
                damage,
                missing: self.missing.clone(),
                torn_tail: self.torn.clone(),
                lost,
                needed,
            },
            records,
        })
    }
}

/// The maximal ranges of `low..high` that `records` does not hold.
fn holes(low: Offset, high: Offset, records: &BTreeMap<Offset, Event>) -> Vec<Range<Offset>> {
    let mut holes = Vec::new();
    let mut expected = low;
    for &offset in records.range(low..high).map(|(o, _)| o) {
        if offset > expected {
            holes.push(expected..offset);
        }
        expected = offset + 1;
    }
    if expected < high {
        holes.push(expected..high);
    }
    holes
}

/// Writes the plan's records as segments: one starts at the partition's low
/// offset, a new one after every hole and whenever one would outgrow
/// `segment_bytes`; after a trailing hole an empty one at the new high.
fn write_segments(dir: &Path, plan: &RepairPlan, segment_bytes: u64) -> Result<()> {
    let report = &plan.report;
    let mut base = report.low;
    let mut buf = Vec::new();
    let mut expected = report.low;
    let flush = |base: Offset, buf: &mut Vec<u8>| -> Result<()> {
        let (path, mut file) = segment::create(dir, base)?;
        file.write_all(buf)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("writing repaired segment", &path, e))?;
        buf.clear();
        Ok(())
    };
    for (&offset, event) in &plan.records {
        let mut frame = Vec::new();
        frame::push_frame(&mut frame, event)?;
        let full = !buf.is_empty() && (buf.len() + frame.len()) as u64 > segment_bytes;
        if offset != expected || full {
            flush(base, &mut buf)?;
            base = offset;
        }
        buf.extend_from_slice(&frame);
        expected = offset + 1;
    }
    flush(base, &mut buf)?;
    if expected < report.new_high {
        flush(report.new_high, &mut buf)?;
    }
    Ok(())
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.partition;
        if !self.needed {
            return writeln!(
                f,
                "partition {p}: healthy (offsets {}..{}, lake committed {}); nothing to repair",
                self.low, self.log_high, self.lake_committed
            );
        }
        writeln!(
            f,
            "partition {p}: log offsets {}..{} (upper bound), lake committed {}",
            self.low, self.log_high, self.lake_committed
        )?;
        for d in &self.damage {
            let first = d.first_offset.map_or("unknown".into(), |o| o.to_string());
            let (lo, hi) = (d.records.start(), d.records.end());
            let count = if lo == hi {
                format!("{lo} record(s)")
            } else {
                format!("{lo} to {hi} records")
            };
            writeln!(
                f,
                "  damaged: {} bytes {}..{} ({count}, first offset {first}): {}",
                d.path.display(),
                d.bytes.start,
                d.bytes.end,
                d.reason
            )?;
        }
        for m in &self.missing {
            writeln!(
                f,
                "  missing: no segment holds offsets {}..{}",
                m.start, m.end
            )?;
        }
        if let Some(t) = &self.torn_tail {
            writeln!(
                f,
                "  torn tail: {} from byte {} ({} bytes, never acknowledged) is dropped",
                t.path.display(),
                t.at,
                t.bytes
            )?;
        }
        writeln!(
            f,
            "  rebuilt: {} records from the lake, {} valid frames from the log ({} at fresh offsets); new high watermark {}",
            self.from_lake, self.from_log, self.renumbered, self.new_high
        )?;
        let new: Vec<&LostRange> = self.lost.iter().filter(|l| !l.earlier).collect();
        if new.is_empty() {
            writeln!(f, "  unrecoverable: nothing")?;
        }
        for l in new {
            writeln!(
                f,
                "  UNRECOVERABLE: offsets {}..{} ({} offsets): damaged in the log and not in the lake (a damaged region may have held fewer records than the offsets it reserves)",
                l.offsets.start,
                l.offsets.end,
                l.offsets.end - l.offsets.start
            )?;
        }
        for l in self.lost.iter().filter(|l| l.earlier) {
            writeln!(
                f,
                "  lost earlier: offsets {}..{} (declared by an earlier repair)",
                l.offsets.start, l.offsets.end
            )?;
        }
        Ok(())
    }
}
