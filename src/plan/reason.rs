//! Why a token is planned: a closed set of reasons, each rendered to one sentence for the
//! `reason` of a `token/<email>` change, and saved as `token_reason` (its `kind` and data) so
//! that a saved plan reads back the same reason. Pure.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why the planner issues a token. Checked in this order; the first that holds is the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenReason {
    /// The user does not exist live yet; its token follows its creation.
    UserBeingCreated,
    /// The user is created with a generated password and has no `token: {issue: true}`: a
    /// token is issued anyway, so that its record keeps the password.
    GeneratedPassword,
    /// The token store holds no token for the lower-cased email.
    NoToken,
    /// The stored token was issued by another installation.
    OtherApiUrl { stored: String, live: String },
    /// The stored token belongs to another user id: the user was recreated.
    OtherUser { stored: String, live: String },
    /// The stored token expires (or expired) within `--rotate-before`.
    Expiring {
        expire_date: f64,
        now: f64,
        #[serde(rename = "rotate_before_secs", with = "secs")]
        rotate_before: Duration,
    },
    /// `--rotate-tokens` was given.
    Rotation,
    /// The sentence of a plan saved before `token_reason` was written (format 1 from an earlier
    /// ozform): shown as it was saved. Never written as a `token_reason`.
    #[serde(skip)]
    Stated(String),
}

/// A `Duration` as whole seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

impl fmt::Display for TokenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenReason::UserBeingCreated => f.write_str("the user is being created"),
            TokenReason::GeneratedPassword => f.write_str(
                "the user is being created with a generated password, which is kept with its token",
            ),
            TokenReason::NoToken => f.write_str("no token for this user in the token store"),
            TokenReason::OtherApiUrl { stored, live } => {
                write!(f, "the stored token was issued by `{stored}`, not `{live}` (a new installation)")
            }
            TokenReason::OtherUser { stored, live } => write!(
                f,
                "the stored token is for user id `{stored}`, the live user is `{live}` (the user was recreated)"
            ),
            TokenReason::Expiring { expire_date, now, rotate_before } => {
                let when = epoch_to_rfc3339(*expire_date);
                let within = human(rotate_before.as_secs_f64());
                if expire_date <= now {
                    write!(f, "the stored token expired at {when}, {} ago", human(now - expire_date))
                } else {
                    write!(
                        f,
                        "the stored token expires at {when}, in {}, within `--rotate-before` {within}",
                        human(expire_date - now)
                    )
                }
            }
            TokenReason::Rotation => f.write_str("`--rotate-tokens` was given"),
            TokenReason::Stated(sentence) => f.write_str(sentence),
        }
    }
}

/// RFC 3339 (UTC, seconds) of an epoch time; the bare number when it is out of range.
pub(crate) fn epoch_to_rfc3339(secs: f64) -> String {
    match Duration::try_from_secs_f64(secs).ok().and_then(|d| UNIX_EPOCH.checked_add(d)) {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("{secs} (epoch seconds)"),
    }
}

/// A coarse human duration: whole days, else hours, else minutes.
fn human(secs: f64) -> String {
    // Rounded down on purpose: "in 29 days" for 29.9 days reads as "within 30 days".
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = secs.max(0.0).floor() as u64;
    let plural = |n: u64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    if s >= 86_400 {
        plural(s / 86_400, "day")
    } else if s >= 3600 {
        plural(s / 3600, "hour")
    } else {
        plural(s / 60, "minute")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiring_reason_names_the_date_and_the_window() {
        let r = TokenReason::Expiring {
            expire_date: 86_400.0 * 10.0,
            now: 0.0,
            rotate_before: Duration::from_secs(30 * 86_400),
        };
        assert_eq!(
            r.to_string(),
            "the stored token expires at 1970-01-11T00:00:00Z, in 10 days, within `--rotate-before` 30 days"
        );
    }

    #[test]
    fn an_expired_token_says_how_long_ago() {
        let r = TokenReason::Expiring { expire_date: 0.0, now: 7200.0, rotate_before: Duration::ZERO };
        assert_eq!(r.to_string(), "the stored token expired at 1970-01-01T00:00:00Z, 2 hours ago");
    }

    #[test]
    fn an_out_of_range_expiry_prints_the_number() {
        assert_eq!(epoch_to_rfc3339(-5.0), "-5 (epoch seconds)");
    }
}
