//! A table commit, without I/O: check the request's requirements against the
//! current metadata, apply its updates, name the next metadata file.
//!
//! The caller writes the staged metadata and swaps the catalog's pointer
//! from `current_location` to the staged location only if it still names
//! `current_location`; so a commit either lands exactly the metadata its
//! requirements were checked against, or nothing.

use std::str::FromStr;

use iceberg::spec::TableMetadata;
use iceberg::{ErrorKind, MetadataLocation, TableRequirement, TableUpdate};

/// Why a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A requirement does not hold (another writer committed first):
    /// `409 CommitFailedException`; the client may refresh and retry.
    Conflict(String),
    /// An update that cannot apply to this table: `400 BadRequestException`.
    Invalid(String),
}

/// New metadata and where it goes.
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) metadata: TableMetadata,
    pub(crate) location: MetadataLocation,
}

/// Checks `requirements` on `current` (stored at `current_location`) and
/// applies `updates`.
pub(crate) fn stage(
    current: &TableMetadata,
    current_location: &str,
    requirements: &[TableRequirement],
    updates: Vec<TableUpdate>,
) -> Result<Staged, Refused> {
    for requirement in requirements {
        requirement.check(Some(current)).map_err(|e| {
            if e.kind() == ErrorKind::CatalogCommitConflicts {
                Refused::Conflict(e.to_string())
            } else {
                Refused::Invalid(e.to_string())
            }
        })?;
    }
    let mut builder = current
        .clone()
        .into_builder(Some(current_location.to_string()));
    for update in updates {
        builder = update
            .apply(builder)
            .map_err(|e| Refused::Invalid(e.to_string()))?;
    }
    let metadata = builder
        .build()
        .map_err(|e| Refused::Invalid(e.to_string()))?
        .metadata;
    let location = MetadataLocation::from_str(current_location)
        .map_err(|e| Refused::Invalid(format!("current metadata location: {e}")))?
        .with_next_version()
        .with_new_metadata(&metadata);
    Ok(Staged { metadata, location })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::spec::{
        FormatVersion, NestedField, PrimitiveType, Schema, SortOrder, Type, UnboundPartitionSpec,
    };

    use super::*;

    fn metadata() -> TableMetadata {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        iceberg::spec::TableMetadataBuilder::new(
            schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "file:///w/t".into(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata
    }

    const AT: &str =
        "file:///w/t/metadata/00000-2f0b6a44-4fd1-4c0e-b4a8-9a4c2cc1d1b5.metadata.json";

    #[test]
    fn updates_apply_and_the_next_version_is_named() {
        let current = metadata();
        let staged = stage(
            &current,
            AT,
            &[TableRequirement::UuidMatch {
                uuid: current.uuid(),
            }],
            vec![TableUpdate::SetProperties {
                updates: HashMap::from([("k".into(), "v".into())]),
            }],
        )
        .unwrap();
        assert_eq!(staged.metadata.properties()["k"], "v");
        let next = staged.location.to_string();
        assert!(next.starts_with("file:///w/t/metadata/00001-"), "{next}");
        assert!(next.ends_with(".metadata.json"), "{next}");
    }

    #[test]
    fn a_failed_requirement_is_a_conflict_and_a_bad_update_is_invalid() {
        let current = metadata();
        let stale = TableRequirement::RefSnapshotIdMatch {
            r#ref: "main".into(),
            snapshot_id: Some(42),
        };
        let refused = stage(&current, AT, &[stale], vec![]).unwrap_err();
        assert!(matches!(refused, Refused::Conflict(_)), "{refused:?}");
        let missing_schema = TableUpdate::SetCurrentSchema { schema_id: 99 };
        let refused = stage(&current, AT, &[], vec![missing_schema]).unwrap_err();
        assert!(matches!(refused, Refused::Invalid(_)), "{refused:?}");
    }
}
