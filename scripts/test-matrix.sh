#!/usr/bin/env bash
# `make test`: the whole matrix, or the majors given (`make test PG=17`).
#   once:       cargo fmt --check
#   per major:  clippy (-D warnings), the #[pg_test]s (cargo pgrx test, as the
#               postgres user), a release install into that major's server,
#               the pg_test/ end-to-end suite against a primary + streaming
#               replica of that major (on 15 also the 0.1.0 -> current
#               upgrade test: 0.1.0 was released for 15 only; on 17 also
#               the pg_upgrade 15 -> 17 test), and its .deb
#   with 15:    the 15 package installed with dpkg -i and its smoke test
# A failing stage ends its major; the other majors still run, and the run
# fails at the end. Seconds per stage and major go to target/test-times.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
majors=("$@")
((${#majors[@]})) || majors=(14 15 16 17 18)
export PGRX_TEST_PGDATA=${PGRX_TEST_PGDATA:-/var/lib/postgresql/pgrx}
install -d -o postgres -g postgres "$PGRX_TEST_PGDATA"
times=target/test-times.txt
mkdir -p target
printf '%-8s %-12s %8s  %s\n' major stage seconds result >"$times"
failed=()

stage() { # stage MAJOR NAME COMMAND...
  local major=$1 name=$2 start rc
  shift 2
  printf '\n==> [%s] %s\n' "$major" "$name"
  start=$SECONDS
  "$@"
  rc=$?
  printf '%-8s %-12s %8d  %s\n' "$major" "$name" $((SECONDS - start)) \
    "$([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc)")" >>"$times"
  ((rc == 0)) || failed+=("$major:$name")
  return "$rc"
}

with() { bash scripts/with-pg.sh "$@"; }

begin=$SECONDS
stage all fmt cargo fmt --check
for major in "${majors[@]}"; do
  major_start=$SECONDS
  stage "$major" clippy with "$major" bash -c \
      'cargo clippy --all-targets $PG_FEATURES --features pg_test -- -D warnings' &&
    stage "$major" pgrx-test with "$major" bash -c \
      'cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$PGRX_TEST_PGDATA"' &&
    stage "$major" install with "$major" bash -c \
      'cargo pgrx install --release --pg-config "$PG_CONFIG" && bash scripts/gate.sh install' &&
    stage "$major" pg-test with "$major" bash pg_test/run.sh &&
    if [[ $major == 15 ]]; then
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
  printf '%-8s %-12s %8d\n' "$major" total $((SECONDS - major_start)) >>"$times"
done
printf '%-8s %-12s %8d\n' all total $((SECONDS - begin)) >>"$times"

printf '\n'
cat "$times"
if ((${#failed[@]})); then
  printf '\nmake test: FAILED: %s\n' "${failed[*]}"
  exit 1
fi
printf '\nmake test: all suites passed on PostgreSQL %s\n' "${majors[*]}"
