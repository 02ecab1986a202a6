"""Which database manages a credential role (property 9; src/custody.rs):
a copy in the same cluster (pg_restore, CREATE DATABASE … TEMPLATE, a copy of
the copy) never manages the original's roles, and the original keeps
working byte for byte; a restore into a fresh cluster adopts its
credentials at the one documented call (sync_tables); restored without its
roles, a record reads failed and regenerate recreates the role."""

from __future__ import annotations

import subprocess

import psycopg2
import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, BiAccess, can_login
from cluster import ReplicaPair, as_postgres, pg_tool, run_as_postgres
from probe import Session, session

OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"
SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, org_id bigint NOT NULL);
INSERT INTO accounts (org_id) VALUES (1), (1), (2), (2), (2);
"""
EXPOSE = "CREATE EXTENSION bi_access; SELECT bi_access.expose_table('accounts');"
CALLS = {
    "regenerate": "SELECT * FROM bi_access.regenerate(%s)",
    "revoke": "SELECT * FROM bi_access.revoke(%s)",
    "delete": "SELECT * FROM bi_access.delete(%s)",
    "connection_details": "SELECT * FROM bi_access.connection_details(%s)",
}


def original(pair, secrets, dbname: str):
    pair.primary.sql(f"CREATE DATABASE {dbname}")
    pair.primary.sql(SCHEMA + EXPOSE, dbname=dbname)
    bi = BiAccess(pair, dbname, secrets)
    try:
        return bi.generate("1")
    finally:
        bi.close()


def role_state(pair, role: str) -> tuple:
    return tuple(pair.primary.sql("SELECT rolpassword, rolcanlogin, rolvaliduntil FROM pg_authid WHERE rolname = %s",
                                  (role,))[0])


def copy_by_restore(pair, source: str, target: str) -> None:
    dump_file = pair.root / f"{source}.dump"
    run_as_postgres([pg_tool("pg_dump"), *pair.primary.tool_args(source), "-Fc", "-f", str(dump_file)])
    pair.primary.sql(f"CREATE DATABASE {target}")
    run_as_postgres([pg_tool("pg_restore"), *pair.primary.tool_args(target), str(dump_file)])


def copy_by_template(pair, source: str, target: str) -> None:
    pair.primary.sql(f"CREATE DATABASE {target} TEMPLATE {source}")


def assert_a_copy(pair, secrets, copy: str, managing: str, cred) -> None:
    """Every management call refuses naming the managing database; the record
    reads failed; the credential reads nothing there: the copy's org lookup
    answers nothing for a role it does not manage (no row), whether the copy
    was restored (with a reader group of its own) or made from a template."""
    bi = BiAccess(pair, copy, secrets)
    try:
        record = bi.record(cred.role)
        assert (record["status"], record["last_error"]) == \
            ("failed", f"this database is a copy: database {managing} manages this role")
        for call, sql in CALLS.items():
            with pytest.raises(psycopg2.Error) as info:
                bi.query(sql, (cred.role,))
            assert info.value.pgcode == OBJECT_NOT_IN_PREREQUISITE_STATE, call
            assert f"database {managing} manages the role" in info.value.pgerror, call
    finally:
        bi.close()
    pair.wait_replayed()
    for server in (pair.primary, pair.replica):
        conn = psycopg2.connect(**server.tcp_args(copy, cred.role, cred.password))
        try:
            outcome = Session(conn).run("SELECT * FROM accounts")
            assert (outcome.state, outcome.rows) == ("ok", []), f"{server.name}: {outcome}"
        finally:
            conn.close()


@pytest.mark.parametrize("how", ["pg_restore", "template"])
def test_a_copy_never_manages_the_originals_roles(pair, saas_db, secrets, how):
    source, copy, copy_of_copy = f"orig_{how}", f"copy_{how}", f"copy2_{how}"
    cred = original(pair, secrets, source)
    before = role_state(pair, cred.role)
    make = copy_by_restore if how == "pg_restore" else copy_by_template
    make(pair, source, copy)
    assert_a_copy(pair, secrets, copy, source, cred)
    copy_by_template(pair, copy, copy_of_copy)
    assert_a_copy(pair, secrets, copy_of_copy, source, cred)
    # The original, byte for byte.
    assert role_state(pair, cred.role) == before
    bi = BiAccess(pair, source, secrets)
    try:
        assert bi.status(cred.role) == "active"
        assert bi.one("connection_details", cred.role)["password"] == cred.password
    finally:
        bi.close()
    with session(cred, pair.replica) as s:
        assert s.rows("SELECT org_id FROM accounts") == [(1,), (1,)]


def restore_elsewhere(pair, dbname: str, with_roles: bool) -> ReplicaPair:
    elsewhere = ReplicaPair()
    elsewhere.start()
    if with_roles:
        roles = run_as_postgres([pg_tool("pg_dumpall"), *pair.primary.tool_args(), "--roles-only"]).stdout
        subprocess.run(as_postgres([pg_tool("psql"), *elsewhere.primary.tool_args("postgres"), "-q"]),
                       input=roles, capture_output=True, text=True, timeout=120)
    else:
        elsewhere.primary.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s", (ADMIN_PASSWORD,))
    dump_file = pair.root / f"{dbname}.dump"
    run_as_postgres([pg_tool("pg_dump"), *pair.primary.tool_args(dbname), "-Fc", "-f", str(dump_file)])
    elsewhere.primary.sql(f"CREATE DATABASE {dbname}")
    subprocess.run(as_postgres([pg_tool("pg_restore"), *elsewhere.primary.tool_args(dbname), str(dump_file)]),
                   capture_output=True, text=True, timeout=120)
    if not with_roles:
        elsewhere.primary.sql(f"GRANT bi_access_admin TO {ADMIN_ROLE}")
    return elsewhere


def test_a_restore_into_a_fresh_cluster_adopts_its_credentials_at_one_sync(pair, saas_db, secrets):
    cred = original(pair, secrets, "dr_source")
    elsewhere = restore_elsewhere(pair, "dr_source", with_roles=True)
    try:
        bi = BiAccess(elsewhere, "dr_source", secrets)
        try:
            record = bi.record(cred.role)
            assert record["status"] == "failed"
            assert "SELECT * FROM bi_access.sync_tables() adopts it" in record["last_error"]
            with session(cred, elsewhere.primary) as s:
                # Not adopted yet: the org lookup answers nothing for it,
                # so it reads no row.
                outcome = s.run("SELECT * FROM accounts")
                assert (outcome.state, outcome.rows) == ("ok", []), outcome
            with pytest.raises(psycopg2.Error) as info:
                bi.query(CALLS["revoke"], (cred.role,))
            assert info.value.pgcode == OBJECT_NOT_IN_PREREQUISITE_STATE
            bi.query("SELECT * FROM bi_access.sync_tables()")
            elsewhere.wait_replayed()
            assert bi.status(cred.role) in ("active", "pending")
            for server in (elsewhere.primary, elsewhere.replica):
                with session(cred, server) as s:
                    assert s.rows("SELECT org_id FROM accounts") == [(1,), (1,)], server.name
            new = bi.regenerate(cred.role)
            assert can_login(new.login_args(elsewhere.primary))
        finally:
            bi.close()
    finally:
        elsewhere.destroy()


def test_a_restore_without_roles_reads_failed_and_regenerate_recreates_the_role(pair, saas_db, secrets):
    cred = original(pair, secrets, "dr_noroles")
    elsewhere = restore_elsewhere(pair, "dr_noroles", with_roles=False)
    try:
        bi = BiAccess(elsewhere, "dr_noroles", secrets)
        try:
            record = bi.record(cred.role)
            assert record["status"] == "failed"
            assert record["last_error"].startswith("its role does not exist")
            new = bi.regenerate(cred.role)
            assert new.role == cred.role
            # The documented call after any restore: grants and policies for
            # this database's reader group (the dump named the original's).
            bi.query("SELECT * FROM bi_access.sync_tables()")
            with session(new, elsewhere.primary) as s:
                assert s.rows("SELECT org_id FROM accounts") == [(1,), (1,)]
        finally:
            bi.close()
    finally:
        elsewhere.destroy()


def test_a_dropped_database_leaves_login_roles_that_check_names_elsewhere(pair, saas_db, bi, secrets):
    """DROP DATABASE fires no event trigger: its credential roles and reader
    group outlive it. check() in any other database with bi_access names
    them, and its fixes remove them."""
    cred = original(pair, secrets, "dropped_db")
    reader = pair.primary.value("SELECT reader_role::text FROM bi_access.config", dbname="dropped_db")
    pair.primary.sql("DROP DATABASE dropped_db WITH (FORCE)")
    found = {obj: fix for obj, fix in pair.primary.sql(
        "SELECT object, fix FROM bi_access.check() WHERE object IN (%s, %s)",
        (f"role {cred.role}", f"role {reader}"), dbname=saas_db.dbname)}
    assert found == {f"role {cred.role}": f"DROP ROLE {cred.role};", f"role {reader}": f"DROP ROLE {reader};"}
    pair.primary.sql(" ".join(found.values()))
    assert not pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname IN (%s, %s)", (cred.role, reader))


def test_after_failover_every_credential_logs_in_on_the_promoted_standby(secrets):
    """The marks, records, roles and key replicate physically: promoted, the
    standby is the same system and database, so it manages every credential
    (custody Here), each logs in and reads its org's rows there, and each
    reveal works."""
    ha = ReplicaPair()
    try:
        ha.start()
        ha.primary.sql("CREATE DATABASE ha")
        ha.primary.sql(SCHEMA + EXPOSE, dbname="ha")
        ha.primary.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
        bi = BiAccess(ha, "ha", secrets)
        creds = {org: bi.generate(org) for org in ("1", "2")}
        bi.close()
        ha.wait_replayed()
        run_as_postgres([pg_tool("pg_ctl"), "-D", str(ha.replica.datadir), "-w", "promote"])
        expected = {"1": [(1,), (1,)], "2": [(2,), (2,), (2,)]}
        conn = psycopg2.connect(**ha.replica.tcp_args("ha", ADMIN_ROLE, ADMIN_PASSWORD))
        conn.autocommit = True
        try:
            for org, cred in creds.items():
                with session(cred, ha.replica) as s:
                    assert s.rows("SELECT org_id FROM accounts ORDER BY id") == expected[org]
                with conn.cursor() as cur:
                    cur.execute("SELECT password FROM bi_access.connection_details(%s)", (cred.role,))
                    assert cur.fetchone() == (cred.password,)
                    cur.execute("SELECT status::text FROM bi_access.credentials WHERE role_name = %s", (cred.role,))
                    assert cur.fetchone() == ("active",)
        finally:
            conn.close()
    finally:
        ha.destroy()
