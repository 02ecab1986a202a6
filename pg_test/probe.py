"""Helpers for the hostile, exposure and multi-database tests: scratch
databases, sessions that report what each statement did (its SQLSTATE, rows
and notices) instead of raising, tables held locked by another session, and a
leak detector for text a BI session got to see."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions

from bi import BiAccess, Credential, login
from cluster import Server, pg_tool, run_as_postgres

OK = "ok"
PERMISSION_DENIED = "42501"
READ_ONLY_TRANSACTION = "25006"
LOCK_NOT_AVAILABLE = "55P03"
CANNOT_COERCE = "42846"


def create_database(pair, dbname: str, before_extension: str = "", after_extension: str = "") -> None:
    """A new database: the application's schema, CREATE EXTENSION bi_access,
    then whatever exposes its tables. All as the superuser."""
    pair.primary.sql(f"CREATE DATABASE {dbname}")
    if before_extension:
        pair.primary.sql(before_extension, dbname=dbname)
    pair.primary.sql("CREATE EXTENSION bi_access", dbname=dbname)
    if after_extension:
        pair.primary.sql(after_extension, dbname=dbname)


def tenant_database(pair, dbname: str, schema: str, expose: str) -> str:
    """A tenant database of a test module's own (the shape test_fail_closed.py
    and test_hostile.py share): the application's schema, CREATE EXTENSION
    bi_access, `expose`, and the replica caught up. Returns its name."""
    create_database(pair, dbname, schema, expose)
    pair.wait_replayed()
    return dbname


def bi_for(request, pair, dbname: str, secrets: set[str]) -> BiAccess:
    """bi_access on `dbname`, called as the application's admin role, closed
    when the requesting fixture's scope ends."""
    b = BiAccess(pair, dbname, secrets)
    request.addfinalizer(b.close)
    return b


def ensure_login_role(pair, role: str, password: str) -> None:
    """A cluster-wide LOGIN role (roles outlive databases, so tests share it)."""
    if not pair.primary.sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
        pair.primary.sql(f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))


def reader_group(server: Server, dbname: str) -> str:
    return server.value("SELECT reader_role::text FROM bi_access.config", dbname=dbname)


@dataclass
class Outcome:
    """What one statement did: `state` is 'ok' or the SQLSTATE it failed with."""
    sql: str
    state: str
    rows: list = field(default_factory=list)
    notices: list = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == OK

    def text(self) -> str:
        """Everything the client got back, for leak detectors."""
        return "\n".join([self.message, *map(str, self.notices), *(repr(r) for r in self.rows)])

    def __str__(self) -> str:
        return f"{self.sql!r} -> {self.state} {self.message.strip()}"


class Session:
    """An autocommit psycopg2 session whose statements never raise: each
    returns an Outcome. Notices are kept without psycopg2's 50-notice cap."""

    def __init__(self, conn):
        self.conn = conn
        self.conn.notices = []

    @classmethod
    def of(cls, cred: Credential, server: Server) -> "Session":
        return cls(login(cred.login_args(server)))

    @classmethod
    def superuser(cls, server: Server, dbname: str) -> "Session":
        return cls(server.connect(dbname))

    def run(self, sql: str, params=None) -> Outcome:
        self.conn.notices.clear()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall() if cur.description else []
        except psycopg2.Error as e:
            if not self.conn.autocommit and self.conn.status != psycopg2.extensions.STATUS_READY:
                self.conn.rollback()
            return Outcome(sql, e.pgcode or type(e).__name__, [], list(self.conn.notices), e.pgerror or str(e))
        return Outcome(sql, OK, rows, list(self.conn.notices))

    def rows(self, sql: str, params=None) -> list:
        """Rows of a statement that must succeed."""
        outcome = self.run(sql, params)
        assert outcome.ok, str(outcome)
        return outcome.rows

    def value(self, sql: str, params=None):
        return self.rows(sql, params)[0][0]

    def pid(self) -> int:
        return self.value("SELECT pg_backend_pid()")

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def session(cred: Credential, server: Server):
    s = Session.of(cred, server)
    try:
        yield s
    finally:
        s.close()


@contextlib.contextmanager
def table_locked(server: Server, dbname: str, table: str, mode: str = "ACCESS SHARE"):
    """Another session holds `table` locked in `mode` until the block ends."""
    conn = server.connect(dbname)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN {mode} MODE")
        yield conn
    finally:
        conn.rollback()
        conn.close()


class Background:
    """Runs one statement in its own session and thread; `result` is its
    Outcome once `join()` returns."""

    def __init__(self, sess: Session, sql: str, params=None):
        self.session = sess
        self.pid = sess.pid()
        self.result: Outcome | None = None
        self._thread = threading.Thread(target=self._run, args=(sql, params), daemon=True)
        self._thread.start()

    def _run(self, sql, params):
        self.result = self.session.run(sql, params)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = 60) -> Outcome:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout}s"
        return self.result


def leaks(text: str, forbidden: dict[str, str]) -> list[str]:
    """The descriptions of every forbidden string (another org's key, name or
    marker) found in `text`."""
    return [f"{what} {value!r}" for value, what in forbidden.items() if value in text]


def set_bi_settings(pair, settings: dict[str, str | None]) -> None:
    """ALTER SYSTEM on both servers (LOAD first: on 15 a bi_access.* name is
    unknown until the library is loaded in the session), then a reload."""
    for server in (pair.primary, pair.replica):
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("LOAD 'bi_access'")
                for name, value in settings.items():
                    if value is None:
                        cur.execute(f"ALTER SYSTEM RESET {name}")
                    else:
                        cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
    time.sleep(0.5)  # every backend handles the reload signal before its next command


@contextlib.contextmanager
def server_settings(pair, **settings: str):
    """Settings of both servers (ALTER SYSTEM, then a reload) for the block,
    reset afterwards."""
    set_bi_settings(pair, settings)
    try:
        yield
    finally:
        set_bi_settings(pair, {name: None for name in settings})


@contextlib.contextmanager
def bi_settings(pair, **settings: str):
    """bi_access.<name> = value on both servers for the block."""
    with server_settings(pair, **{f"bi_access.{k}": v for k, v in settings.items()}):
        yield


def run_fix(server: Server, script: str) -> str:
    """A check() fix as a DBA runs it: psql as the superuser (the fixes are
    psql scripts: some \\connect or \\gexec), stopping at the first error."""
    return run_as_postgres([pg_tool("psql"), *server.tool_args("postgres"), "-v", "ON_ERROR_STOP=1", "-q"],
                           input=script).stdout
