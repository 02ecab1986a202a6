//! The `bi_access.*` settings (GUCs). Registered in `_PG_init`; every other
//! module reads them through the accessors here, never through SQL, so a
//! session cannot substitute a placeholder of its own.

use std::ffi::{CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

type Text = GucSetting<Option<CString>>;

static HOST: Text = Text::new(None);
static PORT: GucSetting<i32> = GucSetting::<i32>::new(0);
// Unset by default: see sslmode().
static SSLMODE: Text = Text::new(None);
static REPLICA_APPLICATION_NAME: Text = Text::new(None);
static ROLE_PREFIX: Text = Text::new(Some(c"bi_"));
static ORG_COLUMN: Text = Text::new(Some(c"org_id"));
static EXPOSED_SCHEMAS: Text = Text::new(Some(c"public"));
static AUTO_EXPOSE: GucSetting<bool> = GucSetting::<bool>::new(true);
static DISPLAY_NAME_FORMAT: Text = Text::new(Some(c"BI - {org_name}"));
type Int = GucSetting<i32>;
// Guardrails: caps on every credential session (src/guard/caps.rs). In the
// settings' own units (ms, kB); 0 (or -1 for temp_file_limit) means no cap.
static STATEMENT_TIMEOUT: Int = Int::new(5 * 60 * 1000);
static IDLE_IN_TRANSACTION_TIMEOUT: Int = Int::new(60 * 1000);
static IDLE_SESSION_TIMEOUT: Int = Int::new(30 * 60 * 1000);
static WORK_MEM: Int = Int::new(64 * 1024);
static TEMP_FILE_LIMIT: Int = Int::new(1024 * 1024);
// Memory a credential session keeps between statements (src/guard/memory.rs):
// open cursors (held ones included), held cursors, prepared statements (SQL
// and protocol level), each 0 for no cap; and the session's allocated memory
// (kB), -1 for twice the work_mem cap plus 32 MB, 0 for no cap.
static MAX_CURSORS: Int = Int::new(50);
static MAX_HELD_CURSORS: Int = Int::new(4);
static MAX_PREPARED_STATEMENTS: Int = Int::new(500);
static SESSION_MEMORY: Int = Int::new(-1);
// Connections: per credential (for those generated without a limit), per
// org and for all credentials on one server; -1: half of the slots that
// roles without reserved connections may use.
static DEFAULT_CONNECTION_LIMIT: Int = Int::new(5);
static ORG_CONNECTION_LIMIT: Int = Int::new(10);
static MAX_BI_CONNECTIONS: Int = Int::new(-1);
static DEFAULT_VALID_FOR: Text = Text::new(None);
static ACTOR: Text = Text::new(None);
static AUDIT_READS: GucSetting<bool> = GucSetting::<bool>::new(false);
// The size of each org's custom schema (kB); 0 means no quota.
static CUSTOM_SCHEMA_QUOTA: Int = Int::new(1024 * 1024);
// Locks (src/yielding.rs, src/guard/transaction.rs): the longest a
// credential's transaction may last (ms; 0: no cap), and how long the
// application or replay may wait on a credential's lock (ms; 0: never yield).
static TRANSACTION_TIMEOUT: Int = Int::new(10 * 60 * 1000);
static YIELD_AFTER: Int = Int::new(1000);
// Usage (src/usage.rs): how many credentials the shared segment counts
// (fixed at server start), and how long without a login on this server
// makes a current credential stale in check() (seconds; 0: never).
static USAGE_MAX_CREDENTIALS: Int = Int::new(4096);
static STALE_AFTER: Int = Int::new(90 * 24 * 60 * 60);
// What each custom schema may hold in the catalogs (src/custom_schema.rs
// says how each is counted); 0 means no cap. The defaults let
// drop_custom_schema drop a schema at the caps in one transaction under the
// default max_locks_per_transaction and max_connections (README: Scopes).
pub const DEFAULT_CUSTOM_SCHEMA_MAX_RELATIONS: i32 = 400;
pub const DEFAULT_CUSTOM_SCHEMA_MAX_EXPRESSIONS: i32 = 1000;
static CUSTOM_SCHEMA_MAX_RELATIONS: Int = Int::new(DEFAULT_CUSTOM_SCHEMA_MAX_RELATIONS);
static CUSTOM_SCHEMA_MAX_COLUMNS: Int = Int::new(20_000);
static CUSTOM_SCHEMA_MAX_EXPRESSIONS: Int = Int::new(DEFAULT_CUSTOM_SCHEMA_MAX_EXPRESSIONS);
// max_parallel_workers of every credential session: the parallel workers
// running on the server past which a credential's query launches none
// (half of PostgreSQL's default 8); -1: no cap.
static MAX_PARALLEL_WORKERS: Int = Int::new(4);
// Whether a credential may run plain EXPLAIN (src/guard/oracles.rs).
static ALLOW_EXPLAIN: GucSetting<bool> = GucSetting::<bool>::new(false);

/// The bi_access.* settings a client asked for in its startup packet, read
/// before they are defined: until then they are placeholders, and a client's
/// value replaces the configured one, which defining the setting then cannot
/// bring back (it refuses the client's value for a superuser-only setting and
/// falls back to the built-in default).
pub fn asked_for_by_the_client() -> Vec<String> {
    let mut asked = Vec::new();
    for name in NAMES {
        let record = crate::compat::find_guc(name);
        // SAFETY: a record of guc.c's, read in the backend's only thread.
        let by_client = !record.is_null()
            && unsafe {
                (*record).source == pg_sys::GucSource::PGC_S_CLIENT
                    || (*record).reset_source == pg_sys::GucSource::PGC_S_CLIENT
            };
        if by_client {
            asked.push(name.to_string_lossy().into_owned());
        }
    }
    asked
}

/// Every bi_access.* setting a session could not set itself.
const NAMES: [&std::ffi::CStr; 34] = [
    c"bi_access.host",
    c"bi_access.port",
    c"bi_access.sslmode",
    c"bi_access.replica_application_name",
    c"bi_access.role_prefix",
    c"bi_access.org_column",
    c"bi_access.exposed_schemas",
    c"bi_access.auto_expose",
    c"bi_access.display_name_format",
    c"bi_access.statement_timeout",
    c"bi_access.idle_in_transaction_session_timeout",
    c"bi_access.idle_session_timeout",
    c"bi_access.work_mem",
    c"bi_access.temp_file_limit",
    c"bi_access.max_cursors",
    c"bi_access.max_held_cursors",
    c"bi_access.max_prepared_statements",
    c"bi_access.session_memory",
    c"bi_access.default_connection_limit",
    c"bi_access.org_connection_limit",
    c"bi_access.max_bi_connections",
    c"bi_access.default_valid_for",
    c"bi_access.actor",
    c"bi_access.audit_reads",
    c"bi_access.custom_schema_quota",
    c"bi_access.transaction_timeout",
    c"bi_access.yield_after",
    c"bi_access.custom_schema_max_relations",
    c"bi_access.custom_schema_max_columns",
    c"bi_access.custom_schema_max_expressions",
    c"bi_access.max_parallel_workers",
    c"bi_access.allow_explain",
    c"bi_access.usage_max_credentials",
    c"bi_access.stale_after",
];

/// Which settings a session defines: every one, or in a credential's own
/// session only those its session guard reads (the caps, the connection
/// limits, the custom schema's quota and allow_explain). On 14 and 15
/// defining a setting would cost a sort of every setting the server has
/// (compat::setting_name makes it one sort per session); management
/// settings are never read where no management call can run.
#[derive(Clone, Copy, PartialEq)]
pub enum Scope {
    All,
    CredentialSession,
}

static MANAGEMENT_DEFINED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub fn init(scope: Scope) {
    int(
        c"bi_access.statement_timeout",
        c"Cap on statement_timeout in every credential session; 0: no cap.",
        &STATEMENT_TIMEOUT,
        0,
        GucFlags::UNIT_MS,
    );
    int(
        c"bi_access.idle_in_transaction_session_timeout",
        c"Cap on idle_in_transaction_session_timeout in every credential session; 0: no cap.",
        &IDLE_IN_TRANSACTION_TIMEOUT,
        0,
        GucFlags::UNIT_MS,
    );
    int(
        c"bi_access.idle_session_timeout",
        c"Cap on idle_session_timeout in every credential session; 0: no cap.",
        &IDLE_SESSION_TIMEOUT,
        0,
        GucFlags::UNIT_MS,
    );
    int(
        c"bi_access.work_mem",
        c"Cap on work_mem, maintenance_work_mem and temp_buffers in every credential session; 0: no cap.",
        &WORK_MEM,
        0,
        GucFlags::UNIT_KB,
    );
    int(
        c"bi_access.temp_file_limit",
        c"temp_file_limit of every credential session; -1: no limit.",
        &TEMP_FILE_LIMIT,
        -1,
        GucFlags::UNIT_KB,
    );
    int(
        c"bi_access.max_cursors",
        c"Open cursors (DECLARE, held ones included) of one credential session; 0: no cap.",
        &MAX_CURSORS,
        0,
        GucFlags::default(),
    );
    int(
        c"bi_access.max_held_cursors",
        c"Cursors WITH HOLD of one credential session; 0: no cap.",
        &MAX_HELD_CURSORS,
        0,
        GucFlags::default(),
    );
    int(
        c"bi_access.max_prepared_statements",
        c"Prepared statements (PREPARE, and the protocol's named ones) of one credential session; 0: no cap.",
        &MAX_PREPARED_STATEMENTS,
        0,
        GucFlags::default(),
    );
    int(
        c"bi_access.session_memory",
        c"Memory one credential session may keep between statements; -1: twice bi_access.work_mem plus 32MB, 0: no cap.",
        &SESSION_MEMORY,
        -1,
        GucFlags::UNIT_KB,
    );
    int(
        c"bi_access.org_connection_limit",
        c"Sessions of all of one org's credentials on one server; 0: no limit.",
        &ORG_CONNECTION_LIMIT,
        0,
        GucFlags::default(),
    );
    int(
        c"bi_access.max_bi_connections",
        c"Sessions of all credentials on one server; -1: half of the connection slots not reserved, 0: no limit.",
        &MAX_BI_CONNECTIONS,
        -1,
        GucFlags::default(),
    );
    int(
        c"bi_access.custom_schema_quota",
        c"Size of each org's custom schema past which its writes that grow it are refused; 0: no quota.",
        &CUSTOM_SCHEMA_QUOTA,
        0,
        GucFlags::UNIT_KB,
    );
    int(
        c"bi_access.transaction_timeout",
        c"Longest a credential's transaction may last, then its session ends; 0: no cap.",
        &TRANSACTION_TIMEOUT,
        0,
        GucFlags::UNIT_MS,
    );
    int(
        c"bi_access.custom_schema_max_relations",
        c"Relations (tables, indexes, sequences, views) each org's custom schema may hold; 0: no cap.",
        &CUSTOM_SCHEMA_MAX_RELATIONS,
        0,
        GucFlags::default(),
    );
    int(
        c"bi_access.custom_schema_max_columns",
        c"Columns (of its tables, views and indexes, dropped ones included) each org's custom schema may hold; 0: no cap.",
        &CUSTOM_SCHEMA_MAX_COLUMNS,
        0,
        GucFlags::default(),
    );
    int(
        c"bi_access.custom_schema_max_expressions",
        c"Stored expressions and constraints (one per 8kB started) each org's custom schema may hold; 0: no cap.",
        &CUSTOM_SCHEMA_MAX_EXPRESSIONS,
        0,
        GucFlags::default(),
    );
    int(
        c"bi_access.max_parallel_workers",
        c"Cap on max_parallel_workers in every credential session: its queries launch no parallel worker while this many run on the server; -1: no cap.",
        &MAX_PARALLEL_WORKERS,
        -1,
        GucFlags::default(),
    );
    boolean(
        c"bi_access.allow_explain",
        c"Whether credentials may run plain EXPLAIN, whose estimates come from statistics over every org's rows (EXPLAIN ANALYZE never).",
        &ALLOW_EXPLAIN,
        GucContext::Suset,
    );
    if scope == Scope::All {
        define_management_settings();
    }
    crate::compat::settings_defined();
    // From now on a session cannot invent bi_access.* placeholders (on 15
    // and later; see compat).
    crate::compat::reserve_guc_prefix(crate::names::EXTENSION_C, scope == Scope::CredentialSession);
}

fn define_management_settings() {
    // Read by the yield worker, which has no session to take it from: the
    // server's configuration only.
    integer(
        c"bi_access.yield_after",
        c"How long the application or replay may wait on a lock a credential holds before the credential yields it (needs the preload); 0: never.",
        &YIELD_AFTER,
        (0, i32::MAX),
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    // The usage entries are sized once, when the postmaster creates the
    // shared segment (src/shmem.rs). PostgreSQL refuses (FATAL) a
    // server-start setting defined after the preload: a session that loads
    // bi_access itself has no segment, and no use for it.
    // SAFETY: a read of a flag of this process.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        integer(
            c"bi_access.usage_max_credentials",
            c"How many credentials the usage counters of this server count (needs the preload; set at server start); more are counted as overflow.",
            &USAGE_MAX_CREDENTIALS,
            (1, 1_000_000),
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    int(
        c"bi_access.stale_after",
        c"How long a current credential may go without a login on this server before check() calls it stale (needs the preload); 0: never.",
        &STALE_AFTER,
        0,
        GucFlags::UNIT_S,
    );
    text(
        c"bi_access.host",
        c"Host name BI clients are told to connect to (usually a read replica).",
        &HOST,
    );
    integer(
        c"bi_access.port",
        c"Port BI clients are told to connect to; 0 means this server's port.",
        &PORT,
        (0, 65535),
        GucContext::Suset,
        GucFlags::default(),
    );
    text(
        c"bi_access.sslmode",
        c"libpq sslmode put in connection details (disable, allow, prefer, require, verify-ca, verify-full); unset: require if ssl is on, else prefer.",
        &SSLMODE,
    );
    text(
        c"bi_access.replica_application_name",
        c"application_name of the standby whose replay makes a new credential active.",
        &REPLICA_APPLICATION_NAME,
    );
    text(
        c"bi_access.role_prefix",
        c"Prefix of generated role names; a random suffix follows.",
        &ROLE_PREFIX,
    );
    text(
        c"bi_access.org_column",
        c"Default name of the org column of exposed tables.",
        &ORG_COLUMN,
    );
    text(
        c"bi_access.exposed_schemas",
        c"Comma-separated schemas whose tables with the org column are candidates for exposure.",
        &EXPOSED_SCHEMAS,
    );
    boolean(
        c"bi_access.auto_expose",
        c"Whether a sync exposes new tables that carry the org column in an exposed schema.",
        &AUTO_EXPOSE,
        GucContext::Suset,
    );
    text(
        c"bi_access.display_name_format",
        c"Display name of a connection; {org_name}, {org_id} and {label} are replaced.",
        &DISPLAY_NAME_FORMAT,
    );
    int(
        c"bi_access.default_connection_limit",
        c"Connection limit of a credential generated without one; -1: none.",
        &DEFAULT_CONNECTION_LIMIT,
        -1,
        GucFlags::default(),
    );
    text(
        c"bi_access.default_valid_for",
        c"Interval after which a new credential expires (VALID UNTIL); empty means never.",
        &DEFAULT_VALID_FOR,
    );
    // pgaudit's read logging for every credential role (src/roles.rs): a
    // role setting, applied at generate and, for existing credentials, at
    // the next sync.
    boolean(
        c"bi_access.audit_reads",
        c"Whether every credential role gets pgaudit.log = 'read' (needs pgaudit in shared_preload_libraries).",
        &AUDIT_READS,
        GucContext::Suset,
    );
    // The application sets this per transaction to name its own user in the
    // event log, so it is the one setting any role may change.
    string(
        c"bi_access.actor",
        c"The application's own user, recorded beside session_user in bi_access.events.",
        &ACTOR,
        GucContext::Userset,
    );
    MANAGEMENT_DEFINED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A management setting read where it was not defined would be its
/// built-in default, not the server's value: an error instead.
fn management(name: &str) {
    if !MANAGEMENT_DEFINED.load(std::sync::atomic::Ordering::Relaxed) {
        pgrx::error!("bi_access.{name} is not defined in a credential's session");
    }
}

/// A superuser's text setting.
fn text(name: &'static CStr, description: &'static CStr, setting: &'static Text) {
    string(name, description, setting, GucContext::Suset);
}

/// A superuser's integer setting from `min` up.
fn int(
    name: &'static CStr,
    description: &'static CStr,
    setting: &'static Int,
    min: i32,
    flags: GucFlags,
) {
    integer(
        name,
        description,
        setting,
        (min, i32::MAX),
        GucContext::Suset,
        flags,
    );
}

// Every definition goes through the three below, so none misses
// compat::setting_name (on 14 and 15 a name defined under a stand-in sorts
// last, and guc.c's array is sorted once per session).

fn boolean(
    name: &'static CStr,
    description: &'static CStr,
    setting: &'static GucSetting<bool>,
    context: GucContext,
) {
    let name = crate::compat::setting_name(name);
    GucRegistry::define_bool_guc(
        name,
        description,
        c"",
        setting,
        context,
        GucFlags::default(),
    );
}

fn integer(
    name: &'static CStr,
    description: &'static CStr,
    setting: &'static Int,
    (min, max): (i32, i32),
    context: GucContext,
    flags: GucFlags,
) {
    let name = crate::compat::setting_name(name);
    GucRegistry::define_int_guc(name, description, c"", setting, min, max, context, flags);
}

fn string(
    name: &'static CStr,
    description: &'static CStr,
    setting: &'static Text,
    context: GucContext,
) {
    let name = crate::compat::setting_name(name);
    GucRegistry::define_string_guc(
        name,
        description,
        c"",
        setting,
        context,
        GucFlags::default(),
    );
}

fn get(setting: &Text) -> Option<String> {
    setting
        .get()
        .map(|value| value.to_string_lossy().trim().to_string())
        .filter(|value| !value.is_empty())
}

pub fn host() -> Option<String> {
    management("host");
    get(&HOST)
}

/// 0 when unset: the caller substitutes this server's port.
pub fn port() -> i32 {
    management("port");
    PORT.get()
}

/// What the DBA set, never changed; unset, what this server offers, so the
/// first URL connects on a default server (DESIGN.md, Settings).
pub fn sslmode() -> String {
    management("sslmode");
    // SAFETY: a plain bool of the backend's configuration, read in the
    // backend's own thread.
    get(&SSLMODE).unwrap_or_else(|| default_sslmode(unsafe { pg_sys::EnableSSL }).into())
}

/// bi_access.sslmode when unset: SSL required where the server has it on,
/// else used if offered (`prefer`), which connects to a server without it.
fn default_sslmode(ssl_on: bool) -> &'static str {
    if ssl_on {
        "require"
    } else {
        "prefer"
    }
}

pub fn replica_application_name() -> Option<String> {
    management("replica_application_name");
    get(&REPLICA_APPLICATION_NAME)
}

pub fn role_prefix() -> String {
    management("role_prefix");
    get(&ROLE_PREFIX).unwrap_or_default()
}

pub fn org_column() -> String {
    management("org_column");
    get(&ORG_COLUMN).unwrap_or_else(|| "org_id".into())
}

pub fn exposed_schemas() -> Vec<String> {
    management("exposed_schemas");
    get(&EXPOSED_SCHEMAS)
        .unwrap_or_default()
        .split(',')
        .map(|schema| schema.trim().to_string())
        .filter(|schema| !schema.is_empty())
        .collect()
}

pub fn auto_expose() -> bool {
    management("auto_expose");
    AUTO_EXPOSE.get()
}

pub fn display_name_format() -> String {
    management("display_name_format");
    get(&DISPLAY_NAME_FORMAT).unwrap_or_else(|| "BI - {org_name}".into())
}

/// A cap, or None for "no cap" (0, or below 0 for temp_file_limit).
fn cap(setting: &Int) -> Option<i32> {
    Some(setting.get()).filter(|value| *value > 0)
}

pub fn statement_timeout_ms() -> Option<i32> {
    cap(&STATEMENT_TIMEOUT)
}

pub fn idle_in_transaction_session_timeout_ms() -> Option<i32> {
    cap(&IDLE_IN_TRANSACTION_TIMEOUT)
}

pub fn idle_session_timeout_ms() -> Option<i32> {
    cap(&IDLE_SESSION_TIMEOUT)
}

/// The cap on a credential's transaction (ms), or None for no cap.
pub fn transaction_timeout_ms() -> Option<i32> {
    cap(&TRANSACTION_TIMEOUT)
}

/// How long a wait on a credential's lock may last (ms) before the yield
/// worker makes the credential yield, or None: never. Read where bi_access
/// is preloaded (the postmaster defined it for every process), and by
/// check(); never in a credential's session loaded on its own.
pub fn yield_after_ms() -> Option<i32> {
    cap(&YIELD_AFTER)
}

/// How many credentials the usage counters count. The postmaster's value,
/// read when it sizes the shared segment.
pub fn usage_max_credentials() -> i32 {
    USAGE_MAX_CREDENTIALS.get()
}

/// Seconds without a login after which check() calls a credential stale,
/// or None: never.
pub fn stale_after_s() -> Option<i32> {
    management("stale_after");
    cap(&STALE_AFTER)
}

pub fn work_mem_kb() -> Option<i32> {
    cap(&WORK_MEM)
}

/// 0 is a real limit here (no temp files at all).
pub fn temp_file_limit_kb() -> Option<i32> {
    Some(TEMP_FILE_LIMIT.get()).filter(|value| *value >= 0)
}

pub fn default_connection_limit() -> i32 {
    management("default_connection_limit");
    DEFAULT_CONNECTION_LIMIT.get()
}

pub fn org_connection_limit() -> Option<i32> {
    cap(&ORG_CONNECTION_LIMIT)
}

/// All credentials' sessions on this server, or None for no limit. The
/// default leaves the application at least half of the slots a role without
/// reserved connections may take (README: "Connections").
pub fn max_bi_connections() -> Option<i32> {
    match MAX_BI_CONNECTIONS.get() {
        -1 => Some((crate::compat::unreserved_connection_slots() / 2).max(1)),
        0 => None,
        limit => Some(limit),
    }
}

pub fn max_cursors() -> Option<i32> {
    cap(&MAX_CURSORS)
}

pub fn max_held_cursors() -> Option<i32> {
    cap(&MAX_HELD_CURSORS)
}

pub fn max_prepared_statements() -> Option<i32> {
    cap(&MAX_PREPARED_STATEMENTS)
}

/// The memory a credential session may keep between statements, in bytes,
/// or None for no cap. Its default follows the work_mem cap: a held cursor
/// keeps up to work_mem, and the bound README states (4 × the cap + 64 MB
/// of anonymous memory) leaves the rest to the allocator and the backend.
pub fn session_memory_bytes() -> Option<usize> {
    let kb = match SESSION_MEMORY.get() {
        -1 => i64::from(work_mem_kb()?) * 2 + 32 * 1024,
        0 => return None,
        kb => i64::from(kb),
    };
    usize::try_from(kb * 1024).ok()
}

pub fn default_valid_for() -> Option<String> {
    management("default_valid_for");
    get(&DEFAULT_VALID_FOR)
}

pub fn actor() -> Option<String> {
    management("actor");
    get(&ACTOR)
}

pub fn audit_reads() -> bool {
    management("audit_reads");
    AUDIT_READS.get()
}

/// The quota of each org's custom schema in bytes, or None for no quota.
pub fn custom_schema_quota_bytes() -> Option<i64> {
    Some(CUSTOM_SCHEMA_QUOTA.get())
        .filter(|kb| *kb > 0)
        .map(|kb| i64::from(kb) * 1024)
}

/// A duration in ms as PostgreSQL shows one (10min, 30s, 250ms), for
/// messages and findings that name a setting's value.
pub fn duration(ms: i32) -> String {
    match ms {
        0 => "0".into(),
        ms if ms % 60_000 == 0 => format!("{}min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// The caps on what each custom schema holds (src/custom_schema.rs counts
/// them), None for no cap.
pub fn custom_schema_max_relations() -> Option<i32> {
    cap(&CUSTOM_SCHEMA_MAX_RELATIONS)
}

pub fn custom_schema_max_columns() -> Option<i32> {
    cap(&CUSTOM_SCHEMA_MAX_COLUMNS)
}

pub fn custom_schema_max_expressions() -> Option<i32> {
    cap(&CUSTOM_SCHEMA_MAX_EXPRESSIONS)
}

/// 0 is a real cap here (no parallel workers at all).
pub fn max_parallel_workers() -> Option<i32> {
    Some(MAX_PARALLEL_WORKERS.get()).filter(|value| *value >= 0)
}

/// Whether a credential may run plain EXPLAIN (never EXPLAIN ANALYZE).
pub fn allow_explain() -> bool {
    ALLOW_EXPLAIN.get()
}

/// The server's shared_preload_libraries, for check()'s findings. Read
/// without the privilege check that current_setting() makes (it needs
/// pg_read_all_settings): check() runs as the extension's owner, who may have
/// lost superuser, and the finding is what it is about.
pub fn shared_preload_libraries() -> String {
    // SAFETY: GetConfigOption returns a pointer into the GUC's own storage
    // (or NULL), valid until the setting changes; copied at once.
    unsafe {
        let value = pg_sys::GetConfigOption(c"shared_preload_libraries".as_ptr(), true, false);
        if value.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(value)
            .to_string_lossy()
            .into_owned()
    }
}
