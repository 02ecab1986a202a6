"""A hostile BI user: logged in as a real credential (psycopg2 over TCP, on the
primary and on the replica), it tries everything a PostgreSQL client can do to
see another org's rows, to reach bi_access's own objects, or to write. Each
attempt has one outcome, asserted: it fails with the SQLSTATE in the test id,
or it returns only the credential's own rows (counted against what the
superuser reads of that org). Refusals that PostgreSQL makes for any role that
is not a superuser prove nothing about bi_access: they are kept together in
one baseline test.

The `hostile` database is built for this: org keys and names that no output
can carry by accident, an application RLS policy keyed on settings a session
can SET (`app.org`, `myapp.tenant`), a partitioned table, extended
statistics, a hidden table, a schema that is not exposed, a reference table
shared with every org (`plans`) and a `users` table exposed with a column list
(its password hashes and API tokens, and the plans' internal costs, are
outside the lists: every hidden value is unique to its row, so any output
that carries one is a leak). Where a test needs
a relation that PostgreSQL itself would let the credential read (a PUBLIC grant
by a careless DBA) or a function it may call, the test creates it, with a
control that an ordinary role does read or call it."""

from __future__ import annotations

import io
import json

import psycopg2
import pytest

from bi import ADMIN_ROLE, PLAIN_PASSWORD, PLAIN_ROLE, login
from cluster import MEMBERSHIPS_ALLOW_SET_ROLE, PG_MAJOR, PRELOADED, SUPERUSER
from libpq import LoginRefused, Connection
from probe import (CANNOT_COERCE, OK, PERMISSION_DENIED, READ_ONLY_TRANSACTION, Session, bi_for, leaks,
                   reader_group, session, set_bi_settings, tenant_database)

DB = "hostile"
ORG_A, ORG_B, ORG_C = "7301001", "7302002", "7303003"
NAMES = {ORG_A: "Quokka Analytics", ORG_B: "Wombat Freight", ORG_C: "Numbat Health"}

SCHEMA = f"""
CREATE TABLE orgs (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO orgs VALUES ({ORG_A}, '{NAMES[ORG_A]}'), ({ORG_B}, '{NAMES[ORG_B]}'), ({ORG_C}, '{NAMES[ORG_C]}');

-- The application's own row-level security, keyed on settings any session can
-- SET: exactly what a hostile BI user would try first.
CREATE TABLE docs (id bigserial PRIMARY KEY, org_id bigint NOT NULL, body text NOT NULL);
INSERT INTO docs (org_id, body)
  SELECT o, 'doc of ' || o || ' #' || g FROM (VALUES ({ORG_A}, 3), ({ORG_B}, 5), ({ORG_C}, 2)) v(o, n),
         generate_series(1, n) g;
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_tenant ON docs FOR ALL TO PUBLIC
  USING (org_id = nullif(current_setting('app.org', true), '')::bigint
         OR current_setting('myapp.tenant', true) = 'all');

CREATE TABLE tickets (id bigserial PRIMARY KEY, tenant text NOT NULL, subject text NOT NULL);
INSERT INTO tickets (tenant, subject)
  SELECT o, 'ticket of ' || o || ' #' || g FROM (VALUES ('{ORG_A}', 2), ('{ORG_B}', 1), ('{ORG_C}', 4)) v(o, n),
         generate_series(1, n) g;

CREATE TABLE metrics (id bigserial PRIMARY KEY, org_id integer NOT NULL, value integer NOT NULL);
INSERT INTO metrics (org_id, value)
  SELECT o, g % 3 FROM (VALUES ({ORG_A}, 40), ({ORG_B}, 300), ({ORG_C}, 60)) v(o, n), generate_series(1, n) g;
CREATE INDEX ON metrics (org_id);
CREATE STATISTICS metrics_stats (mcv) ON org_id, value FROM metrics;

-- A column whose values differ by org: the planner's statistics of it tell
-- one org's values to anyone who may EXPLAIN.
CREATE TABLE deals (id bigserial PRIMARY KEY, org_id bigint NOT NULL, stage text NOT NULL);
INSERT INTO deals (org_id, stage)
  SELECT o, s FROM (VALUES ({ORG_A}, 'prospect', 40), ({ORG_B}, 'acquire-initech', 300), ({ORG_C}, 'prospect', 60))
         v(o, s, n), generate_series(1, n) g;

CREATE TABLE events (id bigint NOT NULL, org_id bigint NOT NULL, kind text NOT NULL) PARTITION BY HASH (org_id);
CREATE TABLE events_p0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_p1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO events
  SELECT row_number() OVER (), o, 'event of ' || o FROM (VALUES ({ORG_A}, 4), ({ORG_B}, 6), ({ORG_C}, 1)) v(o, n),
         generate_series(1, n) g;

-- Shared with every org (bi_access.share_table), its cost column outside
-- the list; and the org's users, exposed with a column list that leaves
-- their password hashes and API tokens out of BI.
CREATE TABLE plans (id integer PRIMARY KEY, name text NOT NULL, internal_cost text NOT NULL);
INSERT INTO plans VALUES (1, 'Wallaby', 'cost-of-wallaby-5561'), (2, 'Dingo', 'cost-of-dingo-5562');
CREATE TABLE users (id bigserial PRIMARY KEY, org_id bigint NOT NULL, email text NOT NULL,
                    plan_id integer NOT NULL REFERENCES plans, password_hash text NOT NULL,
                    api_token text NOT NULL);
INSERT INTO users (org_id, email, plan_id, password_hash, api_token)
  SELECT o, 'user' || g || '@org' || o || '.example', 1 + g % 2, 'pwhash-' || o || '-' || g,
         'apitoken-' || o || '-' || g
  FROM (VALUES ({ORG_A}, 2), ({ORG_B}, 3), ({ORG_C}, 1)) v(o, n), generate_series(1, n) g;
-- The DBA's ways to the hidden columns: functions any role may call (an
-- invoker's, in SQL and in PL/pgSQL; and, below, a view with its owner's
-- rights in the reporting schema, granted to PUBLIC).
CREATE FUNCTION public.user_tokens() RETURNS TABLE (email text, api_token text)
  LANGUAGE sql STABLE AS $$ SELECT email, api_token FROM users $$;
CREATE FUNCTION public.user_hashes() RETURNS SETOF text
  LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN QUERY SELECT password_hash FROM users; END $$;

-- Carries the org column but is hidden: no sync may expose it.
CREATE TABLE app_secrets (id serial PRIMARY KEY, org_id bigint NOT NULL, token text NOT NULL);
INSERT INTO app_secrets (org_id, token) VALUES ({ORG_A}, 'token of {ORG_A}'), ({ORG_B}, 'token of {ORG_B}');

-- A schema that is not exposed.
CREATE SCHEMA internal;
CREATE TABLE internal.payroll (org_id bigint NOT NULL, salary integer NOT NULL);
INSERT INTO internal.payroll VALUES ({ORG_A}, 1), ({ORG_B}, 2);

-- A DBA's reporting schema (not exposed): USAGE and EXECUTE left to PUBLIC,
-- SECURITY DEFINER functions owned by the superuser that read every org's
-- rows and tokens. Reached directly, through a view, an operator, an index
-- expression and another function (no org key in any function's text: the
-- catalogs must carry none).
CREATE SCHEMA reporting;
GRANT USAGE ON SCHEMA reporting TO PUBLIC;
CREATE VIEW reporting.user_directory AS SELECT org_id, email, api_token FROM users;
GRANT SELECT ON reporting.user_directory TO PUBLIC;
CREATE FUNCTION reporting.org_summary() RETURNS TABLE (org_id bigint, docs bigint, token text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
  AS $$ SELECT o.id, (SELECT count(*) FROM docs d WHERE d.org_id = o.id),
               (SELECT s.token FROM app_secrets s WHERE s.org_id = o.id) FROM orgs o $$;
CREATE FUNCTION reporting.org_token(bigint) RETURNS text
  LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = public
  AS $$ SELECT token FROM app_secrets WHERE org_id = $1 $$;
CREATE OPERATOR reporting.### (RIGHTARG = bigint, FUNCTION = reporting.org_token);
CREATE FUNCTION reporting.my_summary() RETURNS TABLE (org_id bigint, docs bigint, token text)
  LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY SELECT * FROM reporting.org_summary(); END $$;
-- Runs any statement under EXPLAIN (an invoker's helper, as DBAs write them).
CREATE FUNCTION reporting.explain(query text) RETURNS SETOF text
  LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE 'EXPLAIN ' || query; END $$;
-- A definer function the application's own policy on docs calls: the one
-- kind of definer function a credential's query must be able to run.
CREATE FUNCTION reporting.tenant_filter(bigint) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER AS $$ SELECT false $$;
CREATE POLICY app_filter ON docs FOR SELECT TO PUBLIC USING (reporting.tenant_filter(org_id));
-- pg_stat_statements' view and functions here too (what they show is the
-- whole cluster's): a credential logs in to no other database.
CREATE SCHEMA stats;
CREATE EXTENSION pg_stat_statements SCHEMA stats;
GRANT USAGE ON SCHEMA stats TO PUBLIC;
"""
# The view path: a security_invoker view (15 and later: exposed by the sync)
# over the reporting function. 14 has no security_invoker views, so no view
# is exposed there: the DBA grants it to PUBLIC, and the session guard
# refuses the view itself.
# user_logins, the same way, reads a hidden column of users: on 15 and later
# the sync exposes it, and reading it reads users' hidden column as the
# credential.
OVERVIEW = ("CREATE VIEW org_overview {options} AS SELECT o.id AS org_id, s.docs, s.token "
            "FROM orgs o JOIN reporting.org_summary() s ON s.org_id = o.id;\n"
            "CREATE VIEW user_logins {options} AS SELECT org_id, email, password_hash FROM users;\n").format(
    options="WITH (security_invoker = true)" if PG_MAJOR >= 15 else "") + \
    ("" if PG_MAJOR >= 15 else "GRANT SELECT ON org_overview, user_logins TO PUBLIC;\n")

EXPOSE = """
SELECT bi_access.hide_table('app_secrets');
SELECT bi_access.expose_table('orgs', 'id');
SELECT bi_access.expose_table('tickets', 'tenant');
SELECT bi_access.share_table('plans', ARRAY['id', 'name']);
SELECT bi_access.expose_table('users', 'org_id', ARRAY['id', 'org_id', 'email', 'plan_id']);
-- docs, metrics and events: found by the sync (bi_access.auto_expose).
SELECT * FROM bi_access.sync_tables();
ANALYZE;
"""

# Exposed table -> its org column.
TABLES = {"orgs": "id", "docs": "org_id", "tickets": "tenant", "metrics": "org_id", "events": "org_id"}
# Exposed with a column list: table -> its org column and the list.
LISTED = {"users": ("org_id", ("id", "org_id", "email", "plan_id"))}
# Shared with every org: table -> its column list. Every credential reads
# every row of it.
SHARED = {"plans": ("id", "name")}
# The columns outside the lists.
HIDDEN = {"users": ("password_hash", "api_token"), "plans": ("internal_cost",)}
# Every table a credential reads, in the order the tests read them.
READS = [*TABLES, *LISTED, *SHARED]


def read(table: str) -> str:
    """The read of a whole table a credential may make: its listed columns,
    or every column."""
    columns = LISTED[table][1] if table in LISTED else SHARED.get(table)
    return f"SELECT {', '.join(columns) if columns else '*'} FROM {table} ORDER BY 1"


def org_column(table: str) -> str:
    return LISTED[table][0] if table in LISTED else TABLES[table]

# Every bi_access.* setting, with a value an attacker would like.
BI_SETTINGS = {
    "bi_access.host": "evil.example.com",
    "bi_access.port": "1",
    "bi_access.sslmode": "disable",
    "bi_access.replica_application_name": "evil",
    "bi_access.role_prefix": "evil_",
    "bi_access.org_column": "id",
    "bi_access.exposed_schemas": "public,internal",
    "bi_access.auto_expose": "off",
    "bi_access.display_name_format": "{org_id}",
    "bi_access.statement_timeout": "0",
    "bi_access.idle_in_transaction_session_timeout": "0",
    "bi_access.idle_session_timeout": "0",
    "bi_access.work_mem": "0",
    "bi_access.temp_file_limit": "-1",
    "bi_access.max_cursors": "0",
    "bi_access.max_held_cursors": "0",
    "bi_access.max_prepared_statements": "0",
    "bi_access.session_memory": "0",
    "bi_access.default_connection_limit": "-1",
    "bi_access.org_connection_limit": "0",
    "bi_access.max_bi_connections": "0",
    "bi_access.default_valid_for": "1 year",
    "bi_access.actor": "evil",
    "bi_access.audit_reads": "off",
    "bi_access.custom_schema_quota": "0",
    "bi_access.transaction_timeout": "0",
    "bi_access.yield_after": "0",
    "bi_access.custom_schema_max_relations": "0",
    "bi_access.custom_schema_max_columns": "0",
    "bi_access.custom_schema_max_expressions": "0",
    "bi_access.max_parallel_workers": "-1",
    "bi_access.allow_explain": "on",
    "bi_access.stale_after": "0",
}
# Defined only while the postmaster preloads bi_access (a server-start
# setting cannot be defined later): the size of the usage counters' table.
if PRELOADED:
    BI_SETTINGS["bi_access.usage_max_credentials"] = "1"
# The settings a credential's own session defines: those its session guard
# reads (src/settings.rs). The others (management: where and how credentials
# are made, and bi_access.actor, the one setting any role may set) are not
# defined there at all: on 15 and later the reserved prefix refuses their
# names (42602); 14 has no reservation, and a SET makes a placeholder that
# nothing reads.
GUARD_BI_SETTINGS = {"bi_access.statement_timeout", "bi_access.idle_in_transaction_session_timeout",
                     "bi_access.idle_session_timeout", "bi_access.work_mem", "bi_access.temp_file_limit",
                     "bi_access.org_connection_limit", "bi_access.max_bi_connections",
                     "bi_access.custom_schema_quota", "bi_access.transaction_timeout",
                     "bi_access.custom_schema_max_relations",
                     "bi_access.custom_schema_max_columns", "bi_access.custom_schema_max_expressions",
                     "bi_access.max_parallel_workers", "bi_access.max_cursors", "bi_access.max_held_cursors",
                     "bi_access.max_prepared_statements", "bi_access.session_memory",
                     "bi_access.allow_explain"}
INVALID_PARAMETER_NAME = "42602"
CANT_CHANGE_RUNTIME_PARAM = "55P02"
UNDEFINED_SETTING_OUTCOME = INVALID_PARAMETER_NAME if PG_MAJOR >= 15 else OK

PLACEHOLDERS = {"app.org": ORG_B, "myapp.tenant": "all"}


def code(sqlstate: str):
    """Test ids that carry the SQLSTATE each attempt must fail with."""
    return lambda what: f"{what} -> {sqlstate}"


# --------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def hostile(pair, bi):
    """The hostile database, its tables exposed and analyzed, replayed."""
    tenant_database(pair, DB, SCHEMA + OVERVIEW, EXPOSE + f"GRANT SELECT ON docs TO {PLAIN_ROLE};")
    return DB


@pytest.fixture(scope="module")
def hbi(request, pair, hostile, secrets):
    return bi_for(request, pair, hostile, secrets)


@pytest.fixture(scope="module")
def creds(hbi):
    """One credential per org, each with its org name."""
    return {org: hbi.generate(org, org_name=NAMES[org]) for org in (ORG_A, ORG_B, ORG_C)}


@pytest.fixture(scope="module", params=["read", "read_write"])
def cred(request, creds, hbi, pair):
    """Org A's credential the attacks run as: its read credential, and a
    read_write one (issue 17), for which everything outside its org's custom
    schema is refused exactly as for a read credential."""
    if request.param == "read":
        return creds[ORG_A]
    hbi.call("set_target", "primary", "127.0.0.1", pair.primary.port, "prefer", None)
    return hbi.generate(ORG_A, org_name=NAMES[ORG_A], scope="read_write", target="primary")


@pytest.fixture(scope="module")
def expected(pair, hostile) -> dict:
    """org -> table -> that org's rows (every row of a shared table) as its
    credential may read them, read by the superuser."""
    out = {}
    for org in (ORG_A, ORG_B, ORG_C, None):
        out[org] = {}
        for table in READS:
            keyed = org is not None and table not in SHARED
            where = f"WHERE {org_column(table)}::text = %s" if keyed else ""
            out[org][table] = pair.primary.sql(read(table).replace(" ORDER BY", f" {where} ORDER BY"),
                                               (org,) if keyed else None, dbname=hostile)
    return out


@pytest.fixture(scope="module")
def hidden(pair, hostile) -> dict[str, str]:
    """Every value outside the column lists, each naming where it comes from."""
    out = {}
    for table, columns in HIDDEN.items():
        for column in columns:
            for (value,) in pair.primary.sql(f"SELECT {column} FROM {table}", dbname=hostile):
                out[value] = f"{table}.{column}"
    return out


def foreign(org: str = ORG_A) -> dict[str, str]:
    """What a session of `org` must never see: the other orgs' keys and names
    (every row of every table carries its key)."""
    return {**{k: f"org key of {k}" for k in NAMES if k != org},
            **{n: f"org name of {k}" for k, n in NAMES.items() if k != org}}


def every_org() -> dict[str, str]:
    return {**{k: "org key" for k in NAMES}, **{n: "org name" for n in NAMES.values()}}


def seen(s: Session) -> dict:
    return {t: s.rows(read(t)) for t in READS}


def assert_sees_exactly(s: Session, expected_rows: dict, what: str = "") -> None:
    got = seen(s)
    for table in READS:
        assert got[table] == expected_rows[table], f"{what}: {table} shows other rows than expected"


def expect(outcome, *states: str) -> None:
    assert outcome.state in states, f"expected {'/'.join(states)}, observed {outcome}"


def server_setting(server, name: str) -> str:
    """A setting's value in a superuser's session of the hostile database on
    `server`, with bi_access's library loaded."""
    return server.value(f"LOAD 'bi_access'; SELECT current_setting('{name}')", dbname=DB)


def sess_role(s: Session) -> str:
    """The login of a session (asked of the connection, not the server)."""
    return s.conn.info.user


# What the session guard says when it refuses a statement: a read
# credential is read-only; a read_write one writes only in its custom schema.
GUARD_REFUSALS = ("a bi_access credential is read-only", "a bi_access read_write credential")


def refused_by_the_guard(outcome) -> bool:
    return any(message in outcome.message for message in GUARD_REFUSALS)


def read_write(s: Session) -> None:
    """Turns the session's read-only default off, as any role may."""
    s.rows("SET default_transaction_read_only = off")
    s.rows("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")


# --------------------------------------------------------------------------
# baseline

def test_baseline_each_org_sees_exactly_its_rows(creds, server, expected):
    assert all(expected[None][t] != expected[ORG_A][t] for t in [*TABLES, *LISTED]), "orgs share every table"
    assert all(expected[ORG_A][t] == expected[None][t] for t in SHARED), "every org reads a shared table whole"
    for org, c in creds.items():
        with session(c, server) as s:
            assert_sees_exactly(s, expected[org], f"org {org} on the {server.name}")


# What PostgreSQL refuses any role that is not a superuser, holds no predefined
# role (pg_read_server_files, pg_execute_server_program, pg_signal_backend…) and
# is no member of the role it targets. None of these refusals is bi_access's:
# its share is that a credential is such a role, which is what the test checks
# first; the rest is a baseline of the server, kept in this one test.
POSTGRESQL_REFUSES = {
    "SET SESSION AUTHORIZATION": f'SET SESSION AUTHORIZATION "{SUPERUSER}"',
    "SET ROLE to the superuser": f'SET ROLE "{SUPERUSER}"',
    "SET ROLE to the application's admin": f'SET ROLE "{ADMIN_ROLE}"',
    "SET ROLE to bi_access_admin": "SET ROLE bi_access_admin",
    "SET ROLE to another credential": 'SET ROLE "{other}"',
    "set_config('role')": "SELECT set_config('role', '{other}', false)",
    "read the key file": "SELECT pg_read_file('bi_access.key')",
    "list the data directory": "SELECT pg_ls_dir('.')",
    "COPY TO PROGRAM": "COPY (SELECT * FROM docs) TO PROGRAM 'cat'",
    "COPY TO a file": "COPY docs TO '/tmp/bi_access_hostile_copy'",
    "server-side lo_import": "SELECT lo_import('/etc/passwd')",
    "server-side lo_export": "SELECT lo_export(0, '/tmp/bi_access_hostile_lo')",
    "terminate another credential's session": "SELECT pg_terminate_backend({victim})",
    "cancel another credential's query": "SELECT pg_cancel_backend({victim})",
    "read pg_statistic": "SELECT * FROM pg_statistic",
}


def test_baseline_postgresql_refuses_an_ordinary_role(sess, cred, creds, server, hostile, expected):
    role = creds[ORG_A].role
    # Once org A has a custom schema (its read_write credential made it),
    # each of its credentials reads it through the schema's reader group; a
    # read_write one also belongs to the owner group. Nothing else.
    custom = server.sql("SELECT owner_role::text, reader_role::text FROM bi_access.custom_schema "
                        "WHERE org_id = %s", (ORG_A,), dbname=hostile)
    base = {reader_group(server, hostile), "bi_access_credential"} | {r for (_, r) in custom}
    for login, scope in {(role, "read"), (cred.role, cred.details["scope"])}:
        attributes = server.sql("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
                                "FROM pg_roles WHERE rolname = %s", (login,))
        assert attributes == [(False, False, False, False, False)], attributes
        groups = {g for (g,) in server.sql("SELECT roleid::regrole::text FROM pg_auth_members "
                                           "WHERE member = %s::regrole", (login,))}
        owner = {o for (o, _) in custom} if scope == "read_write" else set()
        assert groups == base | owner, (scope, groups)
    with session(creds[ORG_B], server) as victim:
        pid = victim.pid()
        observed = {what: sess.run(sql.format(other=creds[ORG_B].role, victim=pid)).state
                    for what, sql in POSTGRESQL_REFUSES.items()}
        assert victim.value("SELECT 1") == 1
    # Without BYPASSRLS, row_security = off refuses rather than bypasses.
    sess.rows("SET row_security = off")
    observed["row_security = off"] = sess.run("SELECT * FROM docs").state
    sess.rows("RESET row_security")
    assert observed == {what: PERMISSION_DENIED for what in observed}
    assert sess.rows("SELECT session_user, current_user") == [(cred.role, cred.role)]
    assert_sees_exactly(sess, expected[ORG_A], "after PostgreSQL's refusals")


# --------------------------------------------------------------------------
# settings: placeholders, bi_access.*, RESET ALL

def test_placeholders_are_live_attack_vectors(pair, hostile, expected):
    """Control: an ordinary role that can read docs does get another org's
    rows through the application's policy when it sets app.org; so a BI
    session that sets it and still sees only its rows proves something."""
    conn = login(pair.primary.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        s = Session(conn)
        assert s.rows("SELECT * FROM docs ORDER BY 1") == []
        s.rows("SET app.org = %s", (ORG_B,))
        assert s.rows("SELECT * FROM docs ORDER BY 1") == expected[ORG_B]["docs"]
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["SET", "SET LOCAL", "set_config", "set_config local"])
@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_placeholder_does_not_widen(sess, expected, name, how):
    value = PLACEHOLDERS[name]
    if how.startswith("set_config"):
        setter = f"SELECT set_config('{name}', '{value}', {str(how.endswith('local')).lower()})"
    else:
        setter = f"{how} {name} = '{value}'"
    # One transaction, so SET LOCAL / is_local stay in force for the reads.
    sess.rows("BEGIN")
    try:
        expect(sess.run(setter), OK)
        assert sess.value(f"SELECT current_setting('{name}')") == value
        for table in READS:
            assert sess.rows(read(table)) == expected[ORG_A][table], f"{how} {name}: {table}"
    finally:
        sess.rows("COMMIT")
    expect(sess.run(f"RESET {name}"), OK)
    assert_sees_exactly(sess, expected[ORG_A], f"after RESET {name}")


def test_every_bi_access_setting_is_listed(pair, hostile):
    """BI_SETTINGS must cover every bi_access.* setting the build defines."""
    conn = pair.primary.connect(hostile)
    try:
        with conn.cursor() as cur:
            cur.execute("LOAD 'bi_access'")
            cur.execute("SELECT name FROM pg_settings WHERE name LIKE 'bi\\_access.%'")
            defined = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    assert defined == set(BI_SETTINGS)


@pytest.mark.parametrize("how", ["SET", "set_config", "RESET"])
@pytest.mark.parametrize("name", sorted(GUARD_BI_SETTINGS), ids=code(PERMISSION_DENIED))
def test_guard_setting_cannot_be_changed(sess, pair, server, expected, name, how):
    """A credential's role loads bi_access at login (session_preload_libraries,
    which only a superuser may change), so from the session's first statement
    the settings its guard reads are the superuser's: SET, set_config and
    RESET fail with 42501 and no row changes. (There is no "before the library
    is loaded" state for a SET to exploit.)"""
    config = pair.primary.value("SELECT rolconfig FROM pg_roles WHERE rolname = %s", (sess_role(sess),))
    assert "session_preload_libraries=bi_access, bi_access_gate" in config, config
    stmt = setting_statement(how, name)
    outcome = sess.run(stmt)  # the session's first statement
    expect(outcome, PERMISSION_DENIED)
    assert f'permission denied to set parameter "{name}"' in outcome.message, str(outcome)
    assert sess.value(f"SELECT current_setting('{name}')") == server_setting(server, name)
    assert_sees_exactly(sess, expected[ORG_A], f"after {stmt}")


def management_setting_outcome(name: str) -> str:
    """Loaded per session, the settings only management reads are not defined
    in a credential's session (defining one costs every login a sort of the
    server's settings on 14 and 15): 42602 for the reserved prefix from 15
    on, a placeholder nothing reads on 14. Preloaded, the postmaster defined
    every one: a superuser-only setting refuses the SET (42501), and
    bi_access.actor, the one setting any role may set, only names the actor
    of management calls, which a credential cannot make; bi_access.yield_after,
    a server-wide setting (postgresql.conf and a reload: the yield worker has
    no session), and bi_access.usage_max_credentials (server start) are ones
    no session may change (55P02)."""
    if not PRELOADED:
        return UNDEFINED_SETTING_OUTCOME
    if name in ("bi_access.yield_after", "bi_access.usage_max_credentials"):
        return CANT_CHANGE_RUNTIME_PARAM
    return OK if name == "bi_access.actor" else PERMISSION_DENIED


@pytest.mark.parametrize("how", ["SET", "set_config", "RESET"])
@pytest.mark.parametrize("name", sorted(set(BI_SETTINGS) - GUARD_BI_SETTINGS),
                         ids=lambda name: f"{name} -> {management_setting_outcome(name)}")
def test_management_setting_is_out_of_a_credentials_reach(sess, expected, name, how):
    """No row changes whichever way (see management_setting_outcome)."""
    stmt = setting_statement(how, name)
    outcome = sess.run(stmt)  # the session's first statement
    expect(outcome, management_setting_outcome(name))
    if PG_MAJOR >= 15 and not PRELOADED:
        assert f'invalid configuration parameter name "{name}"' in outcome.message, str(outcome)
    assert_sees_exactly(sess, expected[ORG_A], f"after {stmt}")


def setting_statement(how: str, name: str) -> str:
    value = BI_SETTINGS[name]
    return {"SET": f"SET {name} = '{value}'", "RESET": f"RESET {name}",
            "set_config": f"SELECT set_config('{name}', '{value}', false)"}[how]


def test_bi_access_setting_in_the_startup_packet_refuses_the_login(cred, server):
    """The one moment before bi_access is loaded: the startup packet
    (PGOPTIONS), processed before session_preload_libraries. Its value would
    replace the server's before the library could refuse it, so a credential
    asking for any bi_access.* setting is not let in at all (42501): by the
    login gate, or, preloaded (the settings defined before the packet is
    read), by PostgreSQL itself, as for any superuser-only setting."""
    options = " ".join(f"-c {name}={value.replace(' ', chr(92) + ' ')}" for name, value in BI_SETTINGS.items()
                       if name != "bi_access.actor")
    with pytest.raises(LoginRefused) as info:
        Connection({**cred.login_args(server), "options": options}).close()
    assert info.value.state == PERMISSION_DENIED, info.value.message
    said = 'permission denied to set parameter "bi_access.' if PRELOADED else "a bi_access credential may not set bi_access."
    assert said in info.value.message, info.value.message


def test_bi_access_setting_in_another_case_in_the_startup_packet_refuses_the_login(cred, server):
    """PostgreSQL matches setting names whatever their case, and keeps a
    placeholder in the case the client spelled it: BI_ACCESS.STATEMENT_TIMEOUT
    is bi_access.statement_timeout, and is refused as it is (42501)."""
    options = "-c BI_ACCESS.Statement_Timeout=0"
    with pytest.raises(LoginRefused) as info:
        Connection({**cred.login_args(server), "options": options}).close()
    assert info.value.state == PERMISSION_DENIED, info.value.message
    said = ('permission denied to set parameter "BI_ACCESS.Statement_Timeout"' if PRELOADED
            else "a bi_access credential may not set bi_access.statement_timeout")
    assert said in info.value.message, info.value.message


def test_a_credential_session_lists_its_settings_once_each_in_order(sess, server):
    """pg_settings lists the settings in the order PostgreSQL looks them up
    in (14 and 15 keep one sorted array, which bi_access sorts once after
    defining its own under stand-in names: src/compat.rs): each name once,
    none a stand-in, and every bi_access setting the guard reads has the
    server's value."""
    names = [row[0] for row in sess.rows("SELECT name FROM pg_catalog.pg_settings")]
    assert names == sorted(names, key=str.lower), names
    assert len(names) == len({name.lower() for name in names})
    assert not [name for name in names if "stand_in" in name]
    for name in sorted(GUARD_BI_SETTINGS):
        assert name in names
        assert sess.value(f"SELECT current_setting('{name}')") == server_setting(server, name), name


def test_invented_bi_access_setting_is_refused(sess, expected):
    """The bi_access prefix is reserved (42602), from the session's first
    statement: a session cannot invent bi_access.x."""
    outcome = sess.run(f"SET bi_access.org = '{ORG_B}'")
    if PG_MAJOR >= 15:
        expect(outcome, "42602")
        assert "reserved prefix" in outcome.message, str(outcome)
    else:  # 14 cannot reserve a prefix: a placeholder it is, which bi_access never reads
        expect(outcome, OK)
    assert_sees_exactly(sess, expected[ORG_A], "after SET bi_access.org")


def test_reset_all_keeps_the_session_read_only_and_in_its_org(sess, cred, expected):
    """RESET ALL brings back the role's own settings: read-only with
    search_path public for a read credential; for a read_write one, its
    custom schema first (and writes there only, as every other test shows)."""
    for name, value in PLACEHOLDERS.items():
        sess.rows(f"SET {name} = '{value}'")
    sess.rows("SET default_transaction_read_only = on" if cred.details["scope"] == "read_write"
              else "SET default_transaction_read_only = off")
    expect(sess.run("RESET ALL"), OK)
    if cred.details["scope"] == "read_write":
        assert sess.value("SHOW default_transaction_read_only") == "off"
        assert sess.value("SHOW search_path") == f"{cred.details['custom_schema']}, public"
    else:
        assert sess.value("SHOW default_transaction_read_only") == "on"
        assert sess.value("SHOW search_path") == "public"
    assert_sees_exactly(sess, expected[ORG_A], "after RESET ALL")
    expect(sess.run("DISCARD ALL"), OK)
    assert_sees_exactly(sess, expected[ORG_A], "after DISCARD ALL")


# --------------------------------------------------------------------------
# roles

def test_set_role_to_the_reader_group_sees_no_orgs_row(sess, hostile, expected, server):
    reader = reader_group(server, hostile)
    if not MEMBERSHIPS_ALLOW_SET_ROLE:
        # 16 and later: the membership is WITH SET FALSE.
        expect(sess.run(f"SET ROLE {reader}"), PERMISSION_DENIED)
        assert sess.value("SELECT current_user") == sess.value("SELECT session_user")
        assert_sees_exactly(sess, expected[ORG_A], "after SET ROLE to the reader group")
        return
    expect(sess.run(f"SET ROLE {reader}"), OK)
    assert sess.value("SELECT current_user") == reader
    for table in READS:
        # A shared table is the reader group's whole: its rows are no org's.
        want = expected[None][table] if table in SHARED else []
        assert sess.rows(read(table)) == want, f"reader group sees other rows of {table}"
    sess.rows("RESET ROLE")
    assert_sees_exactly(sess, expected[ORG_A], "after RESET ROLE")


# --------------------------------------------------------------------------
# bi_access's own objects

def test_bi_access_relations_are_unreadable(sess, pair, hostile):
    """Every table, view and sequence of bi_access's schemas (one path: no
    USAGE on the schema, and none of them is an exposed table): 42501."""
    relations = [r for (r,) in pair.primary.sql(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('bi_access', 'bi_access_internal') AND c.relkind IN ('r', 'v', 'S', 'p', 'm') "
        "ORDER BY 1", dbname=hostile)]
    assert {"bi_access.credential", "bi_access.event", "bi_access.config", "bi_access.credentials",
            "bi_access.events"} <= set(relations), relations
    observed = {r: sess.run(f"SELECT count(*) FROM {r}").state for r in relations}
    assert observed == {r: PERMISSION_DENIED for r in relations}, observed


MANAGEMENT_CALLS = {
    "generate": f"SELECT * FROM bi_access.generate('{ORG_B}', 'stolen')",
    "connection_details": "SELECT * FROM bi_access.connection_details('{other}')",
    "regenerate": "SELECT * FROM bi_access.regenerate('{other}')",
    "revoke": "SELECT * FROM bi_access.revoke('{other}')",
    "activate": "SELECT * FROM bi_access.activate('{other}')",
    "delete": "SELECT * FROM bi_access.delete('{other}')",
    "purge": "SELECT bi_access.purge('{other}')",
    "expose_table": "SELECT bi_access.expose_table('app_secrets', 'org_id')",
    "hide_table": "SELECT bi_access.hide_table('docs')",
    "sync_tables": "SELECT * FROM bi_access.sync_tables()",
    "unsynced_tables": "SELECT * FROM bi_access.unsynced_tables()",
    "check": "SELECT * FROM bi_access.check()",
    "sync": "CALL bi_access.sync()",
    "sync with arguments": "CALL bi_access.sync('1s', 1)",
}


def test_management_calls_are_refused(sess, creds, hbi):
    """Every management call, on another org's credential (one path: no USAGE
    on bi_access's schema, no EXECUTE): 42501, no notice, nothing changed."""
    other = creds[ORG_B].role
    events = hbi.query("SELECT count(*) AS n FROM bi_access.events")[0]["n"]
    outcomes = {fn: sess.run(sql.format(other=other)) for fn, sql in MANAGEMENT_CALLS.items()}
    observed = {fn: (o.state, o.rows, o.notices) for fn, o in outcomes.items()}
    assert observed == {fn: (PERMISSION_DENIED, [], []) for fn in MANAGEMENT_CALLS}, observed
    assert hbi.status(other) == "active"
    assert hbi.query("SELECT count(*) AS n FROM bi_access.events")[0]["n"] == events


def test_no_bi_access_routine_is_executable_by_a_credential(pair, hostile, cred):
    """Beyond the calls above: the catalog says no routine of bi_access or
    bi_access_internal is the credential's, but the org lookups its
    policies need (EXECUTE through the reader group, no USAGE on the schema)."""
    rows = pair.primary.sql(
        "SELECT p.oid::regprocedure::text, has_function_privilege(%s, p.oid, 'EXECUTE') "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname IN ('bi_access', 'bi_access_internal') ORDER BY 1", (cred.role,), dbname=hostile)
    assert len(rows) > 20, rows
    executable = {fn for fn, ok in rows if ok}
    assert executable <= {"bi_access.current_org()", "bi_access.current_org_bigint()",
                          "bi_access.current_org_uuid()"}, executable
    usage = pair.primary.sql("SELECT n.nspname::text, has_schema_privilege(%s, n.oid, 'USAGE') FROM pg_namespace n "
                             "WHERE n.nspname IN ('bi_access', 'bi_access_internal')", (cred.role,), dbname=hostile)
    assert usage == [(n, False) for n, _ in usage] and len(usage) == 2


def internal_routines(pair, dbname) -> list[tuple[str, str, str]]:
    """(signature, a call of it with NULL arguments, kind) of every routine in
    bi_access_internal."""
    rows = pair.primary.sql(
        "SELECT p.oid::regprocedure::text, p.proname::text, p.prokind::text, "
        "       coalesce((SELECT string_agg(format('NULL::%s', format_type(t, NULL)), ', ' ORDER BY i) "
        "                 FROM unnest(p.proargtypes) WITH ORDINALITY a(t, i)), '') "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'bi_access_internal' ORDER BY 1", dbname=dbname)
    return [(sig, f"{'CALL' if kind == 'p' else 'SELECT'} bi_access_internal.{name}({args})", kind)
            for sig, name, kind, args in rows]


def test_internal_routines_are_refused(sess, pair, hostile):
    """42501 for each; a planner support function takes an `internal`
    argument, which no SQL value can be cast to: 42846 (0A000 on 14, which
    refuses the NULL::internal first)."""
    routines = internal_routines(pair, hostile)
    assert len(routines) >= 10
    observed = {sig: sess.run(call).state for sig, call, _ in routines}
    no_internal_value = CANNOT_COERCE if PG_MAJOR >= 15 else "0A000"
    expected = {sig: no_internal_value if sig.endswith("(internal)") else PERMISSION_DENIED for sig in observed}
    assert observed == expected, observed
    assert "bi_access_internal.org_lookup_support(internal)" in observed


ORG_LOOKUPS = ("current_org", "current_org_bigint", "current_org_uuid")


@pytest.fixture(scope="module")
def org_of_caller(pair, hostile):
    """A careless DBA's SECURITY DEFINER wrapper in public, executable by
    PUBLIC, that hands the org lookups to anyone."""
    pair.primary.sql("CREATE FUNCTION public.org_of_caller() RETURNS text[] LANGUAGE sql SECURITY DEFINER "
                     "AS $$SELECT ARRAY[bi_access.current_org(), bi_access.current_org_bigint()::text, "
                     "bi_access.current_org_uuid()::text]$$", dbname=hostile)
    pair.wait_replayed()
    yield "public.org_of_caller()"
    pair.primary.sql("DROP FUNCTION public.org_of_caller()", dbname=hostile)
    pair.wait_replayed()


def test_current_org_is_callable_by_no_path(sess, server, hostile, org_of_caller):
    """Called directly, the org lookups are refused (42501: no USAGE on
    bi_access's schema); through the DBA's definer wrapper too (42501: the
    session guard runs no SECURITY DEFINER function but bi_access's own),
    also after the credential SETs the application's placeholders. A plain
    role does get the wrapper's answer (for it: no org)."""
    observed = {fn: sess.run(f"SELECT bi_access.{fn}()::text").state for fn in ORG_LOOKUPS}
    assert observed == {fn: PERMISSION_DENIED for fn in ORG_LOOKUPS}, observed
    control = login(server.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        assert Session(control).value(f"SELECT {org_of_caller}") == [None, None, None], "control"
    finally:
        control.close()
    for name, value in [(None, None), *PLACEHOLDERS.items()]:
        if name:
            sess.rows(f"SET {name} = '{value}'")
        outcome = sess.run(f"SELECT {org_of_caller}")
        expect(outcome, PERMISSION_DENIED)
        assert f"SECURITY DEFINER function {org_of_caller}" in outcome.message, str(outcome)


# --------------------------------------------------------------------------
# SECURITY DEFINER functions: however they are reached

REPORTING_ROWS = "SELECT o.id, (SELECT count(*) FROM docs d WHERE d.org_id = o.id), " \
                 "(SELECT s.token FROM app_secrets s WHERE s.org_id = o.id) FROM orgs o ORDER BY 1"

# What the credential runs -> the function the refusal names.
DEFINER_PATHS = {
    "directly": ("SELECT * FROM reporting.org_summary()", "reporting.org_summary()"),
    "in a FROM list beside an exposed table": (
        "SELECT o.name, s.token FROM orgs o, reporting.org_summary() s", "reporting.org_summary()"),
    "in a view": ("SELECT * FROM org_overview", "reporting.org_summary()"),
    "through an operator, folded by the planner": (f"SELECT OPERATOR(reporting.###) {ORG_B}::bigint",
                                                   "reporting.org_token(bigint)"),
    "through an operator on a column": ("SELECT OPERATOR(reporting.###) id FROM orgs",
                                        "reporting.org_token(bigint)"),
    "in another function": ("SELECT * FROM reporting.my_summary()", "reporting.org_summary()"),
    "in a WHERE clause": (f"SELECT count(*) FROM orgs WHERE reporting.org_token(id) = 'token of {ORG_B}'",
                          "reporting.org_token(bigint)"),
    "in a prepared statement": ("PREPARE summary AS SELECT * FROM reporting.org_summary(); EXECUTE summary",
                                "reporting.org_summary()"),
}


def test_the_reporting_functions_give_every_org_to_an_ordinary_role(pair, server, hostile):
    """Control: the DBA's reporting function, called by any role (here the
    plain one, which may read no table of the database), returns every org's
    counts and tokens, as the superuser counts them; so does its operator."""
    conn = login(server.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        s = Session(conn)
        assert s.rows("SELECT * FROM reporting.org_summary() ORDER BY 1") == \
            server.sql(REPORTING_ROWS, dbname=hostile)
        assert s.value(f"SELECT OPERATOR(reporting.###) {ORG_B}::bigint") == f"token of {ORG_B}"
        expect(s.run("SELECT * FROM app_secrets"), PERMISSION_DENIED)
    finally:
        conn.close()


@pytest.mark.parametrize("path", DEFINER_PATHS, ids=code("42501"))
def test_a_definer_function_is_refused_however_it_is_reached(sess, expected, path):
    """The session guard runs no SECURITY DEFINER function but bi_access's own
    (and those an exposed table's policies call): the function manager's
    hook refuses it at the call, after PostgreSQL switched to its owner, on
    the session's login. On 14 no view is exposed: the guard refuses the view
    itself (42501 too), before the function."""
    sql, function = DEFINER_PATHS[path]
    outcome = sess.run(sql)
    expect(outcome, PERMISSION_DENIED)
    if path == "in a view" and PG_MAJOR < 15:
        assert "reads only exposed tables" in outcome.message, str(outcome)
    else:
        assert f"may not call SECURITY DEFINER function {function}" in outcome.message, str(outcome)
    assert not leaks(outcome.text(), foreign()), leaks(outcome.text(), foreign())
    assert_sees_exactly(sess, expected[ORG_A], f"after {path}")


def test_a_definer_function_in_an_index_expression_is_refused(sess, cred, server):
    """A read_write credential builds an index on an expression that calls
    the reporting function over its own table of guessed keys: the build
    calls it, and the guard refuses (42501, naming it); a read credential may
    build no index at all (42501, read-only). Nothing is created either way."""
    read_write(sess)
    if cred.details["scope"] == "read_write" and server.name == "primary":
        schema = cred.details["custom_schema"]
        sess.rows(f"CREATE TABLE {schema}.guesses (org_id bigint)")
        try:
            sess.rows(f"INSERT INTO {schema}.guesses VALUES ({ORG_B}), ({ORG_C})")
            outcome = sess.run(f"CREATE INDEX guesses_token ON {schema}.guesses (reporting.org_token(org_id))")
            expect(outcome, PERMISSION_DENIED)
            assert "may not call SECURITY DEFINER function reporting.org_token(bigint)" in outcome.message, \
                str(outcome)
            assert sess.rows("SELECT 1 FROM pg_class WHERE relname = 'guesses_token'") == []
        finally:
            sess.rows(f"DROP TABLE {schema}.guesses")
        return
    outcome = sess.run("CREATE INDEX orgs_token ON orgs (reporting.org_token(id))")
    expect(outcome, PERMISSION_DENIED)
    assert sess.rows("SELECT 1 FROM pg_class WHERE relname = 'orgs_token'") == []


def test_a_definer_function_an_exposed_tables_policy_calls_is_admitted(sess, pair, server, hostile, expected):
    """docs carries the application's own policy calling a definer function
    (reporting.tenant_filter): a credential's query on docs runs it, so the
    guard admits it (the one exception, which check() lists), and it gives the
    org's rows exactly; called directly it answers too (here: false)."""
    assert server.value("SELECT count(*) FROM pg_policy WHERE polname = 'app_filter'", dbname=hostile) == 1
    assert sess.rows("SELECT * FROM docs ORDER BY 1") == expected[ORG_A]["docs"]
    assert sess.value(f"SELECT reporting.tenant_filter({ORG_B})") is False
    findings = pair.primary.sql("SELECT severity, object FROM bi_access.check() WHERE object LIKE %s",
                                ("function reporting.%",), dbname=hostile)
    assert ("warning", "function reporting.tenant_filter(bigint)") in findings, findings
    assert ("error", "function reporting.org_summary()") in findings, findings
    assert ("error", "function reporting.org_token(bigint)") in findings, findings


# --------------------------------------------------------------------------
# creating objects

# CREATE SCHEMA, CREATE EXTENSION (trusted or not) and, from PostgreSQL 15 on,
# CREATE in schema public are PostgreSQL's own refusals for an ordinary role.
# Objects in public stay listed: on 14, PUBLIC may create there. Temp objects
# (PUBLIC has TEMP on every database) only bi_access refuses.
CREATES = {
    "function in public": "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "function in pg_temp": "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "view": "CREATE VIEW public.v AS SELECT * FROM docs",
    "temp view": "CREATE TEMP VIEW v AS SELECT * FROM docs",
    "table": "CREATE TABLE public.t (org_id bigint)",
    "temp table": "CREATE TEMP TABLE t (org_id bigint)",
    "temp table as": "CREATE TEMP TABLE t AS SELECT * FROM docs",
    "materialized view": "CREATE MATERIALIZED VIEW public.mv AS SELECT * FROM docs",
}


@pytest.mark.parametrize("what", CREATES, ids=code("42501"))
def test_create_is_refused_after_leaving_read_only(sess, server, expected, what):
    """Any role may turn its read-only default off, so PostgreSQL's read-only
    check (25006) cannot be what refuses: bi_access's session guard refuses
    every DDL statement of a credential (42501), on the primary and on the
    replica, and nothing is created."""
    read_write(sess)
    outcome = sess.run(CREATES[what])
    expect(outcome, PERMISSION_DENIED)
    assert refused_by_the_guard(outcome), str(outcome)
    assert sess.rows("SELECT relname FROM pg_class WHERE relname IN ('v', 't', 'mv') "
                     "UNION ALL SELECT proname FROM pg_proc WHERE proname = 'f'") == []
    assert_sees_exactly(sess, expected[ORG_A], f"after {what}")


@pytest.fixture(scope="module")
def leak(pair, hostile):
    """A function with a side channel (RAISE NOTICE of its argument), created
    by the DBA in public and executable by PUBLIC, as application helpers
    are; it claims to cost nothing, so the planner would run it first if
    nothing stopped it."""
    pair.primary.sql("CREATE FUNCTION public.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 "
                     "AS $$ BEGIN RAISE NOTICE 'leak: %', $1; RETURN true; END $$", dbname=hostile)
    pair.wait_replayed()
    yield "public.leak"
    pair.primary.sql("DROP FUNCTION public.leak(text)", dbname=hostile)
    pair.wait_replayed()


def leaked(outcome) -> list[str]:
    return sorted(n.strip().removeprefix("NOTICE:  leak: ") for n in outcome.notices)


@pytest.mark.parametrize("planner", ["default", "enable_seqscan = off", "enable_indexscan = off",
                                     "enable_bitmapscan = off", "cpu_operator_cost = 0"])
def test_a_leaky_function_sees_only_the_own_rows(sess, pair, hostile, leak, planner):
    """The credential calls the DBA's leaky function in a WHERE clause. A
    policy is a security barrier: its quals run before any function that is
    not LEAKPROOF, whatever the function's cost and the planner's options, so
    the notices show exactly the org's own rows (as the superuser lists them)
    and never another org's."""
    if planner != "default":
        sess.rows(f"SET {planner}")
    plain = pair.primary.value(f"SELECT has_function_privilege('{PLAIN_ROLE}', '{leak}(text)', 'EXECUTE')",
                               dbname=hostile)
    assert plain, "control: any role may call the function"
    for table, column in TABLES.items():
        own = sorted(r for (r,) in pair.primary.sql(f"SELECT t::text FROM {table} t WHERE {column}::text = %s",
                                                    (ORG_A,), dbname=hostile))
        out = sess.run(f"SELECT * FROM {table} t WHERE {leak}(t::text)")
        expect(out, OK)
        assert leaked(out) == own, f"{table}: the function saw other rows than the org's"
    # A listed column: the org's own values only; a shared table's: all.
    for table, column in (("users", "email"), ("plans", "name")):
        keyed = "" if table in SHARED else f"WHERE {org_column(table)}::text = %s"
        want = sorted(r for (r,) in pair.primary.sql(f"SELECT {column} FROM {table} {keyed}",
                                                     None if table in SHARED else (ORG_A,), dbname=hostile))
        out = sess.run(f"SELECT {column} FROM {table} WHERE {leak}({column})")
        expect(out, OK)
        assert leaked(out) == want and want, f"{table}.{column}: the function saw other values"
    # A hidden column: refused before the function sees a value.
    out = sess.run(f"SELECT id FROM users WHERE {leak}(password_hash)")
    expect(out, PERMISSION_DENIED)
    assert leaked(out) == [], out.notices
    for q in [f"SELECT * FROM docs d JOIN orgs o ON o.id = d.org_id WHERE {leak}(d::text || o::text)",
              f"SELECT count(*) FROM metrics WHERE org_id > 0 AND {leak}(org_id::text)",
              f"SELECT (SELECT {leak}(string_agg(t::text, ',')) FROM tickets t)"]:
        out = sess.run(q)
        expect(out, OK)
        assert out.notices, f"{q}: the function never ran"
        found = leaks(out.text(), foreign())
        assert not found, f"{q}: notices carry {found}"


# --------------------------------------------------------------------------
# COPY, large objects

def test_copy_to_stdout_gives_only_own_rows(sess, expected):
    for table in TABLES:
        buf = io.StringIO()
        with sess.conn.cursor() as cur:
            cur.copy_expert(f"COPY (SELECT * FROM {table} ORDER BY 1) TO STDOUT", buf)
        lines = buf.getvalue().splitlines()
        assert len(lines) == len(expected[ORG_A][table]), table
        assert not leaks(buf.getvalue(), foreign()), table
        buf = io.StringIO()
        with sess.conn.cursor() as cur:
            cur.copy_expert(f"COPY {table} TO STDOUT", buf)
        # Under RLS, `COPY table TO` reads ONLY that table: a partitioned
        # parent gives no row at all (PostgreSQL's doing, and no leak).
        want = 0 if table == "events" else len(expected[ORG_A][table])
        assert len(buf.getvalue().splitlines()) == want, f"COPY {table} TO STDOUT"
        assert not leaks(buf.getvalue(), foreign()), table
    # A listed or shared table: COPY of its listed columns.
    for table in [*LISTED, *SHARED]:
        columns = LISTED[table][1] if table in LISTED else SHARED[table]
        buf = io.StringIO()
        with sess.conn.cursor() as cur:
            cur.copy_expert(f"COPY {table} ({', '.join(columns)}) TO STDOUT", buf)
        assert sorted(buf.getvalue().splitlines()) == \
            sorted("\t".join(str(v) for v in row) for row in expected[ORG_A][table]), table
        assert not leaks(buf.getvalue(), foreign()), table


LO_WRITES = {
    "lo_create": "SELECT lo_create(0)",
    "lo_creat": "SELECT lo_creat(-1)",
    "lo_from_bytea": "SELECT lo_from_bytea(0, 'x')",
}


@pytest.mark.parametrize("what", LO_WRITES, ids=code("42501"))
def test_large_object_write_is_refused(sess, pair, server, hostile, what):
    """DESIGN property 2: the session guard refuses lo_* writes (42501) before
    anything else can, on the primary and on the replica, also once the
    session has left its read-only default (PostgreSQL 15 does not check
    read-only transactions in lo_create()/lo_from_bytea(), so on the primary
    only bi_access stops them). No large object exists afterwards."""
    read_write(sess)
    outcome = sess.run(LO_WRITES[what])
    expect(outcome, PERMISSION_DENIED)
    assert f"a bi_access credential may not call {what}()" in outcome.message, str(outcome)
    assert sess.value("SELECT count(*) FROM pg_largeobject_metadata") == 0
    assert pair.primary.value("SELECT count(*) FROM pg_largeobject_metadata", dbname=hostile) == 0


# --------------------------------------------------------------------------
# prepared statements and cursors across another session's org change

@pytest.mark.parametrize("plan_cache_mode", ["auto", "force_generic_plan", "force_custom_plan"])
def test_prepared_statements_and_cursors_stay_in_the_org(cred, hbi, pair, server, hostile, expected,
                                                         plan_cache_mode):
    own = expected[ORG_A]
    with session(cred, server) as a:
        a.rows(f"SET plan_cache_mode = {plan_cache_mode}")
        a.rows("PREPARE p AS SELECT * FROM docs ORDER BY 1")
        a.rows("PREPARE q(bigint) AS SELECT * FROM metrics WHERE org_id = $1 ORDER BY 1")
        a.rows(f"PREPARE u AS {read('users')}")
        for _ in range(6):  # past the five custom plans of `auto`
            assert a.rows("EXECUTE p") == own["docs"]
            assert a.rows("EXECUTE u") == own["users"]
            assert a.rows(f"EXECUTE q({ORG_B})") == []
        # Made (and replayed) before the transaction below opens: a cursor
        # open on the replica pins a buffer that replay may have to clean up,
        # and waiting for replay then ends in a recovery conflict.
        other = hbi.generate(ORG_B)
        a.rows("BEGIN")
        a.rows("DECLARE c CURSOR FOR SELECT * FROM tickets ORDER BY 1")
        first = a.rows("FETCH 1 FROM c")
        a.rows("DECLARE h CURSOR WITH HOLD FOR SELECT * FROM events ORDER BY 1")

        # Other sessions change orgs around it: a credential of another org
        # runs the same statements, then the admin revokes it and generates
        # yet another (without waiting for the replica while this
        # transaction is open).
        with session(other, server) as b:
            b.rows("PREPARE p AS SELECT * FROM docs ORDER BY 1")
            assert b.rows("EXECUTE p") == expected[ORG_B]["docs"]
            hbi.one("revoke", other.role)
            hbi.generate(ORG_C, wait_replica=False)

        assert first + a.rows("FETCH ALL FROM c") == own["tickets"]
        a.rows("COMMIT")
        pair.wait_replayed()
        assert a.rows("FETCH ALL FROM h") == own["events"]
        assert a.rows("EXECUTE p") == own["docs"]
        assert a.rows(f"EXECUTE q({ORG_A})") == [r for r in own["metrics"]]
        assert a.rows(f"EXECUTE q({ORG_B})") == []
        assert a.rows("EXECUTE u") == own["users"]

        # Changes within the session itself.
        a.rows(f"SET app.org = '{ORG_B}'")
        a.rows("SET myapp.tenant = 'all'")
        assert a.rows("EXECUTE p") == own["docs"]
        if MEMBERSHIPS_ALLOW_SET_ROLE:
            a.rows(f"SET ROLE {reader_group(server, hostile)}")
            assert a.rows("EXECUTE p") == []
            a.rows("RESET ROLE")
        else:  # 16 and later: the membership is WITH SET FALSE
            assert a.run(f"SET ROLE {reader_group(server, hostile)}").state == PERMISSION_DENIED
        assert a.rows("EXECUTE p") == own["docs"]


# --------------------------------------------------------------------------
# what the planner and the statistics tell

# Guesses at another org's values: ANALYZE (in the fixture) put every org's
# stages in deals' statistics, so the planner's estimate for the right guess
# (org B's stage) differs from a wrong one's.
GUESSES = {
    "right guess": "SELECT * FROM deals WHERE stage = 'acquire-initech'",
    "wrong guess": "SELECT * FROM deals WHERE stage = 'acquire-hooli'",
}
EXPLAIN_FORMS = {
    "EXPLAIN": "EXPLAIN {q}",
    "EXPLAIN (FORMAT JSON)": "EXPLAIN (FORMAT JSON) {q}",
    "EXPLAIN (COSTS, VERBOSE, SETTINGS)": "EXPLAIN (COSTS, VERBOSE, SETTINGS) {q}",
    "EXPLAIN ANALYZE": "EXPLAIN ANALYZE {q}",
    "EXPLAIN (ANALYZE, BUFFERS, FORMAT YAML)": "EXPLAIN (ANALYZE, BUFFERS, FORMAT YAML) {q}",
    "EXPLAIN (ANALYZE false)": "EXPLAIN (ANALYZE false) {q}",
    "EXPLAIN EXECUTE": "PREPARE guess AS {q}; EXPLAIN EXECUTE guess",
    "EXPLAIN in a function": "SELECT * FROM reporting.explain($q${q}$q$)",
}
ANALYZES = {form for form in EXPLAIN_FORMS if "ANALYZE" in form and "false" not in form}


def estimate(rows) -> float:
    """The top node's row estimate of EXPLAIN (FORMAT JSON)'s output."""
    out = rows[0][0]
    return (out if isinstance(out, list) else json.loads(out))[0]["Plan"]["Plan Rows"]


def test_estimates_tell_another_orgs_values(server, hostile, creds):
    """Control: planned as the credential's role (a superuser session that
    SET ROLE to it, which the session guard does not watch), EXPLAIN's
    estimates tell a right guess of another org's key from a wrong one."""
    conn = server.connect(hostile)
    try:
        s = Session(conn)
        s.rows(f'SET ROLE "{creds[ORG_A].role}"')
        right, wrong = (estimate(s.rows(f"EXPLAIN (FORMAT JSON) {GUESSES[g]}")) for g in GUESSES)
        assert right > wrong, (right, wrong)
    finally:
        conn.close()


@pytest.mark.parametrize("guess", GUESSES)
@pytest.mark.parametrize("form", EXPLAIN_FORMS, ids=code("42501"))
def test_explain_is_refused(sess, expected, form, guess):
    """Every form of EXPLAIN (42501), whatever it explains: the estimates come
    from statistics over every org's rows, and ANALYZE counts the rows a
    filter removed."""
    outcome = sess.run(EXPLAIN_FORMS[form].format(q=GUESSES[guess]))
    expect(outcome, PERMISSION_DENIED)
    what = "EXPLAIN ANALYZE" if form in ANALYZES else "EXPLAIN:"
    assert f"a bi_access credential may not run {what}" in outcome.message, str(outcome)
    # No plan, no estimate (the error's context may echo the guess itself).
    assert outcome.rows == [] and "rows=" not in outcome.text(), str(outcome)
    assert_sees_exactly(sess, expected[ORG_A], f"after {form}")


@pytest.fixture
def explain_allowed(pair):
    set_bi_settings(pair, {"bi_access.allow_explain": "on"})
    yield
    set_bi_settings(pair, {"bi_access.allow_explain": None})


@pytest.mark.parametrize("form", EXPLAIN_FORMS)
def test_allow_explain_allows_plain_explain_only(explain_allowed, sess, form):
    """A deployment that accepts the estimates sets bi_access.allow_explain:
    plain EXPLAIN then runs (its estimates tell right from wrong guesses, as
    the control shows); EXPLAIN ANALYZE stays refused (42501)."""
    outcome = sess.run(EXPLAIN_FORMS[form].format(q=GUESSES["right guess"]))
    if form in ANALYZES:
        expect(outcome, PERMISSION_DENIED)
        assert "may not run EXPLAIN ANALYZE" in outcome.message, str(outcome)
    else:
        expect(outcome, OK)
        assert outcome.rows, str(outcome)


MESSAGES_BELOW_NOTICE = {
    "SET": "SET client_min_messages = log",
    "SET debug5": "SET client_min_messages = debug5",
    "set_config": "SELECT set_config('client_min_messages', 'debug1', false)",
    "SET LOCAL": "BEGIN; SET LOCAL client_min_messages = log; COMMIT",
}


@pytest.mark.parametrize("how", MESSAGES_BELOW_NOTICE, ids=code("42501"))
def test_messages_below_notice_are_refused(sess, how):
    """A plan printed at LOG (debug_print_plan, auto_explain) carries the
    estimates: a credential may not ask for messages below NOTICE (42501)."""
    outcome = sess.run(MESSAGES_BELOW_NOTICE[how])
    expect(outcome, PERMISSION_DENIED)
    assert "may not receive messages below NOTICE" in outcome.message, str(outcome)
    sess.run("ROLLBACK")
    assert sess.value("SHOW client_min_messages") == "notice"


def test_a_plan_printed_at_log_never_reaches_a_credential(cred, server, hostile):
    """debug_print_plan (any role may set it) prints the plan, estimates
    included, at LOG. Control: an ordinary role asking for LOG in its startup
    packet gets it. A credential asking the same gets client_min_messages
    NOTICE and no plan."""
    options = "-c client_min_messages=debug1 -c debug_print_plan=on"
    control = login({**server.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD), "options": options})
    control.notices = []
    try:
        Session(control).rows(f"SELECT * FROM docs WHERE org_id = {ORG_B}")
        assert any("plan_rows" in n for n in control.notices), "control: the plan reaches the client"
    finally:
        control.close()
    conn = login({**cred.login_args(server), "options": options})
    try:
        s = Session(conn)
        assert s.value("SHOW client_min_messages") == "notice"
        outcome = s.run(GUESSES["right guess"])
        expect(outcome, OK)
        assert not any("plan_rows" in n for n in outcome.notices), outcome.notices
        s.rows("SET debug_print_plan = on")
        outcome = s.run(GUESSES["right guess"])
        assert not any("plan_rows" in n for n in outcome.notices), outcome.notices
    finally:
        conn.close()


def test_statistics_views_are_refused(sess, pair, server, hostile):
    """ANALYZE (run in the fixture, as the owner) put every org's key in the
    most common values of metrics.org_id: the superuser sees them; the
    session guard refuses the statistics views to a credential outright
    (they show the values of any table a stray grant lets it select)."""
    su = Session.superuser(server, hostile)
    try:
        mcv = su.value("SELECT most_common_vals::text FROM pg_stats "
                       "WHERE tablename = 'metrics' AND attname = 'org_id'")
        assert ORG_B in mcv, "control: the statistics do carry other orgs' keys"
        ext = su.value("SELECT count(*) FROM pg_stats_ext WHERE statistics_name = 'metrics_stats' "
                       "AND most_common_vals IS NOT NULL")
        assert ext == 1
    finally:
        su.close()
    for view in ("pg_stats", "pg_stats_ext", "pg_stats_ext_exprs"):
        outcome = sess.run(f"SELECT * FROM {view}")
        expect(outcome, PERMISSION_DENIED)
        assert "bi_access credential" in outcome.message, str(outcome)


def statistics_views(server, hostile) -> list[str]:
    """This major's views of table and index statistics, from its catalog:
    pg_stat*_tables, pg_stat*_indexes, pg_statio_*."""
    return [v for (v,) in server.sql(
        "SELECT viewname::text FROM pg_views WHERE schemaname = 'pg_catalog' "
        "AND (viewname ~ '^pg_stat.*_(tables|indexes)$' OR viewname LIKE 'pg\\_statio\\_%') ORDER BY 1",
        dbname=hostile)]


def test_table_statistics_views_are_refused_whole(sess, server, hostile):
    """pg_stat_user_tables and its kin count every table's rows (non-exposed
    ones, bi_access's own credentials and events: how many customers have BI
    access), scans and blocks, whatever the reader's privileges. Control: an
    ordinary role reads bi_access.credential's counters there. Each view is
    refused whole (42501), on this major's list of them."""
    views = statistics_views(server, hostile)
    assert {"pg_stat_user_tables", "pg_stat_xact_user_tables", "pg_stat_all_indexes", "pg_statio_user_tables",
            "pg_statio_all_sequences"} <= set(views), views
    control = login(server.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        assert Session(control).rows("SELECT relname FROM pg_stat_user_tables "
                                     "WHERE schemaname = 'bi_access' AND relname = 'credential'"), "control"
    finally:
        control.close()
    observed = {v: sess.run(f"SELECT * FROM {v}") for v in views}
    assert {v: o.state for v, o in observed.items()} == {v: PERMISSION_DENIED for v in views}, observed
    assert all("a bi_access credential reads only exposed tables" in o.message for o in observed.values())


def statistics_functions(server, hostile) -> list[str]:
    """The pg_stat_get_* functions this major's table and index statistics
    views call, read from their definitions."""
    return [f for (f,) in server.sql(
        "SELECT DISTINCT m[1] FROM pg_views v, regexp_matches(v.definition, '(pg_stat_get_[a-z_]+)', 'g') m "
        "WHERE v.schemaname = 'pg_catalog' "
        "AND (v.viewname ~ '^pg_stat.*_(tables|indexes)$' OR v.viewname LIKE 'pg\\_statio\\_%') ORDER BY 1",
        dbname=hostile)]


def test_relation_statistics_functions_are_refused_by_name(sess, server, hostile):
    """Every pg_stat_get_* function those views call, called directly on
    bi_access.credential's OID (by OID: a credential may not even name a
    relation of bi_access's schema) and on an exposed table: 42501. Control:
    an ordinary role gets bi_access.credential's live rows."""
    relid = server.value("SELECT 'bi_access.credential'::regclass::oid", dbname=hostile)
    functions = statistics_functions(server, hostile)
    assert "pg_stat_get_live_tuples" in functions and len(functions) >= 25, functions
    control = login(server.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        expect(Session(control).run(f"SELECT pg_stat_get_live_tuples({relid})"), OK)
    finally:
        control.close()
    observed = {f: sess.run(f"SELECT {f}({relid})").state for f in functions}
    observed["pg_stat_get_live_tuples on an exposed table"] = \
        sess.run("SELECT pg_stat_get_live_tuples('metrics'::regclass)").state
    observed["pg_stat_get_xact_blocks_hit"] = sess.run(f"SELECT pg_stat_get_xact_blocks_hit({relid})").state
    assert observed == {f: PERMISSION_DENIED for f in observed}, observed


def test_pg_stat_activity_still_works(sess, cred, server):
    """What BI clients read when they connect: the server's sessions (other
    roles' statements hidden, as PostgreSQL does for every role)."""
    rows = sess.rows("SELECT usename, query FROM pg_stat_activity WHERE pid = pg_backend_pid()")
    assert rows == [(cred.role, "SELECT usename, query FROM pg_stat_activity WHERE pid = pg_backend_pid()")]
    assert sess.value("SELECT count(*) FROM pg_stat_database WHERE datname = current_database()") == 1


XID_FUNCTIONS = ("pg_current_xact_id()", "txid_current()")


@pytest.mark.parametrize("function", XID_FUNCTIONS)
def test_a_read_credential_assigns_no_transaction_id(sess, cred, server, function):
    """A read credential's call that would assign a transaction id: 42501 on
    every server. A read_write credential writes, so it may (on the primary;
    a standby assigns none, and PostgreSQL refuses it there: 25006)."""
    outcome = sess.run(f"SELECT {function}")
    if cred.details["scope"] == "read":
        expect(outcome, PERMISSION_DENIED)
        assert "may not call" in outcome.message and "assigns a transaction id" in outcome.message, str(outcome)
    elif server.name == "primary":
        expect(outcome, OK)
    else:
        expect(outcome, READ_ONLY_TRANSACTION)
        assert "during recovery" in outcome.message, str(outcome)
    expect(sess.run("SELECT pg_current_xact_id_if_assigned()"), OK)


CATALOGS = {
    "pg_policies": "SELECT * FROM pg_policies",
    "pg_policy": "SELECT polname, polrelid::regclass, pg_get_expr(polqual, polrelid) FROM pg_policy",
    "pg_roles": "SELECT * FROM pg_roles",
    "pg_user": "SELECT * FROM pg_user",
    "pg_db_role_setting": "SELECT * FROM pg_db_role_setting",
    "pg_auth_members": "SELECT roleid::regrole, member::regrole FROM pg_auth_members",
    "pg_shdescription": "SELECT * FROM pg_shdescription",
    "pg_description": "SELECT * FROM pg_description",
    "pg_class": "SELECT relname, relacl, reloptions FROM pg_class",
    "pg_proc": "SELECT proname, prosrc, proconfig FROM pg_proc",
    "pg_settings": "SELECT name, setting, reset_val FROM pg_settings",
    "pg_stat_activity": "SELECT * FROM pg_stat_activity",
    "pg_stat_user_functions": "SELECT * FROM pg_stat_user_functions",
    "pg_largeobject_metadata": "SELECT * FROM pg_largeobject_metadata",
    "pg_seclabels": "SELECT * FROM pg_seclabels",
}


@pytest.fixture
def busy_admin(server, hostile):
    """A superuser session whose last query names another org, left idle: its
    text is in pg_stat_activity."""
    conn = server.connect(hostile)
    with conn.cursor() as cur:
        cur.execute(f"SELECT '{NAMES[ORG_B]}', {ORG_B}, '{NAMES[ORG_C]}', {ORG_C}")
    yield
    conn.close()


@pytest.mark.parametrize("catalog", CATALOGS)
def test_catalog_names_no_org(sess, busy_admin, catalog):
    """Readable by every role, so it must carry no org key and no org name
    (not even the credential's own: it would tell the others)."""
    outcome = sess.run(CATALOGS[catalog])
    expect(outcome, OK)
    assert outcome.rows or catalog in ("pg_shdescription", "pg_seclabels", "pg_largeobject_metadata",
                                       "pg_stat_user_functions")
    found = leaks(outcome.text(), every_org())
    assert not found, f"{catalog} carries {found}"


def test_pg_stat_statements_view_is_refused(cred, server):
    """pg_stat_statements (track = all) shows the statements of the whole
    cluster; its view, in a schema bi_access does not expose, is refused.
    Control: the superuser's view shows the marker."""
    marker = f"DO $$BEGIN PERFORM '{NAMES[ORG_B]} {ORG_B}'; END$$"
    server.sql(marker)
    assert any(NAMES[ORG_B] in q for (q,) in server.sql("SELECT query FROM pg_stat_statements")), "control"
    conn = login(cred.login_args(server))
    try:
        outcome = Session(conn).run("SELECT * FROM stats.pg_stat_statements")
        expect(outcome, PERMISSION_DENIED)
        assert not leaks(outcome.text(), every_org())
    finally:
        conn.close()


PG_STAT_STATEMENTS_CALLS = {
    "pg_stat_statements(true)": "SELECT * FROM stats.pg_stat_statements(true)",
    "pg_stat_statements(false)": "SELECT * FROM stats.pg_stat_statements(false)",
    "pg_stat_statements(showtext => true)": "SELECT * FROM stats.pg_stat_statements(showtext => true)",
    "in the select list": "SELECT (stats.pg_stat_statements(true)).query",
    "pg_stat_statements_info()": "SELECT * FROM stats.pg_stat_statements_info()",
}


@pytest.mark.parametrize("call", PG_STAT_STATEMENTS_CALLS, ids=code("42501"))
def test_pg_stat_statements_functions_are_refused_whatever_the_argument(cred, server, call):
    """The view is refused, and so is the function behind it, called with any
    argument (where PostgreSQL would show other roles' statements and row
    counts to a role that may not read the view). Control: the superuser's
    call of the same function shows the marker."""
    marker = f"DO $$BEGIN PERFORM '{NAMES[ORG_C]} {ORG_C}'; END$$"
    server.sql(marker)
    assert any(NAMES[ORG_C] in q for (q,) in server.sql("SELECT query FROM pg_stat_statements(true)")), "control"
    conn = login(cred.login_args(server))
    try:
        outcome = Session(conn).run(PG_STAT_STATEMENTS_CALLS[call])
        expect(outcome, PERMISSION_DENIED)
        assert "may not call pg_stat_statements" in outcome.message, str(outcome)
        assert not leaks(outcome.text(), every_org())
    finally:
        conn.close()


# --------------------------------------------------------------------------
# what a credential can still learn (README: "What a BI login can still
# learn" names each item, and nothing else)

OTHER_APPLICATION = "another-bi-tool"


@pytest.fixture
def other_session(creds, server):
    """Another org's credential on the same server, named by its
    application_name, inside a transaction that read docs (it holds the lock)."""
    conn = login({**creds[ORG_B].login_args(server), "application_name": OTHER_APPLICATION})
    s = Session(conn)
    s.rows("BEGIN")
    s.rows("SELECT count(*) FROM docs")
    yield creds[ORG_B].role
    s.run("ROLLBACK")
    conn.close()


def learn_names(sess, server, hostile, other):
    """Every relation's, column's and function's name, exposed or not,
    bi_access's own included."""
    rows = set(sess.rows("SELECT n.nspname::text, c.relname::text FROM pg_class c "
                         "JOIN pg_namespace n ON n.oid = c.relnamespace"))
    assert {("public", "app_secrets"), ("internal", "payroll"), ("bi_access", "credential"),
            ("bi_access", "event")} <= rows
    columns = sess.rows("SELECT attname::text FROM pg_attribute WHERE attrelid = "
                        "(SELECT oid FROM pg_class WHERE relname = 'app_secrets') AND attnum > 0 ORDER BY attnum")
    assert columns == [("id",), ("org_id",), ("token",)]
    assert sess.rows("SELECT proname::text FROM pg_proc WHERE proname = 'org_summary'") == [("org_summary",)]


SIZES = ("SELECT n.nspname::text, c.relname::text, c.relpages, c.reltuples, pg_relation_size(c.oid) "
         "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
         "WHERE (n.nspname, c.relname) IN (('public', 'metrics'), ('public', 'app_secrets'), "
         "('internal', 'payroll'), ('bi_access', 'credential')) ORDER BY 1, 2")


def learn_sizes(sess, server, hostile, other):
    """Every table's size in pages, the planner's estimate of its rows, and
    its size on disk, as the superuser reads them: exposed or not, bi_access's
    own included."""
    seen = sess.rows(SIZES)
    assert seen == server.sql(SIZES, dbname=hostile), seen
    assert len(seen) == 4 and all(size > 0 for *_, size in seen), seen


def learn_roles(sess, server, hostile, other):
    """Every role's name, and which are BI credentials (the members of
    bi_access_credential): how many there are in the cluster."""
    roles = {r for (r,) in sess.rows("SELECT rolname::text FROM pg_roles")}
    assert other in roles and PLAIN_ROLE in roles and ADMIN_ROLE in roles
    members = {r for (r,) in sess.rows("SELECT member::regrole::text FROM pg_auth_members "
                                       "WHERE roleid = 'bi_access_credential'::regrole")}
    assert other in members
    assert len(members) == server.value("SELECT count(*) FROM pg_auth_members "
                                        "WHERE roleid = 'bi_access_credential'::regrole")


def learn_databases_and_schemas(sess, server, hostile, other):
    assert {("postgres",), (hostile,)} <= set(sess.rows("SELECT datname::text FROM pg_database"))
    schemas = {n for (n,) in sess.rows("SELECT nspname::text FROM pg_namespace")}
    custom = {n for (n,) in server.sql("SELECT schema_name::text FROM bi_access.custom_schema", dbname=hostile)}
    assert {"internal", "reporting", "bi_access", "bi_access_internal"} | custom <= schemas


def learn_policies(sess, server, hostile, other):
    policies = dict(sess.rows("SELECT policyname::text, qual FROM pg_policies WHERE tablename = 'docs'"))
    assert "current_org_bigint()" in policies["bi_access_read"], policies
    assert "current_setting('app.org'" in policies["app_tenant"], policies


def learn_settings(sess, server, hostile, other):
    assert sess.value("SELECT count(*) FROM pg_settings") > 200
    assert sess.value("SELECT setting FROM pg_settings WHERE name = 'max_connections'") == \
        server.value("SHOW max_connections")


def learn_activity(sess, server, hostile, other):
    """Another session's login, database, application name and process id;
    not its statement, backend type, client address, state or start."""
    rows = sess.rows("SELECT usename::text, datname::text, application_name, pid IS NOT NULL, backend_type, "
                     "query, client_addr, state, backend_start FROM pg_stat_activity WHERE usename = %s", (other,))
    assert rows == [(other, hostile, OTHER_APPLICATION, True, None, "<insufficient privilege>",
                     None, None, None)], rows


def learn_locks(sess, server, hostile, other):
    """The locks every session holds: which relations another session uses."""
    pid = sess.value("SELECT pid FROM pg_stat_activity WHERE usename = %s", (other,))
    locked = {r for (r,) in sess.rows("SELECT relation::regclass::text FROM pg_locks WHERE pid = %s "
                                      "AND locktype = 'relation'", (pid,))}
    assert "docs" in locked, locked


def learn_database_counters(sess, server, hostile, other):
    """The database's own counters: commits, rows returned, sessions."""
    row = sess.rows("SELECT numbackends, xact_commit, tup_returned FROM pg_stat_database "
                    "WHERE datname = current_database()")[0]
    assert row[0] >= 2 and row[1] > 0 and row[2] > 0, row


def learn_server_counters(sess, server, hostile, other):
    """The server's own counters (background writer, WAL, SLRU, archiver and,
    from 16, I/O by backend type)."""
    views = ["pg_stat_bgwriter", "pg_stat_wal", "pg_stat_slru", "pg_stat_archiver"]
    if PG_MAJOR >= 16:
        views.append("pg_stat_io")
    assert {v: bool(sess.rows(f"SELECT * FROM {v}")) for v in views} == {v: True for v in views}


LEARNABLE = {
    "names of every relation, column and function": learn_names,
    "size and row estimate of every table": learn_sizes,
    "every role, and which are BI credentials": learn_roles,
    "every database and schema": learn_databases_and_schemas,
    "the policies' expressions": learn_policies,
    "the server's settings": learn_settings,
    "other sessions' login, database and application name": learn_activity,
    "the relations other sessions lock": learn_locks,
    "the database's counters": learn_database_counters,
    "the server's counters": learn_server_counters,
}


@pytest.mark.parametrize("item", LEARNABLE)
def test_what_a_credential_can_still_learn(sess, server, hostile, other_session, item):
    """What the catalogs and the server-wide statistics still tell a
    credential, as PostgreSQL shows them to every role. README lists each
    item; none carries another org's rows or values (test_catalog_names_no_org)."""
    LEARNABLE[item](sess, server, hostile, other_session)


# --------------------------------------------------------------------------
# what was not exposed, and side doors

# Each granted to PUBLIC by a careless DBA (the `granted_to_public` fixture), so
# PostgreSQL would let any role read it: only bi_access's session guard refuses.
UNEXPOSED = {
    "table in a schema that is not exposed": "SELECT * FROM internal.payroll",
    "hidden table": "SELECT * FROM app_secrets",
    "hidden table in a CTE": "WITH s AS (SELECT * FROM app_secrets) SELECT * FROM s",
    "hidden table in a subquery": "SELECT (SELECT string_agg(token, ',') FROM app_secrets)",
    "partition of an exposed table": "SELECT * FROM events_p1",
    "sequence": "SELECT last_value FROM docs_id_seq",
    "nextval": "SELECT nextval('docs_id_seq')",
}
PUBLIC_GRANTS = ("USAGE ON SCHEMA internal", "SELECT ON internal.payroll, app_secrets, events_p0, events_p1",
                 "SELECT, USAGE ON SEQUENCE docs_id_seq")


@pytest.fixture
def granted_to_public(pair, hostile):
    pair.primary.sql("; ".join(f"GRANT {g} TO PUBLIC" for g in PUBLIC_GRANTS), dbname=hostile)
    pair.wait_replayed()
    yield
    pair.primary.sql("; ".join(f"REVOKE {g} FROM PUBLIC" for g in PUBLIC_GRANTS), dbname=hostile)
    pair.wait_replayed()


@pytest.mark.parametrize("what", UNEXPOSED, ids=code("42501"))
def test_unexposed_relation_is_refused_even_when_granted_to_public(granted_to_public, pair, hostile, sess,
                                                                    expected, what):
    control = login(pair.primary.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        outcome = Session(control).run(UNEXPOSED[what])
        assert outcome.ok and outcome.rows, f"control: an ordinary role reads it: {outcome}"
    finally:
        control.close()
    outcome = sess.run(UNEXPOSED[what])
    expect(outcome, PERMISSION_DENIED)
    assert "bi_access credential" in outcome.message, f"not the session guard's refusal: {outcome}"
    assert not leaks(outcome.text(), every_org())
    assert_sees_exactly(sess, expected[ORG_A], f"after {what}")


def test_statistics_of_a_relation_granted_to_public_are_hidden(granted_to_public, pair, server, hostile, sess):
    """ANALYZE put other orgs' keys in the statistics of the partitions and the
    hidden table; a stray PUBLIC grant must not give them away through
    pg_stats any more than through a SELECT: the view is refused."""
    tables = ["app_secrets", "events_p0", "events_p1", "payroll"]
    su = Session.superuser(server, hostile)
    try:
        assert leaks(su.run("SELECT * FROM pg_stats WHERE tablename = ANY(%s)", (tables,)).text(),
                     foreign()), "control: the statistics do carry other orgs' keys"
    finally:
        su.close()
    outcome = sess.run("SELECT * FROM pg_stats WHERE tablename = ANY(%s)", (tables,))
    expect(outcome, PERMISSION_DENIED)
    assert not leaks(outcome.text(), every_org()), leaks(outcome.text(), every_org())


ORACLES = {
    "division by zero": "1 / ({col}::text = %(own)s)::int = 1",
    "cast error": "CASE WHEN {col}::text = %(own)s THEN true ELSE ({col}::text || ' leaked')::int > 0 END",
}


@pytest.mark.parametrize("planner", ["default", "enable_seqscan = off", "enable_indexscan = off, "
                                     "enable_bitmapscan = off"])
@pytest.mark.parametrize("oracle", ORACLES)
def test_error_oracle_never_sees_other_rows(sess, expected, oracle, planner):
    """A WHERE clause that raises an error on any other org's row (and names
    it in the message): row-level security runs first, so it never fires."""
    if planner != "default":
        for setting in planner.split(", "):
            sess.rows(f"SET {setting}")
    for table in [*TABLES, *LISTED]:
        col = org_column(table)
        out = sess.run(f"SELECT count(*) FROM {table} WHERE {ORACLES[oracle].format(col=col)}", {"own": ORG_A})
        expect(out, OK)
        assert out.rows == [(len(expected[ORG_A][table]),)], table


def test_locking_read_is_refused(sess, pair, server, hostile, expected):
    """The reader group holds SELECT only (bi_access's grant), so a locking
    read (all four strengths take one path: they need UPDATE) is refused on
    the primary (42501) and, in recovery, as a write on the replica (25006),
    even after leaving read-only."""
    reader = reader_group(pair.primary, hostile)
    privileges = pair.primary.sql(
        f"SELECT t, has_table_privilege('{reader}', t, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') "
        "FROM unnest(%s::text[]) t", (list(TABLES),), dbname=hostile)
    assert privileges == [(t, False) for t in TABLES], privileges
    read_write(sess)
    expect(sess.run("SELECT * FROM docs FOR KEY SHARE"),
           PERMISSION_DENIED if server.name == "primary" else READ_ONLY_TRANSACTION)
    assert_sees_exactly(sess, expected[ORG_A], "after a locking read")


@pytest.mark.parametrize("cte", ["DELETE FROM docs RETURNING *", "UPDATE docs SET body = 'x' RETURNING *",
                                 f"INSERT INTO docs (org_id, body) VALUES ({ORG_A}, 'x') RETURNING *"],
                         ids=code(PERMISSION_DENIED))
def test_writable_cte_is_refused(sess, server, expected, cte):
    """Refused as the statement is analysed, before a standby's read-only
    check (25006) and before its target's lock can stay (test_resources.py)."""
    read_write(sess)
    expect(sess.run(f"WITH w AS ({cte}) SELECT count(*) FROM w"), PERMISSION_DENIED)
    assert_sees_exactly(sess, expected[ORG_A], "after a writable CTE")


# Two statements, two paths: ALTER ROLE … SET and ALTER ROLE … PASSWORD.
OWN_ROLE_CHANGES = {
    "SET statement_timeout": "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
    "PASSWORD": "ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-tenant-0123456789'",
}


@pytest.mark.parametrize("change", OWN_ROLE_CHANGES, ids=code("42501"))
def test_credential_cannot_alter_its_own_role(hbi, pair, server, change):
    """Any role may ALTER ROLE itself (settings, password) unless something
    stops it. A credential that did could drop the statement_timeout and
    read-only default bi_access gave it, or pick its own password (which View
    Details would then not know). The session guard refuses (42501), also
    after the session left read-only, so PostgreSQL's read-only check (25006)
    is not what stops it; the role's settings and password stay as they were.
    A throwaway credential, deleted after."""
    throwaway = hbi.generate(ORG_A, wait_replica=server is pair.replica)
    role_row = ("SELECT a.rolpassword, array(SELECT s.setconfig::text FROM pg_db_role_setting s "
                "WHERE s.setrole = a.oid ORDER BY s.setdatabase) FROM pg_authid a WHERE a.rolname = %s")
    try:
        before = pair.primary.sql(role_row, (throwaway.role,))
        with session(throwaway, server) as s:
            read_write(s)
            outcome = s.run(OWN_ROLE_CHANGES[change])
            expect(outcome, PERMISSION_DENIED)
            assert "a bi_access credential is read-only: ALTER ROLE" in outcome.message, str(outcome)
        assert pair.primary.sql(role_row, (throwaway.role,)) == before
        with session(throwaway, server) as s:
            assert s.value("SELECT count(*) FROM docs") == len(pair.primary.sql(
                "SELECT 1 FROM docs WHERE org_id::text = %s", (ORG_A,), dbname=DB))
    finally:
        hbi.one("delete", throwaway.role)


# --------------------------------------------------------------------------
# column lists and shared tables (issue 28): no hidden column by any path

# Every path to a column outside the lists; each carries hidden values when an
# ordinary role takes it (the control below).
HIDDEN_PATHS = {
    "SELECT *": "SELECT * FROM users",
    "a hidden column": "SELECT password_hash FROM users",
    "a filter on a hidden column": f"SELECT email FROM users WHERE password_hash = 'pwhash-{ORG_B}-2'",
    "SELECT * of a shared table": "SELECT * FROM plans",
    "a shared table's hidden column": "SELECT internal_cost FROM plans",
    "the whole row": "SELECT u FROM users u",
    "row_to_json": "SELECT row_to_json(u) FROM users u",
    "to_jsonb minus one hidden key": "SELECT to_jsonb(u) - 'password_hash' FROM users u",
    "the whole row as text": "SELECT u::text FROM users u",
    "a field of the whole row": "SELECT (u).api_token FROM users u",
    "a CTE": "WITH t AS (SELECT * FROM users) SELECT email, api_token FROM t",
    "a subquery": "SELECT (SELECT string_agg(api_token, ',') FROM users)",
    "a lateral join with a shared table": "SELECT p.name, x.h FROM plans p, "
                                          "LATERAL (SELECT password_hash h FROM users WHERE plan_id = p.id) x",
    "a prepared statement": "PREPARE hashes AS SELECT password_hash FROM users; EXECUTE hashes",
    "a cursor": "DECLARE hashes CURSOR WITH HOLD FOR SELECT password_hash FROM users; FETCH ALL FROM hashes",
    "an invoker's SQL function": "SELECT * FROM public.user_tokens()",
    "an invoker's PL/pgSQL function": "SELECT * FROM public.user_hashes()",
    "a view over the table": "SELECT * FROM user_logins",
    "a view with its owner's rights": "SELECT * FROM reporting.user_directory",
}
# Paths whose rows tell a hidden value without carrying it: what an ordinary
# role's filter finds.
ORACLES_OF_HIDDEN_VALUES = {"a filter on a hidden column": [(f"user2@org{ORG_B}.example",)]}
COPY_PATHS = {
    "COPY the table": "COPY users TO STDOUT",
    "COPY a hidden column": "COPY users (email, api_token) TO STDOUT",
    "COPY a shared table": "COPY plans TO STDOUT",
    "COPY a query": "COPY (SELECT password_hash FROM users) TO STDOUT",
}
LISTED_COLUMNS_REFUSAL = "a bi_access credential reads only its listed columns"
UNEXPOSED_REFUSAL = "a bi_access credential reads only exposed tables"


def hidden_path_refusal(path: str) -> str:
    """The guard's message: a view that runs with its owner's rights is no
    exposed relation (on 14 every view is one); every other path reaches a
    column outside a list."""
    owners_view = path == "a view with its owner's rights" or (path == "a view over the table" and PG_MAJOR < 15)
    return UNEXPOSED_REFUSAL if owners_view else LISTED_COLUMNS_REFUSAL


# The DBA's careless grant: PostgreSQL alone would now let any role read every
# column of both tables (and, on 15 and later, the exposed view; on 14 the
# schema grants that view to PUBLIC already).
CARELESS = "users, plans" + (", user_logins" if PG_MAJOR >= 15 else "")


@pytest.fixture
def careless_grant(pair, hostile):
    pair.primary.sql(f"GRANT SELECT ON {CARELESS} TO PUBLIC", dbname=hostile)
    pair.wait_replayed()
    yield
    pair.primary.sql(f"REVOKE SELECT ON {CARELESS} FROM PUBLIC", dbname=hostile)
    pair.wait_replayed()


def copy_out(conn, statement: str) -> tuple[str, str]:
    """(SQLSTATE or OK, what reached the client) of a COPY … TO STDOUT."""
    buf = io.StringIO()
    try:
        with conn.cursor() as cur:
            cur.copy_expert(statement, buf)
    except psycopg2.Error as e:
        return e.pgcode, buf.getvalue() + (e.pgerror or "")
    return OK, buf.getvalue()


@pytest.mark.parametrize("path", HIDDEN_PATHS, ids=code(PERMISSION_DENIED))
def test_no_hidden_column_is_readable_by_any_path(careless_grant, pair, server, hostile, sess, expected, hidden,
                                                  path):
    """Control: with the careless grant, an ordinary role (under the pass-through
    policy, as the application is) reads hidden values by the path. The
    credential is refused (42501) by the session guard whatever is granted, no
    hidden value reaches it, and it reads its own rows as before."""
    control = login(server.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        outcome = Session(control).run(HIDDEN_PATHS[path])
        assert outcome.ok, f"control: {outcome}"
        if path in ORACLES_OF_HIDDEN_VALUES:  # a filter tells a value without showing it
            assert outcome.rows == ORACLES_OF_HIDDEN_VALUES[path], f"control: {outcome.rows}"
        else:
            assert leaks(outcome.text(), hidden), f"control: an ordinary role reads hidden values: {outcome}"
    finally:
        control.close()
    outcome = sess.run(HIDDEN_PATHS[path])
    expect(outcome, PERMISSION_DENIED)
    assert hidden_path_refusal(path) in outcome.message, str(outcome)
    assert not leaks(outcome.text(), hidden), leaks(outcome.text(), hidden)
    assert_sees_exactly(sess, expected[ORG_A], f"after {path}")


@pytest.mark.parametrize("path", COPY_PATHS, ids=code(PERMISSION_DENIED))
def test_no_hidden_column_is_copied(careless_grant, server, hostile, sess, expected, hidden, path):
    control = login(server.tcp_args(hostile, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        state, text = copy_out(control, COPY_PATHS[path])
        assert state == OK and leaks(text, hidden), f"control: an ordinary role copies hidden values: {state}"
    finally:
        control.close()
    state, text = copy_out(sess.conn, COPY_PATHS[path])
    assert state == PERMISSION_DENIED, (state, text)
    assert LISTED_COLUMNS_REFUSAL in text, text
    assert not leaks(text, hidden), leaks(text, hidden)
    assert_sees_exactly(sess, expected[ORG_A], f"after {path}")


@pytest.fixture(scope="module")
def writer(hbi, pair):
    """A read_write credential of org A (its custom schema is its own)."""
    hbi.call("set_target", "primary", "127.0.0.1", pair.primary.port, "prefer", None)
    return hbi.generate(ORG_A, org_name=NAMES[ORG_A], scope="read_write", target="primary")


# What a read_write credential may make in its custom schema, then read.
OWN_READS = {
    "a materialized view": "CREATE MATERIALIZED VIEW {s}.tokens AS SELECT api_token FROM users",
    "CREATE TABLE AS": "CREATE TABLE {s}.copied AS SELECT * FROM users",
    "INSERT … SELECT": "INSERT INTO {s}.stash SELECT password_hash FROM users",
    "its own view": "SELECT * FROM {s}.everything",
    "its own view's hidden column": "SELECT password_hash FROM {s}.everything",
}


def test_a_read_write_credentials_own_objects_read_no_hidden_column(careless_grant, writer, pair, hostile, hidden):
    """In its custom schema a read_write credential may create a table and a
    view over users (which reads nothing when created; a function it may not
    create at all); every read through the view, and every copy of a hidden
    column into its schema, is refused (42501), on the primary and, for the
    view, on the replica, by the session guard whatever is granted (the
    careless grant is in place). Its schema holds no hidden value afterwards,
    by the superuser's count."""
    schema = writer.details["custom_schema"]
    made = [f"CREATE TABLE {schema}.stash (v text)",
            f"CREATE VIEW {schema}.everything AS SELECT * FROM users"]
    try:
        with session(writer, pair.primary) as s:
            created = [s.run(sql).state for sql in made]
            refused = {what: s.run(sql.format(s=schema)) for what, sql in OWN_READS.items()}
        pair.wait_replayed()
        with session(writer, pair.replica) as s:
            on_replica = {what: s.run(OWN_READS[what].format(s=schema))
                          for what in ("its own view", "its own view's hidden column")}
        kept = pair.primary.sql(
            "SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = %s::regnamespace ORDER BY 1",
            (schema,), dbname=hostile)
        stash = pair.primary.sql(f"SELECT count(*) FROM {schema}.stash", dbname=hostile)
    finally:
        pair.primary.sql(f"DROP VIEW IF EXISTS {schema}.everything; DROP TABLE IF EXISTS {schema}.stash",
                         dbname=hostile)
        pair.wait_replayed()
    assert created == [OK, OK]
    for where, outcomes in (("primary", refused), ("replica", on_replica)):
        assert {w: o.state for w, o in outcomes.items()} == {w: PERMISSION_DENIED for w in outcomes}, where
        for what, outcome in outcomes.items():
            assert LISTED_COLUMNS_REFUSAL in outcome.message, (where, str(outcome))
            assert not leaks(outcome.text(), hidden), (where, what)
    assert "copied" not in [r for (r,) in kept] and "tokens" not in [r for (r,) in kept], kept
    assert stash == [(0,)]
