//! `StepError`: why one step of an apply failed, as a kind that the report, the progress
//! events (`error_kind` in JSON lines) and the exit code read, and a message for people.
//!
//! The message names the request (method, path, status, the API's `error_code` and message) or
//! the token store, never a secret; the kind says what the failure means for what was done.

use std::fmt;

use serde::Serialize;

use super::effects::{EffectError, EffectErrorKind};

/// What a failed step means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepErrorKind {
    /// The API refused the request: nothing happened.
    Refused,
    /// The live installation contradicts the plan in a way only a person can settle: a twin
    /// company, a user in another company or of another kind, an ambiguous name, an object the
    /// plan relies on that is gone.
    Conflict,
    /// The request may or may not have taken effect (no answer, a gateway's error); the next
    /// apply reads back before acting.
    OutcomeUnknown,
    /// The API did its part but the token store could not keep (or drop) the result: a token
    /// issued and not stored, a removed user's token still stored.
    StoreFailed,
    /// The step could not be carried out as planned: the request could not be made, or the
    /// plan's entry is unusable.
    Failed,
}

impl StepErrorKind {
    /// The word for logs and JSON events.
    pub fn as_str(self) -> &'static str {
        match self {
            StepErrorKind::Refused => "refused",
            StepErrorKind::Conflict => "conflict",
            StepErrorKind::OutcomeUnknown => "outcome_unknown",
            StepErrorKind::StoreFailed => "store_failed",
            StepErrorKind::Failed => "failed",
        }
    }
}

impl fmt::Display for StepErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step failed: its kind, and a message without any secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub kind: StepErrorKind,
    pub message: String,
}

impl StepError {
    pub fn new(kind: StepErrorKind, message: impl fmt::Display) -> Self {
        Self { kind, message: message.to_string() }
    }

    pub fn conflict(message: impl fmt::Display) -> Self {
        Self::new(StepErrorKind::Conflict, message)
    }

    pub fn failed(message: impl fmt::Display) -> Self {
        Self::new(StepErrorKind::Failed, message)
    }

    pub fn store_failed(message: impl fmt::Display) -> Self {
        Self::new(StepErrorKind::StoreFailed, message)
    }

    /// The same kind, with `context` said before the message.
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self { kind: self.kind, message: format!("{context}{}", self.message) }
    }
}

impl From<EffectError> for StepError {
    fn from(e: EffectError) -> Self {
        let kind = match e.kind {
            EffectErrorKind::Refused => StepErrorKind::Refused,
            EffectErrorKind::AlreadyExists => StepErrorKind::Conflict,
            EffectErrorKind::OutcomeUnknown { .. } => StepErrorKind::OutcomeUnknown,
            EffectErrorKind::Failed => StepErrorKind::Failed,
        };
        Self { kind, message: e.message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_error_keeps_its_message_and_maps_to_the_kind_of_what_it_means() {
        let cases = [
            (EffectErrorKind::Refused, StepErrorKind::Refused),
            (EffectErrorKind::AlreadyExists, StepErrorKind::Conflict),
            (EffectErrorKind::OutcomeUnknown { answered: true }, StepErrorKind::OutcomeUnknown),
            (EffectErrorKind::OutcomeUnknown { answered: false }, StepErrorKind::OutcomeUnknown),
            (EffectErrorKind::Failed, StepErrorKind::Failed),
        ];
        for (effect, step) in cases {
            let e = StepError::from(EffectError::new(effect, "POST /api/users/ answered 403"));
            assert_eq!((e.kind, e.to_string().as_str()), (step, "POST /api/users/ answered 403"));
        }
    }

    #[test]
    fn context_goes_before_the_message_and_keeps_the_kind() {
        let e = StepError::store_failed("disk full").context("the token was issued but not stored: ");
        assert_eq!(e.kind, StepErrorKind::StoreFailed);
        assert_eq!(e.to_string(), "the token was issued but not stored: disk full");
        assert_eq!(serde_json::to_value(e.kind).expect("json"), "store_failed");
    }
}
