//! `[serve]` (the HTTP server of `floe serve`) and `[health]` (how shard
//! health is judged).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The environment variable holding extra tokens: `name:role:secret`
/// entries separated by commas.
pub const TOKENS_ENV: &str = "FLOE_TOKENS";

/// Settings of `floe serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on (`--listen` overrides it). Port 0 picks a free
    /// port; the bound address is printed on start.
    pub listen: String,
    /// `tokens` (default): every call but liveness and readiness needs a
    /// bearer token. `disabled`: every caller is an anonymous admin; allowed
    /// only on a loopback listen address.
    pub auth: AuthMode,
    /// Bearer tokens and their roles (more can come from `FLOE_TOKENS`).
    pub tokens: Vec<TokenConfig>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Where audit lines go (JSON lines, appended): empty = `DATA/audit.jsonl`.
    pub audit_log: String,
    /// Serve `/metrics` without a token (for scrapers that cannot send one).
    pub public_metrics: bool,
    /// Longest `GET` list page.
    pub max_list_limit: usize,
    /// Most writes one `POST /api/v1/entities:batch` takes; more get 413.
    pub max_batch_items: usize,
    /// Largest `POST /api/v1/entities:batch` body, in bytes; larger get 413.
    pub max_batch_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before closing floe.
    pub shutdown_timeout_ms: u64,
    /// Enables `PUT /api/v1/admin/faults/shards/{id}` (admin only), which
    /// makes a shard slow on purpose. For tests and drills, never production.
    pub fault_injection: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            auth: AuthMode::Tokens,
            tokens: Vec::new(),
            max_body_bytes: 2 << 20,
            audit_log: String::new(),
            public_metrics: false,
            max_list_limit: 1000,
            max_batch_items: 1000,
            max_batch_bytes: 16 << 20,
            shutdown_timeout_ms: 30_000,
            fault_injection: false,
        }
    }
}

/// Whether callers must present a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Bearer tokens with roles.
    Tokens,
    /// No authentication: loopback listen addresses only.
    Disabled,
}

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: entities, routing, topology, stats, health, metrics, SQL.
    Viewer,
    /// Reads and entity writes.
    Operator,
    /// Everything: migrations, topology changes, fault injection.
    Admin,
}

impl Role {
    /// The role's name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A token as configured: its secret inline or in an environment variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token stands for; audit lines name it (never the secret).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The secret inline (prefer `secret_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// An environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A usable token: name, role, secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Who it stands for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The bearer secret.
    pub secret: Secret,
}

/// Shortest secret accepted: a guessable token is no token.
const MIN_SECRET_LEN: usize = 16;

impl ServeConfig {
    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen.parse().map_err(|e| {
            Error::Invalid(format!(
                "serve.listen {:?} is not host:port: {e}",
                self.listen
            ))
        })
    }

    /// The audit log's path.
    pub fn audit_path(&self, data_dir: &Path) -> PathBuf {
        if self.audit_log.trim().is_empty() {
            data_dir.join("audit.jsonl")
        } else {
            PathBuf::from(self.audit_log.trim())
        }
    }

    /// Checks the values that need no environment.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        if self.max_body_bytes == 0 {
            return Err(Error::Invalid(
                "serve.max_body_bytes must be at least 1".into(),
            ));
        }
        if self.max_batch_items == 0 || self.max_batch_bytes == 0 {
            return Err(Error::Invalid(
                "serve.max_batch_items and serve.max_batch_bytes must be at least 1".into(),
            ));
        }
        if self.max_list_limit == 0 {
            return Err(Error::Invalid(
                "serve.max_list_limit must be at least 1".into(),
            ));
        }
        for token in &self.tokens {
            if token.secret.is_some() == token.secret_env.is_some() {
                return Err(Error::Invalid(format!(
                    "serve.tokens {:?}: set exactly one of secret and secret_env",
                    token.name
                )));
            }
        }
        Ok(())
    }

    /// Every token, from the configuration and from `env(FLOE_TOKENS)`,
    /// checked: names unique, secrets long enough and distinct. `env` reads
    /// an environment variable (a parameter so that tests need not touch the
    /// process environment).
    pub fn resolve_tokens(&self, env: impl Fn(&str) -> Option<String>) -> Result<Vec<Token>> {
        let mut tokens = Vec::new();
        for token in &self.tokens {
            let secret = match (&token.secret, &token.secret_env) {
                (Some(secret), None) => secret.clone(),
                (None, Some(var)) => Secret(env(var).ok_or_else(|| {
                    Error::Invalid(format!(
                        "serve.tokens {:?}: environment variable {var} is not set",
                        token.name
                    ))
                })?),
                _ => {
                    return Err(Error::Invalid(format!(
                        "serve.tokens {:?}: set exactly one of secret and secret_env",
                        token.name
                    )));
                }
            };
            tokens.push(Token {
                name: token.name.clone(),
                role: token.role,
                secret,
            });
        }
        if let Some(list) = env(TOKENS_ENV) {
            for (i, entry) in list.split(',').map(str::trim).enumerate() {
                if entry.is_empty() {
                    continue;
                }
                let mut parts = entry.splitn(3, ':');
                let (Some(name), Some(role), Some(secret)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(Error::Invalid(format!(
                        "{TOKENS_ENV} entry {} is not name:role:secret",
                        i + 1
                    )));
                };
                let role = Role::parse(role).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{TOKENS_ENV} entry {name:?}: role {role:?} is not viewer, operator or admin"
                    ))
                })?;
                tokens.push(Token {
                    name: name.to_string(),
                    role,
                    secret: Secret(secret.to_string()),
                });
            }
        }
        for (i, token) in tokens.iter().enumerate() {
            if token.name.is_empty() || token.name.chars().any(char::is_control) {
                return Err(Error::Invalid(format!(
                    "token {:?}: a name must be non-empty printable text",
                    token.name
                )));
            }
            if token.secret.0.len() < MIN_SECRET_LEN {
                return Err(Error::Invalid(format!(
                    "token {:?}: the secret must be at least {MIN_SECRET_LEN} characters",
                    token.name
                )));
            }
            for other in &tokens[..i] {
                if other.name == token.name {
                    return Err(Error::Invalid(format!(
                        "token name {:?} is used twice",
                        token.name
                    )));
                }
                if other.secret == token.secret {
                    return Err(Error::Invalid(format!(
                        "tokens {:?} and {:?} share a secret",
                        other.name, token.name
                    )));
                }
            }
        }
        Ok(tokens)
    }
}

/// How shard health is judged (seed 000's thresholds by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// The sliding window that write latencies and errors are judged over.
    pub window_ms: u64,
    /// How often `floe serve` probes every shard with a stats request.
    pub probe_interval_ms: u64,
    /// p95 ack latency (or a probe) above this: DEGRADED.
    pub degraded_latency_ms: u64,
    /// p95 ack latency (or a probe) above this: UNHEALTHY.
    pub unhealthy_latency_ms: u64,
    /// Share of writes failing (server-side) above this: DEGRADED.
    pub degraded_error_rate: f64,
    /// Share of writes failing (server-side) above this: UNHEALTHY.
    pub unhealthy_error_rate: f64,
    /// Error rates count only once the window holds this many writes.
    pub min_requests: u64,
    /// Sink lag (age of the oldest event not in the lake) above this:
    /// the system is DEGRADED.
    pub degraded_sink_lag_s: f64,
    /// ... and above this, UNHEALTHY.
    pub unhealthy_sink_lag_s: f64,
    /// A shard with more accesses than this in the window is hot.
    pub hot_shard_accesses: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window_ms: 60_000,
            probe_interval_ms: 1000,
            degraded_latency_ms: 500,
            unhealthy_latency_ms: 2000,
            degraded_error_rate: 0.05,
            unhealthy_error_rate: 0.10,
            min_requests: 20,
            degraded_sink_lag_s: 60.0,
            unhealthy_sink_lag_s: 300.0,
            hot_shard_accesses: 100_000,
        }
    }
}

impl HealthConfig {
    /// Checks that the thresholds are ordered and positive.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(format!("health.{m}")));
        if self.window_ms < 10 {
            return bad("window_ms must be at least 10");
        }
        if self.probe_interval_ms == 0 {
            return bad("probe_interval_ms must be at least 1");
        }
        if self.degraded_latency_ms == 0 || self.unhealthy_latency_ms < self.degraded_latency_ms {
            return bad("latency thresholds need 0 < degraded_latency_ms <= unhealthy_latency_ms");
        }
        let rate = |r: f64| (0.0..=1.0).contains(&r);
        if !rate(self.degraded_error_rate)
            || !rate(self.unhealthy_error_rate)
            || self.unhealthy_error_rate < self.degraded_error_rate
        {
            return bad("error rates need 0 <= degraded_error_rate <= unhealthy_error_rate <= 1");
        }
        if !(self.degraded_sink_lag_s >= 0.0
            && self.unhealthy_sink_lag_s >= self.degraded_sink_lag_s)
        {
            return bad(
                "sink lag thresholds need 0 <= degraded_sink_lag_s <= unhealthy_sink_lag_s",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, secret: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            role,
            secret: Some(Secret::new(secret)),
            secret_env: None,
        }
    }

    #[test]
    fn tokens_come_from_config_env_refs_and_the_env_list() {
        let config = ServeConfig {
            tokens: vec![
                token("ci", Role::Viewer, "0123456789abcdef"),
                TokenConfig {
                    name: "ops".into(),
                    role: Role::Operator,
                    secret: None,
                    secret_env: Some("OPS_SECRET".into()),
                },
            ],
            ..ServeConfig::default()
        };
        let env = |var: &str| match var {
            "OPS_SECRET" => Some("ops-secret-0123456789".to_string()),
            TOKENS_ENV => Some("root:admin:root-secret-0123456789, ".to_string()),
            _ => None,
        };
        let tokens = config.resolve_tokens(env).unwrap();
        let roles: Vec<_> = tokens.iter().map(|t| (t.name.as_str(), t.role)).collect();
        assert_eq!(
            roles,
            [
                ("ci", Role::Viewer),
                ("ops", Role::Operator),
                ("root", Role::Admin)
            ]
        );
        assert_eq!(tokens[1].secret.expose(), "ops-secret-0123456789");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = ServeConfig {
            tokens: vec![token("ci", Role::Viewer, "do-not-print-this-secret")],
            ..ServeConfig::default()
        };
        let tokens = config.resolve_tokens(|_| None).unwrap();
        for text in [format!("{config:?}"), format!("{tokens:?}")] {
            assert!(!text.contains("do-not-print"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let err = |tokens: Vec<TokenConfig>, env: Option<&str>| {
            let config = ServeConfig {
                tokens,
                ..ServeConfig::default()
            };
            config
                .resolve_tokens(|var| (var == TOKENS_ENV).then(|| env.unwrap_or("").to_string()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(vec![token("a", Role::Viewer, "short")], None).contains("at least 16"));
        let twice = vec![
            token("a", Role::Viewer, "0123456789abcdef"),
            token("a", Role::Admin, "fedcba9876543210"),
        ];
        assert!(err(twice, None).contains("used twice"));
        let shared = vec![
            token("a", Role::Viewer, "0123456789abcdef"),
            token("b", Role::Admin, "0123456789abcdef"),
        ];
        assert!(err(shared, None).contains("share a secret"));
        assert!(err(vec![], Some("x:boss:0123456789abcdef")).contains("role \"boss\""));
        assert!(err(vec![], Some("justasecret")).contains("name:role:secret"));
        let missing = TokenConfig {
            name: "m".into(),
            role: Role::Viewer,
            secret: None,
            secret_env: Some("NOPE".into()),
        };
        assert!(err(vec![missing], None).contains("NOPE is not set"));
    }

    #[test]
    fn health_thresholds_must_be_ordered() {
        let mut health = HealthConfig::default();
        health.validate().unwrap();
        health.unhealthy_latency_ms = 100;
        assert!(
            health
                .validate()
                .unwrap_err()
                .to_string()
                .contains("latency")
        );
        let health = HealthConfig {
            degraded_error_rate: 0.5,
            unhealthy_error_rate: 0.2,
            ..HealthConfig::default()
        };
        assert!(
            health
                .validate()
                .unwrap_err()
                .to_string()
                .contains("error rates")
        );
    }
}
