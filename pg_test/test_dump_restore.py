"""pg_dump -Fc / pg_restore into a new database of the same cluster keeps
bi_access's records, named targets and event log (pg_extension_config_dump)."""

import subprocess
from collections import Counter

import pytest

from cluster import as_postgres, pg_tool, run_as_postgres

RESTORED = "saas_restored"
CREDENTIALS = "SELECT id, org_id, org_name, label, target, role_name FROM bi_access.credentials"
TARGETS = "SELECT name, host, port, sslmode, standby FROM bi_access.targets WHERE name <> 'default'"
EVENTS = "SELECT e::text FROM bi_access.events e"


def snapshot(pair, dbname: str) -> dict:
    sql = lambda q: pair.primary.sql(q, dbname=dbname)  # noqa: E731
    return {"credentials": sorted(sql(CREDENTIALS)), "targets": sorted(sql(TARGETS)),
            "events": Counter(sql(EVENTS))}


@pytest.fixture(scope="module")
def restore(pair, bi, saas_db):
    """Dumps saas with at least one credential in it and restores the dump;
    yields the original snapshot and pg_restore's outcome."""
    bi.generate("303")
    bi.call("set_target", "dumped", "127.0.0.1", pair.primary.port, "disable")
    bi.generate("303", target="dumped")
    original = snapshot(pair, saas_db.dbname)
    dump_file = pair.root / "saas.dump"
    run_as_postgres([pg_tool("pg_dump"), *pair.primary.tool_args(saas_db.dbname), "-Fc", "-f", str(dump_file)])
    pair.primary.sql(f"CREATE DATABASE {RESTORED}")
    proc = subprocess.run(as_postgres([pg_tool("pg_restore"), *pair.primary.tool_args(RESTORED), str(dump_file)]),
                          capture_output=True, text=True, timeout=120)
    yield original, proc
    # The copy made a reader group of its own; dropping the database would
    # leave it behind (check() names such leftovers), so it goes too.
    reader = pair.primary.value("SELECT reader_role::text FROM bi_access.config", dbname=RESTORED)
    pair.primary.sql(f"DROP DATABASE {RESTORED} WITH (FORCE)")
    pair.primary.sql(f'DROP ROLE "{reader}"')


def test_restore_keeps_credentials(pair, restore):
    """Every record comes back. Restored into this same cluster, the copy
    never manages the original's roles: its current records read failed and
    say which database does (pg_test/test_custody.py)."""
    original, _ = restore
    assert original["credentials"], "nothing to compare: no credential before the dump"
    assert snapshot(pair, RESTORED)["credentials"] == original["credentials"]
    status = "SELECT role_name::text, status::text, last_error FROM bi_access.credentials"
    managed = {role for role, st, _ in pair.primary.sql(status, dbname="saas") if st not in ("deleted", "failed")}
    in_copy = {role: (st, err) for role, st, err in pair.primary.sql(status, dbname=RESTORED) if role in managed}
    assert in_copy, "nothing to compare: no current credential in the copy"
    assert in_copy == {role: ("failed", "this database is a copy: database saas manages this role")
                       for role in in_copy}


def test_restore_keeps_targets(pair, restore):
    original, _ = restore
    assert ("dumped", "127.0.0.1", pair.primary.port, "disable", None) in original["targets"]
    assert snapshot(pair, RESTORED)["targets"] == original["targets"]


def test_restore_keeps_events(pair, restore):
    original, _ = restore
    assert snapshot(pair, RESTORED)["events"] >= original["events"]


def test_restore_is_clean(restore):
    _, proc = restore
    assert proc.returncode == 0, proc.stderr
