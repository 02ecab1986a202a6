"""bi_access.sslmode (DESIGN.md, Settings): unset, the details say `require`
on a server with ssl = on (here) and `prefer` on one with ssl = off (the
#[pg_test] sslmode_unset_follows_the_server_and_a_set_value_is_kept); a value
the DBA sets is handed out as set, whatever the server offers."""

from __future__ import annotations

import subprocess

import pytest

from cluster import ReplicaPair, chown_to_postgres

DB = "sslmode"


@pytest.fixture(scope="module")
def tls_server():
    """A scratch primary with ssl = on (a self-signed certificate made here
    with openssl) and bi_access installed; bi_access.sslmode left unset."""
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
        scratch.primary.append_conf({"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"})
        scratch.primary.start()
        server = scratch.primary
        server.sql(f"CREATE DATABASE {DB}")
        server.sql("CREATE EXTENSION bi_access", dbname=DB)
        yield server
    finally:
        scratch.destroy()


def details(server, label: str) -> tuple[str, str]:
    return tuple(server.sql("SELECT sslmode, url FROM bi_access.generate('1', %s)", (label,), dbname=DB)[0])


def test_unset_it_is_require_on_a_server_with_ssl_on(tls_server):
    assert tls_server.value("SHOW ssl") == "on"
    assert tls_server.value("SELECT count(*) FROM pg_db_role_setting") == 0
    mode, url = details(tls_server, "unset")
    assert (mode, url.rsplit("?", 1)[1]) == ("require", "sslmode=require")
    default = tls_server.sql("SELECT sslmode FROM bi_access.targets WHERE name = 'default'", dbname=DB)
    assert default == [("require",)]


@pytest.mark.parametrize("mode", ["prefer", "disable", "verify-full"])
def test_a_value_the_dba_sets_is_handed_out_as_set(tls_server, mode):
    tls_server.sql(f"ALTER DATABASE {DB} SET bi_access.sslmode = '{mode}'")
    try:
        got, url = details(tls_server, f"set-{mode}")
        assert (got, url.rsplit("?", 1)[1]) == (mode, f"sslmode={mode}")
    finally:
        tls_server.sql(f"ALTER DATABASE {DB} RESET bi_access.sslmode")
