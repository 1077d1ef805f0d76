//! Time routing: instants (RFC 3339 or epoch milliseconds), calendar
//! periods (day, ISO week, month, year) at a fixed UTC offset, their labels,
//! and the compiled period table of [`Strategy::Time`](crate::Strategy::Time).
//!
//! Everything here is pure arithmetic on the proleptic Gregorian calendar
//! (Howard Hinnant's `days_from_civil`), so every process, machine and
//! release puts an instant in the same period. A period is an `i64` index
//! (days, weeks, months or years since 1970 at the configured offset); its
//! label (`2024-03`, `2024-03-15`, `2024-W11`, `2024`) is what the topology
//! document stores, so a period can later be named by archival.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MS_PER_DAY: i64 = 86_400_000;

/// The length of a time strategy's periods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Calendar days, labelled `2024-03-15`.
    Day,
    /// ISO 8601 weeks (Monday to Sunday), labelled `2024-W11`.
    Week,
    /// Calendar months (seed 002's monthly partitions), labelled `2024-03`.
    #[default]
    Month,
    /// Calendar years, labelled `2024`.
    Year,
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
        })
    }
}

impl FromStr for Period {
    type Err = Error;

    fn from_str(s: &str) -> Result<Period> {
        match s.trim() {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            "year" => Ok(Period::Year),
            other => Err(Error::InvalidTopology(format!(
                "time: unknown period {other:?}: expected day, week, month or year"
            ))),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads `len` ASCII digits at `at`.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let part = b.get(at..at + len)?;
    part.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD` at the start of `b`, checked against the calendar.
fn date(b: &[u8]) -> Option<(i64, u32, u32)> {
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let year = i64::from(year);
    ((1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day))
        .then_some((year, month, day))
}

/// An instant as milliseconds since the Unix epoch (UTC), from the text of
/// a time field: an integer (epoch milliseconds, as a JSON number becomes in
/// a partition key), an RFC 3339 date-time
/// (`2024-03-15T10:30:00Z`, `2024-03-15t10:30:00.250+02:00`, a space for the
/// `T`), or a bare date (`2024-03-15`, midnight UTC). A leap second (`:60`)
/// counts as the last millisecond of its minute, so it stays in its day.
/// `None` for anything else (including impossible dates such as
/// `2023-02-29`).
pub fn parse_instant(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let numeric = match b.first() {
        Some(b'-') => b.len() > 1 && b[1..].iter().all(u8::is_ascii_digit),
        Some(_) => b.iter().all(u8::is_ascii_digit),
        None => return None,
    };
    if numeric {
        return text.parse::<i64>().ok();
    }
    let (year, month, day) = date(b)?;
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(days * MS_PER_DAY);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    if b.get(16) != Some(&b':') {
        return None;
    }
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        match at - start {
            0 => return None,
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }
    let offset_minutes: i64 = match b.get(at) {
        Some(b'Z' | b'z') if b.len() == at + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == at + 6 && b[at + 3] == b':' => {
            let (h, m) = (digits(b, at + 1, 2)?, digits(b, at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = i64::from(h * 60 + m);
            if sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let (second, millis) = if second == 60 {
        (59, 999)
    } else {
        (second, millis)
    };
    let local = days * MS_PER_DAY
        + i64::from(hour) * 3_600_000
        + i64::from(minute) * 60_000
        + i64::from(second) * 1000
        + i64::from(millis);
    Some(local - offset_minutes * 60_000)
}

/// A fixed UTC offset in minutes from `+HH:MM` / `-HH:MM` / `Z`.
pub fn parse_offset(text: &str) -> Option<i32> {
    let b = text.as_bytes();
    if text == "Z" || text == "z" {
        return Some(0);
    }
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let (h, m) = (digits(b, 1, 2)?, digits(b, 4, 2)?);
    if h > 23 || m > 59 {
        return None;
    }
    let minutes = (h * 60 + m) as i32;
    match b[0] {
        b'+' => Some(minutes),
        b'-' => Some(-minutes),
        _ => None,
    }
}

impl Period {
    /// The period holding local day `days` (days since 1970-01-01 at the
    /// strategy's offset).
    fn of_day(self, days: i64) -> i64 {
        match self {
            Period::Day => days,
            // Week 0 is Monday 1969-12-29 to Sunday 1970-01-04.
            Period::Week => (days + 3).div_euclid(7),
            Period::Month => {
                let (y, m, _) = civil_from_days(days);
                y * 12 + i64::from(m) - 1
            }
            Period::Year => civil_from_days(days).0,
        }
    }

    /// The period holding `instant_ms` (UTC) at `offset_minutes`.
    pub fn of_instant(self, instant_ms: i64, offset_minutes: i32) -> i64 {
        let local = instant_ms.saturating_add(i64::from(offset_minutes) * 60_000);
        self.of_day(local.div_euclid(MS_PER_DAY))
    }

    /// The first local day of period `index`.
    fn first_day(self, index: i64) -> i64 {
        match self {
            Period::Day => index,
            Period::Week => index * 7 - 3,
            Period::Month => {
                days_from_civil(index.div_euclid(12), (index.rem_euclid(12) + 1) as u32, 1)
            }
            Period::Year => days_from_civil(index, 1, 1),
        }
    }

    /// The first instant (UTC milliseconds) of period `index` at
    /// `offset_minutes`.
    pub fn start_ms(self, index: i64, offset_minutes: i32) -> i64 {
        self.first_day(index) * MS_PER_DAY - i64::from(offset_minutes) * 60_000
    }

    /// The label of period `index`: `2024-03-15`, `2024-W11`, `2024-03`,
    /// `2024`.
    pub fn label(self, index: i64) -> String {
        match self {
            Period::Day => {
                let (y, m, d) = civil_from_days(index);
                format!("{y:04}-{m:02}-{d:02}")
            }
            Period::Week => {
                let thursday = index * 7;
                let (year, _, _) = civil_from_days(thursday);
                let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
                format!("{year:04}-W{week:02}")
            }
            Period::Month => format!(
                "{:04}-{:02}",
                index.div_euclid(12),
                index.rem_euclid(12) + 1
            ),
            Period::Year => format!("{index:04}"),
        }
    }

    /// The period a label names; `None` unless the label is the period's
    /// canonical form (years 0000 to 9999).
    pub fn parse_label(self, label: &str) -> Option<i64> {
        let b = label.as_bytes();
        let index = match self {
            Period::Day if b.len() == 10 => {
                let (y, m, d) = date(b)?;
                days_from_civil(y, m, d)
            }
            Period::Week if b.len() == 8 && &b[4..6] == b"-W" => {
                let (year, week) = (i64::from(digits(b, 0, 4)?), i64::from(digits(b, 6, 2)?));
                // Week 1 holds January 4th.
                let jan4 = days_from_civil(year, 1, 4);
                let monday = jan4 - (jan4 + 3).rem_euclid(7) + (week - 1) * 7;
                (monday + 3).div_euclid(7)
            }
            Period::Month if b.len() == 7 && b[4] == b'-' => {
                let (y, m) = (i64::from(digits(b, 0, 4)?), digits(b, 5, 2)?);
                if !(1..=12).contains(&m) {
                    return None;
                }
                y * 12 + i64::from(m) - 1
            }
            Period::Year if b.len() == 4 => i64::from(digits(b, 0, 4)?),
            _ => return None,
        };
        // Week 00 or 54, say, would name another week: only the canonical
        // label of the index counts.
        (self.label(index) == label).then_some(index)
    }
}

/// Splits a composite partition key (parts joined by `:`, with `\` and `:`
/// escaped by `\`, as the key extractor writes them) and returns part
/// `index` as written (still escaped).
pub(crate) fn raw_part(key: &str, index: u32) -> Option<&str> {
    let b = key.as_bytes();
    let (mut part, mut start, mut i) = (0u32, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b':' => {
                if part == index {
                    return Some(&key[start..i]);
                }
                part += 1;
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    (part == index).then(|| &key[start.min(key.len())..])
}

/// Escapes a tenant name the way the key extractor writes a composite part.
pub(crate) fn escape_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if c == ':' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An instant from an escaped composite part, unescaping into a stack
/// buffer (time texts are short), so routing allocates nothing.
fn parse_escaped(raw: &str) -> Option<i64> {
    if !raw.contains('\\') {
        return parse_instant(raw);
    }
    let mut buf = [0u8; 64];
    let mut len = 0;
    let mut bytes = raw.bytes();
    while let Some(c) = bytes.next() {
        let c = if c == b'\\' { bytes.next()? } else { c };
        *buf.get_mut(len)? = c;
        len += 1;
    }
    parse_instant(std::str::from_utf8(&buf[..len]).ok()?)
}

/// Why a partition key has no shard under a time strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeMiss {
    /// The key has no part at the configured position.
    MissingPart(u32),
    /// The time text is neither RFC 3339 nor epoch milliseconds.
    Unparseable,
    /// The instant's period has no shard.
    NoShard(String),
}

impl fmt::Display for TimeMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeMiss::MissingPart(part) => write!(
                f,
                "the composite key has no part {part} (the time field's position, time_part)"
            ),
            TimeMiss::Unparseable => f.write_str(
                "the time field is neither an RFC 3339 date-time (2024-03-15T10:30:00Z) nor epoch milliseconds",
            ),
            TimeMiss::NoShard(label) => write!(
                f,
                "period {label} has no shard (add it: floe migrate add-period {label})"
            ),
        }
    }
}

/// Where an archived period's entities are (seed 002's active and archive
/// windows). Written in the topology next to the period's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodState {
    /// Writes to the period are refused; its entities are still in shard
    /// memory while the sink lands the period's last events in the lake.
    Sealed,
    /// The period's entities left shard memory: reads are answered from the
    /// lake, writes refused.
    Archived,
    /// An archived period past its retention (seed 002's
    /// `drop_old_partitions`): its rows were erased from the lake, reads
    /// find nothing, writes are refused.
    Dropped,
}

impl fmt::Display for PeriodState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeriodState::Sealed => "sealed",
            PeriodState::Archived => "archived",
            PeriodState::Dropped => "dropped",
        })
    }
}

/// A validated [`Strategy::Time`](crate::Strategy::Time), ready for lookups.
#[derive(Debug)]
pub(crate) struct TimeTable {
    period: Period,
    offset_minutes: i32,
    time_part: Option<u32>,
    tenant_part: Option<u32>,
    /// `(period index, shard)` sorted by index.
    periods: Vec<(i64, u32)>,
    /// `(escaped tenant, shard)` sorted by tenant.
    tenants: Vec<(Box<str>, u32)>,
    /// `(period index, state)` of the sealed and archived periods, sorted.
    archived: Vec<(i64, PeriodState)>,
}

/// Where a time strategy puts a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeRoute {
    /// An isolated tenant's shard.
    Tenant(u32),
    /// The shard of the key's period.
    Period(u32),
    /// No shard.
    Miss(TimeMiss),
}

/// The parts of [`Strategy::Time`](crate::Strategy::Time) its table needs.
pub(crate) struct TimeSpec<'a> {
    pub period: Period,
    pub offset: Option<&'a str>,
    pub time_part: Option<u32>,
    pub tenant_part: Option<u32>,
    pub periods: &'a BTreeMap<String, u32>,
    pub tenants: &'a BTreeMap<String, u32>,
    pub archived: &'a BTreeMap<String, PeriodState>,
}

impl TimeSpec<'_> {
    /// Checks the strategy against a shard count and compiles it.
    pub(crate) fn compile(&self, shard_count: u32) -> Result<TimeTable> {
        let invalid = |msg: String| Err(Error::InvalidTopology(format!("time: {msg}")));
        let offset_minutes = match self.offset {
            None => 0,
            Some(text) => match parse_offset(text) {
                Some(m) => m,
                None => {
                    return invalid(format!(
                        "offset {text:?} is not a UTC offset such as \"+02:00\", \"-05:30\" or \"Z\""
                    ));
                }
            },
        };
        if let (Some(t), Some(n)) = (self.time_part, self.tenant_part)
            && t == n
        {
            return invalid(format!("time_part and tenant_part are both part {t}"));
        }
        if !self.tenants.is_empty() && self.tenant_part.is_none() {
            return invalid(
                "isolated tenants need tenant_part: the position of the tenant in the composite partition key".into(),
            );
        }
        if self.periods.is_empty() {
            return invalid(
                "at least one period needs a shard (periods = { \"2024-01\" = 0 })".into(),
            );
        }
        let mut periods = Vec::with_capacity(self.periods.len());
        for (label, &shard) in self.periods {
            let Some(index) = self.period.parse_label(label) else {
                return invalid(format!(
                    "{label:?} is not a {} label (expected e.g. {})",
                    self.period,
                    self.period
                        .label(self.period.of_instant(1_710_498_600_000, 0))
                ));
            };
            if shard >= shard_count {
                return Err(Error::UnknownShard { shard, shard_count });
            }
            periods.push((index, shard));
        }
        periods.sort_unstable();
        let mut tenants = Vec::with_capacity(self.tenants.len());
        for (tenant, &shard) in self.tenants {
            if tenant.is_empty() {
                return invalid("an isolated tenant with an empty name".into());
            }
            if shard >= shard_count {
                return Err(Error::UnknownShard { shard, shard_count });
            }
            tenants.push((escape_part(tenant).into_boxed_str(), shard));
        }
        tenants.sort_unstable();
        let mut archived = Vec::with_capacity(self.archived.len());
        for (label, &state) in self.archived {
            // An archived period keeps its shard: the one that held it,
            // where a sealed period's entities still are.
            if !self.periods.contains_key(label) {
                return invalid(format!("archived period {label:?} has no shard in periods"));
            }
            let index = self.period.parse_label(label).unwrap_or_default();
            archived.push((index, state));
        }
        archived.sort_unstable_by_key(|(index, _)| *index);
        Ok(TimeTable {
            period: self.period,
            offset_minutes,
            time_part: self.time_part,
            tenant_part: self.tenant_part,
            periods,
            tenants,
            archived,
        })
    }
}

impl TimeTable {
    /// The shard of `key`, or why it has none. Allocates nothing on success.
    pub(crate) fn lookup(&self, key: &str) -> TimeRoute {
        if let Some(part) = self.tenant_part
            && !self.tenants.is_empty()
            && let Some(tenant) = raw_part(key, part)
            && let Ok(i) = self
                .tenants
                .binary_search_by(|(t, _)| t.as_ref().cmp(tenant))
        {
            return TimeRoute::Tenant(self.tenants[i].1);
        }
        let raw = match self.time_part {
            None => Some(key),
            Some(part) => raw_part(key, part),
        };
        let Some(raw) = raw else {
            return TimeRoute::Miss(TimeMiss::MissingPart(self.time_part.unwrap_or(0)));
        };
        let Some(instant) = parse_escaped(raw) else {
            return TimeRoute::Miss(TimeMiss::Unparseable);
        };
        let index = self.period.of_instant(instant, self.offset_minutes);
        match self.periods.binary_search_by(|(p, _)| p.cmp(&index)) {
            Ok(i) => TimeRoute::Period(self.periods[i].1),
            Err(_) => TimeRoute::Miss(TimeMiss::NoShard(self.period.label(index))),
        }
    }

    /// The state and label of `key`'s period when it is sealed or archived
    /// (whatever shard the key routes to, an isolated tenant's included);
    /// `None` for an active period or a key without a time. One branch when
    /// nothing is archived.
    #[inline]
    pub(crate) fn period_state(&self, key: &str) -> Option<(PeriodState, i64)> {
        if self.archived.is_empty() {
            return None;
        }
        let raw = match self.time_part {
            None => key,
            Some(part) => raw_part(key, part)?,
        };
        let index = self
            .period
            .of_instant(parse_escaped(raw)?, self.offset_minutes);
        let i = self
            .archived
            .binary_search_by(|(p, _)| p.cmp(&index))
            .ok()?;
        Some((self.archived[i].1, index))
    }

    /// Whether some period is archived or dropped (not only sealed): out
    /// of shard memory.
    pub(crate) fn has_archived(&self) -> bool {
        self.archived
            .iter()
            .any(|(_, state)| *state != PeriodState::Sealed)
    }

    /// The label of period `index`.
    pub(crate) fn label(&self, index: i64) -> String {
        self.period.label(index)
    }

    /// The shard for keys with no shard in [`TimeTable::lookup`]: the shard
    /// of the earliest period. Writes never get there (they are refused with
    /// [`Error::Unroutable`]); only replayed history that predates a change
    /// of the period table does.
    pub(crate) fn fallback(&self) -> u32 {
        self.periods.first().map_or(0, |p| p.1)
    }
}

/// Orders period labels of one kind by time (for listings).
pub fn cmp_labels(period: Period, a: &str, b: &str) -> Ordering {
    match (period.parse_label(a), period.parse_label(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
#[path = "time_tests.rs"]
mod tests;
