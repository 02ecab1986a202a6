"""PgBouncer in front of the read replica, with `auth_query` calling
bi_access.pgbouncer_auth(): credentials log in through it with psql and
psycopg2 and see exactly their org's rows; a revoked or regenerated
password stops working through it once the replica has replayed the change;
another database's credential gets nothing; the guardrails hold through it.
Once in transaction pooling and once in session pooling.

Also the function itself: who may call it, and what it returns for which role
(on the replica, where PgBouncer calls it, and without appending an event)."""

from __future__ import annotations

import datetime
import os
import pwd
import re
import shutil
import socket
import subprocess
import time

import psycopg2
import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, PLAIN_PASSWORD, PLAIN_ROLE, login, raises_sqlstate
from clients import psql_rows, psycopg2_rows
from cluster import OS_USER, SUPERUSER, free_port, wait_until
from probe import set_bi_settings
from tenants import visible

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOLER_USER = "bi_pgbouncer"
POOLER_PASSWORD = "pgbouncer-auth-user-not-a-bi-secret"
ORG_A, ORG_B = "101", "202"
PERMISSION_DENIED = "42501"
# Longer than PgBouncer's maintenance pass, which tests idle server
# connections (server_check_delay = 0: every idle one).
CHECK_PASS = 1.5
QUERY_CANCELED = "57014"
SCRAM_PREFIX = "SCRAM-SHA-256$"
# What PgBouncer 1.18 answers a client whose auth_query found no row ("no
# such user") or whose SCRAM proof does not match the verifier it got. A
# PgBouncer or server that is down says neither.
POOLER_REFUSED = re.compile(r"FATAL:  (no such user|password authentication failed|SASL authentication failed)")


@pytest.fixture(scope="module")
def pooler_user(pair, saas_db, crm_db):
    """PgBouncer's auth_user: a plain login role granted bi_access_pooler."""
    if not pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (POOLER_USER,)):
        pair.primary.sql(f"CREATE ROLE {POOLER_USER} LOGIN PASSWORD %s IN ROLE bi_access_pooler",
                         (POOLER_PASSWORD,))
    pair.wait_replayed()
    return POOLER_USER


class PgBouncer:
    """Debian's pgbouncer, run by the suite as the postgres OS user (it
    refuses root), on its own port, in front of the replica."""

    def __init__(self, pair, pool_mode: str, dbnames: list[str]):
        self.dir = pair.root / f"pgbouncer-{pool_mode}"
        self.dir.mkdir()
        self.port = free_port()
        self.log_file = self.dir / "pgbouncer.log"
        target = f"host=127.0.0.1 port={pair.replica.port} auth_user={POOLER_USER}"
        databases = "".join(f"{db} = {target} dbname={db}\n" for db in dbnames)
        # The auth_file holds the auth_user only; every credential comes from
        # auth_query, so generate/regenerate/revoke never touch PgBouncer.
        (self.dir / "userlist.txt").write_text(f'"{POOLER_USER}" "{POOLER_PASSWORD}"\n')
        (self.dir / "pgbouncer.ini").write_text(f"""\
[databases]
{databases}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.dir}/userlist.txt
auth_user = {POOLER_USER}
auth_query = SELECT * FROM bi_access.pgbouncer_auth($1)
pool_mode = {pool_mode}
max_client_conn = 50
default_pool_size = 5
ignore_startup_parameters = extra_float_digits
server_check_delay = 0
logfile = {self.log_file}
pidfile = {self.dir}/pgbouncer.pid
""")
        user = pwd.getpwnam(OS_USER)
        for path in (self.dir, *self.dir.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.proc = subprocess.Popen([PGBOUNCER, str(self.dir / "pgbouncer.ini")], user=user.pw_uid,
                                     group=user.pw_gid, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._listening, 20, f"pgbouncer to listen on {self.port}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited {self.proc.returncode}: {self.proc.stderr.read()} "
                               f"{self.log_file.read_text() if self.log_file.exists() else ''}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, cred, replica_port: int) -> str:
        """The credential's url, untouched but for the port: PgBouncer's."""
        replica = f"@127.0.0.1:{replica_port}/"
        assert replica in cred.url, cred.url
        return cred.url.replace(replica, f"@127.0.0.1:{self.port}/")

    def args(self, cred, password: str | None = None) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "dbname": cred.details["database"],
                "user": cred.role, "password": password or cred.password, "sslmode": "disable",
                "connect_timeout": 10}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module", params=["transaction", "session"])
def bouncer(request, pair, saas_db, crm_db, pooler_user):
    bouncer = PgBouncer(pair, request.param, [saas_db.dbname, crm_db.dbname])
    request.addfinalizer(bouncer.stop)
    return bouncer


def assert_refused_by_pooler(args: dict) -> None:
    with pytest.raises(psycopg2.OperationalError) as info:
        login(args).close()
    assert POOLER_REFUSED.search(str(info.value)), f"login failed, but not as refused: {info.value}"


def counts(rows) -> set[tuple[str, str, int]]:
    return visible(tuple(row) for row in rows)


# ---- through PgBouncer ----------------------------------------------------

def test_a_credential_logs_in_through_pgbouncer_with_psql_and_psycopg2(pair, bi, saas_db, bouncer):
    cred = bi.generate(ORG_A)
    url = bouncer.url(cred, pair.replica.port)
    expected = saas_db.rows_of(ORG_A)
    assert expected
    assert counts(psql_rows(url, saas_db.counts_sql())) == expected
    assert counts(psycopg2_rows(url, saas_db.counts_sql())) == expected
    # It really went through PgBouncer to the replica.
    assert psycopg2_rows(url, "SELECT pg_is_in_recovery(), current_user") == [["True", cred.role]]


def test_another_org_through_the_same_pgbouncer_sees_only_its_rows(pair, bi, saas_db, bouncer):
    a, b = bi.generate(ORG_A), bi.generate(ORG_B)
    conn_a = psycopg2.connect(bouncer.url(a, pair.replica.port))
    conn_b = psycopg2.connect(bouncer.url(b, pair.replica.port))
    try:
        for _ in range(3):  # interleaved, so pooled server connections are reused
            for conn, org in ((conn_a, ORG_A), (conn_b, ORG_B)):
                with conn.cursor() as cur:
                    cur.execute(saas_db.counts_sql())
                    assert counts(cur.fetchall()) == saas_db.rows_of(org)
                conn.commit()
    finally:
        conn_a.close()
        conn_b.close()
    assert saas_db.rows_of(ORG_A) != saas_db.rows_of(ORG_B)


def test_a_revoked_credential_cannot_log_in_through_pgbouncer(pair, bi, bouncer):
    cred = bi.generate(ORG_A)
    conn = login(bouncer.args(cred))  # a pooled server connection now exists
    conn.close()
    bi.call("revoke", cred.role)
    pair.wait_replayed()
    assert_refused_by_pooler(bouncer.args(cred))


def test_a_regenerated_password_replaces_the_old_one_through_pgbouncer(pair, bi, saas_db, bouncer):
    old = bi.generate(ORG_B)
    conn = login(bouncer.args(old))
    conn.close()
    new = bi.regenerate(old.role)  # waits for the replica to replay it
    assert new.role == old.role and new.password != old.password
    assert_refused_by_pooler(bouncer.args(old))
    # The pooled server connection logged in with the old password: the
    # replica ends it at its next statement. With server_check_delay = 0
    # PgBouncer tests idle server connections at its next maintenance pass
    # (a few times a second) and drops that one, so clients never get it.
    time.sleep(CHECK_PASS)
    assert counts(psycopg2_rows(bouncer.url(new, pair.replica.port), saas_db.counts_sql())) == \
        saas_db.rows_of(ORG_B)


def test_a_credential_of_another_database_gets_nothing_there(pair, crm_bi, crm_db, saas_db, bouncer):
    cred = crm_bi.generate(next(iter(crm_db.orgs)))
    assert login(bouncer.args(cred)).close() is None  # its own database: fine
    assert_refused_by_pooler({**bouncer.args(cred), "dbname": saas_db.dbname})


def test_a_non_credential_role_cannot_log_in_through_pgbouncer(bouncer, saas_db):
    for user, password in ((PLAIN_ROLE, PLAIN_PASSWORD), (ADMIN_ROLE, ADMIN_PASSWORD),
                           (POOLER_USER, POOLER_PASSWORD)):
        args = {"host": "127.0.0.1", "port": bouncer.port, "dbname": saas_db.dbname, "user": user,
                "password": password, "sslmode": "disable", "connect_timeout": 10}
        if user == POOLER_USER:
            # The auth_user is in the auth_file, so PgBouncer lets it in; the
            # point is that it cannot reach any credential's rows.
            conn = login(args)
            try:
                with conn.cursor() as cur:
                    with raises_sqlstate(PERMISSION_DENIED):
                        cur.execute("SELECT count(*) FROM invoices")
            finally:
                conn.close()
        else:
            assert_refused_by_pooler(args)


def test_the_statement_timeout_cap_holds_through_pgbouncer(pair, bi, bouncer):
    cred = bi.generate(ORG_A)
    set_bi_settings(pair, {"bi_access.statement_timeout": "1s"})
    try:
        conn = login(bouncer.args(cred))
        try:
            with conn.cursor() as cur:
                with raises_sqlstate(PERMISSION_DENIED):
                    cur.execute("SET statement_timeout = 0")
                started = time.monotonic()
                with raises_sqlstate(QUERY_CANCELED):
                    cur.execute("SELECT pg_sleep(5)")
                assert time.monotonic() - started < 3
        finally:
            conn.close()
    finally:
        set_bi_settings(pair, {"bi_access.statement_timeout": None})


# ---- the function ----------------------------------------------------------

def auth(server, dbname: str, username: str) -> list[tuple]:
    """pgbouncer_auth() as PgBouncer's auth_user calls it."""
    conn = login(server.tcp_args(dbname, POOLER_USER, POOLER_PASSWORD))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM bi_access.pgbouncer_auth(%s)", (username,))
            return cur.fetchall()
    finally:
        conn.close()


def verifier(server, role: str) -> str:
    return server.value("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))


def event_count(pair, dbname: str) -> int:
    return pair.primary.value("SELECT count(*) FROM bi_access.event", dbname=dbname)


def test_it_returns_a_live_credentials_verifier_on_the_replica_and_appends_no_event(
        pair, bi, saas_db, pooler_user):
    cred = bi.generate(ORG_A)
    before = event_count(pair, saas_db.dbname)
    rows = auth(pair.replica, saas_db.dbname, cred.role)
    assert rows == [(cred.role, verifier(pair.replica, cred.role))]
    assert rows[0][1].startswith(SCRAM_PREFIX)
    assert event_count(pair, saas_db.dbname) == before


def test_it_returns_no_row_for_any_other_role(pair, bi, crm_bi, crm_db, saas_db, pooler_user):
    revoked = bi.generate(ORG_A)
    bi.call("revoke", revoked.role)
    deleted = bi.generate(ORG_A)
    bi.call("delete", deleted.role)
    other_db = crm_bi.generate(next(iter(crm_db.orgs)))
    pair.wait_replayed()
    reader = pair.primary.value("SELECT reader_role::text FROM bi_access.config", dbname=saas_db.dbname)
    for role in (SUPERUSER, ADMIN_ROLE, PLAIN_ROLE, POOLER_USER, "bi_access_admin", "bi_access_pooler",
                 "bi_access_credential", reader, revoked.role, deleted.role, other_db.role,
                 "no_such_role", "", "x" * 100):
        assert auth(pair.replica, saas_db.dbname, role) == [], role
        assert auth(pair.primary, saas_db.dbname, role) == [], role
    # The crm credential has its row in its own database only.
    assert auth(pair.replica, crm_db.dbname, other_db.role) == [
        (other_db.role, verifier(pair.replica, other_db.role))]


def test_it_returns_no_row_once_a_credential_expired(pair, bi, saas_db, pooler_user):
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
    cred = bi.generate(ORG_B, valid_until=until)
    assert auth(pair.replica, saas_db.dbname, cred.role) != []
    wait_until(lambda: datetime.datetime.now(datetime.timezone.utc) > until, 10, "the expiry")
    assert bi.status(cred.role) == "expired"
    assert auth(pair.replica, saas_db.dbname, cred.role) == []


def test_a_role_that_lost_its_reader_group_gets_no_row(pair, bi, saas_db, pooler_user):
    """A role bi_access's records name but that is not this database's
    credential any more (as in a copy of the database) is not vouched for."""
    cred = bi.generate(ORG_A)
    reader = pair.primary.value("SELECT reader_role::text FROM bi_access.config", dbname=saas_db.dbname)
    pair.primary.sql(f'REVOKE "{reader}" FROM "{cred.role}"')
    try:
        pair.wait_replayed()
        assert auth(pair.replica, saas_db.dbname, cred.role) == []
    finally:
        # A credential role in no live reader group is what check() reports
        # as orphaned: leave none behind for other modules' check() tests.
        bi.call("delete", cred.role)


def test_a_copy_of_the_database_does_not_vouch_for_the_originals_roles(pair, pooler_user):
    """CREATE DATABASE … TEMPLATE copies the records and the reader group's
    name; the role's custody mark still names the original."""
    pair.primary.sql("CREATE DATABASE pool_orig")
    pair.primary.sql("CREATE EXTENSION bi_access", dbname="pool_orig")
    role = pair.primary.value("SELECT username FROM bi_access.generate('1', 'copy')", dbname="pool_orig")
    pair.primary.sql("CREATE DATABASE pool_copy TEMPLATE pool_orig")
    pair.wait_replayed()
    assert auth(pair.replica, "pool_orig", role) == [(role, verifier(pair.replica, role))]
    assert pair.primary.value("SELECT count(*) FROM bi_access.credential WHERE role_name = %s", (role,),
                              dbname="pool_copy") == 1
    assert auth(pair.replica, "pool_copy", role) == []
    assert auth(pair.primary, "pool_copy", role) == []
    # Leave nothing for other modules' check() tests: the copy goes as a
    # database (dropping its extension would drop the shared reader group),
    # the original with its credential deleted and its extension dropped.
    pair.primary.sql("DROP DATABASE pool_copy")
    pair.primary.sql("SELECT bi_access.delete(%s)", (role,), dbname="pool_orig")
    pair.primary.sql("DROP EXTENSION bi_access", dbname="pool_orig")
    pair.primary.sql("DROP DATABASE pool_orig")


@pytest.mark.parametrize("role", [PLAIN_ROLE, ADMIN_ROLE])
def test_only_bi_access_pooler_may_call_it(pair, saas_db, role, pooler_user):
    password = {PLAIN_ROLE: PLAIN_PASSWORD, ADMIN_ROLE: ADMIN_PASSWORD}[role]
    conn = login(pair.replica.tcp_args(saas_db.dbname, role, password))
    try:
        with conn.cursor() as cur:
            with raises_sqlstate(PERMISSION_DENIED):
                cur.execute("SELECT * FROM bi_access.pgbouncer_auth(%s)", (role,))
    finally:
        conn.close()


def test_a_credential_may_not_call_it(pair, bi, saas_db, pooler_user):
    cred = bi.generate(ORG_A)
    conn = login(cred.login_args(pair.replica))
    try:
        with conn.cursor() as cur:
            with raises_sqlstate(PERMISSION_DENIED):
                cur.execute("SELECT * FROM bi_access.pgbouncer_auth(%s)", (cred.role,))
    finally:
        conn.close()


def test_it_is_security_definer_with_a_pinned_search_path_granted_to_the_pooler_only(pair, saas_db):
    row = pair.primary.sql(
        "SELECT p.prosecdef, p.proconfig, "
        "       array(SELECT a.grantee::regrole::text FROM aclexplode(p.proacl) a "
        "             WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner ORDER BY 1) "
        "FROM pg_proc p WHERE p.oid = 'bi_access.pgbouncer_auth(text)'::regprocedure",
        dbname=saas_db.dbname)
    assert row == [(True, ["search_path=pg_catalog, pg_temp"], ["bi_access_pooler"])]
    assert pair.primary.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'bi_access_pooler'") == [(False,)]

