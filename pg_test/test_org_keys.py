"""generate with the org key as application code holds it (issue 28): psycopg2
sends a Python int as an integer literal (it was `generate(integer, unknown)
does not exist`, 42883) and a uuid.UUID as a uuid; each reaches its generate
overload, the record keeps the key as the type prints it, and the credential
sees exactly its org's rows, counted against a superuser's count, on the
primary and on the replica."""

import uuid

import psycopg2
import psycopg2.extras
import pytest

from bi import unique_label
from tenants import UUID_A, visible

# (database, the key as the application holds it, the SQL psycopg2 sends for
# it, the org key recorded)
KEYS = {
    "python int": ("saas", 101, "101", "101"),
    "uuid.UUID": ("crm", psycopg2.extras.UUID_adapter(uuid.UUID(UUID_A)), f"'{UUID_A}'::uuid", UUID_A),
}


def superuser_rows(pair, db, org: str) -> set:
    """What each exposed table holds of `org`, read by a superuser now."""
    return {row for row in visible(pair.primary.sql(db.counts_sql(), dbname=db.dbname)) if row[1] == org}


@pytest.fixture(scope="module")
def creds(pair, tenants):
    """One credential per key, generated through psycopg2's own parameter
    passing (BiAccess.call: `generate(%s, %s)`)."""
    made = {}
    for case, (dbname, key, sent, _) in KEYS.items():
        _, bi = tenants[dbname]
        with bi.connect() as conn, conn.cursor() as cur:
            assert cur.mogrify("SELECT %s", (key,)).decode() == f"SELECT {sent}", case
        made[case] = bi.one("generate", key, unique_label("key"))
    pair.wait_replayed()
    return made


@pytest.mark.parametrize("case", list(KEYS))
def test_generate_takes_the_key_as_the_application_holds_it(pair, tenants, creds, server, case):
    dbname, _, _, org = KEYS[case]
    db, bi = tenants[dbname]
    details = creds[case]
    assert bi.record(details["username"])["org_id"] == org
    expected = superuser_rows(pair, db, org)
    assert expected and expected == db.rows_of(org), f"{org} has rows in {dbname}"
    conn = psycopg2.connect(**server.tcp_args(dbname, details["username"], details["password"]))
    try:
        with conn.cursor() as cur:
            cur.execute(db.counts_sql())
            seen = visible(cur.fetchall())
    finally:
        conn.close()
    assert seen == expected


def test_a_python_float_reaches_no_generate(bi):
    """numeric converts to neither bigint nor text implicitly: 42883, as
    DESIGN.md says, rather than a key rounded or printed as '101.0'."""
    with pytest.raises(psycopg2.errors.UndefinedFunction):
        bi.query("SELECT * FROM bi_access.generate(%s, %s)", (101.0, unique_label("float")))
