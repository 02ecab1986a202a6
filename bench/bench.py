#!/usr/bin/env python3
"""bi_access benchmark driver (issue 6). Started by bench/run.sh once its three
scratch clusters are up; see bench/README.md for what is measured.

Cluster A: the data set, bi_access, 10 credentials.
Cluster B: a copy of A made while it was stopped, plus 9,990 credentials.
Cluster C: the same tables, empty, with the per-credential baseline.

Every comparison alternates its sides within each round (A B, then B A in the
next round), several rounds; the reported figure is the median over rounds of
the per-round ratio, with the min-max spread.
"""

import argparse
import collections
from contextlib import contextmanager
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import random

import psycopg2

# Each query as the table owner or application writes it (org filter by hand,
# {schema} public or plain) and as a credential writes it (RLS filters).
# {id} is a primary key of the org's own rows.
QUERIES = {
    "point lookup by primary key": {
        "hand": "SELECT * FROM {schema}.orders WHERE id = {id} AND org_id = {org}",
        "rls": "SELECT * FROM public.orders WHERE id = {id}",
    },
    "org-wide aggregate": {
        "hand": "SELECT count(*), sum(amount), avg(amount), max(created_at) "
        "FROM {schema}.orders WHERE org_id = {org}",
        "rls": "SELECT count(*), sum(amount), avg(amount), max(created_at) FROM public.orders",
    },
    "join of two exposed tables": {
        "hand": "SELECT o.status, count(*), sum(i.quantity * i.unit_price) "
        "FROM {schema}.orders o JOIN {schema}.order_items i ON i.order_id = o.id "
        "WHERE o.org_id = {org} AND i.org_id = {org} GROUP BY o.status",
        "rls": "SELECT o.status, count(*), sum(i.quantity * i.unit_price) "
        "FROM public.orders o JOIN public.order_items i ON i.order_id = o.id GROUP BY o.status",
    },
    # Not one of the three: the point lookup as a prepared statement
    # (plan cached after five runs), which takes parsing, RLS rewriting and
    # planning out of the comparison and leaves execution.
    "point lookup, prepared statement": {
        "extra": True,
        "hand_setup": "PREPARE q_{schema}(bigint) AS "
        "SELECT * FROM {schema}.orders WHERE id = $1 AND org_id = {org}",
        "rls_setup": "PREPARE q_rls(bigint) AS SELECT * FROM public.orders WHERE id = $1",
        "hand": "EXECUTE q_{schema}({id})",
        "rls": "EXECUTE q_rls({id})",
    },
}


def prepare(q, sides, variant_of, schema_of, org):
    """PREPAREs the statement of query q in every session that needs it."""
    for key, conn in sides:
        variant = variant_of[key]
        setup = q.get(variant + "_setup")
        if setup:
            with conn.cursor() as cur:
                cur.execute(setup.format(schema=schema_of.get(key), org=org))


def org_row_id(org, rng):
    """A random primary key of org's own orders (org_id = id % 1000 + 1)."""
    return rng.randrange(1000) * 1000 + org - 1 if org > 1 else (rng.randrange(999) + 1) * 1000


GENERATE_SCRIPT = "SELECT username FROM bi_access.generate('tp-' || nextval('bench_org_seq'));\n"


@contextmanager
def session(conn):
    """A cursor on an autocommit connection that is closed afterwards (psycopg2's
    own `with conn:` would open a transaction)."""
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def notice_stats(notices):
    """How many NOTICEs, how many say a table was skipped, and the last one."""
    texts = [n.strip().replace("NOTICE:  ", "") for n in notices]
    last = texts[-1].replace("|", "/") if texts else ""
    skipped = sum(bool(re.search(r"\bskipped \S+:", t)) for t in texts)
    return {"notices": len(texts), "skipped": skipped, "last": f"`{last}`" if last else ""}


def p90(xs):
    return sorted(xs)[int(len(xs) * 0.9)]


def median(xs):
    return statistics.median(xs)


def spread(xs):
    return f"{min(xs):.2f}–{max(xs):.2f}"


class Bench:
    def __init__(self, args):
        self.a = args
        self.sock = args.sock
        self.ports = {"A": args.port_a, "B": args.port_b, "C": args.port_c}
        self.info = dict(kv.split("=", 1) for kv in args.info)
        self.creds = []
        with open(args.credentials) as f:
            for line in f:
                org, user, password = line.rstrip("\n").split("\t")
                self.creds.append((int(org), user, password))
        self.tmp = tempfile.mkdtemp(prefix="bi_access_bench_")
        self.rows = []  # (metric, target, measured)
        self.details = []  # markdown sections
        self.scripts = {}

    # ---- connections -------------------------------------------------
    def superuser(self, cluster, db="bench"):
        conn = psycopg2.connect(host=self.sock, port=self.ports[cluster], user="postgres", dbname=db)
        conn.autocommit = True
        return conn

    def login(self, cluster, user, password, db="bench"):
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.ports[cluster], user=user, password=password, dbname=db,
            sslmode="disable",
        )
        conn.autocommit = True
        return conn

    # ---- pgbench -----------------------------------------------------
    def script(self, text):
        if text not in self.scripts:
            path = os.path.join(self.tmp, f"s{len(self.scripts)}.sql")
            with open(path, "w") as f:
                f.write(text)
            self.scripts[text] = path
        return self.scripts[text]

    def pgbench(self, cluster, user, password, text, seconds, org=None, clients=1, threads=1,
                check=True):
        cmd = [
            os.path.join(self.a.pgbin, "pgbench"), "-h", "127.0.0.1", "-p", str(self.ports[cluster]),
            "-U", user, "-n", "-M", "extended", "-c", str(clients), "-j", str(threads),
            "-T", str(seconds), "-f", self.script(text),
        ]
        if org is not None:
            cmd += ["-D", f"org={org}"]
        cmd.append("bench")
        env = dict(os.environ, PGPASSWORD=password, PGSSLMODE="disable")
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out = p.stdout + p.stderr

        def grab(pattern, cast=float, default=None):
            m = re.search(pattern, out)
            return cast(m.group(1)) if m else default

        res = {
            "rc": p.returncode,
            "latency_ms": grab(r"latency average = ([\d.]+) ms"),
            "tps": grab(r"tps = ([\d.]+) \(without initial connection time\)"),
            "txns": grab(r"number of transactions actually processed: (\d+)", int, 0),
            "failed": grab(r"number of failed transactions: (\d+)", int, 0),
            "aborted": len(re.findall(r"client \d+ aborted", out)),
            "output": out,
        }
        if check and (p.returncode != 0 or res["latency_ms"] is None):
            raise RuntimeError(f"pgbench failed ({' '.join(cmd)}):\n{out}")
        return res

    # ---- machine -----------------------------------------------------
    def machine(self):
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        with session(self.superuser("A")) as cur:
            cur.execute("SHOW server_version")
            ver = cur.fetchone()[0].split()[0]
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'bi_access'")
            ext = cur.fetchone()[0]
        self.pg_version = ver
        self.ext_version = ext
        self.machine_long = (
            f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GB RAM, {platform.system()} "
            f"{platform.release()}, PostgreSQL {ver}, bi_access {ext} (release build)"
        )
        self.machine_short = f"{os.cpu_count()} cores, {mem_gb:.0f} GB, PG {ver}"

    # ---- the lockstep driver ------------------------------------------
    @staticmethod
    def lockstep(sides, sqls_for, seconds, seed=0, min_cycles=40):
        """Runs the sides' statements in turn, each once per cycle, in a fresh
        random order every cycle, for `seconds`: a burst of load from
        elsewhere on the machine hits every side alike, and every side follows
        every other equally often (a fixed order would favour the side that
        follows another side reading the same pages, or the same session).
        sides: [(key, connection)], a key may have several sessions;
        sqls_for(i) -> {key: sql}. Runs at least min_cycles cycles (up to 4 x
        seconds), so a stall of the machine cannot leave a side with a
        handful of samples. Returns {key: [milliseconds]}."""
        order = random.Random(seed)
        curs = [(k, c.cursor()) for k, c in sides]
        lat = {k: [] for k, _ in sides}
        pc = time.perf_counter
        start = pc()
        end = start + seconds
        i = 0
        while pc() < end or (i < min_cycles and pc() < start + 4 * seconds):
            sqls = sqls_for(i)
            order.shuffle(curs)
            for k, cur in curs:
                t0 = pc()
                cur.execute(sqls[k])
                cur.fetchall()
                lat[k].append((pc() - t0) * 1000)
            i += 1
        for _, cur in curs:
            cur.close()
        return lat

    # ---- items 1 and 3: credential vs owner; 10 vs 10,000 credentials -
    def queries_credential(self):
        """Owner and credential on A and on B, two fresh sessions each per round:
        both clusters serve the same number of statements per cycle (so
        neither has its pages hotter in the CPU caches), the owner on B is a
        control for item 3, and new sessions every round turn the small
        per-process speed differences into noise over rounds instead of a
        bias."""
        T, R = self.a.seconds, self.a.rounds
        log(f"items 1 and 3: 3 queries x (owner, credential) x (A, B), 2 sessions each, lockstep, "
            f"{R} rounds x {T} s")
        keys = ("ownerA", "credA", "ownerB", "credB")
        res = {name: {k: [] for k in keys} | {"n": []} for name in QUERIES}
        rng = random.Random(6)
        for r in range(-1, R):  # round -1 warms up
            org, user, pw = self.creds[max(r, 0) % len(self.creds)]
            sides = []
            for _ in range(2):
                sides += [
                    ("ownerA", self.login("A", "app_owner", "app_owner")),
                    ("credA", self.login("A", user, pw)),
                    ("ownerB", self.login("B", "app_owner", "app_owner")),
                    ("credB", self.login("B", user, pw)),
                ]
            for name, q in QUERIES.items():
                prepare(q, sides, {"ownerA": "hand", "ownerB": "hand", "credA": "rls", "credB": "rls"},
                        {"ownerA": "public", "ownerB": "public"}, org)

                def sqls(i, q=q, org=org):
                    rid = org_row_id(org, rng)
                    hand = q["hand"].format(schema="public", org=org, id=rid)
                    rls = q["rls"].format(id=rid)
                    return {"ownerA": hand, "ownerB": hand, "credA": rls, "credB": rls}
                lat = self.lockstep(sides, sqls, 1 if r < 0 else T, seed=r)
                if r >= 0:
                    for k in keys:
                        res[name][k].append(median(lat[k]))
                    res[name]["n"].append(len(lat["ownerA"]))
            for _, c in sides:
                c.close()
            if r >= 0:
                log(f"  round {r + 1}/{R} done (org {org})")
        return res

    # ---- item 2: non-owner application role, exposed vs never exposed --
    def queries_application(self):
        """The same sessions run both sides (the twin tables differ only in
        schema), two fresh sessions per round."""
        T, R = self.a.seconds, self.a.rounds
        log(f"item 2: app_rw, 3 queries x (plain.* never exposed, public.* exposed), lockstep, "
            f"{R} rounds x {T} s")
        with session(self.superuser("A")) as cur:
            cur.execute("SELECT n.nspname, c.relname, c.relrowsecurity, "
                        "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relname IN ('orders', 'order_items') AND c.relkind = 'r' ORDER BY 1, 2")
            self.rls_state = cur.fetchall()
        res = {name: {"before": [], "after": [], "n": []} for name in QUERIES}
        rng = random.Random(2)
        for r in range(-1, R):
            org = self.creds[max(r, 0) % len(self.creds)][0]
            s1 = self.login("A", "app_rw", "app_rw")
            s2 = self.login("A", "app_rw", "app_rw")
            sides = [("before", s1), ("after", s1), ("before", s2), ("after", s2)]
            for name, q in QUERIES.items():
                prepare(q, sides, {"before": "hand", "after": "hand"},
                        {"before": "plain", "after": "public"}, org)

                def sqls(i, q=q, org=org):
                    rid = org_row_id(org, rng)
                    return {
                        "before": q["hand"].format(schema="plain", org=org, id=rid),
                        "after": q["hand"].format(schema="public", org=org, id=rid),
                    }
                lat = self.lockstep(sides, sqls, 1 if r < 0 else T, seed=r)
                if r >= 0:
                    for k in ("before", "after"):
                        res[name][k].append(median(lat[k]))
                    res[name]["n"].append(len(lat["before"]))
            s1.close()
            s2.close()
            if r >= 0:
                log(f"  round {r + 1}/{R} done")
        # the application role still reads every org's rows and may write
        with session(self.login("A", "app_rw", "app_rw")) as cur:
            cur.execute("SELECT count(DISTINCT org_id) FROM public.orders")
            orgs = cur.fetchone()[0]
            cur.execute("BEGIN")
            cur.execute("UPDATE public.orders SET amount = amount WHERE id = 12345")
            updated = cur.rowcount
            cur.execute("ROLLBACK")
        if orgs != 1000 or updated != 1:
            raise RuntimeError(f"app_rw sees {orgs} orgs and updated {updated} rows after exposure")
        return res

    # ---- decomposition of the point lookup's overhead -----------------
    def decompose_point_lookup(self, rounds=3, seconds=4):
        """The credential's point lookup carries two costs the owner's does not:
        RLS (rewrite, plan, the org lookup) and the statement_timeout that
        bi_access sets on every credential role (armed and disarmed per
        statement). Four sides in lockstep separate them."""
        log(f"diagnosis: point lookup, owner/credential x with/without statement_timeout, "
            f"{rounds} rounds x {seconds} s")
        org, user, pw = self.creds[0]
        with session(self.login("A", user, pw)) as cur:
            cur.execute("SHOW statement_timeout")
            timeout = cur.fetchone()[0]
        keys = ("owner", "owner + timeout", "credential without timeout", "credential")
        res = {k: [] for k in keys}
        rng = random.Random(9)
        q = QUERIES["point lookup by primary key"]
        for r in range(rounds):
            sides = []
            for _ in range(2):
                o1 = self.login("A", "app_owner", "app_owner")
                o2 = self.login("A", "app_owner", "app_owner")
                c1 = self.login("A", user, pw)
                c2 = self.login("A", user, pw)
                with o2.cursor() as cur:
                    cur.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))
                with c1.cursor() as cur:
                    cur.execute("SET statement_timeout = 0")
                sides += [("owner", o1), ("owner + timeout", o2), ("credential without timeout", c1),
                          ("credential", c2)]

            def sqls(i):
                rid = org_row_id(org, rng)
                hand = q["hand"].format(schema="public", org=org, id=rid)
                rls = q["rls"].format(id=rid)
                return {"owner": hand, "owner + timeout": hand, "credential without timeout": rls,
                        "credential": rls}
            lat = self.lockstep(sides, sqls, seconds, seed=100 + r)
            for k in keys:
                res[k].append(median(lat[k]))
            for _, c in sides:
                c.close()
        return {"timeout": timeout, "us": {k: median(v) * 1000 for k, v in res.items()}}

    # ---- server-side timing, for the notes ----------------------------
    def explains(self, n=40):
        log("EXPLAIN ANALYZE of each query, owner and credential, cluster A")
        org, user, pw = self.creds[0]
        # Only the owner and the credential on A: they read the same pages, so
        # neither has them hotter in the CPU caches than the other.
        conns = {
            "ownerA": self.login("A", "app_owner", "app_owner"),
            "credA": self.login("A", user, pw),
        }
        who = [
            ("owner, filter by hand", "ownerA", "hand", "public", True),
            ("credential, RLS", "credA", "rls", None, True),
        ]

        def walk(node, acc):
            if node.get("Subplan Name", "").startswith("InitPlan"):
                acc.append(node["Actual Total Time"])
            for child in node.get("Plans", []):
                walk(child, acc)

        out = []
        stats = []
        rid = 424 * 1000 + org - 1
        for name, q in QUERIES.items():
            if q.get("extra"):
                continue
            sqls = [q[variant].format(schema=schema, org=org, id=rid) for _, _, variant, schema, _ in who]
            times = [([], [], []) for _ in who]
            for i in range(n + 1):  # the first pass warms up
                for j, (_, c, _, _, _) in enumerate(who):
                    with conns[c].cursor() as cur:
                        # TIMING OFF for the totals (per-node clocks would
                        # inflate them), then once more with timing for the
                        # InitPlan's own time
                        cur.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sqls[j])
                        doc = cur.fetchone()[0][0]
                        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sqls[j])
                        timed = cur.fetchone()[0][0]
                    if i:
                        init = []
                        walk(timed["Plan"], init)
                        times[j][0].append(doc["Planning Time"])
                        times[j][1].append(doc["Execution Time"])
                        times[j][2].append(sum(init))
            for j, (label, c, _, _, show) in enumerate(who):
                p, e, ip = (median(x) for x in times[j])
                stats.append((name, label, p, e, ip))
                if show:
                    with conns[c].cursor() as cur:
                        cur.execute("EXPLAIN (ANALYZE, BUFFERS, VERBOSE) " + sqls[j])
                        plan = "\n".join(r[0] for r in cur.fetchall())
                    out.append(f"**{name} — {label}** (`{sqls[j]}`)\n\n```\n{plan}\n```\n")
        for c in conns.values():
            c.close()
        return stats, out

    # ---- item 4: generate latency, 10 vs 10,000; baseline ------------
    def generate_latency(self, per_round=40):
        R = self.a.rounds
        log(f"item 4: generate latency, cluster A (10) vs B (10,000), alternating call by call, "
            f"{R} rounds x {per_round} calls each")
        conns = {c: self.login(c, "bench_admin", "bench_admin") for c in ("A", "B")}
        samples = {"A": [], "B": []}
        ratios = []

        def reconnect():
            for c in "AB":
                conns[c].close()
                conns[c] = self.login(c, "bench_admin", "bench_admin")

        def one(c, org):
            with conns[c].cursor() as cur:
                t0 = time.perf_counter()
                cur.execute("SELECT username FROM bi_access.generate(%s)", (org,))
                role = cur.fetchone()[0]
                ms = (time.perf_counter() - t0) * 1000
                # untimed: back to the same count
                cur.execute("SELECT 1 FROM bi_access.delete(%s)", (role,))
                cur.execute("SELECT bi_access.purge(%s)", (role,))
            return ms

        for c in "AB":  # warm-up
            for k in range(5):
                one(c, f"warm-{k}")
        for r in range(R):
            reconnect()
            this = {"A": [], "B": []}
            for k in range(per_round):
                order = "AB" if (r + k) % 2 == 0 else "BA"
                for c in order:
                    this[c].append(one(c, f"lat-{r}-{k}"))
            for c in "AB":
                samples[c] += this[c]
            ratios.append(median(this["B"]) / median(this["A"]))
        counts = {}
        for c in "AB":
            with conns[c].cursor() as cur:
                cur.execute("SELECT count(*) FROM bi_access.credentials WHERE status = 'active'")
                counts[c] = cur.fetchone()[0]
            conns[c].close()
        return samples, ratios, counts

    def profile_generate(self, n=300):
        """Where generate's time goes: `perf record` of one backend running n
        generate calls in a transaction that is rolled back. Skipped without perf."""
        perf = shutil.which("perf")
        if not perf:
            return None
        log(f"profile: perf record of {n} generate calls (rolled back), cluster A")
        out = os.path.join(self.tmp, "generate.perf")
        conn = self.superuser("A")
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute("BEGIN")
        cur.execute("SELECT count(bi_access.generate('warm-' || i)) FROM generate_series(1, 5) i")
        rec = subprocess.Popen([perf, "record", "-F", "2000", "-p", str(pid), "-o", out],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        t0 = time.perf_counter()
        cur.execute("SELECT count(bi_access.generate('prof-' || i)) FROM generate_series(1, %s) i", (n,))
        per_call = (time.perf_counter() - t0) * 1000 / n
        time.sleep(0.2)
        rec.send_signal(signal.SIGINT)
        rec.wait()
        cur.execute("ROLLBACK")
        conn.close()

        def report(sort, limit):
            p = subprocess.run([perf, "report", "-i", out, "--stdio", "--no-children", "--sort", sort],
                               capture_output=True, text=True)
            rows = [re.sub(r"(\s+-)+\s*$", "", re.sub(r"\s{2,}", "  ", l.strip()))
                    for l in p.stdout.splitlines() if re.match(r"\s+\d+\.\d+%", l)]
            return rows[:limit]

        return {"per_call_ms": per_call, "dso": report("dso", 6), "symbols": report("dso,symbol", 15)}

    def baseline_latency(self, grow_to, per_phase=5):
        log(f"item 4 baseline: per-credential provisioning on cluster C, at 10 and {grow_to} existing")
        conn = self.superuser("C")
        out = {}
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
                    "AND a.attname = 'org_id' WHERE c.relnamespace = 'public'::regnamespace "
                    "AND c.relkind = 'r' AND c.relname <> 'baseline_credential'")
        tables = cur.fetchone()[0]
        existing = 0
        grow_seconds = {}
        for target in (10, grow_to):
            t0 = time.perf_counter()
            while existing < target:
                cur.execute("SELECT public.baseline_generate(%s)", (existing % 1000 + 1,))
                existing += 1
            grow_seconds[target] = time.perf_counter() - t0
            lat = []
            for k in range(per_phase):
                t0 = time.perf_counter()
                cur.execute("SELECT public.baseline_generate(%s)", (k + 1,))
                role = cur.fetchone()[0]
                lat.append((time.perf_counter() - t0) * 1000)
                cur.execute("SELECT public.baseline_delete(%s)", (role,))
            out[target] = lat
        cur.execute("SELECT count(*) FROM pg_policy")
        policies = cur.fetchone()[0]
        log("  ACL probe: GRANT SELECT on one table to up to 10,000 roles")
        t0 = time.perf_counter()
        cur.execute("SELECT granted, error FROM public.baseline_acl_probe(10000)")
        granted, error = cur.fetchone()
        probe_s = time.perf_counter() - t0
        conn.close()
        return {
            "lat": out, "tables": tables, "policies": policies, "grow_seconds": grow_seconds,
            "acl_granted": granted, "acl_error": error, "probe_s": probe_s,
        }

    # ---- item 5: throughput from 8 clients ----------------------------
    def generate_throughput(self, seconds=10):
        log(f"item 5: generate from 8 concurrent clients for {seconds} s (cluster B)")
        count_sql = """SELECT count(*), count(*) FILTER (WHERE c.status = 'active' AND r.rolcanlogin
                                         AND pg_has_role(r.oid, (SELECT reader_role FROM bi_access.config),
                                                         'MEMBER'))
                       FROM bi_access.credential c LEFT JOIN pg_roles r ON r.rolname = c.role_name
                       WHERE c.org_id LIKE 'tp-%'"""
        with session(self.superuser("B")) as cur:
            cur.execute(count_sql)
            before, before_ok = cur.fetchone()
        res = self.pgbench("B", "bench_admin", "bench_admin", GENERATE_SCRIPT, seconds,
                           clients=8, threads=2, check=False)
        with session(self.superuser("B")) as cur:
            cur.execute(count_sql)
            after, after_ok = cur.fetchone()
        res["made"] = after - before
        res["complete"] = after_ok - before_ok
        errors = re.findall(r"(ERROR:.*)", res["output"])
        res["errors"] = errors
        return res

    # ---- item 6: sync over 1,000 tables --------------------------------
    def make_sync_db(self, name, tables=1000):
        with session(self.superuser("A", "postgres")) as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name}")
        conn = self.superuser("A", name)
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION bi_access")
            cur.execute(
                """DO $$ BEGIN FOR i IN 1..%s LOOP
                     EXECUTE format('CREATE TABLE public.%%I (id bigint PRIMARY KEY, '
                                    'org_id bigint NOT NULL, payload text)', 't' || lpad(i::text, 4, '0'));
                     EXECUTE format('CREATE INDEX ON public.%%I (org_id)', 't' || lpad(i::text, 4, '0'));
                   END LOOP; END $$""" % tables
            )
        return conn

    def timed_with_locks(self, conn, db, sql, sampled):
        """Runs sql in conn; if sampled, another session meanwhile samples the
        relation locks that conn's backend holds on tables of schema public
        (the sampling slows the sync a little, so timed runs go unsampled)."""
        stats = {"max_any": None, "max_exclusive": None, "samples": 0, "over_one": None,
                 "sampled": sampled}
        if not sampled:
            conn.notices = collections.deque()  # psycopg2 trims a list to its last 50
            t0 = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(sql)
                stats["rows"] = cur.fetchall() if cur.description else []
            stats["seconds"] = time.perf_counter() - t0
            stats.update(notice_stats(conn.notices))
            return stats
        stats.update(max_any=0, max_exclusive=0, over_one=0)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        sampler = self.superuser("A", db)
        stop = threading.Event()

        def sample():
            with sampler.cursor() as cur:
                while not stop.is_set():
                    cur.execute(
                        """SELECT count(*), count(*) FILTER (WHERE l.mode = 'AccessExclusiveLock')
                           FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                           WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted
                             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                             AND c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')""",
                        (pid,),
                    )
                    n_any, n_excl = cur.fetchone()
                    stats["samples"] += 1
                    stats["max_any"] = max(stats["max_any"], n_any)
                    stats["max_exclusive"] = max(stats["max_exclusive"], n_excl)
                    if n_any > 1:
                        stats["over_one"] += 1
                    time.sleep(0.001)

        th = threading.Thread(target=sample)
        th.start()
        time.sleep(0.05)
        conn.notices = collections.deque()
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall() if cur.description else []
        elapsed = time.perf_counter() - t0
        time.sleep(0.05)
        stop.set()
        th.join()
        sampler.close()
        stats["seconds"] = elapsed
        stats["rows"] = rows
        stats.update(notice_stats(conn.notices))
        return stats

    def sync_bench(self, reps=3):
        log(f"item 6: sync over 1,000 new tables, 1 sampled + {reps} timed runs per call "
            "(cluster A, a fresh database each)")
        with session(self.superuser("A")) as cur:
            # The procedure has defaulted arguments: look it up by name and kind.
            cur.execute("SELECT EXISTS (SELECT FROM pg_catalog.pg_proc WHERE proname = 'sync' "
                        "AND prokind = 'p' AND pronamespace = 'bi_access'::regnamespace)")
            has_proc = cur.fetchone()[0]
        out = {"sync_tables": [], "sync_tables_noop": [], "sync": [], "sync_noop": [],
               "has_proc": has_proc}
        for r in range(reps + 1):
            for kind in (["sync_tables", "sync"] if r % 2 == 0 else ["sync", "sync_tables"]):
                if kind == "sync" and not has_proc:
                    continue
                db = f"syncbench_{kind}_{r}"
                conn = self.make_sync_db(db)
                sql = ("SELECT action, count(*) FROM bi_access.sync_tables() GROUP BY action"
                       if kind == "sync_tables" else "CALL bi_access.sync()")
                first = self.timed_with_locks(conn, db, sql, sampled=(r == 0))
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM bi_access.exposed_table e JOIN pg_class c "
                                "ON c.oid = e.tbl WHERE NOT e.hidden AND c.relrowsecurity")
                    first["exposed"] = cur.fetchone()[0]
                noop = self.timed_with_locks(conn, db, sql, sampled=(r == 0))
                out[kind].append(first)
                out[kind + "_noop"].append(noop)
                conn.close()
                with session(self.superuser("A", "postgres")) as cur:
                    cur.execute(f"DROP DATABASE {db}")
            log(f"  run {r + 1}/{reps + 1} done" + (" (lock sampling)" if r == 0 else ""))
        return out

    # ---- report --------------------------------------------------------
    def run(self):
        t_start = time.time()
        self.load_start = f"{os.getloadavg()[0]:.1f}"
        self.machine()
        q = self.queries_credential()
        app = self.queries_application()
        stats, plans = self.explains()
        self.decomp = self.decompose_point_lookup()
        gen_samples, gen_ratios, gen_counts = self.generate_latency()
        try:
            self.profile = self.profile_generate()
        except Exception as e:  # a profile is a bonus, never a failure
            log(f"profile skipped: {e}")
            self.profile = None
        base = self.baseline_latency(self.a.baseline_grow_to)
        tp = self.generate_throughput()
        sync = self.sync_bench()
        self.report(q, app, stats, plans, gen_samples, gen_ratios, gen_counts, base, tp, sync,
                    time.time() - t_start)

    def report(self, q, app, stats, plans, gen_samples, gen_ratios, gen_counts, base, tp, sync,
               measure_seconds):
        rows = []

        def verdict(ok):
            return "met" if ok else "**MISSED**"

        def add(metric, target, measured, ok):
            rows.append((metric, target, f"{measured} — {verdict(ok)}" if ok is not None else measured))

        detail = []

        def qtable(title, left, right, data, lkey, rkey):
            detail.append(title)
            detail.append(f"| query | {left} ms | {right} ms | per-round ratios | statements per side per round |")
            detail.append("| --- | --- | --- | --- | --- |")
            out = {}
            for name in QUERIES:
                lv, rv = data[name][lkey], data[name][rkey]
                ratios = [x / y for x, y in zip(rv, lv)]
                out[name] = (median(ratios), ratios, median(lv), median(rv))
                detail.append(f"| {name} | {median(lv):.3f} | {median(rv):.3f} | "
                              f"{', '.join(f'{x:.3f}' for x in ratios)} | "
                              f"{min(data[name]['n'])}–{max(data[name]['n'])} |")
            return out

        # item 1
        item1 = qtable("### 1. Credential (RLS) vs table owner filtering by hand (cluster A)\n",
                       "owner", "credential", q, "ownerA", "credA")
        for name, (m, ratios, lv, rv) in item1.items():
            extra = QUERIES[name].get("extra")
            add(f"1. {name}: credential / owner with hand-written filter", "(context)" if extra else "≤ 1.10",
                f"{m:.3f} (spread {spread(ratios)}; {rv:.3f} vs {lv:.3f} ms)",
                None if extra else m <= 1.10)
        # item 2
        state = "; ".join(f"{n}.{t}: RLS {'on' if rls else 'off'}, {k} policies"
                          for n, t, rls, k in self.rls_state)
        for name, (m, ratios, lv, rv) in qtable(
                "\n### 2. Non-owner application role (app_rw): tables never exposed (`plain.*`) vs "
                f"exposed (`public.*`), twins with the same rows and indexes (cluster A; {state})\n",
                "never exposed", "exposed", app, "before", "after").items():
            extra = QUERIES[name].get("extra")
            add(f"2. {name}: app role, exposed / never-exposed table", "(context)" if extra else "≤ 1.03",
                f"{m:.3f} (spread {spread(ratios)}; {rv:.3f} vs {lv:.3f} ms)",
                None if extra else m <= 1.03)
        # item 3
        nb = self.info.get("credentials_b", "10000")
        for name, (m, ratios, lv, rv) in qtable(
                f"\n### 3. Credential latency with 10 (cluster A) vs {nb} credentials (cluster B)\n",
                "10 credentials", f"{nb} credentials", q, "credA", "credB").items():
            extra = QUERIES[name].get("extra")
            add(f"3. {name}: credential latency, {nb} / 10 credentials", "(context)" if extra else "≤ 1.05",
                f"{m:.3f} (spread {spread(ratios)}; {rv:.3f} vs {lv:.3f} ms)",
                None if extra else m <= 1.05)
        qtable("\nControl: the owner's hand-filtered queries on B vs A (no credential involved; "
               "a ratio away from 1 here is a difference between the two servers, not bi_access):\n",
               "owner on A", "owner on B", q, "ownerA", "ownerB")
        # item 4
        ma, mb = median(gen_samples["A"]), median(gen_samples["B"])
        add("4. `generate` median latency, 10 existing credentials", "≤ 5 ms",
            f"{ma:.2f} ms (p90 {sorted(gen_samples['A'])[int(len(gen_samples['A']) * 0.9)]:.2f} ms, "
            f"n={len(gen_samples['A'])})", ma <= 5)
        add(f"4. `generate` median latency, {nb} existing credentials", "≤ 5 ms",
            f"{mb:.2f} ms (p90 {sorted(gen_samples['B'])[int(len(gen_samples['B']) * 0.9)]:.2f} ms, "
            f"n={len(gen_samples['B'])})", mb <= 5)
        gr = median(gen_ratios)
        add(f"4. `generate` latency ratio, {nb} / 10 credentials", "≤ 1.5",
            f"{gr:.3f} (spread {spread(gen_ratios)})", gr <= 1.5)
        bl = base["lat"]
        grow = self.a.baseline_grow_to
        b10, bg = median(bl[10]), median(bl[grow])
        acl = (f"GRANT fails at role #{base['acl_granted'] + 1}: `{base['acl_error']}`"
               if base["acl_error"] else f"{base['acl_granted']} grants on one table succeeded")
        add("4. baseline (role + GRANT and policy per table per credential), 10 existing",
            "(context)", f"{b10:.1f} ms per credential ({base['tables']} tables)", None)
        add(f"4. baseline, {grow} existing", "(context)",
            f"{bg:.1f} ms per credential ({bg / b10:.2f}× the 10-credential cost)", None)
        add(f"4. baseline, {nb} existing", "(context)",
            f"not reachable: {acl}; it would also need {int(nb) * base['tables']:,} policies", None)
        detail.append("\n### 4. `generate` latency (client side over TCP, one call = one autocommit "
                      "transaction, commit included)\n")
        detail.append(f"Cluster A ({gen_counts['A']} active credentials at the end) vs cluster B "
                      f"({gen_counts['B']}), alternating call by call; each timed call is followed by an "
                      "untimed `delete` + `purge`, so the counts stay put.\n")
        detail.append(f"- per-round ratios of medians: {', '.join(f'{x:.3f}' for x in gen_ratios)}")
        detail.append(f"- 10: median {ma:.2f} ms, min {min(gen_samples['A']):.2f}, max {max(gen_samples['A']):.2f}")
        detail.append(f"- {nb}: median {mb:.2f} ms, min {min(gen_samples['B']):.2f}, max {max(gen_samples['B']):.2f}")
        detail.append(f"\nBaseline (bench/baseline.sql on cluster C, {base['tables']} tables, no bi_access): "
                      f"per credential `CREATE ROLE`, `GRANT SELECT` and `CREATE POLICY` on each table. "
                      f"Growing from 0 to 10 took {base['grow_seconds'][10]:.1f} s and from 10 to {grow} "
                      f"{base['grow_seconds'][grow]:.1f} s; {base['policies']:,} policies at the end.\n")
        detail.append(f"- at 10: {', '.join(f'{x:.0f}' for x in bl[10])} ms")
        detail.append(f"- at {grow}: {', '.join(f'{x:.0f}' for x in bl[grow])} ms")
        detail.append(f"- ACL probe ({base['probe_s']:.1f} s): {acl}. pg_class has no TOAST table, so a "
                      "table's ACL must fit (compressed) in one 8 kB catalog row.")
        if self.profile:
            pf = self.profile
            detail.append(f"\nProfile of `generate` (`perf record` of one backend, {pf['per_call_ms']:.2f} ms "
                          "per call in one statement, no network): share of CPU samples by library, then "
                          "the top symbols.\n")
            detail.append("```\n" + "\n".join(pf["dso"]) + "\n\n" + "\n".join(pf["symbols"]) + "\n```")
            detail.append("`libcrypto` is PostgreSQL's own check in `CREATE/ALTER ROLE ... PASSWORD` "
                          "(`plain_crypt_verify(role, verifier, \"\")`) that the new SCRAM verifier is not "
                          "the verifier of an empty password: a second PBKDF2 with 4096 iterations, run "
                          "through OpenSSL 3's HMAC, whose per-call setup (the `pthread_rwlock` and "
                          "`EVP_*` entries) costs more than the hashing. `sha2::…compress` in "
                          "`bi_access.so` is the extension's own PBKDF2 for the verifier; the rest is "
                          "SPI statements and catalog work.\n")
        # item 5
        ok5 = (tp["rc"] == 0 and tp["failed"] == 0 and tp["aborted"] == 0 and not tp["errors"]
               and tp["made"] == tp["txns"] == tp["complete"])
        add("5. `generate` throughput, 8 concurrent clients", "zero errors",
            f"{tp['tps']:.0f} credentials/s, {tp['txns']} calls, {tp['failed'] + tp['aborted']} errors, "
            f"{tp['made']} credentials recorded", ok5)
        detail.append("\n### 5. `generate` from 8 concurrent clients (pgbench -c 8 -j 2, cluster B)\n")
        detail.append(f"- transactions {tp['txns']}, tps {tp['tps']}, mean latency {tp['latency_ms']} ms, "
                      f"failed {tp['failed']}, aborted clients {tp['aborted']}, pgbench exit {tp['rc']}")
        detail.append(f"- new credential records {tp['made']}, of which {tp['complete']} are active with a "
                      "LOGIN role that is a member of the reader group")
        if tp["errors"]:
            detail.append(f"- errors: {tp['errors'][:5]}")
        # item 6
        def timed(runs):
            return [x["seconds"] for x in runs if not x["sampled"]] or [x["seconds"] for x in runs]

        def sampled(runs):
            return [x for x in runs if x["sampled"]]

        st, stn = sync["sync_tables"], sync["sync_tables_noop"]
        t_first, t_noop = timed(st), timed(stn)
        add("6. `sync_tables()` over 1,000 new tables (one transaction)", "time",
            f"{median(t_first):.2f} s (spread {min(t_first):.2f}–{max(t_first):.2f}, {len(t_first)} runs); "
            f"re-run with nothing to do {median(t_noop):.2f} s", None)
        mx = max(x["max_exclusive"] for x in sampled(st))
        add("6. table locks held at once by `sync_tables()`", "(the one-transaction variant)",
            f"up to {mx} AccessExclusiveLocks, held to commit (all or nothing by design)", None)
        detail.append("\n### 6. Sync over 1,000 tables (cluster A, a fresh database per run with "
                      "1,000 new tables carrying `org_id`, all exposed by the sync through auto_expose)\n")
        detail.append("Locks: in the first run of each call another session polls `pg_locks` about "
                      "every millisecond for granted relation locks of the syncing backend on tables of "
                      "schema public; the other runs are timed without that load.\n")
        detail.append("| call | run | seconds | tables exposed | max table locks (any mode) | "
                      "max AccessExclusive | samples | samples with > 1 lock | NOTICEs | of which skipped | "
                      "last NOTICE |")
        detail.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

        def cell(v):
            return "–" if v is None else v

        for kind in ("sync_tables", "sync"):
            for i, (f, n) in enumerate(zip(sync[kind], sync[kind + "_noop"])):
                tag = " (sampled)" if f["sampled"] else ""
                detail.append(f"| {kind} | {i + 1} first{tag} | {f['seconds']:.2f} | {f.get('exposed')} | "
                              f"{cell(f['max_any'])} | {cell(f['max_exclusive'])} | {f['samples']} | "
                              f"{cell(f['over_one'])} | {f['notices']} | {f['skipped']} | {f['last']} |")
                detail.append(f"| {kind} | {i + 1} again{tag} | {n['seconds']:.2f} | | {cell(n['max_any'])} | "
                              f"{cell(n['max_exclusive'])} | {n['samples']} | {cell(n['over_one'])} | "
                              f"{n['notices']} | {n['skipped']} | {n['last']} |")
        if sync["has_proc"]:
            sp, spn = sync["sync"], sync["sync_noop"]
            tp1, tpn = timed(sp), timed(spn)
            smp = sampled(sp) + sampled(spn)
            mxp = max(x["max_any"] for x in smp)
            add("6. `CALL bi_access.sync()` over 1,000 new tables (commits table by table)", "time",
                f"{median(tp1):.2f} s (spread {min(tp1):.2f}–{max(tp1):.2f}, {len(tp1)} runs); re-run "
                f"{median(tpn):.2f} s", None)
            add("6. table locks held at once by `CALL bi_access.sync()`", "≤ 1", f"max {mxp} "
                f"(over {sum(x['samples'] for x in smp)} samples)", mxp <= 1)
        else:
            add("6. table locks held at once by `CALL bi_access.sync()`", "≤ 1",
                "not measured: `bi_access.sync()` does not exist in this build", False)

        d = self.decomp["us"]
        detail.append(f"\n### Point lookup: RLS or the statement timeout?\n\nCluster A, org 7, lockstep, median µs. The credential "
                      f"role carries `statement_timeout = {self.decomp['timeout']}` (bi_access.statement_timeout), "
                      "which the server arms and disarms around every statement; the owner does not.\n")
        detail.append("| owner | owner + the same statement_timeout | credential with statement_timeout = 0 "
                      "| credential as generated |")
        detail.append("| --- | --- | --- | --- |")
        detail.append(f"| {d['owner']:.1f} | {d['owner + timeout']:.1f} | {d['credential without timeout']:.1f} "
                      f"| {d['credential']:.1f} |")
        detail.append(f"\nSo of the {d['credential'] - d['owner']:.1f} µs, RLS itself (rewrite, planning, the org "
                      f"lookup) accounts for about {d['credential without timeout'] - d['owner']:.1f} µs and the "
                      f"timeout for about {d['credential'] - d['credential without timeout']:.1f} µs; with the same "
                      f"timeout on both sides the ratio is "
                      f"{d['credential'] / d['owner + timeout']:.3f}.\n")

        # server-side split
        detail.append("\n### Where the time goes (server side, cluster A, org 7: median of 40 `EXPLAIN "
                      "ANALYZE` per row, owner and credential interleaved)\n")
        detail.append("| query | who | planning ms | execution ms | of which org lookup (InitPlans) ms |")
        detail.append("| --- | --- | --- | --- | --- |")
        for name, label, p, e, ip in stats:
            detail.append(f"| {name} | {label} | {p:.3f} | {e:.3f} | {ip:.3f} |")
        detail.append("\nThe org lookup is `(SELECT bi_access.current_org_bigint())`, an InitPlan run once "
                      "per exposed table in the query (twice in the join). Planning and execution come from "
                      "`EXPLAIN (ANALYZE, TIMING OFF)`, the InitPlan column from a run with timing.\n")

        # notes on the targets, from this run's numbers
        notes = []
        pl, pl_ratios, pl_owner, pl_cred = item1["point lookup by primary key"]
        pp = item1.get("point lookup, prepared statement")
        st_by = {(n, w): (p_, e_, i_) for n, w, p_, e_, i_ in stats}
        po = st_by.get(("point lookup by primary key", "owner, filter by hand"))
        pc_ = st_by.get(("point lookup by primary key", "credential, RLS"))
        d = self.decomp["us"]
        verdict1 = "within" if pl <= 1.10 else "over"
        notes.append(
            f"- **Point lookup, item 1** ({pl:.3f}, {verdict1} the 1.10 target; per round "
            f"{min(pl_ratios):.3f}–{max(pl_ratios):.3f}: the target sits at the edge, and a run on a "
            f"busier or quieter machine can land on either side). The credential pays about "
            f"{d['credential'] - d['owner']:.0f} µs more per statement on a ~{d['owner']:.0f} µs round trip. "
            + (f"Server side, `EXPLAIN ANALYZE` puts {1000 * (pc_[0] - po[0]):.0f} µs of it in planning and "
               f"{1000 * (pc_[1] - po[1]):.0f} µs in execution, of which the org lookup's InitPlan is "
               f"{1000 * pc_[2]:.0f} µs: the lookup is cached per backend and is no longer the cost. "
               if po and pc_ else "")
            + "The rest is PostgreSQL's row-level security machinery, paid per statement whatever the "
            "policy says: expanding the policies in the rewriter, the security-barrier qual and the "
            f"InitPlan in the planner and executor. With the plan cached (prepared statement) the ratio is "
            + (f"{pp[0]:.3f}" if pp else "similar")
            + f"; the credential's `statement_timeout` accounts for "
            f"{d['credential'] - d['credential without timeout']:.0f} µs. It is a fixed cost of roughly "
            "15 µs, visible only on sub-millisecond queries (the aggregate and the join stay within a "
            "few percent). Nothing in bi_access can remove it short of not using RLS; the target would "
            "be met with margin on queries above ~0.3 ms, or with a looser bound (1.15) for primary-key "
            "lookups.")
        if self.profile:
            share = {}
            for line in self.profile["dso"]:
                m_ = re.match(r"([\d.]+)%\s+(\S+)", line)
                if m_:
                    share[m_.group(2)] = float(m_.group(1))
            crypto = share.get("libcrypto.so.3", 0.0)
            libc = share.get("libc.so.6", 0.0)
            ours = share.get("bi_access.so", 0.0)
            gen_verdict = "over" if max(ma, mb) > 5 else "within"
            notes.append(
                f"- **`generate` latency, item 4** ({ma:.2f} ms with 10 credentials, {mb:.2f} ms with "
                f"{nb}: {gen_verdict} the 5 ms target in this run, p90 {p90(gen_samples['A']):.1f} and "
                f"{p90(gen_samples['B']):.1f} ms; the median moves by a "
                "millisecond or more with the machine's load). It does not "
                f"grow with the number of credentials (ratio {gr:.3f}), as designed. The profile above: "
                f"{crypto:.0f}% of the backend's CPU is in libcrypto and much of the {libc:.0f}% in libc "
                "is its locking and allocation: that is PostgreSQL's own check, in CREATE/ALTER ROLE "
                "... PASSWORD, that the new verifier is not the verifier of an empty password — a "
                "second PBKDF2 of 4,096 HMAC-SHA-256 rounds, through OpenSSL 3's slow per-call HMAC "
                f"setup. {ours:.0f}% is bi_access.so, mostly `sha2` computing the verifier itself (the "
                "first PBKDF2). What would fix it: both PBKDF2 runs scale with the iteration count "
                "written into the verifier, and the password is 32 random alphanumerics (~190 bits), "
                "so key stretching adds no security to it; the time spent in them (about "
                f"{crypto + libc + ours:.0f}% above) shrinks in proportion to a lower count — "
                "PostgreSQL and libpq accept any count ≥ 1, but "
                "RFC 7677 recommends ≥ 4,096 and every client the connection details target (pgjdbc, "
                "psycopg, Npgsql) must be checked first. bi_access cannot skip the empty-password "
                "check without writing pg_authid directly, which it must not. The SPI statements and "
                f"catalog work ({share.get('postgres', 0.0):.0f}% in postgres) could be trimmed by "
                "preparing the statements once per backend.")
        if not sync["has_proc"]:
            notes.append(
                "- **`CALL bi_access.sync()`, item 6**: the procedure does not exist in this build, so "
                "\"no more than one table lock at once\" could not be measured; bench.py measures it "
                "(time, and the `pg_locks` sampling) as soon as `bi_access.sync()` exists. "
                "`sync_tables()` is the all-or-nothing variant for migrations and, by design, keeps "
                f"an AccessExclusiveLock on every table it changed until commit ({mx} here).")
        notes.append(
            f"- **`sync_tables()` time**: {median(t_first):.1f} ms per new table, and "
            f"{median(t_noop):.2f} s for a re-run that changes nothing ({median(t_noop):.1f} ms per table): "
            "the no-op path still runs about six catalog queries per table through SPI, each parsed "
            "and planned anew; one set-based catalog query for all exposed tables would make an "
            "idempotent migration re-run close to free.")
        notes.append(
            f"- **The per-credential baseline**: {b10:.0f} ms per credential at 10, {bg:.0f} ms at "
            f"{grow} ({bg / b10:.1f}×: every CREATE POLICY rebuilds the table's policy list), and it cannot "
            f"reach 10,000 at all: {acl}. bi_access's `generate` touches no table and stays flat.")

        total = time.time() - int(self.info.get("start_epoch", time.time()))
        info = self.info
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        table = ["| metric | target | measured | machine |", "| --- | --- | --- | --- |"]
        for m, t, v in rows:
            table.append(f"| {m} | {t} | {v} | {self.machine_short} |")
        missed = [m for m, t, v in rows if "MISSED" in v]
        md = [
            "# bi_access benchmark results",
            "",
            f"Produced by `make bench` (= `bash bench/run.sh`, settings `BENCH_SECONDS={self.a.seconds}` "
            f"`BENCH_ROUNDS={self.a.rounds}`) on {now}, in {total / 60:.1f} min "
            f"(build {info.get('build_seconds')} s, setup {info.get('setup_seconds')} s, "
            f"measurements {measure_seconds:.0f} s). How to read it: [README](README.md).",
            "",
            f"Built from commit `{info.get('git_rev')}` plus the working tree's uncommitted changes "
            f"(at build time: {info.get('git_dirty', 'none').strip() or 'none'}); `bi_access.so` "
            f"sha256 `{info.get('so_sha')}…`.",
            "",
            f"Machine: {self.machine_long}. The machine was shared with other work (builds, test "
            f"clusters) while this ran (load average at the start {self.load_start}, at the end "
            f"{os.getloadavg()[0]:.1f}); that is why every comparison runs its sides interleaved.",
            "",
            "\n".join(table),
            "",
            (f"Missed: {len(missed)} of {len(rows)} rows — see the notes below." if missed
             else "Every target was met."),
            "",
            "## Notes on the targets",
            "",
            "\n".join(notes),
            "",
            "## Set-up",
            "",
            f"- Data set: `orders` {int(info['orders_rows']):,} rows over 1,000 orgs (bigint `org_id`, "
            f"indexed, orgs interleaved in the heap), `order_items` {int(info['items_rows']):,} rows "
            f"(indexed `org_id` and `order_id`), {info['small_tables']} small tables of 200 rows; "
            f"{info['exposed_tables']} exposed tables. Loaded in {info['load_seconds']} s; exposing "
            f"and the first `sync_tables()` took {info['expose_seconds']} s.",
            f"- Cluster B = cluster A copied while stopped, plus {info['fill_count']} credentials "
            f"(`generate` in batches of 1,000 per statement: {info['fill_seconds']} s, "
            f"{float(info['fill_seconds']) / int(info['fill_count']) * 1000:.2f} ms each).",
            "- Server settings: shared_buffers 2GB (everything stays cached), fsync off, "
            "full_page_writes off (CPU cost, not disk; synchronous_commit stays on). Every measured "
            "session logs in over TCP on 127.0.0.1 with SCRAM.",
            "- Queries (items 1–3): a Python/psycopg2 driver keeps two sessions per side (new ones "
            "every round) and runs the same statement on each session in turn, in a fresh random "
            "order every cycle, for "
            f"{self.a.seconds} s per query per round — a burst of load from elsewhere hits every side "
            "alike. Statements go as simple-protocol text (parsed and planned every time, like a BI "
            "tool's ad-hoc SQL); the point lookup picks a random primary key of the org's rows. "
            f"{self.a.rounds} rounds; round r uses credential r mod 10 (orgs 7, 107, ..., 907) and the "
            "owner / application role filters the same org. A round's figure per side is the median "
            "latency (client side, round trip included); the ratio is taken per round; the table "
            "gives the median of the per-round ratios and their min–max spread.",
            "",
            "## Details",
            "",
            "\n".join(detail),
            "",
            "## Plans (EXPLAIN ANALYZE, BUFFERS, VERBOSE; cluster A, org "
            f"{self.creds[0][0]})",
            "",
            "<details><summary>owner and credential plans</summary>",
            "",
            "\n".join(plans),
            "</details>",
            "",
        ]
        with open(self.a.results, "w") as f:
            f.write("\n".join(md))
        print()
        print("\n".join(table))
        print()
        if missed:
            print("missed: " + "; ".join(missed))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--port-a", type=int, required=True)
    ap.add_argument("--port-b", type=int, required=True)
    ap.add_argument("--port-c", type=int, required=True)
    ap.add_argument("--pgbin", required=True)
    ap.add_argument("--credentials", required=True)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--baseline-grow-to", type=int, default=100)
    ap.add_argument("--results", required=True)
    ap.add_argument("--info", action="append", default=[])
    args = ap.parse_args()
    bench = Bench(args)
    try:
        bench.run()
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
