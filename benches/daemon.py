#!/usr/bin/env python3
"""Daemon benchmark: flowhq, PM2 and supervisord managing the same stub workers.

Run through scripts/bench-daemon.sh, which installs the tools and builds the release binaries.
For each manager, one after the other in the same run, it measures:

  cold      time from starting the manager to every worker running, at 100 and at N tenants
  add       time from the operator's action for one new tenant to its worker running, with N
            running (flowhq: rename a new tenant file into tenants.d; PM2: `pm2 start`;
            supervisord: write a program file, then `supervisorctl update`)
  remove    time from the operator's action removing one of those tenants to its worker gone
            (flowhq: delete the tenant file; PM2: `pm2 delete`; supervisord: delete the program
            file, then `supervisorctl update`)
  replace   time from `kill -9` of a running worker to its replacement running, restart delay 0
  idle      the manager process's CPU seconds (utime + stime) and VmRSS over 60 s of idling
  burst     flowhq only, at the end: 100 new tenant files written at once, the time until all
            run and how many passes the daemon needed for them (by its log)

"Running" is the same for all three: a process whose /proc/PID/exe is the stub worker binary and
whose argv is `--tenant ID` exists. It is found by polling /proc (every 2 ms for the change and
replace latencies, every 20 ms for cold starts), reading only processes not seen before. "Gone"
means no such process is left (the manager reaped it).

The stub reads its tenant's spec from the store, so PM2 and supervisord run it against a copy of
the SQLite store flowhq wrote in its own run (the tenant rows only); their workers then do what
flowhq's do: read the spec, write the session row, heartbeat every 30 s.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def now():
    return time.perf_counter()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class ProcTable:
    """Live stub workers by tenant, found in /proc; reads only pids not seen before."""

    def __init__(self, stub, managers):
        self.stub = os.path.realpath(stub)
        # A forked child shows its parent's exe until it execs: pids running one of these are
        # looked at again on every scan instead of being remembered as "not a worker".
        self.managers = {os.path.realpath(m) for m in managers if m}
        self.known = {}
        self.me = os.getpid()

    def _identify(self, pid):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None, False
        if exe != self.stub:
            return None, exe not in self.managers
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return None, False
        if len(argv) >= 3 and argv[1] == b"--tenant":
            return argv[2].decode(), True
        return None, False

    def scan(self):
        """Returns {tenant: set(pids)} of live workers."""
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        live = set(pids)
        for pid in [p for p in self.known if p not in live]:
            del self.known[pid]
        out = {}
        for pid in pids:
            if pid == self.me:
                continue
            if pid in self.known:
                tenant = self.known[pid]
            else:
                tenant, final = self._identify(pid)
                if final:
                    self.known[pid] = tenant
            if tenant is not None:
                out.setdefault(tenant, set()).add(pid)
        return out

    def all_pids(self):
        return {p for pids in self.scan().values() for p in pids}


def wait_for(pred, timeout, interval=0.002):
    """Polls `pred` until it returns a truthy value; returns (value, seconds since call)."""
    start = now()
    while True:
        v = pred()
        if v:
            return v, now() - start
        if now() - start > timeout:
            raise TimeoutError(f"condition not met in {timeout} s")
        time.sleep(interval)


def pct(values, p):
    s = sorted(values)
    k = max(0, math.ceil(p / 100 * len(s)) - 1)
    return s[k]


def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, rss, hwm


def tenant_toml(i, name):
    return (
        f'business_name = "Business {name}"\nphone = "+2557{i:08d}"\ntemplate = "booking"\n'
        'language = "sw"\ntimezone = "Africa/Dar_es_Salaam"\n'
    )


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def tenants(n):
    return [f"t{i:04d}" for i in range(n)]


def latency_ids(n):
    return [f"lat-{i:03d}" for i in range(n)]


class Manager:
    """One process manager under test. Subclasses implement start/add/stop and `daemon_pid`."""

    name = "?"

    def __init__(self, args, root, procs):
        self.args = args
        self.root = root
        self.procs = procs

    def stub_env(self, db):
        """The environment a stub needs outside flowhq: its store and a config naming it."""
        cfg = os.path.join(self.root, "stub.toml")
        with open(cfg, "w") as f:
            f.write(
                f'tenants_dir = "{self.root}/tenants.d"\nstate_dir = "{self.root}/state"\n'
                f'database_url = "sqlite://{db}"\n'
            )
        return {"DATABASE_URL": f"sqlite://{db}", "FLOWHQ_CONFIG": cfg}


class Flowhq(Manager):
    name = "flowhq"

    def prepare(self, ids):
        self.dir = os.path.join(self.root, "tenants.d")
        self.state = os.path.join(self.root, "state")
        os.makedirs(self.dir)
        for i, t in enumerate(ids):
            write_atomic(os.path.join(self.dir, f"{t}.toml"), tenant_toml(i, t))
        self.config = os.path.join(self.root, "flowhq.toml")
        with open(self.config, "w") as f:
            f.write(
                f'tenants_dir = "{self.dir}"\nstate_dir = "{self.state}"\n'
                f'database_url = "sqlite://{self.state}/flowhq.db"\n'
                '[status]\nlisten = "127.0.0.1:0"\n'
                f'[worker]\ncommand = ["{self.args.stub}"]\n'
                'capacity = 100000\n'  # stub workers: no browser to make room for
                'backoff = { initial = "0s", max = "5m" }\n'
            )

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "DATABASE_URL")}
        env["RUST_LOG"] = "info"
        self.logf = open(os.path.join(self.root, "daemon.log"), "ab")
        self.proc = subprocess.Popen(
            [self.args.flowhq, "daemon", "--config", self.config],
            stdin=subprocess.DEVNULL,
            stdout=self.logf,
            stderr=self.logf,
            env=env,
        )

    def logged_after(self, walls, what="worker started"):
        """Seconds from each wall-clock time in `walls` to the log's `what` line of that tenant
        (`worker started`, `worker stopped`)."""
        import datetime

        with open(os.path.join(self.root, "daemon.log"), "rb") as f:
            text = f.read().decode(errors="replace")
        out = []
        for t, wall in walls.items():
            m = re.search(r"^(\S+?)Z .*" + what + " tenant=" + re.escape(t) + r" ", text, re.M)
            stamp = datetime.datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f")
            out.append(stamp.replace(tzinfo=datetime.timezone.utc).timestamp() - wall)
        return out

    def daemon_pid(self):
        return self.proc.pid

    def add(self, i, t):
        write_atomic(os.path.join(self.dir, f"{t}.toml"), tenant_toml(i, t))
        return None

    def remove(self, t):
        os.remove(os.path.join(self.dir, f"{t}.toml"))
        return None

    def passes(self):
        """The `reconcile pass applied` lines of the daemon's log so far."""
        with open(os.path.join(self.root, "daemon.log"), "rb") as f:
            text = f.read().decode(errors="replace")
        return [line for line in text.splitlines() if "reconcile pass applied" in line]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.logf.close()

    def db(self):
        return os.path.join(self.state, "flowhq.db")


class Pm2(Manager):
    name = "pm2"

    def prepare(self, ids, db):
        self.home = os.path.join(self.root, "pm2home")
        os.makedirs(self.home)
        self.env = dict(os.environ, PM2_HOME=self.home, **self.stub_env(db))
        apps = [
            {
                "name": t,
                "script": self.args.stub,
                "args": ["--tenant", t],
                "interpreter": "none",
                "autorestart": True,
                "restart_delay": 0,
            }
            for t in ids
        ]
        self.eco = os.path.join(self.root, "ecosystem.json")
        with open(self.eco, "w") as f:
            json.dump({"apps": apps}, f)

    def start(self):
        self.cli = subprocess.Popen(
            [self.args.pm2, "start", self.eco, "-s"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )

    def started(self):
        self.cli.wait(timeout=600)

    def daemon_pid(self):
        with open(os.path.join(self.home, "pm2.pid")) as f:
            return int(f.read().strip())

    def add(self, i, t):
        return subprocess.Popen(
            [self.args.pm2, "start", self.args.stub, "--name", t, "--interpreter", "none",
             "--restart-delay", "0", "-s", "--", "--tenant", t],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )

    def remove(self, t):
        return subprocess.Popen(
            [self.args.pm2, "delete", t, "-s"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )

    def stop(self):
        subprocess.run([self.args.pm2, "kill", "-s"], env=self.env, timeout=600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Supervisord(Manager):
    name = "supervisord"

    def prepare(self, ids, db):
        self.confd = os.path.join(self.root, "conf.d")
        self.logs = os.path.join(self.root, "log")
        os.makedirs(self.confd)
        os.makedirs(self.logs)
        env = self.stub_env(db)
        self.conf = os.path.join(self.root, "supervisord.conf")
        envline = ",".join(f'{k}="{v}"' for k, v in env.items())
        with open(self.conf, "w") as f:
            f.write(
                f"[unix_http_server]\nfile={self.root}/supervisor.sock\n\n"
                f"[supervisord]\nlogfile={self.root}/supervisord.log\npidfile={self.root}/supervisord.pid\n"
                f"childlogdir={self.logs}\nminfds=8192\nminprocs=4096\nenvironment={envline}\n\n"
                "[rpcinterface:supervisor]\n"
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
                f"[supervisorctl]\nserverurl=unix://{self.root}/supervisor.sock\n\n"
                f"[include]\nfiles={self.confd}/*.conf\n"
            )
        for t in ids:
            self.program(t)

    def program(self, t):
        with open(os.path.join(self.confd, f"{t}.conf"), "w") as f:
            f.write(
                f"[program:{t}]\ncommand={self.args.stub} --tenant {t}\nautostart=true\n"
                "autorestart=true\nstartsecs=0\nstartretries=1000\n"
                f"redirect_stderr=true\nstdout_logfile={self.logs}/{t}.log\n"
            )

    def start(self):
        self.proc = subprocess.Popen(
            [self.args.supervisord, "-n", "-c", self.conf],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def daemon_pid(self):
        return self.proc.pid

    def add(self, i, t):
        self.program(t)
        return self.update()

    def remove(self, t):
        os.remove(os.path.join(self.confd, f"{t}.conf"))
        return self.update()

    def update(self):
        return subprocess.Popen(
            [self.args.supervisorctl, "-c", self.conf, "update"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)


def all_running(procs, ids):
    want = set(ids)

    def check():
        running = procs.scan()
        return want.issubset(running.keys())

    return check


def wait_no_workers(procs, timeout=120):
    try:
        wait_for(lambda: not procs.all_pids(), timeout, interval=0.05)
    except TimeoutError:
        left = procs.all_pids()
        log(f"killing {len(left)} leftover workers")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not procs.all_pids(), 30, interval=0.05)


def measure(kind, args, run_root, procs, n, ids_db):
    """One manager at `n` tenants; returns its results. `ids_db` is the store for PM2/supervisord."""
    root = os.path.join(run_root, f"{kind}-{n}")
    os.makedirs(root)
    ids = tenants(n)
    m = {"flowhq": Flowhq, "pm2": Pm2, "supervisord": Supervisord}[kind](args, root, procs)
    if kind == "flowhq":
        m.prepare(ids)
    else:
        m.prepare(ids, ids_db)
    res = {"manager": kind, "tenants": n}
    procs.scan()
    log(f"{kind}: cold start of {n}")
    t0 = now()
    m.start()
    try:
        # Coarser polling here: the number is seconds, and the harness should not compete
        # with the workers it waits for.
        wait_for(all_running(procs, ids), args.timeout, interval=0.02)
        res["cold_s"] = now() - t0
        log(f"{kind}: {n} running after {res['cold_s']:.3f} s")
        if kind == "pm2":
            m.started()
        if n < args.tenants:
            return res
        time.sleep(args.settle)

        lat = []
        walls = {}
        for i, t in enumerate(latency_ids(args.repeats)):
            procs.scan()
            start = now()
            walls[t] = time.time()
            cli = m.add(n + i, t)
            wait_for(lambda: t in procs.scan(), args.timeout)
            lat.append(now() - start)
            if cli is not None:
                cli.wait(timeout=600)
            time.sleep(random.uniform(0.3, 0.6))
        res["change_s"] = lat
        log(f"{kind}: add p50 {pct(lat, 50) * 1000:.0f} ms p99 {pct(lat, 99) * 1000:.0f} ms")
        if kind == "flowhq":
            # The same changes as the daemon saw them: from the rename to its own
            # `worker started` line (same clock), without this harness's /proc polling.
            logged = m.logged_after(walls)
            res["change_logged_s"] = logged
            log(
                f"{kind}: add by the daemon's log p50 {pct(logged, 50) * 1000:.0f} ms "
                f"p99 {pct(logged, 99) * 1000:.0f} ms"
            )

        rem = []
        walls = {}
        for t in latency_ids(args.repeats):
            old = procs.scan().get(t, set())
            assert len(old) == 1, f"{kind}: {t} has workers {old}"
            start = now()
            walls[t] = time.time()
            cli = m.remove(t)
            wait_for(lambda: not procs.scan().get(t, set()) & old, args.timeout)
            rem.append(now() - start)
            if cli is not None:
                cli.wait(timeout=600)
            time.sleep(random.uniform(0.3, 0.6))
        res["remove_s"] = rem
        log(f"{kind}: remove p50 {pct(rem, 50) * 1000:.0f} ms p99 {pct(rem, 99) * 1000:.0f} ms")
        if kind == "flowhq":
            logged = m.logged_after(walls, "worker stopped")
            res["remove_logged_s"] = logged
            log(
                f"{kind}: remove by the daemon's log p50 {pct(logged, 50) * 1000:.0f} ms "
                f"p99 {pct(logged, 99) * 1000:.0f} ms"
            )

        rep = []
        victims = random.Random(7).sample(ids, args.repeats)
        for t in victims:
            old = procs.scan().get(t, set())
            assert len(old) == 1, f"{kind}: {t} has workers {old}"
            (old,) = old
            start = now()
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: procs.scan().get(t, set()) - {old}, args.timeout)
            rep.append(now() - start)
            time.sleep(random.uniform(0.3, 0.6))
        res["replace_s"] = rep
        log(f"{kind}: replace p50 {pct(rep, 50) * 1000:.0f} ms p99 {pct(rep, 99) * 1000:.0f} ms")

        time.sleep(args.settle)
        pid = m.daemon_pid()
        running = len(procs.scan())
        cpu0, _, _ = proc_cpu_rss(pid)
        t_idle = now()
        time.sleep(args.idle)
        cpu1, rss, hwm = proc_cpu_rss(pid)
        res["idle"] = {
            "workers": running,
            "seconds": now() - t_idle,
            "cpu_s": cpu1 - cpu0,
            "rss_bytes": rss,
            "hwm_bytes": hwm,
        }
        log(f"{kind}: idle {res['idle']['cpu_s']:.2f} CPU s in {args.idle} s, RSS {rss / 2**20:.1f} MiB")
        if kind == "flowhq":
            res["burst"] = burst(m, procs, n, args)
        return res
    finally:
        log(f"{kind}: stopping")
        try:
            m.stop()
        finally:
            wait_no_workers(procs)


def burst(m, procs, n, args, size=100):
    """flowhq: `size` new tenant files written one after another as fast as possible; the time
    until all run and the passes that applied them (log lines after the first write)."""
    ids = [f"burst-{i:03d}" for i in range(size)]
    before = len(m.passes())
    start = now()
    for i, t in enumerate(ids):
        m.add(n + 1000 + i, t)
    wait_for(all_running(procs, ids), args.timeout, interval=0.02)
    took = now() - start
    time.sleep(1)
    passes = m.passes()[before:]
    out = {"files": size, "seconds": took, "passes": passes}
    log(f"flowhq: burst of {size} files running after {took * 1000:.0f} ms in {len(passes)} pass(es)")
    return out


def ms(x):
    return f"{x * 1000:.0f} ms"


def table(results, small, n):
    rows = [
        f"| manager | cold {small:,} | cold {n:,} | add p50 / p99 | remove p50 / p99 "
        "| replace p50 / p99 | idle CPU (60 s) | RSS | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    logged = removed = burst = None
    for kind in ("flowhq", "pm2", "supervisord"):
        if not any(r["manager"] == kind for r in results):
            continue
        small = next(r for r in results if r["manager"] == kind and r["tenants"] != n)
        big = next(r for r in results if r["manager"] == kind and r["tenants"] == n)
        idle = big["idle"]
        rows.append(
            f"| {kind} | {small['cold_s']:.2f} s | {big['cold_s']:.2f} s "
            f"| {ms(pct(big['change_s'], 50))} / {ms(pct(big['change_s'], 99))} "
            f"| {ms(pct(big['remove_s'], 50))} / {ms(pct(big['remove_s'], 99))} "
            f"| {ms(pct(big['replace_s'], 50))} / {ms(pct(big['replace_s'], 99))} "
            f"| {idle['cpu_s']:.2f} s | {idle['rss_bytes'] / 2**20:.1f} MiB "
            f"| {idle['hwm_bytes'] / 2**20:.1f} MiB |"
        )
        logged = big.get("change_logged_s", logged)
        removed = big.get("remove_logged_s", removed)
        burst = big.get("burst", burst)
    if logged:
        rows.append("")
        rows.append(
            f"flowhq by its own log: add (rename -> `worker started`) "
            f"p50 {ms(pct(logged, 50))}, p99 {ms(pct(logged, 99))}; remove (unlink -> "
            f"`worker stopped`) p50 {ms(pct(removed, 50))}, p99 {ms(pct(removed, 99))}"
        )
    if burst:
        rows.append(
            f"flowhq burst: {burst['files']} files written at once running after "
            f"{burst['seconds'] * 1000:.0f} ms, applied in {len(burst['passes'])} pass(es)"
        )
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flowhq", required=True)
    p.add_argument("--stub", required=True)
    p.add_argument("--pm2", required=True)
    p.add_argument("--supervisord", required=True)
    p.add_argument("--supervisorctl", required=True)
    p.add_argument("--node", default=shutil.which("node"))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--managers", default="flowhq,pm2,supervisord")
    p.add_argument("--out", required=True, help="directory for the run's files and results.json")
    args = p.parse_args()

    os.makedirs(args.out, exist_ok=True)
    run_root = os.path.join(args.out, "run")
    shutil.rmtree(run_root, ignore_errors=True)
    os.makedirs(run_root)
    procs = ProcTable(args.stub, [args.flowhq, args.node, args.python,
                                  os.path.realpath(shutil.which("python3") or "")])
    if procs.all_pids():
        sys.exit("stub workers of this checkout are already running; stop them first")

    results = []
    ids_db = os.path.join(run_root, "tenants.db")
    started = time.time()
    for kind in args.managers.split(","):
        for n in (args.small, args.tenants):
            r = measure(kind, args, run_root, procs, n, ids_db)
            results.append(r)
            if kind == "flowhq" and n == args.tenants:
                # The tenant rows flowhq wrote, for the other managers' stubs.
                src = sqlite3.connect(os.path.join(run_root, f"flowhq-{n}", "state", "flowhq.db"))
                dst = sqlite3.connect(ids_db)
                src.backup(dst)
                src.close()
                dst.close()
    load = open("/proc/loadavg").read().split()[:3]
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": time.time() - started,
        "load_average": load,
        "args": {k: v for k, v in vars(args).items()},
        "results": results,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    if all(r["manager"] in args.managers for r in results) and len(results) == 6:
        print(table(results, args.small, args.tenants))
    print(f"raw numbers: {os.path.join(args.out, 'results.json')}; took {out['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
