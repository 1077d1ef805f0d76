//! `floe_shard(partition_key, key_hash)`: the shard that owns a key under the
//! topology in force, so `things.shard` names the owner now, not the shard
//! that wrote the event (a migration may have moved the key since).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, Int32Array};
use arrow_schema::DataType;
use datafusion::arrow::compute::cast;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use floe_engine::Router;

/// Hands out the router in force; called once per query, so every row of
/// one answer is routed by the same topology version.
pub type RouterSource = Arc<dyn Fn() -> Arc<Router> + Send + Sync>;

/// The function's name in SQL.
pub(crate) const NAME: &str = "floe_shard";

/// The UDF routing with `router`.
pub(crate) fn udf(router: Arc<Router>) -> ScalarUDF {
    create_udf(
        NAME,
        vec![DataType::Utf8, DataType::Int64],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let keys = args[0].to_array(rows)?;
            let keys = cast(&keys, &DataType::Utf8)?;
            let keys = keys.as_string::<i32>();
            let hashes = args[1].to_array(rows)?;
            let hashes = cast(&hashes, &DataType::Int64)?;
            let hashes = hashes.as_primitive::<Int64Type>();
            let shards: Int32Array = (0..rows)
                .map(|i| {
                    (keys.is_valid(i) && hashes.is_valid(i)).then(|| {
                        // The lake stores the u64 hash's bits as a long.
                        router.route(keys.value(i), hashes.value(i) as u64) as i32
                    })
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(shards)))
        }),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;
    use floe_engine::{HashFunction, Strategy, Topology};

    use super::*;

    #[tokio::test]
    async fn routes_each_row_by_the_topology_including_overrides() {
        let topology = Topology::new(8, HashFunction::Xxh3, Strategy::JumpBack)
            .unwrap()
            .with_override("pinned", 5)
            .unwrap();
        let router = Arc::new(Router::new(topology).unwrap());
        let ctx = SessionContext::new();
        ctx.register_udf(udf(router.clone()));
        let keys = ["a", "pinned", "tenant-7"];
        let values: Vec<String> = keys
            .iter()
            .map(|k| format!("('{k}', {})", router.key_hash(k) as i64))
            .collect();
        let sql = format!(
            "SELECT floe_shard(k, h) FROM (VALUES {}) AS t(k, h)",
            values.join(", ")
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let got: Vec<u32> = batches[0]
            .column(0)
            .as_primitive::<arrow_array::types::Int32Type>()
            .values()
            .iter()
            .map(|&s| s as u32)
            .collect();
        let expected: Vec<u32> = keys
            .iter()
            .map(|k| router.route(k, router.key_hash(k)))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got[1], 5);
    }
}
