//! The follower of the git source: a task that fetches now, then polls every interval with
//! jitter, retries failures with backoff, wakes on demand (SIGHUP), and reports to the daemon.
//!
//! It does not swap trees: it hands a ready tree to the daemon's loop and waits for its answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::remote::{Fetched, Remote};

/// First retry delay after a failed fetch; doubles up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest delay between retries of a failing fetch.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What the follower tells the daemon.
#[derive(Debug)]
pub enum Report {
    /// A new commit's tree is ready; the daemon swaps it in and answers on `ack` (true when
    /// swapped). The follower waits for the answer before anything else.
    Ready {
        /// What was fetched.
        fetched: Fetched,
        /// Answer: swapped or not.
        ack: oneshot::Sender<bool>,
    },
    /// The fetch worked and the branch has not moved.
    UpToDate {
        /// The branch's commit.
        commit: String,
    },
    /// The fetch or the checkout failed; the current tree keeps running.
    Failed {
        /// What went wrong (no credentials in it).
        error: String,
        /// Failures in a row.
        failures: u32,
        /// When the next attempt happens (unless woken earlier).
        retry_in: Duration,
    },
}

/// Handle on the follower task: wake it for an immediate fetch.
#[derive(Debug, Clone)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    /// Asks for a fetch now (SIGHUP). Several requests while one runs coalesce into one more.
    pub fn fetch_now(&self) {
        self.0.notify_one();
    }
}

/// The delay before retry number `failures` (1-based): 2 s doubling to 5 min, ±20%.
pub fn retry_delay(failures: u32, sample: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = RETRY_FIRST.saturating_mul(1u32 << exp).min(RETRY_MAX);
    base.mul_f64(0.8 + 0.4 * sample.clamp(0.0, 1.0))
}

/// The wait between polls: `interval` plus up to a tenth of it, so many hosts following one
/// repository do not fetch in lockstep.
pub fn poll_delay(interval: Duration, sample: f64) -> Duration {
    interval + interval.mul_f64(0.1 * sample.clamp(0.0, 1.0))
}

/// Starts the follower: fetch now, then every `interval` (with jitter), after failures with
/// backoff, and whenever `Trigger::fetch_now` is called. Ends when `tx` closes.
pub fn follow(mut remote: Remote, interval: Duration, tx: mpsc::Sender<Report>) -> Trigger {
    let notify = Arc::new(Notify::new());
    let trigger = Trigger(Arc::clone(&notify));
    tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            let wait = match remote.sync().await {
                Ok(Some(fetched)) => {
                    failures = 0;
                    let (ack, answer) = oneshot::channel();
                    if tx.send(Report::Ready { fetched, ack }).await.is_err() {
                        return;
                    }
                    let swapped = answer.await.unwrap_or(false);
                    remote.settle(swapped);
                    poll_delay(interval, rand::random::<f64>())
                }
                Ok(None) => {
                    failures = 0;
                    let commit = remote.current().unwrap_or_default().to_owned();
                    if tx.send(Report::UpToDate { commit }).await.is_err() {
                        return;
                    }
                    poll_delay(interval, rand::random::<f64>())
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    remote.settle(false);
                    let retry_in = retry_delay(failures, rand::random::<f64>());
                    let report = Report::Failed {
                        error: crate::error::chain(&err).to_string(),
                        failures,
                        retry_in,
                    };
                    if tx.send(report).await.is_err() {
                        return;
                    }
                    retry_in
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = notify.notified() => {}
            }
        }
    });
    trigger
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_two_seconds_to_five_minutes() {
        assert_eq!(retry_delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(retry_delay(2, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(30, 0.5), RETRY_MAX);
        assert!(retry_delay(1, 0.0) >= Duration::from_millis(1600));
        assert!(poll_delay(Duration::from_secs(30), 1.0) <= Duration::from_secs(33));
    }
}
