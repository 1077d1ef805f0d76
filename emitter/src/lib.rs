//! floe's pipeline backends and, later, the Iceberg sink.
#![deny(missing_docs)]
