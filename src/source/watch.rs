//! File-system watching for the tenant directory: inotify events in, debounced changes out.
//!
//! Owns the notify watcher, re-arming it when the directory is replaced (symlink swap,
//! `git checkout`, rm and re-create), and the debounce rule: a batch is delivered after a quiet
//! period (default 200 ms) or, under a storm of events, at the latest `max` (default 2 s) after
//! its first event. Events are only a trigger: it reads no tenant file and decides nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What changed in the tenant directory since the last batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These paths (inside the directory) were created, modified or removed.
    Paths(BTreeSet<PathBuf>),
    /// Something happened that a path list cannot describe (the directory itself was
    /// replaced, the kernel queue overflowed, the watcher failed): read everything again.
    Rescan,
}

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inotify watcher could not be created (e.g. `max_user_instances` reached).
    #[error("cannot create a file watcher")]
    Create(#[source] notify::Error),
}

/// Collects raw events into batches. Pure: the caller supplies the clock.
#[derive(Debug, Default)]
pub struct Debouncer {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    paths: BTreeSet<PathBuf>,
    rescan: bool,
}

impl Debouncer {
    /// A debouncer that waits for `quiet` without events, but never longer than `max`.
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max,
            ..Self::default()
        }
    }

    /// Records a change to `path` (or a need to rescan, with `None`) at `now`.
    pub fn push(&mut self, path: Option<PathBuf>, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        match path {
            Some(p) => {
                self.paths.insert(p);
            }
            None => self.rescan = true,
        }
    }

    /// When the pending batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max))
    }

    /// Takes the pending batch if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Change> {
        if self.deadline()? > now {
            return None;
        }
        self.first = None;
        self.last = None;
        let paths = std::mem::take(&mut self.paths);
        if std::mem::take(&mut self.rescan) {
            Some(Change::Rescan)
        } else {
            Some(Change::Paths(paths))
        }
    }
}

/// Keeps the watcher alive; dropping it stops watching.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Raw notifications from the watcher thread to the debounce task.
enum Raw {
    Path(PathBuf),
    Rescan,
}

/// Watches `dir` and sends debounced batches to `out`. The directory need not exist yet: the
/// watch is (re-)armed whenever a batch is delivered and on every `rearm` tick.
pub fn watch(
    dir: PathBuf,
    quiet: Duration,
    max: Duration,
    out: mpsc::Sender<Change>,
) -> Result<WatchHandle, Error> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Raw>();
    let name = dir.file_name().map(ToOwned::to_owned);
    let dir_for_events = dir.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let msgs = match res {
            Ok(ev) => classify(&dir_for_events, name.as_deref(), &ev),
            Err(_) => vec![Raw::Rescan],
        };
        for m in msgs {
            // The receiver is gone only when the daemon is shutting down.
            let _ = raw_tx.send(m);
        }
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(Error::Create)?;
    let mut armed = arm(&mut watcher, &dir);

    let task = tokio::spawn(async move {
        let mut deb = Debouncer::new(quiet, max);
        let rearm_every = Duration::from_secs(5);
        let mut rearm_at = Instant::now() + rearm_every;
        loop {
            let wake = deb.deadline().map_or(rearm_at, |d| d.min(rearm_at));
            tokio::select! {
                msg = raw_rx.recv() => match msg {
                    Some(Raw::Path(p)) => deb.push(Some(p), Instant::now()),
                    Some(Raw::Rescan) => {
                        deb.push(None, Instant::now());
                        armed = None;
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= rearm_at || armed.is_none() {
                rearm_at = now + rearm_every;
                let identity = dir_identity(&dir);
                if armed.is_none() || armed != identity {
                    let _ = watcher.unwatch(&dir);
                    let fresh = arm(&mut watcher, &dir);
                    if fresh.is_some() && armed.is_some() {
                        // The directory was replaced while we watched the old one.
                        deb.push(None, now);
                    }
                    armed = fresh;
                }
            }
            if let Some(change) = deb.take_due(now)
                && out.send(change).await.is_err()
            {
                return;
            }
        }
    });
    Ok(WatchHandle { task })
}

/// Watches the directory and its parent (to see the directory itself being replaced).
/// Returns the identity of the watched directory, or `None` when it could not be watched.
fn arm(watcher: &mut RecommendedWatcher, dir: &Path) -> Option<(u64, u64)> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = watcher.watch(parent, RecursiveMode::NonRecursive);
    }
    watcher.watch(dir, RecursiveMode::NonRecursive).ok()?;
    dir_identity(dir)
}

/// Device and inode of what `dir` resolves to now.
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Turns one notify event into path changes inside `dir`, or a rescan request.
fn classify(dir: &Path, name: Option<&std::ffi::OsStr>, ev: &notify::Event) -> Vec<Raw> {
    if ev.need_rescan() {
        return vec![Raw::Rescan];
    }
    if matches!(ev.kind, EventKind::Access(_)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in &ev.paths {
        if p.parent() == Some(dir) {
            out.push(Raw::Path(p.clone()));
        } else if p == dir || (name.is_some() && p.file_name() == name) {
            // The directory entry itself changed: removed, renamed, or a symlink swapped.
            out.push(Raw::Rescan);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn debouncer_waits_for_a_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        assert_eq!(d.deadline(), None);
        d.push(Some("a.toml".into()), t0);
        d.push(Some("b.toml".into()), t0 + ms(150));
        assert_eq!(d.take_due(t0 + ms(349)), None);
        let got = d.take_due(t0 + ms(350)).unwrap();
        assert_eq!(
            got,
            Change::Paths(["a.toml".into(), "b.toml".into()].into())
        );
        assert_eq!(
            d.deadline(),
            None,
            "a delivered batch leaves nothing pending"
        );
    }

    #[test]
    fn debouncer_delivers_a_storm_at_the_cap() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        // An event every 50 ms never leaves a quiet period of 200 ms.
        for i in 0..40u64 {
            let now = t0 + ms(i * 50);
            d.push(Some(format!("{i}.toml").into()), now);
            assert_eq!(d.take_due(now), None);
        }
        assert_eq!(d.deadline(), Some(t0 + ms(2000)));
        assert!(matches!(d.take_due(t0 + ms(2000)), Some(Change::Paths(p)) if p.len() == 40));
    }

    #[test]
    fn debouncer_turns_a_batch_with_a_rescan_into_a_rescan() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        d.push(Some("a.toml".into()), t0);
        d.push(None, t0);
        assert_eq!(d.take_due(t0 + ms(200)), Some(Change::Rescan));
    }

    #[tokio::test]
    async fn watcher_reports_changed_files_in_one_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tenants.d");
        std::fs::create_dir(&dir).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let _h = watch(dir.clone(), ms(100), ms(1000), tx).unwrap();
        std::fs::write(dir.join("a.toml"), "x").unwrap();
        std::fs::write(dir.join("b.toml"), "y").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        match got {
            Change::Paths(p) => {
                assert!(
                    p.contains(&dir.join("a.toml")) && p.contains(&dir.join("b.toml")),
                    "{p:?}"
                )
            }
            Change::Rescan => panic!("expected paths"),
        }
    }

    #[tokio::test]
    async fn watcher_asks_for_a_rescan_when_the_directory_is_swapped() {
        let tmp = tempfile::tempdir().unwrap();
        let real_a = tmp.path().join("a");
        let real_b = tmp.path().join("b");
        std::fs::create_dir(&real_a).unwrap();
        std::fs::create_dir(&real_b).unwrap();
        let link = tmp.path().join("tenants.d");
        std::os::unix::fs::symlink(&real_a, &link).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let _h = watch(link.clone(), ms(100), ms(1000), tx).unwrap();
        // Atomic swap, as deploy tools do: new link, then rename over the old one.
        let tmp_link = tmp.path().join("tenants.d.new");
        std::os::unix::fs::symlink(&real_b, &tmp_link).unwrap();
        std::fs::rename(&tmp_link, &link).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Change::Rescan);
        // The re-armed watch follows the new target.
        std::fs::write(real_b.join("c.toml"), "z").unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.recv().await.unwrap() {
                    Change::Paths(p) if !p.is_empty() => return p,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        assert!(next.iter().any(|p| p.ends_with("c.toml")), "{next:?}");
    }
}
