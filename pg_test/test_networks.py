"""Per-credential network allowlists (issue 29): a credential logs in only
from an address its list includes, on the primary and on the replica; the
refusal is FATAL 28000 and names no address of the list; after set_networks
an open session whose address the new list excludes ends at its next
statement (FATAL 57P01), on the replica once it has replayed the change;
IPv6 (::1) is checked as IPv4 is; a Unix-socket login has no address and is
outside every list. Every server of the harness listens on 127.0.0.1 and
::1, and admits any role's password on its socket (cluster.py)."""

from __future__ import annotations

import pytest

from libpq import Connection, LoginRefused, login_state

ORG = "2929"
REFUSED = "28000"
ENDED = "57P01"
SERVERS = ["primary", "replica"]


def cidrs(*networks: str) -> str:
    """A cidr[] literal (psycopg2 sends a str as an unknown-typed literal)."""
    return "{" + ",".join(networks) + "}"


def over(args: dict, host: str) -> dict:
    return {**args, "host": host}


def refusal(args: dict) -> LoginRefused:
    with pytest.raises(LoginRefused) as info:
        Connection(args).close()
    return info.value


@pytest.mark.parametrize("where", SERVERS)
def test_logins_from_127_0_0_1_are_refused_outside_the_list_and_admitted_inside(bi, pair, where):
    server = getattr(pair, where)
    outside = bi.generate(ORG, allowed_networks=cidrs("10.0.0.0/8", "192.0.2.0/24", "::1/128"))
    inside = bi.generate(ORG, allowed_networks=cidrs("10.0.0.0/8", "127.0.0.0/8"))
    exact = bi.generate(ORG, allowed_networks=cidrs("127.0.0.1/32"))
    anywhere = bi.generate(ORG)
    refused = refusal(outside.login_args(server))
    assert refused.state == REFUSED, refused.message
    assert "this bi_access credential may not log in from this address" in refused.message
    for address in ("10.0.0.0", "192.0.2", "::1"):
        assert address not in refused.message, refused.message
    assert login_state(inside.login_args(server)) == "ok"
    assert login_state(exact.login_args(server)) == "ok"
    assert login_state(anywhere.login_args(server)) == "ok"


def test_set_networks_changes_who_logs_in_everywhere(bi, pair):
    cred = bi.generate(ORG)
    row = bi.one("set_networks", cred.role, cidrs("10.0.0.0/8"))
    assert row["allowed_networks"] == ["10.0.0.0/8"]
    pair.wait_replayed()
    assert [login_state(cred.login_args(s)) for s in (pair.primary, pair.replica)] == [REFUSED, REFUSED]
    bi.one("set_networks", cred.role, cidrs("10.0.0.0/8", "127.0.0.1/32"))
    pair.wait_replayed()
    assert [login_state(cred.login_args(s)) for s in (pair.primary, pair.replica)] == ["ok", "ok"]
    bi.one("set_networks", cred.role, cidrs("10.0.0.0/8"))
    bi.one("set_networks", cred.role, None)
    pair.wait_replayed()
    assert [login_state(cred.login_args(s)) for s in (pair.primary, pair.replica)] == ["ok", "ok"]
    actions = [e["action"] for e in bi.query(
        "SELECT action FROM bi_access.events WHERE role_name = %s ORDER BY id", (cred.role,))]
    assert actions == ["generate"] + ["set_networks"] * 4


@pytest.mark.parametrize("where", SERVERS)
def test_an_open_session_ends_at_its_next_statement_once_the_list_excludes_it(bi, pair, where):
    """A list that still includes the session's address leaves it alone;
    one that excludes it ends it at its next statement (on the replica once
    replayed), inside an open transaction block too."""
    server = getattr(pair, where)
    cred = bi.generate(ORG)
    kept, in_block = Connection(cred.login_args(server)), Connection(cred.login_args(server))
    try:
        assert kept.exec("SELECT 1") == ("ok", ["1"])
        assert in_block.exec("BEGIN")[0] == "ok"
        assert in_block.exec("SELECT 1") == ("ok", ["1"])
        bi.one("set_networks", cred.role, cidrs("127.0.0.1/32", "10.0.0.0/8"))
        pair.wait_replayed()
        assert kept.exec("SELECT 2") == ("ok", ["2"])
        bi.one("set_networks", cred.role, cidrs("10.0.0.0/8"))
        pair.wait_replayed()
        assert kept.exec("SELECT 3")[0] == ENDED
        assert in_block.exec("SELECT 3")[0] == ENDED
    finally:
        kept.close()
        in_block.close()
    assert login_state(cred.login_args(server)) == REFUSED


@pytest.mark.parametrize("where", SERVERS)
def test_ipv6_loopback_is_checked_as_ipv4_is(bi, pair, where):
    server = getattr(pair, where)
    anywhere = bi.generate(ORG)
    # The servers listen on ::1: without a list the login gets in there.
    assert login_state(over(anywhere.login_args(server), "::1")) == "ok"
    v6_only = bi.generate(ORG, allowed_networks=cidrs("::1/128"))
    assert login_state(over(v6_only.login_args(server), "::1")) == "ok"
    assert login_state(v6_only.login_args(server)) == REFUSED
    v4_only = bi.generate(ORG, allowed_networks=cidrs("127.0.0.1/32"))
    assert login_state(over(v4_only.login_args(server), "::1")) == REFUSED
    wide_v6 = bi.generate(ORG, allowed_networks=cidrs("::/0"))
    assert login_state(over(wide_v6.login_args(server), "::1")) == "ok"
    assert login_state(wide_v6.login_args(server)) == REFUSED


@pytest.mark.parametrize("where", SERVERS)
def test_a_unix_socket_login_is_outside_every_list(bi, pair, where):
    server = getattr(pair, where)
    socket = str(server.socket_dir)
    anywhere = bi.generate(ORG)
    # The socket admits a credential's password (no list: it gets in).
    assert login_state(over(anywhere.login_args(server), socket)) == "ok"
    everything = bi.generate(ORG, allowed_networks=cidrs("0.0.0.0/0", "::/0"))
    assert login_state(everything.login_args(server)) == "ok"
    assert login_state(over(everything.login_args(server), socket)) == REFUSED


def test_the_credential_cannot_change_its_own_list(bi, pair):
    cred = bi.generate(ORG, allowed_networks=cidrs("127.0.0.1/32"))
    conn = Connection(cred.login_args(pair.primary))
    try:
        seen = {
            "set_networks": conn.exec(f"SELECT bi_access.set_networks('{cred.role}', NULL)")[0],
            "the record": conn.exec("UPDATE bi_access.credential SET allowed_networks = NULL")[0],
            "a role setting": conn.exec(f"ALTER ROLE \"{cred.role}\" SET bi_access.allowed_networks = '::/0'")[0],
        }
    finally:
        conn.close()
    assert seen == dict.fromkeys(seen, "42501")
    assert bi.record(cred.role)["allowed_networks"] == ["127.0.0.1/32"]
