"""Exposure and syncing end to end: what the application sees before and after
(row for row), what a credential sees where the application has row-level
security of its own, the plans a credential's queries get, syncing under the
application's locks (one table at a time), the `syncing` status, and views
(check() is test_check.py).

Each part has a database of its own:
- `expo_app`: the application's tables, some with RLS policies of its own,
  read and written by `app_writer`, a LOGIN role that owns nothing;
- `expo_plan`: 50k rows over 100 orgs in tables whose org column is integer,
  bigint, text, citext and uuid, each with an index on it;
- `expo_sync`: 50 small tables for the sync procedure;
- `expo_check` (conftest.py, shared with test_check.py): an exposed
  security_invoker view, and a view that is not one."""

from __future__ import annotations

import io
import json
import time

import psycopg2
import pytest

from cluster import PG_MAJOR, VIEWS_CAN_BE_SECURITY_INVOKER, wait_until
from probe import (LOCK_NOT_AVAILABLE, OK, PERMISSION_DENIED, Background, Session, bi_for, create_database,
                   ensure_login_role, session, table_locked)
from bi import login

APP_ROLE, APP_PASSWORD = "app_writer", "app-writer-password-not-a-bi-secret"


def policies(server, dbname: str, table: str) -> list[tuple]:
    return server.sql("SELECT polname::text, polpermissive, polcmd::text, polroles::regrole[]::text, "
                      "pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) "
                      "FROM pg_policy WHERE polrelid = %s::regclass ORDER BY 1", (table,), dbname=dbname)


def table_state(server, dbname: str, table: str) -> dict:
    rls, force, acl = server.sql("SELECT relrowsecurity, relforcerowsecurity, relacl::text FROM pg_class "
                                 "WHERE oid = %s::regclass", (table,), dbname=dbname)[0]
    return {"rls": rls, "force": force, "acl": acl, "policies": policies(server, dbname, table)}


# ==========================================================================
# The application, before exposure, after sync, after hide

APP_DB = "expo_app"
APP_SCHEMA = f"""
CREATE TABLE projects (id serial PRIMARY KEY, org_id integer NOT NULL, name text NOT NULL);
INSERT INTO projects (org_id, name)
  SELECT o, 'project ' || o || '.' || g FROM (VALUES (1, 3), (2, 2), (3, 1)) v(o, n), generate_series(1, n) g;

-- The application's own RLS: permissive policies TO PUBLIC, one of them keyed
-- on a setting the application sets per request.
CREATE TABLE tickets (id serial PRIMARY KEY, org_id bigint NOT NULL, body text NOT NULL,
                      archived boolean NOT NULL DEFAULT false);
INSERT INTO tickets (org_id, body, archived)
  SELECT o, 'ticket ' || o || '.' || g, g <= a
  FROM (VALUES (1, 4, 2), (2, 3, 1), (3, 2, 0)) v(o, n, a), generate_series(1, n) g;
ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_visible ON tickets FOR ALL TO PUBLIC USING (NOT archived) WITH CHECK (true);
CREATE POLICY app_tenant ON tickets FOR SELECT TO PUBLIC
  USING (org_id = nullif(current_setting('app.org', true), '')::bigint);

-- RLS with a policy for the application role only; org column by another name.
CREATE TABLE notes (id serial PRIMARY KEY, tenant_id text NOT NULL, body text NOT NULL);
INSERT INTO notes (tenant_id, body) VALUES ('1', 'note 1.1'), ('1', 'private note 1.2'),
  ('2', 'note 2.1'), ('2', 'note 2.2'), ('2', 'private note 2.3'), ('3', 'note 3.1');
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY writer_only ON notes FOR ALL TO {APP_ROLE} USING (body NOT LIKE 'private%');

CREATE TABLE events (id integer NOT NULL, org_id integer NOT NULL, kind text NOT NULL) PARTITION BY LIST (org_id);
CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1);
CREATE TABLE events_rest PARTITION OF events DEFAULT;
INSERT INTO events SELECT row_number() OVER (), o, 'event ' || o FROM (VALUES (1, 2), (2, 5), (3, 3)) v(o, n),
  generate_series(1, n) g;

-- RLS off, but a RESTRICTIVE policy already defined (a rollout not finished):
-- its org column has its own name, so only its own test exposes it.
CREATE TABLE dormant (id serial PRIMARY KEY, tenant_key integer NOT NULL, v text NOT NULL);
INSERT INTO dormant (tenant_key, v) SELECT g % 3 + 1, 'dormant ' || g FROM generate_series(1, 9) g;
CREATE POLICY app_only_org_1 ON dormant AS RESTRICTIVE FOR ALL TO PUBLIC USING (tenant_key = 1);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};
"""
APP_TABLES = {"projects": "org_id", "tickets": "org_id", "notes": "tenant_id", "events": "org_id"}

# Writes the application makes at each stage, in a transaction rolled back,
# so every stage sees the same data. Serial ids are left out of what is
# compared: rolled-back inserts still use up sequence values.
APP_WRITES = [
    "INSERT INTO projects (org_id, name) VALUES (1, 'app write') RETURNING org_id, name",
    "UPDATE projects SET name = name || '!' WHERE org_id = 2 RETURNING org_id, name",
    "DELETE FROM projects WHERE org_id = 3 RETURNING *",
    "INSERT INTO tickets (org_id, body) VALUES (2, 'app write') RETURNING org_id, body, archived",
    "UPDATE tickets SET body = body || '!' RETURNING org_id, body, archived",
    "DELETE FROM tickets WHERE org_id = 3 RETURNING *",
    "INSERT INTO notes (tenant_id, body) VALUES ('1', 'app write') RETURNING tenant_id, body",
    "UPDATE notes SET body = body || '!' RETURNING tenant_id, body",
    "DELETE FROM notes WHERE tenant_id = '2' RETURNING *",
    "INSERT INTO events VALUES (100, 3, 'app write') RETURNING *",
    "UPDATE events SET kind = kind || '!' WHERE org_id = 2 RETURNING *",
    "DELETE FROM events WHERE org_id = 1 RETURNING *",
    "INSERT INTO projects (org_id, name) VALUES (2, 'upsert') ON CONFLICT (id) DO UPDATE SET name = 'x' "
    "RETURNING org_id, name",
    "SELECT count(*) FROM (SELECT * FROM tickets FOR UPDATE) t",
]


def app_session(pair, server=None) -> Session:
    server = server or pair.primary
    return Session(login(server.tcp_args(APP_DB, APP_ROLE, APP_PASSWORD)))


def app_view(pair) -> dict:
    """Everything the application role reads, as is and with app.org set."""
    s = app_session(pair)
    try:
        out = {}
        for mode in ("plain", "app.org=2"):
            if mode != "plain":
                s.rows("SET app.org = '2'")
            for table in APP_TABLES:
                out[(mode, table)] = s.rows(f"SELECT * FROM {table} ORDER BY id")
        return out
    finally:
        s.close()


def app_writes(pair) -> list:
    """Each write's outcome and rows, in one transaction that is rolled back."""
    s = app_session(pair)
    try:
        s.rows("BEGIN")
        outcomes = [(w, s.run(w)) for w in APP_WRITES]
        s.run("ROLLBACK")
        return [(w, o.state, sorted(o.rows)) for w, o in outcomes]
    finally:
        s.close()


BULK_LOADS = {
    "projects": ("COPY projects (org_id, name) FROM STDIN", "1\tbulk\n"),
    "tickets": ("COPY tickets (org_id, body) FROM STDIN", "1\tbulk\n"),
    "notes": ("COPY notes (tenant_id, body) FROM STDIN", "1\tbulk\n"),
    "events": ("COPY events (id, org_id, kind) FROM STDIN", "77\t1\tbulk\n"),
}


def app_bulk_paths(pair) -> dict:
    """What else the application (or its backup job) does as a non-owner:
    COPY FROM (a bulk load, rolled back) and reading with row_security = off
    (what pg_dump does by default). Outcome per (path, table)."""
    s = app_session(pair)
    try:
        out = {}
        for table, (copy, data) in BULK_LOADS.items():
            s.rows("BEGIN")
            try:
                with s.conn.cursor() as cur:
                    cur.copy_expert(copy, io.StringIO(data))
                out[("COPY FROM", table)] = OK
            except psycopg2.Error as e:
                out[("COPY FROM", table)] = e.pgcode
            s.run("ROLLBACK")
        s.rows("SET row_security = off")
        for table in APP_TABLES:
            out[("row_security=off", table)] = s.run(f"SELECT count(*) FROM {table}").state
        return out
    finally:
        s.close()


@pytest.fixture(scope="module")
def app_db(pair, bi):
    ensure_login_role(pair, APP_ROLE, APP_PASSWORD)
    create_database(pair, APP_DB, APP_SCHEMA)
    pair.primary.sql(f"GRANT CONNECT ON DATABASE {APP_DB} TO {APP_ROLE}")
    return APP_DB


@pytest.fixture(scope="module")
def app_bi(request, pair, app_db, secrets):
    return bi_for(request, pair, app_db, secrets)


@pytest.fixture(scope="module")
def timeline(pair, app_db, app_bi) -> dict:
    """The application's view at each stage: before exposure, after sync,
    after a committed write, after hide_table; plus the credentials' views."""
    t = {"state": {}, "view": {}, "writes": {}, "bulk": {}, "cred": {}}
    creds = {org: app_bi.generate(org, wait_replica=False) for org in ("1", "2")}

    def record(stage):
        t["view"][stage] = app_view(pair)
        t["writes"][stage] = app_writes(pair)
        t["bulk"][stage] = app_bulk_paths(pair)
        t["state"][stage] = {tb: table_state(pair.primary, app_db, tb) for tb in APP_TABLES}

    record("before")
    pair.primary.sql("SELECT bi_access.expose_table('notes', 'tenant_id')", dbname=app_db)
    t["synced"] = pair.primary.sql("SELECT tbl::text, action FROM bi_access.sync_tables()", dbname=app_db)
    t["unsynced"] = pair.primary.sql("SELECT * FROM bi_access.unsynced_tables()", dbname=app_db)
    record("synced")
    t["owner"] = {tb: owner_rows(pair, tb) for tb in APP_TABLES}
    for org, cred in creds.items():
        with session(cred, pair.primary) as s:
            t["cred"][org] = {tb: s.rows(f"SELECT * FROM {tb} ORDER BY id") for tb in APP_TABLES}
            s.rows(f"SET app.org = '{3 - int(org)}'")
            s.rows("SET myapp.tenant = 'all'")
            t["cred"][(org, "app.org set")] = {tb: s.rows(f"SELECT * FROM {tb} ORDER BY id") for tb in APP_TABLES}

    # The application keeps writing after the sync, for real this time.
    s = app_session(pair)
    try:
        t["committed"] = [s.run("INSERT INTO projects (org_id, name) VALUES (1, 'after sync') RETURNING id").state,
                          s.run("INSERT INTO tickets (org_id, body) VALUES (1, 'after sync') RETURNING id").state,
                          s.run("UPDATE notes SET body = 'edited after sync' WHERE id = 1").state]
    finally:
        s.close()
    record("written")
    with session(creds["1"], pair.primary) as s:
        t["cred_after_write"] = {tb: s.rows(f"SELECT * FROM {tb} ORDER BY id") for tb in ("projects", "tickets")}

    for table in APP_TABLES:
        pair.primary.sql(f"SELECT bi_access.hide_table('{table}')", dbname=app_db)
    record("hidden")
    with session(creds["1"], pair.primary) as s:
        t["cred_after_hide"] = {tb: s.run(f"SELECT * FROM {tb}").state for tb in APP_TABLES}
    return t


def owner_rows(pair, table: str) -> list:
    return pair.primary.sql(f"SELECT * FROM {table} ORDER BY id", dbname=APP_DB)


def test_sync_exposes_the_application_tables(timeline):
    assert {tbl for tbl, _ in timeline["synced"]} >= {"projects", "tickets", "events"}
    assert timeline["unsynced"] == []


@pytest.mark.parametrize("org", ["1", "2"])
def test_credential_sees_only_its_org_despite_the_application_policies(timeline, org):
    """tickets has the application's permissive policies TO PUBLIC (all
    unarchived rows; app.org's rows): the credential sees its org's rows,
    archived ones included, and nothing more, even after SET app.org."""
    for table in APP_TABLES:
        want = [r for r in timeline["owner"][table] if str(r[1]) == org]
        assert want and timeline["cred"][org][table] == want, f"{table} for org {org}"
        assert timeline["cred"][(org, "app.org set")][table] == want, \
            f"{table} for org {org} after SET app.org / myapp.tenant"


def test_tickets_policies_of_the_application_are_kept_and_no_passthrough_added(timeline):
    before = timeline["state"]["before"]["tickets"]["policies"]
    synced = timeline["state"]["synced"]["tickets"]["policies"]
    assert [p for p in synced if not p[0].startswith("bi_access_")] == before
    assert {p[0] for p in synced if p[0].startswith("bi_access_")} == {"bi_access_read", "bi_access_guard"}


@pytest.mark.parametrize("stage", ["synced"])
def test_application_sees_the_same_rows_after_sync(timeline, stage):
    """Row for row, for every exposed table, as is and with app.org set."""
    before, after = timeline["view"]["before"], timeline["view"][stage]
    for key in before:
        assert after[key] == before[key], f"{key}: the application role sees other rows after sync"


def test_application_writes_work_the_same_after_sync(timeline):
    before, after = timeline["writes"]["before"], timeline["writes"]["synced"]
    assert all(state == OK for _, state, _ in before), before
    for (w, s0, r0), (_, s1, r1) in zip(before, after):
        assert (s1, r1) == (s0, r0), f"{w}: {s0} {r0} before, {s1} {r1} after sync"


def test_committed_writes_after_sync_reach_the_credential(timeline, pair):
    assert timeline["committed"] == [OK, OK, OK]
    got = timeline["cred_after_write"]
    assert any(r[2] == "after sync" for r in got["projects"]) and any(r[2] == "after sync" for r in got["tickets"])
    assert {r[1] for r in got["projects"]} == {1} and {r[1] for r in got["tickets"]} == {1}


def test_application_sees_the_same_rows_after_hide(timeline):
    written, hidden = timeline["view"]["written"], timeline["view"]["hidden"]
    for key in written:
        assert hidden[key] == written[key], f"{key}: the application role sees other rows after hide_table"
    assert timeline["writes"]["hidden"] == timeline["writes"]["written"]


def test_hide_restores_each_table_as_it_was(timeline):
    """RLS off again where bi_access turned it on, the application's own
    policies untouched, the ACL as before."""
    for table in APP_TABLES:
        before, hidden = timeline["state"]["before"][table], timeline["state"]["hidden"][table]
        assert hidden == before, f"{table}: {before} before exposure, {hidden} after hide_table"
    assert {s: v for s, v in timeline["cred_after_hide"].items()} == {t: PERMISSION_DENIED for t in APP_TABLES}


# PostgreSQL refuses COPY FROM (0A000) and reading with row_security = off
# (pg_dump's default; 42501) to a non-owner role on any table whose RLS
# applies to it, whatever the policies say. That is the one visible change
# exposing brings to such a role where bi_access turned RLS on, and README
# documents it (INSERT, or COPY as the owner; pg_dump --enable-row-security).
KNOWN_RLS_REFUSALS = {"COPY FROM": "0A000", "row_security=off": "42501"}


@pytest.mark.parametrize("path", list(KNOWN_RLS_REFUSALS))
def test_application_bulk_paths_change_only_as_documented(timeline, path):
    before, after = timeline["bulk"]["before"], timeline["bulk"]["synced"]
    keys = [k for k in before if k[0] == path]
    assert all(before[k] == OK for k in keys if k[1] in ("projects", "events")), before
    changed = {k[1]: (before[k], after[k]) for k in keys if before[k] != after[k]}
    # Only tables where bi_access turned RLS on change, and only to the
    # documented refusal.
    assert changed, f"{path}: expected the documented refusal on RLS tables"
    assert all(now == KNOWN_RLS_REFUSALS[path] for _, now in changed.values()), changed


def test_dormant_application_policy_stays_dormant(pair, app_db, timeline):
    """A table with RLS off but an application policy already defined:
    turning RLS on for BI would switch that policy on for everyone else, so
    bi_access refuses to expose it (55000) and leaves it exactly as it was."""
    before = app_session(pair).rows("SELECT * FROM dormant ORDER BY id")
    assert len(before) == 9
    with pytest.raises(psycopg2.Error) as refused:
        pair.primary.sql("SELECT bi_access.expose_table('dormant', 'tenant_key')", dbname=app_db)
    assert refused.value.pgcode == "55000", refused.value.pgerror
    assert "dormant" in refused.value.pgerror
    s = app_session(pair)
    try:
        after = s.rows("SELECT * FROM dormant ORDER BY id")
        updated = s.run("UPDATE dormant SET v = v WHERE tenant_key = 2")
    finally:
        s.close()
    assert after == before, f"the application role saw {len(before)} rows, now {len(after)}"
    assert updated.ok


# ==========================================================================
# Plans: the org column's index, compared with the org key as a constant

PLAN_DB = "expo_plan"
ORG_COUNT, ROWS = 100, 50_000
PLAN_TYPES = {"big_int": "integer", "big_bigint": "bigint", "big_text": "text", "big_citext": "citext",
              "big_uuid": "uuid"}


def plan_schema(has_citext: bool) -> str:
    parts = ["CREATE EXTENSION IF NOT EXISTS citext;" if has_citext else ""]
    for table, typ in PLAN_TYPES.items():
        if typ == "citext" and not has_citext:
            continue
        value = "md5('org' || (g % 100))::uuid" if typ == "uuid" else f"(g % {ORG_COUNT})::{typ}"
        parts.append(f"""
CREATE TABLE {table} (id serial PRIMARY KEY, org_id {typ} NOT NULL, payload text NOT NULL);
INSERT INTO {table} (org_id, payload) SELECT {value}, md5(g::text) FROM generate_series(1, {ROWS}) g;
CREATE INDEX {table}_org_idx ON {table} (org_id);""")
    parts.append("SELECT * FROM bi_access.sync_tables(); ANALYZE;")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def plan_db(pair, bi):
    has_citext = bool(pair.primary.sql("SELECT 1 FROM pg_available_extensions WHERE name = 'citext'"))
    create_database(pair, PLAN_DB)
    pair.primary.sql(plan_schema(has_citext), dbname=PLAN_DB)
    # The tests below read the credentials' own plans: plain EXPLAIN, which
    # a credential may run only where this is on (EXPLAIN ANALYZE never).
    pair.primary.sql(f"ALTER DATABASE {PLAN_DB} SET bi_access.allow_explain = on")
    pair.wait_replayed()
    return [t for t in PLAN_TYPES if has_citext or PLAN_TYPES[t] != "citext"]


@pytest.fixture(scope="module")
def plan_creds(request, pair, plan_db, secrets):
    b = bi_for(request, pair, PLAN_DB, secrets)
    uuid42 = pair.primary.value("SELECT md5('org42')::uuid::text")
    return {"numeric": b.generate("42"), "uuid": b.generate(uuid42)}


def cred_for(plan_creds, table):
    return plan_creds["uuid" if table == "big_uuid" else "numeric"]


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


@pytest.mark.parametrize("server_name", ["primary", "replica"])
@pytest.mark.parametrize("table", list(PLAN_TYPES))
def test_credential_query_compares_the_org_index_with_its_key(pair, plan_db, plan_creds, table, server_name):
    """The planner turns the policies' lookup into the credential's own org
    key (src/org.rs): the index condition is a literal, as in a hand-written
    policy; the pass-through policy's membership test is decided before
    planning (src/guard/plans.rs), so no sub-plan is left at all."""
    if table not in plan_db:
        pytest.skip("citext is not installable here")
    server = getattr(pair, server_name)
    key = pair.primary.value("SELECT md5('org42')::uuid::text") if table == "big_uuid" else "42"
    with session(cred_for(plan_creds, table), server) as s:
        out = s.value(f"EXPLAIN (FORMAT JSON) SELECT * FROM {table} WHERE payload <> ''")
        plan = (out if isinstance(out, list) else json.loads(out))[0]["Plan"]
        nodes = list(plan_nodes(plan))
        index_scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Bitmap Index Scan", "Index Only Scan")
                       and n.get("Index Name") == f"{table}_org_idx"]
        initplans = [n for n in nodes if n.get("Parent Relationship") == "InitPlan"]
        summary = [(n["Node Type"], n.get("Index Name"), n.get("Index Cond"), n.get("Subplan Name")) for n in nodes]
        assert index_scans, f"no scan of {table}_org_idx: {summary}"
        condition = index_scans[0].get("Index Cond", "")
        assert key in condition and "InitPlan" not in condition and "$" not in condition, summary
        assert initplans == [] and "pg_has_role" not in json.dumps(plan), summary
        assert s.value(f"SELECT count(*) FROM {table} WHERE payload <> ''") == ROWS // ORG_COUNT
        assert s.rows(f"SELECT DISTINCT org_id::text FROM {table}") == [(key,)]


@pytest.mark.parametrize("scan", ["index", "seqscan"])
def test_org_lookup_never_runs_per_row(pair, plan_db, plan_creds, scan):
    """Counted by the server (track_functions = all for the credential): the
    lookup is not called at all when a query runs, over 50k rows or in a
    join: the planner has already put the org key in its place."""
    cred = plan_creds["numeric"]
    pair.primary.sql(f"ALTER ROLE {cred.role} IN DATABASE {PLAN_DB} SET track_functions = 'all'")
    try:
        with session(cred, pair.primary) as s:
            if scan == "seqscan":
                s.rows("SET enable_indexscan = off")
                s.rows("SET enable_bitmapscan = off")
            s.rows("BEGIN")
            assert s.value("SELECT count(*) FROM big_int") == ROWS // ORG_COUNT
            calls = "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname LIKE 'current_org%'"
            assert s.value(calls) == 0
            assert s.value("SELECT count(*) FROM big_int a JOIN big_bigint b USING (id)") == ROWS // ORG_COUNT
            assert s.value(calls) == 0
            s.rows("COMMIT")
    finally:
        pair.primary.sql(f"ALTER ROLE {cred.role} IN DATABASE {PLAN_DB} RESET track_functions")


PLAN_APP, PLAN_APP_PASSWORD = "plan_app", "plan-app-password"


@pytest.fixture(scope="module")
def plan_app(pair, plan_db):
    """An application role (not the owner) of the plan database."""
    pair.primary.sql(f"CREATE ROLE {PLAN_APP} LOGIN PASSWORD '{PLAN_APP_PASSWORD}'")
    pair.primary.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PLAN_APP}", dbname=PLAN_DB)
    pair.wait_replayed()
    return PLAN_APP


@pytest.mark.parametrize("preloaded", [False, True], ids=["plain session", "bi_access preloaded"])
def test_application_plans_with_and_without_the_library(pair, plan_db, plan_app, preloaded):
    """The application role's plan on an exposed table: in a plain session the
    pass-through policy is one InitPlan (`<> 1`, so row estimates stay as
    they were); where its sessions load bi_access (session_preload_libraries)
    the condition is decided before planning and the plan is the table's
    own, no sub-plan, no filter. Every row either way."""
    if preloaded:
        pair.primary.sql(f"ALTER ROLE {plan_app} IN DATABASE {PLAN_DB} SET session_preload_libraries = 'bi_access'")
    try:
        conn = psycopg2.connect(**pair.primary.tcp_args(PLAN_DB, plan_app, PLAN_APP_PASSWORD))
        try:
            s = Session(conn)
            plan = "\n".join(r[0] for r in s.rows("EXPLAIN SELECT * FROM big_int WHERE id = 1"))
            assert s.value("SELECT count(*) FROM big_int") == ROWS
        finally:
            conn.close()
    finally:
        pair.primary.sql(f"ALTER ROLE {plan_app} IN DATABASE {PLAN_DB} RESET session_preload_libraries")
    if preloaded:
        assert "InitPlan" not in plan and "Filter" not in plan, plan
    else:
        assert "InitPlan" in plan and "<> 1)" in plan, plan


PARALLEL = ("max_parallel_workers_per_gather = 2", "parallel_setup_cost = 0", "parallel_tuple_cost = 0",
            "min_parallel_table_scan_size = 0", "enable_indexscan = off", "enable_bitmapscan = off")


@pytest.mark.parametrize("server_name", ["primary", "replica"])
def test_parallel_query_sees_only_the_org(pair, plan_db, plan_creds, server_name):
    """Parallel workers evaluate the policies too; a hostile session may ask
    for them (all USERSET settings). The credential's own plan has a Gather;
    that its workers run and count its org's rows alone is shown as the
    superuser's session sees it after SET ROLE to the credential (EXPLAIN
    ANALYZE is refused to a credential's session)."""
    server = getattr(pair, server_name)
    cred = plan_creds["numeric"]
    query = "SELECT org_id, count(*) FROM big_bigint GROUP BY org_id"
    with session(cred, server) as s:
        for setting in PARALLEL:
            s.rows(f"SET {setting}")
        plan = "\n".join(r[0] for r in s.rows(f"EXPLAIN {query}"))
        assert "Gather" in plan and "Workers Planned: 2" in plan, plan
        assert s.rows(query) == [(42, ROWS // ORG_COUNT)]
    s = Session(server.connect(PLAN_DB))
    try:
        s.rows(f'SET ROLE "{cred.role}"')
        for setting in PARALLEL:
            s.rows(f"SET {setting}")
        plan = "\n".join(r[0] for r in s.rows(f"EXPLAIN (ANALYZE) {query}"))
        assert "Gather" in plan and "Workers Launched: 0" not in plan, plan
        assert s.rows(query) == [(42, ROWS // ORG_COUNT)]
    finally:
        s.close()


def test_policies_and_acls_stay_fixed_whatever_the_number_of_credentials(request, pair, plan_db, secrets):
    """DESIGN property 10: generating credentials touches no table's ACL or
    policies."""
    b = bi_for(request, pair, PLAN_DB, secrets)

    def snapshot():
        return {t: (table_state(pair.primary, PLAN_DB, t),
                    pair.primary.value("SELECT count(*) FROM pg_policy WHERE polrelid = %s::regclass", (t,),
                                       dbname=PLAN_DB)) for t in plan_db}
    before = snapshot()
    for i in range(25):
        b.generate(str(i), wait_replica=False)
    after = snapshot()
    assert after == before
    assert all(n == 3 for _, n in after.values()), "read, guard and passthrough"


# ==========================================================================
# Syncing under the application's locks

SYNC_DB = "expo_sync"
SYNC_TABLES = [f"t{i:02d}" for i in range(1, 51)]


@pytest.fixture(scope="module")
def sync_db(pair, bi):
    ddl = "\n".join(f"CREATE TABLE {t} (id serial PRIMARY KEY, org_id integer NOT NULL);"
                    f"INSERT INTO {t} (org_id) VALUES (1), (2), (2);" for t in SYNC_TABLES)
    create_database(pair, SYNC_DB, ddl, "SELECT * FROM bi_access.sync_tables();")
    pair.wait_replayed()
    return SYNC_DB


@pytest.fixture(scope="module")
def sync_bi(request, pair, sync_db, secrets):
    return bi_for(request, pair, sync_db, secrets)


def unsynced(pair) -> dict[str, str]:
    return {t: r for t, _, r in pair.primary.sql("SELECT tbl::text, org_column, reason FROM bi_access.unsynced_tables()",
                                                 dbname=SYNC_DB)}


@pytest.fixture
def needs_sync(pair, sync_db):
    """Makes tables need a sync (their guard policy dropped, so the sync must
    take their exclusive lock); syncs everything again afterwards."""
    def make(tables, rls_off=()):
        for t in tables:
            pair.primary.sql(f"DROP POLICY bi_access_guard ON {t}", dbname=sync_db)
        for t in rls_off:
            pair.primary.sql(f"ALTER TABLE {t} DISABLE ROW LEVEL SECURITY", dbname=sync_db)
        assert set(unsynced(pair)) == set(tables) | set(rls_off)
    yield make
    pair.primary.sql("SELECT * FROM bi_access.sync_tables()", dbname=sync_db)
    assert unsynced(pair) == {}


def test_sync_tables_reports_55P03_naming_the_locked_table(pair, sync_bi, needs_sync):
    needs_sync(["t05", "t10"])
    with table_locked(pair.primary, SYNC_DB, "t05"):
        s = Session(sync_bi.connect())
        try:
            s.rows("SET lock_timeout = '200ms'")
            started = time.monotonic()
            outcome = s.run("SELECT * FROM bi_access.sync_tables()")
            elapsed = time.monotonic() - started
        finally:
            s.close()
    assert outcome.state == LOCK_NOT_AVAILABLE, str(outcome)
    assert "t05" in outcome.message, outcome.message
    assert elapsed < 5, f"took {elapsed:.1f}s with lock_timeout = 200ms"
    # All or nothing: t10 was not synced either.
    assert set(unsynced(pair)) == {"t05", "t10"}


LOCK_CALLS = {
    "sync_tables": "SELECT * FROM bi_access.sync_tables()",
    "expose_table": "SELECT bi_access.expose_table('t05')",
    "hide_table": "SELECT bi_access.hide_table('t05')",
}


@pytest.mark.parametrize("mode", ["ACCESS SHARE", "ACCESS EXCLUSIVE"])
@pytest.mark.parametrize("call", LOCK_CALLS)
def test_lock_timeout_is_55P03_naming_the_table(pair, sync_bi, needs_sync, call, mode):
    """Whatever the application holds on the table (a reader's ACCESS SHARE,
    a migration's ACCESS EXCLUSIVE), a call that needs the table's lock
    gives up within lock_timeout with 55P03 naming the table and a HINT
    pointing to CALL bi_access.sync(), and changes nothing."""
    needs_sync(["t05"])
    with table_locked(pair.primary, SYNC_DB, "t05", mode):
        # The table's owner (a superuser here) may expose and hide it.
        s = Session(sync_bi.connect()) if call == "sync_tables" else Session.superuser(pair.primary, SYNC_DB)
        try:
            s.rows("SET lock_timeout = '200ms'")
            started = time.monotonic()
            outcome = s.run(LOCK_CALLS[call])
            elapsed = time.monotonic() - started
        finally:
            s.close()
    assert outcome.state == LOCK_NOT_AVAILABLE, str(outcome)
    assert "t05" in outcome.message, outcome.message
    assert "CALL bi_access.sync()" in outcome.message, outcome.message
    assert elapsed < 5, f"took {elapsed:.1f}s with lock_timeout = 200ms"
    assert set(unsynced(pair)) == {"t05"}


def test_call_sync_skips_the_locked_table_and_commits_the_others(pair, sync_bi, needs_sync):
    needs_sync(["t05", "t10", "t20"])
    with table_locked(pair.primary, SYNC_DB, "t05"):
        s = Session(sync_bi.connect())
        try:
            outcome = s.run("CALL bi_access.sync('200ms', 1)")
        finally:
            s.close()
        # Seen from another session while t05 is still locked: committed.
        still = unsynced(pair)
        synced_policies = {t: [p[0] for p in policies(pair.primary, SYNC_DB, t)] for t in ("t10", "t20")}
    assert outcome.ok, str(outcome)
    notices = "".join(outcome.notices)
    skipped = [n for n in outcome.notices if "skipped" in n and "t05" in n]
    assert skipped, notices
    assert not any("skipped" in n and ("t10" in n or "t20" in n) for n in outcome.notices), notices
    assert list(still) == ["t05"], still
    assert all("bi_access_guard" in p for p in synced_policies.values()), synced_policies


def test_call_sync_locks_one_application_table_at_a_time(pair, sync_bi, needs_sync):
    needs_sync(SYNC_TABLES, rls_off=SYNC_TABLES[::5])
    locked_sql = ("SELECT coalesce(array_agg(c.relname::text), '{}') FROM pg_locks l "
                  "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE l.pid = %s AND l.mode = 'AccessExclusiveLock' AND l.granted "
                  "AND n.nspname = 'public' AND c.relkind IN ('r', 'p')")
    sampler = Session.superuser(pair.primary, SYNC_DB)
    try:
        # Control: the same probe sees all fifty locks of a one-transaction sync.
        control = Session(sync_bi.connect())
        control.rows("BEGIN")
        control.rows("SELECT * FROM bi_access.sync_tables()")
        assert len(sampler.value(locked_sql, (control.pid(),))) == len(SYNC_TABLES)
        control.rows("ROLLBACK")
        control.close()

        caller = Session(sync_bi.connect())
        run = Background(caller, "CALL bi_access.sync()")
        samples = []
        while not run.done:
            samples.append(sampler.value(locked_sql, (run.pid,)))
        outcome = run.join()
        caller.close()
    finally:
        sampler.close()
    assert outcome.ok, str(outcome)
    most = max(samples, key=len)
    seen = {t for s in samples for t in s}
    assert len(most) <= 1, f"{len(most)} tables locked at once: {most}"
    assert len(seen) >= 3, f"the sampler saw too little to prove anything ({len(samples)} samples: {seen})"
    assert unsynced(pair) == {}


def test_call_syncs_lock_timeout_binds_the_table_steps_only(pair, sync_bi):
    """sync()'s lock_timeout is for the application's tables: its first step
    waits behind another sync's transaction as the session would (with the
    session's own lock_timeout, 0 here), instead of giving up with 55P03."""
    holder = Session(sync_bi.connect())
    caller = Session(sync_bi.connect())
    try:
        holder.rows("BEGIN")
        holder.rows("SELECT * FROM bi_access.sync_tables()")
        run = Background(caller, "CALL bi_access.sync('100ms', 0)")
        time.sleep(1)
        waited = not run.done
        holder.rows("COMMIT")
        outcome = run.join()
    finally:
        holder.close()
        caller.close()
    assert waited, f"the call ended while another sync's transaction was open: {outcome}"
    assert outcome.ok, str(outcome)


@pytest.mark.parametrize("kind", ["fresh credential", "re-activated credential"])
def test_credentials_read_syncing_during_call_sync_and_active_after(pair, sync_bi, needs_sync, kind):
    cred = sync_bi.generate("1")
    if kind == "re-activated credential":
        sync_bi.one("revoke", cred.role)
        sync_bi.one("activate", cred.role)
    assert sync_bi.status(cred.role) == "active"
    needs_sync(["t07"])
    observed = []
    with table_locked(pair.primary, SYNC_DB, "t07"):
        caller = Session(sync_bi.connect())
        run = Background(caller, "CALL bi_access.sync('5s', 0)")
        try:
            wait_until(lambda: observed.append(sync_bi.status(cred.role)) or observed[-1] == "syncing",
                       3, "the credential to read syncing", 0.05)
        except TimeoutError:
            pass
    outcome = run.join()
    caller.close()
    assert outcome.ok, str(outcome)
    assert "syncing" in observed, f"statuses seen while CALL bi_access.sync() ran: {sorted(set(observed))}"
    assert sync_bi.status(cred.role) == "active"


@pytest.mark.parametrize("how", ["cancelled", "killed"])
def test_a_sync_that_ends_early_leaves_nothing_syncing(pair, sync_bi, needs_sync, how):
    """`syncing` is derived from the sync running now, never written on the
    records: cancelled (57014) or its backend killed mid-run, it leaves every
    credential as it was."""
    cred = sync_bi.generate("1")
    needs_sync(["t08"])
    with table_locked(pair.primary, SYNC_DB, "t08"):
        caller = Session(sync_bi.connect())
        pid = caller.pid()
        run = Background(caller, "CALL bi_access.sync('200ms', 100)")
        wait_until(lambda: sync_bi.status(cred.role) == "syncing", 10, "the credential to read syncing", 0.05)
        signal = "pg_cancel_backend" if how == "cancelled" else "pg_terminate_backend"
        assert pair.primary.value(f"SELECT {signal}(%s)", (pid,))
        outcome = run.join()
    caller.close()
    assert outcome.state == ("57014" if how == "cancelled" else "OperationalError"), str(outcome)
    assert sync_bi.status(cred.role) == "active"


def test_sync_takes_no_lock_on_credentials(pair, sync_bi):
    """An uncommitted regenerate holds its credential's row: CALL sync() does
    not wait behind it (0.1.0 rewrote every record's status first)."""
    cred = sync_bi.generate("1")
    admin = sync_bi.connect()
    admin.autocommit = False
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT * FROM bi_access.regenerate(%s)", (cred.role,))
        caller = Session(sync_bi.connect())
        try:
            caller.rows("SET statement_timeout = '5s'")
            outcome = caller.run("CALL bi_access.sync()")
            assert outcome.ok, str(outcome)
        finally:
            caller.close()
    finally:
        admin.rollback()
        admin.close()


def test_sync_is_idempotent(pair, sync_db, sync_bi):
    def snapshot():
        return pair.primary.sql("SELECT p.oid, p.polname::text, c.relacl::text, c.relrowsecurity FROM pg_policy p "
                                "JOIN pg_class c ON c.oid = p.polrelid ORDER BY 1", dbname=sync_db)
    before = snapshot()
    actions = sync_bi.query("SELECT tbl::text, action FROM bi_access.sync_tables()")
    assert {a["action"] for a in actions} == {"unchanged"}, actions
    s = Session(sync_bi.connect())
    try:
        outcome = s.run("CALL bi_access.sync()")
    finally:
        s.close()
    assert outcome.ok and any("0 synced" in n for n in outcome.notices), outcome.notices
    assert snapshot() == before


# ==========================================================================
# Views: exposed when security_invoker, refused otherwise (in check_db,
# conftest.py)

@pytest.mark.skipif(not VIEWS_CAN_BE_SECURITY_INVOKER, reason="PostgreSQL 14 has no security_invoker views")
def test_credential_sees_its_org_through_an_exposed_security_invoker_view(pair, check_db, check_cred):
    with session(check_cred, pair.primary) as s:
        assert s.rows("SELECT org_id, name FROM accounts_v ORDER BY id") == [(1, "a")]


def test_expose_table_refuses_a_view_that_is_not_security_invoker(pair, check_db, check_bi):
    pair.primary.sql("CREATE VIEW accounts_definer AS SELECT * FROM accounts", dbname=check_db)
    try:
        with pytest.raises(psycopg2.Error) as info:
            check_bi.query("SELECT bi_access.expose_table('accounts_definer')")
        assert info.value.pgcode == "42809", info.value.pgerror
    finally:
        pair.primary.sql("DROP VIEW accounts_definer", dbname=check_db)
