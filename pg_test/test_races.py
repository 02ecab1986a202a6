"""Management calls racing each other lose nothing (property 9, issue 27).

Two syncs at once: the second waits for the first (sync_tables()) or, a
second CALL bi_access.sync() while one runs, syncs nothing with a NOTICE;
never 23505.

rotate_key against generate: several clients generate for 30 s while a
superuser rotates the key again and again. Every secret must open with the
key in force once both committed: each credential's reveal gives exactly the
password its generate returned, and a rotation is still possible afterwards.
(Before, a generate that read the key just before a rotation committed its
password sealed with the discarded key, and every later rotation refused.)
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from bi import ADMIN_ROLE, BiAccess, unique_label
from probe import Background, Session, create_database, table_locked

DB = "races"
DURATION = 30.0
GENERATORS = 3


@pytest.fixture(scope="module")
def race_bi(pair, saas_db, secrets):
    create_database(pair, DB, "CREATE TABLE t (id int, org_id bigint);",
                    "SELECT bi_access.expose_table('t');")
    b = BiAccess(pair, DB, secrets)
    yield b
    b.close()


def test_rotate_key_racing_generate_loses_no_secret(pair, race_bi):
    stop = time.monotonic() + DURATION
    generated: dict[str, str] = {}
    failures: list[str] = []
    rotations = {"ok": 0}
    lock = threading.Lock()

    def generate_loop():
        conn = race_bi.connect()
        try:
            with conn.cursor() as cur:
                while time.monotonic() < stop:
                    try:
                        cur.execute("SELECT username, password FROM bi_access.generate('1', %s)",
                                    (unique_label("race"),))
                        role, password = cur.fetchone()
                    except psycopg2.Error as e:
                        with lock:
                            failures.append(f"generate: {e.pgcode} {e.pgerror}")
                        continue
                    race_bi.secrets.add(password)
                    with lock:
                        generated[role] = password
        finally:
            conn.close()

    def rotate_loop():
        conn = pair.primary.connect(DB)
        try:
            with conn.cursor() as cur:
                while time.monotonic() < stop:
                    try:
                        cur.execute("SELECT bi_access.rotate_key()")
                        rotations["ok"] += 1
                    except psycopg2.Error as e:
                        with lock:
                            failures.append(f"rotate_key: {e.pgcode} {e.pgerror}")
                    time.sleep(0.05)
        finally:
            conn.close()

    threads = [threading.Thread(target=generate_loop) for _ in range(GENERATORS)]
    threads.append(threading.Thread(target=rotate_loop))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DURATION + 120)
    assert not any(t.is_alive() for t in threads), "a client is still running"
    assert failures == []
    assert rotations["ok"] >= 5, rotations
    assert len(generated) >= 50, f"only {len(generated)} generates in {DURATION}s"

    lost = []
    conn = race_bi.connect()
    try:
        with conn.cursor() as cur:
            for role, password in generated.items():
                try:
                    cur.execute("SELECT password FROM bi_access.connection_details(%s)", (role,))
                    revealed = cur.fetchone()[0]
                except psycopg2.Error as e:
                    lost.append((role, e.pgcode))
                    continue
                if revealed != password:
                    lost.append((role, "another password"))
    finally:
        conn.close()
    assert lost == [], f"{len(lost)} of {len(generated)} reveals lost"
    # Every sealed password carries the fingerprint of the key in force.
    assert pair.primary.value(
        "SELECT count(*) FROM bi_access.credential c, bi_access.sealing_key k "
        "WHERE c.secret IS NOT NULL AND c.sealed_with IS DISTINCT FROM k.fingerprint", dbname=DB) == 0
    resealed = pair.primary.value("SELECT bi_access.rotate_key()", dbname=DB)
    assert resealed == pair.primary.value(
        "SELECT count(*) FROM bi_access.credential WHERE secret IS NOT NULL", dbname=DB)
    print(f"{len(generated)} generates by {GENERATORS} clients, {rotations['ok']} rotations in {DURATION:.0f} s")


# --------------------------------------------------------------------------
# Two syncs at once (issue 27: one failed with a raw 23505 on
# exposed_table_pkey, 3 of 3). The second waits for the first, or, for a
# second CALL bi_access.sync() while one runs, syncs nothing and says so.

def sessions(race_bi, n: int) -> list[Session]:
    out = []
    for _ in range(n):
        conn = race_bi.connect()
        conn.autocommit = True
        out.append(Session(conn))
    return out


def exposed_rows(pair, table: str) -> int:
    return pair.primary.value("SELECT count(*) FROM bi_access.exposed_table WHERE tbl = %s::regclass",
                              (table,), dbname=DB)


@pytest.mark.parametrize("trial", range(3))
def test_two_sync_tables_at_once_expose_a_new_table_once(pair, race_bi, trial):
    """Both see the same new table; the first holds its transaction open
    while the second starts. The second waits, then succeeds: the table is
    exposed once, by the first, and the second finds it in place."""
    table = f"new_{trial}"
    # Owned by the admin role: its sync may expose it (the caller check).
    pair.primary.sql(f"CREATE TABLE {table} (id int, org_id bigint); ALTER TABLE {table} OWNER TO {ADMIN_ROLE}",
                     dbname=DB)
    first, second = sessions(race_bi, 2)
    try:
        first.rows("BEGIN")
        mine = dict(first.rows("SELECT tbl::text, action FROM bi_access.sync_tables()"))
        assert mine[table] == "exposed", mine
        other = Background(second, "SELECT tbl::text, action FROM bi_access.sync_tables()")
        time.sleep(1.0)
        assert not other.done, "the second sync did not wait for the first"
        first.rows("COMMIT")
        outcome = other.join()
    finally:
        first.close()
        second.close()
    assert outcome.ok, str(outcome)
    assert dict(outcome.rows)[table] == "unchanged", outcome.rows
    assert exposed_rows(pair, table) == 1


def test_a_second_call_sync_while_one_runs_syncs_nothing_and_says_so(pair, race_bi):
    """The first CALL waits on a table held locked (it needs a sync); the
    second, started meanwhile, returns at once with a NOTICE naming the
    first's backend, and records no event. The first completes."""
    pair.primary.sql("DROP POLICY bi_access_guard ON t", dbname=DB)
    events_before = pair.primary.value("SELECT count(*) FROM bi_access.event WHERE action = 'sync'", dbname=DB)
    first, second = sessions(race_bi, 2)
    try:
        with table_locked(pair.primary, DB, "t"):
            running = Background(first, "CALL bi_access.sync('1s', 2)")
            time.sleep(1.0)
            assert not running.done, "the first CALL did not wait on the locked table"
            outcome = second.run("CALL bi_access.sync('1s', 2)")
        result = running.join()
    finally:
        first.close()
        second.close()
    assert outcome.ok, str(outcome)
    assert any(f"is running in backend {running.pid}; this one syncs nothing" in n for n in outcome.notices), \
        outcome.notices
    assert result.ok, str(result)
    unsynced = pair.primary.sql("SELECT tbl::text FROM bi_access.unsynced_tables()", dbname=DB)
    assert unsynced == [], unsynced
    events = pair.primary.value("SELECT count(*) FROM bi_access.event WHERE action = 'sync'", dbname=DB)
    assert events == events_before + 1
