#!/usr/bin/env bash
# End-to-end suite: starts its own primary + streaming replica (see
# pg_test/README.md) and tests the bi_access installed in the system
# PostgreSQL 15 (`make pg-test` installs it first). Extra arguments go to
# pytest instead of the default `pg_test`, e.g.
#   bash pg_test/run.sh pg_test/test_replica.py
#   bash pg_test/run.sh pg_test -k lifecycle
set -euo pipefail
cd "$(dirname "$0")/.."
# Write nothing into the tree: no .pytest_cache, no __pycache__.
export PYTHONDONTWRITEBYTECODE=1
(($#)) || set -- pg_test
exec python3 -m pytest -q -rs -p no:cacheprovider "$@"
