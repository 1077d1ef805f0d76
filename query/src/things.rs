//! The `things` view and the typed [`ThingsQuery`].

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use datafusion::arrow::compute::cast;
use datafusion::logical_expr::{SortExpr, col, lit};
use datafusion::prelude::DataFrame;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::filter::{Compare, Condition, FilterError, JsonPath, Scalar, parse_filter};

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
///
/// `shard` is the shard that owns the entity now: with a router
/// ([`crate::CrossShardQuery::with_router`]) the view computes it with
/// `floe_shard(partition_key, key_hash)` under the topology in force when the
/// query started; `emitted_shard` is the shard that wrote the latest event.
pub(crate) fn things_sql(owner: bool) -> String {
    let shard = if owner {
        "floe_shard(partition_key, key_hash)"
    } else {
        "emitted_shard"
    };
    // The owner is computed over a subquery whose columns are all
    // unqualified: with `e.shard` and a computed `shard` side by side,
    // DataFusion 53's `push_down_leaf_projections` fails on the ambiguous
    // names when a JSON function is pushed towards the scan.
    format!(
        "SELECT namespace, entity_type, entity_id, version, data, partition_key, key_hash, \
  {shard} AS shard, emitted_shard, updated_at FROM (\
SELECT e.namespace, e.entity_type, e.entity_id, e.version, e.state AS data, \
  e.partition_key, e.key_hash, e.shard AS emitted_shard, e.event_time AS updated_at \
FROM events e \
JOIN (SELECT namespace, entity_type, entity_id, max(version) AS version \
      FROM events GROUP BY namespace, entity_type, entity_id) latest \
  ON e.namespace = latest.namespace AND e.entity_type = latest.entity_type \
  AND e.entity_id = latest.entity_id AND e.version = latest.version \
WHERE e.kind <> 'deleted') current"
    )
}

/// What to sort by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderBy {
    /// Entity id (the default).
    Id,
    /// Entity version.
    Version,
    /// Time of the latest change.
    UpdatedAt,
    /// A JSON field: numbers in numeric order first, then text in text
    /// order, then entities without the field.
    Field(JsonPath),
}

impl OrderBy {
    /// Parses `KEY`, `KEY asc` or `KEY desc` (any case) into the key and
    /// whether it is descending.
    pub fn parse_directed(text: &str) -> std::result::Result<(OrderBy, bool), FilterError> {
        let text = text.trim();
        if let Some((key, word)) = text.rsplit_once(char::is_whitespace) {
            if word.eq_ignore_ascii_case("desc") {
                return Ok((OrderBy::parse(key)?, true));
            }
            if word.eq_ignore_ascii_case("asc") {
                return Ok((OrderBy::parse(key)?, false));
            }
        }
        Ok((OrderBy::parse(text)?, false))
    }

    /// Parses `$id`, `$version`, `$updated_at` or a field path.
    pub fn parse(text: &str) -> std::result::Result<OrderBy, FilterError> {
        Ok(match text.trim() {
            "$id" => OrderBy::Id,
            "$version" => OrderBy::Version,
            "$updated_at" => OrderBy::UpdatedAt,
            path => OrderBy::Field(JsonPath::parse(path)?),
        })
    }
}

/// `query_things(type, namespace, filter, order, limit, offset)` of seed 004.
///
/// Built from typed parts only: [`ThingsQuery::plan`] turns it into a
/// DataFusion plan whose values are all literals, never into SQL text.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingsQuery {
    /// Entity type (required).
    pub entity_type: String,
    /// Only this namespace (tenant).
    pub namespace: Option<String>,
    /// Every condition must hold.
    pub conditions: Vec<Condition>,
    /// Sort key and direction (`true`: descending). Ties are broken by
    /// namespace and id, so pages are stable.
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
            conditions: Vec::new(),
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

    /// Adds a comparison of a top-level JSON field.
    pub fn filter(
        mut self,
        field: impl Into<String>,
        op: Compare,
        value: impl Into<Scalar>,
    ) -> Self {
        self.conditions.push(Condition::Compare {
            path: JsonPath::field(field),
            op,
            value: value.into(),
        });
        self
    }

    /// Adds a condition.
    pub fn condition(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    /// Adds the conditions of a filter text (see [`parse_filter`]).
    pub fn parse_filter(mut self, text: &str) -> Result<Self> {
        self.conditions.extend(parse_filter(text)?);
        Ok(self)
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

    /// The query as a plan over the `things` view.
    pub(crate) fn plan(&self, things: DataFrame) -> Result<DataFrame> {
        if self.entity_type.is_empty() {
            return Err(Error::InvalidQuery(
                "the entity type must not be empty".into(),
            ));
        }
        // DataFusion keeps skip and fetch as i64: a larger one would wrap
        // into a negative OFFSET and fail in the optimizer.
        for (what, value) in [("offset", Some(self.offset)), ("limit", self.limit)] {
            if let Some(value) = value
                && i64::try_from(value).is_err()
            {
                return Err(Error::InvalidQuery(format!(
                    "{what} {value} is larger than {}",
                    i64::MAX
                )));
            }
        }
        let mut predicate = col("entity_type").eq(lit(self.entity_type.clone()));
        if let Some(namespace) = &self.namespace {
            predicate = predicate.and(col("namespace").eq(lit(namespace.clone())));
        }
        for condition in &self.conditions {
            predicate = predicate.and(condition.expr());
        }
        let (by, descending) = &self.order;
        let asc = !descending;
        let ties = [
            col("namespace").sort(true, false),
            col("entity_id").sort(true, false),
        ];
        let mut sort: Vec<SortExpr> = match by {
            OrderBy::Id => vec![
                col("entity_id").sort(asc, false),
                col("namespace").sort(asc, false),
            ],
            OrderBy::Version => vec![col("version").sort(asc, false)],
            OrderBy::UpdatedAt => vec![col("updated_at").sort(asc, false)],
            OrderBy::Field(path) => {
                vec![path.float().sort(asc, false), path.text().sort(asc, false)]
            }
        };
        sort.extend(ties);
        let df = things
            .filter(predicate)?
            .sort(sort)?
            .limit(self.offset, self.limit)?
            .select_columns(&[
                "namespace",
                "entity_type",
                "entity_id",
                "version",
                "data",
                "updated_at",
                "shard",
                "partition_key",
            ])?;
        Ok(df)
    }
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
    /// The shard that owns it now (see [`things_sql`]).
    pub shard: u32,
    /// Its partition key.
    pub partition_key: String,
}

/// Decodes the rows of a [`ThingsQuery`] result.
pub(crate) fn decode(batches: &[RecordBatch]) -> Result<Vec<Thing>> {
    let mut things = Vec::new();
    for batch in batches {
        let text = |i: usize| -> Result<arrow_array::ArrayRef> {
            cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| Error::from(datafusion::error::DataFusionError::from(e)))
        };
        let (ns, ty, id, data, key) = (text(0)?, text(1)?, text(2)?, text(4)?, text(7)?);
        let (ns, ty, id, data, key) = (
            ns.as_string::<i32>(),
            ty.as_string::<i32>(),
            id.as_string::<i32>(),
            data.as_string::<i32>(),
            key.as_string::<i32>(),
        );
        let shard = cast(batch.column(6), &DataType::Int64)
            .map_err(|e| Error::from(datafusion::error::DataFusionError::from(e)))?;
        let shard = shard.as_primitive::<Int64Type>();
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
                shard: shard.value(row) as u32,
                partition_key: key.value(row).to_string(),
            });
        }
    }
    Ok(things)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_parse() {
        assert_eq!(OrderBy::parse("$id"), Ok(OrderBy::Id));
        assert_eq!(OrderBy::parse("$version"), Ok(OrderBy::Version));
        assert_eq!(OrderBy::parse(" $updated_at "), Ok(OrderBy::UpdatedAt));
        assert_eq!(
            OrderBy::parse("totals.cents"),
            Ok(OrderBy::Field(JsonPath::parse("totals.cents").unwrap()))
        );
        assert!(OrderBy::parse("a b").is_err());
        assert_eq!(
            OrderBy::parse_directed("$version DESC"),
            Ok((OrderBy::Version, true))
        );
        assert_eq!(
            OrderBy::parse_directed("$updated_at asc"),
            Ok((OrderBy::UpdatedAt, false))
        );
        assert_eq!(OrderBy::parse_directed("$id"), Ok((OrderBy::Id, false)));
        assert!(OrderBy::parse_directed("total sideways").is_err());
        assert!(OrderBy::parse("").is_err());
    }
}
