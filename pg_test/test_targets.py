"""Named targets: each credential points at one (host, port, sslmode) and
waits for that target's standby, not another's. Two standbys stream from the
primary: the harness's replica (`bi_replica`, target `east`) and a second one
cloned here (`bi_replica_west`, target `west`); pausing west's replay leaves
only west's credentials `pending` (or `deleting`)."""

from __future__ import annotations

import contextlib

import pytest

from bi import Credential, assert_login_refused, can_login, raises_sqlstate, unique_label
from cluster import REPLICA_APP_NAME, wait_until
from probe import Background, Session

WEST_APP = "bi_replica_west"
ORG = "301"


@pytest.fixture(scope="module")
def west(pair, bi):
    """The second standby, and the two targets."""
    replica = pair.add_replica("replica_west", WEST_APP)
    bi.call("set_target", "east", "127.0.0.1", pair.replica.port, "prefer", REPLICA_APP_NAME)
    bi.call("set_target", "west", "127.0.0.1", replica.port, "disable", WEST_APP)
    bi.call("set_target", "primary", "127.0.0.1", pair.primary.port, "disable", None)
    yield replica
    # The targets stay defined: other modules never name them.


@contextlib.contextmanager
def paused(server):
    server.sql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        server.sql("SELECT pg_wal_replay_resume()")


def on(cred: Credential, server) -> dict:
    """The credential's login at `server`, checked against what its details say."""
    assert cred.details["port"] == server.port, (cred.details, server.name)
    return cred.login_args(server)


def test_each_credential_waits_for_its_own_targets_standby(bi, pair, west):
    with paused(west):
        east_cred = bi.generate(ORG, target="east", wait_replica=False)
        west_cred = bi.generate(ORG, target="west", wait_replica=False)
        pair.wait_replayed()
        bi.wait_status(east_cred.role, "active")
        assert bi.status(west_cred.role) == "pending", "west's standby is paused"
        assert can_login(on(east_cred, pair.replica))
        assert_login_refused(on(west_cred, west))
    pair.wait_replayed(replica=west, app_name=WEST_APP)
    bi.wait_status(west_cred.role, "active")
    assert can_login(on(west_cred, west))
    assert bi.record(west_cred.role)["target"] == "west"
    assert bi.record(east_cred.role)["target"] == "east"


def test_connection_details_come_from_the_target(bi, pair, west):
    cred = bi.generate(ORG, target="west", wait_replica=False)
    d = cred.details
    assert (d["target"], d["host"], d["port"], d["sslmode"]) == ("west", "127.0.0.1", west.port, "disable")
    assert d["url"].endswith(f"@127.0.0.1:{west.port}/{d['database']}?sslmode=disable"), d["url"]
    assert d["jdbc_url"].startswith(f"jdbc:postgresql://127.0.0.1:{west.port}/"), d["jdbc_url"]
    assert d["jdbc_url"].endswith("&sslmode=disable"), d["jdbc_url"]
    default = bi.generate(ORG, wait_replica=False).details
    assert (default["target"], default["port"], default["sslmode"]) == ("default", pair.replica.port, "prefer")
    assert bi.record(default["username"])["target"] == "default"


def test_a_primary_target_is_active_at_commit(bi, pair, west):
    with paused(west), paused(pair.replica):
        cred = bi.generate(ORG, target="primary", wait_replica=False)
        assert bi.status(cred.role) == "active"
        assert can_login(on(cred, pair.primary))


def test_regenerate_is_pending_on_its_own_target_only(bi, pair, west):
    east_cred = bi.generate(ORG, target="east", wait_replica=False)
    west_cred = bi.generate(ORG, target="west", wait_replica=False)
    pair.wait_replayed(replica=west, app_name=WEST_APP)
    pair.wait_replayed()
    with paused(west):
        new_west = Credential(bi.one("regenerate", west_cred.role))
        new_east = Credential(bi.one("regenerate", east_cred.role))
        pair.wait_replayed()
        bi.wait_status(east_cred.role, "active")
        assert bi.status(west_cred.role) == "pending"
        assert can_login(on(new_east, pair.replica))
        assert_login_refused(on(new_west, west))
    pair.wait_replayed(replica=west, app_name=WEST_APP)
    bi.wait_status(west_cred.role, "active")
    assert can_login(on(new_west, west))


def test_deleting_until_its_own_targets_standby_replays(bi, pair, west):
    east_cred = bi.generate(ORG, target="east", wait_replica=False)
    west_cred = bi.generate(ORG, target="west", wait_replica=False)
    pair.wait_replayed(replica=west, app_name=WEST_APP)
    pair.wait_replayed()
    with paused(west):
        assert bi.one("delete", west_cred.role)["status"] == "deleting"
        bi.one("delete", east_cred.role)
        pair.wait_replayed()
        bi.wait_status(east_cred.role, "deleted")
        assert bi.status(west_cred.role) == "deleting"
        with raises_sqlstate("55000"):
            bi.call("purge", west_cred.role)
        assert bi.one("delete", west_cred.role)["status"] == "deleting", "delete stays retry-safe"
    pair.wait_replayed(replica=west, app_name=WEST_APP)
    bi.wait_status(west_cred.role, "deleted")
    bi.call("purge", west_cred.role)


def test_targets_view_lists_default_and_named_targets(bi, pair, west):
    rows = {r["name"]: r for r in bi.query("SELECT * FROM bi_access.targets")}
    d = rows["default"]
    assert (d["host"], d["port"], d["sslmode"], d["standby"]) == ("127.0.0.1", pair.replica.port, "prefer",
                                                                   REPLICA_APP_NAME)
    w = rows["west"]
    assert (w["host"], w["port"], w["sslmode"], w["standby"]) == ("127.0.0.1", west.port, "disable", WEST_APP)
    assert rows["primary"]["standby"] is None
    live = bi.query("SELECT count(*) AS n FROM bi_access.credentials "
                    "WHERE target = 'west' AND status IN ('pending', 'active', 'syncing')")[0]["n"]
    assert w["credentials"] == live and live > 0


def test_set_target_is_idempotent(bi, west):
    name = unique_label("idem")
    for _ in range(2):
        bi.call("set_target", name, "bi.example.com", 6432, "require", None)
    rows = bi.query("SELECT host, port, sslmode, standby FROM bi_access.targets WHERE name = %s", (name,))
    assert rows == [{"host": "bi.example.com", "port": 6432, "sslmode": "require", "standby": None}]
    changes = [r["change"] for r in bi.query(
        "SELECT detail->>'change' AS change FROM bi_access.events "
        "WHERE action = 'set_target' AND detail->>'target' = %s ORDER BY id", (name,))]
    assert changes == ["created", "unchanged"]
    bi.call("set_target", name, "bi2.example.com", 6432)
    row = bi.query("SELECT host, sslmode FROM bi_access.targets WHERE name = %s", (name,))[0]
    # sslmode NULL: whatever bi_access.sslmode says
    assert row == {"host": "bi2.example.com", "sslmode": "prefer"}
    bi.call("drop_target", name)
    assert bi.query("SELECT 1 FROM bi_access.targets WHERE name = %s", (name,)) == []


def test_changing_a_target_moves_its_credentials_details(bi, pair, west):
    name = unique_label("move")
    bi.call("set_target", name, "127.0.0.1", pair.primary.port, "disable")
    cred = bi.generate(ORG, target=name, wait_replica=False)
    bi.call("set_target", name, "localhost", west.port, "disable")
    details = bi.one("connection_details", cred.role)
    assert (details["host"], details["port"], details["target"]) == ("localhost", west.port, name)


BAD_TARGETS = {
    "default": ("default", "h", 5432),
    "DEFAULT": ("DEFAULT", "h", 5432),
    "empty name": ("", "h", 5432),
    "empty host": ("bad", "", 5432),
    "host with a space": ("bad", "a b", 5432),
    "port 0": ("bad", "h", 0),
    "port 65536": ("bad", "h", 65536),
}


# A NULL name, host or port is 22004 (test_errors.py).
@pytest.mark.parametrize("args", list(BAD_TARGETS.values()), ids=list(BAD_TARGETS))
def test_set_target_refuses_bad_values_with_22023(bi, args):
    with raises_sqlstate("22023"):
        bi.call("set_target", *args)


def test_set_target_refuses_a_bad_sslmode_or_standby(bi):
    with raises_sqlstate("22023"):
        bi.call("set_target", "bad", "h", 5432, "on")
    with raises_sqlstate("22023"):
        bi.call("set_target", "bad", "h", 5432, None, "")


def test_generate_with_an_unknown_target_is_22023(bi):
    with raises_sqlstate("22023"):
        bi.generate(ORG, target="nowhere", wait_replica=False)


def test_drop_target_unknown_is_42704(bi):
    with raises_sqlstate("42704"):
        bi.call("drop_target", "nowhere")


def test_drop_target_default_is_22023(bi):
    with raises_sqlstate("22023"):
        bi.call("drop_target", "default")


def test_drop_target_is_refused_while_current_credentials_use_it(bi, pair):
    name = unique_label("used")
    bi.call("set_target", name, "127.0.0.1", pair.primary.port, "disable")
    cred = bi.generate(ORG, target=name, wait_replica=False)
    bi.one("revoke", cred.role)  # deactivated is still current
    with raises_sqlstate("55000"):
        bi.call("drop_target", name)
    assert bi.query("SELECT 1 FROM bi_access.targets WHERE name = %s", (name,)) != []
    bi.one("delete", cred.role)
    bi.call("drop_target", name)
    assert bi.query("SELECT 1 FROM bi_access.targets WHERE name = %s", (name,)) == []
    assert bi.record(cred.role)["target"] == name, "a deleted record keeps its target's name"


def findings_for(bi, target: str) -> list[dict]:
    return [f for f in bi.query("SELECT * FROM bi_access.check()") if f["object"] == f"target {target}"]


def test_check_names_a_target_whose_standby_is_not_connected(bi, pair):
    name = unique_label("absent")
    bi.call("set_target", name, "127.0.0.1", pair.primary.port, "disable", "nobody_streams_this")
    assert findings_for(bi, name) == [], "no credential waits yet"
    cred = bi.generate(ORG, target=name, wait_replica=False)
    assert bi.status(cred.role) == "pending"
    [finding] = findings_for(bi, name)
    assert finding["severity"] == "warning" and "nobody_streams_this" in finding["finding"], finding
    bi.one("delete", cred.role)
    assert bi.status(cred.role) == "deleting"
    assert len(findings_for(bi, name)) == 1, "a deleting credential waits too"
    bi.call("drop_target", name)
    assert findings_for(bi, name) == []
    assert bi.status(cred.role) == "deleted", "its target gone, nothing is left to wait for"


def waiting(pair, dbname: str, pid: int) -> bool:
    return pair.primary.value("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                              (pid,), dbname=dbname)


def test_drop_target_waits_for_a_generate_in_progress_then_refuses(bi, pair, saas_db):
    name = unique_label("race")
    bi.call("set_target", name, "127.0.0.1", pair.primary.port, "disable")
    generating = bi.connect()
    generating.autocommit = False
    with generating.cursor() as cur:
        cur.execute("SELECT username, password FROM bi_access.generate(%s, %s, target => %s)",
                    (ORG, unique_label(), name))
        bi.secrets.add(cur.fetchone()[1])
    dropping = Background(Session(bi.connect()), "SELECT bi_access.drop_target(%s)", (name,))
    wait_until(lambda: waiting(pair, saas_db.dbname, dropping.pid), 10, "drop_target to wait for generate")
    generating.commit()
    generating.close()
    assert dropping.join().state == "55000", dropping.result
    dropping.session.close()


def test_generate_waits_for_a_drop_target_in_progress_then_refuses(bi, pair, saas_db):
    name = unique_label("race")
    bi.call("set_target", name, "127.0.0.1", pair.primary.port, "disable")
    dropping = bi.connect()
    dropping.autocommit = False
    with dropping.cursor() as cur:
        cur.execute("SELECT bi_access.drop_target(%s)", (name,))
    generating = Background(Session(bi.connect()), "SELECT * FROM bi_access.generate(%s, %s, target => %s)",
                            (ORG, unique_label(), name))
    wait_until(lambda: waiting(pair, saas_db.dbname, generating.pid), 10, "generate to wait for drop_target")
    dropping.commit()
    dropping.close()
    assert generating.join().state == "22023", generating.result
    generating.session.close()
