"""pg_upgrade from PostgreSQL 15 to 17 with bi_access in use (run by
pg_upgrade.sh, which prepares private copies of both installations with this
tree's bi_access; PG_BIN is 17's, BI_PG_UPGRADE_OLD_BIN 15's).

On 15: two tenant databases (tenants.py's saas and crm) with their tables
exposed, live credentials in both, and a revoked one. The 15 server stops
cleanly, a 17 cluster is initialised with the same settings and port, and
pg_upgrade (copy mode) moves the 15 cluster into it. Then, on 17:
- before any sync: pg_upgrade kept the databases' and roles' OIDs and the
  roles' marks, but the cluster's system identifier is new. The credentials
  still log in with their old passwords (the SCRAM verifiers are copied as
  they are), see exactly their org's rows (against a superuser's count), and
  stay managed here: `active`, every reveal works (the key is in
  bi_access.sealing_key, a user table pg_upgrade copies). Their memberships
  are as pg_dumpall re-created them, which on 17 allows SET ROLE to the
  groups, and check() names each of them;
- after `CALL bi_access.sync()`: every membership is in 16+'s form (INHERIT
  TRUE, SET FALSE), SET ROLE to the groups is refused (42501), the roles are
  marked with the new system identifier, check() is clean, a second sync
  changes nothing, reveals and isolation still hold, and a new credential
  works.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import types
from pathlib import Path

import psycopg2
import pytest

import cluster
from bi import ADMIN_PASSWORD, ADMIN_ROLE, BiAccess, Credential, assert_login_refused, login
from cluster import (BASE_DIR, KEEP_DIRS, PG_HBA, SUPERUSER, Server, chown_to_postgres, free_port,
                     run_as_postgres)
from probe import PERMISSION_DENIED, session
from tenants import CRM, SAAS, TenantDb, assert_orgs_distinguishable, visible

OLD_BIN = Path(os.environ.get("BI_PG_UPGRADE_OLD_BIN", "/nonexistent"))
NEW_BIN = cluster.PG_BIN
# The version this tree builds (Cargo.toml's, as the control file gets it).
VERSION = re.search(r'^version = "([^"]+)"', (Path(__file__).resolve().parents[2] / "Cargo.toml").read_text(),
                    re.M).group(1)
DATABASES = (SAAS, CRM)
REVOKED_ORG = "202"  # saas org with a revoked credential besides its live one
# check() names every other database PUBLIC may connect to: each database is
# open only to its own reader group and the application's admin role.
CHECK_CLEAN_SETUP = "REVOKE CONNECT ON DATABASE postgres, template1, saas, crm FROM PUBLIC"
MEMBERSHIPS = """
SELECT r.rolname::text, g.rolname::text, m.inherit_option, m.set_option, m.admin_option,
       m.grantor::regrole::text
FROM bi_access.credential c
JOIN pg_roles r ON r.rolname = c.role_name
JOIN pg_auth_members m ON m.member = r.oid
JOIN pg_roles g ON g.oid = m.roleid
ORDER BY 1, 2, 6
"""
MARKS = """
SELECT r.rolname::text, r.oid::bigint, shobj_description(r.oid, 'pg_authid')
FROM bi_access.credential c JOIN pg_roles r ON r.rolname = c.role_name ORDER BY 1
"""
MEMBERSHIP_FINDING = "a credential role has an attribute or a membership bi_access never gives"


class Installed(Server):
    """A server of one installation (bin directory), whatever PG_BIN says."""

    def __init__(self, name: str, root: Path, bin_dir: Path, port: int):
        super().__init__(name, root, root)
        self.bin = bin_dir
        self.port = port

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def initdb(self, settings: dict) -> None:
        run_as_postgres([self.tool("initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        (self.datadir / "pg_hba.conf").write_text(PG_HBA)
        self.append_conf({**self.base_settings(), **settings})

    def start(self) -> None:
        run_as_postgres([self.tool("pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_file),
                         "-w", "-t", "60", "start"])

    def stop(self, mode: str = "immediate") -> None:
        if (self.datadir / "postmaster.pid").exists():
            run_as_postgres([self.tool("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])


def superuser_rows(server: Server, db: TenantDb) -> set[tuple[str, str, int]]:
    """Every (table, org, count) of the database, as the superuser sees it."""
    return visible(server.sql(db.counts_sql(), dbname=db.dbname))


def assert_sees_only_its_org(server: Server, db: TenantDb, cred: Credential, org: str,
                             everything: set[tuple[str, str, int]]) -> None:
    expected = {row for row in everything if row[1] == org}
    assert expected, f"{db.dbname}: org {org} has rows to see"
    with session(cred, server) as s:
        assert visible(s.rows(db.counts_sql())) == expected
        assert s.run(f"SELECT * FROM {db.hidden_table}").state == PERMISSION_DENIED


def bi_on(server: Server, dbname: str, secrets: set[str]) -> BiAccess:
    # BiAccess only needs `.primary`; there is no replica to wait for.
    return BiAccess(types.SimpleNamespace(primary=server), dbname, secrets)


def reader_group(server: Server, dbname: str) -> str:
    return server.value("SELECT reader_role::text FROM bi_access.config", dbname=dbname)


def membership_findings(server: Server, dbname: str) -> set[str]:
    return {obj for obj, finding in server.sql("SELECT object, finding FROM bi_access.check()", dbname=dbname)
            if finding == MEMBERSHIP_FINDING}


def system_identifier(server: Server) -> str:
    return server.value("SELECT system_identifier::text FROM pg_control_system()")


@pytest.fixture(scope="module")
def upgraded(request):
    """The 15 cluster in use, pg_upgrade'd to 17; the 17 server running."""
    assert (OLD_BIN / "pg_ctl").exists(), "run through pg_test/upgrade/pg_upgrade.sh"
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    BASE_DIR.chmod(0o755)
    root = Path(tempfile.mkdtemp(prefix="run-", dir=BASE_DIR))
    chown_to_postgres(root)
    # The same port for both: the URLs the credentials were given on 15 are
    # the ones they use on 17.
    port = free_port()
    old = Installed("pg15", root, OLD_BIN, port)
    new = Installed("pg17", root, NEW_BIN, port)

    def teardown():
        new.stop()
        old.stop()
        if not KEEP_DIRS:
            shutil.rmtree(root, ignore_errors=True)
    request.addfinalizer(teardown)
    # bi_access preloaded, as recommended (check() names a server without it).
    settings = {"bi_access.host": "127.0.0.1", "bi_access.port": port, "bi_access.sslmode": "prefer",
                "shared_preload_libraries": "pg_stat_statements,bi_access"}
    secrets: set[str] = set()

    old.initdb(settings)
    old.start()
    assert old.value("SHOW server_version_num")[:2] == "15"
    for db in DATABASES:
        old.sql(f"CREATE DATABASE {db.dbname}")
        old.sql(db.ddl, dbname=db.dbname)
        old.sql("CREATE EXTENSION bi_access", dbname=db.dbname)
        for table in db.tables:
            old.sql(table.expose_sql, dbname=db.dbname)
        old.sql("SELECT * FROM bi_access.sync_tables()", dbname=db.dbname)
    old.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
    old.sql(CHECK_CLEAN_SETUP)
    for db in DATABASES:
        old.sql(f'GRANT CONNECT ON DATABASE {db.dbname} TO "{reader_group(old, db.dbname)}", {ADMIN_ROLE}')
    before = {db.dbname: superuser_rows(old, db) for db in DATABASES}
    readers: dict[tuple[str, str], Credential] = {}
    for db in DATABASES:
        bi = bi_on(old, db.dbname, secrets)
        for org in db.orgs:
            readers[db.dbname, org] = bi.generate(org, "bi", wait_replica=False)
        bi.close()
    bi = bi_on(old, SAAS.dbname, secrets)
    revoked = bi.generate(REVOKED_ORG, "revoked", wait_replica=False)
    bi.one("revoke", revoked.role)
    bi.close()
    # What the upgrade must keep: the credentials work on 15 as set up.
    for (dbname, org), cred in readers.items():
        db = SAAS if dbname == SAAS.dbname else CRM
        assert_sees_only_its_org(old, db, cred, org, before[dbname])
    facts = types.SimpleNamespace(
        system=system_identifier(old),
        databases=old.sql("SELECT datname::text, oid::bigint FROM pg_database ORDER BY 1"),
        marks={db.dbname: old.sql(MARKS, dbname=db.dbname) for db in DATABASES},
        rows=before,
    )
    # pg_upgrade needs a clean shutdown of the old cluster.
    old.stop("fast")

    new.initdb(settings)
    started = time.monotonic()
    # Its own ports for the servers it starts, and its socket directory (and
    # its working directory, where it writes) under root.
    out = run_as_postgres([new.tool("pg_upgrade"), "-b", str(OLD_BIN), "-B", str(NEW_BIN),
                           "-d", str(old.datadir), "-D", str(new.datadir), "-U", SUPERUSER,
                           "-p", str(free_port()), "-P", str(free_port()), "-s", str(root)],
                          cwd=root)
    print(f"pg_upgrade took {time.monotonic() - started:.1f}s:\n{out.stdout}")
    new.start()
    return types.SimpleNamespace(old=old, new=new, readers=readers, revoked=revoked,
                                 facts=facts, secrets=secrets)


def creds_by_db(up) -> dict[str, list[Credential]]:
    """Every credential of each database whose role exists (live and revoked)."""
    saas = [cred for (dbname, _), cred in up.readers.items() if dbname == SAAS.dbname]
    crm = [cred for (dbname, _), cred in up.readers.items() if dbname == CRM.dbname]
    return {SAAS.dbname: [*saas, up.revoked], CRM.dbname: crm}


@pytest.fixture(scope="module")
def synced(upgraded):
    """The next sync after pg_upgrade, in each database, as the application's
    admin role (a procedure that commits per table)."""
    for db in DATABASES:
        conn = login(upgraded.new.tcp_args(db.dbname, ADMIN_ROLE, ADMIN_PASSWORD))
        try:
            with conn.cursor() as cur:
                cur.execute("CALL bi_access.sync()")
        finally:
            conn.close()
    return upgraded


# --- on 17, before any sync -------------------------------------------------


def test_pg_upgrade_keeps_oids_and_marks_but_not_the_system_identifier(upgraded):
    new, facts = upgraded.new, upgraded.facts
    assert new.value("SHOW server_version_num")[:2] == "17"
    for db in DATABASES:
        assert new.value("SELECT extversion FROM pg_extension WHERE extname = 'bi_access'",
                         dbname=db.dbname) == VERSION
        # The roles, their OIDs and their COMMENTs (the custody marks) as on 15.
        assert new.sql(MARKS, dbname=db.dbname) == facts.marks[db.dbname]
    # pg_upgrade keeps database OIDs (from 15 on) but the new cluster keeps
    # the system identifier its initdb gave it: every mark names the old one.
    assert new.sql("SELECT datname::text, oid::bigint FROM pg_database ORDER BY 1") == facts.databases
    assert system_identifier(new) != facts.system
    for marks in facts.marks.values():
        assert marks and all(f"system {facts.system} " in mark for _, _, mark in marks)


def test_the_exposed_rows_are_unchanged(upgraded):
    for db in DATABASES:
        assert superuser_rows(upgraded.new, db) == upgraded.facts.rows[db.dbname]
        assert_orgs_distinguishable(types.SimpleNamespace(
            dbname=db.dbname, orgs=db.orgs, all_rows=upgraded.facts.rows[db.dbname]))


def test_credentials_log_in_with_their_old_passwords_and_see_only_their_org(upgraded):
    new = upgraded.new
    for (dbname, org), cred in upgraded.readers.items():
        db = SAAS if dbname == SAAS.dbname else CRM
        assert_sees_only_its_org(new, db, cred, org, superuser_rows(new, db))
    # The URL handed out on 15, as a client keeps it, works as is.
    for cred in upgraded.readers.values():
        conn = psycopg2.connect(cred.url, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user")
                assert cur.fetchone() == (cred.role,)
        finally:
            conn.close()
    # The verifier pg_upgrade copied is SCRAM's.
    roles = [cred.role for cred in upgraded.readers.values()]
    assert new.value("SELECT bool_and(rolpassword LIKE 'SCRAM-SHA-256$%%') FROM pg_authid "
                     "WHERE rolname = ANY(%s)", (roles,))
    assert_login_refused(upgraded.revoked.login_args(new))


def test_credentials_stay_managed_here_and_every_reveal_works(upgraded):
    """A role whose mark names this database and that is a member of this
    database's reader group was carried here physically (pg_upgrade keeps
    database and role OIDs and copies the key): it is this database's, not a
    copy's nor a restored one awaiting adoption."""
    new = upgraded.new
    for dbname, creds in creds_by_db(upgraded).items():
        bi = bi_on(new, dbname, upgraded.secrets)
        try:
            statuses = {r["role_name"]: (str(r["status"]), r["last_error"])
                        for r in bi.query("SELECT role_name::text, status, last_error FROM bi_access.credentials")}
            assert statuses == {cred.role: ("deactivated" if cred is upgraded.revoked else "active", None)
                                for cred in creds}
            for cred in creds:
                if cred is upgraded.revoked:
                    with pytest.raises(psycopg2.Error) as info:
                        bi.one("connection_details", cred.role)
                    assert info.value.pgcode == "55000"
                    continue
                details = bi.one("connection_details", cred.role)
                assert (details["username"], details["password"], details["url"]) == \
                    (cred.role, cred.password, cred.url)
        finally:
            bi.close()


def test_before_the_sync_memberships_allow_set_role_and_check_names_them(upgraded):
    """pg_dumpall of a 15 cluster grants memberships with no options; on 17
    that means SET TRUE: the hole 16 closes is open until the next sync, and
    check() names every credential role with such a membership."""
    new = upgraded.new
    for dbname, creds in creds_by_db(upgraded).items():
        memberships = new.sql(MEMBERSHIPS, dbname=dbname)
        assert {(r, g) for r, g, *_ in memberships} == \
            {(c.role, g) for c in creds for g in (reader_group(new, dbname), "bi_access_credential")}
        assert all(set_option for _, _, _, set_option, _, _ in memberships)
        # That is all check() finds (besides the regime that bounds lock waits).
        assert set(new.sql("SELECT severity, object, finding FROM bi_access.check() WHERE object <> 'lock waits'",
                           dbname=dbname)) == \
            {("error", f"role {cred.role}", MEMBERSHIP_FINDING) for cred in creds}
    cred = upgraded.readers[SAAS.dbname, "101"]
    with session(cred, new) as s:
        assert s.run(f'SET ROLE "{reader_group(new, SAAS.dbname)}"').ok


# --- on 17, after the next CALL bi_access.sync() -----------------------------


def test_the_sync_gives_every_membership_the_16_form(synced):
    new = synced.new
    for dbname, creds in creds_by_db(synced).items():
        reader = reader_group(new, dbname)
        memberships = new.sql(MEMBERSHIPS, dbname=dbname)
        # One membership per group (no second grant beside the old one),
        # inheriting, without SET and ADMIN.
        assert sorted((r, g, i, s, a) for r, g, i, s, a, _ in memberships) == \
            sorted((c.role, g, True, False, False) for c in creds for g in (reader, "bi_access_credential"))
        assert membership_findings(new, dbname) == set()
    for (dbname, _), cred in synced.readers.items():
        with session(cred, new) as s:
            for group in (reader_group(new, dbname), "bi_access_credential"):
                assert s.run(f'SET ROLE "{group}"').state == PERMISSION_DENIED


def test_the_sync_marks_the_roles_with_the_new_system(synced):
    new, facts = synced.new, synced.facts
    system = system_identifier(new)
    for db in DATABASES:
        database = new.value("SELECT oid::bigint FROM pg_database WHERE datname = %s", (db.dbname,))
        marks = new.sql(MARKS, dbname=db.dbname)
        assert [(r, o) for r, o, _ in marks] == [(r, o) for r, o, _ in facts.marks[db.dbname]]
        assert all(mark == f"bi_access credential: system {system} database {database}" for _, _, mark in marks)
        # Re-marked, not adopted: one event says so.
        events = new.sql("SELECT action, detail->>'roles' FROM bi_access.events "
                         "WHERE action IN ('adopt', 'remark')", dbname=db.dbname)
        assert events == [("remark", str(len(marks)))]


def test_check_is_clean_after_the_sync(synced):
    for db in DATABASES:
        assert synced.new.sql("SELECT * FROM bi_access.check() WHERE object <> 'lock waits'", dbname=db.dbname) == []


def test_a_second_sync_changes_nothing(synced):
    new = synced.new
    state = {db.dbname: (new.sql(MEMBERSHIPS, dbname=db.dbname), new.sql(MARKS, dbname=db.dbname))
             for db in DATABASES}
    for db in DATABASES:
        conn = login(new.tcp_args(db.dbname, ADMIN_ROLE, ADMIN_PASSWORD))
        try:
            with conn.cursor() as cur:
                cur.execute("CALL bi_access.sync()")
        finally:
            conn.close()
    assert {db.dbname: (new.sql(MEMBERSHIPS, dbname=db.dbname), new.sql(MARKS, dbname=db.dbname))
            for db in DATABASES} == state


def test_after_the_sync_reveals_logins_and_isolation_hold(synced):
    new = synced.new
    for (dbname, org), cred in synced.readers.items():
        db = SAAS if dbname == SAAS.dbname else CRM
        bi = bi_on(new, dbname, synced.secrets)
        try:
            assert bi.one("connection_details", cred.role)["password"] == cred.password
        finally:
            bi.close()
        assert_sees_only_its_org(new, db, cred, org, superuser_rows(new, db))
    assert_login_refused(synced.revoked.login_args(new))


def test_a_new_credential_works_on_17(synced):
    new = synced.new
    bi = bi_on(new, CRM.dbname, synced.secrets)
    try:
        org = next(iter(CRM.orgs))
        cred = bi.generate(org, "after-upgrade", wait_replica=False)
    finally:
        bi.close()
    assert_sees_only_its_org(new, CRM, cred, org, superuser_rows(new, CRM))
    assert {(g, s) for r, g, _, s, _, _ in new.sql(MEMBERSHIPS, dbname=CRM.dbname) if r == cred.role} == \
        {(reader_group(new, CRM.dbname), False), ("bi_access_credential", False)}
