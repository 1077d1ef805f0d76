//! `floe import FILE|-`: NDJSON write items (entities or commands, see
//! `WriteRequest::from_item`) from a file or stdin, in batches through
//! `Floe::write_many`.
//!
//! Resumable without applying anything twice:
//! - every line without its own `idempotency_key` gets one derived from its
//!   position, `PREFIX:LINE` (the prefix names the input: `--key-prefix`,
//!   or a hash of the file's canonical path, or `stdin`);
//! - after each batch that completes in order, the number of lines settled
//!   (acknowledged, or refused for good) is saved atomically under
//!   `DATA/imports/PREFIX.json`. A re-run skips those lines and sends the
//!   rest again with the same keys: the lines that were in flight when the
//!   previous run died (at most `--batch` x `--concurrency`, well inside
//!   the idempotency window) get their first outcome back, the others are
//!   applied.
//!
//! A line that is malformed or refused is reported with its line number and
//! the rest are imported; a retryable failure (the pipeline) stops the
//! import at that line, to be resumed by running it again.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use floe::{Config, Floe, HashFunction, WriteAck, WriteRequest};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// Where resume positions live, under the data directory.
const IMPORTS_DIR: &str = "imports";
/// Failures printed in the summary (all are printed on stderr).
const MAX_LISTED_FAILURES: usize = 100;

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The NDJSON file, or `-` for stdin.
    input: String,
    /// Lines per `write_many` call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Prefix of the derived idempotency keys and name of the resume
    /// position (default: a hash of the file's canonical path, or `stdin`).
    /// Give the same prefix to resume an input that moved.
    #[arg(long)]
    key_prefix: Option<String>,
    /// Start from the first line, ignoring a saved position (lines that
    /// were already applied get their first outcome back while their keys
    /// are in the idempotency window).
    #[arg(long)]
    from_start: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The saved resume position of one input.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    /// Lines settled from the start of the input.
    lines: u64,
    /// xxh3 of those lines' bytes: a re-run checks that the input it skips
    /// is the one settled, so another file under the same name (a newer
    /// export written over an older one) is refused instead of having its
    /// first lines skipped. Absent in positions older than the check.
    #[serde(default)]
    digest: Option<u64>,
}

/// One line that was not applied.
#[derive(Debug, Serialize)]
struct Failure {
    line: u64,
    error: String,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Lines of the input read in this run (skipped ones included).
    lines: u64,
    /// Lines skipped because an earlier run settled them.
    resumed_after: u64,
    /// Lines acknowledged in this run (a retry of an earlier run's line is
    /// acknowledged with its first outcome).
    applied: u64,
    /// Blank lines.
    blank: u64,
    /// `restore` lines this deployment was already at or past: nothing to
    /// change (an export imported again).
    unchanged: u64,
    /// Lines refused or malformed.
    failed: u64,
    /// The first failures.
    failures: Vec<Failure>,
    /// Set when a retryable failure stopped the import: re-run to resume.
    stopped_at_line: Option<u64>,
}

impl Summary {
    fn fail(&mut self, line: u64, error: String) {
        eprintln!("line {line}: {error}");
        self.failed += 1;
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(Failure { line, error });
        }
    }
}

pub(crate) async fn run(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch > 0 && args.concurrency > 0,
        "--batch and --concurrency must be at least 1"
    );
    // The lines a crash can leave in flight must stay in the window that
    // recognises their keys, or a re-run would apply them again.
    let in_flight = args.batch * args.concurrency;
    anyhow::ensure!(
        in_flight <= config.shards.dedup_window,
        "--batch x --concurrency is {in_flight}, more than shards.dedup_window ({}): a re-run after a crash could apply lines twice",
        config.shards.dedup_window
    );
    let prefix = match (&args.key_prefix, args.input.as_str()) {
        (Some(prefix), _) => prefix.clone(),
        (None, "-") => "stdin".to_string(),
        (None, path) => {
            let canonical =
                std::fs::canonicalize(path).with_context(|| format!("opening {path}"))?;
            let hash = HashFunction::Xxh3.hash(canonical.as_os_str().as_encoded_bytes());
            format!("import-{hash:016x}")
        }
    };
    anyhow::ensure!(
        !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "--key-prefix {prefix:?}: use letters, digits, '-', '_' and '.'"
    );
    let reader: Box<dyn BufRead + Send> = match args.input.as_str() {
        "-" => Box::new(std::io::BufReader::new(std::io::stdin())),
        path => Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(path).with_context(|| format!("opening {path}"))?,
        )),
    };
    let total_bytes = match args.input.as_str() {
        "-" => None,
        path => std::fs::metadata(path).ok().map(|m| m.len()),
    };
    let position_path = config
        .data_dir
        .join(IMPORTS_DIR)
        .join(format!("{prefix}.json"));
    let resume = if args.from_start {
        Position::default()
    } else {
        load_position(&position_path)?
    };
    let bar = match (args.quiet, total_bytes) {
        (true, _) => ProgressBar::hidden(),
        (false, Some(bytes)) => ProgressBar::new(bytes),
        (false, None) => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} {msg} ({elapsed})",
        )
        .context("progress template")?
        .progress_chars("=> "),
    );
    let floe = Floe::open(config).await?;
    let result = import(&floe, reader, &prefix, &resume, &args, &position_path, &bar).await;
    bar.finish_and_clear();
    floe.close().await?;
    let summary = result?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(line) = summary.stopped_at_line {
        anyhow::bail!(
            "the import stopped at line {line} on a retryable failure; run it again to resume"
        );
    }
    if summary.failed > 0 {
        anyhow::bail!(
            "{} of {} lines were not imported (listed above with their line numbers)",
            summary.failed,
            summary.lines - summary.resumed_after
        );
    }
    Ok(())
}

/// A batch on its way: its lines' numbers, how many lines it settles and
/// the digest of those, and the outcomes.
type Sent = (Vec<u64>, (u64, u64), Vec<floe::Result<WriteAck>>);

#[allow(clippy::too_many_arguments, reason = "one caller")]
async fn import(
    floe: &Floe,
    mut reader: Box<dyn BufRead + Send>,
    prefix: &str,
    resume: &Position,
    args: &ImportArgs,
    position_path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<Summary> {
    let start = resume.lines;
    let mut summary = Summary {
        resumed_after: start,
        ..Summary::default()
    };
    let mut in_flight: FuturesOrdered<_> = FuturesOrdered::new();
    let mut settled_through = start;
    let mut batch: Vec<(u64, WriteRequest)> = Vec::with_capacity(args.batch);
    // Malformed lines of batches not yet settled: reported in input order
    // with the batch they were read with.
    let mut malformed: VecDeque<Vec<Failure>> = VecDeque::new();
    let mut pending_malformed = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    let mut done = false;
    let mut stopped = false;
    while (!done && !stopped) || !in_flight.is_empty() {
        // Fill the pipeline of batches, then wait for the oldest.
        while !done && !stopped && in_flight.len() < args.concurrency {
            buf.clear();
            let read = reader
                .read_until(b'\n', &mut buf)
                .context("reading the input")?;
            bar.inc(read as u64);
            if read == 0 {
                done = true;
                anyhow::ensure!(
                    line_no >= start,
                    "the input has {line_no} lines, fewer than the {start} an earlier import of it settled ({}): it is another input under the same name; pass --from-start and a new --key-prefix",
                    position_path.display()
                );
            } else {
                line_no += 1;
                digest.update(&buf);
                if line_no == start
                    && let Some(settled) = resume.digest
                {
                    anyhow::ensure!(
                        digest.digest() == settled,
                        "the first {start} lines of the input differ from the ones an earlier import settled ({}): it is another input under the same name; pass --from-start and a new --key-prefix to import it from its first line",
                        position_path.display()
                    );
                }
                if line_no > start {
                    match parse_line(&buf, prefix, line_no) {
                        Ok(Some(request)) => batch.push((line_no, request)),
                        Ok(None) => summary.blank += 1,
                        Err(error) => pending_malformed.push(Failure {
                            line: line_no,
                            error,
                        }),
                    }
                }
            }
            if batch.len() >= args.batch
                || (done && (!batch.is_empty() || !pending_malformed.is_empty()))
            {
                let (lines, requests): (Vec<u64>, Vec<WriteRequest>) =
                    std::mem::take(&mut batch).into_iter().unzip();
                let through = (line_no, digest.digest());
                malformed.push_back(std::mem::take(&mut pending_malformed));
                in_flight.push_back(async move {
                    let outcomes = floe.write_many(requests).await;
                    (lines, through, outcomes)
                });
            }
        }
        let Some((lines, through, outcomes)): Option<Sent> = in_flight.next().await else {
            continue;
        };
        for failure in malformed.pop_front().unwrap_or_default() {
            summary.fail(failure.line, failure.error);
        }
        for (line, outcome) in lines.into_iter().zip(outcomes) {
            match outcome {
                Ok(_) => summary.applied += 1,
                Err(floe::Error::Engine(floe_engine::Error::AlreadyRestored { .. })) => {
                    summary.unchanged += 1
                }
                Err(e) if e.is_retryable() && !stopped => {
                    summary.fail(line, e.to_string());
                    summary.stopped_at_line = Some(line);
                    stopped = true;
                }
                Err(e) => summary.fail(line, e.to_string()),
            }
        }
        if !stopped {
            settled_through = through.0;
            save_position(
                position_path,
                &Position {
                    lines: through.0,
                    digest: Some(through.1),
                },
            )?;
        }
        bar.set_message(format!("{} lines applied", summary.applied));
    }
    // Lines read past the stop were not sent.
    summary.lines = if stopped { settled_through } else { line_no };
    Ok(summary)
}

/// One input line as a write: `None` for a blank line. A line without its
/// own idempotency key gets `PREFIX:LINE`, except a restore: it is
/// idempotent by its version, so a repeat is reported unchanged.
fn parse_line(bytes: &[u8], prefix: &str, line: u64) -> Result<Option<WriteRequest>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    // Editors on Windows start UTF-8 files with a byte order mark.
    let text = if line == 1 {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let request = WriteRequest::from_item(text).map_err(|e| e.to_string())?;
    Ok(Some(
        if request.idempotency_key_ref().is_some() || request.is_restore() {
            request
        } else {
            request.idempotency_key(format!("{prefix}:{line}"))
        },
    ))
}

fn load_position(path: &Path) -> anyhow::Result<Position> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the resume position {} is unreadable; remove it and re-run with --from-start",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Position::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the position to a temporary file, syncs it and renames it over
/// the old one: a crash leaves the old position or the new, never a torn one.
fn save_position(path: &Path, position: &Position) -> anyhow::Result<()> {
    let dir = path.parent().context("the position has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp: PathBuf = path.with_extension("json.tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec(position)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn a_byte_order_mark_is_skipped_on_the_first_line_only() {
        let line = "\u{feff}{\"namespace\":\"a\",\"entity_type\":\"T\",\"id\":\"1\",\"data\":{}}";
        assert!(matches!(parse_line(line.as_bytes(), "p", 1), Ok(Some(_))));
        assert!(parse_line(line.as_bytes(), "p", 2).is_err());
        assert!(matches!(
            parse_line("\u{feff}\n".as_bytes(), "p", 1),
            Ok(None)
        ));
    }
}
