"""bi_access.audit_reads: with pgaudit loaded (Debian's postgresql-15-pgaudit,
shared_preload_libraries = 'pgaudit' on a scratch server of its own), every
credential role carries pgaudit.log = 'read' as a role setting (new ones at
generate, existing ones at the next sync), so a credential's SELECT lands in
the server log under its role name, and an application role's does not.
check() reports the setting on while pgaudit is not loaded (the shared pair,
which does not load it).

pgaudit is packaged by Debian for the system PostgreSQL 15 only: on another
major these tests are skipped, with the reason."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import psycopg2
import pytest

from bi import login, raises_sqlstate
from cluster import PG_BIN, ReplicaPair, wait_until

PERMISSION_DENIED = "42501"
AUDIT_SETTING = "pgaudit.log=read"
DB = "audited"
APP_ROLE, APP_PASSWORD = "audit_app", "audit-app-password-not-a-bi-secret"


def server_major() -> int:
    out = subprocess.run([str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True,
                         check=True).stdout
    return int(re.search(r"\) (\d+)", out).group(1))


MAJOR = server_major()
needs_pgaudit = pytest.mark.skipif(
    MAJOR != 15, reason=f"pgaudit is packaged by Debian (postgresql-15-pgaudit) for PostgreSQL 15 only; "
                        f"the server under test is {MAJOR}")


@pytest.fixture(scope="module")
def audited():
    """A scratch primary with pgaudit loaded and log_statement off, so every
    statement in its log is there because pgaudit logged it."""
    scratch = ReplicaPair()
    try:
        scratch._init_primary({"shared_preload_libraries": "pgaudit", "log_statement": "none",
                               "pgaudit.log_parameter": "off"})
        scratch.primary.start()
        server = scratch.primary
        server.sql(f"CREATE DATABASE {DB}")
        server.sql("""
            CREATE TABLE readings (id serial PRIMARY KEY, org_id integer NOT NULL, v integer);
            INSERT INTO readings (org_id, v) SELECT 1 + g % 2, g FROM generate_series(1, 10) g;
            CREATE EXTENSION bi_access;
            SELECT bi_access.expose_table('readings');
            SELECT * FROM bi_access.sync_tables();
        """, dbname=DB)
        server.sql(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD %s", (APP_PASSWORD,))
        server.sql(f"GRANT SELECT ON readings TO {APP_ROLE}", dbname=DB)
        yield server
    finally:
        scratch.destroy()


def set_audit_reads(server, value: str | None) -> None:
    """ALTER SYSTEM (after LOAD: on 15 a bi_access.* name is unknown until the
    library is loaded in the session) and a reload."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("LOAD 'bi_access'")
            if value is None:
                cur.execute("ALTER SYSTEM RESET bi_access.audit_reads")
            else:
                cur.execute("ALTER SYSTEM SET bi_access.audit_reads = %s", (value,))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()
    time.sleep(0.5)  # backends handle the reload before their next command


def generate(server, org: str) -> dict:
    conn = server.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT username, password FROM bi_access.generate(%s, %s)",
                        (org, f"a-{uuid.uuid4().hex[:8]}"))
            role, password = cur.fetchone()
    finally:
        conn.close()
    return {"host": "127.0.0.1", "port": server.port, "dbname": DB, "user": role, "password": password,
            "sslmode": "disable", "connect_timeout": 10}


def has_audit_setting(server, role: str) -> bool:
    return server.value(
        "SELECT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "WHERE r.rolname = %s AND s.setdatabase = 0 AND %s = ANY (s.setconfig))", (role, AUDIT_SETTING))


def read_as(args: dict) -> str:
    """Runs a SELECT with a unique marker; returns the marker."""
    marker = f"m{uuid.uuid4().hex}"
    conn = login(args)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM readings /* {marker} */")
            cur.fetchall()
    finally:
        conn.close()
    return marker


def audit_lines(server, marker: str) -> list[str]:
    return [line for line in server.read_log().splitlines() if marker in line and "AUDIT: SESSION" in line]


def assert_logged_as(server, marker: str, role: str) -> None:
    wait_until(lambda: audit_lines(server, marker), 5, f"pgaudit's line for {marker}")
    lines = audit_lines(server, marker)
    assert len(lines) == 1, lines
    # log_line_prefix '%m [%p] %q%u@%d ' names the role; pgaudit names the class.
    assert f" {role}@{DB} LOG:  AUDIT: SESSION," in lines[0], lines[0]
    assert ",READ,SELECT," in lines[0], lines[0]


@needs_pgaudit
def test_off_by_default_no_credential_is_audited(audited):
    assert audited.value("SELECT current_setting('pgaudit.log')") == "none"
    cred = generate(audited, "1")
    assert not has_audit_setting(audited, cred["user"])
    marker = read_as(cred)
    time.sleep(0.5)
    assert audit_lines(audited, marker) == []


@needs_pgaudit
def test_a_credentials_select_is_logged_with_its_role_and_an_application_roles_is_not(audited):
    before = generate(audited, "2")  # exists before the setting is turned on
    set_audit_reads(audited, "on")
    try:
        new = generate(audited, "1")
        assert has_audit_setting(audited, new["user"])
        assert_logged_as(audited, read_as(new), new["user"])

        app = {**new, "user": APP_ROLE, "password": APP_PASSWORD}
        app_marker = read_as(app)
        time.sleep(0.5)
        assert audit_lines(audited, app_marker) == []

        # An existing credential gets it at the next sync, not before.
        assert not has_audit_setting(audited, before["user"])
        audited.sql("SELECT * FROM bi_access.sync_tables()", dbname=DB)
        assert has_audit_setting(audited, before["user"])
        assert_logged_as(audited, read_as(before), before["user"])
    finally:
        set_audit_reads(audited, None)


@needs_pgaudit
def test_call_sync_applies_it_and_turning_it_off_takes_it_away(audited):
    cred = generate(audited, "2")
    assert not has_audit_setting(audited, cred["user"])
    set_audit_reads(audited, "on")
    try:
        audited.sql("CALL bi_access.sync()", dbname=DB)
        assert has_audit_setting(audited, cred["user"])
    finally:
        set_audit_reads(audited, None)
    audited.sql("CALL bi_access.sync()", dbname=DB)
    assert not has_audit_setting(audited, cred["user"])
    assert audited.value("SELECT count(*) FROM pg_db_role_setting WHERE %s = ANY (setconfig)",
                         (AUDIT_SETTING,)) == 0


@needs_pgaudit
def test_a_copy_of_the_database_leaves_the_originals_roles_alone(audited):
    cred = generate(audited, "1")
    audited.sql(f"CREATE DATABASE {DB}_copy TEMPLATE {DB}")
    set_audit_reads(audited, "on")
    try:
        audited.sql("SELECT * FROM bi_access.sync_tables()", dbname=f"{DB}_copy")
        assert not has_audit_setting(audited, cred["user"])
        audited.sql("SELECT * FROM bi_access.sync_tables()", dbname=DB)
        assert has_audit_setting(audited, cred["user"])
    finally:
        set_audit_reads(audited, None)
    audited.sql("SELECT * FROM bi_access.sync_tables()", dbname=DB)
    assert not has_audit_setting(audited, cred["user"])


@needs_pgaudit
def test_a_credential_cannot_turn_its_audit_off(audited):
    set_audit_reads(audited, "on")
    try:
        cred = generate(audited, "1")
        conn = login(cred)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW pgaudit.log")
                assert cur.fetchone() == ("read",)
                with raises_sqlstate(PERMISSION_DENIED):
                    cur.execute("SET pgaudit.log = 'none'")
        finally:
            conn.close()
        # Nor from the startup packet (libpq hides a FATAL's SQLSTATE: the message says it).
        with pytest.raises(psycopg2.OperationalError) as info:
            login({**cred, "options": "-c pgaudit.log=none"}).close()
        assert 'permission denied to set parameter "pgaudit.log"' in str(info.value)
    finally:
        set_audit_reads(audited, None)


@needs_pgaudit
def test_check_is_quiet_when_pgaudit_is_loaded(audited):
    set_audit_reads(audited, "on")
    try:
        findings = audited.sql("SELECT object FROM bi_access.check()", dbname=DB)
        assert ("setting bi_access.audit_reads",) not in findings
    finally:
        set_audit_reads(audited, None)


def test_check_reports_audit_reads_on_while_pgaudit_is_not_loaded(pair, bi, saas_db):
    """The shared pair does not load pgaudit; this holds on every major."""
    assert "pgaudit" not in pair.primary.value("SHOW shared_preload_libraries")
    finding = "SELECT severity, finding FROM bi_access.check() WHERE object = 'setting bi_access.audit_reads'"
    assert bi.query(finding) == []
    set_audit_reads(pair.primary, "on")
    try:
        rows = bi.query(finding)
        assert len(rows) == 1 and rows[0]["severity"] == "warning", rows
        assert "pgaudit is not in shared_preload_libraries" in rows[0]["finding"]
        # Nothing to apply a setting to: no credential gets a placeholder.
        cred = bi.generate("101", wait_replica=False)
        assert not has_audit_setting(pair.primary, cred.role)
    finally:
        set_audit_reads(pair.primary, None)
    assert bi.query(finding) == []
