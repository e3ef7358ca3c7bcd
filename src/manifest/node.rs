//! A YAML document as a tree of located nodes: the loader's only view of YAML.
//!
//! serde-saphyr parses the text (syntax, anchors, budgets against alias bombs in one file);
//! this module keeps every value with its byte span, line and column so that later checks can
//! point at it, and keeps every mapping entry in order (duplicate keys included) so that
//! duplicates are reported by the checks rather than lost. Pure; no I/O.
//!
//! serde-saphyr's budgets hold for one file: the same small file of aliases copied into many
//! files would still multiply. So what aliases and merge keys add (a node that serde-saphyr
//! replays reports a use site other than its definition) is also charged, node by node and
//! byte by byte, to one `Budget` shared by every file and document of a load, across the
//! parser threads; the parse that crosses it stops with `ParseError::Budget` at the node
//! where it did.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

/// Where a node starts: byte span in the file's text, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_saphyr(loc: serde_saphyr::Location) -> Self {
        let span = loc.span();
        Pos {
            offset: to_usize(span.byte_offset().unwrap_or(0)),
            len: to_usize(span.byte_len().unwrap_or(0)),
            line: to_usize(loc.line()),
            column: to_usize(loc.column()),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A located YAML value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// What a node holds. Mappings keep their entries in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// The YAML kind in words, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        let pos = Pos::from_saphyr(spanned.referenced);
        // Used elsewhere than where it is written: replayed by an alias or a merge key.
        if spanned.referenced != spanned.defined {
            let bytes = match &spanned.value {
                Value::Str(s) => s.len(),
                _ => 0,
            };
            if let Some(exceeded) = charge(bytes, pos) {
                return Err(de::Error::custom(format_args!("the alias budget is spent ({exceeded:?})")));
            }
        }
        Ok(Node { pos, value: spanned.value })
    }
}

/// Which limit of a `Budget` was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// More nodes than `Budget::max_nodes`.
    Nodes,
    /// More bytes of text than `Budget::max_bytes`.
    Bytes,
}

/// What aliases and merge keys may add to the documents of one load, together: nodes, and
/// bytes of string values (keys included). Shared by the parser threads.
#[derive(Debug)]
pub struct Budget {
    pub max_nodes: usize,
    pub max_bytes: usize,
    nodes: AtomicUsize,
    bytes: AtomicUsize,
    exceeded: AtomicBool,
}

impl Budget {
    pub fn new(max_nodes: usize, max_bytes: usize) -> Self {
        Self {
            max_nodes,
            max_bytes,
            nodes: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    /// Whether a parse has crossed a limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The nodes charged so far.
    #[cfg(test)]
    pub fn nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed)
    }

    /// Charge one node of `bytes` bytes of text; which limit it crosses, if any.
    fn charge(&self, bytes: usize) -> Option<Exceeded> {
        let nodes = self.nodes.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        let exceeded = if nodes > self.max_nodes {
            Some(Exceeded::Nodes)
        } else if total > self.max_bytes {
            Some(Exceeded::Bytes)
        } else {
            None
        };
        if exceeded.is_some() {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        exceeded
    }
}

/// The budget of the parse running on this thread, and where that parse crossed it. serde's
/// `Deserialize` takes no context, so the parse finds its budget here (each parse runs on one
/// thread from start to end).
struct Charging {
    budget: Arc<Budget>,
    crossed: Option<(Pos, Exceeded)>,
}

thread_local! {
    static CHARGING: RefCell<Option<Charging>> = const { RefCell::new(None) };
}

/// Charge a replayed node to the budget of this thread's parse, if it has one.
fn charge(bytes: usize, pos: Pos) -> Option<Exceeded> {
    CHARGING.with(|charging| {
        let mut charging = charging.borrow_mut();
        let charging = charging.as_mut()?;
        let exceeded = charging.budget.charge(bytes)?;
        charging.crossed.get_or_insert((pos, exceeded));
        Some(exceeded)
    })
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        // Out of JSON's range: keep it as a float so nothing is lost silently to a panic.
        #[allow(clippy::cast_precision_loss)]
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        #[allow(clippy::cast_precision_loss)]
        Ok(u64::try_from(v).map_or(Value::Float(v as f64), Value::UInt))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

/// A YAML error as serde-saphyr reported it, without the location it appends.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Pos,
}

/// Why a text could not be parsed within a budget.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    Syntax(SyntaxError),
    /// The budget was crossed at this node (an alias's or merge key's use site).
    Budget {
        pos: Pos,
        exceeded: Exceeded,
    },
}

/// Parse every document of `text`, charging what aliases and merge keys add to `budget`.
pub fn parse_documents_within(text: &str, budget: &Arc<Budget>) -> Result<Vec<Node>, ParseError> {
    CHARGING.with(|charging| {
        *charging.borrow_mut() = Some(Charging { budget: Arc::clone(budget), crossed: None });
    });
    let parsed = parse_documents(text);
    let crossed = CHARGING.with(|charging| charging.borrow_mut().take().and_then(|c| c.crossed));
    match (parsed, crossed) {
        (_, Some((pos, exceeded))) => Err(ParseError::Budget { pos, exceeded }),
        (Ok(documents), None) => Ok(documents),
        (Err(err), None) => Err(ParseError::Syntax(err)),
    }
}

/// Parse every document of `text`. Null (empty) documents are skipped.
///
/// YAML 1.1 booleans (`yes`, `on`, …) stay strings so the checks can call them ambiguous;
/// duplicate keys pass through so the checks can point at both.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    // serde-saphyr's default budget (250,000 nodes, 1,024 documents per file) stops at a
    // single file of about 10,000 users; alias bombs stay bounded by its alias limits.
    let budget = serde_saphyr::budget! {
        max_events: 40_000_000,
        max_nodes: 10_000_000,
        max_documents: 1_000_000,
    };
    let options = serde_saphyr::options! {
        budget: budget,
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
    };
    serde_saphyr::from_str_multiple_with_options::<Node, Vec<Node>>(text, options).map_err(|err| {
        let pos = err.location().map_or_else(Pos::default, |loc| {
            let mut pos = Pos::from_saphyr(loc);
            // Syntax errors carry character offsets only: find the byte offset ourselves.
            if loc.span().byte_offset().is_none() {
                let chars = to_usize(loc.span().offset());
                pos.offset = text.char_indices().nth(chars).map_or(text.len(), |(i, _)| i);
                pos.len = text[pos.offset..].chars().next().map_or(0, char::len_utf8);
            }
            pos
        });
        let rendered = err.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
        SyntaxError { message: strip_location(&rendered), pos }
    })
}

/// serde-saphyr writes the location into plain messages (`line L column C: …` or `… at line
/// L column C`); the diagnostic shows the location itself.
fn strip_location(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or(message).trim();
    let first_line = first_line.strip_prefix("error: ").unwrap_or(first_line);
    let without_prefix = match first_line.split_once(": ") {
        Some((head, tail)) if head.starts_with("line ") && head.contains(" column ") => tail,
        _ => first_line,
    };
    let cut = without_prefix.rfind(" at line ").map_or(without_prefix, |i| &without_prefix[..i]);
    cut.trim_end_matches(':').trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_keep_line_column_and_byte_offset_across_documents() {
        let text = "a: 1\n---\nb: [x, yes]\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        let Value::Map(entries) = &docs[1].value else { panic!("not a map: {:?}", docs[1]) };
        let (key, value) = &entries[0];
        assert_eq!(key.value, Value::Str("b".into()));
        assert_eq!((key.pos.line, key.pos.column, key.pos.offset), (3, 1, 9));
        let Value::Seq(items) = &value.value else { panic!("not a seq") };
        assert_eq!(items[1].value, Value::Str("yes".into()));
        assert_eq!(&text[items[1].pos.offset..items[1].pos.offset + items[1].pos.len], "yes");
    }

    #[test]
    fn duplicate_keys_are_kept_for_the_checks() {
        let docs = parse_documents("a: 1\na: 2\n").unwrap();
        let Value::Map(entries) = &docs[0].value else { panic!("not a map") };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn empty_documents_are_skipped() {
        assert_eq!(parse_documents("").unwrap(), vec![]);
        assert_eq!(parse_documents("---\n---\n# only a comment\n").unwrap(), vec![]);
    }

    #[test]
    fn only_what_aliases_and_merge_keys_add_is_charged_to_the_budget() {
        let budget = Arc::new(Budget::new(1_000, 1_000));
        let plain = "a: [1, {b: c}]\n---\nd: e\n";
        parse_documents_within(plain, &budget).unwrap();
        assert_eq!(budget.nodes(), 0);
        // `*x` replays a map of one entry (3 nodes) twice; `<<` merges that entry (2 nodes).
        let aliases = "x: &x {k: v}\ny: [*x, *x]\nz: {<<: *x}\n";
        let docs = parse_documents_within(aliases, &budget).unwrap();
        assert_eq!(budget.nodes(), 8, "{docs:?}");
        assert!(!budget.exceeded());
    }

    #[test]
    fn crossing_the_budget_stops_the_parse_at_the_alias_that_crosses_it() {
        let text = "x: 1\n---\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: [*b, *b]\n";
        let budget = Arc::new(Budget::new(150, usize::MAX));
        let Err(ParseError::Budget { pos, exceeded }) = parse_documents_within(text, &budget) else {
            panic!("the budget held")
        };
        assert_eq!(exceeded, Exceeded::Nodes);
        assert!(budget.exceeded());
        // In the second document, at the alias of `c` whose expansion crosses it.
        assert_eq!((pos.line, pos.column), (5, 5), "{pos:?}");
        let bytes = Arc::new(Budget::new(usize::MAX, 50));
        assert!(matches!(
            parse_documents_within(text, &bytes),
            Err(ParseError::Budget { exceeded: Exceeded::Bytes, .. })
        ));
        // The budget is shared: a second text is charged on top of the first.
        let shared = Arc::new(Budget::new(100, usize::MAX));
        parse_documents_within(
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: [*a, *a, *a, *a, *a, *a, *a, *a]\n",
            &shared,
        )
        .unwrap();
        assert!(parse_documents_within("a: &a [x, x]\nb: [*a, *a, *a, *a, *a, *a]\n", &shared).is_err());
    }

    #[test]
    fn a_syntax_error_in_a_later_document_is_located_there() {
        let text = "a: 1\n---\nb: [1, 2\n";
        let err = parse_documents(text).unwrap_err();
        assert!(err.pos.line >= 3, "{err:?}");
        assert!(err.pos.offset >= text.find("b:").unwrap(), "{err:?}");
        assert!(!err.message.contains("line "), "{err:?}");
    }
}
