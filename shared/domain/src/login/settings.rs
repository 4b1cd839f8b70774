//! Login settings: read from Spin variables (by name) once per request.

use crate::challenge::{ChallengePolicy, PolicyError};
use crate::client::{ClientPolicy, ClientPolicyError};
use crate::crypto::{ServerKey, WeakSecret};
use crate::login::ports::LimitPolicy;
use crate::rate_limit::{EdgeLimits, RateError};

/// The longest a session may live (`session_lifetime_seconds` at most: 365 days).
pub const MAX_SESSION_LIFETIME_SECONDS: u64 = 31_536_000;

/// The cap on consecutive wrong codes per e-mail address (across challenges): at the cap,
/// confirms of that address are refused until `lockout` has passed since the last wrong
/// code, a confirm succeeds (impossible while locked), or the internal API unblocks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLockout {
    /// `failed_confirm_cap`: consecutive wrong codes allowed (1–100, NIST SP 800-63B's
    /// ceiling; default 20: with the default budgets an attacker gets about 20 guesses a
    /// day at one address, see README).
    pub cap: u32,
    /// `failed_confirm_lockout_seconds`: how long the count is kept after the last wrong
    /// code (default 1 day).
    pub lockout: std::time::Duration,
}

/// How long sessions live (`session_lifetime_seconds`, default 30 days) and how long
/// they may go unused (`session_idle_timeout_seconds`, default 7 days): a device-key
/// session is long-lived, but one left unused for a week should log in again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetime {
    pub lifetime: std::time::Duration,
    pub idle_timeout: std::time::Duration,
}

impl Default for SessionLifetime {
    fn default() -> Self {
        Self {
            lifetime: std::time::Duration::from_secs(30 * 86_400),
            idle_timeout: std::time::Duration::from_secs(7 * 86_400),
        }
    }
}

impl Default for FailureLockout {
    fn default() -> Self {
        Self {
            cap: 20,
            lockout: std::time::Duration::from_secs(86_400),
        }
    }
}

/// Everything the login use cases are configured with.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub key: ServerKey,
    pub policy: ChallengePolicy,
    pub limits: EdgeLimits,
    pub limit_policy: LimitPolicy,
    pub lockout: FailureLockout,
    pub sessions: SessionLifetime,
    /// Which client a request counts against (trusted proxies, IPv6 prefix).
    pub clients: ClientPolicy,
    /// Where users live (`user_directory`): with `rest`, a challenge keeps its address
    /// for the confirm to hand the user service; with `redis` it keeps none.
    pub directory: DirectoryKind,
}

/// A setting that is missing or wrong: the service cannot run safely.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("code_hmac_key is not set")]
    MissingSecret,
    /// A rotation without pinned tags would move every address to new keys.
    #[error(
        "code_hmac_previous_key is set but address_tag_key is not: set address_tag_key to \
         the first code_hmac_key before rotating it (README, Rotate the code key)"
    )]
    UnpinnedTags,
    #[error(transparent)]
    WeakSecret(#[from] WeakSecret),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error(transparent)]
    Client(#[from] ClientPolicyError),
    #[error("session_limit_policy must be `reject` or `evict_oldest`, got {0:?}")]
    LimitPolicy(String),
    #[error("user_directory must be `redis` or `rest`, got {0:?}")]
    UserDirectory(String),
    #[error("{name} must be a whole number from {min} to {max}, got {got:?}")]
    OutOfRange {
        name: &'static str,
        min: u64,
        max: u64,
        got: String,
    },
}

/// The server keys from `code_hmac_key`, `code_hmac_previous_key` and `address_tag_key`
/// (see [`crate::crypto`], "Rotation"); an empty value is unset.
///
/// # Errors
/// `code_hmac_key` is missing, a secret is too short, or `code_hmac_previous_key` is set
/// without `address_tag_key`.
pub fn server_key(get: &impl Fn(&str) -> Option<String>) -> Result<ServerKey, SettingsError> {
    let set = |name: &str| get(name).filter(|s| !s.is_empty());
    let code = set("code_hmac_key").ok_or(SettingsError::MissingSecret)?;
    let previous = set("code_hmac_previous_key");
    let tag = set("address_tag_key");
    // A rotation is under way: the tags must not follow the code key to its new value.
    if previous.is_some() && tag.is_none() {
        return Err(SettingsError::UnpinnedTags);
    }
    Ok(ServerKey::from_secrets(
        code.as_bytes(),
        previous.as_deref().map(str::as_bytes),
        tag.as_deref().map(str::as_bytes),
    )?)
}

impl LoginSettings {
    /// Reads all settings through `get` (`None` = not set: default).
    ///
    /// # Errors
    /// See [`SettingsError`].
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let limit_policy = match get("session_limit_policy").as_deref().map(str::trim) {
            None | Some("reject") => LimitPolicy::Reject,
            Some("evict_oldest") => LimitPolicy::EvictOldest,
            Some(other) => return Err(SettingsError::LimitPolicy(other.to_string())),
        };
        let defaults = FailureLockout::default();
        let lockout = FailureLockout {
            cap: u32::try_from(
                number(&get, "failed_confirm_cap", 1, 100)?.unwrap_or(u64::from(defaults.cap)),
            )
            .unwrap_or(defaults.cap),
            lockout: number(&get, "failed_confirm_lockout_seconds", 1, 31_536_000)?
                .map_or(defaults.lockout, std::time::Duration::from_secs),
        };
        let session_defaults = SessionLifetime::default();
        let sessions = SessionLifetime {
            lifetime: number(
                &get,
                "session_lifetime_seconds",
                1,
                MAX_SESSION_LIFETIME_SECONDS,
            )?
            .map_or(session_defaults.lifetime, std::time::Duration::from_secs),
            idle_timeout: number(&get, "session_idle_timeout_seconds", 1, 31_536_000)?.map_or(
                session_defaults.idle_timeout,
                std::time::Duration::from_secs,
            ),
        };
        Ok(Self {
            key: server_key(&get)?,
            policy: ChallengePolicy::from_settings(&get)?,
            limits: EdgeLimits::from_settings(&get)?,
            limit_policy,
            lockout,
            sessions,
            clients: ClientPolicy::from_settings(&get)?,
            directory: DirectoryKind::parse(get("user_directory").as_deref())?,
        })
    }
}

/// A whole-number setting in `min..=max` (`None` = not set).
///
/// # Errors
/// A value that is not a whole number in range (surrounding blanks are allowed).
pub fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, SettingsError> {
    let Some(raw) = get(name) else {
        return Ok(None);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(SettingsError::OutOfRange {
            name,
            min,
            max,
            got: raw,
        }),
    }
}

/// `user_directory`: where users come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryKind {
    /// Built in: the address's user lives in Redis (the default).
    Redis,
    /// The team's user service.
    Rest,
}

impl DirectoryKind {
    /// Parses the variable (`None`: not set, the default).
    ///
    /// # Errors
    /// Any value but `redis` or `rest`: never a silent fallback.
    pub fn parse(raw: Option<&str>) -> Result<Self, SettingsError> {
        match raw.map(str::trim) {
            None | Some("redis") => Ok(Self::Redis),
            Some("rest") => Ok(Self::Rest),
            Some(other) => Err(SettingsError::UserDirectory(other.to_string())),
        }
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
            .map_err(|e| format!("session limit {text:?} is not a non-negative integer: {e}")),
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
        assert_eq!(ok.lockout, FailureLockout::default());
    }

    #[test]
    fn a_previous_code_key_without_pinned_tags_is_refused() {
        const KEY: &str = "0123456789abcdef0123456789abcdef";
        const OLD: &str = "fedcba9876543210fedcba9876543210";
        const UNPINNED: &[(&str, &str)] =
            &[("code_hmac_key", KEY), ("code_hmac_previous_key", OLD)];
        assert!(matches!(
            LoginSettings::from_settings(with(UNPINNED)),
            Err(SettingsError::UnpinnedTags)
        ));
        const PINNED: &[(&str, &str)] = &[
            ("code_hmac_key", KEY),
            ("code_hmac_previous_key", OLD),
            ("address_tag_key", OLD),
        ];
        assert!(LoginSettings::from_settings(with(PINNED)).is_ok());
    }

    #[test]
    fn the_failure_cap_and_lockout_are_bounded_and_named_when_wrong() {
        let secret = ("code_hmac_key", "0123456789abcdef0123456789abcdef");
        const VALID: &[(&str, &str)] = &[
            ("code_hmac_key", "0123456789abcdef0123456789abcdef"),
            ("failed_confirm_cap", "3"),
            ("failed_confirm_lockout_seconds", "60"),
        ];
        let ok = LoginSettings::from_settings(with(VALID)).expect("valid");
        assert_eq!(ok.lockout.cap, 3);
        assert_eq!(ok.lockout.lockout, std::time::Duration::from_secs(60));
        for (name, bad) in [
            ("failed_confirm_cap", "0"),
            ("failed_confirm_cap", "101"),
            ("failed_confirm_cap", "many"),
            ("failed_confirm_lockout_seconds", "0"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(vec![secret, (name, bad)].into_boxed_slice());
            let err = LoginSettings::from_settings(with(pairs)).expect_err("refused");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_user_directory_is_redis_or_rest_and_nothing_else() {
        assert_eq!(DirectoryKind::parse(None).ok(), Some(DirectoryKind::Redis));
        assert_eq!(
            DirectoryKind::parse(Some(" rest ")).ok(),
            Some(DirectoryKind::Rest)
        );
        let err = DirectoryKind::parse(Some("ldap")).expect_err("refused");
        assert!(err.to_string().contains("user_directory"), "{err}");
    }

    #[test]
    fn the_session_limit_is_absent_a_number_or_invalid() {
        assert_eq!(parse_session_limit(None), Ok(None));
        assert_eq!(parse_session_limit(Some("3")), Ok(Some(3)));
        assert!(parse_session_limit(Some("three")).is_err());
        assert!(parse_session_limit(Some("-1")).is_err());
    }
}
