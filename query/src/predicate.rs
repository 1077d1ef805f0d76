//! DataFusion filters -> Iceberg predicates, for planning which data files a
//! scan needs (manifest partition pruning and file min/max statistics).
//!
//! The translation only has to be *sound for pruning*: the Iceberg predicate
//! may keep more files than the filter needs, never fewer. DataFusion still
//! applies every filter to the rows (the provider reports them `Inexact`), so
//! an untranslatable part of a conjunction is simply dropped.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::Datum;

/// The Iceberg type family of a column of `floe.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Long,
    Int,
    TimestampTz,
}

fn column_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "event_id" | "idempotency_key" | "kind" | "namespace" | "entity_type" | "entity_id"
        | "partition_key" => Kind::Text,
        "key_hash" | "version" | "pipeline_offset" => Kind::Long,
        "shard" | "pipeline_partition" => Kind::Int,
        "event_time" => Kind::TimestampTz,
        _ => return None,
    })
}

/// How filters translate.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Translation {
    /// Every event's partition key equals its namespace (floe's default
    /// partition key, `$namespace`), so a namespace filter also prunes the
    /// `bucket(partition_key)` partitions.
    pub(crate) namespace_is_partition_key: bool,
}

impl Translation {
    /// The conjunction of every filter that translates; `None` when none does.
    pub(crate) fn filters(&self, filters: &[Expr]) -> Option<Predicate> {
        filters
            .iter()
            .filter_map(|f| self.expr(f))
            .reduce(Predicate::and)
    }

    fn expr(&self, expr: &Expr) -> Option<Predicate> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                // A conjunct that does not translate is dropped: weaker, still sound.
                Operator::And => match (self.expr(left), self.expr(right)) {
                    (Some(l), Some(r)) => Some(l.and(r)),
                    (one, other) => one.or(other),
                },
                // A disjunction prunes only if both sides do.
                Operator::Or => Some(self.expr(left)?.or(self.expr(right)?)),
                _ => {
                    if let (Some(column), Some(value)) = (column_name(left), literal(right)) {
                        self.comparison(column, *op, value)
                    } else if let (Some(value), Some(column)) = (literal(left), column_name(right))
                    {
                        self.comparison(column, flip(*op)?, value)
                    } else {
                        None
                    }
                }
            },
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                let column = column_name(expr)?;
                let low = self.comparison(column, Operator::GtEq, literal(low)?)?;
                let high = self.comparison(column, Operator::LtEq, literal(high)?)?;
                Some(low.and(high))
            }
            Expr::InList(list) if !list.negated => {
                let column = column_name(&list.expr)?;
                let kind = column_kind(column)?;
                let values = list
                    .list
                    .iter()
                    .map(|v| datum(kind, literal(v)?))
                    .collect::<Option<Vec<_>>>()?;
                let mut predicate = Reference::new(column).is_in(values.clone());
                if column == "namespace" && self.namespace_is_partition_key {
                    predicate = predicate.and(Reference::new("partition_key").is_in(values));
                }
                Some(predicate)
            }
            Expr::IsNull(inner) => Some(Reference::new(column_name(inner)?).is_null()),
            Expr::IsNotNull(inner) => Some(Reference::new(column_name(inner)?).is_not_null()),
            _ => None,
        }
    }

    fn comparison(&self, column: &str, op: Operator, value: &ScalarValue) -> Option<Predicate> {
        let kind = column_kind(column)?;
        let datum = datum(kind, value)?;
        let reference = Reference::new(column);
        let predicate = match op {
            Operator::Eq => reference.equal_to(datum.clone()),
            Operator::NotEq => reference.not_equal_to(datum.clone()),
            Operator::Lt => reference.less_than(datum.clone()),
            Operator::LtEq => reference.less_than_or_equal_to(datum.clone()),
            Operator::Gt => reference.greater_than(datum.clone()),
            Operator::GtEq => reference.greater_than_or_equal_to(datum.clone()),
            _ => return None,
        };
        if op == Operator::Eq && column == "namespace" && self.namespace_is_partition_key {
            return Some(predicate.and(Reference::new("partition_key").equal_to(datum)));
        }
        Some(predicate)
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) if !value.is_null() => Some(value),
        _ => None,
    }
}

/// `literal op column` as `column op' literal`.
fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq | Operator::NotEq => op,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

fn datum(kind: Kind, value: &ScalarValue) -> Option<Datum> {
    let integer = || -> Option<i64> {
        Some(match value {
            ScalarValue::Int8(Some(v)) => i64::from(*v),
            ScalarValue::Int16(Some(v)) => i64::from(*v),
            ScalarValue::Int32(Some(v)) => i64::from(*v),
            ScalarValue::Int64(Some(v)) => *v,
            ScalarValue::UInt8(Some(v)) => i64::from(*v),
            ScalarValue::UInt16(Some(v)) => i64::from(*v),
            ScalarValue::UInt32(Some(v)) => i64::from(*v),
            ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok()?,
            _ => return None,
        })
    };
    match kind {
        Kind::Text => match value {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => Some(Datum::string(s)),
            _ => None,
        },
        Kind::Long => integer().map(Datum::long),
        Kind::Int => integer()
            .and_then(|v| i32::try_from(v).ok())
            .map(Datum::int),
        Kind::TimestampTz => match value {
            ScalarValue::TimestampMicrosecond(Some(us), _) => Some(Datum::timestamptz_micros(*us)),
            ScalarValue::TimestampMillisecond(Some(ms), _) => {
                Some(Datum::timestamptz_micros(ms.checked_mul(1000)?))
            }
            ScalarValue::TimestampSecond(Some(s), _) => {
                Some(Datum::timestamptz_micros(s.checked_mul(1_000_000)?))
            }
            ScalarValue::TimestampNanosecond(Some(ns), _) => {
                Some(Datum::timestamptz_micros(ns.div_euclid(1000)))
            }
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn text(filters: &[Expr], namespace_is_partition_key: bool) -> String {
        Translation {
            namespace_is_partition_key,
        }
        .filters(filters)
        .map_or_else(|| "none".to_string(), |p| p.to_string())
    }

    #[test]
    fn namespace_equality_prunes_the_partition_key_only_when_they_are_one() {
        let f = [col("namespace").eq(lit("acme"))];
        assert_eq!(text(&f, false), "namespace = \"acme\"");
        assert_eq!(
            text(&f, true),
            "(namespace = \"acme\") AND (partition_key = \"acme\")"
        );
    }

    #[test]
    fn untranslatable_conjuncts_are_dropped_but_disjunctions_need_both_sides() {
        let json = datafusion::functions::string::expr_fn::lower(col("state"));
        let and = col("key_hash").gt(lit(5i64)).and(json.clone().eq(lit("x")));
        assert_eq!(text(&[and], false), "key_hash > 5");
        let or = col("key_hash").gt(lit(5i64)).or(json.eq(lit("x")));
        assert_eq!(text(&[or], false), "none");
    }

    #[test]
    fn literal_first_comparisons_are_flipped_and_types_checked() {
        let f = [lit(10i64).gt(col("version")), col("shard").eq(lit(3i64))];
        assert_eq!(text(&f, false), "(version < 10) AND (shard = 3)");
        // A string compared with a long column does not translate.
        assert_eq!(text(&[col("version").eq(lit("x"))], false), "none");
    }

    #[test]
    fn in_lists_and_between() {
        let f = [
            col("namespace").in_list(vec![lit("a"), lit("b")], false),
            col("key_hash").between(lit(-3i64), lit(9i64)),
        ];
        let t = text(&f, true);
        assert!(t.contains("namespace IN"), "{t}");
        assert!(t.contains("partition_key IN"), "{t}");
        assert!(
            t.contains("key_hash >= -3") && t.contains("key_hash <= 9"),
            "{t}"
        );
    }
}
