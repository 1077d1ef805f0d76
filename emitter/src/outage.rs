//! Telling an outage of the lake's services (the REST catalog, the object
//! store) from every other failure: an outage says nothing about the
//! request, so the same call may succeed once the service answers again
//! (the sink restarts, SQL reports a retryable error), while a wrong
//! setting or bad data fails the same way every time.
//!
//! The clients floe reads the lake with (iceberg-catalog-rest, OpenDAL,
//! object_store) keep the underlying failure as the error's source chain,
//! so the chain is walked: a refused, reset or timed-out connection, or a
//! service answering 5xx or 429, anywhere in it is an outage.

use std::error::Error as StdError;
use std::io;

/// The message iceberg-catalog-rest 0.10.1 gives an answer whose status it
/// does not expect; the status is in the error's context (`status: 503 ...`).
const REST_STATUS: &str = "Received response with unexpected status code";
/// The message iceberg 0.10.1 gives an HTTP request of the REST catalog
/// client that failed before an answer (`From<reqwest::Error>`).
const REST_REQUEST: &str = "Failed to execute http request";
/// What object_store prints for an answer that is not a success.
const STORE_STATUS: &str = "Server returned non-2xx status code: ";
/// What object_store prints when its last attempt got no answer at all
/// (`Error performing GET <url> in 364ms, after 3 retries, ... - HTTP
/// error: error sending request`).
const STORE_NO_ANSWER: &str = "HTTP error: error sending request";

/// Which of the lake's services did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outage {
    /// The REST catalog (unreachable, or answering 5xx / 429).
    Catalog,
    /// The object store holding the warehouse.
    Storage,
}

impl Outage {
    /// What the service is, in messages: `catalog`, `object store`.
    pub fn service(self) -> &'static str {
        match self {
            Outage::Catalog => "catalog",
            Outage::Storage => "object store",
        }
    }
}

/// Whether `e` is an outage of the catalog or the object store, and of
/// which (see the module documentation).
pub fn outage(e: &(dyn StdError + 'static)) -> Option<Outage> {
    let mut from_catalog = false;
    let mut transient = false;
    let mut link = Some(e);
    while let Some(error) = link {
        if let Some(iceberg) = error.downcast_ref::<iceberg::Error>() {
            match iceberg.message() {
                REST_STATUS => {
                    let text = iceberg.to_string();
                    if text.contains("status: 5") || text.contains("status: 429") {
                        return Some(Outage::Catalog);
                    }
                }
                REST_REQUEST => from_catalog = true,
                _ => {}
            }
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            transient |= is_transient(io.kind());
        }
        let text = error.to_string();
        // Searched in the text, not only at its start: DataFusion's Parquet
        // reader keeps the object store's error as a string inside its own
        // ("Failed to fetch metadata for file ...: <the store's error>"), so
        // the chain ends there.
        for (at, _) in text.match_indices(STORE_STATUS) {
            let status = &text[at + STORE_STATUS.len()..];
            transient |= status.starts_with('5') || status.starts_with("429");
        }
        transient |= text.contains(STORE_NO_ANSWER);
        // reqwest's own timeout error has no io::Error below it.
        transient |= text == "operation timed out";
        link = error.source();
    }
    transient.then_some(if from_catalog {
        Outage::Catalog
    } else {
        Outage::Storage
    })
}

/// Connection-level failures: the peer is down, gone or too slow.
fn is_transient(kind: io::ErrorKind) -> bool {
    use io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest_status(status: &str) -> iceberg::Error {
        iceberg::Error::new(iceberg::ErrorKind::Unexpected, REST_STATUS)
            .with_context("status", status.to_string())
    }

    #[test]
    fn a_catalog_answering_5xx_or_429_is_an_outage_and_4xx_is_not() {
        for status in [
            "503 Service Unavailable",
            "500 Internal Server Error",
            "429 Too Many Requests",
        ] {
            assert_eq!(
                outage(&rest_status(status)),
                Some(Outage::Catalog),
                "{status}"
            );
        }
        assert_eq!(outage(&rest_status("400 Bad Request")), None);
        assert_eq!(outage(&rest_status("403 Forbidden")), None);
    }

    #[test]
    fn refused_connections_below_a_client_error_are_outages_of_that_client() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let catalog = iceberg::Error::new(iceberg::ErrorKind::Unexpected, REST_REQUEST)
            .with_source(refused());
        assert_eq!(outage(&catalog), Some(Outage::Catalog));
        let storage = iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Failure in doing io operation",
        )
        .with_source(refused());
        assert_eq!(outage(&storage), Some(Outage::Storage));
        assert_eq!(outage(&refused()), Some(Outage::Storage));
        let missing = iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Failure in doing io operation",
        )
        .with_source(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(outage(&missing), None);
        let data = iceberg::Error::new(iceberg::ErrorKind::DataInvalid, "bad manifest");
        assert_eq!(outage(&data), None);
    }

    /// DataFusion's Parquet reader turns the store's error into text inside
    /// its own; these are the texts it gave with the store stopped, and
    /// with the store answering 503 and 404.
    #[test]
    fn a_store_error_kept_only_as_text_is_still_told_apart() {
        let stringified = |store: &str| {
            io::Error::other(format!(
                "Parquet error: Failed to fetch metadata for file w/x.parquet: Parquet error: External: {store}"
            ))
        };
        let down = stringified(
            "Generic S3 error: Error performing GET http://127.0.0.1:45913/lake/w/x.parquet in 364.75ms, after 3 retries, max_retries: 3, retry_timeout: 15s  - HTTP error: error sending request",
        );
        assert_eq!(outage(&down), Some(Outage::Storage));
        let busy = stringified(
            "Generic S3 error: Error performing GET http://h/x in 1s, after 3 retries - Server returned non-2xx status code: 503 Service Unavailable: ",
        );
        assert_eq!(outage(&busy), Some(Outage::Storage));
        let missing = stringified(
            "Object at location w/x.parquet not found: Server returned non-2xx status code: 404 Not Found: ",
        );
        assert_eq!(outage(&missing), None);
    }
}
