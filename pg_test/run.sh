#!/usr/bin/env bash
# End-to-end suite: starts its own primary + streaming replica (see
# pg_test/README.md) and tests the bi_access installed in the system
# PostgreSQL 15 (`make pg-test` installs it first). Extra arguments go to
# pytest instead of the default, e.g.
#   bash pg_test/run.sh pg_test/test_replica.py
#   bash pg_test/run.sh pg_test -k lifecycle
# Without arguments it runs twice: the whole suite with bi_access loaded by
# the credentials' sessions only, then the suites whose promises must hold
# whatever the load mode (PRELOAD_SUITES) with the servers preloading it
# (shared_preload_libraries, BI_PRELOAD=1), on the majors in PRELOAD_MAJORS.
# BI_PRELOAD=1 with arguments runs those in the preloaded mode.
set -euo pipefail
cd "$(dirname "$0")/.."
# Write nothing into the tree: no .pytest_cache, no __pycache__.
export PYTHONDONTWRITEBYTECODE=1
PRELOAD_SUITES=(pg_test/test_hostile.py pg_test/test_guardrails.py pg_test/test_revocation.py
                pg_test/test_resources.py pg_test/test_databases.py pg_test/test_usage.py
                pg_test/test_networks.py pg_test/test_rotation.py)
# The slowest tests are named at the end of each run (where the time goes).
pytest() { python3 -m pytest -q -rs -p no:cacheprovider --durations=12 "$@"; }
if (($#)); then
  pytest "$@"
  exit
fi
BI_PRELOAD= pytest pg_test
# The preloaded pass on one major of each branch of the preload code in
# src/compat.rs: 14 (no shmem_request_hook), 15 (16 takes the same path) and
# 17 (transaction_timeout built in; 18 the same). PRELOAD_MAJORS=all, or a
# run outside `make test` (no PG_MAJOR), runs it whatever the major.
PRELOAD_MAJORS=${PRELOAD_MAJORS:-14 15 17}
if [[ -n ${PG_MAJOR:-} && $PRELOAD_MAJORS != all && " $PRELOAD_MAJORS " != *" $PG_MAJOR "* ]]; then
  echo "== the preloaded pass runs on PostgreSQL $PRELOAD_MAJORS (PRELOAD_MAJORS), not on $PG_MAJOR =="
  exit
fi
echo "== the same promises with bi_access in shared_preload_libraries =="
BI_PRELOAD=1 pytest "${PRELOAD_SUITES[@]}"
