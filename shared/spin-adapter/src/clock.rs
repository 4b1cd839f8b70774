//! The domain's [`Elapsed`] clock on the WASI monotonic clock: a push stream's time since
//! its admission, a command's since its own. And the instance's wall clock, for what
//! needs no shared clock ([`wall_ms`]).

use edge_auth_domain::time::Elapsed;

/// Milliseconds since it was started ([`Since::now`]).
#[derive(Debug, Clone, Copy)]
pub struct Since(std::time::Instant);

impl Since {
    /// A clock that starts now.
    pub fn now() -> Self {
        Self(std::time::Instant::now())
    }
}

/// The instance's wall clock, Unix ms (0 before 1970). Only for what one instance dates
/// for itself, such as when it signed its key set; shared decisions (expiry, budgets,
/// freshness) take Redis' clock.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Elapsed for Since {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
