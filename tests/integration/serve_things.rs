//! `GET /api/v1/things` against an oracle: every filter kind (equality,
//! comparisons, IN, LIKE, on nested paths), ordering and paging, SQL
//! injection through every parameter, typed errors for bad filters; and
//! migration status as a monitoring viewer sees it, with `things.shard`
//! following a pinned tenant to its new owner.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "../support/server.rs"]
mod server;
use server::{ADMIN, FloeServer, OPERATOR, VIEWER};

const TENANTS: u64 = 6;
const STATUSES: [&str; 4] = ["placed", "paid", "delivered", "cancelled"];
const CITIES: [&str; 4] = ["Oslo", "Bergen", "Lima", "Osaka"];

/// The order `i`: strings, integers (negative too), floats, booleans,
/// a nested object, an array, and fields some orders lack.
fn order(i: u64) -> Value {
    let mut data = json!({
        "status": STATUSES[(i % 4) as usize],
        "total": (i as i64 * 37) % 500 - 100,
        "name": format!("{} order {i}", if i.is_multiple_of(3) { "Pizza" } else { "pasta" }),
        "address": { "city": CITIES[(i % 4) as usize], "zip": format!("{:04}", i % 7) },
        "items": [{ "sku": format!("sku-{}", i % 5), "qty": 1 + i % 3 }],
        "vip": i.is_multiple_of(5),
    });
    if i % 6 == 1 {
        // A float total, compared numerically with integers.
        data["total"] = json!(i as f64 + 0.5);
    }
    if i.is_multiple_of(11) {
        data.as_object_mut().unwrap().remove("address");
    }
    data
}

fn path_of(data: &Value, path: &[&str]) -> Option<Value> {
    let mut v = data;
    for step in path {
        v = match step.parse::<usize>() {
            Ok(i) if v.is_array() => v.get(i)?,
            _ => v.get(*step)?,
        };
    }
    Some(v.clone())
}

/// SQL LIKE without escapes: `%` any run, `_` one character.
fn like(text: &str, pattern: &str) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|k| go(&t[k..], rest)),
            Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
            Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
        }
    }
    let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
    go(&t, &p)
}

/// One oracle condition: the independent reading of a filter.
type Check = Box<dyn Fn(&Value) -> bool>;

fn num(data: &Value, path: &[&str]) -> Option<f64> {
    path_of(data, path)?.as_f64()
}

fn text(data: &Value, path: &[&str]) -> Option<String> {
    path_of(data, path)?.as_str().map(str::to_string)
}

/// (filters as sent, the oracle's predicate).
fn cases() -> Vec<(Vec<&'static str>, Check)> {
    vec![
        (
            vec!["status = paid"],
            Box::new(|d| text(d, &["status"]).as_deref() == Some("paid")),
        ),
        (
            vec!["status != 'paid'"],
            Box::new(|d| text(d, &["status"]).is_some_and(|s| s != "paid")),
        ),
        (
            vec!["total > 100"],
            Box::new(|d| num(d, &["total"]).is_some_and(|t| t > 100.0)),
        ),
        (
            vec!["total <= -20"],
            Box::new(|d| num(d, &["total"]).is_some_and(|t| t <= -20.0)),
        ),
        (
            vec!["total >= 10.5", "total < 200"],
            Box::new(|d| num(d, &["total"]).is_some_and(|t| (10.5..200.0).contains(&t))),
        ),
        (
            vec!["vip = true"],
            Box::new(|d| path_of(d, &["vip"]) == Some(json!(true))),
        ),
        (
            vec!["address.city IN ('Oslo', 'Lima')"],
            Box::new(|d| text(d, &["address", "city"]).is_some_and(|c| c == "Oslo" || c == "Lima")),
        ),
        (
            vec!["address.city not in (Oslo)"],
            Box::new(|d| text(d, &["address", "city"]).is_some_and(|c| c != "Oslo")),
        ),
        (
            vec!["total in (-100, 122, 311)"],
            Box::new(|d| num(d, &["total"]).is_some_and(|t| [-100.0, 122.0, 311.0].contains(&t))),
        ),
        (
            vec!["name LIKE 'Pizza%'"],
            Box::new(|d| text(d, &["name"]).is_some_and(|n| like(&n, "Pizza%"))),
        ),
        (
            vec!["name ILIKE 'pizza order 1_'"],
            Box::new(|d| {
                text(d, &["name"]).is_some_and(|n| like(&n.to_lowercase(), "pizza order 1_"))
            }),
        ),
        (
            vec!["items[0].sku NOT LIKE '%-3'"],
            Box::new(|d| text(d, &["items", "0", "sku"]).is_some_and(|s| !like(&s, "%-3"))),
        ),
        (
            vec!["address.zip = '0003' and status in (paid, delivered)"],
            Box::new(|d| {
                text(d, &["address", "zip"]).as_deref() == Some("0003")
                    && text(d, &["status"]).is_some_and(|s| s == "paid" || s == "delivered")
            }),
        ),
    ]
}

/// `/api/v1/things?...` with each pair URL-encoded.
fn things_path(params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("/api/v1/things?{}", query.join("&"))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ids(body: &Value) -> Vec<String> {
    body["things"]
        .as_array()
        .unwrap_or_else(|| panic!("no things in {body}"))
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["namespace"].as_str().unwrap(),
                t["id"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn things_answer_every_filter_kind_like_the_oracle_and_refuse_injection() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    // The oracle: (namespace, id) -> current data of every live Order.
    let mut oracle: BTreeMap<(String, String), Value> = BTreeMap::new();
    for i in 0..120u64 {
        let (ns, id) = (format!("t{}", i % TENANTS), format!("o{i:03}"));
        server
            .put_ok(&format!("/api/v1/entities/{ns}/Order/{id}"), order(i))
            .await;
        oracle.insert((ns, id), order(i));
    }
    // Current state, not history: an update and a deletion.
    let (ns, id) = ("t1".to_string(), "o007".to_string());
    let mut updated = order(7);
    updated["status"] = json!("paid");
    server
        .put_ok(
            &format!("/api/v1/entities/{ns}/Order/{id}"),
            updated.clone(),
        )
        .await;
    oracle.insert((ns, id), updated);
    let (status, _) = server
        .call(
            Method::DELETE,
            "/api/v1/entities/t2/Order/o008",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    oracle.remove(&("t2".to_string(), "o008".to_string()));
    // Another type, which no Order query may return.
    server
        .put_ok(
            "/api/v1/entities/t0/Customer/o000",
            json!({"status": "paid"}),
        )
        .await;

    let get = |params: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server
                .call(Method::GET, &things_path(&pairs), Some(VIEWER), None)
                .await
        }
    };
    let base = || {
        vec![
            ("type", "Order".to_string()),
            ("fresh", "true".into()),
            ("limit", "1000".into()),
        ]
    };

    // Every filter kind, alone and combined, equals the oracle (default
    // order: by id, then namespace).
    for (filters, check) in cases() {
        let mut params = base();
        params.extend(filters.iter().map(|f| ("filter", f.to_string())));
        let (status, body) = get(params).await;
        assert_eq!(status, StatusCode::OK, "{filters:?}: {body}");
        let mut expected: Vec<(String, String)> = oracle
            .iter()
            .filter(|(_, d)| check(d))
            .map(|((ns, id), _)| (id.clone(), ns.clone()))
            .collect();
        expected.sort();
        let expected: Vec<String> = expected
            .into_iter()
            .map(|(id, ns)| format!("{ns}/{id}"))
            .collect();
        assert!(
            !expected.is_empty() && expected.len() < oracle.len(),
            "{filters:?} tests nothing"
        );
        assert_eq!(ids(&body), expected, "{filters:?}");
    }

    // A namespace, a numeric order (floats and negatives in place), paging.
    let mut params = base();
    params.retain(|(k, _)| *k != "limit");
    params.extend([
        ("namespace", "t3".to_string()),
        ("order", "total desc".into()),
        ("limit", "5".into()),
        ("offset", "2".into()),
    ]);
    let (status, body) = get(params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected: Vec<(f64, String)> = oracle
        .iter()
        .filter(|((ns, _), _)| ns == "t3")
        .map(|((ns, id), d)| (d["total"].as_f64().unwrap(), format!("{ns}/{id}")))
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let expected: Vec<String> = expected.into_iter().skip(2).take(5).map(|e| e.1).collect();
    assert_eq!(ids(&body), expected);
    assert_eq!(body["count"], json!(5));
    // The data and the owner come back.
    let first = &body["things"][0];
    let (ns, id) = (
        first["namespace"].as_str().unwrap(),
        first["id"].as_str().unwrap(),
    );
    assert_eq!(first["data"], oracle[&(ns.to_string(), id.to_string())]);
    let (_, routed) = server
        .call(
            Method::GET,
            &format!("/api/v1/shard-for-key?key={ns}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(first["shard"], routed["shard"], "{routed}");

    // SQL through a filter is a literal or a parse error, never SQL.
    for value in ["x' OR '1'='1", "paid' --", "'); DROP TABLE events; --"] {
        let mut params = base();
        params.push((
            "filter",
            format!("status = \"{}\"", value.replace('"', "\\\"")),
        ));
        let (status, body) = get(params).await;
        assert_eq!(status, StatusCode::OK, "{value}: {body}");
        assert_eq!(body["count"], json!(0), "{value}");
        for (name, injected) in [("namespace", value), ("type", value)] {
            let mut params = base();
            params.retain(|(k, _)| *k != name);
            params.push((name, injected.to_string()));
            let (status, body) = get(params).await;
            assert_eq!(status, StatusCode::OK, "{name}={value}: {body}");
            assert_eq!(body["count"], json!(0), "{name}={value}");
        }
    }
    for bad in [
        "status = 'paid'; DROP TABLE events",
        "status = 'paid' OR 1 = 1",
        "= 1",
        "status",
        "status = ",
        "status = 'paid",
        "total in (1, 'a')",
        "name like 3",
        "a[x] = 1",
    ] {
        let mut params = base();
        params.push(("filter", bad.to_string()));
        let (status, body) = get(params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(
            body["error"]["code"],
            json!("invalid_filter"),
            "{bad}: {body}"
        );
    }
    let (status, body) = get(vec![
        ("type", "Order".into()),
        ("order", "total sideways".into()),
    ])
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_filter")),
        "{body}"
    );
    for params in [
        vec![("filter", "status = paid".to_string())],
        vec![("type", "Order".into()), ("limit", "10001".into())],
        vec![("type", "Order".into()), ("limit", "-1".into())],
        vec![("type", "Order".into()), ("where", "1=1".into())],
        vec![("type", "Order".into()), ("timeout_ms", "0".into())],
    ] {
        let (status, body) = get(params.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}: {body}");
        assert_eq!(
            body["error"]["code"],
            json!("bad_query"),
            "{params:?}: {body}"
        );
    }
    // An offset DataFusion cannot hold (it keeps OFFSET as i64).
    let (status, body) = get(vec![
        ("type", "Order".into()),
        ("offset", u64::MAX.to_string()),
    ])
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query")),
        "{body}"
    );
    // Nothing was dropped or changed.
    let (status, body) = get(base()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["count"], json!(oracle.len()));
    // Readers need a token.
    let (status, _) = server
        .call(Method::GET, &things_path(&[("type", "Order")]), None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_follows_a_migration_it_cannot_start_and_things_shard_follows_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    for i in 0..40u64 {
        server
            .put_ok(
                &format!("/api/v1/entities/t{}/Order/o{i}", i % 4),
                json!({ "n": i }),
            )
            .await;
    }
    let (_, routed) = server
        .call(
            Method::GET,
            "/api/v1/shard-for-key?key=t1",
            Some(VIEWER),
            None,
        )
        .await;
    let before = routed["shard"].as_u64().unwrap();
    let target = (before + 1) % 4;
    let pin = json!({ "kind": "pin", "key": "t1", "shard": target }).to_string();
    for token in [VIEWER, OPERATOR] {
        let (status, body) = server
            .call(Method::POST, "/api/v1/migrations", Some(token), Some(&pin))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, started) = server
        .call(Method::POST, "/api/v1/migrations", Some(ADMIN), Some(&pin))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["plan"]["kind"]["kind"], json!("pin"), "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    // The monitoring script: a viewer polls the status until it ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server
            .call(
                Method::GET,
                &format!("/api/v1/migrations/{id}"),
                Some(VIEWER),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["progress"].is_null() && body["job"]["status"] != json!("running") {
            assert_eq!(body["job"]["status"], json!("completed"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "migration never ended: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, listed) = server
        .call(Method::GET, "/api/v1/migrations", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["migrations"][0]["id"], json!(id));
    // A viewer may not cancel either.
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/v1/migrations/{id}/cancel"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, topology) = server
        .call(Method::GET, "/api/v1/topology", Some(VIEWER), None)
        .await;
    assert_eq!(topology["overrides"]["t1"], json!(target), "{topology}");

    // things.shard names the owner now, for events written before the pin.
    let (status, body) = server
        .call(
            Method::GET,
            &things_path(&[("type", "Order"), ("namespace", "t1"), ("fresh", "true")]),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], json!(10));
    for thing in body["things"].as_array().unwrap() {
        assert_eq!(thing["shard"], json!(target), "{thing}");
    }
    let sql = json!({
        "sql": "SELECT DISTINCT shard, emitted_shard FROM things WHERE namespace = 't1'",
        "fresh": true,
    })
    .to_string();
    let (status, body) = server
        .call(Method::POST, "/api/v1/sql", Some(VIEWER), Some(&sql))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rows"],
        json!([{ "shard": target, "emitted_shard": before }]),
        "{body}"
    );
}
