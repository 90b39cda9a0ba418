#!/usr/bin/env python3
"""GitOps benchmark: flowhq following a config repository of N tenants (default 1,000).

Run through scripts/bench-gitops.sh, which builds the release binaries. Against a local bare
repository (file://) with N tenant files, the daemon following it with `[source.git]` (poll
interval one hour, so only SIGHUP explains a quick fetch), it measures:

  cold      time from starting the daemon (no clone yet) to all N workers running: first fetch,
            writing the tree, one store transaction, N spawns
  change    R times: a commit adding one tenant is pushed; time from SIGHUP (what a CI job or
            hook sends after the push) to its worker running, with N running
  commit200 one commit changing a bot field in 200 files: time from SIGHUP to all 200 tenant
            rows carrying the new commit, and the daemon's own time for that one pass
  idle      the daemon's CPU seconds over 30 s with nothing to do but poll, and its RSS

"Running" is as in benches/daemon.py: a process whose /proc/PID/exe is the stub worker binary
with argv `--tenant ID` exists, found by polling /proc.
"""

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import ProcTable, log, now, pct, proc_cpu_rss, tenant_toml, wait_for  # noqa: E402

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Ops",
    "GIT_AUTHOR_EMAIL": "ops@example.com",
    "GIT_COMMITTER_NAME": "Ops",
    "GIT_COMMITTER_EMAIL": "ops@example.com",
}


def git(cwd, *args):
    env = dict(os.environ)
    env.update(GIT_ENV)
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"git {args}: {out.stderr}")
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowhq", required=True)
    ap.add_argument("--stub", required=True)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the run directory (daemon log)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    root = tempfile.mkdtemp(prefix="flowhq-bench-gitops-")
    origin = os.path.join(root, "origin.git")
    work = os.path.join(root, "work")
    state = os.path.join(root, "state")
    git(root, "init", "-q", "--bare", "-b", "main", origin)
    os.makedirs(os.path.join(work, "tenants.d"))
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", f"file://{origin}")
    ids = [f"t{i:04d}" for i in range(args.tenants)]
    for i, t in enumerate(ids):
        with open(os.path.join(work, "tenants.d", f"{t}.toml"), "w") as f:
            f.write(tenant_toml(i, t))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"{args.tenants} tenants")
    git(work, "push", "-q", "origin", "HEAD:main")

    config = os.path.join(root, "flowhq.toml")
    with open(config, "w") as f:
        f.write(
            f'tenants_dir = "{root}/unused"\nstate_dir = "{state}"\n'
            f'database_url = "sqlite://{state}/flowhq.db"\n'
            '[status]\nlisten = "127.0.0.1:0"\n'
            f'[worker]\ncommand = ["{args.stub}"]\n'
            'capacity = 100000\n'  # stub workers: no browser to make room for
            'backoff = { initial = "0s", max = "5m" }\n'
            f'[source.git]\nurl = "file://{origin}"\nbranch = "main"\npath = "tenants.d"\n'
            'interval = "1h"\n'
        )
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "DATABASE_URL")}
    env["RUST_LOG"] = "info"
    daemon_log = os.path.join(root, "daemon.log")
    logf = open(daemon_log, "ab")
    procs = ProcTable(args.stub, [args.flowhq])
    results = {"tenants": args.tenants, "repeats": args.repeats}

    log(f"cold start of {args.tenants} tenants from the repository")
    t0 = now()
    proc = subprocess.Popen(
        [args.flowhq, "daemon", "--config", config],
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=logf,
        env=env,
    )
    try:

        def all_running():
            live = procs.scan()
            return all(t in live for t in ids)

        wait_for(all_running, 300, 0.02)
        results["cold_s"] = now() - t0
        log(f"cold: {results['cold_s']:.2f} s")
        time.sleep(5)

        changes = []
        for r in range(args.repeats):
            t = f"lat-{r:03d}"
            with open(os.path.join(work, "tenants.d", f"{t}.toml"), "w") as f:
                f.write(tenant_toml(100000 + r, t))
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", f"add {t}")
            git(work, "push", "-q", "origin", "HEAD:main")
            start = now()
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: t in procs.scan(), 60)
            changes.append(now() - start)
            time.sleep(0.5)
        results["change_s"] = changes
        log(f"change: p50 {pct(changes, 50) * 1000:.0f} ms, p99 {pct(changes, 99) * 1000:.0f} ms")

        big = ids[:200]
        for i, t in enumerate(big):
            with open(os.path.join(work, "tenants.d", f"{t}.toml"), "w") as f:
                f.write(tenant_toml(i, t + "-renamed"))
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "rename 200")
        commit = git(work, "rev-parse", "HEAD")
        git(work, "push", "-q", "origin", "HEAD:main")
        db = sqlite3.connect(f"file:{state}/flowhq.db?mode=ro", uri=True, timeout=30)

        def all_at_commit():
            (n,) = db.execute(
                "SELECT count(*) FROM tenants WHERE revision = ? AND id IN ({})".format(
                    ",".join("?" * len(big))
                ),
                [commit, *big],
            ).fetchone()
            return n == len(big)

        start = now()
        proc.send_signal(signal.SIGHUP)
        wait_for(all_at_commit, 120, 0.005)
        results["commit200_s"] = now() - start
        time.sleep(2)
        with open(daemon_log) as f:
            text = f.read()
        after = text[text.rfind(f"checked out commit={commit}") :]
        m = re.search(r"reconcile pass applied actions=(\d+) took_ms=(\d+)", after)
        results["commit200_pass"] = {"actions": int(m.group(1)), "took_ms": int(m.group(2))} if m else None
        log(f"commit of 200 files: {results['commit200_s'] * 1000:.0f} ms, pass {results['commit200_pass']}")

        time.sleep(10)
        cpu0, _, _ = proc_cpu_rss(proc.pid)
        time.sleep(30)
        cpu1, rss, hwm = proc_cpu_rss(proc.pid)
        results["idle_cpu_s_30s"] = cpu1 - cpu0
        results["rss_bytes"] = rss
        results["peak_rss_bytes"] = hwm
        log(f"idle CPU {cpu1 - cpu0:.2f} s / 30 s, RSS {rss / 2**20:.1f} MiB, peak {hwm / 2**20:.1f} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
        for pid in procs.all_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    if args.keep:
        print(f"run directory kept: {root}")
    else:
        subprocess.run(["rm", "-rf", root], check=False)


if __name__ == "__main__":
    main()
