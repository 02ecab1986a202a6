#!/usr/bin/env python3
"""Every error a caller of bi_access meets, pinned the way pg_regress pins
output: its SQLSTATE, message, DETAIL, HINT and CONTEXT, as psql shows them.

    python3 scripts/errors.py           rewrites pg_test/errors/expected/
    python3 scripts/errors.py --check   exits 1 when a run now differs from
                                        them (`make test`, on 15)

Each session is a file of pg_test/errors/ run by `psql -a` with VERBOSITY
verbose (the SQLSTATE before each message; the LOCATION lines, which name
source lines, are dropped) against a scratch primary + streaming replica of
the PostgreSQL in PG_BIN with the bi_access installed there: management.sql
as a superuser (and SET ROLE to an application's admin and to a plain role),
credential.sql and read_write.sql logged in with a credential's url,
standby.sql as a superuser on the replica. setup.sql makes their fixtures
(every statement of it must succeed). login.out holds the refused logins,
as libpq reports them at the verbose error verbosity. What differs from run
to run by design (role names, passwords, ports) is masked, as in README's
transcripts (scripts/five_minutes.py).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "pg_test"))
sys.path.insert(0, str(ROOT / "scripts"))

from psycopg2.extensions import parse_dsn  # noqa: E402

from cluster import ReplicaPair  # noqa: E402
from five_minutes import masked, psql  # noqa: E402
from libpq import Connection, LoginRefused  # noqa: E402

DIR = ROOT / "pg_test" / "errors"
EXPECTED = DIR / "expected"
DB = "shop"
SETTINGS = {
    "bi_access.sslmode": "disable",
    "bi_access.host": "localhost",
    # read_write.sql writes past it.
    "bi_access.custom_schema_quota": "64kB",
    # PREPARE TRANSACTION reaches bi_access's refusal, not PostgreSQL's.
    "max_prepared_transactions": 2,
}


def session(args: list[str], name: str, **variables: str) -> str:
    """psql -a of pg_test/errors/NAME.sql, verbose, without LOCATION lines."""
    flags = ["-v", "VERBOSITY=verbose"]
    for key, value in variables.items():
        flags += ["-v", f"{key}={value}"]
    out = psql([*args, *flags], (DIR / f"{name}.sql").read_text())
    return re.sub(r"^LOCATION:  .*\n", "", out, flags=re.M)


def refused(what: str, args: dict) -> str:
    """One login attempt: the error it got, as `psql` would print it."""
    try:
        Connection(args).close()
    except LoginRefused as error:
        message = re.sub(r'^connection to server at "[^"]*", port \d+ failed: ', "", error.message)
        message = re.sub(r"^LOCATION:  .*\n", "", message, flags=re.M)
        return f"-- {what}\n{message.rstrip()}\n"
    return f"-- {what}\n(logged in: no error)\n"


def credential(pair: ReplicaPair, label: str, **options: str) -> tuple[str, str]:
    """A new credential of org 42: its role name and its url (127.0.0.1)."""
    named = "".join(f", {key} => %({key})s" for key in options)
    role, url = pair.primary.sql(f"SELECT username, url FROM bi_access.generate(42, %(label)s{named})",
                                 {"label": label, **options}, dbname=DB)[0]
    return role, url.replace("localhost", "127.0.0.1")


def logins(pair: ReplicaPair, read_url: str) -> str:
    read = parse_dsn(read_url)
    out = []
    _, net_url = credential(pair, "allowlist", allowed_networks="{10.0.0.0/8}")
    out.append(refused("an address outside the credential's allowed_networks", parse_dsn(net_url)))
    out.append(refused("a database that does not manage the credential", {**read, "dbname": "postgres"}))
    out.append(refused("a bi_access setting among the startup options",
                       {**read, "options": "-c bi_access.statement_timeout=1h"}))
    out.append(refused("a wrong password", {**read, "password": "wrong"}))
    revoked_role, revoked_url = credential(pair, "revoked")
    pair.primary.sql("SELECT bi_access.revoke(%s)", (revoked_role,), dbname=DB)
    out.append(refused("a revoked credential", parse_dsn(revoked_url)))
    _, single_url = credential(pair, "single", connection_limit="1")
    holder = Connection(parse_dsn(single_url))
    try:
        out.append(refused("a second session past connection_limit 1", parse_dsn(single_url)))
    finally:
        holder.close()
    # A role given the credentials' session libraries by hand, in no
    # credential group.
    pair.primary.sql("CREATE ROLE gate_by_hand LOGIN PASSWORD 'gate-by-hand-pw'; "
                     "ALTER ROLE gate_by_hand SET session_preload_libraries = 'bi_access', 'bi_access_gate'")
    out.append(refused("a role that loads the login gate outside bi_access_credential",
                       {**read, "user": "gate_by_hand", "password": "gate-by-hand-pw"}))
    return "".join(out)


def outputs() -> dict[str, str]:
    pair = ReplicaPair()
    try:
        pair.start(SETTINGS)
        pair.primary.sql(f"CREATE DATABASE {DB}")
        superuser = ["-h", str(pair.primary.socket_dir), "-p", str(pair.primary.port), "-U", "postgres", "-d", DB]
        setup = psql([*superuser, "-v", "ON_ERROR_STOP=1"], (DIR / "setup.sql").read_text())
        if "ERROR:" in setup:
            raise SystemExit(f"pg_test/errors/setup.sql failed:\n{setup}")
        role, url = credential(pair, "read")
        credential(pair, "on the standby", target="standby")
        _, rw_url = credential(pair, "read_write", scope="read_write")
        found = {"login": logins(pair, url)}
        found["credential"] = session(["-d", url], "credential")
        found["read_write"] = session(["-d", rw_url], "read_write")
        pair.wait_replayed()
        replica = ["-h", str(pair.replica.socket_dir), "-p", str(pair.replica.port), "-U", "postgres", "-d", DB]
        found["standby"] = session(replica, "standby", role=role)
        # Last: it revokes :'role' and leaves a refused PREPARE behind.
        found["management"] = session(superuser, "management", role=role)
        return {name: masked(re.sub(r"host \S+ port \d+", "host SOCKET_DIR port PORT", text))
                for name, text in found.items()}
    finally:
        pair.destroy()


def main() -> int:
    check = "--check" in sys.argv[1:]
    now = outputs()
    if not check:
        EXPECTED.mkdir(exist_ok=True)
        for name, text in now.items():
            (EXPECTED / f"{name}.out").write_text(text)
        print(f"pg_test/errors/expected/: wrote {', '.join(f'{n}.out' for n in now)}")
        return 0
    differ = []
    for name, text in now.items():
        path = EXPECTED / f"{name}.out"
        pinned = path.read_text() if path.exists() else ""
        if pinned != text:
            differ.append(name)
            print(f"pg_test/errors/expected/{name}.out differs from a run now:", file=sys.stderr)
            for line in _diff(pinned, text, name):
                print(line, file=sys.stderr)
    if differ:
        print("if the change is meant: python3 scripts/errors.py (make errors)", file=sys.stderr)
        return 1
    print(f"pg_test/errors/expected/ ({', '.join(now)}) matches a run now")
    return 0


def _diff(pinned: str, now: str, name: str):
    import difflib
    return difflib.unified_diff(pinned.splitlines(), now.splitlines(),
                                f"expected/{name}.out", "now", lineterm="")


if __name__ == "__main__":
    sys.exit(main())
