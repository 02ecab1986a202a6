"""A credential cannot write. Checked on the PRIMARY: on the replica every
write fails anyway (25006, recovery), which would prove nothing."""

import pytest

from bi import login, raises_sqlstate

PERMISSION_DENIED = "42501"
READ_ONLY_TRANSACTION = "25006"

WRITES = {
    "insert": "INSERT INTO projects (org_id, name) VALUES (101, 'written by BI')",
    "update": "UPDATE projects SET name = 'written by BI'",
    "delete": "DELETE FROM projects",
    "truncate": "TRUNCATE projects",
}


@pytest.fixture(scope="module")
def session_on_primary(bi, pair):
    conn = login(bi.generate("101").login_args(pair.primary))
    yield conn
    conn.close()


def test_sessions_default_to_read_only(session_on_primary):
    with session_on_primary.cursor() as cur:
        cur.execute("SHOW default_transaction_read_only")
        assert cur.fetchone() == ("on",)


@pytest.mark.parametrize("statement", WRITES.values(), ids=WRITES.keys())
def test_write_fails(session_on_primary, statement):
    with raises_sqlstate(PERMISSION_DENIED, READ_ONLY_TRANSACTION), session_on_primary.cursor() as cur:
        cur.execute(statement)


@pytest.mark.parametrize("statement", WRITES.values(), ids=WRITES.keys())
def test_write_fails_without_privilege_after_leaving_read_only(session_on_primary, statement):
    """Any role may turn its own read-only default off; then the grants alone
    must refuse the write."""
    with session_on_primary.cursor() as cur:
        cur.execute("SET default_transaction_read_only = off")
    try:
        with raises_sqlstate(PERMISSION_DENIED), session_on_primary.cursor() as cur:
            cur.execute(statement)
    finally:
        with session_on_primary.cursor() as cur:
            cur.execute("RESET default_transaction_read_only")
