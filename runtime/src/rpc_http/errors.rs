//! Errors as the HTTP face shows them: one JSON shape, `{"error": {"kind", "message"}}`, with
//! the status [`FleetError::http_status`] gives (AReaL's 400 bad request or unknown method,
//! 404 unknown engine, 409 duplicate, 500 the method failed; 413, 503, 504 where they fit).
//!
//! Most errors are [`FleetError`]s, so a caller sees the same kind whether it called the worker
//! in-process or over HTTP. Three belong to the HTTP layer alone and have no `FleetError`
//! variant: an unknown route (404 `route_not_found`), a known route with the wrong method (405
//! `method_not_allowed`, with an `Allow` header) and a body type the route does not speak (415
//! `unsupported_media_type`), and two more: 401 `unauthorized` (no token or the wrong one) and
//! 408 `body_timeout` (the body did not arrive in time). On the bincode path those are still handed to the caller as a
//! typed [`FleetError::BadRequest`] ([`ApiError::to_fleet`]).

use super::wire::{ErrorBody, ErrorDetail};
use fleet_actors::FleetError;

/// An error answer of the HTTP face.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The `kind` of the JSON shape.
    pub kind: &'static str,
    /// The `message` of the JSON shape.
    pub message: String,
    /// Methods the route accepts, for a 405's `Allow` header.
    pub allow: Option<&'static str>,
    /// The typed error behind it, when there is one (boxed: `FleetError` is large and this
    /// travels in every handler's `Result`).
    pub fleet: Option<Box<FleetError>>,
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        ApiError {
            status: e.http_status(),
            kind: e.kind(),
            message: e.to_string(),
            allow: None,
            fleet: Some(Box::new(e)),
        }
    }
}

impl ApiError {
    /// 404: no such route.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        ApiError {
            status: 404,
            kind: "route_not_found",
            message: format!(
                "no route {method} {path}; routes: GET /health, GET /status, POST /create_engine, \
                 POST /call, POST /configure, POST /set_env, POST /destroy, POST /control"
            ),
            allow: None,
            fleet: None,
        }
    }

    /// 405: the route exists but takes another method.
    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Self {
        ApiError {
            status: 405,
            kind: "method_not_allowed",
            message: format!("{path} takes {allow}, not {method}"),
            allow: Some(allow),
            fleet: None,
        }
    }

    /// 415: the route does not speak this body type.
    pub fn unsupported_media_type(path: &str, found: &str, hint: &str) -> Self {
        ApiError {
            status: 415,
            kind: "unsupported_media_type",
            message: format!("{path} does not take Content-Type {found:?}: {hint}"),
            allow: None,
            fleet: None,
        }
    }

    /// 401: no token, or the wrong one.
    pub fn unauthorized(path: &str, given: bool) -> Self {
        let what = if given {
            "the token given is not this server's"
        } else {
            "no token was given"
        };
        ApiError {
            status: 401,
            kind: "unauthorized",
            message: format!(
                "{path} needs the server's token and {what}: send `Authorization: Bearer <token>` \
                 (the token `fleet rpc-server` was started with, or the random one it printed on \
                 stderr); only GET /health is open"
            ),
            allow: None,
            fleet: None,
        }
    }

    /// 408: the body did not arrive within the deadline.
    pub fn body_timeout(what: &str, after: std::time::Duration) -> Self {
        ApiError {
            status: 408,
            kind: "body_timeout",
            message: format!(
                "the body of {what} did not arrive within the body read timeout ({} ms; \
                 `fleet rpc-server --body-read-timeout`); send it in full",
                after.as_millis()
            ),
            allow: None,
            fleet: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_string(),
                message: self.message.clone(),
            },
        }
    }

    /// The typed error to hand a bincode caller.
    pub fn to_fleet(&self) -> FleetError {
        match &self.fleet {
            Some(e) => (**e).clone(),
            None => FleetError::bad_request(self.kind, &self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_error_keeps_its_kind_status_and_message() {
        let e = FleetError::EngineExists {
            worker: "rpc/0".into(),
            engine: "c".into(),
        };
        let api = ApiError::from(e.clone());
        assert_eq!((api.status, api.kind), (409, "engine_exists"));
        assert_eq!(api.body().error.message, e.to_string());
        assert_eq!(api.to_fleet(), e);
    }

    #[test]
    fn http_layer_errors_become_bad_requests_for_bincode_callers() {
        let api = ApiError::method_not_allowed("GET", "/call", "POST");
        assert_eq!((api.status, api.allow), (405, Some("POST")));
        assert!(matches!(api.to_fleet(), FleetError::BadRequest { .. }));
    }
}
