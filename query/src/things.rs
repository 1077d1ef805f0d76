//! The `things` view and the typed [`ThingsQuery`].

use std::fmt::Write;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use datafusion::arrow::compute::cast;
use serde_json::Value;

use crate::error::{Error, Result};

/// The current state of every entity: for each (namespace, type, id) the
/// event with the highest version, unless that event is a deletion.
/// `data` is the entity's JSON (query it with `json_get_str(data, 'f')`,
/// `json_get_int`, `json_get_float`, `json_get_bool`, `json_get`, ...).
///
/// Written as "max(version) per entity, joined back to its event" rather
/// than `first_value(state ORDER BY version DESC)`: DataFusion has a
/// vectorised grouped accumulator for ordered `first_value` on numbers only,
/// and the per-group fallback for strings is orders of magnitude slower.
/// Filters on `namespace`, `entity_type` and `entity_id` reach both scans
/// (DataFusion infers them across the join keys), so they prune files.
/// `kind <> 'deleted'` may filter the event side early: when the latest
/// event is a deletion, no other event of the entity has its version, so
/// the entity disappears, as it must.
pub(crate) const THINGS_SQL: &str = "\
SELECT e.namespace, e.entity_type, e.entity_id, e.version, e.state AS data, \
  e.partition_key, e.key_hash, e.shard, e.event_time AS updated_at \
FROM events e \
JOIN (SELECT namespace, entity_type, entity_id, max(version) AS version \
      FROM events GROUP BY namespace, entity_type, entity_id) latest \
  ON e.namespace = latest.namespace AND e.entity_type = latest.entity_type \
  AND e.entity_id = latest.entity_id AND e.version = latest.version \
WHERE e.kind <> 'deleted'";

/// A comparison of a JSON field of `data` with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Compare {
    fn sql(self) -> &'static str {
        match self {
            Compare::Eq => "=",
            Compare::Ne => "<>",
            Compare::Lt => "<",
            Compare::Le => "<=",
            Compare::Gt => ">",
            Compare::Ge => ">=",
        }
    }
}

/// A filter on a top-level field of the entity's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldFilter {
    /// The field name.
    pub field: String,
    /// How to compare.
    pub op: Compare,
    /// A string, number or boolean; its JSON type picks the comparison.
    pub value: Value,
}

/// What to sort by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderBy {
    /// Entity id (the default, and always the tie-breaker).
    Id,
    /// Entity version.
    Version,
    /// Time of the latest change.
    UpdatedAt,
    /// A JSON field compared as text.
    Field(String),
    /// A JSON field compared as a number.
    NumericField(String),
}

/// `query_things(type, namespace, filter, order, limit, offset)` of seed 004.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingsQuery {
    /// Entity type (required).
    pub entity_type: String,
    /// Only this namespace (tenant).
    pub namespace: Option<String>,
    /// Every filter must hold.
    pub filters: Vec<FieldFilter>,
    /// Sort key and direction.
    pub order: (OrderBy, bool),
    /// At most this many things.
    pub limit: Option<usize>,
    /// Skip this many first.
    pub offset: usize,
}

impl ThingsQuery {
    /// Every live entity of a type, by id.
    pub fn new(entity_type: impl Into<String>) -> Self {
        ThingsQuery {
            entity_type: entity_type.into(),
            namespace: None,
            filters: Vec::new(),
            order: (OrderBy::Id, false),
            limit: None,
            offset: 0,
        }
    }

    /// Only entities of this namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Adds a filter on a JSON field.
    pub fn filter(
        mut self,
        field: impl Into<String>,
        op: Compare,
        value: impl Into<Value>,
    ) -> Self {
        self.filters.push(FieldFilter {
            field: field.into(),
            op,
            value: value.into(),
        });
        self
    }

    /// Sorts by `by`, descending if `descending`.
    pub fn order_by(mut self, by: OrderBy, descending: bool) -> Self {
        self.order = (by, descending);
        self
    }

    /// At most `limit` things.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Skips the first `offset` things.
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// The SQL this query runs over the `things` view.
    pub fn to_sql(&self) -> Result<String> {
        if self.entity_type.is_empty() {
            return Err(Error::InvalidQuery(
                "the entity type must not be empty".into(),
            ));
        }
        let mut sql = format!(
            "SELECT namespace, entity_type, entity_id, version, data, updated_at FROM things WHERE entity_type = {}",
            quote(&self.entity_type)
        );
        if let Some(namespace) = &self.namespace {
            let _ = write!(sql, " AND namespace = {}", quote(namespace));
        }
        for filter in &self.filters {
            if filter.field.is_empty() {
                return Err(Error::InvalidQuery("a filter names no field".into()));
            }
            let field = quote(&filter.field);
            let op = filter.op.sql();
            let condition = match &filter.value {
                Value::String(s) => format!("json_get_str(data, {field}) {op} {}", quote(s)),
                Value::Bool(b) => format!("json_get_bool(data, {field}) {op} {b}"),
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    format!("json_get_int(data, {field}) {op} {n}")
                }
                Value::Number(n) => format!("json_get_float(data, {field}) {op} {n}"),
                other => {
                    return Err(Error::InvalidQuery(format!(
                        "filter on {:?}: compare with a string, number or boolean, not {other}",
                        filter.field
                    )));
                }
            };
            let _ = write!(sql, " AND {condition}");
        }
        let (by, descending) = &self.order;
        let direction = if *descending { "DESC" } else { "ASC" };
        let key = match by {
            OrderBy::Id => None,
            OrderBy::Version => Some("version".to_string()),
            OrderBy::UpdatedAt => Some("updated_at".to_string()),
            OrderBy::Field(f) => Some(format!("json_get_str(data, {})", quote(f))),
            OrderBy::NumericField(f) => Some(format!("json_get_float(data, {})", quote(f))),
        };
        match key {
            Some(key) => {
                let _ = write!(
                    sql,
                    " ORDER BY {key} {direction} NULLS LAST, namespace, entity_id"
                );
            }
            None => {
                let _ = write!(
                    sql,
                    " ORDER BY entity_id {direction}, namespace {direction}"
                );
            }
        }
        if let Some(limit) = self.limit {
            let _ = write!(sql, " LIMIT {limit}");
        }
        if self.offset > 0 {
            let _ = write!(sql, " OFFSET {}", self.offset);
        }
        Ok(sql)
    }
}

/// A SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One entity's current state, as `things` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Thing {
    /// Namespace (tenant).
    pub namespace: String,
    /// Entity type.
    pub entity_type: String,
    /// Entity id.
    pub id: String,
    /// Version of the latest change.
    pub version: u64,
    /// The entity's JSON.
    pub data: Value,
    /// Time of the latest change, µs since the epoch.
    pub updated_at_us: i64,
}

/// Decodes the rows of a [`ThingsQuery`] result.
pub(crate) fn decode(batches: &[RecordBatch]) -> Result<Vec<Thing>> {
    let mut things = Vec::new();
    for batch in batches {
        let text = |i: usize| -> Result<arrow_array::ArrayRef> {
            cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| Error::from(datafusion::error::DataFusionError::from(e)))
        };
        let (ns, ty, id, data) = (text(0)?, text(1)?, text(2)?, text(4)?);
        let (ns, ty, id, data) = (
            ns.as_string::<i32>(),
            ty.as_string::<i32>(),
            id.as_string::<i32>(),
            data.as_string::<i32>(),
        );
        let version = batch.column(3).as_primitive::<Int64Type>();
        let time = cast(
            batch.column(5),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )
        .map_err(|e| Error::from(datafusion::error::DataFusionError::from(e)))?;
        let time = time.as_primitive::<TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            let data = if data.is_valid(row) {
                serde_json::from_str(data.value(row)).map_err(|e| {
                    Error::InvalidQuery(format!("entity {} has invalid JSON: {e}", id.value(row)))
                })?
            } else {
                Value::Null
            };
            things.push(Thing {
                namespace: ns.value(row).to_string(),
                entity_type: ty.value(row).to_string(),
                id: id.value(row).to_string(),
                version: version.value(row) as u64,
                data,
                updated_at_us: time.value(row),
            });
        }
    }
    Ok(things)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_queries_become_quoted_sql() {
        let sql = ThingsQuery::new("Order")
            .namespace("o'brien")
            .filter("status", Compare::Eq, "delivered")
            .filter("total_cents", Compare::Ge, 1500)
            .filter("open", Compare::Eq, true)
            .order_by(OrderBy::NumericField("total_cents".into()), true)
            .limit(10)
            .offset(20)
            .to_sql()
            .unwrap();
        assert_eq!(
            sql,
            "SELECT namespace, entity_type, entity_id, version, data, updated_at FROM things \
             WHERE entity_type = 'Order' AND namespace = 'o''brien' \
             AND json_get_str(data, 'status') = 'delivered' \
             AND json_get_int(data, 'total_cents') >= 1500 \
             AND json_get_bool(data, 'open') = true \
             ORDER BY json_get_float(data, 'total_cents') DESC NULLS LAST, namespace, entity_id \
             LIMIT 10 OFFSET 20"
        );
    }

    #[test]
    fn rejects_filters_it_cannot_express() {
        let q = ThingsQuery::new("Order").filter("tags", Compare::Eq, serde_json::json!([1]));
        assert!(matches!(q.to_sql(), Err(Error::InvalidQuery(_))));
        assert!(matches!(
            ThingsQuery::new("").to_sql(),
            Err(Error::InvalidQuery(_))
        ));
    }
}
