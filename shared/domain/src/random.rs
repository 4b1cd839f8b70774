//! The randomness port: the OS CSPRNG in production, deterministic bytes in unit tests.

/// A source of cryptographically secure random bytes.
pub trait Random {
    /// Fills `buf` with random bytes.
    ///
    /// # Errors
    /// The platform's generator failed; callers must not fall back to weaker sources.
    fn fill(&self, buf: &mut [u8]) -> anyhow::Result<()>;
}

/// The operating system's CSPRNG (`getrandom`; WASI `random` inside a component).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> anyhow::Result<()> {
        getrandom::fill(buf).map_err(|e| anyhow::anyhow!("the OS random generator failed: {e}"))
    }
}
