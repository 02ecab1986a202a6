"""Property 6, revocation is real on every server: once a revoke, delete,
regenerate or expiry has been replayed on the replica, a session that logged
in there before it cannot complete another statement (FATAL 57P01), inside
an open transaction block too; on the primary the session ends at commit.
Expiry is also a status."""

from __future__ import annotations

import datetime
import os
import subprocess
import time

import psycopg2
import pytest

from bi import assert_login_refused, can_login, login
from cluster import pg_tool, wait_until

ORG = "777"
ADMIN_SHUTDOWN = "57P01"


class PsqlSession:
    """A real psql session that runs its statements one after the other
    (psycopg2 keeps a FATAL's SQLSTATE from no one: libpq replaces the result
    once the server closes the connection; psql prints both)."""

    def __init__(self, args: dict, *statements: str):
        argv = [pg_tool("psql"), "-X", "-At", "-v", "VERBOSITY=verbose", "-h", args["host"], "-p",
                str(args["port"]), "-U", args["user"], "-d", args["dbname"]]
        for statement in statements:
            argv += ["-c", statement]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PGPASSWORD": args["password"]})

    def finish(self) -> str:
        _, stderr = self.proc.communicate(timeout=60)
        return stderr


def sleeping(server, role: str) -> bool:
    return bool(server.sql("SELECT 1 FROM pg_stat_activity WHERE usename = %s AND query LIKE 'SELECT pg_sleep%%'",
                           (role,)))


def ended_fatally(stderr: str, why: str) -> None:
    assert f"FATAL:  {ADMIN_SHUTDOWN}: terminating connection: this bi_access credential {why}" in stderr, stderr
    assert "after the change" not in stderr, "a statement completed after the change"


CHANGES = {
    "revoke": lambda bi, role: bi.one("revoke", role),
    "delete": lambda bi, role: bi.one("delete", role),
    "regenerate": lambda bi, role: bi.one("regenerate", role),
    # A DBA's own way: the session guard compares the password with the one
    # the session logged in under (a role without one is Citus's, on a worker).
    "password removed": lambda bi, role: bi.pair.primary.sql(f'ALTER ROLE "{role}" PASSWORD NULL'),
}


WHY = {"revoke": "was revoked", "delete": "was deleted", "regenerate": "was given a new password",
       "password removed": "has no password"}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_replica_session_ends_at_its_next_statement_once_replayed(bi, pair, change):
    cred = bi.generate(ORG)
    psql = PsqlSession(cred.login_args(pair.replica), "SELECT 'before'", "SELECT pg_sleep(4)",
                       "SELECT 'after the change'")
    wait_until(lambda: sleeping(pair.replica, cred.role), 10, "the replica session to be in its pg_sleep")
    CHANGES[change](bi, cred.role)
    pair.wait_replayed()
    ended_fatally(psql.finish(), WHY[change])
    assert_login_refused(cred.login_args(pair.replica))
    if change == "password removed":
        # Its record is still live: gone, it leaves no verifier-less
        # credential for test_secrets' audit.
        bi.one("delete", cred.role)


def test_inside_an_open_transaction_block_too(bi, pair):
    """BEGIN, a WITH HOLD cursor, then the change: the transaction's next
    statement (a FETCH) ends the session, and the cursor with it."""
    cred = bi.generate(ORG)
    psql = PsqlSession(cred.login_args(pair.replica), "BEGIN", "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                       "SELECT pg_sleep(4)", "FETCH c", "SELECT 'after the change'")
    wait_until(lambda: sleeping(pair.replica, cred.role), 10, "the replica session to be in its pg_sleep")
    bi.one("revoke", cred.role)
    pair.wait_replayed()
    ended_fatally(psql.finish(), "was revoked")


def test_expiry_ends_sessions_everywhere_and_reads_expired(bi, pair):
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
    cred = bi.generate(ORG, valid_until=until)
    sessions = [PsqlSession(cred.login_args(server), "SELECT 'before'", "SELECT pg_sleep(6)",
                            "SELECT 'after the change'") for server in (pair.primary, pair.replica)]
    wait_until(lambda: sleeping(pair.primary, cred.role) and sleeping(pair.replica, cred.role), 10,
               "both sessions to be in their pg_sleep")
    assert bi.status(cred.role) == "active"
    for psql in sessions:
        ended_fatally(psql.finish(), "has expired")
    assert bi.status(cred.role) == "expired"
    with pytest.raises(psycopg2.Error) as info:
        bi.query("SELECT * FROM bi_access.connection_details(%s)", (cred.role,))
    assert info.value.pgcode == "55000"
    with pytest.raises(psycopg2.Error) as info:
        bi.query("SELECT * FROM bi_access.regenerate(%s)", (cred.role,))
    assert info.value.pgcode == "55000", "an expired credential needs a new valid_until"
    renewed = bi.query("SELECT * FROM bi_access.regenerate(%s, valid_until => now() + interval '1 hour')",
                       (cred.role,))[0]
    bi.secrets.add(renewed["password"])
    pair.wait_replayed()
    assert bi.status(cred.role) == "active"
    assert can_login(pair.replica.tcp_args(renewed["database"], cred.role, renewed["password"]))


def test_a_regenerated_credential_keeps_working_with_its_new_password(bi, pair):
    cred = bi.generate(ORG)
    new = bi.regenerate(cred.role)
    conn = login(new.login_args(pair.replica))
    try:
        for _ in range(3):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
    finally:
        conn.close()
