#!/usr/bin/env python3
"""Writes the two generated scripts of version TO: sql/bi_access--TO.sql, the
install script exactly as `cargo pgrx schema` generates it from the code
(committed, so that scripts/install.sh needs no cargo-pgrx), and
sql/bi_access--FROM--TO.sql, the upgrade script, from:

- sql/upgrade/FROM--TO.pre.sql: schema and data changes, and the DROP of the
  old SQL surface (hand-written: what changed);
- the old release's install script, frozen in sql/released/, for the names of
  its Rust worker functions (dropped);
- the new version's generated install script (`cargo pgrx schema`), for the
  new Rust functions (created), the org lookups (replaced in place: the
  policies on application tables depend on them), and the COMMENT and tier
  GRANT declared beside each function (`extension_sql!`);
- sql/api.sql: the SQL surface, recreated exactly as a fresh install does;
- sql/upgrade/FROM--TO.post.sql: what must run once the surface exists.

The upgrade test (pg_test/upgrade/) proves that an upgraded install equals a
fresh one. Run after any change to src/ or sql/ that touches the schema:
    python3 scripts/upgrade_script.py 0.2.0 0.3.0
`--check FROM TO` writes nothing and exits 1 if either committed script is
not what the code generates (scripts/check-generated.sh, in `make test`).
"""

import os
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
        # Its progress lines carry colour codes whatever the environment says:
        # shown only if it fails.
        run = subprocess.run(["cargo", "pgrx", "schema", "pg15", "--out", str(out)], cwd=ROOT,
                             capture_output=True, text=True,
                             env={**os.environ, "NO_COLOR": "1", "CARGO_TERM_COLOR": "never"})
        if run.returncode != 0:
            sys.stderr.write(run.stdout + run.stderr)
            raise SystemExit(f"cargo pgrx schema failed ({run.returncode})")
        return out.read_text()


def functions(script: str):
    """(schema, name, block) of every Rust function pgrx generated, by name:
    pgrx orders its output differently from one run to the next."""
    found = []
    for block in BLOCK.findall(script):
        match = FUNCTION.search(block)
        if match:
            found.append((match.group(1) or "bi_access", match.group(2), block))
    return sorted(found)


DECLARATION = re.compile(r"^(COMMENT ON FUNCTION|GRANT EXECUTE ON FUNCTION) ")


def beside_functions(script: str) -> list[str]:
    """The `extension_sql!` blocks that only comment a function or grant it
    to a tier (src/api.rs declares each beside its function), by content:
    pgrx orders them differently from one run to the next."""
    found = []
    for block in BLOCK.findall(script):
        body = "\n".join(line for line in block.splitlines() if not line.startswith("-- ")).strip()
        statements = [st.strip() for st in re.split(r";\s*\n", body.rstrip(";")) if st.strip()]
        if statements and all(DECLARATION.match(st) for st in statements):
            found.append(body)
    return sorted(found)


SOURCE_LINE = re.compile(r"^-- src/\S+:\d+$", re.M)


def normalized(script: str) -> list[str]:
    """What an install script creates, whatever order pgrx chose (any order it
    chooses respects the dependencies: it even orders the SQL items that share
    a block differently from run to run) and wherever the code sits in src/."""
    return sorted(chunk.strip() for block in BLOCK.findall(script)
                  for chunk in re.split(r"\n{3,}", SOURCE_LINE.sub("", block)) if chunk.strip())


def upgrade_script(old: str, new: str, new_script: str) -> str:
    old_script = (ROOT / "sql" / "released" / f"bi_access--{old}.sql").read_text()
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
    parts.append("\n-- The COMMENT and tier GRANT declared beside each Rust function.")
    parts.extend(beside_functions(new_script))
    parts.append("\n-- The SQL surface, as sql/api.sql creates it.")
    parts.append((ROOT / "sql" / "api.sql").read_text())
    parts.append((ROOT / "sql" / "upgrade" / f"{old}--{new}.post.sql").read_text())
    return "\n".join(parts)


def check(old: str, new: str) -> int:
    """0 if the committed scripts are what the code generates."""
    new_script = generated(new)
    stale = []
    committed = ROOT / "sql" / f"bi_access--{new}.sql"
    if not committed.exists() or normalized(committed.read_text()) != normalized(new_script):
        stale.append(committed)
    committed = ROOT / "sql" / f"bi_access--{old}--{new}.sql"
    if not committed.exists() or committed.read_text() != upgrade_script(old, new, new_script):
        stale.append(committed)
    for path in stale:
        print(f"{path.relative_to(ROOT)} is not what the code generates", file=sys.stderr)
    if stale:
        print(f"run: python3 scripts/upgrade_script.py {old} {new}", file=sys.stderr)
    return 1 if stale else 0


def main(old: str, new: str) -> None:
    new_script = generated(new)
    (ROOT / "sql" / f"bi_access--{new}.sql").write_text(new_script)
    (ROOT / "sql" / f"bi_access--{old}--{new}.sql").write_text(upgrade_script(old, new, new_script))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--check":
        sys.exit(check(args[1], args[2]))
    main(args[0], args[1])
