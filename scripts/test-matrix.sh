#!/usr/bin/env bash
# `make test`: the whole matrix, or the majors given (`make test PG=17`).
#   once:       cargo fmt --check; the generated install and upgrade scripts
#               are what the code generates (scripts/check-generated.sh); no
#               yanked crate in Cargo.lock (scripts/check-lock.py); no
#               symbolic link tracked by git (a clone must not depend on
#               this machine's paths); no import circle in src/
#               (scripts/check-layers.py)
#   per major:  clippy (-D warnings), the #[pg_test]s (cargo pgrx test, as the
#               postgres user), an install (the `ci` profile: release
#               without LTO) into that major's server,
#               the pg_test/ end-to-end suite against a primary + streaming
#               replica of that major (on 15 also README's transcripts
#               and the pinned errors of pg_test/errors/ against a new run,
#               and the upgrade test along every released
#               path: 0.1.0 was released for 15 only; on 17 also
#               the pg_upgrade 15 -> 17 test), and its .deb
#   with 15:    the 15 package installed with dpkg -i and its smoke test
#   Citus:      with CITUS_SRC set (a source tree of github.com/citusdata/citus),
#               scripts/citus.sh builds Citus for CITUS_PG (16 by default)
#               and runs pg_test/test_citus.py on a coordinator and two
#               workers, once that major's stages passed; one line says it
#               was skipped otherwise
# A failing stage ends its major; the other majors still run, and the run
# fails at the end. Majors run three at a time (BI_TEST_JOBS; each major has
# its own target directory, servers on ports the OS picks, and pgrx's test
# server on its own port), each into target/test-logs/<major>.log, printed
# whole once that major is done; the stage lines show as they happen.
# Seconds per stage and major go to target/test-times.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pg_majors.sh
source scripts/pg_majors.sh
majors=("$@")
# The longest majors first (15: transcripts, upgrades, package test; 17:
# pg_upgrade), so that the last one to start is a short one.
((${#majors[@]})) || majors=(15 17 $(printf '%s\n' "${PG_MAJORS[@]}" | grep -vx '15\|17'))
jobs=${BI_TEST_JOBS:-3}
# The installs build Cargo.toml's `ci` profile (release without LTO).
export BI_PROFILE=${BI_PROFILE:-ci}
export PGRX_TEST_PGDATA=${PGRX_TEST_PGDATA:-/var/lib/postgresql/pgrx}
install -d -o postgres -g postgres "$PGRX_TEST_PGDATA"
times=target/test-times.txt
logs=target/test-logs
rm -rf "$logs"
mkdir -p "$logs"
printf '%-8s %-12s %8s  %s\n' major stage seconds result >"$times"

stage() { # stage MAJOR NAME COMMAND...
  local major=$1 name=$2 start rc
  shift 2
  printf '\n==> [%s] %s\n' "$major" "$name"
  printf '%s ==> [%s] %s\n' "$(date +%T)" "$major" "$name" >&3
  start=$SECONDS
  "$@"
  rc=$?
  printf '%-8s %-12s %8d  %s\n' "$major" "$name" $((SECONDS - start)) \
    "$([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc)")" >>"$logs/$major.times"
  ((rc == 0)) || echo "$major:$name" >>"$logs/failed"
  return "$rc"
}

with() { bash scripts/with-pg.sh "$@"; }

major_suite() { # major_suite MAJOR: every stage of one major, in order
  local major=$1 major_start=$SECONDS
  stage "$major" clippy with "$major" bash -c \
      'cargo clippy --all-targets $PG_FEATURES --features pg_test -- -D warnings' &&
    stage "$major" pgrx-test with "$major" bash -c \
      'cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$PGRX_TEST_PGDATA"' &&
    stage "$major" install with "$major" bash scripts/install.sh &&
    stage "$major" pg-test with "$major" bash pg_test/run.sh &&
    if [[ $major == 15 ]]; then
      # README's transcripts were written on 15 (scripts/five_minutes.py).
      stage "$major" readme with "$major" python3 scripts/five_minutes.py --check &&
      # Every error's SQLSTATE, message and HINT, pinned on 15 too
      # (scripts/errors.py; `make errors` rewrites them).
      stage "$major" errors with "$major" python3 scripts/errors.py --check &&
      # 0.1.0 was released for 15 only: its upgrade path exists there.
      stage "$major" upgrade with "$major" bash pg_test/upgrade/run.sh
    elif [[ $major == 17 ]]; then
      # pg_upgrade from 15 to 17 with bi_access in use. It packages 17's
      # build (just installed: only the SQL is regenerated) and builds the
      # 15 side itself, both into private copies of the servers.
      stage "$major" pg-upgrade bash pg_test/upgrade/pg_upgrade.sh
    fi &&
    stage "$major" package with "$major" bash scripts/package.sh &&
    if [[ $major == 15 ]]; then
      stage "$major" package-test with "$major" bash scripts/package-test.sh
    fi
  printf '%-8s %-12s %8d\n' "$major" total $((SECONDS - major_start)) >>"$logs/$major.times"
}

begin=$SECONDS
exec 3>&1
{
  stage all fmt cargo fmt --check
  stage all generated bash scripts/check-generated.sh
  stage all lock python3 scripts/check-lock.py
  stage all links bash -c '! git ls-files -s | grep "^120000"'
  stage all layers python3 scripts/check-layers.py
} >"$logs/all.log" 2>&1
cat "$logs/all.log"
for major in "${majors[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n; done
  major_suite "$major" >"$logs/$major.log" 2>&1 &
done
wait
for major in "${majors[@]}"; do
  printf '\n======== PostgreSQL %s (target/test-logs/%s.log) ========\n' "$major" "$major"
  cat "$logs/$major.log"
done
cat "$logs/all.times" >>"$times"
for major in "${majors[@]}"; do cat "$logs/$major.times" >>"$times"; done
citus_major=${CITUS_PG:-16}
if [[ -z ${CITUS_SRC:-} ]]; then
  citus_skipped="CITUS_SRC is not set (make citus-test CITUS_SRC=<a checkout of github.com/citusdata/citus>)"
elif [[ " ${majors[*]} " != *" $citus_major "* ]]; then
  citus_skipped="PostgreSQL $citus_major (CITUS_PG) is not among this run's majors"
elif grep -q "^$citus_major:" "$logs/failed" 2>/dev/null; then
  citus_skipped="PostgreSQL $citus_major failed a stage"
else
  citus_skipped=
  stage "$citus_major" citus with "$citus_major" bash scripts/citus.sh test
  cat "$logs/$citus_major.times" >"$logs/citus.times"
  tail -1 "$logs/citus.times" >>"$times"
fi
if [[ -n $citus_skipped ]]; then
  printf '\n==> citus: skipped: %s\n' "$citus_skipped"
  printf '%-8s %-12s %8s  %s\n' "$citus_major" citus - "skipped: $citus_skipped" >>"$times"
fi
printf '%-8s %-12s %8d\n' all total $((SECONDS - begin)) >>"$times"

printf '\n'
cat "$times"
if [[ -s $logs/failed ]]; then
  printf '\nmake test: FAILED: %s\n' "$(tr '\n' ' ' <"$logs/failed")"
  exit 1
fi
printf '\nmake test: all suites passed on PostgreSQL %s\n' "${majors[*]}"
