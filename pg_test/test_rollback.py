"""Only what commits ends sessions (property 6, issue 27): revoke,
regenerate and delete queue the end of the credential's open sessions for
the commit of the (sub)transaction that called them. Undone by ROLLBACK TO
SAVEPOINT or a plpgsql EXCEPTION block, they end nothing, on the primary or
the replica; PREPARE TRANSACTION after one of them is refused (0A000, as
PostgreSQL refuses it after NOTIFY), and a prepared transaction whose call
was rolled back to a savepoint ends nothing at ROLLBACK or COMMIT PREPARED.
A committed call still ends them, through a savepoint released into it too.
"""

from __future__ import annotations

import contextlib
import time

import psycopg2
import pytest

from bi import assert_session_ended, login, session_alive

ORG = "1"
ACTIONS = {
    # call -> status it leaves when it commits
    "revoke": "deactivated",
    "regenerate": "active",
    "delete": "deleted",
}
# A queued termination would be signalled at commit; give it time to land
# before calling a session alive.
SETTLE = 1.0


class Sessions:
    """A credential's open sessions on the primary and on the replica."""

    def __init__(self, cred, pair):
        self.pair = pair
        self.primary = login(cred.login_args(pair.primary))
        self.replica = login(cred.login_args(pair.replica))

    def alive(self) -> dict[str, bool]:
        time.sleep(SETTLE)
        self.pair.wait_replayed()
        return {"primary": session_alive(self.primary), "replica": session_alive(self.replica)}

    def ended(self) -> None:
        assert_session_ended(self.primary)
        self.pair.wait_replayed()
        assert_session_ended(self.replica)

    def close(self) -> None:
        for conn in (self.primary, self.replica):
            conn.close()


@pytest.fixture
def cred_with_sessions(bi, pair):
    cred = bi.generate(ORG)
    sessions = Sessions(cred, pair)
    yield cred, sessions
    sessions.close()


@contextlib.contextmanager
def admin(bi):
    """An autocommit session of the admin role; transactions are spelled out."""
    conn = bi.connect()
    try:
        yield conn.cursor()
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.cursor().execute("ROLLBACK")
        conn.close()


def call(action: str, role: str) -> str:
    return f"SELECT 1 FROM bi_access.{action}('{role}')"


BOTH_ALIVE = {"primary": True, "replica": True}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_rollback_to_savepoint_ends_nothing(bi, cred_with_sessions, action):
    cred, sessions = cred_with_sessions
    with admin(bi) as cur:
        cur.execute("BEGIN")
        cur.execute("SAVEPOINT s")
        cur.execute(call(action, cred.role))
        cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute("COMMIT")
    assert sessions.alive() == BOTH_ALIVE
    assert bi.status(cred.role) == "active"


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_plpgsql_exception_block_ends_nothing(bi, cred_with_sessions, action):
    cred, sessions = cred_with_sessions
    with admin(bi) as cur:
        cur.execute(f"""DO $$
            BEGIN
                PERFORM bi_access.{action}('{cred.role}');
                RAISE EXCEPTION 'undo';
            EXCEPTION WHEN raise_exception THEN NULL;
            END $$""")
    assert sessions.alive() == BOTH_ALIVE
    assert bi.status(cred.role) == "active"


def test_a_savepoint_released_into_one_rolled_back_ends_nothing(bi, cred_with_sessions):
    """The inner savepoint's queue passes to the outer one at RELEASE and
    goes with it at ROLLBACK TO."""
    cred, sessions = cred_with_sessions
    with admin(bi) as cur:
        cur.execute("BEGIN")
        cur.execute("SAVEPOINT outer_sp")
        cur.execute("SAVEPOINT inner_sp")
        cur.execute(call("revoke", cred.role))
        cur.execute("RELEASE SAVEPOINT inner_sp")
        cur.execute("ROLLBACK TO SAVEPOINT outer_sp")
        cur.execute("COMMIT")
    assert sessions.alive() == BOTH_ALIVE
    assert bi.status(cred.role) == "active"


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_committed_call_through_a_released_savepoint_ends_them(bi, cred_with_sessions, action):
    cred, sessions = cred_with_sessions
    with admin(bi) as cur:
        cur.execute("BEGIN")
        cur.execute("SAVEPOINT s")
        cur.execute(call(action, cred.role))
        cur.execute("RELEASE SAVEPOINT s")
        cur.execute("COMMIT")
    sessions.ended()
    assert bi.status(cred.role) in (ACTIONS[action], "pending", "deleting")


def test_a_rolled_back_transaction_ends_nothing(bi, cred_with_sessions):
    cred, sessions = cred_with_sessions
    with admin(bi) as cur:
        cur.execute("BEGIN")
        cur.execute(call("delete", cred.role))
        cur.execute("ROLLBACK")
    assert sessions.alive() == BOTH_ALIVE
    assert bi.status(cred.role) == "active"


@pytest.mark.parametrize("action", list(ACTIONS))
def test_prepare_transaction_after_the_call_is_refused(bi, pair, cred_with_sessions, action):
    """Its COMMIT PREPARED could run in another backend, which knows nothing
    of the sessions to end: refused (0A000) and rolled back whole."""
    cred, sessions = cred_with_sessions
    with admin(bi) as cur:
        cur.execute("BEGIN")
        cur.execute(call(action, cred.role))
        with pytest.raises(psycopg2.Error) as info:
            cur.execute("PREPARE TRANSACTION 'bi_rollback_refused'")
    assert info.value.pgcode == "0A000", info.value.pgerror
    assert "PREPARE" in info.value.diag.message_primary
    assert pair.primary.value("SELECT count(*) FROM pg_prepared_xacts") == 0
    assert sessions.alive() == BOTH_ALIVE
    assert bi.status(cred.role) == "active"


@pytest.mark.parametrize("finish", ["ROLLBACK PREPARED", "COMMIT PREPARED"])
def test_a_prepared_transaction_whose_call_was_undone_ends_nothing(bi, pair, cred_with_sessions, finish):
    """Rolled back to a savepoint, the call leaves nothing queued: the
    transaction may be prepared, and finishing it (here, from another
    session) ends nothing."""
    cred, sessions = cred_with_sessions
    with admin(bi) as cur:
        cur.execute("BEGIN")
        cur.execute("SAVEPOINT s")
        cur.execute(call("revoke", cred.role))
        cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute("PREPARE TRANSACTION 'bi_rollback_undone'")
    pair.primary.sql(f"{finish} 'bi_rollback_undone'", dbname=bi.dbname)
    assert sessions.alive() == BOTH_ALIVE
    assert bi.status(cred.role) == "active"


def test_a_committed_revoke_still_ends_them_on_both_servers(bi, cred_with_sessions):
    cred, sessions = cred_with_sessions
    bi.one("revoke", cred.role)
    sessions.ended()
    assert bi.status(cred.role) == "deactivated"
