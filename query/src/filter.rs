//! Filters on the JSON of entities: a small text grammar parsed into a typed
//! AST ([`Condition`]), turned into DataFusion expressions with every value a
//! literal. No part of a filter is ever pasted into SQL text, so a filter
//! cannot inject SQL: the worst a hostile filter can do is fail to parse.
//!
//! ```text
//! filter    := condition ( AND condition )*
//! condition := path op value
//!            | path [NOT] IN ( value , ... )
//!            | path [NOT] LIKE 'pattern' | path [NOT] ILIKE 'pattern'
//! op        := = | == | != | <> | < | <= | > | >=
//! path      := key ( . key | [ index ] )*      key: [A-Za-z0-9_$-]+ or "any text"
//! value     := 'text' | "text" | number | true | false | bare-word (text)
//! ```
//!
//! In quoted text `\'` (or `\"`) is the quote and `\\` a backslash; any
//! other backslash is kept, so a LIKE pattern escapes with it: `'100\%'`.
//!
//! Semantics (SQL's, on typed extraction): a condition holds only when the
//! field exists and holds a value of the literal's family (text, number,
//! boolean); so `status != 'paid'` and `status NOT IN (...)` are false for an
//! entity without a text `status`. Numbers compare numerically whether the
//! JSON holds an integer or a float (`12.0 = 12`); integers exactly.

use std::fmt;

mod parse;

pub use parse::parse_filter;
use parse::{Parser, is_key_char};

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Expr, Like, TryCast, col, lit};
use datafusion::prelude::coalesce;
use datafusion_functions_json::udfs::{json_get_bool_udf, json_get_json_udf, json_get_str_udf};

/// Longest filter text accepted.
pub const MAX_FILTER_LEN: usize = 4096;
/// Most conditions in one query.
pub const MAX_CONDITIONS: usize = 64;
/// Most values in one `IN` list.
pub const MAX_IN_VALUES: usize = 1000;
/// Deepest path.
pub const MAX_PATH_DEPTH: usize = 16;

/// Why a filter was refused; `at` is a byte offset into the filter text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// Nothing but blanks.
    #[error("the filter is empty")]
    Empty,
    /// Longer than [`MAX_FILTER_LEN`], more than [`MAX_CONDITIONS`] or
    /// [`MAX_IN_VALUES`], or deeper than [`MAX_PATH_DEPTH`].
    #[error("{what}: more than the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A field path was expected.
    #[error(
        "at {at}: expected a field path (like status or address.city or items[0].sku), found {found}"
    )]
    ExpectedPath {
        /// Byte offset.
        at: usize,
        /// What is there.
        found: String,
    },
    /// A comparison operator was expected.
    #[error(
        "at {at}: expected an operator (= != < <= > >= IN, NOT IN, LIKE, NOT LIKE, ILIKE), found {found}"
    )]
    ExpectedOperator {
        /// Byte offset.
        at: usize,
        /// What is there.
        found: String,
    },
    /// A value was expected.
    #[error("at {at}: expected a value ('text', a number, true or false), found {found}")]
    ExpectedValue {
        /// Byte offset.
        at: usize,
        /// What is there.
        found: String,
    },
    /// Punctuation (`(`, `)`, `,`, `]`) was expected.
    #[error("at {at}: expected {expected}, found {found}")]
    Expected {
        /// Byte offset.
        at: usize,
        /// What should be there.
        expected: &'static str,
        /// What is there.
        found: String,
    },
    /// A quote without its closing quote.
    #[error("at {at}: the quoted text is not closed")]
    UnterminatedString {
        /// Byte offset of the opening quote.
        at: usize,
    },
    /// A number that has no finite value, or an index that is not one.
    #[error("at {at}: {text:?} is not a usable number")]
    BadNumber {
        /// Byte offset.
        at: usize,
        /// The text.
        text: String,
    },
    /// `LIKE` with a number or boolean.
    #[error("at {at}: LIKE takes a text pattern, not {found}")]
    LikeNeedsText {
        /// Byte offset.
        at: usize,
        /// The value given.
        found: String,
    },
    /// An `IN` list mixing text, numbers and booleans.
    #[error("at {at}: the values of an IN list must all be text, all numbers or all booleans")]
    MixedList {
        /// Byte offset of the list.
        at: usize,
    },
    /// Text after a complete condition that does not start another.
    #[error("at {at}: unexpected {found}; conditions are joined with AND")]
    Trailing {
        /// Byte offset.
        at: usize,
        /// What is there.
        found: String,
    },
}

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path into an entity's JSON: `address.city`, `items[0].sku`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPath(
    /// The steps, outermost first.
    pub Vec<PathSegment>,
);

impl JsonPath {
    /// A top-level field.
    pub fn field(name: impl Into<String>) -> Self {
        JsonPath(vec![PathSegment::Key(name.into())])
    }

    /// Parses `address.city`, `items[0].sku` or `"odd key".x`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut p = Parser::new(text)?;
        let path = p.path()?;
        p.end()?;
        Ok(path)
    }

    /// The arguments after `data` of a `json_get_*` call.
    fn args(&self) -> impl Iterator<Item = Expr> + '_ {
        self.0.iter().map(|s| match s {
            PathSegment::Key(k) => lit(k.clone()),
            PathSegment::Index(i) => lit(*i as i64),
        })
    }

    fn call(&self, f: fn() -> std::sync::Arc<datafusion::logical_expr::ScalarUDF>) -> Expr {
        let mut args = vec![col("data")];
        args.extend(self.args());
        f().call(args)
    }

    /// The field as text (`NULL` unless a JSON string).
    pub(crate) fn text(&self) -> Expr {
        self.call(json_get_str_udf)
    }

    /// The field as a boolean (`NULL` unless a JSON boolean).
    fn boolean(&self) -> Expr {
        self.call(json_get_bool_udf)
    }

    /// The field's JSON text cast to `ty` (`NULL` unless it is a number of
    /// that kind). Not `json_get_int`/`json_get_float`: in
    /// datafusion-functions-json 0.53.1 those return `NULL` for every
    /// negative number.
    fn number(&self, ty: DataType) -> Expr {
        Expr::TryCast(TryCast::new(Box::new(self.call(json_get_json_udf)), ty))
    }

    /// The field as a float, for ordering (`NULL` unless a number).
    pub(crate) fn float(&self) -> Expr {
        self.number(DataType::Float64)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                PathSegment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if !k.is_empty() && k.chars().all(is_key_char) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))?;
                    }
                }
                PathSegment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A literal of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// From a JSON value: strings, numbers and booleans; `None` otherwise.
    pub fn from_json(value: &serde_json::Value) -> Option<Scalar> {
        use serde_json::Value as V;
        Some(match value {
            V::String(s) => Scalar::Text(s.clone()),
            V::Bool(b) => Scalar::Bool(*b),
            V::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Float(n.as_f64().filter(|f| f.is_finite())?),
            },
            _ => return None,
        })
    }

    fn family(&self) -> u8 {
        match self {
            Scalar::Text(_) => 0,
            Scalar::Int(_) | Scalar::Float(_) => 1,
            Scalar::Bool(_) => 2,
        }
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::Text(s.to_string())
    }
}

impl From<String> for Scalar {
    fn from(s: String) -> Self {
        Scalar::Text(s)
    }
}

impl From<i64> for Scalar {
    fn from(i: i64) -> Self {
        Scalar::Int(i)
    }
}

impl From<i32> for Scalar {
    fn from(i: i32) -> Self {
        Scalar::Int(i64::from(i))
    }
}

impl From<bool> for Scalar {
    fn from(b: bool) -> Self {
        Scalar::Bool(b)
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(s) => write!(f, "'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x:?}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    fn apply(self, left: Expr, right: Expr) -> Expr {
        match self {
            Compare::Eq => left.eq(right),
            Compare::Ne => left.not_eq(right),
            Compare::Lt => left.lt(right),
            Compare::Le => left.lt_eq(right),
            Compare::Gt => left.gt(right),
            Compare::Ge => left.gt_eq(right),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Compare::Eq => "=",
            Compare::Ne => "!=",
            Compare::Lt => "<",
            Compare::Le => "<=",
            Compare::Gt => ">",
            Compare::Ge => ">=",
        }
    }
}

/// One condition on an entity's JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `path op value`.
    Compare {
        /// The field.
        path: JsonPath,
        /// The operator.
        op: Compare,
        /// The literal.
        value: Scalar,
    },
    /// `path [NOT] IN (values)`: the values are all of one family.
    In {
        /// The field.
        path: JsonPath,
        /// The list.
        values: Vec<Scalar>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `path [NOT] LIKE pattern` (`%` any run, `_` one character, `\`
    /// escapes); `ILIKE` ignores case.
    Like {
        /// The field.
        path: JsonPath,
        /// The pattern.
        pattern: String,
        /// `NOT LIKE`.
        negated: bool,
        /// `ILIKE`.
        case_insensitive: bool,
    },
}

impl Condition {
    /// The condition as a DataFusion expression over the `data` column.
    pub(crate) fn expr(&self) -> Expr {
        match self {
            Condition::Compare { path, op, value } => match value {
                Scalar::Text(s) => op.apply(path.text(), lit(s.clone())),
                Scalar::Bool(b) => op.apply(path.boolean(), lit(*b)),
                // Exact as an integer; a JSON float (or an integer beyond
                // i64) does not cast to Int64 and is compared as a float.
                Scalar::Int(i) => coalesce(vec![
                    op.apply(path.number(DataType::Int64), lit(*i)),
                    op.apply(path.float(), lit(*i as f64)),
                ]),
                Scalar::Float(x) => op.apply(path.float(), lit(*x)),
            },
            Condition::In {
                path,
                values,
                negated,
            } => {
                let n = *negated;
                let lits = |f: &dyn Fn(&Scalar) -> Expr| values.iter().map(f).collect::<Vec<_>>();
                match values.first() {
                    Some(Scalar::Text(_)) => path.text().in_list(
                        lits(&|v| match v {
                            Scalar::Text(s) => lit(s.clone()),
                            _ => unreachable!("IN lists are of one family"),
                        }),
                        n,
                    ),
                    Some(Scalar::Bool(_)) => path.boolean().in_list(
                        lits(&|v| match v {
                            Scalar::Bool(b) => lit(*b),
                            _ => unreachable!("IN lists are of one family"),
                        }),
                        n,
                    ),
                    _ if values.iter().all(|v| matches!(v, Scalar::Int(_))) => {
                        let ints = lits(&|v| match v {
                            Scalar::Int(i) => lit(*i),
                            _ => unreachable!("all integers"),
                        });
                        let floats = lits(&|v| match v {
                            Scalar::Int(i) => lit(*i as f64),
                            _ => unreachable!("all integers"),
                        });
                        coalesce(vec![
                            path.number(DataType::Int64).in_list(ints, n),
                            path.float().in_list(floats, n),
                        ])
                    }
                    _ => path.float().in_list(
                        lits(&|v| match v {
                            Scalar::Int(i) => lit(*i as f64),
                            Scalar::Float(x) => lit(*x),
                            _ => unreachable!("IN lists are of one family"),
                        }),
                        n,
                    ),
                }
            }
            Condition::Like {
                path,
                pattern,
                negated,
                case_insensitive,
            } => Expr::Like(Like::new(
                *negated,
                Box::new(path.text()),
                Box::new(lit(pattern.clone())),
                Some('\\'),
                *case_insensitive,
            )),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Compare { path, op, value } => {
                write!(f, "{path} {} {value}", op.symbol())
            }
            Condition::In {
                path,
                values,
                negated,
            } => {
                let list: Vec<String> = values.iter().map(Scalar::to_string).collect();
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{path} {not}IN ({})", list.join(", "))
            }
            Condition::Like {
                path,
                pattern,
                negated,
                case_insensitive,
            } => {
                let not = if *negated { "NOT " } else { "" };
                let like = if *case_insensitive { "ILIKE" } else { "LIKE" };
                write!(f, "{path} {not}{like} {}", Scalar::Text(pattern.clone()))
            }
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
