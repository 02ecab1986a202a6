"""Property 13, locks: no credential makes the application, or a standby's
replay, wait long on a lock it holds (issue 24, "BI sessions yield").

Three hostile credentials, each holding ACCESS SHARE on the application's
table `orders`: one idle in its transaction, one running a statement inside
a savepoint (a cancel leaves the outer transaction's lock), one running a
long statement. Against each, the application runs ALTER TABLE (ACCESS
EXCLUSIVE) and then a SELECT, which queues behind the ALTER.

- Preloaded (`shared_preload_libraries = 'pg_stat_statements,bi_access'`, a
  primary + streaming replica pair of this module's own, database
  `locks_app`): the yield worker cancels the credential's statement once
  the application (or the standby's replay) has waited bi_access.yield_after
  (1 s), 57014 worded as a yield, and ends its session (57P01) if it still
  holds the lock. The ALTER and the SELECT complete within yield_after + 1 s;
  the standby replays the primary's ALTER within yield_after + 1 s; a wait
  through a chain counts; the counts in shared memory
  (`bi_access.lock_yields()`) move by exactly what happened; an application
  session that blocks another is never touched.
- Not preloaded (the session pair, database `locks_cap`, where
  bi_access.transaction_timeout is lowered to 3 s): the credential's
  session ends at the cap (25P04, as PostgreSQL 17's transaction_timeout
  ends one), and the application's statements complete within it + 1 s.

`check()` names the regime in force on each.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, BiAccess, Credential, login
from cluster import PG_MAJOR, ReplicaPair, Server, pg_tool, wait_until
from probe import OK, PERMISSION_DENIED, Session, bi_for, create_database, ensure_login_role, session

PRELOADED_DB = "locks_app"
CAPPED_DB = "locks_cap"
APP_ROLE = "locks_app"
APP_PASSWORD = "locks-app-password-not-a-bi-secret"
ORG = "1"

YIELD_AFTER = 1.0  # bi_access.yield_after's default
BOUND = YIELD_AFTER + 1.0
CAP = 3.0  # bi_access.transaction_timeout in locks_cap
CAP_BOUND = CAP + 1.0

QUERY_CANCELED = "57014"
ADMIN_SHUTDOWN = "57P01"
TRANSACTION_TIMEOUT = "25P04"
YIELD_CANCEL = f"ERROR:  {QUERY_CANCELED}: canceling statement: this bi_access credential yielded its lock to the application"
YIELD_END = f"FATAL:  {ADMIN_SHUTDOWN}: terminating connection: this bi_access credential yielded its lock to the application"
CAP_END = f"FATAL:  {TRANSACTION_TIMEOUT}: " + (
    "terminating connection due to transaction timeout" if PG_MAJOR >= 17 else
    "terminating connection: this bi_access credential's transaction lasted longer than "
    "bi_access.transaction_timeout (3s)")

SCHEMA = f"""
CREATE TABLE orders (id int PRIMARY KEY, org_id int NOT NULL, amount int NOT NULL);
INSERT INTO orders SELECT i, 1 + i % 3, i FROM generate_series(1, 300) i;
CREATE TABLE queue (id int PRIMARY KEY);
ALTER TABLE orders OWNER TO {APP_ROLE};
ALTER TABLE queue OWNER TO {APP_ROLE};
"""
EXPOSE = "SELECT bi_access.expose_table('orders'); SELECT * FROM bi_access.sync_tables();"

# What each hostile credential runs (psql, one command after the other), and
# the state its session is in once it holds its lock on orders.
HOSTILE = {
    "idle in transaction": (["BEGIN", "SELECT count(*) FROM orders", r"\! sleep 4", "SELECT 'still here'"],
                            "idle in transaction"),
    "inside a savepoint": (["BEGIN", "SELECT count(*) FROM orders", "SAVEPOINT s", "SELECT pg_sleep(30)",
                            r"\! sleep 3", "SELECT 'still here'"], "active"),
    "running a long statement": (["SELECT count(*), pg_sleep(30) FROM orders", "SELECT 'still here'"],
                                 "active"),
}
# kind -> (statements cancelled, sessions ended) by the yield worker: a
# cancel does nothing to a session idle in its transaction, and inside a
# savepoint it leaves the outer transaction's lock.
YIELDS = {"idle in transaction": (1, 1), "inside a savepoint": (1, 1), "running a long statement": (1, 0)}


class Psql:
    """A real psql session running its commands one after the other: it
    prints a FATAL's SQLSTATE and message (psycopg2 loses them once the
    server closes the connection)."""

    def __init__(self, args: dict, commands: list[str]):
        argv = [pg_tool("psql"), "-X", "-At", "-v", "VERBOSITY=verbose", "-h", args["host"], "-p",
                str(args["port"]), "-U", args["user"], "-d", args["dbname"]]
        for command in commands:
            argv += ["-c", command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**env, "PGPASSWORD": args["password"]})

    def finish(self) -> tuple[str, str]:
        return self.proc.communicate(timeout=90)


@dataclass
class Timed:
    """One statement in its own thread, timed from its start to its end."""
    outcome: object = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def timed(sess: Session, sql: str) -> tuple[Timed, threading.Thread]:
    result = Timed()

    def run():
        result.started = time.monotonic()
        result.outcome = sess.run(sql)
        result.ended = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return result, thread


def finish(thread: threading.Thread, timeout: float = 60) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout}s"


def holds_orders(server: Server, dbname: str, role: str, state: str) -> bool:
    return bool(server.sql(
        "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE a.usename = %s AND a.state = %s AND l.granted AND l.relation = 'orders'::regclass",
        (role, state), dbname=dbname))


def waiting(server: Server, dbname: str, pid: int) -> bool:
    return bool(server.sql("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", (pid,), dbname=dbname))


def app_session(server: Server, dbname: str) -> Session:
    return Session(login(server.tcp_args(dbname, APP_ROLE, APP_PASSWORD)))


def yields(server: Server, dbname: str) -> list[tuple]:
    return server.sql("SELECT cancelled, terminated FROM bi_access.lock_yields()", dbname=dbname)


def regime(server: Server, dbname: str) -> list[tuple]:
    return server.sql("SELECT severity, finding FROM bi_access.check() WHERE object = 'lock waits'",
                      dbname=dbname)


def start_hostile(server: Server, dbname: str, cred: Credential, kind: str) -> Psql:
    commands, state = HOSTILE[kind]
    psql = Psql(cred.login_args(server), commands)
    wait_until(lambda: holds_orders(server, dbname, cred.role, state), 15,
               f"the credential to hold its lock on orders, {kind}")
    return psql


def app_waits_behind(server: Server, dbname: str, n: int) -> tuple[Timed, Timed]:
    """The application's ALTER TABLE, then its SELECT queued behind it; both
    waited for until done."""
    alter_session, select_session = app_session(server, dbname), app_session(server, dbname)
    try:
        alter, alter_thread = timed(alter_session, f"ALTER TABLE orders ALTER COLUMN amount SET DEFAULT {n}")
        wait_until(lambda: waiting(server, dbname, alter_session.conn.get_backend_pid()) or
                   not alter_thread.is_alive(), 10, "the ALTER to wait")
        select, select_thread = timed(select_session, "SELECT count(*) FROM orders")
        finish(alter_thread)
        finish(select_thread)
    finally:
        alter_session.close()
        select_session.close()
    assert alter.outcome.state == OK, str(alter.outcome)
    assert select.outcome.state == OK, str(select.outcome)
    return alter, select


def yield_log_lines(server: Server) -> tuple[int, int]:
    """The yield worker's LOG lines so far: (cancels, terminations)."""
    log = server.read_log()
    return (log.count("bi_access: cancelled the statement of credential session"),
            log.count("bi_access: ended credential session"))


def assert_yielded(kind: str, stdout: str, stderr: str) -> None:
    cancelled, ended = YIELDS[kind]
    if kind == "idle in transaction":
        assert YIELD_CANCEL not in stderr, stderr  # nothing ran to be cancelled
    else:
        assert YIELD_CANCEL in stderr, stderr
    assert (YIELD_END in stderr) == bool(ended), stderr
    assert ("still here" in stdout) == (not ended), stdout


# --------------------------------------------------------------------------
# Preloaded: the yield worker


@pytest.fixture(scope="module")
def preloaded(secrets):
    """A primary + streaming replica with bi_access preloaded, the database
    locks_app (orders, owned by the application role locks_app, exposed),
    and the application's admin role."""
    pair = ReplicaPair()
    preload = {"shared_preload_libraries": "pg_stat_statements,bi_access"}
    try:
        # ReplicaPair.start, with the preload on the replica too (its own
        # settings replace what it copied from the primary).
        pair._init_primary(preload)
        pair.primary.start()
        pair._clone_replica()
        pair.replica.append_conf(preload)
        pair.replica.start()
        pair.wait_streaming()
        ensure_login_role(pair, APP_ROLE, APP_PASSWORD)
        create_database(pair, PRELOADED_DB, SCHEMA, EXPOSE)
        pair.primary.sql(f"CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD %s IN ROLE bi_access_admin", (ADMIN_PASSWORD,))
        bi = BiAccess(pair, PRELOADED_DB, secrets)
        pair.wait_replayed()
        yield pair, bi
        bi.close()
    finally:
        pair.destroy()


def test_the_yield_worker_runs_on_every_server_and_check_says_so(preloaded):
    pair, _ = preloaded
    for server in (pair.primary, pair.replica):
        assert server.value("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bi_access yield worker'") == 1
        assert yields(server, PRELOADED_DB) == [(0, 0)]
    # check() runs on the primary (on a standby it cannot: it assigns a
    # transaction id).
    found = regime(pair.primary, PRELOADED_DB)
    assert [severity for severity, _ in found] == ["info"], found
    assert "the yield worker runs" in found[0][1] and "bi_access.yield_after (1s)" in found[0][1], found
    assert "bi_access.transaction_timeout (10min)" in found[0][1], found


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_the_application_waits_at_most_yield_after_plus_1s(preloaded, kind):
    pair, bi = preloaded
    server = pair.primary
    cred = bi.generate(ORG)
    before, logged = yields(server, PRELOADED_DB)[0], yield_log_lines(server)
    psql = start_hostile(server, PRELOADED_DB, cred, kind)
    alter, select = app_waits_behind(server, PRELOADED_DB, list(HOSTILE).index(kind))
    stdout, stderr = psql.finish()
    assert alter.seconds <= BOUND, f"the ALTER waited {alter.seconds:.2f}s"
    assert select.seconds <= BOUND, f"the SELECT waited {select.seconds:.2f}s"
    assert alter.seconds >= YIELD_AFTER - 0.1, "the credential yielded before yield_after"
    assert_yielded(kind, stdout, stderr)
    after = yields(server, PRELOADED_DB)[0]
    assert (after[0] - before[0], after[1] - before[1]) == YIELDS[kind]
    now_logged = yield_log_lines(server)
    assert (now_logged[0] - logged[0], now_logged[1] - logged[1]) == YIELDS[kind], "one LOG line per yield"
    # The credential's own count (bi_access.usage, issue 29): each error a
    # yield gave it (a cancel of an idle transaction raises none).
    errors = (0 if kind == "idle in transaction" else YIELDS[kind][0]) + YIELDS[kind][1]
    assert server.value("SELECT cancelled FROM bi_access.usage WHERE role_name = %s", (cred.role,),
                        dbname=PRELOADED_DB) == errors


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_the_standby_replays_within_yield_after_plus_1s(preloaded, kind):
    """A credential on the standby holds ACCESS SHARE on orders; the primary's
    ALTER TABLE needs ACCESS EXCLUSIVE there too, in replay."""
    pair, bi = preloaded
    cred = bi.generate(ORG)
    before = yields(pair.replica, PRELOADED_DB)[0]
    psql = start_hostile(pair.replica, PRELOADED_DB, cred, kind)
    pair.primary.sql(f"ALTER TABLE orders ALTER COLUMN amount SET DEFAULT {10 + list(HOSTILE).index(kind)}",
                     dbname=PRELOADED_DB)
    target = pair.primary.value("SELECT pg_current_wal_lsn()::text")
    written = time.monotonic()
    wait_until(lambda: pair.replica.value("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
               30, "the standby to replay the ALTER", interval=0.05)
    lag = time.monotonic() - written
    stdout, stderr = psql.finish()
    assert lag <= BOUND, f"replay waited {lag:.2f}s"
    assert lag >= YIELD_AFTER - 0.2, "the credential yielded before yield_after"
    assert_yielded(kind, stdout, stderr)
    after = yields(pair.replica, PRELOADED_DB)[0]
    assert (after[0] - before[0], after[1] - before[1]) == YIELDS[kind]


def test_a_wait_through_a_chain_counts(preloaded):
    """The application's SELECT on queue waits behind its own transaction X,
    which holds queue and then waits on orders behind the credential. When
    the SELECT has waited yield_after, the credential yields: X's own wait
    was shorter."""
    pair, bi = preloaded
    server = pair.primary
    cred = bi.generate(ORG)
    psql = start_hostile(server, PRELOADED_DB, cred, "running a long statement")
    x, reader = app_session(server, PRELOADED_DB), app_session(server, PRELOADED_DB)
    try:
        assert x.run("BEGIN").ok
        assert x.run("LOCK TABLE queue IN ACCESS EXCLUSIVE MODE").ok
        select, select_thread = timed(reader, "SELECT count(*) FROM queue")
        wait_until(lambda: waiting(server, PRELOADED_DB, reader.conn.get_backend_pid()), 10, "the SELECT to wait")
        time.sleep(0.7)
        alter, alter_thread = timed(x, "ALTER TABLE orders ALTER COLUMN amount SET DEFAULT 20")
        finish(alter_thread)
        assert alter.outcome.state == OK, str(alter.outcome)
        assert x.run("COMMIT").ok
        finish(select_thread)
        assert select.outcome.state == OK, str(select.outcome)
    finally:
        x.close()
        reader.close()
    stdout, stderr = psql.finish()
    assert alter.seconds < YIELD_AFTER, \
        f"X waited {alter.seconds:.2f}s: the credential yielded for X's own wait, not the SELECT's"
    assert select.seconds <= BOUND, f"the SELECT waited {select.seconds:.2f}s"
    assert_yielded("running a long statement", stdout, stderr)


def test_an_application_session_is_never_cancelled(preloaded):
    """An application session holding a lock another application session
    waits for is left alone: only credentials yield."""
    pair, bi = preloaded
    server = pair.primary
    before = yields(server, PRELOADED_DB)
    holder, waiter = app_session(server, PRELOADED_DB), app_session(server, PRELOADED_DB)
    try:
        assert holder.run("BEGIN").ok
        assert holder.run("SELECT count(*) FROM orders").ok
        alter, alter_thread = timed(waiter, "ALTER TABLE orders ALTER COLUMN amount SET DEFAULT 30")
        # A credential is connected too (holding nothing): the worker looks
        # at every wait.
        with session(bi.generate(ORG), server) as cred_session:
            assert cred_session.value("SELECT 1") == 1
            time.sleep(BOUND + 1.5)
            assert alter_thread.is_alive(), "the ALTER got its lock: the holder was cancelled"
            assert holder.run("SELECT 1").ok, "the holder's transaction was cancelled"
        assert holder.run("ROLLBACK").ok
        finish(alter_thread)
        assert alter.outcome.state == OK, str(alter.outcome)
    finally:
        holder.close()
        waiter.close()
    assert yields(server, PRELOADED_DB) == before


def set_yield_after(server: Server, value: str | None) -> None:
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM RESET bi_access.yield_after" if value is None else
                        f"ALTER SYSTEM SET bi_access.yield_after = '{value}'")
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()
    time.sleep(0.5)


def test_check_warns_when_yield_after_is_0(preloaded):
    pair, _ = preloaded
    set_yield_after(pair.primary, "0")
    try:
        found = regime(pair.primary, PRELOADED_DB)
    finally:
        set_yield_after(pair.primary, None)
    assert [severity for severity, _ in found] == ["warning"], found
    assert "bi_access.yield_after is 0" in found[0][1], found
    assert [severity for severity, _ in regime(pair.primary, PRELOADED_DB)] == ["info"]


def test_check_reports_a_worker_that_is_not_running(preloaded):
    """Terminated (pg_terminate_backend), the worker stays stopped until the
    server restarts, and check() says so. The module's last preloaded test."""
    pair, _ = preloaded
    server = pair.primary
    worker = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'bi_access yield worker'"
    server.sql(f"SELECT pg_terminate_backend(pid) FROM ({worker}) w")
    wait_until(lambda: not server.sql(worker), 10, "the worker to exit")
    found = regime(server, PRELOADED_DB)
    assert [severity for severity, _ in found] == ["error"], found
    assert "its yield worker is not running on this server" in found[0][1], found
    time.sleep(6)  # longer than the restart interval of a worker that crashed
    assert not server.sql(worker), "the worker came back"


# --------------------------------------------------------------------------
# Not preloaded: bi_access.transaction_timeout


@pytest.fixture(scope="module")
def capped(request, pair, saas_db, secrets):
    """locks_cap on the session pair (bi_access not preloaded), with
    bi_access.transaction_timeout = 3s for its sessions."""
    ensure_login_role(pair, APP_ROLE, APP_PASSWORD)
    create_database(pair, CAPPED_DB, SCHEMA, EXPOSE)
    pair.primary.sql(f"ALTER DATABASE {CAPPED_DB} SET bi_access.transaction_timeout = '{int(CAP)}s'")
    pair.wait_replayed()
    return bi_for(request, pair, CAPPED_DB, secrets)


def test_check_says_only_the_transaction_cap_bounds_lock_waits(pair, capped):
    found = regime(pair.primary, CAPPED_DB)
    assert [severity for severity, _ in found] == ["info"], found
    assert "bi_access is not preloaded" in found[0][1], found
    assert "at most bi_access.transaction_timeout (3s)" in found[0][1], found
    fix = pair.primary.value("SELECT fix FROM bi_access.check() WHERE object = 'lock waits'", dbname=CAPPED_DB)
    assert fix.startswith("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements,bi_access';"), fix
    for server in (pair.primary, pair.replica):
        assert yields(server, CAPPED_DB) == [], "no shared memory without the preload"
        assert server.value("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bi_access yield worker'") == 0


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_without_the_preload_the_application_waits_at_most_the_transaction_cap(pair, capped, kind):
    cred = capped.generate(ORG)
    psql = start_hostile(pair.primary, CAPPED_DB, cred, kind)
    alter, select = app_waits_behind(pair.primary, CAPPED_DB, list(HOSTILE).index(kind))
    stdout, stderr = psql.finish()
    assert alter.seconds <= CAP_BOUND, f"the ALTER waited {alter.seconds:.2f}s"
    assert select.seconds <= CAP_BOUND, f"the SELECT waited {select.seconds:.2f}s"
    assert CAP_END in stderr, stderr
    assert "still here" not in stdout, stdout


def test_without_the_preload_the_standby_replays_within_the_transaction_cap(pair, capped):
    cred = capped.generate(ORG)
    psql = start_hostile(pair.replica, CAPPED_DB, cred, "idle in transaction")
    pair.primary.sql("ALTER TABLE orders ALTER COLUMN amount SET DEFAULT 40", dbname=CAPPED_DB)
    target = pair.primary.value("SELECT pg_current_wal_lsn()::text")
    written = time.monotonic()
    wait_until(lambda: pair.replica.value("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
               30, "the standby to replay the ALTER", interval=0.05)
    lag = time.monotonic() - written
    _, stderr = psql.finish()
    assert lag <= CAP_BOUND, f"replay waited {lag:.2f}s"
    assert CAP_END in stderr, stderr


@pytest.mark.skipif(PG_MAJOR < 17, reason="transaction_timeout exists from PostgreSQL 17 on")
def test_from_17_transaction_timeout_is_capped_like_the_other_timeouts(pair, capped):
    cred = capped.generate(ORG)
    with session(cred, pair.primary) as s:
        assert s.value("SHOW transaction_timeout") == "3s"
        for raise_ in ("SET transaction_timeout = 0", "SET transaction_timeout = '1h'"):
            outcome = s.run(raise_)
            assert outcome.state == PERMISSION_DENIED, str(outcome)
        assert s.value("SHOW transaction_timeout") == "3s"
        assert s.run("SET transaction_timeout = '1s'").ok
        assert s.value("SHOW transaction_timeout") == "1s"
    # A startup option above the cap is clamped with a WARNING (psql: psycopg2
    # drops notices that arrive before the connection is made).
    args = cred.login_args(pair.primary)
    proc = subprocess.run(
        [pg_tool("psql"), "-X", "-At", "-h", args["host"], "-p", str(args["port"]), "-U", args["user"],
         "-d", args["dbname"], "-c", "SHOW transaction_timeout"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PGPASSWORD": args["password"], "PGOPTIONS": "-c transaction_timeout=0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3s"]
    assert "WARNING:  bi_access: transaction_timeout = 0 asked for at connection is above the cap; it is 3000 ms" \
        in proc.stderr, proc.stderr
