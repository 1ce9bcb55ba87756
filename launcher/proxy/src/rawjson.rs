//! Editing the top level of a JSON object in its raw bytes, so that everything else reaches the
//! backend byte for byte as the agent wrote it.
//!
//! Why not decode and re-encode: `serde_json::Map` (without the `preserve_order` feature, which
//! would change every map in the workspace) sorts keys, and key order is meaning for an
//! inference server. A JSON schema's `properties` order decides the order in which constrained
//! decoding (xgrammar, outlines, llama.cpp's grammar) makes the model write the fields, and the
//! tool schemas are rendered into the prompt in the order given. So the proxy only *adds* or
//! *replaces* top-level members, splicing the new bytes in, and never touches nested values.
//!
//! The input must already be known to be valid JSON (the caller parses it first); the scanner
//! relies on that and only tracks strings and nesting depth.

use serde_json::Value;

/// One top-level member: its decoded key and the byte range of its value.
#[derive(Debug, Clone)]
struct Member {
    key: String,
    value: std::ops::Range<usize>,
}

/// A top-level JSON object with edits to apply.
#[derive(Debug)]
pub(crate) struct ObjectEdit<'a> {
    raw: &'a [u8],
    members: Vec<Member>,
    /// Byte index of the object's closing `}`.
    close: usize,
    /// (member index, new value) replacements.
    replaced: Vec<(usize, Vec<u8>)>,
    /// Members appended at the end, in order.
    appended: Vec<(String, Vec<u8>)>,
}

impl<'a> ObjectEdit<'a> {
    /// Scans `raw`, which must be valid JSON; `None` if it is not an object.
    pub(crate) fn new(raw: &'a [u8]) -> Option<ObjectEdit<'a>> {
        let mut i = skip_ws(raw, 0);
        if raw.get(i) != Some(&b'{') {
            return None;
        }
        i += 1;
        let mut members = Vec::new();
        loop {
            i = skip_ws(raw, i);
            match raw.get(i)? {
                b'}' => {
                    return Some(ObjectEdit {
                        raw,
                        members,
                        close: i,
                        replaced: Vec::new(),
                        appended: Vec::new(),
                    })
                }
                b',' => {
                    i += 1;
                    continue;
                }
                b'"' => {}
                _ => return None,
            }
            let key_end = string_end(raw, i)?;
            let key: String = serde_json::from_slice(&raw[i..key_end]).ok()?;
            i = skip_ws(raw, key_end);
            if raw.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(raw, i + 1);
            let start = i;
            let end = value_end(raw, i)?;
            members.push(Member {
                key,
                value: start..end,
            });
            i = end;
        }
    }

    /// The decoded value of top-level `key` (the last one, as JSON parsers take it).
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<Value> {
        let m = self.members.iter().rev().find(|m| m.key == key)?;
        serde_json::from_slice(&self.raw[m.value.clone()]).ok()
    }

    /// Sets top-level `key` to `value`: replaces its value in place if present (every copy, so
    /// a duplicated key cannot keep the old value), appends it otherwise.
    pub(crate) fn set(&mut self, key: &str, value: &Value) {
        let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        let idx: Vec<usize> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.key == key)
            .map(|(i, _)| i)
            .collect();
        if idx.is_empty() {
            self.appended.retain(|(k, _)| k != key);
            self.appended.push((key.to_string(), bytes));
        } else {
            for i in idx {
                self.replaced.retain(|(j, _)| *j != i);
                self.replaced.push((i, bytes.clone()));
            }
        }
    }

    /// The edited bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.replaced.is_empty() && self.appended.is_empty() {
            return self.raw.to_vec();
        }
        self.replaced.sort_by_key(|(i, _)| *i);
        let mut out = Vec::with_capacity(self.raw.len() + 64);
        let mut at = 0;
        for (i, bytes) in &self.replaced {
            let r = &self.members[*i].value;
            out.extend_from_slice(&self.raw[at..r.start]);
            out.extend_from_slice(bytes);
            at = r.end;
        }
        // Everything up to the closing brace, then the new members, then the rest.
        out.extend_from_slice(&self.raw[at..self.close]);
        let mut first = self.members.is_empty();
        for (k, v) in &self.appended {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(
                serde_json::to_string(k)
                    .unwrap_or_else(|_| "\"\"".into())
                    .as_bytes(),
            );
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&self.raw[self.close..]);
        out
    }
}

fn skip_ws(raw: &[u8], mut i: usize) -> usize {
    while matches!(raw.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Index just past the string starting at `i` (which is `"`).
fn string_end(raw: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < raw.len() {
        match raw[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Index just past the value starting at `i`.
fn value_end(raw: &[u8], i: usize) -> Option<usize> {
    match raw.get(i)? {
        b'"' => string_end(raw, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < raw.len() {
                match raw[j] {
                    b'"' => {
                        j = string_end(raw, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            let mut j = i;
            while j < raw.len()
                && !matches!(raw[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn appends_and_replaces_only_top_level_members_and_keeps_every_other_byte() {
        let raw = br#"{ "z": {"b": 1, "a": [ "x\"}", 2 ]}, "logprobs" : null ,"m":"v" }"#;
        let mut e = ObjectEdit::new(raw).unwrap();
        assert_eq!(e.get("logprobs"), Some(Value::Null));
        assert_eq!(e.get("z"), Some(json!({"a": ["x\"}", 2], "b": 1})));
        e.set("logprobs", &json!(true));
        e.set("top_logprobs", &json!(1));
        let out = String::from_utf8(e.finish()).unwrap();
        assert_eq!(
            out,
            r#"{ "z": {"b": 1, "a": [ "x\"}", 2 ]}, "logprobs" : true ,"m":"v" ,"top_logprobs":1}"#
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["top_logprobs"], 1);
    }

    #[test]
    fn an_empty_object_and_no_edits() {
        let mut e = ObjectEdit::new(b"{}").unwrap();
        e.set("a", &json!(1));
        assert_eq!(e.finish(), br#"{"a":1}"#);
        let raw = br#"{"b":2,"a":1}"#;
        assert_eq!(ObjectEdit::new(raw).unwrap().finish(), raw.to_vec());
        assert!(ObjectEdit::new(b"[1]").is_none());
    }
}
