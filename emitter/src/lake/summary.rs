//! The summary of a rewrite snapshot: the floe properties it carries from
//! its parent and the `total-*` counts it derives from it.

use std::collections::HashMap;

use iceberg::spec::{Summary, TableMetadata};
use uuid::Uuid;

use super::rewrite::MAINTENANCE_PROPERTY;
use crate::sink::layout::PARTITIONS_PROPERTY;

/// The floe summary properties (pipeline offsets, partition count, owner)
/// of the newest snapshot that has them, walking back from the current one:
/// what [`crate::sink::CommittedOffsets::of`] reads. A rewrite carries them
/// unchanged, so the offsets stay readable after its parents are expired.
pub(crate) fn carried_properties(metadata: &TableMetadata) -> HashMap<String, String> {
    let mut next = metadata.current_snapshot();
    while let Some(snapshot) = next {
        let summary = &snapshot.summary().additional_properties;
        if summary.contains_key(PARTITIONS_PROPERTY) {
            return summary
                .iter()
                .filter(|(k, _)| k.starts_with("floe.") && k.as_str() != MAINTENANCE_PROPERTY)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        next = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    HashMap::new()
}

/// `total-*` = the parent's total + added - removed, for every total the
/// parent has (what iceberg's crate-private `update_snapshot_summaries`
/// does).
pub(crate) fn add_totals(properties: &mut HashMap<String, String>, parent: Option<&Summary>) {
    const TOTALS: [(&str, &str, &str); 6] = [
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-records", "added-records", "deleted-records"),
        ("total-files-size", "added-files-size", "removed-files-size"),
        (
            "total-delete-files",
            "added-delete-files",
            "removed-delete-files",
        ),
        (
            "total-position-deletes",
            "added-position-deletes",
            "removed-position-deletes",
        ),
        (
            "total-equality-deletes",
            "added-equality-deletes",
            "removed-equality-deletes",
        ),
    ];
    let Some(parent) = parent else { return };
    let get = |map: &HashMap<String, String>, key: &str| {
        map.get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for (total, added, removed) in TOTALS {
        let Some(before) = parent
            .additional_properties
            .get(total)
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let after = (before + get(properties, added)).saturating_sub(get(properties, removed));
        properties.insert(total.to_string(), after.to_string());
    }
}

/// A positive snapshot id no snapshot of the table has.
pub(crate) fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (hi, lo) = Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) >> 1) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::Operation;

    #[test]
    fn totals_follow_the_parent() {
        let parent = Summary {
            operation: Operation::Append,
            additional_properties: HashMap::from([
                ("total-data-files".to_string(), "10".to_string()),
                ("total-records".to_string(), "1000".to_string()),
            ]),
        };
        let mut props = HashMap::from([
            ("added-data-files".to_string(), "1".to_string()),
            ("deleted-data-files".to_string(), "4".to_string()),
            ("added-records".to_string(), "400".to_string()),
            ("deleted-records".to_string(), "400".to_string()),
        ]);
        add_totals(&mut props, Some(&parent));
        assert_eq!(props["total-data-files"], "7");
        assert_eq!(props["total-records"], "1000");
        assert!(
            !props.contains_key("total-files-size"),
            "the parent had none"
        );
    }
}
