//! Building the mock's answers in the OpenAI shapes, plus the token-id fields vLLM adds.
//!
//! Per choice: `logprobs.content[{token, logprob, bytes, top_logprobs}]` (chat) or the legacy
//! `logprobs{tokens, token_logprobs, top_logprobs, text_offset}` (completions), and, when the
//! request has `"return_token_ids": true`, vLLM's `token_ids` per choice and `prompt_token_ids`
//! (top level for chat, per choice for completions, as vLLM places them).

use serde_json::{json, Map, Value};

use crate::request::{Kind, Parsed};
use crate::tokenizer::Sampled;

/// Seconds since the epoch, for `created`.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn finish_reason(p: &Parsed) -> &'static str {
    if p.max_tokens_given {
        "length"
    } else {
        "stop"
    }
}

/// Chat-shaped logprobs for `tokens`.
pub(crate) fn chat_logprobs(tokens: &[Sampled]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(_, text, lp)| json!({"token": text, "logprob": lp, "bytes": text.as_bytes()}))
                .collect();
            json!({"token": t.text, "logprob": t.logprob, "bytes": t.text.as_bytes(), "top_logprobs": top})
        })
        .collect();
    json!({ "content": content })
}

/// Legacy completions logprobs for `tokens`, whose text starts at `offset`.
pub(crate) fn legacy_logprobs(tokens: &[Sampled], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    for t in tokens {
        text_offset.push(offset);
        offset += t.text.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            let mut m = Map::new();
            m.insert(t.text.clone(), json!(t.logprob));
            for (_, text, lp) in &t.top {
                m.entry(text.clone()).or_insert(json!(lp));
            }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

fn usage(p: &Parsed, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": p.prompt_ids.len(),
        "completion_tokens": completion_tokens,
        "total_tokens": p.prompt_ids.len() + completion_tokens,
    })
}

/// A whole (non-streamed) answer with one choice per entry of `choices`, finished with
/// `finish` (`None`: the usual reason) and carrying `fingerprint` as `system_fingerprint`.
pub(crate) fn whole(
    p: &Parsed,
    id: &str,
    choices: &[Vec<Sampled>],
    finish: Option<&str>,
    fingerprint: &str,
) -> Value {
    let mut total = 0;
    let rendered: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, tokens)| {
            total += tokens.len();
            let text: String = tokens.iter().map(|t| t.text.as_str()).collect();
            let mut c = Map::new();
            c.insert("index".into(), json!(i));
            match p.kind {
                Kind::Chat => {
                    c.insert(
                        "message".into(),
                        json!({"role": "assistant", "content": text}),
                    );
                    let lp = if p.logprobs {
                        chat_logprobs(tokens)
                    } else {
                        Value::Null
                    };
                    c.insert("logprobs".into(), lp);
                }
                Kind::Completion => {
                    c.insert("text".into(), json!(text));
                    let lp = if p.logprobs {
                        legacy_logprobs(tokens, 0)
                    } else {
                        Value::Null
                    };
                    c.insert("logprobs".into(), lp);
                    if p.token_ids {
                        c.insert("prompt_token_ids".into(), json!(p.prompt_ids));
                    }
                }
            }
            c.insert(
                "finish_reason".into(),
                json!(finish.unwrap_or(finish_reason(p))),
            );
            if p.token_ids {
                c.insert(
                    "token_ids".into(),
                    json!(tokens.iter().map(|t| t.id).collect::<Vec<_>>()),
                );
            }
            Value::Object(c)
        })
        .collect();
    let mut out = json!({
        "id": id,
        "object": if p.kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": now_secs(),
        "model": p.model,
        "choices": rendered,
        "usage": usage(p, total),
        "system_fingerprint": fingerprint,
    });
    if p.token_ids && p.kind == Kind::Chat {
        out["prompt_token_ids"] = json!(p.prompt_ids);
    }
    out
}

/// Stream chunks: what the generator sends, in order.
pub(crate) struct Chunks<'a> {
    pub(crate) p: &'a Parsed,
    pub(crate) id: &'a str,
    pub(crate) created: u64,
    /// `system_fingerprint` of every chunk: the weights that generate this stream.
    pub(crate) fingerprint: &'a str,
}

impl Chunks<'_> {
    fn envelope(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": if self.p.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.p.model,
            "choices": choices,
            "system_fingerprint": self.fingerprint,
        })
    }

    /// The opening chunk (chat only): the role, and the prompt ids when asked.
    pub(crate) fn opening(&self) -> Option<Value> {
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

    /// The chunk carrying token `i` (whose text starts at `offset` of the output).
    pub(crate) fn token(&self, i: usize, t: &Sampled, offset: usize) -> Value {
        let one = std::slice::from_ref(t);
        let mut c = Map::new();
        c.insert("index".into(), json!(0));
        match self.p.kind {
            Kind::Chat => {
                c.insert("delta".into(), json!({"content": t.text}));
                let lp = if self.p.logprobs {
                    chat_logprobs(one)
                } else {
                    Value::Null
                };
                c.insert("logprobs".into(), lp);
            }
            Kind::Completion => {
                c.insert("text".into(), json!(t.text));
                let lp = if self.p.logprobs {
                    legacy_logprobs(one, offset)
                } else {
                    Value::Null
                };
                c.insert("logprobs".into(), lp);
                if self.p.token_ids && i == 0 {
                    c.insert("prompt_token_ids".into(), json!(self.p.prompt_ids));
                }
            }
        }
        c.insert("finish_reason".into(), Value::Null);
        if self.p.token_ids {
            c.insert("token_ids".into(), json!([t.id]));
        }
        self.envelope(json!([Value::Object(c)]))
    }

    /// The chunk with the finish reason (`None`: the usual one).
    pub(crate) fn finish(&self, reason: Option<&str>) -> Value {
        let reason = reason.unwrap_or(finish_reason(self.p));
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

    /// The usage chunk, when `stream_options.include_usage` was set.
    pub(crate) fn usage(&self, completion_tokens: usize) -> Option<Value> {
        self.p.include_usage.then(|| {
            let mut v = self.envelope(json!([]));
            v["usage"] = usage(self.p, completion_tokens);
            v
        })
    }
}
