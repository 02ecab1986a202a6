"""The security check, `bi_access.check()`: silent on a clean setup (the
database `expo_check`, conftest.py), and each misconfiguration planted into it
is a finding with a fix that clears it."""

from __future__ import annotations

import contextlib

import pytest

from bi import BiAccess
from cluster import PRELOADED, REPLICA_APP_NAME, wait_until
from probe import reader_group, session

# The one finding about the server rather than the setup: bi_access missing
# from shared_preload_libraries (the recommended install), which the pair
# has only with BI_PRELOAD=1. test_check_names_what_needs_the_preload covers it.
PRELOAD_OBJECT = "setting shared_preload_libraries"


@pytest.fixture
def clean(pair, check_db, check_cred):
    """What a clean setup takes beyond the defaults: no other database that
    PUBLIC may connect to, template1 included (restored afterwards, other
    tests need it)."""
    others = [d for (d,) in pair.primary.sql(
        "SELECT datname FROM pg_database d WHERE datallowconn AND datname <> %s "
        "AND (datacl IS NULL OR EXISTS (SELECT FROM aclexplode(datacl) a WHERE a.grantee = 0 "
        "AND a.privilege_type = 'CONNECT'))", (check_db,))]
    for d in others:
        pair.primary.sql(f'REVOKE CONNECT ON DATABASE "{d}" FROM PUBLIC')
    assert pair.primary.value("SHOW bi_access.sslmode") in ("disable", "allow", "prefer")
    assert pair.primary.value("SHOW ssl") == "off"
    yield
    for d in others:
        pair.primary.sql(f'GRANT CONNECT ON DATABASE "{d}" TO PUBLIC')


def findings(check_bi, preload: bool = False) -> list[tuple]:
    """check()'s findings but the preload's (or only it, with `preload`),
    and but the regime that bounds lock waits (object `lock waits`, always
    there: test_resources_locks.py)."""
    return [(r["severity"], r["object"], r["finding"], r["fix"])
            for r in check_bi.query("SELECT * FROM bi_access.check() WHERE object <> 'lock waits'")
            if (r["object"] == PRELOAD_OBJECT) == preload]


def test_check_names_what_needs_the_preload(check_bi, clean):
    """Without bi_access in shared_preload_libraries, one warning says what
    is missing (the application's sessions lack the planner hook), with the
    statement that adds it to what the server preloads already."""
    found = findings(check_bi, preload=True)
    if PRELOADED:
        assert found == []
    else:
        assert len(found) == 1, found
        severity, _, finding, fix = found[0]
        assert severity == "warning"
        assert finding.startswith("bi_access is not in shared_preload_libraries: "), finding
        assert "planner hook" in finding, finding
        assert fix.startswith("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements, bi_access';"), fix


def test_check_is_silent_on_a_clean_setup(check_bi, clean):
    assert findings(check_bi) == []


@pytest.mark.parametrize("database", ["postgres", "template1"])
def test_check_reports_public_connect_on_another_database(pair, check_bi, clean, database):
    """A credential could log in there (and read the catalogs): advice, a
    warning, template1 included."""
    pair.primary.sql(f"GRANT CONNECT ON DATABASE {database} TO PUBLIC")
    try:
        found = findings(check_bi)
    finally:
        pair.primary.sql(f"REVOKE CONNECT ON DATABASE {database} FROM PUBLIC")
    assert [(f[0], f[1]) for f in found] == [("warning", f"database {database}")], found
    assert found[0][3] == f"REVOKE CONNECT ON DATABASE {database} FROM PUBLIC;"


# (plant, undo, expected object, words of the finding, whether running the fix clears it)
PLANTS = {
    "PUBLIC CREATE on an exposed schema": (
        "GRANT CREATE ON SCHEMA public TO PUBLIC", "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "schema public", "create", True),
    "SECURITY DEFINER function executable by PUBLIC": (
        "CREATE FUNCTION public.all_accounts() RETURNS SETOF accounts LANGUAGE sql SECURITY DEFINER "
        "AS 'SELECT * FROM accounts'", "DROP FUNCTION public.all_accounts()",
        "function public.all_accounts()", "security definer", True),
    "SECURITY DEFINER function in a schema that is not exposed": (
        "CREATE SCHEMA reporting; GRANT USAGE ON SCHEMA reporting TO PUBLIC; "
        "CREATE FUNCTION reporting.totals() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
        "AS 'SELECT sum(amount) FROM public.ledger'", "DROP SCHEMA reporting CASCADE",
        "function reporting.totals()", "security definer", True),
    "SECURITY DEFINER function granted to the reader group": (
        "CREATE FUNCTION public.totals() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
        "AS 'SELECT sum(amount) FROM public.ledger'; REVOKE EXECUTE ON FUNCTION public.totals() FROM PUBLIC; "
        "GRANT EXECUTE ON FUNCTION public.totals() TO {reader}", "DROP FUNCTION public.totals()",
        "function public.totals()", "security definer", True),
    "SECURITY DEFINER function an exposed table's policy calls": (
        "CREATE FUNCTION public.tenant_ok(integer) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER "
        "AS 'SELECT false'; CREATE POLICY app_ok ON ledger FOR SELECT TO PUBLIC USING (public.tenant_ok(org_id))",
        "DROP POLICY app_ok ON ledger; DROP FUNCTION public.tenant_ok(integer)",
        "function public.tenant_ok(integer)", "policies call", True),
    "an object of bi_access given to another role past the drop guard": (
        "ALTER EVENT TRIGGER bi_access_drop_guard DISABLE; ALTER TABLE bi_access.target OWNER TO bi_plain; "
        "ALTER EVENT TRIGGER bi_access_drop_guard ENABLE",
        "ALTER TABLE bi_access.target OWNER TO postgres",
        "table bi_access.target (owned by bi_plain)", "owned by another role", True),
    "exposed table with RLS off": (
        "ALTER TABLE ledger DISABLE ROW LEVEL SECURITY", "ALTER TABLE ledger ENABLE ROW LEVEL SECURITY",
        "ledger", "row level security", True),
    "exposed table without its guard policy": (
        "DROP POLICY bi_access_guard ON ledger", "SELECT * FROM bi_access.sync_tables()",
        "ledger", "polic", True),
    "exposed table without its grant": (
        "REVOKE SELECT ON ledger FROM {reader}", "SELECT * FROM bi_access.sync_tables()",
        "ledger", "grant", True),
    "view readable by BI roles, not security_invoker": (
        "CREATE VIEW ledger_totals AS SELECT sum(amount) AS total FROM ledger; "
        "GRANT SELECT ON ledger_totals TO {reader}", "DROP VIEW ledger_totals",
        "ledger_totals", "security_invoker", True),
    "PUBLIC SELECT on a table without RLS": (
        "GRANT SELECT ON app_config TO PUBLIC", "REVOKE SELECT ON app_config FROM PUBLIC",
        "app_config", "public", True),
    "credential role with CREATEDB": (
        "ALTER ROLE {cred} CREATEDB", "ALTER ROLE {cred} NOCREATEDB", "role {cred}", "attribute", True),
    "credential role in another group": (
        "GRANT bi_access_admin TO {cred}", "REVOKE bi_access_admin FROM {cred}", "role {cred}", "membership", True),
    "new table with the org column, not exposed": (
        "CREATE TABLE newcomer (id serial PRIMARY KEY, org_id integer NOT NULL)", "DROP TABLE newcomer",
        "newcomer", "new table", True),
}


@pytest.mark.parametrize("plant", PLANTS)
def test_check_reports_a_planted_misconfiguration(pair, check_db, check_bi, check_cred, clean, plant):
    sql, undo, obj, words, fix_clears = PLANTS[plant]
    names = {"reader": reader_group(pair.primary, check_db), "cred": check_cred.role}
    pair.primary.sql(sql.format(**names), dbname=check_db)
    try:
        found = findings(check_bi)
        assert len(found) >= 1, f"{plant}: check() found nothing"
        mine = [f for f in found if obj.format(**names) in f[1]]
        assert mine, f"{plant}: no finding names {obj.format(**names)}: {found}"
        assert any(words in f[2].lower() for f in mine), mine
        assert all(f[0] in ("error", "warning", "info") and f[3] for f in found), found
        if fix_clears:
            pair.primary.sql(mine[0][3], dbname=check_db)
            assert findings(check_bi) == [], f"{plant}: the fix {mine[0][3]!r} did not clear it"
    finally:
        pair.primary.sql(undo.format(**names), dbname=check_db)
    assert findings(check_bi) == [], f"{plant}: not clean again after the undo"


@pytest.mark.parametrize("setting, value, obj, fixed", [
    ("bi_access.sslmode", "require", "setting ssl", "RESET bi_access.sslmode;"),
    ("bi_access.sslmode", "verify-full", "setting ssl", "RESET bi_access.sslmode;"),
    ("password_encryption", "md5", "setting password_encryption", "SET password_encryption = 'scram-sha-256';"),
])
@pytest.mark.parametrize("where", ["ALTER ROLE bi_app IN DATABASE {db}", "ALTER DATABASE {db}", "ALTER ROLE bi_app"])
def test_check_reports_a_planted_setting_with_the_fix_for_where_it_was_made(pair, check_db, check_bi, clean,
                                                                            setting, value, obj, fixed, where):
    """The fix changes the setting where it was made: an ALTER SYSTEM fix
    for a value made with ALTER DATABASE would change nothing."""
    made = where.format(db=check_db)
    pair.primary.sql(f"{made} SET {setting} = '{value}'")
    try:
        b = BiAccess(pair, check_db, set())
        try:
            found = findings(b)
        finally:
            b.close()
    finally:
        pair.primary.sql(f"{made} RESET {setting}")
    assert [f[1] for f in found] == [obj], found
    assert found[0][3].endswith(f"{made} {fixed}"), found[0][3]


def test_check_reports_a_table_every_login_may_read_through_the_passthrough(pair, check_db, check_bi, clean):
    """An exposed table bi_access turned RLS on for has a pass-through policy
    TO PUBLIC; granted SELECT to PUBLIC, every login of the cluster reads
    every row of it (credentials of other databases included: see
    test_databases). check() must say so."""
    pair.primary.sql("GRANT SELECT ON ledger TO PUBLIC", dbname=check_db)
    try:
        found = findings(check_bi)
    finally:
        pair.primary.sql("REVOKE SELECT ON ledger FROM PUBLIC", dbname=check_db)
    assert any("ledger" in f[1] for f in found), found


# ===================================================================# What credentials take of what the server shares (issue 24, src/capacity.rs)

def fresh_findings(pair, check_db) -> list[tuple]:
    """check() in a new session: one that sees the database's settings as
    they are now (ALTER DATABASE … SET applies from the next login)."""
    b = BiAccess(pair, check_db, set())
    try:
        return findings(b)
    finally:
        b.close()


@contextlib.contextmanager
def database_setting(pair, check_db, name: str, value: str):
    pair.primary.sql(f"ALTER DATABASE {check_db} SET {name} = '{value}'")
    try:
        yield
    finally:
        pair.primary.sql(f"ALTER DATABASE {check_db} RESET {name}")


# setting -> (a value that does not fit, the words of the finding)
MISFITS = {
    # 6 × 5000 + 1000 + 64 locks against 64 × 60 (the harness's max_connections).
    "bi_access.custom_schema_max_relations": ("5000", "out of shared memory"),
    "bi_access.custom_schema_max_expressions": ("0", "no cap"),
    # More than half of max_parallel_workers (8).
    "bi_access.max_parallel_workers": ("8", "parallel workers"),
    # One org's 10 sessions × 2000 GB: more than any disk here has free.
    "bi_access.temp_file_limit": ("2000GB", "temporary files"),
}


@pytest.mark.parametrize("setting", list(MISFITS))
def test_check_reports_a_share_that_does_not_fit_and_its_fix_clears_it(pair, check_db, check_bi, clean, setting):
    value, words = MISFITS[setting]
    with database_setting(pair, check_db, setting, value):
        found = fresh_findings(pair, check_db)
        assert [(f[0], f[1]) for f in found] == [("warning", f"setting {setting}")], found
        assert words in found[0][2], found
        # The fix sets it where it was set: the database's settings (for
        # the lock table, the cap that fits; then a max_locks_per_transaction).
        fix = found[0][3].split(" Or")[0]
        assert fix.startswith(f"ALTER DATABASE {check_db} SET {setting} = "), fix
        pair.primary.sql(fix, dbname=check_db)
        assert fresh_findings(pair, check_db) == []
    assert fresh_findings(pair, check_db) == []


def test_check_reports_unbounded_temporary_files(pair, check_db, check_bi, clean):
    with database_setting(pair, check_db, "bi_access.temp_file_limit", "-1"):
        found = fresh_findings(pair, check_db)
    assert [(f[0], f[1]) for f in found] == [("warning", "setting bi_access.temp_file_limit")], found
    assert "unbounded" in found[0][2]


def test_check_reports_a_custom_schema_table_without_its_quota_trigger(pair, check_db, check_bi, clean):
    check_bi.call("set_target", "check_primary", "127.0.0.1", pair.primary.port, "prefer", None)
    cred = check_bi.generate("77", "analyst", scope="read_write", target="check_primary",
                             wait_replica=False)
    schema = cred.details["custom_schema"]
    try:
        with session(cred, pair.primary) as s:
            assert s.run("CREATE TABLE loaded (x int)").ok
        assert findings(check_bi) == []
        pair.primary.sql(f"DROP TRIGGER bi_access_quota ON {schema}.loaded", dbname=check_db)
        found = findings(check_bi)
        assert [(f[0], f[1]) for f in found] == [("error", f"{schema}.loaded")], found
        assert "quota trigger" in found[0][2]
        pair.primary.sql(found[0][3], dbname=check_db)
        assert findings(check_bi) == []
    finally:
        check_bi.call("delete", cred.role)
        check_bi.call("drop_custom_schema", "77")
        check_bi.call("drop_target", "check_primary")
    assert findings(check_bi) == []


def test_check_reports_a_standby_whose_feedback_holds_back_vacuum(pair, check_bi, clean):
    def horizon():
        return pair.primary.sql("SELECT backend_xmin IS NOT NULL FROM pg_stat_replication "
                                "WHERE application_name = %s", (REPLICA_APP_NAME,))

    assert horizon() == [(False,)]
    pair.replica.sql("ALTER SYSTEM SET hot_standby_feedback = on")
    pair.replica.sql("SELECT pg_reload_conf()")
    try:
        wait_until(lambda: horizon() == [(True,)], 30, "the standby's feedback")
        found = findings(check_bi)
        assert [(f[0], f[1]) for f in found] == [("warning", f"standby {REPLICA_APP_NAME}")], found
        assert "hold back vacuum" in found[0][2] and "bi_access.statement_timeout" in found[0][2], found
        assert "hot_standby_feedback = off" in found[0][3]
    finally:
        pair.replica.sql("ALTER SYSTEM RESET hot_standby_feedback")
        pair.replica.sql("SELECT pg_reload_conf()")
    wait_until(lambda: horizon() == [(False,)], 30, "the standby's feedback to stop")
    assert findings(check_bi) == []


DEFINER = ("CREATE SCHEMA reporting; CREATE FUNCTION reporting.totals() RETURNS bigint LANGUAGE sql "
           "SECURITY DEFINER AS 'SELECT sum(amount) FROM public.ledger'")


@pytest.mark.parametrize("usage, severity", [("PUBLIC", "error"), ("{reader}", "error"), (None, "warning")],
                         ids=["USAGE for PUBLIC", "USAGE for the reader group", "no USAGE"])
def test_check_reports_a_definer_function_in_any_schema(pair, check_db, check_bi, clean, usage, severity):
    """A SECURITY DEFINER function executable by PUBLIC, in any schema: an
    error where a credential could call it (USAGE on its schema) were it not
    for the session guard, a warning where a grant on the schema is missing."""
    reader = reader_group(pair.primary, check_db)
    grant = f"; GRANT USAGE ON SCHEMA reporting TO {usage.format(reader=reader)}" if usage else ""
    pair.primary.sql(DEFINER + grant, dbname=check_db)
    try:
        found = findings(check_bi)
    finally:
        pair.primary.sql("DROP SCHEMA reporting CASCADE", dbname=check_db)
    assert [(f[0], f[1], f[3]) for f in found] == [
        (severity, "function reporting.totals()", "REVOKE EXECUTE ON FUNCTION reporting.totals() FROM PUBLIC;")], found
