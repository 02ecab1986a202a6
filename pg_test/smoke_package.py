"""Smoke test of the installed Debian package (scripts/package-test.sh runs
it after `dpkg -i postgresql-15-bi-access_*.deb`): the packaged extension
creates, exposes, generates, and its credential logs in to the replica with
psql and psycopg2 and sees exactly its org's rows. The fixtures are the
suite's own (conftest.py): they create the extension from the package's files."""

import os
import subprocess

import pytest

from bi import raises_sqlstate
from clients import psql_rows, psycopg2_rows
from cluster import PG_BIN
from tenants import visible


def test_the_server_loads_the_packaged_files(pair):
    deb = os.environ.get("BI_PACKAGE_DEB")
    if not deb:
        pytest.fail("run through scripts/package-test.sh (make package-test)", pytrace=False)
    libdir = pair.primary.value("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")
    sharedir = pair.primary.value("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'")
    packaged = subprocess.run(["dpkg-deb", "--contents", deb], capture_output=True, text=True,
                              check=True).stdout
    assert f".{libdir}/bi_access.so" in packaged, packaged
    assert f".{libdir}/bi_access_gate.so" in packaged, packaged
    assert f".{sharedir}/extension/bi_access.control" in packaged, packaged
    assert str(PG_BIN).startswith("/usr/lib/postgresql/")


def test_create_generate_login_isolated(pair, bi, saas_db):
    version = pair.primary.value("SELECT extversion FROM pg_extension WHERE extname = 'bi_access'",
                                 dbname=saas_db.dbname)
    assert version, "CREATE EXTENSION bi_access"
    orgs = list(saas_db.orgs)[:2]
    creds = {org: bi.generate(org) for org in orgs}  # waits for the replica
    for org, cred in creds.items():
        for client in (psql_rows, psycopg2_rows):
            seen = visible(client(cred.url, saas_db.counts_sql()))
            assert seen == saas_db.rows_of(org), f"{client.__name__} as org {org}"
        assert psycopg2_rows(cred.url, "SELECT pg_is_in_recovery()") == [["True"]]
    with raises_sqlstate("42501"):
        psycopg2_rows(creds[orgs[0]].url, f"SELECT * FROM {saas_db.hidden_table}")
