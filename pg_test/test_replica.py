"""A credential is `pending` until the configured replica has replayed it, and
`active` (and usable there) once it has."""

import contextlib

from bi import assert_login_refused, can_login


@contextlib.contextmanager
def replay_paused(pair):
    pair.replica.sql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        pair.replica.sql("SELECT pg_wal_replay_resume()")


def test_pending_until_replayed_then_active(bi, pair):
    with replay_paused(pair):
        cred = bi.generate("202", wait_replica=False)
        assert bi.status(cred.role) == "pending"
        assert_login_refused(cred.login_args(pair.replica))
    pair.wait_replayed()
    # The primary learns the replay position from the standby's next status
    # report (wal_receiver_status_interval = 1s in the harness).
    bi.wait_status(cred.role, "active")
    assert can_login(cred.login_args(pair.replica))
