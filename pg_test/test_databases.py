"""Several databases of one cluster with bi_access: each has its own reader
group, credential role names (cluster-wide) never collide, and a credential
logs in only to the database that manages it (the login gate, FATAL 28000:
src/guard/home.rs), even where PUBLIC may connect to the others and they
have the same tables and the same org keys. Run in both load modes
(pg_test/run.sh)."""

from __future__ import annotations

import re

import psycopg2
import pytest

from bi import BiAccess, login
from libpq import Connection, LoginRefused, login_state
from probe import OK, PERMISSION_DENIED, Session, create_database, reader_group

NOT_ITS_DATABASE = "28000"

DBS = ("multi_a", "multi_b")
ORGS = ("1", "2")


def schema(tag: str) -> str:
    """The same tables and org keys in both databases; rows say which database
    they come from."""
    return f"""
CREATE TABLE things (id serial PRIMARY KEY, org_id integer NOT NULL, label text NOT NULL);
INSERT INTO things (org_id, label)
  SELECT o, '{tag}-thing-' || o || '.' || g FROM (VALUES (1, 2), (2, 3)) v(o, n), generate_series(1, n) g;
CREATE TABLE tags (id serial PRIMARY KEY, org_id text NOT NULL, tag text NOT NULL);
INSERT INTO tags (org_id, tag) VALUES ('1', '{tag}-tag-1'), ('2', '{tag}-tag-2'), ('2', '{tag}-tag-2b');
"""


EXPOSED = ("things", "tags")
BI_RELATIONS = ("bi_access.credential", "bi_access.event", "bi_access.config", "bi_access.exposed_table",
                "bi_access.credentials", "bi_access.events")


@pytest.fixture(scope="module")
def dbs(pair, bi, secrets, request) -> dict[str, BiAccess]:
    out = {}
    for db in DBS:
        create_database(pair, db, schema(db[-1].upper()), "SELECT * FROM bi_access.sync_tables();")
        # PUBLIC may connect (the default, said out loud): only the login
        # gate keeps a credential of the other database out.
        pair.primary.sql(f"GRANT CONNECT ON DATABASE {db} TO PUBLIC")
        out[db] = BiAccess(pair, db, secrets)
        request.addfinalizer(out[db].close)
    pair.wait_replayed()
    return out


@pytest.fixture(scope="module")
def creds(dbs) -> dict[str, dict]:
    """Per database, one credential per org; the same org keys in both."""
    return {db: {org: b.generate(org) for org in ORGS} for db, b in dbs.items()}


def other(db: str) -> str:
    return DBS[1] if db == DBS[0] else DBS[0]


def visit(cred, server, dbname: str) -> Session:
    """The credential's login pointed at another database of the cluster."""
    return Session(login({**cred.login_args(server), "dbname": dbname}))


def test_each_database_has_its_own_reader_group(pair, dbs, saas_db, crm_db):
    readers = {db: reader_group(pair.primary, db) for db in (*DBS, saas_db.dbname, crm_db.dbname)}
    assert len(set(readers.values())) == len(readers), readers
    for db, reader in readers.items():
        assert re.fullmatch(r"bi_access_reader_[0-9a-f]{12}", reader), reader
        login_, member_of = pair.primary.sql(
            "SELECT rolcanlogin, array(SELECT roleid::regrole::text FROM pg_auth_members WHERE member = r.oid) "
            "FROM pg_roles r WHERE rolname = %s", (reader,))[0]
        # A member of bi_access_credential only: SET ROLE to it is still a
        # credential for the pass-through policy.
        assert (login_, member_of) == (False, ["bi_access_credential"]), reader
        # Its grants are on its own database's tables only.
        for other_db in readers:
            if other_db != db:
                grants = pair.primary.value(
                    "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a "
                    "WHERE a.grantee = %s::regrole", (reader,), dbname=other_db)
                assert grants == 0, f"{reader} of {db} has grants in {other_db}"


def test_credential_belongs_to_its_own_reader_group_only(pair, dbs, creds):
    """Its database's reader group, plus the cluster-wide bi_access_credential
    group that marks every BI login (it holds no privilege)."""
    for db in DBS:
        mine, theirs = reader_group(pair.primary, db), reader_group(pair.primary, other(db))
        for cred in creds[db].values():
            groups = {g for (g,) in pair.primary.sql(
                "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = %s::regrole", (cred.role,))}
            assert groups == {mine, "bi_access_credential"}, f"{cred.role} of {db} belongs to {groups}, {theirs} is {other(db)}'s"


def test_credential_role_names_never_collide(pair, dbs):
    """The same (org, label) in both databases, twenty times: forty distinct
    roles, each the prefix and 16 random characters, none carrying an org
    key or a database name."""
    roles_before = pair.primary.role_names()
    made = {db: [] for db in DBS}
    try:
        for i in range(20):
            for db, b in dbs.items():
                made[db].append(b.generate(ORGS[i % 2], f"same-label-{i}", wait_replica=False).role)
        names = made[DBS[0]] + made[DBS[1]]
        assert len(set(names)) == 40
        assert set(names) == pair.primary.role_names() - roles_before
        for name in names:
            assert re.fullmatch(r"bi_[a-z0-9]{16}", name), name
            assert not any(db in name for db in DBS)
    finally:
        for db, b in dbs.items():
            for role in made[db]:
                b.one("delete", role)


def test_credential_logs_in_to_its_own_database_only(creds, server, pair):
    """PUBLIC may connect to the other database, to postgres and to template1:
    each refuses the credential at login (28000, naming the database), on
    the primary and the replica; its own database lets it in. Counted: no
    session of the credential is left in another database."""
    for db in DBS:
        for org, cred in creds[db].items():
            for elsewhere in (other(db), "postgres", "template1"):
                state = login_state({**cred.login_args(server), "dbname": elsewhere})
                assert state == NOT_ITS_DATABASE, f"{db}'s credential of org {org} in {elsewhere}: {state}"
            assert login_state({**cred.login_args(server), "dbname": db}) == OK
            left = server.value("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname <> %s",
                                (cred.role, db))
            assert left == 0, f"{cred.role}: {left} sessions outside {db}"


def test_refusal_names_the_database_and_the_fix(creds, server):
    cred = creds[DBS[0]]["1"]
    with pytest.raises(LoginRefused) as refused:
        Connection({**cred.login_args(server), "dbname": "template1"}).close()
    assert refused.value.state == NOT_ITS_DATABASE
    assert "logs in only to the database that manages it, not to database template1" in refused.value.message
    assert "Connect to the database named in the credential's connection details." in refused.value.message


def test_credential_cannot_take_the_other_reader_group(creds, server, pair):
    for db in DBS:
        theirs = reader_group(pair.primary, other(db))
        cred = creds[db]["1"]
        s = visit(cred, server, db)
        try:
            outcome = s.run(f"SET ROLE {theirs}")
            assert outcome.state == PERMISSION_DENIED, f"in {db}: {outcome}"
        finally:
            s.close()


def test_own_database_still_works_for_each(creds, server):
    for db in DBS:
        for org, cred in creds[db].items():
            s = visit(cred, server, db)
            try:
                rows = s.rows("SELECT org_id, label FROM things ORDER BY id")
                assert rows and {r[0] for r in rows} == {int(org)}
                assert all(r[1].startswith(f"{db[-1].upper()}-thing-{org}.") for r in rows), rows
            finally:
                s.close()


def test_reader_group_of_another_database_granted_by_mistake_gives_no_row(pair, dbs, creds):
    """Even a credential wrongly made a member of the other database's reader
    group cannot log in there (that database has no record of it), on the
    primary and the replica. check() of its own database reports the stray
    membership."""
    a, b = DBS
    cred = creds[a]["1"]
    reader_b = reader_group(pair.primary, b)
    pair.primary.sql(f"GRANT {reader_b} TO {cred.role}")
    try:
        pair.wait_replayed()
        for server in (pair.primary, pair.replica):
            state = login_state({**cred.login_args(server), "dbname": b})
            assert state == NOT_ITS_DATABASE, f"{b} on the {server.name}: {state}"
        found = dbs[a].query("SELECT * FROM bi_access.check() WHERE object = %s", (f"role {cred.role}",))
        assert found, "check() does not report the stray membership"
    finally:
        pair.primary.sql(f"REVOKE {reader_b} FROM {cred.role}")


def test_public_grant_in_another_database_does_not_reach_a_credential(pair, dbs, creds):
    """The other database's application grants SELECT on an exposed table to
    PUBLIC (any login may read it: its own choice). bi_access turned RLS on
    there and added its pass-through policy TO PUBLIC, and the credential of
    this database is not in that database's reader group, so neither the
    guard nor the org lookup applies to it: the login gate keeps it out
    (DESIGN: "a role from one database must see nothing in another")."""
    a, b = DBS
    pair.primary.sql("GRANT SELECT ON things TO PUBLIC", dbname=b)
    try:
        pair.wait_replayed()
        for server in (pair.primary, pair.replica):
            # Control: the grant is real (a plain login reads every row).
            assert server.value("SELECT count(*) FROM things", dbname=b) == 5
            state = login_state({**creds[a]["1"].login_args(server), "dbname": b})
            assert state == NOT_ITS_DATABASE, f"a credential of {a} in {b} on the {server.name}: {state}"
    finally:
        pair.primary.sql("REVOKE SELECT ON things FROM PUBLIC", dbname=b)


def test_revoking_public_connect_keeps_other_credentials_out_and_own_in(pair, dbs, creds):
    """What check() advises (REVOKE CONNECT ... FROM PUBLIC) works: the other
    database's credentials cannot log in at all, its own still can (the
    reader group holds CONNECT)."""
    a, b = DBS
    pair.primary.sql(f"REVOKE CONNECT ON DATABASE {b} FROM PUBLIC")
    try:
        pair.wait_replayed()
        for server in (pair.primary, pair.replica):
            with pytest.raises(psycopg2.OperationalError) as info:
                visit(creds[a]["1"], server, b).close()
            assert "permission denied for database" in str(info.value)
            s = visit(creds[b]["1"], server, b)
            try:
                assert s.run("SELECT count(*) FROM things").state == OK
            finally:
                s.close()
    finally:
        pair.primary.sql(f"GRANT CONNECT ON DATABASE {b} TO PUBLIC")
