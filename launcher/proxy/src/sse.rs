//! Splitting a server-sent-event byte stream into events as the bytes arrive.
//!
//! The backend's chunks need not line up with events: one read may hold half an event or
//! several. The splitter buffers only the unfinished tail, hands back each complete event with
//! its raw bytes (to pass through unchanged) and its `data:` payload (to record), and refuses an
//! event that grows past a bound instead of buffering without limit.

use bytes::{Bytes, BytesMut};

/// One complete event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// The event's bytes including its terminating blank line.
    pub(crate) raw: Bytes,
    /// The `data:` lines joined with `\n`, if the event has any.
    pub(crate) data: Option<String>,
}

/// An event longer than the bound.
#[derive(Debug)]
pub(crate) struct EventTooLong {
    pub(crate) limit: usize,
}

/// Incremental SSE splitter.
#[derive(Debug)]
pub(crate) struct Splitter {
    buf: BytesMut,
    /// Bytes of `buf` already scanned for a terminator.
    scanned: usize,
    limit: usize,
}

impl Splitter {
    pub(crate) fn new(limit: usize) -> Splitter {
        Splitter {
            buf: BytesMut::new(),
            scanned: 0,
            limit,
        }
    }

    /// Adds bytes; returns the events they complete.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLong> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.find_event_end() {
            let raw = self.buf.split_to(end).freeze();
            self.scanned = 0;
            events.push(Event {
                data: data_of(&raw),
                raw,
            });
        }
        if self.buf.len() > self.limit {
            return Err(EventTooLong { limit: self.limit });
        }
        Ok(events)
    }

    /// Bytes left over that do not form a complete event.
    #[cfg(test)]
    pub(crate) fn remainder(&self) -> &[u8] {
        &self.buf
    }

    /// The index just past the blank line that ends the first event, if it has arrived.
    fn find_event_end(&mut self) -> Option<usize> {
        // A blank line is "\n\n", "\n\r\n", "\r\n\r\n" or "\r\r"; scan for a line feed or
        // carriage return followed by a line terminator.
        let b = &self.buf[..];
        let mut i = self.scanned.saturating_sub(3);
        while i < b.len() {
            let c = b[i];
            if c == b'\n' || c == b'\r' {
                // End of this line: skip "\r\n" as one terminator.
                let mut j = i + 1;
                if c == b'\r' && j < b.len() && b[j] == b'\n' {
                    j += 1;
                } else if c == b'\r' && j == b.len() {
                    // "\r" at the end: could be the start of "\r\n"; wait for more.
                    break;
                }
                // Is the next line empty?
                if j < b.len() && b[j] == b'\n' {
                    return Some(j + 1);
                }
                if j < b.len() && b[j] == b'\r' {
                    if j + 1 < b.len() {
                        return Some(if b[j + 1] == b'\n' { j + 2 } else { j + 1 });
                    }
                    break;
                }
                i = j;
            } else {
                i += 1;
            }
        }
        self.scanned = b.len();
        None
    }
}

fn data_of(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => data = Some(rest.to_string()),
            }
        }
    }
    data
}

/// Formats a payload as one `data:` event.
pub(crate) fn data_event(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datas(events: &[Event]) -> Vec<Option<&str>> {
        events.iter().map(|e| e.data.as_deref()).collect()
    }

    #[test]
    fn events_split_across_and_within_chunks() {
        let mut s = Splitter::new(1024);
        assert!(s.push(b"data: {\"a\"").unwrap().is_empty());
        assert!(s.push(b":1}\n").unwrap().is_empty());
        let ev = s
            .push(b"\ndata: x\n\ndata: [DONE]\n\n: keepalive\n\n")
            .unwrap();
        assert_eq!(
            datas(&ev),
            vec![Some("{\"a\":1}"), Some("x"), Some("[DONE]"), None]
        );
        assert_eq!(&ev[0].raw[..], b"data: {\"a\":1}\n\n");
        assert!(s.remainder().is_empty());
    }

    #[test]
    fn crlf_and_multiline_data() {
        let mut s = Splitter::new(1024);
        let ev = s.push(b"data: a\r\ndata: b\r\n\r").unwrap();
        assert!(ev.is_empty(), "a lone CR at the end may be half of CRLF");
        let ev = s.push(b"\nevent: x\rdata:c\r\r\n").unwrap();
        assert_eq!(datas(&ev), vec![Some("a\nb"), Some("c")]);
    }

    #[test]
    fn byte_by_byte_gives_the_same_events() {
        let input = b"data: 1\n\ndata: 2\r\n\r\ndata: 3\n\n";
        let mut s = Splitter::new(1024);
        let mut all = Vec::new();
        for b in input {
            all.extend(s.push(&[*b]).unwrap());
        }
        assert_eq!(datas(&all), vec![Some("1"), Some("2"), Some("3")]);
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut s = Splitter::new(16);
        assert!(s.push(&[b'x'; 17]).is_err());
    }
}
