//! Did-you-mean: the closest known word to a misspelt one. Pure.
//!
//! Bounded for untrusted input: a word longer than `MAX_WORD` characters gets no suggestion,
//! and a candidate is dropped as soon as it is known to be too far (by length, then row by
//! row), so that checking a word costs little however many candidates there are.

/// Words longer than this are not typos of a known word.
const MAX_WORD: usize = 64;

/// The candidate closest to `word` (case-insensitive edit distance), if it is close enough
/// to be a likely typo: at most a third of the word's length, and at least 1 edit allowed.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.chars().nth(MAX_WORD).is_some() {
        return None;
    }
    let word: Vec<char> = word.to_lowercase().chars().collect();
    let limit = (word.len() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| within(&word, &c.to_lowercase(), limit).map(|d| (d, c)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars, if at most `limit`.
fn within(a: &[char], b: &str, limit: usize) -> Option<usize> {
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
        // Every later row is at least this row's least value.
        if row.iter().min().is_some_and(|&least| least > limit) {
            return None;
        }
    }
    Some(row[b.len()]).filter(|&d| d <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_the_intended_word() {
        assert_eq!(closest("frist_name", ["first_name", "last_name"]), Some("first_name"));
        assert_eq!(closest("Acme Bnak", ["Acme Bank", "Globex"]), Some("Acme Bank"));
    }

    #[test]
    fn an_unrelated_word_finds_nothing() {
        assert_eq!(closest("colour", ["email", "company"]), None);
    }

    fn distance(a: &str, b: &str) -> Option<usize> {
        within(&a.chars().collect::<Vec<_>>(), b, usize::MAX)
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("kitten", "sitting"), Some(3));
        assert_eq!(distance("", "abc"), Some(3));
        assert_eq!(distance("same", "same"), Some(0));
        assert_eq!(within(&['k', 'i', 't'], "sitting", 2), None);
    }

    #[test]
    fn long_words_and_far_candidates_are_dropped_early() {
        assert_eq!(closest(&"a".repeat(10_000), ["name"]), None);
        let many: Vec<String> = (0..10_000).map(|i| format!("Company {i:05}")).collect();
        assert_eq!(closest("Company 0042", many.iter().map(String::as_str)), Some("Company 00042"));
    }
}
