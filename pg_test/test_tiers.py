"""Property 7, least privilege of management: the tiers bi_access_viewer <
bi_access_editor < bi_access_admin, each a member of the one below. Every
tier calls every function: allowed, or 42501. Each call runs in a transaction
that is rolled back, so every tier finds the same state (CALL sync() commits:
it runs on its own). The list is checked against the catalog: every routine
of schema bi_access is tried here."""

from __future__ import annotations

import re

import psycopg2
import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, PLAIN_PASSWORD, PLAIN_ROLE, raises_sqlstate, unique_label
from probe import ensure_login_role

ORG = "401"
WRITER_ORG = "402"
VIEWER, EDITOR = "tier_viewer", "tier_editor"
PASSWORD = "tier-password-not-a-bi-secret"
OWNER = "tier_owner"  # owns the tables expose_table, share_table and hide_table are called on

LOGINS = {
    "none": (PLAIN_ROLE, PLAIN_PASSWORD),
    "viewer": (VIEWER, PASSWORD),
    "editor": (EDITOR, PASSWORD),
    "admin": (ADMIN_ROLE, ADMIN_PASSWORD),
}
TIERS = ["none", "viewer", "editor", "admin"]

# call -> (lowest tier allowed, SQL with {placeholders} from the `state` fixture)
CALLS = {
    "credentials view": ("viewer", "SELECT * FROM bi_access.credentials"),
    "events view": ("viewer", "SELECT * FROM bi_access.events"),
    "tables view": ("viewer", "SELECT * FROM bi_access.tables"),
    "targets view": ("viewer", "SELECT * FROM bi_access.targets"),
    "usage view": ("viewer", "SELECT * FROM bi_access.usage"),
    "unsynced_tables": ("viewer", "SELECT * FROM bi_access.unsynced_tables()"),
    "check": ("viewer", "SELECT * FROM bi_access.check()"),
    "lock_yields": ("viewer", "SELECT * FROM bi_access.lock_yields()"),
    "generate": ("editor", "SELECT * FROM bi_access.generate('{org}', '{label}')"),
    "generate bigint": ("editor", "SELECT * FROM bi_access.generate({org}, '{label}')"),
    "generate uuid": ("editor", "SELECT * FROM bi_access.generate(md5('{org}')::uuid, '{label}')"),
    "connection_details": ("editor", "SELECT * FROM bi_access.connection_details('{live}')"),
    "regenerate": ("admin", "SELECT * FROM bi_access.regenerate('{live}')"),
    "set_networks": ("admin", "SELECT * FROM bi_access.set_networks('{live}', NULL)"),
    "revoke": ("admin", "SELECT * FROM bi_access.revoke('{live}')"),
    "activate": ("admin", "SELECT * FROM bi_access.activate('{revoked}')"),
    "delete": ("admin", "SELECT * FROM bi_access.delete('{live}')"),
    "purge": ("admin", "SELECT bi_access.purge('{deleted}')"),
    "revoke_org": ("admin", "SELECT * FROM bi_access.revoke_org('{org}')"),
    "delete_org": ("admin", "SELECT * FROM bi_access.delete_org('{org}')"),
    "expose_table": ("admin", "SELECT bi_access.expose_table('tiers.unexposed')"),
    "share_table": ("admin", "SELECT bi_access.share_table('tiers.reference')"),
    "hide_table": ("admin", "SELECT bi_access.hide_table('tiers.exposed')"),
    "sync_tables": ("admin", "SELECT * FROM bi_access.sync_tables()"),
    "set_target": ("admin", "SELECT bi_access.set_target('tiers-new', 'h', 5432)"),
    "drop_target": ("admin", "SELECT bi_access.drop_target('tiers-old')"),
    "drop_custom_schema": ("admin", "SELECT bi_access.drop_custom_schema('{writer_org}')"),
}

# What no tier may call, admin included: the key functions and adopt() are
# superusers', pgbouncer_auth the pooler's.
NOT_FOR_TIERS = {
    "export_key": "SELECT bi_access.export_key()",
    "import_key": "SELECT bi_access.import_key('bi_access-key-v1:x')",
    "rotate_key": "SELECT bi_access.rotate_key()",
    "reset_key": "SELECT bi_access.reset_key()",
    "adopt": "SELECT * FROM bi_access.adopt()",
    "pgbouncer_auth": "SELECT * FROM bi_access.pgbouncer_auth('postgres')",
}
# The org lookups are the reader group's (EXECUTE), but the planner answers
# a call through their support function before any privilege check: NULL
# for every login that is not a credential.
ORG_LOOKUPS = ["current_org", "current_org_bigint", "current_org_uuid"]
# Tried elsewhere in this file (CALL sync()), or not callable at all (a
# trigger function).
TRIED_APART = {"sync", "event_append_only"}


def allowed(tier: str, lowest: str) -> bool:
    return tier != "none" and TIERS.index(tier) >= TIERS.index(lowest)


@pytest.fixture(scope="module")
def state(pair, bi, saas_db) -> dict[str, str]:
    for role in (VIEWER, EDITOR):
        ensure_login_role(pair, role, PASSWORD)
    pair.primary.sql(f"GRANT bi_access_viewer TO {VIEWER}")
    pair.primary.sql(f"GRANT bi_access_editor TO {EDITOR}")
    pair.primary.sql(f"CREATE ROLE {OWNER} NOLOGIN")
    # Every caller may act for the tables' owner: expose/hide get past their
    # own ownership check, so only the tier decides.
    for role in (VIEWER, EDITOR, ADMIN_ROLE, PLAIN_ROLE):
        pair.primary.sql(f"GRANT {OWNER} TO {role}")
    pair.primary.sql(f"""
        CREATE SCHEMA tiers AUTHORIZATION {OWNER};
        CREATE TABLE tiers.unexposed (id int, org_id int);
        CREATE TABLE tiers.exposed (id int, org_id int);
        CREATE TABLE tiers.reference (id int, name text);
        ALTER TABLE tiers.unexposed OWNER TO {OWNER};
        ALTER TABLE tiers.exposed OWNER TO {OWNER};
        ALTER TABLE tiers.reference OWNER TO {OWNER};
    """, dbname=saas_db.dbname)
    bi.query("SELECT bi_access.expose_table('tiers.exposed')")
    bi.call("set_target", "tiers-old", "127.0.0.1", pair.primary.port)
    live = bi.generate(ORG).role
    revoked = bi.generate(ORG).role
    bi.one("revoke", revoked)
    deleted = bi.generate(ORG).role
    bi.one("delete", deleted)
    # An org whose custom schema outlived its only read_write credential.
    writer = bi.generate(WRITER_ORG, scope="read_write", target="tiers-old").role
    bi.one("delete", writer)
    pair.wait_replayed()
    bi.wait_status(deleted, "deleted")
    return {"org": ORG, "label": unique_label("tier"), "live": live, "revoked": revoked, "deleted": deleted,
            "writer_org": WRITER_ORG}


def run_rolled_back(pair, dbname: str, tier: str, sql: str) -> None:
    user, password = LOGINS[tier]
    conn = psycopg2.connect(**pair.primary.tcp_args(dbname, user, password))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()
    finally:
        conn.rollback()
        conn.close()


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("call", list(CALLS))
def test_each_tier_calls_each_function(pair, saas_db, state, tier, call):
    lowest, sql = CALLS[call]
    sql = sql.format(**state)
    if allowed(tier, lowest):
        run_rolled_back(pair, saas_db.dbname, tier, sql)
    else:
        with raises_sqlstate("42501"):
            run_rolled_back(pair, saas_db.dbname, tier, sql)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("call", list(NOT_FOR_TIERS))
def test_no_tier_calls_what_is_not_a_tiers(pair, saas_db, state, tier, call):
    with raises_sqlstate("42501"):
        run_rolled_back(pair, saas_db.dbname, tier, NOT_FOR_TIERS[call])


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("lookup", ORG_LOOKUPS)
def test_the_org_lookups_answer_null_to_every_tier(pair, saas_db, state, tier, lookup):
    user, password = LOGINS[tier]
    conn = psycopg2.connect(**pair.primary.tcp_args(saas_db.dbname, user, password))
    try:
        if tier == "none":
            # Without USAGE on the schema the name does not resolve.
            with raises_sqlstate("42501"), conn.cursor() as cur:
                cur.execute(f"SELECT bi_access.{lookup}()")
        else:
            with conn.cursor() as cur:
                cur.execute(f"SELECT bi_access.{lookup}()")
                assert cur.fetchall() == [(None,)]
    finally:
        conn.close()


def test_every_routine_of_the_schema_is_tried(pair, saas_db):
    """A routine added to schema bi_access without a line above fails here."""
    routines = {name for (name,) in pair.primary.sql(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'bi_access'", dbname=saas_db.dbname)}
    called = {m.group(1) for _, sql in CALLS.values() for m in [re.search(r"bi_access\.(\w+)\(", sql)] if m}
    assert routines == called | set(NOT_FOR_TIERS) | set(ORG_LOOKUPS) | TRIED_APART


@pytest.mark.parametrize("tier", TIERS)
def test_call_sync_is_admin_only(pair, saas_db, state, tier):
    user, password = LOGINS[tier]
    conn = psycopg2.connect(**pair.primary.tcp_args(saas_db.dbname, user, password))
    conn.autocommit = True
    try:
        if tier == "admin":
            with conn.cursor() as cur:
                cur.execute("CALL bi_access.sync()")
        else:
            with raises_sqlstate("42501"), conn.cursor() as cur:
                cur.execute("CALL bi_access.sync()")
    finally:
        conn.close()


@pytest.mark.parametrize("tier", TIERS)
def test_the_workers_are_nobodys(pair, saas_db, state, tier):
    """bi_access_internal's workers run only through the SECURITY DEFINER
    wrappers, whatever the tier."""
    with raises_sqlstate("42501"):
        run_rolled_back(pair, saas_db.dbname, tier,
                        "SELECT bi_access_internal.revoke_org('{org}')".format(**state))


def test_viewers_never_see_a_secret(pair, saas_db, state):
    user, password = LOGINS["viewer"]
    conn = psycopg2.connect(**pair.primary.tcp_args(saas_db.dbname, user, password))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM bi_access.credentials WHERE role_name = %s", (state["live"],))
            columns = {d.name for d in cur.description}
            assert cur.fetchall(), "the viewer sees that the credential exists"
        assert not columns & {"secret", "password"}, columns
        with raises_sqlstate("42501"), conn.cursor() as cur:
            cur.execute("SELECT secret FROM bi_access.credential")
    finally:
        conn.close()


def test_tiers_are_nested_nologin_roles(pair):
    rows = pair.primary.sql("""
        SELECT r.rolname, r.rolcanlogin, array_agg(g.rolname ORDER BY g.rolname)
        FROM pg_roles r
        LEFT JOIN pg_auth_members m ON m.member = r.oid
        LEFT JOIN pg_roles g ON g.oid = m.roleid
        WHERE r.rolname IN ('bi_access_viewer', 'bi_access_editor', 'bi_access_admin')
        GROUP BY 1, 2 ORDER BY 1""")
    assert rows == [("bi_access_admin", False, ["bi_access_editor"]),
                    ("bi_access_editor", False, ["bi_access_viewer"]),
                    ("bi_access_viewer", False, [None])]


def test_a_tier_is_cluster_wide(pair, state, crm_db):
    """README: a member of a tier manages every database of the cluster where
    it may connect and bi_access is installed."""
    user, password = LOGINS["viewer"]
    conn = psycopg2.connect(**pair.primary.tcp_args(crm_db.dbname, user, password))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM bi_access.credentials")
            assert cur.fetchone()[0] >= 0
        with raises_sqlstate("42501"), conn.cursor() as cur:
            cur.execute("SELECT * FROM bi_access.generate('x')")
    finally:
        conn.close()
