"""DROP EXTENSION refuses while live credentials exist, and once they are
deleted it drops cleanly and can be created again. Each test uses a database
of its own, and runs late (phase 1): a DROP gone wrong could take the
cluster-wide bi_access_admin with it."""

import pytest

from bi import BiAccess, can_login, login, raises_sqlstate

pytestmark = pytest.mark.phase(1)

DEFAULT_ROLE_PREFIX = "bi_"
TABLES = """
CREATE TABLE things (id serial PRIMARY KEY, org_id integer NOT NULL);
INSERT INTO things (org_id) VALUES (1), (2), (2);
"""
EXTENSION = """
CREATE EXTENSION bi_access;
SELECT bi_access.expose_table('things');
SELECT * FROM bi_access.sync_tables();
"""


def create_bi_access(pair, dbname: str) -> None:
    pair.primary.sql(EXTENSION, dbname=dbname)


def new_database(pair, secrets, dbname: str) -> BiAccess:
    pair.primary.sql(f"CREATE DATABASE {dbname}")
    pair.primary.sql(TABLES, dbname=dbname)
    create_bi_access(pair, dbname)
    return BiAccess(pair, dbname, secrets)


def extension_exists(pair, dbname: str) -> bool:
    return bool(pair.primary.sql("SELECT 1 FROM pg_extension WHERE extname = 'bi_access'", dbname=dbname))


@pytest.mark.parametrize("cascade", [False, True], ids=["plain", "cascade"])
def test_drop_refused_while_credentials_are_live(pair, saas_db, secrets, cascade):
    """The next test drops the same setup once its credentials are deleted, so
    a refusal here is owed to the live credential. Both spellings are refused
    by bi_access's drop guard (2BP01, its own message: a plain DROP would
    otherwise meet PostgreSQL's dependency check, also 2BP01), CASCADE too:
    it would orphan the credential's role. Afterwards the credential still
    sees its org's rows, and only those, on the primary and the replica."""
    dbname = f"drop_refused_{'cascade' if cascade else 'plain'}"
    bi = new_database(pair, secrets, dbname)
    cred = bi.generate("1")
    bi.close()
    with raises_sqlstate("2BP01") as info:
        pair.primary.sql("DROP EXTENSION bi_access" + (" CASCADE" if cascade else ""), dbname=dbname)
    assert "bi_access cannot be dropped while live credentials exist" in info.value.pgerror, info.value.pgerror
    assert extension_exists(pair, dbname)
    own = pair.primary.sql("SELECT * FROM things WHERE org_id = 1 ORDER BY 1", dbname=dbname)
    assert 0 < len(own) < len(pair.primary.sql("SELECT * FROM things", dbname=dbname))
    pair.wait_replayed()
    for server in (pair.primary, pair.replica):
        conn = login(cred.login_args(server))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM things ORDER BY 1")
                assert cur.fetchall() == own, server.name
        finally:
            conn.close()


def test_drop_after_delete_leaves_no_role_and_create_works_again(pair, saas_db, secrets):
    roles_before = pair.primary.role_names()
    bi = new_database(pair, secrets, "drop_clean")
    for org in ("1", "2"):
        bi.one("delete", bi.generate(org).role)
    bi.close()

    pair.primary.sql("DROP EXTENSION bi_access", dbname="drop_clean")

    leftover = {r for r in pair.primary.role_names() - roles_before if r.startswith(DEFAULT_ROLE_PREFIX)}
    assert leftover == set()
    assert "bi_access_admin" in pair.primary.role_names(), "other databases still need bi_access_admin"

    create_bi_access(pair, "drop_clean")
    bi = BiAccess(pair, "drop_clean", secrets)
    try:
        assert can_login(bi.generate("2").login_args(pair.replica))
    finally:
        bi.close()
