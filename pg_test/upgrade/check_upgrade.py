"""ALTER EXTENSION bi_access UPDATE along every released path (run by run.sh,
which prepares a private PostgreSQL 15 installation whose bi_access is first
0.1.0's library and frozen install script; PG_BIN points at it).

Three databases take the three paths to this tree's version, on one primary
and its streaming replica:
- `via_020`: created with the real 0.1.0, updated to 0.2.0 under the real
  0.2.0 library, then to this version: the chain a user who took every
  release walked;
- `from_010`: created with 0.1.0, updated once under this tree's library (the
  update chains both scripts);
- `from_020`: created with the real 0.2.0, updated under this tree's library.
Each is used on the way (exposed tables, live credentials, logins on the
replica). Each library is swapped in as a package upgrade would (the servers
stop, the files change, the servers start).

Between the swap of this tree's library and the updates (the window: a
package upgraded before ALTER EXTENSION UPDATE), every function that the
frozen 0.1.0 and 0.2.0 install scripts define is called in each database,
with its expected outcome pinned (`WINDOW_010`, `WINDOW_020`): it works, or
it fails with 55000 naming ALTER EXTENSION bi_access UPDATE; never XX000,
never a missing relation. Event-trigger functions are called by the DDL that
fires them. The credentials log in and read their org's rows meanwhile.

Afterwards, for each database:
- the extension's objects equal a fresh install's of the new version, object
  by object (definitions, columns, grants, enum labels, event triggers; the
  random reader-group name aside);
- the existing credentials log in on the replica, see only their org's rows,
  and every reveal still works;
- the exposed tables' policies are in the current form (the pass-through
  policy no longer admits credentials).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import psycopg2
import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, BiAccess, can_login
from cluster import ReplicaPair, run_as_postgres
from probe import PERMISSION_DENIED, session

ROOT = Path(os.environ.get("BI_UPGRADE_ROOT", "/nonexistent"))
# Each version's files as its package has them (run.sh lays them out).
V010, V020, NEW = ROOT / "0.1.0", ROOT / "0.2.0", ROOT / "new"
LIB = Path(os.environ.get("BI_UPGRADE_LIB", "/nonexistent"))
EXT = Path(os.environ.get("BI_UPGRADE_EXT", "/nonexistent"))
# The version this tree builds (Cargo.toml's, as the control file gets it).
NEW_VERSION = re.search(r'^version = "([^"]+)"', (Path(__file__).resolve().parents[2] / "Cargo.toml").read_text(),
                        re.M).group(1)
# Database -> the version it was created with.
PATHS = {"via_020": "0.1.0", "from_010": "0.1.0", "from_020": "0.2.0"}
FRESH = "fresh"

SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, org_id bigint NOT NULL, name text NOT NULL);
INSERT INTO accounts (org_id, name) SELECT o, 'account ' || g
  FROM (VALUES (1, 3), (2, 5)) v(o, n), generate_series(1, n) g;
CREATE TABLE projects (id serial PRIMARY KEY, tenant text NOT NULL, title text NOT NULL);
INSERT INTO projects (tenant, title) VALUES ('1', 'p1'), ('2', 'p2'), ('2', 'p3');
"""
EXPOSE = """
SELECT bi_access.expose_table('accounts');
SELECT bi_access.expose_table('projects', 'tenant');
SELECT * FROM bi_access.sync_tables();
"""

# Every object of the extension with what defines it; the reader group's
# random name is replaced by READER.
DESCRIBE = """
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'bi_access'),
members AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
SELECT pg_describe_object(classid, objid, objsubid),
       CASE classid
       WHEN 'pg_proc'::regclass THEN
           (SELECT pg_get_functiondef(p.oid) || ' acl=' || coalesce(p.proacl::text, '') || ' owner='
                   || p.proowner::regrole::text FROM pg_proc p WHERE p.oid = objid)
       WHEN 'pg_class'::regclass THEN
           (SELECT c.relkind::text || ' ' || coalesce(pg_get_viewdef(c.oid), '') || ' cols='
                   || coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                                  || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                                  || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                                                  ', ' ORDER BY a.attnum)
                                FROM pg_attribute a LEFT JOIN pg_attrdef ad
                                  ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
                   || ' acl=' || coalesce(c.relacl::text, '') || ' rls=' || c.relrowsecurity
                   || ' indexes=' || coalesce((SELECT string_agg(pg_get_indexdef(i.indexrelid), '; ' ORDER BY pg_get_indexdef(i.indexrelid))
                                               FROM pg_index i WHERE i.indrelid = c.oid), '')
                   || ' constraints=' || coalesce((SELECT string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid),
                                                                     '; ' ORDER BY k.conname)
                                                   FROM pg_constraint k WHERE k.conrelid = c.oid), '')
                   || ' triggers=' || coalesce((SELECT string_agg(pg_get_triggerdef(t.oid), '; ' ORDER BY t.tgname)
                                                FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '')
                   || ' policies=' || coalesce((SELECT string_agg(p.polname || ' ' || pg_get_expr(p.polqual, p.polrelid),
                                                                  '; ' ORDER BY p.polname)
                                                FROM pg_policy p WHERE p.polrelid = c.oid), '')
            FROM pg_class c WHERE c.oid = objid)
       WHEN 'pg_type'::regclass THEN
           (SELECT t.typtype::text || ' ' || coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                                 FROM pg_enum e WHERE e.enumtypid = t.oid), '')
            FROM pg_type t WHERE t.oid = objid)
       WHEN 'pg_event_trigger'::regclass THEN
           (SELECT e.evtevent || ' ' || e.evtfoid::regproc::text || ' ' || e.evtenabled::text || ' '
                   || coalesce(e.evttags::text, '')
            FROM pg_event_trigger e WHERE e.oid = objid)
       WHEN 'pg_namespace'::regclass THEN
           (SELECT coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE n.oid = objid)
       ELSE '' END
FROM members ORDER BY 1
"""
CONFIG_DUMP = """
SELECT array(SELECT unnest(extconfig)::regclass::text ORDER BY 1), extversion
FROM pg_extension WHERE extname = 'bi_access'
"""


def describe(pair, dbname: str) -> list[tuple[str, str]]:
    reader = pair.primary.value("SELECT reader_role::text FROM bi_access.config", dbname=dbname)
    return [(obj, (definition or "").replace(reader, "READER")) for obj, definition in
            pair.primary.sql(DESCRIBE, dbname=dbname)]


def install(source: Path, target: Path) -> None:
    """Copies under a temporary name, then renames: a server that has the
    old library mapped keeps it (another test's servers may run)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.copy(source, tmp)
    os.replace(tmp, target)


def install_version(files: Path) -> None:
    for path in files.iterdir():
        install(path, (LIB if path.suffix == ".so" else EXT) / path.name)


def swap_in(pair, files: Path = NEW) -> None:
    """What a package upgrade does: the servers stop, the files change, the
    servers start (the library is never replaced under a running server)."""
    for server in (pair.replica, pair.primary):
        server.stop()
    install_version(files)
    pair.primary.start()
    pair.replica.start()
    pair.wait_streaming()


# ----------------------------------------------------------------- the window
# What each function of an older version's SQL does on this library before
# ALTER EXTENSION UPDATE: OK, UPDATE_NEEDED (55000 naming the update), or the
# SQLSTATE it raises by design. Each call is (SQL, expected); {role} is a live
# credential of the database. Every call runs in a transaction that is rolled
# back (CALL on its own).
OK = "ok"
UPDATE_NEEDED = "55000"
UPDATE_STATEMENT = "ALTER EXTENSION bi_access UPDATE"
FIRES_DDL_END = "CREATE TABLE window_probe (id int, org_id bigint)"
FIRES_SQL_DROP = "DROP TABLE projects"
FIRES_DROP_EXTENSION = "DROP EXTENSION bi_access"
FIRES_APPEND_ONLY = "UPDATE bi_access.event SET action = action"
APPEND_ONLY_REFUSES = "42501"

WINDOW_COMMON = {
    # The org lookups every policy calls: BI reads go on.
    "bi_access.current_org()": ("SELECT bi_access.current_org()", OK),
    "bi_access.current_org_bigint()": ("SELECT bi_access.current_org_bigint()", OK),
    "bi_access.current_org_uuid()": ("SELECT bi_access.current_org_uuid()", OK),
    "bi_access.event_append_only()": (FIRES_APPEND_ONLY, APPEND_ONLY_REFUSES),
    # The SQL surface.
    "bi_access.connection_details(name)": ("SELECT * FROM bi_access.connection_details('{role}')", UPDATE_NEEDED),
    "bi_access.revoke(name)": ("SELECT * FROM bi_access.revoke('{role}')", UPDATE_NEEDED),
    "bi_access.activate(name)": ("SELECT * FROM bi_access.activate('{role}')", UPDATE_NEEDED),
    "bi_access.delete(name)": ("SELECT * FROM bi_access.delete('{role}')", UPDATE_NEEDED),
    "bi_access.purge(name)": ("SELECT bi_access.purge('{role}')", UPDATE_NEEDED),
    "bi_access.expose_table(regclass,name)": ("SELECT bi_access.expose_table('accounts')", UPDATE_NEEDED),
    "bi_access.hide_table(regclass)": ("SELECT bi_access.hide_table('accounts')", UPDATE_NEEDED),
    "bi_access.unsynced_tables()": ("SELECT * FROM bi_access.unsynced_tables()", UPDATE_NEEDED),
    "bi_access.sync_tables()": ("SELECT * FROM bi_access.sync_tables()", UPDATE_NEEDED),
    'bi_access."check"()': ("SELECT * FROM bi_access.check()", UPDATE_NEEDED),
    "bi_access.sync(text,integer)": ("CALL bi_access.sync()", UPDATE_NEEDED),
    "bi_access_internal.step_sync_begin()": ("SELECT bi_access_internal.step_sync_begin()", UPDATE_NEEDED),
    "bi_access_internal.step_sync_table(regclass)": ("SELECT bi_access_internal.step_sync_table('accounts')",
                                                     UPDATE_NEEDED),
    "bi_access_internal.step_sync_end(integer,integer,text[])": (
        "SELECT bi_access_internal.step_sync_end(0, 0, '{{}}')", UPDATE_NEEDED),
    # The Rust workers behind it.
    "bi_access_internal.connection_details(text)": (
        "SELECT * FROM bi_access_internal.connection_details('{role}')", UPDATE_NEEDED),
    "bi_access_internal.sync_tables()": ("SELECT * FROM bi_access_internal.sync_tables()", UPDATE_NEEDED),
    "bi_access_internal.unsynced_tables()": ("SELECT * FROM bi_access_internal.unsynced_tables()", UPDATE_NEEDED),
    "bi_access_internal.hide_table(oid)": ("SELECT bi_access_internal.hide_table('accounts'::regclass)",
                                           UPDATE_NEEDED),
    'bi_access_internal."check"()': ("SELECT * FROM bi_access_internal.check()", UPDATE_NEEDED),
    "bi_access_internal.purge(text)": ("SELECT bi_access_internal.purge('{role}')", UPDATE_NEEDED),
    "bi_access_internal.activate(text)": ("SELECT bi_access_internal.activate('{role}')", UPDATE_NEEDED),
    "bi_access_internal.sync_end(integer,integer,text[])": (
        "SELECT bi_access_internal.sync_end(0, 0, '{{}}')", UPDATE_NEEDED),
    "bi_access_internal.sync_begin()": ("SELECT bi_access_internal.sync_begin()", UPDATE_NEEDED),
    "bi_access_internal.delete(text)": ("SELECT bi_access_internal.delete('{role}')", UPDATE_NEEDED),
    "bi_access_internal.expose_table(oid,text)": (
        "SELECT bi_access_internal.expose_table('accounts'::regclass, NULL)", UPDATE_NEEDED),
    "bi_access_internal.forget_dropped()": (FIRES_SQL_DROP, OK),
    "bi_access_internal.revoke(text)": ("SELECT bi_access_internal.revoke('{role}')", UPDATE_NEEDED),
}

WINDOW_010 = {
    **WINDOW_COMMON,
    "bi_access.generate(text,text,text,timestamp with time zone,integer)": (
        "SELECT * FROM bi_access.generate('1', 'in the window')", UPDATE_NEEDED),
    "bi_access.regenerate(name)": ("SELECT * FROM bi_access.regenerate('{role}')", UPDATE_NEEDED),
    "bi_access.on_ddl_command_end()": (FIRES_DDL_END, OK),
    "bi_access.on_sql_drop()": (FIRES_SQL_DROP, OK),
    "bi_access.on_drop_extension()": (FIRES_DROP_EXTENSION, UPDATE_NEEDED),
    "bi_access_internal.before_drop()": ("SELECT bi_access_internal.before_drop()", UPDATE_NEEDED),
    "bi_access_internal.replayed(text)": ("SELECT bi_access_internal.replayed(NULL)", OK),
    "bi_access_internal.sync_one(oid)": ("SELECT bi_access_internal.sync_one('accounts'::regclass)", UPDATE_NEEDED),
    "bi_access_internal.note_new_tables()": (FIRES_DDL_END, OK),
    "bi_access_internal.regenerate(text)": ("SELECT * FROM bi_access_internal.regenerate('{role}')", UPDATE_NEEDED),
    "bi_access_internal.generate(text,text,text,timestamp with time zone,integer)": (
        "SELECT * FROM bi_access_internal.generate('1', 'in the window', NULL, NULL, NULL)", UPDATE_NEEDED),
}

WINDOW_020 = {
    **WINDOW_COMMON,
    "bi_access.generate(text,text,text,timestamp with time zone,integer,text,text)": (
        "SELECT * FROM bi_access.generate('1', 'in the window')", UPDATE_NEEDED),
    "bi_access.regenerate(name,timestamp with time zone)": ("SELECT * FROM bi_access.regenerate('{role}')",
                                                            UPDATE_NEEDED),
    "bi_access.revoke_org(text)": ("SELECT * FROM bi_access.revoke_org('1')", UPDATE_NEEDED),
    "bi_access.delete_org(text)": ("SELECT * FROM bi_access.delete_org('1')", UPDATE_NEEDED),
    "bi_access.set_target(text,text,integer,text,text)": (
        "SELECT bi_access.set_target('window', 'h.example', 5432)", UPDATE_NEEDED),
    "bi_access.drop_target(text)": ("SELECT bi_access.drop_target('window')", UPDATE_NEEDED),
    "bi_access.drop_custom_schema(text)": ("SELECT bi_access.drop_custom_schema('1')", UPDATE_NEEDED),
    "bi_access.pgbouncer_auth(text)": ("SELECT * FROM bi_access.pgbouncer_auth('{role}')", OK),
    "bi_access.export_key()": ("SELECT bi_access.export_key()", UPDATE_NEEDED),
    "bi_access.import_key(text)": ("SELECT bi_access.import_key('bi_access-key-v1:x')", UPDATE_NEEDED),
    "bi_access.rotate_key()": ("SELECT bi_access.rotate_key()", UPDATE_NEEDED),
    "bi_access.reset_key()": ("SELECT bi_access.reset_key()", UPDATE_NEEDED),
    "bi_access_internal.on_ddl_command_end()": (FIRES_DDL_END, OK),
    "bi_access_internal.on_sql_drop()": (FIRES_SQL_DROP, OK),
    "bi_access_internal.drop_guard()": (FIRES_DROP_EXTENSION, UPDATE_NEEDED),
    "bi_access_internal.init_key()": ("SELECT bi_access_internal.init_key()", UPDATE_NEEDED),
    "bi_access_internal.adopt_key_file()": ("SELECT bi_access_internal.adopt_key_file()", UPDATE_NEEDED),
    "bi_access_internal.mark_credentials()": ("SELECT bi_access_internal.mark_credentials()", UPDATE_NEEDED),
    "bi_access_internal.sync_running()": ("SELECT bi_access_internal.sync_running()", OK),
    "bi_access_internal.sync_table(oid)": ("SELECT bi_access_internal.sync_table('accounts'::regclass)",
                                           UPDATE_NEEDED),
    # Weakening an exposed table fires it too: it withdraws the grant.
    "bi_access_internal.after_ddl()": ("ALTER TABLE accounts DISABLE ROW LEVEL SECURITY", OK),
    "bi_access_internal.revoke_org(text)": ("SELECT bi_access_internal.revoke_org('1')", UPDATE_NEEDED),
    "bi_access_internal.delete_org(text)": ("SELECT bi_access_internal.delete_org('1')", UPDATE_NEEDED),
    "bi_access_internal.drop_target(text)": ("SELECT bi_access_internal.drop_target('window')", UPDATE_NEEDED),
    "bi_access_internal.drop_custom_schema(text)": ("SELECT bi_access_internal.drop_custom_schema('1')",
                                                    UPDATE_NEEDED),
    "bi_access_internal.set_target(text,text,integer,text,text)": (
        "SELECT bi_access_internal.set_target('window', 'h.example', 5432, NULL, NULL)", UPDATE_NEEDED),
    "bi_access_internal.targets()": ("SELECT * FROM bi_access_internal.targets()", OK),
    "bi_access_internal.generate(text,text,text,timestamp with time zone,integer,text,text)": (
        "SELECT * FROM bi_access_internal.generate('1', 'in the window', NULL, NULL, NULL, 'read', NULL)",
        UPDATE_NEEDED),
    "bi_access_internal.regenerate(text,timestamp with time zone)": (
        "SELECT * FROM bi_access_internal.regenerate('{role}', NULL)", UPDATE_NEEDED),
    # The planner asks it whenever a query calls an org lookup.
    "bi_access_internal.org_lookup_support(internal)": ("EXPLAIN SELECT bi_access.current_org_bigint()", OK),
    "bi_access_internal.credential_state(text,text,text,text,boolean,boolean,text)": (
        "SELECT * FROM bi_access_internal.credential_state('active', '{role}', NULL, NULL, false, false, '1')", OK),
    "bi_access_internal.pgbouncer_auth(text)": ("SELECT * FROM bi_access_internal.pgbouncer_auth('{role}')", OK),
}
WINDOW = {"0.1.0": WINDOW_010, "0.2.0": WINDOW_020}
# What the views of the old version show meanwhile.
WINDOW_VIEWS = {"0.1.0": ["credentials", "events"], "0.2.0": ["credentials", "events", "targets"]}


def extension_functions(pair, dbname: str) -> set[str]:
    return {name for (name,) in pair.primary.sql(
        "SELECT p.oid::regprocedure::text FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid "
        "JOIN pg_extension e ON e.oid = d.refobjid "
        "WHERE e.extname = 'bi_access' AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'", dbname=dbname)}


def outcome_of(pair, dbname: str, sql: str) -> str:
    """OK, or the SQLSTATE; a 55000 counts as UPDATE_NEEDED only if its
    message names the update."""
    conn = pair.primary.connect(dbname)
    try:
        with conn.cursor() as cur:
            in_block = not sql.startswith("CALL")
            if in_block:
                cur.execute("BEGIN")
            try:
                cur.execute(sql)
                if cur.description:
                    cur.fetchall()
            except psycopg2.Error as e:
                if e.pgcode == UPDATE_NEEDED and UPDATE_STATEMENT not in e.diag.message_primary:
                    return f"55000 without naming the update: {e.pgerror}"
                return e.pgcode if e.pgcode in (UPDATE_NEEDED, APPEND_ONLY_REFUSES) else f"{e.pgcode} {e.pgerror}"
            finally:
                if in_block:
                    cur.execute("ROLLBACK")
        return OK
    finally:
        conn.close()


def in_the_window(pair, dbname: str, creds: dict) -> dict:
    """Every function of the database's old SQL objects called on this
    library: (functions defined, outcomes seen, outcomes expected), and what
    the views and the credentials' logins gave."""
    version = version_of(pair, dbname)
    expected = {fn: outcome for fn, (_, outcome) in WINDOW[version].items()}
    role = creds["1"].role
    seen = {fn: outcome_of(pair, dbname, sql.format(role=role)) for fn, (sql, _) in WINDOW[version].items()}
    views = {view: outcome_of(pair, dbname, f"SELECT * FROM bi_access.{view}") for view in WINDOW_VIEWS[version]}
    reads = {}
    for org, cred in creds.items():
        for server in (pair.primary, pair.replica):
            with session(cred, server) as s:
                reads[(org, server.name)] = s.rows("SELECT DISTINCT org_id::text FROM accounts")
    return {"version": version, "defined": extension_functions(pair, dbname), "seen": seen,
            "expected": expected, "views": views, "reads": reads}


# Database -> what the window showed (filled by the `upgraded` fixture).
WINDOW_SEEN: dict[str, dict] = {}


def version_of(pair, dbname: str) -> str:
    return pair.primary.value("SELECT extversion FROM pg_extension WHERE extname = 'bi_access'", dbname=dbname)


def install_and_use(pair, dbname: str, secrets) -> dict:
    """The application's tables, the extension at the installed default
    version, its tables exposed, and a live credential per org that logs in
    on the replica."""
    pair.primary.sql(f"CREATE DATABASE {dbname}")
    pair.primary.sql(SCHEMA, dbname=dbname)
    pair.primary.sql("CREATE EXTENSION bi_access", dbname=dbname)
    pair.primary.sql(EXPOSE, dbname=dbname)
    if not pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (ADMIN_ROLE,)):
        # bi_access_admin exists once the extension does (roles are cluster-wide).
        pair.primary.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
    bi = BiAccess(pair, dbname, secrets)
    try:
        creds = {org: bi.generate(org) for org in ("1", "2")}
    finally:
        bi.close()
    pair.wait_replayed()
    for cred in creds.values():
        assert can_login(cred.login_args(pair.replica)), f"{version_of(pair, dbname)} works before the upgrade"
    return creds


# Database -> a read_write credential whose table was made before the upgrade.
WRITERS = {}


def custom_table_before_the_upgrade(pair, dbname: str, secrets):
    """A read_write credential (0.2.0 has the scope) and a table of its
    custom schema, made without the quota trigger 0.3.0 puts on every one."""
    bi = BiAccess(pair, dbname, secrets)
    try:
        bi.call("set_target", "primary", "127.0.0.1", pair.primary.port, "prefer", None)
        cred = bi.generate("1", "analyst", scope="read_write", target="primary", wait_replica=False)
    finally:
        bi.close()
    with session(cred, pair.primary) as s:
        assert s.run("CREATE TABLE loaded (x int)").ok
        assert s.run("INSERT INTO loaded VALUES (1)").ok
    return cred


@pytest.fixture(scope="module")
def upgraded(pair, secrets):
    """Database -> its credentials, once every database took its path."""
    assert (NEW / "bi_access.so").exists(), "run through pg_test/upgrade/run.sh"
    creds = {}
    for db in ("via_020", "from_010"):
        creds[db] = install_and_use(pair, db, secrets)
        assert version_of(pair, db) == "0.1.0"
    swap_in(pair, V020)
    pair.primary.sql("ALTER EXTENSION bi_access UPDATE TO '0.2.0'", dbname="via_020")
    creds["from_020"] = install_and_use(pair, "from_020", secrets)
    assert version_of(pair, "from_020") == "0.2.0"
    WRITERS["from_020"] = custom_table_before_the_upgrade(pair, "from_020", secrets)
    for cred in creds["via_020"].values():
        assert can_login(cred.login_args(pair.replica)), "0.2.0 works after its own update"
    swap_in(pair, NEW)
    for db in PATHS:
        WINDOW_SEEN[db] = in_the_window(pair, db, creds[db])
    for db in PATHS:
        pair.primary.sql("ALTER EXTENSION bi_access UPDATE", dbname=db)
    # 0.1.0 kept one key file per cluster, and 0.2.0's update removed it once
    # the first database had adopted it (0.3.0's keeps it): from_010, still
    # at 0.1.0 then, finds no file at its update and says so. README's fix:
    # the key of a database that adopted it.
    assert pair.primary.sql("SELECT severity FROM bi_access.check() WHERE object = 'bi_access key'",
                            dbname="from_010") == [("error",)]
    exported = pair.primary.value("SELECT bi_access.export_key()", dbname="via_020")
    pair.primary.sql("SELECT bi_access.import_key(%s)", (exported,), dbname="from_010")
    pair.wait_replayed()
    pair.primary.sql(f"CREATE DATABASE {FRESH}")
    pair.primary.sql("CREATE EXTENSION bi_access", dbname=FRESH)
    return creds


@pytest.fixture(params=list(PATHS))
def db(request) -> str:
    return request.param


def test_the_window_calls_every_function_of_the_old_version(upgraded, db):
    window = WINDOW_SEEN[db]
    # via_020 was updated to 0.2.0 under 0.2.0's own library first.
    assert window["version"] == ("0.2.0" if db == "via_020" else PATHS[db])
    assert window["defined"] == set(window["expected"])


def test_in_the_window_each_old_function_works_or_names_the_update(upgraded, db):
    window = WINDOW_SEEN[db]
    assert window["seen"] == window["expected"]


def test_in_the_window_the_views_read_and_credentials_stay_in_their_org(upgraded, db):
    window = WINDOW_SEEN[db]
    assert window["views"] == dict.fromkeys(window["views"], OK)
    assert window["reads"] == {(org, server): [(org,)] for org in ("1", "2") for server in ("primary", "replica")}


def test_the_upgrade_reaches_the_new_version(pair, upgraded, db):
    assert version_of(pair, db) == NEW_VERSION


def test_the_upgraded_extension_equals_a_fresh_install(pair, upgraded, db):
    upgraded_objects, fresh_objects = describe(pair, db), describe(pair, FRESH)
    assert [o for o, _ in upgraded_objects] == [o for o, _ in fresh_objects]
    different = [(o, a, b) for (o, a), (_, b) in zip(upgraded_objects, fresh_objects) if a != b]
    assert different == []
    assert pair.primary.sql(CONFIG_DUMP, dbname=db) == pair.primary.sql(CONFIG_DUMP, dbname=FRESH)


def test_existing_credentials_log_in_and_stay_in_their_org(pair, upgraded, db):
    for org, cred in upgraded[db].items():
        for server in (pair.primary, pair.replica):
            with session(cred, server) as s:
                assert s.rows("SELECT DISTINCT org_id::text FROM accounts") == [(org,)]
                assert s.rows("SELECT DISTINCT tenant FROM projects") == [(org,)]
                # The new session guard holds for them too.
                assert s.run("CREATE TEMP TABLE t (x int)").state == PERMISSION_DENIED


def test_existing_credentials_load_the_login_gate(pair, upgraded, db):
    """The update gives the credential roles of older versions (which load
    bi_access alone) the login gate beside it (src/guard/gate.rs)."""
    for cred in upgraded[db].values():
        config = pair.primary.value("SELECT array_to_string(rolconfig, ' ') FROM pg_roles WHERE rolname = %s",
                                    (cred.role,))
        assert "session_preload_libraries=bi_access, bi_access_gate" in config, config


def test_every_reveal_still_works(pair, upgraded, secrets, db):
    bi = BiAccess(pair, db, secrets)
    try:
        for cred in upgraded[db].values():
            details = bi.one("connection_details", cred.role)
            assert details["password"] == cred.password
    finally:
        bi.close()


def test_policies_are_in_the_new_form(pair, upgraded, db):
    for table in ("accounts", "projects"):
        qual = pair.primary.value(
            "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy "
            "WHERE polrelid = %s::regclass AND polname = 'bi_access_passthrough'", (table,), dbname=db)
        assert "pg_has_role" in qual, qual


def test_a_new_credential_works_after_the_upgrade(pair, upgraded, secrets, db):
    bi = BiAccess(pair, db, secrets)
    try:
        cred = bi.generate("1")
        with session(cred, pair.replica) as s:
            assert s.rows("SELECT DISTINCT org_id::text FROM accounts") == [("1",)]
    finally:
        bi.close()


def test_custom_schema_tables_of_0_2_0_get_the_quota_trigger(pair, upgraded):
    cred = WRITERS["from_020"]
    table = f"{cred.details['custom_schema']}.loaded"
    assert pair.primary.sql("SELECT tgenabled::text, tgfoid::regproc::text FROM pg_trigger "
                            "WHERE tgrelid = %s::regclass AND tgname = 'bi_access_quota'", (table,),
                            dbname="from_020") == [("O", "bi_access_internal.custom_schema_quota")]
    with session(cred, pair.primary) as s:
        assert s.run("INSERT INTO loaded VALUES (2)").ok
        assert s.value("SELECT count(*) FROM loaded") == 2


KEY_FILE_STATES = {
    # state -> (what is done to 0.1.0's key file before the update, whether
    # the update adopts it)
    "kept, mode 0644": ("chmod 0644 {key}", True),
    "removed": ("rm {key}", False),
    "replaced by another key": ("head -c 32 /dev/urandom > {key}", False),
}


@pytest.mark.parametrize("state", list(KEY_FILE_STATES))
def test_the_update_adopts_the_key_file_only_if_it_opens_the_secrets(secrets, state):
    """0.1.0 kept its key in $PGDATA/bi_access.key. The update moves it into
    bi_access.sealing_key when it opens the passwords 0.1.0 sealed, and keeps
    the file (every database of the cluster that had 0.1.0 adopts it at its
    own update; check() asks for its removal); a missing or different file
    changes nothing, and the
    reveal then fails with 55000 naming import_key, as check() does, while a
    new key is never made behind the DBA's back."""
    action, adopted = KEY_FILE_STATES[state]
    install_version(V010)
    pair = ReplicaPair()
    try:
        pair.start()
        pair.primary.sql("CREATE DATABASE keyfile")
        pair.primary.sql("CREATE EXTENSION bi_access", dbname="keyfile")
        pair.primary.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
        bi = BiAccess(pair, "keyfile", secrets)
        cred = bi.generate("1")
        bi.close()
        key = pair.primary.datadir / "bi_access.key"
        assert key.exists(), "0.1.0 keeps its key in a file"
        run_as_postgres(["sh", "-c", action.format(key=key)])
        swap_in(pair, NEW)
        pair.primary.sql("ALTER EXTENSION bi_access UPDATE", dbname="keyfile")
        bi = BiAccess(pair, "keyfile", secrets)
        try:
            if adopted:
                assert bi.one("connection_details", cred.role)["password"] == cred.password
                assert key.exists(), "another database of the cluster may still need the file"
                leftover = "SELECT severity, fix FROM bi_access.check() WHERE finding LIKE '0.1.0''s key file%'"
                assert pair.primary.sql(leftover, dbname="keyfile") == [("warning", f"once every database of this "
                    f"cluster that had bi_access 0.1.0 is updated (ALTER EXTENSION bi_access UPDATE), remove the "
                    f"file: rm {key}")]
                run_as_postgres(["rm", str(key)])
                assert pair.primary.sql(leftover, dbname="keyfile") == []
                assert bi.one("connection_details", cred.role)["password"] == cred.password
            else:
                with pytest.raises(psycopg2.Error) as info:
                    bi.one("connection_details", cred.role)
                assert info.value.pgcode == "55000"
                assert "import_key" in info.value.diag.message_hint
                found = pair.primary.sql("SELECT object FROM bi_access.check() "
                                         "WHERE object = 'bi_access key' AND severity = 'error'", dbname="keyfile")
                assert found == [("bi_access key",)]
                assert pair.primary.value("SELECT count(*) FROM bi_access.sealing_key", dbname="keyfile") == 0
        finally:
            bi.close()
    finally:
        pair.destroy()
        install_version(NEW)
