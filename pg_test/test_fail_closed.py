"""Property 2, fail closed: whatever happens to bi_access's own objects or to an
exposed table, a credential sees its own org's rows or nothing, on the primary
and on the replica. Each test names what it did and what the credential sees
afterwards (counted against the superuser's count of its org's rows).

Also the paths the session guard closes whatever role the session SET ROLEs
to: temp objects, LISTEN/NOTIFY, large objects (through libpq's fast path
too), advisory locks, COPY FROM, a partition read directly."""

from __future__ import annotations

import io

import psycopg2
import pytest

from bi import BiAccess
from cluster import MEMBERSHIPS_ALLOW_SET_ROLE, SUPERUSER
from libpq import Connection, LoginRefused, login_state
from probe import (OK, PERMISSION_DENIED, Session, bi_for, create_database, reader_group, run_fix, session,
                   tenant_database)

DB = "failclosed"
ORG_A, ORG_B = "4101", "4202"

SCHEMA = f"""
CREATE TABLE accounts (id serial PRIMARY KEY, org_id bigint NOT NULL, name text NOT NULL);
INSERT INTO accounts (org_id, name)
  SELECT o, 'account ' || g FROM (VALUES ({ORG_A}, 3), ({ORG_B}, 5)) v(o, n), generate_series(1, n) g;

-- The application's own RLS: a permissive policy TO PUBLIC that lets every
-- row through. Only bi_access's restrictive guard keeps a credential in its org.
CREATE TABLE notes (id serial PRIMARY KEY, org_id bigint NOT NULL, body text NOT NULL);
INSERT INTO notes (org_id, body)
  SELECT o, 'note ' || g FROM (VALUES ({ORG_A}, 2), ({ORG_B}, 4)) v(o, n), generate_series(1, n) g;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_everything ON notes FOR ALL TO PUBLIC USING (true) WITH CHECK (true);

CREATE TABLE events (id int NOT NULL, org_id bigint NOT NULL) PARTITION BY LIST (org_id);
CREATE TABLE events_a PARTITION OF events FOR VALUES IN ({ORG_A});
CREATE TABLE events_b PARTITION OF events FOR VALUES IN ({ORG_B});
INSERT INTO events SELECT g, o FROM (VALUES ({ORG_A}, 2), ({ORG_B}, 6)) v(o, n), generate_series(1, n) g;
GRANT SELECT ON events_b TO PUBLIC;

CREATE SEQUENCE counter;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE counter TO PUBLIC;
"""
EXPOSE = "SELECT * FROM bi_access.sync_tables();"
TABLES = ("accounts", "notes", "events")


@pytest.fixture(scope="module")
def fdb(pair, saas_db):
    return tenant_database(pair, DB, SCHEMA, EXPOSE)


@pytest.fixture(scope="module")
def fbi(request, pair, fdb, secrets):
    return bi_for(request, pair, fdb, secrets)


@pytest.fixture(scope="module")
def cred(fbi):
    return fbi.generate(ORG_A)


def own_rows(pair, dbname: str, table: str, org: str = ORG_A) -> list:
    """What the superuser counts of `org`'s rows: the one answer a credential
    may give besides nothing."""
    return pair.primary.sql(f"SELECT * FROM {table} WHERE org_id::text = %s ORDER BY 1", (org,), dbname=dbname)


def all_rows(pair, dbname: str, table: str) -> list:
    return pair.primary.sql(f"SELECT * FROM {table} ORDER BY 1", dbname=dbname)


def assert_sees_own_rows(pair, cred, dbname: str, tables=TABLES) -> None:
    for server in (pair.primary, pair.replica):
        with session(cred, server) as s:
            for table in tables:
                rows = s.rows(f"SELECT * FROM {table} ORDER BY 1")
                assert rows == own_rows(pair, dbname, table), f"{table} on {server.name}"
                assert len(rows) < len(all_rows(pair, dbname, table))


def assert_sees_nothing(pair, cred, dbname: str, table: str) -> None:
    """The credential reads nothing of `table` on both servers, while the
    table does hold its org's rows and others': where bi_access is gone from
    the database its login is refused there (28000: no database manages it),
    elsewhere the table is refused (42501)."""
    assert own_rows(pair, dbname, table), "the table holds rows of the credential's org"
    gone = not pair.primary.sql("SELECT 1 FROM pg_extension WHERE extname = 'bi_access'", dbname=dbname)
    for server in (pair.primary, pair.replica):
        if gone:
            state = login_state({**cred.login_args(server), "dbname": dbname})
            assert state == "28000", f"{server.name}: {state}"
            continue
        with session(cred, server) as s:
            outcome = s.run(f"SELECT * FROM {table}")
            assert outcome.state == PERMISSION_DENIED, f"{server.name}: {outcome}"


def findings(pair, dbname: str) -> list[tuple]:
    return pair.primary.sql("SELECT severity, object, finding, fix FROM bi_access.check()", dbname=dbname)


# --------------------------------------------------------------------------
# the drop guard

DROPS = {
    "plain": "DROP EXTENSION bi_access",
    "cascade": "DROP EXTENSION bi_access CASCADE",
    "comment inside": "DROP /* x */ EXTENSION bi_access CASCADE",
    "unicode name": 'DROP EXTENSION U&"bi_\\0061ccess" CASCADE',
    "if exists, in a list": "DROP EXTENSION IF EXISTS plpgsql_nothing, bi_access CASCADE",
    "schema": "DROP SCHEMA bi_access CASCADE",
    "internal schema": 'DROP SCHEMA "bi_access_internal" CASCADE',
    "dynamic SQL": "DO $$ BEGIN EXECUTE format('DROP EXTENSION %I CASCADE', 'bi_' || 'access'); END $$",
    "in a function": "CREATE FUNCTION pg_temp.dropper() RETURNS void LANGUAGE plpgsql AS "
                     "$$ BEGIN DROP SCHEMA bi_access CASCADE; END $$; SELECT pg_temp.dropper()",
    "as replica": "SET session_replication_role = replica; DROP SCHEMA bi_access CASCADE",
    "drop owned": f"DROP OWNED BY {SUPERUSER}",
    "detach a member": "ALTER EXTENSION bi_access DROP FUNCTION bi_access.check()",
}


@pytest.mark.parametrize("statement", DROPS.values(), ids=list(DROPS))
def test_every_spelling_of_a_drop_is_refused_with_2bp01(pair, fdb, cred, statement):
    conn = pair.primary.connect(fdb)
    try:
        with pytest.raises(psycopg2.Error) as info:
            with conn.cursor() as cur:
                cur.execute(statement)
        assert info.value.pgcode == "2BP01", info.value.pgerror
    finally:
        conn.close()
    assert pair.primary.sql("SELECT 1 FROM pg_extension WHERE extname = 'bi_access'", dbname=fdb)
    assert_sees_own_rows(pair, cred, fdb)


NEW_OWNER = "failclosed_new_owner"


@pytest.fixture(scope="module")
def new_owner(pair):
    if not pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (NEW_OWNER,)):
        pair.primary.sql(f"CREATE ROLE {NEW_OWNER} NOLOGIN")
    return NEW_OWNER


# Every way to move what the drop guard protects out of its reach: rename
# bi_access's schemas or give them another owner, move the extension, rename,
# move or re-own its tables, columns, views, functions, types, indexes and
# triggers, in any spelling.
MOVES = {
    "rename the schema": "ALTER SCHEMA bi_access RENAME TO gone",
    "rename the internal schema": 'ALTER SCHEMA "bi_access_internal" RENAME TO gone',
    "rename, unicode name": 'ALTER /* x */ SCHEMA U&"bi_\\0061ccess" RENAME TO gone',
    "rename in dynamic SQL": "DO $$ BEGIN EXECUTE format('ALTER SCHEMA %I RENAME TO gone', 'bi_' || 'access'); END $$",
    "rename in a function": "CREATE FUNCTION pg_temp.mover() RETURNS void LANGUAGE plpgsql AS "
                            "$$ BEGIN ALTER SCHEMA bi_access RENAME TO gone; END $$; SELECT pg_temp.mover()",
    "rename as replica": "SET session_replication_role = replica; ALTER SCHEMA bi_access RENAME TO gone",
    "schema owner": f"ALTER SCHEMA bi_access OWNER TO {NEW_OWNER}",
    "internal schema owner": f"ALTER SCHEMA bi_access_internal OWNER TO {NEW_OWNER}",
    "move the extension": "ALTER EXTENSION bi_access SET SCHEMA public",
    "rename a table": "ALTER TABLE bi_access.credential RENAME TO gone",
    "rename a table found on the search_path": "SET search_path = bi_access; ALTER TABLE credential RENAME TO gone",
    "rename a column": "ALTER TABLE bi_access.credential RENAME COLUMN org_id TO gone",
    "move a table": "ALTER TABLE bi_access.event SET SCHEMA public",
    "table owner": f"ALTER TABLE bi_access.credential OWNER TO {NEW_OWNER}",
    "table owner, with another change": f"ALTER TABLE bi_access.event ADD COLUMN x int, OWNER TO {NEW_OWNER}",
    "rename a view": "ALTER VIEW bi_access.credentials RENAME TO gone",
    "view owner": f"ALTER VIEW bi_access.credentials OWNER TO {NEW_OWNER}",
    "rename a function": "ALTER FUNCTION bi_access.check() RENAME TO gone",
    "function owner": f"ALTER FUNCTION bi_access.current_org() OWNER TO {NEW_OWNER}",
    "move a function": "ALTER FUNCTION bi_access.current_org() SET SCHEMA public",
    "procedure owner": f"ALTER PROCEDURE bi_access.sync(text, integer) OWNER TO {NEW_OWNER}",
    "rename a type": "ALTER TYPE bi_access.connection RENAME TO gone",
    "type owner": f"ALTER TYPE bi_access.credential_status OWNER TO {NEW_OWNER}",
    "rename an index": "ALTER INDEX bi_access.credential_org_label RENAME TO gone",
    "rename a trigger": "ALTER TRIGGER event_append_only ON bi_access.event RENAME TO gone",
    # REASSIGN OWNED fires no event trigger: the utility hook refuses it
    # where the library is loaded (PostgreSQL would refuse it for the
    # bootstrap superuser too, after bi_access: the message says whose).
    "reassign owned": f"LOAD 'bi_access'; REASSIGN OWNED BY {SUPERUSER} TO {NEW_OWNER}",
}


def bi_access_objects(pair, dbname: str) -> list[tuple]:
    """Every object of bi_access (its schemas, the extension's members) with
    its owner, read from each catalog's own owner column."""
    return pair.primary.sql(
        "WITH m AS (SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
        "           WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'bi_access' AND d.deptype = 'e' "
        "           UNION SELECT 'pg_namespace'::regclass, oid FROM pg_namespace "
        "           WHERE nspname IN ('bi_access', 'bi_access_internal')) "
        "SELECT pg_describe_object(m.classid, m.objid, 0), coalesce(CASE m.classid "
        "  WHEN 'pg_class'::regclass THEN (SELECT relowner FROM pg_class WHERE oid = m.objid) "
        "  WHEN 'pg_proc'::regclass THEN (SELECT proowner FROM pg_proc WHERE oid = m.objid) "
        "  WHEN 'pg_type'::regclass THEN (SELECT typowner FROM pg_type WHERE oid = m.objid) "
        "  WHEN 'pg_namespace'::regclass THEN (SELECT nspowner FROM pg_namespace WHERE oid = m.objid) "
        "  WHEN 'pg_event_trigger'::regclass THEN (SELECT evtowner FROM pg_event_trigger WHERE oid = m.objid) "
        "  END::regrole::text, '') FROM m ORDER BY 1", dbname=dbname)


@pytest.mark.parametrize("statement", MOVES.values(), ids=list(MOVES))
def test_every_way_to_move_what_the_guard_protects_is_refused_with_2bp01(pair, fdb, cred, new_owner, statement):
    before = bi_access_objects(pair, fdb)
    conn = pair.primary.connect(fdb)
    try:
        with pytest.raises(psycopg2.Error) as info:
            with conn.cursor() as cur:
                cur.execute(statement)
        assert info.value.pgcode == "2BP01", info.value.pgerror
        assert "cannot be renamed, moved or given another owner while live credentials exist" in \
            info.value.pgerror, info.value.pgerror
        assert info.value.diag.message_hint.startswith("Delete them first"), info.value.diag.message_hint
    finally:
        conn.close()
    assert bi_access_objects(pair, fdb) == before
    assert_sees_own_rows(pair, cred, fdb)


OWNED = "failclosed_owned"
# Two superusers: bi_access's event triggers may only be owned by one, so
# REASSIGN OWNED to any other role fails on PostgreSQL's own check.
DBA, DBA2 = "failclosed_dba", "failclosed_dba2"


@pytest.fixture(scope="module")
def owned(pair, saas_db, secrets, new_owner):
    """A database whose bi_access a superuser other than the bootstrap one
    owns (the bootstrap superuser's objects cannot be reassigned at all)."""
    for dba in (DBA, DBA2):
        if not pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (dba,)):
            pair.primary.sql(f"CREATE ROLE {dba} SUPERUSER NOLOGIN")
    pair.primary.sql(f"CREATE DATABASE {OWNED}")
    pair.primary.sql(SCHEMA, dbname=OWNED)
    pair.primary.sql(f"SET ROLE {DBA}; CREATE EXTENSION bi_access; RESET ROLE; {EXPOSE}", dbname=OWNED)
    b = BiAccess(pair, OWNED, secrets)
    cred = b.generate(ORG_A)
    b.close()
    return cred


def owner_findings(pair, dbname: str) -> list[tuple]:
    return [f for f in findings(pair, dbname) if "owned by another role than the extension's owner" in f[2]]


def test_reassign_owned_is_refused_wherever_the_library_is_loaded(pair, owned):
    """REASSIGN OWNED BY the extension's owner fires no event trigger; the
    utility hook refuses it (2BP01) in a session that loaded bi_access (every
    session, where bi_access is preloaded)."""
    before = bi_access_objects(pair, OWNED)
    conn = pair.primary.connect(OWNED)
    try:
        with pytest.raises(psycopg2.Error) as info:
            with conn.cursor() as cur:
                cur.execute(f"LOAD 'bi_access'; REASSIGN OWNED BY {DBA} TO {DBA2}")
        assert info.value.pgcode == "2BP01", info.value.pgerror
        assert f'bi_access\'s objects (owned by {DBA}) cannot be renamed, moved or given another owner' in \
            info.value.pgerror, info.value.pgerror
    finally:
        conn.close()
    assert bi_access_objects(pair, OWNED) == before
    assert owner_findings(pair, OWNED) == []
    assert_sees_own_rows(pair, owned, OWNED)


def test_past_the_utility_hook_reassign_owned_moves_everything_to_a_superuser(pair, owned):
    """In a session that never loaded the library (bi_access not preloaded),
    REASSIGN OWNED goes through, but only to a superuser (PostgreSQL refuses
    any other owner of bi_access's event triggers) and with the extension
    itself: every object stays with the extension's owner, which check()
    confirms, and the credential still reads its own org's rows and nothing
    else."""
    conn = pair.primary.connect(OWNED)
    try:
        with pytest.raises(psycopg2.Error) as info:
            with conn.cursor() as cur:
                cur.execute(f"REASSIGN OWNED BY {DBA} TO {NEW_OWNER}")
        assert info.value.pgcode == "42501", info.value.pgerror
        assert "The owner of an event trigger must be a superuser" in info.value.pgerror, info.value.pgerror
    finally:
        conn.close()
    pair.primary.sql(f"REASSIGN OWNED BY {DBA} TO {DBA2}", dbname=OWNED)
    pair.wait_replayed()
    try:
        assert {owner for _, owner in bi_access_objects(pair, OWNED)} <= {DBA2, ""}
        assert pair.primary.value("SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'bi_access'",
                                  dbname=OWNED) == DBA2
        assert owner_findings(pair, OWNED) == []
        assert_sees_own_rows(pair, owned, OWNED)
    finally:
        pair.primary.sql(f"REASSIGN OWNED BY {DBA2} TO {DBA}", dbname=OWNED)


def test_check_reports_an_owner_that_lost_superuser(pair, owned):
    """The one way bi_access's owner stops being a superuser: ALTER ROLE …
    NOSUPERUSER (no event trigger, no ownership check). check() says so, with
    the fix."""
    pair.primary.sql(f"ALTER ROLE {DBA} NOSUPERUSER")
    try:
        found = [f for f in findings(pair, OWNED) if f[1].startswith("extension bi_access")]
    finally:
        pair.primary.sql(f"ALTER ROLE {DBA} SUPERUSER")
    assert [(f[0], f[1], f[3]) for f in found] == [
        ("error", f"extension bi_access (owned by {DBA})", f"ALTER ROLE {DBA} SUPERUSER;")], found
    assert [f for f in findings(pair, OWNED) if f[1].startswith("extension bi_access")] == []


def drop_orphans(pair, dbname: str, reader: str, roles: list[str]) -> None:
    """What check() tells to run after bi_access went past its drop guard
    (test_check_elsewhere_names_the_orphans_and_its_fixes_remove_them)."""
    conn = pair.primary.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT format('DROP POLICY bi_access_passthrough ON %s; "
                        "ALTER TABLE %s DISABLE ROW LEVEL SECURITY;', polrelid::regclass, polrelid::regclass) "
                        "FROM pg_policy WHERE polname = 'bi_access_passthrough'")
            for (statement,) in cur.fetchall():
                cur.execute(statement)
            cur.execute(f"DROP OWNED BY {reader}")
    finally:
        conn.close()
    pair.primary.sql(f"DROP ROLE {reader}; " + " ".join(f"DROP ROLE {r};" for r in roles))


# With the drop guard disabled on purpose, each way around it, then the drop
# it was for (as the role that now owns the schema).
AROUND_THE_GUARD = {
    "rename": "ALTER SCHEMA bi_access RENAME TO gone; DROP SCHEMA gone CASCADE",
    "re-own": f"ALTER SCHEMA bi_access OWNER TO {NEW_OWNER}; SET ROLE {NEW_OWNER}; DROP SCHEMA bi_access CASCADE",
}


@pytest.mark.parametrize("path", AROUND_THE_GUARD)
def test_past_the_disabled_guard_a_moved_bi_access_fails_closed(request, pair, saas_db, secrets, new_owner, path):
    """The outcome of the paths no event trigger sees: the credential reads
    nothing of any exposed table, on both servers, as after a plain drop
    past the guard."""
    dbname = f"failclosed_{path.replace('-', '')}"
    create_database(pair, dbname, SCHEMA, EXPOSE)
    b = BiAccess(pair, dbname, secrets)
    cred = b.generate(ORG_A)
    b.close()
    reader = reader_group(pair.primary, dbname)
    request.addfinalizer(lambda: drop_orphans(pair, dbname, reader, [cred.role]))
    pair.primary.sql(f"ALTER EVENT TRIGGER bi_access_drop_guard DISABLE; {AROUND_THE_GUARD[path]}", dbname=dbname)
    pair.wait_replayed()
    assert not pair.primary.sql("SELECT 1 FROM pg_extension WHERE extname = 'bi_access'", dbname=dbname)
    for table in TABLES:
        assert_sees_nothing(pair, cred, dbname, table)


GONE = "failclosed_gone"


@pytest.fixture(scope="module")
def gone(pair, saas_db, secrets):
    """A database whose DBA disabled the drop guard and dropped bi_access's
    schema with credentials live: the outcome of every path no event trigger
    sees (single-user mode, event_triggers = off on 17+)."""
    create_database(pair, GONE, SCHEMA, EXPOSE)
    b = BiAccess(pair, GONE, secrets)
    creds = {"guarded": b.generate(ORG_A), "unguarded": b.generate(ORG_B)}
    b.close()
    reader = reader_group(pair.primary, GONE)
    # A role that lost its session_preload_libraries: the policies alone.
    pair.primary.sql(f"ALTER ROLE {creds['unguarded'].role} RESET session_preload_libraries")
    pair.primary.sql("ALTER EVENT TRIGGER bi_access_drop_guard DISABLE; DROP SCHEMA bi_access CASCADE",
                     dbname=GONE)
    pair.wait_replayed()
    return creds, reader


@pytest.mark.parametrize("table", TABLES)
def test_past_the_drop_guard_a_guarded_credential_reads_nothing(pair, gone, table):
    creds, _ = gone
    assert_sees_nothing(pair, creds["guarded"], GONE, table)


def test_past_the_drop_guard_the_policies_alone_admit_nothing(pair, gone):
    """Without its session guard, a credential still reads no row of a table
    where bi_access turned RLS on: only the pass-through policy is left, and it
    never admits a credential."""
    creds, _ = gone
    assert own_rows(pair, GONE, "accounts", ORG_B)
    settings = pair.primary.value("SELECT array_to_string(rolconfig, ' ') FROM pg_roles WHERE rolname = %s",
                                  (creds["unguarded"].role,))
    assert "session_preload_libraries" not in settings
    for server in (pair.primary, pair.replica):
        with session(creds["unguarded"], server) as s:
            assert s.rows("SELECT * FROM accounts") == [], server.name


def test_check_elsewhere_names_the_orphans_and_its_fixes_remove_them(pair, gone, saas_db):
    creds, reader = gone
    orphans = {obj: fix for _, obj, _, fix in findings(pair, saas_db.dbname) if obj.startswith("role ")}
    for cred in creds.values():
        assert orphans[f"role {cred.role}"] == f"DROP ROLE {cred.role};"
    reader_fix = orphans[f"role {reader}"]
    assert f"\\connect {GONE}\n" in reader_fix
    # The fix, run as it says (a psql script), then the credential roles'.
    run_fix(pair.primary, reader_fix + "\n" + " ".join(f"DROP ROLE {c.role};" for c in creds.values()))
    ours = {f"role {reader}", *(f"role {c.role}" for c in creds.values())}
    left = {obj for _, obj, _, _ in findings(pair, saas_db.dbname)}
    assert left & ours == set()


# --------------------------------------------------------------------------
# a table owner's DDL

WEAKENINGS = {
    "RLS disabled": ("ALTER TABLE accounts DISABLE ROW LEVEL SECURITY", "row level security was disabled"),
    "guard policy dropped": ("DROP POLICY bi_access_guard ON accounts", "a bi_access policy was dropped or altered"),
    "read policy dropped": ("DROP POLICY bi_access_read ON accounts", "a bi_access policy was dropped or altered"),
}


@pytest.mark.parametrize("statement, warning", WEAKENINGS.values(), ids=list(WEAKENINGS))
def test_a_weakened_table_reads_nothing_until_a_sync(pair, fdb, cred, statement, warning):
    conn = pair.primary.connect(fdb)
    conn.notices = []
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
    assert any(warning in notice for notice in conn.notices), conn.notices
    pair.wait_replayed()
    assert_sees_nothing(pair, cred, fdb, "accounts")
    named = [f for f in findings(pair, fdb) if f[1] == "public.accounts"]
    assert named and all(f[0] == "error" for f in named), named
    pair.primary.sql("SELECT * FROM bi_access.sync_tables()", dbname=fdb)
    pair.wait_replayed()
    assert_sees_own_rows(pair, cred, fdb)
    assert [f for f in findings(pair, fdb) if f[1] == "public.accounts"] == []


def test_the_session_guard_alone_refuses_a_weakened_table(pair, fdb, cred):
    """With the event trigger that withdraws the grant disabled, the grant
    stays: the session guard still refuses the table, even though the
    application's own permissive policy TO PUBLIC is all that is left."""
    pair.primary.sql("ALTER EVENT TRIGGER bi_access_after_ddl DISABLE; "
                     "DROP POLICY bi_access_guard ON notes; DROP POLICY bi_access_read ON notes; "
                     "ALTER EVENT TRIGGER bi_access_after_ddl ENABLE", dbname=fdb)
    pair.wait_replayed()
    reader = reader_group(pair.primary, fdb)
    assert pair.primary.value(f"SELECT has_table_privilege('{reader}', 'notes', 'SELECT')", dbname=fdb)
    assert_sees_nothing(pair, cred, fdb, "notes")
    pair.primary.sql("SELECT * FROM bi_access.sync_tables()", dbname=fdb)
    pair.wait_replayed()
    assert_sees_own_rows(pair, cred, fdb)


def test_a_dropped_org_column_reads_nothing(pair, fdb, cred):
    pair.primary.sql("CREATE TABLE ledger (id int, org_id bigint NOT NULL); "
                     f"INSERT INTO ledger VALUES (1, {ORG_A}), (2, {ORG_B}); "
                     "SELECT bi_access.expose_table('ledger')", dbname=fdb)
    pair.wait_replayed()
    assert_sees_own_rows(pair, cred, fdb, ("ledger",))
    pair.primary.sql("ALTER TABLE ledger DROP COLUMN org_id CASCADE", dbname=fdb)
    pair.wait_replayed()
    assert all_rows(pair, fdb, "ledger") == [(1,), (2,)]
    for server in (pair.primary, pair.replica):
        with session(cred, server) as s:
            assert s.run("SELECT * FROM ledger").state == PERMISSION_DENIED, server.name
    assert any(f[1] == "public.ledger" for f in findings(pair, fdb))
    pair.primary.sql("SELECT bi_access.hide_table('ledger'); DROP TABLE ledger", dbname=fdb)


def test_a_table_recreated_by_a_migration_and_granted_to_public_reads_nothing(pair, fdb, cred):
    pair.primary.sql("CREATE TABLE invoices (id int, org_id bigint NOT NULL); "
                     f"INSERT INTO invoices VALUES (1, {ORG_A}), (2, {ORG_B}); "
                     "SELECT bi_access.expose_table('invoices')", dbname=fdb)
    pair.primary.sql("DROP TABLE invoices; CREATE TABLE invoices (id int, org_id bigint NOT NULL); "
                     f"INSERT INTO invoices VALUES (1, {ORG_A}), (2, {ORG_B}), (3, {ORG_B}); "
                     "GRANT SELECT ON invoices TO PUBLIC", dbname=fdb)
    pair.wait_replayed()
    assert_sees_nothing(pair, cred, fdb, "invoices")
    assert any(f[1] == "public.invoices" for f in findings(pair, fdb))
    pair.primary.sql("SELECT * FROM bi_access.sync_tables()", dbname=fdb)
    pair.wait_replayed()
    assert_sees_own_rows(pair, cred, fdb, ("invoices",))
    pair.primary.sql("SELECT bi_access.hide_table('invoices'); DROP TABLE invoices", dbname=fdb)


def test_a_partition_read_directly_is_refused_even_when_granted(sess, pair, fdb):
    assert sess.rows("SELECT * FROM events ORDER BY 1") == own_rows(pair, fdb, "events")
    outcome = sess.run("SELECT * FROM events_b")
    assert outcome.state == PERMISSION_DENIED, str(outcome)


def test_a_definer_view_granted_to_public_reads_nothing(pair, fdb, cred):
    pair.primary.sql("CREATE VIEW all_accounts AS SELECT * FROM accounts; "
                     "GRANT SELECT ON all_accounts TO PUBLIC", dbname=fdb)
    pair.wait_replayed()
    try:
        for server in (pair.primary, pair.replica):
            with session(cred, server) as s:
                assert s.run("SELECT * FROM all_accounts").state == PERMISSION_DENIED, server.name
    finally:
        pair.primary.sql("DROP VIEW all_accounts", dbname=fdb)


# --------------------------------------------------------------------------
# the session guard, keyed on the login

GROUP_WRITES = {
    "temp table": "CREATE TEMP TABLE scratch (x int)",
    "temp function": "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "LISTEN": "LISTEN app_events",
    "large object": "SELECT lo_from_bytea(0, 'persisted')",
}


@pytest.mark.parametrize("group", ["bi_access_credential", "reader group"])
def test_set_role_to_a_group_changes_nothing_the_guard_refuses(sess, pair, fdb, server, group):
    role = group if group != "reader group" else reader_group(pair.primary, fdb)
    if MEMBERSHIPS_ALLOW_SET_ROLE:
        sess.rows(f"SET ROLE {role}")
    else:
        # 16 and later: the memberships are WITH SET FALSE, so the session
        # stays the credential; the guard must refuse all the same.
        assert sess.run(f"SET ROLE {role}").state == PERMISSION_DENIED
    sess.rows("SET default_transaction_read_only = off")
    for what, sql in GROUP_WRITES.items():
        outcome = sess.run(sql)
        assert outcome.state == PERMISSION_DENIED, f"{what}: {outcome}"
    # What the group sees: the reader group has the grant but no org, so no
    # row; the credential group has no grant at all.
    outcome = sess.run("SELECT * FROM accounts")
    if not MEMBERSHIPS_ALLOW_SET_ROLE:
        assert outcome.state == OK, str(outcome)  # its own org's rows, as itself
    elif role == "bi_access_credential":
        assert outcome.state == PERMISSION_DENIED, str(outcome)
    else:
        assert outcome.state == OK and outcome.rows == [], str(outcome)
    assert pair.primary.value("SELECT count(*) FROM pg_largeobject_metadata", dbname=fdb) == 0


CALLS = {
    "pg_notify": "SELECT pg_notify('app_events', 'forged')",
    "NOTIFY": "NOTIFY app_events, 'forged'",
    "advisory lock": "SELECT pg_advisory_lock(42)",
    "try advisory lock": "SELECT pg_try_advisory_lock(42)",
    "advisory xact lock": "SELECT pg_advisory_xact_lock_shared(42)",
    "nextval": "SELECT nextval('counter')",
    "read a sequence": "SELECT last_value FROM counter",
}


@pytest.mark.parametrize("sql", CALLS.values(), ids=list(CALLS))
def test_a_read_only_session_may_not_signal_lock_or_count(sess, sql):
    outcome = sess.run(sql)
    assert outcome.state == PERMISSION_DENIED, str(outcome)


def test_notifications_and_advisory_locks_of_the_application_are_untouched(sess, pair, fdb):
    """The application listens and locks as before; the credential's attempts
    reach neither."""
    app = pair.primary.connect(fdb)
    try:
        with app.cursor() as cur:
            cur.execute("LISTEN app_events")
            cur.execute("SELECT pg_advisory_lock(7)")
        assert sess.run("SELECT pg_notify('app_events', 'forged')").state == PERMISSION_DENIED
        assert sess.run("SELECT pg_try_advisory_lock(7)").state == PERMISSION_DENIED
        with app.cursor() as cur:
            cur.execute("SELECT 1")
        app.poll()
        assert app.notifies == []
    finally:
        app.close()


def test_large_objects_through_libpq_fast_path_are_refused(sess, server):
    """psycopg2's lobject calls lo_creat/lo_open through libpq's fast-path
    interface, which runs no query at all."""
    sess.conn.autocommit = False
    with pytest.raises(psycopg2.Error) as info:
        sess.conn.lobject(0, "wb")
    # libpq reports a fast-path error by its message only (no SQLSTATE).
    assert "a bi_access credential may not call lo_" in str(info.value), str(info.value)
    sess.conn.rollback()


def test_copy_from_stdin_is_refused(sess, server):
    with pytest.raises(psycopg2.Error) as info:
        with sess.conn.cursor() as cur:
            cur.copy_expert("COPY accounts FROM STDIN", io.StringIO(f"99\t{ORG_B}\tforged\n"))
    assert info.value.pgcode == PERMISSION_DENIED, info.value.pgerror


def test_copy_of_a_table_that_is_not_exposed_is_refused(sess, server):
    with pytest.raises(psycopg2.Error) as info:
        with sess.conn.cursor() as cur:
            cur.copy_expert("COPY events_b TO STDOUT", io.StringIO())
    assert info.value.pgcode == PERMISSION_DENIED, info.value.pgerror


# --------------------------------------------------------------------------
# bi_access's roles

def test_a_renamed_credential_group_refuses_every_credential_login_until_renamed_back(request, pair, fdb, cred):
    """The session guard knows a credential by its membership in
    bi_access_credential, looked up by name. A superuser renames the group:
    a new session of the credential would be no member of it and log in
    unguarded, so the login gate refuses it (28000, naming the role and the
    fix) on both servers, and check() reports the missing group with the
    rename that brings it back. A session already open stays guarded: the guard no
    longer finds bi_access's policies in place (their test names the group)
    and refuses the table (42501) as well as what it always refused; an
    application role under bi_access's policies gets 42704 from them (they
    name the group); the superuser still reads every row. Renamed back, the credential logs in
    and reads exactly its org's rows again."""
    checked = []
    pair.primary.sql("CREATE ROLE app_reader; GRANT SELECT ON accounts TO app_reader", dbname=fdb)
    request.addfinalizer(lambda: pair.primary.sql("DROP OWNED BY app_reader; DROP ROLE app_reader", dbname=fdb))
    with session(cred, pair.replica) as open_before:
        pair.primary.sql("ALTER ROLE bi_access_credential RENAME TO bi_access_credential_moved")
        try:
            pair.wait_replayed()
            refused = {}
            for server in (pair.primary, pair.replica):
                with pytest.raises(LoginRefused) as raised:
                    Connection(cred.login_args(server)).close()
                refused[server.name] = (raised.value.state, raised.value.message)
            still = open_before.run("SELECT * FROM accounts ORDER BY 1")
            hidden = open_before.run("SELECT * FROM events_b").state
            superuser = pair.replica.value("SELECT count(*) FROM accounts", dbname=fdb)
            application = Session.superuser(pair.primary, fdb)
            try:  # an application role under bi_access's policies, which name the group
                application.rows("SET ROLE app_reader")
                app_read = application.run("SELECT count(*) FROM accounts")
            finally:
                application.close()
            checked = findings(pair, fdb)
        finally:
            # check()'s fix, run as a DBA runs it; the test's own rename
            # back only if the fix did not.
            if len(checked) == 1:
                run_fix(pair.primary, checked[0][3])
            if pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = 'bi_access_credential_moved'"):
                pair.primary.sql("ALTER ROLE bi_access_credential_moved RENAME TO bi_access_credential")
                fixed = False
            else:
                fixed = True
            pair.wait_replayed()
    said = f'role {cred.role} loads bi_access\'s login gate but is not a member of bi_access_credential'
    for name, (state, message) in refused.items():
        assert state == "28000", (name, state, message)
        assert said in message and "RENAME TO bi_access_credential" in message, (name, message)
    assert (still.state, still.rows) == (PERMISSION_DENIED, []), str(still)
    assert "row-level security in place" in still.message, still.message
    assert hidden == PERMISSION_DENIED
    assert superuser == len(all_rows(pair, fdb, "accounts"))
    assert (app_read.state, 'role "bi_access_credential" does not exist' in app_read.message) == ("42704", True), \
        str(app_read)
    # check() runs, and says only this, with the statement that renames the
    # role the guard policies still hold back; that fix is what restored it.
    assert [(sev, obj, fix) for sev, obj, _, fix in checked] == \
        [("error", "role bi_access_credential",
          "ALTER ROLE bi_access_credential_moved RENAME TO bi_access_credential;")], checked
    assert fixed
    assert_sees_own_rows(pair, cred, fdb)


def test_a_role_given_the_gate_by_hand_is_refused_and_a_superuser_is_not(pair, fdb):
    """The gate's settings copied onto a role that is no credential (a DBA's
    slip): its login is refused (28000) rather than let in unguarded; a
    superuser with the same settings is never a credential and logs in."""
    setting = "SET session_preload_libraries = 'bi_access', 'bi_access_gate'"
    pair.primary.sql(f"CREATE ROLE copied_gate LOGIN PASSWORD 'copied-gate-pw'; ALTER ROLE copied_gate {setting}; "
                     f"CREATE ROLE super_gate SUPERUSER LOGIN PASSWORD 'super-gate-pw'; "
                     f"ALTER ROLE super_gate {setting}")
    try:
        pair.wait_replayed()
        states = {(role, server.name): login_state(server.tcp_args(fdb, role, f"{role.replace('_', '-')}-pw"))
                  for role in ("copied_gate", "super_gate") for server in (pair.primary, pair.replica)}
    finally:
        pair.primary.sql("DROP ROLE copied_gate; DROP ROLE super_gate")
        pair.wait_replayed()
    assert states == {("copied_gate", "primary"): "28000", ("copied_gate", "replica"): "28000",
                      ("super_gate", "primary"): OK, ("super_gate", "replica"): OK}, states
