"""A database restored into another cluster (property 9, issue 27).

Without its roles (no `pg_dumpall --roles-only`), every record reads failed
and `regenerate` recreates each role in the state its record says, never
more: a deactivated credential comes back NOLOGIN and deactivated (activate
then works), an expired one stays expired, an active one logs in again; a
read_write credential gets its org's custom schema groups back, and the
org's restored data stays, readable and writable by its credentials.

With its roles, and a generate made before `import_key` (the key trap):
import_key of the original key still works; the password sealed meanwhile
under the restore's own key is re-sealed with the imported one, so every
reveal, restored or new, gives its password, and rotate_key works after.
"""

from __future__ import annotations

import datetime
import time

import psycopg2
import pytest

from bi import BiAccess, assert_login_refused, can_login
from probe import session
from test_custody import restore_elsewhere

SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, org_id bigint NOT NULL);
INSERT INTO accounts (org_id) VALUES (1), (2), (3), (4), (4);
"""
EXPOSE = "CREATE EXTENSION bi_access; SELECT bi_access.expose_table('accounts');"
NOTES = 3


def build_source(pair, secrets, dbname: str) -> dict:
    """Credentials of every kind a restore must bring back: active,
    deactivated, expired, read_write (with rows in its custom schema) and a
    read credential of the same org."""
    pair.primary.sql(f"CREATE DATABASE {dbname}")
    pair.primary.sql(SCHEMA + EXPOSE, dbname=dbname)
    bi = BiAccess(pair, dbname, secrets)
    try:
        bi.call("set_target", "primary", "127.0.0.1", pair.primary.port, "disable")
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
        creds = {
            "active": bi.generate("1"),
            "deactivated": bi.generate("2"),
            "expired": bi.generate("3", valid_until=soon.isoformat()),
            "read_write": bi.generate("4", scope="read_write", target="primary"),
            "reader_of_4": bi.generate("4"),
        }
        bi.one("revoke", creds["deactivated"].role)
        with session(creds["read_write"], pair.primary) as s:
            s.rows("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            s.rows(f"INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, {NOTES}) g")
        time.sleep(max(0.0, (soon - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 0.5)
        assert bi.status(creds["expired"].role) == "expired"
    finally:
        bi.close()
    return creds


@pytest.fixture(scope="module")
def source(pair, saas_db, secrets):
    dbname = "rs_source"
    creds = build_source(pair, secrets, dbname)
    exported = pair.primary.value("SELECT bi_access.export_key()", dbname=dbname)
    return dbname, creds, exported


def custom_schema(server, dbname: str) -> tuple[str, str, str]:
    return tuple(server.sql("SELECT schema_name::text, owner_role::text, reader_role::text "
                            "FROM bi_access.custom_schema WHERE org_id = '4'", dbname=dbname)[0])


def test_regenerate_after_a_restore_without_roles_restores_what_was_recorded(pair, source, secrets):
    dbname, creds, exported = source
    elsewhere = restore_elsewhere(pair, dbname, with_roles=False)
    try:
        server = elsewhere.primary
        server.sql("SELECT bi_access.import_key(%s)", (exported,), dbname=dbname)
        bi = BiAccess(elsewhere, dbname, secrets)
        try:
            for kind, cred in creds.items():
                assert bi.status(cred.role) == "failed", kind
            schema, owner, reader = custom_schema(server, dbname)
            assert not server.sql("SELECT 1 FROM pg_roles WHERE rolname IN (%s, %s)", (owner, reader))
            new = {kind: bi.regenerate(cred.role) for kind, cred in creds.items()}
            # The documented call after any restore: this database's reader
            # group gets the grants the dump gave the original's.
            bi.query("SELECT * FROM bi_access.sync_tables()")
            status = {kind: bi.status(cred.role) for kind, cred in creds.items()}
            assert status == {"active": "active", "deactivated": "deactivated", "expired": "expired",
                              "read_write": "active", "reader_of_4": "active"}

            can = {kind: server.value("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (cred.role,))
                   for kind, cred in creds.items()}
            assert can == {"active": True, "deactivated": False, "expired": True, "read_write": True,
                           "reader_of_4": True}
            assert_login_refused(new["deactivated"].login_args(server))
            assert_login_refused(new["expired"].login_args(server))
            with session(new["active"], server) as s:
                assert s.rows("SELECT org_id FROM accounts") == [(1,)]
            bi.one("activate", creds["deactivated"].role)
            assert can_login(new["deactivated"].login_args(server))

            # The org's custom schema: its groups again, its data intact.
            assert server.value("SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (owner, reader)) == 2
            assert server.value(f'SELECT count(*) FROM "{schema}".notes', dbname=dbname) == NOTES
            assert server.value(f"SELECT relowner::regrole::text FROM pg_class WHERE oid = '\"{schema}\".notes'::regclass",
                                dbname=dbname) == owner
            with session(new["read_write"], server) as s:
                assert s.value("SELECT count(*) FROM notes") == NOTES
                s.rows("INSERT INTO notes VALUES (100, 'after the restore')")
                assert s.rows("SELECT org_id FROM accounts ORDER BY id") == [(4,), (4,)]
            with session(new["reader_of_4"], server) as s:
                assert s.value(f'SELECT count(*) FROM "{schema}".notes') == NOTES + 1
            events = bi.query("SELECT detail FROM bi_access.events WHERE action = 'restore_custom_schema'")
            assert [e["detail"]["schema"] for e in events] == [schema]
        finally:
            bi.close()
    finally:
        elsewhere.destroy()


def test_import_key_after_a_generate_on_a_restored_database(pair, source, secrets):
    """The key trap: the restore's CREATE EXTENSION made a key of its own, and
    a generate sealed with it before import_key ran."""
    dbname, creds, exported = source
    elsewhere = restore_elsewhere(pair, dbname, with_roles=True)
    try:
        server = elsewhere.primary
        bi = BiAccess(elsewhere, dbname, secrets)
        try:
            bi.query("SELECT * FROM bi_access.sync_tables()")
            early = bi.generate("1", wait_replica=False)
            live = {kind: cred for kind, cred in creds.items() if kind in ("active", "read_write", "reader_of_4")}
            with pytest.raises(psycopg2.Error) as info:
                bi.one("connection_details", creds["active"].role)
            assert info.value.pgcode == "55000"
            server.sql("SELECT bi_access.import_key(%s)", (exported,), dbname=dbname)
            event = bi.query("SELECT detail FROM bi_access.events WHERE action = 'import_key' ORDER BY id DESC LIMIT 1")
            assert event[0]["detail"]["re_sealed"] == 1
            for kind, cred in live.items():
                assert bi.one("connection_details", cred.role)["password"] == cred.password, kind
            assert bi.one("connection_details", early.role)["password"] == early.password
            assert server.value("SELECT bi_access.rotate_key()", dbname=dbname) == \
                server.value("SELECT count(*) FROM bi_access.credential WHERE secret IS NOT NULL", dbname=dbname)
            for cred in (*live.values(), early):
                assert bi.one("connection_details", cred.role)["password"] == cred.password
        finally:
            bi.close()
    finally:
        elsewhere.destroy()
