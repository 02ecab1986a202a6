#!/usr/bin/env bash
# The login gate, gate/bi_access_gate.c: a small C library every credential
# role loads at login beside bi_access (src/guard/gate.rs says why). Built
# with the PGXS of the major whose pg_config PG_CONFIG names, out of tree in
# <target dir>/gate, and put where bi_access.so goes:
#   bash scripts/with-pg.sh 16 bash scripts/gate.sh install      # into that major's lib dir
#   bash scripts/with-pg.sh 16 bash scripts/gate.sh stage DIR    # under DIR (a package's root)
# scripts/install.sh (make install, and every staged build) runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG_CONFIG:?run through scripts/with-pg.sh}"
action=${1:?usage: gate.sh install|stage DIR}
build=${CARGO_TARGET_DIR:-$PWD/target}/gate
mkdir -p "$build"
# with_llvm=no: nothing in the gate is worth JIT bitcode (and building it
# would need the clang the server was built with).
make_gate() { make --no-print-directory -s -C "$build" -f "$PWD/gate/Makefile" VPATH="$PWD/gate" PG_CONFIG="$PG_CONFIG" with_llvm=no "$@"; }
make_gate all
case $action in
  install) make_gate install ;;
  stage) make_gate install DESTDIR="$(realpath "${2:?usage: gate.sh stage DIR}")" ;;
  *) echo "gate.sh: unknown action $action" >&2; exit 2 ;;
esac
