//! Time routing: instants, periods, labels and tables, against chrono as an
//! independent calendar.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate};
use proptest::prelude::{ProptestConfig, prop_assert, prop_assert_eq, proptest};

use super::*;

const MS: i64 = 1000;

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn table(
    period: Period,
    time_part: Option<u32>,
    periods: &[(&str, u32)],
    tenants: &[(&str, u32)],
) -> TimeTable {
    let periods: BTreeMap<String, u32> = periods.iter().map(|(l, s)| (l.to_string(), *s)).collect();
    let tenants: BTreeMap<String, u32> = tenants.iter().map(|(l, s)| (l.to_string(), *s)).collect();
    TimeSpec {
        period,
        offset: None,
        time_part,
        tenant_part: (!tenants.is_empty()).then_some(0),
        periods: &periods,
        tenants: &tenants,
        archived: &BTreeMap::new(),
    }
    .compile(16)
    .unwrap()
}

#[test]
fn instants_parse_as_rfc3339_and_epoch_millis() {
    let cases = [
        ("2024-03-15T10:30:00Z", ms("2024-03-15T10:30:00Z")),
        ("2024-03-15t10:30:00z", ms("2024-03-15T10:30:00Z")),
        ("2024-03-15 10:30:00Z", ms("2024-03-15T10:30:00Z")),
        (
            "2024-03-15T10:30:00.25+02:00",
            ms("2024-03-15T10:30:00.25+02:00"),
        ),
        (
            "2024-03-15T10:30:00.123456789-05:30",
            ms("2024-03-15T10:30:00.123-05:30"),
        ),
        ("2024-02-29T23:59:59Z", ms("2024-02-29T23:59:59Z")),
        ("2024-03-15", ms("2024-03-15T00:00:00Z")),
        ("1709251200000", 1_709_251_200_000),
        ("-86400000", -86_400_000),
        ("0", 0),
        // A leap second is the last millisecond of its minute.
        ("2016-12-31T23:59:60Z", ms("2016-12-31T23:59:59.999Z")),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_instant(text), Some(expected), "{text}");
    }
    for bad in [
        "",
        "-",
        "soon",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-04-31",
        "2024-03-15T24:00:00Z",
        "2024-03-15T10:60:00Z",
        "2024-03-15T10:30:00",
        "2024-03-15T10:30:00+2:00",
        "2024-03-15T10:30:00+24:00",
        "2024-03-15T10:30:00.Z",
        "2024-03-15T10:30Z",
        "2024-3-15",
        "99999999999999999999",
        "1.5e12",
        "2024-03-15T10:30:00Zjunk",
    ] {
        assert_eq!(parse_instant(bad), None, "{bad:?}");
    }
}

#[test]
fn labels_name_periods_canonically() {
    let t = ms("2024-03-15T10:30:00Z");
    assert_eq!(
        Period::Day.label(Period::Day.of_instant(t, 0)),
        "2024-03-15"
    );
    assert_eq!(
        Period::Week.label(Period::Week.of_instant(t, 0)),
        "2024-W11"
    );
    assert_eq!(
        Period::Month.label(Period::Month.of_instant(t, 0)),
        "2024-03"
    );
    assert_eq!(Period::Year.label(Period::Year.of_instant(t, 0)), "2024");
    // ISO weeks cross years: 2021-01-03 (a Sunday) is in 2020-W53, 2024-12-30 in 2025-W01.
    let week = |s: &str| Period::Week.label(Period::Week.of_instant(ms(s), 0));
    assert_eq!(week("2021-01-03T12:00:00Z"), "2020-W53");
    assert_eq!(week("2021-01-04T00:00:00Z"), "2021-W01");
    assert_eq!(week("2024-12-30T00:00:00Z"), "2025-W01");
    for (period, bad) in [
        (Period::Month, "2024-3"),
        (Period::Month, "2024-13"),
        (Period::Month, "2024-03-01"),
        (Period::Day, "2023-02-29"),
        (Period::Week, "2024-W00"),
        (Period::Week, "2024-W53"),
        (Period::Week, "2024-w11"),
        (Period::Year, "24"),
    ] {
        assert_eq!(period.parse_label(bad), None, "{period} {bad}");
    }
    assert!(Period::Week.parse_label("2020-W53").is_some());
    assert_eq!("week".parse::<Period>().unwrap(), Period::Week);
    assert!("fortnight".parse::<Period>().is_err());
}

#[test]
fn offsets_move_the_boundaries() {
    // 23:30 UTC on Jan 31st is already February at +01:00.
    let t = ms("2024-01-31T23:30:00Z");
    assert_eq!(
        Period::Month.label(Period::Month.of_instant(t, 0)),
        "2024-01"
    );
    assert_eq!(
        Period::Month.label(Period::Month.of_instant(t, 60)),
        "2024-02"
    );
    let feb = Period::Month.parse_label("2024-02").unwrap();
    assert_eq!(
        Period::Month.start_ms(feb, 60),
        ms("2024-02-01T00:00:00+01:00")
    );
    assert_eq!(parse_offset("+05:30"), Some(330));
    assert_eq!(parse_offset("-08:00"), Some(-480));
    assert_eq!(parse_offset("Z"), Some(0));
    for bad in ["+5:30", "0530", "+24:00", "+05:60", "UTC"] {
        assert_eq!(parse_offset(bad), None, "{bad}");
    }
}

#[test]
fn composite_parts_are_split_on_unescaped_colons() {
    let key = r"team-7:2024-03-15T10\:30\:00Z";
    assert_eq!(raw_part(key, 0), Some("team-7"));
    assert_eq!(raw_part(key, 1), Some(r"2024-03-15T10\:30\:00Z"));
    assert_eq!(raw_part(key, 2), None);
    assert_eq!(raw_part("solo", 0), Some("solo"));
    assert_eq!(raw_part(r"a\:b:c", 0), Some(r"a\:b"));
    assert_eq!(raw_part("a:", 1), Some(""));
    assert_eq!(escape_part(r"a:b\c"), r"a\:b\\c");
    assert_eq!(
        parse_escaped(r"2024-03-15T10\:30\:00Z"),
        Some(ms("2024-03-15T10:30:00Z"))
    );
}

#[test]
fn tables_route_by_period_and_isolated_tenant() {
    let t = table(
        Period::Month,
        Some(1),
        &[("2024-01", 1), ("2024-02", 2), ("2024-04", 3)],
        &[("team:big", 9)],
    );
    let route = |k: &str| t.lookup(k);
    assert_eq!(
        route(r"t1:2024-01-31T23\:59\:59.999Z"),
        TimeRoute::Period(1)
    );
    assert_eq!(route(r"t1:2024-02-01T00\:00\:00Z"), TimeRoute::Period(2));
    assert_eq!(route("t1:1706745600000"), TimeRoute::Period(2));
    assert_eq!(
        route(r"t1:2024-03-10T00\:00\:00Z"),
        TimeRoute::Miss(TimeMiss::NoShard("2024-03".into()))
    );
    assert_eq!(
        route("t1:yesterday"),
        TimeRoute::Miss(TimeMiss::Unparseable)
    );
    assert_eq!(route("t1"), TimeRoute::Miss(TimeMiss::MissingPart(1)));
    // The tenant is compared as escaped in the key.
    assert_eq!(route(r"team\:big:2024-03-10"), TimeRoute::Tenant(9));
    assert_eq!(route(r"team\:big:not-a-time"), TimeRoute::Tenant(9));
    assert_eq!(t.fallback(), 1);
}

#[test]
fn bad_specs_are_typed_errors() {
    let compile = |period,
                   offset: Option<&str>,
                   time_part,
                   tenant_part,
                   periods: &[(&str, u32)],
                   tenants: &[(&str, u32)]| {
        let periods: BTreeMap<String, u32> =
            periods.iter().map(|(l, s)| (l.to_string(), *s)).collect();
        let tenants: BTreeMap<String, u32> =
            tenants.iter().map(|(l, s)| (l.to_string(), *s)).collect();
        TimeSpec {
            period,
            offset,
            time_part,
            tenant_part,
            periods: &periods,
            tenants: &tenants,
            archived: &BTreeMap::new(),
        }
        .compile(4)
        .map(drop)
    };
    let message = |r: Result<()>| match r {
        Err(Error::InvalidTopology(m)) => m,
        other => panic!("expected InvalidTopology, got {other:?}"),
    };
    let ok = [("2024-01", 0)];
    assert!(
        message(compile(Period::Month, None, None, None, &[], &[])).contains("at least one period")
    );
    assert!(
        message(compile(
            Period::Month,
            None,
            None,
            None,
            &[("2024-1", 0)],
            &[]
        ))
        .contains("not a month label")
    );
    assert!(message(compile(Period::Day, None, None, None, &ok, &[])).contains("not a day label"));
    assert!(
        message(compile(Period::Month, Some("+25:00"), None, None, &ok, &[])).contains("offset")
    );
    assert!(
        message(compile(Period::Month, None, Some(1), Some(1), &ok, &[])).contains("both part 1")
    );
    assert!(
        message(compile(
            Period::Month,
            None,
            Some(1),
            None,
            &ok,
            &[("big", 1)]
        ))
        .contains("tenant_part")
    );
    assert!(
        message(compile(
            Period::Month,
            None,
            Some(1),
            Some(0),
            &ok,
            &[("", 1)]
        ))
        .contains("empty")
    );
    assert!(matches!(
        compile(Period::Month, None, None, None, &[("2024-01", 4)], &[]),
        Err(Error::UnknownShard {
            shard: 4,
            shard_count: 4
        })
    ));
    assert!(matches!(
        compile(Period::Month, None, Some(1), Some(0), &ok, &[("big", 7)]),
        Err(Error::UnknownShard { shard: 7, .. })
    ));
    compile(
        Period::Month,
        Some("-05:00"),
        Some(1),
        Some(0),
        &ok,
        &[("big", 3)],
    )
    .unwrap();
}

/// Instants from 1900 to 2200, the range where chrono and floe must agree.
const FROM: i64 = -2_208_988_800_000;
const TO: i64 = 7_258_118_400_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The period of an instant is the calendar's, at any offset, and the
    /// instant lies in `[start, next start)`.
    #[test]
    fn periods_agree_with_an_independent_calendar(t in FROM..TO, offset in -1439i32..=1439) {
        let local = DateTime::from_timestamp_millis(t + i64::from(offset) * 60_000).unwrap().naive_utc().date();
        let expected = [
            (Period::Day, format!("{:04}-{:02}-{:02}", local.year(), local.month(), local.day())),
            (Period::Week, format!("{:04}-W{:02}", local.iso_week().year(), local.iso_week().week())),
            (Period::Month, format!("{:04}-{:02}", local.year(), local.month())),
            (Period::Year, format!("{:04}", local.year())),
        ];
        for (period, label) in expected {
            let index = period.of_instant(t, offset);
            prop_assert_eq!(&period.label(index), &label);
            prop_assert_eq!(period.parse_label(&label), Some(index));
            prop_assert!(period.start_ms(index, offset) <= t, "{period} {label}");
            prop_assert!(t < period.start_ms(index + 1, offset), "{period} {label}");
        }
    }

    /// The same instant written at any offset, with or without a fraction,
    /// parses to the same milliseconds as chrono reads.
    #[test]
    fn rfc3339_at_any_offset_is_one_instant(t in FROM..TO, offset in -1439i32..=1439, frac in 0usize..4) {
        let tz = chrono::FixedOffset::east_opt(offset * 60).unwrap();
        let t = t - t.rem_euclid(10i64.pow(3 - frac.min(3) as u32));
        let written = DateTime::from_timestamp_millis(t).unwrap().with_timezone(&tz);
        let millis = format!("{:03}", t.rem_euclid(1000));
        let fraction = if frac == 0 { String::new() } else { format!(".{}", &millis[..frac]) };
        let text = format!(
            "{}{fraction}{}",
            written.format("%Y-%m-%dT%H:%M:%S"),
            written.format("%:z")
        );
        prop_assert_eq!(parse_instant(&text), Some(t), "{}", text);
        prop_assert_eq!(parse_instant(&t.to_string()), Some(t));
    }

    /// Period boundaries: the last millisecond of a period and the first of
    /// the next land in neighbouring periods; leap days are in February.
    #[test]
    fn boundaries_and_leap_days(year in 1900i64..2200, month in 1u32..=12) {
        let first = NaiveDate::from_ymd_opt(year as i32, month, 1).unwrap();
        let start = first.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
        let index = Period::Month.of_instant(start, 0);
        prop_assert_eq!(Period::Month.start_ms(index, 0), start);
        prop_assert_eq!(Period::Month.of_instant(start - 1, 0), index - 1);
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let feb29 = format!("{year:04}-02-29T12:00:00Z");
        prop_assert_eq!(parse_instant(&feb29).is_some(), leap);
        if leap {
            prop_assert_eq!(Period::Month.label(Period::Month.of_instant(parse_instant(&feb29).unwrap(), 0)), format!("{year:04}-02"));
        }
        prop_assert_eq!(Period::Year.of_instant(start, 0), year);
    }
}

#[test]
fn millisecond_precision_is_kept() {
    assert_eq!(parse_instant("1970-01-01T00:00:00.001Z"), Some(1));
    assert_eq!(parse_instant("1970-01-01T00:00:01.5Z"), Some(MS + 500));
    assert_eq!(parse_instant("1969-12-31T23:59:59.999Z"), Some(-1));
}

#[test]
fn sealed_and_archived_periods_are_found_for_every_key_of_the_period() {
    let periods: BTreeMap<String, u32> = [("2024-01", 0), ("2024-02", 1), ("2024-03", 2)]
        .iter()
        .map(|(l, s)| (l.to_string(), *s))
        .collect();
    let tenants = BTreeMap::from([("big".to_string(), 3)]);
    let archived = BTreeMap::from([
        ("2024-01".to_string(), PeriodState::Archived),
        ("2024-02".to_string(), PeriodState::Sealed),
    ]);
    let spec = |archived| TimeSpec {
        period: Period::Month,
        offset: None,
        time_part: Some(1),
        tenant_part: Some(0),
        periods: &periods,
        tenants: &tenants,
        archived,
    };
    let table = spec(&archived).compile(4).unwrap();
    let state = |key: &str| table.period_state(key).map(|(s, i)| (s, table.label(i)));
    let archived_jan = Some((PeriodState::Archived, "2024-01".to_string()));
    assert_eq!(state("team-a:2024-01-31"), archived_jan);
    // An isolated tenant's January is archived with everyone else's.
    assert_eq!(state("big:2024-01-02"), archived_jan);
    assert_eq!(
        state("team-a:2024-02-10"),
        Some((PeriodState::Sealed, "2024-02".to_string()))
    );
    assert_eq!(state("team-a:2024-03-01"), None);
    // Keys without a (parsable) time are in no period.
    assert_eq!(state("team-a"), None);
    assert_eq!(state("team-a:yesterday"), None);
    assert!(table.has_archived());

    let only_sealed = BTreeMap::from([("2024-02".to_string(), PeriodState::Sealed)]);
    assert!(!spec(&only_sealed).compile(4).unwrap().has_archived());

    let unknown = BTreeMap::from([("2023-12".to_string(), PeriodState::Archived)]);
    match spec(&unknown).compile(4) {
        Err(Error::InvalidTopology(m)) => assert!(m.contains("has no shard"), "{m}"),
        other => panic!("expected InvalidTopology, got {other:?}"),
    }
}
