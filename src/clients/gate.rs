//! Health gates: poll a condition until it holds or a deadline passes, never a fixed sleep. On a
//! timeout the error says what was waited for and what was last seen.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What one poll saw: done with a value, or not yet with a description of the current state.
pub enum Poll<T> {
    Ready(T),
    NotYet(String),
}

/// What prints a long wait's line.
type Printer = Box<dyn Fn(&str) + Send + Sync>;

/// Where a long wait says how it goes (the ui registers the printer; without one, nothing).
static PROGRESS: std::sync::OnceLock<Printer> = std::sync::OnceLock::new();

/// A wait says what it waits for once it has lasted this long, and again at this interval.
const SAY_AFTER: Duration = Duration::from_secs(10);

/// Register the printer of long waits (once per process: the ui's).
pub fn on_progress(printer: impl Fn(&str) + Send + Sync + 'static) {
    let _ = PROGRESS.set(Box::new(printer));
}

/// The line a wait prints when it has lasted `elapsed`.
fn progress_line(what: &str, elapsed: Duration, timeout: Duration, last: &str) -> String {
    format!(
        "waiting for {what}: {} s of at most {} s; now: {last}",
        elapsed.as_secs(),
        timeout.as_secs()
    )
}

/// Poll `probe` every `interval` until it is ready or `timeout` has passed. A wait longer than
/// ten seconds says what it waits for, how long it has and what it sees, every ten seconds.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    hint: &str,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Poll<T>>,
{
    let start = Instant::now();
    let mut last = String::from("nothing yet");
    let mut next_say = SAY_AFTER;
    loop {
        let attempt = Instant::now();
        match probe().await {
            Poll::Ready(value) => {
                tracing::debug!("{what}: ready after {:.1}s", start.elapsed().as_secs_f64());
                return Ok(value);
            }
            Poll::NotYet(seen) => {
                if seen != last {
                    tracing::debug!("{what}: {seen}");
                }
                last = seen;
            }
        }
        if start.elapsed() >= next_say && start.elapsed() < timeout {
            if let Some(printer) = PROGRESS.get() {
                printer(&progress_line(what, start.elapsed(), timeout, &last));
            }
            next_say = start.elapsed() + SAY_AFTER;
        }
        if start.elapsed() >= timeout {
            return Err(Error::failure(
                format!(
                    "timed out after {}s waiting for {what}; last seen: {last}",
                    timeout.as_secs()
                ),
                Some(hint.to_owned()),
            ));
        }
        let spent = attempt.elapsed();
        if spent < interval {
            tokio::time::sleep(interval - spent).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_the_last_state_seen_on_timeout() {
        let error = wait_for(
            "the thing",
            Duration::from_millis(30),
            Duration::from_millis(10),
            "look at it",
            || async { Poll::<()>::NotYet("still starting".into()) },
        )
        .await
        .expect_err("times out");
        let text = error.to_string();
        assert!(
            text.contains("waiting for the thing; last seen: still starting"),
            "{text}"
        );
    }

    #[test]
    fn a_long_wait_says_what_it_waits_for_and_how_long_it_has() {
        assert_eq!(
            progress_line(
                "n4 to stream from its leader",
                Duration::from_secs(20),
                Duration::from_secs(180),
                "n4 is creating replica"
            ),
            "waiting for n4 to stream from its leader: 20 s of at most 180 s; now: n4 is creating replica"
        );
    }

    #[tokio::test]
    async fn returns_as_soon_as_ready() {
        let mut n = 0;
        let value = wait_for(
            "count",
            Duration::from_secs(5),
            Duration::from_millis(1),
            "",
            || {
                n += 1;
                let current = n;
                async move {
                    if current >= 3 {
                        Poll::Ready(current)
                    } else {
                        Poll::NotYet(format!("{current}"))
                    }
                }
            },
        )
        .await
        .ok();
        assert_eq!(value, Some(3));
    }
}
