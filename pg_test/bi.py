"""bi_access as the application uses it: management calls made by a login role
that is a member of bi_access_admin, and the credentials they return.

Every password bi_access hands out passes through `BiAccess._record`, so the
secrets tests at the end of the session know what to look for."""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pytest

from cluster import ReplicaPair, Server, wait_until

ADMIN_ROLE = "bi_app"
ADMIN_PASSWORD = "app-password-not-a-bi-secret"
PLAIN_ROLE = "bi_plain"
PLAIN_PASSWORD = "plain-password-not-a-bi-secret"

# What a refused login says; a refused TCP connection (server down) does not
# match, so a dead server cannot pass for a revoked credential.
LOGIN_REFUSED = re.compile(r"password authentication failed|not permitted to log in|does not exist")


@dataclass(frozen=True)
class Credential:
    """The bi_access.connection row of one credential."""
    details: dict

    @property
    def role(self) -> str:
        return self.details["username"]

    @property
    def password(self) -> str:
        return self.details["password"]

    @property
    def url(self) -> str:
        return self.details["url"]

    @property
    def jdbc_url(self) -> str:
        return self.details["jdbc_url"]

    def login_args(self, server: Server) -> dict:
        """The same login pointed at `server` (the details name the replica;
        revocation is checked on the primary too)."""
        return server.tcp_args(self.details["database"], self.role, self.password)


def unique_label(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class BiAccess:
    """Management calls on one database, as the application's admin role."""

    def __init__(self, pair: ReplicaPair, dbname: str, secrets: set[str]):
        self.pair = pair
        self.dbname = dbname
        self.secrets = secrets
        self._conn = None

    def connect(self):
        """A fresh autocommit connection as the admin role (e.g. one per thread)."""
        conn = psycopg2.connect(**self.pair.primary.tcp_args(self.dbname, ADMIN_ROLE, ADMIN_PASSWORD))
        conn.autocommit = True
        return conn

    def _cursor(self):
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)

    def call(self, fn: str, *args, **kwargs) -> list[dict]:
        """SELECT * FROM bi_access.<fn>(args, name => value...). A function that
        does not exist (yet) fails the test with that message instead of
        crashing the harness."""
        params = ["%s"] * len(args) + [f"{name} => %s" for name in kwargs]
        sql = f"SELECT * FROM bi_access.{fn}({', '.join(params)})"
        try:
            rows = self.query(sql, (*args, *kwargs.values()))
        except psycopg2.errors.UndefinedFunction as e:
            if f"bi_access.{fn}(" not in str(e):
                raise  # the function exists but failed inside
            missing = e.pgerror.splitlines()[0]
        else:
            for row in rows:
                self._record(row)
            return rows
        pytest.fail(f"bi_access.{fn} is not available: {missing}", pytrace=False)

    def one(self, fn: str, *args, **kwargs) -> dict:
        rows = self.call(fn, *args, **kwargs)
        assert len(rows) == 1, f"bi_access.{fn} returned {len(rows)} rows"
        return rows[0]

    def _record(self, row: dict) -> None:
        if row.get("password"):
            self.secrets.add(row["password"])

    def generate(self, org_id: str, label: str | None = None, wait_replica: bool = True, **kwargs) -> Credential:
        """A new credential; waits until the replica can log it in unless told not to."""
        cred = Credential(self.one("generate", org_id, label or unique_label(), **kwargs))
        if wait_replica:
            self.pair.wait_replayed()
        return cred

    def regenerate(self, role: str) -> Credential:
        cred = Credential(self.one("regenerate", role))
        self.pair.wait_replayed()
        return cred

    def query(self, sql: str, params=None) -> list[dict]:
        """Any statement as the admin role (e.g. reading bi_access's views)."""
        with self._cursor() as cur:
            cur.execute(sql, params)
            return [dict(r) for r in cur.fetchall()] if cur.description else []

    def record(self, role: str) -> dict | None:
        """The role's row in bi_access.credentials, or None."""
        rows = self.query("SELECT * FROM bi_access.credentials WHERE role_name = %s", (role,))
        return rows[0] if rows else None

    def status(self, role: str) -> str | None:
        record = self.record(role)
        return None if record is None else str(record["status"])

    def wait_status(self, role: str, status: str, timeout: float = 20) -> None:
        wait_until(lambda: self.status(role) == status, timeout, f"{role} to become {status}", 0.2)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@contextlib.contextmanager
def raises_sqlstate(*codes: str):
    """Expects a database error with one of the SQLSTATEs."""
    with pytest.raises(psycopg2.Error) as info:
        yield info
    err = info.value
    assert err.pgcode in codes, f"expected SQLSTATE {'/'.join(codes)}, got {err.pgcode}: {err.pgerror}"


def login(args: dict):
    conn = psycopg2.connect(**args)
    conn.autocommit = True
    return conn


def can_login(args: dict) -> bool:
    conn = login(args)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    finally:
        conn.close()


def assert_login_refused(args: dict) -> None:
    with pytest.raises(psycopg2.OperationalError) as info:
        login(args).close()
    assert LOGIN_REFUSED.search(str(info.value)), f"login failed, but not as refused: {info.value}"


def session_alive(conn) -> bool:
    """Whether the backend of `conn` still answers."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except psycopg2.OperationalError:
        return False


def assert_session_ended(conn, timeout: float = 10) -> None:
    """The backend of `conn` was terminated. pg_terminate_backend only sends a
    signal, so the session may live a moment after the call that ended it."""
    wait_until(lambda: not session_alive(conn), timeout, "the open session to be ended", 0.2)
