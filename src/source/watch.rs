//! File-system watching for the tenant directory: inotify events in, change batches out.
//!
//! Owns the notify watcher, re-arming it when the directory is replaced (symlink swap,
//! `git checkout`, rm and re-create), and the rule that decides when a change is delivered:
//!
//! - **A complete change, alone, is delivered at once.** Complete means a tenant file closed
//!   after writing (`IN_CLOSE_WRITE`), renamed into or out of the directory, removed, linked in,
//!   or the directory itself replaced (a rescan). When no event arrived in the `quiet` period
//!   (`debounce`, default 200 ms) before it, and nothing else follows within a settle time of
//!   2 ms (5 ms after a removal, which is often the first half of a replace: an editor's backup
//!   rename, `rm` then `cp`), it is delivered without waiting for `quiet`.
//! - **Bursts are coalesced.** A batch that touches a second tenant file, that began less
//!   than `quiet` after the previous event, or in which the directory is gone without a
//!   replacement yet (`mv tenants.d old && mv new tenants.d`), is delivered after `quiet` without events, or under
//!   a storm at the latest `max` (`debounce_max`, default 2 s) after its first event: an
//!   editor's several writes and renames, a copy or checkout of 500 files, is one batch.
//! - **A half-written file is never delivered.** A file written (`IN_MODIFY`, or created as an
//!   regular file) is open until its `IN_CLOSE_WRITE`, rename or removal; while any file
//!   of the batch is open the whole batch waits, however long the writer pauses, up to
//!   `HOLD_OPEN` (30 s) after the batch began. The open files are also published
//!   (`OpenFiles`) so that a rescan of the directory leaves them alone.
//!
//! Only tenant file names count (`config::load::is_tenant_file`): an editor's swap, backup and
//! temporary files neither trigger nor prolong a batch. Events are only a trigger: it reads no
//! tenant file and decides nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::load::is_tenant_file;

/// How long a lone complete change waits for a follow-up before it is delivered.
pub const SETTLE: Duration = Duration::from_millis(2);
/// The same after a removal, which is often the first half of a replace.
pub const SETTLE_REMOVAL: Duration = Duration::from_millis(5);
/// How long files open for writing may hold a batch, from its first event.
pub const HOLD_OPEN: Duration = Duration::from_secs(30);

/// What changed in the tenant directory since the last batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These paths (inside the directory) were created, modified or removed.
    Paths(BTreeSet<PathBuf>),
    /// Something happened that a path list cannot describe (the directory itself was
    /// replaced, the kernel queue overflowed, the watcher failed): read everything again.
    Rescan,
}

/// One thing the watcher saw, as the batching rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Data was written to the file and it was not closed yet (`IN_MODIFY`, or `IN_CREATE` of
    /// a regular file).
    Written(PathBuf),
    /// The file is complete: closed after writing, renamed in, or linked in.
    Closed(PathBuf),
    /// The file is gone: removed or renamed away.
    Removed(PathBuf),
    /// Something else about the file changed (its metadata).
    Touched(PathBuf),
    /// Read everything again (the directory was replaced, the queue overflowed).
    Rescan,
    /// The directory itself is gone (renamed away or removed) and not replaced yet: read
    /// everything again once its replacement had time to arrive.
    DirGone,
}

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inotify watcher could not be created (e.g. `max_user_instances` reached).
    #[error("cannot create a file watcher")]
    Create(#[source] notify::Error),
}

/// The tenant files written and not closed yet, shared with the directory's reader so that a
/// rescan leaves a half-written file alone.
#[derive(Debug, Clone, Default)]
pub struct OpenFiles(Arc<Mutex<BTreeSet<PathBuf>>>);

impl OpenFiles {
    /// Whether `path` is being written now.
    pub fn contains(&self, path: &Path) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(path)
    }

    /// The files being written now.
    pub fn snapshot(&self) -> BTreeSet<PathBuf> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, open: &BTreeSet<PathBuf>) {
        let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *shared != *open {
            shared.clone_from(open);
        }
    }
}

/// Collects signals into batches (the rule of the module header). Pure: the caller supplies
/// the clock.
#[derive(Debug, Default)]
pub struct Debouncer {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    paths: BTreeSet<PathBuf>,
    rescan: bool,
    /// Paths of the batch written and not closed yet.
    open: BTreeSet<PathBuf>,
    /// The batch began after a quiet period and is one change so far: it may go at once.
    leading: bool,
    /// The batch removes a file (a longer settle time).
    removes: bool,
    /// The last signal of any batch.
    last_signal: Option<Instant>,
}

impl Debouncer {
    /// A debouncer whose bursts wait for `quiet` without events, but never longer than `max`.
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max,
            ..Self::default()
        }
    }

    /// Records `signal` at `now`.
    pub fn push(&mut self, signal: Signal, now: Instant) {
        if self.first.is_none() {
            self.first = Some(now);
            self.leading = self
                .last_signal
                .is_none_or(|t| now.saturating_duration_since(t) >= self.quiet);
        }
        self.last = Some(now);
        self.last_signal = Some(now);
        match signal {
            Signal::Written(p) => {
                self.open.insert(p.clone());
                self.paths.insert(p);
            }
            Signal::Closed(p) => {
                self.open.remove(&p);
                self.paths.insert(p);
            }
            Signal::Removed(p) => {
                self.open.remove(&p);
                self.removes = true;
                self.paths.insert(p);
            }
            Signal::Touched(p) => {
                self.paths.insert(p);
            }
            Signal::Rescan => self.rescan = true,
            Signal::DirGone => {
                self.rescan = true;
                self.leading = false;
            }
        }
        if self.paths.len() + usize::from(self.rescan) > 1 {
            self.leading = false;
        }
    }

    /// The files of the pending batch being written now.
    pub fn open(&self) -> &BTreeSet<PathBuf> {
        &self.open
    }

    /// When the pending batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if !self.open.is_empty() {
            return Some(first + HOLD_OPEN.max(self.max));
        }
        if self.leading {
            let settle = if self.removes { SETTLE_REMOVAL } else { SETTLE };
            return Some(last + settle.min(self.quiet));
        }
        Some((last + self.quiet).min(first + self.max))
    }

    /// Takes the pending batch if it is due at `now`. A batch held past `HOLD_OPEN` by a
    /// file that stays open is delivered with that file: its writer is not coming back.
    pub fn take_due(&mut self, now: Instant) -> Option<Change> {
        if self.deadline()? > now {
            return None;
        }
        self.first = None;
        self.last = None;
        self.open.clear();
        self.leading = false;
        self.removes = false;
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
    open: OpenFiles,
}

impl WatchHandle {
    /// The tenant files being written now, kept up to date by the watcher.
    pub fn open_files(&self) -> OpenFiles {
        self.open.clone()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `dir` and sends batches to `out` (`quiet` and `max` as in `Debouncer::new`). The
/// directory need not exist yet: the watch is (re-)armed whenever a batch is delivered and on
/// every `rearm` tick.
pub fn watch(
    dir: PathBuf,
    quiet: Duration,
    max: Duration,
    out: mpsc::Sender<Change>,
) -> Result<WatchHandle, Error> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Signal>();
    let name = dir.file_name().map(ToOwned::to_owned);
    let dir_for_events = dir.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let msgs = match res {
            Ok(ev) => classify(&dir_for_events, name.as_deref(), &ev),
            Err(_) => vec![Signal::Rescan],
        };
        for m in msgs {
            // The receiver is gone only when the daemon is shutting down.
            let _ = raw_tx.send(m);
        }
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(Error::Create)?;
    let mut armed = arm(&mut watcher, &dir);
    let open = OpenFiles::default();
    let shared = open.clone();

    let task = tokio::spawn(async move {
        let mut deb = Debouncer::new(quiet, max);
        let rearm_every = Duration::from_secs(5);
        let mut rearm_at = Instant::now() + rearm_every;
        loop {
            let wake = deb.deadline().map_or(rearm_at, |d| d.min(rearm_at));
            tokio::select! {
                msg = raw_rx.recv() => match msg {
                    Some(signal) => {
                        if matches!(signal, Signal::Rescan | Signal::DirGone) {
                            armed = None;
                        }
                        deb.push(signal, Instant::now());
                        // Everything already queued joins this batch before it is judged.
                        while let Ok(more) = raw_rx.try_recv() {
                            if matches!(more, Signal::Rescan | Signal::DirGone) {
                                armed = None;
                            }
                            deb.push(more, Instant::now());
                        }
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
                        deb.push(Signal::Rescan, now);
                    }
                    armed = fresh;
                }
            }
            let change = deb.take_due(now);
            shared.set(deb.open());
            if let Some(change) = change
                && out.send(change).await.is_err()
            {
                return;
            }
        }
    });
    Ok(WatchHandle { task, open })
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

/// Turns one notify event into signals about tenant files in `dir`, or a rescan request.
fn classify(dir: &Path, name: Option<&std::ffi::OsStr>, ev: &notify::Event) -> Vec<Signal> {
    if ev.need_rescan() {
        return vec![Signal::Rescan];
    }
    let mut out = Vec::new();
    for p in &ev.paths {
        if p.parent() == Some(dir) {
            if let Some(signal) = file_signal(&ev.kind, p) {
                out.push(signal);
            }
        } else if (p == dir || (name.is_some() && p.file_name() == name))
            && !matches!(ev.kind, EventKind::Access(_))
        {
            // The directory entry itself changed: removed, renamed, or a symlink swapped.
            out.push(if dir_identity(dir).is_some() {
                Signal::Rescan
            } else {
                Signal::DirGone
            });
        }
    }
    out
}

/// What an event on the file `path` of the directory means, if it is a tenant file.
fn file_signal(kind: &EventKind, path: &Path) -> Option<Signal> {
    if !is_tenant_file(path) {
        return None;
    }
    let p = path.to_owned();
    Some(match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Signal::Closed(p),
        EventKind::Access(_) => return None,
        // `Both` repeats the `From` and `To` events notify already sent.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return None,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
            Signal::Removed(p)
        }
        EventKind::Modify(ModifyKind::Name(_)) => Signal::Closed(p),
        EventKind::Modify(ModifyKind::Data(_)) => Signal::Written(p),
        EventKind::Modify(ModifyKind::Metadata(_)) => Signal::Touched(p),
        EventKind::Create(CreateKind::Folder) => Signal::Touched(p),
        EventKind::Create(_) => created(p),
        _ => Signal::Touched(p),
    })
}

/// A new directory entry: a regular file is being written (`open(O_CREAT)`, a close follows);
/// a symbolic or hard link arrives whole.
fn created(path: PathBuf) -> Signal {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() && m.nlink() == 1 => Signal::Written(path),
        Ok(_) => Signal::Closed(path),
        Err(_) => Signal::Touched(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn closed(name: &str) -> Signal {
        Signal::Closed(name.into())
    }

    fn paths(names: &[&str]) -> Option<Change> {
        Some(Change::Paths(names.iter().map(PathBuf::from).collect()))
    }

    #[test]
    fn a_lone_complete_change_after_a_quiet_period_goes_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        assert_eq!(d.deadline(), None);
        d.push(closed("a.toml"), t0);
        assert_eq!(d.deadline(), Some(t0 + SETTLE));
        assert_eq!(d.take_due(t0 + SETTLE), paths(&["a.toml"]));
        assert_eq!(
            d.deadline(),
            None,
            "a delivered batch leaves nothing pending"
        );
        // The same file again, long after: at once again.
        let t1 = t0 + ms(1000);
        d.push(Signal::Written("a.toml".into()), t1);
        d.push(closed("a.toml"), t1);
        assert_eq!(d.take_due(t1 + SETTLE), paths(&["a.toml"]));
    }

    #[test]
    fn a_removal_waits_a_little_longer_for_the_file_to_come_back() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        d.push(Signal::Removed("a.toml".into()), t0);
        assert_eq!(d.deadline(), Some(t0 + SETTLE_REMOVAL));
        // An editor's backup rename, then the new file: one change of one file.
        d.push(Signal::Written("a.toml".into()), t0 + ms(1));
        assert_eq!(d.take_due(t0 + ms(100)), None, "held while written");
        d.push(closed("a.toml"), t0 + ms(2));
        assert_eq!(d.take_due(t0 + ms(2) + SETTLE_REMOVAL), paths(&["a.toml"]));
    }

    #[test]
    fn a_second_file_turns_the_batch_into_a_burst_that_waits_for_quiet() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        d.push(closed("a.toml"), t0);
        d.push(closed("b.toml"), t0 + ms(1));
        d.push(closed("c.toml"), t0 + ms(150));
        assert_eq!(d.take_due(t0 + ms(349)), None);
        assert_eq!(
            d.take_due(t0 + ms(350)),
            paths(&["a.toml", "b.toml", "c.toml"])
        );
    }

    #[test]
    fn a_change_right_after_another_waits_for_quiet() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        d.push(closed("a.toml"), t0);
        assert!(d.take_due(t0 + SETTLE).is_some());
        // The rest of a burst whose first file went alone.
        let t1 = t0 + ms(50);
        d.push(closed("b.toml"), t1);
        assert_eq!(d.deadline(), Some(t1 + ms(200)));
        assert_eq!(d.take_due(t1 + ms(200)), paths(&["b.toml"]));
    }

    #[test]
    fn a_storm_is_delivered_at_the_cap() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        // An event every 50 ms never leaves a quiet period of 200 ms.
        for i in 0..40u64 {
            let now = t0 + ms(i * 50);
            d.push(closed(&format!("{i}.toml")), now);
            assert_eq!(d.take_due(now), None);
        }
        assert_eq!(d.deadline(), Some(t0 + ms(2000)));
        assert!(matches!(d.take_due(t0 + ms(2000)), Some(Change::Paths(p)) if p.len() == 40));
    }

    #[test]
    fn a_file_being_written_holds_the_batch_until_it_is_closed() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        // Written, a pause longer than the cap, written again, closed.
        d.push(Signal::Written("a.toml".into()), t0);
        d.push(closed("b.toml"), t0 + ms(10));
        assert_eq!(d.open(), &BTreeSet::from([PathBuf::from("a.toml")]));
        assert_eq!(d.take_due(t0 + ms(5000)), None);
        d.push(Signal::Written("a.toml".into()), t0 + ms(5000));
        d.push(closed("a.toml"), t0 + ms(5001));
        assert!(d.open().is_empty());
        // Past the cap already: the burst goes at once, with both files.
        assert_eq!(d.take_due(t0 + ms(5001)), paths(&["a.toml", "b.toml"]));
    }

    #[test]
    fn a_file_that_stays_open_holds_the_batch_only_so_long() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        d.push(Signal::Written("a.toml".into()), t0);
        assert_eq!(d.deadline(), Some(t0 + HOLD_OPEN));
        assert_eq!(d.take_due(t0 + HOLD_OPEN), paths(&["a.toml"]));
        assert!(d.open().is_empty());
    }

    #[test]
    fn a_batch_with_a_rescan_is_a_rescan_and_a_lone_rescan_goes_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(2000));
        d.push(Signal::Rescan, t0);
        assert_eq!(d.take_due(t0 + SETTLE), Some(Change::Rescan));
        let t1 = t0 + ms(1000);
        d.push(closed("a.toml"), t1);
        d.push(Signal::Rescan, t1);
        assert_eq!(d.take_due(t1 + SETTLE), None, "two changes: a burst");
        assert_eq!(d.take_due(t1 + ms(200)), Some(Change::Rescan));
        // The directory moved away, its replacement not there yet: wait for quiet.
        let t2 = t1 + ms(1000);
        d.push(Signal::DirGone, t2);
        assert_eq!(d.take_due(t2 + SETTLE_REMOVAL), None);
        d.push(Signal::Rescan, t2 + ms(20));
        assert_eq!(d.take_due(t2 + ms(220)), Some(Change::Rescan));
    }

    #[test]
    fn only_tenant_files_count_and_a_close_after_writing_completes_a_file() {
        let dir = Path::new("/t");
        let ev = |kind, p: &str| notify::Event::new(kind).add_path(dir.join(p));
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let modify = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        let from = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let c = |e| classify(dir, Some("t".as_ref()), &e);
        assert_eq!(c(ev(close, "a.toml")), [Signal::Closed(dir.join("a.toml"))]);
        assert_eq!(
            c(ev(modify, "a.toml")),
            [Signal::Written(dir.join("a.toml"))]
        );
        assert_eq!(c(ev(from, "a.toml")), [Signal::Removed(dir.join("a.toml"))]);
        assert_eq!(c(ev(to, "a.toml")), [Signal::Closed(dir.join("a.toml"))]);
        assert_eq!(c(ev(open, "a.toml")), []);
        // An editor's temporary, swap and backup files.
        for other in [".a.toml.tmp", ".a.toml.swp", "a.toml~", "4913", "#a.toml#"] {
            assert_eq!(c(ev(modify, other)), [], "{other}");
        }
        // The directory itself moved away (`/t` does not exist), or replaced.
        let gone = notify::Event::new(from).add_path("/t".into());
        assert_eq!(c(gone), [Signal::DirGone]);
        let tmp = tempfile::tempdir().unwrap();
        let swapped = notify::Event::new(to).add_path(tmp.path().to_owned());
        assert_eq!(
            classify(tmp.path(), tmp.path().file_name(), &swapped),
            [Signal::Rescan]
        );
    }

    #[test]
    fn a_new_link_is_complete_and_a_new_regular_file_is_being_written() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.toml");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(created(file.clone()), Signal::Written(file.clone()));
        let link = tmp.path().join("b.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(created(link.clone()), Signal::Closed(link));
        let gone = tmp.path().join("c.toml");
        assert_eq!(created(gone.clone()), Signal::Touched(gone));
    }

    async fn next(rx: &mut mpsc::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn watcher_reports_changed_files_in_one_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tenants.d");
        std::fs::create_dir(&dir).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let _h = watch(dir.clone(), ms(100), ms(1000), tx).unwrap();
        // Held open while the others are written: one batch, whatever the scheduling.
        let mut held = std::fs::File::create(dir.join("held.toml")).unwrap();
        std::fs::write(dir.join("a.toml"), "x").unwrap();
        std::fs::write(dir.join("b.toml"), "y").unwrap();
        std::io::Write::write_all(&mut held, b"z").unwrap();
        drop(held);
        match next(&mut rx).await {
            Change::Paths(p) => {
                let want = ["a.toml", "b.toml", "held.toml"].map(|f| dir.join(f));
                assert_eq!(p, BTreeSet::from(want));
            }
            Change::Rescan => panic!("expected paths"),
        }
    }

    #[tokio::test]
    async fn watcher_holds_a_file_written_in_two_steps_until_it_is_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tenants.d");
        std::fs::create_dir(&dir).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let h = watch(dir.clone(), ms(20), ms(100), tx).unwrap();
        let path = dir.join("a.toml");
        let mut f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut f, b"business_name = ").unwrap();
        // Longer than both the quiet period and the cap: still nothing is delivered.
        tokio::time::sleep(ms(400)).await;
        assert!(rx.try_recv().is_err(), "a half-written file was delivered");
        assert!(h.open_files().contains(&path));
        std::io::Write::write_all(&mut f, b"\"Salon\"\n").unwrap();
        drop(f);
        assert_eq!(
            next(&mut rx).await,
            Change::Paths(BTreeSet::from([path.clone()]))
        );
        assert!(!h.open_files().contains(&path));
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
        assert_eq!(next(&mut rx).await, Change::Rescan);
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
