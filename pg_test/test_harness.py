"""The harness itself, without bi_access: if these fail, nothing else means anything."""

import psycopg2
import pytest

from bi import LOGIN_REFUSED
from cluster import REPLICA_APP_NAME


def test_replica_streams_under_its_application_name(pair):
    assert pair.primary.sql("SELECT state FROM pg_stat_replication WHERE application_name = %s",
                            (REPLICA_APP_NAME,)) == [("streaming",)]
    assert pair.replica.value("SELECT pg_is_in_recovery()") is True


def test_replica_replays_what_the_primary_commits(pair):
    pair.primary.sql("CREATE TABLE harness_probe AS SELECT 42 AS answer")
    try:
        pair.wait_replayed()
        assert pair.replica.value("SELECT answer FROM harness_probe") == 42
    finally:
        pair.primary.sql("DROP TABLE harness_probe")


def test_primary_tells_clients_about_the_replica(pair):
    show = lambda name: pair.primary.value(f"SHOW {name}")  # noqa: E731
    assert show("bi_access.port") == str(pair.replica.port)
    assert show("bi_access.host") == "127.0.0.1"
    assert show("bi_access.replica_application_name") == REPLICA_APP_NAME
    assert show("password_encryption") == "scram-sha-256"
    assert show("log_statement") == "all"


@pytest.mark.parametrize("server", ["primary", "replica"])
def test_tcp_logins_need_a_password(pair, server):
    """Only the superuser on the socket is trusted; a TCP login is checked."""
    target = getattr(pair, server)
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(**target.tcp_args("postgres", "postgres", "wrong"))
    assert LOGIN_REFUSED.search(str(info.value))
