"""The key that seals the passwords kept for "View Details" (properties 8 and
9): in a table that physical replication carries and no logical dump
contains; never silently replaced; exported, imported, rotated and reset by
superusers only, each audited."""

from __future__ import annotations

import subprocess

import psycopg2
import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, BiAccess
from cluster import ReplicaPair, as_postgres, pg_tool, run_as_postgres, wait_until
from probe import ensure_login_role

DB = "keyed"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"


def reveal(bi: BiAccess, role: str) -> str:
    return bi.one("connection_details", role)["password"]


def sqlstate_of(pair_server, sql: str, dbname: str, params=None) -> str:
    try:
        pair_server.sql(sql, params, dbname=dbname)
    except psycopg2.Error as e:
        return e.pgcode
    return "ok"


@pytest.fixture(scope="module")
def keyed(pair, saas_db, secrets):
    pair.primary.sql(f"CREATE DATABASE {DB}")
    pair.primary.sql("CREATE TABLE t (id int, org_id bigint); INSERT INTO t VALUES (1, 1), (2, 2); "
                     "CREATE EXTENSION bi_access; SELECT bi_access.expose_table('t')", dbname=DB)
    bi = BiAccess(pair, DB, secrets)
    creds = {org: bi.generate(org) for org in ("1", "2")}
    yield bi, creds
    bi.close()


def test_the_key_lives_in_a_table_no_role_but_a_superuser_reads(pair, keyed):
    assert pair.primary.value("SELECT count(*) FROM bi_access.sealing_key", dbname=DB) == 1
    ensure_login_role(pair, "key_reader", "key-reader-password")
    pair.primary.sql("GRANT pg_read_all_data TO key_reader")
    conn = psycopg2.connect(**pair.primary.tcp_args(DB, "key_reader", "key-reader-password"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM bi_access.sealing_key")
            assert cur.fetchone() == (0,), "row-level security hides it from pg_read_all_data"
    finally:
        conn.close()
        pair.primary.sql("REVOKE pg_read_all_data FROM key_reader")


def test_no_logical_dump_contains_the_key(pair, keyed):
    exported = pair.primary.value("SELECT bi_access.export_key()", dbname=DB)
    key_b64 = exported.split(":", 1)[1]
    dump = run_as_postgres([pg_tool("pg_dump"), *pair.primary.tool_args(DB)]).stdout
    assert "bi_access.credential" in dump, "control: the records are dumped"
    assert key_b64 not in dump
    assert "COPY bi_access.sealing_key" not in dump


def test_check_names_roles_that_could_read_the_key(pair, keyed):
    ensure_login_role(pair, "file_reader", "file-reader-password")
    pair.primary.sql("GRANT pg_read_server_files TO file_reader")
    try:
        found = pair.primary.sql("SELECT object, fix FROM bi_access.check() WHERE object = 'role file_reader'",
                                 dbname=DB)
        assert found == [("role file_reader", "REVOKE pg_read_server_files, pg_execute_server_program FROM "
                                              "file_reader; ALTER ROLE file_reader NOBYPASSRLS;")]
    finally:
        pair.primary.sql("REVOKE pg_read_server_files FROM file_reader")


def test_only_superusers_manage_the_key(pair, keyed):
    bi, _ = keyed
    for call in ("export_key()", "rotate_key()", "reset_key()", "import_key('x')"):
        with pytest.raises(psycopg2.Error) as info:
            bi.query(f"SELECT bi_access.{call}")
        assert info.value.pgcode == "42501", call


@pytest.mark.parametrize("call", ["rotate_key()", "reset_key()", "import_key('bi_access-key-v1:x')"])
def test_replacing_the_key_needs_read_committed(pair, keyed, call):
    """A snapshot taken before the call waited for the sealers in flight
    would miss their passwords: refused (25000) under REPEATABLE READ."""
    conn = pair.primary.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(f"SELECT bi_access.{call}")
            cur.execute("ROLLBACK")
    finally:
        conn.close()
    assert info.value.pgcode == "25000", info.value.pgerror


def test_rotation_reseals_every_secret_in_one_call(pair, keyed):
    bi, creds = keyed
    before = pair.primary.value("SELECT fingerprint FROM bi_access.sealing_key", dbname=DB)
    resealed = pair.primary.value("SELECT bi_access.rotate_key()", dbname=DB)
    assert resealed == len(creds)
    assert pair.primary.value("SELECT fingerprint FROM bi_access.sealing_key", dbname=DB) != before
    for cred in creds.values():
        assert reveal(bi, cred.role) == cred.password
    assert pair.primary.value("SELECT count(*) FROM bi_access.events WHERE action = 'rotate_key'", dbname=DB) == 1


def test_another_key_never_silently_replaces_the_one_in_use(pair, keyed, bi):
    """A key exported elsewhere cannot be imported over the key that sealed
    this database's passwords (55000); the same key again is a no-op."""
    bi.generate("key-elsewhere")  # the saas database has a key of its own
    saas_db = bi
    bi, creds = keyed
    other = pair.primary.value("SELECT bi_access.export_key()", dbname=saas_db.dbname)
    assert other != pair.primary.value("SELECT bi_access.export_key()", dbname=DB)
    assert sqlstate_of(pair.primary, "SELECT bi_access.import_key(%s)", DB, (other,)) == \
        OBJECT_NOT_IN_PREREQUISITE_STATE
    same = pair.primary.value("SELECT bi_access.export_key()", dbname=DB)
    pair.primary.sql("SELECT bi_access.import_key(%s)", (same,), dbname=DB)
    for cred in creds.values():
        assert reveal(bi, cred.role) == cred.password


def test_a_replica_cloned_before_the_install_reveals_every_credential_after_failover(secrets):
    """The key travels with the WAL: a standby cloned before CREATE EXTENSION
    has it once replayed, and after promotion every reveal works there."""
    pair = ReplicaPair()
    try:
        pair.start()
        pair.primary.sql("CREATE DATABASE failover")
        pair.primary.sql("CREATE EXTENSION bi_access", dbname="failover")
        pair.primary.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s IN ROLE bi_access_admin",
                         (ADMIN_PASSWORD,))
        bi = BiAccess(pair, "failover", secrets)
        creds = [bi.generate(str(org)) for org in range(5)]
        bi.close()
        pair.wait_replayed()
        run_as_postgres([pg_tool("pg_ctl"), "-D", str(pair.replica.datadir), "-w", "promote"])
        wait_until(lambda: not pair.replica.value("SELECT pg_is_in_recovery()"), 30, "the promotion")
        conn = psycopg2.connect(**pair.replica.tcp_args("failover", ADMIN_ROLE, ADMIN_PASSWORD))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for cred in creds:
                    cur.execute("SELECT password FROM bi_access.connection_details(%s)", (cred.role,))
                    assert cur.fetchone() == (cred.password,)
        finally:
            conn.close()
    finally:
        pair.destroy()


def test_a_logical_restore_elsewhere_reveals_once_the_key_is_imported(pair, keyed, secrets):
    """pg_dumpall --roles-only and pg_dump into a fresh cluster: the records
    come, the key does not. A reveal then says the key is missing (55000,
    naming import_key); after import_key of the exported key, every reveal
    gives the original password."""
    _, creds = keyed
    exported = pair.primary.value("SELECT bi_access.export_key()", dbname=DB)
    roles = run_as_postgres([pg_tool("pg_dumpall"), *pair.primary.tool_args(), "--roles-only"]).stdout
    dump_file = pair.root / "keyed.dump"
    run_as_postgres([pg_tool("pg_dump"), *pair.primary.tool_args(DB), "-Fc", "-f", str(dump_file)])
    elsewhere = ReplicaPair()
    try:
        elsewhere.start()
        subprocess.run(as_postgres([pg_tool("psql"), *elsewhere.primary.tool_args("postgres"), "-q"]),
                       input=roles, capture_output=True, text=True, timeout=120)
        elsewhere.primary.sql(f"CREATE DATABASE {DB}")
        subprocess.run(as_postgres([pg_tool("pg_restore"), *elsewhere.primary.tool_args(DB), str(dump_file)]),
                       capture_output=True, text=True, timeout=120)
        conn = psycopg2.connect(**elsewhere.primary.tcp_args(DB, ADMIN_ROLE, ADMIN_PASSWORD))
        conn.autocommit = True
        try:
            # The documented call after a restore adopts the credentials
            # (pg_test/test_custody.py); the key is another matter.
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM bi_access.sync_tables()")
            cred = creds["1"]
            with pytest.raises(psycopg2.Error) as info:
                with conn.cursor() as cur:
                    cur.execute("SELECT password FROM bi_access.connection_details(%s)", (cred.role,))
            assert info.value.pgcode == OBJECT_NOT_IN_PREREQUISITE_STATE
            assert "import_key" in (info.value.diag.message_hint or ""), info.value.diag.message_hint
            elsewhere.primary.sql("SELECT bi_access.import_key(%s)", (exported,), dbname=DB)
            with conn.cursor() as cur:
                for cred in creds.values():
                    cur.execute("SELECT password FROM bi_access.connection_details(%s)", (cred.role,))
                    assert cur.fetchone() == (cred.password,)
        finally:
            conn.close()
    finally:
        elsewhere.destroy()


def test_reset_forgets_what_a_lost_key_sealed_and_regenerate_recovers(pair, keyed):
    bi, creds = keyed
    forgotten = pair.primary.value("SELECT bi_access.reset_key()", dbname=DB)
    assert forgotten == len(creds)
    cred = creds["1"]
    with pytest.raises(psycopg2.Error) as info:
        reveal(bi, cred.role)
    assert info.value.pgcode == OBJECT_NOT_IN_PREREQUISITE_STATE
    assert "lost" in bi.record(cred.role)["last_error"]
    new = bi.regenerate(cred.role)
    assert reveal(bi, cred.role) == new.password


def test_no_key_file_is_written_to_the_data_directory(bi, pair):
    """Since 0.2.0 the key lives in a table: no file of the data directory
    holds it."""
    bi.generate("203")
    assert pair.primary.value("SELECT count(*) FROM bi_access.sealing_key", dbname=bi.dbname) == 1
    assert not (pair.primary.datadir / "bi_access.key").exists()
