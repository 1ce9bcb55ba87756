//! Reading an OpenAI request the way the mock needs it: prompt token ids (through the toy
//! tokenizer), how many tokens to generate, and which optional fields were asked for.

use serde_json::Value;

use crate::config::MockConfig;
use crate::tokenizer::{encode, role_id};

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Chat,
    Completion,
}

/// A request, read.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) kind: Kind,
    pub(crate) model: String,
    pub(crate) prompt_ids: Vec<u32>,
    pub(crate) max_tokens: usize,
    /// Whether `max_tokens` was given (then the finish reason is "length").
    pub(crate) max_tokens_given: bool,
    pub(crate) logprobs: bool,
    pub(crate) top_logprobs: usize,
    pub(crate) token_ids: bool,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) n: u32,
    pub(crate) seed: u64,
}

/// Reads a request body; the error is the message of a 400.
pub(crate) fn parse(kind: Kind, body: &[u8], config: &MockConfig) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "request body must be a JSON object".to_string())?;
    let prompt_ids = match kind {
        Kind::Chat => {
            let messages = obj
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("`messages` must be an array")?;
            let mut ids = Vec::new();
            for m in messages {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                ids.push(role_id(role));
                ids.extend(encode(&content_text(m.get("content"))));
            }
            ids.push(role_id("assistant"));
            ids
        }
        Kind::Completion => match obj.get("prompt") {
            Some(Value::String(s)) => encode(s),
            Some(Value::Array(a)) if a.iter().all(Value::is_u64) && !a.is_empty() => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| u32::try_from(x).map_err(|_| format!("token id {x} out of range")))
                .collect::<Result<_, _>>()?,
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                encode(a[0].as_str().unwrap_or_default())
            }
            _ => return Err("`prompt` must be a string or an array of token ids".into()),
        },
    };
    let max = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .filter(|v| !v.is_null());
    let (max_tokens, max_tokens_given) = match max {
        None => (config.default_max_tokens as usize, false),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => (n.min(u64::from(config.max_tokens_limit)) as usize, true),
            _ => return Err("`max_tokens` must be a positive integer".into()),
        },
    };
    let (logprobs, top_logprobs) = match kind {
        Kind::Chat => {
            let want = matches!(obj.get("logprobs"), Some(Value::Bool(true)));
            let top = obj.get("top_logprobs").and_then(Value::as_u64).unwrap_or(0);
            (want, top.min(20) as usize)
        }
        Kind::Completion => match obj.get("logprobs").and_then(Value::as_u64) {
            Some(k) => (true, k.min(5) as usize),
            None => (false, 0),
        },
    };
    let stream = matches!(obj.get("stream"), Some(Value::Bool(true)));
    let n = match obj.get("n").filter(|v| !v.is_null()) {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=8) => n as u32,
            _ => return Err("`n` must be between 1 and 8".into()),
        },
    };
    if stream && n > 1 {
        return Err("the mock streams only n = 1".into());
    }
    Ok(Parsed {
        kind,
        model: obj
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&config.model)
            .to_string(),
        prompt_ids,
        max_tokens,
        max_tokens_given,
        logprobs,
        top_logprobs,
        token_ids: matches!(obj.get("return_token_ids"), Some(Value::Bool(true))),
        stream,
        include_usage: obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        n,
        seed: config.seed ^ obj.get("seed").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// The text of a message's `content`: a string, or the text parts of an array.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}
