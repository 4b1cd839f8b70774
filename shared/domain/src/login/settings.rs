//! Login settings: read from Spin variables (by name) once per request.

use crate::challenge::{ChallengePolicy, PolicyError};
use crate::crypto::{ServerKey, WeakSecret};
use crate::login::ports::LimitPolicy;
use crate::rate_limit::{EdgeLimits, RateError};

/// Everything the login use cases are configured with.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub key: ServerKey,
    pub policy: ChallengePolicy,
    pub limits: EdgeLimits,
    pub limit_policy: LimitPolicy,
}

/// A setting that is missing or wrong: the service cannot run safely.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("code_hmac_key is not set")]
    MissingSecret,
    #[error(transparent)]
    WeakSecret(#[from] WeakSecret),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error("session_limit_policy must be `reject` or `evict_oldest`, got {0:?}")]
    LimitPolicy(String),
}

impl LoginSettings {
    /// Reads all settings through `get` (`None` = not set: default).
    ///
    /// # Errors
    /// See [`SettingsError`].
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let secret = get("code_hmac_key")
            .filter(|s| !s.is_empty())
            .ok_or(SettingsError::MissingSecret)?;
        let limit_policy = match get("session_limit_policy").as_deref().map(str::trim) {
            None | Some("reject") => LimitPolicy::Reject,
            Some("evict_oldest") => LimitPolicy::EvictOldest,
            Some(other) => return Err(SettingsError::LimitPolicy(other.to_string())),
        };
        Ok(Self {
            key: ServerKey::new(secret.as_bytes())?,
            policy: ChallengePolicy::from_settings(&get)?,
            limits: EdgeLimits::from_settings(&get)?,
            limit_policy,
        })
    }
}

/// The operator's session limit (stored in Redis): absent means no limit.
///
/// # Errors
/// Anything but a non-negative integer: the caller fails closed.
pub fn parse_session_limit(raw: Option<&str>) -> Result<Option<u32>, String> {
    match raw {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("session limit {text:?} is not a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn settings_need_a_long_enough_secret() {
        assert!(matches!(
            LoginSettings::from_settings(with(&[])),
            Err(SettingsError::MissingSecret)
        ));
        assert!(matches!(
            LoginSettings::from_settings(with(&[("code_hmac_key", "short")])),
            Err(SettingsError::WeakSecret(_))
        ));
        let ok = LoginSettings::from_settings(with(&[(
            "code_hmac_key",
            "0123456789abcdef0123456789abcdef",
        )]))
        .expect("valid");
        assert_eq!(ok.limit_policy, LimitPolicy::Reject);
    }

    #[test]
    fn the_session_limit_is_absent_a_number_or_invalid() {
        assert_eq!(parse_session_limit(None), Ok(None));
        assert_eq!(parse_session_limit(Some("3")), Ok(Some(3)));
        assert!(parse_session_limit(Some("three")).is_err());
        assert!(parse_session_limit(Some("-1")).is_err());
    }
}
