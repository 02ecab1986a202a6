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
stop, the files change, the servers start). Afterwards, for each database:
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
    for cred in creds["via_020"].values():
        assert can_login(cred.login_args(pair.replica)), "0.2.0 works after its own update"
    swap_in(pair, NEW)
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
