#!/usr/bin/env bash
# Builds the library of a released version from its commit (named in
# sql/released/bi_access--VERSION.commit), for the upgrade test: the real
# 0.1.0 is installed, used, then replaced by this tree's build. Idempotent.
set -euo pipefail
VERSION=$1
cd "$(dirname "$0")/.."
COMMIT=$(cat "sql/released/bi_access--$VERSION.commit")
OUT=target/released/$VERSION
[[ -f $OUT/bi_access.so ]] && exit 0
SRC=target/released/src-$VERSION
rm -rf "$SRC" && mkdir -p "$SRC" "$OUT"
git archive "$COMMIT" | tar -x -C "$SRC"
echo "==> building bi_access $VERSION ($COMMIT) for the upgrade test"
(cd "$SRC" && CARGO_TARGET_DIR="$PWD/../target" cargo build --lib --quiet)
cp "target/released/target/debug/libbi_access.so" "$OUT/bi_access.so"
