//! Cross-shard SQL on a running [`Floe`]: the lake, plus its pipeline in
//! fresh mode.

use std::sync::Arc;

use floe_query::{CrossShardQuery, QueryRequest, QueryResult, ThingsPage, ThingsQuery};

use super::Floe;
use crate::error::Result;

impl Floe {
    /// Cross-shard SQL over the Iceberg lake; fails when `lake.enabled` is
    /// off. Its fresh mode ([`QueryRequest::fresh`]) reads this instance's
    /// pipeline too, so it sees every acknowledged write.
    pub fn query(&self) -> Result<Arc<CrossShardQuery>> {
        self.inner
            .query
            .clone()
            .ok_or(crate::Error::LakeDisabled { needs: "SQL" })
    }

    /// Runs one read-only SQL statement across every shard, on the lake's
    /// current snapshot (see `docs/query.md` for what that includes).
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.sql_with(sql, &QueryRequest::default()).await
    }

    /// [`Floe::sql`] with options: fresh mode, time travel, a timeout.
    pub async fn sql_with(&self, sql: &str, request: &QueryRequest) -> Result<QueryResult> {
        self.check_open()?;
        Ok(self.query()?.sql_with(sql, request).await?)
    }

    /// Live entities of a type, filtered on fields of their JSON, ordered
    /// and paged (seed 004's `queryThings`), on the lake's current snapshot
    /// or, with [`QueryRequest::fresh`], on every acknowledged write.
    pub async fn query_things(
        &self,
        query: &ThingsQuery,
        request: &QueryRequest,
    ) -> Result<ThingsPage> {
        self.check_open()?;
        Ok(self.query()?.query_things_with(query, request).await?)
    }
}
