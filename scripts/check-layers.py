#!/usr/bin/env python3
"""Fails when src/ has an import circle (`make test`, with fmt and lint).

Each Rust file of src/ is a module; a module points at another when it
names it: `crate::other`, `super::sibling` (or an item of the parent module,
which is then the parent), `use crate::{…}`, and a mod.rs's own children by
their bare name. The graph must have no circle, so that every module sits in
a layer above all the ones it uses (README's Development section lists the
layers). Test modules (`#[cfg(test)]` onwards, `src/tests/`) and comments
are left out: they name other modules without depending on them.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def code_of(path: Path) -> str:
    text = re.split(r"#\[cfg\(test\)\]", path.read_text())[0]
    return re.sub(r"//[^\n]*", "", text)


def graph() -> dict[str, set[str]]:
    files = {module_of(p): p for p in ROOT.rglob("*.rs") if "tests" not in p.relative_to(ROOT).parts}
    edges: dict[str, set[str]] = defaultdict(set)

    def resolve(start: str, names: list[str]) -> str | None:
        """The longest module path that `start::names…` names."""
        found = None
        for i in range(1, len(names) + 1):
            candidate = "::".join(filter(None, [start, *names[:i]]))
            if candidate in files:
                found = candidate
        return found

    for module, path in files.items():
        code = code_of(path)
        parent = module.rsplit("::", 1)[0] if "::" in module else ""
        targets = set()
        for ref in re.findall(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", code):
            targets.add(resolve("", ref.split("::")))
        for group in re.findall(r"use crate::\{([^}]*)\}", code):
            for name in re.findall(r"\b([a-z_][a-z0-9_]*)\b", group):
                targets.add(resolve("", [name]))
        for ref in re.findall(r"super::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", code):
            targets.add(resolve(parent, ref.split("::")) or (parent or None))
        for group in re.findall(r"use super::\{([^}]*)\}", code):
            for name in re.findall(r"\b([a-z_][a-z0-9_]*)\b", group):
                targets.add(resolve(parent, [name]) or (parent or None))
        if path.name in ("mod.rs", "lib.rs"):
            for child in re.findall(r"^\s*(?:pub(?:\([a-z]+\))? )?mod ([a-z_][a-z0-9_]*);", code, re.M):
                if re.search(rf"(?<![:\w]){child}::", code):
                    targets.add(resolve(module, [child]))
        edges[module] |= {t for t in targets if t and t != module}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    edges = graph()
    found = circles(edges)
    for component in found:
        members = set(component)
        print(f"import circle of {len(component)} modules:", file=sys.stderr)
        for module in component:
            print(f"  {module} -> {', '.join(sorted(edges[module] & members))}", file=sys.stderr)
    if found:
        return 1
    print(f"src/: {len(edges)} modules, {sum(map(len, edges.values()))} imports, no import circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
