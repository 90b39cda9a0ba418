//! The bot's in-memory windows: fixed-window reply limits and the recent-message-id window.
//!
//! Owns the arithmetic only, on instants the caller passes (so tests drive a fake clock). It
//! does not know the store (the message log's unique constraint is the durable half of dedup,
//! used by the pipeline) and does not decide what a refusal sends.

use std::collections::{HashMap, VecDeque};

use jiff::{SignedDuration, Timestamp};

/// What a limiter says about one more reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Allowed (and counted once taken).
    Allowed,
    /// Refused; `first` is true for the first refusal in this window (it gets the warning).
    Refused {
        /// First refusal in the window.
        first: bool,
    },
}

/// A fixed window, like the original limiter: the window opens at the first counted reply and
/// lasts `window`; a reply more than `window` after that opens a new one.
#[derive(Debug, Clone, Default)]
pub(crate) struct FixedWindow {
    start: Option<Timestamp>,
    count: u32,
    warned: bool,
}

impl FixedWindow {
    fn expired(&self, now: Timestamp, window: SignedDuration) -> bool {
        self.start
            .is_none_or(|start| now.duration_since(start) > window)
    }

    /// Whether one more reply fits, without counting it. A refusal marks the window warned.
    pub(crate) fn check(&mut self, now: Timestamp, max: u32, window: SignedDuration) -> Verdict {
        if self.expired(now, window) || self.count < max {
            return Verdict::Allowed;
        }
        let first = !self.warned;
        self.warned = true;
        Verdict::Refused { first }
    }

    /// Counts one reply (after `check` allowed it).
    pub(crate) fn take(&mut self, now: Timestamp, window: SignedDuration) {
        if self.expired(now, window) {
            *self = FixedWindow {
                start: Some(now),
                count: 1,
                warned: false,
            };
        } else {
            self.count += 1;
        }
    }

    /// True when the window is over and the entry carries no information.
    pub(crate) fn idle(&self, now: Timestamp, window: SignedDuration) -> bool {
        self.expired(now, window)
    }
}

/// Message ids seen recently: capacity-bounded, entries expire after a TTL. Oldest first.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    capacity: usize,
    ttl: SignedDuration,
    order: VecDeque<(String, Timestamp)>,
    seen: HashMap<String, Timestamp>,
}

impl DedupWindow {
    pub(crate) fn new(capacity: usize, ttl: SignedDuration) -> Self {
        Self {
            capacity,
            ttl,
            order: VecDeque::new(),
            seen: HashMap::new(),
        }
    }

    /// Records `id` at `now`; false when it was already seen within the TTL.
    pub(crate) fn insert(&mut self, id: &str, now: Timestamp) -> bool {
        while let Some((old, at)) = self.order.front() {
            if now.duration_since(*at) <= self.ttl {
                break;
            }
            if self.seen.get(old) == Some(at) {
                self.seen.remove(old);
            }
            self.order.pop_front();
        }
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_owned(), now);
        self.order.push_back((id.to_owned(), now));
        while self.seen.len() > self.capacity {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&old) == Some(&at) {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// How many ids are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_fixed_window_warns_once_then_stays_silent_until_it_ends() {
        let window = SignedDuration::from_secs(60);
        let mut w = FixedWindow::default();
        for i in 0..3 {
            assert_eq!(w.check(t(i), 3, window), Verdict::Allowed);
            w.take(t(i), window);
        }
        assert_eq!(w.check(t(10), 3, window), Verdict::Refused { first: true });
        assert_eq!(w.check(t(20), 3, window), Verdict::Refused { first: false });
        // Exactly 60 s after the first reply is still inside (strictly greater ends it).
        assert_eq!(w.check(t(60), 3, window), Verdict::Refused { first: false });
        assert_eq!(w.check(t(61), 3, window), Verdict::Allowed);
        w.take(t(61), window);
        assert_eq!(w.check(t(62), 1, window), Verdict::Refused { first: true });
    }

    #[test]
    fn dedup_forgets_after_the_ttl_and_beyond_capacity() {
        let mut d = DedupWindow::new(3, SignedDuration::from_secs(300));
        assert!(d.insert("a", t(0)));
        assert!(!d.insert("a", t(299)));
        assert!(!d.insert("a", t(300)));
        assert!(d.insert("a", t(301)));
        for id in ["b", "c", "d"] {
            assert!(d.insert(id, t(302)));
        }
        assert_eq!(d.len(), 3);
        // "a" was the oldest and got evicted.
        assert!(d.insert("a", t(303)));
        assert!(!d.insert("d", t(303)));
    }
}
