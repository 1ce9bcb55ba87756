//! Reading OpenAI requests and writing OpenAI answers, with the fields vLLM adds.
//!
//! The chat template is fixed: the prompt is `BOS` followed by the characters of the **last
//! `user` message's content** (earlier messages and other roles are ignored; a model this small
//! has no use for history). Completions take `prompt` as a string or as token ids.
//!
//! Answers carry, per choice, `logprobs.content[{token, logprob, id, bytes, top_logprobs}]`
//! (chat) or the legacy `logprobs{tokens, token_logprobs, top_logprobs, text_offset}`
//! (completions) when logprobs were asked for; with `"return_token_ids": true`, vLLM's
//! `token_ids` per choice and `prompt_token_ids` (top level for chat, per choice for
//! completions); and `system_fingerprint` naming the weights on every body and chunk. The end
//! token is part of `token_ids` and `logprobs` (text `""`): a trainer must learn to stop.
//! `top_logprobs` lists are always empty (alternatives are not computed). A `stop` string ends
//! the choice with `finish_reason: "stop"`; its tokens stay in `token_ids` and `logprobs`, and
//! it is removed from the text of whole answers only (a stream has already sent it).

use serde_json::{json, Map, Value};

use crate::tokenizer::{encode, prompt_ids, token_text, VOCAB};

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// Limits and defaults a request is read against.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The model name reported.
    pub model: String,
    /// Temperature when a request sets none.
    pub temperature: f64,
    /// Tokens when a request sets no `max_tokens`.
    pub max_tokens: usize,
    /// Most choices per request.
    pub max_n: u32,
}

/// A request, read.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The endpoint.
    pub kind: Kind,
    /// The model name to report.
    pub model: String,
    /// Prompt ids.
    pub prompt_ids: Vec<u32>,
    /// Most tokens per choice.
    pub max_tokens: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Choices.
    pub n: u32,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream the answer.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Return logprobs.
    pub logprobs: bool,
    /// Return token ids.
    pub token_ids: bool,
    /// The request's seed, if given.
    pub seed: Option<u64>,
}

/// Reads a request body; the error is the message of a 400.
pub fn parse(kind: Kind, body: &[u8], d: &Defaults) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("request body must be a JSON object")?;
    let prompt_ids = match kind {
        Kind::Chat => {
            let messages = obj
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("`messages` must be an array")?;
            let last_user = messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .ok_or("`messages` has no user message (the prompt is the last user message)")?;
            prompt_ids(&content_text(last_user.get("content")))
        }
        Kind::Completion => match obj.get("prompt") {
            Some(Value::String(s)) => prompt_ids(s),
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| {
                    u32::try_from(x)
                        .ok()
                        .filter(|&t| (t as usize) < VOCAB)
                        .ok_or_else(|| format!("token id {x} is outside the vocabulary of {VOCAB}"))
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                prompt_ids(a[0].as_str().unwrap_or_default())
            }
            _ => return Err("`prompt` must be a string or an array of token ids".into()),
        },
    };
    let max_tokens = match obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .filter(|v| !v.is_null())
    {
        None => d.max_tokens,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n.min(1 << 20) as usize,
            _ => return Err("`max_tokens` must be a positive integer".into()),
        },
    };
    let temperature = match obj.get("temperature").filter(|v| !v.is_null()) {
        None => d.temperature,
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=100.0).contains(&t) => t,
            _ => return Err("`temperature` must be a number between 0 and 100".into()),
        },
    };
    let n = match obj.get("n").filter(|v| !v.is_null()) {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(d.max_n) => n as u32,
            _ => return Err(format!("`n` must be between 1 and {}", d.max_n)),
        },
    };
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => return Err("`stop` must be a string or an array of up to 4 strings".into()),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        _ => return Err("`stream` must be a boolean".into()),
    };
    let logprobs = match kind {
        Kind::Chat => matches!(obj.get("logprobs"), Some(Value::Bool(true))),
        Kind::Completion => obj.get("logprobs").and_then(Value::as_u64).is_some(),
    };
    let seed = match obj.get("seed").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|x| x as u64))
                .ok_or("`seed` must be an integer")?,
        ),
    };
    Ok(Parsed {
        kind,
        model: obj
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&d.model)
            .to_string(),
        prompt_ids,
        max_tokens,
        temperature,
        n,
        stop,
        stream,
        include_usage: obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        logprobs,
        token_ids: matches!(obj.get("return_token_ids"), Some(Value::Bool(true))),
        seed,
    })
}

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

/// One generated choice.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// Output ids.
    pub ids: Vec<u32>,
    /// Their logprobs.
    pub logprobs: Vec<f32>,
    /// `stop`, `length` or `abort`.
    pub finish: &'static str,
}

/// The text of `ids`, with a trailing stop string removed.
pub fn choice_text(ids: &[u32], stop: &[String], finish: &str) -> String {
    let text: String = ids.iter().map(|&i| token_text(i)).collect();
    if finish == "stop" {
        for s in stop {
            if let Some(t) = text.strip_suffix(s.as_str()) {
                return t.to_string();
            }
        }
    }
    text
}

/// Chat-shaped logprobs.
pub fn chat_logprobs(ids: &[u32], lps: &[f32]) -> Value {
    let content: Vec<Value> = ids
        .iter()
        .zip(lps)
        .map(|(&id, &lp)| {
            let t = token_text(id);
            json!({"token": t, "logprob": lp, "id": id, "bytes": t.as_bytes(), "top_logprobs": []})
        })
        .collect();
    json!({ "content": content })
}

/// Legacy completions logprobs (text starting at `offset`).
pub fn legacy_logprobs(ids: &[u32], lps: &[f32], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(ids.len());
    for &i in ids {
        text_offset.push(offset);
        offset += token_text(i).len();
    }
    json!({
        "tokens": ids.iter().map(|&i| token_text(i)).collect::<Vec<_>>(),
        "token_logprobs": lps,
        "top_logprobs": ids.iter().map(|_| json!({})).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn usage(p: &Parsed, completion: usize) -> Value {
    json!({
        "prompt_tokens": p.prompt_ids.len(),
        "completion_tokens": completion,
        "total_tokens": p.prompt_ids.len() + completion,
    })
}

/// A whole answer.
pub fn whole(p: &Parsed, id: &str, fingerprint: &str, choices: &[Choice]) -> Value {
    let mut total = 0;
    let rendered: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            total += c.ids.len();
            let text = choice_text(&c.ids, &p.stop, c.finish);
            let mut o = Map::new();
            o.insert("index".into(), json!(i));
            match p.kind {
                Kind::Chat => {
                    o.insert(
                        "message".into(),
                        json!({"role": "assistant", "content": text}),
                    );
                    let lp = if p.logprobs {
                        chat_logprobs(&c.ids, &c.logprobs)
                    } else {
                        Value::Null
                    };
                    o.insert("logprobs".into(), lp);
                }
                Kind::Completion => {
                    o.insert("text".into(), json!(text));
                    let lp = if p.logprobs {
                        legacy_logprobs(&c.ids, &c.logprobs, 0)
                    } else {
                        Value::Null
                    };
                    o.insert("logprobs".into(), lp);
                    if p.token_ids {
                        o.insert("prompt_token_ids".into(), json!(p.prompt_ids));
                    }
                }
            }
            o.insert("finish_reason".into(), json!(c.finish));
            if p.token_ids {
                o.insert("token_ids".into(), json!(c.ids));
            }
            Value::Object(o)
        })
        .collect();
    let mut out = json!({
        "id": id,
        "object": if p.kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": now_secs(),
        "model": p.model,
        "system_fingerprint": fingerprint,
        "choices": rendered,
        "usage": usage(p, total),
    });
    if p.token_ids && p.kind == Kind::Chat {
        out["prompt_token_ids"] = json!(p.prompt_ids);
    }
    out
}

/// Builds the chunks of a stream.
pub struct Chunks<'a> {
    /// The request.
    pub p: &'a Parsed,
    /// The completion id.
    pub id: &'a str,
    /// `created`.
    pub created: u64,
    /// The weights' fingerprint.
    pub fingerprint: &'a str,
}

impl Chunks<'_> {
    fn envelope(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": if self.p.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.p.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        })
    }

    /// The opening chunk (chat only): the role, and the prompt ids when asked.
    pub fn opening(&self) -> Option<Value> {
        if self.p.kind != Kind::Chat {
            return None;
        }
        let mut v = self.envelope(json!([{
            "index": 0, "delta": {"role": "assistant", "content": ""},
            "logprobs": null, "finish_reason": null
        }]));
        if self.p.token_ids {
            v["prompt_token_ids"] = json!(self.p.prompt_ids);
        }
        Some(v)
    }

    /// The chunk of token `i` (its text starting at `offset`).
    pub fn token(&self, i: usize, id: u32, lp: f32, offset: usize) -> Value {
        let mut c = Map::new();
        c.insert("index".into(), json!(0));
        match self.p.kind {
            Kind::Chat => {
                c.insert("delta".into(), json!({"content": token_text(id)}));
                let l = if self.p.logprobs {
                    chat_logprobs(&[id], &[lp])
                } else {
                    Value::Null
                };
                c.insert("logprobs".into(), l);
            }
            Kind::Completion => {
                c.insert("text".into(), json!(token_text(id)));
                let l = if self.p.logprobs {
                    legacy_logprobs(&[id], &[lp], offset)
                } else {
                    Value::Null
                };
                c.insert("logprobs".into(), l);
                if self.p.token_ids && i == 0 {
                    c.insert("prompt_token_ids".into(), json!(self.p.prompt_ids));
                }
            }
        }
        c.insert("finish_reason".into(), Value::Null);
        if self.p.token_ids {
            c.insert("token_ids".into(), json!([id]));
        }
        self.envelope(json!([Value::Object(c)]))
    }

    /// The chunk with the finish reason.
    pub fn finish(&self, reason: &str) -> Value {
        let choice = match self.p.kind {
            Kind::Chat => {
                json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason})
            }
            Kind::Completion => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason})
            }
        };
        self.envelope(json!([choice]))
    }

    /// The usage chunk, when asked for.
    pub fn usage(&self, completion: usize) -> Option<Value> {
        self.p.include_usage.then(|| {
            let mut v = self.envelope(json!([]));
            v["usage"] = usage(self.p, completion);
            v
        })
    }
}

/// Encodes text the way prompts are encoded (re-exported for callers building requests).
pub fn encode_text(s: &str) -> Vec<u32> {
    encode(s)
}
