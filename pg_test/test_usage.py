"""Issue 29, usage and last login on every server: each credential's
counters on each server since it started (`bi_access.usage`,
`credentials.last_login_at`, check()'s stale credentials), kept in
bi_access's shared segment, so only where bi_access is preloaded
(BI_PRELOAD=1 runs the counting tests). A login writes no table, so the
replica counts its own logins: a login there moves only the replica's
counters. Without the preload the view is empty and check() says why.
"""

from __future__ import annotations

import time

import psycopg2
import pytest

from bi import Credential, login
from cluster import PRELOADED, Server, wait_until
from probe import Session, bi_for, tenant_database

DB = "usage_db"
# 30 rows, 10 of each org 1, 2, 3.
SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, org_id int NOT NULL, v int NOT NULL);
INSERT INTO items SELECT i, 1 + i % 3, i FROM generate_series(1, 30) i;
"""
ORG_ROWS = 10
COLUMNS = ("sessions_now", "logins", "refused_logins", "last_login_at", "statements",
           "rows_returned", "cancelled", "refused_limits", "refused_networks", "refused_revocation")
ZERO = {"sessions_now": 0, "logins": 0, "refused_logins": 0, "last_login_at": None, "statements": 0,
        "rows_returned": 0, "cancelled": 0, "refused_limits": 0, "refused_networks": 0,
        "refused_revocation": 0}

needs_preload = pytest.mark.skipif(not PRELOADED, reason="the usage counters need the preload (BI_PRELOAD=1)")


@pytest.fixture(scope="module")
def ubi(request, pair, bi, secrets):
    # `bi` creates the application's admin role (roles are cluster-wide).
    tenant_database(pair, DB, SCHEMA, "SELECT * FROM bi_access.sync_tables();")
    return bi_for(request, pair, DB, secrets)


def usage(server: Server, role: str) -> dict:
    """The role's row of bi_access.usage on `server`, as a superuser reads
    it there; ZERO when it has none (no login counted since the start)."""
    rows = server.sql(f"SELECT {', '.join(COLUMNS)} FROM bi_access.usage WHERE role_name = %s",
                      (role,), dbname=DB)
    assert len(rows) <= 1, rows
    return dict(zip(COLUMNS, rows[0])) if rows else dict(ZERO)


def last_login_in_credentials(server: Server, role: str):
    return server.value("SELECT last_login_at FROM bi_access.credentials WHERE role_name = %s",
                        (role,), dbname=DB)


def wait_closed(server: Server, role: str) -> None:
    """A backend ends a moment after its client disconnects."""
    wait_until(lambda: usage(server, role)["sessions_now"] == 0, 10, f"{role}'s sessions to end")


def refused(cred: Credential, server: Server) -> str:
    with pytest.raises(psycopg2.OperationalError) as info:
        login(cred.login_args(server)).close()
    return str(info.value)


class _session:
    """A credential's Session, closed at the end of the block."""

    def __init__(self, cred: Credential, server: Server):
        self.s = Session.of(cred, server)

    def __enter__(self) -> Session:
        return self.s

    def __exit__(self, *_):
        self.s.close()


def test_usage_view_exists_for_every_mode(ubi):
    """The view is there whether preloaded or not, with DESIGN's columns first."""
    columns = [r["column_name"] for r in ubi.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'bi_access' "
        "AND table_name = 'usage' ORDER BY ordinal_position")]
    assert columns == ["role_name", "org_id", "sessions_now", "logins", "refused_logins", "last_login_at",
                       "statements", "rows_returned", "cancelled", "refused_limits", "refused_networks",
                       "refused_revocation"]
    last = ubi.query("SELECT column_name FROM information_schema.columns WHERE table_schema = 'bi_access' "
                     "AND table_name = 'credentials' ORDER BY ordinal_position DESC LIMIT 1")
    assert last == [{"column_name": "last_login_at"}]


@needs_preload
@pytest.mark.parametrize("first", ["replica", "primary"])
def test_logins_and_statements_are_counted_per_server(pair, ubi, first):
    """Each server counts its own: logins, open sessions, top-level
    statements and the rows they returned, exactly; the other server's
    counters do not move."""
    cred = ubi.generate("1")
    here: Server = getattr(pair, first)
    other: Server = pair.primary if first == "replica" else pair.replica
    assert usage(here, cred.role) == ZERO
    with _session(cred, here) as s:
        for _ in range(3):
            assert len(s.rows("SELECT id FROM items")) == ORG_ROWS
        assert s.rows("SELECT count(*) FROM items") == [(ORG_ROWS,)]
        now = usage(here, cred.role)
        assert (now["sessions_now"], now["logins"], now["statements"], now["rows_returned"]) == \
            (1, 1, 4, 3 * ORG_ROWS + 1), now
    wait_closed(here, cred.role)
    after = usage(here, cred.role)
    assert (after["logins"], after["statements"], after["rows_returned"], after["refused_logins"]) == \
        (1, 4, 3 * ORG_ROWS + 1, 0), after
    assert usage(other, cred.role) == ZERO
    assert last_login_in_credentials(other, cred.role) is None
    # The second server counts its own login only.
    with _session(cred, other) as s:
        s.rows("SELECT id FROM items WHERE id = 3")
    wait_closed(other, cred.role)
    theirs = usage(other, cred.role)
    assert (theirs["logins"], theirs["statements"], theirs["rows_returned"]) == (1, 1, 1), theirs
    assert usage(here, cred.role) == after


@needs_preload
@pytest.mark.parametrize("where", ["primary", "replica"])
def test_last_login_moves(pair, ubi, where):
    """last_login_at is the latest login on this server, in the usage view
    and in the credentials view alike."""
    server: Server = getattr(pair, where)
    cred = ubi.generate("2")
    before = server.value("SELECT clock_timestamp()")
    with _session(cred, server):
        pass
    first = usage(server, cred.role)["last_login_at"]
    assert first is not None and first >= before
    assert last_login_in_credentials(server, cred.role) == first
    time.sleep(0.05)
    with _session(cred, server):
        pass
    second = usage(server, cred.role)["last_login_at"]
    assert second > first
    assert last_login_in_credentials(server, cred.role) == second
    assert usage(server, cred.role)["logins"] == 2


@needs_preload
def test_refused_logins_are_counted_by_cause(pair, ubi):
    """Over the org's connection limit (the login gate's FATAL) and over the
    credential's own CONNECTION LIMIT (PostgreSQL's), both `limits`; a
    refused login is not a login."""
    own = ubi.generate("7", connection_limit=1)
    with _session(own, pair.primary):
        assert "too many connections for role" in refused(own, pair.primary)
    wait_closed(pair.primary, own.role)
    counted = usage(pair.primary, own.role)
    assert (counted["logins"], counted["refused_logins"], counted["refused_limits"]) == (1, 1, 1), counted

    org = ubi.generate("8", connection_limit=5)
    pair.primary.sql(f"ALTER DATABASE {DB} SET bi_access.org_connection_limit = 1")
    try:
        pair.wait_replayed()
        with _session(org, pair.primary):
            said = refused(org, pair.primary)
            assert "too many connections for this organization" in said, said
            assert "too many connections for this organization" in refused(org, pair.primary)
    finally:
        pair.primary.sql(f"ALTER DATABASE {DB} RESET bi_access.org_connection_limit")
    wait_closed(pair.primary, org.role)
    counted = usage(pair.primary, org.role)
    assert (counted["logins"], counted["refused_logins"], counted["refused_limits"],
            counted["refused_revocation"]) == (1, 2, 2, 0), counted
    assert usage(pair.replica, org.role) == ZERO


@needs_preload
@pytest.mark.parametrize("where", ["primary", "replica"])
def test_a_login_from_outside_the_allowlist_is_counted_as_networks(pair, ubi, where):
    """The login gate's FATAL for an address outside the credential's list
    (test_networks.py) counts as `networks` on the server that refused it,
    and not as a login; the other server's counters stay still."""
    server: Server = getattr(pair, where)
    other: Server = pair.replica if where == "primary" else pair.primary
    cred = ubi.generate("5", allowed_networks="{10.0.0.0/8}")
    pair.wait_replayed()
    said = refused(cred, server)
    assert "may not log in from this address" in said, said
    counted = usage(server, cred.role)
    assert (counted["logins"], counted["refused_logins"], counted["refused_networks"],
            counted["refused_limits"], counted["refused_revocation"]) == (0, 1, 1, 0, 0), counted
    assert usage(other, cred.role) == ZERO


@needs_preload
@pytest.mark.parametrize("where", ["primary", "replica"])
def test_a_revoked_credentials_refused_logins_are_counted(pair, ubi, where):
    """PostgreSQL itself refuses a revoked (NOLOGIN) role: counted as
    `revocation` for a role that logged in on this server since it started."""
    server: Server = getattr(pair, where)
    cred = ubi.generate("4")
    with _session(cred, server):
        pass
    ubi.call("revoke", cred.role)
    pair.wait_replayed()
    said = refused(cred, server)
    assert "not permitted to log in" in said, said
    counted = usage(server, cred.role)
    assert (counted["logins"], counted["refused_logins"], counted["refused_revocation"],
            counted["refused_limits"]) == (1, 1, 1, 0), counted


@needs_preload
def test_cancelled_statements_are_counted(pair, ubi):
    """A statement cancelled by a timeout counts (its session goes on), and
    so does a session a timeout ends."""
    cred = ubi.generate("3")
    with _session(cred, pair.replica) as s:
        s.rows("SET statement_timeout = '100ms'")
        assert s.run("SELECT pg_sleep(2)").state == "57014"
        assert s.rows("SELECT 1") == [(1,)]
    wait_closed(pair.replica, cred.role)
    counted = usage(pair.replica, cred.role)
    assert (counted["cancelled"], counted["statements"]) == (1, 2), counted
    # A session ended by a timeout counts too.
    with _session(cred, pair.replica) as s:
        s.rows("SET idle_in_transaction_session_timeout = '100ms'")
        s.rows("BEGIN")
        s.rows("SELECT 1")
        time.sleep(0.5)
        assert not s.run("SELECT 1").ok
    wait_closed(pair.replica, cred.role)
    counted = usage(pair.replica, cred.role)
    assert (counted["cancelled"], counted["statements"], counted["logins"]) == (2, 3, 2), counted


def stale(server: Server, stale_after: str) -> dict[str, tuple]:
    """check()'s stale-credential findings on `server`, by object."""
    conn = server.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SET bi_access.stale_after = %s", (stale_after,))
            cur.execute("SELECT object, severity, finding, fix FROM bi_access.check() "
                        "WHERE finding LIKE '%%bi_access.stale_after%%' AND object LIKE 'credential %%'")
            return {r[0]: r[1:] for r in cur.fetchall()}
    finally:
        conn.close()


@needs_preload
def test_check_names_stale_credentials(pair, ubi):
    """A current credential without a login on this server for
    bi_access.stale_after is named, with when the counters started; a login
    takes it off the list; the default (90 days) names none here."""
    cred = ubi.generate("9")
    time.sleep(1.2)  # older than stale_after = 1s, as the server is
    found = stale(pair.primary, "1s")
    severity, finding, fix = found[f"credential {cred.role}"]
    assert severity == "warning"
    started = pair.primary.value("SELECT pg_postmaster_start_time()::text")
    assert finding == ("a current credential without a login on this server for bi_access.stale_after (1s); "
                       f"the usage counters started with the server at {started}"), finding
    assert fix.startswith(f"SELECT bi_access.revoke('{cred.role}');"), fix
    with _session(cred, pair.primary):
        pass
    assert f"credential {cred.role}" not in stale(pair.primary, "1s")
    assert stale(pair.primary, "90d") == {}


@pytest.mark.skipif(PRELOADED, reason="without the preload only")
def test_usage_is_empty_without_the_preload(pair, ubi):
    """No counters without the preload: the view is empty on both servers,
    last_login_at stays NULL, and check() says why."""
    cred = ubi.generate("1")
    for server in (pair.primary, pair.replica):
        with _session(cred, server) as s:
            assert len(s.rows("SELECT id FROM items")) == ORG_ROWS
        assert server.sql("SELECT count(*) FROM bi_access.usage", dbname=DB) == [(0,)]
        assert last_login_in_credentials(server, cred.role) is None
    findings = [r["finding"] for r in ubi.query(
        "SELECT finding FROM bi_access.check() WHERE object = 'setting shared_preload_libraries'")]
    assert len(findings) == 1, findings
    assert "the bi_access.usage view is empty" in findings[0], findings[0]
