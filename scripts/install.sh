#!/usr/bin/env bash
# Builds bi_access (release profile, or BI_PROFILE's: make test uses `ci`) for
# one PostgreSQL major and installs its files where that major's pg_config
# says, with plain cargo: no cargo-pgrx.
#
#   bash scripts/with-pg.sh 15 bash scripts/install.sh          (make install)
#
# It installs bi_access.so with its control and SQL files, and beside it the
# login gate bi_access_gate.so (scripts/gate.sh).
#   DESTDIR=/tmp/stage bash scripts/with-pg.sh 17 bash scripts/install.sh
#       lays the files out under /tmp/stage instead, as `cargo pgrx package`
#       would (scripts/package.sh, the pg_upgrade test and bench/run.sh)
#
# What cargo-pgrx would add is committed instead: the install script
# sql/bi_access--<version>.sql, which `cargo pgrx schema` generates from the
# code. scripts/upgrade_script.py writes it, and scripts/check-generated.sh
# (part of `make test`) fails when it differs from what the code generates.
# The build uses cargo-pgrx's own flags, so `cargo pgrx schema`/`test` and this
# share their compiled crates.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG_MAJOR:?run through scripts/with-pg.sh}" "${PG_CONFIG:?}"
version=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
script=sql/bi_access--$version.sql
[[ -f $script ]] || { echo "install.sh: $script is missing: python3 scripts/upgrade_script.py writes it" >&2; exit 1; }

# pgrx-pg-sys reads the server's headers through pg_config: the one
# `cargo pgrx init` registered (15, after `make setup`), else this major's.
if [[ -z ${PGRX_PG_CONFIG_PATH:-} ]] &&
  ! grep -qs "^pg$PG_MAJOR *= *\"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  export PGRX_PG_CONFIG_PATH=$PG_CONFIG
fi
# shellcheck disable=SC2086 # PG_FEATURES is a list of flags
cargo --config 'target.'"'"'cfg(all(target_family = "unix", not(target_os = "macos")))'"'"'.rustflags = ["-C", "link-arg=-Wl,--no-gc-sections"]' \
  build --lib --profile "${BI_PROFILE:-release}" $PG_FEATURES --message-format=short
library=${CARGO_TARGET_DIR:-target}/${BI_PROFILE:-release}/libbi_access.so

pkglibdir=${DESTDIR:-}$("$PG_CONFIG" --pkglibdir)
extdir=${DESTDIR:-}$("$PG_CONFIG" --sharedir)/extension
install -d -m 755 "$pkglibdir" "$extdir"
# Into place by rename: a running server keeps the library it has mapped.
install -m 755 "$library" "$pkglibdir/bi_access.so.new"
mv -f "$pkglibdir/bi_access.so.new" "$pkglibdir/bi_access.so"
sed "s/@CARGO_VERSION@/$version/" bi_access.control >"$extdir/bi_access.control"
chmod 644 "$extdir/bi_access.control"
install -m 644 "$script" sql/bi_access--*--*.sql "$extdir/"
# The login gate every credential role loads beside bi_access (a small C
# library built with this major's PGXS: scripts/gate.sh).
if [[ -n ${DESTDIR:-} ]]; then
  bash scripts/gate.sh stage "$DESTDIR"
else
  bash scripts/gate.sh install
fi
echo "installed bi_access $version and its login gate into $pkglibdir and $extdir"
