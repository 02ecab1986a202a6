"""Ending sessions happens at commit, and only then."""

from bi import assert_session_ended, login, session_alive

ORG = "202"


def revoke_uncommitted(bi, pair):
    """A credential with an open session, and an admin transaction that has
    revoked it but not yet committed."""
    cred = bi.generate(ORG)
    session = login(cred.login_args(pair.primary))
    admin = bi.connect()
    admin.autocommit = False
    with admin.cursor() as cur:
        cur.execute("SELECT status FROM bi_access.revoke(%s)", (cred.role,))
        assert cur.fetchone()[0] == "deactivated"
    assert session_alive(session), "the session ended before the revoke committed"
    return cred, session, admin


def test_rolled_back_revoke_leaves_sessions_alone(bi, pair):
    cred, session, admin = revoke_uncommitted(bi, pair)
    admin.rollback()
    admin.close()
    assert session_alive(session), "a rolled-back revoke ended the session"
    assert bi.status(cred.role) == "active"
    session.close()


def test_revoke_ends_sessions_only_at_commit(bi, pair):
    _, session, admin = revoke_uncommitted(bi, pair)
    admin.commit()
    admin.close()
    assert_session_ended(session)


def test_delete_ends_sessions(bi, pair):
    cred = bi.generate(ORG)
    session = login(cred.login_args(pair.primary))
    bi.one("delete", cred.role)
    assert_session_ended(session)
