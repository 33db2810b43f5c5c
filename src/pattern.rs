//! Allowlist patterns: ARNs and model ids where `*` matches any run of characters.

/// Matches `text` against `pattern`, where `*` stands for any run of characters.
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let Some(first) = pieces.next() else {
        return false;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run_including_none() {
        assert!(matches("a*b*c", "a-b-c"));
        assert!(matches("a*", "a"));
        assert!(!matches("a*bc", "abc-bc-x"));
        assert!(matches("ab*ab", "abab"));
        assert!(!matches("ab*ab", "ab"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }
}
