#!/usr/bin/env python3
"""Writes sql/bi_access--FROM--TO.sql, the upgrade script, from:

- sql/upgrade/FROM--TO.pre.sql: schema and data changes, and the DROP of the
  old SQL surface (hand-written: what changed);
- the old release's install script, frozen in sql/released/, for the names of
  its Rust worker functions (dropped);
- the new version's generated install script (`cargo pgrx schema`), for the
  new Rust worker functions (created) and the org lookups (replaced in place:
  the policies on application tables depend on them);
- sql/api.sql: the SQL surface, recreated exactly as a fresh install does;
- sql/upgrade/FROM--TO.post.sql: what must run once the surface exists.

The upgrade test (pg_test/upgrade/) proves that an upgraded install equals a
fresh one. Run after any change to src/ or sql/ that touches the schema:
    python3 scripts/upgrade_script.py 0.2.0 0.3.0
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Replaced in place, never dropped: the policies on application tables depend
# on the org lookups, and the lookups on their planner support function.
LOOKUPS = {"current_org", "current_org_bigint", "current_org_uuid", "org_lookup_support"}
BLOCK = re.compile(r"/\* <begin connected objects> \*/\n(.*?)/\* </end connected objects> \*/", re.S)
FUNCTION = re.compile(r'CREATE  FUNCTION (?:(\w+)\.)?"(\w+)"')


def generated(version: str) -> str:
    """The install script pgrx generates for the code in this tree."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"bi_access--{version}.sql"
        subprocess.run(["cargo", "pgrx", "schema", "pg15", "--out", str(out)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        return out.read_text()


def functions(script: str):
    """(schema, name, block) of every Rust function pgrx generated."""
    for block in BLOCK.findall(script):
        match = FUNCTION.search(block)
        if match:
            yield match.group(1) or "bi_access", match.group(2), block


def main(old: str, new: str) -> None:
    old_script = (ROOT / "sql" / "released" / f"bi_access--{old}.sql").read_text()
    new_script = generated(new)
    parts = [f"-- bi_access {old} -> {new}. Written by scripts/upgrade_script.py: edit\n"
             f"-- sql/upgrade/{old}--{new}.pre.sql / .post.sql and run it again.\n",
             "\\echo Use \"ALTER EXTENSION bi_access UPDATE\" to load this file. \\quit\n",
             (ROOT / "sql" / "upgrade" / f"{old}--{new}.pre.sql").read_text()]
    parts.append("-- The Rust workers of the old version.")
    for schema, name, _ in functions(old_script):
        if name not in LOOKUPS:
            parts.append(f'DROP FUNCTION {schema}."{name}";')
    parts.append("\n-- The Rust workers of the new version (the org lookups in place).")
    for schema, name, block in functions(new_script):
        body = "\n".join(line for line in block.splitlines() if not line.startswith("-- "))
        qualified = f'{schema}."{name}"'
        if name in LOOKUPS:
            body = FUNCTION.sub(f"CREATE OR REPLACE FUNCTION {qualified}", body, count=1)
        else:
            body = FUNCTION.sub(f"CREATE FUNCTION {qualified}", body, count=1)
        parts.append(body.strip())
    parts.append("\n-- The SQL surface, as sql/api.sql creates it.")
    parts.append((ROOT / "sql" / "api.sql").read_text())
    parts.append((ROOT / "sql" / "upgrade" / f"{old}--{new}.post.sql").read_text())
    (ROOT / "sql" / f"bi_access--{old}--{new}.sql").write_text("\n".join(parts))


if __name__ == "__main__":
    main(*sys.argv[1:3])
