//! The source a diagnostic shows: a bounded, printable excerpt of a manifest, as miette reads it.
//!
//! Handing miette a whole manifest is unsafe for untrusted input: it prints whole lines (10 MB
//! of them, or a `/proc` file), prints control characters raw (terminal escapes), panics when a
//! column passes 65,535 (a `format!` width), prints every line between two labels, and scans
//! the file from its start for every label, so N problems in one file cost N × its size. An
//! `Excerpt` holds only the lines one diagnostic shows, each label's line and one line either
//! side, each cut to `WINDOW` characters around the label (`…` where cut), with control
//! characters escaped and literal passwords blanked; it tells miette the real line and column
//! numbers. Building one costs the size of its window; finding where the labels are (`Spots`)
//! is one pass over a file for all its labels. Pure; no I/O.
//!
//! Lines end at `\n`, `\r\n` or a lone `\r`, as in YAML. Columns count characters.

use std::collections::BTreeMap;
use std::ops::Range;

use miette::{LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

use super::printable;

/// The most characters of one source line a diagnostic shows (an escape counts as printed).
pub const WINDOW: usize = 200;
/// Characters shown before a label whose line is cut.
const BEFORE: usize = 80;
/// A line is shown from its start when its label is at least this many characters from the
/// window's end.
const AFTER: usize = 40;

/// Where a byte offset of a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    /// 0-based line index.
    pub line: usize,
    /// Byte offset where the line starts.
    pub start: usize,
    /// 0-based column, in characters.
    pub column: usize,
    /// Where the line before starts, if there is one.
    pub previous: Option<usize>,
    /// Where the line after starts, if there is one (an empty last line does not count).
    pub next: Option<usize>,
}

/// The spots of some offsets of one text.
#[derive(Debug, Default)]
pub struct Spots {
    /// Sorted by offset, each offset once.
    spots: Vec<(usize, Spot)>,
}

/// The greatest char boundary of `text` at or before `offset` (clamped to its length).
fn boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

impl Spots {
    /// Find every offset in one pass over `text`, stopping after the line of the last one.
    pub fn locate(text: &str, offsets: impl IntoIterator<Item = usize>) -> Self {
        let mut wanted: Vec<usize> = offsets.into_iter().map(|o| boundary(text, o)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let bytes = text.as_bytes();
        let mut spots: Vec<(usize, Spot)> = Vec::with_capacity(wanted.len());
        let mut wanted = wanted.into_iter().peekable();
        let mut here = Spot { line: 0, start: 0, column: 0, previous: None, next: None };
        // Spots from `waiting` on lie on the current line and wait for where the next starts.
        let mut waiting = 0;
        let mut i = 0;
        loop {
            while let Some(offset) = wanted.next_if(|&o| o <= i) {
                spots.push((offset, here));
            }
            if i >= bytes.len() || (wanted.peek().is_none() && waiting == spots.len()) {
                break;
            }
            let width = match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => 2,
                b'\n' | b'\r' => 1,
                byte => {
                    // A char starts at every byte that is not a UTF-8 continuation byte.
                    if byte & 0xC0 != 0x80 {
                        here.column += 1;
                    }
                    i += 1;
                    continue;
                }
            };
            // An offset between `\r` and `\n` is the end of this line.
            while let Some(offset) = wanted.next_if(|&o| o < i + width) {
                spots.push((offset, here));
            }
            let next = i + width;
            for (_, spot) in &mut spots[waiting..] {
                spot.next = (next < bytes.len()).then_some(next);
            }
            waiting = spots.len();
            here =
                Spot { line: here.line + 1, start: next, column: 0, previous: Some(here.start), next: None };
            i = next;
        }
        Self { spots }
    }

    /// Where `offset` is, if it was located.
    pub fn get(&self, text: &str, offset: usize) -> Option<Spot> {
        let offset = boundary(text, offset);
        self.spots.binary_search_by_key(&offset, |(o, _)| *o).ok().map(|i| self.spots[i].1)
    }
}

/// Byte ranges of a text to show as `*`, sorted and disjoint.
#[derive(Debug, Default, Clone)]
pub struct Blanks(Vec<Range<usize>>);

impl Blanks {
    pub fn new(mut ranges: Vec<Range<usize>>) -> Self {
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        Self(merged)
    }

    fn contains(&self, offset: usize) -> bool {
        let after = self.0.partition_point(|r| r.start <= offset);
        after > 0 && offset < self.0[after - 1].end
    }
}

/// A label as the loader places it: a byte span of the file.
#[derive(Debug, Clone)]
pub struct Mark {
    pub offset: usize,
    pub len: usize,
    pub text: Option<String>,
    pub primary: bool,
}

/// One source line as shown: the text, and where each shown character of the file went.
struct Shown {
    text: String,
    /// (byte offset in the file, byte offset in `text`) of each shown character, and of the
    /// end of the shown part.
    map: Vec<(usize, usize)>,
}

impl Shown {
    /// Where a byte offset of the file is in the shown text: offsets before the shown part
    /// go to its start, offsets after it to its end.
    fn place(&self, offset: usize) -> usize {
        let after = self.map.partition_point(|(o, _)| *o <= offset);
        self.map[after.saturating_sub(1)].1
    }
}

/// How many characters `c` takes once escaped.
fn shown_width(c: char) -> usize {
    if printable::is_printable(c) {
        1
    } else {
        let mut s = String::new();
        printable::push_escaped(&mut s, c);
        s.chars().count()
    }
}

/// Whether the characters from `start` to `end` take at most `limit` once shown (stops early).
fn fits_before(
    text: &str,
    start: usize,
    end: usize,
    limit: usize,
    width_at: &dyn Fn(usize, char) -> usize,
) -> bool {
    let mut width = 0;
    for (i, c) in text[start..end].char_indices() {
        width += width_at(start + i, c);
        if width > limit {
            return false;
        }
    }
    true
}

fn is_break(byte: u8) -> bool {
    byte == b'\n' || byte == b'\r'
}

/// The line of `text` starting at `start`, cut to `WINDOW` characters: from its start, or
/// around `focus` when the line is too long to show up to there.
fn show_line(text: &str, start: usize, focus: Option<usize>, blanks: &Blanks) -> Shown {
    let bytes = text.as_bytes();
    let width_at = |i: usize, c: char| if blanks.contains(i) { 1 } else { shown_width(c) };
    let mut from = start;
    if let Some(focus) = focus.filter(|&f| !fits_before(text, start, f, WINDOW - AFTER, &width_at)) {
        // Step back from the label `BEFORE` characters.
        let mut width = 0;
        from = focus;
        while from > start {
            let Some(c) = text[..from].chars().next_back() else { break };
            let w = width_at(from - c.len_utf8(), c);
            if width + w > BEFORE {
                break;
            }
            width += w;
            from -= c.len_utf8();
        }
    }
    let mut shown = Shown { text: String::new(), map: Vec::new() };
    if from > start {
        shown.text.push('…');
    }
    let mut width = 0;
    let mut i = from;
    let mut cut = false;
    while i < bytes.len() && !is_break(bytes[i]) {
        let Some(c) = text[i..].chars().next() else { break };
        let w = width_at(i, c);
        if width + w > WINDOW {
            cut = true;
            break;
        }
        shown.map.push((i, shown.text.len()));
        if blanks.contains(i) {
            shown.text.push('*');
        } else {
            printable::push_escaped(&mut shown.text, c);
        }
        width += w;
        i += c.len_utf8();
    }
    shown.map.push((i, shown.text.len()));
    if cut {
        shown.text.push('…');
    }
    shown
}

/// A run of consecutive source lines in the excerpt.
#[derive(Debug)]
struct Segment {
    /// Bytes of `Excerpt::text`, ending with a `\n`.
    range: Range<usize>,
    /// 0-based index of its first line in the file.
    first_line: usize,
}

/// What miette reads for one diagnostic. See the module documentation.
#[derive(Debug)]
pub struct Excerpt {
    name: String,
    text: String,
    segments: Vec<Segment>,
    /// (offset in `text`, 0-based column in the file) of each label, for the `file:line:col`
    /// that miette prints above a snippet.
    columns: Vec<(usize, usize)>,
}

impl Excerpt {
    /// The excerpt of `text` showing `marks`, and the marks as labels into it. `spots` must
    /// hold the offset of every mark (others are located here, at the cost of a pass).
    pub fn new(
        name: String,
        text: &str,
        blanks: &Blanks,
        spots: &Spots,
        marks: &[Mark],
    ) -> (Self, Vec<LabeledSpan>) {
        let located: Vec<Spot> = marks
            .iter()
            .map(|m| {
                spots.get(text, m.offset).unwrap_or_else(|| {
                    let alone = Spots::locate(text, [m.offset]);
                    alone.get(text, m.offset).unwrap_or(Spot {
                        line: 0,
                        start: 0,
                        column: 0,
                        previous: None,
                        next: None,
                    })
                })
            })
            .collect();
        // Each line to show: where it starts, and the first label on it (if any).
        let mut lines: BTreeMap<usize, (usize, Option<usize>)> = BTreeMap::new();
        for (mark, spot) in marks.iter().zip(&located) {
            let offset = boundary(text, mark.offset);
            let entry = lines.entry(spot.line).or_insert((spot.start, None));
            entry.1 = Some(entry.1.map_or(offset, |o| o.min(offset)));
            if let (Some(previous), Some(line)) = (spot.previous, spot.line.checked_sub(1)) {
                lines.entry(line).or_insert((previous, None));
            }
            if let Some(next) = spot.next {
                lines.entry(spot.line + 1).or_insert((next, None));
            }
        }
        let mut excerpt = Excerpt { name, text: String::new(), segments: Vec::new(), columns: Vec::new() };
        let mut shown_lines: BTreeMap<usize, (usize, Shown)> = BTreeMap::new();
        let mut last_line = None;
        for (&line, &(start, focus)) in &lines {
            let shown = show_line(text, start, focus, blanks);
            let at = excerpt.text.len();
            let end = at + shown.text.len() + 1;
            match excerpt.segments.last_mut() {
                Some(segment) if last_line.map(|l| l + 1) == Some(line) => segment.range.end = end,
                _ => excerpt.segments.push(Segment { range: at..end, first_line: line }),
            }
            last_line = Some(line);
            excerpt.text.push_str(&shown.text);
            excerpt.text.push('\n');
            shown_lines.insert(line, (at, shown));
        }
        let labels = marks
            .iter()
            .zip(&located)
            .map(|(mark, spot)| {
                // Every mark's line is in `lines`, so it was shown above.
                let (at, shown) = &shown_lines[&spot.line];
                let offset = boundary(text, mark.offset);
                let start = at + shown.place(offset);
                let end = at + shown.place(offset.saturating_add(mark.len));
                excerpt.columns.push((start, spot.column));
                let span = (start, end.saturating_sub(start));
                if mark.primary {
                    LabeledSpan::new_primary_with_span(mark.text.clone(), span)
                } else {
                    LabeledSpan::new_with_span(mark.text.clone(), span)
                }
            })
            .collect();
        (excerpt, labels)
    }
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        // A span across two segments would join lines that are not adjacent in the file.
        let segment = self
            .segments
            .iter()
            .find(|s| s.range.contains(&span.offset()) && span.offset() + span.len() <= s.range.end)
            .ok_or(MietteError::OutOfBounds)?;
        let local = SourceSpan::from((span.offset() - segment.range.start, span.len()));
        let inner =
            self.text[segment.range.clone()].read_span(&local, context_lines_before, context_lines_after)?;
        let column =
            self.columns.iter().find(|(o, _)| *o == span.offset()).map_or(inner.column(), |(_, c)| *c);
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            SourceSpan::from((inner.span().offset() + segment.range.start, inner.span().len())),
            inner.line() + segment.first_line,
            column,
            inner.line_count(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spot(text: &str, offset: usize) -> Spot {
        Spots::locate(text, [offset]).get(text, offset).unwrap()
    }

    #[test]
    fn spots_count_lines_at_every_yaml_line_break_and_columns_in_characters() {
        let text = "a\r\nbé: x\rc\n\nd";
        assert_eq!(spot(text, 0), Spot { line: 0, start: 0, column: 0, previous: None, next: Some(3) });
        let x = text.find('x').unwrap();
        assert_eq!(spot(text, x), Spot { line: 1, start: 3, column: 4, previous: Some(0), next: Some(10) });
        let d = text.find('d').unwrap();
        assert_eq!(spot(text, d), Spot { line: 4, start: d, column: 0, previous: Some(d - 1), next: None });
        assert_eq!(spot(text, text.len()).column, 1);
        assert_eq!(spot("a\n", 0).next, None, "an empty last line is not shown");
    }

    #[test]
    fn many_offsets_are_located_in_one_pass() {
        let text = "x\n".repeat(1_000);
        let spots = Spots::locate(&text, (0..1_000).rev().map(|i| i * 2));
        assert_eq!(spots.get(&text, 1_998).unwrap().line, 999);
        assert_eq!(spots.get(&text, 2).unwrap().previous, Some(0));
    }

    fn render(text: &str, marks: &[Mark]) -> (Excerpt, Vec<LabeledSpan>) {
        let spots = Spots::locate(text, marks.iter().map(|m| m.offset));
        Excerpt::new("m.yaml".into(), text, &Blanks::default(), &spots, marks)
    }

    fn mark(offset: usize, len: usize) -> Mark {
        Mark { offset, len, text: Some("here".into()), primary: true }
    }

    #[test]
    fn a_long_line_is_cut_around_the_label_with_ellipses() {
        let text = format!("a: {}X{}\nb: 1\n", "y".repeat(100_000), "z".repeat(100_000));
        let x = text.find('X').unwrap();
        let (excerpt, labels) = render(&text, &[mark(x, 1)]);
        let first = excerpt.text.lines().next().unwrap();
        assert!(first.starts_with('…') && first.ends_with('…'), "{first}");
        assert!(first.chars().count() <= WINDOW + 2, "{}", first.chars().count());
        assert_eq!(&excerpt.text[labels[0].offset()..][..1], "X");
        let contents = excerpt.read_span(labels[0].inner(), 0, 0).unwrap();
        assert_eq!((contents.line(), contents.column()), (0, x));
        assert_eq!(excerpt.text.lines().nth(1), Some("b: 1"));
    }

    #[test]
    fn control_characters_are_escaped_and_labels_follow_them() {
        let text = "a: \"\u{1b}[2J\"\u{7}\tz\n";
        let z = text.find('z').unwrap();
        let (excerpt, labels) = render(text, &[mark(z, 1)]);
        assert_eq!(excerpt.text, "a: \"\\u{1b}[2J\"\\u{7}\\tz\n");
        assert_eq!(&excerpt.text[labels[0].offset()..][..1], "z");
    }

    #[test]
    fn blanked_ranges_print_as_stars() {
        let text = "password: hunter2\n";
        let spots = Spots::locate(text, [10]);
        let blanks = Blanks::new(vec![10..17, 12..14]);
        let (excerpt, _) = Excerpt::new("m".into(), text, &blanks, &spots, &[mark(10, 7)]);
        assert_eq!(excerpt.text, "password: *******\n");
    }

    #[test]
    fn far_apart_labels_are_two_segments_with_their_real_line_numbers() {
        let text: String =
            (1..=100).flat_map(|i| ["line ".to_string(), i.to_string(), "\n".into()]).collect();
        let at = |n: usize| text.find(&format!("line {n}\n")).unwrap();
        let (excerpt, labels) = render(&text, &[mark(at(3), 4), mark(at(90), 4)]);
        assert_eq!(excerpt.text, "line 2\nline 3\nline 4\nline 89\nline 90\nline 91\n");
        assert_eq!(excerpt.segments.len(), 2);
        let far = excerpt.read_span(labels[1].inner(), 1, 1).unwrap();
        assert_eq!(far.line(), 88);
        assert_eq!(std::str::from_utf8(far.data()).unwrap(), "line 89\nline 90\nline 91\n");
        let across = SourceSpan::from((labels[0].offset(), labels[1].offset() - labels[0].offset()));
        assert!(excerpt.read_span(&across, 0, 0).is_err());
    }

    #[test]
    fn labels_past_the_text_or_inside_a_character_are_clamped() {
        let text = "é";
        let (excerpt, labels) = render(text, &[mark(1, 50), mark(99, 0)]);
        assert_eq!(excerpt.text, "é\n");
        assert_eq!((labels[0].offset(), labels[0].len()), (0, 2));
        assert_eq!((labels[1].offset(), labels[1].len()), (2, 0));
    }
}
