//! Reading the process table from `/proc`: identities for adoption, process
//! groups and trees for stopping and orphan checks, and memory (RSS and PSS) of a tree.
//!
//! Owns: parsing `/proc/PID/stat`, `/proc/PID/cmdline` and `/proc/PID/smaps_rollup`.
//! Every function tolerates processes vanishing mid-scan (they are skipped).
//! Deliberately does not: signal or wait for anything (`worker.rs`, `reap.rs`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;

use nix::unistd::Pid;

/// What identifies one process incarnation: a pid number is reused, a pid plus
/// its start time is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcIdentity {
    /// Start time in clock ticks after boot (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
    /// The command line (`/proc/PID/cmdline`); empty for zombies and kernel threads.
    pub argv: Vec<OsString>,
}

impl ProcIdentity {
    /// Reads the identity of `pid`; `None` if there is no such process.
    pub fn read(pid: Pid) -> Option<Self> {
        let start_time = Self::read_start_time(pid)?;
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv = raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect();
        Some(Self { start_time, argv })
    }

    /// Reads only the start time of `pid`; `None` if there is no such process.
    pub fn read_start_time(pid: Pid) -> Option<u64> {
        ProcStat::read(pid).map(|s| s.start_time)
    }
}

/// The fields of `/proc/PID/stat` the supervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: Pid,
    /// State letter: `R`, `S`, `D`, `Z` (zombie), `T`, ...
    pub state: char,
    /// Parent pid.
    pub ppid: Pid,
    /// Process group id.
    pub pgid: Pid,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
    /// Resident set size in pages (field 24).
    pub rss_pages: u64,
}

impl ProcStat {
    /// Reads `/proc/PID/stat`; `None` if there is no such process.
    pub fn read(pid: Pid) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(pid, &text)
    }

    /// Parses a stat line. The command name (field 2) may hold spaces and
    /// parentheses, so fields are counted after its last `)`.
    fn parse(pid: Pid, text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state), so field N is fields[N - 3].
        Some(Self {
            pid,
            state: fields.first()?.chars().next()?,
            ppid: Pid::from_raw(fields.get(1)?.parse().ok()?),
            pgid: Pid::from_raw(fields.get(2)?.parse().ok()?),
            start_time: fields.get(19)?.parse().ok()?,
            rss_pages: fields.get(21)?.parse().ok()?,
        })
    }

    /// Whether the process has exited and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// A snapshot of every process in `/proc` (those readable at scan time).
pub fn scan() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name();
        let pid: i32 = name.to_str()?.parse().ok()?;
        ProcStat::read(Pid::from_raw(pid))
    })
    .collect()
}

/// Every process whose process group is `pgid`, zombies included.
pub fn group_pids(pgid: Pid) -> Vec<Pid> {
    group_members(pgid).into_iter().map(|s| s.pid).collect()
}

/// Every process of group `pgid` with its stat, zombies included.
pub fn group_members(pgid: Pid) -> Vec<ProcStat> {
    scan().into_iter().filter(|s| s.pgid == pgid).collect()
}

/// `pid` and all its descendants (by parent pid), `pid` first; empty if `pid` is gone.
pub fn tree_pids(pid: Pid) -> Vec<Pid> {
    tree_of(pid, &scan())
}

/// `root` and its descendants within `table`, breadth first.
fn tree_of(root: Pid, table: &[ProcStat]) -> Vec<Pid> {
    if !table.iter().any(|s| s.pid == root) {
        return Vec::new();
    }
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for s in table {
        if s.pid != s.ppid {
            children.entry(s.ppid).or_default().push(s.pid);
        }
    }
    let mut out = vec![root];
    let mut next = 0;
    while next < out.len() {
        if let Some(kids) = children.get(&out[next]) {
            out.extend(kids.iter().copied().filter(|k| *k != root));
        }
        next += 1;
    }
    out
}

/// The direct children of `parent` that are zombies (exited, not yet reaped).
pub fn zombie_children(parent: Pid) -> Vec<Pid> {
    scan()
        .into_iter()
        .filter(|s| s.ppid == parent && s.is_zombie())
        .map(|s| s.pid)
        .collect()
}

/// The command line of `pid` (`/proc/PID/cmdline`), one entry per argument; `None` if there
/// is no such process. Empty for zombies and kernel threads.
pub fn argv(pid: Pid) -> Option<Vec<OsString>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect(),
    )
}

/// Proportional set size, in bytes, of `pid` and all its descendants (a
/// worker and its Chromium), summed from `/proc/PID/smaps_rollup`.
///
/// PSS splits shared pages among the processes mapping them, so the sum over a
/// tree does not count Chromium's shared libraries once per process. Processes
/// that exit during the scan are skipped; an error is returned only if `pid`
/// itself cannot be read.
pub fn tree_pss_bytes(pid: Pid) -> io::Result<u64> {
    let tree = tree_pids(pid);
    if tree.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no process {pid}"),
        ));
    }
    let mut total = pss_bytes(pid)?;
    for p in tree.into_iter().skip(1) {
        total += pss_bytes(p).unwrap_or(0);
    }
    Ok(total)
}

/// What to measure of one tree in [`trees_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryProbe {
    /// The tree's root (a worker).
    pub root: Pid,
    /// Read the PSS whatever the RSS (the last PSS figure is due for a refresh).
    pub pss_due: bool,
    /// Read the PSS when the tree's RSS is above this many bytes.
    pub limit: Option<u64>,
}

/// What [`trees_memory`] found for one tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeMemory {
    /// Sum of the tree's resident set sizes, from `/proc/PID/stat` (cheap, counts shared
    /// pages once per process, so it is never below the PSS).
    pub rss: u64,
    /// Sum of the tree's PSS, when it was read (see [`MemoryProbe`]).
    pub pss: Option<u64>,
}

/// Memory of many trees from one scan of `/proc`. The RSS comes with the scan at no extra
/// cost; the PSS walks every page table of the tree (milliseconds for a Chromium tree), so it
/// is read only when a probe asks for it or when the RSS is above the probe's limit. Since
/// PSS <= RSS, a tree whose RSS is under its limit is under it in PSS too: nothing is missed.
/// Roots that are gone are left out of the map.
pub fn trees_memory(probes: &[MemoryProbe]) -> HashMap<Pid, TreeMemory> {
    let table = scan();
    let page = page_size();
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    let mut rss_pages: HashMap<Pid, u64> = HashMap::with_capacity(table.len());
    for s in &table {
        if s.pid != s.ppid {
            children.entry(s.ppid).or_default().push(s.pid);
        }
        rss_pages.insert(s.pid, s.rss_pages);
    }
    let mut out = HashMap::with_capacity(probes.len());
    for probe in probes {
        let Some(&root_pages) = rss_pages.get(&probe.root) else {
            continue;
        };
        let mut tree = vec![probe.root];
        let mut pages = root_pages;
        let mut stack: Vec<Pid> = children.get(&probe.root).cloned().unwrap_or_default();
        while let Some(p) = stack.pop() {
            if p == probe.root {
                continue;
            }
            tree.push(p);
            pages += rss_pages.get(&p).copied().unwrap_or(0);
            if let Some(kids) = children.get(&p) {
                stack.extend(kids.iter().copied());
            }
        }
        let rss = pages.saturating_mul(page);
        let pss = (probe.pss_due || probe.limit.is_some_and(|limit| rss > limit))
            .then(|| tree.iter().map(|p| pss_bytes(*p).unwrap_or(0)).sum());
        out.insert(probe.root, TreeMemory { rss, pss });
    }
    out
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

/// PSS of one process in bytes (0 for zombies and kernel threads, which map nothing).
fn pss_bytes(pid: Pid) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(parse_pss_kib(&text) * 1024)
}

/// The `Pss:` value in kB from an smaps_rollup text.
fn parse_pss_kib(text: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("Pss:")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child of this process that sleeps for 30 s, and its pid.
    fn sleeping_child() -> (std::process::Child, Pid) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        (child, pid)
    }

    #[test]
    fn stat_parsing_survives_parentheses_and_spaces_in_the_name() {
        let line = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let stat = ProcStat::parse(Pid::from_raw(4242), line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, Pid::from_raw(1));
        assert_eq!(stat.pgid, Pid::from_raw(4242));
        assert_eq!(stat.start_time, 987654);
    }

    #[test]
    fn the_own_process_has_an_identity_with_its_command_line() {
        let me = Pid::this();
        let id = ProcIdentity::read(me).unwrap();
        let expected: Vec<OsString> = std::env::args_os().collect();
        assert_eq!(id.argv, expected);
        assert!(id.start_time > 0);
    }

    #[test]
    fn pss_is_read_from_the_rollup_format() {
        let text = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:   2048 kB\nPss:    1234 kB\nPss_Anon: 10 kB\n";
        assert_eq!(parse_pss_kib(text), 1234);
    }

    #[test]
    fn the_own_process_tree_has_a_positive_pss() {
        assert!(tree_pss_bytes(Pid::this()).unwrap() > 0);
    }

    #[test]
    fn one_scan_measures_many_trees_like_one_tree_at_a_time() {
        let (mut child, kid) = sleeping_child();
        let gone = Pid::from_raw(i32::MAX);
        let probes = [Pid::this(), kid, gone].map(|root| MemoryProbe {
            root,
            pss_due: true,
            limit: None,
        });
        let many: HashMap<Pid, u64> = trees_memory(&probes)
            .into_iter()
            .map(|(pid, m)| (pid, m.pss.unwrap()))
            .collect();
        let me = many[&Pid::this()];
        // The own tree includes the sleeping child; its PSS barely moves between two reads.
        assert!(me >= many[&kid] && many[&kid] > 0, "{many:?}");
        let single = tree_pss_bytes(Pid::this()).unwrap();
        assert!(
            me.abs_diff(single) < me / 4,
            "one scan {me}, per tree {single}"
        );
        assert!(!many.contains_key(&gone));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_pss_is_read_only_when_due_or_when_the_rss_passes_the_limit() {
        let (mut child, kid) = sleeping_child();
        let probe = |pss_due, limit| MemoryProbe {
            root: Pid::this(),
            pss_due,
            limit,
        };
        let cheap = trees_memory(&[probe(false, None)])[&Pid::this()];
        assert!(cheap.rss > 0);
        assert_eq!(cheap.pss, None);
        let under = trees_memory(&[probe(false, Some(u64::MAX))])[&Pid::this()];
        assert_eq!(under.pss, None, "an RSS under the limit needs no PSS");
        let over = trees_memory(&[probe(false, Some(1))])[&Pid::this()];
        let pss = over.pss.unwrap();
        assert!(pss > 0 && pss <= over.rss, "{over:?}");
        let due = trees_memory(&[probe(true, None)])[&Pid::this()];
        assert!(due.pss.is_some());
        // The tree includes the child.
        let kid_rss = trees_memory(&[MemoryProbe {
            root: kid,
            pss_due: false,
            limit: None,
        }])[&kid]
            .rss;
        assert!(kid_rss > 0 && kid_rss < cheap.rss);
        assert!(
            trees_memory(&[MemoryProbe {
                root: Pid::from_raw(i32::MAX),
                pss_due: true,
                limit: None,
            }])
            .is_empty()
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_tree_lists_descendants_after_the_root() {
        let table =
            [(1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1)].map(|(pid, ppid)| ProcStat {
                pid: Pid::from_raw(pid),
                state: 'S',
                ppid: Pid::from_raw(ppid),
                pgid: Pid::from_raw(pid),
                start_time: 1,
                rss_pages: 1,
            });
        let tree = tree_of(Pid::from_raw(10), &table);
        assert_eq!(tree, [10, 11, 12, 13].map(Pid::from_raw));
        assert!(tree_of(Pid::from_raw(99), &table).is_empty());
    }

    #[test]
    fn argv_is_the_command_line_of_a_live_process() {
        let expected: Vec<OsString> = std::env::args_os().collect();
        assert_eq!(argv(Pid::this()), Some(expected));
        assert_eq!(argv(Pid::from_raw(i32::MAX)), None);
    }
}
