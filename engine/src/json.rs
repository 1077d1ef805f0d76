use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// An entity's data: the text of a JSON object, shared and immutable.
///
/// floe keeps entity state as JSON text rather than a parsed tree: the log, the
/// readers and recovery only move bytes, and parsing happens where a value is
/// really needed (merge patches, partition-key fields, SQL). The invariant that
/// the text is one JSON object is checked when a `Json` is built from outside
/// data; [`Json::from_trusted`] skips the check for bytes floe wrote itself
/// (checksummed log records).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Arc<str>);

impl Json {
    /// Serializes a JSON object.
    pub fn from_value(value: &Value) -> Result<Self> {
        if !value.is_object() {
            return Err(Error::Codec(format!(
                "entity data must be a JSON object, got {}",
                value_kind(value)
            )));
        }
        Ok(Json(Arc::from(serde_json::to_string(value)?)))
    }

    /// Checks text from outside floe and keeps it as it is: it must be one
    /// JSON object. Validation does not build a tree, so it costs about one
    /// pass over the bytes.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        serde_json::from_str::<serde::de::IgnoredAny>(text)?;
        if !text.starts_with('{') {
            let value: Value = serde_json::from_str(text)?;
            return Err(Error::Codec(format!(
                "entity data must be a JSON object, got {}",
                value_kind(&value)
            )));
        }
        Ok(Json(Arc::from(text)))
    }

    /// Wraps text that floe itself serialized earlier (for example read back from
    /// a checksummed log record) without parsing it again.
    pub fn from_trusted(text: impl Into<Arc<str>>) -> Self {
        Json(text.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Size of the text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never true for a valid object).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the text into a tree.
    pub fn to_value(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.0)?)
    }
}

pub(crate) fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes as the JSON object itself, not as a string holding it.
impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom(
                "entity data must be a JSON object",
            ));
        }
        Ok(Json(Arc::from(raw.get())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_objects() {
        assert!(Json::parse("[1,2]").is_err());
        assert!(Json::parse("\"x\"").is_err());
        assert!(Json::parse("{\"a\":").is_err());
        assert!(Json::parse("{} {}").is_err(), "trailing data");
        assert_eq!(
            Json::parse(" {\"a\": 1}\n").unwrap().as_str(),
            r#"{"a": 1}"#
        );
    }

    #[test]
    fn serializes_inline() {
        let json = Json::parse(r#"{"a":[1,2]}"#).unwrap();
        let wrapped = serde_json::json!({ "state": json });
        assert_eq!(wrapped.to_string(), r#"{"state":{"a":[1,2]}}"#);
        let back: Json = serde_json::from_value(wrapped["state"].clone()).unwrap();
        assert_eq!(back, json);
    }
}
