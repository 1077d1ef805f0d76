//! The filter grammar: text to [`Condition`]s, with the byte offset of
//! whatever does not parse.

use super::*;

/// Parses a filter: one or more conditions joined with `AND`.
pub fn parse_filter(text: &str) -> Result<Vec<Condition>, FilterError> {
    let mut p = Parser::new(text)?;
    let mut conditions = vec![p.condition()?];
    loop {
        p.blanks();
        if p.rest().is_empty() {
            return Ok(conditions);
        }
        if !p.keyword("and") {
            return Err(FilterError::Trailing {
                at: p.at,
                found: p.found(),
            });
        }
        if conditions.len() == MAX_CONDITIONS {
            return Err(FilterError::TooLarge {
                what: "conditions",
                limit: MAX_CONDITIONS,
            });
        }
        conditions.push(p.condition()?);
    }
}

/// Path key characters that need no quotes.
pub(super) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-')
}

/// Characters that end a bare word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ',' | '\'' | '"' | '=' | '!' | '<' | '>')
}

pub(super) struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLarge {
                what: "filter length in bytes",
                limit: MAX_FILTER_LEN,
            });
        }
        if text.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        Ok(Parser { text, at: 0 })
    }

    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn blanks(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// What is at the cursor, for messages.
    fn found(&self) -> String {
        let rest = self.rest();
        if rest.is_empty() {
            return "the end".into();
        }
        let snippet: String = rest.chars().take(16).collect();
        format!("{snippet:?}")
    }

    pub(super) fn end(&mut self) -> Result<(), FilterError> {
        self.blanks();
        if self.rest().is_empty() {
            Ok(())
        } else {
            Err(FilterError::Trailing {
                at: self.at,
                found: self.found(),
            })
        }
    }

    /// Consumes `word` (any case) when it stands alone at the cursor.
    fn keyword(&mut self, word: &str) -> bool {
        self.blanks();
        let rest = self.rest();
        let n = word.len();
        if rest.len() >= n
            && rest.is_char_boundary(n)
            && rest[..n].eq_ignore_ascii_case(word)
            && rest[n..].chars().next().is_none_or(ends_word)
        {
            self.at += n;
            true
        } else {
            false
        }
    }

    fn punct(&mut self, c: char, expected: &'static str) -> Result<(), FilterError> {
        self.blanks();
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            Ok(())
        } else {
            Err(FilterError::Expected {
                at: self.at,
                expected,
                found: self.found(),
            })
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let start = self.at;
        self.at += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                // `\'` (the quote) and `\\` are escapes; any other backslash
                // stays, so LIKE patterns keep theirs (`'100\%'`).
                '\\' => match chars.clone().next() {
                    Some((_, e)) if e == quote || e == '\\' => {
                        chars.next();
                        out.push(e);
                    }
                    Some(_) => out.push('\\'),
                    None => break,
                },
                c if c == quote => {
                    self.at += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err(FilterError::UnterminatedString { at: start })
    }

    pub(super) fn path(&mut self) -> Result<JsonPath, FilterError> {
        self.blanks();
        let mut segments = vec![self.key()?];
        loop {
            match self.peek() {
                Some('.') => {
                    self.at += 1;
                    segments.push(self.key()?);
                }
                Some('[') => {
                    self.at += 1;
                    let start = self.at;
                    let digits = self.rest().chars().take_while(char::is_ascii_digit).count();
                    let text = &self.rest()[..digits];
                    let index = text.parse::<usize>().map_err(|_| FilterError::BadNumber {
                        at: start,
                        text: text.to_string(),
                    })?;
                    self.at += digits;
                    self.punct(']', "] after an array index")?;
                    segments.push(PathSegment::Index(index));
                }
                _ => break,
            }
            if segments.len() > MAX_PATH_DEPTH {
                return Err(FilterError::TooLarge {
                    what: "path depth",
                    limit: MAX_PATH_DEPTH,
                });
            }
        }
        Ok(JsonPath(segments))
    }

    fn key(&mut self) -> Result<PathSegment, FilterError> {
        if self.peek() == Some('"') {
            return Ok(PathSegment::Key(self.quoted('"')?));
        }
        let n = self.rest().chars().take_while(|&c| is_key_char(c)).count();
        if n == 0 {
            return Err(FilterError::ExpectedPath {
                at: self.at,
                found: self.found(),
            });
        }
        let key = self.rest()[..n].to_string();
        self.at += n;
        Ok(PathSegment::Key(key))
    }

    fn condition(&mut self) -> Result<Condition, FilterError> {
        let path = self.path()?;
        self.blanks();
        let at = self.at;
        for (symbol, op) in [
            ("==", Compare::Eq),
            ("!=", Compare::Ne),
            ("<>", Compare::Ne),
            ("<=", Compare::Le),
            (">=", Compare::Ge),
            ("=", Compare::Eq),
            ("<", Compare::Lt),
            (">", Compare::Gt),
        ] {
            if self.rest().starts_with(symbol) {
                self.at += symbol.len();
                let value = self.value()?;
                return Ok(Condition::Compare { path, op, value });
            }
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            return self.in_list(path, negated);
        }
        let case_insensitive = if self.keyword("like") {
            false
        } else if self.keyword("ilike") {
            true
        } else {
            return Err(FilterError::ExpectedOperator {
                at,
                found: self.found(),
            });
        };
        self.blanks();
        let at = self.at;
        match self.value()? {
            Scalar::Text(pattern) => Ok(Condition::Like {
                path,
                pattern,
                negated,
                case_insensitive,
            }),
            other => Err(FilterError::LikeNeedsText {
                at,
                found: other.to_string(),
            }),
        }
    }

    fn in_list(&mut self, path: JsonPath, negated: bool) -> Result<Condition, FilterError> {
        self.blanks();
        let at = self.at;
        self.punct('(', "( to open the IN list")?;
        let mut values = vec![self.value()?];
        loop {
            self.blanks();
            match self.peek() {
                Some(',') => {
                    self.at += 1;
                    if values.len() == MAX_IN_VALUES {
                        return Err(FilterError::TooLarge {
                            what: "values in an IN list",
                            limit: MAX_IN_VALUES,
                        });
                    }
                    values.push(self.value()?);
                }
                _ => {
                    self.punct(')', ", or ) in the IN list")?;
                    break;
                }
            }
        }
        if values.iter().any(|v| v.family() != values[0].family()) {
            return Err(FilterError::MixedList { at });
        }
        Ok(Condition::In {
            path,
            values,
            negated,
        })
    }

    fn value(&mut self) -> Result<Scalar, FilterError> {
        self.blanks();
        let at = self.at;
        match self.peek() {
            Some(q @ ('\'' | '"')) => return Ok(Scalar::Text(self.quoted(q)?)),
            None => {
                return Err(FilterError::ExpectedValue {
                    at,
                    found: self.found(),
                });
            }
            _ => {}
        }
        let n: usize = self
            .rest()
            .chars()
            .take_while(|&c| !ends_word(c))
            .map(char::len_utf8)
            .sum();
        if n == 0 {
            return Err(FilterError::ExpectedValue {
                at,
                found: self.found(),
            });
        }
        let word = &self.rest()[..n];
        self.at += n;
        let numeric = {
            let digits = word.strip_prefix('-').unwrap_or(word);
            digits.starts_with(|c: char| c.is_ascii_digit())
        };
        Ok(match word {
            "true" => Scalar::Bool(true),
            "false" => Scalar::Bool(false),
            _ if numeric => {
                if let Ok(i) = word.parse::<i64>() {
                    Scalar::Int(i)
                } else {
                    match word.parse::<f64>() {
                        Ok(x) if x.is_finite() => Scalar::Float(x),
                        // `2026-01-01`, `3rd`: text that starts with a digit.
                        Err(_) => Scalar::Text(word.to_string()),
                        Ok(_) => {
                            return Err(FilterError::BadNumber {
                                at,
                                text: word.to_string(),
                            });
                        }
                    }
                }
            }
            _ => Scalar::Text(word.to_string()),
        })
    }
}
