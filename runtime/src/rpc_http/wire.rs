//! What travels in the bodies of `fleet rpc-server`: the JSON shapes of the AReaL-style routes,
//! the bincode bodies of fleet's own path, and the headers both use.
//!
//! This file is public so that the other side (fleet's HTTP launcher, or a test) builds and
//! reads exactly these bytes: one definition of the protocol, not two that drift apart.
//!
//! * JSON (`application/json`): the request structs below, `{"result": ...}` /
//!   `{"ok": true}` answers, and [`ErrorBody`] for every error, with the status that
//!   [`FleetError::http_status`] gives.
//! * bincode (`application/x-fleet-bincode`): `POST /call` carries
//!   [`CallRequest`](fleet_actors::rpc_server::CallRequest) and answers
//!   [`CallReply`](fleet_actors::rpc_server::CallReply); `POST /control` carries
//!   [`Control`](fleet_actors::rpc_server::Control) and answers
//!   [`ControlReply`](fleet_actors::rpc_server::ControlReply). Encode with [`encode_body`],
//!   read an answer of any status with [`decode_reply`].

use fleet_actors::FleetError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Content type of the JSON routes.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Content type of fleet's binary path: bincode (standard config) of the actors' own messages.
pub const BINCODE_CONTENT_TYPE: &str = "application/x-fleet-bincode";

/// Header carrying the caller's request id (deduplication of non-idempotent calls).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Header carrying the caller's deadline for the work, in milliseconds. Without it the
/// server's configured default applies.
pub const TIMEOUT_HEADER: &str = "x-fleet-timeout-ms";

/// The first stdout line of a `fleet rpc-server` process (followed by `HOST:PORT`), by which
/// a parent that passed `--port 0` learns the port.
pub const LISTENING_LINE_PREFIX: &str = "fleet rpc-server listening on ";

/// The address in a [`LISTENING_LINE_PREFIX`] line, if `line` is one.
pub fn parse_listening_line(line: &str) -> Option<std::net::SocketAddr> {
    line.trim()
        .strip_prefix(LISTENING_LINE_PREFIX)?
        .parse()
        .ok()
}

/// How a request body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCodec {
    /// `application/json` (also assumed when there is no `Content-Type`).
    Json,
    /// [`BINCODE_CONTENT_TYPE`].
    Bincode,
}

impl BodyCodec {
    /// Classifies a `Content-Type` value (parameters such as `charset` are ignored). `None`
    /// counts as JSON, so `curl -d` with no header still works; any other type is `Err` with
    /// the media type found.
    pub fn from_content_type(value: Option<&str>) -> Result<BodyCodec, String> {
        let Some(value) = value else {
            return Ok(BodyCodec::Json);
        };
        let media = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "" | JSON_CONTENT_TYPE => Ok(BodyCodec::Json),
            BINCODE_CONTENT_TYPE => Ok(BodyCodec::Bincode),
            _ => Err(media),
        }
    }

    /// The `Content-Type` to send.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyCodec::Json => JSON_CONTENT_TYPE,
            BodyCodec::Bincode => BINCODE_CONTENT_TYPE,
        }
    }
}

/// `POST /create_engine` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEngineBody {
    /// The registered engine type.
    pub engine: String,
    /// The engine's name on this worker (unique).
    pub engine_name: String,
    /// Constructor arguments, handed to the engine as a JSON payload (default `null`).
    #[serde(default)]
    pub init_args: serde_json::Value,
}

/// `POST /call` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    /// The engine's name on this worker.
    pub engine_name: String,
    /// The method.
    pub method: String,
    /// The arguments, handed to the engine as a JSON payload (default `null`, which decodes as
    /// `()`).
    #[serde(default)]
    pub args: serde_json::Value,
    /// Caller metadata forwarded to the engine unchanged.
    #[serde(default)]
    pub rpc_meta: BTreeMap<String, String>,
    /// Makes the call run at most once: a repeat is answered from the worker's record. The
    /// `X-Request-Id` header does the same; if both are given they must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /configure` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigureBody {
    /// The role (default: the worker's role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The rank (default: the worker's index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// Role-specific configuration, handed to each engine's `configure` hook as a JSON payload.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// `POST /set_env` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEnvBody {
    /// Variables merged into the worker's environment (seen by engines, never by the process).
    pub env: BTreeMap<String, String>,
}

/// `POST /destroy` (JSON; an empty body is allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyBody {
    /// Bound on the engines' destroy hooks (default: the server's configured bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `GET /health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthBody {
    /// `"ok"`.
    pub status: String,
    /// `role/index`.
    pub worker: String,
    /// Engine names.
    pub engines: Vec<String>,
}

/// The one error shape of every JSON answer: `{"error": {"kind", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// [`FleetError::kind`], or for errors of the HTTP layer itself `route_not_found`,
    /// `method_not_allowed`, `unsupported_media_type`.
    pub kind: String,
    /// What failed and what to do.
    pub message: String,
}

/// Encodes a bincode body ([`fleet_actors::wire::encode`]: bincode, standard config).
pub fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    fleet_actors::wire::encode(value)
}

/// Decodes a bincode body; failure is a [`FleetError::Protocol`] naming the type.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FleetError> {
    fleet_actors::wire::decode(bytes).map_err(|detail| FleetError::Protocol { detail })
}

/// Reads the answer to a bincode request (`T` is `CallReply` or `ControlReply`), whatever its
/// status: a bincode answer is decoded (the server refused the request itself with a non-200
/// status, or the worker's reply, typed error included, with 200); a JSON error (the request
/// never reached a bincode route, e.g. a wrong path) becomes a [`FleetError::Protocol`]
/// carrying its kind and message. `Err` means no `T` could be read.
pub fn decode_reply<T: DeserializeOwned>(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, FleetError> {
    match BodyCodec::from_content_type(content_type) {
        Ok(BodyCodec::Bincode) => decode_body(body),
        _ => {
            let detail = match serde_json::from_slice::<ErrorBody>(body) {
                Ok(e) => format!("HTTP {status} {}: {}", e.error.kind, e.error.message),
                Err(_) => format!(
                    "HTTP {status} with a body that is not a fleet reply: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(256)])
                ),
            };
            Err(FleetError::Protocol { detail })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_actors::rpc_server::CallReply;

    #[test]
    fn content_types_are_classified_ignoring_parameters_and_case() {
        assert_eq!(BodyCodec::from_content_type(None), Ok(BodyCodec::Json));
        assert_eq!(
            BodyCodec::from_content_type(Some("Application/JSON; charset=utf-8")),
            Ok(BodyCodec::Json)
        );
        assert_eq!(
            BodyCodec::from_content_type(Some(BINCODE_CONTENT_TYPE)),
            Ok(BodyCodec::Bincode)
        );
        assert_eq!(
            BodyCodec::from_content_type(Some("text/plain")),
            Err("text/plain".to_string())
        );
    }

    #[test]
    fn a_reply_is_read_from_bincode_and_a_json_error_is_a_protocol_error() {
        let reply = CallReply(Err(FleetError::bad_request("x", "y")));
        let bytes = encode_body(&reply);
        let back: CallReply = decode_reply(400, Some(BINCODE_CONTENT_TYPE), &bytes).unwrap();
        assert_eq!(back, reply);

        let json = br#"{"error":{"kind":"route_not_found","message":"no route"}}"#;
        let err = decode_reply::<CallReply>(404, Some(JSON_CONTENT_TYPE), json).unwrap_err();
        assert!(
            matches!(&err, FleetError::Protocol { detail } if detail.contains("route_not_found")),
            "{err:?}"
        );
        let err = decode_reply::<CallReply>(200, Some(BINCODE_CONTENT_TYPE), b"\xff").unwrap_err();
        assert!(matches!(err, FleetError::Protocol { .. }), "{err:?}");
    }

    #[test]
    fn the_listening_line_is_parsed_back() {
        let line = format!("{LISTENING_LINE_PREFIX}127.0.0.1:4567");
        assert_eq!(
            parse_listening_line(&line),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        assert_eq!(parse_listening_line("listening on 127.0.0.1:1"), None);
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        let r =
            serde_json::from_str::<CallBody>(r#"{"engine":"c","engine_name":"c","method":"get"}"#);
        assert!(r.is_err());
        let ok: CallBody = serde_json::from_str(r#"{"engine_name":"c","method":"get"}"#).unwrap();
        assert_eq!(ok.args, serde_json::Value::Null);
    }
}
