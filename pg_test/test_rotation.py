"""Overlap rotation (issue 29): `regenerate(role, overlap => …)` gives the
credential a new role while its old one keeps working until previous_until,
on the primary and on the replica. A client looping on the old details and
one starting on the new ones see no error during the overlap; after it the
old open session ends at its next statement (FATAL 57P01) and a new login
with the old details fails (28P01), wherever it is. Both roles see exactly
the org's rows (against the superuser's count). revoke during the overlap
ends both roles' sessions; the credential's connection_limit counts both
roles' sessions; the next management call after the overlap drops the old
role, on the replica once replayed."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from bi import Credential
from libpq import Connection, login_state
from tenants import visible

ORG = "101"
ENDED = "57P01"
BAD_PASSWORD = "28P01"
NO_LOGIN = "28000"
TOO_MANY = "53300"
SERVERS = ["primary", "replica"]
OVERLAP = 3.0


class Looper(threading.Thread):
    """One session that runs a statement every 50 ms and notes (when, state)
    of each, until told to stop or a statement fails."""

    def __init__(self, args: dict):
        super().__init__(daemon=True)
        self.conn = Connection(args)
        self.outcomes: list[tuple[float, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            state, _ = self.conn.exec("SELECT count(*) FROM projects")
            self.outcomes.append((time.monotonic(), state))
            if state != "ok":
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        self.conn.close()

    def failures(self) -> list[tuple[float, str]]:
        return [(at, state) for at, state in self.outcomes if state != "ok"]


def rotate(bi, role: str, overlap: str) -> Credential:
    return Credential(bi.one("regenerate", role, overlap=overlap))


def rows_seen(args: dict, saas_db) -> set:
    conn = psycopg2.connect(**args)
    try:
        with conn.cursor() as cur:
            cur.execute(saas_db.counts_sql())
            return visible(cur.fetchall())
    finally:
        conn.close()


def role_exists(server, role: str) -> bool:
    return server.value("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)", (role,))


@pytest.mark.parametrize("where", SERVERS)
def test_no_client_sees_an_error_during_the_overlap_and_the_old_one_ends_after(bi, pair, saas_db, where):
    server = getattr(pair, where)
    old = bi.generate(ORG)
    old_loop = Looper(old.login_args(server))
    old_loop.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        new = rotate(bi, old.role, f"{OVERLAP} seconds")
        assert new.role != old.role
        pair.wait_replayed()
        new_loop = Looper(new.login_args(server))
        new_loop.start()
        try:
            # Both roles see exactly the org's rows, as the superuser counts them.
            expected = saas_db.rows_of(ORG)
            assert expected
            assert rows_seen(old.login_args(server), saas_db) == expected
            assert rows_seen(new.login_args(server), saas_db) == expected
            old_loop.join(OVERLAP + 10)
            assert not old_loop.is_alive(), "the old session was not ended after the overlap"
            time.sleep(0.5)
            assert new_loop.failures() == []
            assert new_loop.outcomes, "the new client ran no statement"
        finally:
            new_loop.stop()
    finally:
        old_loop.stop()
    (ended_at, state), = old_loop.failures()
    assert state == ENDED
    # Not before the overlap ended (the primary started it no earlier than
    # `started`), and every statement before that succeeded.
    assert ended_at >= started + OVERLAP - 0.1, ended_at - started
    assert len(old_loop.outcomes) > 20
    assert login_state(old.login_args(server)) == BAD_PASSWORD
    assert login_state(new.login_args(server)) == "ok"
    record = bi.record(new.role)
    assert record["previous_role_name"] == old.role


@pytest.mark.parametrize("where", SERVERS)
def test_revoke_during_the_overlap_ends_both_roles(bi, pair, where):
    server = getattr(pair, where)
    old = bi.generate(ORG)
    old_session = Connection(old.login_args(server))
    try:
        new = rotate(bi, old.role, "1 hour")
        pair.wait_replayed()
        new_session = Connection(new.login_args(server))
        try:
            assert old_session.exec("SELECT 1") == ("ok", ["1"])
            assert new_session.exec("SELECT 1") == ("ok", ["1"])
            bi.one("revoke", new.role)
            pair.wait_replayed()
            assert old_session.exec("SELECT 2")[0] == ENDED
            assert new_session.exec("SELECT 2")[0] == ENDED
        finally:
            new_session.close()
    finally:
        old_session.close()
    # Neither role can log in (the old one until its overlap ends and it is
    # dropped, the new one until activate).
    assert login_state(old.login_args(server)) == NO_LOGIN
    assert login_state(new.login_args(server)) == NO_LOGIN
    assert bi.status(new.role) == "deactivated"


def test_the_connection_limit_counts_both_roles(bi, pair):
    old = bi.generate(ORG, connection_limit=2)
    first = Connection(old.login_args(pair.primary))
    try:
        new = rotate(bi, old.role, "1 hour")
        second = Connection(new.login_args(pair.primary))
        try:
            assert login_state(new.login_args(pair.primary)) == TOO_MANY
            assert login_state(old.login_args(pair.primary)) == TOO_MANY
        finally:
            second.close()
        time.sleep(0.3)
        assert login_state(new.login_args(pair.primary)) == "ok"
    finally:
        first.close()


def test_the_next_management_call_after_the_overlap_drops_the_old_role(bi, pair):
    old = bi.generate(ORG)
    new = rotate(bi, old.role, "1 second")
    pair.wait_replayed()
    assert role_exists(pair.replica, old.role)
    time.sleep(1.5)
    # Past previous_until, before any call: the old role exists and cannot
    # log in anywhere.
    assert [login_state(old.login_args(s)) for s in (pair.primary, pair.replica)] == [BAD_PASSWORD] * 2
    assert role_exists(pair.primary, old.role)
    bi.generate("202")
    pair.wait_replayed()
    assert not role_exists(pair.primary, old.role)
    assert not role_exists(pair.replica, old.role)
    record = bi.record(new.role)
    assert (record["previous_role_name"], record["previous_until"]) == (None, None)
    retired = bi.query(
        "SELECT detail->>'by' AS by FROM bi_access.events WHERE action = 'retire' AND role_name = %s",
        (old.role,))
    assert retired == [{"by": "overlap ended"}]
    assert [login_state(new.login_args(s)) for s in (pair.primary, pair.replica)] == ["ok", "ok"]
