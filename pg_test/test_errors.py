"""Management calls fail with the SQLSTATE the contract promises: refusals,
calls on a standby, NULL arguments and input bounds."""

import time

import psycopg2
import pytest

from bi import ADMIN_PASSWORD, ADMIN_ROLE, PLAIN_PASSWORD, PLAIN_ROLE, login, raises_sqlstate, unique_label
from tenants import UUID_A


def test_role_without_bi_access_admin_cannot_generate(pair, saas_db):
    conn = login(pair.primary.tcp_args(saas_db.dbname, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        with raises_sqlstate("42501"), conn.cursor() as cur:
            cur.execute("SELECT * FROM bi_access.generate('101', %s)", (unique_label(),))
    finally:
        conn.close()


def test_second_generate_for_same_org_and_label_is_a_unique_violation(bi):
    label = unique_label("dup")
    bi.generate("101", label)
    with raises_sqlstate("23505"):
        bi.generate("101", label)


@pytest.mark.parametrize("org_id", ["", "x" * 10_000], ids=["empty", "oversized"])
def test_bad_org_id_is_invalid_parameter(bi, org_id):
    with raises_sqlstate("22023"):
        bi.generate(org_id)


def test_past_valid_until_is_invalid_parameter(bi):
    with raises_sqlstate("22023"):
        bi.generate("101", valid_until="2000-01-01T00:00:00Z")


WRAPPED_ERRORS = {
    # call -> (SQL, SQLSTATE): refusals of every shape of worker (one role,
    # one org, generate's own, a table, a reading call).
    "generate": ("SELECT * FROM bi_access.generate('101', 'x', scope => 'nope')", "22023"),
    "revoke": ("SELECT bi_access.revoke('no_such_role')", "42704"),
    "revoke_org": ("SELECT * FROM bi_access.revoke_org(NULL)", "22004"),
    "expose_table": ("SELECT bi_access.expose_table('pg_catalog.pg_class')", "42809"),
    "drop_target": ("SELECT bi_access.drop_target('no_such_target')", "42704"),
}


@pytest.mark.parametrize("call", list(WRAPPED_ERRORS))
def test_an_error_carries_no_context_line_of_bi_access_s_own_wrapper(bi, call):
    """The SQL wrapper's frame (`SQL function "revoke" statement 1`) names
    nothing the caller wrote: the error comes without a CONTEXT."""
    sql, state = WRAPPED_ERRORS[call]
    with raises_sqlstate(state) as info:
        bi.query(sql)
    assert info.value.diag.context is None, info.value.diag.context


def test_the_caller_s_own_frames_stay_in_the_context(bi):
    """Called from the caller's own code, the error still says where: the DO
    block's frame stays, only bi_access's wrapper's is gone."""
    with raises_sqlstate("42704") as info:
        bi.query("DO $$ BEGIN PERFORM bi_access.revoke('no_such_role'); END $$")
    context = info.value.diag.context
    assert context is not None and "PL/pgSQL function inline_code_block" in context, context
    assert 'SQL function "revoke"' not in context, context


def test_role_not_made_by_bi_access_is_unknown(bi):
    with raises_sqlstate("42704"):
        bi.one("connection_details", "postgres")


# --------------------------------------------------------------------------
# On a standby (issue 27): every call that writes fails with 25006 and a
# HINT naming the primary it replays from, before it touches anything (it
# used to fail with XX000 "cannot assign TransactionIds during recovery");
# what only reads works there.

def standby_calls(role: str) -> dict[str, str]:
    """Every management call of the SQL surface, with arguments it would
    accept on the primary."""
    return {
        "generate": "SELECT * FROM bi_access.generate('101', 'on-standby')",
        "generate bigint": "SELECT * FROM bi_access.generate(101, 'on-standby')",
        "generate uuid": f"SELECT * FROM bi_access.generate('{UUID_A}'::uuid, 'on-standby')",
        "connection_details": f"SELECT * FROM bi_access.connection_details('{role}')",
        "regenerate": f"SELECT * FROM bi_access.regenerate('{role}')",
        "set_networks": f"SELECT * FROM bi_access.set_networks('{role}', NULL)",
        "revoke": f"SELECT * FROM bi_access.revoke('{role}')",
        "activate": f"SELECT * FROM bi_access.activate('{role}')",
        "delete": f"SELECT * FROM bi_access.delete('{role}')",
        "purge": f"SELECT * FROM bi_access.purge('{role}')",
        "revoke_org": "SELECT * FROM bi_access.revoke_org('101')",
        "delete_org": "SELECT * FROM bi_access.delete_org('101')",
        "set_target": "SELECT bi_access.set_target('standby-t', 'h.example', 5432)",
        "drop_target": "SELECT bi_access.drop_target('standby-t')",
        "drop_custom_schema": "SELECT bi_access.drop_custom_schema('101')",
        "expose_table": "SELECT bi_access.expose_table('invoices')",
        "hide_table": "SELECT bi_access.hide_table('invoices')",
        "sync_tables": "SELECT * FROM bi_access.sync_tables()",
        "sync": "CALL bi_access.sync()",
    }


# Superusers only.
KEY_CALLS = {
    "export_key": "SELECT bi_access.export_key()",
    "import_key": "SELECT bi_access.import_key('bi_access-key-v1:x')",
    "rotate_key": "SELECT bi_access.rotate_key()",
    "reset_key": "SELECT bi_access.reset_key()",
    "adopt": "SELECT * FROM bi_access.adopt()",
}

READS = {
    "check": "SELECT * FROM bi_access.check()",
    "unsynced_tables": "SELECT * FROM bi_access.unsynced_tables()",
    "credentials": "SELECT * FROM bi_access.credentials",
    "events": "SELECT * FROM bi_access.events",
    "targets": "SELECT * FROM bi_access.targets",
    "pgbouncer_auth": "SELECT * FROM bi_access.pgbouncer_auth('nobody')",
}


def failure(conn, sql: str) -> psycopg2.Error | None:
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            if cur.description:
                cur.fetchall()
    except psycopg2.Error as e:
        return e
    return None


@pytest.fixture(scope="module")
def standby_role(bi):
    return bi.generate("101").role


def test_every_management_call_on_a_standby_is_25006_naming_the_primary(pair, saas_db, standby_role):
    conn = login(pair.replica.tcp_args(saas_db.dbname, ADMIN_ROLE, ADMIN_PASSWORD))
    try:
        seen = {}
        for call, sql in standby_calls(standby_role).items():
            error = failure(conn, sql)
            seen[call] = error and (error.pgcode, error.diag.message_hint or error.pgerror)
    finally:
        conn.close()
    # "generate bigint" is generate() called with another org_id type.
    hint = {call: ("25006", f"Call bi_access.{call.split()[0]}() on the primary (host {pair.socket_dir} port "
                            f"{pair.primary.port}, the server this standby replays from).")
            for call in standby_calls(standby_role)}
    assert seen == hint


def test_the_key_calls_on_a_standby_are_25006(pair, saas_db):
    conn = pair.replica.connect(saas_db.dbname)
    try:
        seen = {call: (e := failure(conn, sql)) and e.pgcode for call, sql in KEY_CALLS.items()}
    finally:
        conn.close()
    assert seen == dict.fromkeys(KEY_CALLS, "25006")


def test_what_only_reads_works_on_a_standby(pair, saas_db, standby_role):
    conn = pair.replica.connect(saas_db.dbname)
    try:
        seen = {call: (e := failure(conn, sql)) and f"{e.pgcode} {e.pgerror}" for call, sql in READS.items()}
    finally:
        conn.close()
    assert seen == dict.fromkeys(READS)


# --------------------------------------------------------------------------
# NULL where it means nothing: 22004 naming the argument, never XX000 or a
# silent NULL (regenerate(NULL) and expose_table(NULL) gave XX000,
# import_key(NULL) "succeeded", the STRICT ones answered NULL).

NULLS = {
    "generate org_id": ("SELECT * FROM bi_access.generate(NULL)", "org_id"),
    "generate bigint org_id": ("SELECT * FROM bi_access.generate(NULL::bigint)", "org_id"),
    "generate uuid org_id": ("SELECT * FROM bi_access.generate(NULL::uuid)", "org_id"),
    "generate label": ("SELECT * FROM bi_access.generate('101', NULL)", "label"),
    "generate scope": ("SELECT * FROM bi_access.generate('101', 'n', scope => NULL)", "scope"),
    "connection_details": ("SELECT * FROM bi_access.connection_details(NULL)", "role"),
    "regenerate": ("SELECT * FROM bi_access.regenerate(NULL)", "role"),
    "set_networks": ("SELECT * FROM bi_access.set_networks(NULL, NULL)", "role"),
    "revoke": ("SELECT * FROM bi_access.revoke(NULL)", "role"),
    "activate": ("SELECT * FROM bi_access.activate(NULL)", "role"),
    "delete": ("SELECT * FROM bi_access.delete(NULL)", "role"),
    "purge": ("SELECT bi_access.purge(NULL)", "role"),
    "revoke_org": ("SELECT * FROM bi_access.revoke_org(NULL)", "org_id"),
    "delete_org": ("SELECT * FROM bi_access.delete_org(NULL)", "org_id"),
    "drop_custom_schema": ("SELECT bi_access.drop_custom_schema(NULL)", "org_id"),
    "set_target name": ("SELECT bi_access.set_target(NULL, 'h.example', 5432)", "name"),
    "set_target host": ("SELECT bi_access.set_target('n', NULL, 5432)", "host"),
    "set_target port": ("SELECT bi_access.set_target('n', 'h.example', NULL)", "port"),
    "drop_target": ("SELECT bi_access.drop_target(NULL)", "name"),
    "expose_table": ("SELECT bi_access.expose_table(NULL)", "tbl"),
    "hide_table": ("SELECT bi_access.hide_table(NULL)", "tbl"),
}


@pytest.mark.parametrize("case", list(NULLS))
def test_null_without_a_meaning_is_22004_naming_the_argument(bi, case):
    sql, argument = NULLS[case]
    with raises_sqlstate("22004") as info:
        bi.query(sql)
    assert info.value.diag.message_primary.endswith(f"): {argument} must not be NULL"), info.value.pgerror


def test_import_key_of_null_is_22004(pair, saas_db):
    error = failure(pair.primary.connect(saas_db.dbname), "SELECT bi_access.import_key(NULL)")
    assert (error.pgcode, error.diag.message_primary) == \
        ("22004", "bi_access.import_key(): key must not be NULL")


def test_null_with_a_meaning_keeps_it(bi, pair, saas_db):
    """valid_until, connection_limit, org_name and target NULL: the
    defaults; regenerate's valid_until NULL: unchanged; set_target's sslmode
    NULL: bi_access.sslmode's, standby NULL: the primary; expose_table's
    org_column NULL: bi_access.org_column."""
    details = bi.one("generate", "101", unique_label("nulls"), org_name=None, valid_until=None,
                     connection_limit=None, target=None)
    assert (details["target"], details["display_name"]) == ("default", "BI - 101")
    record = bi.record(details["username"])
    assert (record["valid_until"], record["connection_limit"]) == (None, 5)
    again = bi.one("regenerate", details["username"], None)
    assert bi.record(details["username"])["valid_until"] is None and again["password"] != details["password"]
    bi.query("SELECT bi_access.set_target('null-meaning', 'h.example', 5432, NULL, NULL)")
    assert bi.query("SELECT sslmode, standby FROM bi_access.targets WHERE name = 'null-meaning'") == \
        [{"sslmode": "prefer", "standby": None}]
    bi.query("SELECT bi_access.drop_target('null-meaning')")
    pair.primary.sql("CREATE TABLE null_meaning (id int, org_id bigint)", dbname=saas_db.dbname)
    try:
        pair.primary.sql("ALTER TABLE null_meaning OWNER TO bi_app", dbname=saas_db.dbname)
        bi.query("SELECT bi_access.expose_table('null_meaning', NULL)")
        assert pair.primary.sql("SELECT org_column::text FROM bi_access.exposed_table "
                                "WHERE tbl = 'null_meaning'::regclass", dbname=saas_db.dbname) == [("org_id",)]
    finally:
        pair.primary.sql("DROP TABLE null_meaning", dbname=saas_db.dbname)


# --------------------------------------------------------------------------
# Bounds (issue 27): org names, labels, target names and hosts are checked
# (length, control and invisible characters, a port inside a host);
# placeholders are expanded once; an error quotes at most a short prefix of
# an input, so a 1 MB argument never comes back in a message.

BIG = "x" * 1_000_000
LONG_INPUTS = {
    # call -> (SQL, the SQLSTATE it promises)
    "generate org_id": ("SELECT * FROM bi_access.generate(%s)", "22023"),
    "generate label": ("SELECT * FROM bi_access.generate('101', %s)", "22023"),
    "generate org_name": ("SELECT * FROM bi_access.generate('101', 'big', org_name => %s)", "22023"),
    "generate scope": ("SELECT * FROM bi_access.generate('101', 'big', scope => %s)", "22023"),
    "generate target": ("SELECT * FROM bi_access.generate('101', 'big', target => %s)", "22023"),
    "set_target name": ("SELECT bi_access.set_target(%s, 'h.example', 5432)", "22023"),
    "set_target host": ("SELECT bi_access.set_target('big', %s, 5432)", "22023"),
    "set_target sslmode": ("SELECT bi_access.set_target('big', 'h.example', 5432, %s)", "22023"),
    "set_target standby": ("SELECT bi_access.set_target('big', 'h.example', 5432, NULL, %s)", "22023"),
    "drop_target": ("SELECT bi_access.drop_target(%s)", "22023"),
    "revoke_org": ("SELECT * FROM bi_access.revoke_org(%s)", "42704"),
    "delete_org": ("SELECT * FROM bi_access.delete_org(%s)", "42704"),
    "drop_custom_schema": ("SELECT bi_access.drop_custom_schema(%s)", "42704"),
}


@pytest.mark.parametrize("case", list(LONG_INPUTS))
def test_a_huge_input_is_refused_quickly_and_quoted_short(bi, case):
    sql, state = LONG_INPUTS[case]
    started = time.monotonic()
    with raises_sqlstate(state) as info:
        bi.query(sql, (BIG,))
    assert time.monotonic() - started < 5
    diag = info.value.diag
    said = "".join(part or "" for part in (diag.message_primary, diag.message_detail, diag.message_hint,
                                           diag.context))
    assert len(said) < 600, f"{len(said)} characters: {said[:200]}…"


def test_org_name_placeholders_are_expanded_once(bi):
    details = bi.one("generate", "101", unique_label("name"), org_name="{org_id} {label} {org_name}")
    assert details["display_name"] == "BI - {org_id} {label} {org_name}"


BAD_TEXT = {
    # call -> SQL taking the bad value
    "org_name": "SELECT * FROM bi_access.generate('101', 'bad-name', org_name => %s)",
    "label": "SELECT * FROM bi_access.generate('101', %s)",
    "target name": "SELECT bi_access.set_target(%s, 'h.example', 5432)",
    "host": "SELECT bi_access.set_target('bad-host', %s, 5432)",
}
BAD_VALUES = [
    ("org_name", "Acme\u202egnp.exe"),     # right-to-left override
    ("org_name", "Acme\x07"),              # a control character
    ("org_name", "A" * 257),
    ("label", "eu\u200breplica"),          # zero-width space
    ("label", "\u2067fr"),                 # right-to-left isolate
    ("target name", "east\u200d"),         # zero-width joiner
    ("target name", "\u202eeast"),
    ("host", "h.example:5432"),            # a port inside the host
    ("host", "[::1]:5432"),
    ("host", "h1.example,h2.example"),
    ("host", "user@h.example"),
    ("host", "h\u200b.example"),
]


@pytest.mark.parametrize("what,value", BAD_VALUES)
def test_bad_text_is_invalid_parameter(bi, what, value):
    with raises_sqlstate("22023"):
        bi.query(BAD_TEXT[what], (value,))


def test_names_in_any_script_and_ipv6_hosts_are_accepted(bi):
    details = bi.one("generate", "101", unique_label("zürich-東京"), org_name="شركة Ünïcode")
    assert details["display_name"] == "BI - شركة Ünïcode"
    bi.query("SELECT bi_access.set_target('v6', '::1', 5432)")
    details = bi.one("generate", "101", unique_label("v6"), target="v6")
    assert "@[::1]:5432/" in details["url"]
    bi.query("SELECT bi_access.delete(%s)", (details["username"],))
    bi.query("SELECT bi_access.drop_target('v6')")
