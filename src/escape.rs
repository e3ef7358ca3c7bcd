//! Escaping for the media ozform writes to: one function per medium, applied at the point of
//! writing to every value that came from a manifest, a file path or the server.
//!
//! - **Terminal** (`terminal`, and the text plan, messages, diagnostics, log lines): C0 and C1
//!   controls, DEL, and the bidirectional and invisible format characters (`is_safe` lists
//!   them) are shown as `\u{…}` escapes (`\n`, `\r` and `\t` as such), so a value can neither
//!   drive the terminal (retitle, clear, recolour), forge a line, nor read differently from
//!   what it is ("Trojan Source").
//! - **Markdown** (`markdown_code`, `markdown_message`, `html`): a value appears only inside a
//!   code span (or, in the `<summary>` HTML line, inside `<code>` with `& < > "` escaped),
//!   terminal-escaped first so that it holds no line break; so no value can start a block, an
//!   image, a link, a mention or an HTML element, nor close `<details>`.
//! - **JSON** (`JsonFormatter`, `json_pretty`, `json_compact`, `json_line`): `serde_json` already
//!   escapes C0 controls; the other characters `is_safe` refuses are written as `\uXXXX`, so
//!   a JSON reader gets the same string and a terminal showing the file shows no raw control.
//!
//! `quote` is how a message names a value: a `CommonMark` code span whose fence is longer than
//! any backtick run in the value, so that the Markdown renderer can find the values of a
//! message again (`segments`) however many backticks they hold.
//!
//! Pure; no I/O. Every function leaves text with nothing to escape unchanged (borrowed where
//! it can), so plans and messages without such characters are byte for byte what they were.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter, PrettyFormatter, Serializer};

/// Whether `c` may be written as it is, on a terminal, in Markdown (after the Markdown
/// escaping) and in JSON. Not: C0 and C1 controls and DEL (line breaks and tabs included: the
/// writer decides its own layout), the zero-width and direction marks U+200B–U+200F, the
/// bidirectional embeddings, overrides and isolates U+202A–U+202E and U+2066–U+2069, the
/// invisible operators U+2060–U+2064, the byte order mark U+FEFF, the Arabic letter mark U+061C
/// and the line and paragraph separators U+2028, U+2029.
pub fn is_safe(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        ))
}

/// Append `c` to `out` for a terminal: as it is when safe, else `\t`, `\r`, `\n` or `\u{…}`
/// (lower-case hex, as Rust writes it).
pub fn push_terminal(out: &mut String, c: char) {
    match c {
        c if is_safe(c) => out.push(c),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        c => {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// The terminal escaping of `s`: every character `is_safe` refuses as an escape.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if s.chars().all(is_safe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_terminal(&mut out, c);
    }
    Cow::Owned(out)
}

/// `value` as a message names it: a `CommonMark` code span (`Acme` between backticks; a value
/// holding backticks between longer runs, padded), its
/// fence one backtick longer than the longest run in the value, padded with a space where
/// `CommonMark` needs one to read the value back exactly. The value is not escaped here: the
/// medium the message lands in escapes it.
pub fn quote(value: &str) -> String {
    if value.is_empty() {
        // CommonMark has no empty code span; a lone space is the nearest thing it reads back.
        return "` `".to_string();
    }
    let ticks = "`".repeat(longest_backtick_run(value) + 1);
    let all_spaces = value.bytes().all(|b| b == b' ');
    // Padded whenever the value holds a backtick (one at an end would merge with the fence),
    // and when it starts and ends with a space (CommonMark strips one from each side).
    let pad = value.contains('`') || (value.starts_with(' ') && value.ends_with(' ') && !all_spaces);
    if pad { format!("{ticks} {value} {ticks}") } else { format!("{ticks}{value}{ticks}") }
}

/// The length of the longest run of backticks in `s`.
pub fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// A piece of a message: the text around values, or a value (the content of a code span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    Code(&'a str),
}

/// A message split as `CommonMark` splits code spans: a run of n backticks opens a span that
/// the next run of exactly n backticks closes (one padding space stripped from each side when
/// both are there); a run that nothing closes is text. So `quote` is read back exactly.
pub fn segments(message: &str) -> Vec<Segment<'_>> {
    let bytes = message.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut out = Vec::new();
    let (mut text_start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let open = run_at(i);
        let mut j = i + open;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let run = run_at(j);
                if run == open {
                    close = Some(j);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                if text_start < i {
                    out.push(Segment::Text(&message[text_start..i]));
                }
                let mut code = &message[i + open..j];
                if code.len() >= 2
                    && code.starts_with(' ')
                    && code.ends_with(' ')
                    && !code.bytes().all(|b| b == b' ')
                {
                    code = &code[1..code.len() - 1];
                }
                out.push(Segment::Code(code));
                i = j + open;
                text_start = i;
            }
            None => i += open,
        }
    }
    if text_start < bytes.len() {
        out.push(Segment::Text(&message[text_start..]));
    }
    out
}

/// A value as Markdown: a code span of its terminal escaping, so it holds no line break and
/// nothing in it is read as Markdown, HTML, a link or a mention.
pub fn markdown_code(value: &str) -> String {
    quote(&terminal(value))
}

/// A message (text with values quoted by `quote`) as Markdown: each value as a code span
/// (`markdown_code`), the text between as it is when it is plain words and punctuation that
/// Markdown reads as text, else as a code span too. A saved plan is untrusted: its messages
/// may hold anything, and then they are shown, never interpreted.
pub fn markdown_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    // Two code spans side by side would read as one run of backticks: a space between them.
    let push_code = |out: &mut String, code: &str| {
        if out.ends_with('`') {
            out.push(' ');
        }
        out.push_str(code);
    };
    for segment in segments(message) {
        match segment {
            Segment::Code(value) => push_code(&mut out, &markdown_code(value)),
            Segment::Text(text) if is_plain_markdown(text) => out.push_str(text),
            Segment::Text(text) => {
                // The spaces around the words stay outside the code span, as they read (a text
                // of spaces alone is plain).
                let inner = text.trim_matches(' ');
                let lead = text.len() - text.trim_start_matches(' ').len();
                out.push_str(&text[..lead]);
                push_code(&mut out, &markdown_code(inner));
                out.push_str(&text[lead + inner.len()..]);
            }
        }
    }
    out
}

/// Text that Markdown (GitHub's, with its autolinks, mentions and references) shows as it is
/// when it does not start a line: ASCII letters, digits, spaces and `,.;:()'-`, and no `www.`
/// (an autolink). No `<`, `[`, `!`, `*`, `_`, `` ` ``, `@`, `#`, `&`, `\`, `|`, `/`, `~`.
fn is_plain_markdown(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, ' ' | ',' | '.' | ';' | ':' | '(' | ')' | '\'' | '-')
    }) && !text.to_ascii_lowercase().contains("www.")
}

/// Text for HTML content (the `<summary>` line of the Markdown plan): terminal-escaped (so it
/// holds no line break, which would end the HTML block), then `&`, `<`, `>` and `"` as
/// entities.
pub fn html(s: &str) -> String {
    let escaped = terminal(s);
    let mut out = String::with_capacity(escaped.len() + 8);
    for c in escaped.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A `serde_json` formatter that writes the characters `is_safe` refuses as `\uXXXX` (`serde_json`
/// itself escapes only C0 controls, `"` and `\`), around another formatter (pretty or
/// compact) that lays the JSON out. Strings without such characters are written exactly as
/// the inner formatter writes them.
#[derive(Debug, Clone, Default)]
pub struct JsonFormatter<F>(pub F);

impl<F: Formatter> Formatter for JsonFormatter<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if !is_safe(c) {
                self.0.write_string_fragment(w, &fragment[start..i])?;
                // Every character `is_safe` refuses is in the Basic Multilingual Plane.
                write!(w, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        self.0.write_string_fragment(w, &fragment[start..])
    }

    // Everything else is the inner formatter's.
    fn write_null<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.write_null(w)
    }
    fn write_bool<W: ?Sized + io::Write>(&mut self, w: &mut W, v: bool) -> io::Result<()> {
        self.0.write_bool(w, v)
    }
    fn write_i8<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i8) -> io::Result<()> {
        self.0.write_i8(w, v)
    }
    fn write_i16<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i16) -> io::Result<()> {
        self.0.write_i16(w, v)
    }
    fn write_i32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i32) -> io::Result<()> {
        self.0.write_i32(w, v)
    }
    fn write_i64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i64) -> io::Result<()> {
        self.0.write_i64(w, v)
    }
    fn write_i128<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i128) -> io::Result<()> {
        self.0.write_i128(w, v)
    }
    fn write_u8<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u8) -> io::Result<()> {
        self.0.write_u8(w, v)
    }
    fn write_u16<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u16) -> io::Result<()> {
        self.0.write_u16(w, v)
    }
    fn write_u32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u32) -> io::Result<()> {
        self.0.write_u32(w, v)
    }
    fn write_u64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u64) -> io::Result<()> {
        self.0.write_u64(w, v)
    }
    fn write_u128<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u128) -> io::Result<()> {
        self.0.write_u128(w, v)
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f32) -> io::Result<()> {
        self.0.write_f32(w, v)
    }
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f64) -> io::Result<()> {
        self.0.write_f64(w, v)
    }
    fn write_number_str<W: ?Sized + io::Write>(&mut self, w: &mut W, v: &str) -> io::Result<()> {
        self.0.write_number_str(w, v)
    }
    fn begin_string<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_string(w)
    }
    fn end_string<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_string(w)
    }
    fn write_char_escape<W: ?Sized + io::Write>(&mut self, w: &mut W, e: CharEscape) -> io::Result<()> {
        self.0.write_char_escape(w, e)
    }
    fn write_byte_array<W: ?Sized + io::Write>(&mut self, w: &mut W, v: &[u8]) -> io::Result<()> {
        self.0.write_byte_array(w, v)
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
    fn write_raw_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        self.0.write_raw_fragment(w, fragment)
    }
}

fn to_string_with<T: Serialize + ?Sized, F: Formatter>(
    value: &T,
    formatter: F,
) -> serde_json::Result<String> {
    let mut bytes = Vec::with_capacity(128);
    value.serialize(&mut Serializer::with_formatter(&mut bytes, JsonFormatter(formatter)))?;
    // `serde_json` writes UTF-8 only, and the escapes added are ASCII.
    String::from_utf8(bytes).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// `value` as pretty JSON (two-space indent, as `serde_json::to_string_pretty`), escaped.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    to_string_with(value, PrettyFormatter::new())
}

/// `value` as compact JSON (one line, as `serde_json::to_string`), escaped.
pub fn json_compact<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    to_string_with(value, CompactFormatter)
}

/// A JSON text that another serializer wrote (`tracing`'s JSON log lines, through `serde_json`)
/// with the characters `is_safe` refuses as `\uXXXX`, line breaks but a final one excepted
/// (a JSON writer never leaves those raw inside strings). Outside strings JSON holds only
/// ASCII, so every character changed is inside a string, and the result is the same JSON.
pub fn json_line(text: &str) -> Cow<'_, str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.chars().all(|c| is_safe(c) || matches!(c, '\n' | '\r' | '\t')) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in body.chars() {
        if is_safe(c) || matches!(c, '\n' | '\r' | '\t') {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
    }
    out.push_str(&text[body.len()..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// One of each kind of character every medium must escape.
    const HOSTILE: &str = "a\u{0}b\u{7}c\u{1b}[31md\u{7f}e\u{85}f\u{9b}g\u{200b}h\u{200d}i\u{202e}j\u{2066}k\u{2064}l\u{feff}m\n";

    #[test]
    fn the_terminal_sees_escapes_for_controls_bidi_and_invisible_characters() {
        assert_eq!(
            terminal(HOSTILE),
            "a\\u{0}b\\u{7}c\\u{1b}[31md\\u{7f}e\\u{85}f\\u{9b}g\\u{200b}h\\u{200d}i\\u{202e}j\\u{2066}k\\u{2064}l\\u{feff}m\\n"
        );
        assert!(matches!(terminal("Acme Bank é 東京 🙂"), Cow::Borrowed(_)));
        assert!(terminal(HOSTILE).chars().all(is_safe));
    }

    /// Every character the issue names: C0 and C1 controls, DEL, U+200B–U+200F,
    /// U+202A–U+202E, U+2060–U+2064, U+2066–U+2069 and U+FEFF.
    fn every_unsafe_character() -> Vec<char> {
        let ranges = [
            (0x00, 0x1f),
            (0x7f, 0x9f),
            (0x200b, 0x200f),
            (0x202a, 0x202e),
            (0x2060, 0x2064),
            (0x2066, 0x2069),
            (0xfeff, 0xfeff),
        ];
        ranges.iter().flat_map(|&(a, b)| (a..=b).filter_map(char::from_u32)).collect()
    }

    #[test]
    fn every_character_of_every_class_is_escaped_in_every_medium() {
        for c in every_unsafe_character() {
            let value = format!("a{c}b");
            assert!(!is_safe(c), "{c:?}");
            assert!(!terminal(&value).contains(c), "terminal: {c:?}");
            assert!(!markdown_code(&value).contains(c), "markdown: {c:?}");
            assert!(!markdown_message(&value).contains(c), "markdown message: {c:?}");
            assert!(!html(&value).contains(c), "html: {c:?}");
            let json = json_compact(&value).unwrap();
            assert!(json.is_ascii() && !json.chars().any(char::is_control), "json: {c:?} as {json}");
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), value);
            let line = json_line(&format!("{}\n", serde_json::to_string(&value).unwrap())).into_owned();
            assert!(!line.trim_end_matches('\n').chars().any(|x| x == c), "json line: {c:?}");
        }
        for c in ['a', 'é', ' ', '東', '🙂', '\u{200a}', '\u{2065}', '\u{206a}', '\u{a0}'] {
            assert!(is_safe(c), "{c:?}");
        }
    }

    #[test]
    fn a_quoted_value_reads_back_exactly_whatever_backticks_and_spaces_it_holds() {
        for value in
            ["Acme", "a`b", "``", "`x", "x`", " a ", "   ", " ", "a ``` b", "`` ` ``", "x` ![p](u) `y"]
        {
            let quoted = quote(value);
            assert_eq!(segments(&quoted), [Segment::Code(value)], "{value:?} quoted as {quoted:?}");
            let message = format!("company {quoted} prunes");
            assert_eq!(
                segments(&message),
                [Segment::Text("company "), Segment::Code(value), Segment::Text(" prunes")],
                "{message:?}"
            );
        }
        assert_eq!(quote("Acme"), "`Acme`");
        assert_eq!(quote("a`b"), "`` a`b ``");
        assert_eq!(quote("`x"), "`` `x ``");
    }

    #[test]
    fn unmatched_backticks_are_text() {
        assert_eq!(segments("a `b"), [Segment::Text("a `b")]);
        assert_eq!(segments("a ``b` c"), [Segment::Text("a ``b` c")]);
        assert_eq!(segments("``a`` `b"), [Segment::Code("a"), Segment::Text(" `b")]);
    }

    #[test]
    fn markdown_shows_values_only_in_code_spans() {
        let message =
            format!("company {} prunes", quote("x\n\n![p](https://evil.example/p.png) cc @someone\n\n"));
        assert_eq!(
            markdown_message(&message),
            "company `x\\n\\n![p](https://evil.example/p.png) cc @someone\\n\\n` prunes"
        );
        // Text around values that is not plain (a tampered plan) is shown as code too.
        assert_eq!(markdown_message("see <img src=x> now"), "`see <img src=x> now`");
        assert_eq!(markdown_message("go to www.evil.example"), "`go to www.evil.example`");
        assert_eq!(markdown_message("cc @someone"), "`cc @someone`");
        assert_eq!(markdown_message("plain words (ids 1, 2); fine"), "plain words (ids 1, 2); fine");
        // Spans side by side stay apart; the spaces around text shown as code stay outside it.
        assert_eq!(markdown_message("`a` from {env: X}, but `b`"), "`a` `from {env: X}, but` `b`");
        assert_eq!(markdown_message("`a`{x}`b`"), "`a` `{x}` `b`");
    }

    #[test]
    fn html_content_holds_no_tag_and_no_line_break() {
        assert_eq!(
            html("</details>\n<img src=\"x\">&"),
            "&lt;/details&gt;\\n&lt;img src=&quot;x&quot;&gt;&amp;"
        );
    }

    #[test]
    fn json_escapes_what_serde_json_leaves_raw_and_reads_back_the_same_string() {
        let value = json!({"k\u{202e}": HOSTILE, "n": 1.5, "list": [true, null]});
        for text in [json_pretty(&value).unwrap(), json_compact(&value).unwrap()] {
            assert!(text.chars().all(|c| c.is_ascii() && (!c.is_control() || c == '\n')), "{text}");
            assert!(
                text.contains("\\u202e") && text.contains("\\u001b") && text.contains("\\ufeff"),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), value);
        }
        let plain = json!({"name": "Acme Bank é", "xs": [1, 2]});
        assert_eq!(json_pretty(&plain).unwrap(), serde_json::to_string_pretty(&plain).unwrap());
        assert_eq!(json_compact(&plain).unwrap(), serde_json::to_string(&plain).unwrap());
    }

    #[test]
    fn a_json_line_of_another_writer_is_escaped_and_keeps_its_final_line_break() {
        let raw = format!("{}\n", serde_json::to_string(&json!({"message": HOSTILE})).unwrap());
        let line = json_line(&raw);
        assert!(line.ends_with("}\n") && !line[..line.len() - 1].contains('\n'), "{line}");
        assert!(line.is_ascii(), "{line}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            serde_json::from_str::<serde_json::Value>(&raw).unwrap()
        );
        assert!(matches!(json_line("{\"a\":\"é\"}\n"), Cow::Borrowed(_)));
    }
}
