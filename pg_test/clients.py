"""Real clients connecting with what bi_access hands out, untouched: psql with
`url`, psycopg2 with `url`, SQLAlchemy with `url`, and pgjdbc with `jdbc_url`.
Each returns rows as lists of strings so tests compare them the same way."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg2
import sqlalchemy

from cluster import PG_BIN

# The psql of the server under test (PG_BIN, Debian's 15 by default).
PSQL = str(PG_BIN / "psql")
PGJDBC_JAR = os.environ.get("PGJDBC_JAR", "/usr/share/java/postgresql.jar")
JDBC_CHECK = Path(__file__).with_name("JdbcCheck.java")
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


def jdbc_rows(jdbc_url: str, sql: str) -> list[list[str]]:
    """pgjdbc through pg_test/JdbcCheck.java (single-file source launch)."""
    return _run(["java", "-cp", PGJDBC_JAR, str(JDBC_CHECK), jdbc_url, sql])


def psycopg2_rows(url: str, sql: str) -> list[list[str]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [[str(v) for v in row] for row in cur.fetchall()]
    finally:
        conn.close()


def sqlalchemy_engine(url: str) -> sqlalchemy.engine.Engine:
    """The URL as SQLAlchemy-based tools (Superset) take it: only the scheme changes."""
    scheme = "postgresql://"
    assert url.startswith(scheme), url
    return sqlalchemy.create_engine("postgresql+psycopg2://" + url[len(scheme):], poolclass=sqlalchemy.pool.NullPool)


def sqlalchemy_rows(engine: sqlalchemy.engine.Engine, sql: str) -> list[list[str]]:
    with engine.connect() as conn:
        return [[str(v) for v in row] for row in conn.execute(sqlalchemy.text(sql))]
