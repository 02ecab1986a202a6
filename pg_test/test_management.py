"""Management that cannot be misused (issue 11, DESIGN.md property 7, "org key
matching", the expose_table row, property 8's backtraces):

- a NON-superuser admin (a LOGIN role in bi_access_admin that owns nothing)
  exposes only tables whose owner it belongs to and that it can read itself,
  never bi_access's own tables or a system catalog, never an org column of a
  type keys are not matched against, with DESIGN.md's SQLSTATEs;
- an org key matches a row iff it equals the row's org value cast to text,
  exactly, for every accepted column type, and a key that is no value of the
  column's type matches nothing without an error;
- with RUST_BACKTRACE=1 in the server's environment, no error a client gets
  carries a Rust backtrace or a build path, in any field.

Database `mgmt` holds the tables; `mgmt_admin` is the admin."""

from __future__ import annotations

import os
import re

import psycopg2
import psycopg2.errors
import pytest

from bi import BiAccess, unique_label
from cluster import VIEWS_CAN_BE_SECURITY_INVOKER, ReplicaPair, pg_tool, run_as_postgres
from probe import Session, create_database, table_locked

DB = "mgmt"
ADMIN, ADMIN_PASSWORD = "mgmt_admin", "mgmt-admin-password-not-a-bi-secret"
OWNER = "mgmt_owner"

ACME = "0a0eebc9-9c0b-4ef8-bb6d-6bb9bd380a11"
GLOBEX = "1b1eebc9-9c0b-4ef8-bb6d-6bb9bd380a22"

SCHEMA = f"""
CREATE EXTENSION citext;
CREATE ROLE {OWNER} NOLOGIN;

-- What the admin may not read: another schema, another owner.
CREATE SCHEMA hr;
CREATE TABLE hr.salaries (id serial PRIMARY KEY, org_id bigint NOT NULL, employee text, amount int);
INSERT INTO hr.salaries (org_id, employee, amount) VALUES (42, 'alice', 100), (7, 'bob', 200);

-- What the admin may expose once it is a member of their owner.
CREATE TABLE public.projects (id serial PRIMARY KEY, org_id bigint NOT NULL, name text NOT NULL);
CREATE INDEX ON public.projects (org_id);
INSERT INTO public.projects (org_id, name) VALUES (42, 'roadmap'), (42, 'hiring'), (7, 'secret plan'),
  (-7, 'negative');
CREATE TABLE public.flags (id serial PRIMARY KEY, org_id boolean NOT NULL, note text);
INSERT INTO public.flags (org_id, note) VALUES (true, 'every org'), (false, 'no org');
ALTER TABLE public.projects OWNER TO {OWNER};
ALTER TABLE public.flags OWNER TO {OWNER};

-- One table per accepted org column type, for the key-matching table.
CREATE TABLE public.keys_bigint (org_id bigint NOT NULL);
CREATE TABLE public.keys_integer (org_id integer NOT NULL);
CREATE TABLE public.keys_smallint (org_id smallint NOT NULL);
CREATE TABLE public.keys_text (org_id text NOT NULL);
CREATE TABLE public.keys_varchar (org_id varchar(12) NOT NULL);
CREATE TABLE public.keys_uuid (org_id uuid NOT NULL);
CREATE TABLE public.keys_citext (org_id citext NOT NULL);
INSERT INTO public.keys_bigint VALUES (42), (42), (-7), (0);
INSERT INTO public.keys_integer VALUES (42), (42), (-7), (0);
INSERT INTO public.keys_smallint VALUES (42), (42), (-7), (0);
INSERT INTO public.keys_text VALUES ('acme'), ('acme'), ('42'), ('Globex');
INSERT INTO public.keys_varchar VALUES ('acme'), ('acme'), ('42'), ('Globex');
INSERT INTO public.keys_uuid VALUES ('{ACME}'), ('{ACME}'), ('{GLOBEX}');
INSERT INTO public.keys_citext VALUES ('Acme'), ('acme'), ('Globex');
"""

EXPOSE = """
SELECT bi_access.expose_table('public.keys_bigint');
SELECT bi_access.expose_table('public.keys_integer');
SELECT bi_access.expose_table('public.keys_smallint');
SELECT bi_access.expose_table('public.keys_text');
SELECT bi_access.expose_table('public.keys_varchar');
SELECT bi_access.expose_table('public.keys_uuid');
SELECT bi_access.expose_table('public.keys_citext');
"""


class AdminBi(BiAccess):
    """bi_access called by the non-superuser admin of this file."""

    def connect(self):
        conn = psycopg2.connect(**self.pair.primary.tcp_args(self.dbname, ADMIN, ADMIN_PASSWORD))
        conn.autocommit = True
        return conn


@pytest.fixture(scope="module")
def mgmt(request, pair, secrets) -> AdminBi:
    create_database(pair, DB, SCHEMA, EXPOSE)
    if not pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (ADMIN,)):
        pair.primary.sql(f"CREATE ROLE {ADMIN} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
    assert pair.primary.value("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", (ADMIN,)) is False
    admin = AdminBi(pair, DB, secrets)
    request.addfinalizer(admin.close)
    return admin


def exposed(pair, table: str) -> bool:
    return pair.primary.value("SELECT EXISTS (SELECT FROM bi_access.exposed_table "
                              "WHERE tbl = %s::regclass AND NOT hidden)", (table,), dbname=DB)


def fails(admin: AdminBi, sql: str, params=None) -> str:
    """The SQLSTATE `sql` fails with as the admin ('ok' if it does not)."""
    conn = admin.connect()
    try:
        outcome = Session(conn).run(sql, params)
    finally:
        conn.close()
    return outcome.state


# ==========================================================================
# The reproductions of issue 11, as the non-superuser admin

def test_exposing_hr_salaries_without_access_is_42501(pair, mgmt):
    oid = pair.primary.value("SELECT 'hr.salaries'::regclass::oid", dbname=DB)
    # By OID, as the issue did: the regclass input never checks the schema.
    assert fails(mgmt, "SELECT bi_access.expose_table(%s::oid::regclass, 'org_id')", (oid,)) == "42501"
    assert fails(mgmt, "SELECT bi_access.expose_table(%s::oid::regclass, 'employee')", (oid,)) == "42501"
    assert not exposed(pair, "hr.salaries")
    acl = pair.primary.value("SELECT relacl::text FROM pg_class WHERE oid = 'hr.salaries'::regclass", dbname=DB)
    assert acl is None, f"no grant was made: {acl}"


def test_exposing_bi_access_credential_is_42809(pair, mgmt):
    for table, column in [("bi_access.credential", "org_id"), ("bi_access.event", "org_id"),
                          ("bi_access.credentials", "org_id"), ("pg_catalog.pg_authid", "oid")]:
        assert fails(mgmt, f"SELECT bi_access.expose_table('{table}', '{column}')") == "42809", table
    assert pair.primary.value("SELECT count(*) FROM bi_access.exposed_table WHERE tbl::text LIKE 'bi_access.%%' "
                              "OR tbl::text LIKE 'pg_%%'", dbname=DB) == 0


def test_a_boolean_org_column_is_42804(pair, mgmt):
    # 42501 comes first: the admin may not touch the table at all yet.
    assert fails(mgmt, "SELECT bi_access.expose_table('public.flags')") == "42501"
    pair.primary.sql(f"GRANT {OWNER} TO {ADMIN}")
    try:
        assert fails(mgmt, "SELECT bi_access.expose_table('public.flags')") == "42804"
        assert fails(mgmt, "SELECT bi_access.expose_table('public.flags', 'no_such_column')") == "42703"
    finally:
        pair.primary.sql(f"REVOKE {OWNER} FROM {ADMIN}")
    assert not exposed(pair, "public.flags")


def test_hide_table_pg_class_is_42809(pair, mgmt):
    assert fails(mgmt, "SELECT bi_access.hide_table('pg_class')") == "42809"
    assert fails(mgmt, "SELECT bi_access.hide_table('information_schema.tables')") == "42809"
    assert pair.primary.value("SELECT count(*) FROM bi_access.exposed_table "
                              "WHERE tbl = 'pg_class'::regclass", dbname=DB) == 0


def test_a_member_of_the_owner_with_usage_and_select_exposes_and_a_credential_reads_its_org(pair, mgmt):
    assert fails(mgmt, "SELECT bi_access.expose_table('public.projects')") == "42501"
    pair.primary.sql(f"GRANT {OWNER} TO {ADMIN}")
    try:
        assert fails(mgmt, "SELECT bi_access.expose_table('public.projects')") == "ok"
        # A migration run twice changes nothing.
        assert fails(mgmt, "SELECT bi_access.expose_table('public.projects')") == "ok"
    finally:
        pair.primary.sql(f"REVOKE {OWNER} FROM {ADMIN}")
    assert exposed(pair, "public.projects")
    cred = mgmt.generate("42", unique_label("mgmt"), wait_replica=False)
    s = Session.of(cred, pair.primary)
    try:
        assert s.rows("SELECT org_id, name FROM public.projects ORDER BY name") == [(42, "hiring"), (42, "roadmap")]
        assert s.run("SELECT count(*) FROM hr.salaries").state == "42501"
    finally:
        s.close()
    # No longer a member of the owner: hiding it is refused too.
    assert fails(mgmt, "SELECT bi_access.hide_table('public.projects')") == "42501"
    assert exposed(pair, "public.projects")


def test_hide_table_of_a_table_bi_access_does_not_know_is_55000(pair, mgmt):
    pair.primary.sql("CREATE TABLE IF NOT EXISTS public.unrelated (id int)", dbname=DB)
    pair.primary.sql(f"ALTER TABLE public.unrelated OWNER TO {OWNER}", dbname=DB)
    pair.primary.sql(f"GRANT {OWNER} TO {ADMIN}")
    try:
        assert fails(mgmt, "SELECT bi_access.hide_table('public.unrelated')") == "55000"
    finally:
        pair.primary.sql(f"REVOKE {OWNER} FROM {ADMIN}")


PAYROLL = "public.payroll"


@pytest.fixture
def payroll(pair, mgmt):
    """A new table (in an exposed schema, with the org column) that the admin
    may not read: the superuser's, no grant."""
    pair.primary.sql(f"CREATE TABLE {PAYROLL} (org_id bigint NOT NULL, salary int NOT NULL); "
                     f"INSERT INTO {PAYROLL} VALUES (42, 1000), (42, 1100), (7, 9000)", dbname=DB)
    yield PAYROLL
    pair.primary.sql(f"DROP TABLE {PAYROLL}", dbname=DB)


SYNCS = {"sync_tables()": "SELECT * FROM bi_access.sync_tables()", "CALL sync()": "CALL bi_access.sync()"}


@pytest.mark.parametrize("sync", SYNCS)
def test_a_sync_by_the_admin_leaves_a_new_table_it_cannot_read_new(pair, mgmt, payroll, sync):
    """Issue 25's confused deputy: the non-superuser admin, refused by
    expose_table on a table it cannot read, runs a sync, which runs with the
    extension owner's rights. The sync checks the admin as expose_table does:
    the table stays new, a NOTICE names it and the rights the admin lacks,
    and unsynced_tables() lists it with that reason. A DBA's expose_table then
    exposes it, and a credential reads its org's rows of it."""
    conn = mgmt.connect()
    try:
        s = Session(conn)
        assert s.run(f"SELECT * FROM {payroll}").state == "42501", "control: the admin may not read it"
        assert s.run(f"SELECT bi_access.expose_table('{payroll}')").state == "42501"
        outcome = s.run(SYNCS[sync])
        assert outcome.ok, str(outcome)
        lacks = f'it lacks membership in its owner postgres, SELECT on it'
        named = [n for n in outcome.notices if payroll in n]
        assert len(named) == 1 and "new table not exposed" in named[0] and lacks in named[0], outcome.notices
        assert not exposed(pair, payroll)
        reasons = s.rows("SELECT reason FROM bi_access.unsynced_tables() WHERE tbl = %s::regclass", (payroll,))
        assert len(reasons) == 1 and reasons[0][0].startswith("new table with the org column, not exposable: "
                                                              f"{ADMIN} may not expose or hide {payroll}: {lacks}"), \
            reasons
    finally:
        conn.close()
    # The superuser's unsynced_tables(): a new table it could expose.
    assert pair.primary.sql("SELECT reason FROM bi_access.unsynced_tables() WHERE tbl = %s::regclass",
                            (payroll,), dbname=DB) == [("new table with the org column, not exposed",)]
    pair.primary.sql(f"SELECT bi_access.expose_table('{payroll}')", dbname=DB)
    assert exposed(pair, payroll)
    cred = mgmt.generate("42", unique_label("payroll"), wait_replica=False)
    s = Session.of(cred, pair.primary)
    try:
        assert s.rows(f"SELECT * FROM {payroll} ORDER BY salary") == pair.primary.sql(
            f"SELECT * FROM {payroll} WHERE org_id = 42 ORDER BY salary", dbname=DB)
    finally:
        s.close()
    mgmt.one("delete", cred.role)


# ==========================================================================
# Org key matching, per column type: (table, key, rows it reads)

KEYS = [
    *[(f"keys_{t}", key, n) for t in ("bigint", "integer", "smallint") for key, n in [
        ("42", 2), ("-7", 1), ("0", 1),
        (" 42 ", 0), ("42 ", 0), ("+42", 0), ("042", 0), ("42.0", 0), ("-07", 0), ("-0", 0), ("4e1", 0),
        ("acme", 0), ("99999999999999999999", 0)]],
    ("keys_smallint", "70000", 0),
    ("keys_uuid", ACME, 2), ("keys_uuid", GLOBEX, 1),
    ("keys_uuid", ACME.upper(), 0), ("keys_uuid", "{" + ACME + "}", 0), ("keys_uuid", ACME.replace("-", ""), 0),
    ("keys_uuid", " " + ACME, 0), ("keys_uuid", "acme", 0),
    *[(f"keys_{t}", key, n) for t in ("text", "varchar") for key, n in [
        ("acme", 2), ("42", 1), ("Globex", 1),
        ("ACME", 0), ("Acme", 0), (" acme", 0), ("acme ", 0), ("042", 0), ("+42", 0), ("globex", 0),
        ("a-key-longer-than-twelve", 0)]],
    # citext compares as citext does: case-insensitively (README says so).
    ("keys_citext", "acme", 2), ("keys_citext", "ACME", 2), ("keys_citext", "globex", 1),
    ("keys_citext", " acme", 0), ("keys_citext", "acme ", 0), ("keys_citext", "42", 0),
]


@pytest.fixture(scope="module")
def key_creds(pair, mgmt) -> dict[str, object]:
    """One credential per distinct key, generated by the non-superuser admin
    (keys are text: generate accepts every one of them as an org of its own)."""
    creds = {key: mgmt.generate(key, unique_label("keys"), wait_replica=False) for key in {k for _, k, _ in KEYS}}
    return creds


@pytest.mark.parametrize("table, key, rows", KEYS, ids=[f"{t}-{k!r}" for t, k, _ in KEYS])
def test_org_key_matching(pair, key_creds, table, key, rows):
    s = Session.of(key_creds[key], pair.primary)
    try:
        outcome = s.run(f"SELECT count(*) FROM public.{table}")
    finally:
        s.close()
    assert outcome.ok, f"key {key!r} on {table}: {outcome}"
    assert outcome.rows == [(rows,)], f"key {key!r} on {table}"


def test_the_org_lookup_is_planned_as_the_key_on_the_columns_index(pair, key_creds, mgmt):
    pair.primary.sql("CREATE INDEX IF NOT EXISTS keys_bigint_org ON public.keys_bigint (org_id)", dbname=DB)
    # A credential may run EXPLAIN only where bi_access.allow_explain is on.
    pair.primary.sql(f"ALTER DATABASE {DB} SET bi_access.allow_explain = on")
    s = Session.of(key_creds["42"], pair.primary)
    try:
        s.rows("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in s.rows("EXPLAIN SELECT * FROM public.keys_bigint"))
    finally:
        s.close()
        pair.primary.sql(f"ALTER DATABASE {DB} RESET bi_access.allow_explain")
    assert "Index Cond: (org_id = '42'::bigint)" in plan and "keys_bigint_org" in plan, plan


# ==========================================================================
# check(): every definer view, refused org columns

def test_check_reports_every_view_without_security_invoker(pair, mgmt):
    pair.primary.sql("CREATE VIEW public.quiet_totals AS SELECT count(*) AS n FROM public.keys_text", dbname=DB)
    try:
        found = {(r["severity"], r["object"]) for r in mgmt.query("SELECT * FROM bi_access.check()")}
        if VIEWS_CAN_BE_SECURITY_INVOKER:
            assert ("warning", "public.quiet_totals") in found, found
        else:  # 14: every view is one; only those BI roles may read are reported
            assert not any(obj == "public.quiet_totals" for _, obj in found), found
        reader = pair.primary.value("SELECT reader_role::text FROM bi_access.config", dbname=DB)
        pair.primary.sql(f"GRANT SELECT ON public.quiet_totals TO {reader}", dbname=DB)
        found = {(r["severity"], r["object"]) for r in mgmt.query("SELECT * FROM bi_access.check()")}
        assert ("error", "public.quiet_totals") in found, found
    finally:
        pair.primary.sql("DROP VIEW public.quiet_totals", dbname=DB)


def test_check_reports_an_exposed_logical_replication_target(pair, mgmt):
    """A subscription in `mgmt` that applies into an exposed table. Its owner
    is a superuser (PostgreSQL 15 wants one), so the apply worker bypasses
    RLS: a warning; once that owner loses SUPERUSER, RLS stops the worker: an
    error."""
    pub_db, sub_owner = "mgmt_pub", "mgmt_sub_owner"
    pair.primary.sql(f"CREATE DATABASE {pub_db}")
    pair.primary.sql("CREATE TABLE public.keys_text (org_id text NOT NULL); "
                     "CREATE PUBLICATION mgmt_pub FOR TABLE public.keys_text", dbname=pub_db)
    pair.primary.sql(f"CREATE ROLE {sub_owner} SUPERUSER NOLOGIN")
    conninfo = f"host={pair.primary.socket_dir} port={pair.primary.port} user=postgres dbname={pub_db}"
    # No slot and disabled: the table list is fetched, nothing is applied.
    pair.primary.sql(f"CREATE SUBSCRIPTION mgmt_sub CONNECTION '{conninfo}' PUBLICATION mgmt_pub "
                     "WITH (create_slot = false, slot_name = NONE, enabled = false)", dbname=DB)
    try:
        pair.primary.sql(f"ALTER SUBSCRIPTION mgmt_sub OWNER TO {sub_owner}", dbname=DB)
        assert pair.primary.value("SELECT count(*) FROM pg_subscription_rel "
                                  "WHERE srrelid = 'public.keys_text'::regclass", dbname=DB) == 1
        found = [r for r in mgmt.query("SELECT * FROM bi_access.check()") if "mgmt_sub" in r["object"]]
        assert [(r["severity"], r["object"]) for r in found] == [
            ("warning", "public.keys_text (subscription mgmt_sub)")], found
        pair.primary.sql(f"ALTER ROLE {sub_owner} NOSUPERUSER")
        found = [r for r in mgmt.query("SELECT * FROM bi_access.check()") if "mgmt_sub" in r["object"]]
        assert [r["severity"] for r in found] == ["error"], found
        assert "hide_table" in found[0]["fix"], found
    finally:
        # From 16 on a subscription whose owner is not a superuser needs a
        # password in its conninfo even to be dropped: hand it back first.
        pair.primary.sql("ALTER SUBSCRIPTION mgmt_sub OWNER TO postgres", dbname=DB)
        pair.primary.sql("DROP SUBSCRIPTION mgmt_sub", dbname=DB)
        pair.primary.sql(f"DROP ROLE {sub_owner}")
        pair.primary.sql(f"DROP DATABASE {pub_db}")


# ==========================================================================
# No Rust backtrace, no build path, with RUST_BACKTRACE=1 in the server's
# environment (a server of its own, started with it)

# What a Rust backtrace or a build machine's path looks like.
# PostgreSQL names its own source file in source_file (postgres.c, say), and
# bi_access's errors name theirs relative to the crate (src/….rs): neither is
# a path of the build machine.
BUILD_TRACES = re.compile(r"backtrace|rust_begin_unwind|panicking|pgrx|\.cargo|registry/src|/rustc/|"
                          r"/root/|/home/|/work/|/target/|/tmp/|^\s*\d+: ", re.IGNORECASE | re.MULTILINE)


@pytest.fixture(scope="module")
def backtrace_server(request):
    """A single server (no replica) whose postmaster has RUST_BACKTRACE=1."""
    scratch = ReplicaPair()
    request.addfinalizer(scratch.destroy)
    scratch._init_primary({"shared_preload_libraries": "pg_stat_statements"})
    server = scratch.primary
    run_as_postgres([pg_tool("pg_ctl"), "-D", str(server.datadir), "-l", str(server.log_file),
                     "-w", "-t", "60", "start"], env={**os.environ, "RUST_BACKTRACE": "1"})
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert b"RUST_BACKTRACE=1" in environ, "the server must run with RUST_BACKTRACE=1"
    server.sql("CREATE DATABASE bt")
    server.sql("CREATE EXTENSION bi_access", dbname="bt")
    server.sql(f"CREATE ROLE {ADMIN} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
    # Enough tables that a sync outlasts a short statement_timeout: the
    # admin's own (a sync exposes only what its caller could), and one that
    # is not.
    server.sql("DO $$ BEGIN FOR i IN 1..200 LOOP "
               "EXECUTE format('CREATE TABLE public.t%s (id int, org_id bigint)', i); "
               f"EXECUTE format('ALTER TABLE public.t%s OWNER TO {ADMIN}', i); END LOOP; END $$",
               dbname="bt")
    server.sql("CREATE TABLE public.not_yours (id int)", dbname="bt")
    return server


def error_fields(error: psycopg2.Error) -> dict[str, str]:
    d = error.diag
    return {"message": d.message_primary, "detail": d.message_detail, "hint": d.message_hint,
            "context": d.context, "source_file": d.source_file, "source_line": d.source_line,
            "source_function": d.source_function, "pgerror": error.pgerror}


def assert_clean(error: psycopg2.Error, sqlstate: str) -> None:
    assert error.pgcode == sqlstate, error.pgerror
    fields = error_fields(error)
    dirty = {name: value for name, value in fields.items() if value and BUILD_TRACES.search(value)}
    assert not dirty, f"a backtrace or build path reached the client: {dirty}"


def admin_conn(server):
    conn = psycopg2.connect(**server.tcp_args("bt", ADMIN, ADMIN_PASSWORD))
    conn.autocommit = True
    return conn


def test_set_role_postgres_from_a_credential_carries_no_backtrace(backtrace_server):
    server = backtrace_server
    admin = admin_conn(server)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT username, password FROM bi_access.generate('42', %s)", (unique_label("bt"),))
            user, password = cur.fetchone()
    finally:
        admin.close()
    conn = psycopg2.connect(**server.tcp_args("bt", user, password))
    conn.autocommit = True
    try:
        with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
            cur.execute("SET ROLE postgres")
        assert_clean(info.value, "42501")
    finally:
        conn.close()


@pytest.mark.parametrize("sql, sqlstate", [
    ("SELECT bi_access.expose_table('pg_class')", "42809"),
    ("SELECT bi_access.expose_table('public.not_yours', 'no_such_column')", "42501"),
    ("SELECT * FROM bi_access.connection_details('no_such_role')", "42704"),
])
def test_errors_bi_access_raises_carry_no_backtrace(backtrace_server, sql, sqlstate):
    """bi_access's own errors: the file/line/function fields name no path of
    the build machine either."""
    conn = admin_conn(backtrace_server)
    try:
        with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
            cur.execute(sql)
        assert_clean(info.value, sqlstate)
    finally:
        conn.close()


@pytest.mark.parametrize("lock_timeout", ["0", "30s"], ids=["blocking lock", "polled lock"])
def test_a_statement_cancelled_inside_sync_tables_carries_no_backtrace(backtrace_server, lock_timeout):
    """statement_timeout fires while sync_tables() waits for a table's lock:
    inside PostgreSQL's own lock wait (lock_timeout 0) or in bi_access's
    polling loop (lock_timeout 30s)."""
    server = backtrace_server
    with table_locked(server, "bt", "public.t100"):
        conn = admin_conn(server)
        try:
            with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
                cur.execute(f"SET lock_timeout = '{lock_timeout}'")
                cur.execute("SET statement_timeout = '1s'")
                cur.execute("SELECT * FROM bi_access.sync_tables()")
            assert_clean(info.value, "57014")
        finally:
            conn.close()


def test_a_statement_cancelled_while_syncing_many_tables_carries_no_backtrace(backtrace_server):
    """statement_timeout fires somewhere in the middle of a sync of 200
    tables, wherever that is (SPI, a policy's creation, a grant)."""
    server = backtrace_server
    conn = admin_conn(server)
    try:
        for timeout in ("20ms", "50ms", "100ms"):
            with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = '{timeout}'")
                cur.execute("SELECT * FROM bi_access.sync_tables()")
            assert_clean(info.value, "57014")
    finally:
        conn.close()
