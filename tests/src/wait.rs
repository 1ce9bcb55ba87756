//! Polling with a deadline instead of sleeps.

use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it returns `Some` or `deadline` passes.
///
/// Returns the value, or an error naming `what` and how long it waited.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() >= deadline {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
