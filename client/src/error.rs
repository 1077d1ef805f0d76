//! The one error type of the client: one variant per way a call can fail,
//! each saying what and why, with [`Error::is_retryable`].

use reqwest::StatusCode;

/// What went wrong with a call.
///
/// Variants built from a server answer carry the server's stable `code`
/// (`{"error": {"code", "message"}}`, docs/operations.md) and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 404: no such entity, migration, shard or snapshot.
    #[error("not found ({code}): {message}")]
    NotFound {
        /// The server's code, e.g. `not_found` or `migration_not_found`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// 409 `version_conflict`: the entity is not at the expected version.
    #[error("version conflict: {message}")]
    VersionConflict {
        /// The server's message (expected and actual versions).
        message: String,
    },
    /// Any other 409: the call clashes with the state (`already_exists`,
    /// `already_migrating`, `partition_key_immutable`, ...).
    #[error("conflict ({code}): {message}")]
    Conflict {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// 401: no token, or one the server does not know.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// 403: the token's role may not make this call.
    #[error("forbidden: {message}")]
    Forbidden {
        /// The server's message.
        message: String,
    },
    /// 400, 413 or 422: the call itself is wrong and changed nothing.
    #[error("bad request ({status} {code}): {message}")]
    BadRequest {
        /// The HTTP status.
        status: u16,
        /// The server's code, e.g. `malformed_json` or `bad_sql`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// 503 `stale_routing` (or `not_owner`): the call reached a node or
    /// routing table that no longer owns the key; refresh the map and retry.
    #[error("stale routing ({code}): {message}")]
    StaleRouting {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// 502 or 503: the node cannot serve now (`not_ready`,
    /// `pipeline_unavailable`, `shutting_down`, ...) and nothing was applied
    /// that a retry with the same idempotency key would apply twice.
    #[error("unavailable ({code}): {message}")]
    Unavailable {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// Any other answer that is not a success (500 `internal`, 504
    /// `query_timeout`, ...).
    #[error("server error ({status} {code}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// No connection could be made: the request never left the client, so
    /// retrying it is safe whatever it does.
    #[error("connecting to {url}: {message}")]
    Connect {
        /// The URL called.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// No answer within the request timeout; the call may or may not have
    /// been applied.
    #[error("no answer from {url} in time: {message}")]
    Timeout {
        /// The URL called.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The connection failed after the request was sent (reset, closed):
    /// the call may or may not have been applied.
    #[error("calling {url}: {message}")]
    Transport {
        /// The URL called.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// A success answer that is not what the API returns.
    #[error("decoding the answer of {url}: {message}")]
    Decode {
        /// The URL called.
        url: String,
        /// Why it does not decode.
        message: String,
    },
    /// The client's own settings are wrong (a base URL that is not
    /// `http://host:port`, a token that cannot be a header).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// A `Result` with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same call may succeed if sent again later: the node was
    /// unreachable, busy, restarting or not the owner any more. Conflicts,
    /// bad requests, missing entities and refused tokens are final.
    ///
    /// A retryable error says nothing about whether a repeat is *safe*: the
    /// client repeats a call that changes state only when it carries an
    /// idempotency key (every write does), or when the request provably
    /// never left ([`Error::Connect`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::StaleRouting { .. }
                | Error::Unavailable { .. }
                | Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Transport { .. }
        )
    }

    /// Whether the map of shard owners should be fetched again before a
    /// retry.
    pub fn is_stale_routing(&self) -> bool {
        matches!(self, Error::StaleRouting { .. })
    }

    /// Whether the call certainly had no effect on the server, so even a
    /// call without an idempotency key may be repeated.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }

    /// The server's code, for errors that come from an answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::NotFound { code, .. }
            | Error::Conflict { code, .. }
            | Error::BadRequest { code, .. }
            | Error::StaleRouting { code, .. }
            | Error::Unavailable { code, .. }
            | Error::Server { code, .. } => Some(code),
            Error::VersionConflict { .. } => Some("version_conflict"),
            Error::Unauthorized { .. } => Some("unauthorized"),
            Error::Forbidden { .. } => Some("forbidden"),
            _ => None,
        }
    }

    /// The error an answer that is not a success stands for. `body` is the
    /// API's `{"error": {"code", "message"}}`; anything else (a proxy's page)
    /// keeps the status with the code `http_<status>`.
    pub(crate) fn from_answer(status: StatusCode, body: &[u8]) -> Error {
        #[derive(serde::Deserialize)]
        struct Body {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            code: String,
            message: String,
        }
        let (code, message) = match serde_json::from_slice::<Body>(body) {
            Ok(Body { error }) => (error.code, error.message),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.chars().take(200).collect();
                (format!("http_{}", status.as_u16()), text)
            }
        };
        let status = status.as_u16();
        match (status, code.as_str()) {
            (_, "stale_routing" | "not_owner") => Error::StaleRouting { code, message },
            (401, _) => Error::Unauthorized { message },
            (403, _) => Error::Forbidden { message },
            (404, _) => Error::NotFound { code, message },
            (409, "version_conflict") => Error::VersionConflict { message },
            (409, _) => Error::Conflict { code, message },
            (400 | 413 | 422, _) => Error::BadRequest {
                status,
                code,
                message,
            },
            (502 | 503, _) => Error::Unavailable { code, message },
            _ => Error::Server {
                status,
                code,
                message,
            },
        }
    }

    /// The error a failed exchange with `url` stands for.
    pub(crate) fn from_transport(url: &str, e: &reqwest::Error) -> Error {
        // The whole chain: reqwest's own text is only "error sending request".
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        let url = url.to_string();
        if e.is_connect() {
            Error::Connect { url, message }
        } else if e.is_timeout() {
            Error::Timeout { url, message }
        } else if e.is_decode() {
            Error::Decode { url, message }
        } else if e.is_builder() {
            Error::Config(format!("{url}: {message}"))
        } else {
            Error::Transport { url, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Error {
        let body = serde_json::json!({"error": {"code": code, "message": "m"}}).to_string();
        Error::from_answer(StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn answers_map_to_one_variant_per_failure() {
        assert!(matches!(answer(404, "not_found"), Error::NotFound { .. }));
        assert!(matches!(
            answer(409, "version_conflict"),
            Error::VersionConflict { .. }
        ));
        assert!(matches!(
            answer(409, "already_exists"),
            Error::Conflict { code, .. } if code == "already_exists"
        ));
        assert!(matches!(
            answer(401, "unauthorized"),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(answer(403, "forbidden"), Error::Forbidden { .. }));
        assert!(matches!(
            answer(413, "body_too_large"),
            Error::BadRequest { status: 413, .. }
        ));
        assert!(matches!(
            answer(503, "stale_routing"),
            Error::StaleRouting { .. }
        ));
        assert!(matches!(
            answer(421, "not_owner"),
            Error::StaleRouting { .. }
        ));
        assert!(matches!(
            answer(503, "not_ready"),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            answer(504, "query_timeout"),
            Error::Server { status: 504, .. }
        ));
        let proxy = Error::from_answer(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(
            proxy,
            Error::Unavailable {
                code: "http_502".into(),
                message: "<html>bad gateway</html>".into()
            }
        );
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        for retryable in [answer(503, "stale_routing"), answer(503, "not_ready")] {
            assert!(retryable.is_retryable(), "{retryable}");
        }
        for last in [
            answer(404, "not_found"),
            answer(409, "version_conflict"),
            answer(400, "malformed_json"),
            answer(401, "unauthorized"),
            answer(500, "internal"),
        ] {
            assert!(!last.is_retryable(), "{last}");
        }
        let url = "http://127.0.0.1:1".to_string();
        let message = String::new();
        assert!(
            Error::Connect {
                url: url.clone(),
                message: message.clone()
            }
            .is_retryable()
        );
        assert!(!Error::Decode { url, message }.is_retryable());
    }
}
