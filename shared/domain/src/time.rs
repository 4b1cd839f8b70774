//! Wall-clock time as Unix milliseconds, the unit stored in Redis, and a monotonic
//! [`Elapsed`] clock for time spent within one request.
//!
//! There is deliberately no "now" here: the one clock that decides expiry, idempotency
//! and budgets is Redis' (`TIME`, read inside the scripts), so that instances with skewed
//! clocks agree. Times come back from the stores.

use std::time::{Duration, UNIX_EPOCH};

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T10:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.0)).to_string()
    }
}

/// A monotonic clock: milliseconds since some start (a push stream's opening, a
/// command's admission). It only measures time spent here; it never says what time it is.
pub trait Elapsed: std::fmt::Debug {
    fn elapsed_ms(&self) -> u64;
}

/// Milliseconds of a duration, for Redis `PX` arguments.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_000_000_123).to_rfc3339(),
            "2026-11-18T11:06:40.123Z"
        );
    }
}
