"""generate() hands out details that real clients use as they are, against the
read replica, and that see exactly the credential's org."""

from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import sqlalchemy

from clients import jdbc_rows, psql_rows, psycopg2_rows, sqlalchemy_engine, sqlalchemy_rows
from tenants import visible

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
