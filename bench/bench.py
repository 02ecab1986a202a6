#!/usr/bin/env python3
"""bi_access benchmark driver (issues 19 and 12). Started by bench/run.sh once
its servers are up; see bench/README.md for what is measured and how to read
the results.

  A  the data set, bi_access, 10 credentials, the hand-written peers;
  B  A plus 99,990 credentials (100,000 in all);
  R  a streaming hot-standby replica of A.

Every comparison runs its sides interleaved within each round, several
rounds; a figure is the median over rounds of the per-round ratio of
medians, with the min-max spread. Every target is printed with MET or
MISSED; the exit status is 1 when one is missed.
"""

import argparse
import base64
import collections
import datetime
import hashlib
import hmac
import os
import platform
import random
import re
import secrets
import statistics
import string
import sys
import threading
import time
import traceback

import psycopg2
import psycopg2.errors

# Each query as the owner / application writes it (org filter by hand,
# {schema} public or plain) and as a role under row-level security writes it
# ({schema} public for a credential, rls for the hand-written policy's twin).
# {id} is a primary key of the org's own rows.
QUERIES = {
    "point lookup by primary key": {
        "hand": "SELECT * FROM {schema}.orders WHERE id = {id} AND org_id = {org}",
        "rls": "SELECT * FROM {schema}.orders WHERE id = {id}",
        "target_owner": 1.15,
        "target_app_preloaded": 1.05,
    },
    "org-wide aggregate": {
        "hand": "SELECT count(*), sum(amount), avg(amount), max(created_at) "
        "FROM {schema}.orders WHERE org_id = {org}",
        "rls": "SELECT count(*), sum(amount), avg(amount), max(created_at) FROM {schema}.orders",
        "target_owner": 1.05,
    },
    "join of two exposed tables": {
        "hand": "SELECT o.status, count(*), sum(i.quantity * i.unit_price) "
        "FROM {schema}.orders o JOIN {schema}.order_items i ON i.order_id = o.id "
        "WHERE o.org_id = {org} AND i.org_id = {org} GROUP BY o.status",
        "rls": "SELECT o.status, count(*), sum(i.quantity * i.unit_price) "
        "FROM {schema}.orders o JOIN {schema}.order_items i ON i.order_id = o.id GROUP BY o.status",
        "target_owner": 1.05,
    },
    # Not one of the three (no target): the point lookup as a prepared
    # statement, plan cached, which leaves execution and the per-statement hooks.
    "point lookup, prepared statement": {
        "extra": True,
        "hand_setup": "PREPARE q_{schema}(bigint) AS "
        "SELECT * FROM {schema}.orders WHERE id = $1 AND org_id = {org}",
        "rls_setup": "PREPARE q_rls_{schema}(bigint) AS SELECT * FROM {schema}.orders WHERE id = $1",
        "hand": "EXECUTE q_{schema}({id})",
        "rls": "EXECUTE q_rls_{schema}({id})",
    },
}
TARGET_RLS = 1.03  # credential / hand-written RLS policy, all three
TARGET_APP = 1.03  # app role, exposed / never exposed (plain, preloaded but the point lookup, BYPASSRLS)
TARGET_SCALE = 1.05  # credential, 100,000 / 10 credentials
TARGET_GEN_HAND = 1.25  # generate / hand-written generate
TARGET_GEN_SCALE = 1.2  # generate, 100,000 / 10 credentials
TARGET_LOGIN = 1.3  # credential login / plain role login
TARGET_YIELD_IDLE = 1.01  # application point lookup, yield worker running / paused
TARGET_USAGE_STATEMENT = 1.01  # credential point lookup, usage counters on / off
TARGET_USAGE_LOGIN = 1.3  # credential login with its usage entry / plain role login, P
YIELD_AFTER_S = 1.0  # bi_access.yield_after's default, on P


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(xs):
    return statistics.median(xs)


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def spread(xs, fmt="{:.3f}"):
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"


def org_row_id(org, rng):
    """A random primary key of org's own orders (org_id = id % 1000 + 1)."""
    return rng.randrange(1000) * 1000 + org - 1 if org > 1 else (rng.randrange(999) + 1) * 1000


def scram_verifier(password, iterations=4096):
    """A SCRAM-SHA-256 verifier as PostgreSQL stores it (RFC 5803 format)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


ALNUM = string.ascii_letters + string.digits


class Bench:
    def __init__(self, args):
        self.a = args
        self.quick = args.quick == 1
        self.sock = args.sock
        self.ports = {"A": args.port_a, "B": args.port_b, "R": args.port_r, "P": args.port_p}
        with open(args.p_credential) as f:
            self.p_cred = tuple(f.read().strip().split("\t"))
        # P's two credentials of org 7 for items 11 and 12: `counted` takes
        # the last usage entry, `uncounted` finds none (overflow).
        with open(args.p_usage) as f:
            self.p_usage = dict(zip(("counted", "uncounted"),
                                    (tuple(line.split("\t")) for line in f.read().strip().split("\n"))))
        self.info = dict(kv.split("=", 1) for kv in args.info)
        self.creds = []
        with open(args.credentials) as f:
            for line in f:
                org, user, password = line.rstrip("\n").split("\t")
                self.creds.append((int(org), user, password))
        self.rows = []  # (metric, target, measured, ok or None)
        self.detail = []  # markdown lines

    # ---- connections -------------------------------------------------
    def superuser(self, cluster, db="bench"):
        conn = psycopg2.connect(host=self.sock, port=self.ports[cluster], user="postgres", dbname=db)
        conn.autocommit = True
        return conn

    def login(self, cluster, user, password, db="bench"):
        conn = psycopg2.connect(host="127.0.0.1", port=self.ports[cluster], user=user, password=password,
                                dbname=db, sslmode="disable")
        conn.autocommit = True
        return conn

    def run_sql(self, cluster, db, *stmts):
        """Runs statements as the superuser in autocommit mode; returns the last result's rows."""
        conn = self.superuser(cluster, db)
        rows = None
        try:
            with conn.cursor() as cur:
                for st in stmts:
                    if isinstance(st, tuple):
                        cur.execute(*st)
                    else:
                        cur.execute(st)
                    rows = cur.fetchall() if cur.description else None
        finally:
            conn.close()
        return rows

    def q1(self, conn, sql, args=None):
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()

    # ---- results -----------------------------------------------------
    def add(self, metric, target, measured, ok):
        self.rows.append((metric, target, measured, ok))
        mark = "" if ok is None else ("MET" if ok else "MISSED")
        log(f"  {mark or 'context'}: {metric}: {measured} (target {target})")

    # ---- machine and settings ------------------------------------------
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
        conn = self.superuser("A")
        ver = self.q1(conn, "SHOW server_version")[0].split()[0]
        ext = self.q1(conn, "SELECT extversion FROM pg_extension WHERE extname = 'bi_access'")[0]
        self.settings = {}
        for c in ("A", "B", "R", "P"):
            sc = conn if c == "A" else self.superuser(c)
            with sc.cursor() as cur:
                cur.execute("SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                            "('fsync', 'full_page_writes', 'synchronous_commit', 'shared_buffers', "
                            "'max_connections', 'wal_level', 'password_encryption', 'hot_standby', "
                            "'shared_preload_libraries') "
                            "ORDER BY name")
                self.settings[c] = dict(cur.fetchall())
                cur.execute("SELECT pg_is_in_recovery()")
                self.settings[c]["in recovery"] = str(cur.fetchone()[0])
            if c != "A":
                sc.close()
        with conn.cursor() as cur:
            # bi_access's settings as the server has them (a custom GUC is
            # listed once the library is loaded in this backend)
            cur.execute("SELECT bi_access.current_org()")
            cur.execute("SELECT name, setting FROM pg_settings WHERE name LIKE 'bi_access.%' "
                        "AND name NOT IN ('bi_access.actor') ORDER BY name")
            self.bi_settings = cur.fetchall()
        conn.close()
        durable = all(s["fsync"] == "on" and s["full_page_writes"] == "on" and s["synchronous_commit"] == "on"
                      for s in self.settings.values())
        if not durable:
            raise RuntimeError(f"a server is not durable: {self.settings}")
        self.pg_version, self.ext_version = ver, ext
        self.machine_long = (f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GB RAM, {platform.system()} "
                             f"{platform.release()}, PostgreSQL {ver}, bi_access {ext} (release build)")

    # ---- the lockstep driver ------------------------------------------
    @staticmethod
    def lockstep(sides, sqls_for, seconds, seed=0, min_cycles=40):
        """Runs the sides' statements in turn, each once per cycle, in a fresh
        random order every cycle, for `seconds` (at least min_cycles cycles,
        up to 4 x seconds): a burst of load from elsewhere on the machine hits
        every side alike. sides: [(key, connection)], a key may have several
        sessions; sqls_for(i) -> {key: sql}. Returns {key: [milliseconds]}."""
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

    def set_rls_org(self, org):
        """The hand-written policy of the twins, with this org key as a literal."""
        stmts = []
        for t in ("rls.orders", "rls.order_items"):
            stmts += [f"DROP POLICY org_only ON {t}",
                      f"CREATE POLICY org_only ON {t} FOR SELECT TO rls_reader USING (org_id = {org})"]
        self.run_sql("A", "bench", *stmts)

    # ---- items 1 and 3 --------------------------------------------------
    def queries_credential(self):
        """Per round, two fresh sessions each for: the owner filtering by hand
        (A and B), the credential (A and B), and rls_reader on the twins under
        one hand-written policy (A). All five serve the same statements per
        cycle; the owner on B is the control for item 3."""
        T, R = self.a.seconds, self.a.rounds
        log(f"items 1 and 3: {len(QUERIES)} queries x (owner A/B, credential A/B, hand-written RLS A), "
            f"2 sessions each, lockstep, {R} rounds x {T} s")
        keys = ("ownerA", "credA", "rlsA", "ownerB", "credB")
        variant = {"ownerA": ("hand", "public"), "ownerB": ("hand", "public"), "credA": ("rls", "public"),
                   "credB": ("rls", "public"), "rlsA": ("rls", "rls")}
        res = {name: {k: [] for k in keys} | {"n": []} for name in QUERIES}
        rng = random.Random(6)
        for r in range(-1, R):  # round -1 warms up
            org, user, pw = self.creds[max(r, 0) % len(self.creds)]
            self.set_rls_org(org)
            sides = []
            for _ in range(2):
                sides += [
                    ("ownerA", self.login("A", "app_owner", "app_owner")),
                    ("credA", self.login("A", user, pw)),
                    ("rlsA", self.login("A", "rls_reader", "rls_reader")),
                    ("ownerB", self.login("B", "app_owner", "app_owner")),
                    ("credB", self.login("B", user, pw)),
                ]
            for name, q in QUERIES.items():
                for key, conn in sides:
                    v, schema = variant[key]
                    if q.get(v + "_setup"):
                        with conn.cursor() as cur:
                            cur.execute(q[v + "_setup"].format(schema=schema, org=org))

                def sqls(i, q=q, org=org):
                    rid = org_row_id(org, rng)
                    return {k: q[v].format(schema=s, org=org, id=rid) for k, (v, s) in variant.items()}
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

    # ---- item 2 ----------------------------------------------------------
    def queries_application(self):
        T, R = self.a.seconds, self.a.rounds
        log(f"item 2: app_rw, {len(QUERIES)} queries x (never exposed, exposed: public.* and plain.* take turns) x (A, B), "
            f"lockstep, {R} rounds x {T} s")
        self.rls_state = self.run_sql(
            "A", "bench", "SELECT n.nspname, c.relname, c.relrowsecurity, "
            "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname IN ('orders', 'order_items') AND c.relkind = 'r' "
            "AND n.nspname IN ('public', 'plain') ORDER BY 1, 2")
        keys = ("before", "after", "beforeB", "afterB", "beforeP", "afterP", "beforeX", "afterX")
        res = {name: {k: [] for k in keys} | {"n": []} for name in QUERIES}
        rng = random.Random(2)
        try:
            for r in range(-1, R):
                # Odd rounds swap the twins: plain.* exposed, public.* hidden,
                # so a difference between the two physical copies (buffer and
                # cache placement) cancels out in the median of the rounds.
                exposed = "plain" if r >= 0 and r % 2 else "public"
                self.expose_twin(exposed)
                self.application_round(r, exposed, res, keys, rng)
        finally:
            self.expose_twin("public")
        # the application role still reads every org's rows and may write
        conn = self.login("A", "app_rw", "app_rw")
        with conn.cursor() as cur:
            cur.execute("SELECT count(DISTINCT org_id) FROM public.orders")
            orgs = cur.fetchone()[0]
            cur.execute("BEGIN")
            cur.execute("UPDATE public.orders SET amount = amount WHERE id = 12345")
            updated = cur.rowcount
            cur.execute("ROLLBACK")
        conn.close()
        self.app_check = (orgs, updated)
        return res

    def expose_twin(self, schema):
        """Exposes schema's orders and order_items on A and B and hides the
        other twins (bi_access.hide_table puts a table back as it was before
        its exposure: RLS off, no policies)."""
        other = "plain" if schema == "public" else "public"
        twins = ("orders", "order_items")
        hide = ("SELECT bi_access.hide_table(t::regclass) FROM unnest(%s::text[]) t "
                "WHERE EXISTS (SELECT FROM bi_access.exposed_table e WHERE e.tbl = t::regclass AND NOT e.hidden)")
        for cluster in ("A", "B"):
            self.run_sql(cluster, "bench", "BEGIN", (hide, ([f"{other}.{t}" for t in twins],)),
                         *(f"SELECT bi_access.expose_table('{schema}.{t}')" for t in twins), "COMMIT")

    def application_round(self, r, exposed, res, keys, rng):
        """One round of item 2: the app role's statements on the never-exposed
        twin and on the exposed one, side by side."""
        hidden = "plain" if exposed == "public" else "public"
        org = self.creds[max(r, 0) % len(self.creds)][0]
        s1 = self.login("A", "app_rw", "app_rw")
        s2 = self.login("A", "app_rw", "app_rw")
        s3 = self.login("B", "app_rw", "app_rw")
        s4 = self.login("B", "app_rw", "app_rw")
        # app_pre: app_rw's privileges, its sessions preload bi_access
        s5 = self.login("A", "app_pre", "app_pre")
        s6 = self.login("A", "app_pre", "app_pre")
        # app_bypass: app_rw's privileges, BYPASSRLS
        s7 = self.login("A", "app_bypass", "app_bypass")
        s8 = self.login("A", "app_bypass", "app_bypass")
        sessions = (s1, s2, s3, s4, s5, s6, s7, s8)
        sides = [("before", s1), ("after", s1), ("before", s2), ("after", s2),
                 ("beforeB", s3), ("afterB", s3), ("beforeB", s4), ("afterB", s4),
                 ("beforeP", s5), ("afterP", s5), ("beforeP", s6), ("afterP", s6),
                 ("beforeX", s7), ("afterX", s7), ("beforeX", s8), ("afterX", s8)]
        for name, q in QUERIES.items():
            if q.get("hand_setup"):
                for s in sessions:
                    with s.cursor() as cur:
                        for schema in ("plain", "public"):
                            cur.execute(q["hand_setup"].format(schema=schema, org=org))

            def sqls(i, q=q, org=org):
                rid = org_row_id(org, rng)
                before = q["hand"].format(schema=hidden, org=org, id=rid)
                after = q["hand"].format(schema=exposed, org=org, id=rid)
                return {"before": before, "after": after, "beforeB": before, "afterB": after,
                        "beforeP": before, "afterP": after, "beforeX": before, "afterX": after}
            lat = self.lockstep(sides, sqls, 1 if r < 0 else self.a.seconds, seed=r)
            if r >= 0:
                for k in keys:
                    res[name][k].append(median(lat[k]))
                res[name]["n"].append(len(lat["before"]))
        for c in sessions:
            c.close()
        if r >= 0:
            log(f"  round {r + 1}/{self.a.rounds} done ({exposed}.* exposed)")

    # ---- server-side split ------------------------------------------------
    def explains(self, n=20):
        log("EXPLAIN ANALYZE of each query: owner, credential, hand-written RLS, app role (cluster A)")
        org, user, pw = self.creds[0]
        self.set_rls_org(org)
        # A credential's own session may not EXPLAIN (the estimates come from
        # every org's statistics): its plan is read in a superuser's session
        # that SET ROLE to it, planned and run as the credential's role.
        as_credential = self.superuser("A")
        with as_credential.cursor() as cur:
            cur.execute(f'SET ROLE "{user}"')
        who = [("owner, filter by hand", self.login("A", "app_owner", "app_owner"), "hand", "public"),
               ("credential (bi_access; its role, SET by a superuser)", as_credential, "rls", "public"),
               ("hand-written RLS policy", self.login("A", "rls_reader", "rls_reader"), "rls", "rls"),
               ("app role, exposed table", self.login("A", "app_rw", "app_rw"), "hand", "public"),
               ("app role, never-exposed twin", self.login("A", "app_rw", "app_rw"), "hand", "plain")]

        def walk(node, acc):
            if node.get("Subplan Name", "").startswith("InitPlan"):
                acc.append(node["Actual Total Time"])
            for child in node.get("Plans", []):
                walk(child, acc)

        stats, plans = [], []
        rid = 424 * 1000 + org - 1
        for name, q in QUERIES.items():
            if q.get("extra"):
                continue
            sqls = [q[v].format(schema=s, org=org, id=rid) for _, _, v, s in who]
            times = [([], [], []) for _ in who]
            for i in range(n + 1):  # the first pass warms up
                for j, (_, c, _, _) in enumerate(who):
                    with c.cursor() as cur:
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
            for j, (label, c, _, _) in enumerate(who):
                p, e, ip = (median(x) for x in times[j])
                stats.append((name, label, p, e, ip))
                with c.cursor() as cur:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS, VERBOSE) " + sqls[j])
                    plan = "\n".join(r[0] for r in cur.fetchall())
                plans.append(f"**{name} — {label}** (`{sqls[j]}`)\n\n```\n{plan}\n```\n")
        for _, c, _, _ in who:
            c.close()
        return stats, plans

    # ---- item 5: login ------------------------------------------------------
    def logins(self, per_round, creds=None, item="5", cluster="A",
               plain=("plain_login", "Zq8rT2mW9xK4vB7nH3pL6cF1sD5gJ0aY")):
        R = self.a.rounds
        creds = creds or [c[1:] for c in self.creds]
        log(f"item {item}: login (TCP + SCRAM + first query) credential vs plain role, cluster {cluster}, "
            f"{R} rounds x {per_round} logins each, alternating")
        admin = self.superuser(cluster)
        out = {"cred": [], "plain": [], "ratios": []}

        def one(user, pw):
            t0 = time.perf_counter()
            conn = self.login(cluster, user, pw)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
            ms = (time.perf_counter() - t0) * 1000
            conn.close()
            # untimed: wait until that backend is gone, so no side ever logs
            # in next to an exiting backend (or counts it against a limit)
            for _ in range(2000):
                if self.q1(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))[0] == 0:
                    break
                time.sleep(0.001)
            return ms

        for who in (plain, creds[0]):  # warm-up
            for _ in range(3):
                one(*who)
        for r in range(R):
            cred = creds[r % len(creds)]
            this = {"cred": [], "plain": []}
            for k in range(per_round):
                order = [("cred", cred), ("plain", plain)]
                if (r + k) % 2:
                    order.reverse()
                for key, who in order:
                    this[key].append(one(*who))
            out["cred"] += this["cred"]
            out["plain"] += this["plain"]
            out["ratios"].append(median(this["cred"]) / median(this["plain"]))
        admin.close()
        return out

    # ---- item 5b: login with a network allowlist ---------------------------------
    def logins_allowlist(self, per_round):
        """Item 5's measurement with a credential whose allowlist (four
        networks, 127.0.0.1 in the last) the login gate checks, against the
        same plain role. The credential is generated on A's copy for this
        item and deleted after it."""
        networks = "{10.0.0.0/8,192.168.0.0/16,2001:db8::/32,127.0.0.1/32}"
        admin = self.login("A", "bench_admin", "bench_admin")
        user = None
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT username, password FROM bi_access.generate(%s, 'allowlist', "
                            "allowed_networks => %s)", (str(self.creds[0][0]), networks))
                user, password = cur.fetchone()
            out = self.logins(per_round, [(user, password)], "5b")
            out["networks"] = networks
            return out
        finally:
            if user is not None:
                with admin.cursor() as cur:
                    cur.execute("SELECT 1 FROM bi_access.delete(%s)", (user,))
                    cur.execute("SELECT bi_access.purge(%s)", (user,))
            admin.close()

    # ---- item 4: generate -----------------------------------------------------
    def generate_latency(self, per_round):
        R = self.a.rounds
        log(f"item 4: generate on A (10 credentials) and B ({self.info.get('credentials_b')}) vs the "
            "hand-written function on A, "
            f"{R} rounds x {per_round} calls each, rotating call by call")
        conns = {}

        def reconnect():
            for c in list(conns.values()):
                c.close()
            conns["A"] = self.login("A", "bench_admin", "bench_admin")
            conns["B"] = self.login("B", "bench_admin", "bench_admin")
            conns["H"] = self.login("A", "bench_admin", "bench_admin")

        def one(side, org):
            with conns[side].cursor() as cur:
                if side == "H":
                    t0 = time.perf_counter()
                    password = "".join(secrets.choice(ALNUM) for _ in range(32))
                    verifier = scram_verifier(password)
                    sealed = os.urandom(24) + os.urandom(len(password) + 16)
                    cur.execute("SELECT hand.generate(%s, 'default', %s, %s)",
                                (org, verifier, psycopg2.Binary(sealed)))
                    role = cur.fetchone()[0]
                    ms = (time.perf_counter() - t0) * 1000
                    cur.execute("SELECT hand.delete(%s)", (role,))
                else:
                    t0 = time.perf_counter()
                    cur.execute("SELECT username, password FROM bi_access.generate(%s)", (org,))
                    role = cur.fetchone()[0]
                    ms = (time.perf_counter() - t0) * 1000
                    # untimed: back to the same count
                    cur.execute("SELECT 1 FROM bi_access.delete(%s)", (role,))
                    cur.execute("SELECT bi_access.purge(%s)", (role,))
            return ms

        reconnect()
        for side in "ABH":
            for k in range(5):
                one(side, str(90_000_000 + k))
        samples = {s: [] for s in "ABH"}
        r_hand, r_scale = [], []
        for r in range(R):
            reconnect()
            this = {s: [] for s in "ABH"}
            for k in range(per_round):
                order = "ABH"[(r + k) % 3:] + "ABH"[:(r + k) % 3]
                for side in order:
                    this[side].append(one(side, str(91_000_000 + r * 10_000 + k)))
            for s in "ABH":
                samples[s] += this[s]
            r_hand.append(median(this["A"]) / median(this["H"]))
            r_scale.append(median(this["B"]) / median(this["A"]))
        counts = {}
        for c in "AB":
            counts[c] = self.q1(conns[c], "SELECT count(*) FROM bi_access.credentials")[0]
        for c in conns.values():
            c.close()
        return {"samples": samples, "r_hand": r_hand, "r_scale": r_scale, "counts": counts}

    # ---- item 6: revocation reach ------------------------------------------
    def revocation_reach(self, tries):
        log(f"item 6: revocation reach on replica R, {tries} tries: revoke on A, an open session on R "
            "runs `SELECT 1` until it fails; the replay of the commit timed alongside")
        prim = self.superuser("A")
        rep = self.superuser("R")
        out = []
        for t in range(tries):
            user, pw = self.q1(prim, "SELECT username, password FROM bi_access.generate(%s, "
                               "connection_limit => -1)", (str(92_000_000 + t),))
            lsn = self.q1(prim, "SELECT pg_current_wal_lsn()")[0]
            deadline = time.time() + 30
            while not self.q1(rep, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0]:
                if time.time() > deadline:
                    raise RuntimeError("the replica did not replay a generate within 30 s")
                time.sleep(0.002)
            sess = self.login("R", user, pw)
            with sess.cursor() as cur:
                cur.execute("SELECT count(*) FROM public.orders")
                cur.fetchone()
            res = {"cut_ms": None, "replay_ms": None, "code": None, "error": None, "statements": 0}
            start = threading.Event()
            commit = {}

            def poll_session():
                start.wait()
                cur = sess.cursor()
                pc = time.perf_counter
                end = pc() + 10
                try:
                    while pc() < end:
                        cur.execute("SELECT 1")
                        cur.fetchone()
                        res["statements"] += 1
                except psycopg2.Error as e:
                    res["cut_ms"] = (pc() - commit["t"]) * 1000
                    res["code"] = e.pgcode
                    text = (e.pgerror or str(e) or "").strip()
                    res["error"] = " / ".join(x.strip() for x in text.splitlines() if x.strip())

            def poll_replay():
                start.wait()
                c2 = self.superuser("R")
                pc = time.perf_counter
                end = pc() + 10
                with c2.cursor() as cur:
                    while pc() < end:
                        cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (commit["lsn"],))
                        if cur.fetchone()[0]:
                            res["replay_ms"] = (pc() - commit["t"]) * 1000
                            break
                c2.close()

            th = [threading.Thread(target=poll_session), threading.Thread(target=poll_replay)]
            for x in th:
                x.start()
            with prim.cursor() as cur:
                cur.execute("SELECT 1 FROM bi_access.revoke(%s)", (user,))
                commit["t"] = time.perf_counter()  # the revoke's commit has returned
                cur.execute("SELECT pg_current_wal_lsn()")
                commit["lsn"] = cur.fetchone()[0]
            start.set()
            for x in th:
                x.join()
            try:
                sess.close()
            except psycopg2.Error:
                pass
            with prim.cursor() as cur:
                cur.execute("SELECT 1 FROM bi_access.delete(%s)", (user,))
                cur.execute("SELECT bi_access.purge(%s)", (user,))
            res["user"] = user
            out.append(res)
        prim.close()
        rep.close()
        # What the replica's server says it sent each session.
        if self.a.r_log:
            time.sleep(0.5)
            with open(self.a.r_log, errors="replace") as f:
                text = f.read()
            for res in out:
                m = re.search(re.escape(res["user"]) + r"@bench (\w{5}) FATAL:\s+(.*)", text)
                res["log_code"], res["log_msg"] = (m.group(1), m.group(2).strip()) if m else (None, None)
        return out

    # ---- item 7: concurrency ------------------------------------------------
    def concurrency(self, seconds):
        log(f"item 7: generate from 8 clients on distinct orgs, then 8 racing on one (org, label), "
            f"{seconds} s each (cluster A)")
        out = {}
        for mode in ("distinct", "race"):
            conns = [self.login("A", "bench_admin", "bench_admin") for _ in range(8)]
            lat = [[] for _ in range(8)]
            ok = [0] * 8
            errs = [dict() for _ in range(8)]
            stop = threading.Event()
            state = {"round": -1, "go": True}

            def next_round():  # run by one thread while all 8 wait
                state["round"] += 1
                state["go"] = not stop.is_set()
            barrier = threading.Barrier(8, action=next_round)

            def worker(i):
                seq = 0
                with conns[i].cursor() as cur:
                    while True:
                        if mode == "race":
                            try:
                                barrier.wait(timeout=60)
                            except threading.BrokenBarrierError:
                                return
                            if not state["go"]:
                                return
                            org = str(93_000_000 + state['round'])
                        else:
                            if stop.is_set():
                                return
                            org = str(94_000_000 + i * 1_000_000 + seq)
                            seq += 1
                        t0 = time.perf_counter()
                        try:
                            cur.execute("SELECT username FROM bi_access.generate(%s, 'default')", (org,))
                            cur.fetchone()
                            ok[i] += 1
                        except psycopg2.Error as e:
                            code = e.pgcode or "connection"
                            errs[i][code] = errs[i].get(code, 0) + 1
                        lat[i].append((time.perf_counter() - t0) * 1000)

            th = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            t0 = time.perf_counter()
            for x in th:
                x.start()
            time.sleep(seconds)
            stop.set()
            for x in th:
                x.join(60)
            elapsed = time.perf_counter() - t0
            barrier.abort()
            for c in conns:
                c.close()
            all_lat = [x for l in lat for x in l]
            errors = {}
            for e in errs:
                for k, v in e.items():
                    errors[k] = errors.get(k, 0) + v
            # The org keys each mode generated with (integers: every bench org column is one).
            # Worker i of "distinct" counts up from 94,000,000 + i * 1,000,000.
            low, high = (94_000_000, 102_000_000) if mode == "distinct" else (93_000_000, 94_000_000)
            records, orgs, complete = self.run_sql("A", "bench", (
                """SELECT count(*), count(DISTINCT c.org_id),
                          count(*) FILTER (WHERE c.status = 'active' AND r.rolcanlogin
                              AND pg_has_role(r.oid, (SELECT reader_role FROM bi_access.config), 'MEMBER'))
                   FROM bi_access.credential c LEFT JOIN pg_roles r ON r.rolname = c.role_name
                   WHERE CASE WHEN c.org_id ~ '^[0-9]{1,18}$' THEN c.org_id::bigint END >= %s
                     AND CASE WHEN c.org_id ~ '^[0-9]{1,18}$' THEN c.org_id::bigint END < %s""",
                (low, high)))[0]
            out[mode] = {"calls": len(all_lat), "ok": sum(ok), "elapsed": elapsed, "errors": errors,
                         "p50": pct(all_lat, 0.5) if all_lat else 0, "p99": pct(all_lat, 0.99) if all_lat else 0,
                         "records": records, "orgs": orgs, "complete": complete, "rounds": state["round"]}
        return out

    # ---- item 8: CALL sync() over many tables --------------------------------
    def sync_bench(self, tables, app_seconds):
        log(f"item 8: CALL bi_access.sync() over {tables} new tables, with the application reading and "
            f"writing them; its latency without the sync for {app_seconds} s, then during the sync")
        db = "syncbench"
        self.run_sql("A", "postgres", f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}")
        admin = self.superuser("A", db)
        with admin.cursor() as cur:
            cur.execute("CREATE EXTENSION bi_access")
            cur.execute(
                """DO $$ BEGIN FOR i IN 1..%s LOOP
                     EXECUTE format('CREATE TABLE public.%%I (id bigint PRIMARY KEY, '
                                    'org_id bigint NOT NULL, payload text)', 't' || lpad(i::text, 4, '0'));
                     EXECUTE format('CREATE INDEX ON public.%%I (org_id)', 't' || lpad(i::text, 4, '0'));
                     EXECUTE format('INSERT INTO public.%%I SELECT g, g %%%% 10, ''x'' FROM generate_series(1, 20) g',
                                    't' || lpad(i::text, 4, '0'));
                   END LOOP; END $$""" % tables)
            cur.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO app_rw")
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            cur.execute("VACUUM ANALYZE")

        ids = iter(range(1_000_000, 10**12))  # ids the application inserts, unique across phases

        app_errors = []

        def app_load(stop, lat, seed):
            try:
                app_loop(stop, lat, seed)
            except Exception as e:  # reported by phase()
                app_errors.append(repr(e))

        def app_loop(stop, lat, seed):
            rng = random.Random(seed)
            conn = self.login("A", "app_rw", "app_rw", db)
            with conn.cursor() as cur:
                i = 0
                while not stop.is_set():
                    t = f"t{rng.randrange(1, tables + 1):04d}"
                    t0 = time.perf_counter()
                    if i % 2:
                        cur.execute(f"INSERT INTO public.{t} VALUES (%s, 5, 'app')", (next(ids),))
                    else:
                        cur.execute(f"SELECT count(*) FROM public.{t} WHERE org_id = 5")
                        cur.fetchall()
                    lat.append((time.perf_counter() - t0) * 1000)
                    i += 1
                    time.sleep(0.002)
            conn.close()

        locks = {"max": 0, "samples": 0, "over_one": 0}

        def sampler(stop):
            conn = self.superuser("A", db)
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute(
                        """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                           WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted
                             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                             AND c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')""",
                        (pid,))
                    n = cur.fetchone()[0]
                    locks["samples"] += 1
                    locks["max"] = max(locks["max"], n)
                    locks["over_one"] += n > 1
                    time.sleep(0.001)
            conn.close()

        def phase(body):
            stop = threading.Event()
            lat = []
            th = [threading.Thread(target=app_load, args=(stop, lat, phase.n)),
                  threading.Thread(target=sampler, args=(stop,))]
            phase.n += 1
            for x in th:
                x.start()
            time.sleep(0.2)
            result = body()
            stop.set()
            for x in th:
                x.join()
            if app_errors or not lat:
                raise RuntimeError(f"the application load failed: {app_errors or 'no statement recorded'}")
            return lat, result
        phase.n = 1

        base_lat, _ = phase(lambda: time.sleep(app_seconds))
        base_locks = dict(locks)
        locks.update(max=0, samples=0, over_one=0)
        admin.notices = collections.deque()

        def run_sync():
            t0 = time.perf_counter()
            with admin.cursor() as cur:
                cur.execute("CALL bi_access.sync()")
            return time.perf_counter() - t0
        sync_lat, sync_s = phase(run_sync)
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM bi_access.exposed_table e JOIN pg_class c ON c.oid = e.tbl "
                        "WHERE NOT e.hidden AND c.relrowsecurity")
            exposed = cur.fetchone()[0]
            t0 = time.perf_counter()
            cur.execute("CALL bi_access.sync()")
            noop_s = time.perf_counter() - t0
        skipped = sum(bool(re.search(r"skipped", n)) for n in admin.notices)
        admin.close()
        self.run_sql("A", "postgres", f"DROP DATABASE {db}")
        return {"tables": tables, "base": base_lat, "during": sync_lat, "sync_s": sync_s, "noop_s": noop_s,
                "exposed": exposed, "locks": dict(locks), "base_locks": base_locks, "skipped": skipped}

    # ---- items 9 and 10: the yield worker (cluster P, bi_access preloaded) ----
    def yield_worker_pid(self):
        rows = self.run_sql("P", "bench", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'bi_access yield worker'")
        if len(rows) != 1:
            raise RuntimeError(f"P runs {len(rows)} yield workers, not 1")
        return rows[0][0]

    def ddl_wait(self, tries):
        """Item 9: the application's ALTER TABLE behind a hostile credential
        on P, the three hostile kinds in turn."""
        kinds = ("idle in transaction", "inside a savepoint", "running a long statement")
        log(f"item 9: the application's ALTER TABLE behind a hostile credential, P (preloaded), {tries} tries "
            f"of each of: {', '.join(kinds)}")
        user, password = self.p_cred
        before = self.run_sql("P", "bench", "SELECT cancelled, terminated FROM bi_access.lock_yields()")[0]
        out = {k: [] for k in kinds}
        app = self.login("P", "bench_app", "bench_app")
        for t in range(tries):
            for kind in kinds:
                cred = self.login("P", user, password)
                pid = self.q1(cred, "SELECT pg_backend_pid()")[0]
                holder = None
                if kind == "idle in transaction":
                    cred.autocommit = False
                    self.q1(cred, "SELECT count(*) FROM orders")
                else:
                    sql = ("SELECT count(*), pg_sleep(60) FROM orders" if kind == "running a long statement"
                           else "BEGIN; SELECT count(*) FROM orders; SAVEPOINT s; SELECT pg_sleep(60)")

                    def hold(sql=sql):
                        try:
                            with cred.cursor() as cur:
                                cur.execute(sql)
                        except psycopg2.Error:
                            pass
                    holder = threading.Thread(target=hold, daemon=True)
                    holder.start()
                for _ in range(5000):
                    if self.run_sql("P", "bench", ("SELECT count(*) FROM pg_locks WHERE pid = %s AND granted "
                                                   "AND relation = 'orders'::regclass", (pid,)))[0][0]:
                        break
                    time.sleep(0.002)
                t0 = time.perf_counter()
                with app.cursor() as cur:
                    cur.execute(f"ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'n{t}'")
                out[kind].append((time.perf_counter() - t0) * 1000)
                if holder:
                    holder.join(10)
                try:
                    cred.close()
                except psycopg2.Error:
                    pass
        app.close()
        after = self.run_sql("P", "bench", "SELECT cancelled, terminated FROM bi_access.lock_yields()")[0]
        return {"ms": out, "cancelled": after[0] - before[0], "terminated": after[1] - before[1]}

    def yield_idle_cost(self):
        """Item 10: the application's point lookup on P with the yield worker
        running and paused (SIGSTOP), side by side: each cycle runs one
        side's two sessions, then the other's (in turns), the worker paused
        or continued before each side with a 2 ms settle, untimed; no
        credential connected."""
        T, R = self.a.seconds, self.a.rounds
        log(f"item 10: the yield worker's cost when idle: application point lookup on P, worker running vs "
            f"paused, lockstep, {R} rounds x {T} s")
        import signal
        worker = self.yield_worker_pid()
        credentials = self.run_sql("P", "bench", "SELECT count(*) FROM pg_stat_activity a WHERE pg_has_role("
                                   "a.usesysid, 'bi_access_credential', 'MEMBER') AND a.usesysid <> 10")[0][0]
        cpu0 = self.proc_cpu_ms(worker)
        rng = random.Random(10)
        out = {"running": [], "paused": [], "ratios": [], "n": [], "credentials": credentials}
        pc = time.perf_counter
        try:
            for r in range(-1, R):
                sessions = {k: [self.login("P", "bench_app", "bench_app") for _ in range(2)]
                            for k in ("running", "paused")}
                curs = {k: [c.cursor() for c in conns] for k, conns in sessions.items()}
                lat = {"running": [], "paused": []}
                end = pc() + (1 if r < 0 else T)
                order = random.Random(r)
                i = 0
                while pc() < end or i < 40:
                    sql = f"SELECT * FROM orders WHERE id = {rng.randrange(1, 100001)}"
                    for k in (("running", "paused") if (i + r) % 2 else ("paused", "running")):
                        os.kill(worker, signal.SIGCONT if k == "running" else signal.SIGSTOP)
                        time.sleep(0.002)
                        order.shuffle(curs[k])
                        for cur in curs[k]:
                            t0 = pc()
                            cur.execute(sql)
                            cur.fetchall()
                            lat[k].append((pc() - t0) * 1000)
                    i += 1
                os.kill(worker, signal.SIGCONT)
                for conns in sessions.values():
                    for c in conns:
                        c.close()
                if r >= 0:
                    out["running"].append(median(lat["running"]))
                    out["paused"].append(median(lat["paused"]))
                    out["ratios"].append(median(lat["running"]) / median(lat["paused"]))
                    out["n"].append(len(lat["running"]))
        finally:
            os.kill(worker, signal.SIGCONT)
        out["worker_cpu_ms"] = self.proc_cpu_ms(worker) - cpu0
        if self.yield_worker_pid() != worker:
            raise RuntimeError("the yield worker restarted during the measurement")
        return out

    def usage_entries(self):
        """P has bi_access.usage_max_credentials = 2: the yield credential and
        `counted` take both entries (each logs in once, in that order),
        `uncounted` logs in after them and is counted nowhere. Checked in
        bi_access.usage before anything is measured."""
        for user, password in (self.p_cred, self.p_usage["counted"], self.p_usage["uncounted"]):
            self.login("P", user, password).close()
        shown = dict(self.run_sql("P", "bench", "SELECT role_name, logins FROM bi_access.usage"))
        counted, uncounted = self.p_usage["counted"][0], self.p_usage["uncounted"][0]
        if counted not in shown or uncounted in shown:
            raise RuntimeError(f"P's usage entries are not what items 11 and 12 need: {shown}")

    def usage_statement_cost(self):
        """Item 11: a credential's point lookup on P with the usage counters on
        (a session of `counted`) and off (a session of `uncounted`, which has
        no entry), same org, same statements, lockstep."""
        T, R = self.a.seconds, self.a.rounds
        log(f"item 11: the usage counters' cost per statement: credential point lookup on P, counted vs "
            f"uncounted session, lockstep, {R} rounds x {T} s")
        self.usage_entries()
        counted = self.p_usage["counted"][0]
        before = self.run_sql("P", "bench", ("SELECT statements FROM bi_access.usage WHERE role_name = %s",
                                             (counted,)))[0][0]
        rng = random.Random(11)
        out = {"on": [], "off": [], "ratios": [], "n": []}
        for r in range(-1, R):
            sides = []
            for _ in range(2):
                sides += [("on", self.login("P", *self.p_usage["counted"])),
                          ("off", self.login("P", *self.p_usage["uncounted"]))]

            def sqls(i):
                # org 7's rows: id % 1000 = 6
                sql = f"SELECT * FROM orders WHERE id = {rng.randrange(0, 100) * 1000 + 6}"
                return {"on": sql, "off": sql}
            lat = self.lockstep(sides, sqls, 1 if r < 0 else T, seed=r)
            for _, c in sides:
                c.close()
            if r >= 0:
                out["on"].append(median(lat["on"]))
                out["off"].append(median(lat["off"]))
                out["ratios"].append(median(lat["on"]) / median(lat["off"]))
                out["n"].append(len(lat["on"]))
        after = self.run_sql("P", "bench", ("SELECT statements FROM bi_access.usage WHERE role_name = %s",
                                            (counted,)))[0][0]
        out["counted"] = after - before
        return out

    def usage_login(self, per_round):
        """Item 12: a credential's login on P, where its usage entry is found
        and its login counted, against the plain role bench_app's (item 5's
        measurement on P)."""
        self.usage_entries()
        cred = self.p_usage["counted"]
        counted = ("SELECT logins FROM bi_access.usage WHERE role_name = %s", (cred[0],))
        before = self.run_sql("P", "bench", counted)[0][0]
        out = self.logins(per_round, [cred], "12", "P", ("bench_app", "bench_app"))
        out["counted"] = self.run_sql("P", "bench", counted)[0][0] - before
        return out

    @staticmethod
    def proc_cpu_ms(pid):
        """utime + stime of a process, in ms."""
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    # ---- run -----------------------------------------------------------------
    def run(self):
        t_start = time.time()
        self.load_start = f"{os.getloadavg()[0]:.1f}"
        self.machine()
        self.errors = {}

        def guard(label, fn, *args):
            """Runs one measurement; an error is reported as a missed target of
            its own, and the other measurements still run."""
            try:
                return fn(*args)
            except Exception as e:
                traceback.print_exc()
                self.errors[label] = f"{e!r}"[:400]
                log(f"{label} failed: {e!r}")
                return None

        q = guard("1–3. queries", self.queries_credential)
        app = guard("1–3. queries", self.queries_application)
        stats, plans = guard("1–3. queries", self.explains, 10 if self.quick else 20) or ([], [])
        if app is None:
            q = None
        login = guard("5. login", self.logins, 10 if self.quick else 25)
        login_nets = guard("5b. login, allowlist", self.logins_allowlist, 10 if self.quick else 25)
        gen = guard("4. generate", self.generate_latency, 10 if self.quick else 40)
        reach = guard("6. revocation reach", self.revocation_reach, 20 if self.quick else 30)
        conc = guard("7. concurrency", self.concurrency, 4 if self.quick else 10)
        sync = guard("8. sync", self.sync_bench, 200 if self.quick else 1000, 3 if self.quick else 8)
        ddl = guard("9. DDL wait", self.ddl_wait, 3 if self.quick else 10)
        idle = guard("10. yield worker, idle", self.yield_idle_cost)
        ustmt = guard("11. usage, statement", self.usage_statement_cost)
        ulogin = guard("12. usage, login", self.usage_login, 10 if self.quick else 25)
        return self.report(q, app, stats, plans, login, gen, reach, conc, sync, ddl, idle, ustmt, ulogin,
                           time.time() - t_start, login_nets)

    # ---- report -----------------------------------------------------------------
    def report(self, q, app, stats, plans, login, gen, reach, conc, sync, ddl, idle, ustmt, ulogin,
               measure_seconds, login_nets=None):
        D = self.detail

        def qtable(title, left, right, data, lkey, rkey):
            D.append(title)
            D.append(f"| query | {left} ms | {right} ms | ratio (median) | per-round ratios | statements per side "
                     "per round |")
            D.append("| --- | --- | --- | --- | --- | --- |")
            out = {}
            for name in QUERIES:
                lv, rv = data[name][lkey], data[name][rkey]
                ratios = [x / y for x, y in zip(rv, lv)]
                out[name] = (median(ratios), ratios, median(lv), median(rv))
                D.append(f"| {name} | {median(lv):.3f} | {median(rv):.3f} | {median(ratios):.3f} | "
                         f"{', '.join(f'{x:.3f}' for x in ratios)} | "
                         f"{min(data[name]['n'])}–{max(data[name]['n'])} |")
            D.append("")
            return out

        def ratio_rows(prefix, what, table, target_of):
            for name, (m, ratios, lv, rv) in table.items():
                extra = QUERIES[name].get("extra")
                t = None if extra else target_of(name)
                self.add(f"{prefix} {name}: {what}", "(context)" if extra else f"≤ {t:.2f}",
                         f"{m:.3f} (spread {spread(ratios)}; {rv:.3f} vs {lv:.3f} ms)",
                         None if extra else m <= t)

        nb = self.info.get("credentials_b", "?")
        def sec_q():
            # 1
            t1 = qtable("### 1. Credential (bi_access) vs the owner's hand-written filter, cluster A\n",
                        "owner, hand-written filter", "credential", q, "ownerA", "credA")
            ratio_rows("1a.", "credential / owner's hand-written `WHERE org_id = …`", t1,
                       lambda n: QUERIES[n]["target_owner"])
            t1b = qtable("### 1. Credential (bi_access) vs one hand-written RLS policy with the org key as a literal "
                         "(twin tables `rls.*`, same rows and indexes), cluster A\n",
                         "hand-written RLS policy", "credential", q, "rlsA", "credA")
            ratio_rows("1b.", "credential / hand-written RLS policy (literal org key)", t1b, lambda n: TARGET_RLS)
            # 2
            state = "; ".join(f"{n}.{t}: RLS {'on' if rls else 'off'}, {k} policies" for n, t, rls, k in self.rls_state)
            t2 = qtable("### 2. Non-owner application role (app_rw): a table never exposed vs its exposed twin "
                        "(same rows and indexes; `public.*` exposed and `plain.*` never exposed in even rounds, "
                        "the other way round in odd rounds, through `bi_access.expose_table` and `hide_table`), "
                        f"cluster A (at the start: {state})\n",
                        "never exposed", "exposed", app, "before", "after")
            ratio_rows("2.", "app role, exposed / never-exposed table", t2, lambda n: TARGET_APP)
            t2b = qtable(f"### 2. The same on cluster B ({nb} credentials, all members of "
                         "`bi_access_credential`, the role the pass-through policy asks about)\n",
                         "never exposed", "exposed", app, "beforeB", "afterB")
            ratio_rows("2.", f"app role, exposed / never-exposed table, {nb} credentials", t2b,
                       lambda n: TARGET_APP)
            t2p = qtable("### 2. The same role with bi_access preloaded in its sessions (`app_pre`: app_rw's "
                         "privileges, `session_preload_libraries = 'bi_access'`), cluster A: the pass-through "
                         "policy is decided before planning\n",
                         "never exposed", "exposed", app, "beforeP", "afterP")
            ratio_rows("2.", "app role whose sessions preload bi_access, exposed / never-exposed table", t2p,
                       lambda n: QUERIES[n].get("target_app_preloaded", TARGET_APP))
            t2x = qtable("### 2. The same role as a BYPASSRLS role (`app_bypass`: app_rw's privileges, "
                         "BYPASSRLS, check()'s fix for a role under no row-level security of its own), "
                         "cluster A\n",
                         "never exposed", "exposed", app, "beforeX", "afterX")
            ratio_rows("2.", "app role with BYPASSRLS, exposed / never-exposed table", t2x, lambda n: TARGET_APP)
            orgs, updated = self.app_check
            self.add("2. app role after exposure: reads every org's rows, may write", "1000 orgs, 1 row updated",
                     f"{orgs} orgs, {updated} row updated", orgs == 1000 and updated == 1)
            # 3
            t3 = qtable(f"### 3. Credential with 10 (cluster A) vs {nb} credentials (cluster B)\n",
                        "10 credentials", f"{nb} credentials", q, "credA", "credB")
            ctl = qtable("Control: the owner's hand-filtered queries on B vs A (no credential involved; a "
                         "ratio away from 1 here is a difference between the two servers):\n",
                         "owner on A", "owner on B", q, "ownerA", "ownerB")
            for name, (m, ratios, lv, rv) in t3.items():
                extra = QUERIES[name].get("extra")
                self.add(f"3. {name}: credential, {nb} / 10 credentials",
                         "(context)" if extra else f"≤ {TARGET_SCALE:.2f}",
                         f"{m:.3f} (spread {spread(ratios)}; {rv:.3f} vs {lv:.3f} ms; control, owner B / A: "
                         f"{ctl[name][0]:.3f})", None if extra else m <= TARGET_SCALE)
            D.append("Server side (median of `EXPLAIN (ANALYZE, TIMING OFF)` planning and execution, and the "
                     "InitPlans' own time from a timed run; cluster A, org 7):\n")
            D.append("| query | who | planning ms | execution ms | InitPlans ms |")
            D.append("| --- | --- | --- | --- | --- |")
            for name, label, p, e, ip in stats:
                D.append(f"| {name} | {label} | {p:.3f} | {e:.3f} | {ip:.3f} |")
            D.append("")
        def sec_gen():
            # 4
            s = gen["samples"]
            ma, mb, mh = median(s["A"]), median(s["B"]), median(s["H"])
            gh, gs = median(gen["r_hand"]), median(gen["r_scale"])
            self.add("4. `generate` / hand-written SQL function doing the same catalog work (10 credentials)",
                     f"≤ {TARGET_GEN_HAND:.2f}", f"{gh:.3f} (spread {spread(gen['r_hand'])}; {ma:.2f} vs {mh:.2f} ms)",
                     gh <= TARGET_GEN_HAND)
            self.add(f"4. `generate`, {nb} / 10 credentials", f"≤ {TARGET_GEN_SCALE:.2f}",
                     f"{gs:.3f} (spread {spread(gen['r_scale'])}; {mb:.2f} vs {ma:.2f} ms)", gs <= TARGET_GEN_SCALE)
            for key, label in (("A", "`generate`, 10 credentials"), ("B", f"`generate`, {nb} credentials"),
                               ("H", "hand-written function, 10 credentials")):
                self.add(f"4. median latency: {label}", "(absolute)",
                         f"{median(s[key]):.2f} ms (p90 {pct(s[key], 0.9):.2f} ms, n={len(s[key])})", None)
            D.append("### 4. `generate` latency (client side over TCP, one call = one autocommit transaction, "
                     "commit included; durable server)\n")
            D.append("Three sides in turn, call by call, in a rotating order: `bi_access.generate(org)` on A and on "
                     "B, and `hand.generate(...)` on A (bench/baseline.sql), whose timed call includes computing "
                     "the password and its SCRAM-SHA-256 verifier (4096 iterations) in the client. Every timed "
                     "call is followed by an untimed removal (`delete` + `purge`, `hand.delete`). Credentials "
                     f"listed at the end: A {gen['counts']['A']}, B {gen['counts']['B']}.\n")
            D.append(f"- per-round ratio generate / hand-written: {', '.join(f'{x:.3f}' for x in gen['r_hand'])}")
            D.append(f"- per-round ratio B / A: {', '.join(f'{x:.3f}' for x in gen['r_scale'])}")
            for key, label in (("A", "generate on A"), ("B", "generate on B"), ("H", "hand-written on A")):
                D.append(f"- {label}: median {median(s[key]):.2f} ms, min {min(s[key]):.2f}, p90 "
                         f"{pct(s[key], 0.9):.2f}, max {max(s[key]):.2f}")
            D.append("")
        def sec_login():
            # 5
            lr = median(login["ratios"])
            mc, mp = median(login["cred"]), median(login["plain"])
            self.add("5. login (TCP + SCRAM + first query): credential / plain role, same server",
                     f"≤ {TARGET_LOGIN:.2f}", f"{lr:.3f} (spread {spread(login['ratios'])}; {mc:.2f} vs {mp:.2f} ms)",
                     lr <= TARGET_LOGIN)
            D.append("### 5. Login, cluster A\n")
            D.append("psycopg2 connects over TCP to 127.0.0.1 with SCRAM-SHA-256 and runs `SELECT pg_backend_pid()`; "
                     "the timed span ends when that row arrives. After each login the session is closed and the "
                     "driver waits (untimed) until its backend has exited. The credential's session loads "
                     "bi_access's session guard and its login gate (`session_preload_libraries = 'bi_access, "
                     "bi_access_gate'`), which checks the org's and the server's connection limits and clamps "
                     "the caps before the first statement; `plain_login` is a login role without bi_access.\n")
            D.append(f"- per-round ratios: {', '.join(f'{x:.3f}' for x in login['ratios'])}")
            D.append(f"- credential: median {mc:.2f} ms, p90 {pct(login['cred'], 0.9):.2f}, n={len(login['cred'])}")
            D.append(f"- plain role: median {mp:.2f} ms, p90 {pct(login['plain'], 0.9):.2f}, n={len(login['plain'])}")
            D.append("")
        def sec_login_nets():
            # 5b
            lr = median(login_nets["ratios"])
            mc, mp = median(login_nets["cred"]), median(login_nets["plain"])
            self.add("5b. login with a network allowlist: credential / plain role, same server",
                     f"≤ {TARGET_LOGIN:.2f}", f"{lr:.3f} (spread {spread(login_nets['ratios'])}; {mc:.2f} vs "
                     f"{mp:.2f} ms)", lr <= TARGET_LOGIN)
            D.append("### 5b. Login with a network allowlist, cluster A\n")
            D.append("Item 5's measurement, with one credential generated for it whose `allowed_networks` is "
                     f"`{login_nets['networks']}`: the login gate reads the list and matches the client's "
                     "address (127.0.0.1, the last network) before the first statement.\n")
            D.append(f"- per-round ratios: {', '.join(f'{x:.3f}' for x in login_nets['ratios'])}")
            D.append(f"- credential: median {mc:.2f} ms, p90 {pct(login_nets['cred'], 0.9):.2f}, "
                     f"n={len(login_nets['cred'])}")
            D.append(f"- plain role: median {mp:.2f} ms, p90 {pct(login_nets['plain'], 0.9):.2f}, "
                     f"n={len(login_nets['plain'])}")
            D.append("")
        def sec_reach():
            # 6
            cut = [x["cut_ms"] for x in reach if x["cut_ms"] is not None]
            rep = [x["replay_ms"] for x in reach if x["replay_ms"] is not None]
            codes = {}
            for x in reach:
                codes[x["code"]] = codes.get(x["code"], 0) + 1
            # The session must end. psycopg2 reports a session ended by a FATAL
            # as "server closed the connection unexpectedly", without the
            # FATAL's SQLSTATE; R's server log (log_line_prefix with %e) says
            # what the server sent. Any other error, or a session still
            # working after 10 s, fails.
            ended = [x for x in reach if x["cut_ms"] is not None and
                     (x["code"] == "57P01" or (x["code"] is None and "closed the connection" in (x["error"] or "")))]
            logged = [x for x in reach if x.get("log_code") == "57P01"]
            have_log = bool(self.a.r_log)
            all_cut = len(ended) == len(reach) and (not have_log or len(logged) == len(reach))
            self.add("6. revocation reach: an open replica session cannot complete a statement once the revoke "
                     "on the primary is replayed (its session ends with FATAL 57P01)", f"every try ({len(reach)})",
                     f"{len(ended)} of {len(reach)} ended (client side: SQLSTATE 57P01 {codes.get('57P01', 0)}, "
                     f"connection closed without a SQLSTATE {codes.get(None, 0)}, other "
                     f"{sum(v for k, v in codes.items() if k not in ('57P01', None))}"
                     + (f"; R's log: FATAL 57P01 for {len(logged)} of {len(reach)}" if have_log else "") + ")",
                     all_cut)
            if cut:
                self.add("6. revocation reach: commit on the primary → failure on the replica", "(time)",
                         f"median {median(cut):.1f} ms, max {max(cut):.1f} ms (n={len(cut)})", None)
            if rep:
                self.add("6. the replica's replay lag of the same commits", "(time)",
                         f"median {median(rep):.1f} ms, max {max(rep):.1f} ms (n={len(rep)})", None)
            D.append("### 6. Revocation reach (primary A, streaming replica R)\n")
            D.append("Per try: `generate` on A (untimed), wait until R has replayed it, log in on R and read "
                     "`public.orders`; then `revoke` on A. From the moment the revoke's autocommit returns, one "
                     "thread runs `SELECT 1` in the R session until it fails, another polls R's "
                     "`pg_last_wal_replay_lsn()` until it reaches `pg_current_wal_lsn()` read on A right after "
                     "the commit (an upper bound for the commit record). Times in ms after the commit.\n")
            D.append("psycopg2 reports a session ended by a FATAL as \"server closed the connection unexpectedly\" "
                     "without the FATAL's SQLSTATE; the last column is what R's server log says it sent that "
                     "session.\n")
            D.append("| try | replayed | session failed | statements completed after the commit | client SQLSTATE | "
                     "client error | R's log |")
            D.append("| --- | --- | --- | --- | --- | --- | --- |")
            for i, x in enumerate(reach):
                f = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
                err = (x["error"] or "").replace("|", "/")[:160]
                lg = f"{x.get('log_code')} {x.get('log_msg') or ''}".replace("|", "/")[:120]
                D.append(f"| {i + 1} | {f(x['replay_ms'])} | {f(x['cut_ms'])} | {x['statements']} | {x['code']} | "
                         f"{err} | {lg} |")
            D.append("")
        def sec_conc():
            # 7
            for mode, label in (("distinct", "8 clients, distinct orgs"), ("race", "8 clients racing on one (org, label)")):
                c = conc[mode]
                other = {k: v for k, v in c["errors"].items() if k != "23505"}
                if mode == "distinct":
                    ok = not c["errors"] and c["records"] == c["ok"] == c["complete"]
                    check = f"{c['records']} records, {c['complete']} active LOGIN roles in the reader group"
                else:
                    ok = not other and c["records"] == c["orgs"] == c["ok"] == c["complete"]
                    check = (f"{c['rounds']} races, {c['ok']} won, {c['records']} records for {c['orgs']} "
                             f"(org, label) pairs, {c['complete']} complete")
                self.add(f"7. `generate`, {label}", "errors other than 23505: 0",
                         f"{c['ok'] / c['elapsed']:.0f} credentials/s, p50 {c['p50']:.1f} ms, p99 {c['p99']:.1f} ms, "
                         f"{c['calls']} calls, errors {c['errors'] or 'none'}; {check}", ok)
        def sec_sync():
            # 8
            base, during = sync["base"], sync["during"]
            lk = sync["locks"]
            self.add(f"8. `CALL bi_access.sync()` over {sync['tables']} tables: application tables it holds locked at "
                     "once", "≤ 1", f"max {lk['max']} (over {lk['samples']} samples, {lk['over_one']} with more than one)",
                     lk["max"] <= 1 and lk["samples"] > 0)
            self.add("8. the application's latency during the sync vs without it", "(context)",
                     f"p99 {pct(during, 0.99):.2f} vs {pct(base, 0.99):.2f} ms "
                     f"({pct(during, 0.99) / pct(base, 0.99):.2f}×); p50 {median(during):.2f} vs {median(base):.2f} ms; "
                     f"max {max(during):.1f} vs {max(base):.1f} ms", None)
            self.add(f"8. `CALL bi_access.sync()` over {sync['tables']} new tables", "(time)",
                     f"{sync['sync_s']:.2f} s with the application running; re-run with nothing to do "
                     f"{sync['noop_s']:.2f} s; {sync['exposed']} tables exposed", None)
            D.append(f"### 8. `CALL bi_access.sync()` over {sync['tables']} tables (a fresh database on A)\n")
            D.append(f"{sync['tables']} new tables of 20 rows with `org_id`, exposed by the sync (auto_expose). The "
                     "application (app_rw, not the owner) picks a random table, alternately counts an org's rows "
                     "and inserts a row, with 2 ms between statements; a superuser session samples `pg_locks` "
                     "for the syncing backend's relation locks on tables of schema public about every "
                     "millisecond. Both run for the same span without the sync first, then during it.\n")
            D.append("| phase | statements | p50 ms | p90 ms | p99 ms | max ms |")
            D.append("| --- | --- | --- | --- | --- | --- |")
            for label, xs in (("without the sync", base), ("during the sync", during)):
                D.append(f"| {label} | {len(xs)} | {median(xs):.2f} | {pct(xs, 0.9):.2f} | {pct(xs, 0.99):.2f} | "
                         f"{max(xs):.1f} |")
            D.append(f"\nLock samples during the sync: {lk['samples']}, most at once {lk['max']}; NOTICEs saying "
                     f"a table was skipped: {sync['skipped']}.\n")

        def sec_ddl():
            # 9
            everything = [ms for xs in ddl["ms"].values() for ms in xs]
            bound = (YIELD_AFTER_S + 1) * 1000
            self.add("9. the application's `ALTER TABLE` behind a hostile credential, bi_access preloaded "
                     f"(bi_access.yield_after {YIELD_AFTER_S:g} s)", f"max ≤ {bound:.0f} ms",
                     f"p50 {median(everything):.0f} ms, max {max(everything):.0f} ms (n={len(everything)}); "
                     f"the worker cancelled {ddl['cancelled']} statements and ended {ddl['terminated']} sessions",
                     max(everything) <= bound)
            D.append("### 9. The application's DDL behind a hostile credential (P, bi_access preloaded)\n")
            D.append("Per try: a credential session on P takes ACCESS SHARE on `orders` (a `SELECT`), then sits "
                     "idle in its transaction, or runs `pg_sleep(60)` inside a savepoint, or runs "
                     "`SELECT count(*), pg_sleep(60) FROM orders`; once `pg_locks` shows its lock granted, the "
                     "application's role (`bench_app`, the table's owner) runs `ALTER TABLE orders ALTER COLUMN "
                     "status SET DEFAULT …` (ACCESS EXCLUSIVE), timed from the client until it returns. The yield "
                     "worker cancels the credential's statement once the ALTER has waited bi_access.yield_after, "
                     "and ends its session if it still holds the lock 250 ms later.\n")
            D.append("| credential | tries | p50 ms | max ms |")
            D.append("| --- | --- | --- | --- |")
            for kind, xs in ddl["ms"].items():
                D.append(f"| {kind} | {len(xs)} | {median(xs):.0f} | {max(xs):.0f} |")
            D.append("")
        def sec_idle():
            # 10
            m = median(idle["ratios"])
            self.add("10. the yield worker's cost when idle: application point lookup, worker running / paused, "
                     "same server", f"≤ {TARGET_YIELD_IDLE:.2f}",
                     f"{m:.3f} (spread {spread(idle['ratios'])}; {median(idle['running']):.3f} vs "
                     f"{median(idle['paused']):.3f} ms)", m <= TARGET_YIELD_IDLE)
            D.append("### 10. The yield worker when no credential is connected (P)\n")
            D.append("The application's role runs `SELECT * FROM orders WHERE id = …` (a random primary key of "
                     "100,000 rows) on four sessions, two per side. Each cycle runs the same statement on one "
                     "side's two sessions, then on the other's, the side that goes first alternating; before the "
                     "`paused` side the driver sends the yield worker SIGSTOP, before the `running` side SIGCONT, "
                     "then waits 2 ms (all outside the timed span), so both sides run on the same server side by "
                     f"side. {self.a.rounds} rounds of {self.a.seconds:g} s; a round's figure is the median "
                     "latency per side, its ratio running / paused.\n")
            D.append(f"- per-round ratios: {', '.join(f'{x:.3f}' for x in idle['ratios'])}")
            D.append(f"- statements per side per round: {min(idle['n'])}–{max(idle['n'])}")
            D.append(f"- credential sessions on P during the measurement: {idle['credentials']}")
            D.append(f"- CPU time the yield worker used over the whole measurement: {idle['worker_cpu_ms']:.0f} ms")
            D.append("")

        def sec_usage_statement():
            # 11
            m = median(ustmt["ratios"])
            self.add("11. the usage counters' cost per statement: credential point lookup, counted / uncounted "
                     "session, same server", f"≤ {TARGET_USAGE_STATEMENT:.2f}",
                     f"{m:.3f} (spread {spread(ustmt['ratios'])}; {median(ustmt['on']):.3f} vs "
                     f"{median(ustmt['off']):.3f} ms)", m <= TARGET_USAGE_STATEMENT)
            D.append("### 11. The usage counters per statement (P)\n")
            D.append("P counts at most two credentials (`bi_access.usage_max_credentials = 2`): item 9's "
                     "credential and `counted` take both entries, so `uncounted` (same org) logs in without one "
                     "and its statements count nothing; `counted`'s each add to its entry. Four sessions, two "
                     "per side, run `SELECT * FROM orders WHERE id = …` (a random row of org 7) in lockstep; "
                     "a round's figure is the median latency per side, its ratio counted / uncounted.\n")
            D.append(f"- per-round ratios: {', '.join(f'{x:.3f}' for x in ustmt['ratios'])}")
            D.append(f"- statements per side per round: {min(ustmt['n'])}–{max(ustmt['n'])}")
            D.append(f"- statements bi_access.usage counted for `counted` meanwhile: {ustmt['counted']}")
            D.append("")

        def sec_usage_login():
            # 12
            lr = median(ulogin["ratios"])
            mc, mp = median(ulogin["cred"]), median(ulogin["plain"])
            self.add("12. login with the usage counters (TCP + SCRAM + first query): credential / plain role, P",
                     f"≤ {TARGET_USAGE_LOGIN:.2f}",
                     f"{lr:.3f} (spread {spread(ulogin['ratios'])}; {mc:.2f} vs {mp:.2f} ms)",
                     lr <= TARGET_USAGE_LOGIN)
            D.append("### 12. Login with the usage counters (P)\n")
            D.append("As item 5, on P (bi_access preloaded): the credential's login finds its usage entry and "
                     "counts the login and the open session; `bench_app` is a plain login role.\n")
            D.append(f"- per-round ratios: {', '.join(f'{x:.3f}' for x in ulogin['ratios'])}")
            D.append(f"- credential: median {mc:.2f} ms, n={len(ulogin['cred'])}; plain role: median {mp:.2f} ms, "
                     f"n={len(ulogin['plain'])}")
            D.append(f"- logins bi_access.usage counted for the credential meanwhile: {ulogin['counted']}")
            D.append("")

        sections = [("1–3. queries", sec_q, q), ("4. generate", sec_gen, gen), ("5. login", sec_login, login),
                    ("5b. login, allowlist", sec_login_nets, login_nets),
                    ("6. revocation reach", sec_reach, reach), ("7. concurrency", sec_conc, conc),
                    ("8. sync", sec_sync, sync), ("9. DDL wait", sec_ddl, ddl),
                    ("10. yield worker, idle", sec_idle, idle),
                    ("11. usage, statement", sec_usage_statement, ustmt),
                    ("12. usage, login", sec_usage_login, ulogin)]
        for label, fn, data in sections:
            err = self.errors.get(label)
            if data is None or err:
                self.add(f"{label}: the measurement ran", "no error", f"error: {err}", False)
                continue
            try:
                fn()
            except Exception as e:  # a broken report section must not hide the others
                self.add(f"{label}: the report", "no error", f"error: {e!r}"[:300], False)


        # ---- write ------------------------------------------------------
        info = self.info
        clean = info.get("build_clean") == "1"
        missed = [r for r in self.rows if r[3] is False]
        total = time.time() - int(info.get("start_epoch", time.time()))
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        title = "# bi_access benchmark results"
        if not clean:
            why = []
            if info.get("bench_dirty"):
                why.append(f"uncommitted changes to {info['bench_dirty'].strip()}")
            why.append(f"build: {info.get('build_desc')}")
            title += " — dirty (" + "; ".join(why) + ")"
        if self.quick:
            title += " — BENCH_QUICK (smaller data set; not the issue's configuration)"
        table = ["| metric | target | measured | verdict |", "| --- | --- | --- | --- |"]
        for m, t, v, ok in self.rows:
            table.append(f"| {m} | {t} | {v} | {'' if ok is None else ('MET' if ok else '**MISSED**')} |")
        sets = "; ".join(f"{c}: " + ", ".join(f"{k} {v}" for k, v in s.items()) for c, s in self.settings.items())
        md = [
            title,
            "",
            f"Produced by `make bench` (`bash bench/run.sh`, BENCH_SECONDS={self.a.seconds:g}, "
            f"BENCH_ROUNDS={self.a.rounds}{', BENCH_QUICK=1' if self.quick else ''}) on {now}, in "
            f"{total / 60:.1f} min (build {info.get('build_seconds')} s, set-up {info.get('setup_seconds')} s "
            f"with {'cached' if info.get('cached') == 'yes' else 'freshly built'} clusters, measurements "
            f"{measure_seconds:.0f} s). How to read it: [README](README.md).",
            "",
            f"- Build: release profile (`cargo pgrx package`, lto = fat) of {info.get('build_desc')}; "
            f"bench/ {'has uncommitted changes: ' + info['bench_dirty'] if info.get('bench_dirty') else 'as committed'}; "
            f"`bi_access.so` sha256 `{info.get('so_sha')}…`.",
            f"- Machine: {self.machine_long}. Load average at the start {self.load_start}, at the end "
            f"{os.getloadavg()[0]:.1f}.",
            f"- Servers (as read from each): {sets}.",
            "- bi_access settings on A: " + ", ".join(f"`{k}` = `{v}`" for k, v in self.bi_settings) + ".",
            f"- Data set: `orders` {int(info['orders_rows']):,} rows over 1,000 orgs (bigint `org_id`, indexed), "
            f"`order_items` {int(info['items_rows']):,} rows, {info['small_tables']} small tables; "
            f"{info['exposed_tables']} exposed tables. Twins of `orders` and `order_items` in `plain` (never "
            "exposed) and `rls` (one hand-written policy). The 10 measured credentials were generated with "
            f"`connection_limit => -1`; cluster B holds {nb} credentials ({info.get('fill_count')} of them "
            f"generated in transactions of 1,000 in {info.get('fill_seconds')} s, during the one-off build "
            "of the cached cluster, with fsync off; it was then shut down cleanly, synced, and is measured "
            "durable).",
            "",
            "\n".join(table),
            "",
            (f"Missed: {len(missed)} of {sum(1 for r in self.rows if r[3] is not None)} targets: "
             + "; ".join(r[0] for r in missed) + "." if missed else
             f"All {sum(1 for r in self.rows if r[3] is not None)} targets met."),
            "",
            "## How it was measured",
            "",
            "- Items 1–3: a Python/psycopg2 driver keeps two sessions per side (new ones every round) and runs "
            "the same statement on each session in turn, in a fresh random order every cycle, for "
            f"{self.a.seconds:g} s per query per round, {self.a.rounds} rounds. Statements go as simple-protocol "
            "text (parsed and planned every time); the point lookup picks a random primary key of the org's "
            "rows. Round r uses credential r mod 10 (orgs 7, 107, ..., 907); the owner filters the same org, "
            "and the twins' policy is recreated with that org key before the round. A side's figure in a "
            "round is its median latency (client side, round trip included); a ratio is taken per round; "
            "the tables give the median of the per-round ratios and their min–max spread.",
            "",
            "## Details",
            "",
            "\n".join(D),
            "",
            f"## Plans (EXPLAIN ANALYZE, BUFFERS, VERBOSE; cluster A, org {self.creds[0][0]})",
            "",
            "<details><summary>plans</summary>",
            "",
            "\n".join(plans),
            "</details>",
            "",
        ]
        os.makedirs(os.path.dirname(os.path.abspath(self.a.results)), exist_ok=True)
        with open(self.a.results, "w") as f:
            f.write("\n".join(md))
        print()
        for m, t, v, ok in self.rows:
            print(f"{'' if ok is None else ('MET    ' if ok else 'MISSED ')}{'context' if ok is None else ''}"
                  f"{'' if ok is not None else '  '}| {m} | target {t} | {v}")
        print()
        if missed:
            print(f"MISSED {len(missed)} target(s):")
            for r in missed:
                print(f"  - {r[0]}: {r[2]} (target {r[1]})")
        else:
            print("every target MET")
        if not clean:
            print("results are DIRTY: " + title)
        return 1 if missed else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--port-a", type=int, required=True)
    ap.add_argument("--port-b", type=int, required=True)
    ap.add_argument("--port-r", type=int, required=True)
    ap.add_argument("--port-p", type=int, required=True)
    ap.add_argument("--p-credential", required=True, help="username<TAB>password of P's credential")
    ap.add_argument("--p-usage", required=True,
                    help="two lines username<TAB>password: P's counted and uncounted credentials (items 11, 12)")
    ap.add_argument("--credentials", required=True)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--r-log", default=None, help="the replica's server log (item 6)")
    ap.add_argument("--results", required=True)
    ap.add_argument("--info", action="append", default=[])
    args = ap.parse_args()
    sys.exit(Bench(args).run())


if __name__ == "__main__":
    main()
