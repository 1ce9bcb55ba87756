//! What the proxy changes in OpenAI requests and reads from OpenAI responses.
//!
//! # Requests
//!
//! The agent's body is forwarded byte for byte (key order included: JSON-schema property order
//! in `tools` and `response_format` steers constrained decoding and what the model sees), with
//! top-level members *added* only where the recording needs them and the agent did not say
//! otherwise (see [`super::rawjson`]):
//!
//! | added | when | why |
//! | --- | --- | --- |
//! | `"logprobs": true` and `"top_logprobs": 1` (chat) | `logprobs` absent or null | llama.cpp takes its `n_probs` from `top_logprobs` (20 when absent); vLLM and SGLang accept 1 |
//! | `"logprobs": 1` (completions) | `logprobs` absent or null | the legacy completions shape |
//! | `"return_token_ids": true` | unless `--no-request-token-ids` | vLLM (0.10.2+) and SGLang return prompt and output ids |
//! | `"stream_options": {"include_usage": true}` | streams without it | the backend's token count tells whether every token was recorded |
//!
//! An agent's explicit `"logprobs": false` is respected: the turn is recorded without logprobs
//! and says so. What the proxy added is removed from the answer again (the usage chunk it asked
//! for is not passed on), so the agent sees the shape it asked for. If the backend refuses a
//! field the proxy added (SGLang refuses `return_token_ids` on streams, llama.cpp refuses
//! logprobs with tools on streams), the request is sent again once without it and the turn says
//! what is missing.
//!
//! # Answers
//!
//! Every choice is read (`n > 1` records one turn per choice). Per choice:
//!
//! | what | where (first found wins) |
//! | --- | --- |
//! | prompt token ids | top-level `prompt_token_ids` (vLLM), then `choices[i].prompt_token_ids` (SGLang) |
//! | output token ids | `choices[i].token_ids` (vLLM, SGLang), then `logprobs.content[].id` (llama.cpp), then tokens spelt `token_id:<n>` (vLLM's `--return-tokens-as-token-ids`) |
//! | logprobs | `choices[i].logprobs.content[].logprob` (chat shape), then `choices[i].logprobs.token_logprobs[]` (legacy completions shape) |
//! | token count | `usage.completion_tokens` |
//!
//! In a stream the same fields are read from every chunk and concatenated per choice. What is
//! not found is recorded as missing and flagged in the export, never invented.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::errors::ApiError;
use crate::rawjson::ObjectEdit;
use crate::sessions::{Endpoint, TurnRecord, TurnStatus};

/// Most choices recorded per request (`n` above it is passed on, the rest not recorded).
pub(crate) const MAX_CHOICES: u32 = 128;

impl Endpoint {
    /// The path on the backend.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// Which fields the proxy may add to a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Additions {
    /// `logprobs` (and `top_logprobs` for chat).
    pub(crate) logprobs: bool,
    /// `return_token_ids`.
    pub(crate) token_ids: bool,
    /// `stream_options.include_usage` on streams.
    pub(crate) usage: bool,
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
    /// Whether the proxy added `stream_options.include_usage`.
    pub(crate) added_usage: bool,
    /// The agent sent `"logprobs": false`.
    pub(crate) logprobs_declined: bool,
    /// Choices asked for (`n`, at least 1).
    pub(crate) n: u32,
    /// The request's `messages` or `prompt`, to record.
    pub(crate) request: Value,
    /// A hash of the agent's whole request (messages and parameters, key order ignored): two
    /// requests with the same fingerprint in one session are a re-send.
    pub(crate) fingerprint: u64,
    /// What the recording lacks because of how the request was sent (a refused field).
    pub(crate) notes: Vec<String>,
}

impl Prepared {
    /// Whether answers must be rewritten before the client sees them.
    pub(crate) fn rewrites(&self) -> bool {
        self.added_logprobs || self.added_token_ids || self.added_usage
    }
}

/// Checks and amends a client's request body.
pub(crate) fn prepare(
    endpoint: Endpoint,
    body: &[u8],
    add: Additions,
) -> Result<Prepared, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        ));
    };
    let mut edit = ObjectEdit::new(body)
        .ok_or_else(|| ApiError::BadRequest("request body must be a JSON object".into()))?;
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
    let n = match obj.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
            _ => {
                return Err(ApiError::BadRequest(
                    "`n` must be a positive integer".into(),
                ))
            }
        },
    };
    let lp = obj.get("logprobs");
    let logprobs_declined = matches!(lp, Some(Value::Bool(false)));
    let absent = |v: Option<&Value>| matches!(v, None | Some(Value::Null));
    let added_logprobs = add.logprobs && absent(lp);
    if added_logprobs {
        match endpoint {
            Endpoint::ChatCompletions => {
                edit.set("logprobs", &Value::Bool(true));
                if absent(obj.get("top_logprobs")) {
                    edit.set("top_logprobs", &json!(1));
                }
            }
            Endpoint::Completions => edit.set("logprobs", &json!(1)),
        }
    }
    let added_token_ids =
        add.token_ids && !matches!(obj.get("return_token_ids"), Some(Value::Bool(true)));
    if added_token_ids {
        edit.set("return_token_ids", &Value::Bool(true));
    }
    let so = obj.get("stream_options");
    let has_usage = so
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let added_usage = add.usage && stream && !has_usage;
    if added_usage {
        let mut merged = match so {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        merged.insert("include_usage".into(), Value::Bool(true));
        edit.set("stream_options", &Value::Object(merged));
    }
    Ok(Prepared {
        endpoint,
        body: Bytes::from(edit.finish()),
        stream,
        added_logprobs,
        added_token_ids,
        added_usage,
        logprobs_declined,
        n,
        request,
        fingerprint: fingerprint(&value),
        notes: Vec::new(),
    })
}

/// A stable hash of a JSON value; `serde_json::Map` iterates in key order, so two bodies that
/// differ only in key order or whitespace hash alike.
fn fingerprint(v: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Which added fields a backend's refusal names, so the request can be sent again without them.
pub(crate) fn refused_additions(prepared: &Prepared, error_body: &str) -> Option<Additions> {
    let b = error_body.to_ascii_lowercase();
    let token_ids = prepared.added_token_ids && b.contains("return_token_ids");
    let logprobs = prepared.added_logprobs && (b.contains("logprobs") || b.contains("n_probs"));
    let usage =
        prepared.added_usage && (b.contains("stream_options") || b.contains("include_usage"));
    (token_ids || logprobs || usage).then_some(Additions {
        logprobs,
        token_ids,
        usage,
    })
}

/// What an answer chunk becomes for the client.
pub(crate) enum Stripped {
    /// Pass it on (rewritten if needed).
    Keep,
    /// Withhold it: the usage chunk the proxy asked for.
    Drop,
}

/// Removes from an answer (a whole response or one stream chunk) what the proxy added.
pub(crate) fn strip_added(prepared: &Prepared, v: &mut Value) -> Stripped {
    let Some(obj) = v.as_object_mut() else {
        return Stripped::Keep;
    };
    if prepared.added_usage {
        let no_choices = obj
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| c.is_empty());
        if no_choices && obj.get("usage").is_some_and(|u| !u.is_null()) {
            return Stripped::Drop;
        }
    }
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
    Stripped::Keep
}

/// What one choice produced.
#[derive(Debug, Default)]
struct ChoiceAcc {
    prompt_ids: Option<Vec<u32>>,
    output_ids: Option<Vec<u32>>,
    /// Ids from `logprobs.content[].id` (llama.cpp), `None` entries where an item had none.
    logprob_ids: Vec<Option<u32>>,
    /// Token ids spelt `token_id:<n>` in the logprobs.
    spelt_ids: Vec<Option<u32>>,
    logprobs: Option<Vec<Option<f64>>>,
    finish_reason: Option<String>,
    /// Chat: the assembled assistant message; completions: `{"text": ...}`.
    message: Map<String, Value>,
    /// Chat streams: tool calls assembled from their deltas, by index.
    tool_calls: Vec<Map<String, Value>>,
}

/// Token ids, logprobs and content gathered from an answer or from a stream's chunks.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    prompt_ids: Option<Vec<u32>>,
    model: Option<String>,
    system_fingerprint: Option<String>,
    completion_tokens: Option<u64>,
    choices: BTreeMap<u32, ChoiceAcc>,
    /// A stream event carried an `error` object (vLLM and SGLang report a failure mid-stream
    /// that way, then end the stream normally).
    backend_error: Option<String>,
}

impl Accumulator {
    /// Reads a whole (non-streamed) answer.
    pub(crate) fn from_response(endpoint: Endpoint, v: &Value) -> Accumulator {
        let mut acc = Accumulator::default();
        acc.read_common(v);
        for (idx, choice) in choices(v) {
            let c = acc.choices.entry(idx).or_default();
            c.read_ids(choice);
            match endpoint {
                Endpoint::ChatCompletions => {
                    if let Some(Value::Object(m)) = choice.get("message") {
                        c.message = m.clone();
                    }
                }
                Endpoint::Completions => {
                    if let Some(t) = choice.get("text") {
                        c.message.insert("text".into(), t.clone());
                    }
                }
            }
        }
        acc
    }

    /// Reads one stream chunk.
    pub(crate) fn push_chunk(&mut self, endpoint: Endpoint, v: &Value) {
        self.read_common(v);
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string());
            self.backend_error.get_or_insert(msg);
        }
        for (idx, choice) in choices(v) {
            let c = self.choices.entry(idx).or_default();
            c.read_ids(choice);
            match endpoint {
                Endpoint::ChatCompletions => {
                    if let Some(Value::Object(delta)) = choice.get("delta") {
                        for (k, val) in delta {
                            match (k.as_str(), val) {
                                ("tool_calls", Value::Array(calls)) => c.merge_tool_calls(calls),
                                (_, Value::String(s)) if k != "role" => {
                                    append_str(&mut c.message, k, s)
                                }
                                (_, Value::Null) => {}
                                _ => {
                                    c.message.insert(k.clone(), val.clone());
                                }
                            }
                        }
                    }
                }
                Endpoint::Completions => {
                    if let Some(Value::String(t)) = choice.get("text") {
                        append_str(&mut c.message, "text", t);
                    }
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
        if let Some(Value::String(f)) = v.get("system_fingerprint") {
            if self.system_fingerprint.is_none() {
                self.system_fingerprint = Some(f.clone());
            }
        }
        if let Some(n) = v
            .get("usage")
            .and_then(|u| u.get("completion_tokens"))
            .and_then(Value::as_u64)
        {
            self.completion_tokens = Some(n);
        }
    }

    /// Whether the stream has produced any output yet.
    pub(crate) fn has_output(&self) -> bool {
        self.choices.values().any(|c| {
            !c.message.is_empty()
                || !c.tool_calls.is_empty()
                || c.output_ids.as_ref().is_some_and(|v| !v.is_empty())
        })
    }

    /// One turn record per choice, in choice order (at least one, for choice 0).
    pub(crate) fn into_records(
        mut self,
        prepared: &Prepared,
        status: TurnStatus,
    ) -> Vec<TurnRecord> {
        if self.choices.is_empty() {
            self.choices.insert(0, ChoiceAcc::default());
        }
        let n_choices = u32::try_from(self.choices.len()).unwrap_or(u32::MAX);
        // The backend's count covers all choices; it checks a choice only when there is one.
        let completion_tokens = self.completion_tokens.filter(|_| n_choices == 1);
        let endpoint = prepared.endpoint;
        let mut notes = prepared.notes.clone();
        let status = match &self.backend_error {
            Some(e) => {
                notes.push(format!("the backend reported an error in the stream: {e}"));
                if status == TurnStatus::Complete {
                    TurnStatus::Failed
                } else {
                    status
                }
            }
            None => status,
        };
        let mut out = Vec::with_capacity(self.choices.len());
        for (idx, c) in self.choices.into_iter().take(MAX_CHOICES as usize) {
            let (response, output_ids, output_logprobs, finish_reason, prompt_ids) =
                c.finish(endpoint);
            out.push(TurnRecord {
                endpoint,
                request: prepared.request.clone(),
                response,
                prompt_ids: self.prompt_ids.clone().or(prompt_ids),
                output_ids,
                output_logprobs: if prepared.logprobs_declined {
                    None
                } else {
                    output_logprobs
                },
                completion_tokens,
                logprobs_declined: prepared.logprobs_declined,
                choice_index: idx,
                n_choices,
                finish_reason,
                model: self.model.clone(),
                system_fingerprint: self.system_fingerprint.clone(),
                status,
                notes: notes.clone(),
            });
        }
        out
    }
}

type Finished = (
    Value,
    Option<Vec<u32>>,
    Option<Vec<Option<f64>>>,
    Option<String>,
    Option<Vec<u32>>,
);

impl ChoiceAcc {
    fn read_ids(&mut self, choice: &Value) {
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
                self.logprobs
                    .get_or_insert_with(Vec::new)
                    .push(item.get("logprob").and_then(Value::as_f64));
                self.logprob_ids.push(
                    item.get("id")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok()),
                );
                self.spelt_ids.push(spelt(item.get("token")));
            }
        } else if let Some(Value::Array(token_lps)) = lp.get("token_logprobs") {
            let lps = self.logprobs.get_or_insert_with(Vec::new);
            lps.extend(token_lps.iter().map(Value::as_f64));
            if let Some(Value::Array(tokens)) = lp.get("tokens") {
                self.spelt_ids.extend(tokens.iter().map(|t| spelt(Some(t))));
            }
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

    fn finish(mut self, endpoint: Endpoint) -> Finished {
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
        // A fallback is used only when every logprobs entry carries an id: never half-filled.
        let all = |v: Vec<Option<u32>>| -> Option<Vec<u32>> {
            if v.is_empty() {
                None
            } else {
                v.into_iter().collect()
            }
        };
        let output_ids = self
            .output_ids
            .or_else(|| all(self.logprob_ids))
            .or_else(|| all(self.spelt_ids));
        (
            response,
            output_ids,
            self.logprobs,
            self.finish_reason,
            self.prompt_ids,
        )
    }
}

/// The choices of an answer or chunk with their index (a missing index counts as 0).
fn choices(v: &Value) -> impl Iterator<Item = (u32, &Value)> {
    v.get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let idx = u32::try_from(idx).ok().filter(|i| *i < MAX_CHOICES)?;
            Some((idx, c))
        })
}

fn spelt(token: Option<&Value>) -> Option<u32> {
    token
        .and_then(Value::as_str)
        .and_then(|t| t.strip_prefix("token_id:"))
        .and_then(|n| n.parse::<u32>().ok())
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

    const ALL: Additions = Additions {
        logprobs: true,
        token_ids: true,
        usage: true,
    };

    fn one(r: Vec<TurnRecord>) -> TurnRecord {
        assert_eq!(r.len(), 1);
        r.into_iter().next().unwrap()
    }

    fn prepared(endpoint: Endpoint) -> Prepared {
        let body = match endpoint {
            Endpoint::ChatCompletions => r#"{"messages":[]}"#,
            Endpoint::Completions => r#"{"prompt":"x"}"#,
        };
        prepare(endpoint, body.as_bytes(), ALL).unwrap()
    }

    #[test]
    fn prepare_adds_logprobs_and_token_ids_and_keeps_the_rest_in_order() {
        let body = r#"{"model":"m","messages":[],"foo":{"z":1,"a":2}}"#;
        let p = prepare(Endpoint::ChatCompletions, body.as_bytes(), ALL).unwrap();
        let sent = std::str::from_utf8(&p.body).unwrap();
        assert_eq!(
            sent,
            r#"{"model":"m","messages":[],"foo":{"z":1,"a":2},"logprobs":true,"top_logprobs":1,"return_token_ids":true}"#
        );
        assert!(p.added_logprobs && p.added_token_ids && !p.added_usage && !p.stream);

        let body = json!({"prompt": "hi", "logprobs": 3, "stream": true}).to_string();
        let no_ids = Additions {
            token_ids: false,
            ..ALL
        };
        let p = prepare(Endpoint::Completions, body.as_bytes(), no_ids).unwrap();
        assert!(!p.added_logprobs && !p.added_token_ids && p.added_usage && p.stream);
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn an_explicit_logprobs_false_is_respected_and_recorded_as_declined() {
        let body = r#"{"messages":[],"logprobs":false}"#;
        let p = prepare(Endpoint::ChatCompletions, body.as_bytes(), ALL).unwrap();
        assert!(p.logprobs_declined && !p.added_logprobs);
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["logprobs"], false);
        assert!(sent.get("top_logprobs").is_none());
    }

    #[test]
    fn prepare_rejects_what_is_not_a_request() {
        for (ep, body) in [
            (Endpoint::ChatCompletions, "{"),
            (Endpoint::ChatCompletions, "[]"),
            (Endpoint::ChatCompletions, "{\"messages\": 3}"),
            (Endpoint::ChatCompletions, "{\"messages\": [], \"n\": 0}"),
            (Endpoint::Completions, "{}"),
            (
                Endpoint::Completions,
                "{\"prompt\":\"x\",\"stream\":\"yes\"}",
            ),
        ] {
            assert!(
                matches!(
                    prepare(ep, body.as_bytes(), ALL),
                    Err(ApiError::BadRequest(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace_only() {
        let a = prepare(
            Endpoint::ChatCompletions,
            br#"{"messages":[{"role":"user","content":"x"}],"temperature":1}"#,
            ALL,
        )
        .unwrap();
        let b = prepare(
            Endpoint::ChatCompletions,
            br#"{ "temperature": 1, "messages": [{"content":"x","role":"user"}] }"#,
            ALL,
        )
        .unwrap();
        let c = prepare(
            Endpoint::ChatCompletions,
            br#"{"messages":[{"role":"user","content":"x"}],"temperature":0.5}"#,
            ALL,
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn reads_vllm_token_ids_and_chat_logprobs() {
        let v = json!({"model": "m", "prompt_token_ids": [1, 2],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a b"},
              "token_ids": [7, 8], "finish_reason": "stop",
              "logprobs": {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.0}]}}],
            "usage": {"completion_tokens": 2}});
        let p = prepared(Endpoint::ChatCompletions);
        let r = one(Accumulator::from_response(Endpoint::ChatCompletions, &v)
            .into_records(&p, TurnStatus::Complete));
        assert_eq!(r.prompt_ids, Some(vec![1, 2]));
        assert_eq!(r.output_ids, Some(vec![7, 8]));
        assert_eq!(r.output_logprobs, Some(vec![Some(-0.5), Some(-1.0)]));
        assert_eq!(r.completion_tokens, Some(2));
        assert_eq!(r.response["content"], "a b");
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert!(r.gaps().is_empty(), "{:?}", r.gaps());
    }

    #[test]
    fn reads_llama_cpp_ids_from_the_logprobs_and_flags_a_short_count() {
        let v = json!({"choices": [{"index": 0, "message": {"content": "ab"},
            "logprobs": {"content": [{"id": 5, "token": "a", "logprob": -0.1}, {"id": 6, "token": "b", "logprob": -0.2}]}}],
            "usage": {"completion_tokens": 3}});
        let p = prepared(Endpoint::ChatCompletions);
        let r = one(Accumulator::from_response(Endpoint::ChatCompletions, &v)
            .into_records(&p, TurnStatus::Complete));
        assert_eq!(r.output_ids, Some(vec![5, 6]));
        assert_eq!(r.prompt_ids, None);
        let gaps = r.gaps();
        assert!(
            gaps.iter().any(|g| g.contains("prompt token ids")),
            "{gaps:?}"
        );
        assert!(
            gaps.iter().any(|g| g.contains("3 completion tokens")),
            "{gaps:?}"
        );
    }

    #[test]
    fn falls_back_to_spelt_token_ids_only_when_every_token_is_spelt() {
        let v = json!({"choices": [{"text": "x", "logprobs": {
            "tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-0.1, -0.2]}}]});
        let p = prepared(Endpoint::Completions);
        let r = one(Accumulator::from_response(Endpoint::Completions, &v)
            .into_records(&p, TurnStatus::Complete));
        assert_eq!(r.output_ids, Some(vec![5, 6]));

        let v = json!({"choices": [{"text": "x", "logprobs": {
            "tokens": ["token_id:5", "word"], "token_logprobs": [-0.1, null]}}]});
        let r = one(Accumulator::from_response(Endpoint::Completions, &v)
            .into_records(&p, TurnStatus::Complete));
        assert_eq!(r.output_ids, None, "a partial fallback is not used");
        assert_eq!(
            r.output_logprobs,
            Some(vec![Some(-0.1), None]),
            "null stays null"
        );
    }

    #[test]
    fn every_choice_is_recorded() {
        let v = json!({"prompt_token_ids": [1], "choices": [
            {"index": 1, "message": {"content": "b"}, "token_ids": [9]},
            {"index": 0, "message": {"content": "a"}, "token_ids": [8]}]});
        let p = prepared(Endpoint::ChatCompletions);
        let r = Accumulator::from_response(Endpoint::ChatCompletions, &v)
            .into_records(&p, TurnStatus::Complete);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].choice_index, r[0].response["content"].clone()),
            (0, json!("a"))
        );
        assert_eq!(r[1].output_ids, Some(vec![9]));
        assert_eq!(r[1].prompt_ids, Some(vec![1]));
        assert!(r.iter().all(|t| t.n_choices == 2));
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
        acc.push_chunk(
            ep,
            &json!({"choices": [], "usage": {"completion_tokens": 2}}),
        );
        assert!(acc.has_output());
        let p = prepared(ep);
        let r = one(acc.into_records(&p, TurnStatus::Complete));
        assert_eq!(r.prompt_ids, Some(vec![1]));
        assert_eq!(r.output_ids, Some(vec![3, 4]));
        assert_eq!(r.output_logprobs, Some(vec![Some(-0.25), Some(-0.5)]));
        assert_eq!(r.response["content"], "hello");
        assert_eq!(r.response["role"], "assistant");
        assert_eq!(
            r.response["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(r.response["tool_calls"][0]["id"], "c1");
        assert!(r.gaps().is_empty(), "{:?}", r.gaps());
    }

    #[test]
    fn an_error_event_in_a_stream_fails_the_turn() {
        let mut acc = Accumulator::default();
        let ep = Endpoint::ChatCompletions;
        acc.push_chunk(
            ep,
            &json!({"choices": [{"index": 0, "delta": {"content": "he"}, "token_ids": [3]}]}),
        );
        acc.push_chunk(ep, &json!({"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}));
        let r = one(acc.into_records(&prepared(ep), TurnStatus::Complete));
        assert_eq!(r.status, TurnStatus::Failed);
        assert!(
            r.gaps().iter().any(|g| g.contains("engine died")),
            "{:?}",
            r.gaps()
        );
    }

    #[test]
    fn strip_removes_only_what_the_proxy_added() {
        let p = prepare(
            Endpoint::ChatCompletions,
            br#"{"messages":[],"stream":true}"#,
            ALL,
        )
        .unwrap();
        let mut v = json!({"prompt_token_ids": [1], "choices": [{"token_ids": [2], "logprobs": {"content": []}, "delta": {}}]});
        assert!(matches!(strip_added(&p, &mut v), Stripped::Keep));
        assert_eq!(v, json!({"choices": [{"logprobs": null, "delta": {}}]}));
        let mut usage = json!({"choices": [], "usage": {"completion_tokens": 1}});
        assert!(matches!(strip_added(&p, &mut usage), Stripped::Drop));
    }

    #[test]
    fn a_refusal_naming_an_added_field_is_recognised() {
        let p = prepare(
            Endpoint::ChatCompletions,
            br#"{"messages":[],"stream":true}"#,
            ALL,
        )
        .unwrap();
        let sglang = r#"{"object":"error","message":"return_token_ids is not supported with streaming on /v1/chat/completions.","type":"BadRequest","param":null,"code":400}"#;
        let r = refused_additions(&p, sglang).unwrap();
        assert!(r.token_ids && !r.logprobs && !r.usage);
        let llama = r#"{"error":{"code":400,"message":"logprobs is not supported with tools + stream","type":"invalid_request_error"}}"#;
        let r = refused_additions(&p, llama).unwrap();
        assert!(r.logprobs && !r.token_ids);
        assert!(refused_additions(&p, r#"{"error":{"message":"context too long"}}"#).is_none());
    }
}
