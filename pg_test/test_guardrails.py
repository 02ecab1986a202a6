"""Property 3, bounded: guardrails no credential session can lift, and
connection limits that keep one org from exhausting a server. Each path on
the primary and on the replica (many orgs share one replica)."""

from __future__ import annotations

import os
import subprocess
import time

import psycopg2
import pytest

from bi import PLAIN_PASSWORD, PLAIN_ROLE, login
from cluster import COMMON_SETTINGS, PG_MAJOR, pg_tool, wait_until
from libpq import login_state
from probe import PERMISSION_DENIED, bi_settings, session

ORG_A, ORG_B = "901", "902"
TOO_MANY_CONNECTIONS = "53300"
QUERY_CANCELED = "57014"

# setting -> (a value above its cap, what SHOW says at the default caps)
RAISES = {
    "statement_timeout": ("0", "5min"),
    "idle_in_transaction_session_timeout": ("0", "1min"),
    "idle_session_timeout": ("0", "30min"),
    "work_mem": ("4GB", "4MB"),
    "maintenance_work_mem": ("4GB", "64MB"),
    "temp_buffers": ("1GB", "8MB"),
    # Its built-in default went from 1 to 2 in PostgreSQL 15.
    "hash_mem_multiplier": ("10", "2" if PG_MAJOR >= 15 else "1"),
    "max_parallel_workers_per_gather": ("8", "2"),
}


@pytest.fixture(scope="module")
def cred(bi):
    return bi.generate(ORG_A)


@pytest.fixture
def sess(cred, server):
    with session(cred, server) as s:
        yield s


@pytest.mark.parametrize("setting", list(RAISES))
def test_a_raise_by_set_is_refused_and_the_value_stays(sess, setting):
    raised, default = RAISES[setting]
    outcome = sess.run(f"SET {setting} = '{raised}'")
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert sess.value(f"SHOW {setting}") == default


@pytest.mark.parametrize("how", ["set_config", "set_config local", "SET LOCAL"])
def test_a_raise_by_any_other_path_is_refused(sess, how):
    sql = {"set_config": "SELECT set_config('statement_timeout', '0', false)",
           "set_config local": "SELECT set_config('statement_timeout', '0', true)",
           "SET LOCAL": "SET LOCAL statement_timeout = 0"}[how]
    outcome = sess.run(sql)
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert sess.value("SHOW statement_timeout") == "5min"


def test_a_lower_value_is_accepted_and_reset_returns_to_the_cap(sess):
    sess.rows("SET statement_timeout = '2s'")
    assert sess.value("SHOW statement_timeout") == "2s"
    sess.rows("RESET statement_timeout")
    assert sess.value("SHOW statement_timeout") == "5min"
    sess.rows("RESET ALL")
    assert sess.value("SHOW statement_timeout") == "5min"


def test_temp_file_limit_applies_and_cannot_be_set(sess):
    # The servers' bi_access.temp_file_limit (cluster.py; the default, 1GB,
    # is src/tests' and README's).
    assert sess.value("SHOW temp_file_limit") == COMMON_SETTINGS["bi_access.temp_file_limit"] == "64MB"
    outcome = sess.run("SET temp_file_limit = -1")
    assert outcome.state == PERMISSION_DENIED, str(outcome)  # superuser-only in PostgreSQL itself


def test_a_function_set_clause_cannot_raise(pair, bi, saas_db, cred, server):
    """A function the DBA made callable by PUBLIC whose SET clause lifts the
    timeout: calling it is refused instead of running unbounded."""
    pair.primary.sql("CREATE OR REPLACE FUNCTION public.lifted() RETURNS int LANGUAGE sql "
                     "SET statement_timeout = 0 AS 'SELECT 1'", dbname=saas_db.dbname)
    pair.wait_replayed()
    with session(cred, server) as s:
        outcome = s.run("SELECT public.lifted()")
        assert outcome.state == PERMISSION_DENIED, str(outcome)


def test_startup_options_are_clamped_with_a_warning(cred, server):
    """PGOPTIONS, as psql sends them (psycopg2 drops notices that arrive
    before the connection is made)."""
    args = cred.login_args(server)
    proc = subprocess.run(
        [pg_tool("psql"), "-X", "-At", "-h", args["host"], "-p", str(args["port"]), "-U", args["user"],
         "-d", args["dbname"], "-c", "SHOW statement_timeout", "-c", "SHOW idle_in_transaction_session_timeout",
         "-c", "SHOW work_mem"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PGPASSWORD": args["password"],
             "PGOPTIONS": "-c statement_timeout=0 -c idle_in_transaction_session_timeout=0 -c work_mem=4GB"})
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING:  bi_access:")]
    assert len(warnings) == 3, proc.stderr
    assert proc.stdout.split() == ["5min", "1min", "64MB"]


def test_a_statement_past_the_cap_is_cut_whatever_the_session_set(pair, cred, server):
    with bi_settings(pair, statement_timeout="1s"):
        with session(cred, server) as s:
            assert s.run("SET statement_timeout = 0").state == PERMISSION_DENIED
            started = time.monotonic()
            outcome = s.run("SELECT pg_sleep(5)")
            assert outcome.state == QUERY_CANCELED, str(outcome)
            assert time.monotonic() - started < 3


def test_a_lowered_cap_applies_to_an_open_session_from_its_next_statement(pair, cred, server):
    with session(cred, server) as s:
        assert s.value("SHOW statement_timeout") == "5min"
        with bi_settings(pair, statement_timeout="1s"):
            started = time.monotonic()
            outcome = s.run("SELECT pg_sleep(4)")
            assert outcome.state == QUERY_CANCELED, str(outcome)
            assert time.monotonic() - started < 3
            assert s.value("SHOW statement_timeout") == "1s"


def test_an_idle_transaction_is_ended_and_releases_its_locks(pair, bi, saas_db, cred):
    table = saas_db.tables[0].name
    with bi_settings(pair, idle_in_transaction_session_timeout="1s"):
        conn = login(cred.login_args(pair.primary))
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {table}")  # holds ACCESS SHARE
            time.sleep(2)
            # The owner's DDL does not queue behind it.
            owner = pair.primary.connect(saas_db.dbname)
            owner.autocommit = False
            try:
                with owner.cursor() as cur:
                    cur.execute("SET lock_timeout = '500ms'")
                    cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            finally:
                owner.close()
            with pytest.raises(psycopg2.OperationalError):
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
        finally:
            conn.close()


# --------------------------------------------------------------------------
# connection limits

def open_sessions(cred, server, count: int) -> list:
    return [login(cred.login_args(server)) for _ in range(count)]


def first_statement(cred, server) -> str:
    """'ok', or the SQLSTATE of the FATAL a new session gets at login (the
    login gate) or at its first statement (psycopg2 loses a FATAL's SQLSTATE
    once the server closes the connection; libpq keeps it)."""
    return login_state(cred.login_args(server))


def neighbours_connect(pair, bi, server) -> None:
    """Another org's credential and the application still connect and query."""
    other = bi.generate(ORG_B)
    assert first_statement(other, server) == "ok"
    app = psycopg2.connect(**server.tcp_args(bi.dbname, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        with app.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        app.close()
    bi.one("delete", other.role)


def close_all(conns) -> None:
    for conn in conns:
        conn.close()


def test_a_credential_has_a_connection_limit_by_default(pair, bi, server):
    cred = bi.generate(ORG_A)
    assert bi.record(cred.role)["connection_limit"] == 5
    conns = open_sessions(cred, server, 5)
    try:
        with pytest.raises(psycopg2.OperationalError) as info:
            login(cred.login_args(server))
        assert "too many connections for role" in str(info.value)
        neighbours_connect(pair, bi, server)
    finally:
        close_all(conns)
        bi.one("delete", cred.role)


def test_an_org_stops_at_its_org_connection_limit(pair, bi, server):
    creds = [bi.generate(ORG_A) for _ in range(2)]
    with bi_settings(pair, org_connection_limit="3"):
        conns = open_sessions(creds[0], server, 2) + open_sessions(creds[1], server, 1)
        try:
            for c in conns:
                with c.cursor() as cur:
                    cur.execute("SELECT 1")
            assert first_statement(creds[1], server) == TOO_MANY_CONNECTIONS
            neighbours_connect(pair, bi, server)
        finally:
            close_all(conns)
    for cred in creds:
        bi.one("delete", cred.role)


def test_all_credentials_stop_at_max_bi_connections(pair, bi, server):
    creds = [bi.generate(org) for org in ("911", "912", "913")]
    with bi_settings(pair, max_bi_connections="3"):
        conns = [login(c.login_args(server)) for c in creds]
        try:
            for c in conns:
                with c.cursor() as cur:
                    cur.execute("SELECT 1")
            fourth = bi.generate("914")
            assert first_statement(fourth, server) == TOO_MANY_CONNECTIONS
            app = psycopg2.connect(**server.tcp_args(bi.dbname, PLAIN_ROLE, PLAIN_PASSWORD))
            app.close()
        finally:
            close_all(conns)
    wait_until(lambda: first_statement(creds[0], server) == "ok", 10, "a slot to free up")
    for cred in [*creds, fourth]:
        bi.one("delete", cred.role)


def test_ended_sessions_free_their_slots(pair, bi, server):
    """The server's BI sessions are counted from PostgreSQL's proc array,
    whose free entries keep the pid and role of the session that ended:
    after many credential sessions have come and gone, max_bi_connections
    still admits exactly that many."""
    creds = [bi.generate(org) for org in ("921", "922", "923")]
    for _ in range(4):
        close_all([login(c.login_args(server)) for c in creds])
    with bi_settings(pair, max_bi_connections="3"):
        conns = [login(c.login_args(server)) for c in creds]
        try:
            outcomes = []
            for c in conns:
                with c.cursor() as cur:
                    cur.execute("SELECT 1")
                    outcomes.append(cur.fetchall())
            assert outcomes == [[(1,)]] * 3
            assert first_statement(creds[0], server) == TOO_MANY_CONNECTIONS
        finally:
            close_all(conns)
    for cred in creds:
        bi.one("delete", cred.role)


def test_a_database_setting_above_a_cap_is_lowered_at_login(pair, bi, cred, server):
    """A careless ALTER DATABASE … SET work_mem applies to every role of the
    database; in a credential session it is lowered to the cap."""
    pair.primary.sql(f"ALTER DATABASE {bi.dbname} SET work_mem = '1GB'")
    pair.wait_replayed()
    try:
        with session(cred, server) as s:
            assert s.value("SHOW work_mem") == "64MB"
    finally:
        pair.primary.sql(f"ALTER DATABASE {bi.dbname} RESET work_mem")
        pair.wait_replayed()
