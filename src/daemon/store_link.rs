//! The daemon's link to the state store: the store when it is up, or the knowledge that it is
//! down, why, and when to try again.
//!
//! Owns connecting (and migrating) with a doubling retry delay, marking the store down when an
//! operation finds it unavailable, and the moment it last came up (heartbeats are judged from
//! there). It runs no query of its own beyond the connection check; callers do their reads and
//! writes and hand the result to `check`.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::store::{self, Role, Store};

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// The store, or the knowledge that it is down and when to try again.
pub(super) struct StoreLink {
    url: String,
    store: Option<Store>,
    down: Option<String>,
    retry_at: Instant,
    retry_delay: Duration,
    recovered: bool,
    /// When the store was last (re)connected.
    up_since: Option<Timestamp>,
}

impl StoreLink {
    pub(super) fn new(url: String) -> Self {
        Self {
            url,
            store: None,
            down: None,
            retry_at: Instant::now(),
            retry_delay: Duration::from_secs(1),
            recovered: false,
            up_since: None,
        }
    }

    /// Why the store is down, if it is.
    pub(super) fn down(&self) -> Option<&str> {
        self.down.as_deref()
    }

    /// When the store was last (re)connected.
    pub(super) fn up_since(&self) -> Option<Timestamp> {
        self.up_since
    }

    /// The store when it is believed up.
    pub(super) fn get(&self) -> Option<Store> {
        if self.down.is_some() {
            None
        } else {
            self.store.clone()
        }
    }

    pub(super) fn describe(&self) -> String {
        match &self.down {
            None if self.store.is_some() => "up".to_owned(),
            None => "not connected".to_owned(),
            Some(why) => format!("down ({why})"),
        }
    }

    /// Connects and migrates; on failure marks the store down and schedules a retry.
    pub(super) async fn try_connect(&mut self) {
        let res = async {
            let store = match &self.store {
                Some(s) => s.clone(),
                None => Store::connect(&self.url, Role::Daemon).await?,
            };
            // A write, not a read: a full disk still serves reads, and a read probe would
            // call the store up only for the next write to find it down again. Before the
            // migrations, so a database that does not answer is reported with its cause.
            store.check_writable().await?;
            store.migrate().await?;
            Ok::<_, store::Error>(store)
        }
        .await;
        match res {
            Ok(store) => {
                if self.down.take().is_some() || self.store.is_none() {
                    info!(target: LOG_TARGET, backend = store.backend_name(), "store is up");
                }
                self.recovered = true;
                self.up_since = Some(Timestamp::now());
                self.store = Some(store);
                self.retry_delay = Duration::from_secs(1);
            }
            Err(err) => self.mark_down(&err),
        }
    }

    /// Connects without migrating (planning must not change the schema).
    pub(super) async fn connect_read_only(&mut self) {
        match Store::connect(&self.url, Role::Client).await {
            Ok(store) => {
                // Judge heartbeats as they are: this store has been up all along as far as
                // a one-shot plan can tell.
                self.up_since = Some(Timestamp::MIN);
                self.store = Some(store);
            }
            Err(err) => self.mark_down(&err),
        }
    }

    pub(super) async fn try_connect_if_due(&mut self) {
        if (self.down.is_some() || self.store.is_none()) && Instant::now() >= self.retry_at {
            self.try_connect().await;
        }
    }

    /// True once after the store came (back) up.
    pub(super) fn just_recovered(&mut self) -> bool {
        std::mem::take(&mut self.recovered)
    }

    fn mark_down(&mut self, err: &store::Error) {
        let why = crate::error::chain(err).to_string();
        if self.down.as_deref() != Some(why.as_str()) && err.is_configuration() {
            error!(
                target: LOG_TARGET,
                error = %why,
                retry_in = ?self.retry_delay,
                "store refused by the settings of database_url (fix them); supervising from the files",
            );
        } else if self.down.as_deref() != Some(why.as_str()) {
            warn!(
                target: LOG_TARGET,
                error = %why,
                retry_in = ?self.retry_delay,
                "store unavailable; supervising from the files",
            );
        }
        self.down = Some(why);
        self.retry_at = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(Duration::from_secs(30));
    }

    /// Unwraps a store result; an unavailable store is marked down, other errors are logged.
    pub(super) fn check<T>(&mut self, res: store::Result<T>) -> Option<T> {
        match res {
            Ok(v) => Some(v),
            Err(err) if err.is_unavailable() => {
                self.mark_down(&err);
                None
            }
            Err(err) => {
                warn!(
                    target: LOG_TARGET,
                    error = %crate::error::chain(&err),
                    "store operation failed",
                );
                None
            }
        }
    }
}
