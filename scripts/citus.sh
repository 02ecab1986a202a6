#!/usr/bin/env bash
# Citus for bi_access's cluster test (pg_test/test_citus.py), built from a
# source tree of its public repository (github.com/citusdata/citus): Citus is
# in no package registry these machines reach.
#
#   CITUS_SRC=/path/to/citus bash scripts/with-pg.sh 16 bash scripts/citus.sh build
#   CITUS_SRC=/path/to/citus bash scripts/with-pg.sh 16 bash scripts/citus.sh test [pytest args]
#
# `build` configures Citus out of tree in target/citus/pg<major> (CITUS_SRC is
# never written to), builds it and installs it beside that major's server
# (.pg/<major>: its lib/ and share/extension/). A second run rebuilds
# nothing: a stamp beside the build records the source it was built from
# (its git commit, or its citus.control version when the tree is an export),
# and the install is redone only when that changes or citus.so is gone.
# `test` builds (if needed) and runs pg_test/test_citus.py, which starts the
# coordinator and two workers itself (pg_test/citus_cluster.py) on free
# localhost ports from CITUS_PORT_BASE (21400) up, below the ephemeral range.
#
# Citus supports PostgreSQL 16, 17 and 18 (its main branch); `make
# citus-test` uses CITUS_PG (16 by default). The Debian packages Citus needs
# to build against the wheels' pg_config are installed here, not by
# scripts/setup.sh: a machine that never builds Citus never needs them.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-test}
shift || true

: "${PG_MAJOR:?run me through scripts/with-pg.sh MAJOR}"
if ((PG_MAJOR < 16)); then
  echo "citus.sh: Citus supports PostgreSQL 16 to 18, not $PG_MAJOR" >&2
  exit 2
fi
: "${CITUS_SRC:?set CITUS_SRC to a source tree of github.com/citusdata/citus}"
CITUS_SRC=$(cd "$CITUS_SRC" && pwd)
if [[ ! -f $CITUS_SRC/configure || ! -f $CITUS_SRC/src/backend/distributed/citus.control ]]; then
  echo "citus.sh: $CITUS_SRC is not a Citus source tree (no configure, no citus.control)" >&2
  exit 2
fi

log() { printf '==> citus: %s\n' "$*"; }

BUILD_DIR=$PWD/target/citus/pg$PG_MAJOR
STAMP=$BUILD_DIR/installed-from
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)

source_identity() {
  local commit version
  commit=$(git -C "$CITUS_SRC" rev-parse HEAD 2>/dev/null || true)
  version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$CITUS_SRC/src/backend/distributed/citus.control")
  printf '%s %s %s\n' "$CITUS_SRC" "${commit:-export}" "$version"
}

apt_deps() {
  local missing=() p
  for p in libzstd-dev liblz4-dev libcurl4-openssl-dev libkrb5-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

build() {
  local want start
  want=$(source_identity)
  if [[ -f $PKGLIBDIR/citus.so && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
    log "Citus present in $PKGLIBDIR (built from $want)"
    return
  fi
  apt_deps
  start=$SECONDS
  mkdir -p "$BUILD_DIR"
  if [[ ! -f $BUILD_DIR/Makefile.global ]]; then
    log "configuring $CITUS_SRC for PostgreSQL $PG_MAJOR in $BUILD_DIR"
    (cd "$BUILD_DIR" && "$CITUS_SRC/configure" PG_CONFIG="$PG_CONFIG" >configure.log 2>&1) || {
      tail -30 "$BUILD_DIR/configure.log" >&2
      exit 1
    }
  fi
  log "building (several minutes; log in $BUILD_DIR/make.log)"
  make -C "$BUILD_DIR" -j"$(nproc)" >"$BUILD_DIR/make.log" 2>&1 || {
    tail -40 "$BUILD_DIR/make.log" >&2
    exit 1
  }
  make -C "$BUILD_DIR" install >"$BUILD_DIR/install.log" 2>&1 || {
    tail -40 "$BUILD_DIR/install.log" >&2
    exit 1
  }
  printf '%s\n' "$want" >"$STAMP"
  log "built and installed in $((SECONDS - start)) s"
}

case $action in
build) build ;;
test)
  build
  export PYTHONDONTWRITEBYTECODE=1 BI_CITUS=1
  start=$SECONDS
  rc=0
  python3 -m pytest -q -rs -p no:cacheprovider pg_test/test_citus.py "$@" || rc=$?
  log "pg_test/test_citus.py on PostgreSQL $PG_MAJOR: $((SECONDS - start)) s, exit status $rc"
  [[ -f target/citus-report.txt ]] && sed 's/^/    /' target/citus-report.txt
  exit "$rc"
  ;;
*)
  echo "usage: citus.sh build|test [pytest args]" >&2
  exit 2
  ;;
esac
