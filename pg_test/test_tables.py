"""Shared tables and column lists (DESIGN.md 0.3: `share_table`, `expose_table`'s
`columns`, the `bi_access.tables` view), end to end on the primary and the
replica.

The `tables_db` database has the reference tables a BI user joins with
(`plans`, `currencies`), a `users` table whose password hashes and API tokens
must stay out of BI (exposed with a column list), and `regions`, a reference
table that carries the org column (sharing it would hand every org's rows to
every credential). Each hidden value is unique to its row and org, so any
output that carries one is a leak. Every read is counted against what the
superuser reads of the same rows."""

from __future__ import annotations

import io

import psycopg2
import pytest

from bi import PLAIN_PASSWORD, PLAIN_ROLE, login
from probe import PERMISSION_DENIED, Session, bi_for, leaks, session, tenant_database

DB = "tables_db"
ORG_A, ORG_B = "8101", "8102"
INVALID_PARAMETER = "22023"
UNDEFINED_COLUMN = "42703"
WRONG_OBJECT_TYPE = "42809"

SCHEMA = f"""
CREATE TABLE plans (id integer PRIMARY KEY, name text NOT NULL, price_cents integer NOT NULL,
                    internal_cost text NOT NULL);
INSERT INTO plans VALUES (1, 'Free', 0, 'cost-free-7741'), (2, 'Pro', 2900, 'cost-pro-7742'),
                         (3, 'Enterprise', 99000, 'cost-ent-7743');
CREATE TABLE currencies (code text PRIMARY KEY, name text NOT NULL);
INSERT INTO currencies VALUES ('EUR', 'Euro'), ('USD', 'US dollar'), ('JPY', 'Yen'), ('CHF', 'Swiss franc');
CREATE TABLE users (id serial PRIMARY KEY, org_id bigint NOT NULL, email text NOT NULL,
                    plan_id integer NOT NULL REFERENCES plans, password_hash text NOT NULL,
                    api_token text NOT NULL);
INSERT INTO users (org_id, email, plan_id, password_hash, api_token)
  SELECT o, 'user' || g || '@org' || o || '.example', 1 + g % 3, 'hash-' || o || '-' || g, 'token-' || o || '-' || g
  FROM (VALUES ({ORG_A}, 3), ({ORG_B}, 5)) v(o, n), generate_series(1, n) g;
CREATE TABLE regions (id integer PRIMARY KEY, org_id bigint NOT NULL, name text NOT NULL);
INSERT INTO regions VALUES (1, {ORG_A}, 'region of {ORG_A}'), (2, {ORG_B}, 'region of {ORG_B}');
"""
EXPOSE = """
SELECT bi_access.share_table('plans', ARRAY['id', 'name', 'price_cents']);
SELECT bi_access.share_table('currencies');
SELECT bi_access.expose_table('users', 'org_id', ARRAY['id', 'org_id', 'email', 'plan_id']);
"""
HIDDEN = {"users": ("password_hash", "api_token"), "plans": ("internal_cost",)}


@pytest.fixture(scope="module")
def tables(pair, bi):
    """The database; `bi` first: it makes the application's admin and plain roles."""
    return tenant_database(pair, DB, SCHEMA, EXPOSE)


@pytest.fixture(scope="module")
def tbi(request, pair, tables, secrets):
    return bi_for(request, pair, tables, secrets)


@pytest.fixture(scope="module")
def creds(tbi):
    return {org: tbi.generate(org) for org in (ORG_A, ORG_B)}


@pytest.fixture(params=["primary", "replica"])
def server(request, pair):
    return getattr(pair, request.param)


def superuser_rows(pair, sql: str, params=None) -> list[tuple]:
    return pair.primary.sql(sql, params, dbname=DB)


def hidden_values(pair) -> dict[str, str]:
    """Every hidden value of every row, each naming where it comes from."""
    out = {}
    for table, columns in HIDDEN.items():
        for column in columns:
            for (value,) in superuser_rows(pair, f"SELECT {column}::text FROM {table}"):
                out[value] = f"{table}.{column}"
    return out


def test_a_credential_reads_every_row_of_a_shared_table(pair, creds, server):
    for org, cred in creds.items():
        with session(cred, server) as s:
            assert s.rows("SELECT code, name FROM currencies ORDER BY 1") == \
                superuser_rows(pair, "SELECT code, name FROM currencies ORDER BY 1")
            assert s.rows("SELECT id, name, price_cents FROM plans ORDER BY 1") == \
                superuser_rows(pair, "SELECT id, name, price_cents FROM plans ORDER BY 1")


def test_a_credential_joins_its_own_rows_with_a_shared_table(pair, creds, server):
    query = ("SELECT u.email, p.name, p.price_cents FROM users u JOIN plans p ON p.id = u.plan_id "
             "{where} ORDER BY 1")
    for org, cred in creds.items():
        with session(cred, server) as s:
            got = s.rows(query.format(where=""))
        want = superuser_rows(pair, query.format(where="WHERE u.org_id = %s"), (int(org),))
        assert got == want and len(want) == {ORG_A: 3, ORG_B: 5}[org]


def test_a_credential_reads_the_listed_columns_of_its_own_rows(pair, creds, server):
    cred = creds[ORG_A]
    with session(cred, server) as s:
        got = s.rows("SELECT id, org_id, email, plan_id FROM users ORDER BY id")
    assert got == superuser_rows(pair, "SELECT id, org_id, email, plan_id FROM users WHERE org_id = %s ORDER BY id",
                                 (int(ORG_A),))
    assert len(got) == 3


# Every way a client could read a column outside the list: each is refused
# with 42501, whatever the server.
HIDDEN_READS = {
    "select star": "SELECT * FROM users",
    "select the column": "SELECT password_hash FROM users",
    "filter on the column": "SELECT count(*) FROM users WHERE api_token LIKE 'token-%%'",
    "order by the column": "SELECT id FROM users ORDER BY api_token",
    "whole row": "SELECT u FROM users u",
    "row_to_json": "SELECT row_to_json(u) FROM users u",
    "to_jsonb of a shared table": "SELECT to_jsonb(p) FROM plans p",
    "shared table star": "SELECT * FROM plans",
    "shared table column": "SELECT internal_cost FROM plans",
    "system column": "SELECT ctid FROM users",
    "subquery": "SELECT (SELECT max(password_hash) FROM users)",
    "cte": "WITH t AS (SELECT * FROM users) SELECT email FROM t",
    "join using the hidden column": "SELECT u.email FROM users u JOIN plans p ON p.internal_cost = u.api_token",
    "field of the whole row": "SELECT (u).api_token FROM users u",
    "statistics of the hidden column": "SELECT most_common_vals::text FROM pg_stats WHERE attname = 'api_token'",
}


@pytest.mark.parametrize("read", list(HIDDEN_READS))
def test_no_hidden_column_is_readable(pair, creds, server, read):
    with session(creds[ORG_A], server) as s:
        outcome = s.run(HIDDEN_READS[read])
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert leaks(outcome.text(), hidden_values(pair)) == []


@pytest.mark.parametrize("copy", ["COPY users TO STDOUT", "COPY plans TO STDOUT",
                                  "COPY users (email, api_token) TO STDOUT",
                                  "COPY (SELECT password_hash FROM users) TO STDOUT"])
def test_copy_reads_no_hidden_column(pair, creds, server, copy):
    conn = login(creds[ORG_A].login_args(server))
    try:
        with conn.cursor() as cur:
            out = io.StringIO()
            with pytest.raises(psycopg2.Error) as raised:
                cur.copy_expert(copy, out)
    finally:
        conn.close()
    assert raised.value.pgcode == PERMISSION_DENIED
    assert leaks(out.getvalue(), hidden_values(pair)) == []


def test_copy_of_the_listed_columns_gives_the_credentials_rows(pair, creds, server):
    conn = login(creds[ORG_B].login_args(server))
    try:
        with conn.cursor() as cur:
            out = io.StringIO()
            cur.copy_expert("COPY users (id, email) TO STDOUT", out)
    finally:
        conn.close()
    lines = sorted(out.getvalue().splitlines())
    want = sorted(f"{i}\t{e}" for i, e in superuser_rows(pair, "SELECT id, email FROM users WHERE org_id = %s",
                                                          (int(ORG_B),)))
    assert lines == want and len(want) == 5


@pytest.fixture
def careless_grant(pair, tables):
    """A DBA grants both tables whole to PUBLIC: PostgreSQL would now let any
    role read every column (the control below shows it does)."""
    pair.primary.sql("GRANT SELECT ON users, plans TO PUBLIC", dbname=DB)
    pair.wait_replayed()
    yield
    pair.primary.sql("REVOKE SELECT ON users, plans FROM PUBLIC", dbname=DB)
    pair.wait_replayed()


@pytest.mark.parametrize("read", ["select star", "select the column", "whole row", "shared table column",
                                  "row_to_json", "filter on the column"])
def test_the_guard_enforces_the_column_list_whatever_is_granted(pair, creds, server, careless_grant, read):
    plain = psycopg2.connect(**server.tcp_args(DB, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        with plain.cursor() as cur:
            cur.execute("SELECT count(*) FROM users WHERE password_hash IS NOT NULL")
            assert cur.fetchone()[0] == 8, "control: the grant lets a plain role read the hidden column"
    finally:
        plain.close()
    with session(creds[ORG_A], server) as s:
        outcome = s.run(HIDDEN_READS[read])
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert "listed columns" in outcome.message, outcome.message
    assert leaks(outcome.text(), hidden_values(pair)) == []


def test_a_read_write_credentials_view_reads_no_hidden_column(pair, tbi, tables):
    tbi.call("set_target", "tables-primary", "127.0.0.1", pair.primary.port, "prefer", None)
    writer = tbi.generate(ORG_A, scope="read_write", target="tables-primary")
    schema = writer.details["custom_schema"]
    with session(writer, pair.primary) as s:
        created = s.run(f"CREATE VIEW {schema}.everything AS SELECT * FROM users")
        star = s.run(f"SELECT * FROM {schema}.everything")
        listed = s.run(f"CREATE VIEW {schema}.listed AS SELECT id, email FROM users")
        through_listed = s.run(f"SELECT count(*) FROM {schema}.listed")
    assert created.ok, str(created)
    assert star.state == PERMISSION_DENIED, str(star)
    assert leaks(star.text(), hidden_values(pair)) == []
    assert listed.ok, str(listed)
    assert through_listed.rows == [(3,)], str(through_listed)


def test_sharing_a_table_with_the_org_column_is_22023_naming_expose_table(pair, tables):
    s = Session.superuser(pair.primary, DB)
    try:
        outcome = s.run("SELECT bi_access.share_table('regions')")
        hint = outcome.message
    finally:
        s.close()
    assert outcome.state == INVALID_PARAMETER, str(outcome)
    assert "expose_table" in hint, hint
    assert superuser_rows(pair, "SELECT count(*) FROM bi_access.exposed_table WHERE tbl = 'regions'::regclass") \
        == [(0,)]


@pytest.mark.parametrize("call, state", [
    ("SELECT bi_access.share_table('plans', '{}')", INVALID_PARAMETER),
    ("SELECT bi_access.share_table('plans', ARRAY['id', 'id'])", INVALID_PARAMETER),
    ("SELECT bi_access.share_table('plans', ARRAY['id', 'no_such_column'])", UNDEFINED_COLUMN),
    ("SELECT bi_access.expose_table('users', 'org_id', ARRAY['email', 'nope'])", UNDEFINED_COLUMN),
    ("SELECT bi_access.share_table('bi_access.event')", WRONG_OBJECT_TYPE),
    ("SELECT bi_access.share_table('pg_catalog.pg_authid')", WRONG_OBJECT_TYPE),
])
def test_a_bad_column_list_or_table_is_refused_and_changes_nothing(pair, tables, call, state):
    before = superuser_rows(pair, "SELECT tbl::text, shared, columns::text FROM bi_access.exposed_table ORDER BY 1")
    s = Session.superuser(pair.primary, DB)
    try:
        outcome = s.run(call)
    finally:
        s.close()
    assert outcome.state == state, str(outcome)
    assert superuser_rows(pair, "SELECT tbl::text, shared, columns::text FROM bi_access.exposed_table ORDER BY 1") \
        == before


def tables_view(pair) -> dict[str, tuple]:
    return {t: rest for t, *rest in superuser_rows(
        pair, "SELECT tbl::text, kind, org_column::text, columns::text, state FROM bi_access.tables")}


def test_the_tables_view_shows_kind_columns_and_state(pair, tables):
    assert tables_view(pair) == {
        "plans": ["shared", None, "{id,name,price_cents}", "in place"],
        "currencies": ["shared", None, None, "in place"],
        "users": ["exposed", "org_id", "{id,org_id,email,plan_id}", "in place"],
    }


def test_changing_a_column_list_takes_effect_at_once_on_both_servers(pair, tbi, creds, tables):
    """The new list leaves the org column out: it need not be listed, and
    row-level security still keeps the credential inside its org's rows."""
    s = Session.superuser(pair.primary, DB)
    try:
        s.rows("SELECT bi_access.expose_table('users', 'org_id', ARRAY['id', 'email'])")
        pair.wait_replayed()
        narrowed = {}
        for name in ("primary", "replica"):
            with session(creds[ORG_A], getattr(pair, name)) as c:
                narrowed[name] = (c.run("SELECT org_id FROM users").state, c.rows("SELECT count(email) FROM users"))
        event = superuser_rows(pair, "SELECT detail FROM bi_access.event WHERE action = 'expose_table' "
                                     "ORDER BY id DESC LIMIT 1")[0][0]
    finally:
        s.rows("SELECT bi_access.expose_table('users', 'org_id', ARRAY['id', 'org_id', 'email', 'plan_id'])")
        s.close()
        pair.wait_replayed()
    assert narrowed == {"primary": (PERMISSION_DENIED, [(3,)]), "replica": (PERMISSION_DENIED, [(3,)])}
    assert event["columns"] == ["id", "email"], event


def test_a_shared_table_that_gains_the_org_column_is_refused_until_it_loses_it(pair, creds, tables):
    s = Session.superuser(pair.primary, DB)
    try:
        s.rows("ALTER TABLE currencies ADD COLUMN org_id bigint")
        pair.wait_replayed()
        during = {}
        for name in ("primary", "replica"):
            with session(creds[ORG_A], getattr(pair, name)) as c:
                during[name] = c.run("SELECT count(*) FROM currencies").state
        findings = s.rows("SELECT object, finding, fix FROM bi_access.check() WHERE object = 'public.currencies'")
        state = tables_view(pair)["currencies"][3]
    finally:
        s.rows("ALTER TABLE currencies DROP COLUMN org_id")
        s.close()
        pair.wait_replayed()
    after = {}
    for name in ("primary", "replica"):
        with session(creds[ORG_A], getattr(pair, name)) as c:
            after[name] = c.rows("SELECT count(*) FROM currencies")
    assert during == {"primary": PERMISSION_DENIED, "replica": PERMISSION_DENIED}
    assert [f for _, f, _ in findings if "carries the org column" in f], findings
    assert any("expose_table('public.currencies', 'org_id')" in fix for _, _, fix in findings), findings
    assert state == "weakened"
    assert after == {"primary": [(4,)], "replica": [(4,)]}


def test_a_column_list_naming_a_dropped_column_admits_the_rest_and_check_names_it(pair, creds, tables):
    s = Session.superuser(pair.primary, DB)
    try:
        s.rows("CREATE TABLE tiers_of_plan (id integer, label text, note text)")
        s.rows("INSERT INTO tiers_of_plan VALUES (1, 'a', 'n1'), (2, 'b', 'n2')")
        s.rows("SELECT bi_access.share_table('tiers_of_plan', ARRAY['id', 'label'])")
        s.rows("ALTER TABLE tiers_of_plan DROP COLUMN label")
        pair.wait_replayed()
        with session(creds[ORG_A], pair.replica) as c:
            ids = c.rows("SELECT id FROM tiers_of_plan ORDER BY 1")
            note = c.run("SELECT note FROM tiers_of_plan").state
        findings = s.rows("SELECT severity, finding, fix FROM bi_access.check() WHERE object = 'public.tiers_of_plan'")
    finally:
        s.rows("DROP TABLE tiers_of_plan")
        s.close()
        pair.wait_replayed()
    assert ids == [(1,), (2,)]
    assert note == PERMISSION_DENIED
    assert [(sev, fix) for sev, f, fix in findings if "no longer has" in f] == \
        [("warning", "SELECT bi_access.share_table('public.tiers_of_plan', '{id}');")], findings


def test_hiding_a_shared_table_withdraws_it(pair, creds, tables):
    s = Session.superuser(pair.primary, DB)
    try:
        s.rows("SELECT bi_access.hide_table('currencies')")
        pair.wait_replayed()
        hidden = {}
        for name in ("primary", "replica"):
            with session(creds[ORG_B], getattr(pair, name)) as c:
                hidden[name] = c.run("SELECT count(*) FROM currencies").state
        view = tables_view(pair)["currencies"]
        acl = s.value("SELECT relacl::text FROM pg_class WHERE oid = 'currencies'::regclass")
    finally:
        s.rows("SELECT bi_access.share_table('currencies')")
        s.close()
        pair.wait_replayed()
    assert hidden == {"primary": PERMISSION_DENIED, "replica": PERMISSION_DENIED}
    assert view[0] == "hidden" and view[3] == "withdrawn"
    assert acl is None or "bi_access" not in acl, acl


@pytest.mark.parametrize("call", ["SELECT bi_access.share_table('currencies', ARRAY['code'])",
                                  "SELECT bi_access.expose_table('users', 'org_id', ARRAY['id'])"])
def test_an_admin_that_is_not_the_owner_may_not_share_or_change_a_list(pair, tbi, tables, call):
    """Property 7: the application's admin role (bi_access_admin, not a member
    of the tables' owner) is checked as itself, before anything changes."""
    registry = "SELECT tbl::text, shared, columns::text FROM bi_access.exposed_table ORDER BY 1"
    before = superuser_rows(pair, registry)
    admin = Session(tbi.connect())
    try:
        outcome = admin.run(call)
    finally:
        admin.close()
    assert outcome.state == PERMISSION_DENIED, str(outcome)
    assert "membership in its owner" in outcome.message, outcome.message
    assert superuser_rows(pair, registry) == before
