//! [`KeyExtractor`]: from an entity to its partition key string.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::assigner::spec::{KeyField, PartitionKeySpec};
use crate::entity::EntityKey;
use crate::error::{Error, Result};
use crate::json::value_kind;

/// A custom partition key function: the entity's key and, when the request
/// carries it, its data. `None` (or an empty string) means "no opinion": the
/// configured [`PartitionKeySpec`] applies.
///
/// Example: an `OrderItem` lives with its order.
/// ```
/// # use std::sync::Arc;
/// # use floe_engine::{EntityKey, KeyExtractor, KeyFn, PartitionKeySpec};
/// let by_order: KeyFn = Arc::new(|key, data| {
///     (key.entity_type == "OrderItem")
///         .then(|| data?.get("orderId")?.as_str().map(str::to_owned))
///         .flatten()
/// });
/// let extractor = KeyExtractor::new(PartitionKeySpec::id()).with_type_custom("OrderItem", by_order);
/// let item = EntityKey::new("acme", "OrderItem", "i-1");
/// let data = serde_json::json!({"orderId": "o-7"});
/// assert_eq!(extractor.extract(&item, Some(&data)).unwrap(), "o-7");
/// ```
pub type KeyFn = Arc<dyn Fn(&EntityKey, Option<&Value>) -> Option<String> + Send + Sync>;

/// Name used in [`Error::MissingPartitionKey`] when a custom function gave no key.
const CUSTOM_FIELD: &str = "<custom key function>";

/// Turns an entity into its partition key: a default [`PartitionKeySpec`],
/// optional per-type specs, and optional custom functions.
///
/// # Rules
///
/// 1. A custom function runs first: the one registered for the entity's type
///    ([`with_type_custom`](Self::with_type_custom)), else the global one
///    ([`with_custom`](Self::with_custom)). A non-empty `Some` is the key.
/// 2. Otherwise the spec of the entity's type (else the default spec) is read.
///    Values: a string as-is; a number or boolean as its JSON text (`42`,
///    `1.5`, `true`; so `1` and `1.0` are different keys); `null`, objects,
///    arrays, the empty string and absent fields are *missing*.
/// 3. A composite key is present only when all of its fields are. Its parts
///    are joined with `:`, and `\` and `:` inside a part are escaped with `\`,
///    so the encoding is injective: two different tuples never share a key
///    (`("a:b", "c")` is `a\:b:c`, `("a", "b:c")` is `a:b\:c`). A simple
///    (one-field) key is the value unescaped, so the `$id` key is the id and
///    the tenant key is the namespace. A simple key of one spec can equal a
///    composite key of another type's spec; that only co-locates the two
///    entities, which is all a partition key decides.
/// 4. When the key is missing, the spec's `fallback` is read. When that is
///    missing too: strict specs fail with [`Error::MissingPartitionKey`] (the
///    write is rejected, nothing is written); others route by the entity id.
///    (Seed 004 calls null keys undefined behaviour; floe defines it as
///    "route by `$id`", which spreads such entities evenly.)
/// 5. Without the entity's data (a get, delete or patch that does not carry
///    it), a spec that reads data fields, or a custom function that returned
///    no key, fails with [`Error::MissingPartitionKey`] whatever `strict` says:
///    falling back to `$id` there would silently address the wrong shard. Such
///    callers must pass the partition key explicitly; [`needs_data`](Self::needs_data)
///    tells them in advance.
#[derive(Clone, Default)]
pub struct KeyExtractor {
    default: PartitionKeySpec,
    by_type: HashMap<String, PartitionKeySpec>,
    custom: Option<KeyFn>,
    custom_by_type: HashMap<String, KeyFn>,
}

impl fmt::Debug for KeyExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut custom_types: Vec<_> = self.custom_by_type.keys().collect();
        custom_types.sort();
        f.debug_struct("KeyExtractor")
            .field("default", &self.default)
            .field("by_type", &self.by_type)
            .field("custom", &self.custom.is_some())
            .field("custom_types", &custom_types)
            .finish()
    }
}

impl KeyExtractor {
    /// An extractor that applies `default` to every entity type.
    pub fn new(default: PartitionKeySpec) -> Self {
        KeyExtractor {
            default,
            ..KeyExtractor::default()
        }
    }

    /// The tenant pattern: every entity is keyed by its `$namespace`.
    pub fn tenant() -> Self {
        KeyExtractor::new(PartitionKeySpec::tenant())
    }

    /// Uses `spec` for entities of `entity_type` instead of the default.
    pub fn with_type(mut self, entity_type: impl Into<String>, spec: PartitionKeySpec) -> Self {
        self.by_type.insert(entity_type.into(), spec);
        self
    }

    /// A custom function tried first for every entity type. Being opaque, it
    /// makes [`needs_data`](Self::needs_data) true for every type; prefer
    /// [`with_type_custom`](Self::with_type_custom) when it serves a few types.
    pub fn with_custom(mut self, f: KeyFn) -> Self {
        self.custom = Some(f);
        self
    }

    /// A custom function tried first for entities of `entity_type`, instead of
    /// the global one.
    pub fn with_type_custom(mut self, entity_type: impl Into<String>, f: KeyFn) -> Self {
        self.custom_by_type.insert(entity_type.into(), f);
        self
    }

    /// The spec that applies to `entity_type`.
    pub fn spec(&self, entity_type: &str) -> &PartitionKeySpec {
        self.by_type.get(entity_type).unwrap_or(&self.default)
    }

    /// Whether extracting the key of an `entity_type` entity may need its data,
    /// so that a request carrying only the [`EntityKey`] cannot be routed and
    /// must carry the partition key. True when the spec (or its fallback)
    /// reads data fields, or when a custom function applies (it may read data).
    pub fn needs_data(&self, entity_type: &str) -> bool {
        self.custom_for(entity_type).is_some() || self.spec(entity_type).reads_data()
    }

    /// The partition key of an entity; see the [rules](Self#rules).
    ///
    /// `data` is the entity's data (a JSON object), or `None` when the request
    /// does not carry it.
    pub fn extract(&self, key: &EntityKey, data: Option<&Value>) -> Result<String> {
        if let Some(custom) = self.custom_for(&key.entity_type) {
            match custom(key, data) {
                Some(k) if !k.is_empty() => return Ok(k),
                _ if data.is_none() => return Err(missing(key, vec![CUSTOM_FIELD.into()])),
                _ => {}
            }
        }

        let spec = self.spec(&key.entity_type);
        let object = match data {
            Some(Value::Object(object)) => Some(object),
            None if spec.reads_data() => return Err(missing(key, spec.field_names())),
            Some(other) if spec.reads_data() => {
                return Err(Error::InvalidEntity {
                    entity: key.display(),
                    reason: format!("data must be a JSON object, got {}", value_kind(other)),
                });
            }
            _ => None,
        };

        if let Some(k) = compose(&spec.fields, key, object) {
            return Ok(k);
        }
        if let Some(k) = spec.fallback.as_ref().and_then(|f| read(f, key, object)) {
            return Ok(k.into_owned());
        }
        if spec.strict || key.id.is_empty() {
            return Err(missing(key, spec.field_names()));
        }
        Ok(key.id.clone())
    }

    /// Refuses a merge patch sent with an explicit `partition_key` when the
    /// patch sets the data fields the key is read from to another key: the
    /// stored entity would then say one key and be routed by another.
    /// A patch that leaves those fields alone (or sets them to the same key,
    /// or sets only some fields of a composite key) passes; custom key
    /// functions are not second-guessed.
    pub fn check_patch(&self, key: &EntityKey, patch: &Value, partition_key: &str) -> Result<()> {
        let spec = self.spec(&key.entity_type);
        if self.custom_for(&key.entity_type).is_some() || !spec.reads_data() {
            return Ok(());
        }
        let Value::Object(object) = patch else {
            return Ok(());
        };
        match compose(&spec.fields, key, Some(object)) {
            Some(implied) if implied != partition_key => Err(Error::PartitionKeyImmutable {
                entity: key.display(),
                reason: format!(
                    "the patch sets its key field(s) [{}] to {implied:?}, but it is routed by {partition_key:?} (delete it first to re-create it under another key)",
                    spec.field_names().join(", "),
                ),
                attempted: implied,
            }),
            _ => Ok(()),
        }
    }

    fn custom_for(&self, entity_type: &str) -> Option<&KeyFn> {
        self.custom_by_type
            .get(entity_type)
            .or(self.custom.as_ref())
    }
}

fn missing(key: &EntityKey, fields: Vec<String>) -> Error {
    Error::MissingPartitionKey {
        entity: key.display(),
        fields,
    }
}

/// The key of `fields`, or `None` when any of them is missing.
fn compose(
    fields: &[KeyField],
    key: &EntityKey,
    object: Option<&Map<String, Value>>,
) -> Option<String> {
    match fields {
        [] => None,
        [one] => read(one, key, object).map(Cow::into_owned),
        many => {
            let mut out = String::new();
            for (i, field) in many.iter().enumerate() {
                if i > 0 {
                    out.push(':');
                }
                escape_into(&mut out, &read(field, key, object)?);
            }
            Some(out)
        }
    }
}

/// Appends `part` with `\` and `:` escaped by a `\`.
fn escape_into(out: &mut String, part: &str) {
    if !part.contains([':', '\\']) {
        out.push_str(part);
        return;
    }
    for c in part.chars() {
        if c == ':' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One field's value as key text, or `None` when it is missing.
fn read<'a>(
    field: &'a KeyField,
    key: &'a EntityKey,
    object: Option<&'a Map<String, Value>>,
) -> Option<Cow<'a, str>> {
    let text = match field {
        KeyField::Namespace => Cow::Borrowed(key.namespace.as_str()),
        KeyField::Type => Cow::Borrowed(key.entity_type.as_str()),
        KeyField::Id => Cow::Borrowed(key.id.as_str()),
        KeyField::Field(path) => {
            let mut object = object?;
            let mut segments = path.split('.');
            let mut value = object.get(segments.next()?)?;
            for segment in segments {
                object = value.as_object()?;
                value = object.get(segment)?;
            }
            match value {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                Value::Number(n) => Cow::Owned(n.to_string()),
                Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
                Value::Null | Value::Array(_) | Value::Object(_) => return None,
            }
        }
    };
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec(fields: &[&str]) -> PartitionKeySpec {
        PartitionKeySpec::parse(fields).unwrap()
    }

    fn field(name: &str) -> KeyField {
        name.parse().unwrap()
    }

    fn order() -> EntityKey {
        EntityKey::new("acme", "Order", "o-1")
    }

    fn extract(spec: PartitionKeySpec, data: Value) -> Result<String> {
        KeyExtractor::new(spec).extract(&order(), Some(&data))
    }

    #[test]
    fn default_spec_routes_by_id() {
        let ex = KeyExtractor::default();
        assert_eq!(ex.extract(&order(), None).unwrap(), "o-1");
        assert_eq!(ex.extract(&order(), Some(&json!({"a": 1}))).unwrap(), "o-1");
        assert!(!ex.needs_data("Order"));
    }

    #[test]
    fn simple_field_and_dotted_path() {
        let data =
            json!({"customerId": "c-9", "customer": {"id": "c-7", "tier": {"name": "gold"}}});
        assert_eq!(extract(spec(&["customerId"]), data.clone()).unwrap(), "c-9");
        assert_eq!(
            extract(spec(&["customer.id"]), data.clone()).unwrap(),
            "c-7"
        );
        assert_eq!(
            extract(spec(&["customer.tier.name"]), data.clone()).unwrap(),
            "gold"
        );
        // A path through a non-object is missing, so non-strict routes by id.
        assert_eq!(extract(spec(&["customerId.x"]), data).unwrap(), "o-1");
    }

    #[test]
    fn key_parts_namespace_type_id() {
        let data = json!({});
        assert_eq!(
            extract(spec(&["$namespace"]), data.clone()).unwrap(),
            "acme"
        );
        assert_eq!(extract(spec(&["$type"]), data.clone()).unwrap(), "Order");
        assert_eq!(extract(spec(&["$id"]), data.clone()).unwrap(), "o-1");
        assert_eq!(
            KeyExtractor::tenant().extract(&order(), None).unwrap(),
            "acme"
        );
    }

    #[test]
    fn numbers_and_booleans_are_their_json_text() {
        assert_eq!(extract(spec(&["n"]), json!({"n": 42})).unwrap(), "42");
        assert_eq!(extract(spec(&["n"]), json!({"n": -7})).unwrap(), "-7");
        assert_eq!(extract(spec(&["n"]), json!({"n": 1.5})).unwrap(), "1.5");
        assert_eq!(extract(spec(&["b"]), json!({"b": true})).unwrap(), "true");
    }

    #[test]
    fn null_empty_object_and_array_values_are_missing() {
        let strict = |f: &str| spec(&[f]).with_strict(true);
        for data in [
            json!({"k": null}),
            json!({"k": ""}),
            json!({"k": {}}),
            json!({"k": [1]}),
            json!({}),
        ] {
            let err = extract(strict("k"), data.clone()).unwrap_err();
            assert!(
                matches!(err, Error::MissingPartitionKey { .. }),
                "{data}: {err}"
            );
        }
    }

    #[test]
    fn composite_joins_with_escaping_and_needs_every_field() {
        let s = spec(&["$namespace", "region", "n"]);
        assert_eq!(
            extract(s.clone(), json!({"region": "eu", "n": 3})).unwrap(),
            "acme:eu:3"
        );
        assert_eq!(
            extract(spec(&["a", "b"]), json!({"a": "x:y", "b": "z\\"})).unwrap(),
            "x\\:y:z\\\\"
        );
        // One part missing: the composite is missing, non-strict routes by id.
        assert_eq!(extract(s.clone(), json!({"region": "eu"})).unwrap(), "o-1");
        let err = extract(s.with_strict(true), json!({"region": "eu"})).unwrap_err();
        assert!(matches!(err, Error::MissingPartitionKey { .. }));
    }

    #[test]
    fn fallback_is_used_when_the_key_is_missing() {
        let s = spec(&["customerId"])
            .with_fallback(field("accountId"))
            .with_strict(true);
        assert_eq!(
            extract(s.clone(), json!({"customerId": "c", "accountId": "a"})).unwrap(),
            "c"
        );
        assert_eq!(extract(s.clone(), json!({"accountId": "a"})).unwrap(), "a");
        let s = spec(&["region", "zone"]).with_fallback(KeyField::Namespace);
        assert_eq!(extract(s, json!({"region": "eu"})).unwrap(), "acme");
    }

    #[test]
    fn strict_missing_key_is_an_error_naming_entity_and_fields() {
        let s = spec(&["customerId"])
            .with_fallback(field("accountId"))
            .with_strict(true);
        let err = extract(s, json!({"other": 1})).unwrap_err();
        match &err {
            Error::MissingPartitionKey { entity, fields } => {
                assert_eq!(entity.to_string(), "acme/Order/o-1");
                assert_eq!(fields, &["customerId", "accountId"]);
            }
            other => panic!("unexpected error {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("acme/Order/o-1"), "{message}");
        assert!(message.contains("[customerId, accountId]"), "{message}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn non_strict_missing_key_routes_by_id() {
        let s = spec(&["customerId"]).with_fallback(field("accountId"));
        assert_eq!(extract(s, json!({"customerId": null})).unwrap(), "o-1");
        // ...but never by an empty id.
        let key = EntityKey::new("acme", "Order", "");
        assert!(
            KeyExtractor::new(spec(&["customerId"]))
                .extract(&key, Some(&json!({})))
                .is_err()
        );
    }

    #[test]
    fn data_not_given_with_a_data_spec_is_an_error_even_when_not_strict() {
        let ex = KeyExtractor::new(spec(&["customerId"]).with_fallback(KeyField::Id))
            .with_type("Tenant", PartitionKeySpec::tenant());
        assert!(ex.needs_data("Order"));
        assert!(!ex.needs_data("Tenant"));
        let err = ex.extract(&order(), None).unwrap_err();
        assert!(matches!(err, Error::MissingPartitionKey { .. }), "{err}");
        let tenant = EntityKey::new("acme", "Tenant", "t");
        assert_eq!(ex.extract(&tenant, None).unwrap(), "acme");
    }

    #[test]
    fn data_that_is_not_an_object_is_invalid() {
        let err = extract(spec(&["customerId"]), json!([1, 2])).unwrap_err();
        assert!(matches!(err, Error::InvalidEntity { .. }), "{err}");
        assert!(err.to_string().contains("an array"), "{err}");
    }

    #[test]
    fn per_type_spec_overrides_the_default() {
        let ex =
            KeyExtractor::new(PartitionKeySpec::id()).with_type("Order", spec(&["customerId"]));
        let data = json!({"customerId": "c-1"});
        assert_eq!(ex.extract(&order(), Some(&data)).unwrap(), "c-1");
        let invoice = EntityKey::new("acme", "Invoice", "inv-1");
        assert_eq!(ex.extract(&invoice, Some(&data)).unwrap(), "inv-1");
        assert_eq!(ex.spec("Order"), &spec(&["customerId"]));
    }

    fn child_routes_by_parent() -> KeyFn {
        Arc::new(|key: &EntityKey, data: Option<&Value>| {
            if key.entity_type != "OrderItem" {
                return None;
            }
            data?.get("orderId")?.as_str().map(str::to_owned)
        })
    }

    #[test]
    fn custom_function_routes_child_by_parent_and_falls_through_on_none() {
        let ex = KeyExtractor::new(spec(&["customerId"])).with_custom(child_routes_by_parent());
        let item = EntityKey::new("acme", "OrderItem", "i-1");
        let data = json!({"orderId": "o-1", "customerId": "c-1"});
        assert_eq!(ex.extract(&item, Some(&data)).unwrap(), "o-1");
        // The function has no opinion on orders: the spec applies.
        assert_eq!(ex.extract(&order(), Some(&data)).unwrap(), "c-1");
        // An item without orderId: falls through to the spec too.
        assert_eq!(
            ex.extract(&item, Some(&json!({"customerId": "c-2"})))
                .unwrap(),
            "c-2"
        );
        // Without data the function cannot be trusted to have no opinion.
        assert!(ex.needs_data("Order"));
        let err = ex.extract(&item, None).unwrap_err();
        assert!(err.to_string().contains(CUSTOM_FIELD), "{err}");
    }

    #[test]
    fn per_type_custom_function_leaves_other_types_key_only() {
        let ex = KeyExtractor::new(PartitionKeySpec::id())
            .with_custom(Arc::new(|_, _| Some("global".into())))
            .with_type_custom("OrderItem", child_routes_by_parent());
        let item = EntityKey::new("acme", "OrderItem", "i-1");
        assert_eq!(
            ex.extract(&item, Some(&json!({"orderId": "o-1"}))).unwrap(),
            "o-1"
        );
        assert_eq!(ex.extract(&order(), None).unwrap(), "global");

        let ex = KeyExtractor::new(PartitionKeySpec::id())
            .with_type_custom("OrderItem", child_routes_by_parent());
        assert!(ex.needs_data("OrderItem"));
        assert!(!ex.needs_data("Order"));
        assert_eq!(ex.extract(&order(), None).unwrap(), "o-1");
        // An empty custom key counts as none.
        let ex = KeyExtractor::default().with_custom(Arc::new(|_, _| Some(String::new())));
        assert_eq!(ex.extract(&order(), Some(&json!({}))).unwrap(), "o-1");
    }

    /// Splits a composite key at unescaped `:` and unescapes the parts.
    fn decode(key: &str) -> Vec<String> {
        let mut parts = vec![String::new()];
        let mut chars = key.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => parts.last_mut().unwrap().extend(chars.next()),
                ':' => parts.push(String::new()),
                c => parts.last_mut().unwrap().push(c),
            }
        }
        parts
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z:\\\\]{1,6}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
    }

    proptest! {
        #[test]
        fn extraction_is_deterministic(
            values in proptest::collection::vec(proptest::option::of(scalar()), 1..4),
            strict in any::<bool>(),
        ) {
            let names: Vec<String> = (0..values.len()).map(|i| format!("f{i}")).collect();
            let mut object = Map::new();
            for (name, value) in names.iter().zip(&values) {
                if let Some(v) = value {
                    object.insert(name.clone(), v.clone());
                }
            }
            let data = Value::Object(object);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let ex = KeyExtractor::new(spec(&names).with_strict(strict));
            let first = ex.extract(&order(), Some(&data)).map_err(|e| e.to_string());
            let again = ex.clone().extract(&order(), Some(&data.clone())).map_err(|e| e.to_string());
            prop_assert_eq!(first, again);
        }

        #[test]
        fn composite_of_present_fields_never_errors_and_decodes_back(
            values in proptest::collection::vec(scalar(), 2..5),
        ) {
            let names: Vec<String> = (0..values.len()).map(|i| format!("f{i}")).collect();
            let object: Map<String, Value> = names.iter().cloned().zip(values.iter().cloned()).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let key = KeyExtractor::new(spec(&names).with_strict(true))
                .extract(&order(), Some(&Value::Object(object)))
                .unwrap();
            // Decoding recovers the parts, so different tuples never share a key.
            let parts: Vec<String> = values
                .iter()
                .map(|v| match v { Value::String(s) => s.clone(), v => v.to_string() })
                .collect();
            prop_assert_eq!(decode(&key), parts);
        }
    }
}
