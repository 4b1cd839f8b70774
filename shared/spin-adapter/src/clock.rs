//! The domain's [`Elapsed`] clock on the WASI monotonic clock: a push stream's time since
//! its admission, a command's since its own.

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

impl Elapsed for Since {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
