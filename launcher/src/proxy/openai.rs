//! What the proxy changes in OpenAI requests and reads from OpenAI responses.
//!
//! Requests are passed on as the client sent them (unknown fields and `model` included) with
//! two additions the recording needs, each only when the client did not ask for it itself:
//! logprobs (`"logprobs": true` for chat, `"logprobs": 1` for completions) and vLLM's
//! `"return_token_ids": true` (vLLM 0.10.2 and later). What the proxy added is removed from the
//! answer again, so the client sees the shape it asked for.
//!
//! Fields read from the backend's answer (choice 0 only; with `n > 1` the other choices are
//! passed through but not recorded):
//!
//! | what | where (first found wins) |
//! | --- | --- |
//! | prompt token ids | top-level `prompt_token_ids`, then `choices[0].prompt_token_ids` |
//! | output token ids | `choices[0].token_ids`, then tokens spelt `token_id:<n>` in the logprobs (vLLM's `--return-tokens-as-token-ids`) |
//! | logprobs | `choices[0].logprobs.content[].logprob` (chat shape), then `choices[0].logprobs.token_logprobs[]` (legacy completions shape) |
//!
//! In a stream the same fields are read from every chunk and concatenated. What is not found is
//! recorded as missing and flagged in the export, never invented.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::sessions::{Endpoint, TurnRecord, TurnStatus};

impl Endpoint {
    /// The path on the backend.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// A client request made ready for the backend.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) endpoint: Endpoint,
    /// The body to send upstream.
    pub(crate) body: Bytes,
    /// Whether the client asked for a stream.
    pub(crate) stream: bool,
    /// Whether the proxy added logprobs the client did not ask for.
    pub(crate) added_logprobs: bool,
    /// Whether the proxy added `return_token_ids`.
    pub(crate) added_token_ids: bool,
    /// The request's `messages` or `prompt`, to record.
    pub(crate) request: Value,
}

impl Prepared {
    /// Whether answers must be rewritten before the client sees them.
    pub(crate) fn rewrites(&self) -> bool {
        self.added_logprobs || self.added_token_ids
    }
}

/// Checks and amends a client's request body.
pub(crate) fn prepare(
    endpoint: Endpoint,
    body: &[u8],
    request_token_ids: bool,
) -> Result<Prepared, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        ));
    };
    let request = match endpoint {
        Endpoint::ChatCompletions => match obj.get("messages") {
            Some(m @ Value::Array(_)) => m.clone(),
            _ => {
                return Err(ApiError::BadRequest(
                    "`messages` must be an array of messages".into(),
                ))
            }
        },
        Endpoint::Completions => match obj.get("prompt") {
            Some(p) if !p.is_null() => p.clone(),
            _ => return Err(ApiError::BadRequest("`prompt` is required".into())),
        },
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::BadRequest("`stream` must be a boolean".into())),
    };
    let added_logprobs = match endpoint {
        Endpoint::ChatCompletions => {
            let wants = matches!(obj.get("logprobs"), Some(Value::Bool(true)));
            if !wants {
                obj.insert("logprobs".into(), Value::Bool(true));
            }
            !wants
        }
        Endpoint::Completions => {
            let wants = matches!(obj.get("logprobs"), Some(Value::Number(_)));
            if !wants {
                obj.insert("logprobs".into(), Value::from(1));
            }
            !wants
        }
    };
    let added_token_ids =
        request_token_ids && !matches!(obj.get("return_token_ids"), Some(Value::Bool(true)));
    if added_token_ids {
        obj.insert("return_token_ids".into(), Value::Bool(true));
    }
    let body = serde_json::to_vec(&Value::Object(obj))
        .map_err(|e| ApiError::BadRequest(format!("cannot re-encode the request: {e}")))?;
    Ok(Prepared {
        endpoint,
        body: Bytes::from(body),
        stream,
        added_logprobs,
        added_token_ids,
        request,
    })
}

/// Removes from an answer (a whole response or one stream chunk) what the proxy added.
pub(crate) fn strip_added(prepared: &Prepared, v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    if prepared.added_token_ids {
        obj.remove("prompt_token_ids");
    }
    if let Some(Value::Array(choices)) = obj.get_mut("choices") {
        for c in choices.iter_mut().filter_map(Value::as_object_mut) {
            if prepared.added_token_ids {
                c.remove("token_ids");
                c.remove("prompt_token_ids");
            }
            if prepared.added_logprobs && c.contains_key("logprobs") {
                c.insert("logprobs".into(), Value::Null);
            }
        }
    }
}

/// Token ids, logprobs and content gathered from an answer or from a stream's chunks.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    prompt_ids: Option<Vec<u32>>,
    output_ids: Option<Vec<u32>>,
    /// Token ids spelt `token_id:<n>` in the logprobs, the fallback for `output_ids`.
    spelt_ids: Option<Vec<u32>>,
    /// A token was spelt some other way: the fallback cannot be used.
    spelt_poisoned: bool,
    logprobs: Option<Vec<f64>>,
    finish_reason: Option<String>,
    model: Option<String>,
    /// Chat: the assembled assistant message; completions: `{"text": ...}`.
    message: Map<String, Value>,
    /// Chat streams: tool calls assembled from their deltas, by index.
    tool_calls: Vec<Map<String, Value>>,
}

impl Accumulator {
    /// Reads a whole (non-streamed) answer.
    pub(crate) fn from_response(endpoint: Endpoint, v: &Value) -> Accumulator {
        let mut acc = Accumulator::default();
        acc.read_common(v);
        if let Some(choice) = first_choice(v) {
            acc.read_choice_ids(choice);
            match endpoint {
                Endpoint::ChatCompletions => {
                    if let Some(Value::Object(m)) = choice.get("message") {
                        acc.message = m.clone();
                    }
                }
                Endpoint::Completions => {
                    if let Some(t) = choice.get("text") {
                        acc.message.insert("text".into(), t.clone());
                    }
                }
            }
        }
        acc
    }

    /// Reads one stream chunk.
    pub(crate) fn push_chunk(&mut self, endpoint: Endpoint, v: &Value) {
        self.read_common(v);
        let Some(choice) = first_choice(v) else {
            return;
        };
        self.read_choice_ids(choice);
        match endpoint {
            Endpoint::ChatCompletions => {
                if let Some(Value::Object(delta)) = choice.get("delta") {
                    for (k, val) in delta {
                        match (k.as_str(), val) {
                            ("tool_calls", Value::Array(calls)) => self.merge_tool_calls(calls),
                            (_, Value::String(s)) if k != "role" => {
                                append_str(&mut self.message, k, s)
                            }
                            (_, Value::Null) => {}
                            _ => {
                                self.message.insert(k.clone(), val.clone());
                            }
                        }
                    }
                }
            }
            Endpoint::Completions => {
                if let Some(Value::String(t)) = choice.get("text") {
                    append_str(&mut self.message, "text", t);
                }
            }
        }
    }

    fn read_common(&mut self, v: &Value) {
        if let Some(ids) = v.get("prompt_token_ids").and_then(ids_of) {
            self.prompt_ids = Some(ids);
        }
        if let Some(Value::String(m)) = v.get("model") {
            if self.model.is_none() {
                self.model = Some(m.clone());
            }
        }
    }

    fn read_choice_ids(&mut self, choice: &Value) {
        if self.prompt_ids.is_none() {
            if let Some(ids) = choice.get("prompt_token_ids").and_then(ids_of) {
                self.prompt_ids = Some(ids);
            }
        }
        if let Some(ids) = choice.get("token_ids").and_then(ids_of) {
            self.output_ids.get_or_insert_with(Vec::new).extend(ids);
        }
        if let Some(Value::String(r)) = choice.get("finish_reason") {
            self.finish_reason = Some(r.clone());
        }
        let Some(lp) = choice.get("logprobs").filter(|l| !l.is_null()) else {
            return;
        };
        if let Some(Value::Array(content)) = lp.get("content") {
            for item in content {
                let lp = item
                    .get("logprob")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN);
                self.logprobs.get_or_insert_with(Vec::new).push(lp);
                self.push_spelt(item.get("token"));
            }
        } else if let Some(Value::Array(token_lps)) = lp.get("token_logprobs") {
            let lps = self.logprobs.get_or_insert_with(Vec::new);
            lps.extend(token_lps.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)));
            if let Some(Value::Array(tokens)) = lp.get("tokens") {
                for t in tokens {
                    self.push_spelt(Some(t));
                }
            }
        }
    }

    /// Records a token spelt `token_id:<n>`; any other spelling disables the fallback, so it
    /// is never used half-filled.
    fn push_spelt(&mut self, token: Option<&Value>) {
        let id = token
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix("token_id:"))
            .and_then(|n| n.parse::<u32>().ok());
        match id {
            Some(id) => self.spelt_ids.get_or_insert_with(Vec::new).push(id),
            None => self.spelt_poisoned = true,
        }
    }

    fn merge_tool_calls(&mut self, calls: &[Value]) {
        for call in calls {
            let idx = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if idx >= 1024 {
                continue;
            }
            if self.tool_calls.len() <= idx {
                self.tool_calls.resize_with(idx + 1, Map::new);
            }
            let slot = &mut self.tool_calls[idx];
            let Some(obj) = call.as_object() else {
                continue;
            };
            for (k, v) in obj {
                match (k.as_str(), v) {
                    ("index", _) => {}
                    ("function", Value::Object(f)) => {
                        let func = slot
                            .entry("function")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(func) = func {
                            for (fk, fv) in f {
                                match fv {
                                    Value::String(s) => append_str(func, fk, s),
                                    other => {
                                        func.insert(fk.clone(), other.clone());
                                    }
                                }
                            }
                        }
                    }
                    (_, Value::Null) => {}
                    _ => {
                        slot.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }

    /// Whether the stream has produced any output yet.
    pub(crate) fn has_output(&self) -> bool {
        !self.message.is_empty()
            || !self.tool_calls.is_empty()
            || self.output_ids.as_ref().is_some_and(|v| !v.is_empty())
    }

    /// The turn record.
    pub(crate) fn into_record(
        mut self,
        endpoint: Endpoint,
        request: Value,
        status: TurnStatus,
    ) -> TurnRecord {
        let response = match endpoint {
            Endpoint::ChatCompletions => {
                self.message
                    .entry("role")
                    .or_insert_with(|| Value::from("assistant"));
                if !self.tool_calls.is_empty() {
                    self.message.insert(
                        "tool_calls".into(),
                        Value::Array(self.tool_calls.into_iter().map(Value::Object).collect()),
                    );
                }
                Value::Object(self.message)
            }
            Endpoint::Completions => self.message.remove("text").unwrap_or(Value::Null),
        };
        let poisoned = self.spelt_poisoned;
        let spelt = self
            .spelt_ids
            .filter(|_| !poisoned)
            .filter(|s| Some(s.len()) == self.logprobs.as_ref().map(Vec::len));
        TurnRecord {
            endpoint,
            request,
            response,
            prompt_ids: self.prompt_ids,
            output_ids: self.output_ids.or(spelt),
            output_logprobs: self.logprobs,
            finish_reason: self.finish_reason,
            model: self.model,
            status,
        }
    }
}

fn first_choice(v: &Value) -> Option<&Value> {
    v.get("choices")?
        .as_array()?
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}

fn ids_of(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

fn append_str(map: &mut Map<String, Value>, key: &str, s: &str) {
    match map.get_mut(key) {
        Some(Value::String(existing)) => existing.push_str(s),
        _ => {
            map.insert(key.to_string(), Value::from(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prepare_adds_logprobs_and_token_ids_and_keeps_the_rest() {
        let body = json!({"model": "m", "messages": [], "foo": {"bar": 1}}).to_string();
        let p = prepare(Endpoint::ChatCompletions, body.as_bytes(), true).unwrap();
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["model"], "m");
        assert_eq!(sent["foo"]["bar"], 1);
        assert_eq!(sent["logprobs"], true);
        assert_eq!(sent["return_token_ids"], true);
        assert!(p.added_logprobs && p.added_token_ids && !p.stream);

        let body = json!({"prompt": "hi", "logprobs": 3, "stream": true}).to_string();
        let p = prepare(Endpoint::Completions, body.as_bytes(), false).unwrap();
        assert!(!p.added_logprobs && !p.added_token_ids && p.stream);
    }

    #[test]
    fn prepare_rejects_what_is_not_a_request() {
        for (ep, body) in [
            (Endpoint::ChatCompletions, "{"),
            (Endpoint::ChatCompletions, "[]"),
            (Endpoint::ChatCompletions, "{\"messages\": 3}"),
            (Endpoint::Completions, "{}"),
            (
                Endpoint::Completions,
                "{\"prompt\":\"x\",\"stream\":\"yes\"}",
            ),
        ] {
            assert!(
                matches!(
                    prepare(ep, body.as_bytes(), true),
                    Err(ApiError::BadRequest(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn reads_vllm_token_ids_and_chat_logprobs() {
        let v = json!({"model": "m", "prompt_token_ids": [1, 2],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a b"},
              "token_ids": [7, 8], "finish_reason": "stop",
              "logprobs": {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.0}]}}]});
        let r = Accumulator::from_response(Endpoint::ChatCompletions, &v).into_record(
            Endpoint::ChatCompletions,
            Value::Null,
            TurnStatus::Complete,
        );
        assert_eq!(r.prompt_ids, Some(vec![1, 2]));
        assert_eq!(r.output_ids, Some(vec![7, 8]));
        assert_eq!(r.output_logprobs, Some(vec![-0.5, -1.0]));
        assert_eq!(r.response["content"], "a b");
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn falls_back_to_spelt_token_ids_and_flags_what_is_missing() {
        let v = json!({"choices": [{"text": "x", "logprobs": {
            "tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-0.1, -0.2]}}]});
        let r = Accumulator::from_response(Endpoint::Completions, &v).into_record(
            Endpoint::Completions,
            Value::Null,
            TurnStatus::Complete,
        );
        assert_eq!(r.prompt_ids, None);
        assert_eq!(r.output_ids, Some(vec![5, 6]));
        assert_eq!(r.output_logprobs, Some(vec![-0.1, -0.2]));

        let v = json!({"choices": [{"text": "x", "logprobs": {
            "tokens": ["token_id:5", "word"], "token_logprobs": [-0.1, -0.2]}}]});
        let r = Accumulator::from_response(Endpoint::Completions, &v).into_record(
            Endpoint::Completions,
            Value::Null,
            TurnStatus::Complete,
        );
        assert_eq!(r.output_ids, None, "a partial fallback is not used");
    }

    #[test]
    fn stream_chunks_are_concatenated_including_tool_calls() {
        let mut acc = Accumulator::default();
        let ep = Endpoint::ChatCompletions;
        acc.push_chunk(ep, &json!({"prompt_token_ids": [1], "choices": [{"index": 0, "delta": {"role": "assistant"}}]}));
        acc.push_chunk(
            ep,
            &json!({"choices": [{"index": 0, "delta": {"content": "he"}, "token_ids": [3],
            "logprobs": {"content": [{"token": "he", "logprob": -0.25}]}}]}),
        );
        acc.push_chunk(ep, &json!({"choices": [{"index": 0, "delta": {"content": "llo",
            "tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]},
            "token_ids": [4], "logprobs": {"content": [{"token": "llo", "logprob": -0.5}]}}]}));
        acc.push_chunk(ep, &json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
            "finish_reason": "tool_calls"}]}));
        assert!(acc.has_output());
        let r = acc.into_record(ep, Value::Null, TurnStatus::Complete);
        assert_eq!(r.prompt_ids, Some(vec![1]));
        assert_eq!(r.output_ids, Some(vec![3, 4]));
        assert_eq!(r.output_logprobs, Some(vec![-0.25, -0.5]));
        assert_eq!(r.response["content"], "hello");
        assert_eq!(r.response["role"], "assistant");
        assert_eq!(
            r.response["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(r.response["tool_calls"][0]["id"], "c1");
    }

    #[test]
    fn strip_removes_only_what_the_proxy_added() {
        let body = json!({"messages": []}).to_string();
        let p = prepare(Endpoint::ChatCompletions, body.as_bytes(), true).unwrap();
        let mut v = json!({"prompt_token_ids": [1], "choices": [{"token_ids": [2], "logprobs": {"content": []}, "message": {}}]});
        strip_added(&p, &mut v);
        assert_eq!(v, json!({"choices": [{"logprobs": null, "message": {}}]}));
    }
}
