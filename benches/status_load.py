#!/usr/bin/env python3
"""Does load on the status endpoint slow the daemon down?

Run through scripts/bench-status-load.sh (release binaries). Starts `flowhq daemon` with N stub
tenants, waits until every worker runs, then measures the change latency (a new tenant file
renamed into tenants.d -> its worker running, found in /proc exactly like benches/daemon.py
does) REPEATS times at rest, then REPEATS times while wrk hammers `/v1/tenants` (the heaviest
route: the whole fleet as JSON, uncompressed) with 64 connections, once at normal priority and
once at nice 19 (which leaves the endpoint's own work as the only competitor of the loop), and
prints them next to the daemon's own reconcile-pass figures from /metrics.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as bench  # noqa: E402  (benches/daemon.py: the same harness and definitions)


def status_port(log_path, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path, "rb") as f:
            m = re.search(rb"status endpoint listening addr=127\.0\.0\.1:(\d+)", f.read())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise SystemExit("the daemon never said where its status endpoint listens")


def reconcile_figures(port):
    """(passes, total seconds) of the daemon's reconcile-duration histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    count = re.search(r"^flowhq_reconcile_duration_seconds_count (\S+)", text, re.M)
    total = re.search(r"^flowhq_reconcile_duration_seconds_sum (\S+)", text, re.M)
    return float(count.group(1)), float(total.group(1))


def changes(m, procs, first, ids, label):
    lat = []
    for i, t in enumerate(ids):
        procs.scan()
        start = bench.now()
        m.add(first + i, t)
        bench.wait_for(lambda: t in procs.scan(), 120)
        lat.append(bench.now() - start)
        time.sleep(0.4)
    bench.log(
        f"{label}: change p50 {bench.pct(lat, 50) * 1000:.0f} ms "
        f"p99 {bench.pct(lat, 99) * 1000:.0f} ms"
    )
    return lat


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--flowhq", required=True)
    p.add_argument("--stub", required=True)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()

    root = tempfile.mkdtemp(prefix="flowhq-status-load-")
    procs = bench.ProcTable(args.stub, [args.flowhq])
    m = bench.Flowhq(args, root, procs)
    ids = bench.tenants(args.tenants)
    m.prepare(ids)
    m.start()
    wrk = None
    try:
        bench.wait_for(bench.all_running(procs, ids), 300, interval=0.02)
        bench.log(f"{args.tenants} running")
        port = status_port(os.path.join(root, "daemon.log"))
        time.sleep(5)
        extra = [f"x{i:04d}" for i in range(args.repeats)]

        c0 = reconcile_figures(port)
        quiet = changes(m, procs, args.tenants, extra, "at rest")
        c1 = reconcile_figures(port)

        # Under load twice: wrk at the daemon's priority (the load generator and the endpoint
        # both take CPU from the loop), then wrk at nice 19 (only the endpoint's own work
        # competes, as when the clients are elsewhere).
        loads = []
        first = args.tenants + args.repeats
        for label, prefix in [
            ("wrk -t2 -c64 on /v1/tenants", []),
            ("the same, wrk at nice 19", ["nice", "-n", "19"]),
        ]:
            wrk = subprocess.Popen(
                prefix
                + ["wrk", "-t2", "-c64", "-d600s", f"http://127.0.0.1:{port}/v1/tenants"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            time.sleep(3)
            before = reconcile_figures(port)
            names = [f"w{len(loads)}-{i:04d}" for i in range(args.repeats)]
            loaded = changes(m, procs, first, names, label)
            first += args.repeats
            after = reconcile_figures(port)
            # wrk prints its summary when interrupted, not when terminated.
            wrk.send_signal(signal.SIGINT)
            out, _ = wrk.communicate(timeout=30)
            wrk = None
            rps = re.search(r"Requests/sec:\s+(\S+)", out or "")
            loads.append((label, loaded, before, after, rps.group(1) if rps else "?"))

        def per_pass(a, b):
            return (b[1] - a[1]) / max(b[0] - a[0], 1) * 1000

        print()
        print(
            f"{args.tenants} tenants, {args.repeats} changes each, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}"
        )
        print()
        print("| condition | change p50 | change p99 | mean reconcile pass | /v1/tenants req/s |")
        print("|---|---|---|---|---|")
        print(
            f"| at rest | {bench.pct(quiet, 50) * 1000:.0f} ms | {bench.pct(quiet, 99) * 1000:.0f} ms "
            f"| {per_pass(c0, c1):.1f} ms | — |"
        )
        for label, loaded, before, after, rps in loads:
            print(
                f"| {label} | {bench.pct(loaded, 50) * 1000:.0f} ms "
                f"| {bench.pct(loaded, 99) * 1000:.0f} ms | {per_pass(before, after):.1f} ms "
                f"| {rps} |"
            )
    finally:
        if wrk is not None:
            wrk.kill()
        m.stop()
        bench.wait_no_workers(procs)


if __name__ == "__main__":
    main()
