"""Disk bounds of scope read_write (issue 24, DESIGN property 13): an org's
writes stop inside the statement that crosses bi_access.custom_schema_quota,
within the larger of 64 MB and 10 % of it; the row trigger that counts them
cannot be removed or disabled by the credential; relations, columns and
stored expressions per custom schema are capped, and drop_custom_schema drops
a schema at the default caps in one transaction under the default
max_locks_per_transaction.

Database `disk_app`, quota 10 MB by ALTER DATABASE (as test_read_write.py
sets it); each test's writer belongs to an org of its own, so it starts from
an empty custom schema, dropped afterwards. Sizes are measured as the quota
counts them: pg_total_relation_size of the schema's tables, materialized
views and sequences."""

from __future__ import annotations

import itertools
import re

import psycopg2
import pytest

from bi import BiAccess, login
from probe import OK, PERMISSION_DENIED, create_database, session

DB = "disk_app"
MB = 1024 * 1024
QUOTA = 10 * MB
# The promised bound on what a statement writes past the quota.
ALLOWANCE = max(64 * MB, QUOTA // 10)
QUOTA_EXCEEDED = "53400"
NOT_IN_PREREQUISITE_STATE = "55000"
# What would be written without the bound: 3 million rows of 330 bytes, about 1 GB.
ROWS = 3_000_000
ROW = "repeat(md5(i::text), 10)"
# COPY sends every row before it hears the refusal: about 330 MB.
COPY_ROWS = 1_000_000

_orgs = itertools.count(1)


@pytest.fixture(scope="module")
def disk(pair, bi, secrets):
    create_database(pair, DB)
    pair.primary.sql(f"ALTER DATABASE {DB} SET bi_access.custom_schema_quota = '10MB'")
    b = BiAccess(pair, DB, secrets)
    b.call("set_target", "primary", "127.0.0.1", pair.primary.port, "prefer", None)
    yield b
    b.close()


def new_writer(disk):
    """A read_write credential of a new org (an empty custom schema)."""
    org = f"disk-{next(_orgs)}"
    return org, disk.generate(org, "analyst", scope="read_write", target="primary", wait_replica=False)


@pytest.fixture
def writer(disk):
    org, cred = new_writer(disk)
    yield cred
    forget(disk, org, cred)


def forget(disk, org, cred):
    disk.call("delete", cred.role)
    disk.call("drop_custom_schema", org)


def superuser(pair, sql: str, params=None):
    return pair.primary.sql(sql, params, dbname=DB)


def schema_size(pair, schema: str) -> int:
    return superuser(pair, "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
                           "WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'm', 'S')",
                     (schema,))[0][0]


def reported_size(message: str) -> int:
    """The schema's size the refusal measured, inside the statement."""
    found = re.search(r"quota: (\d+) bytes and (\d+) more", message)
    assert found, message
    return int(found.group(1))


def trigger_state(pair, schema: str, table: str):
    rows = superuser(pair, "SELECT tgenabled::text, tgfoid::regproc::text FROM pg_trigger "
                           "WHERE tgrelid = %s::regclass AND tgname = 'bi_access_quota'", (f"{schema}.{table}",))
    return rows[0] if rows else None


GUARDED = ("O", "bi_access_internal.custom_schema_quota")


def test_insert_select_stops_inside_the_statement_within_the_bound(pair, writer):
    schema = writer.details["custom_schema"]
    with session(writer, pair.primary) as s:
        assert s.run("SHOW bi_access.custom_schema_quota").rows == [("10MB",)]
        assert s.run("CREATE TABLE big (x text)").ok
        outcome = s.run(f"INSERT INTO big SELECT {ROW} FROM generate_series(1, {ROWS}) i")
        assert outcome.state == QUOTA_EXCEEDED, str(outcome)
        assert "custom_schema_quota" in outcome.message
        # The session goes on: reads, and DELETE/TRUNCATE free the space.
        assert s.value("SELECT count(*) FROM big") == 0
    size = schema_size(pair, schema)
    # The aborted rows stay on disk until vacuum: what the statement wrote.
    assert QUOTA // 2 < size <= QUOTA + ALLOWANCE, size
    assert reported_size(outcome.message) <= QUOTA + ALLOWANCE


def test_an_update_is_counted_too(pair, writer):
    schema = writer.details["custom_schema"]
    with session(writer, pair.primary) as s:
        assert s.run("CREATE TABLE t (id int, x text)").ok
        assert s.run("INSERT INTO t SELECT i, 'x' FROM generate_series(1, 20000) i").ok
        # A pass writes every row again: 20000 rows of 1 kB, 20 MB.
        outcome = s.run("UPDATE t SET x = repeat(md5(id::text), 30)")
        assert outcome.state == QUOTA_EXCEEDED, str(outcome)
    assert schema_size(pair, schema) <= QUOTA + ALLOWANCE


class Lines:
    """A file-like stream of COPY text rows, made as psycopg2 reads it."""

    def __init__(self, rows: int):
        self.rows = iter(range(rows))

    def read(self, size: int = 8192) -> str:
        chunk = []
        for i in itertools.islice(self.rows, max(1, size // 330)):
            chunk.append(f"{i:08d}" + "x" * 320 + "\n")
        return "".join(chunk)

    readline = read


def test_copy_from_stdin_stops_inside_the_statement_within_the_bound(pair, writer):
    schema = writer.details["custom_schema"]
    conn = login(writer.login_args(pair.primary))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE loaded (x text)")
            with pytest.raises(psycopg2.Error) as info:
                cur.copy_expert("COPY loaded FROM STDIN", Lines(COPY_ROWS))
        assert info.value.pgcode == QUOTA_EXCEEDED, info.value.pgerror
    finally:
        conn.close()
    assert QUOTA // 2 < schema_size(pair, schema) <= QUOTA + ALLOWANCE
    assert reported_size(info.value.pgerror) <= QUOTA + ALLOWANCE


CREATE_AS = {
    "CREATE TABLE AS": f"CREATE TABLE copied AS SELECT {ROW} AS x FROM generate_series(1, {ROWS}) i",
    "SELECT INTO": f"SELECT {ROW} AS x INTO copied FROM generate_series(1, {ROWS}) i",
    "CREATE MATERIALIZED VIEW": f"CREATE MATERIALIZED VIEW copied AS SELECT {ROW} AS x "
                                f"FROM generate_series(1, {ROWS}) i",
    "CREATE TABLE AS EXECUTE": "CREATE TABLE copied AS EXECUTE rows_to_copy",
}


@pytest.mark.parametrize("how", list(CREATE_AS))
def test_create_table_as_stops_inside_the_statement_within_the_bound(pair, writer, how):
    schema = writer.details["custom_schema"]
    with session(writer, pair.primary) as s:
        assert s.run(f"PREPARE rows_to_copy AS SELECT {ROW} AS x FROM generate_series(1, {ROWS}) i").ok
        outcome = s.run(CREATE_AS[how])
        assert outcome.state == QUOTA_EXCEEDED, str(outcome)
        # Measured inside the statement, with the new relation in it.
        assert QUOTA // 2 < reported_size(outcome.message) <= QUOTA + ALLOWANCE
    # The relation went with the statement.
    assert superuser(pair, "SELECT count(*) FROM pg_class WHERE relnamespace = %s::regnamespace",
                     (schema,)) == [(0,)]
    assert schema_size(pair, schema) == 0


def test_index_builds_and_rewrites_are_checked_before_they_start(pair, writer):
    schema = writer.details["custom_schema"]
    with session(writer, pair.primary) as s:
        assert s.run("CREATE TABLE t (x text)").ok
        # About 6 MB: under the quota, and no index or copy of it fits beside it.
        assert s.run(f"INSERT INTO t SELECT {ROW} FROM generate_series(1, 16000) i").ok
        assert 5 * MB < schema_size(pair, schema) < QUOTA
        for sql, what in [("CREATE INDEX ON t (x)", "building this index"),
                          ("ALTER TABLE t ADD UNIQUE (x)", "building this index"),
                          ("ALTER TABLE t ALTER COLUMN x TYPE varchar", "rewriting this table"),
                          ("ALTER TABLE t ADD COLUMN r float8 DEFAULT random()", "rewriting this table")]:
            outcome = s.run(sql)
            assert outcome.state == QUOTA_EXCEEDED, str(outcome)
            assert what in outcome.message, outcome.message
        # What writes no row again still works.
        assert s.run("ALTER TABLE t ADD COLUMN n int DEFAULT 0").ok
        assert s.run("ALTER TABLE t ALTER COLUMN n SET NOT NULL").ok


def test_the_trigger_is_on_every_table_the_credential_makes(pair, writer):
    schema = writer.details["custom_schema"]
    with session(writer, pair.primary) as s:
        for sql in ["CREATE TABLE plain (x int)",
                    "CREATE TABLE liked (LIKE plain INCLUDING ALL)",
                    "CREATE TABLE made_as AS SELECT 1 AS x",
                    "SELECT 1 AS x INTO selected_into",
                    "CREATE TABLE parted (x int) PARTITION BY RANGE (x)",
                    "CREATE UNLOGGED TABLE unlogged (x int)"]:
            assert s.run(sql).ok, sql
        # Dropped and made again: guarded again.
        assert s.run("DROP TABLE plain").ok
        assert s.run("CREATE TABLE plain (x text)").ok
    for table in ["plain", "liked", "made_as", "selected_into", "parted", "unlogged"]:
        assert trigger_state(pair, schema, table) == GUARDED, table


# Every path to remove, rename or disable the trigger, or to have rows pass it,
# with the SQLSTATE it is refused with.
TRIGGER_PATHS = {
    "ALTER TABLE DISABLE TRIGGER": ("ALTER TABLE t DISABLE TRIGGER bi_access_quota", PERMISSION_DENIED),
    "ALTER TABLE DISABLE TRIGGER ALL": ("ALTER TABLE t DISABLE TRIGGER ALL", PERMISSION_DENIED),
    "ALTER TABLE DISABLE TRIGGER USER": ("ALTER TABLE t DISABLE TRIGGER USER", PERMISSION_DENIED),
    "ALTER TABLE ENABLE REPLICA TRIGGER": ("ALTER TABLE t ENABLE REPLICA TRIGGER bi_access_quota",
                                           PERMISSION_DENIED),
    "DROP TRIGGER": ("DROP TRIGGER bi_access_quota ON t", PERMISSION_DENIED),
    "ALTER TRIGGER RENAME": ("ALTER TRIGGER bi_access_quota ON t RENAME TO other", PERMISSION_DENIED),
    "CREATE OR REPLACE TRIGGER": ("CREATE OR REPLACE TRIGGER bi_access_quota BEFORE INSERT ON t FOR EACH ROW "
                                  "EXECUTE FUNCTION suppress_redundant_updates_trigger()", PERMISSION_DENIED),
    "SET session_replication_role": ("SET session_replication_role = replica", PERMISSION_DENIED),
    "set_config session_replication_role": ("SELECT set_config('session_replication_role', 'replica', false)",
                                            PERMISSION_DENIED),
    "ALTER TABLE ATTACH PARTITION": ("ALTER TABLE parted ATTACH PARTITION t FOR VALUES FROM (0) TO (10)",
                                     PERMISSION_DENIED),
    "CREATE TABLE PARTITION OF": ("CREATE TABLE part PARTITION OF parted FOR VALUES FROM (10) TO (20)",
                                  PERMISSION_DENIED),
    "ALTER TABLE SET SCHEMA": ("ALTER TABLE t SET SCHEMA public", PERMISSION_DENIED),
    "ALTER TABLE RENAME": ("ALTER TABLE t RENAME TO u", PERMISSION_DENIED),
    "DROP FUNCTION": ("DROP FUNCTION bi_access_internal.custom_schema_quota()", PERMISSION_DENIED),
    "ALTER EXTENSION DROP FUNCTION": ("ALTER EXTENSION bi_access DROP FUNCTION "
                                      "bi_access_internal.custom_schema_quota()", PERMISSION_DENIED),
    "a stored generated column": ("CREATE TABLE g (x int, y text GENERATED ALWAYS AS (repeat('y', x)) STORED)",
                                  PERMISSION_DENIED),
    "a stored generated column added": ("ALTER TABLE t ADD COLUMN y int GENERATED ALWAYS AS (x * 2) STORED",
                                        PERMISSION_DENIED),
}


@pytest.fixture(scope="module")
def guarded_table(pair, disk):
    org, cred = new_writer(disk)
    with session(cred, pair.primary) as s:
        assert s.run("CREATE TABLE t (x int)").ok
        assert s.run("CREATE TABLE parted (x int) PARTITION BY RANGE (x)").ok
        assert s.run("CREATE INDEX t_x ON t (x)").ok
        assert s.run("CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x").ok
    yield cred
    forget(disk, org, cred)


@pytest.mark.parametrize("path", list(TRIGGER_PATHS))
def test_every_path_to_remove_or_disable_the_trigger_is_refused(pair, guarded_table, path):
    sql, state = TRIGGER_PATHS[path]
    schema = guarded_table.details["custom_schema"]
    with session(guarded_table, pair.primary) as s:
        outcome = s.run(sql)
        assert outcome.state == state, str(outcome)
        # The rows it writes still pass the trigger.
        assert s.value("SHOW session_replication_role") == "origin"
        assert s.run("INSERT INTO t VALUES (1)").ok
    assert trigger_state(pair, schema, "t") == GUARDED
    assert superuser(pair, "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
                     (f"{schema}.t",)) == [(1,)]


@pytest.mark.parametrize("sql", ["REFRESH MATERIALIZED VIEW mv", "CLUSTER t USING t_x", "VACUUM FULL t",
                                 "REINDEX TABLE t"])
def test_what_rewrites_a_relation_uncounted_is_refused(pair, guarded_table, sql):
    with session(guarded_table, pair.primary) as s:
        outcome = s.run(sql)
        assert outcome.state == PERMISSION_DENIED, str(outcome)


def test_a_table_without_its_trigger_is_not_written_until_a_sync(pair, disk, guarded_table):
    schema = guarded_table.details["custom_schema"]
    superuser(pair, f"DROP TRIGGER bi_access_quota ON {schema}.t")
    try:
        with session(guarded_table, pair.primary) as s:
            for sql in ["INSERT INTO t VALUES (2)", "UPDATE t SET x = 3", "COPY t FROM STDIN"]:
                outcome = s.run(sql)
                assert outcome.state == NOT_IN_PREREQUISITE_STATE, str(outcome)
            assert s.run("DELETE FROM t WHERE x = 0").ok
    finally:
        disk.query("SELECT * FROM bi_access.sync_tables()")
    assert trigger_state(pair, schema, "t") == GUARDED
    superuser(pair, f"ALTER TABLE {schema}.t DISABLE TRIGGER bi_access_quota")
    with session(guarded_table, pair.primary) as s:
        assert s.run("INSERT INTO t VALUES (2)").state == NOT_IN_PREREQUISITE_STATE
        disk.query("SELECT * FROM bi_access.sync_tables()")
        assert s.run("INSERT INTO t VALUES (2)").ok
    assert trigger_state(pair, schema, "t") == GUARDED


# The default caps, and the locks drop_custom_schema may take for a schema at
# them (src/custom_schema.rs drop_locks: 6 per relation, 1 per expression or
# constraint, 64 besides).
MAX_RELATIONS, MAX_EXPRESSIONS = 400, 1000
DROP_LOCKS = 6 * MAX_RELATIONS + MAX_EXPRESSIONS + 64


def test_relations_past_the_cap_are_refused_and_drop_custom_schema_drops_at_the_caps(pair, disk):
    assert pair.primary.value("SHOW max_locks_per_transaction") == "64"
    org, cred = new_writer(disk)
    schema = cred.details["custom_schema"]
    # The shape that takes the most locks to drop: tables with a TOAST table,
    # CHECK constraints up to the expressions' cap.
    checks = iter(range(MAX_EXPRESSIONS))
    with session(cred, pair.primary) as s:
        for i in range(MAX_RELATIONS):
            columns = ["x text"] + [f"c{j} int CHECK (c{j} > {j})" for j in itertools.islice(checks, 3)]
            assert s.run(f"CREATE TABLE t{i} ({', '.join(columns)})").ok, i
        for sql in ["CREATE TABLE one_more (x int)", "CREATE INDEX ON t0 (x)", "CREATE VIEW v AS SELECT 1 AS x",
                    "CREATE TABLE one_more AS SELECT 1 AS x"]:
            outcome = s.run(sql)
            assert outcome.state == QUOTA_EXCEEDED, str(outcome)
            assert "custom_schema_max_relations" in outcome.message
        outcome = s.run("ALTER TABLE t399 ADD CHECK (x <> '')")
        assert outcome.state == QUOTA_EXCEEDED, str(outcome)
        assert "custom_schema_max_expressions" in outcome.message
    assert superuser(pair, "SELECT count(*) FROM pg_class WHERE relnamespace = %s::regnamespace",
                     (schema,)) == [(MAX_RELATIONS,)]
    assert superuser(pair, "SELECT count(*) FROM pg_constraint WHERE connamespace = %s::regnamespace",
                     (schema,)) == [(MAX_EXPRESSIONS,)]
    disk.call("delete", cred.role)
    # One transaction, as the administrator: every lock it takes is held
    # until commit.
    conn = disk.connect()
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SELECT bi_access.drop_custom_schema(%s)", (org,))
            cur.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND NOT fastpath")
            locks = cur.fetchone()[0]
        conn.commit()
    finally:
        conn.close()
    assert MAX_RELATIONS * 6 <= locks <= DROP_LOCKS, locks
    assert superuser(pair, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)) == [(0,)]


def test_columns_and_expressions_past_their_caps_are_refused(pair, disk):
    org, cred = new_writer(disk)
    for setting, value in [("custom_schema_max_columns", 50), ("custom_schema_max_expressions", 6)]:
        superuser(pair, f"ALTER ROLE {cred.role} IN DATABASE {DB} SET bi_access.{setting} = {value}")
    try:
        with session(cred, pair.primary) as s:
            wide = ", ".join(f"c{i} int" for i in range(40))
            assert s.run(f"CREATE TABLE wide ({wide})").ok
            outcome = s.run(f"CREATE TABLE wider ({', '.join(f'c{i} int' for i in range(11))})")
            assert outcome.state == QUOTA_EXCEEDED, str(outcome)
            assert "custom_schema_max_columns" in outcome.message
            # Index columns and dropped columns count too.
            assert s.run("ALTER TABLE wide DROP COLUMN c39").ok
            assert s.run("ALTER TABLE wide ADD COLUMN d int").state == OK
            assert s.run("CREATE INDEX ON wide (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9)").state == QUOTA_EXCEEDED
            # A default, a CHECK, an index expression, an index predicate and
            # a view: one each.
            for sql in ["CREATE TABLE e (a int DEFAULT 1, b int CHECK (b > 0))",
                        "CREATE INDEX ON e ((a + b))",
                        "CREATE INDEX ON e (a) WHERE b > 1",
                        "CREATE VIEW ev AS SELECT a FROM e"]:
                assert s.run(sql).ok, sql
            # A sixth: a CHECK whose stored tree passes 8 kB counts more than one.
            big = ", ".join(str(i) for i in range(3000))
            outcome = s.run(f"ALTER TABLE e ADD CHECK (a IN ({big}))")
            assert outcome.state == QUOTA_EXCEEDED, str(outcome)
            assert "custom_schema_max_expressions" in outcome.message
            assert s.run("ALTER TABLE e ADD CHECK (a < 100)").ok
            outcome = s.run("ALTER TABLE e ADD CHECK (a > -100)")
            assert outcome.state == QUOTA_EXCEEDED, str(outcome)
    finally:
        forget(disk, org, cred)


def test_drop_extension_takes_the_triggers_and_leaves_the_tables(pair, bi, secrets):
    """A custom schema outlives its credentials and the extension: DROP
    EXTENSION (once no credential is current) drops the quota triggers,
    which depend on its function, and keeps the org's tables and rows."""
    db = "disk_drop"
    create_database(pair, db)
    b = BiAccess(pair, db, secrets)
    try:
        b.call("set_target", "primary", "127.0.0.1", pair.primary.port, "prefer", None)
        cred = b.generate("kept", "analyst", scope="read_write", target="primary", wait_replica=False)
        with session(cred, pair.primary) as s:
            assert s.run("CREATE TABLE kept (x int)").ok
            assert s.run("INSERT INTO kept VALUES (1), (2)").ok
        b.call("delete", cred.role)
    finally:
        b.close()
    schema = cred.details["custom_schema"]
    pair.primary.sql("DROP EXTENSION bi_access", dbname=db)
    assert pair.primary.sql(f"SELECT count(*) FROM {schema}.kept", dbname=db) == [(2,)]
    assert pair.primary.sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'bi_access_quota'", dbname=db) == [(0,)]
