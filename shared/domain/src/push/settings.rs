//! Push settings, read from Spin variables by name on every request.

use crate::gateway::ports::StreamClaim;
use crate::login::settings::{SettingsError, number};

/// How long a stream stays open before it ends with `max_duration` (the client resumes).
///
/// The default fits the strictest hosted platform we target: Fermyon Cloud and Akamai
/// Functions both end a request after 30 s (their published limits), so 25 s leaves the
/// gate and the terminal event room. SpinKube sets no limit; raise it there.
pub const DEFAULT_MAX_DURATION_SECONDS: u64 = 25;
/// A heartbeat comment after this long without anything sent.
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 10;
/// Events kept per address slot.
pub const DEFAULT_MAX_LEN: u64 = 1_000;
/// How long an event is kept.
pub const DEFAULT_MAX_AGE_SECONDS: u64 = 86_400;
/// Open streams one device session may hold at once.
pub const DEFAULT_MAX_STREAMS_PER_SESSION: u64 = 3;
/// How long after its maximum duration a stream's claim still counts when no stream
/// released it (the instance died): room for the terminal event's write.
pub const CLAIM_GRACE_MS: u64 = 15_000;
/// How long past its maximum duration a stream's last writes may take (a write under
/// way, then the terminal event): a write that cannot complete by then ends the stream.
/// With the default maximum, 25 s + 4 s stays inside a 30 s request limit, so a stream
/// ends by itself (and gives its place back) before a platform cuts it.
pub const WRITE_GRACE_MS: u64 = 4_000;
/// How long a stream may go on writing what one read found before it reads the session
/// again: a slow client's batch stops there, so that a revoke or a block ends the stream
/// within about this long (the revoke-to-terminal goal is 1 s), not after the batch.
pub const RECHECK_AFTER_MS: u64 = 1_000;
/// The largest payload a published event may carry (its JSON bytes).
pub const MAX_EVENT_PAYLOAD_BYTES: usize = 16 * 1024;

/// What the push routes read from their variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSettings {
    /// `push_max_duration_seconds` (default 25, 1-3600), as ms.
    pub max_duration_ms: u64,
    /// `push_heartbeat_seconds` (default 10, 1-60), as ms.
    pub heartbeat_ms: u64,
    /// `push_stream_max_len` (default 1000, 1-100000).
    pub max_len: u64,
    /// `push_stream_max_age_seconds` (default 86400, 60-2592000), as ms.
    pub max_age_ms: u64,
    /// `push_max_streams_per_session` (default 3, 1-100).
    pub max_streams_per_session: u64,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            max_duration_ms: DEFAULT_MAX_DURATION_SECONDS * 1000,
            heartbeat_ms: DEFAULT_HEARTBEAT_SECONDS * 1000,
            max_len: DEFAULT_MAX_LEN,
            max_age_ms: DEFAULT_MAX_AGE_SECONDS * 1000,
            max_streams_per_session: DEFAULT_MAX_STREAMS_PER_SESSION,
        }
    }
}

impl PushSettings {
    /// Every variable the push settings read.
    pub const NAMES: [&'static str; 5] = [
        "push_max_duration_seconds",
        "push_heartbeat_seconds",
        "push_stream_max_len",
        "push_stream_max_age_seconds",
        "push_max_streams_per_session",
    ];

    /// The claim a subscribe makes on its session's open streams.
    pub fn claim(&self) -> StreamClaim {
        StreamClaim {
            max_streams: self.max_streams_per_session,
            ends_in_ms: self.max_duration_ms,
            grace_ms: CLAIM_GRACE_MS,
        }
    }

    /// Reads every setting through `get` (`None`: not set, the default).
    ///
    /// # Errors
    /// A value out of its range (the message names the variable).
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let d = Self::default();
        let seconds = |name, min, max, default: u64| -> Result<u64, SettingsError> {
            Ok(number(&get, name, min, max)?.map_or(default, |s| s * 1000))
        };
        Ok(Self {
            max_duration_ms: seconds("push_max_duration_seconds", 1, 3600, d.max_duration_ms)?,
            heartbeat_ms: seconds("push_heartbeat_seconds", 1, 60, d.heartbeat_ms)?,
            max_len: number(&get, "push_stream_max_len", 1, 100_000)?.unwrap_or(d.max_len),
            max_age_ms: seconds("push_stream_max_age_seconds", 60, 30 * 86_400, d.max_age_ms)?,
            max_streams_per_session: number(&get, "push_max_streams_per_session", 1, 100)?
                .unwrap_or(d.max_streams_per_session),
        })
    }
}
