//! `Recording`: an `apply::Progress` that keeps every event, in order, for assertions.

use std::sync::{Mutex, PoisonError};

use ozform::apply::{Outcome, Progress};
use ozform::output::plain_line;
use ozform::plan::{Action, Address};

/// A progress event, as `Recording` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started { address: Address, action: Action },
    Finished { address: Address, action: Action, outcome: Outcome },
    AllFinished,
}

#[derive(Debug, Default)]
pub struct Recording {
    events: Mutex<Vec<Event>>,
}

impl Recording {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The plain text line of every finished step, in order.
    pub fn lines(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::Finished { address, action, outcome } => Some(plain_line(address, *action, outcome)),
                Event::Started { .. } | Event::AllFinished => None,
            })
            .collect()
    }

    fn push(&self, event: Event) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(event);
    }
}

impl Progress for Recording {
    fn started(&self, address: &Address, action: Action) {
        self.push(Event::Started { address: address.clone(), action });
    }
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        self.push(Event::Finished { address: address.clone(), action, outcome: outcome.clone() });
    }
    fn all_finished(&self) {
        self.push(Event::AllFinished);
    }
}
