//! [`Floe::export_namespace`]: one tenant's live entities as NDJSON
//! `restore` lines, for `floe import` into another deployment.
//!
//! A line sets the entity to its data at exactly its version there, unless
//! the target is already at or past that version (see
//! [`WriteRequest::restore`](super::WriteRequest::restore)): so versions carry
//! over, the lines may be imported in any order and any number of times, and
//! a second export imported over the first brings the target up to date.

use std::io::Write;

use floe_engine::{Entity, EntityKey};

use super::Floe;
use crate::error::{Error, Result};

/// Entities asked of the shards per page.
const PAGE: usize = 1_000;

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Lines (live entities) written.
    pub entities: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// One page of an export: its lines and where the next page starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExportPage {
    /// `restore` lines, each ending in a newline.
    pub(crate) lines: String,
    /// Lines in `lines`.
    pub(crate) entities: u64,
    /// The last entity of this page, when another page may follow.
    pub(crate) next: Option<EntityKey>,
}

impl Floe {
    /// Writes every live entity of `namespace`, every type, in (type, id)
    /// order, as one `restore` line each (docs/operations.md, "Moving a
    /// tenant to another deployment"). Deleted entities are not written. Each
    /// page of entities is read from the shards at one moment; writes that
    /// land during the export may or may not be in it, and a second export
    /// picks them up.
    pub async fn export_namespace(
        &self,
        namespace: &str,
        out: &mut dyn Write,
    ) -> Result<ExportReport> {
        let mut report = ExportReport::default();
        let mut after: Option<EntityKey> = None;
        loop {
            let page = self.export_page(namespace, after.as_ref()).await?;
            out.write_all(page.lines.as_bytes())
                .map_err(|e| Error::io("writing the export", e))?;
            report.entities += page.entities;
            report.bytes += page.lines.len() as u64;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        out.flush()
            .map_err(|e| Error::io("writing the export", e))?;
        Ok(report)
    }

    /// The page of [`Floe::export_namespace`] after the entity `after`.
    pub(crate) async fn export_page(
        &self,
        namespace: &str,
        after: Option<&EntityKey>,
    ) -> Result<ExportPage> {
        self.check_open()?;
        EntityKey::new(namespace, "_", "_").validate()?;
        let entities = self
            .inner
            .cluster
            .list_namespace(namespace, after, PAGE)
            .await?;
        let mut page = ExportPage::default();
        for (entity, partition_key) in &entities {
            restore_line(&mut page.lines, entity, partition_key);
        }
        page.entities = entities.len() as u64;
        if entities.len() == PAGE {
            page.next = entities.last().map(|(e, _)| e.key.clone());
        }
        Ok(page)
    }
}

/// One `restore` line. It carries no idempotency key: a restore is
/// idempotent by its version, whatever file it comes from and however often
/// it is sent, and a key would only make a repeat look applied.
fn restore_line(line: &mut String, entity: &Entity, partition_key: &str) {
    let text = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let key = &entity.key;
    // The data is stored JSON text (one object, checked when written): it
    // goes in as it is, not parsed again.
    line.push_str(&format!(
        "{{\"op\":\"restore\",\"namespace\":{},\"entity_type\":{},\"id\":{},\"version\":{},\"partition_key\":{},\"data\":{}}}\n",
        text(&key.namespace),
        text(&key.entity_type),
        text(&key.id),
        entity.version,
        text(partition_key),
        entity.data.as_str(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteRequest;
    use floe_engine::Json;

    #[test]
    fn a_restore_line_reads_back_as_the_restore_it_describes() {
        let entity = Entity {
            key: EntityKey::new("t\"1", "Order", "o/1"),
            version: 7,
            data: Json::parse(r#"{"total": 12.5, "note": "a \"quoted\" word"}"#).unwrap(),
            updated_at_us: 1,
        };
        let mut line = String::new();
        restore_line(&mut line, &entity, "t\"1");
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        let request = WriteRequest::from_item(line.trim_end()).unwrap();
        let expected = WriteRequest::restore_text(
            entity.key.clone(),
            r#"{"total": 12.5, "note": "a \"quoted\" word"}"#,
            7,
        )
        .partition_key("t\"1");
        assert_eq!(request, expected);
    }
}
