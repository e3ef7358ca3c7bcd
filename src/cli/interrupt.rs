//! SIGINT and SIGTERM (a cancelled CI job sends one, then the other).
//!
//! `apply` stops gracefully: the first signal flips a `watch` flag the executor reads before it
//! starts each step, so no new step starts, the steps in flight finish and their tokens are
//! stored; the summary says what was not started and the exit code is 130 (SIGINT) or 143
//! (SIGTERM). A second signal exits at once with the same code (the OS releases the token
//! store's lock; the next apply recovers the tokens of the stores that were in flight). `plan`
//! and `export` have nothing to keep: the first signal exits at once with its code.
//!
//! The handlers are installed before the command does anything observable, so a signal either
//! finds them or kills a process that had not started.

use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::error::{Error, Exit};

/// Which signal stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    /// The exit code of the contract: 128 + the signal number.
    pub fn exit(self) -> Exit {
        match self {
            Signal::Int => Exit::Interrupted,
            Signal::Term => Exit::Terminated,
        }
    }
}

/// The graceful stop of one `apply`: `cancel()` for the executor, `signal()` once one came.
#[derive(Debug, Clone)]
pub struct Interrupt {
    cancel: watch::Receiver<bool>,
    first: Arc<OnceLock<Signal>>,
}

impl Interrupt {
    /// For `apply`: the first signal asks to stop gracefully, a second exits at once.
    pub fn graceful() -> Result<Self, Error> {
        let (tx, cancel) = watch::channel(false);
        let first = Arc::new(OnceLock::new());
        let seen = Arc::clone(&first);
        listen(move |signal| {
            if seen.set(signal).is_ok() {
                let _ = tx.send(true);
                tracing::warn!(
                    "interrupted: finishing the steps in flight and storing their tokens (again to stop at once)"
                );
                false
            } else {
                true
            }
        })?;
        Ok(Self { cancel, first })
    }

    /// For `plan` and `export`: the first signal exits at once with its code.
    pub fn immediate() -> Result<(), Error> {
        listen(|_| true)
    }

    /// The flag the executor reads before starting each step.
    pub fn cancel(&self) -> watch::Receiver<bool> {
        self.cancel.clone()
    }

    /// The first signal, if one came.
    pub fn signal(&self) -> Option<Signal> {
        self.first.get().copied()
    }
}

/// Install handlers for SIGINT and SIGTERM now; on each signal call `exit_now`, and exit with
/// the code of the first signal when it says so.
fn listen(mut exit_now: impl FnMut(Signal) -> bool + Send + 'static) -> Result<(), Error> {
    let install = |kind: SignalKind| {
        signal(kind).map_err(|e| Error::Io {
            action: "install a handler for",
            path: format!("signal {}", kind.as_raw_value()),
            reason: e.to_string(),
        })
    };
    let mut int = install(SignalKind::interrupt())?;
    let mut term = install(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut first = None;
        loop {
            let signal = tokio::select! {
                Some(()) = int.recv() => Signal::Int,
                Some(()) = term.recv() => Signal::Term,
                else => return,
            };
            let first = *first.get_or_insert(signal);
            if exit_now(signal) {
                std::process::exit(first.exit() as i32);
            }
        }
    });
    Ok(())
}
