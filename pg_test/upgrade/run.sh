#!/usr/bin/env bash
# The upgrade test: a private copy of the PostgreSQL 15 installation whose
# bi_access is the real 0.1.0 (its frozen install script and its own library,
# built from its commit), then the build `make install` installed (this
# tree's) swapped in and ALTER EXTENSION bi_access UPDATE. See check_upgrade.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1
bash scripts/released_build.sh 0.1.0
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BIN=$("$PG_CONFIG" --bindir)
LIB=$("$PG_CONFIG" --pkglibdir)
SHARE=$("$PG_CONFIG" --sharedir)
ROOT=${BI_UPGRADE_DIR:-/tmp/bi_access_upgrade}
rm -rf "$ROOT" && mkdir -p "$ROOT/new" "$ROOT/old"
# This tree's build, as make install put it.
cp "$LIB/bi_access.so" "$SHARE"/extension/bi_access* "$ROOT/new/"
# Between a package upgrade and ALTER EXTENSION UPDATE, the old version's SQL
# calls the new library: every symbol a released install script names must be
# there (src/legacy.rs keeps them).
nm -D --defined-only "$ROOT/new/bi_access.so" | awk '{print $3}' > "$ROOT/symbols"
for script in sql/released/bi_access--*.sql; do
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
rm -f "$PRIV$LIB"/bi_access.so "$PRIV$SHARE"/extension/bi_access*
cp target/released/0.1.0/bi_access.so sql/released/bi_access--0.1.0.sql "$ROOT/old/"
sed "s/@CARGO_VERSION@/0.1.0/" bi_access.control > "$ROOT/old/bi_access.control"
cp "$ROOT/old/bi_access.so" "$PRIV$LIB/bi_access.so"
cp "$ROOT/old/bi_access--0.1.0.sql" "$ROOT/old/bi_access.control" "$PRIV$SHARE/extension/"
chown -R postgres:postgres "$ROOT"
chmod 755 "$ROOT"
PG_BIN=$PRIV$BIN BI_UPGRADE_OLD=$ROOT/old BI_UPGRADE_NEW=$ROOT/new BI_UPGRADE_LIB=$PRIV$LIB BI_UPGRADE_EXT=$PRIV$SHARE/extension \
    BI_PG_TEST_DIR=$ROOT/clusters \
    exec python3 -m pytest -q -p no:cacheprovider pg_test/upgrade/check_upgrade.py "$@"
