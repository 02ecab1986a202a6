#!/usr/bin/env bash
# Fails when a generated script in sql/ is not what the code generates now:
# the install script sql/bi_access--<version>.sql (scripts/install.sh installs
# it) and the upgrade script from the last released version, both written by
# scripts/upgrade_script.py.
set -euo pipefail
cd "$(dirname "$0")/.."
new=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
old=$(find sql/released -name 'bi_access--*.sql' | sed -E 's/.*bi_access--(.*)\.sql/\1/' | sort -V | tail -1)
python3 scripts/upgrade_script.py --check "$old" "$new"
echo "sql/bi_access--$new.sql and sql/bi_access--$old--$new.sql are what the code generates"
