//! Bearer tokens mapped to roles (seed 003: viewer, operator, admin).

use axum::http::{HeaderMap, header};

use super::errors::ApiError;
use floe_config::{AuthMode, Role, Token};

/// Who made a call: the token's name (never its secret) and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) role: Role,
}

/// Checks `Authorization: Bearer <secret>` against the configured tokens.
#[derive(Debug)]
pub(crate) struct Authenticator {
    mode: AuthMode,
    tokens: Vec<Token>,
}

impl Authenticator {
    pub(crate) fn new(mode: AuthMode, tokens: Vec<Token>) -> Self {
        Authenticator { mode, tokens }
    }

    /// The caller a request's headers prove, or 401.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::Disabled {
            return Ok(Caller {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not Bearer <token>")
            })?;
        // Compare against every token, without stopping early, so that the
        // time taken does not tell which secret is closest.
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(token.secret.expose().as_bytes(), secret.as_bytes()) {
                found = Some(token);
            }
        }
        found
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

/// Checks that `caller` may do what needs `needed`.
pub(crate) fn authorize(caller: &Caller, needed: Role, action: &str) -> Result<(), ApiError> {
    if caller.role >= needed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{action} needs the {} role; token {:?} has {}",
            needed.as_str(),
            caller.name,
            caller.role.as_str()
        )))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use floe_config::Secret;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn tokens_prove_roles_and_roles_nest() {
        let auth = Authenticator::new(
            AuthMode::Tokens,
            vec![Token {
                name: "ops".into(),
                role: Role::Operator,
                secret: Secret::new("operator-secret-123"),
            }],
        );
        let caller = auth
            .authenticate(&headers("Bearer operator-secret-123"))
            .unwrap();
        assert_eq!(caller.name, "ops");
        assert!(authorize(&caller, Role::Viewer, "read").is_ok());
        assert!(authorize(&caller, Role::Operator, "write").is_ok());
        let refused = authorize(&caller, Role::Admin, "fault injection").unwrap_err();
        assert_eq!(refused.status.as_u16(), 403);
        for bad in ["Bearer wrong", "Basic b3BzOng=", "operator-secret-123"] {
            assert_eq!(
                auth.authenticate(&headers(bad))
                    .unwrap_err()
                    .status
                    .as_u16(),
                401
            );
        }
        assert_eq!(
            auth.authenticate(&HeaderMap::new())
                .unwrap_err()
                .status
                .as_u16(),
            401
        );
    }

    #[test]
    fn disabled_auth_makes_everyone_an_anonymous_admin() {
        let auth = Authenticator::new(AuthMode::Disabled, vec![]);
        let caller = auth.authenticate(&HeaderMap::new()).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.role),
            ("anonymous", Role::Admin)
        );
    }
}
