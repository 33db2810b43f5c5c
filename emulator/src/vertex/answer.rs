//! The deterministic answer every emulated model gives: text naming the model and quoting the
//! prompt, token counts from words, and the pieces a stream sends it in.

/// How much of the prompt an answer quotes, in characters.
const QUOTED_PROMPT_CHARS: usize = 60;

/// The answer of `model` to `prompt`: `Emulated MODEL answer to: PROMPT`, the prompt clipped to
/// its first 60 characters.
pub(super) fn text(model: &str, prompt: &str) -> String {
    let quoted: String = prompt.chars().take(QUOTED_PROMPT_CHARS).collect();
    format!("Emulated {model} answer to: {quoted}")
}

/// The token count of `texts`: one token per whitespace-separated word.
///
/// Limitation: real tokenizers count sub-word pieces, because the emulator has no model
/// vocabulary; a client must not expect real counts, only consistent ones.
pub(super) fn tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let words: usize = texts
        .into_iter()
        .map(|text| text.split_whitespace().count())
        .sum();
    words as u64
}

/// The billable characters of `texts`: every character but whitespace, as Vertex bills them.
pub(super) fn billable_characters<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let characters: usize = texts
        .into_iter()
        .map(|text| text.chars().filter(|c| !c.is_whitespace()).count())
        .sum();
    characters as u64
}

/// `text` cut into `pieces` consecutive pieces of nearly equal length in characters; some are
/// empty when `text` has fewer characters than `pieces`. At least one piece.
pub(super) fn split(text: &str, pieces: usize) -> Vec<&str> {
    let pieces = pieces.max(1);
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(index, _)| index)
        .chain([text.len()])
        .collect();
    let characters = boundaries.len() - 1;
    (0..pieces)
        .map(|piece| {
            let start = boundaries[piece * characters / pieces];
            let end = boundaries[(piece + 1) * characters / pieces];
            &text[start..end]
        })
        .collect()
}

/// Token counts of one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Usage {
    pub(super) prompt: u64,
    pub(super) answer: u64,
}

impl Usage {
    pub(super) fn total(self) -> u64 {
        self.prompt + self.answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_model_and_quotes_the_prompt_clipped() {
        assert_eq!(
            text("gemini-2.5-flash", "Hello there"),
            "Emulated gemini-2.5-flash answer to: Hello there"
        );
        let long = "é".repeat(100);
        let answer = text("m", &long);
        assert_eq!(answer, format!("Emulated m answer to: {}", "é".repeat(60)));
    }

    #[test]
    fn tokens_are_words_and_billable_characters_skip_whitespace() {
        let texts = ["Hello  there\n", "", "you all"];

        assert_eq!(tokens(texts), 4);
        assert_eq!(billable_characters(texts), 16);
    }

    #[test]
    fn split_pieces_rejoin_into_the_text_on_character_boundaries() {
        let cases = [
            ("abcdefgh", 3, vec!["ab", "cde", "fgh"]),
            ("aé", 1, vec!["aé"]),
            ("aéz", 3, vec!["a", "é", "z"]),
            ("ab", 4, vec!["", "a", "", "b"]),
            ("", 2, vec!["", ""]),
            ("abc", 0, vec!["abc"]),
        ];

        for (text, pieces, expected) in cases {
            let split = split(text, pieces);
            assert_eq!(split, expected, "{text:?} in {pieces}");
            assert_eq!(split.concat(), text);
        }
    }
}
