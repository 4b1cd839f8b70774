//! Waiting for a condition: the one place tests poll, so every wait is bounded and ends
//! the same way.

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `check` every `every` until it gives `Some`, for at most `within` (it always runs
/// at least once, and once more at the deadline); `None` when it never did, for the
/// caller to fail with what it was waiting for.
pub async fn until<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    until_async(within, every, || std::future::ready(check())).await
}

/// [`until`] for a check that awaits (a request, say).
pub async fn until_async<T, F: Future<Output = Option<T>>>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}
