"""Session fixtures: one primary + streaming replica pair for the whole run,
the sample tenant databases with bi_access in them, and the application's
admin role that calls bi_access."""

from __future__ import annotations

import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, PLAIN_PASSWORD, PLAIN_ROLE
from cluster import PG_MAJOR, REPLICA_APP_NAME, VIEWS_CAN_BE_SECURITY_INVOKER, ReplicaPair
from probe import bi_for, create_database, session
from tenants import CRM, SAAS, TenantDb, assert_orgs_distinguishable, visible


def pytest_configure(config):
    config.addinivalue_line("markers", "lifecycle: regenerate/revoke/activate/delete/purge, which land "
                                       "after generate; a missing function fails with a clear message")
    config.addinivalue_line("markers", "phase(n): run after every test of a lower phase (default 0)")


def _phase(item) -> int:
    marker = item.get_closest_marker("phase")
    return marker.args[0] if marker else 0


def pytest_collection_modifyitems(items):
    # Destructive tests (phase 1) and the secrets audit of everything the run
    # produced (phase 2) go last; the sort is stable, so file order holds otherwise.
    items.sort(key=_phase)


@pytest.fixture(scope="session")
def secrets() -> set[str]:
    """Every password bi_access handed out during the session."""
    return set()


@pytest.fixture(scope="session")
def pair(request) -> ReplicaPair:
    pair = ReplicaPair()
    request.addfinalizer(pair.destroy)
    pair.start(primary_settings={
        # What generated details tell clients: the replica, without SSL.
        "bi_access.host": "127.0.0.1",
        "bi_access.port": pair.replica.port,
        "bi_access.sslmode": "prefer",
        "bi_access.replica_application_name": REPLICA_APP_NAME,
    })
    pair.primary.sql("CREATE EXTENSION pg_stat_statements")
    return pair


def require_bi_access(pair: ReplicaPair) -> None:
    if not pair.primary.sql("SELECT 1 FROM pg_available_extensions WHERE name = 'bi_access'"):
        pytest.fail("extension bi_access is not installed in this PostgreSQL (run `make install`)",
                    pytrace=False)


def load_tenant_db(pair: ReplicaPair, db: TenantDb) -> TenantDb:
    """The application's schema and data first, then bi_access as a migration
    would add it: create, expose each table, sync."""
    require_bi_access(pair)
    pair.primary.sql(f"CREATE DATABASE {db.dbname}")
    primary_sql = lambda q: pair.primary.sql(q, dbname=db.dbname)  # noqa: E731
    primary_sql(db.ddl)
    primary_sql("CREATE EXTENSION bi_access")
    for table in db.tables:
        primary_sql(table.expose_sql)
    primary_sql("SELECT * FROM bi_access.sync_tables()")
    db.all_rows = visible(primary_sql(db.counts_sql()))
    assert_orgs_distinguishable(db)
    return db


@pytest.fixture(scope="session")
def saas_db(pair) -> TenantDb:
    db = load_tenant_db(pair, SAAS)
    # Roles are cluster-wide, and bi_access_admin exists once the extension does.
    pair.primary.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
    pair.primary.sql(f"CREATE ROLE {PLAIN_ROLE} LOGIN PASSWORD %s", (PLAIN_PASSWORD,))
    return db


@pytest.fixture(scope="session")
def crm_db(pair, saas_db) -> TenantDb:
    return load_tenant_db(pair, CRM)


@pytest.fixture(scope="session")
def bi(request, pair, saas_db, secrets) -> BiAccess:
    """bi_access on the saas database, called as the application's admin role."""
    return bi_for(request, pair, saas_db.dbname, secrets)


@pytest.fixture(scope="session")
def crm_bi(request, pair, crm_db, secrets) -> BiAccess:
    return bi_for(request, pair, crm_db.dbname, secrets)


@pytest.fixture(scope="session")
def tenants(saas_db, bi, crm_db, crm_bi) -> dict[str, tuple[TenantDb, BiAccess]]:
    """Both sample databases by name, for tests parametrized over them."""
    return {saas_db.dbname: (saas_db, bi), crm_db.dbname: (crm_db, crm_bi)}


@pytest.fixture(params=["primary", "replica"])
def server(request, pair):
    """A test that takes it runs once on the primary and once on the replica."""
    return getattr(pair, request.param)


@pytest.fixture
def sess(cred, server):
    """A session of the module's `cred` fixture on each server."""
    with session(cred, server) as s:
        yield s


# --------------------------------------------------------------------------
# expo_check: a clean setup for check() (test_check.py plants each
# misconfiguration into it) with an exposed security_invoker view
# (test_exposure.py).

CHECK_DB = "expo_check"
CHECK_SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, org_id integer NOT NULL, name text NOT NULL);
INSERT INTO accounts (org_id, name) VALUES (1, 'a'), (2, 'b'), (2, 'c');
CREATE TABLE ledger (id serial PRIMARY KEY, org_id integer NOT NULL, amount integer NOT NULL);
INSERT INTO ledger (org_id, amount) VALUES (1, 10), (1, 20), (2, 30);
CREATE TABLE app_config (key text PRIMARY KEY, value text);
"""
# PostgreSQL 14 has no security_invoker views, and bi_access exposes no view there.
INVOKER_VIEW = "CREATE VIEW accounts_v WITH (security_invoker = true) AS SELECT id, org_id, name FROM accounts;"


@pytest.fixture(scope="session")
def check_db(pair, bi):
    if PG_MAJOR < 15:
        # 14 lets PUBLIC create in schema public, which check() reports; a
        # clean setup revokes it, as 15 and later do by default.
        schema = "REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n" + CHECK_SCHEMA
    else:
        schema = CHECK_SCHEMA
    if VIEWS_CAN_BE_SECURITY_INVOKER:
        create_database(pair, CHECK_DB, schema + INVOKER_VIEW,
                        "SELECT * FROM bi_access.sync_tables(); SELECT bi_access.expose_table('accounts_v');")
    else:
        create_database(pair, CHECK_DB, schema, "SELECT * FROM bi_access.sync_tables();")
    return CHECK_DB


@pytest.fixture(scope="session")
def check_bi(request, pair, check_db, secrets):
    return bi_for(request, pair, check_db, secrets)


@pytest.fixture(scope="session")
def check_cred(check_bi):
    return check_bi.generate("1")
