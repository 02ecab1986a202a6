"""Property 13 (issue 24): no tenant exhausts the connections or the memory
that the application and the other orgs need, and no refused statement
keeps a lock. Each hostile recipe runs against the primary and the streaming
replica, and pg_test/run.sh runs this file in both load modes (bi_access
loaded by the credentials' sessions only, and preloaded by the servers).

- Connections: idle sessions (a login that never sends a statement) past a
  credential's, an org's or the server's limit are refused at login by the
  login gate (53300), a `connection_limit => -1` credential included; the
  application then still connects.
- Memory: held cursors, open cursors and prepared statements (SQL PREPARE
  and the protocol's Parse, through libpq) are refused at their caps (53400)
  and past the session's memory (53200); the backend's anonymous memory
  (RssAnon: VmRSS counts shared buffers) stays under 4 x the work_mem cap +
  64 MB after each recipe. The planner's search settings move only toward
  less work (42501), by SET or at connection (lowered with a WARNING).
- Locks: PREPARE TRANSACTION and MERGE are refused (42501) and the
  credential's backend holds no lock afterwards, in a transaction block and
  in a savepoint.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import psycopg2
import pytest

from bi import PLAIN_PASSWORD, PLAIN_ROLE, login
from cluster import PG_MAJOR, PRELOADED, pg_tool, wait_until
from libpq import OK, Connection, LoginRefused, login_state
from probe import (PERMISSION_DENIED, Outcome, Session, bi_for, bi_settings, server_settings, session,
                   tenant_database)

DB = "resources"
SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, org_id integer NOT NULL, name text NOT NULL);
INSERT INTO items SELECT g, 1 + g % 3, 'item ' || g FROM generate_series(1, 30) g;
"""
EXPOSE = "SELECT bi_access.expose_table('items');"
TOO_MANY_CONNECTIONS = "53300"
OUT_OF_MEMORY = "53200"
CONFIGURATION_LIMIT = "53400"
# The caps these tests run under: a lower work_mem cap makes every recipe
# smaller and faster; the bound is the same formula of it.
WORK_MEM_CAP_MB = 16
BOUND_KB = (4 * WORK_MEM_CAP_MB + 64) * 1024


@pytest.fixture(scope="module")
def resources(pair, bi):
    return tenant_database(pair, DB, SCHEMA, EXPOSE)


@pytest.fixture(scope="module")
def rbi(request, pair, resources, secrets):
    return bi_for(request, pair, resources, secrets)


@pytest.fixture(scope="module")
def cred(rbi):
    return rbi.generate("1")


@contextlib.contextmanager
def idle_logins(cred, server, count: int):
    """`count` sessions of `cred` that log in and never send a statement."""
    conns = []
    try:
        for _ in range(count):
            conns.append(Connection(cred.login_args(server)))
        yield conns
    finally:
        for conn in conns:
            conn.close()


def application_connects(server, dbname: str) -> None:
    app = psycopg2.connect(**server.tcp_args(dbname, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        with app.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        app.close()


def bi_sessions(server) -> int:
    """Sessions of credential roles on the server, as a superuser counts them."""
    return server.value("SELECT count(*) FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid "
                        "WHERE pg_has_role(r.oid, 'bi_access_credential', 'MEMBER') AND NOT r.rolsuper")


def wait_no_bi_sessions(server, before: int) -> None:
    """A closed connection's backend exits a moment after the client goes."""
    wait_until(lambda: bi_sessions(server) <= before, 10, "closed BI sessions to end")


# --------------------------------------------------------------------------
# connections, at login

def test_idle_sessions_past_the_credential_limit_are_refused_at_login(pair, rbi, server):
    cred = rbi.generate("1", connection_limit=2)
    before = bi_sessions(server)
    with idle_logins(cred, server, 2):
        assert login_state(cred.login_args(server)) == TOO_MANY_CONNECTIONS
        application_connects(server, rbi.dbname)
    wait_no_bi_sessions(server, before)
    rbi.one("delete", cred.role)


def test_idle_sessions_past_the_org_limit_are_refused_at_login(pair, rbi, server):
    """Three idle sessions of one org, one of them of a credential without a
    limit of its own: the org's fourth login is refused before it can send
    anything, another org's is not, and the application connects."""
    unlimited = rbi.generate("2", connection_limit=-1)
    limited = rbi.generate("2")
    other = rbi.generate("3")
    assert rbi.record(unlimited.role)["connection_limit"] == -1
    before = bi_sessions(server)
    with bi_settings(pair, org_connection_limit="3"):
        with idle_logins(unlimited, server, 2), idle_logins(limited, server, 1):
            assert login_state(unlimited.login_args(server)) == TOO_MANY_CONNECTIONS
            assert login_state(limited.login_args(server)) == TOO_MANY_CONNECTIONS
            assert login_state(other.login_args(server)) == OK
            application_connects(server, rbi.dbname)
        wait_no_bi_sessions(server, before)
        assert login_state(unlimited.login_args(server)) == OK
    for c in (unlimited, limited, other):
        rbi.one("delete", c.role)


def test_idle_sessions_past_max_bi_connections_are_refused_at_login(pair, rbi, server):
    creds = [rbi.generate(org, connection_limit=-1) for org in ("4", "5", "6")]
    before = bi_sessions(server)
    with bi_settings(pair, max_bi_connections=str(before + 3)):
        with contextlib.ExitStack() as stack:
            for c in creds:
                stack.enter_context(idle_logins(c, server, 1))
            for c in creds:
                assert login_state(c.login_args(server)) == TOO_MANY_CONNECTIONS
            application_connects(server, rbi.dbname)
        wait_no_bi_sessions(server, before)
        assert login_state(creds[0].login_args(server)) == OK
    for c in creds:
        rbi.one("delete", c.role)


def test_the_default_max_bi_connections_leaves_the_application_its_slots(pair, rbi, server):
    """At the default (-1): half of max_connections less the reserved slots
    (superuser_reserved_connections, and reserved_connections from 16): with
    every BI slot taken by idle sessions of many orgs, a BI login is refused
    and the application still connects, with slots to spare."""
    max_connections = int(server.value("SHOW max_connections"))
    reserved = int(server.value("SHOW superuser_reserved_connections"))
    if PG_MAJOR >= 16:
        reserved += int(server.value("SHOW reserved_connections"))
    default = (max_connections - reserved) // 2
    before = bi_sessions(server)
    # Five sessions per credential (its default limit), two credentials per
    # org (under the org limit of 10): enough credentials for every slot.
    needed = default - before
    creds = [rbi.generate(str(100 + i // 2)) for i in range(-(-needed // 5))]
    with contextlib.ExitStack() as stack:
        opened = 0
        for c in creds:
            take = min(5, needed - opened)
            stack.enter_context(idle_logins(c, server, take))
            opened += take
        assert bi_sessions(server) == default
        extra = rbi.generate("999")
        assert login_state(extra.login_args(server)) == TOO_MANY_CONNECTIONS
        application_connects(server, rbi.dbname)
    wait_no_bi_sessions(server, before)
    for c in [*creds, extra]:
        rbi.one("delete", c.role)


# --------------------------------------------------------------------------
# memory

def rss_anon_kb(pid: int) -> int:
    """The backend's anonymous resident memory (its own, not shared buffers)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError(f"no RssAnon for {pid}")


@pytest.fixture
def capped(pair):
    # Temporary files at the default (1GB) rather than the servers' 64MB
    # (cluster.py): what these tests drive into is the memory bound, and a
    # held cursor's result spills past work_mem into temporary files, which
    # at 64MB would stop it first (53400) at the second big cursor.
    with bi_settings(pair, work_mem=f"{WORK_MEM_CAP_MB}MB", temp_file_limit="1GB"):
        yield


@pytest.fixture
def lsess(cred, server):
    with session(cred, server) as s:
        yield s


@pytest.fixture
def rsess(cred, server, capped):
    with session(cred, server) as s:
        yield s


def declare_held(s: Session, name: str, rows: int) -> str:
    """A cursor WITH HOLD over `rows` rows of ~100 bytes, materialized at its
    COMMIT; the state of the DECLARE, or else of the COMMIT."""
    s.rows("BEGIN")
    outcome = s.run(f"DECLARE {name} CURSOR WITH HOLD FOR "
                    f"SELECT g, repeat('x', 80) FROM generate_series(1, {rows}) g")
    if not outcome.ok:
        s.run("ROLLBACK")
        return outcome.state
    return s.run("COMMIT").state


def test_held_cursors_are_capped(lsess):
    """bi_access.max_held_cursors (4): the fifth is refused at DECLARE."""
    states = [declare_held(lsess, f"small{i}", 10) for i in range(5)]
    assert states == [OK] * 4 + [CONFIGURATION_LIMIT]
    lsess.rows("CLOSE ALL")
    assert declare_held(lsess, "again", 10) == OK


def test_held_cursors_over_a_big_result_stay_within_the_memory_bound(rsess, pair):
    """The hostile recipe: WITH HOLD cursors over results bigger than
    work_mem, each keeping up to work_mem in memory. The COMMIT that would
    keep more than bi_access.session_memory (twice the cap + 32 MB) fails
    with 53200; the backend then holds less than 4 x the cap + 64 MB."""
    # An error inside a run must leave the checks in force.
    assert rsess.run("SELECT 1 / 0").state == "22012"
    with bi_settings(pair, max_held_cursors="0"):
        # The most a credential may ask for: work_mem at its cap.
        rsess.rows(f"SET work_mem = '{WORK_MEM_CAP_MB}MB'")
        states = []
        while len(states) < 12 and OUT_OF_MEMORY not in states:
            states.append(declare_held(rsess, f"big{len(states)}", 400_000))
        assert states[-1] == OUT_OF_MEMORY and states[:-1] == [OK] * (len(states) - 1), states
        assert len(states) > 1, "a held cursor over a big result fits"
        assert rss_anon_kb(rsess.pid()) < BOUND_KB
        # What it kept still reads.
        assert rsess.rows("FETCH 1 FROM big0") == [(1, "x" * 80)]


def test_open_cursors_are_capped(lsess):
    """bi_access.max_cursors (50)."""
    lsess.rows("BEGIN")
    for i in range(50):
        lsess.rows(f"DECLARE c{i} CURSOR FOR SELECT 1")
    assert _in_block(lsess, "DECLARE c50 CURSOR FOR SELECT 1").state == CONFIGURATION_LIMIT
    lsess.run("ROLLBACK")


def test_caches_past_the_memory_bound_end_the_session(cred, server, capped):
    """What CLOSE and DEALLOCATE cannot free: one statement that looks up a
    million missing OIDs keeps each negative answer in the session's catalog
    caches (about 140 MB). At the end of its run the session ends (FATAL
    53200), which gives the memory back; the next login works."""
    conn = Connection(cred.login_args(server))
    try:
        pid = conn.pid()
        state, _ = conn.exec("SELECT count(x::oid::regclass::text) FROM generate_series(100000, 1100000) x")
        assert state == OUT_OF_MEMORY, state
    finally:
        conn.close()
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the session's backend to exit")
    assert login_state(cred.login_args(server)) == OK


def big_statement(terms: int) -> str:
    return "SELECT 1 WHERE 1 IN (" + ", ".join(str(i) for i in range(terms)) + ")"


def test_prepared_statements_are_capped(pair, cred, server, capped):
    """bi_access.max_prepared_statements: PREPARE and the protocol's Parse of
    a named statement count together; an unnamed one never counts."""
    with bi_settings(pair, max_prepared_statements="5"):
        with session(cred, server) as s:
            for i in range(3):
                s.rows(f"PREPARE p{i} AS SELECT {i}")
            conn = Connection(cred.login_args(server))
            try:
                assert [conn.prepare(f"q{i}", f"SELECT {i}") for i in range(6)] == [OK] * 5 + [CONFIGURATION_LIMIT]
                assert conn.prepare("", "SELECT 1") == OK
                assert conn.exec("PREPARE p AS SELECT 1")[0] == CONFIGURATION_LIMIT
                assert conn.exec("DEALLOCATE q0")[0] == OK
                assert conn.prepare("q0", "SELECT 0") == OK
            finally:
                conn.close()
            assert [s.run(f"PREPARE p{i} AS SELECT {i}").state for i in (3, 4, 5)] == [OK, OK, CONFIGURATION_LIMIT]


@pytest.mark.parametrize("level", ["SQL PREPARE", "protocol Parse"])
def test_prepared_statements_stay_within_the_memory_bound(cred, server, capped, level):
    """The hostile recipe: many big prepared statements (a 20,000-term IN
    list each), until the session's memory refuses one (53200); the backend
    then holds less than 4 x the work_mem cap + 64 MB."""
    conn = Connection(cred.login_args(server))
    try:
        states = []
        for i in range(200):
            if level == "SQL PREPARE":
                states.append(conn.exec(f"PREPARE p{i} AS {big_statement(20_000)}")[0])
            else:
                states.append(conn.prepare(f"p{i}", big_statement(20_000)))
            if states[-1] != OK:
                break
        assert states[-1] == OUT_OF_MEMORY, states
        assert len(states) > 1
        assert rss_anon_kb(conn.pid()) < BOUND_KB
        assert conn.exec("DEALLOCATE ALL")[0] == OK
        assert conn.exec("SELECT 1")[0] == OK
    finally:
        conn.close()


# the planner's search settings

PLANNER_RAISES = {
    "join_collapse_limit": "100",
    "from_collapse_limit": "100",
    "geqo": "off",
    "geqo_threshold": "100",
    "geqo_effort": "10",
    "geqo_pool_size": "5000",
    "geqo_generations": "5000",
    "enable_partitionwise_join": "on",
    "enable_partitionwise_aggregate": "on",
    "jit_above_cost": "0",
    "jit_inline_above_cost": "0",
    "jit_optimize_above_cost": "0",
}


@pytest.fixture
def explainable(pair):
    """Plain EXPLAIN, which the session guard refuses by default (its
    estimates come from every org's statistics), allowed for the planner
    recipes: they plan without running."""
    with bi_settings(pair, allow_explain="on"):
        yield


def sixteen_way_join() -> str:
    joins = " ".join(f"JOIN items t{i} ON t{i}.id = t{i - 1}.id" for i in range(1, 16))
    return f"EXPLAIN SELECT count(*) FROM items t0 {joins}"


@pytest.mark.parametrize("setting", list(PLANNER_RAISES))
def test_the_planner_may_not_be_made_to_work_harder(lsess, setting):
    before = lsess.value(f"SHOW {setting}")
    outcome = lsess.run(f"SET {setting} = {PLANNER_RAISES[setting]}")
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert lsess.value(f"SHOW {setting}") == before
    outcome = lsess.run(f"SELECT set_config('{setting}', '{PLANNER_RAISES[setting]}', true)")
    assert outcome.state == PERMISSION_DENIED, str(outcome)


def test_the_planner_recipe_is_refused_and_the_join_plans(explainable, rsess):
    """Raise the collapse limits, turn geqo off, then EXPLAIN a 16-way join:
    each SET is refused, and the join plans as the server lets it."""
    for sql in ("SET join_collapse_limit = 100", "SET from_collapse_limit = 100", "SET geqo = off"):
        assert rsess.run(sql).state == PERMISSION_DENIED, sql
    assert rsess.run(sixteen_way_join()).ok
    assert rss_anon_kb(rsess.pid()) < BOUND_KB


def test_less_planning_work_is_accepted(explainable, lsess):
    for sql in ("SET join_collapse_limit = 1", "SET from_collapse_limit = 2", "SET geqo_threshold = 2",
                "SET jit = off", "SET jit_above_cost = -1", "SET geqo_effort = 1"):
        assert lsess.run(sql).ok, sql
    assert lsess.run(sixteen_way_join()).ok
    lsess.rows("RESET ALL")
    assert lsess.value("SHOW join_collapse_limit") == "8"


def test_jit_may_not_be_turned_on_where_the_server_has_it_off(pair, cred, server, capped):
    with server_settings(pair, jit="off"):
        with session(cred, server) as s:
            assert s.run("SET jit = on").state == PERMISSION_DENIED
            assert s.value("SHOW jit") == "off"


def psql_with_options(cred, server, options: str, *queries: str) -> subprocess.CompletedProcess:
    args = cred.login_args(server)
    argv = [pg_tool("psql"), "-X", "-At", "-h", args["host"], "-p", str(args["port"]), "-U", args["user"],
            "-d", args["dbname"]]
    for query in queries:
        argv += ["-c", query]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PGPASSWORD": args["password"], "PGOPTIONS": options})


def test_planner_settings_asked_for_at_connection_are_lowered(pair, cred, server):
    """PGOPTIONS, preloaded or not: each value is brought back to the
    server's with a WARNING; jit to the server's off from ALTER SYSTEM."""
    with server_settings(pair, jit="off"):
        proc = psql_with_options(cred, server, "-c join_collapse_limit=100 -c geqo=off -c jit=on",
                                 "SHOW join_collapse_limit", "SHOW geqo", "SHOW jit")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING:  bi_access:")]
    assert len(warnings) == 3, proc.stderr
    assert proc.stdout.split() == ["8", "on", "off"]


def test_a_startup_option_above_a_cap_is_clamped_with_a_warning(pair, cred, server):
    """The issue's recipe: statement_timeout=0 at connection under a 2 s cap,
    then a 5 s sleep. Preloaded as loaded per session, the login gate lowers
    it with a WARNING and the sleep is cut."""
    with bi_settings(pair, statement_timeout="2s"):
        proc = psql_with_options(cred, server, "-c statement_timeout=0", "SHOW statement_timeout",
                                 "SELECT pg_sleep(5)")
    assert "WARNING:  bi_access: statement_timeout = 0 asked for at connection" in proc.stderr, proc.stderr
    assert proc.stdout.split()[:1] == ["2s"], proc.stdout
    assert "canceling statement due to statement timeout" in proc.stderr, proc.stderr


def test_an_idle_session_is_ended_at_the_idle_session_cap(pair, cred, server):
    """idle_session_timeout is capped as the other timeouts are: a session
    that asked for none (0) is ended once idle for the cap."""
    with bi_settings(pair, idle_session_timeout="1s"):
        conn = login({**cred.login_args(server), "options": "-c idle_session_timeout=0"})
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW idle_session_timeout")
                assert cur.fetchone() == ("1s",)
                assert Session(conn).run("SET idle_session_timeout = 0").state == PERMISSION_DENIED
            time.sleep(2)
            with pytest.raises(psycopg2.OperationalError):
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
        finally:
            conn.close()


# --------------------------------------------------------------------------
# statements that would keep a lock

def locks_of(server, pid: int) -> list[tuple]:
    """What the backend holds, as a superuser on the same server sees it (a
    transaction's lock on its own virtual xid aside)."""
    return server.sql("SELECT locktype, relation::regclass::text, mode FROM pg_locks "
                      "WHERE pid = %s AND locktype <> 'virtualxid' ORDER BY 1, 2, 3", (pid,), dbname=DB)


MERGE = ("MERGE INTO items t USING (SELECT 1 AS id) s ON t.id = s.id "
         "WHEN NOT MATCHED THEN DO NOTHING")
needs_merge = pytest.mark.skipif(PG_MAJOR < 15, reason="MERGE is new in PostgreSQL 15")


@needs_merge
@pytest.mark.parametrize("how", ["autocommit", "transaction block", "savepoint"])
@pytest.mark.parametrize("statement", ["MERGE", "PREPARE of a MERGE", "EXPLAIN MERGE"])
def test_merge_is_refused_and_keeps_no_lock(lsess, server, how, statement):
    sql = {"MERGE": MERGE, "PREPARE of a MERGE": f"PREPARE m AS {MERGE}",
           "EXPLAIN MERGE": f"EXPLAIN {MERGE}"}[statement]
    if how != "autocommit":
        lsess.rows("BEGIN")
    if how == "savepoint":
        lsess.rows("SAVEPOINT s")
    outcome = _in_block(lsess, sql)
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert "read-only" in outcome.message, outcome.message
    pid = lsess.conn.get_backend_pid()
    assert locks_of(server, pid) == []
    if how != "autocommit":
        lsess.run("ROLLBACK")


def _in_block(s: Session, sql: str) -> Outcome:
    """A statement of an autocommit session whose block (BEGIN sent as a
    statement) stays open, aborted, after an error, for the lock check."""
    try:
        with s.conn.cursor() as cur:
            cur.execute(sql)
    except psycopg2.Error as e:
        return Outcome(sql, e.pgcode or type(e).__name__, [], [], e.pgerror or "")
    return Outcome(sql, OK)


@needs_merge
def test_the_protocols_parse_of_a_merge_is_refused_and_keeps_no_lock(cred, server):
    conn = Connection(cred.login_args(server))
    try:
        for name in ("m", ""):
            assert conn.exec("BEGIN")[0] == OK
            assert conn.prepare(name, MERGE) == PERMISSION_DENIED
            assert locks_of(server, conn.pid()) == []
            assert conn.exec("ROLLBACK")[0] == OK
    finally:
        conn.close()


@pytest.mark.parametrize("statement", ["UPDATE", "DELETE", "INSERT"])
def test_a_prepared_write_is_refused_and_keeps_no_lock(lsess, server, statement):
    """PREPARE never reaches the executor's permission check: the write is
    refused at parse analysis, before its ROW EXCLUSIVE lock can stay."""
    sql = {"UPDATE": "UPDATE items SET name = 'x'", "DELETE": "DELETE FROM items",
           "INSERT": "INSERT INTO items VALUES (100, 1, 'x')"}[statement]
    lsess.rows("BEGIN")
    outcome = _in_block(lsess, f"PREPARE w AS {sql}")
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert locks_of(server, lsess.conn.get_backend_pid()) == []
    lsess.run("ROLLBACK")


def test_prepare_transaction_is_refused_and_keeps_nothing(pair, lsess, server):
    """Where max_prepared_transactions > 0 (the harness sets 5) a prepared
    transaction would keep its locks and its xid past the session."""
    assert int(server.value("SHOW max_prepared_transactions")) > 0
    lsess.rows("BEGIN")
    lsess.rows("SELECT count(*) FROM items")
    outcome = _in_block(lsess, "PREPARE TRANSACTION 'bi_hold'")
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert locks_of(server, lsess.conn.get_backend_pid()) == []
    lsess.run("ROLLBACK")
    assert server.sql("SELECT gid FROM pg_prepared_xacts", dbname=DB) == []


def test_a_superuser_may_still_prepare_a_transaction(pair):
    """The refusal is the guard's: PREPARE TRANSACTION works on this server."""
    conn = pair.primary.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT count(*) FROM items")
            cur.execute("PREPARE TRANSACTION 'bi_superuser'")
            cur.execute("SELECT gid FROM pg_prepared_xacts")
            assert cur.fetchall() == [("bi_superuser",)]
            cur.execute("ROLLBACK PREPARED 'bi_superuser'")
    finally:
        conn.close()


@needs_merge
def test_a_read_write_credential_merges_only_into_its_custom_schema(pair, rbi):
    rbi.call("set_target", "primary", "127.0.0.1", pair.primary.port, "prefer", None)
    writer = rbi.generate("1", scope="read_write", target="primary")
    schema = writer.details["custom_schema"]
    with session(writer, pair.primary) as s:
        s.rows("SET default_transaction_read_only = off")
        s.rows(f"CREATE TABLE {schema}.mine (id integer PRIMARY KEY, n integer)")
        assert s.run(f"MERGE INTO {schema}.mine t USING (SELECT 1 AS id) s ON t.id = s.id "
                     f"WHEN NOT MATCHED THEN INSERT VALUES (s.id, 1)").ok
        assert s.value(f"SELECT count(*) FROM {schema}.mine") == 1
        s.rows("BEGIN")
        outcome = _in_block(s, MERGE)
        assert outcome.state == PERMISSION_DENIED, str(outcome)
        assert locks_of(pair.primary, s.conn.get_backend_pid()) == []
        s.run("ROLLBACK")
    rbi.one("delete", writer.role)


def test_the_login_gate_runs_preloaded_or_not(pair, cred, server):
    """Which mode this run is in, as the server says (pg_test/run.sh runs
    this file in both)."""
    preloaded = "bi_access" in server.value("SHOW shared_preload_libraries")
    assert preloaded == PRELOADED
    config = pair.primary.value("SELECT array_to_string(rolconfig, ' ') FROM pg_roles WHERE rolname = %s",
                                (cred.role,))
    assert "session_preload_libraries=bi_access, bi_access_gate" in config
    with pytest.raises(LoginRefused) as refused:
        with bi_settings(pair, org_connection_limit="1"):
            with idle_logins(cred, server, 1):
                Connection(cred.login_args(server)).close()
    assert refused.value.state == TOO_MANY_CONNECTIONS


def test_a_role_without_the_gate_is_checked_at_its_first_statement(pair, rbi, server):
    """A role that lost the gate from its session_preload_libraries (0.2.0's
    roles before the update gave it to them) gets in, and its first
    statement runs the gate's checks: past the server's limit, FATAL 53300
    there."""
    victim, other = rbi.generate("8"), rbi.generate("9")
    pair.primary.sql(f"ALTER ROLE {victim.role} SET session_preload_libraries = 'bi_access'")
    pair.wait_replayed()
    before = bi_sessions(server)
    with bi_settings(pair, max_bi_connections=str(before + 1)):
        with idle_logins(other, server, 1):
            conn = Connection(victim.login_args(server))
            try:
                assert conn.exec("SELECT 1")[0] == TOO_MANY_CONNECTIONS
            finally:
                conn.close()
    rbi.query("SELECT * FROM bi_access.sync_tables()")
    for c in (victim, other):
        rbi.one("delete", c.role)


def test_a_missing_gate_library_refuses_the_login(pair, rbi, server):
    """Fail closed: a library a credential role names at login that the
    server cannot load ends the login (58P01), never admits it; a sync gives
    the role its libraries back."""
    victim = rbi.generate("7")
    pair.primary.sql(f"ALTER ROLE {victim.role} SET session_preload_libraries = 'bi_access', 'bi_access_gone'")
    pair.wait_replayed()
    assert login_state(victim.login_args(server)) == "58P01"
    rbi.query("SELECT * FROM bi_access.sync_tables()")
    pair.wait_replayed()
    assert login_state(victim.login_args(server)) == OK
    rbi.one("delete", victim.role)
