//! Redaction: find secrets in text, in every form a server or a log line may show them, and
//! replace each matched run with `(sensitive)`.
//!
//! Two ways in, one matcher:
//! - `redact(text, secrets)`, request-scoped: for a message built from a server's answer. The
//!   secrets of that request (its passwords and tokens, the admin password, the session tokens)
//!   are matched exactly, whatever their length, and the registered ones as well.
//! - `scrub(text)`, process-wide: `output` runs everything it writes through it. Every
//!   `secret::Secret` registers its value when it is created (`register`), so nothing can
//!   forget. A value stays registered while a `Secret` holds it, and after its last one is
//!   dropped (`release`) it is still matched among the most recently released ones, since a
//!   string built from a secret may outlive it: within `RETAINED_CHARS` characters, oldest
//!   forgotten first. So the registry is bounded by what the process holds now plus that tail,
//!   and a loop that runs for weeks (`reconcile`, a new token each cycle) does not grow it.
//!
//! Forms. The text is read through a decoder that turns each escape into the character it
//! stands for and remembers the bytes it came from: JSON escapes (`\"`, `\\`, `\/`, `\n`, …,
//! `\uXXXX` in either case of hex, surrogate pairs joined) and percent-encoding (`%XX` in either
//! case, multi-byte UTF-8 sequences joined, a lone byte read as Latin-1). `+` and a space are
//! one character to the matcher (form encoding writes a space as `+`), in secrets and in text.
//! An encoder leaves some characters raw, and a raw echo leaves all of them raw, so a secret is
//! looked for in each way its own characters can decode: as it is (a fully escaped echo
//! decodes to it), with only its percent-lookalikes decoded (JSON leaves `%41` raw), with only
//! its JSON-lookalikes decoded, and with both (a raw echo of `a\"b%41` decodes like the
//! text around it). Raw, escaped, encoded and the mixes real encoders write all match. A text
//! with escapes is also read through a second layer of them: a JSON log line of a message that
//! echoed a JSON-escaped password (`\\\"`), or a percent-encoded JSON string. A third layer
//! is not read.
//!
//! Pieces. A secret of `PIECE` (16) characters or more is indexed by each of its windows of 16
//! characters, so any 16-character piece of it is found; a shorter one is matched whole. Each
//! window is kept as a 61-bit polynomial hash, and the text is scanned once with rolling
//! hashes: linear in the text, whatever the number of secrets, and about 9 bytes of hash table
//! per window (`Redactor::memory_estimate`). Two different windows with the same hash would
//! only blank text that is not a secret (the safe direction); with 61 bits it does not happen
//! in practice.
//!
//! Minimum length. The process registry ignores values shorter than `MIN_REGISTERED_LEN` (8)
//! characters: output-level scrubbing of `pw` would blank every `pw` in a plan, and a short
//! value is likely an ordinary word. Request-scoped redaction has no minimum.
//!
//! Pure apart from the registry (a lock around a `Redactor`); no I/O.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::{LazyLock, PoisonError, RwLock};

/// What a redacted run reads as.
pub const SENSITIVE: &str = "(sensitive)";

/// Any run of this many characters of a secret is redacted; shorter secrets are matched whole.
pub const PIECE: usize = 16;

/// Values shorter than this (in characters) are not registered for output-level scrubbing.
pub const MIN_REGISTERED_LEN: usize = 8;

/// The Mersenne prime 2^61 - 1, modulus of the window hashes.
const MODULUS: u64 = (1 << 61) - 1;
/// The base of the polynomial hash (any value in 2..MODULUS; a fixed one keeps runs reproducible).
const BASE: u64 = 0x1f3d_5b79_a2c4_e681 % MODULUS;

// The casts keep the low 64 bits on purpose; both halves are below 2^61 (the high one since
// a, b < 2^61), so nothing is lost.
#[allow(clippy::cast_possible_truncation)]
fn mul_mod(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    let folded = (product as u64 & MODULUS) + (product >> 61) as u64;
    let folded = (folded & MODULUS) + (folded >> 61);
    if folded >= MODULUS { folded - MODULUS } else { folded }
}

fn add_mod(a: u64, b: u64) -> u64 {
    let sum = a + b;
    if sum >= MODULUS { sum - MODULUS } else { sum }
}

fn sub_mod(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + MODULUS - b }
}

/// `BASE^n mod MODULUS` for every window length `0..=PIECE`.
#[allow(clippy::cast_possible_truncation)] // a value mod 2^61 - 1 fits in 64 bits
const fn powers() -> [u64; PIECE + 1] {
    let mut out = [1u64; PIECE + 1];
    let mut i = 1;
    while i <= PIECE {
        let product = out[i - 1] as u128 * BASE as u128;
        out[i] = (product % MODULUS as u128) as u64;
        i += 1;
    }
    out
}
const POWERS: [u64; PIECE + 1] = powers();

/// A character's value in the hash (never 0, so leading NULs still count).
fn value(c: char) -> u64 {
    u64::from(c) + 1
}

/// The hash of a whole sequence of characters.
fn hash_of(chars: &[char]) -> u64 {
    chars.iter().fold(0, |h, &c| add_mod(mul_mod(h, BASE), value(c)))
}

/// The window hashes are already uniform: hash them by one multiplication, which spreads the
/// 61 bits over the 64 the table uses.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Hashes = HashSet<u64, BuildHasherDefault<Spread>>;

/// How many prefix hashes the scan keeps: enough for the longest window (`PIECE + 1`),
/// rounded up to a power of two so that the ring index is a mask.
const RING: usize = (PIECE + 1).next_power_of_two();

/// One decoded character and the bytes of the text it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unit {
    ch: char,
    start: usize,
    end: usize,
}

/// A text as units, one per character.
fn units(text: &str) -> impl Iterator<Item = Unit> + '_ {
    text.char_indices().map(|(start, ch)| Unit { ch, start, end: start + ch.len_utf8() })
}

/// Reads units one decoded character at a time (see the module docs for the forms). Its
/// input may be another decoder's output: that reads a second layer of escapes.
struct Decoder<I> {
    input: I,
    /// Units read but not yet decoded (at most one escape's worth: 12).
    ahead: VecDeque<Unit>,
    /// Decode JSON escapes.
    json: bool,
    /// Decode percent-encoding.
    percent: bool,
}

impl<I: Iterator<Item = Unit>> Decoder<I> {
    fn new(input: I, json: bool, percent: bool) -> Self {
        Self { input, ahead: VecDeque::with_capacity(12), json, percent }
    }

    /// The character `at` units ahead, reading on as needed.
    fn peek(&mut self, at: usize) -> Option<char> {
        while self.ahead.len() <= at {
            let unit = self.input.next()?;
            self.ahead.push_back(unit);
        }
        self.ahead.get(at).map(|u| u.ch)
    }

    fn hex(&mut self, at: usize, digits: usize) -> Option<u32> {
        (at..at + digits).try_fold(0, |value, i| Some(value * 16 + self.peek(i)?.to_digit(16)?))
    }

    /// `\` ahead: a JSON escape, as (character, units read).
    fn json_escape(&mut self) -> Option<(char, usize)> {
        let ch = match self.peek(1)? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => return self.unicode_escape(),
            _ => return None,
        };
        Some((ch, 2))
    }

    /// `\uXXXX`, or a surrogate pair `\uD83D\uDE00`; a lone surrogate reads as U+FFFD.
    fn unicode_escape(&mut self) -> Option<(char, usize)> {
        let first = self.hex(2, 4)?;
        if (0xd800..0xdc00).contains(&first)
            && self.peek(6) == Some('\\')
            && self.peek(7) == Some('u')
            && let Some(second) = self.hex(8, 4).filter(|s| (0xdc00..0xe000).contains(s))
        {
            let code = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
            return Some((char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER), 12));
        }
        Some((char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER), 6))
    }

    /// `%XX` ahead: one byte, or the whole UTF-8 sequence it starts; a byte that starts no
    /// valid sequence reads as Latin-1.
    fn percent(&mut self) -> Option<(char, usize)> {
        let lead = u8::try_from(self.hex(1, 2)?).ok()?;
        let width = match lead {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 1,
        };
        let mut bytes = [lead, 0, 0, 0];
        for (i, slot) in bytes.iter_mut().enumerate().take(width).skip(1) {
            let next = if self.peek(3 * i) == Some('%') { self.hex(3 * i + 1, 2) } else { None };
            match next.and_then(|b| u8::try_from(b).ok()) {
                Some(b) => *slot = b,
                None => return Some((char::from(lead), 3)),
            }
        }
        match std::str::from_utf8(&bytes[..width]).ok().and_then(|s| s.chars().next()) {
            Some(ch) => Some((ch, 3 * width)),
            None => Some((char::from(lead), 3)),
        }
    }
}

impl<I: Iterator<Item = Unit>> Iterator for Decoder<I> {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        // `+` is a space in form encoding: one character to the matcher.
        let canonical = |ch: char| if ch == '+' { ' ' } else { ch };
        // Most characters start no escape: pass them through without queueing them.
        if self.ahead.is_empty() {
            let unit = self.input.next()?;
            if !((unit.ch == '\\' && self.json) || (unit.ch == '%' && self.percent)) {
                return Some(Unit { ch: canonical(unit.ch), ..unit });
            }
            self.ahead.push_back(unit);
        }
        let first = self.peek(0)?;
        let escaped = match first {
            '\\' if self.json => self.json_escape(),
            '%' if self.percent => self.percent(),
            _ => None,
        };
        let (ch, len) = escaped.unwrap_or((first, 1));
        let mut read = self.ahead.drain(..len);
        let start = read.next()?;
        let end = read.next_back().unwrap_or(start).end;
        Some(Unit { ch: canonical(ch), start: start.start, end })
    }
}

/// A set of secrets and the matcher over them. Pure: build one, `insert`, then `find`.
#[derive(Clone, Default)]
pub struct Redactor {
    /// `by_len[n]`: hashes of whole secrets of `n` characters (`n < PIECE`), or of the
    /// `PIECE`-character windows of longer ones (`n == PIECE`).
    by_len: Vec<Hashes>,
    /// The lengths that have hashes, longest first.
    lengths: Vec<usize>,
    min_len: usize,
}

impl std::fmt::Debug for Redactor {
    // The hashes are derived from secrets: show only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("hashes", &self.by_len.iter().map(HashSet::len).sum::<usize>())
            .field("min_len", &self.min_len)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor that ignores secrets shorter than `min_len` characters (0 or 1: none ignored).
    pub fn new(min_len: usize) -> Self {
        Self { by_len: vec![Hashes::default(); PIECE + 1], lengths: Vec::new(), min_len: min_len.max(1) }
    }

    /// Add a secret: matched as it is and as each of its lookalike escapes decodes (see the
    /// module docs).
    pub fn insert(&mut self, secret: &str) {
        let mut spellings: Vec<Vec<char>> = Vec::with_capacity(4);
        for (json, percent) in [(false, false), (false, true), (true, false), (true, true)] {
            let chars: Vec<char> = Decoder::new(units(secret), json, percent).map(|u| u.ch).collect();
            if !spellings.contains(&chars) {
                spellings.push(chars);
            }
        }
        for chars in &spellings {
            self.insert_chars(chars);
        }
    }

    fn insert_chars(&mut self, chars: &[char]) {
        if chars.len() < self.min_len {
            return;
        }
        let len = chars.len().min(PIECE);
        let set = &mut self.by_len[len];
        if chars.len() <= PIECE {
            set.insert(hash_of(chars));
        } else {
            set.extend(chars.windows(PIECE).map(hash_of));
        }
        if !self.lengths.contains(&len) {
            self.lengths.push(len);
            self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// Whether no secret has been added.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The byte ranges of `text` that hold a secret (or a piece of one), sorted and merged.
    /// The text is read through one layer of escapes, and, when it has any, through two (a
    /// JSON log line of a message that echoed an escaped password).
    pub fn find(&self, text: &str) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        if self.is_empty() {
            return found;
        }
        self.scan(Decoder::new(units(text), true, true), &mut found);
        if text.contains(['\\', '%']) {
            let mut twice = Vec::new();
            self.scan(Decoder::new(Decoder::new(units(text), true, true), true, true), &mut twice);
            if !twice.is_empty() {
                let mut all = std::mem::take(&mut found);
                all.extend(twice);
                merge(&mut found, all);
            }
        }
        found
    }

    /// Add the ranges of the decoded `units` that hold a secret to `found`.
    fn scan(&self, units: impl Iterator<Item = Unit>, found: &mut Vec<Range<usize>>) {
        // Rings of the last PIECE + 1 prefix hashes and unit starts, indexed by unit count.
        let mut prefix = [0u64; RING];
        let mut starts = [0usize; RING];
        for (count, unit) in units.enumerate() {
            let before = prefix[count % RING];
            starts[count % RING] = unit.start;
            let next = count + 1;
            let hash = add_mod(mul_mod(before, BASE), value(unit.ch));
            prefix[next % RING] = hash;
            for &len in &self.lengths {
                if len > next {
                    continue;
                }
                let window = sub_mod(hash, mul_mod(prefix[(next - len) % RING], POWERS[len]));
                if self.by_len[len].contains(&window) {
                    push_merged(found, starts[(next - len) % RING]..unit.end);
                }
            }
        }
    }

    /// `text` with every run that holds a secret replaced by `(sensitive)`.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        replace(text, &self.find(text))
    }

    /// Bytes the hash tables take (buckets of 8-byte hashes and 1 control byte each).
    pub fn memory_estimate(&self) -> usize {
        self.by_len
            .iter()
            .filter(|set| set.capacity() > 0)
            .map(|set| {
                let buckets = (set.capacity() * 8 / 7).next_power_of_two();
                buckets * (std::mem::size_of::<u64>() + 1)
            })
            .sum::<usize>()
            + self.by_len.capacity() * std::mem::size_of::<Hashes>()
    }
}

/// Add `range` to sorted, disjoint `ranges`, merging with those it overlaps or touches. Ranges
/// must come in order of start or in order of end: then only a tail of `ranges` can overlap.
fn push_merged(ranges: &mut Vec<Range<usize>>, mut range: Range<usize>) {
    while let Some(last) = ranges.last() {
        if last.end < range.start {
            break;
        }
        range.start = range.start.min(last.start);
        range.end = range.end.max(last.end);
        ranges.pop();
    }
    ranges.push(range);
}

/// Merge `ranges` (in any order) into `into`, which must be empty.
fn merge(into: &mut Vec<Range<usize>>, mut ranges: Vec<Range<usize>>) {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    for range in ranges {
        push_merged(into, range);
    }
}

/// `text` with each of the sorted, disjoint `ranges` replaced by `(sensitive)`.
fn replace<'t>(text: &'t str, ranges: &[Range<usize>]) -> Cow<'t, str> {
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for range in ranges {
        out.push_str(text.get(at..range.start).unwrap_or_default());
        out.push_str(SENSITIVE);
        at = range.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Cow::Owned(out)
}

/// How many characters of released secrets the registry keeps matching, at most: about a
/// thousand service tokens, whose hash tables take well under a megabyte. Past it the oldest
/// released ones are forgotten (down to three quarters of it, so that the matcher is rebuilt
/// once per many releases, not on each).
pub const RETAINED_CHARS: usize = 64 * 1024;

/// The process-wide registry: the secrets alive now (`Secret`s not yet dropped, counted) and
/// a bounded tail of released ones, oldest first, and the matcher over all of them.
struct Registry {
    matcher: Redactor,
    /// Every registered value (at least `MIN_REGISTERED_LEN` characters): alive or in the tail.
    entries: HashMap<String, Entry>,
    /// The tail of released values by release number, oldest first.
    released: BTreeMap<u64, String>,
    /// Characters of the values in `released`.
    released_chars: usize,
    releases: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// `Secret`s (and bare `register` calls) holding the value now.
    alive: usize,
    /// The release number while the value sits in the tail.
    released: Option<u64>,
}

impl Registry {
    fn new() -> Self {
        Self {
            matcher: Redactor::new(MIN_REGISTERED_LEN),
            entries: HashMap::new(),
            released: BTreeMap::new(),
            released_chars: 0,
            releases: 0,
        }
    }

    fn register(&mut self, secret: &str) {
        if let Some(entry) = self.entries.get_mut(secret) {
            entry.alive += 1;
            if let Some(number) = entry.released.take() {
                self.released.remove(&number);
                self.released_chars -= secret.chars().count();
            }
            return;
        }
        self.matcher.insert(secret);
        self.entries.insert(secret.to_string(), Entry { alive: 1, released: None });
    }

    fn release(&mut self, secret: &str) {
        let Some(entry) = self.entries.get_mut(secret) else { return };
        entry.alive = entry.alive.saturating_sub(1);
        if entry.alive > 0 || entry.released.is_some() {
            return;
        }
        self.releases += 1;
        entry.released = Some(self.releases);
        self.released.insert(self.releases, secret.to_string());
        self.released_chars += secret.chars().count();
        if self.released_chars <= RETAINED_CHARS {
            return;
        }
        // Forget the oldest released values, then rebuild the matcher over what is left: its
        // hash sets cannot drop one secret's windows (two secrets may share a window).
        while self.released_chars > RETAINED_CHARS / 4 * 3 {
            let Some((_, value)) = self.released.pop_first() else { break };
            self.released_chars -= value.chars().count();
            self.entries.remove(&value);
        }
        let mut matcher = Redactor::new(MIN_REGISTERED_LEN);
        for value in self.entries.keys() {
            matcher.insert(value);
        }
        self.matcher = matcher;
    }
}

/// The process-wide registry of secret values.
static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| RwLock::new(Registry::new()));

fn registry() -> std::sync::RwLockReadGuard<'static, Registry> {
    // A poisoned lock only means a panic elsewhere while inserting; the sets are still usable.
    REGISTRY.read().unwrap_or_else(PoisonError::into_inner)
}

fn registry_mut() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a value is long enough to be registered.
fn registrable(secret: &str) -> bool {
    secret.chars().nth(MIN_REGISTERED_LEN - 1).is_some()
}

/// Remember a secret value for output-level scrubbing (`Secret::new` calls this), until as many
/// `release`s as `register`s of it; then it is still matched while it is among the most recently
/// released (`RETAINED_CHARS`). Values shorter than `MIN_REGISTERED_LEN` characters are ignored.
pub fn register(secret: &str) {
    if registrable(secret) {
        registry_mut().register(secret);
    }
}

/// The holder of a registered value let go of it (`Secret`'s last clone was dropped): it joins
/// the bounded tail of released secrets once no holder is left.
pub fn release(secret: &str) {
    if registrable(secret) {
        registry_mut().release(secret);
    }
}

/// `text` with every registered secret (in any form, or any 16-character piece) blanked.
pub fn scrub(text: &str) -> Cow<'_, str> {
    registry().matcher.redact(text)
}

/// `text` with `secrets` (any length, matched exactly in every form) and every registered
/// secret blanked. For messages built from a server's answer to a request that held `secrets`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut scoped = Redactor::new(1);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        scoped.insert(secret);
    }
    let mut all = scoped.find(text);
    all.extend(registry().matcher.find(text));
    let mut ranges = Vec::new();
    merge(&mut ranges, all);
    replace(text, &ranges).into_owned()
}

/// Bytes the registry's hash tables take.
pub fn registry_memory_estimate() -> usize {
    registry().matcher.memory_estimate()
}

/// What the registry holds: values alive, values in the released tail, and the characters of
/// those (at most `RETAINED_CHARS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrySize {
    pub alive: usize,
    pub released: usize,
    pub released_chars: usize,
}

pub fn registry_size() -> RegistrySize {
    let registry = registry();
    RegistrySize {
        alive: registry.entries.len() - registry.released.len(),
        released: registry.released.len(),
        released_chars: registry.released_chars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        let mut r = Redactor::new(1);
        for s in secrets {
            r.insert(s);
        }
        r
    }

    fn shown(secrets: &[&str], text: &str) -> String {
        redactor(secrets).redact(text).into_owned()
    }

    #[test]
    fn a_raw_secret_is_replaced_by_one_marker() {
        assert_eq!(shown(&["hunter2"], "bad password hunter2 here"), "bad password (sensitive) here");
    }

    #[test]
    fn json_escaped_quotes_and_backslashes_are_matched() {
        let secret = r#"CANARYuser"pw1\x"#;
        let echoed = r#"{"password": "CANARYuser\"pw1\\x"}"#;
        assert_eq!(shown(&[secret], echoed), r#"{"password": "(sensitive)"}"#);
    }

    #[test]
    fn unicode_escapes_in_either_case_and_escaped_slashes_are_matched() {
        let secret = "Pässwörd/CANARY";
        for echoed in [
            r"P\u00e4ssw\u00f6rd\/CANARY",
            r"P\u00E4ssw\u00F6rd\/CANARY",
            r"P\u00e4ssw\u00F6rd/CANARY",
            r"\u0050\u00e4ssw\u00f6rd/CANARY",
        ] {
            assert_eq!(shown(&[secret], &format!("x {echoed} y")), "x (sensitive) y", "{echoed}");
        }
    }

    #[test]
    fn surrogate_pairs_are_joined() {
        assert_eq!(shown(&["ab😀cd"], r"-ab\ud83d\ude00cd-"), "-(sensitive)-");
        assert_eq!(shown(&["ab😀cd"], r"-ab\uD83D\uDE00cd-"), "-(sensitive)-");
    }

    #[test]
    fn percent_encoding_in_either_case_and_plus_for_space_are_matched() {
        let secret = "Pä ss/wö+rd\"%";
        for echoed in [
            "P%C3%A4+ss%2Fw%C3%B6%2Brd%22%25",
            "P%c3%a4%20ss%2fw%c3%b6%2brd%22%25",
            "P%E4+ss/w%F6%2Brd%22%25",
        ] {
            assert_eq!(shown(&[secret], &format!("q={echoed}&x")), "q=(sensitive)&x", "{echoed}");
        }
    }

    #[test]
    fn two_layers_of_escapes_are_read() {
        let secret = r#"CANARYuser"pw1\x-ä"#;
        let once = serde_json::to_string(secret).expect("json");
        let twice = serde_json::to_string(&format!("echo {once}")).expect("json");
        assert_eq!(shown(&[secret], &twice), r#""echo \"(sensitive)\"""#);
        let ascii = r"CANARYuser\\\u0022pw1\\\\x-\\u00e4";
        assert_eq!(shown(&[secret], ascii), "(sensitive)");
        assert_eq!(shown(&[secret], "CANARYuser%2522pw1%255Cx-%25C3%25A4"), "(sensitive)");
    }

    #[test]
    fn a_raw_secret_that_looks_escaped_is_matched_as_it_is() {
        for secret in [r#"a\"b+c%41d"#, "tok+en/with+plus", r"back\\slash"] {
            assert_eq!(shown(&[secret], &format!("[{secret}]")), "[(sensitive)]", "{secret}");
        }
    }

    #[test]
    fn any_sixteen_character_piece_of_a_long_secret_is_redacted() {
        let token = "0123456789abcdefghijklmnopqrstuvwxyzABCDEF";
        let piece = &token[7..23];
        assert_eq!(shown(&[token], &format!("saw {piece}!")), "saw (sensitive)!");
        // Fifteen characters are not a piece: this is the documented limit.
        let short = &token[7..22];
        assert_eq!(shown(&[token], &format!("saw {short}!")), format!("saw {short}!"));
    }

    #[test]
    fn a_long_secret_is_replaced_whole_by_one_marker() {
        let token = "0123456789abcdefghijklmnopqrstuvwxyz";
        assert_eq!(shown(&[token], &format!("{token}{token} and {token}")), "(sensitive) and (sensitive)");
    }

    #[test]
    fn short_secrets_are_matched_whole_and_exactly() {
        assert_eq!(shown(&["pw"], "pw: p w, pwd"), "(sensitive): p w, (sensitive)d");
        assert_eq!(shown(&["abc"], "ab"), "ab");
    }

    #[test]
    fn text_without_secrets_is_borrowed_unchanged() {
        let r = redactor(&["hunter22"]);
        let text = "plain text, ünïcode, \\u00zz, %zz, %, \\";
        assert!(matches!(r.redact(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(Redactor::new(1).redact(text), Cow::Borrowed(_)));
    }

    #[test]
    fn the_minimum_length_keeps_short_values_out() {
        let mut r = Redactor::new(MIN_REGISTERED_LEN);
        r.insert("pw");
        r.insert("1234567");
        assert!(r.is_empty());
        r.insert("12345678");
        assert_eq!(r.redact("x 12345678 y"), "x (sensitive) y");
    }

    #[test]
    fn request_scoped_redaction_covers_the_registry_too() {
        register("registered-canary-7f3a9c");
        assert_eq!(redact("a pw and registered-canary-7f3a9c", &["pw"]), "a (sensitive) and (sensitive)");
        assert_eq!(scrub("pw registered\\u002dcanary-7f3a9c"), "pw (sensitive)");
        register("pw");
        assert_eq!(scrub("pw"), "pw", "short values are not registered");
        assert!(registry_memory_estimate() > 0);
    }

    #[test]
    fn a_released_secret_is_still_scrubbed_and_one_held_twice_stays_until_both_let_go() {
        let mut registry = Registry::new();
        registry.register("first-secret-0001");
        registry.register("twice-held-secret");
        registry.register("twice-held-secret");
        registry.release("first-secret-0001");
        registry.release("twice-held-secret");
        assert_eq!(registry.matcher.redact("first-secret-0001"), SENSITIVE, "released, still in the tail");
        assert_eq!(
            (registry.released.len(), registry.entries.len()),
            (1, 2),
            "one holder of the twice-held left"
        );
        // Registered again while in the tail: alive again, out of the tail.
        registry.register("first-secret-0001");
        assert_eq!((registry.released.len(), registry.released_chars), (0, 0));
    }

    #[test]
    fn released_secrets_are_forgotten_oldest_first_past_the_bound_and_live_ones_never() {
        let mut registry = Registry::new();
        registry.register("alive-for-the-whole-run");
        // Random-looking, so that no 16-character piece is shared between two of them.
        let token = |i: usize| {
            let mut rng = fastrand::Rng::with_seed(i as u64);
            format!("{:032x}{:032x}", rng.u128(..), rng.u128(..))
        };
        let count = RETAINED_CHARS / 64 * 3;
        for i in 0..count {
            registry.register(&token(i));
            registry.release(&token(i));
            assert!(registry.released_chars <= RETAINED_CHARS, "bounded after {i} releases");
        }
        assert!(registry.entries.len() <= RETAINED_CHARS / 64 + 1, "{} entries", registry.entries.len());
        assert_eq!(registry.matcher.redact("alive-for-the-whole-run"), SENSITIVE);
        assert_eq!(registry.matcher.redact(&token(count - 1)), SENSITIVE, "the latest is kept");
        assert_eq!(registry.matcher.redact(&token(0)), token(0), "the oldest is forgotten");
        let bound = {
            let mut full = Redactor::new(MIN_REGISTERED_LEN);
            (0..=RETAINED_CHARS / 64).for_each(|i| full.insert(&token(i)));
            full.memory_estimate()
        };
        assert!(registry.matcher.memory_estimate() <= bound, "the matcher is rebuilt, not grown");
    }

    #[test]
    fn the_debug_form_shows_no_hashes() {
        let r = redactor(&["hunter22"]);
        assert_eq!(format!("{r:?}"), "Redactor { hashes: 1, min_len: 1, .. }");
    }

    /// Spell `c` as a JSON encoder may (`how` picks among the spellings it allows).
    fn json_char(c: char, how: u8) -> String {
        let unicode = |upper: bool| -> String {
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units)
                .iter()
                .map(|u| if upper { format!("\\u{u:04X}") } else { format!("\\u{u:04x}") })
                .collect()
        };
        match (c, how % 3) {
            ('"' | '\\', 0) => format!("\\{c}"),
            ('/', 0) => "\\/".into(),
            ('"' | '\\' | '/', 1) => unicode(false),
            ('"' | '\\' | '/', _) => unicode(true),
            (c, 1) if !c.is_ascii() => unicode(false),
            (c, 2) if !c.is_ascii() => unicode(true),
            (c, _) => c.to_string(),
        }
    }

    /// Spell `c` as a percent-encoder may: unreserved characters raw or encoded, a space as
    /// `+` or `%20`, the rest encoded, in either case of hex.
    fn percent_char(c: char, how: u8) -> String {
        let mut utf8 = [0u8; 4];
        let bytes = c.encode_utf8(&mut utf8).as_bytes();
        let encoded = |upper: bool| -> String {
            bytes.iter().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect()
        };
        let unreserved = c.is_ascii_alphanumeric() || "-_.~".contains(c);
        match how % 3 {
            0 if unreserved => c.to_string(),
            0 if c == ' ' => "+".into(),
            1 => encoded(false),
            _ => encoded(true),
        }
    }

    proptest! {
        #[test]
        fn a_secret_spelled_by_any_encoder_is_gone(
            secret in "[a-fA-F0-9xyz\"\\\\/%+ äöü€😀-]{1,40}",
            scheme in 0u8..3,
            hows in proptest::collection::vec(any::<u8>(), 40),
            before in "[g-mo-qsvw,.:]{0,20}",
            after in "[g-mo-qsvw,.:]{0,20}",
        ) {
            let spell = |(c, how): (char, &u8)| match scheme {
                0 => c.to_string(),
                1 => json_char(c, *how),
                _ => percent_char(c, *how),
            };
            let spelled: String = secret.chars().zip(&hows).map(spell).collect();
            let text = format!("{before}{spelled}{after}");
            let out = shown(&[&secret], &text);
            prop_assert_eq!(out, format!("{before}{SENSITIVE}{after}"), "{}", text);
        }

        #[test]
        fn a_raw_secret_is_gone_whole(secret in "\\PC{1,40}", before in "[g-mo-qsv-z ]{0,10}", after in "[g-mo-qsv-z ]{0,10}") {
            let out = shown(&[&secret], &format!("{before}{secret}{after}"));
            // The marker's own letters may spell a short secret: look between the markers.
            prop_assert!(!out.replace(SENSITIVE, "\0").contains(&secret), "{out}");
        }

        #[test]
        fn any_text_is_read_without_panicking(text in "\\PC{0,80}", secret in "\\PC{1,20}") {
            let _ = shown(&[&secret], &text);
        }
    }
}
