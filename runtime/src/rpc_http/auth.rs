//! Who may talk to an rpc-server: whoever holds its token.
//!
//! An rpc-server runs engines, sets their environment and stops on `POST /destroy`; without a
//! check, any local process (or a web page: a browser's no-cors `POST` reaches loopback) could
//! do all of that. So every route but `GET /health` needs `Authorization: Bearer <token>` (or
//! `x-fleet-token: <token>`), compared in constant time.
//!
//! Where the token comes from, first found: [`RpcHttpConfig::token`](super::RpcHttpConfig);
//! `fleet rpc-server --token-stdin` (one line on stdin: what fleet's launcher uses, so the
//! token is never in the child's environment, which everything it forks inherits, nor in its
//! argv, which every user can read), `--token-file`, `FLEET_RPC_TOKEN`. With none, a random
//! token is generated and printed on stderr, and only on a loopback address: off loopback the
//! server refuses to start without a configured token. An empty token is refused everywhere.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;

/// The header that may carry the token instead of `Authorization: Bearer`.
pub const TOKEN_HEADER: &str = "x-fleet-token";

/// The shortest token accepted on a non-loopback address.
pub const MIN_REMOTE_TOKEN_LEN: usize = 16;

/// A random token: 32 random bytes, hex-encoded (what fleet generates per rpc-server child).
pub fn random_token() -> String {
    use rand::RngCore;
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token a request carries, if any (empty counts as none).
pub(super) fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let t = bearer.or_else(|| {
        headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })?;
    (!t.is_empty()).then_some(t)
}

/// Constant-time equality (the length is not hidden, and need not be).
pub(super) fn token_eq(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a token from one line of stdin (what `--token-stdin` does, and what a program with
/// its own rpc-server binary calls when fleet's launcher starts it: the launcher writes the
/// token there). Trailing whitespace is dropped; an empty line is an error.
pub fn token_from_stdin() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let t = line.trim_end().to_string();
    if t.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stdin held no token (an empty first line); the launcher writes one line with the token",
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn tokens_come_from_bearer_or_the_fleet_header_and_empty_is_none() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(TOKEN_HEADER, HeaderValue::from_static("t1"));
        assert_eq!(presented(&h), Some("t1"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer t2"));
        assert_eq!(presented(&h), Some("t2"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  "));
        h.remove(TOKEN_HEADER);
        assert_eq!(presented(&h), None);
        assert!(token_eq("abc", "abc") && !token_eq("abc", "abd") && !token_eq("abc", "ab"));
        assert_eq!(random_token().len(), 64);
    }
}
