"""Offboarding an org in one call: revoke_org and delete_org act on every
credential of the org at once, atomically, with one event per credential and
one for the call, and end the sessions of those credentials on every server
as a single revoke or delete does (on the primary at commit; on the replica
at their next statement once replayed)."""

from __future__ import annotations

import pytest

from bi import (assert_login_refused, assert_session_ended, can_login, login, raises_sqlstate,
                session_alive)


def open_sessions(pair, creds) -> list:
    """One session per credential on the primary and one on the replica."""
    return [login(cred.login_args(server)) for cred in creds for server in (pair.primary, pair.replica)]


def assert_all_ended(pair, sessions) -> None:
    pair.wait_replayed()
    for conn in sessions:
        # primary: ended at commit; replica: its next statement ends it.
        assert_session_ended(conn)


def events(bi, org: str) -> list[dict]:
    return bi.query("SELECT action, role_name, detail FROM bi_access.events WHERE org_id = %s ORDER BY id",
                    (org,))


def org_with_credentials(bi, org: str):
    """Two live credentials, a revoked one and a deleted one."""
    live = [bi.generate(org) for _ in range(2)]
    revoked = bi.generate(org)
    bi.one("revoke", revoked.role)
    deleted = bi.generate(org)
    bi.one("delete", deleted.role)
    return live, revoked, deleted


def test_revoke_org_revokes_every_live_credential_and_ends_their_sessions(bi, pair):
    org = "offboard-revoke"
    live, revoked, deleted = org_with_credentials(bi, org)
    other = bi.generate("offboard-other")
    sessions = open_sessions(pair, live)
    before = len(events(bi, org))
    rows = bi.call("revoke_org", org)
    assert sorted(r["role_name"] for r in rows) == sorted(c.role for c in live)
    assert {r["status"] for r in rows} == {"deactivated"}
    assert_all_ended(pair, sessions)
    for cred in live:
        for server in (pair.primary, pair.replica):
            assert_login_refused(cred.login_args(server))
    assert bi.status(revoked.role) == "deactivated"
    assert can_login(other.login_args(pair.replica)), "another org's credential is untouched"
    new = events(bi, org)[before:]
    assert sorted((e["action"], e["role_name"]) for e in new) == sorted(
        [("revoke", c.role) for c in live] + [("revoke_org", None)])
    assert all(e["detail"].get("by") == "revoke_org" for e in new if e["action"] == "revoke")
    # Nothing left to revoke: an empty set, and still one event for the call.
    assert bi.call("revoke_org", org) == []
    assert [e["action"] for e in events(bi, org)[len(new) + before:]] == ["revoke_org"]


def test_delete_org_deletes_every_current_credential_and_ends_their_sessions(bi, pair):
    org = "offboard-delete"
    live, revoked, deleted = org_with_credentials(bi, org)
    sessions = open_sessions(pair, live)
    before = len(events(bi, org))
    rows = bi.call("delete_org", org)
    current = [*live, revoked]
    assert sorted(r["role_name"] for r in rows) == sorted(c.role for c in current)
    assert {r["status"] for r in rows} <= {"deleting", "deleted"}
    assert_all_ended(pair, sessions)
    for cred in current:
        for server in (pair.primary, pair.replica):
            assert server.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (cred.role,)) == [], server.name
        bi.wait_status(cred.role, "deleted")
    new = events(bi, org)[before:]
    assert sorted((e["action"], e["role_name"]) for e in new) == sorted(
        [("delete", c.role) for c in current] + [("delete_org", None)])


def test_revoke_org_rolled_back_changes_nothing(bi, pair):
    org = "offboard-rollback"
    live = [bi.generate(org) for _ in range(2)]
    sessions = [login(cred.login_args(pair.primary)) for cred in live]
    conn = bi.connect()
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bi_access.revoke_org(%s)", (org,))
        assert cur.fetchone()[0] == 2
    conn.rollback()
    conn.close()
    assert all(session_alive(s) for s in sessions), "a rolled-back revoke_org ended a session"
    assert {bi.status(c.role) for c in live} == {"active"}
    for s in sessions:
        s.close()


def test_delete_org_is_all_or_nothing(bi, pair):
    """The second credential cannot be dropped (it holds a privilege in
    another database), so the first one's drop is undone too."""
    org = "offboard-atomic"
    first, second = bi.generate(org), bi.generate(org)
    session = login(first.login_args(pair.primary))
    pair.primary.sql("CREATE TABLE IF NOT EXISTS offboard_pin ()")
    pair.primary.sql(f'GRANT SELECT ON offboard_pin TO "{second.role}"')
    before = len(events(bi, org))
    with raises_sqlstate("2BP01"):
        bi.call("delete_org", org)
    assert {bi.status(c.role) for c in (first, second)} == {"active"}
    assert session_alive(session), "the session of a credential that stayed was ended"
    assert can_login(first.login_args(pair.replica))
    assert len(events(bi, org)) == before, "a call that fails leaves no event"
    pair.primary.sql(f'REVOKE SELECT ON offboard_pin FROM "{second.role}"')
    assert len(bi.call("delete_org", org)) == 2
    assert_session_ended(session)


@pytest.mark.parametrize("fn", ["revoke_org", "delete_org"])
def test_an_org_without_credentials_is_42704(bi, fn):
    with raises_sqlstate("42704"):
        bi.call(fn, "offboard-nobody")


@pytest.mark.parametrize("fn", ["revoke_org", "delete_org"])
def test_a_null_org_is_22004(bi, fn):
    """NULL names no org: refused as a NULL argument (issue 27), not looked up."""
    with raises_sqlstate("22004") as info:
        bi.call(fn, None)
    assert info.value.diag.message_primary == f"bi_access.{fn}(): org_id must not be NULL"


def test_an_org_key_matches_exactly(bi):
    bi.generate("offboard-42")
    with raises_sqlstate("42704"):
        bi.call("revoke_org", "OFFBOARD-42")
    with raises_sqlstate("42704"):
        bi.call("revoke_org", "offboard-4%")
