//! Who is calling: the admin (the rollout controller) or one session (an agent).
//!
//! Keys arrive as `Authorization: Bearer <key>` or `x-api-key: <key>`. Secrets are compared in
//! constant time (`subtle`), so response timing does not reveal how much of a guess was right.
//! A session key is `sk-fleet-<session id>-<secret>`: the session id (not secret) finds the
//! session in O(1), then only the secret is compared, in constant time.

use hyper::header::{HeaderMap, AUTHORIZATION};
use subtle::ConstantTimeEq;

/// Prefix of every session key.
pub(crate) const SESSION_KEY_PREFIX: &str = "sk-fleet-";

/// The key a request carries, if any (empty counts as none).
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let key = bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })?;
    (!key.is_empty()).then_some(key)
}

/// Constant-time equality of two secrets (the length is not hidden, and need not be).
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Builds a session key from its parts.
pub(crate) fn session_key(session_id: &str, secret: &str) -> String {
    format!("{SESSION_KEY_PREFIX}{session_id}-{secret}")
}

/// Splits a session key into (session id, secret), or `None` if it does not have the shape.
pub(crate) fn split_session_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(SESSION_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('-')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  k2 "));
        assert_eq!(presented_key(&h), Some("k2"), "bearer wins");
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        h.remove("x-api-key");
        assert_eq!(presented_key(&h), None, "an empty key is no key");
    }

    #[test]
    fn session_keys_round_trip() {
        let k = session_key("abc", "s3cr3t");
        assert_eq!(split_session_key(&k), Some(("abc", "s3cr3t")));
        assert_eq!(split_session_key("sk-fleet-abc"), None);
        assert_eq!(split_session_key("sk-other-abc-x"), None);
        assert!(secret_eq("same", "same"));
        assert!(!secret_eq("same", "sane"));
        assert!(!secret_eq("same", "same-but-longer"));
    }
}
