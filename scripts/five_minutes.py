#!/usr/bin/env python3
"""README's "Five minutes in psql", written from a real run, so it cannot go
stale.

    python3 scripts/five_minutes.py           rewrites README's transcripts
    python3 scripts/five_minutes.py --check   exits 1 when README's differ from
                                              a run now (`make test`, on 15)

Each transcript is the output of `psql -a` (statements echoed, then their
results and errors) for one of the sessions below, on a scratch server of the
PostgreSQL in PG_BIN (default Debian's 15) with the bi_access installed there
(`make install`). README marks each with `<!-- five-minutes: NAME -->` before
its fenced block. What differs from run to run by design (role names,
passwords, ports, the width of psql's expanded-display rules) is masked before
the comparison.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "pg_test"))

from cluster import ReplicaPair, pg_tool  # noqa: E402

README = ROOT / "README.md"
DB = "shop"

# A superuser installs the extension, the application's tables exist, the
# tables are exposed and a credential is generated.
SETUP = """\
CREATE EXTENSION bi_access;
CREATE TABLE projects (id bigserial PRIMARY KEY, org_id bigint NOT NULL, name text);
CREATE INDEX ON projects (org_id);
INSERT INTO projects (org_id, name) VALUES (42, 'Roadmap'), (42, 'Hiring'), (7, 'Secret plan');
CREATE TABLE tickets (id bigserial PRIMARY KEY, tenant_id text NOT NULL, title text);
INSERT INTO tickets (tenant_id, title) VALUES ('42', 'Login bug'), ('7', 'Other org');
SELECT * FROM bi_access.unsynced_tables();
SELECT bi_access.expose_table('tickets', org_column => 'tenant_id');
SELECT * FROM bi_access.sync_tables();
\\x on
SELECT * FROM bi_access.generate('42', org_name => 'Acme');
\\x off
SELECT role_name, org_id, label, status FROM bi_access.credentials;
"""

# The BI user, logged in with the url generate returned.
BI_USER = """\
SELECT * FROM projects;
SELECT * FROM tickets;
INSERT INTO projects (org_id, name) VALUES (42, 'x');
"""

# The DBA's everyday calls and the log they leave ({role} is the credential).
EVERYDAY = """\
SELECT status FROM bi_access.revoke('{role}');
SELECT status FROM bi_access.activate('{role}');
SELECT action, role_name, org_id, actor, detail FROM bi_access.events ORDER BY id;
SELECT severity, object, finding FROM bi_access.check();
"""

MASKS = [
    (re.compile(r"\bbi_[a-z0-9]{16}\b"), "bi_ROLE"),
    (re.compile(r"(?<=[:=| ])[A-Za-z0-9]{32}(?=[@&\s]|$)", re.M), "PASSWORD"),
    (re.compile(r"(?<=localhost:)\d+|(?<=127\.0\.0\.1:)\d+"), "PORT"),
    (re.compile(r"^(port\s+\|\s+)\d+", re.M), r"\1PORT"),
    (re.compile(r"-{4,}"), "----"),
]


def masked(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def psql(args: list[str], script: str) -> str:
    """`psql -a` of a script: what a reader of the terminal sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    run = subprocess.run([pg_tool("psql"), "-X", "-a", "-v", "ON_ERROR_STOP=0", *args],
                         input=script, capture_output=False, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, timeout=120, check=False)
    # psql prefixes errors read from stdin with "psql:<stdin>:N: ".
    return re.sub(r"^psql:<stdin>:\d+: ", "", run.stdout, flags=re.M).rstrip("\n") + "\n"


def transcripts() -> dict[str, str]:
    pair = ReplicaPair()
    try:
        pair._init_primary({"bi_access.sslmode": "disable", "bi_access.host": "localhost"})
        pair.primary.start()
        pair.primary.sql(f"CREATE DATABASE {DB}")
        superuser = ["-h", str(pair.primary.socket_dir), "-p", str(pair.primary.port), "-U", "postgres", "-d", DB]
        setup = psql(superuser, SETUP)
        url = re.search(r"^url\s+\| (\S+)$", setup, re.M).group(1).replace("localhost", "127.0.0.1")
        role = re.search(r"^username\s+\| (\S+)$", setup, re.M).group(1)
        bi_user = psql(["-d", url], BI_USER)
        everyday = psql(superuser, EVERYDAY.format(role=role))
        return {"setup": setup, "bi-user": bi_user, "everyday": everyday}
    finally:
        pair.destroy()


def blocks_of(readme: str) -> dict[str, tuple[int, int]]:
    """Name -> the span of the fenced block that follows its marker."""
    found = {}
    for marker in re.finditer(r"<!-- five-minutes: ([a-z-]+) -->\n```\n", readme):
        end = readme.index("```\n", marker.end())
        found[marker.group(1)] = (marker.end(), end)
    return found


def main() -> int:
    check = "--check" in sys.argv[1:]
    readme = README.read_text()
    spans = blocks_of(readme)
    now = transcripts()
    missing = sorted(set(now) - set(spans))
    if missing:
        print(f"README.md has no <!-- five-minutes: NAME --> block for {missing}", file=sys.stderr)
        return 1
    if check:
        stale = [name for name, text in now.items()
                 if masked(readme[slice(*spans[name])]) != masked(text)]
        for name in stale:
            print(f"README.md's five-minutes transcript '{name}' differs from a run now:\n"
                  f"--- README\n{masked(readme[slice(*spans[name])])}--- now\n{masked(now[name])}",
                  file=sys.stderr)
        if stale:
            print("run: python3 scripts/five_minutes.py", file=sys.stderr)
            return 1
        print(f"README.md's five-minutes transcripts ({', '.join(now)}) match a run now")
        return 0
    for name in sorted(spans, key=lambda n: spans[n][0], reverse=True):
        if name in now:
            start, end = spans[name]
            readme = readme[:start] + now[name] + readme[end:]
    README.write_text(readme)
    print(f"README.md: wrote the five-minutes transcripts ({', '.join(now)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
