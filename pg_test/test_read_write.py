"""Scope read_write (issue 17): an org's analyst loads its own data into its
org's custom schema and joins it with the org's rows; everything else stays
refused. Two orgs, each with a read_write credential (target `primary`) and a
read credential (the default target: the replica), in a database of their own
(`rw_app`). Org C fills its schema past bi_access.custom_schema_quota."""

from __future__ import annotations

import io
import os
import subprocess

import psycopg2
import psycopg2.extras
import pytest

from bi import BiAccess, raises_sqlstate
from clients import PSQL, psql_rows, psycopg2_rows
from cluster import MEMBERSHIPS_ALLOW_SET_ROLE
from probe import OK, PERMISSION_DENIED, create_database, session

DB = "rw_app"
ORG_A, ORG_B, ORG_C = "7431", "9852", "6604"
INVALID_PARAMETER = "22023"
UNDEFINED_OBJECT = "42704"
NOT_IN_PREREQUISITE_STATE = "55000"
QUOTA_EXCEEDED = "53400"

APP = """
CREATE TABLE public.deals (id int PRIMARY KEY, org_id text NOT NULL, amount int NOT NULL);
-- A careless grant: nextval() of an application sequence is for the guard to refuse.
CREATE SEQUENCE public.deals_seq;
GRANT USAGE, UPDATE ON SEQUENCE public.deals_seq TO PUBLIC;
INSERT INTO public.deals
SELECT i, CASE WHEN i % 3 = 0 THEN '9852' ELSE '7431' END, i * 10 FROM generate_series(1, 30) i;
"""


@pytest.fixture(scope="module")
def rw(pair, saas_db, secrets):
    """The database, its targets, and the four credentials."""
    create_database(pair, DB, before_extension=APP,
                    after_extension="SELECT bi_access.expose_table('public.deals')")
    pair.primary.sql(f"ALTER DATABASE {DB} SET bi_access.custom_schema_quota = '1MB'")
    bi = BiAccess(pair, DB, secrets)
    bi.call("set_target", "primary", "127.0.0.1", pair.primary.port, "prefer", None)
    creds = {
        "a_rw": bi.generate(ORG_A, "analyst", scope="read_write", target="primary"),
        "a_read": bi.generate(ORG_A, "dashboards"),
        "b_rw": bi.generate(ORG_B, "analyst", scope="read_write", target="primary"),
        "b_read": bi.generate(ORG_B, "dashboards"),
    }
    yield bi, creds
    bi.close()


def superuser(pair, sql: str, params=None):
    return pair.primary.sql(sql, params, dbname=DB)


def schema_of(cred) -> str:
    schema = cred.details["custom_schema"]
    assert schema, cred.details
    return schema


def psql_script(url: str, script: str) -> str:
    """psql reading a script from standard input (COPY … FROM STDIN takes its
    data from the script itself), as an analyst would pipe a file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    proc = subprocess.run([PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-f", "-"],
                          input=script, capture_output=True, text=True, env=env, timeout=90)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_generate_read_write_gives_a_custom_schema_without_the_org_key(rw, pair):
    bi, creds = rw
    a_rw, a_read = creds["a_rw"], creds["a_read"]
    assert a_rw.details["scope"] == "read_write"
    assert a_rw.details["target"] == "primary"
    assert a_rw.details["port"] == pair.primary.port
    schema = schema_of(a_rw)
    assert schema.startswith("bi_custom_") and ORG_A not in schema, schema
    assert a_read.details["scope"] == "read" and a_read.details["custom_schema"] is None
    assert bi.record(a_rw.role)["scope"] == "read_write"
    assert bi.record(a_read.role)["scope"] == "read"
    # Both credentials of the org share it; the other org has its own.
    assert schema_of(creds["b_rw"]) != schema
    # Nothing any role can read names the org: the schema, its owner, its groups.
    catalog = superuser(pair, "SELECT n.nspname, r.rolname, array_agg(g.rolname ORDER BY g.rolname)::text "
                              "FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
                              "LEFT JOIN pg_auth_members m ON m.member = %s::regrole "
                              "LEFT JOIN pg_roles g ON g.oid = m.roleid "
                              "WHERE n.nspname = %s GROUP BY 1, 2", (a_rw.role, schema))
    assert len(catalog) == 1
    assert ORG_A not in repr(catalog), catalog


def test_read_write_needs_a_primary_target_and_a_known_scope(rw):
    bi, _ = rw
    # The default target names the replica's standby.
    with raises_sqlstate(INVALID_PARAMETER) as info:
        bi.generate(ORG_A, scope="read_write", wait_replica=False)
    assert "primary" in info.value.pgerror
    with raises_sqlstate(INVALID_PARAMETER):
        bi.generate(ORG_A, scope="write", wait_replica=False)


def test_the_analyst_loads_with_psql_and_psycopg2_and_joins_with_its_orgs_rows(rw, pair):
    _, creds = rw
    a_rw = creds["a_rw"]
    schema = schema_of(a_rw)
    # psql: a table in its schema (first on its search_path), loaded with COPY FROM STDIN.
    psql_script(a_rw.url, "CREATE TABLE budgets (deal_id int PRIMARY KEY, budget numeric NOT NULL);\n"
                          "COPY budgets FROM STDIN WITH (FORMAT csv);\n"
                          + "".join(f"{i},{i * 100}\n" for i in range(1, 11)) + "\\.\n")
    # psycopg2: COPY and INSERT, in one transaction.
    conn = psycopg2.connect(a_rw.url)
    try:
        with conn.cursor() as cur:
            cur.copy_expert("COPY budgets FROM STDIN WITH (FORMAT csv)",
                            io.StringIO("".join(f"{i},{i * 100}\n" for i in range(11, 21))))
            psycopg2.extras.execute_values(cur, "INSERT INTO budgets VALUES %s",
                                           [(i, i * 100) for i in range(21, 31)])
        conn.commit()
    finally:
        conn.close()
    assert superuser(pair, f"SELECT count(*) FROM {schema}.budgets") == [(30,)]
    join = "SELECT count(*), sum(b.budget - d.amount) FROM deals d JOIN budgets b ON b.deal_id = d.id"
    expected = superuser(pair, f"SELECT count(*), sum(b.budget - d.amount) FROM public.deals d "
                               f"JOIN {schema}.budgets b ON b.deal_id = d.id WHERE d.org_id = %s", (ORG_A,))
    everyone = superuser(pair, f"SELECT count(*) FROM public.deals d JOIN {schema}.budgets b ON b.deal_id = d.id")
    assert expected[0][0] == 20 and everyone == [(30,)]
    assert psql_rows(a_rw.url, join) == [[str(v) for v in expected[0]]]
    assert psycopg2_rows(a_rw.url, join) == [[str(v) for v in expected[0]]]
    # Its own sequences and views work too.
    with session(a_rw, pair.primary) as s:
        for sql in ["CREATE TABLE notes (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, deal_id int, note text)",
                    "INSERT INTO notes (deal_id, note) VALUES (1, 'check'), (3, 'not ours')",
                    "CREATE INDEX ON notes (deal_id)",
                    "CREATE VIEW margins AS SELECT d.id, b.budget - d.amount AS margin "
                    "FROM deals d JOIN budgets b ON b.deal_id = d.id",
                    "UPDATE notes SET note = 'checked' WHERE deal_id = 1",
                    "DELETE FROM notes WHERE deal_id = 3"]:
            assert s.run(sql).ok, sql
        assert s.value("SELECT count(*) FROM margins") == 20
        assert s.value(f"SELECT count(*) FROM {schema}.notes") == 1


def refused_writes(own: str, other: str) -> dict[str, str]:
    return {
        "insert app table": "INSERT INTO public.deals VALUES (100, '7431', 1)",
        "update app table": "UPDATE public.deals SET amount = 0",
        "delete app table": "DELETE FROM public.deals",
        "truncate app table": "TRUNCATE public.deals",
        "copy into app table": "COPY public.deals FROM STDIN",
        "create in public": "CREATE TABLE public.mine (x int)",
        "create temp": "CREATE TEMP TABLE scratch (x int)",
        "create in the other org's schema": f"CREATE TABLE {other}.mine (x int)",
        "read the other org's schema": f"SELECT count(*) FROM {other}.secret",
        "write the other org's schema": f"INSERT INTO {other}.secret VALUES (2)",
        "function": f"CREATE FUNCTION {own}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "trigger": f"CREATE TRIGGER t BEFORE UPDATE ON {own}.budgets FOR EACH ROW "
                   "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "foreign key to an app table": f"CREATE TABLE {own}.linked (deal_id int REFERENCES public.deals (id))",
        "foreign key added later": f"ALTER TABLE {own}.budgets ADD FOREIGN KEY (deal_id) REFERENCES public.deals (id)",
        "drop its schema": f"DROP SCHEMA {own} CASCADE",
        "move a table out": f"ALTER TABLE {own}.budgets SET SCHEMA public",
        "grant to another org": f"GRANT SELECT ON {own}.budgets TO PUBLIC",
        "a schema of its own": "CREATE SCHEMA mine",
        "large object": "SELECT lo_create(0)",
        "advisory lock": "SELECT pg_advisory_lock(1)",
        "notify": "NOTIFY app_events",
        "nextval of an app sequence": "SELECT nextval('deals_seq')",
    }


WRITE_IDS = list(refused_writes("a", "b"))


@pytest.mark.parametrize("what", WRITE_IDS)
def test_everything_outside_its_schema_is_refused(rw, pair, what):
    _, creds = rw
    own, other = schema_of(creds["a_rw"]), schema_of(creds["b_rw"])
    superuser(pair, f"CREATE TABLE IF NOT EXISTS {other}.secret (x int)")
    superuser(pair, f"CREATE TABLE IF NOT EXISTS {own}.budgets (deal_id int PRIMARY KEY, budget numeric)")
    with session(creds["a_rw"], pair.primary) as s:
        outcome = s.run(refused_writes(own, other)[what])
        assert outcome.state == PERMISSION_DENIED, str(outcome)


def test_a_read_credential_cannot_write_or_become_the_owner(rw, pair):
    _, creds = rw
    schema = schema_of(creds["a_rw"])
    owner = superuser(pair, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", (schema,))[0][0]
    with session(creds["a_read"], pair.primary) as s:
        assert s.run("SET default_transaction_read_only = off").ok
        for sql in [f"INSERT INTO {schema}.budgets VALUES (99, 1)",
                    f"DELETE FROM {schema}.budgets",
                    f"TRUNCATE {schema}.budgets",
                    f"CREATE TABLE {schema}.mine (x int)",
                    f"DROP TABLE {schema}.budgets",
                    f"SET ROLE {owner}"]:
            outcome = s.run(sql)
            assert outcome.state == PERMISSION_DENIED, str(outcome)
    # Before 16 every membership allows SET ROLE: a read credential is no
    # member of the owner group at all.
    is_member = superuser(pair, "SELECT pg_has_role(%s, %s, 'MEMBER')", (creds["a_read"].role, owner))
    assert is_member == [(False,)], MEMBERSHIPS_ALLOW_SET_ROLE


def test_the_orgs_read_credential_reads_the_custom_table_on_the_replica(rw, pair):
    _, creds = rw
    schema = schema_of(creds["a_rw"])
    pair.wait_replayed()
    a_read = creds["a_read"]
    assert a_read.details["port"] == pair.replica.port
    expected = superuser(pair, f"SELECT count(*), sum(budget) FROM {schema}.budgets")
    assert psycopg2_rows(a_read.url, f"SELECT count(*), sum(budget) FROM {schema}.budgets") == \
        [[str(v) for v in expected[0]]]
    joined = superuser(pair, f"SELECT count(*) FROM public.deals d JOIN {schema}.budgets b "
                             f"ON b.deal_id = d.id WHERE d.org_id = %s", (ORG_A,))
    assert psql_rows(a_read.url, f"SELECT count(*) FROM deals d JOIN {schema}.budgets b ON b.deal_id = d.id") \
        == [[str(joined[0][0])]]
    assert psql_rows(a_read.url, f"SELECT count(*) FROM {schema}.margins") == [[str(joined[0][0])]]


@pytest.mark.parametrize("who", ["b_read", "b_rw"])
def test_the_other_org_cannot_read_or_use_it(rw, pair, who):
    _, creds = rw
    schema = schema_of(creds["a_rw"])
    server = pair.replica if who == "b_read" else pair.primary
    pair.wait_replayed()
    with session(creds[who], server) as s:
        for sql in [f"SELECT count(*) FROM {schema}.budgets",
                    f"SELECT count(*) FROM {schema}.margins",
                    f"SELECT * FROM {schema}.budgets b JOIN deals d ON d.id = b.deal_id"]:
            outcome = s.run(sql)
            assert outcome.state == PERMISSION_DENIED, str(outcome)
        # Its own org's rows only, in the application's table.
        assert s.value("SELECT count(*) FROM deals") == \
            superuser(pair, "SELECT count(*) FROM public.deals WHERE org_id = %s", (ORG_B,))[0][0]


def test_past_the_quota_writes_that_grow_are_refused(rw, pair):
    bi, _ = rw
    c_rw = bi.generate(ORG_C, "analyst", scope="read_write", target="primary")
    with session(c_rw, pair.primary) as s:
        assert s.run("SHOW bi_access.custom_schema_quota").rows == [("1MB",)]
        assert s.run("CREATE TABLE big (x text)").ok
        # Checked before each statement: this one overshoots (README says so).
        assert s.run("INSERT INTO big SELECT repeat(md5(i::text), 20) FROM generate_series(1, 4000) i").ok
        for sql in ["INSERT INTO big VALUES ('one more')",
                    "UPDATE big SET x = 'y'",
                    "COPY big FROM STDIN",
                    "CREATE TABLE more (x int)",
                    "CREATE INDEX ON big (x)"]:
            outcome = s.run(sql)
            assert outcome.state == QUOTA_EXCEEDED, str(outcome)
        # check() names the schema for the administrator.
        schema = c_rw.details["custom_schema"]
        findings = bi.query("SELECT severity, finding FROM bi_access.check() WHERE object = %s",
                            (f"schema {schema}",))
        assert [f["severity"] for f in findings] == ["warning"], findings
        assert "past bi_access.custom_schema_quota" in findings[0]["finding"], findings
        # Reads, DELETE, TRUNCATE and DROP still work.
        assert s.value("SELECT count(*) FROM big") == 4000
        assert s.run("DELETE FROM big WHERE x = 'nothing'").ok
        assert s.run("TRUNCATE big").ok
        assert s.run("INSERT INTO big VALUES ('fits again')").ok
        assert s.run("DROP TABLE big").state == OK
        assert bi.query("SELECT 1 FROM bi_access.check() WHERE object = %s", (f"schema {schema}",)) == []
        # The quota is the superuser's: a credential cannot raise it.
        assert s.run("SET bi_access.custom_schema_quota = '1GB'").state == PERMISSION_DENIED


def test_deleting_the_writer_keeps_its_tables_and_drop_custom_schema_waits(rw, pair):
    bi, creds = rw
    schema = schema_of(creds["a_rw"])
    with raises_sqlstate(UNDEFINED_OBJECT):
        bi.call("drop_custom_schema", "no-such-org")
    with raises_sqlstate(NOT_IN_PREREQUISITE_STATE):
        bi.call("drop_custom_schema", ORG_A)
    rows_before = superuser(pair, f"SELECT count(*) FROM {schema}.budgets")
    bi.call("delete", creds["a_rw"].role)
    owners = superuser(pair, "SELECT DISTINCT relowner::regrole::text FROM pg_class WHERE relnamespace = %s::regnamespace",
                       (schema,))
    schema_owner = superuser(pair, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", (schema,))
    assert owners == schema_owner, (owners, schema_owner)
    assert superuser(pair, f"SELECT count(*) FROM {schema}.budgets") == rows_before
    pair.wait_replayed()
    assert psycopg2_rows(creds["a_read"].url, f"SELECT count(*) FROM {schema}.budgets") == [[str(rows_before[0][0])]]
    # The org's next analyst gets the same schema and its tables.
    again = bi.generate(ORG_A, "analyst-2", scope="read_write", target="primary")
    assert again.details["custom_schema"] == schema
    with session(again, pair.primary) as s:
        assert s.run("INSERT INTO budgets VALUES (31, 3100)").ok
    bi.call("delete", again.role)
    bi.call("drop_custom_schema", ORG_A)
    assert superuser(pair, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)) == [(0,)]
    assert superuser(pair, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (schema_owner[0][0],)) == [(0,)]
    with raises_sqlstate(UNDEFINED_OBJECT):
        bi.call("drop_custom_schema", ORG_A)
    # The read credential goes on reading the application's rows.
    pair.wait_replayed()
    assert psycopg2_rows(creds["a_read"].url, "SELECT count(*) FROM deals") == [["20"]]
