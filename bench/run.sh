#!/usr/bin/env bash
# bi_access benchmark (issues 19 and 12): `make bench` or `bash bench/run.sh`.
#
# Builds the release build of the commit checked out (HEAD, exported with
# `git archive`, so uncommitted work of others never leaks into it) into a
# private copy of the server's installation, and runs, as the postgres user,
# under /var/lib/postgresql/bi_access_bench:
#   A  the data set, bi_access, 10 credentials, the hand-written peers
#      (bench/baseline.sql): a twin of the big tables with one RLS policy,
#      a plain login role, a hand-written `generate`;
#   B  A plus 99,990 more credentials (100,000 in all), so "10 vs 100,000
#      credentials" runs side by side on two otherwise identical servers;
#   R  a streaming hot-standby replica of A (pg_basebackup -R), for the
#      revocation reach;
#   P  a small fresh primary with bi_access in shared_preload_libraries
#      (the yield worker), for items 9 and 10.
# A and B are built once per build and data set and cached (keyed by the
# hash of bi_access.so, its SQL and the set-up files); every run works on
# copies. All measured servers run with PostgreSQL's default durability
# (fsync, full_page_writes, synchronous_commit on); only the one-off build
# of the cached clusters runs with fsync off, and they are shut down cleanly
# and synced to disk before being used durably.
# bench/bench.py measures and writes RESULTS.md; the exit status is non-zero
# when a target is missed.
#
# Environment (all optional):
#   BENCH_QUICK=1   a few-minute run on a smaller data set (100,000 orders,
#                   2,000 credentials on B, 3 short rounds); results go to
#                   $ROOT/RESULTS.quick.md, never to bench/RESULTS.md
#   BENCH_SECONDS   seconds per query per round (default 4)
#   BENCH_ROUNDS    rounds per comparison (default 8)
#   BENCH_PORT      first of four ports (default 56431: A, B = +1, R = +2, P = +3)
#   BENCH_WORKTREE=1 build the working tree instead of HEAD (the results
#                   then say "dirty" when src/ or sql/ differ from HEAD)
#   BENCH_PKG       a staged build (`DESTDIR=DIR scripts/install.sh`, with the login gate
#                   that `scripts/gate.sh stage DIR` adds) to use instead
#                   of building (the results then say "dirty": unverified build)
#   BENCH_RESULTS   where to write the results
#   BENCH_KEEP=1    leave the servers running; `bash bench/run.sh stop` stops them
#   BENCH_NO_CACHE=1 rebuild the cached clusters
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PGBIN/pg_config}
ROOT=${BENCH_ROOT:-/var/lib/postgresql/bi_access_bench}
RUN=$ROOT/run
CACHE=$ROOT/cache
SOCK=$RUN/sock
PORT=${BENCH_PORT:-56431}
PORT_A=$PORT
PORT_B=$((PORT + 1))
PORT_R=$((PORT + 2))
PORT_P=$((PORT + 3))
QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ORDERS_ROWS=${BENCH_ORDERS_ROWS:-100000}
    SMALL_TABLES=${BENCH_SMALL_TABLES:-50}
    CREDENTIALS_B=${BENCH_CREDENTIALS:-2000}
    SECONDS_PER=${BENCH_SECONDS:-1}
    ROUNDS=${BENCH_ROUNDS:-3}
    RESULTS=${BENCH_RESULTS:-$ROOT/RESULTS.quick.md}
else
    ORDERS_ROWS=${BENCH_ORDERS_ROWS:-1000000}
    SMALL_TABLES=${BENCH_SMALL_TABLES:-500}
    CREDENTIALS_B=${BENCH_CREDENTIALS:-100000}
    SECONDS_PER=${BENCH_SECONDS:-4}
    ROUNDS=${BENCH_ROUNDS:-8}
    RESULTS=${BENCH_RESULTS:-$HERE/RESULTS.md}
fi
ITEMS_ROWS=$((ORDERS_ROWS * 2))
SMALL_ROWS=${BENCH_SMALL_ROWS:-200}
# bump when the set-up below changes in a way the cache key cannot see
SETUP_VERSION=3
export PATH=$HOME/.cargo/bin:$PATH

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
as_pg() { runuser -u postgres -- "$@"; }
psql_on() { # port db [psql args...]: superuser over the private socket
    local port=$1 db=$2
    shift 2
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$port" -U postgres -d "$db" "$@"
}

stop_dir() { # datadir
    if [[ -f $1/postmaster.pid ]]; then
        as_pg "$PGSERVER/pg_ctl" -D "$1" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            as_pg "$PGSERVER/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1 || true
    fi
}
stop_all() {
    local d
    for d in "$RUN"/p "$RUN"/r "$RUN"/a "$RUN"/b "$CACHE"/clusters/*.tmp/a "$CACHE"/clusters/*.tmp/b; do
        [[ -d $d ]] && stop_dir "$d"
    done
    return 0
}
cleanup() {
    local rc=$?
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "BENCH_KEEP=1: servers left running on ports $PORT_A $PORT_B $PORT_R $PORT_P (socket $SOCK)"
        return $rc
    fi
    stop_all
    rm -rf "$RUN" "$CACHE"/clusters/*.tmp
    return $rc
}

PGSERVER=$RUN/pg$("$PG_CONFIG" --bindir)
if [[ ${1:-} == stop ]]; then
    stop_all
    rm -rf "$RUN"
    exit 0
fi

for p in $PORT_A $PORT_B $PORT_R $PORT_P; do
    if ss -ltn "( sport = :$p )" | grep -q LISTEN; then
        echo "port $p is in use (servers left by an interrupted run? \`bash bench/run.sh stop\`); or set BENCH_PORT to a free range" >&2
        exit 1
    fi
done

START=$(date +%s)
if [[ -e $RUN ]]; then
    log "removing a leftover $RUN"
    stop_all
    rm -rf "$RUN"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$SOCK" "$CACHE"

# ---- what is measured: the build ---------------------------------------
# By default the commit checked out (HEAD) is exported with `git archive`
# into $CACHE/src and built there with its own target directory: other work
# in the working tree (uncommitted edits, debug builds holding cargo's lock)
# never reaches the measured library. The results say "clean" only when the
# build is HEAD's and bench/ itself has no uncommitted change.
GIT_REV=$(git -C "$REPO" rev-parse --short=12 HEAD)
BENCH_DIRTY=$(git -C "$REPO" status --porcelain -- bench Makefile | grep -v ' bench/RESULTS.md$' |
    awk '{print $2}' | tr '\n' ' ' || true)
SRC_DIRTY=$(git -C "$REPO" status --porcelain -- src sql Cargo.toml Cargo.lock bi_access.control .cargo |
    awk '{print $2}' | tr '\n' ' ' || true)
PKG=$CACHE/pkg
export CARGO_TARGET_DIR=$CACHE/target
if [[ -n ${BENCH_PKG:-} ]]; then
    PKG=$BENCH_PKG
    BUILD_DESC="a prebuilt package ($BENCH_PKG), not verified against any commit"
    BUILD_CLEAN=0
    log "BENCH_PKG=$PKG: using that package, not building"
else
    if [[ ${BENCH_WORKTREE:-0} == 1 ]]; then
        SRC=$REPO
        if [[ -n $SRC_DIRTY ]]; then
            BUILD_DESC="the working tree: commit $GIT_REV plus uncommitted changes to $SRC_DIRTY"
            BUILD_CLEAN=0
        else
            BUILD_DESC="commit $GIT_REV (working tree, no uncommitted change to the sources)"
            BUILD_CLEAN=1
        fi
    else
        SRC=$CACHE/src
        FULL_REV=$(git -C "$REPO" rev-parse HEAD)
        if [[ $(cat "$CACHE/src.rev" 2>/dev/null) != "$FULL_REV" ]]; then
            rm -rf "$SRC" "$CACHE/src.rev"
            mkdir -p "$SRC"
            git -C "$REPO" archive HEAD | tar -x -C "$SRC"
            # git archive stamps files with the commit's time, which can be
            # older than the last build's outputs: cargo would call them
            # fresh. Stamp them now so cargo rebuilds what changed.
            find "$SRC" -exec touch {} +
            echo "$FULL_REV" >"$CACHE/src.rev"
        fi
        BUILD_DESC="commit $GIT_REV (exported with git archive; uncommitted changes are not in it)"
        BUILD_CLEAN=1
    fi
    log "building the release build of $BUILD_DESC (scripts/install.sh into a staging root: release profile, lto = fat)"
    rm -rf "$PKG"
    (cd "$SRC" && PG_MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/') PG_CONFIG=$PG_CONFIG \
        PG_FEATURES="" DESTDIR=$PKG bash scripts/install.sh) >"$CACHE/build.log" 2>&1 ||
        { tail -40 "$CACHE/build.log" >&2; exit 1; }
fi
if [[ -n $BENCH_DIRTY ]]; then
    BUILD_CLEAN=0
fi
SYS_BIN=$("$PG_CONFIG" --bindir)
SYS_LIB=$("$PG_CONFIG" --pkglibdir)
SYS_SHARE=$("$PG_CONFIG" --sharedir)
for library in bi_access bi_access_gate; do
    [[ -f $PKG$SYS_LIB/$library.so ]] || { echo "no release build of $library in $PKG$SYS_LIB" >&2; exit 1; }
done
BUILD_END=$(date +%s)
SO_SHA=$(sha256sum "$PKG$SYS_LIB/bi_access.so" | cut -c1-16)

# ---- a private installation ---------------------------------------------
# The release build goes into a private copy of the server's installation
# tree, not into the system one: other work on this machine reinstalls debug
# builds into /usr/lib/postgresql at any time. PostgreSQL finds its lib and
# share directories relative to its own binary.
PRIV=$RUN/pg
mkdir -p "$PGSERVER" "$PRIV$(dirname "$SYS_SHARE")"
cp -a "$SYS_BIN"/{postgres,initdb,pg_ctl} "$PGSERVER/"
cp -a "$SYS_LIB" "$PRIV$(dirname "$SYS_LIB")/"
cp -a "$SYS_SHARE" "$PRIV$(dirname "$SYS_SHARE")/"
rm -f "$PRIV$SYS_LIB"/bi_access* "$PRIV$SYS_SHARE"/extension/bi_access*
cp "$PKG$SYS_LIB"/bi_access.so "$PKG$SYS_LIB"/bi_access_gate.so "$PRIV$SYS_LIB/"
cp "$PKG$SYS_SHARE"/extension/bi_access* "$PRIV$SYS_SHARE/extension/"
chown -R postgres:postgres "$RUN"
chmod 700 "$SOCK"

configure() { # datadir port
    cat >>"$1/postgresql.conf" <<EOF

# --- bi_access benchmark (durable: PostgreSQL's defaults for fsync,
# full_page_writes and synchronous_commit) ---
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 100
shared_buffers = 2GB
work_mem = 16MB
maintenance_work_mem = 512MB
effective_cache_size = 8GB
fsync = on
full_page_writes = on
synchronous_commit = on
wal_level = replica
max_wal_senders = 5
hot_standby = on
wal_receiver_status_interval = 1
max_wal_size = 2GB
checkpoint_timeout = 30min
password_encryption = 'scram-sha-256'
log_min_messages = warning
log_line_prefix = '%m [%p] %u@%d '
EOF
}
start_dir() { # datadir log [pg_ctl -o options]
    as_pg "$PGSERVER/pg_ctl" -D "$1" -l "$2" -w -t 300 ${3:+-o "$3"} start >/dev/null
}
# during the one-off build of the cached clusters only
FAST="-c fsync=off -c full_page_writes=off -c synchronous_commit=off"

# ---- the cached clusters A and B -----------------------------------------
KEY=$( {
    echo "v$SETUP_VERSION $ORDERS_ROWS $SMALL_TABLES $SMALL_ROWS $CREDENTIALS_B"
    cat "$PKG$SYS_LIB"/bi_access.so "$PKG$SYS_LIB"/bi_access_gate.so "$PKG$SYS_SHARE"/extension/bi_access* \
        "$HERE/dataset.sql" "$HERE/baseline.sql"
} | sha256sum | cut -c1-16)
CL=$CACHE/clusters/$KEY
if [[ ${BENCH_NO_CACHE:-0} == 1 ]]; then
    rm -rf "$CL"
fi
if [[ -f $CL/ready ]]; then
    log "reusing the cached clusters A and B ($CL, built $(cat "$CL/ready"))"
    CACHED=yes
else
    CACHED=no
    rm -rf "$CACHE"/clusters
    TMP=$CL.tmp
    mkdir -p "$TMP"
    chown postgres:postgres "$CACHE" "$CACHE"/clusters "$TMP"
    log "building cluster A (cached as $CL; fsync off during the build only)"
    # Local socket connections are trusted (the socket directory is 0700,
    # root and postgres only); every measured session logs in over TCP
    # with SCRAM.
    as_pg "$PGSERVER/initdb" -D "$TMP/a" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    configure "$TMP/a" "$PORT_A"
    start_dir "$TMP/a" "$RUN/a-build.log" "$FAST"
    psql_on "$PORT_A" postgres -c "CREATE DATABASE bench"
    log "loading the data set: $ORDERS_ROWS orders, $ITEMS_ROWS order items (each with two twins), $SMALL_TABLES small tables"
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
    # the small tables are new tables with the org column: the first sync
    # exposes them (auto_expose is on by default)
    psql_on "$PORT_A" bench -At -c "SELECT count(*) FROM bi_access.sync_tables()" >/dev/null
    T2=$(date +%s.%N)
    psql_on "$PORT_A" bench -f "$HERE/baseline.sql"
    log "10 credentials (orgs 7, 107, ..., 907, connection_limit => -1) in cluster A"
    psql_on "$PORT_A" bench -At -F $'\t' >"$TMP/credentials.tsv" <<'SQL'
SELECT o.org, c.username, c.password
FROM generate_series(7, 907, 100) AS o(org),
     LATERAL bi_access.generate(o.org::text, 'default', 'Org ' || o.org, connection_limit => -1) AS c
ORDER BY o.org;
SQL
    psql_on "$PORT_A" bench -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
    stop_dir "$TMP/a"
    log "cluster B = A copied while stopped, plus $((CREDENTIALS_B - 10)) credentials"
    as_pg cp -a "$TMP/a" "$TMP/b"
    echo "port = $PORT_B" | as_pg tee -a "$TMP/b/postgresql.conf" >/dev/null
    start_dir "$TMP/b" "$RUN/b-build.log" "$FAST"
    T3=$(date +%s.%N)
    fill() { # first last: generate in transactions of 1,000
        local lo hi
        for ((lo = $1; lo <= $2; lo += 1000)); do
            hi=$((lo + 999))
            ((hi > $2)) && hi=$2
            psql_on "$PORT_B" bench -At -c \
                "SELECT count(bi_access.generate((i % 1000 + 1)::text, 'filler' || (i / 1000)))
                 FROM generate_series($lo, $hi) i" >/dev/null
        done
    }
    N=$((CREDENTIALS_B - 10))
    HALF=$((N / 2))
    fill 1 "$HALF" &
    FILL1=$!
    fill $((HALF + 1)) "$N" &
    FILL2=$!
    wait $FILL1
    wait $FILL2
    T4=$(date +%s.%N)
    # VACUUM everything but ANALYZE only what the fill changed: the data
    # tables keep the statistics (and so the plans) they have on A
    psql_on "$PORT_B" bench -c "VACUUM" -c "ANALYZE bi_access.credential, bi_access.event,
        pg_catalog.pg_authid, pg_catalog.pg_auth_members, pg_catalog.pg_db_role_setting,
        pg_catalog.pg_shdepend" -c "CHECKPOINT"
    stop_dir "$TMP/b"
    sync
    cat >"$TMP/info.env" <<EOF
load_seconds=$(secs "$T0" "$T1")
expose_seconds=$(secs "$T1" "$T2")
fill_seconds=$(secs "$T3" "$T4")
fill_count=$N
EOF
    date -u +%Y-%m-%dT%H:%MZ >"$TMP/ready"
    mv "$TMP" "$CL"
fi

log "copying the cached clusters into $RUN"
as_pg cp -a "$CL/a" "$RUN/a"
as_pg cp -a "$CL/b" "$RUN/b"
cp "$CL/credentials.tsv" "$RUN/credentials.tsv"
start_dir "$RUN/a" "$RUN/a.log"
start_dir "$RUN/b" "$RUN/b.log"

# the backends must run the release build from the private tree
LOADED=$(psql_on "$PORT_A" bench -At -c "SELECT bi_access.current_org(); \
    SELECT string_agg(DISTINCT m[1], ' ') FROM regexp_matches(pg_read_file('/proc/self/maps'), '(/\S*bi_access\.so)', 'g') m" |
    tail -1)
if [[ $LOADED != "$PRIV$SYS_LIB/bi_access.so" ]]; then
    echo "the server loaded '$LOADED', not the release build $PRIV$SYS_LIB/bi_access.so" >&2
    exit 1
fi
log "the servers run the release build: $LOADED"

log "replica R of A (pg_basebackup -R, port $PORT_R, application_name bench_replica)"
as_pg "$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT_A" -U postgres -D "$RUN/r" -R -X stream -c fast
# the replica's log names each ended session's SQLSTATE (item 6)
printf "port = %s\nlog_line_prefix = '%%m [%%p] %%u@%%d %%e '\n" "$PORT_R" |
    as_pg tee -a "$RUN/r/postgresql.conf" >/dev/null
echo "primary_conninfo = 'host=$SOCK port=$PORT_A user=postgres application_name=bench_replica'" |
    as_pg tee -a "$RUN/r/postgresql.auto.conf" >/dev/null
start_dir "$RUN/r" "$RUN/r.log"
for _ in $(seq 120); do
    STATE=$(psql_on "$PORT_A" postgres -At -c \
        "SELECT state FROM pg_stat_replication WHERE application_name = 'bench_replica'")
    [[ $STATE == streaming ]] && break
    sleep 0.5
done
[[ $STATE == streaming ]] || { echo "the replica does not stream" >&2; exit 1; }

log "P: a fresh primary with bi_access preloaded (the yield worker), port $PORT_P"
as_pg "$PGSERVER/initdb" -D "$RUN/p" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
configure "$RUN/p" "$PORT_P"
# Two usage entries (items 11 and 12): the yield credential's and `counted`'s.
printf "shared_preload_libraries = 'bi_access'\nshared_buffers = 256MB\nbi_access.usage_max_credentials = 2\n" |
    as_pg tee -a "$RUN/p/postgresql.conf" >/dev/null
start_dir "$RUN/p" "$RUN/p.log"
psql_on "$PORT_P" postgres -c "CREATE DATABASE bench"
psql_on "$PORT_P" bench >/dev/null <<'SQL'
CREATE ROLE bench_app LOGIN PASSWORD 'bench_app';
CREATE TABLE orders (id bigint PRIMARY KEY, org_id bigint NOT NULL, amount integer NOT NULL,
                     status text NOT NULL DEFAULT 'new');
INSERT INTO orders SELECT i, i % 1000 + 1, i % 997, 'new' FROM generate_series(1, 100000) i;
ALTER TABLE orders OWNER TO bench_app;
CREATE EXTENSION bi_access;
SELECT bi_access.expose_table('orders');
SELECT count(*) FROM bi_access.sync_tables();
VACUUM ANALYZE orders;
SQL
psql_on "$PORT_P" bench -At -F $'\t' -c \
    "SELECT c.username, c.password FROM bi_access.generate('7', 'yield') c" >"$RUN/p_credential.tsv"
psql_on "$PORT_P" bench -At -F $'\t' -c \
    "SELECT c.username, c.password FROM unnest(ARRAY['counted', 'uncounted']) WITH ORDINALITY u (l, n),
            bi_access.generate('7', u.l) c ORDER BY u.n" \
    >"$RUN/p_usage.tsv"

COUNT_B=$(psql_on "$PORT_B" bench -At -c "SELECT count(*) FROM bi_access.credential WHERE status = 'active'")
EXPOSED=$(psql_on "$PORT_A" bench -At -c "SELECT count(*) FROM bi_access.exposed_table WHERE NOT hidden")
log "A: $EXPOSED exposed tables; B: $COUNT_B active credentials; R streaming"
SETUP_END=$(date +%s)

# shellcheck disable=SC1091
source "$CL/info.env"
set +e
python3 "$HERE/bench.py" \
    --sock "$SOCK" --port-a "$PORT_A" --port-b "$PORT_B" --port-r "$PORT_R" --port-p "$PORT_P" \
    --p-credential "$RUN/p_credential.tsv" --p-usage "$RUN/p_usage.tsv" \
    --credentials "$RUN/credentials.tsv" --r-log "$RUN/r.log" \
    --seconds "$SECONDS_PER" --rounds "$ROUNDS" --quick "$QUICK" \
    --results "$RESULTS" \
    --info "orders_rows=$ORDERS_ROWS" \
    --info "items_rows=$ITEMS_ROWS" \
    --info "small_tables=$SMALL_TABLES" \
    --info "exposed_tables=$EXPOSED" \
    --info "credentials_b=$COUNT_B" \
    --info "load_seconds=$load_seconds" \
    --info "expose_seconds=$expose_seconds" \
    --info "fill_seconds=$fill_seconds" \
    --info "fill_count=$fill_count" \
    --info "cached=$CACHED" \
    --info "cluster_key=$KEY" \
    --info "build_seconds=$((BUILD_END - START))" \
    --info "setup_seconds=$((SETUP_END - BUILD_END))" \
    --info "start_epoch=$START" \
    --info "git_rev=$GIT_REV" \
    --info "build_desc=$BUILD_DESC" \
    --info "build_clean=$BUILD_CLEAN" \
    --info "bench_dirty=${BENCH_DIRTY:-}" \
    --info "so_sha=$SO_SHA"
RC=$?
set -e
log "done in $(($(date +%s) - START)) s; results in $RESULTS (exit $RC)"
exit $RC
