//! The audit log: one JSON line per control-plane call and per refused
//! call, with who (the token's name), what, when and the outcome. A
//! dedicated thread appends and flushes, so a slow disk never holds a
//! request; lines still queued when the server stops are written before
//! `AuditLog::close` returns.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::{Error, Result};

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuditEntry {
    /// RFC 3339 UTC time the call arrived.
    pub(crate) ts: String,
    /// The token's name; `null` when no valid token was presented.
    pub(crate) who: Option<String>,
    /// The caller's role.
    pub(crate) role: Option<&'static str>,
    /// The action (`health.system`, `faults.set`, `entity.put`, ...).
    pub(crate) action: &'static str,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) remote: Option<String>,
    /// HTTP status sent.
    pub(crate) status: u16,
    /// `ok`, `denied` (401/403), `rejected` (other 4xx) or `error` (5xx).
    pub(crate) outcome: &'static str,
    pub(crate) duration_ms: f64,
}

/// The writer thread's mailbox.
#[derive(Debug)]
pub(crate) struct AuditLog {
    tx: Mutex<Option<mpsc::Sender<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens `path` for appending (creating it and its directory).
    pub(crate) fn open(path: &Path) -> Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening audit log {}", path.display()), e))?;
        let (tx, rx) = mpsc::channel::<String>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("floe-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut batch = line;
                    batch.push('\n');
                    while let Ok(more) = rx.try_recv() {
                        batch.push_str(&more);
                        batch.push('\n');
                    }
                    if let Err(e) = file.write_all(batch.as_bytes()).and_then(|()| file.flush()) {
                        tracing::error!(path = %shown, error = %e, "cannot write the audit log");
                    }
                }
            })
            .map_err(|e| Error::io("starting the audit writer", e))?;
        Ok(AuditLog {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn record(&self, entry: &AuditEntry) {
        let line = match serde_json::to_string(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an audit entry");
                return;
            }
        };
        if let Some(tx) = &*self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
            // The writer lives as long as the sender: a send cannot fail.
            let _ = tx.send(line);
        }
    }

    /// Writes what is queued and stops the writer.
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// `2026-11-21T23:18:47.123Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_303_127, 123), "2026-11-21T23:18:47.123Z");
    }

    #[test]
    fn lines_are_appended_and_flushed_by_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for status in [200, 403] {
            log.record(&AuditEntry {
                ts: rfc3339(SystemTime::now()),
                who: Some("ops".into()),
                role: Some("operator"),
                action: "faults.set",
                method: "PUT".into(),
                path: "/x".into(),
                remote: None,
                status,
                outcome: "ok",
                duration_ms: 1.0,
            });
        }
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["status"], 403);
        assert_eq!(lines[0]["who"], "ops");
    }
}
