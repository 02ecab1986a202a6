"""Real clients connecting with what bi_access hands out, untouched: psql with
`url`, psycopg2 and psycopg 3 with `url`, SQLAlchemy with `url`, node-postgres
with `url` (read as libpq reads it), and pgjdbc with `jdbc_url`. Each returns
rows as lists of strings so tests compare them the same way; the drivers also
take bound parameters, passed as an application passes its own values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import psycopg2
import psycopg2.extras
import sqlalchemy

from cluster import PG_BIN

# The psql of the server under test (PG_BIN, Debian's 15 by default).
PSQL = str(PG_BIN / "psql")
PGJDBC_JAR = os.environ.get("PGJDBC_JAR", "/usr/share/java/postgresql.jar")
JDBC_CHECK = Path(__file__).with_name("JdbcCheck.java")
NODE_DIR = Path(__file__).with_name("node")
NODE = shutil.which("node") or "node"
CLIENT_TIMEOUT = 90


class ClientError(AssertionError):
    """A client could not connect or run the query; carries its stderr."""


def _run(argv: list[str]) -> list[list[str]]:
    # A clean environment: no PG* variable or ~/.psqlrc may help the client along.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "10"
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=CLIENT_TIMEOUT)
    if proc.returncode != 0:
        raise ClientError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
    return [line.split("|") for line in proc.stdout.splitlines()]


def psql_rows(url: str, sql: str) -> list[list[str]]:
    return _run([PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql])


def jdbc_rows(jdbc_url: str, sql: str, params: list[str] = ()) -> list[list[str]]:
    """pgjdbc through pg_test/JdbcCheck.java (single-file source launch);
    `params` as JdbcCheck takes them (`long:42`, `uuid:…`, `string:…`)."""
    return _run(["java", "-cp", PGJDBC_JAR, str(JDBC_CHECK), jdbc_url, sql, *params])


def psycopg2_rows(url: str, sql: str, params=None) -> list[list[str]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            # Python UUIDs as uuid, as applications register them.
            psycopg2.extras.register_uuid(conn_or_curs=cur)
            cur.execute(sql, params)
            rows = [[str(v) for v in row] for row in cur.fetchall()]
        conn.commit()
        return rows
    finally:
        conn.close()


def psycopg3_rows(url: str, sql: str, params=None) -> list[list[str]]:
    """psycopg 3: an int goes as int2/int4/int8 by its size, a UUID as uuid,
    a str as unknown, each a server-side bound parameter."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [[str(v) for v in row] for row in conn.execute(sql, params).fetchall()]


def node_rows(url: str, sql: str, params: list | None = None) -> list[list[str]]:
    """node-postgres through pg_test/node/connect.js, the url read as libpq
    reads it (pg's own reading would ask for a certificate these servers do
    not have: test_node.py)."""
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        raise ClientError("node-postgres is not installed in pg_test/node (run `make setup`)")
    argv = [NODE, "connect.js", "libpq", url, sql] + ([json.dumps(params)] if params is not None else [])
    proc = subprocess.run(argv, cwd=NODE_DIR, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    if proc.returncode != 0:
        raise ClientError(f"node exited {proc.returncode}: {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    if not out["ok"]:
        raise ClientError(f"node: {out.get('code')}: {out.get('message')}")
    return out["rows"]


def sqlalchemy_engine(url: str) -> sqlalchemy.engine.Engine:
    """The URL as SQLAlchemy-based tools (Superset) take it: only the scheme changes."""
    scheme = "postgresql://"
    assert url.startswith(scheme), url
    return sqlalchemy.create_engine("postgresql+psycopg2://" + url[len(scheme):], poolclass=sqlalchemy.pool.NullPool)


def sqlalchemy_rows(engine: sqlalchemy.engine.Engine, sql: str) -> list[list[str]]:
    with engine.connect() as conn:
        return [[str(v) for v in row] for row in conn.execute(sqlalchemy.text(sql))]
