#!/usr/bin/env bash
# Installs the Debian 15 package that scripts/package.sh built, with dpkg -i,
# into Debian's PostgreSQL 15, and runs pg_test/smoke_package.py against it:
# CREATE EXTENSION, generate, log in on the replica with psql and psycopg2,
# only the org's rows (make package-test; the last stage of make test).
#
# The package replaces the files `make install` put into /usr/lib/postgresql/15
# and /usr/share/postgresql/15 (the same release build), and stays installed:
# a later `make install` overwrites its files again. Remove it with
# `dpkg -r postgresql-15-bi-access`, which also removes those files.
set -euo pipefail
cd "$(dirname "$0")/.."
major=${PG_MAJOR:-15}
if [[ $major != 15 ]]; then
  echo "package-test.sh: only Debian's 15 is a Debian package here; PostgreSQL $major is not" >&2
  exit 2
fi
version=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
deb=${BI_PACKAGE_DIR:-$PWD/target/packages}/postgresql-$major-bi-access_$version-1_amd64.deb
[[ -f $deb ]] || { echo "package-test.sh: $deb is missing; run 'make package PG=$major'" >&2; exit 1; }

dpkg -i "$deb"
# The files the server loads must be the package's, unchanged since.
dpkg -V "postgresql-$major-bi-access"
for file in "/usr/lib/postgresql/$major/lib/bi_access.so" "/usr/lib/postgresql/$major/lib/bi_access_gate.so" \
            "/usr/share/postgresql/$major/extension/bi_access.control"; do
  owner=$(dpkg -S "$file" | cut -d: -f1)
  [[ $owner == "postgresql-$major-bi-access" ]] \
    || { echo "package-test.sh: $file belongs to '$owner'" >&2; exit 1; }
done
export PG_BIN=/usr/lib/postgresql/$major/bin BI_PACKAGE_DEB=$deb
# Named outside pytest's test_*.py pattern so the pg_test suite never runs it
# against a server the package is not installed in.
exec bash pg_test/run.sh pg_test/smoke_package.py
