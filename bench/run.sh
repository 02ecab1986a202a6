#!/usr/bin/env bash
# bi_access benchmark (issue 6): `make bench` or `bash bench/run.sh`.
#
# Builds the release build (into a private copy of the server's
# installation, see below), starts three scratch clusters of its
# own (as the postgres user, under /var/lib/postgresql/bi_access_bench):
#   A  the data set, bi_access, 10 credentials;
#   B  a byte-for-byte copy of A (copied while stopped) plus 9,990 more
#      credentials, so "10 vs 10,000 credentials" runs side by side;
#   C  the same 502 tables, empty, with the per-credential baseline
#      (bench/baseline.sql) instead of bi_access;
# then bench/bench.py measures everything and writes bench/RESULTS.md.
# The clusters are stopped and removed on exit, whatever happens.
#
# Environment (all optional):
#   BENCH_SECONDS   seconds per query per round (default 4)
#   BENCH_ROUNDS    rounds per comparison (default 8)
#   BENCH_PORT      first of three ports (default 56431)
#   BENCH_PKG       a `cargo pgrx package` output directory to use instead
#                   of building (for quick re-runs)
#   BENCH_KEEP=1    leave the clusters running (for poking around); stop them
#                   with `bash bench/run.sh stop`
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PGBIN/pg_config}
ROOT=${BENCH_ROOT:-/var/lib/postgresql/bi_access_bench}
SOCK=$ROOT/sock
PORT=${BENCH_PORT:-56431}
PORT_A=$PORT
PORT_B=$((PORT + 1))
PORT_C=$((PORT + 2))
ORDERS_ROWS=${BENCH_ORDERS_ROWS:-1000000}
ITEMS_ROWS=$((ORDERS_ROWS * 2))
SMALL_TABLES=${BENCH_SMALL_TABLES:-500}
SMALL_ROWS=${BENCH_SMALL_ROWS:-200}
CREDENTIALS_B=${BENCH_CREDENTIALS:-10000}
export PATH=$HOME/.cargo/bin:$PATH

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
as_pg() { runuser -u postgres -- "$@"; }
psql_on() { # port db [psql args...]: superuser over the private socket
    local port=$1 db=$2
    shift 2
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$port" -U postgres -d "$db" "$@"
}

stop_all() {
    for c in a b c; do
        if [[ -f $ROOT/$c/postmaster.pid ]]; then
            as_pg "$PGBIN/pg_ctl" -D "$ROOT/$c" -m immediate stop >/dev/null 2>&1 || true
        fi
    done
}
cleanup() {
    local rc=$?
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "BENCH_KEEP=1: clusters left running on ports $PORT_A $PORT_B $PORT_C (socket $SOCK)"
        return $rc
    fi
    stop_all
    rm -rf "$ROOT"
    return $rc
}

if [[ ${1:-} == stop ]]; then
    stop_all
    rm -rf "$ROOT"
    exit 0
fi

for p in $PORT_A $PORT_B $PORT_C; do
    if ss -ltn "( sport = :$p )" | grep -q LISTEN; then
        echo "port $p is in use; set BENCH_PORT to a free range" >&2
        exit 1
    fi
done

START=$(date +%s)

if [[ -e $ROOT ]]; then
    log "removing a leftover $ROOT"
    stop_all
    rm -rf "$ROOT"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$SOCK"

# The release build goes into a private copy of the server's installation
# tree ($ROOT/pg), not into the system one: other work on this machine
# reinstalls debug builds into /usr/lib/postgresql at any time, and a backend
# that loads the library after such an install runs the debug build (seen:
# generate took 100 ms instead of 7). PostgreSQL finds its lib and share
# directories relative to its own binary, so copies of postgres, initdb and
# pg_ctl with lib/ and share/ beside them make a complete installation.
PKG=${BENCH_PKG:-$ROOT/pkg}
# what is being measured: the commit, and the files that differ from it
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$REPO" status --porcelain -- src sql Cargo.toml Cargo.lock 2>/dev/null |
    awk '{print $2}' | tr '\n' ' ')
if [[ -z ${BENCH_PKG:-} ]]; then
    log "building the release build (cargo pgrx package: release profile, lto = fat)"
    (cd "$REPO" && cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$PKG") >"$ROOT/build.log" 2>&1 ||
        { tail -40 "$ROOT/build.log" >&2; exit 1; }
else
    log "BENCH_PKG=$PKG: using that package, not building"
fi
SYS_BIN=$("$PG_CONFIG" --bindir)
SYS_LIB=$("$PG_CONFIG" --pkglibdir)
SYS_SHARE=$("$PG_CONFIG" --sharedir)
[[ -f $PKG$SYS_LIB/bi_access.so ]] || { echo "no release build in $PKG$SYS_LIB" >&2; exit 1; }
BUILD_END=$(date +%s)
SO_SHA=$(sha256sum "$PKG$SYS_LIB/bi_access.so" | cut -c1-16)

PRIV=$ROOT/pg
PGSERVER=$PRIV$SYS_BIN
mkdir -p "$PGSERVER" "$PRIV$(dirname "$SYS_SHARE")"
cp -a "$SYS_BIN"/{postgres,initdb,pg_ctl} "$PGSERVER/"
cp -a "$SYS_LIB" "$PRIV$(dirname "$SYS_LIB")/"
cp -a "$SYS_SHARE" "$PRIV$(dirname "$SYS_SHARE")/"
rm -f "$PRIV$SYS_LIB"/bi_access* "$PRIV$SYS_SHARE"/extension/bi_access*
cp "$PKG$SYS_LIB"/bi_access.so "$PRIV$SYS_LIB/"
cp "$PKG$SYS_SHARE"/extension/bi_access* "$PRIV$SYS_SHARE/extension/"
chown -R postgres:postgres "$ROOT"
chmod 700 "$ROOT" "$SOCK"

configure() { # datadir port
    cat >>"$1/postgresql.conf" <<EOF

# --- bi_access benchmark (scratch cluster; durability off on purpose) ---
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 100
shared_buffers = 2GB
work_mem = 16MB
maintenance_work_mem = 512MB
effective_cache_size = 8GB
# fsync and full-page writes are off: this measures CPU cost, not the disk.
fsync = off
full_page_writes = off
max_wal_size = 16GB
checkpoint_timeout = 30min
password_encryption = 'scram-sha-256'
log_min_messages = warning
log_line_prefix = '%m [%p] %u@%d '
EOF
}
start() { # name
    as_pg "$PGSERVER/pg_ctl" -D "$ROOT/$1" -l "$ROOT/$1.log" -w -t 120 start >/dev/null
}

log "initdb cluster A (port $PORT_A)"
# Local socket connections are trusted (the socket directory is 0700, root and
# postgres only); every measured session logs in over TCP with SCRAM.
as_pg "$PGSERVER/initdb" -D "$ROOT/a" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
configure "$ROOT/a" "$PORT_A"
start a
psql_on "$PORT_A" postgres -c "CREATE DATABASE bench"

log "loading the data set: $ORDERS_ROWS orders, $ITEMS_ROWS order items, $SMALL_TABLES small tables"
T0=$(date +%s.%N)
psql_on "$PORT_A" bench -v orders_rows="$ORDERS_ROWS" -v items_rows="$ITEMS_ROWS" \
    -v small_tables="$SMALL_TABLES" -v small_rows="$SMALL_ROWS" -f "$HERE/dataset.sql"
T1=$(date +%s.%N)
psql_on "$PORT_A" bench >/dev/null <<'SQL'
CREATE EXTENSION bi_access;
GRANT bi_access_admin TO bench_admin;
SELECT bi_access.expose_table('public.orders');
SELECT bi_access.expose_table('public.order_items');
SQL
# the backends must run the release build from the private tree
LOADED=$(psql_on "$PORT_A" bench -At -c "SELECT bi_access.current_org(); \
    SELECT string_agg(DISTINCT m[1], ' ') FROM regexp_matches(pg_read_file('/proc/self/maps'), '(/\S*bi_access\.so)', 'g') m")
LOADED=$(echo "$LOADED" | tail -1)
if [[ $LOADED != "$PRIV$SYS_LIB/bi_access.so" ]]; then
    echo "the server loaded '$LOADED', not the release build $PRIV$SYS_LIB/bi_access.so" >&2
    exit 1
fi
log "the server runs the release build: $LOADED"
# the 500 small tables are new tables with the org column: the first sync
# exposes them (auto_expose is on by default)
INITIAL_SYNC=$(psql_on "$PORT_A" bench -At <<'SQL'
\timing on
SELECT count(*) FROM bi_access.sync_tables();
SQL
)
T2=$(date +%s.%N)
EXPOSED=$(psql_on "$PORT_A" bench -At -c "SELECT count(*) FROM bi_access.exposed_table WHERE NOT hidden")
log "exposed $EXPOSED tables; first sync: $(echo "$INITIAL_SYNC" | tr '\n' ' ')"

log "10 credentials (orgs 7, 107, ..., 907) in cluster A"
psql_on "$PORT_A" bench -At -F $'\t' >"$ROOT/credentials.tsv" <<'SQL'
SELECT o.org, c.username, c.password
FROM generate_series(7, 907, 100) AS o(org),
     LATERAL bi_access.generate(o.org::text, 'default', 'Org ' || o.org) AS c
ORDER BY o.org;
SQL
psql_on "$PORT_A" bench -c "VACUUM (ANALYZE)" -c "CHECKPOINT"

log "copying cluster A to B (stopped, byte for byte)"
as_pg "$PGSERVER/pg_ctl" -D "$ROOT/a" -w stop >/dev/null
as_pg cp -a "$ROOT/a" "$ROOT/b"
echo "port = $PORT_B" | as_pg tee -a "$ROOT/b/postgresql.conf" >/dev/null
start a
start b

log "cluster B: $((CREDENTIALS_B - 10)) more credentials (10 labels for each of the 1,000 orgs)"
T3=$(date +%s.%N)
BATCH=1000
for ((lo = 1; lo <= CREDENTIALS_B - 10; lo += BATCH)); do
    hi=$((lo + BATCH - 1))
    ((hi > CREDENTIALS_B - 10)) && hi=$((CREDENTIALS_B - 10))
    psql_on "$PORT_B" bench -At -c \
        "SELECT count(bi_access.generate((i % 1000 + 1)::text, 'filler' || (i / 1000)))
         FROM generate_series($lo, $hi) i" >/dev/null
done
T4=$(date +%s.%N)
# VACUUM everything but ANALYZE only what the fill changed: the data tables
# keep the statistics (and so the plans) they have on A
psql_on "$PORT_B" bench -c "VACUUM" -c "ANALYZE bi_access.credential, bi_access.event,
    pg_catalog.pg_authid, pg_catalog.pg_auth_members, pg_catalog.pg_db_role_setting,
    pg_catalog.pg_shdepend" -c "CHECKPOINT"
psql_on "$PORT_A" bench -c "CHECKPOINT"
COUNT_B=$(psql_on "$PORT_B" bench -At -c "SELECT count(*) FROM bi_access.credential WHERE status = 'active'")
log "cluster B has $COUNT_B active credentials"

log "initdb cluster C (port $PORT_C): the per-credential baseline, same 502 tables, empty"
as_pg "$PGSERVER/initdb" -D "$ROOT/c" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
configure "$ROOT/c" "$PORT_C"
echo "shared_buffers = 256MB" | as_pg tee -a "$ROOT/c/postgresql.conf" >/dev/null
start c
psql_on "$PORT_C" postgres -c "CREATE DATABASE bench"
psql_on "$PORT_C" bench -v orders_rows=0 -v items_rows=0 \
    -v small_tables="$SMALL_TABLES" -v small_rows=0 -f "$HERE/dataset.sql"
psql_on "$PORT_C" bench -f "$HERE/baseline.sql"

SETUP_END=$(date +%s)
python3 "$HERE/bench.py" \
    --sock "$SOCK" --port-a "$PORT_A" --port-b "$PORT_B" --port-c "$PORT_C" \
    --pgbin "$PGBIN" --credentials "$ROOT/credentials.tsv" \
    --seconds "${BENCH_SECONDS:-4}" --rounds "${BENCH_ROUNDS:-8}" \
    --results "$HERE/RESULTS.md" \
    --info "orders_rows=$ORDERS_ROWS" \
    --info "items_rows=$ITEMS_ROWS" \
    --info "small_tables=$SMALL_TABLES" \
    --info "exposed_tables=$EXPOSED" \
    --info "credentials_b=$COUNT_B" \
    --info "load_seconds=$(secs "$T0" "$T1")" \
    --info "expose_seconds=$(secs "$T1" "$T2")" \
    --info "fill_seconds=$(secs "$T3" "$T4")" \
    --info "fill_count=$((CREDENTIALS_B - 10))" \
    --info "build_seconds=$((BUILD_END - START))" \
    --info "setup_seconds=$((SETUP_END - BUILD_END))" \
    --info "start_epoch=$START" \
    --info "git_rev=$GIT_REV" \
    --info "git_dirty=${GIT_DIRTY:-none}" \
    --info "so_sha=$SO_SHA"
log "done in $(($(date +%s) - START)) s; results in bench/RESULTS.md"
