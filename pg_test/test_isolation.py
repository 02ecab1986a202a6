"""Each credential sees its org's rows and nothing else: not another org's,
not an unexposed table, not bi_access's own tables, not another database."""

import psycopg2
import pytest

from bi import raises_sqlstate
from libpq import login_state
from clients import psycopg2_rows
from tenants import visible

PERMISSION_DENIED = "42501"


def rows_seen(cred, db) -> set:
    return visible(psycopg2_rows(cred.url, db.counts_sql()))


@pytest.mark.parametrize("dbname", ["saas", "crm"])
def test_orgs_side_by_side_see_only_their_own_rows(tenants, dbname):
    """Two orgs of one database at once: integer, bigint and text org columns
    in saas, uuid (and text holding a uuid) in crm."""
    db, bi = tenants[dbname]
    creds = {org: bi.generate(org) for org in list(db.orgs)[:2]}
    for org, cred in creds.items():
        assert rows_seen(cred, db) == db.rows_of(org), f"org {org} in {dbname}"


def test_unexposed_table_is_not_readable(bi, saas_db):
    cred = bi.generate("101")
    with raises_sqlstate(PERMISSION_DENIED):
        psycopg2_rows(cred.url, f"SELECT * FROM {saas_db.hidden_table}")


@pytest.mark.parametrize("relation", ["bi_access.credentials", "bi_access.events"])
def test_credential_cannot_read_bi_access_views(bi, relation):
    cred = bi.generate("101")
    with raises_sqlstate(PERMISSION_DENIED):
        psycopg2_rows(cred.url, f"SELECT * FROM {relation}")


def test_credential_cannot_call_management_functions(bi):
    cred = bi.generate("101")
    with raises_sqlstate(PERMISSION_DENIED):
        psycopg2_rows(cred.url, "SELECT * FROM bi_access.generate('202', 'stolen')")


@pytest.mark.parametrize("own, other", [("crm", "saas"), ("saas", "crm")])
def test_credential_sees_nothing_in_another_database(tenants, own, other):
    """Role names are cluster-wide and PUBLIC may CONNECT, so a credential of
    one database could log in to another: the login gate refuses it there
    (28000), so it reads no row of it; its own database lets it in."""
    own_db, bi = tenants[own]
    cred = bi.generate(next(iter(own_db.orgs)))
    args = psycopg2.extensions.parse_dsn(cred.url)
    assert login_state({**args, "dbname": other}) == "28000"
    assert login_state(args) == "ok"
