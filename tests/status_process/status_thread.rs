//! The status endpoint's thread: the server runs on a thread of its own (`flowhq-status`),
//! niced below its caller, and dropping the handle joins it. A test binary of its own, because
//! it counts the threads of its process and the other status tests start servers in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowhq::status::Limits;

use crate::support::status::*;

/// The server runs on its own thread, niced below the caller's, so request load competes with
/// the daemon's loop for neither runtime workers nor CPU.
#[tokio::test]
async fn the_server_has_its_own_lower_priority_thread() {
    // (name, nice) of every thread of this process, from /proc.
    fn threads() -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = task.unwrap().path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue; // the thread ended meanwhile
            };
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            // Fields after the parenthesised name; nice is field 19 of stat(5).
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let nice: i64 = rest.split(' ').nth(16).unwrap().parse().unwrap();
            out.push((comm.trim().to_owned(), nice));
        }
        out
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _tx) = start(dir.path(), snapshot(), Limits::default()).await;
    assert_eq!(get(server.local_addr(), "/healthz").await.status, 200);
    let mine: i64 = {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    };
    let status: Vec<i64> = threads()
        .into_iter()
        .filter(|(name, _)| name == "flowhq-status")
        .map(|(_, nice)| nice)
        .collect();
    assert_eq!(status.len(), 1, "one status thread: {:?}", threads());
    assert!(
        status[0] > mine || status[0] == 19,
        "status thread nice {} not below this thread's {mine}",
        status[0]
    );
    drop(server);
    assert!(
        threads().iter().all(|(name, _)| name != "flowhq-status"),
        "dropping the handle joins the thread"
    );
}
