"""README's restore steps, replayed (property 9, issue 27): a database
dumped with pg_dump and restored into another cluster, with its roles
(`pg_dumpall --roles-only`) and without, then the one call
`SELECT * FROM bi_access.adopt(key => …)` and check()'s fixes, each run as
it is worded (a psql script). Afterwards: revoked stays revoked, expired
stays expired, read_write keeps its data, every reveal matches, each live
credential reads exactly its org's rows (counted against the superuser's
count) on the new primary and its replica, and check() reports no error the
original did not. adopt() without the key, on a database whose passwords
need it, refuses (55000) before it changes anything; a generate made too
early is re-sealed by the import.
"""

from __future__ import annotations

import psycopg2
import pytest

from bi import BiAccess, Credential, assert_login_refused
from probe import run_fix, session
from test_custody import restore_elsewhere
from test_restore_elsewhere import NOTES, build_source, custom_schema

OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"
LIVE = ("active", "read_write", "reader_of_4")
ORG_OF = {"active": 1, "deactivated": 2, "expired": 3, "read_write": 4, "reader_of_4": 4}


def errors(server, dbname: str) -> set[str]:
    """check()'s errors but those about the server's settings (each test
    cluster has its own: the harness's pair sets bi_access.sslmode)."""
    return {obj for sev, obj in server.sql("SELECT severity, object FROM bi_access.check()", dbname=dbname)
            if sev == "error" and not obj.startswith("setting ")}


@pytest.fixture(scope="module")
def source(pair, saas_db, secrets):
    dbname = "steps_source"
    creds = build_source(pair, secrets, dbname)
    exported = pair.primary.value("SELECT bi_access.export_key()", dbname=dbname)
    baseline = errors(pair.primary, dbname)
    return dbname, creds, exported, baseline


def reads_its_rows(elsewhere, dbname: str, kind: str, cred: Credential) -> None:
    org = ORG_OF[kind]
    expected = elsewhere.primary.value("SELECT count(*) FROM accounts WHERE org_id = %s", (org,), dbname=dbname)
    assert expected > 0
    elsewhere.wait_replayed()
    for server in (elsewhere.primary, elsewhere.replica):
        with session(cred, server) as s:
            assert s.rows("SELECT DISTINCT org_id FROM accounts") == [(org,)], (kind, server.name)
            assert s.value("SELECT count(*) FROM accounts") == expected, (kind, server.name)


def test_steps_with_the_roles(pair, source, secrets):
    dbname, creds, exported, baseline = source
    elsewhere = restore_elsewhere(pair, dbname, with_roles=True)
    try:
        server = elsewhere.primary
        # The restore's CREATE EXTENSION made this database's reader group;
        # the source cluster's came with the roles.
        reader = server.value("SELECT reader_role::text FROM bi_access.config", dbname=dbname)
        roles = [c.role for c in creds.values()]
        olds = [g for (g,) in server.sql(
            "SELECT DISTINCT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = ANY (%s) "
            "AND starts_with(g.rolname, 'bi_access_reader_') AND g.rolname <> %s", (roles, reader))]
        assert len(olds) == 1, olds
        assert server.sql("SELECT 1 FROM pg_auth_members WHERE roleid = %s::regrole", (olds[0],)), \
            "control: the restored roles are members of the source's reader group"
        steps = server.sql("SELECT step, object FROM bi_access.adopt(key => %s)", (exported,), dbname=dbname)
        assert ("key", "bi_access key") in steps
        assert not [s for s in steps if s[0] == "regenerate"], steps
        bi = BiAccess(elsewhere, dbname, secrets)
        try:
            status = {kind: bi.status(cred.role) for kind, cred in creds.items()}
            assert status == {"active": "active", "deactivated": "deactivated", "expired": "expired",
                              "read_write": "active", "reader_of_4": "active"}
            for kind in LIVE:
                assert bi.one("connection_details", creds[kind].role)["password"] == creds[kind].password, kind
                reads_its_rows(elsewhere, dbname, kind, creds[kind])
            assert_login_refused(creds["deactivated"].login_args(server))
            with session(creds["read_write"], server) as s:
                assert s.value("SELECT count(*) FROM notes") == NOTES
            # The source cluster's reader group: no credential is a member any more.
            for group in olds:
                left = server.sql("SELECT member::regrole::text FROM pg_auth_members WHERE roleid = %s::regrole",
                                  (group,))
                assert left == [], f"{group} still has {left}"
            # check(): nothing about the credentials; the old group, with a
            # fix that is a psql script. (pg_dumpall brought every role of the
            # test cluster: other databases' roles are reported too.)
            found = {obj: fix for sev, obj, fix in
                     server.sql("SELECT severity, object, fix FROM bi_access.check()", dbname=dbname)
                     if sev == "error"}
            assert {f"role {r}" for r in roles} & set(found) == set(), found
            assert {f"role {g}" for g in olds} <= set(found), found
            for group in olds:
                run_fix(server, found[f"role {group}"])
            # Harmless: every live credential still reads its rows; RLS stays on.
            for kind in LIVE:
                reads_its_rows(elsewhere, dbname, kind, creds[kind])
            assert server.value("SELECT relrowsecurity FROM pg_class WHERE oid = 'accounts'::regclass",
                                dbname=dbname) is True
            after = errors(server, dbname)
            assert after & ({f"role {r}" for r in roles} | {f"role {g}" for g in olds}) == set(), after
            assert server.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (olds[0],)) == []
        finally:
            bi.close()
    finally:
        elsewhere.destroy()


def test_steps_without_the_roles(pair, source, secrets):
    dbname, creds, exported, baseline = source
    elsewhere = restore_elsewhere(pair, dbname, with_roles=False)
    try:
        server = elsewhere.primary
        steps = server.sql("SELECT step, object FROM bi_access.adopt(key => %s)", (exported,), dbname=dbname)
        assert sorted(o for s, o in steps if s == "regenerate") == sorted(c.role for c in creds.values()), steps
        bi = BiAccess(elsewhere, dbname, secrets)
        try:
            status = {kind: bi.status(cred.role) for kind, cred in creds.items()}
            assert status == {"active": "active", "deactivated": "deactivated", "expired": "expired",
                              "read_write": "active", "reader_of_4": "active"}
            new = {kind: Credential(bi.one("connection_details", creds[kind].role)) for kind in LIVE}
            for kind in LIVE:
                assert new[kind].password != creds[kind].password, kind
                reads_its_rows(elsewhere, dbname, kind, new[kind])
            # Revoked stays revoked (NOLOGIN), expired stays expired.
            assert server.value("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                (creds["deactivated"].role,)) is False
            assert server.value("SELECT rolvaliduntil < now() FROM pg_roles WHERE rolname = %s",
                                (creds["expired"].role,)) is True
            schema, owner, reader = custom_schema(server, dbname)
            with session(new["read_write"], server) as s:
                assert s.value("SELECT count(*) FROM notes") == NOTES
                s.rows("INSERT INTO notes VALUES (200, 'after adopt')")
            with session(new["reader_of_4"], server) as s:
                assert s.value(f'SELECT count(*) FROM "{schema}".notes') == NOTES + 1
            assert errors(server, dbname) <= baseline
            # A second call changes nothing.
            assert server.sql("SELECT step FROM bi_access.adopt(key => %s)", (exported,), dbname=dbname) == []
        finally:
            bi.close()
    finally:
        elsewhere.destroy()


def test_adopt_needs_the_key_and_an_early_generate_survives_it(pair, source, secrets):
    dbname, creds, exported, baseline = source
    elsewhere = restore_elsewhere(pair, dbname, with_roles=True)
    try:
        server = elsewhere.primary
        with pytest.raises(psycopg2.Error) as info:
            server.sql("SELECT * FROM bi_access.adopt()", dbname=dbname)
        assert info.value.pgcode == OBJECT_NOT_IN_PREREQUISITE_STATE, info.value.pgerror
        assert "bi_access.adopt(key =>" in info.value.pgerror
        bi = BiAccess(elsewhere, dbname, secrets)
        try:
            # Refused before anything: the restored roles are not adopted.
            assert bi.status(creds["active"].role) == "failed"
            early = bi.generate("1", wait_replica=False)
            server.sql("SELECT * FROM bi_access.adopt(key => %s)", (exported,), dbname=dbname)
            for kind in LIVE:
                assert bi.one("connection_details", creds[kind].role)["password"] == creds[kind].password, kind
            assert bi.one("connection_details", early.role)["password"] == early.password
            reads_its_rows(elsewhere, dbname, "active", early)
            assert server.value("SELECT bi_access.rotate_key()", dbname=dbname) > 0
            assert bi.one("connection_details", early.role)["password"] == early.password
        finally:
            bi.close()
    finally:
        elsewhere.destroy()
