"""Management calls racing each other lose nothing (property 9, issue 27).

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

from bi import BiAccess, unique_label
from probe import create_database

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
