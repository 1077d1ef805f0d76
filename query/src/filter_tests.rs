use super::*;

fn path(s: &str) -> JsonPath {
    JsonPath::parse(s).unwrap()
}

#[test]
fn each_kind_parses_into_the_ast() {
    let c = parse_filter("status = paid AND total_cents >= 1500 and open == true").unwrap();
    assert_eq!(
        c,
        vec![
            Condition::Compare {
                path: path("status"),
                op: Compare::Eq,
                value: Scalar::Text("paid".into())
            },
            Condition::Compare {
                path: path("total_cents"),
                op: Compare::Ge,
                value: Scalar::Int(1500)
            },
            Condition::Compare {
                path: path("open"),
                op: Compare::Eq,
                value: Scalar::Bool(true)
            },
        ]
    );
    let c = parse_filter("address.city not in ('Oslo', \"Bergen\")").unwrap();
    assert_eq!(
        c[0],
        Condition::In {
            path: JsonPath(vec![
                PathSegment::Key("address".into()),
                PathSegment::Key("city".into())
            ]),
            values: vec![Scalar::Text("Oslo".into()), Scalar::Text("Bergen".into())],
            negated: true,
        }
    );
    let c = parse_filter("items[0].sku ILIKE 'ab%' and \"odd key\".x<-2.5").unwrap();
    assert_eq!(
        c[0],
        Condition::Like {
            path: JsonPath(vec![
                PathSegment::Key("items".into()),
                PathSegment::Index(0),
                PathSegment::Key("sku".into())
            ]),
            pattern: "ab%".into(),
            negated: false,
            case_insensitive: true,
        }
    );
    assert_eq!(
        c[1],
        Condition::Compare {
            path: JsonPath(vec![
                PathSegment::Key("odd key".into()),
                PathSegment::Key("x".into())
            ]),
            op: Compare::Lt,
            value: Scalar::Float(-2.5),
        }
    );
    // Text that starts with a digit stays text; quotes keep numbers text.
    let c = parse_filter("day = 2026-01-01 and code = '42'").unwrap();
    assert!(
        matches!(&c[0], Condition::Compare { value: Scalar::Text(t), .. } if t == "2026-01-01")
    );
    assert!(matches!(&c[1], Condition::Compare { value: Scalar::Text(t), .. } if t == "42"));
}

#[test]
fn display_reads_back_as_the_same_condition() {
    for text in [
        "status = 'it\\'s'",
        "a.\"b c\"[3] NOT LIKE 'x\\%%'",
        "n IN (1, 2, 3)",
        "f >= -0.5",
        "ok != false",
    ] {
        let parsed = parse_filter(text).unwrap();
        let again = parse_filter(&parsed[0].to_string()).unwrap();
        assert_eq!(again, parsed, "{text}");
    }
}

#[test]
fn bad_filters_are_typed_errors() {
    use FilterError as E;
    assert_eq!(parse_filter("  "), Err(E::Empty));
    assert!(matches!(
        parse_filter("= 3"),
        Err(E::ExpectedPath { at: 0, .. })
    ));
    assert!(matches!(
        parse_filter("status paid"),
        Err(E::ExpectedOperator { at: 7, .. })
    ));
    assert!(matches!(
        parse_filter("status ="),
        Err(E::ExpectedValue { .. })
    ));
    assert!(matches!(
        parse_filter("status = 'paid"),
        Err(E::UnterminatedString { at: 9 })
    ));
    assert!(matches!(
        parse_filter("n in (1, 'a')"),
        Err(E::MixedList { .. })
    ));
    assert!(matches!(
        parse_filter("n like 3"),
        Err(E::LikeNeedsText { .. })
    ));
    assert!(matches!(
        parse_filter("n = 1e999"),
        Err(E::BadNumber { .. })
    ));
    assert!(matches!(parse_filter("a[x] = 1"), Err(E::BadNumber { .. })));
    assert!(matches!(
        parse_filter("n in (1, 2"),
        Err(E::Expected { .. })
    ));
    assert!(matches!(
        parse_filter("a = 1 or b = 2"),
        Err(E::Trailing { .. })
    ));
    // SQL pasted into a filter is not SQL here: it fails to parse...
    assert!(matches!(
        parse_filter("status = 'x'; DROP TABLE events; --"),
        Err(E::Trailing { .. })
    ));
    // ...or it is a literal value, compared as text.
    let c = parse_filter("status = \"x' OR '1'='1\"").unwrap();
    assert!(
        matches!(&c[0], Condition::Compare { value: Scalar::Text(t), .. } if t == "x' OR '1'='1")
    );
    let long = "a = 1 and ".repeat(MAX_CONDITIONS) + "a = 1";
    assert!(matches!(parse_filter(&long), Err(E::TooLarge { .. })));
    assert!(matches!(
        parse_filter(&"x".repeat(MAX_FILTER_LEN + 1)),
        Err(E::TooLarge { .. })
    ));
}
