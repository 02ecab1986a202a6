"""Throwaway PostgreSQL servers for the end-to-end tests: Debian's 15 by
default, or the major whose bin directory PG_BIN names (`make test PG=17`).

A `ReplicaPair` is a primary plus a streaming hot-standby replica, each with its
own data directory, port and log file under one temporary directory. The
servers run as the `postgres` OS user (initdb refuses root); this process talks
to them over a unix socket directory it chose, where the postgres superuser is
trusted, while every other role must log in with SCRAM over 127.0.0.1, exactly
as a BI tool would.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import psycopg2

# BI_PRELOAD=1: the servers preload bi_access (shared_preload_libraries), the
# recommended install; otherwise only the credentials' sessions load it.
# pg_test/run.sh runs the guard's suites both ways.
PRELOADED = os.environ.get("BI_PRELOAD") == "1"

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
BASE_DIR = Path(os.environ.get("BI_PG_TEST_DIR", "/tmp/bi_access_pg_test"))
# Set BI_PG_TEST_KEEP=1 to leave the data directories and logs for a post-mortem.
KEEP_DIRS = os.environ.get("BI_PG_TEST_KEEP") == "1"
OS_USER = "postgres"
SUPERUSER = "postgres"
REPLICA_APP_NAME = "bi_replica"
COMMAND_TIMEOUT = 120

# Loopback only: a SCRAM password for everyone but the superuser, who is
# trusted on the unix socket (and only there) so the harness needs no secret.
# Other roles may use the socket with their password: a credential's login
# there is outside every network allowlist (test_networks.py).
PG_HBA = f"""\
local all         {SUPERUSER} trust
local replication {SUPERUSER} trust
host  all         all         127.0.0.1/32 scram-sha-256
host  all         all         ::1/128      scram-sha-256
local all         all                      scram-sha-256
"""

# What every server gets. log_statement/log_min_error_statement and
# pg_stat_statements are at their most talkative on purpose: the secrets tests
# grep their output for generated passwords.
COMMON_SETTINGS = {
    # ::1 too: network allowlists are checked for IPv6 (test_networks.py).
    "listen_addresses": "127.0.0.1,::1",
    "wal_level": "replica",
    "max_wal_senders": 5,
    "max_connections": 60,
    "hot_standby": "on",
    "log_statement": "all",
    "log_min_error_statement": "debug5",
    "log_connections": "on",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "logging_collector": "off",
    "shared_preload_libraries": "pg_stat_statements,bi_access" if PRELOADED else "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "password_encryption": "scram-sha-256",
    # PREPARE TRANSACTION works (test_rollback.py); a standby needs at least
    # the primary's value, and gets the same.
    "max_prepared_transactions": 5,
    # Durability is irrelevant for a cluster that lives for one test session.
    "fsync": "off",
    # The standby reports its replay position every second rather than every
    # ten, so the primary notices a replayed credential (pending -> active) fast.
    "wal_receiver_status_interval": 1,
    # The standbys stream without a replication slot, and test_targets.py
    # clones a third server with a forced checkpoint: WAL a standby has not
    # received yet stays for it (a precaution: one CI run saw the standby
    # stop replaying there, with no log left to say why).
    "wal_keep_size": "1GB",
    # PREPARE TRANSACTION works for any role (Citus sets 200 by itself); the
    # session guard must refuse it (test_resources.py).
    "max_prepared_transactions": 5,
    # check() warns when one org's temporary files (bi_access.temp_file_limit
    # × org_connection_limit, 1GB × 10 by default) could fill the disk's free
    # space (src/capacity.rs). The test servers share a disk whose free space
    # others move (one CI run had 9.4 GB): at the default, that finding would
    # come and go with the machine, in every test that expects check() clean.
    # 64MB × 10 leaves it to a disk with less than 640 MB free.
    # test_check.py's MISFITS plants the finding on purpose.
    "bi_access.temp_file_limit": "64MB",
}


def as_postgres(argv: list[str]) -> list[str]:
    """Prefixes a command so it runs as the cluster's OS user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *argv]
    return list(argv)


def run_as_postgres(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a PostgreSQL tool as the cluster's OS user; raises with its stderr on failure."""
    proc = subprocess.run(as_postgres(argv), capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc


def pg_tool(name: str) -> str:
    return str(PG_BIN / name)


def _server_major() -> int:
    """The major of the server in PG_BIN ("postgres (PostgreSQL) 17.11")."""
    out = subprocess.run([pg_tool("postgres"), "--version"], capture_output=True, text=True,
                         check=True, timeout=COMMAND_TIMEOUT).stdout
    return int(out.split(")")[1].strip().split(".")[0])


PG_MAJOR = _server_major()
# What differs between the majors for the tests (src/compat.rs handles it in
# the extension): from 16 on bi_access grants a credential its groups WITH
# SET FALSE, so SET ROLE to them is refused; 14 has no security_invoker views.
MEMBERSHIPS_ALLOW_SET_ROLE = PG_MAJOR < 16
VIEWS_CAN_BE_SECURITY_INVOKER = PG_MAJOR >= 15


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def conf_value(value) -> str:
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(OS_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


class Server:
    """One postgres server: its directory, port, log and superuser SQL access."""

    def __init__(self, name: str, root: Path, socket_dir: Path):
        self.name = name
        self.datadir = root / name
        self.port = free_port()
        self.socket_dir = socket_dir
        self.log_file = root / f"{name}.log"

    def append_conf(self, settings: dict, file: str = "postgresql.conf") -> None:
        """Appends settings; later lines win, so this overrides what initdb or
        pg_basebackup wrote."""
        lines = "".join(f"{k} = {conf_value(v)}\n" for k, v in settings.items())
        with open(self.datadir / file, "a") as f:
            f.write(f"\n# pg_test harness\n{lines}")

    def base_settings(self) -> dict:
        return {**COMMON_SETTINGS, "port": self.port, "unix_socket_directories": str(self.socket_dir)}

    def start(self) -> None:
        run_as_postgres([pg_tool("pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_file),
                         "-w", "-t", "60", "start"])

    def stop(self) -> None:
        """Immediate stop: the cluster is discarded, so no checkpoint is worth waiting for."""
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(as_postgres([pg_tool("pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                                        "-w", "stop"]), capture_output=True, timeout=COMMAND_TIMEOUT)

    def conn_args(self, dbname: str = "postgres") -> dict:
        """libpq arguments for the trusted superuser over the unix socket."""
        return {"host": str(self.socket_dir), "port": self.port, "user": SUPERUSER, "dbname": dbname}

    def tcp_args(self, dbname: str, user: str, password: str) -> dict:
        """libpq arguments for any role logging in over TCP, as clients do."""
        return {"host": "127.0.0.1", "port": self.port, "dbname": dbname, "user": user,
                "password": password, "sslmode": "disable", "connect_timeout": 10}

    def connect(self, dbname: str = "postgres"):
        conn = psycopg2.connect(connect_timeout=10, **self.conn_args(dbname))
        conn.autocommit = True
        return conn

    def sql(self, query: str, params=None, dbname: str = "postgres") -> list[tuple]:
        """Runs one statement as superuser in autocommit; returns its rows (or [])."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def value(self, query: str, params=None, dbname: str = "postgres"):
        return self.sql(query, params, dbname)[0][0]

    def role_names(self) -> set[str]:
        return {r[0] for r in self.sql("SELECT rolname FROM pg_roles")}

    def tool_args(self, dbname: str | None = None) -> list[str]:
        """-h/-p/-U (and -d) for pg_dump, pg_restore, psql run as the superuser."""
        args = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER]
        return args + (["-d", dbname] if dbname else [])

    def read_log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class ReplicaPair:
    """A primary and a streaming replica that replays it (application_name bi_replica)."""

    def __init__(self):
        BASE_DIR.mkdir(parents=True, exist_ok=True)
        BASE_DIR.chmod(0o755)
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=BASE_DIR))
        chown_to_postgres(self.root)
        # Sockets are named .s.PGSQL.<port>, so both servers can share one dir.
        self.socket_dir = self.root
        self.primary = Server("primary", self.root, self.socket_dir)
        self.replica = Server("replica", self.root, self.socket_dir)
        # More standbys cloned later by add_replica (named targets' tests).
        self.extra_replicas: list[Server] = []
        self._destroyed = False
        # The pytest finalizer normally tears down; atexit covers a crashed session.
        atexit.register(self.destroy)

    def start(self, primary_settings: dict | None = None) -> None:
        self._init_primary(primary_settings or {})
        self.primary.start()
        self._clone_replica()
        self.replica.start()
        self.wait_streaming()

    def _init_primary(self, extra: dict) -> None:
        run_as_postgres([pg_tool("initdb"), "-D", str(self.primary.datadir), "-U", SUPERUSER,
                         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        (self.primary.datadir / "pg_hba.conf").write_text(PG_HBA)
        self.primary.append_conf({**self.primary.base_settings(), **extra})

    def _clone_replica(self, replica: Server | None = None, app_name: str = REPLICA_APP_NAME) -> None:
        replica = replica or self.replica
        run_as_postgres([pg_tool("pg_basebackup"), "-D", str(replica.datadir),
                         *self.primary.tool_args(), "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        # The copied postgresql.conf still carries the primary's port.
        replica.append_conf(replica.base_settings())
        # -R wrote a primary_conninfo without our application_name; this later
        # line replaces it. It must go to postgresql.auto.conf, read last.
        conninfo = (f"host={self.socket_dir} port={self.primary.port} user={SUPERUSER} "
                    f"application_name={app_name}")
        replica.append_conf({"primary_conninfo": conninfo}, "postgresql.auto.conf")

    def add_replica(self, name: str, app_name: str) -> Server:
        """Another streaming standby of the primary, cloned now, replaying as
        `app_name`; stopped with the pair."""
        replica = Server(name, self.root, self.socket_dir)
        self.extra_replicas.append(replica)
        self._clone_replica(replica, app_name)
        replica.start()
        self.wait_streaming(app_name=app_name)
        return replica

    def wait_streaming(self, timeout: float = 60, app_name: str = REPLICA_APP_NAME) -> None:
        def streaming() -> bool:
            rows = self.primary.sql("SELECT state FROM pg_stat_replication WHERE application_name = %s",
                                    (app_name,))
            return bool(rows) and rows[0][0] == "streaming"
        wait_until(streaming, timeout, f"{app_name} to stream from the primary")

    def wait_replayed(self, timeout: float = 30, replica: Server | None = None,
                      app_name: str = REPLICA_APP_NAME) -> None:
        """Blocks until the replica has replayed everything the primary has
        written so far, so what was just committed is visible there, and until
        the primary knows it (pg_stat_replication.replay_lsn), which is what
        bi_access compares to tell `pending` from `active`."""
        replica = replica or self.replica
        target = self.primary.value("SELECT pg_current_wal_lsn()::text")
        wait_until(lambda: replica.value("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
                   timeout, f"{replica.name} to replay up to {target}")
        wait_until(lambda: self.primary.value(
                       "SELECT coalesce(bool_or(replay_lsn >= %s::pg_lsn), false) FROM pg_stat_replication "
                       "WHERE application_name = %s", (target, app_name)),
                   timeout, f"the primary to see {app_name} replay up to {target}")

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        for server in (*self.extra_replicas, self.replica, self.primary):
            server.stop()
        if not KEEP_DIRS:
            shutil.rmtree(self.root, ignore_errors=True)
