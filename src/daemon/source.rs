//! The loop's side of git: following a repository and reading a tenant directory that is a
//! git checkout.
//!
//! Owns `Follow` (which source the daemon reads and its health), the loop's reaction to the
//! follower's reports (swap the new tree in between passes, re-read, record the revision,
//! report failures as events and in status), and the rule that a checkout in the middle of an
//! update is not read: the read waits until no git operation holds it and HEAD stayed put
//! across the read, looking again every `CHECKOUT_RETRY` (a timer wakes the loop for it, so a
//! `git pull` is read as soon as git lets go, not at the next tick). The git mechanics are in `source::git`; the files are read by the loop's
//! `DirSource`. It plans nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::daemon::DaemonConfig;
use crate::reconcile::{Action, Plan, Reason};
use crate::source::git::{self, Checkout, Remote, Report, Trigger};
use crate::status::SourceHealth;

use super::{Daemon, Event};
use crate::source::watch::Change;

/// How soon a busy checkout is looked at again.
const CHECKOUT_RETRY: Duration = Duration::from_millis(50);
/// After this long busy, a checkout is read anyway (a crashed git leaves `index.lock` behind,
/// and supervision must not stop for it).
const CHECKOUT_STALE: Duration = Duration::from_secs(60);

/// Where the daemon's tenant files come from.
#[derive(Debug)]
pub(super) enum Follow {
    /// A plain directory.
    Dir,
    /// The tenant directory lies inside a git checkout someone else updates.
    Checkout {
        checkout: Checkout,
        /// A read is owed (files changed, SIGHUP, rescan) and due at this instant.
        due: Option<Instant>,
        /// The desired state may mix two commits: no pass until a clean read.
        hold: bool,
        /// Since when reads have found the checkout busy.
        busy_since: Option<Instant>,
        /// `Checkout::stamp` at the last look.
        stamp: String,
        health: SourceHealth,
    },
    /// A repository followed by the fetch task.
    Git {
        trigger: Option<Trigger>,
        health: SourceHealth,
    },
}

impl Follow {
    /// The source for `cfg`, the directory the `DirSource` reads, and the revision known now.
    pub(super) fn for_config(cfg: &DaemonConfig) -> (Self, PathBuf, Option<String>) {
        if let Some(g) = &cfg.git {
            let revision = git::current_commit(&cfg.state_dir);
            let health = SourceHealth {
                kind: "git",
                url: Some(git::redact_url(&g.url)),
                branch: Some(g.branch.clone()),
                revision: revision.clone(),
                ..SourceHealth::default()
            };
            let follow = Follow::Git {
                trigger: None,
                health,
            };
            return (follow, git::tenants_dir(g, &cfg.state_dir), revision);
        }
        let dir = cfg.tenants_dir.clone();
        match Checkout::find(&dir) {
            Some(checkout) => (
                Follow::Checkout {
                    stamp: checkout.stamp(),
                    checkout,
                    due: Some(Instant::now()),
                    // Nothing was read cleanly yet.
                    hold: true,
                    busy_since: None,
                    health: SourceHealth {
                        kind: "checkout",
                        ..SourceHealth::default()
                    },
                },
                dir,
                None,
            ),
            None => (Follow::Dir, dir, None),
        }
    }

    /// What status shows about the source.
    pub(super) fn health(&self) -> Option<SourceHealth> {
        match self {
            Follow::Dir => None,
            Follow::Checkout { health, .. } | Follow::Git { health, .. } => Some(health.clone()),
        }
    }

    /// No pass may run: the tenant files read last may mix two commits.
    pub(super) fn holding(&self) -> bool {
        matches!(self, Follow::Checkout { hold: true, .. })
    }

    /// A deferred checkout read is due.
    pub(super) fn due(&self) -> bool {
        matches!(self, Follow::Checkout { due: Some(at), .. } if *at <= Instant::now())
    }
}

impl Daemon {
    /// Starts the fetch task of a followed repository; its reports arrive as `Event::Git`.
    pub(super) fn start_following(&mut self, remote: Remote) {
        let Follow::Git { trigger, .. } = &mut self.follow else {
            return;
        };
        let Some(g) = &self.cfg.git else { return };
        let (report_tx, mut report_rx) = mpsc::channel::<Report>(4);
        *trigger = Some(git::follow(remote, g.interval, report_tx));
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(r) = report_rx.recv().await {
                if tx.send(Event::Git(r)).await.is_err() {
                    return;
                }
            }
        });
        info!(url = %git::redact_url(&g.url), branch = %g.branch, "following the config repository");
    }

    /// Re-reads tenant files: `paths`, or all of them. A checkout is read later, once no git
    /// operation holds it. Returns whether a pass should follow.
    pub(super) fn read_files(&mut self, paths: Option<&BTreeSet<PathBuf>>) -> bool {
        if let Follow::Checkout { due, .. } = &mut self.follow {
            due.get_or_insert_with(Instant::now);
            return false;
        }
        match paths {
            Some(paths) => {
                let r = self.source.refresh(paths);
                r.read > 0 || r.removed > 0
            }
            None => {
                let r = self.source.rescan();
                if r.read > 0 || r.removed > 0 {
                    info!(read = r.read, removed = r.removed, "rescan found changes");
                }
                true
            }
        }
    }

    /// Schedules a read of the checkout when HEAD moved since the last look (a commit can
    /// change the revision without touching a tenant file). Called every tick.
    pub(super) fn poll_checkout(&mut self) {
        if let Follow::Checkout {
            checkout,
            due,
            stamp,
            ..
        } = &mut self.follow
        {
            let now = checkout.stamp();
            if *stamp != now {
                *stamp = now;
                due.get_or_insert_with(Instant::now);
            }
        }
    }

    /// SIGHUP: fetch now (git) and read every tenant file again.
    pub(super) fn reload_source(&mut self) -> bool {
        if let Follow::Git {
            trigger: Some(t), ..
        } = &self.follow
        {
            info!("SIGHUP: fetching the config repository now");
            t.fetch_now();
        }
        self.read_files(None)
    }

    /// Reads a checkout when it is settled: no lock or merge in progress and HEAD the same
    /// before and after the read. Otherwise holds passes and tries again shortly. Returns
    /// whether a pass should follow.
    pub(super) async fn read_checkout(&mut self) -> bool {
        let Follow::Checkout {
            checkout,
            busy_since,
            ..
        } = &self.follow
        else {
            return false;
        };
        let checkout = checkout.clone();
        let stale = busy_since.is_some_and(|t| t.elapsed() >= CHECKOUT_STALE);
        let now = Timestamp::now();
        let mut stale_note = None;
        match checkout.busy() {
            Some(why) if stale => {
                stale_note = Some(format!(
                    "the checkout has looked busy for over {}s ({why}; a stale lock?): read anyway",
                    CHECKOUT_STALE.as_secs()
                ));
            }
            Some(why) => {
                self.checkout_unsettled(format!("not reading the checkout: {why}"), false);
                return false;
            }
            None => {}
        }
        let before = checkout.head().await;
        self.source.rescan();
        let after = checkout.head().await;
        let busy = if stale_note.is_some() {
            None
        } else {
            checkout.busy()
        };
        let (head, error) = match (&before, &after, busy) {
            (_, _, Some(why)) => {
                self.checkout_unsettled(format!("the checkout changed while read: {why}"), true);
                return false;
            }
            (Ok(a), Ok(b), None) if a != b => {
                self.checkout_unsettled("HEAD moved while the files were read".to_owned(), true);
                return false;
            }
            (_, Ok(h), None) => (h.clone(), stale_note),
            (_, Err(err), None) => (None, Some(format!("cannot read HEAD: {err}"))),
        };
        let changed = self.source.desired().revision != head;
        self.source.set_revision(head.clone());
        if let Follow::Checkout {
            due,
            hold,
            busy_since,
            health,
            ..
        } = &mut self.follow
        {
            *due = None;
            *hold = false;
            *busy_since = None;
            health.revision.clone_from(&head);
            health.fetched_revision.clone_from(&head);
            health.last_attempt_at = Some(now);
            health.next_retry_at = None;
            if error.is_none() {
                health.last_success_at = Some(now);
                health.failures = 0;
            }
            health.error.clone_from(&error);
        }
        if changed && let Some(h) = &head {
            info!(revision = %h, "tenant checkout at a new commit");
            self.event(None, "source", format!("checkout at {}", short(h)));
        }
        true
    }

    fn checkout_unsettled(&mut self, why: String, read_mixed: bool) {
        if let Follow::Checkout {
            due,
            hold,
            busy_since,
            health,
            ..
        } = &mut self.follow
        {
            let now = Instant::now();
            // One wake-up at a time: a retry already waiting covers this one.
            let waiting = due.is_some_and(|at| at > now);
            *due = Some(now + CHECKOUT_RETRY);
            if !waiting {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CHECKOUT_RETRY).await;
                    // Files changed, as far as the loop knows: it looks at the checkout again.
                    let _ = tx.send(Event::Files(Change::Rescan)).await;
                });
            }
            *hold |= read_mixed;
            busy_since.get_or_insert_with(Instant::now);
            health.failures = health.failures.saturating_add(1);
            health.last_attempt_at = Some(Timestamp::now());
            if health.error.as_deref() != Some(why.as_str()) {
                info!(reason = %why, "tenant checkout is being updated; reading it again shortly");
            }
            health.error = Some(why);
        }
    }

    /// A report of the fetch task. Returns whether a pass should follow.
    pub(super) fn on_git(&mut self, report: Report) -> bool {
        let now = Timestamp::now();
        match report {
            Report::Ready { fetched, ack } => {
                let swapped = git::swap(&self.cfg.state_dir, &fetched.commit);
                let ok = swapped.is_ok();
                let _ = ack.send(ok);
                if let Err(err) = swapped {
                    let msg = crate::error::chain(&err).to_string();
                    warn!(error = %msg, "cannot switch to the fetched commit; keeping the current one");
                    self.git_failed(msg, 1, None);
                    return false;
                }
                self.source.rescan();
                self.source.set_revision(Some(fetched.commit.clone()));
                let from = fetched
                    .previous
                    .as_deref()
                    .map_or("nothing".to_owned(), short);
                let mut reason = format!("moved from {from} to {}", short(&fetched.commit));
                if fetched.forced {
                    reason.push_str(" (history rewritten: force-push followed)");
                }
                if let Follow::Git { health, .. } = &mut self.follow {
                    health.revision = Some(fetched.commit.clone());
                    health.fetched_revision = Some(fetched.commit.clone());
                    health.last_attempt_at = Some(now);
                    health.last_success_at = Some(now);
                    health.error = None;
                    health.failures = 0;
                    health.next_retry_at = None;
                    reason = format!("{} {reason}", health.branch.as_deref().unwrap_or("branch"));
                }
                if fetched.forced {
                    warn!(commit = %fetched.commit, "config branch was force-pushed; following it");
                }
                info!(commit = %fetched.commit, "config repository: new commit checked out");
                self.event(None, "source", reason);
                true
            }
            Report::UpToDate { commit } => {
                if let Follow::Git { health, .. } = &mut self.follow {
                    let recovered = health.error.take().is_some();
                    health.fetched_revision = Some(commit).filter(|c| !c.is_empty());
                    health.last_attempt_at = Some(now);
                    health.last_success_at = Some(now);
                    health.failures = 0;
                    health.next_retry_at = None;
                    if recovered {
                        info!("config repository reachable again");
                        self.event(None, "source", "fetch works again".to_owned());
                    }
                }
                false
            }
            Report::Failed {
                error,
                failures,
                retry_in,
            } => {
                self.git_failed(error, failures, Some(retry_in));
                false
            }
        }
    }

    fn git_failed(&mut self, error: String, failures: u32, retry_in: Option<Duration>) {
        let now = Timestamp::now();
        let Follow::Git { health, .. } = &mut self.follow else {
            return;
        };
        let new = health.error.as_deref() != Some(error.as_str());
        health.error = Some(error.clone());
        health.failures = failures;
        health.last_attempt_at = Some(now);
        health.next_retry_at = retry_in
            .and_then(|d| jiff::SignedDuration::try_from(d).ok())
            .and_then(|d| now.checked_add(d).ok());
        let retry = retry_in.map_or_else(String::new, |d| {
            format!(
                "; retrying in {}",
                humantime::format_duration(Duration::from_secs(d.as_secs().max(1)))
            )
        });
        warn!(error = %error, failures, "config repository fetch failed; the current commit keeps running");
        if new {
            self.event(
                None,
                "source_error",
                format!("{error}; the current commit keeps running{retry}"),
            );
        }
    }
}

/// A commit id as people quote it.
fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// The revision of a candidate tree for `flowhq plan --dir`: its checkout's HEAD, if it is one.
pub(super) async fn preview_revision(dir: &Path) -> Option<String> {
    let checkout = Checkout::find(dir)?;
    checkout.head().await.ok().flatten()
}

/// Drops what a preview of another tree would only do for bookkeeping: re-recording an
/// unchanged spec under the candidate's revision.
pub(super) fn without_revision_only_applies(plan: &mut Plan) {
    plan.actions.retain(|a| {
        !matches!(
            a,
            Action::Apply {
                reason: Reason::RevisionChanged,
                ..
            }
        )
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::daemon::{Daemon, Options};

    /// A daemon on the defaults, reading `tenants_dir`, with its state under `state_dir`.
    fn daemon(tenants_dir: &Path, state_dir: &Path) -> Daemon {
        let mut cfg = DaemonConfig::load(None, &|_| None).unwrap();
        cfg.tenants_dir = tenants_dir.to_owned();
        cfg.state_dir = state_dir.to_owned();
        let backoff = super::super::backoff_for(&cfg).unwrap();
        let (tx, _rx) = mpsc::channel(16);
        Daemon::new(cfg, Options::default(), backoff, tx)
    }

    /// A directory that looks like a git checkout to `Checkout` (HEAD on a loose branch ref),
    /// with an empty `tenants/` inside.
    fn fake_checkout(root: &Path) -> PathBuf {
        let git = root.join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(git.join("refs/heads/main"), "1111111111111111\n").unwrap();
        let tenants = root.join("tenants");
        std::fs::create_dir_all(&tenants).unwrap();
        tenants
    }

    fn events(d: &Daemon) -> Vec<(String, String)> {
        d.journal
            .pending()
            .map(|e| (e.kind.clone(), e.reason.clone()))
            .collect()
    }

    fn git_follow() -> Follow {
        Follow::Git {
            trigger: None,
            health: SourceHealth {
                kind: "git",
                branch: Some("main".to_owned()),
                ..SourceHealth::default()
            },
        }
    }

    #[test]
    fn a_plain_directory_is_read_at_once_and_never_holds_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path(), dir.path());
        assert!(matches!(d.follow, Follow::Dir));
        assert!(!d.follow.holding() && !d.follow.due());
        assert_eq!(d.follow.health(), None);
        // A full rescan always asks for a pass; a changed path only when something changed.
        assert!(d.read_files(None));
        let gone = BTreeSet::from([dir.path().join("nobody.toml")]);
        assert!(!d.read_files(Some(&gone)));
    }

    #[test]
    fn a_checkout_holds_passes_until_read_and_defers_file_reads() {
        let root = tempfile::tempdir().unwrap();
        let tenants = fake_checkout(root.path());
        let mut d = daemon(&tenants, root.path());
        assert!(matches!(d.follow, Follow::Checkout { .. }));
        // Nothing was read cleanly yet: no pass may run, and a read is due.
        assert!(d.follow.holding());
        assert!(d.follow.due());
        assert_eq!(d.follow.health().map(|h| h.kind), Some("checkout"));
        // A file change only schedules a read of the whole checkout.
        assert!(!d.read_files(None));
        assert!(d.follow.due());
    }

    #[test]
    fn a_moved_head_schedules_a_read_of_the_checkout() {
        let root = tempfile::tempdir().unwrap();
        let tenants = fake_checkout(root.path());
        let mut d = daemon(&tenants, root.path());
        if let Follow::Checkout { due, .. } = &mut d.follow {
            *due = None;
        }
        d.poll_checkout();
        assert!(!d.follow.due(), "HEAD did not move");
        std::fs::write(root.path().join(".git/refs/heads/main"), "2222\n").unwrap();
        d.poll_checkout();
        assert!(d.follow.due());
    }

    #[tokio::test]
    async fn a_busy_checkout_is_not_read_and_is_tried_again_shortly() {
        let root = tempfile::tempdir().unwrap();
        let tenants = fake_checkout(root.path());
        std::fs::write(root.path().join(".git/index.lock"), "").unwrap();
        let mut d = daemon(&tenants, root.path());
        assert!(!d.read_checkout().await);
        let Follow::Checkout {
            due,
            hold,
            busy_since,
            health,
            ..
        } = &d.follow
        else {
            panic!("not a checkout");
        };
        assert!(*hold);
        assert!(busy_since.is_some());
        assert!(due.is_some_and(|at| at > Instant::now()));
        assert_eq!(health.failures, 1);
        assert_eq!(
            health.error.as_deref(),
            Some("not reading the checkout: an index update is in progress")
        );
        // Still busy: counted again, but the same error is not news.
        assert!(!d.read_checkout().await);
        let Follow::Checkout { health, .. } = &d.follow else {
            panic!("not a checkout");
        };
        assert_eq!(health.failures, 2);
    }

    #[test]
    fn a_failed_fetch_is_one_event_until_the_error_changes_and_recovery_is_another() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path(), dir.path());
        d.follow = git_follow();
        let failed = |n| Report::Failed {
            error: "cannot reach origin".to_owned(),
            failures: n,
            retry_in: Duration::from_secs(30),
        };
        assert!(!d.on_git(failed(1)));
        assert!(!d.on_git(failed(2)));
        let Follow::Git { health, .. } = &d.follow else {
            panic!("not git");
        };
        assert_eq!(health.failures, 2);
        assert_eq!(health.error.as_deref(), Some("cannot reach origin"));
        assert!(health.next_retry_at.is_some());
        assert!(!d.on_git(Report::UpToDate {
            commit: "abc".to_owned()
        }));
        let Follow::Git { health, .. } = &d.follow else {
            panic!("not git");
        };
        assert_eq!((health.error.as_deref(), health.failures), (None, 0));
        assert_eq!(health.fetched_revision.as_deref(), Some("abc"));
        // Up to date again: no news.
        assert!(!d.on_git(Report::UpToDate {
            commit: "abc".to_owned()
        }));
        assert_eq!(
            events(&d),
            [
                (
                    "source_error".to_owned(),
                    "cannot reach origin; the current commit keeps running; retrying in 30s"
                        .to_owned()
                ),
                ("source".to_owned(), "fetch works again".to_owned()),
            ]
        );
    }
}
