#!/usr/bin/env python3
"""Fails when Cargo.lock pins a version that its crate's publisher yanked
(crates.io's sparse index says so per version). cargo itself only warns about
a yanked version at `cargo install`, never for a lock file. Part of
`make test`; needs the crates.io index, as every build does."""

import json
import re
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "Cargo.lock"
PACKAGE = re.compile(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry\+')


def index_path(name: str) -> str:
    name = name.lower()
    if len(name) <= 2:
        return f"{len(name)}/{name}"
    if len(name) == 3:
        return f"3/{name[0]}/{name}"
    return f"{name[:2]}/{name[2:4]}/{name}"


def yanked(package: tuple[str, str]) -> bool:
    name, version = package
    for attempt in range(3):
        try:
            with urllib.request.urlopen(f"https://index.crates.io/{index_path(name)}", timeout=20) as reply:
                entries = [json.loads(line) for line in reply.read().decode().splitlines() if line]
            return any(e["vers"] == version and e["yanked"] for e in entries)
        except OSError:
            if attempt == 2:
                raise
            time.sleep(2)
    return False


def main() -> int:
    packages = PACKAGE.findall(LOCK.read_text())
    with ThreadPoolExecutor(16) as pool:
        bad = [p for p, y in zip(packages, pool.map(yanked, packages)) if y]
    for name, version in bad:
        print(f"Cargo.lock pins {name} {version}, which is yanked: cargo update -p {name}", file=sys.stderr)
    print(f"Cargo.lock: {len(packages)} crates from crates.io, {len(bad)} yanked")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
