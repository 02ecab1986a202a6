#!/usr/bin/env bash
# Idempotent setup of everything bi_access needs to build, test, demo and bench
# on a fresh Debian 12 machine of this kind. A second run takes seconds: every
# step checks before it installs.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=0.18.1
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib clang libclang-dev sudo
  libpostgresql-jdbc-java default-jdk-headless pkg-config openssl
  pgbouncer postgresql-15-pgaudit)
PY_PACKAGES=(psycopg2-binary sqlalchemy pytest)

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

py_missing=()
for m in psycopg2 sqlalchemy pytest; do
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
