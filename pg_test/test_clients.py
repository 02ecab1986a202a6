"""generate() hands out details that real clients use as they are, against the
read replica, and that see exactly the credential's org; application code
calls generate() with its own ids as each driver binds them (Python ints and
UUIDs by psycopg 2 and 3, JavaScript numbers by node-postgres, longs and UUIDs
by pgjdbc); and every client joins its org's rows with a shared table."""

import uuid
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import sqlalchemy

from bi import ADMIN_PASSWORD, ADMIN_ROLE, unique_label
from clients import (jdbc_rows, node_rows, psql_rows, psycopg2_rows, psycopg3_rows, sqlalchemy_engine,
                     sqlalchemy_rows)
from tenants import UUID_B, visible

ORG = "101"


@pytest.fixture(scope="module")
def cred(bi, saas_db):
    return bi.generate(ORG, org_name=saas_db.orgs[ORG])


def test_details_name_the_replica(cred, pair, saas_db):
    d = cred.details
    assert (d["database_type"], d["host"], int(d["port"]), d["database"], d["schema"], d["sslmode"]) == \
           ("postgresql", "127.0.0.1", pair.replica.port, saas_db.dbname, "public", "prefer")
    assert d["display_name"] == f"BI - {saas_db.orgs[ORG]}"


def test_url_is_a_libpq_uri_of_the_same_fields(cred, pair):
    url = urlsplit(cred.url)
    assert url.scheme == "postgresql"
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", pair.replica.port, "/saas")
    assert (unquote(url.username), unquote(url.password)) == (cred.role, cred.password)
    assert parse_qs(url.query) == {"sslmode": ["prefer"]}


def test_jdbc_url_carries_the_same_fields(cred, pair):
    prefix = f"jdbc:postgresql://127.0.0.1:{pair.replica.port}/saas?"
    assert cred.jdbc_url.startswith(prefix), cred.jdbc_url
    # parse_qs decodes like pgjdbc does ('+' is a space), so a badly encoded
    # password shows up here as a mismatch.
    params = parse_qs(cred.jdbc_url[len(prefix):], strict_parsing=True)
    assert params == {"user": [cred.role], "password": [cred.password], "sslmode": ["prefer"]}


@pytest.mark.parametrize("client", [psql_rows, psycopg2_rows], ids=["psql", "psycopg2"])
def test_url_logs_in_to_the_replica_and_sees_only_its_org(client, cred, saas_db):
    assert visible(client(cred.url, saas_db.counts_sql())) == saas_db.rows_of(ORG)
    assert client(cred.url, "SELECT pg_is_in_recovery()") in ([["t"]], [["True"]])


def test_jdbc_url_as_returned_sees_only_its_org(cred, saas_db):
    assert visible(jdbc_rows(cred.jdbc_url, saas_db.counts_sql())) == saas_db.rows_of(ORG)


def test_sqlalchemy_test_connection_then_query(cred, saas_db):
    """What a BI tool's "Test Connection" and schema browser do, then a query."""
    engine = sqlalchemy_engine(cred.url)
    try:
        inspector = sqlalchemy.inspect(engine)
        assert "public" in inspector.get_schema_names()
        tables = set(inspector.get_table_names(schema="public"))
        for table in saas_db.tables:
            assert table.name in tables
            columns = {c["name"] for c in inspector.get_columns(table.name, schema="public")}
            assert table.org_column in columns
        assert visible(sqlalchemy_rows(engine, saas_db.counts_sql())) == saas_db.rows_of(ORG)
    finally:
        engine.dispose()


def test_connection_details_repeat_the_same_login(bi, cred, saas_db):
    again = bi.one("connection_details", cred.role)
    assert again == cred.details
    assert visible(psycopg2_rows(again["url"], saas_db.counts_sql())) == saas_db.rows_of(ORG)


# ---- ids as application code passes them -----------------------------------
# Each driver calls generate() with the org id bound as the driver binds that
# type, as the application's admin role; what it returns logs in and sees that
# org's rows. The SQL differs only in each driver's placeholder.
GENERATE = "SELECT username, url FROM bi_access.generate({0}, {1})"


def admin_url(pair, dbname: str) -> str:
    return f"postgresql://{ADMIN_ROLE}:{quote(ADMIN_PASSWORD, safe='')}@127.0.0.1:{pair.primary.port}/{dbname}" \
           "?sslmode=disable"


def generate_with(driver: str, pair, dbname: str, org, label: str) -> list[str]:
    url = admin_url(pair, dbname)
    if driver == "psycopg2":
        return psycopg2_rows(url, GENERATE.format("%s", "%s"), (org, label))[0]
    if driver == "psycopg3":
        return psycopg3_rows(url, GENERATE.format("%s", "%s"), (org, label))[0]
    if driver == "node-postgres":
        value = org if isinstance(org, int) else str(org)
        return node_rows(url, GENERATE.format("$1", "$2"), [value, label])[0]
    assert driver == "pgjdbc", driver
    jdbc = (f"jdbc:postgresql://127.0.0.1:{pair.primary.port}/{dbname}?user={ADMIN_ROLE}"
            f"&password={quote(ADMIN_PASSWORD, safe='')}&sslmode=disable")
    kind = "long" if isinstance(org, int) else "uuid"
    return jdbc_rows(jdbc, GENERATE.format("?", "?"), [f"{kind}:{org}", f"string:{label}"])[0]


DRIVERS = ["psycopg2", "psycopg3", "node-postgres", "pgjdbc"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_integer_id_bound_by_each_driver_makes_the_orgs_credential(driver, pair, bi, saas_db, secrets):
    username, url = generate_with(driver, pair, saas_db.dbname, 202, unique_label(driver))
    secrets.add(unquote(urlsplit(url).password))
    recorded = bi.query("SELECT org_id FROM bi_access.credentials WHERE role_name = %s", (username,))
    assert recorded == [{"org_id": "202"}]
    pair.wait_replayed()
    assert visible(psycopg2_rows(url, saas_db.counts_sql())) == saas_db.rows_of("202")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_uuid_id_bound_by_each_driver_makes_the_orgs_credential(driver, pair, crm_bi, crm_db, secrets):
    username, url = generate_with(driver, pair, crm_db.dbname, uuid.UUID(UUID_B), unique_label(driver))
    secrets.add(unquote(urlsplit(url).password))
    recorded = crm_bi.query("SELECT org_id FROM bi_access.credentials WHERE role_name = %s", (username,))
    assert recorded == [{"org_id": UUID_B}]
    pair.wait_replayed()
    assert visible(psycopg2_rows(url, crm_db.counts_sql())) == crm_db.rows_of(UUID_B)


# ---- joins with a shared table -----------------------------------------------
JOIN = "SELECT p.name, l.label FROM projects p JOIN project_labels l ON l.name = p.name ORDER BY 1"


@pytest.fixture(scope="module")
def shared_labels(pair, saas_db):
    """A reference table of labels, shared without its internal column."""
    pair.primary.sql("CREATE TABLE project_labels (name text PRIMARY KEY, label text NOT NULL, internal text); "
                     "INSERT INTO project_labels SELECT DISTINCT name, upper(name), 'internal ' || name "
                     "FROM projects; "
                     "SELECT bi_access.share_table('project_labels', ARRAY['name', 'label'])",
                     dbname=saas_db.dbname)
    pair.wait_replayed()
    yield
    pair.primary.sql("DROP TABLE project_labels", dbname=saas_db.dbname)
    pair.wait_replayed()


JOIN_CLIENTS = {
    "psql": lambda cred: psql_rows(cred.url, JOIN),
    "psycopg2": lambda cred: psycopg2_rows(cred.url, JOIN),
    "psycopg3": lambda cred: psycopg3_rows(cred.url, JOIN),
    "sqlalchemy": lambda cred: sqlalchemy_rows(sqlalchemy_engine(cred.url), JOIN),
    # node-postgres never falls back from SSL to plaintext (test_node.py) and
    # these servers have no SSL: the url as bi_access.sslmode = 'disable'
    # would hand it out, which README's Node.js section says such a server
    # needs.
    "node-postgres": lambda cred: node_rows(cred.url.replace("sslmode=prefer", "sslmode=disable"), JOIN),
    "pgjdbc": lambda cred: jdbc_rows(cred.jdbc_url, JOIN),
}


@pytest.mark.parametrize("client", list(JOIN_CLIENTS))
def test_each_client_joins_its_rows_with_a_shared_table(client, cred, pair, saas_db, shared_labels):
    want = [[name, label] for name, label in pair.primary.sql(
        JOIN.replace("ORDER BY", "WHERE p.org_id = %s ORDER BY"), (int(ORG),), dbname=saas_db.dbname)]
    assert len(want) == 3
    assert JOIN_CLIENTS[client](cred) == want
