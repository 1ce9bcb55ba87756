//! Port placeholders in command lines and environment values.
//!
//! Ports are allocated by the node when a worker is placed, after the user wrote the command, so
//! the command names them symbolically: `{port}` is the first allocated port, `{portN}` the
//! N-th (from 0). A placeholder whose index has no port is an error at launch time, not a
//! server that silently binds the literal string. Any other `{...}` text (JSON arguments, shell
//! syntax) is left alone.

use thiserror::Error;

/// A `{portN}` placeholder names a port index that was not allocated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "placeholder `{placeholder}` in `{text}` needs port index {index}, but only {available} \
     port(s) were allocated; ask for more ports (port count) or fix the command"
)]
pub struct PlaceholderError {
    /// The placeholder as written, e.g. `{port2}`.
    pub placeholder: String,
    /// The port index it asks for.
    pub index: usize,
    /// How many ports were given.
    pub available: usize,
    /// The argument or value that contained it.
    pub text: String,
}

/// Replaces `{port}` with `ports[0]` and `{portN}` with `ports[N]` in `text`.
///
/// Pure: no I/O. Other brace-delimited text is copied unchanged.
pub fn fill_placeholders(text: &str, ports: &[u16]) -> Result<String, PlaceholderError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{port") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{port".len()..];
        let digits_len = after.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, tail) = after.split_at(digits_len);
        if let Some(tail) = tail.strip_prefix('}') {
            let placeholder = &rest[start..start + "{port".len() + digits_len + 1];
            let index = if digits.is_empty() {
                Some(0)
            } else {
                digits.parse::<usize>().ok()
            };
            match index.and_then(|i| ports.get(i).map(|p| (i, p))) {
                Some((_, port)) => out.push_str(&port.to_string()),
                None => {
                    return Err(PlaceholderError {
                        placeholder: placeholder.to_string(),
                        index: index.unwrap_or(usize::MAX),
                        available: ports.len(),
                        text: text.to_string(),
                    })
                }
            }
            rest = tail;
        } else {
            // Not a placeholder (e.g. `{port_count}`): copy `{port` and carry on after it.
            out.push_str("{port");
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_port_and_indexed_ports() {
        let ports = [9000, 9001, 9002];
        assert_eq!(fill_placeholders("{port}", &ports).unwrap(), "9000");
        assert_eq!(fill_placeholders("{port0}", &ports).unwrap(), "9000");
        assert_eq!(
            fill_placeholders("--a={port1} --b={port2}/{port}", &ports).unwrap(),
            "--a=9001 --b=9002/9000"
        );
    }

    #[test]
    fn leaves_other_braces_alone() {
        let ports = [1];
        for text in [
            "{\"a\": 1}",
            "{port_count}",
            "{portx}",
            "{port",
            "port}",
            "{}",
            "",
        ] {
            assert_eq!(fill_placeholders(text, &ports).unwrap(), text);
        }
        assert_eq!(
            fill_placeholders("{port_count}{port}", &ports).unwrap(),
            "{port_count}1"
        );
    }

    #[test]
    fn missing_port_index_is_an_error_naming_it() {
        let err = fill_placeholders("--x={port3}", &[1, 2]).unwrap_err();
        assert_eq!(err.placeholder, "{port3}");
        assert_eq!(err.index, 3);
        assert_eq!(err.available, 2);
        assert!(err.to_string().contains("--x={port3}"), "{err}");
        let err = fill_placeholders("{port}", &[]).unwrap_err();
        assert_eq!((err.index, err.available), (0, 0));
    }

    #[test]
    fn absurd_index_is_an_error_not_a_panic() {
        let err = fill_placeholders("{port99999999999999999999999}", &[1]).unwrap_err();
        assert_eq!(err.index, usize::MAX);
    }
}
