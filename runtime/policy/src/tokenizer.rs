//! The policy's tokenizer: one token per character of a small fixed alphabet.
//!
//! A character-level vocabulary keeps the model tiny (the embedding and output layers are
//! `vocab × d_model`) and makes every token id readable: id `i` is the `i`-th character of
//! [`ALPHABET`], after the two special tokens. Characters outside the alphabet are encoded as
//! `?` rather than refused, so any chat message can be sent; the tasks only use the alphabet.

/// Beginning of a sequence: the first token of every prompt.
pub const BOS: u32 = 0;
/// End of a completion: sampling it finishes the choice with `finish_reason: "stop"`.
pub const EOS: u32 = 1;
/// The characters after the special tokens, in id order (id = 2 + index).
pub const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz0123456789 +=-?:.,";
/// The vocabulary size: the special tokens and the alphabet.
pub const VOCAB: usize = 2 + ALPHABET.len();

/// The id of the `?` that stands for characters outside the alphabet.
fn unknown() -> u32 {
    2 + ALPHABET.find('?').unwrap_or(0) as u32
}

/// Encodes text character by character (unknown characters become `?`; upper case is folded).
pub fn encode(text: &str) -> Vec<u32> {
    text.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            ALPHABET
                .find(c)
                .filter(|_| c.is_ascii())
                .map_or_else(unknown, |i| 2 + i as u32)
        })
        .collect()
}

/// The text of one token (`""` for the special tokens and ids past the vocabulary).
pub fn token_text(id: u32) -> &'static str {
    let i = id as usize;
    if !(2..VOCAB).contains(&i) {
        return "";
    }
    &ALPHABET[i - 2..i - 1]
}

/// Decodes ids into text (special tokens have no text).
pub fn decode(ids: &[u32]) -> String {
    ids.iter().map(|&i| token_text(i)).collect()
}

/// The prompt ids of a text prompt under the fixed chat template: `BOS` then the text.
pub fn prompt_ids(text: &str) -> Vec<u32> {
    let mut ids = Vec::with_capacity(text.len() + 1);
    ids.push(BOS);
    ids.extend(encode(text));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_the_alphabet_round_trips_and_the_rest_becomes_a_question_mark() {
        assert_eq!(decode(&encode("abc 12+3=")), "abc 12+3=");
        assert_eq!(decode(&encode("Ab!")), "ab?");
        assert!(encode("zz").iter().all(|&i| (i as usize) < VOCAB));
        assert_eq!(token_text(EOS), "");
        assert_eq!(prompt_ids("a"), vec![BOS, 2]);
    }
}
