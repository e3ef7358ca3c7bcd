//! Paging of list endpoints with `offset` / `limit`, as a pure state machine.
//!
//! The transport fetches; `Pager` decides whether another page is needed, `Rounds` which pages
//! to ask for together. It stops on an empty
//! page, on reaching `total` when the envelope gives one, and otherwise on a page shorter than
//! the first one (a server that caps `limit` below what was asked keeps paging at its own page
//! size). A page made only of ids already seen means the server ignores `offset`: that is an
//! error, never an endless loop. Single repeated ids (an object created while listing shifts
//! the pages) are dropped.
//!
//! Bounded whatever the server answers: a listing ends with an error once the server has sent
//! more than `max_objects` items (`--max-objects`), or as soon as its `total` says it holds
//! more; so the ids kept to spot repeats, and the pages, are bounded too. A round never asks
//! for more than `MAX_ROUND_PAGES` pages, whatever `total` says: nothing is sized from it.

use std::collections::HashSet;

use serde_json::Value;

use super::wire::Page;

/// What to do after a page.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Fetch the page at this offset.
    Fetch(usize),
    Done,
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
    seen: HashSet<String>,
    /// Items the server sent so far, repeated ones included.
    received: usize,
    max_objects: usize,
}

impl Pager {
    /// `id_key` names the id field of the items (`company_id`, `user_id`). Unbounded until
    /// `max_objects` bounds it.
    pub fn new(id_key: &'static str) -> Self {
        Self {
            id_key,
            offset: 0,
            first_len: None,
            seen: HashSet::new(),
            received: 0,
            max_objects: usize::MAX,
        }
    }

    /// Refuse the listing once the server has sent more than `max` items, or says it holds more.
    #[must_use]
    pub fn max_objects(mut self, max: usize) -> Self {
        self.max_objects = max;
        self
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Take the page asked for at `offset` (pages asked for ahead, in offset order): as
    /// `accept`, with the next offset counted from the end of this page.
    pub fn accept_at(&mut self, offset: usize, page: Page) -> Result<(Vec<Value>, Next), Refusal> {
        self.offset = offset;
        self.accept(page)
    }

    /// Take one page: the items not seen before, and what to do next. `Err` says why the
    /// server's paging cannot be trusted, or that the listing is longer than allowed.
    pub fn accept(&mut self, page: Page) -> Result<(Vec<Value>, Next), Refusal> {
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
            let repeated = item.get(self.id_key).map(id_text).is_some_and(|id| !self.seen.insert(id));
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
        let first = *self.first_len.get_or_insert(len);
        let more = match page.total {
            Some(total) => (self.offset as u64) < total,
            None => len >= first,
        };
        Ok((fresh, if more { Next::Fetch(self.offset) } else { Next::Done }))
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

fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(ids: std::ops::Range<u32>, total: Option<u64>) -> Page {
        Page { items: ids.map(|i| json!({"user_id": i.to_string()})).collect(), total }
    }

    #[test]
    fn a_short_page_ends_the_listing() {
        let mut p = Pager::new("user_id");
        assert_eq!(p.accept(page(0..10, None)).expect("page").1, Next::Fetch(10));
        assert_eq!(p.accept(page(10..13, None)).expect("page").1, Next::Done);
    }

    #[test]
    fn a_capped_limit_keeps_paging_at_the_servers_page_size() {
        let mut p = Pager::new("user_id");
        // Asked for 100, the server gives 5 at a time.
        assert_eq!(p.accept(page(0..5, None)).expect("page").1, Next::Fetch(5));
        assert_eq!(p.accept(page(5..10, None)).expect("page").1, Next::Fetch(10));
        assert_eq!(p.accept(page(10..10, None)).expect("page").1, Next::Done);
    }

    #[test]
    fn a_total_is_trusted_over_page_lengths() {
        let mut p = Pager::new("user_id");
        assert_eq!(p.accept(page(0..5, Some(8))).expect("page").1, Next::Fetch(5));
        assert_eq!(p.accept(page(5..8, Some(8))).expect("page").1, Next::Done);
    }

    #[test]
    fn a_server_ignoring_offset_is_an_error_not_a_loop() {
        let mut p = Pager::new("user_id");
        assert_eq!(p.accept(page(0..5, None)).expect("page").1, Next::Fetch(5));
        let err = p.accept(page(0..5, None)).expect_err("repeated page");
        assert!(matches!(&err, Refusal::Untrusted(m) if m.contains("ignores `offset`")), "{err:?}");
    }

    #[test]
    fn a_listing_longer_than_max_objects_is_refused_once_it_passes_the_limit() {
        let mut p = Pager::new("user_id").max_objects(12);
        assert_eq!(p.accept(page(0..5, None)).expect("page").1, Next::Fetch(5));
        assert_eq!(p.accept(page(5..10, None)).expect("page").1, Next::Fetch(10));
        let err = p.accept(page(10..15, None)).expect_err("past the limit");
        assert_eq!(
            err,
            Refusal::TooMany("the list holds more than 12 objects, the limit of `--max-objects`".into())
        );
        // Exactly at the limit is allowed.
        let mut p = Pager::new("user_id").max_objects(10);
        p.accept(page(0..5, None)).expect("page");
        assert_eq!(p.accept(page(5..10, Some(10))).expect("page").1, Next::Done);
    }

    #[test]
    fn repeated_ids_count_towards_max_objects_so_a_server_repeating_all_but_one_still_ends() {
        let mut p = Pager::new("user_id").max_objects(20);
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
        let mut p = Pager::new("user_id").max_objects(1000);
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
        let mut p = Pager::new("user_id");
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
    fn single_repeated_ids_are_dropped() {
        let mut p = Pager::new("user_id");
        p.accept(page(0..5, None)).expect("page");
        let (fresh, next) = p.accept(page(4..9, None)).expect("page");
        assert_eq!(fresh.len(), 4);
        assert_eq!(next, Next::Fetch(10));
    }
}
