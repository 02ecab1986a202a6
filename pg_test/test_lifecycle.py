"""regenerate / revoke / activate / delete / purge, checked with real logins
on the primary and, once replayed, on the replica."""

from collections import Counter

import pytest

from bi import assert_login_refused, assert_session_ended, can_login, login

pytestmark = pytest.mark.lifecycle

ORG = "202"


def servers(pair):
    return (pair.primary, pair.replica)


def assert_logs_in_everywhere(pair, cred):
    pair.wait_replayed()
    for server in servers(pair):
        assert can_login(cred.login_args(server)), server.name


def assert_refused_everywhere(pair, cred):
    pair.wait_replayed()
    for server in servers(pair):
        assert_login_refused(cred.login_args(server))


def test_regenerate_replaces_the_password(bi, pair):
    old = bi.generate(ORG)
    new = bi.regenerate(old.role)
    assert new.role == old.role and new.password != old.password
    assert_refused_everywhere(pair, old)
    assert_logs_in_everywhere(pair, new)


def test_regenerate_ends_open_sessions(bi, pair):
    old = bi.generate(ORG)
    session = login(old.login_args(pair.primary))
    bi.regenerate(old.role)
    assert_session_ended(session)


def test_revoke_ends_sessions_and_refuses_logins(bi, pair):
    cred = bi.generate(ORG)
    session = login(cred.login_args(pair.primary))
    assert bi.one("revoke", cred.role)["status"] == "deactivated"
    assert_session_ended(session)
    assert_refused_everywhere(pair, cred)
    assert bi.status(cred.role) == "deactivated"


def test_activate_lets_a_revoked_credential_in_again(bi, pair):
    cred = bi.generate(ORG)
    bi.one("revoke", cred.role)
    assert bi.one("activate", cred.role)["status"] == "active"
    assert_logs_in_everywhere(pair, cred)


def test_delete_drops_the_role_and_keeps_the_record(bi, pair):
    cred = bi.generate(ORG)
    session = login(cred.login_args(pair.primary))
    # deleting until the credential's target standby has replayed the drop
    assert bi.one("delete", cred.role)["status"] == "deleting"
    assert_session_ended(session)
    pair.wait_replayed()
    for server in servers(pair):
        assert server.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (cred.role,)) == [], server.name
    assert bi.status(cred.role) == "deleted"
    assert_refused_everywhere(pair, cred)


def events_of(bi, role) -> Counter:
    return Counter(r["action"] for r in bi.query("SELECT action FROM bi_access.events WHERE role_name = %s",
                                                 (role,)))


def test_purge_removes_the_record_but_not_its_events(bi, pair):
    cred = bi.generate(ORG)
    bi.one("delete", cred.role)
    pair.wait_replayed()
    bi.wait_status(cred.role, "deleted")
    before = events_of(bi, cred.role)
    bi.call("purge", cred.role)
    assert bi.record(cred.role) is None
    assert before.total() >= 2, f"generate and delete should be logged, got {dict(before)}"
    assert events_of(bi, cred.role) >= before
