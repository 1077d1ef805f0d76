//! `[cluster]`: what a node needs to join a floe cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::forward::{CLUSTER_TOKEN_ENV, ClusterToken};
use crate::keys::Keys;

/// Longest cluster or node id: ids are etcd key segments and appear in logs.
pub const MAX_ID_LEN: usize = 64;

/// The `[cluster]` section of a node's configuration.
///
/// Durations are in milliseconds, as elsewhere in floe's configuration; the lease
/// TTL is in whole seconds because etcd grants leases in seconds.
///
/// The timeouts trade as follows (see `docs/cluster.md`):
/// - `lease_ttl_secs`: how long a dead node keeps its shards. Failover takes at least this.
/// - `keepalive_interval_ms`: how often the lease is renewed. Shorter tolerates more missed
///   renewals within a TTL, at the cost of etcd traffic.
/// - `safety_margin_ms`: a node stops acknowledging this long before its lease can expire
///   in etcd. It covers clock rate drift between the node and etcd, the time between the
///   ownership check and the acknowledgement, and a pipeline write still in flight.
/// - `write_timeout_ms`: the pipeline append deadline. It must be under the margin, so no
///   write started under a valid lease can land after that lease expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster this node belongs to; every node of a cluster has the same one.
    pub cluster_id: String,
    /// This node's id, unique among live nodes.
    pub node_id: String,
    /// `host:port` other nodes and clients use to reach this node's API.
    pub advertised_addr: String,
    /// etcd client URLs (`http://host:port`).
    pub etcd_endpoints: Vec<String>,
    /// Root of this cluster's keys in etcd; `/floe/<cluster_id>` when unset. Clusters
    /// sharing an etcd need distinct roots; a node pointed at the root of a cluster
    /// recorded under another id is refused.
    pub etcd_prefix: Option<String>,
    /// TTL of the node's lease in etcd, in seconds.
    pub lease_ttl_secs: u64,
    /// Interval between lease keepalives.
    pub keepalive_interval_ms: u64,
    /// How long before the lease could expire in etcd the node stops acknowledging.
    pub safety_margin_ms: u64,
    /// Deadline of one pipeline append in cluster mode.
    pub write_timeout_ms: u64,
    /// Deadline of one etcd request.
    pub etcd_timeout_ms: u64,
    /// How often a node re-checks grants waiting for the previous owner to let go.
    pub handover_poll_ms: u64,
    /// The secret nodes authenticate forwarded calls with; the same on every node.
    /// `FLOE_CLUSTER_TOKEN` overrides it. `floe serve` needs one in cluster mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<ClusterToken>,
    /// How long a node keeps trying to hand a call to its shard's owner (waiting
    /// out a handover) before it answers `503 not_owner`.
    pub forward_timeout_ms: u64,
    /// How long the placement controller waits for a shard's new owner to warm up
    /// (restore while the old owner still serves) before it moves the shard anyway; the
    /// new owner then restores after the old one released it, a longer pause.
    pub handover_timeout_ms: u64,
    /// How long a node stopped with SIGTERM waits for its shards to be handed over
    /// (a drain) before it leaves anyway (then its shards move without warm-up).
    pub drain_timeout_ms: u64,
    /// Whether a node keeps the shards it would take over if their owner failed
    /// ([`crate::standbys`]) warm: read from the lake and following the pipeline, so
    /// a failover reads only the last of the tail instead of restoring. Costs the
    /// memory of those shards' state on a second node, and their reads.
    pub warm_standbys: bool,
    /// How long a reshard (a shard-count migration in cluster mode) waits for every
    /// live node to pause before it is aborted. Every shard refuses writes meanwhile,
    /// so keep it under what clients retry for.
    pub reshard_pause_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_id: "floe".into(),
            node_id: String::new(),
            advertised_addr: String::new(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_prefix: None,
            lease_ttl_secs: 5,
            keepalive_interval_ms: 1_000,
            safety_margin_ms: 2_000,
            write_timeout_ms: 1_000,
            etcd_timeout_ms: 2_000,
            handover_poll_ms: 250,
            token: None,
            forward_timeout_ms: 10_000,
            handover_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
            warm_standbys: true,
            reshard_pause_timeout_ms: 10_000,
        }
    }
}

impl ClusterConfig {
    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    /// The keepalive interval.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }

    /// The safety margin.
    pub fn safety_margin(&self) -> Duration {
        Duration::from_millis(self.safety_margin_ms)
    }

    /// The pipeline write timeout.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The etcd request timeout.
    pub fn etcd_timeout(&self) -> Duration {
        Duration::from_millis(self.etcd_timeout_ms)
    }

    /// The handover re-check interval.
    pub fn handover_poll(&self) -> Duration {
        Duration::from_millis(self.handover_poll_ms)
    }

    /// How long a call may wait for its shard's owner.
    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }

    /// How long a planned handover waits for the new owner's warm-up.
    pub fn handover_timeout(&self) -> Duration {
        Duration::from_millis(self.handover_timeout_ms)
    }

    /// How long a reshard waits for every live node to pause.
    pub fn reshard_pause_timeout(&self) -> Duration {
        Duration::from_millis(self.reshard_pause_timeout_ms)
    }

    /// How long a stopping node waits for its shards to move off.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// The cluster token: `FLOE_CLUSTER_TOKEN` (read through `env`) if set, else
    /// `token`; [`Error::ClusterTokenMissing`] without either.
    pub fn resolve_token(&self, env: impl Fn(&str) -> Option<String>) -> Result<ClusterToken> {
        let token = env(CLUSTER_TOKEN_ENV)
            .filter(|t| !t.is_empty())
            .map(ClusterToken::new)
            .or_else(|| self.token.clone())
            .ok_or(Error::ClusterTokenMissing)?;
        token.validate()?;
        Ok(token)
    }

    /// The cluster's key layout in etcd.
    pub fn keys(&self) -> Keys {
        match &self.etcd_prefix {
            Some(root) => Keys::new(root),
            None => Keys::new(&format!("/floe/{}", self.cluster_id)),
        }
    }

    /// Checks everything that can be checked without etcd; the first problem found is
    /// returned as its own variant.
    pub fn validate(&self) -> Result<()> {
        validate_id("cluster_id", &self.cluster_id)?;
        validate_id("node_id", &self.node_id)?;
        validate_addr(&self.advertised_addr)?;
        if self.etcd_endpoints.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                reason: "at least one etcd endpoint is needed",
            });
        }
        for endpoint in &self.etcd_endpoints {
            validate_endpoint(endpoint)?;
        }
        if let Some(p) = &self.etcd_prefix
            && (!p.starts_with('/') || p.ends_with('/') || p.contains("//"))
        {
            return Err(Error::InvalidPrefix { prefix: p.clone() });
        }
        let ttl = self.lease_ttl();
        // etcd refuses TTLs under its minimum (1.5 election timeouts, 2 s with defaults)
        // by silently raising them; ask for at least that so the TTL we reason with is the
        // one granted.
        if self.lease_ttl_secs < 2 {
            return Err(Error::InvalidDuration {
                field: "lease_ttl_secs",
                value: ttl,
                reason: "etcd grants no lease shorter than 2 s",
            });
        }
        for (field, value) in [
            ("keepalive_interval_ms", self.keepalive_interval()),
            ("safety_margin_ms", self.safety_margin()),
            ("write_timeout_ms", self.write_timeout()),
            ("etcd_timeout_ms", self.etcd_timeout()),
            ("handover_poll_ms", self.handover_poll()),
            ("forward_timeout_ms", self.forward_timeout()),
            ("handover_timeout_ms", self.handover_timeout()),
            ("drain_timeout_ms", self.drain_timeout()),
            ("reshard_pause_timeout_ms", self.reshard_pause_timeout()),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidDuration {
                    field,
                    value,
                    reason: "must be positive",
                });
            }
        }
        let (margin, keepalive) = (self.safety_margin(), self.keepalive_interval());
        // One keepalive may be lost and the next one still renews the lease before the
        // node's own deadline (TTL minus margin) passes.
        let needed = margin + keepalive * 2;
        if ttl < needed {
            return Err(Error::LeaseTtlTooShort {
                ttl,
                margin,
                keepalive,
                needed,
            });
        }
        if let Some(token) = &self.token {
            token.validate()?;
        }
        if self.write_timeout() >= margin {
            return Err(Error::WriteTimeoutNotUnderMargin {
                write_timeout: self.write_timeout(),
                margin,
            });
        }
        Ok(())
    }
}

fn validate_id(field: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_ID_LEN {
        Some("must be at most 64 bytes")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Some("may hold only ASCII letters, digits, '-', '_' and '.'")
    } else if value.starts_with('.') {
        Some("must not start with '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidId {
            field,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_addr(addr: &str) -> Result<()> {
    let bad = || Error::InvalidAdvertisedAddr {
        addr: addr.to_owned(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

fn validate_endpoint(endpoint: &str) -> Result<()> {
    let bad = |reason| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| bad("must start with http:// (TLS is not supported yet)"))?;
    validate_addr(rest.trim_end_matches('/')).map_err(|_| bad("must be http://host:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ClusterConfig {
        ClusterConfig {
            node_id: "n1".into(),
            advertised_addr: "127.0.0.1:7000".into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn defaults_with_a_node_id_and_address_validate() {
        valid().validate().unwrap();
    }

    #[test]
    fn ids_are_checked() {
        for (node_id, reason) in [
            ("", "must not be empty"),
            (
                "a/b",
                "may hold only ASCII letters, digits, '-', '_' and '.'",
            ),
            (".hidden", "must not start with '.'"),
        ] {
            let c = ClusterConfig {
                node_id: node_id.into(),
                ..valid()
            };
            match c.validate() {
                Err(Error::InvalidId {
                    field: "node_id",
                    reason: r,
                    ..
                }) => assert_eq!(r, reason),
                other => panic!("{node_id:?}: {other:?}"),
            }
        }
        let c = ClusterConfig {
            cluster_id: "x".repeat(65),
            ..valid()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidId {
                field: "cluster_id",
                ..
            })
        ));
    }

    #[test]
    fn addresses_and_endpoints_are_checked() {
        for addr in ["", "host", "host:0", ":80", "host:x"] {
            let c = ClusterConfig {
                advertised_addr: addr.into(),
                ..valid()
            };
            assert!(
                matches!(c.validate(), Err(Error::InvalidAdvertisedAddr { .. })),
                "{addr}"
            );
        }
        for endpoints in [
            vec![],
            vec!["127.0.0.1:2379".to_string()],
            vec!["https://h:1".into()],
        ] {
            let c = ClusterConfig {
                etcd_endpoints: endpoints.clone(),
                ..valid()
            };
            assert!(
                matches!(c.validate(), Err(Error::InvalidEndpoint { .. })),
                "{endpoints:?}"
            );
        }
        for prefix in ["floe", "/floe/", "/a//b"] {
            let c = ClusterConfig {
                etcd_prefix: Some(prefix.into()),
                ..valid()
            };
            assert!(matches!(c.validate(), Err(Error::InvalidPrefix { .. })));
        }
    }

    #[test]
    fn a_ttl_too_short_for_the_margins_is_refused() {
        let c = ClusterConfig {
            lease_ttl_secs: 3,
            safety_margin_ms: 2_000,
            keepalive_interval_ms: 1_000,
            ..valid()
        };
        match c.validate() {
            Err(Error::LeaseTtlTooShort { needed, ttl, .. }) => {
                assert_eq!(needed, Duration::from_secs(4));
                assert_eq!(ttl, Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
        let c = ClusterConfig {
            lease_ttl_secs: 1,
            ..valid()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidDuration {
                field: "lease_ttl_secs",
                ..
            })
        ));
    }

    #[test]
    fn write_timeout_must_be_under_the_margin() {
        let c = ClusterConfig {
            write_timeout_ms: 2_000,
            ..valid()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::WriteTimeoutNotUnderMargin { .. })
        ));
        let c = ClusterConfig {
            keepalive_interval_ms: 0,
            ..valid()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidDuration {
                field: "keepalive_interval_ms",
                ..
            })
        ));
    }

    #[test]
    fn a_reshard_that_may_not_wait_for_the_pause_is_refused() {
        let c = ClusterConfig {
            reshard_pause_timeout_ms: 0,
            ..valid()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidDuration {
                field: "reshard_pause_timeout_ms",
                ..
            })
        ));
        let parsed: ClusterConfig =
            serde_json::from_str(r#"{"reshard_pause_timeout_ms": 2500}"#).unwrap();
        assert_eq!(parsed.reshard_pause_timeout(), Duration::from_millis(2_500));
    }

    #[test]
    fn the_token_comes_from_the_environment_or_the_file() {
        let none = |_: &str| None;
        assert!(matches!(
            valid().resolve_token(none),
            Err(Error::ClusterTokenMissing)
        ));
        let c = ClusterConfig {
            token: Some(ClusterToken::new("file-token-0123456789")),
            ..valid()
        };
        c.validate().unwrap();
        assert_eq!(
            c.resolve_token(none).unwrap().expose(),
            "file-token-0123456789"
        );
        let env =
            |var: &str| (var == CLUSTER_TOKEN_ENV).then(|| "env-token-0123456789".to_string());
        assert_eq!(
            c.resolve_token(env).unwrap().expose(),
            "env-token-0123456789"
        );
        let short = ClusterConfig {
            token: Some(ClusterToken::new("short")),
            ..valid()
        };
        assert!(matches!(
            short.validate(),
            Err(Error::InvalidClusterToken { .. })
        ));
        assert!(!format!("{c:?}").contains("file-token"), "never in Debug");
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_fields() {
        let c: ClusterConfig = serde_json::from_value(serde_json::json!({
            "cluster_id": "prod", "node_id": "n2", "advertised_addr": "10.0.0.2:8080",
            "etcd_endpoints": ["http://10.0.0.9:2379"], "lease_ttl_secs": 10
        }))
        .unwrap();
        assert_eq!(c.lease_ttl(), Duration::from_secs(10));
        assert_eq!(c.safety_margin(), Duration::from_secs(2));
        c.validate().unwrap();
        let unknown = serde_json::from_value::<ClusterConfig>(serde_json::json!({"ttl": 1}));
        assert!(unknown.is_err());
    }
}
