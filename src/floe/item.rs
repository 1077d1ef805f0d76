//! One write as a JSON object: an element of `POST /api/v1/entities:batch`
//! or a line of `floe import`.
//!
//! Two shapes are accepted (docs/operations.md, "Batch writes and import"):
//! - an **entity**, as `floe get`/`list` print it: `namespace`,
//!   `entity_type`, `id`, `data` (and optionally `version` and
//!   `updated_at_us`, which are ignored): an upsert of `data`;
//! - a **command**: the same key fields plus `op` (`put`, `create`,
//!   `update`, `delete`, `restore`), `data` for put, create and restore,
//!   `patch` for update, `version` for restore (what `floe export` writes),
//!   and optionally `expected_version` (not for restore), `idempotency_key`,
//!   `partition_key`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::WriteRequest;
use crate::error::{Error, Result};
use floe_engine::EntityKey;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    op: Option<&'a str>,
    namespace: String,
    entity_type: String,
    id: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    patch: Option<&'a RawValue>,
    expected_version: Option<u64>,
    idempotency_key: Option<String>,
    partition_key: Option<String>,
    /// Entity lines carry these; they are not part of a write.
    version: Option<u64>,
    updated_at_us: Option<i64>,
}

impl WriteRequest {
    /// Parses one write item (an entity or a command, see the module docs).
    /// Malformed JSON is [`floe_engine::Error::MalformedJson`]; a well-formed
    /// item of the wrong shape is [`Error::InvalidWriteItem`]. Entity data
    /// stays text: its limits are checked when it is written.
    pub fn from_item<'a>(text: &'a str) -> Result<WriteRequest> {
        let item: Item<'a> = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => Error::InvalidWriteItem(e.to_string()),
            _ => floe_engine::Error::MalformedJson(e).into(),
        })?;
        let key = EntityKey::new(item.namespace, item.entity_type, item.id);
        let invalid = |reason: String| Error::InvalidWriteItem(format!("{key}: {reason}"));
        let op = item.op.unwrap_or("entity");
        if item.op.is_some_and(|op| op != "restore")
            && (item.version.is_some() || item.updated_at_us.is_some())
        {
            return Err(invalid(format!(
                "`version` and `updated_at_us` belong to entity lines, not to a {op:?} command (use `expected_version`)"
            )));
        }
        // The text is checked once, with the limits, when it is written.
        let data = |raw: Option<&'a RawValue>| match raw {
            Some(raw) if raw.get().starts_with('{') => Ok(raw.get()),
            Some(_) => Err(invalid("`data` must be a JSON object".into())),
            None => Err(invalid(format!("a {op} needs `data`"))),
        };
        let mut request = match (op, item.patch) {
            ("entity" | "put" | "upsert", None) => {
                WriteRequest::upsert_text(key.clone(), data(item.data)?)
            }
            ("create", None) => WriteRequest::create_text(key.clone(), data(item.data)?),
            ("update", Some(patch)) if item.data.is_none() => {
                let patch = serde_json::from_str(patch.get()).map_err(floe_engine::Error::from)?;
                WriteRequest::update(key.clone(), patch)
            }
            ("update", _) => return Err(invalid("an update needs `patch` (and no `data`)".into())),
            ("delete", None) if item.data.is_none() => WriteRequest::delete(key.clone()),
            ("delete", None) => return Err(invalid("a delete takes no `data`".into())),
            ("restore", None) => {
                let Some(version) = item.version else {
                    return Err(invalid("a restore needs the exported `version`".into()));
                };
                if item.expected_version.is_some() {
                    return Err(invalid(
                        "a restore takes `version`, not `expected_version`".into(),
                    ));
                }
                WriteRequest::restore_text(key.clone(), data(item.data)?, version)
            }
            ("entity" | "put" | "upsert" | "create" | "delete" | "restore", Some(_)) => {
                return Err(invalid(format!(
                    "`patch` belongs to updates, not to a {op}"
                )));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "unknown op {other:?} (put, create, update, delete or restore)"
                )));
            }
        };
        if let Some(version) = item.expected_version {
            request = request.expected_version(version);
        }
        if let Some(k) = item.idempotency_key {
            request = request.idempotency_key(k);
        }
        if let Some(k) = item.partition_key {
            request = request.partition_key(k);
        }
        Ok(request)
    }

    /// Whether this request is a restore (idempotent by its version).
    pub fn is_restore(&self) -> bool {
        matches!(self.op, super::WriteOp::Restore(..))
    }

    /// Whether this request creates (and only creates) its entity.
    pub fn is_create(&self) -> bool {
        matches!(self.op, super::WriteOp::Create(_))
    }

    /// The caller's idempotency key, if any.
    pub fn idempotency_key_ref(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The entity this request writes.
    pub fn key(&self) -> &EntityKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        WriteRequest::from_item(text).unwrap_err().to_string()
    }

    #[test]
    fn entities_and_commands_parse() {
        let entity = r#"{"namespace":"n","entity_type":"T","id":"1","version":3,"data":{"a":1},"updated_at_us":5}"#;
        let request = WriteRequest::from_item(entity).unwrap();
        assert_eq!(
            request,
            WriteRequest::upsert_text(EntityKey::new("n", "T", "1"), r#"{"a":1}"#)
        );
        let create = r#"{"op":"create","namespace":"n","entity_type":"T","id":"1","data":{"a":1},"idempotency_key":"k","expected_version":0,"partition_key":"p"}"#;
        let expected = WriteRequest::create_text(EntityKey::new("n", "T", "1"), r#"{"a":1}"#)
            .expected_version(0)
            .idempotency_key("k")
            .partition_key("p");
        assert_eq!(WriteRequest::from_item(create).unwrap(), expected);
        let update =
            r#"{"op":"update","namespace":"n","entity_type":"T","id":"1","patch":{"a":null}}"#;
        assert_eq!(
            WriteRequest::from_item(update).unwrap(),
            WriteRequest::update(
                EntityKey::new("n", "T", "1"),
                serde_json::json!({"a": null})
            )
        );
        let delete = r#"{"op":"delete","namespace":"n","entity_type":"T","id":"1"}"#;
        assert_eq!(
            WriteRequest::from_item(delete).unwrap(),
            WriteRequest::delete(EntityKey::new("n", "T", "1"))
        );
        let restore = r#"{"op":"restore","namespace":"n","entity_type":"T","id":"1","data":{"a":1},"version":7,"partition_key":"p"}"#;
        assert_eq!(
            WriteRequest::from_item(restore).unwrap(),
            WriteRequest::restore_text(EntityKey::new("n", "T", "1"), r#"{"a":1}"#, 7)
                .partition_key("p")
        );
    }

    #[test]
    fn bad_items_say_what_is_wrong() {
        assert!(
            err(r#"{"namespace":"n""#).contains("malformed JSON"),
            "{}",
            err(r#"{"namespace":"n""#)
        );
        assert!(err(r#"{"namespace":"n","entity_type":"T"}"#).contains("missing field `id`"));
        assert!(
            err(r#"{"namespace":"n","entity_type":"T","id":"1","data":{},"x":1}"#)
                .contains("unknown field `x`")
        );
        let key = r#""namespace":"n","entity_type":"T","id":"1""#;
        for (item, says) in [
            (format!(r#"{{{key},"data":[1]}}"#), "must be a JSON object"),
            (format!(r#"{{{key}}}"#), "needs `data`"),
            (
                format!(r#"{{{key},"op":"update","data":{{}}}}"#),
                "needs `patch`",
            ),
            (
                format!(r#"{{{key},"op":"delete","data":{{}}}}"#),
                "takes no `data`",
            ),
            (
                format!(r#"{{{key},"op":"put","data":{{}},"patch":{{}}}}"#),
                "belongs to updates",
            ),
            (
                format!(r#"{{{key},"op":"merge","data":{{}}}}"#),
                "unknown op",
            ),
            (
                format!(r#"{{{key},"op":"put","data":{{}},"version":2}}"#),
                "expected_version",
            ),
            (
                format!(r#"{{{key},"op":"restore","data":{{}}}}"#),
                "needs the exported `version`",
            ),
            (
                format!(r#"{{{key},"op":"restore","data":{{}},"version":2,"expected_version":1}}"#),
                "not `expected_version`",
            ),
            (
                format!(r#"{{{key},"op":"restore","version":2}}"#),
                "needs `data`",
            ),
        ] {
            let message = err(&item);
            assert!(message.contains(says), "{item}: {message}");
            assert!(message.contains("n/T/1"), "names the entity: {message}");
        }
    }
}
