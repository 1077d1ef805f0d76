//! A partial table never changes the defaults of the keys it leaves out.

use floe_engine::{EntityKey, KeyField, PartitionKeySpec};
use serde_json::json;

use super::Config;

/// Every leaf key of the default configuration, as its path and value.
fn leaves(table: &toml::Table, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, toml::Value)>) {
    for (key, value) in table {
        path.push(key.clone());
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => leaves(inner, path, out),
            other => out.push((path.clone(), other.clone())),
        }
        path.pop();
    }
}

/// A document holding only `value` at `path`.
fn only(path: &[String], value: toml::Value) -> String {
    let mut doc = value;
    for key in path.iter().rev() {
        let mut table = toml::Table::new();
        table.insert(key.clone(), doc);
        doc = toml::Value::Table(table);
    }
    toml::to_string(&doc).unwrap()
}

/// The whole class: for every key of every section, a file that sets only
/// that key (to its default) yields exactly the default configuration. A
/// nested table whose presence reset its siblings to some other default (as
/// `[partition_key]` did, to `$id`) fails here.
#[test]
fn a_table_with_one_key_keeps_every_other_default() {
    let defaults = Config::default();
    let table: toml::Table = toml::from_str(&toml::to_string(&defaults).unwrap()).unwrap();
    let mut all = Vec::new();
    leaves(&table, &mut Vec::new(), &mut all);
    assert!(all.len() > 50, "only {} keys found", all.len());
    for (path, value) in all {
        let text = only(&path, value);
        let parsed = Config::from_toml(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, defaults, "a file with only {}", path.join("."));
    }
}

fn keys() -> Vec<(EntityKey, serde_json::Value)> {
    let mut keys = Vec::new();
    for ty in ["Customer", "Order", "Invoice", "OrderItem"] {
        for ns in ["acme", "globex", "t-01"] {
            for id in ["a", "b/c", "42"] {
                keys.push((
                    EntityKey::new(ns, ty, id),
                    json!({"order_id": format!("o-{id}"), "tenant_id": ns}),
                ));
            }
        }
    }
    keys
}

/// `[partition_key.types.OrderItem]` alone: OrderItem is keyed by its
/// order, every other type exactly as with no `[partition_key]` at all.
#[test]
fn a_per_type_section_adds_to_the_default_key() {
    let plain = Config::default().partition_key.extractor();
    let config =
        Config::from_toml("[partition_key.types.OrderItem]\nfields = [\"order_id\"]\n").unwrap();
    assert_eq!(config.partition_key.default, PartitionKeySpec::tenant());
    let extractor = config.partition_key.extractor();
    for (key, data) in keys() {
        let got = extractor.extract(&key, Some(&data)).unwrap();
        if key.entity_type == "OrderItem" {
            assert_eq!(got, format!("o-{}", key.id), "{key:?}");
        } else {
            assert_eq!(got, plain.extract(&key, Some(&data)).unwrap(), "{key:?}");
            assert_eq!(got, key.namespace, "{key:?}");
        }
    }
    // Pruning by namespace is off: OrderItem is keyed otherwise.
    assert!(!config.query_options().namespace_is_partition_key);
}

/// A per-type table takes the keys it leaves out from the default spec.
#[test]
fn a_per_type_section_inherits_the_keys_it_does_not_name() {
    let config = Config::from_toml(
        r#"
        [partition_key]
        fields = "tenant_id"
        fallback = "$namespace"
        strict = true
        [partition_key.types.Audit]
        strict = false
        [partition_key.types.OrderItem]
        fields = ["order_id", "$id"]
        "#,
    )
    .unwrap();
    let default = &config.partition_key.default;
    assert_eq!(default.fields, vec![KeyField::Field("tenant_id".into())]);
    assert_eq!(default.fallback, Some(KeyField::Namespace));
    assert!(default.strict);
    let audit = &config.partition_key.types["Audit"];
    assert_eq!(audit.fields, default.fields);
    assert_eq!(audit.fallback, default.fallback);
    assert!(!audit.strict);
    let item = &config.partition_key.types["OrderItem"];
    assert_eq!(
        item.fields,
        vec![KeyField::Field("order_id".into()), KeyField::Id]
    );
    assert!(item.strict);
    // And it survives a round trip through TOML.
    let text = toml::to_string(&config).unwrap();
    assert_eq!(Config::from_toml(&text).unwrap(), config);
}

#[test]
fn bad_partition_key_tables_are_clear_errors() {
    let err = |text: &str| Config::from_toml(text).unwrap_err().to_string();
    assert!(err("[partition_key]\nfields = []").contains("at least one field"));
    assert!(
        err("[partition_key]\nfields = [\"$tenant\"]")
            .contains("unknown partition key field `$tenant`")
    );
    assert!(err("[partition_key.types.X]\nfields = []").contains("partition_key.types.X"));
    assert!(err("[partition_key]\nfield = \"x\"").contains("field"));
    assert!(err("[partition_key.types.X]\nbogus = 1").contains("bogus"));
}
