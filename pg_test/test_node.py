"""Node's `pg` (node-postgres, what Cube, Lightdash and Evidence connect with,
installed by `make setup` into pg_test/node/) with the `url` exactly as
bi_access returns it, for each sslmode bi_access hands out, against a scratch
server with a self-signed certificate.

node-postgres does not read sslmode as libpq does: on its own it takes
prefer, require and verify-ca as verify-full (it checks the certificate
against the system's CAs and the host name), and never falls back to
plaintext. These tests pin down what it does and what a Node client needs to
connect as libpq would: pg-connection-string's parse(url, { useLibpqCompat:
true }), which leaves the url libpq's (libpq refuses node's own
`uselibpqcompat` parameter in a URI)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from clients import ClientError, psql_rows
from cluster import ReplicaPair, chown_to_postgres

NODE_DIR = Path(__file__).with_name("node")
NODE = shutil.which("node") or "node"
DB = "nodeapp"
ORG_A, ORG_B = "1", "2"
COUNTS = "SELECT org_id::text, count(*)::text FROM readings GROUP BY 1 ORDER BY 1"
# Node's TLS errors for a certificate no CA vouches for.
UNTRUSTED = {"DEPTH_ZERO_SELF_SIGNED_CERT", "SELF_SIGNED_CERT_IN_CHAIN"}


def node(how: str, url: str, sql: str = COUNTS) -> dict:
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        pytest.fail("node-postgres is not installed in pg_test/node (run `make setup`)", pytrace=False)
    proc = subprocess.run([NODE, "connect.js", how, url, sql], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def tls_server():
    """A scratch primary with ssl = on and a self-signed certificate made
    here with openssl, bi_access installed and one exposed table."""
    scratch = ReplicaPair()
    try:
        scratch._init_primary({})
        data = scratch.primary.datadir
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=bi-access-test", "-keyout", str(data / "server.key"),
                        "-out", str(data / "server.crt")], check=True, capture_output=True)
        for name in ("server.key", "server.crt"):
            chown_to_postgres(data / name)
        (data / "server.key").chmod(0o600)
        scratch.primary.append_conf({"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key",
                                     "bi_access.host": "127.0.0.1", "bi_access.port": scratch.primary.port})
        scratch.primary.start()
        server = scratch.primary
        server.sql(f"CREATE DATABASE {DB}")
        server.sql("""
            CREATE TABLE readings (id serial PRIMARY KEY, org_id integer NOT NULL);
            INSERT INTO readings (org_id) SELECT 1 + (g % 3 = 0)::int FROM generate_series(1, 9) g;
            CREATE EXTENSION bi_access;
            SELECT bi_access.expose_table('readings');
            SELECT * FROM bi_access.sync_tables();
        """, dbname=DB)
        yield server
    finally:
        scratch.destroy()


def url_with(server, sslmode: str, org: str = ORG_A) -> str:
    """generate()'s url while bi_access.sslmode is `sslmode` (a superuser may
    SET it for the transaction)."""
    conn = server.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SET bi_access.sslmode = %s", (sslmode,))
            cur.execute("SELECT url, sslmode FROM bi_access.generate(%s, %s)", (org, f"node-{sslmode}"))
            url, mode = cur.fetchone()
    finally:
        conn.close()
    assert mode == sslmode and url.endswith(f"?sslmode={sslmode}"), url
    return url


@pytest.fixture(scope="module")
def urls(tls_server) -> dict[str, str]:
    return {mode: url_with(tls_server, mode) for mode in ("disable", "prefer", "require")}


def expected(server, org: str) -> list[list[str]]:
    return [[o, n] for o, n in server.sql(COUNTS, dbname=DB) if o == org]


@pytest.mark.parametrize("how", ["plain", "libpq"])
def test_sslmode_disable_connects_in_plaintext(tls_server, urls, how):
    out = node(how, urls["disable"])
    assert out["ok"], out
    assert out["encrypted"] is False
    assert out["rows"] == expected(tls_server, ORG_A)


@pytest.mark.parametrize("mode", ["prefer", "require"])
def test_on_its_own_node_postgres_verifies_the_certificate_and_refuses_a_self_signed_one(urls, mode):
    """Unlike libpq, which encrypts without verifying for prefer and require."""
    out = node("plain", urls[mode])
    assert out["ok"] is False, out
    assert out["code"] in UNTRUSTED, out


@pytest.mark.parametrize("mode", ["prefer", "require"])
def test_an_ssl_option_beside_the_url_is_overridden_by_its_sslmode(urls, mode):
    """`ssl: { rejectUnauthorized: false }` next to connectionString does not
    help: pg parses the url last, and its sslmode replaces the ssl option."""
    out = node("ssl-option", urls[mode])
    assert out["ok"] is False, out
    assert out["code"] in UNTRUSTED, out


@pytest.mark.parametrize("mode", ["prefer", "require"])
def test_with_libpq_compat_the_untouched_url_connects_encrypted_as_libpq_does(tls_server, urls, mode):
    out = node("libpq", urls[mode])
    assert out["ok"], out
    assert out["encrypted"] is True
    assert out["rows"] == expected(tls_server, ORG_A)
    # libpq itself (psql) with the same url.
    assert psql_rows(urls[mode], COUNTS) == expected(tls_server, ORG_A)


def test_another_orgs_url_sees_only_its_rows_through_node(tls_server):
    url = url_with(tls_server, "require", ORG_B)
    out = node("libpq", url)
    assert out["ok"], out
    assert out["rows"] == expected(tls_server, ORG_B) != expected(tls_server, ORG_A)


def test_libpq_refuses_nodes_own_uri_parameter(urls):
    """Why the url stays libpq's and Node clients parse it with the option
    instead of appending `uselibpqcompat=true` to it."""
    with pytest.raises(ClientError) as info:
        psql_rows(urls["require"] + "&uselibpqcompat=true", "SELECT 1")
    assert 'invalid URI query parameter: "uselibpqcompat"' in str(info.value)
    # node-postgres accepts it, with the same effect as the parse option.
    out = node("plain", urls["require"] + "&uselibpqcompat=true")
    assert out["ok"] and out["encrypted"] is True, out


def test_prefer_does_not_fall_back_to_plaintext_in_node(pair, bi, saas_db):
    """The shared pair runs without SSL and hands out sslmode=prefer: libpq
    falls back to plaintext, node-postgres (even with libpq compat) insists
    on SSL and fails; such a Node client needs sslmode=disable (or SSL on
    the server)."""
    cred = bi.generate("101")
    assert cred.url.endswith("?sslmode=prefer"), cred.url
    assert psql_rows(cred.url, "SELECT 1") == [["1"]]
    for how in ("plain", "libpq"):
        out = node(how, cred.url, "SELECT 1")
        assert out["ok"] is False, out
        assert out["message"] == "The server does not support SSL connections", out
