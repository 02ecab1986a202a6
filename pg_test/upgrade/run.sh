#!/usr/bin/env bash
# The upgrade test: a private copy of the PostgreSQL 15 installation whose
# bi_access is first the real 0.1.0, then the real 0.2.0 (each its frozen
# install script, its own upgrade scripts and its own library, built from its
# commit), then the build `make install` installed (this tree's), each swapped
# in as a package upgrade would, with ALTER EXTENSION bi_access UPDATE after
# each. See check_upgrade.py.
#
# BI_UPGRADE_BUILD names where this tree's files come from instead of the
# installed ones: a tree laid out as `cargo pgrx package` writes it, e.g.
#   cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config
#   BI_UPGRADE_BUILD=target/release/bi_access-pg15 bash pg_test/upgrade/run.sh
# so the test needs nothing installed into the shared server.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1
RELEASED=(0.1.0 0.2.0)
for version in "${RELEASED[@]}"; do
    bash scripts/released_build.sh "$version"
done
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BIN=$("$PG_CONFIG" --bindir)
LIB=$("$PG_CONFIG" --pkglibdir)
SHARE=$("$PG_CONFIG" --sharedir)
ROOT=${BI_UPGRADE_DIR:-/tmp/bi_access_upgrade}
rm -rf "$ROOT" && mkdir -p "$ROOT/new"
# This tree's build (the login gate beside it), as make install put it (or
# as BI_UPGRADE_BUILD has it).
BUILD=${BI_UPGRADE_BUILD:+$(realpath "$BI_UPGRADE_BUILD")}
cp "$BUILD$LIB/bi_access.so" "$BUILD$LIB/bi_access_gate.so" "$BUILD$SHARE"/extension/bi_access* "$ROOT/new/"
# Between a package upgrade and ALTER EXTENSION UPDATE, the old version's SQL
# calls the new library: every symbol a released install script names must be
# there (src/legacy.rs keeps them).
nm -D --defined-only "$ROOT/new/bi_access.so" | awk '{print $3}' > "$ROOT/symbols"
for script in sql/released/bi_access--*.sql sql/bi_access--*--*.sql; do
    for symbol in $(grep -o "'[A-Za-z0-9_]*_wrapper'" "$script" | tr -d "'" | sort -u); do
        grep -qx "$symbol" "$ROOT/symbols" ||
            { echo "the new library lacks $symbol, which $script calls" >&2; exit 1; }
    done
done
# PostgreSQL finds lib/ and share/ relative to its binaries: a copy of the
# three trees is a complete installation.
PRIV=$ROOT/pg
mkdir -p "$PRIV$(dirname "$BIN")" "$PRIV$(dirname "$LIB")" "$PRIV$(dirname "$SHARE")"
cp -a "$BIN" "$PRIV$(dirname "$BIN")/"
[[ -d $PRIV$LIB ]] || cp -a "$LIB" "$PRIV$(dirname "$LIB")/"
cp -a "$SHARE" "$PRIV$(dirname "$SHARE")/"
rm -f "$PRIV$LIB"/bi_access.so "$PRIV$LIB"/bi_access_gate.so "$PRIV$SHARE"/extension/bi_access*
# Each released version as its package had it: its library, its control
# file, its install script and the upgrade scripts of its commit.
for version in "${RELEASED[@]}"; do
    dir=$ROOT/$version
    mkdir -p "$dir"
    cp "target/released/$version/bi_access.so" "sql/released/bi_access--$version.sql" "$dir/"
    sed "s/@CARGO_VERSION@/$version/" bi_access.control > "$dir/bi_access.control"
    commit=$(cat "sql/released/bi_access--$version.commit")
    for script in $(git ls-tree --name-only "$commit" sql/ | grep -E '^sql/bi_access--.*--.*\.sql$' || true); do
        git show "$commit:$script" > "$dir/$(basename "$script")"
    done
done
cp "$ROOT/0.1.0/bi_access.so" "$PRIV$LIB/bi_access.so"
cp "$ROOT/0.1.0/bi_access--0.1.0.sql" "$ROOT/0.1.0/bi_access.control" "$PRIV$SHARE/extension/"
chown -R postgres:postgres "$ROOT"
chmod 755 "$ROOT"
PG_BIN=$PRIV$BIN BI_UPGRADE_ROOT=$ROOT BI_UPGRADE_LIB=$PRIV$LIB BI_UPGRADE_EXT=$PRIV$SHARE/extension \
    BI_PG_TEST_DIR=$ROOT/clusters \
    exec python3 -m pytest -q -p no:cacheprovider pg_test/upgrade/check_upgrade.py "$@"
