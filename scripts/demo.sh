#!/usr/bin/env bash
# bi_access demo: a scratch primary + streaming read replica, a sample SaaS
# database, and two organizations that each get their own read-only BI login.
#
#   bash scripts/demo.sh start   # (re)create and run the demo   (make demo)
#   bash scripts/demo.sh stop    # stop it and remove its files  (make demo-stop)
#
# Needs the extension installed into the PostgreSQL it runs: Debian's 15 by
# default, the major of PG_BIN when `make demo PG=17` sets it (make install).
# Runs as root; the servers run as the postgres user (initdb refuses root).
# Never touches the Debian cluster on 5432.
set -Eeuo pipefail

PGBIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_MAJOR=$("$PGBIN/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
# Overridable so a second checkout can demo without stopping the first one's.
DEMO_DIR=${BI_DEMO_DIR:-/var/lib/postgresql/bi_access_demo}
PRIMARY_DIR=$DEMO_DIR/primary
REPLICA_DIR=$DEMO_DIR/replica
SOCKET_DIR=$DEMO_DIR/run        # our own unix sockets, away from /var/run/postgresql
LOG_DIR=$DEMO_DIR/logs
LOG=$LOG_DIR/demo.log           # initdb, pg_ctl, pg_basebackup, openssl output
HOST=127.0.0.1
PRIMARY_PORT=${BI_DEMO_PORT:-54329}
REPLICA_PORT=$((PRIMARY_PORT + 1))
REPLICA_NAME=bi_replica         # application_name the replica streams under
DB=saas
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The application's login (created by demo_schema.sql). It talks to the primary.
APP_URL="postgresql://app:app-demo-password@$HOST:$PRIMARY_PORT/$DB"
APP_REPLICA_URL="postgresql://app:app-demo-password@$HOST:$REPLICA_PORT/$DB"

# The organizations that get a BI login: org key and name. Initech (303) gets
# none, so its rows must stay invisible to both.
ORG_KEYS=(101 202)
ORG_NAMES=(Acme Globex)
declare -A URL=()               # org key -> the url generate() returned

# Exposed tables and the org column of each, in display order; api_keys is
# hidden from BI on purpose.
TABLES=(organizations projects invoices tickets api_keys)
declare -A ORG_COLUMN=([organizations]=id [projects]=org_id [invoices]=org_id
  [tickets]=tenant_id [api_keys]=org_id)

# The caller's libpq environment (PGHOST, PGPASSWORD, ~/.pgpass, a service
# file, PGSSLMODE...) must not change where the demo connects or which password
# it sends: the point is that the generated URL works on its own.
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGPASSWORD PGPASSFILE PGSERVICE \
  PGSERVICEFILE PGSSLMODE PGOPTIONS PGAPPNAME PGTARGETSESSIONATTRS PGREQUIRESSL

FAILURES=0                      # isolation/read-only checks that did not hold

# ---------------------------------------------------------------- output ----

# Bold headers on a terminal only, so a captured log has no escape codes.
if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
section() { printf '\n%s== %s ==%s\n\n' "$BOLD" "$*" "$PLAIN"; }
say() { printf '%s\n' "$*"; }
indent() { sed 's/^/    /'; }
die() { printf '\ndemo.sh: %s\n' "$*" >&2; exit 1; }

# Set -E makes this fire inside functions too; command substitutions inherit
# it, so only the top-level shell reports.
on_error() {
  local rc=$? line=$1
  ((BASH_SUBSHELL == 0)) || return 0
  printf '\ndemo.sh: failed at line %s (exit %s).\n' "$line" "$rc" >&2
  printf 'Logs: %s (demo.log, primary.log, replica.log). Clean up: make demo-stop\n' "$LOG_DIR" >&2
}

# ------------------------------------------------------------- processes ----

# Servers and their tools run as postgres, from a directory postgres can read
# (it cannot read root's working directory).
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# Run a command with its output appended to the log: the reader sees a summary
# line, the details stay in the log, and their tail is shown if it fails.
logged() {
  printf '\n$ %s\n' "$*" >>"$LOG"
  "$@" >>"$LOG" 2>&1 && return 0
  local rc=$?
  printf '\n"%s" failed; last lines of %s:\n' "$1 ${2:-}" "$LOG" >&2
  tail -n 15 "$LOG" | indent >&2
  return "$rc"
}

# psql as the superuser over our unix socket (trust), and psql on a URL.
# -X: no ~/.psqlrc, so the output looks the same on every machine.
psql_su() {
  local port=$1 db=$2; shift 2
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$port" -U postgres -d "$db" "$@"
}
psql_url() {
  local url=$1; shift
  # A pass file path that never exists: root's ~/.pgpass cannot help the URL.
  PGPASSFILE=$DEMO_DIR/no-pgpass PGCONNECT_TIMEOUT=10 \
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

server_running() { as_postgres "$PGBIN/pg_ctl" status -D "$1" >/dev/null 2>&1; }

start_server() {
  local dir=$1 name=$2
  logged as_postgres "$PGBIN/pg_ctl" start -D "$dir" -l "$LOG_DIR/$name.log" -w -t 60 \
    || die "$name did not start; see $LOG_DIR/$name.log"
}

stop_server() {
  local dir=$1
  [[ -d $dir ]] && server_running "$dir" || return 0
  as_postgres "$PGBIN/pg_ctl" stop -D "$dir" -m fast -w -t 60 >/dev/null
}

# Poll an SQL condition (a query returning t/f) until it is true.
wait_for() {
  local what=$1 port=$2 sql=$3 tries=${4:-60} i
  for ((i = 0; i < tries; i++)); do
    [[ $(psql_su "$port" "$DB" -At -c "$sql" 2>>"$LOG") == t ]] && return 0
    sleep 0.5
  done
  die "timed out waiting for $what"
}

# -------------------------------------------------------------- clusters ----

init_primary() {
  logged as_postgres "$PGBIN/initdb" -D "$PRIMARY_DIR" -U postgres -E UTF8 \
    --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 --no-instructions \
    --no-sync   # a scratch cluster: skip the fsync of every file (seconds)

  # BI logins and the application come over TCP with a SCRAM password; only
  # postgres may use the local socket (and stream the replica from it).
  cat >"$PRIMARY_DIR/pg_hba.conf" <<EOF
# TYPE  DATABASE     USER      ADDRESS         METHOD
local   all          postgres                  trust
local   replication  postgres                  trust
host    all          all       $HOST/32    scram-sha-256
EOF

  cat >>"$PRIMARY_DIR/postgresql.conf" <<EOF

# ---- bi_access demo ----
listen_addresses = '$HOST'
port = $PRIMARY_PORT
unix_socket_directories = '$SOCKET_DIR'
wal_level = replica
max_wal_senders = 4
hot_standby = on
password_encryption = 'scram-sha-256'
# The recommended install: every session gets bi_access's planner hook (the
# application's plans stay its own); credentials load it and its login gate
# either way. pg_basebackup copies it to the replica.
shared_preload_libraries = 'bi_access'
# What bi_access tells BI clients: connect to the read replica, not here.
bi_access.host = '$HOST'
bi_access.port = $REPLICA_PORT
bi_access.sslmode = 'prefer'
# The standby whose replay makes a new credential 'active'.
bi_access.replica_application_name = '$REPLICA_NAME'
EOF
  enable_ssl
}

# sslmode=prefer only encrypts if the server offers TLS: give the demo a
# self-signed certificate so the BI logins really use it. pg_basebackup copies
# it to the replica.
enable_ssl() {
  command -v openssl >/dev/null || return 0
  logged openssl req -new -x509 -days 30 -nodes -subj "/CN=$HOST" \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PRIMARY_DIR/server.key" -out "$PRIMARY_DIR/server.crt"
  chown postgres:postgres "$PRIMARY_DIR/server.key" "$PRIMARY_DIR/server.crt"
  chmod 600 "$PRIMARY_DIR/server.key"
  echo "ssl = on" >>"$PRIMARY_DIR/postgresql.conf"
}

make_replica() {
  # -R writes primary_conninfo (with our application_name) and standby.signal.
  logged as_postgres "$PGBIN/pg_basebackup" -D "$REPLICA_DIR" -R -X stream -c fast --no-sync \
    -d "host=$SOCKET_DIR port=$PRIMARY_PORT user=postgres application_name=$REPLICA_NAME"
  # Later lines win: same config as the primary, but its own port.
  cat >>"$REPLICA_DIR/postgresql.conf" <<EOF

# ---- bi_access demo: read replica ----
port = $REPLICA_PORT
hot_standby = on
EOF
}

start_clusters() {
  section "Clusters"
  mkdir -p "$DEMO_DIR" "$SOCKET_DIR" "$LOG_DIR"
  chown -R postgres:postgres "$DEMO_DIR"
  chmod 700 "$DEMO_DIR"

  init_primary
  start_server "$PRIMARY_DIR" primary
  say "primary   127.0.0.1:$PRIMARY_PORT   data $PRIMARY_DIR"

  make_replica
  start_server "$REPLICA_DIR" replica
  # The database does not exist yet; wait on "postgres" for the stream.
  DB=postgres wait_for "the replica to stream" "$PRIMARY_PORT" \
    "SELECT EXISTS (SELECT FROM pg_stat_replication
                    WHERE application_name = '$REPLICA_NAME' AND state = 'streaming')"
  say "replica   127.0.0.1:$REPLICA_PORT   data $REPLICA_DIR   (streaming as '$REPLICA_NAME')"
  say "logs      $LOG_DIR"
}

# ---------------------------------------------------------------- schema ----

load_schema() {
  section "Sample SaaS database '$DB' (scripts/demo_schema.sql)"
  psql_su "$PRIMARY_PORT" postgres -c "CREATE DATABASE $DB"
  psql_su "$PRIMARY_PORT" "$DB" -f "$SCRIPT_DIR/demo_schema.sql" >>"$LOG"

  say "Org keys: 101 = Acme, 202 = Globex, 303 = Initech (no BI login)."
  say "Each table stores the org key in its own column type:"
  echo
  psql_su "$PRIMARY_PORT" "$DB" -P footer=off -c "
    SELECT c.relname AS table, a.attname AS org_column,
           format_type(a.atttypid, a.atttypmod) AS type,
           (xpath('/row/n/text()',
                  query_to_xml(format('SELECT count(*) AS n FROM %I', c.relname),
                               false, true, '')))[1]::text::int AS rows
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid
      AND a.attname = CASE c.relname WHEN 'organizations' THEN 'id'
                                     WHEN 'tickets' THEN 'tenant_id' ELSE 'org_id' END
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
    ORDER BY array_position(ARRAY['organizations','projects','invoices','tickets','api_keys'],
                            c.relname::text)" | indent
  say "The application logs in as 'app': SELECT/INSERT on every table, owns none."
}

# ------------------------------------------------------------- bi_access ----

# Echo a statement behind a psql-like prompt ("saas=#" superuser, "saas=>"
# the application), so the reader sees who runs what before its result.
show_sql() {
  local prompt=$1 sql=$2
  printf '%s %s\n' "$prompt" "$sql"
}

require_extension() {
  [[ -f $("$PGBIN/pg_config" --sharedir)/extension/bi_access.control &&
     -f $("$PGBIN/pg_config" --pkglibdir)/bi_access_gate.so ]] \
    || die "bi_access is not installed into PostgreSQL $PG_MAJOR ($PGBIN); run 'make install PG=$PG_MAJOR' (or 'make demo PG=$PG_MAJOR')."
}

setup_extension() {
  section "The DBA installs bi_access and exposes the tables (as postgres)"
  local stmt
  for stmt in \
    "CREATE EXTENSION bi_access;" \
    "SELECT bi_access.expose_table('organizations', org_column => 'id');" \
    "SELECT bi_access.expose_table('projects', 'org_id');" \
    "SELECT bi_access.expose_table('invoices', 'org_id');" \
    "SELECT bi_access.expose_table('tickets', org_column => 'tenant_id');" \
    "SELECT bi_access.hide_table('api_keys');  -- tokens: never for BI"; do
    show_sql "saas=#" "$stmt"
    psql_su "$PRIMARY_PORT" "$DB" -At -c "$stmt" >/dev/null
  done

  # A migration would run these two; both are idempotent.
  show_sql "saas=#" "SELECT * FROM bi_access.unsynced_tables();"
  psql_su "$PRIMARY_PORT" "$DB" -c "SELECT * FROM bi_access.unsynced_tables()" | indent
  show_sql "saas=#" "SELECT * FROM bi_access.sync_tables();"
  psql_su "$PRIMARY_PORT" "$DB" -c "SELECT * FROM bi_access.sync_tables()" | indent

  show_sql "saas=#" "GRANT bi_access_admin TO app;"
  psql_su "$PRIMARY_PORT" "$DB" -c "GRANT bi_access_admin TO app"

  echo
  show_sql "saas=#" "SELECT * FROM bi_access.check();  -- security health check"
  psql_su "$PRIMARY_PORT" "$DB" -c "SELECT * FROM bi_access.check()" | indent
  # A fresh cluster lets PUBLIC (so every new BI login) connect to "postgres";
  # the DBA applies check()'s fix and checks again.
  show_sql "saas=#" "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;"
  psql_su "$PRIMARY_PORT" "$DB" -c "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC"
  show_sql "saas=#" "SELECT * FROM bi_access.check();"
  psql_su "$PRIMARY_PORT" "$DB" -c "SELECT * FROM bi_access.check()" | indent
}

# generate() returns the password once, so print its output and take the URL
# from that same output.
generate_credentials() {
  section "The application creates one BI login per organization (as app, on the primary)"
  local i key name sql out
  for i in "${!ORG_KEYS[@]}"; do
    key=${ORG_KEYS[$i]} name=${ORG_NAMES[$i]}
    sql="SELECT * FROM bi_access.generate('$key', org_name => '$name');"
    show_sql "saas=>" "$sql"
    out=$(psql_url "$APP_URL" -x -c "$sql")
    printf '%s\n\n' "$out" | indent
    URL[$key]=$(sed -n 's/^url *| //p' <<<"$out")
    [[ -n ${URL[$key]} ]] || die "no url in generate()'s result for $name"
  done

  # The application keeps writing as before: RLS now guards these tables.
  sql="INSERT INTO tickets (tenant_id, subject) VALUES ('101', 'Finance wants a BI login');"
  show_sql "saas=>" "$sql"
  psql_url "$APP_URL" -c "$sql"
  say "    INSERT 0 1"
}

# A new role exists on the replica only once the replica has replayed the WAL
# that created it; until then a BI tool pointed there would get "password
# authentication failed" (and bi_access lists the credential as pending).
wait_for_replica() {
  section "Waiting for the replica to replay the new roles"
  local lsn
  lsn=$(psql_su "$PRIMARY_PORT" "$DB" -At -c "SELECT pg_current_wal_lsn()")
  wait_for "replay of $lsn on the replica" "$REPLICA_PORT" \
    "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn"
  say "replica '$REPLICA_NAME' has replayed the primary up to LSN $lsn"
}

show_records() {
  section "What the DBA and the application see (views of bi_access, as app)"
  local sql
  sql="SELECT org_id, org_name, label, role_name, status FROM bi_access.credentials ORDER BY org_id;"
  show_sql "saas=>" "$sql"
  psql_url "$APP_URL" -c "$sql" | indent
  sql="SELECT at::time(0), action, coalesce(role_name::text, detail->>'table') AS object, org_id, actor FROM bi_access.events ORDER BY at;"
  show_sql "saas=>" "$sql"
  psql_url "$APP_URL" -c "$sql" | indent
}

# ----------------------------------------------------- what each one sees ----

# One cell of the comparison: "rows (org keys seen)", or the SQLSTATE psql
# reports when the query is refused.
count_sql() {
  local table=$1 col=${ORG_COLUMN[$1]} where=${2:-}
  printf "SELECT count(*) || ' (' || coalesce(string_agg(DISTINCT %s::text, ',' ORDER BY %s::text), '-') || ')' FROM %s %s" \
    "$col" "$col" "$table" "$where"
}

cell() {
  local url=$1 sql=$2 out
  if out=$(psql_url "$url" -At -v VERBOSITY=sqlstate -c "$sql" 2>&1); then
    printf '%s' "$out"
  elif [[ $out =~ ERROR:\ +([0-9A-Z]{5}) ]]; then
    printf 'ERROR %s' "${BASH_REMATCH[1]}"
  else
    printf '%s\n' "$out" >>"$LOG"
    printf 'failed: see demo.log'
  fi
}

# What an org's credential should see, computed by the superuser (who bypasses
# RLS) on the same replica.
expected_cell() {
  local table=$1 key=$2
  [[ $table == api_keys ]] && { printf 'ERROR 42501'; return; }
  psql_su "$REPLICA_PORT" "$DB" -At -c "$(count_sql "$table" "WHERE ${ORG_COLUMN[$table]}::text = '$key'")"
}

show_logins() {
  section "Each BI login, with its URL exactly as returned (psql on the replica)"
  local i key
  for i in "${!ORG_KEYS[@]}"; do
    key=${ORG_KEYS[$i]}
    printf '%s:  psql "%s"\n' "${ORG_NAMES[$i]}" "${URL[$key]}"
    psql_url "${URL[$key]}" -c '\conninfo' -c "SELECT current_user AS logged_in_as, pg_is_in_recovery() AS on_replica" | indent
  done
}

table_row() { printf '%-15s| %-20s| %-20s| %-20s\n' "$@"; }

show_side_by_side() {
  section "Who sees what, through the replica"
  local table i key got want
  local -a row notes=()
  say "Each cell: number of rows (org keys among them). ERROR 42501 = permission denied."
  echo
  table_row "table" "Acme (BI login)" "Globex (BI login)" "app"
  printf '%s\n' "---------------+---------------------+---------------------+--------------------"
  for table in "${TABLES[@]}"; do
    row=("$table")
    for i in "${!ORG_KEYS[@]}"; do
      key=${ORG_KEYS[$i]}
      got=$(cell "${URL[$key]}" "$(count_sql "$table")")
      want=$(expected_cell "$table" "$key")
      if [[ $got != "$want" ]]; then
        notes+=("!! ${ORG_NAMES[$i]} got '$got' from $table; expected '$want'")
        got="!! $got"
        FAILURES=$((FAILURES + 1))
      fi
      row+=("$got")
    done
    row+=("$(cell "$APP_REPLICA_URL" "$(count_sql "$table")")")
    table_row "${row[@]}"
  done
  if ((${#notes[@]})); then
    echo
    printf '%s\n' "${notes[@]}"
  fi
}

# Statements a BI login must not be able to run; print psql's ERROR line.
show_refusals() {
  section "What the Acme login cannot do"
  local acme=${URL[101]} acme_primary
  # The same credential pointed at the primary, which accepts writes: there
  # only the role itself stands in the way.
  acme_primary=${acme/:$REPLICA_PORT\//:$PRIMARY_PORT/}
  local insert="INSERT INTO invoices (org_id, number, amount, issued_on) VALUES (101, 'A-9999', 1, now());"
  refuse "replica" "$acme" "$insert"
  refuse "primary" "$acme_primary" "$insert"
  # Leaving read-only mode does not help: the role has no write privilege.
  refuse "primary" "$acme_primary" "SET default_transaction_read_only = off;" "$insert"
  refuse "primary" "$acme_primary" "SET default_transaction_read_only = off;" "UPDATE invoices SET amount = 0;"
  refuse "primary" "$acme_primary" "SELECT * FROM api_keys;"
  refuse "primary" "$acme_primary" "SELECT * FROM bi_access.credentials;"
  refuse "primary" "$acme_primary" "SELECT * FROM bi_access.generate('202');"
  refuse "primary" "$acme_primary" "SET ROLE app;"
}

# refuse WHERE URL SQL...: run each statement as its own -c (so a SET applies
# to the next transaction) and print the ERROR line psql reports.
refuse() {
  local where=$1 url=$2 out stmt
  shift 2
  local -a args=()
  for stmt in "$@"; do args+=(-c "$stmt"); done
  printf '%s@%s=> %s\n' acme "$where" "$*"
  if out=$(psql_url "$url" "${args[@]}" 2>&1); then
    printf '    !! UNEXPECTED: the statement succeeded\n'
    FAILURES=$((FAILURES + 1))
  else
    grep -E '^(psql:.*)?ERROR' <<<"$out" | sed 's/^psql:[^E]*ERROR/ERROR/' | indent
  fi
}

# ---------------------------------------------------------------- finish ----

print_usage_info() {
  section "The demo keeps running"
  say "Primary, as postgres:   psql -h $SOCKET_DIR -p $PRIMARY_PORT -U postgres $DB"
  say "Replica, as postgres:   psql -h $SOCKET_DIR -p $REPLICA_PORT -U postgres $DB"
  say "Application (primary):  psql '$APP_URL'"
  local i
  for i in "${!ORG_KEYS[@]}"; do
    printf '%-24spsql '\''%s'\''\n' "${ORG_NAMES[$i]} BI (replica):" "${URL[${ORG_KEYS[$i]}]}"
  done
  say "Logs:                   $LOG_DIR"
  echo
  say "Stop and remove it:     make demo-stop"
}

cmd_start() {
  local port
  require_extension
  cmd_stop quiet
  for port in "$PRIMARY_PORT" "$REPLICA_PORT"; do
    port_in_use "$port" && die "port $port is in use by another server; the demo needs it."
  done
  start_clusters
  load_schema
  setup_extension
  generate_credentials
  wait_for_replica
  show_records
  show_logins
  show_side_by_side
  show_refusals
  if ((FAILURES)); then
    printf '\n!! %s isolation or read-only check(s) did not hold (marked !! above).\n' "$FAILURES"
  else
    printf '\nEvery check held: each login saw only its own org'\''s rows; every write was refused.\n'
  fi
  print_usage_info
  # A demo that shows a leak must not look like a success to make.
  if ((FAILURES)); then exit 1; fi
}

cmd_stop() {
  local mode=${1:-}
  if [[ ! -d $DEMO_DIR ]]; then
    [[ $mode == quiet ]] || say "No demo to stop."
    return 0
  fi
  # Replica first, so it does not log a lost primary on the way down.
  stop_server "$REPLICA_DIR"
  stop_server "$PRIMARY_DIR"
  rm -rf "$DEMO_DIR"
  [[ $mode == quiet ]] || say "Demo stopped; removed $DEMO_DIR."
}

main() {
  [[ $(id -u) == 0 ]] || die "run as root (the servers run as postgres via runuser)."
  case ${1:-} in
    start) trap 'on_error $LINENO' ERR; cmd_start ;;
    stop) cmd_stop ;;
    *) die "usage: $0 start|stop" ;;
  esac
}

# Sourcing the file (for debugging) defines the functions without running.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
