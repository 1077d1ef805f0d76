//! Offsets a partition declares lost: the ranges `floe repair` could recover
//! neither from the log nor from the lake.
//!
//! A partition's segments must follow each other without a hole: a missing
//! segment file would otherwise read as a smaller log. The only holes allowed
//! are the ones listed in `p-NNNN/gaps`, one `START END` (half-open) per line,
//! which only a repair writes, together with the segments around them.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

use floe_engine::Offset;

use crate::error::{Error, Result};

/// The file, in a partition directory.
pub(super) const GAPS_FILE: &str = "gaps";

/// The declared gaps of the partition in `dir`, ascending (none if no file).
pub(super) fn read(dir: &Path) -> Result<Vec<Range<Offset>>> {
    let path = dir.join(GAPS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading the gaps file", &path, e)),
    };
    parse(&text).map_err(|reason| Error::Corrupt {
        path: path.clone(),
        offset: 0,
        reason,
    })
}

fn parse(text: &str) -> std::result::Result<Vec<Range<Offset>>, String> {
    let mut gaps: Vec<Range<Offset>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {} is not `START END`: {line:?}", n + 1);
        let mut parts = line.split_whitespace();
        let start: Offset = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let end: Offset = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() || start >= end {
            return Err(bad());
        }
        if gaps.last().is_some_and(|g| g.end > start) {
            return Err(format!("line {}: gaps must ascend without overlap", n + 1));
        }
        gaps.push(start..end);
    }
    Ok(gaps)
}

/// Writes `gaps` into `dir` (a directory being built, synced by the caller).
pub(super) fn write(dir: &Path, gaps: &[Range<Offset>]) -> Result<()> {
    let path = dir.join(GAPS_FILE);
    let mut text = String::from(
        "# offsets floe repair declared lost (half-open START END); see docs/embedded-log.md\n",
    );
    for gap in gaps {
        text.push_str(&format!("{} {}\n", gap.start, gap.end));
    }
    File::create(&path)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| Error::io("writing the gaps file", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[3..5, 9..10]).unwrap();
        assert_eq!(read(dir.path()).unwrap(), vec![3..5, 9..10]);
        assert_eq!(read(&dir.path().join("none")).unwrap(), vec![]);
        assert!(parse("5 3\n").is_err());
        assert!(parse("1 4\n2 6\n").is_err());
        assert!(parse("1\n").is_err());
        assert!(parse("1 2 3\n").is_err());
    }
}
