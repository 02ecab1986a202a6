#!/usr/bin/env bash
# Usage: scripts/with-pg.sh MAJOR COMMAND [ARG...]
#
# Runs COMMAND in the environment of one PostgreSQL major (14 to 18):
#   PG_MAJOR        the major
#   PG_BIN          its server's bin directory (pg_test/cluster.py reads it)
#   PG_CONFIG       its pg_config
#   PG_FEATURES     cargo's feature flags for it ("" for 15, the default)
#   PGRX_PG_CONFIG_PATH, CARGO_TARGET_DIR   (for every major but 15)
#
# 15 is Debian's server, the one `cargo pgrx init` registered: its builds
# keep the plain `target/` and the environment a bare `cargo build` sees, so
# switching between `make` and cargo rebuilds nothing. Every other major
# builds in `target/pg<major>/`: pgrx-pg-sys regenerates its bindings when
# PGRX_PG_CONFIG_PATH changes, and a shared target directory would redo that
# (and every crate above it) at each switch.
set -euo pipefail
major=${1:?usage: with-pg.sh MAJOR COMMAND...}
shift
# shellcheck source=scripts/pg_majors.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg_majors.sh"
if [[ " ${PG_MAJORS[*]} " != *" $major "* ]]; then
  echo "with-pg.sh: PostgreSQL $major is not supported (supported: ${PG_MAJORS[*]})" >&2
  exit 2
fi
export PG_MAJOR=$major
PG_BIN=$(pg_bin "$major")
PG_CONFIG=$(pg_config_of "$major")
export PG_BIN PG_CONFIG
if [[ ! -x $PG_CONFIG ]]; then
  echo "with-pg.sh: $PG_CONFIG is missing; run 'make setup'" >&2
  exit 1
fi
if [[ $major == 15 ]]; then
  export PG_FEATURES=""
  unset PGRX_PG_CONFIG_PATH
else
  export PG_FEATURES="--no-default-features --features pg$major"
  export PGRX_PG_CONFIG_PATH=$PG_CONFIG
  export CARGO_TARGET_DIR=$BI_ROOT/target/pg$major
  # The wheels' contrib modules (dblink, postgres_fdw) carry a RUNPATH of
  # the build machine's /opt/postgresql/lib, so without this they load the
  # system's libpq (Debian's 15), which lacks what 16 and later call
  # (PQcancelStart…). Their own libpq is in lib/ beside them.
  export LD_LIBRARY_PATH=$PG_LOCAL_DIR/$major/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if ((major >= 16)); then
  # From 16 on, granting a membership locks the group until commit, and every
  # generate() grants bi_access_credential. The #[pg_test]s share one
  # database and each holds its transaction to the end, so in parallel one
  # waits on another's group lock while holding a catalog entry the other
  # needs: a deadlock. One at a time they cannot.
  export RUST_TEST_THREADS=1
fi
exec "$@"
