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
statistics, a hidden table and a schema that is not exposed. Where a test needs
a relation that PostgreSQL itself would let the credential read (a PUBLIC grant
by a careless DBA) or a function it may call, the test creates it, with a
control that an ordinary role does read or call it."""

from __future__ import annotations

import io

import psycopg2
import pytest

from bi import ADMIN_ROLE, PLAIN_PASSWORD, PLAIN_ROLE, login
from cluster import MEMBERSHIPS_ALLOW_SET_ROLE, PG_MAJOR, PRELOADED, SUPERUSER
from libpq import LoginRefused, Connection
from probe import (CANNOT_COERCE, OK, PERMISSION_DENIED, READ_ONLY_TRANSACTION, Session, bi_for, leaks,
                   reader_group, session, tenant_database)

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

CREATE TABLE events (id bigint NOT NULL, org_id bigint NOT NULL, kind text NOT NULL) PARTITION BY HASH (org_id);
CREATE TABLE events_p0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_p1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO events
  SELECT row_number() OVER (), o, 'event of ' || o FROM (VALUES ({ORG_A}, 4), ({ORG_B}, 6), ({ORG_C}, 1)) v(o, n),
         generate_series(1, n) g;

-- Carries the org column but is hidden: no sync may expose it.
CREATE TABLE app_secrets (id serial PRIMARY KEY, org_id bigint NOT NULL, token text NOT NULL);
INSERT INTO app_secrets (org_id, token) VALUES ({ORG_A}, 'token of {ORG_A}'), ({ORG_B}, 'token of {ORG_B}');

-- A schema that is not exposed.
CREATE SCHEMA internal;
CREATE TABLE internal.payroll (org_id bigint NOT NULL, salary integer NOT NULL);
INSERT INTO internal.payroll VALUES ({ORG_A}, 1), ({ORG_B}, 2);
"""

EXPOSE = """
SELECT bi_access.hide_table('app_secrets');
SELECT bi_access.expose_table('orgs', 'id');
SELECT bi_access.expose_table('tickets', 'tenant');
-- docs, metrics and events: found by the sync (bi_access.auto_expose).
SELECT * FROM bi_access.sync_tables();
ANALYZE;
"""

# Exposed table -> its org column.
TABLES = {"orgs": "id", "docs": "org_id", "tickets": "tenant", "metrics": "org_id", "events": "org_id"}

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
}
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
                     "bi_access.max_prepared_statements", "bi_access.session_memory"}
INVALID_PARAMETER_NAME = "42602"
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
    tenant_database(pair, DB, SCHEMA, EXPOSE + f"GRANT SELECT ON docs TO {PLAIN_ROLE};")
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
    """org -> table -> that org's full rows, read by the superuser."""
    out = {}
    for org in (ORG_A, ORG_B, ORG_C, None):
        out[org] = {}
        for table, column in TABLES.items():
            where = "" if org is None else f"WHERE {column}::text = %s"
            out[org][table] = pair.primary.sql(f"SELECT * FROM {table} {where} ORDER BY 1",
                                               None if org is None else (org,), dbname=hostile)
    return out


def foreign(org: str = ORG_A) -> dict[str, str]:
    """What a session of `org` must never see: the other orgs' keys and names
    (every row of every table carries its key)."""
    return {**{k: f"org key of {k}" for k in NAMES if k != org},
            **{n: f"org name of {k}" for k, n in NAMES.items() if k != org}}


def every_org() -> dict[str, str]:
    return {**{k: "org key" for k in NAMES}, **{n: "org name" for n in NAMES.values()}}


def seen(s: Session) -> dict:
    return {t: s.rows(f"SELECT * FROM {t} ORDER BY 1") for t in TABLES}


def assert_sees_exactly(s: Session, expected_rows: dict, what: str = "") -> None:
    got = seen(s)
    for table in TABLES:
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
    assert all(expected[None][t] != expected[ORG_A][t] for t in TABLES), "orgs must share every table"
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
    query = "SELECT * FROM {t} ORDER BY 1"
    if how.startswith("set_config"):
        setter = f"SELECT set_config('{name}', '{value}', {str(how.endswith('local')).lower()})"
    else:
        setter = f"{how} {name} = '{value}'"
    # One transaction, so SET LOCAL / is_local stay in force for the reads.
    sess.rows("BEGIN")
    try:
        expect(sess.run(setter), OK)
        assert sess.value(f"SELECT current_setting('{name}')") == value
        for table in TABLES:
            assert sess.rows(query.format(t=table)) == expected[ORG_A][table], f"{how} {name}: {table}"
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
    of management calls, which a credential cannot make."""
    if not PRELOADED:
        return UNDEFINED_SETTING_OUTCOME
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

def test_set_role_to_the_reader_group_sees_no_row(sess, hostile, expected, server):
    reader = reader_group(server, hostile)
    if not MEMBERSHIPS_ALLOW_SET_ROLE:
        # 16 and later: the membership is WITH SET FALSE.
        expect(sess.run(f"SET ROLE {reader}"), PERMISSION_DENIED)
        assert sess.value("SELECT current_user") == sess.value("SELECT session_user")
        assert_sees_exactly(sess, expected[ORG_A], "after SET ROLE to the reader group")
        return
    expect(sess.run(f"SET ROLE {reader}"), OK)
    assert sess.value("SELECT current_user") == reader
    for table in TABLES:
        assert sess.rows(f"SELECT * FROM {table}") == [], f"reader group sees rows of {table}"
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
    PUBLIC, that hands the org lookups to anyone: the one way a credential
    can observe what they answer for its session."""
    pair.primary.sql("CREATE FUNCTION public.org_of_caller() RETURNS text[] LANGUAGE sql SECURITY DEFINER "
                     "AS $$SELECT ARRAY[bi_access.current_org(), bi_access.current_org_bigint()::text, "
                     "bi_access.current_org_uuid()::text]$$", dbname=hostile)
    pair.wait_replayed()
    yield "public.org_of_caller()"
    pair.primary.sql("DROP FUNCTION public.org_of_caller()", dbname=hostile)
    pair.wait_replayed()


def test_current_org_gives_only_the_own_key(sess, server, hostile, org_of_caller):
    """Called directly, the org lookups are refused (42501: no USAGE on
    bi_access's schema). Through the DBA's wrapper they answer the outer
    user's org: the credential's own key (its bigint form; NULL as a uuid),
    also after it SETs the application's placeholders; as the reader group,
    after SET ROLE, nothing."""
    observed = {fn: sess.run(f"SELECT bi_access.{fn}()::text").state for fn in ORG_LOOKUPS}
    assert observed == {fn: PERMISSION_DENIED for fn in ORG_LOOKUPS}, observed
    own = [ORG_A, ORG_A, None]
    assert sess.value(f"SELECT {org_of_caller}") == own
    for name, value in PLACEHOLDERS.items():
        sess.rows(f"SET {name} = '{value}'")
    assert sess.value(f"SELECT {org_of_caller}") == own
    if MEMBERSHIPS_ALLOW_SET_ROLE:
        sess.rows(f"SET ROLE {reader_group(server, hostile)}")
        assert sess.value(f"SELECT {org_of_caller}") == [None, None, None]
        sess.rows("RESET ROLE")
    else:  # 16 and later: the membership is WITH SET FALSE
        expect(sess.run(f"SET ROLE {reader_group(server, hostile)}"), PERMISSION_DENIED)
    assert sess.value(f"SELECT {org_of_caller}") == own


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
        for _ in range(6):  # past the five custom plans of `auto`
            assert a.rows("EXECUTE p") == own["docs"]
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

EXPLAINED = {
    "docs": "SELECT * FROM docs",
    "metrics filtered": f"SELECT * FROM metrics WHERE org_id = {ORG_A} AND value >= 0",
    "metrics of another org": f"SELECT * FROM metrics WHERE org_id + 0 <> {ORG_A}",
    "events grouped": "SELECT org_id, count(*) FROM events GROUP BY org_id",
    "join": "SELECT o.name, count(*) FROM orgs o JOIN docs d ON d.org_id = o.id GROUP BY o.name",
    "tickets sorted": "SELECT * FROM tickets ORDER BY subject",
}


@pytest.mark.parametrize("options", ["ANALYZE, VERBOSE, BUFFERS, SETTINGS",
                                     "ANALYZE, VERBOSE, FORMAT JSON", "VERBOSE, COSTS, FORMAT YAML"])
@pytest.mark.parametrize("query", EXPLAINED)
def test_explain_shows_no_other_org(sess, query, options):
    outcome = sess.run(f"EXPLAIN ({options}) {EXPLAINED[query]}")
    expect(outcome, OK)
    text = outcome.text()
    # The planner put the credential's own key where the policies compare.
    assert ORG_A in text, "not the plan of an org-filtered query"
    assert not leaks(text, foreign()), leaks(text, foreign())


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


def test_pg_stat_statements_is_unreadable_in_a_database_without_bi_access(cred, server):
    """pg_stat_statements (track = all) lives in database postgres, which
    PUBLIC may connect to (this cluster keeps the default grant). There, with
    no bi_access, the session guard lets the credential read only the system
    catalogs: the view (in schema public) is refused."""
    marker = f"DO $$BEGIN PERFORM '{NAMES[ORG_B]} {ORG_B}'; END$$"
    server.sql(marker)
    assert any(NAMES[ORG_B] in q for (q,) in server.sql("SELECT query FROM pg_stat_statements")), "control"
    conn = login({**cred.login_args(server), "dbname": "postgres"})
    try:
        outcome = Session(conn).run("SELECT * FROM pg_stat_statements")
        expect(outcome, PERMISSION_DENIED)
        assert not leaks(outcome.text(), every_org())
    finally:
        conn.close()


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
    for table, col in TABLES.items():
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
