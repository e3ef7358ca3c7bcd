//! Text from a manifest made safe to print on a terminal: control characters escaped, long
//! values clipped.
//!
//! Manifests are untrusted input, and every diagnostic quotes them: a name, a key, a path, a
//! line of source. A raw ESC can retitle the terminal, clear it, or forge a line of output;
//! bidirectional overrides can make text read differently from what it is. Every piece of a
//! manifest (or of its file name) that a diagnostic shows goes through `escape`, and every
//! value named in a message through `clip`. The rule is the crate's one terminal escaping
//! (`crate::escape`), so diagnostics and plans escape the same characters the same way. Pure.

use std::borrow::Cow;

/// How many characters of a value a message quotes before cutting it with `…`.
pub const VALUE_CHARS: usize = 80;

/// Whether `c` may be printed as it is: the crate's one terminal rule (`escape::is_safe`).
/// Not: C0 and C1 controls and DEL (tab and newline included: a diagnostic decides its own
/// layout), the bidirectional controls of "Trojan Source", zero-width and invisible format
/// characters, line and paragraph separators and the byte order mark.
pub fn is_printable(c: char) -> bool {
    crate::escape::is_safe(c)
}

/// Append `c` to `out`, escaped as `\t`, `\r`, `\n` or `\u{1b}` unless printable
/// (`escape::push_terminal`).
pub fn push_escaped(out: &mut String, c: char) {
    crate::escape::push_terminal(out, c);
}

/// `s` with every character that is not printable escaped (`escape::terminal`).
pub fn escape(s: &str) -> Cow<'_, str> {
    crate::escape::terminal(s)
}

/// `s` escaped and cut to at most `max` characters of the original, with `…` where cut.
pub fn clip(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4) + 3);
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// A manifest value as a message quotes it: escaped and clipped to `VALUE_CHARS`.
pub fn value(s: &str) -> String {
    clip(s, VALUE_CHARS)
}

/// A path as a message names it: escaped (file names may hold any byte but `/` and NUL).
pub fn path(p: &std::path::Path) -> String {
    escape(&p.display().to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_and_bidi_controls_are_escaped_and_text_is_kept() {
        assert_eq!(escape("\u{1b}]0;owned\u{7}\u{1b}[2J"), "\\u{1b}]0;owned\\u{7}\\u{1b}[2J");
        assert_eq!(escape("a\tb\r\nc\u{85}d\u{202e}e\u{7f}"), "a\\tb\\r\\nc\\u{85}d\\u{202e}e\\u{7f}");
        assert!(matches!(escape("Acme Bank é 東京"), Cow::Borrowed("Acme Bank é 東京")));
    }

    #[test]
    fn clipping_counts_characters_and_marks_the_cut() {
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("ééé\u{1b}", 4), "ééé\\u{1b}");
        assert_eq!(value(&"x".repeat(1_000)).chars().count(), VALUE_CHARS + 1);
    }
}
