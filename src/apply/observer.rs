//! Progress of an apply: the `Observer` seam and its implementations.
//!
//! Observers never write to the terminal themselves (only `output` does): they hand finished
//! lines to a `LineWriter` callback the caller builds from its `Output`. The one exception is
//! `ProgressObserver`, whose indicatif bar draws itself on stderr. Events carry addresses,
//! actions and error messages, never a secret: the executor holds passwords and tokens only as
//! `Secret`s and puts none into an `Outcome`.

use std::sync::{Arc, Mutex, PoisonError};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::output::{LogFormat, Output};
use crate::plan::{Action, Address};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request succeeded (and, for a token, the sink write too).
    Done,
    /// A create whose object turned out to exist already (an earlier attempt or a concurrent
    /// writer made it); the existing object was read back and adopted.
    Adopted,
    /// The step failed; the message names the request or the sink path, never a secret.
    Failed { error: String },
    /// Not attempted because `dependency` (a change it depends on, directly or not) failed.
    Skipped { dependency: Address },
}

impl Outcome {
    /// A short word for logs: `done`, `adopted`, `failed`, `skipped`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Adopted => "adopted",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
        }
    }
}

/// Told about each step as it starts and as it ends. Called from the executor's task; must
/// not block for long. A skipped step is `finished` (with `Outcome::Skipped`) without having
/// `started`; every other step gets `started` then `finished`, once each.
pub trait Observer: Send + Sync {
    fn started(&self, address: &Address, action: Action);
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome);
    /// Every step has finished (the executor calls this once, last).
    fn all_finished(&self) {}
}

/// The observer `ozform apply` uses for `output`: JSON lines with `--log-format json`, a
/// progress bar when stderr is a terminal, else plain lines; all on stderr, none when quiet.
pub fn for_output(output: &Output, total: usize) -> Arc<dyn Observer> {
    let status = |output: &Output| {
        let output = output.clone();
        move |line: &str| output.status(line)
    };
    match output.log_format {
        LogFormat::Json => Arc::new(JsonObserver::new(status(output))),
        LogFormat::Text if output.stderr_tty && output.verbosity >= 0 => {
            Arc::new(ProgressObserver::new(u64::try_from(total).unwrap_or(u64::MAX), status(output)))
        }
        LogFormat::Text => Arc::new(PlainObserver::new(status(output))),
    }
}

/// Where an observer's lines go (e.g. `move |l| output.status(l)`). Lines have no newline.
pub type LineWriter = Box<dyn Fn(&str) + Send + Sync>;

fn past_tense(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Issue => "issued and stored",
    }
}

/// The text line of a finished step, e.g. `+ company/Acme: created`.
pub fn plain_line(address: &Address, action: Action, outcome: &Outcome) -> String {
    let symbol = action.symbol();
    match outcome {
        Outcome::Done => format!("{symbol} {address}: {}", past_tense(action)),
        Outcome::Adopted => format!("{symbol} {address}: already existed, adopted"),
        Outcome::Failed { error } => format!("{symbol} {address}: {action} failed: {error}"),
        Outcome::Skipped { dependency } => {
            format!("{symbol} {address}: skipped because `{dependency}` failed")
        }
    }
}

/// One text line per finished step.
pub struct PlainObserver {
    write: LineWriter,
}

impl PlainObserver {
    pub fn new(write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self { write: Box::new(write) }
    }
}

impl Observer for PlainObserver {
    fn started(&self, _: &Address, _: Action) {}
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        (self.write)(&plain_line(address, action, outcome));
    }
}

/// One JSON object per line for every event (`--log-format json`):
/// `{"event":"started","address":…,"action":…}` and
/// `{"event":"finished","address":…,"action":…,"outcome":"done|adopted|failed|skipped"[,"error":…][,"dependency":…]}`.
pub struct JsonObserver {
    write: LineWriter,
}

impl JsonObserver {
    pub fn new(write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self { write: Box::new(write) }
    }
}

impl Observer for JsonObserver {
    fn started(&self, address: &Address, action: Action) {
        let line = json!({"event": "started", "address": address, "action": action});
        (self.write)(&line.to_string());
    }
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        let mut line =
            json!({"event": "finished", "address": address, "action": action, "outcome": outcome.kind()});
        match outcome {
            Outcome::Failed { error } => line["error"] = json!(error),
            Outcome::Skipped { dependency } => line["dependency"] = json!(dependency),
            Outcome::Done | Outcome::Adopted => {}
        }
        (self.write)(&line.to_string());
    }
}

/// A progress bar on a terminal; failures and skips are also written as lines above the bar.
pub struct ProgressObserver {
    bar: ProgressBar,
    write: LineWriter,
}

impl ProgressObserver {
    /// A bar of `total` steps drawn on stderr.
    pub fn new(total: u64, write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self::with_bar(ProgressBar::new(total), write)
    }

    /// Use this bar (e.g. `ProgressBar::hidden()` in tests).
    pub fn with_bar(bar: ProgressBar, write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        // The template is a constant; if indicatif ever rejected it, the default style is fine.
        let style = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Self { bar, write: Box::new(write) }
    }

    /// Steps finished so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Remove the bar (the executor does, through `all_finished`, before the summary is printed).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for ProgressObserver {
    fn started(&self, address: &Address, action: Action) {
        self.bar.set_message(format!("{} {address}", action.symbol()));
    }
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        self.bar.inc(1);
        if matches!(outcome, Outcome::Failed { .. } | Outcome::Skipped { .. }) {
            let line = plain_line(address, action, outcome);
            self.bar.suspend(|| (self.write)(&line));
        }
    }
    fn all_finished(&self) {
        self.finish();
    }
}

/// An observed event, as `RecordingObserver` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started { address: Address, action: Action },
    Finished { address: Address, action: Action, outcome: Outcome },
    AllFinished,
}

/// Keeps every event, in order (tests).
#[derive(Debug, Default)]
pub struct RecordingObserver {
    events: Mutex<Vec<Event>>,
}

impl RecordingObserver {
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

impl Observer for RecordingObserver {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Email;

    fn collector() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Send + Sync + 'static) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        (lines, move |l: &str| sink.lock().expect("lock").push(l.to_string()))
    }

    #[test]
    fn plain_observer_writes_one_line_per_finished_step() {
        let (lines, write) = collector();
        let o = PlainObserver::new(write);
        let a = Address::Company("Acme".into());
        o.started(&a, Action::Create);
        o.finished(&a, Action::Create, &Outcome::Done);
        let t = Address::Token(Email::new("a@x"));
        o.finished(&t, Action::Issue, &Outcome::Skipped { dependency: a.clone() });
        assert_eq!(
            *lines.lock().expect("lock"),
            vec![
                "+ company/Acme: created".to_string(),
                "* token/a@x: skipped because `company/Acme` failed".to_string()
            ]
        );
    }

    #[test]
    fn json_observer_writes_one_object_per_event() {
        let (lines, write) = collector();
        let o = JsonObserver::new(write);
        let a = Address::ServiceUser(Email::new("a@x"));
        o.started(&a, Action::Update);
        o.finished(&a, Action::Update, &Outcome::Failed { error: "PATCH /api/users/1 answered 403".into() });
        let lines = lines.lock().expect("lock").clone();
        let parsed: Vec<serde_json::Value> =
            lines.iter().map(|l| serde_json::from_str(l).expect("json line")).collect();
        assert_eq!(parsed[0], json!({"event": "started", "address": "service_user/a@x", "action": "update"}));
        assert_eq!(parsed[1]["outcome"], "failed");
        assert_eq!(parsed[1]["error"], "PATCH /api/users/1 answered 403");
    }

    #[test]
    fn progress_observer_counts_steps_and_writes_only_problems() {
        let (lines, write) = collector();
        let o = ProgressObserver::with_bar(ProgressBar::hidden(), write);
        let a = Address::Company("Acme".into());
        o.finished(&a, Action::Create, &Outcome::Done);
        o.finished(&a, Action::Update, &Outcome::Failed { error: "boom".into() });
        assert_eq!(o.position(), 2);
        assert_eq!(*lines.lock().expect("lock"), vec!["~ company/Acme: update failed: boom".to_string()]);
        o.finish();
    }
}
