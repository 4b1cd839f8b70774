//! The login challenge: its states, the moves between them, and the policy numbers.
//!
//! ```text
//!            ┌────────── suppressed (blocked address: no mail, never confirmable)
//! pending ───┼────────── sent ────────────┐
//!            └────────── delivery_failed ─┤──► confirmed ─► (replays within the window)
//!                                         ├──► expired     (lifetime over, or superseded)
//!                                         └──► exhausted   (attempt limit reached)
//! ```
//!
//! A challenge can be confirmed from `pending` (the mail may arrive before its outcome
//! is recorded; the Redis store leaves a mailed challenge `pending`, and records only a
//! failed mail), `sent` and `delivery_failed`. Only the newest challenge of an address
//! can be confirmed. `confirmed`, `expired` and `exhausted` are terminal. The moves are
//! made atomically in Redis, one script per call (`send.lua`, `record_delivery.lua`,
//! `confirm.lua` in the adapter), and pinned by the end-to-end tests; this module names
//! the states and holds the policy numbers.

use std::time::Duration;

/// Where a challenge is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeState {
    /// Made, its code mailed or on its way (a store need not mark a mailed one `Sent`).
    Pending,
    /// Mailed: a delivery outcome, and a stored state only where a store records it.
    Sent,
    Suppressed,
    DeliveryFailed,
    Confirmed,
    Expired,
    Exhausted,
}

impl ChallengeState {
    /// Every state, for exhaustive tests.
    pub const ALL: [ChallengeState; 7] = [
        Self::Pending,
        Self::Sent,
        Self::Suppressed,
        Self::DeliveryFailed,
        Self::Confirmed,
        Self::Expired,
        Self::Exhausted,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Suppressed => "suppressed",
            Self::DeliveryFailed => "delivery_failed",
            Self::Confirmed => "confirmed",
            Self::Expired => "expired",
            Self::Exhausted => "exhausted",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The challenge rules, all configurable through Spin variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengePolicy {
    /// Digits per code, 6–10.
    pub code_length: u8,
    /// How long a code can be confirmed.
    pub lifetime: Duration,
    /// Wrong codes allowed before the challenge is dead.
    pub max_attempts: u32,
    /// Minimum time between two mails to one address.
    pub resend_interval: Duration,
    /// How long a repeated confirm returns the same session.
    pub idempotency_window: Duration,
}

impl Default for ChallengePolicy {
    fn default() -> Self {
        Self {
            code_length: 6,
            lifetime: Duration::from_secs(600),
            max_attempts: 5,
            resend_interval: Duration::from_secs(60),
            idempotency_window: Duration::from_secs(300),
        }
    }
}

/// A policy value out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} must be {expected}, got {got:?}")]
pub struct PolicyError {
    pub setting: &'static str,
    pub expected: &'static str,
    pub got: String,
}

fn number<T: std::str::FromStr + PartialOrd>(
    setting: &'static str,
    expected: &'static str,
    raw: Option<&str>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, PolicyError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.trim().parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(PolicyError {
            setting,
            expected,
            got: raw.to_string(),
        }),
    }
}

impl ChallengePolicy {
    /// Reads the policy from settings by name (`None` = default).
    ///
    /// # Errors
    /// A value that does not parse or is out of range; the setting is named.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, PolicyError> {
        let d = Self::default();
        let secs = |s: Duration| s.as_secs();
        Ok(Self {
            code_length: number(
                "code_length",
                "an integer from 6 to 10",
                get("code_length").as_deref(),
                d.code_length,
                6..=10,
            )?,
            lifetime: Duration::from_secs(number(
                "challenge_ttl_seconds",
                "an integer from 1 to 86400",
                get("challenge_ttl_seconds").as_deref(),
                secs(d.lifetime),
                1..=86_400,
            )?),
            max_attempts: number(
                "challenge_max_attempts",
                "an integer from 1 to 100",
                get("challenge_max_attempts").as_deref(),
                d.max_attempts,
                1..=100,
            )?,
            resend_interval: Duration::from_secs(number(
                "resend_interval_seconds",
                "an integer from 0 to 3600",
                get("resend_interval_seconds").as_deref(),
                secs(d.resend_interval),
                0..=3_600,
            )?),
            idempotency_window: Duration::from_secs(number(
                "confirm_idempotency_seconds",
                "an integer from 1 to 3600",
                get("confirm_idempotency_seconds").as_deref(),
                secs(d.idempotency_window),
                1..=3_600,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in ChallengeState::ALL {
            assert_eq!(ChallengeState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ChallengeState::parse("bogus"), None);
    }

    #[test]
    fn the_policy_has_the_documented_defaults_and_ranges() {
        let policy = ChallengePolicy::from_settings(|_| None).expect("defaults");
        assert_eq!(policy, ChallengePolicy::default());
        assert_eq!(policy.code_length, 6);
        assert_eq!(policy.lifetime, Duration::from_secs(600));
        let err = ChallengePolicy::from_settings(|k| (k == "code_length").then(|| "11".into()))
            .expect_err("out of range");
        assert_eq!(err.setting, "code_length");
        assert!(
            ChallengePolicy::from_settings(|k| (k == "challenge_max_attempts").then(|| "x".into()))
                .is_err()
        );
    }
}
