//! Paging of list endpoints with `offset` / `limit`, as a pure state machine.
//!
//! The transport fetches; `Pager` decides whether another page is needed, `Rounds` which pages
//! to ask for together. It stops on an empty page, on reaching `total` when the envelope gives
//! one, and otherwise on a page that is not full. What full means depends on what is known of
//! the server's page size (`PageCap`, learned by the client from the pages it reads, or told
//! by `ozform doctor`'s finding):
//! - a server known to give whole pages (a page as long as `limit` was seen): a page shorter
//!   than `limit` ends the list;
//! - a server known to cap pages at `n` below `limit`: a page of `n` is full;
//! - unknown: a look-up (a list filtered by a natural key: a name, an email) whose first page
//!   is shorter than asked is complete, one request; a listing keeps paging while pages are
//!   as long as its first one (the server may cap `limit` below what was asked), and a page
//!   after a short first page that still holds items teaches the cap.
//!
//! A page made only of ids already seen means the server ignores `offset`: that is an error,
//! never an endless loop. Single repeated ids (an object created while listing shifts the
//! pages) are dropped.
//!
//! Bounded whatever the server answers: a listing ends with an error once the server has sent
//! more than `max_objects` items (`--max-objects`), or as soon as its `total` says it holds
//! more; so the ids kept to spot repeats, and the pages, are bounded too. A round never asks
//! for more than `MAX_ROUND_PAGES` pages, whatever `total` says: nothing is sized from it.

use std::collections::HashSet;

use serde_json::Value;

use super::wire::{Page, WireCompany, WireUser};

/// An item of a list page, as far as paging is concerned: its id.
pub trait PageItem {
    /// The item's id, if it has one (`id_key` names its field in a raw object).
    fn id(&self, id_key: &str) -> Option<IdKey>;
}

impl PageItem for Value {
    fn id(&self, id_key: &str) -> Option<IdKey> {
        self.get(id_key).map(|v| match v {
            Value::String(s) => IdKey::of(s),
            other => IdKey::of(&other.to_string()),
        })
    }
}

impl PageItem for WireUser {
    fn id(&self, _: &str) -> Option<IdKey> {
        Some(IdKey::of(&self.user_id))
    }
}

impl PageItem for WireCompany {
    fn id(&self, _: &str) -> Option<IdKey> {
        Some(IdKey::of(&self.company_id))
    }
}

/// An id as the pager remembers it: a UUID in its canonical form as 16 bytes (ids are UUIDs in
/// Oz, and a listing of 100,000 users remembers 100,000 of them), any other text as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdKey {
    Uuid(u128),
    Text(Box<str>),
}

impl IdKey {
    pub fn of(id: &str) -> Self {
        // Only the canonical spelling maps to the number, so that two ids are the same key
        // exactly when they are the same text.
        if let Ok(uuid) = uuid::Uuid::try_parse(id) {
            let mut buffer = uuid::Uuid::encode_buffer();
            if uuid.hyphenated().encode_lower(&mut buffer) == id {
                return IdKey::Uuid(uuid.as_u128());
            }
        }
        IdKey::Text(id.into())
    }
}

/// What to do after a page.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Fetch the page at this offset.
    Fetch(usize),
    Done,
}

/// What is known of the most items a server puts in one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCap {
    /// Nothing yet.
    Unknown,
    /// Pages as long as asked: a page of `limit` was seen.
    Whole,
    /// At most this many, below what is asked.
    At(usize),
}

/// Whether a list is a look-up (filtered by a natural key: few items expected) or a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Lookup,
    Listing,
}

impl ListKind {
    /// A list asked for with these query parameters: filtered by a name or an email, a look-up.
    pub fn of(query: &[(&'static str, String)]) -> Self {
        if query.iter().any(|(k, _)| matches!(*k, "name" | "email")) {
            ListKind::Lookup
        } else {
            ListKind::Listing
        }
    }
}

/// Why a listing ends in an error before its end.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// The server's paging cannot be trusted (a page repeats only ids already seen).
    Untrusted(String),
    /// The listing holds more than `max_objects` (`--max-objects`).
    TooMany(String),
}

/// The most pages one round asks for at once, whatever `total` announces.
pub const MAX_ROUND_PAGES: usize = 1024;

#[derive(Debug)]
pub struct Pager {
    id_key: &'static str,
    offset: usize,
    first_len: Option<usize>,
    seen: HashSet<IdKey>,
    /// Items the server sent so far, repeated ones included.
    received: usize,
    max_objects: usize,
    /// `limit` as asked.
    limit: usize,
    kind: ListKind,
    cap: PageCap,
}

impl Pager {
    /// `id_key` names the id field of the items (`company_id`, `user_id`); pages of `limit`
    /// are asked for, and `cap` is what is known of the server's page size. Unbounded until
    /// `max_objects` bounds it.
    pub fn new(id_key: &'static str, limit: usize, kind: ListKind, cap: PageCap) -> Self {
        Self {
            id_key,
            offset: 0,
            first_len: None,
            seen: HashSet::new(),
            received: 0,
            max_objects: usize::MAX,
            limit: limit.max(1),
            kind,
            cap,
        }
    }

    /// Refuse the listing once the server has sent more than `max` items, or says it holds more.
    #[must_use]
    pub fn max_objects(mut self, max: usize) -> Self {
        self.max_objects = max;
        self
    }

    /// What is known of the server's page size now, this list's pages included.
    pub fn cap(&self) -> PageCap {
        self.cap
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Take the page asked for at `offset` (pages asked for ahead, in offset order): as
    /// `accept`, with the next offset counted from the end of this page.
    pub fn accept_at<T: PageItem>(
        &mut self,
        offset: usize,
        page: Page<T>,
    ) -> Result<(Vec<T>, Next), Refusal> {
        self.offset = offset;
        self.accept(page)
    }

    /// Take one page: the items not seen before, and what to do next. `Err` says why the
    /// server's paging cannot be trusted, or that the listing is longer than allowed.
    pub fn accept<T: PageItem>(&mut self, page: Page<T>) -> Result<(Vec<T>, Next), Refusal> {
        let len = page.items.len();
        if len == 0 {
            return Ok((Vec::new(), Next::Done));
        }
        let max = self.max_objects;
        if let Some(total) = page.total.filter(|t| *t > u64::try_from(max).unwrap_or(u64::MAX)) {
            return Err(Refusal::TooMany(format!(
                "the API says the list holds {total} objects, more than {max}, the limit of `--max-objects`"
            )));
        }
        self.received = self.received.saturating_add(len);
        if self.received > max {
            return Err(Refusal::TooMany(format!(
                "the list holds more than {max} objects, the limit of `--max-objects`"
            )));
        }
        let mut fresh = Vec::with_capacity(len);
        for item in page.items {
            let repeated = item.id(self.id_key).is_some_and(|id| !self.seen.insert(id));
            if !repeated {
                fresh.push(item);
            }
        }
        if fresh.is_empty() {
            return Err(Refusal::Untrusted(format!(
                "the page at offset {} repeats only ids already seen: the server ignores `offset`",
                self.offset
            )));
        }
        self.offset += len;
        let first_page = self.first_len.is_none();
        let first = *self.first_len.get_or_insert(len);
        self.learn(first_page, len, first, page.total);
        let more = match (page.total, self.cap) {
            (Some(total), _) => (self.offset as u64) < total,
            (None, PageCap::Whole) => len >= self.limit,
            (None, PageCap::At(cap)) => len >= cap,
            (None, PageCap::Unknown) if first_page && self.kind == ListKind::Lookup => false,
            (None, PageCap::Unknown) => len >= first,
        };
        Ok((fresh, if more { Next::Fetch(self.offset) } else { Next::Done }))
    }

    /// Learn the server's page size from a page of `len` items (`first` the first page's).
    fn learn(&mut self, first_page: bool, len: usize, first: usize, total: Option<u64>) {
        if len >= self.limit {
            // The server gave all that was asked: whatever else was thought, it does not cap
            // below `limit`.
            self.cap = PageCap::Whole;
        } else if self.cap == PageCap::Unknown {
            let more_said = total.is_some_and(|t| (self.offset as u64) < t);
            if more_said {
                // Short, and the total says more follow: a cap.
                self.cap = PageCap::At(len);
            } else if !first_page && first < self.limit {
                // A short first page, and still items after it.
                self.cap = PageCap::At(first);
            }
        }
    }
}

/// Which pages to ask for in each round trip: the page at 0 first; after a round whose pages
/// all came back full, all the remaining pages when the server said how many items there are
/// (and that is more than were read; at most `MAX_ROUND_PAGES` of them per round), else a window that doubles from round to round (2, 4, … up to `most`). Without `ahead`, one
/// page at a time.
#[derive(Debug)]
pub struct Rounds {
    most: usize,
    ahead: bool,
    window: usize,
}

impl Rounds {
    /// `most`: the client's bound of requests in flight (0 is taken as 1).
    pub fn new(most: usize, ahead: bool) -> Self {
        Self { most: most.max(1), ahead, window: 1 }
    }

    /// The offsets of the first round.
    pub fn first() -> Vec<usize> {
        vec![0]
    }

    /// The offsets of the next round, from `from` (where the last page ended) in steps of the
    /// server's own page length `step` (it may cap `limit` below what was asked), with the
    /// `total` the last page gave, if any.
    pub fn next(&mut self, from: usize, step: usize, total: Option<u64>) -> Vec<usize> {
        let step = step.max(1);
        // A total not beyond `from` (the list grew while it was read) says nothing of the rest.
        match total.and_then(|t| usize::try_from(t).ok()).filter(|t| self.ahead && *t > from) {
            // Lazily, and at most `MAX_ROUND_PAGES`: a total of 10^12 must not become a vector.
            Some(total) => (from..total).step_by(step).take(MAX_ROUND_PAGES).collect(),
            None if self.ahead => {
                self.window = (self.window * 2).min(self.most);
                (0..self.window).map(|k| from + k * step).collect()
            }
            None => vec![from],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(ids: std::ops::Range<u32>, total: Option<u64>) -> Page {
        Page { items: ids.map(|i| json!({"user_id": i.to_string()})).collect(), total }
    }

    /// A listing asking for pages of 100 from a server whose page size is unknown.
    fn listing() -> Pager {
        Pager::new("user_id", 100, ListKind::Listing, PageCap::Unknown)
    }

    #[test]
    fn a_look_up_whose_first_page_is_short_is_complete_unless_the_server_is_known_to_cap_there() {
        for cap in [PageCap::Unknown, PageCap::Whole, PageCap::At(5)] {
            let mut p = Pager::new("user_id", 100, ListKind::Lookup, cap);
            assert_eq!(p.accept(page(0..1, None)).expect("page").1, Next::Done, "{cap:?}");
        }
        // A page as long as the known cap is full: more may follow.
        let mut p = Pager::new("user_id", 100, ListKind::Lookup, PageCap::At(1));
        assert_eq!(p.accept(page(0..1, None)).expect("page").1, Next::Fetch(1));
        // A page as long as asked is full whatever is known.
        let mut p = Pager::new("user_id", 2, ListKind::Lookup, PageCap::Unknown);
        assert_eq!(p.accept(page(0..2, None)).expect("page").1, Next::Fetch(2));
        assert_eq!(p.cap(), PageCap::Whole);
    }

    #[test]
    fn a_listing_learns_the_cap_from_a_full_page_or_from_items_after_a_short_first_page() {
        let mut p = listing();
        p.accept(page(0..100, None)).expect("page");
        assert_eq!(p.cap(), PageCap::Whole);
        // Known to give whole pages: a short first page ends a listing at once.
        let mut p = Pager::new("user_id", 100, ListKind::Listing, PageCap::Whole);
        assert_eq!(p.accept(page(0..30, None)).expect("page").1, Next::Done);

        let mut p = listing();
        assert_eq!(p.accept(page(0..30, None)).expect("page").1, Next::Fetch(30));
        assert_eq!(p.cap(), PageCap::Unknown, "a short first page alone says nothing");
        p.accept(page(30..45, None)).expect("page");
        assert_eq!(p.cap(), PageCap::At(30), "items after it: the server caps at 30");
        // A total that says more follow a short page says the same at once.
        let mut p = listing();
        p.accept(page(0..30, Some(95))).expect("page");
        assert_eq!(p.cap(), PageCap::At(30));
        // An empty page after a short first one teaches nothing.
        let mut p = listing();
        p.accept(page(0..30, None)).expect("page");
        p.accept(page(30..30, None)).expect("page");
        assert_eq!(p.cap(), PageCap::Unknown);
    }

    #[test]
    fn a_short_page_ends_the_listing() {
        let mut p = listing();
        assert_eq!(p.accept(page(0..10, None)).expect("page").1, Next::Fetch(10));
        assert_eq!(p.accept(page(10..13, None)).expect("page").1, Next::Done);
    }

    #[test]
    fn a_capped_limit_keeps_paging_at_the_servers_page_size() {
        let mut p = listing();
        // Asked for 100, the server gives 5 at a time.
        assert_eq!(p.accept(page(0..5, None)).expect("page").1, Next::Fetch(5));
        assert_eq!(p.accept(page(5..10, None)).expect("page").1, Next::Fetch(10));
        assert_eq!(p.accept(page(10..10, None)).expect("page").1, Next::Done);
    }

    #[test]
    fn a_total_is_trusted_over_page_lengths() {
        let mut p = listing();
        assert_eq!(p.accept(page(0..5, Some(8))).expect("page").1, Next::Fetch(5));
        assert_eq!(p.accept(page(5..8, Some(8))).expect("page").1, Next::Done);
    }

    #[test]
    fn a_server_ignoring_offset_is_an_error_not_a_loop() {
        let mut p = listing();
        assert_eq!(p.accept(page(0..5, None)).expect("page").1, Next::Fetch(5));
        let err = p.accept(page(0..5, None)).expect_err("repeated page");
        assert!(matches!(&err, Refusal::Untrusted(m) if m.contains("ignores `offset`")), "{err:?}");
    }

    #[test]
    fn a_listing_longer_than_max_objects_is_refused_once_it_passes_the_limit() {
        let mut p = listing().max_objects(12);
        assert_eq!(p.accept(page(0..5, None)).expect("page").1, Next::Fetch(5));
        assert_eq!(p.accept(page(5..10, None)).expect("page").1, Next::Fetch(10));
        let err = p.accept(page(10..15, None)).expect_err("past the limit");
        assert_eq!(
            err,
            Refusal::TooMany("the list holds more than 12 objects, the limit of `--max-objects`".into())
        );
        // Exactly at the limit is allowed.
        let mut p = listing().max_objects(10);
        p.accept(page(0..5, None)).expect("page");
        assert_eq!(p.accept(page(5..10, Some(10))).expect("page").1, Next::Done);
    }

    #[test]
    fn repeated_ids_count_towards_max_objects_so_a_server_repeating_all_but_one_still_ends() {
        let mut p = listing().max_objects(20);
        let mut pages = 0;
        let err = loop {
            // Each page: the previous page's ids but one, and one new id.
            match p.accept(page(pages..pages + 5, None)) {
                Ok(_) => pages += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Refusal::TooMany(_)), "{err:?}");
        assert_eq!(pages, 4, "20 items received in 4 pages of 5");
    }

    #[test]
    fn a_total_past_max_objects_is_refused_at_once() {
        let mut p = listing().max_objects(1000);
        let err = p.accept(page(0..5, Some(1_000_000_000_000))).expect_err("huge total");
        assert_eq!(
            err,
            Refusal::TooMany(
                "the API says the list holds 1000000000000 objects, more than 1000, the limit of `--max-objects`"
                    .into()
            )
        );
    }

    #[test]
    fn a_huge_total_asks_for_at_most_a_bounded_round_of_pages() {
        let mut r = Rounds::new(16, true);
        let offsets = r.next(100, 100, Some(1_000_000_000_000));
        assert_eq!(offsets.len(), MAX_ROUND_PAGES);
        assert_eq!(offsets.first(), Some(&100));
        assert_eq!(offsets.last(), Some(&(100 + 100 * (MAX_ROUND_PAGES - 1))));
    }

    #[test]
    fn pages_asked_for_ahead_count_on_from_their_own_offset() {
        let mut p = listing();
        assert_eq!(p.accept(page(0..5, Some(14))).expect("page").1, Next::Fetch(5));
        // One item went away while listing: the page at 5 is short, the one at 10 is on time.
        assert_eq!(p.accept_at(5, page(5..9, Some(13))).expect("page").1, Next::Fetch(9));
        assert_eq!(p.accept_at(10, page(10..13, Some(13))).expect("page").1, Next::Done);
    }

    #[test]
    fn without_a_total_windows_double_up_to_the_bound() {
        let mut r = Rounds::new(4, true);
        assert_eq!(Rounds::first(), [0]);
        assert_eq!(r.next(10, 10, None), [10, 20]);
        assert_eq!(r.next(30, 10, None), [30, 40, 50, 60]);
        assert_eq!(r.next(70, 10, None), [70, 80, 90, 100], "never wider than the bound");
        // The server's page length is the step.
        assert_eq!(r.next(110, 5, None), [110, 115, 120, 125]);
    }

    #[test]
    fn a_total_asks_for_every_remaining_page_and_a_window_if_the_list_grew_past_it() {
        let mut r = Rounds::new(4, true);
        assert_eq!(r.next(10, 10, Some(65)), [10, 20, 30, 40, 50, 60]);
        assert_eq!(r.next(70, 10, Some(65)), [70, 80]);
    }

    #[test]
    fn not_ahead_is_one_page_at_a_time() {
        let mut r = Rounds::new(16, false);
        assert_eq!(r.next(10, 10, None), [10]);
        assert_eq!(r.next(20, 10, Some(100)), [20]);
        assert_eq!(Rounds::new(0, true).next(10, 10, None), [10], "a bound of 0 is taken as 1");
    }

    #[test]
    fn an_id_key_is_the_same_exactly_when_the_text_is() {
        let id = "4f1c2b1e-9d0a-4c55-8a55-2b9b2d1f0a11";
        assert!(matches!(IdKey::of(id), IdKey::Uuid(_)));
        assert_eq!(IdKey::of(id), IdKey::of(id));
        assert_ne!(IdKey::of(id), IdKey::of(&id.to_uppercase()), "another spelling is another text");
        assert_eq!(IdKey::of("17"), IdKey::Text("17".into()));
        assert_eq!(json!({"user_id": 17}).id("user_id"), Some(IdKey::Text("17".into())));
    }

    #[test]
    fn single_repeated_ids_are_dropped() {
        let mut p = listing();
        p.accept(page(0..5, None)).expect("page");
        let (fresh, next) = p.accept(page(4..9, None)).expect("page");
        assert_eq!(fresh.len(), 4);
        assert_eq!(next, Next::Fetch(10));
    }
}
