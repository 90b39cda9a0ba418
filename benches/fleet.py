#!/usr/bin/env python3
"""Fleet benchmark: several `flowhq daemon`s ([fleet]) with stub workers on one PostgreSQL.

Run through scripts/bench-fleet.sh, which builds the release binaries and starts a throwaway
PostgreSQL cluster of its own. Each scenario gets a fresh database on that cluster, its own
nodes (state, runtime and log directories under --out, status port 0) and one shared tenant
directory. Workers are found in /proc: each node runs the stub through its own symlink, so a
worker's argv[0] names its node.

  failover  three nodes of capacity 100 and 150 tenants: node a starts alone and takes 100,
            then b and c take the other 50. a's daemon and workers are killed with SIGKILL,
            and the time is measured from the kill until each of a's tenants has exactly one
            live worker on another node, with what can be observed in between: a's lease
            expiry (`fleet_nodes.expires_at`, the database's clock), the grace, the
            placement (`fleet_assignments.assigned_at`), the restore (`session_restored`
            events) and the spawn (the new workers' start times in /proc/PID/stat).
            Rebalancing is off (max_moves_per_minute = 0), so nothing but the failover moves.
  dbload    one node with N tenants (30, then 300) at rest: every statement the cluster runs
            for a window (log_statement = 'all', application_name in log_line_prefix),
            counted per application (flowhq-daemon, flowhq-worker) and per statement.
  join      three nodes of capacity 150 and 300 tenants, placed while all three are live (so
            nothing needs rebalancing); then a fourth node joins, and every assignment's
            generation is sampled each second for a window: the moves per sliding minute
            must not exceed max_moves_per_minute.

Every scenario also samples the process table every 100 ms and counts samples in which a
tenant had two live workers (there must be none). Results go to OUT/results.json.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

DEFAULT_LEASE = {"lease_ttl": 15.0, "renew_interval": 5.0, "grace": 5.0}
SHORT_LEASE = {"lease_ttl": 3.0, "renew_interval": 1.0, "grace": 1.0}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wall_of_start(starttime_ticks):
    """The wall-clock time of a process start given in ticks since boot (/proc/PID/stat)."""
    since = time.clock_gettime(time.CLOCK_BOOTTIME) - starttime_ticks / CLK_TCK
    return time.time() - since


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def tenant_toml(i):
    return (
        f'business_name = "Biashara {i}"\nphone = "+2557{i:08d}"\ntemplate = "booking"\n'
        'language = "sw"\ntimezone = "Africa/Dar_es_Salaam"\n'
    )


def secs(d):
    return f"{d:g}s"


class Pg:
    """psql against the bench cluster."""

    def __init__(self, admin_url):
        self.admin = admin_url

    def url(self, db):
        return self.admin.rsplit("/", 1)[0] + "/" + db

    def run(self, sql, db=None):
        out = subprocess.run(
            ["psql", "-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1",
             self.url(db) if db else self.admin, "-c", sql],
            check=True, capture_output=True, text=True,
            env={**os.environ, "PGAPPNAME": "bench"},
        )
        return [line.split("|") for line in out.stdout.splitlines() if line]

    def fresh(self, db):
        self.run(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        self.run(f"CREATE DATABASE {db}")
        return self.url(db)


class Procs:
    """Live stub workers of the bench's nodes, by tenant, from /proc."""

    def __init__(self):
        self.stubs = {}  # argv[0] bytes -> node name
        self.known = {}  # pid -> (node, tenant) or None when not a stub worker for good
        self.flowhq = None

    def add_node(self, name, stub):
        self.stubs[stub.encode()] = name

    def _identify(self, pid):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return None, False
        node = self.stubs.get(argv[0])
        if node is not None and len(argv) >= 3 and argv[1] == b"--tenant":
            return (node, argv[2].decode()), True
        # A child forked by a daemon shows the daemon's exe until it execs.
        return None, exe != self.flowhq

    def scan(self):
        """{tenant: [(node, pid, start_wall)]} of live (not zombie, not stopped) workers."""
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        alive = set(pids)
        for pid in [p for p in self.known if p not in alive]:
            del self.known[pid]
        out = {}
        for pid in pids:
            if pid in self.known:
                who = self.known[pid]
            else:
                who, final = self._identify(pid)
                if final:
                    self.known[pid] = who
            if who is None:
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if rest[0] in ("Z", "T", "t", "X"):
                continue
            out.setdefault(who[1], []).append((who[0], pid, wall_of_start(int(rest[19]))))
        return out


class Node:
    def __init__(self, args, root, name, capacity, url, tenants_dir, fleet, procs):
        self.args, self.name, self.url = args, name, url
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.stub = os.path.join(self.dir, "stub-worker")
        if not os.path.lexists(self.stub):
            os.symlink(args.stub, self.stub)
        procs.add_node(name, self.stub)
        self.procs = procs
        self.proc = None
        keys = "".join(
            f'{k} = "{secs(v)}"\n' if isinstance(v, float) else f"{k} = {v}\n"
            for k, v in fleet.items()
        )
        self.config = os.path.join(self.dir, "flowhq.toml")
        with open(self.config, "w") as f:
            f.write(
                f'tenants_dir = "{tenants_dir}"\nstate_dir = "{self.dir}/state"\n'
                f'database_url = "{url}"\n'
                '[status]\nlisten = "127.0.0.1:0"\n'
                f'[worker]\ncommand = ["{self.stub}"]\n'
                'capacity = 100000\n'  # stub workers: no browser to make room for
                f'heartbeat_interval = "{secs(args.heartbeat)}"\n'
                f'[fleet]\nnode = "{name}"\ncapacity = {capacity}\n{keys}'
            )

    def start(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "DATABASE_URL")}
        env["RUST_LOG"] = "info"
        self.logf = open(os.path.join(self.dir, "daemon.log"), "ab")
        self.proc = subprocess.Popen(
            [self.args.flowhq, "daemon", "--config", self.config],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf, env=env,
        )

    def workers(self, live=None):
        live = self.procs.scan() if live is None else live
        return {t: pid for t, at in live.items() for (n, pid, _) in at if n == self.name}

    def kill9(self):
        """SIGKILL to the daemon, then to every worker's process group; returns the tenants."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        mine = self.workers()
        for pid in mine.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return sorted(mine)

    def log_text(self):
        with open(os.path.join(self.dir, "daemon.log"), "rb") as f:
            return f.read().decode(errors="replace")


class Fleet:
    """The nodes of one scenario; `close` kills them all by pid."""

    def __init__(self, args, pg, name):
        self.args, self.pg, self.db = args, pg, name
        self.root = os.path.join(args.out, name)
        shutil.rmtree(self.root, ignore_errors=True)
        self.tenants = os.path.join(self.root, "tenants.d")
        os.makedirs(self.tenants)
        self.url = pg.fresh(name)
        subprocess.run([args.flowhq, "migrate", "--database-url", self.url], check=True,
                       stdout=subprocess.DEVNULL)
        self.procs = Procs()
        self.procs.flowhq = os.path.realpath(args.flowhq)
        self.nodes = {}
        self.doubles = 0
        self.samples = 0

    def node(self, name, capacity, fleet):
        n = Node(self.args, self.root, name, capacity, self.url, self.tenants, fleet, self.procs)
        self.nodes[name] = n
        return n

    def write_tenants(self, ids):
        for i, t in enumerate(ids):
            write_atomic(os.path.join(self.tenants, f"{t}.toml"), tenant_toml(i))

    def sample(self):
        live = self.procs.scan()
        self.samples += 1
        self.doubles += sum(1 for at in live.values() if len(at) > 1)
        return live

    def wait(self, what, pred, timeout):
        start = time.time()
        while True:
            live = self.sample()
            if pred(live):
                return live
            if time.time() - start > timeout:
                raise TimeoutError(f"{self.db}: timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)

    def converged(self, ids, on=None):
        def check(live):
            return len(live) == len(ids) and all(
                len(live.get(t, [])) == 1 and (on is None or live[t][0][0] in on) for t in ids
            )
        return check

    def per_node(self, live):
        out = {n: 0 for n in self.nodes}
        for at in live.values():
            for n, _, _ in at:
                out[n] += 1
        return out

    def close(self):
        for n in self.nodes.values():
            if n.proc is not None:
                n.proc.kill()
                n.proc.wait()
                n.proc = None
        for at in self.procs.scan().values():
            for _, pid, _ in at:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            self.pg.run(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        except subprocess.CalledProcessError:
            pass


def epoch(pg, db, sql):
    return [[float(x) if x not in ("", None) else None for x in row] for row in pg.run(sql, db)]


def failover(args, pg, lease, label, run):
    fl = Fleet(args, pg, f"bench_failover_{label}_{run}")
    try:
        cfg = {**lease, "max_moves_per_minute": 0}
        ids = [f"t{i:03d}" for i in range(150)]
        fl.write_tenants(ids)
        for name in "abc":
            fl.node(name, 100, cfg)
        fl.nodes["a"].start()
        fl.wait("100 tenants on a", lambda live: fl.per_node(live)["a"] == 100, 120)
        fl.nodes["b"].start()
        fl.nodes["c"].start()
        live = fl.wait("150 tenants running once", fl.converged(ids), 180)
        before = fl.per_node(live)
        time.sleep(2)
        placer = pg.run("SELECT node FROM fleet_leases WHERE name = 'placer'", fl.db)[0][0]
        victim = max(before, key=lambda n: before[n])
        rest = [n for n in fl.nodes if n != victim]
        gens = {t: int(g) for t, g in pg.run(
            "SELECT tenant_id, generation FROM fleet_assignments", fl.db)}
        load = loadavg()
        t0 = time.time()
        moved = fl.nodes[victim].kill9()
        kill_done = time.time() - t0
        seen = {}
        deadline = t0 + args.failover_timeout
        while len(seen) < len(moved):
            live = fl.sample()
            now = time.time()
            for t in moved:
                at = live.get(t, [])
                if t not in seen and len(at) == 1 and at[0][0] in rest:
                    seen[t] = (now - t0, at[0][2] - t0)
            if now > deadline:
                raise TimeoutError(f"{len(moved) - len(seen)} tenants did not move")
            time.sleep(0.1)
        total = max(s for s, _ in seen.values())
        time.sleep(1)
        fl.sample()
        ids_sql = ",".join(f"'{t}'" for t in moved)
        (exp,) = epoch(pg, fl.db, "SELECT extract(epoch FROM expires_at) FROM fleet_nodes "
                                  f"WHERE node = '{victim}'")[0]
        assigned = [r[0] for r in epoch(
            pg, fl.db, "SELECT extract(epoch FROM assigned_at) FROM fleet_assignments "
                       f"WHERE tenant_id IN ({ids_sql})")]
        new_gens = dict(pg.run("SELECT tenant_id, generation FROM fleet_assignments "
                               f"WHERE tenant_id IN ({ids_sql})", fl.db))
        restored = [int(r[0]) / 1000 for r in pg.run(
            "SELECT max(at) FROM events WHERE kind IN ('session_restored', "
            f"'session_restore_failed') AND tenant_id IN ({ids_sql}) GROUP BY tenant_id", fl.db)]
        new_placer = pg.run("SELECT node FROM fleet_leases WHERE name = 'placer'", fl.db)[0][0]
        skew = float(pg.run("SELECT extract(epoch FROM clock_timestamp())", fl.db)[0][0]) \
            - time.time()

        def span(xs):
            xs = [x - t0 for x in xs]
            return [round(min(xs), 3), round(max(xs), 3)] if xs else None

        out = {
            "lease": lease, "run": run, "per_node_before": before, "victim": victim,
            "placer_before": placer, "placer_after": new_placer,
            "tenants_moved": len(moved), "kill_took_s": round(kill_done, 3),
            "generation_bumped": sum(int(new_gens[t]) > gens[t] for t in moved),
            "lease_expiry_s": round(exp - t0, 3),
            "expiry_plus_grace_s": round(exp + lease["grace"] - t0, 3),
            "placed_s": span(assigned), "restored_s": span(restored),
            "spawned_s": span([t0 + s for _, s in seen.values()]),
            "all_running_s": round(total, 3),
            "bound_ttl_grace_renew_s": lease["lease_ttl"] + lease["grace"]
            + lease["renew_interval"],
            "db_clock_minus_local_s": round(skew, 4), "loadavg_at_kill": load,
            "doubles": fl.doubles, "samples": fl.samples,
        }
        log(f"failover {label} run {run}: {json.dumps(out)}")
        return out
    finally:
        fl.close()


LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \w+\|([^|]*)\|\d+\|"
                  r"LOG:  (?:statement|execute [^:]+): (.*)$")


def normalize(sql):
    sql = re.sub(r"\s+", " ", sql).strip()
    return sql[:90]


def dbload(args, pg, n):
    fl = Fleet(args, pg, f"bench_dbload_{n}")
    try:
        cfg = {**DEFAULT_LEASE, "max_moves_per_minute": 0}
        ids = [f"t{i:03d}" for i in range(n)]
        fl.write_tenants(ids)
        fl.node("a", 400, cfg).start()
        fl.wait(f"{n} tenants running", fl.converged(ids), 300)
        time.sleep(args.settle)
        logpath = args.pg_log
        offset = os.path.getsize(logpath)
        pg.run("ALTER SYSTEM SET log_line_prefix = '%m|%a|%p|'")
        pg.run("ALTER SYSTEM SET log_statement = 'all'")
        pg.run("SELECT pg_reload_conf()")
        time.sleep(1)
        load0 = loadavg()
        start = time.time()
        while time.time() - start < args.window:
            fl.sample()
            time.sleep(0.5)
        end = time.time()
        pg.run("ALTER SYSTEM RESET log_statement")
        pg.run("ALTER SYSTEM RESET log_line_prefix")
        pg.run("SELECT pg_reload_conf()")
        counts, kinds = {}, {}
        with open(logpath, "rb") as f:
            f.seek(offset)
            for raw in f:
                m = LINE.match(raw.decode(errors="replace").rstrip("\n"))
                if not m:
                    continue
                at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f") \
                    .replace(tzinfo=datetime.timezone.utc).timestamp()
                app = m.group(2)
                if not (start <= at <= end) or app not in ("flowhq-daemon", "flowhq-worker"):
                    continue
                counts[app] = counts.get(app, 0) + 1
                key = (app, normalize(m.group(3)))
                kinds[key] = kinds.get(key, 0) + 1
        window = end - start
        out = {
            "tenants": n, "window_s": round(window, 1), "heartbeat_interval_s": args.heartbeat,
            "statements": counts,
            "per_second": {a: round(c / window, 2) for a, c in counts.items()},
            "by_statement": sorted(
                ([a, s, c, round(c / window, 3)] for (a, s), c in kinds.items()),
                key=lambda r: (r[0], -r[2])),
            "loadavg": load0, "doubles": fl.doubles,
        }
        log(f"dbload {n}: {json.dumps({k: v for k, v in out.items() if k != 'by_statement'})}")
        return out
    finally:
        fl.close()


def join(args, pg):
    fl = Fleet(args, pg, "bench_join")
    try:
        budget = args.budget
        cfg = {**DEFAULT_LEASE, "max_moves_per_minute": budget}
        ids = [f"t{i:03d}" for i in range(300)]
        for name in "abc":
            fl.node(name, 150, cfg).start()
        # Every node is live before the tenants appear, so the first placement is balanced.
        fl.wait("three live nodes", lambda _: int(pg.run(
            "SELECT count(*) FROM fleet_nodes WHERE expires_at > now()", fl.db)[0][0]) == 3, 60)
        fl.write_tenants(ids)
        live = fl.wait("300 tenants running once", fl.converged(ids, "abc"), 300)
        before = fl.per_node(live)

        def gens():
            return {t: (int(g), nd) for t, g, nd in pg.run(
                "SELECT tenant_id, generation, coalesce(node, '') FROM fleet_assignments",
                fl.db)}

        quiet0 = gens()
        time.sleep(args.settle)
        quiet1 = gens()
        moved_at_rest = sum(quiet1[t][0] != quiet0[t][0] for t in quiet0)
        fl.node("d", 150, cfg).start()
        t0 = time.time()
        load0 = loadavg()
        last = quiet1
        moves = []  # (seconds since the join, tenant, from, to)
        while time.time() - t0 < args.join_window:
            time.sleep(1)
            fl.sample()
            now_g = gens()
            for t, (g, nd) in now_g.items():
                if g != last[t][0]:
                    moves.append((round(time.time() - t0, 1), t, last[t][1], nd))
            last = now_g
        at = [m[0] for m in moves]
        max_per_minute = max((sum(1 for y in at if x <= y < x + 60) for x in at), default=0)
        live = fl.sample()
        out = {
            "budget_per_minute": budget, "per_node_before": before,
            "moves_at_rest_before_join": moved_at_rest,
            "window_s": args.join_window, "moves": moves, "moves_total": len(moves),
            "max_moves_in_any_60s": max_per_minute,
            "per_node_after": fl.per_node(live), "loadavg_at_join": load0,
            "doubles": fl.doubles, "samples": fl.samples,
        }
        log(f"join: {json.dumps(out)}")
        return out
    finally:
        fl.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flowhq", required=True)
    p.add_argument("--stub", required=True)
    p.add_argument("--pg-url", required=True, help="admin URL of the bench cluster")
    p.add_argument("--pg-log", required=True, help="the cluster's server log (stderr)")
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=3, help="failover runs per lease setting")
    p.add_argument("--heartbeat", type=float, default=30.0, help="worker heartbeat_interval, s")
    p.add_argument("--window", type=float, default=60.0, help="dbload counting window, s")
    p.add_argument("--settle", type=float, default=20.0, help="rest before measuring, s")
    p.add_argument("--budget", type=int, default=6, help="join: max_moves_per_minute")
    p.add_argument("--join-window", type=float, default=120.0)
    p.add_argument("--failover-timeout", type=float, default=120.0)
    p.add_argument("--only", default="failover,dbload,join")
    p.add_argument("--dbload-tenants", default="30,300", help="dbload: tenant counts")
    p.add_argument("--leases", default="short,default", help="failover: lease settings to run")
    args = p.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    pg = Pg(args.pg_url)
    only = args.only.split(",")
    path = os.path.join(args.out, "results.json")
    # A run of some scenarios (--only) keeps the other scenarios' last results.
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    results.update({"cpus": os.cpu_count(), "loadavg_at_start": loadavg()})

    def save():
        with open(path, "w") as f:
            json.dump(results, f, indent=1)

    if "failover" in only:
        leases = {"short": SHORT_LEASE, "default": DEFAULT_LEASE}
        for label in args.leases.split(","):
            lease = leases[label]
            results[f"failover_{label}"] = []
            for run in range(1, args.runs + 1):
                results[f"failover_{label}"].append(failover(args, pg, lease, label, run))
                save()
    if "dbload" in only:
        results["dbload"] = []
        for n in args.dbload_tenants.split(","):
            try:
                results["dbload"].append(dbload(args, pg, int(n)))
            except TimeoutError as err:
                log(f"dbload {n}: {err}")
                results["dbload"].append({"tenants": int(n), "error": str(err)})
            save()
    if "join" in only:
        try:
            results["join"] = join(args, pg)
        except TimeoutError as err:
            log(f"join: {err}")
            results["join"] = {"error": str(err)}
        save()
    log(f"results in {path}")


if __name__ == "__main__":
    sys.exit(main())
