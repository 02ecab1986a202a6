//! The one error type of bi_access, and its SQLSTATE. Each variant is a
//! condition a caller can act on; `report()` turns it into the PostgreSQL
//! error at the SQL boundary.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use crate::secrets::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum BiError {
    #[error("{0}")]
    InvalidParameter(String),

    /// generate: an org key no exposed org column's type prints, so its
    /// login would see no row (src/org.rs, `canonical`). `kinds`: "an
    /// integer", "a uuid" or both; `hint` gives the canonical form.
    #[error(
        "org_id {} matches no row of any exposed table: every exposed org column is {kinds}, \
         and this key is not how PostgreSQL prints one",
        shown(.key)
    )]
    NonCanonicalOrgKey {
        key: String,
        kinds: String,
        hint: String,
    },

    #[error("a live bi_access credential for org {org_id:?} and label {label:?} already exists")]
    Duplicate {
        org_id: String,
        label: String,
        role: Option<String>,
    },

    #[error("no bi_access credential has the role {}", shown(.0))]
    NoSuchCredential(String),

    #[error("bi_access credential {role:?} is {status}; {action} needs it {needs}")]
    WrongStatus {
        role: String,
        /// The status's name (src/status.rs).
        status: &'static str,
        action: &'static str,
        needs: &'static str,
    },

    #[error("target {} does not exist", shown(.0))]
    NoSuchTarget(String),

    #[error("target {target:?} is used by {credentials} current credential(s)")]
    TargetInUse { target: String, credentials: i64 },

    #[error("bi_access credential {role:?} points at target {target:?}, which no longer exists")]
    TargetGone { role: String, target: String },

    #[error("org {} has no bi_access credential", shown(.0))]
    NoSuchOrg(String),

    #[error("a read_write credential writes on the primary, but target {0:?} points at a standby")]
    ReadWriteOnStandby(String),

    #[error("org {} has no custom schema", shown(.0))]
    NoCustomSchema(String),

    #[error(
        "org {org_id:?} has {credentials} current read_write credential(s) using its custom schema"
    )]
    CustomSchemaInUse { org_id: String, credentials: i64 },

    #[error("{0} is not a table bi_access can expose")]
    WrongObjectType(String),

    #[error("relation {0} does not exist")]
    NoSuchTable(String),

    #[error("{table} is in schema {schema}, which bi_access never exposes")]
    RefusedSchema { table: String, schema: String },

    #[error(
        "{role} may not expose or hide {table}: it lacks {missing} (it needs to be a member of \
             the table's owner, with USAGE on its schema and SELECT on it)"
    )]
    NotPermitted {
        role: String,
        table: String,
        missing: String,
    },

    #[error("org column {column:?} of {table} is of type {column_type}, which bi_access does not match org keys against")]
    RefusedColumnType {
        table: String,
        column: String,
        column_type: String,
    },

    #[error("{0} is neither exposed nor hidden, nor a new table bi_access would expose")]
    UnknownTable(String),

    #[error("view {0} is not security_invoker, so it would bypass row-level security")]
    DefinerView(String),

    #[error("table {0} has row level security off and policies of its own")]
    DormantPolicies(String),

    #[error("column {column:?} does not exist in table {table}")]
    NoSuchColumn { table: String, column: String },

    /// share_table of a table that carries the org column: every credential
    /// would read every org's rows.
    #[error("table {table} has the org column {column:?}, so it cannot be shared")]
    SharedHasOrgColumn { table: String, column: String },

    /// An empty column list, or one naming a column twice.
    #[error("{0}")]
    BadColumnList(String),

    #[error("could not lock table {0} within lock_timeout")]
    LockNotAvailable(String),

    #[error("bi_access cannot be dropped while live credentials exist")]
    LiveCredentials(i64),

    /// A rename, SET SCHEMA or change of owner of what the drop guard
    /// protects (src/uninstall.rs), or a REASSIGN OWNED that would move it.
    #[error("{0} cannot be renamed, moved or given another owner while live credentials exist")]
    Protected(String, i64),

    #[error("database {database} manages the role {role:?}: this database is a copy of it")]
    ManagedElsewhere { role: String, database: String },

    #[error("the role {0:?} was restored from another cluster and is not adopted yet")]
    NotAdopted(String),

    #[error("bi_access.config has no reader group: this database's bi_access is incomplete")]
    NoConfig,

    #[error("{0} runs only as an event trigger")]
    NotAnEventTrigger(&'static str),

    #[error("{0} runs only as a row trigger")]
    NotATrigger(&'static str),

    /// The session guard: what a credential's session may not do.
    #[error("{message}")]
    Refused { message: String, hint: String },

    /// A read_write session's write that would grow its custom schema
    /// past bi_access.custom_schema_quota (src/guard/custom.rs).
    #[error("the custom schema is past its quota: {size} bytes of {quota} (bi_access.custom_schema_quota)")]
    QuotaExceeded { size: i64, quota: i64 },

    /// A read_write session's row, index build or rewrite that would take
    /// its custom schema past the quota (src/guard/quota.rs).
    #[error("{what} would take the custom schema past its quota: {size} bytes and {adding} more, of {quota} (bi_access.custom_schema_quota)")]
    QuotaWouldExceed {
        what: String,
        size: i64,
        adding: i64,
        quota: i64,
    },

    /// A read_write session's DDL that would leave its custom schema past
    /// one of its caps.
    #[error(
        "the custom schema would hold {count} {what}, past its cap of {cap} (bi_access.{setting})"
    )]
    CustomSchemaCap {
        what: &'static str,
        count: i64,
        cap: i32,
        setting: &'static str,
    },

    /// A write into a custom-schema table without bi_access's quota trigger.
    #[error("table {0} of the custom schema lacks bi_access's quota trigger: it is not written until a sync puts it back")]
    QuotaUnguarded(String),

    /// The session guard at login: a startup option naming a bi_access setting.
    #[error("a bi_access credential may not set {0} when it connects")]
    ClientSettings(String),

    /// The session guard: the login was revoked, deleted, given a new
    /// password or expired (`why` completes "this bi_access credential …").
    #[error("terminating connection: this bi_access credential {0}")]
    Ended(&'static str),

    /// The session guard: an org's or the server's limit of BI sessions.
    #[error("{0}")]
    TooManyConnections(String),

    /// The login gate: the client's address is outside the credential's
    /// allowlist (src/guard/networks.rs). The message names no address of
    /// the list: whoever holds the password learns nothing of it.
    #[error("this bi_access credential may not log in from this address")]
    NetworkRefused,

    /// adopt() without the key that sealed this database's passwords.
    #[error("{0}")]
    KeyNeeded(String),

    /// The login gate: a credential logging in to a database that does not
    /// manage it (src/guard/home.rs).
    #[error("a bi_access credential logs in only to the database that manages it, not to {0}")]
    NotItsDatabase(String),

    /// The login gate: a role whose own settings load the gate (what
    /// bi_access gives its credentials) without being a member of
    /// bi_access_credential: the group renamed, dropped or left. The guard
    /// knows a credential by that group, so the login is refused rather
    /// than let in unguarded (src/guard/gate.rs).
    #[error("role {0} loads bi_access's login gate but is not a member of bi_access_credential")]
    OutsideTheCredentialGroup(String),

    /// Another node of a Citus cluster could not be asked, or failed
    /// (src/citus.rs).
    #[error("{0}")]
    Citus(String),
    /// The session guard: the memory a credential session keeps past
    /// bi_access.session_memory (src/guard/memory.rs).
    #[error(
        "this bi_access session keeps {} MB of memory, past its bound of {} MB (bi_access.session_memory)",
        kept / (1024 * 1024),
        cap / (1024 * 1024)
    )]
    SessionMemory { kept: usize, cap: usize },

    /// The same, past the bound by what the session cannot free itself
    /// (catalog caches): the session ends.
    #[error(
        "terminating connection: this bi_access session keeps {} MB of memory, past its bound of {} MB (bi_access.session_memory), that only its end frees",
        kept / (1024 * 1024),
        cap / (1024 * 1024)
    )]
    SessionMemoryStuck { kept: usize, cap: usize },

    /// The session guard: cursors or prepared statements of a credential
    /// session past their cap (src/guard/memory.rs).
    #[error("too many {what} in this bi_access session ({limit}, bi_access.{setting})")]
    SessionLimit {
        what: &'static str,
        limit: i32,
        setting: &'static str,
        hint: &'static str,
    },

    #[error(transparent)]
    Secret(#[from] SecretError),

    /// A call that writes, on a standby (src/entry.rs).
    #[error("bi_access.{call}() changes the database, and this server is a standby (in recovery)")]
    OnStandby {
        call: &'static str,
        /// "host H port P" of the primary it replays from, when known.
        primary: Option<String>,
    },

    /// An older version's SQL objects calling this library (src/entry.rs).
    #[error(
        "bi_access's SQL objects in this database are version {installed} and its library is {}: \
         run ALTER EXTENSION bi_access UPDATE",
        crate::names::LIBRARY_VERSION
    )]
    SqlBehind { installed: String },

    #[error("bi_access.{call}(): {argument} must not be NULL")]
    NullArgument {
        call: &'static str,
        argument: &'static str,
    },

    /// PREPARE TRANSACTION after a call that ends sessions at commit
    /// (src/sessions.rs).
    #[error(
        "cannot PREPARE a transaction that revoked, regenerated or deleted a bi_access credential"
    )]
    PrepareAfterEndingSessions,

    /// A call that re-seals every password under a transaction snapshot,
    /// which would miss passwords sealed by transactions it waited for.
    #[error("bi_access.{0}() must run in a READ COMMITTED transaction")]
    NeedsReadCommitted(&'static str),

    #[error("internal error: {0}")]
    Internal(String),

    #[error("SPI: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

const SHOWN_CHARS: usize = 40;

/// `value` as an error message shows it: quoted and escaped, and cut after
/// `SHOWN_CHARS` characters with its full length in bytes.
pub fn shown(value: &str) -> String {
    let mut prefix: String = value.chars().take(SHOWN_CHARS).collect();
    if prefix.len() == value.len() {
        return format!("{value:?}");
    }
    prefix.push('…');
    format!("{prefix:?} ({} bytes)", value.len())
}

pub type Result<T> = std::result::Result<T, BiError>;

/// For failures that only a bug can cause (a composite type that does not
/// match its definition, say).
pub fn internal(error: impl std::fmt::Display) -> BiError {
    BiError::Internal(error.to_string())
}

impl BiError {
    fn code(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            BiError::InvalidParameter(_) | BiError::NonCanonicalOrgKey { .. } => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            BiError::Duplicate { .. } => ERRCODE_UNIQUE_VIOLATION,
            BiError::NoSuchCredential(_)
            | BiError::NoSuchTarget(_)
            | BiError::NoSuchOrg(_)
            | BiError::NoCustomSchema(_) => ERRCODE_UNDEFINED_OBJECT,
            BiError::ReadWriteOnStandby(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            BiError::CustomSchemaInUse { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BiError::TargetInUse { .. } | BiError::TargetGone { .. } => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            BiError::WrongStatus { .. } | BiError::DormantPolicies(_) => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            BiError::WrongObjectType(_)
            | BiError::DefinerView(_)
            | BiError::RefusedSchema { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            BiError::NoSuchTable(_) => ERRCODE_UNDEFINED_TABLE,
            BiError::NotPermitted { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            BiError::RefusedColumnType { .. } => ERRCODE_DATATYPE_MISMATCH,
            BiError::UnknownTable(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BiError::NoSuchColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            BiError::SharedHasOrgColumn { .. } | BiError::BadColumnList(_) => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            BiError::LockNotAvailable(_) => ERRCODE_LOCK_NOT_AVAILABLE,
            BiError::LiveCredentials(_) | BiError::Protected(..) => {
                ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST
            }
            BiError::ManagedElsewhere { .. } | BiError::NotAdopted(_) => {
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            BiError::NoConfig => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BiError::NotAnEventTrigger(_) | BiError::NotATrigger(_) => {
                ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED
            }
            BiError::Refused { .. } | BiError::ClientSettings(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            BiError::QuotaExceeded { .. }
            | BiError::QuotaWouldExceed { .. }
            | BiError::CustomSchemaCap { .. } => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            BiError::QuotaUnguarded(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BiError::Ended(_) => ERRCODE_ADMIN_SHUTDOWN,
            BiError::TooManyConnections(_) => ERRCODE_TOO_MANY_CONNECTIONS,
            BiError::NotItsDatabase(_)
            | BiError::NetworkRefused
            | BiError::OutsideTheCredentialGroup(_) => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            BiError::KeyNeeded(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BiError::OnStandby { .. } => ERRCODE_READ_ONLY_SQL_TRANSACTION,
            BiError::SqlBehind { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BiError::NullArgument { .. } => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            BiError::PrepareAfterEndingSessions => ERRCODE_FEATURE_NOT_SUPPORTED,
            BiError::NeedsReadCommitted(_) => ERRCODE_INVALID_TRANSACTION_STATE,
            BiError::Citus(_) => ERRCODE_CONNECTION_EXCEPTION,
            BiError::SessionMemory { .. } | BiError::SessionMemoryStuck { .. } => {
                ERRCODE_OUT_OF_MEMORY
            }
            BiError::SessionLimit { .. } => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            BiError::Secret(error) => error.code(),
            BiError::Internal(_) | BiError::Spi(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            BiError::NonCanonicalOrgKey { hint, .. } => Some(hint.clone()),
            BiError::Duplicate { role: Some(role), .. } => Some(format!(
                "To replace its password, call bi_access.regenerate('{role}')."
            )),
            BiError::Duplicate { role: None, .. } => {
                Some("To replace its password, call bi_access.regenerate(role).".into())
            }
            BiError::NoSuchCredential(_) => {
                Some("bi_access.credentials lists the roles bi_access manages.".into())
            }
            BiError::NoSuchTarget(_) => Some("bi_access.targets lists the targets.".into()),
            BiError::ReadWriteOnStandby(_) => Some(
                "Name a target without a standby (the primary): bi_access.set_target('primary', host, port) \
                 and generate(..., scope => 'read_write', target => 'primary')."
                    .into(),
            ),
            BiError::NoCustomSchema(_) => Some(
                "An org's custom schema is created with its first read_write credential.".into(),
            ),
            BiError::CustomSchemaInUse { org_id, .. } => Some(format!(
                "Delete them first: SELECT bi_access.delete(role_name) FROM bi_access.credentials \
                 WHERE org_id = {} AND scope = 'read_write' AND status <> 'deleted';",
                pgrx::spi::quote_literal(org_id)
            )),
            BiError::TargetInUse { target, .. } => Some(format!(
                "Delete them first; bi_access.credentials lists them (WHERE target = {}).",
                pgrx::spi::quote_literal(target)
            )),
            BiError::TargetGone { target, .. } => Some(format!(
                "Define it again with bi_access.set_target('{target}', host, port, ...)."
            )),
            BiError::DefinerView(view) if crate::compat::VIEWS_HAVE_SECURITY_INVOKER => Some(
                format!("ALTER VIEW {view} SET (security_invoker = true); then expose it."),
            ),
            BiError::DefinerView(_) => Some(
                "On PostgreSQL 14 every view runs with its owner's rights (security_invoker came \
                 in 15): expose the tables under it instead."
                    .into(),
            ),
            BiError::DormantPolicies(table) => Some(format!(
                "Enabling row level security would put those policies in force for the application. \
                 Enable it yourself (ALTER TABLE {table} ENABLE ROW LEVEL SECURITY) once they are meant \
                 to apply, or drop them; then expose the table."
            )),
            BiError::UnknownTable(_) => Some(
                "Expose or share it first (bi_access.expose_table, bi_access.share_table); \
                 bi_access.tables lists every table bi_access knows."
                    .into(),
            ),
            BiError::SharedHasOrgColumn { table, column } => Some(format!(
                "Expose it instead, so each credential reads its own org's rows: \
                 SELECT bi_access.expose_table('{table}', '{column}');"
            )),
            BiError::BadColumnList(_) => Some(
                "Name each column once, or pass NULL for every column of the table.".into(),
            ),
            BiError::RefusedColumnType { .. } => Some(
                "An org column is text, varchar, smallint, integer, bigint, uuid or citext.".into(),
            ),
            BiError::NotPermitted { .. } => Some(
                "Ask the table's owner (or a superuser) to expose it, or to grant you its role.".into(),
            ),
            BiError::LockNotAvailable(_) => Some(
                "Retry later, raise lock_timeout, or use CALL bi_access.sync(), which retries table by table."
                    .into(),
            ),
            BiError::LiveCredentials(_) | BiError::Protected(..) => Some(
                "Delete them first: SELECT bi_access.delete(role_name) FROM bi_access.credentials WHERE status <> 'deleted';"
                    .into(),
            ),
            BiError::ManagedElsewhere { database, .. } => Some(format!(
                "Manage it from database {database}; a copy never manages the original's roles."
            )),
            BiError::NotAdopted(_) => Some(
                "SELECT * FROM bi_access.sync_tables(); adopts every restored credential of this database."
                    .into(),
            ),
            BiError::NoConfig => Some(
                "Reinstall it: DROP EXTENSION bi_access; CREATE EXTENSION bi_access; (once no credential is current)."
                    .into(),
            ),
            BiError::Refused { hint, .. } => Some(hint.clone()),
            BiError::QuotaExceeded { .. } | BiError::QuotaWouldExceed { .. } => Some(
                "Reads, DELETE, TRUNCATE and DROP still work: free space, or ask an administrator to raise bi_access.custom_schema_quota."
                    .into(),
            ),
            BiError::CustomSchemaCap { setting, .. } => Some(format!(
                "Drop what the custom schema no longer needs (DROP TABLE, DROP INDEX, DROP VIEW), \
                 or ask an administrator to raise bi_access.{setting}."
            )),
            BiError::QuotaUnguarded(_) => Some(
                "Ask an administrator to run SELECT * FROM bi_access.sync_tables(); (or CALL bi_access.sync())."
                    .into(),
            ),
            BiError::ClientSettings(_) => Some(
                "Remove the bi_access settings from the connection's options (PGOPTIONS).".into(),
            ),
            BiError::Ended(_) => Some(
                "Ask the organization's administrator for the credential's current connection details."
                    .into(),
            ),
            BiError::KeyNeeded(_) => Some(
                "SELECT * FROM bi_access.adopt(key => '…'); -- the text SELECT bi_access.export_key() gives on the original"
                    .into(),
            ),
            BiError::NotItsDatabase(_) => Some(
                "Connect to the database named in the credential's connection details.".into(),
            ),
            BiError::OutsideTheCredentialGroup(_) => Some(
                "A bi_access credential is a member of the role bi_access_credential, under that name: if it was renamed, rename it back (ALTER ROLE … RENAME TO bi_access_credential). SELECT * FROM bi_access.check(); names what else changed."
                    .into(),
            ),
            BiError::NetworkRefused => Some(
                "Connect from an address the credential's network allowlist includes, or ask the organization's administrator to change it."
                    .into(),
            ),
            BiError::TooManyConnections(_) => Some(
                "Close another session of this organization's BI tools, or ask its administrator to raise the limit."
                    .into(),
            ),
            BiError::OnStandby { call, primary } => Some(match primary {
                Some(primary) => format!(
                    "Call bi_access.{call}() on the primary ({primary}, the server this standby replays from)."
                ),
                None => format!("Call bi_access.{call}() on the primary."),
            }),
            BiError::SqlBehind { .. } => Some(
                "A package upgrade replaced the library; run ALTER EXTENSION bi_access UPDATE in every \
                 database that has bi_access. Until then BI logins keep working and management calls are refused."
                    .into(),
            ),
            BiError::PrepareAfterEndingSessions => Some(
                "The credential's open sessions end when the transaction commits, in the session that \
                 commits it: commit it without PREPARE TRANSACTION."
                    .into(),
            ),
            BiError::NeedsReadCommitted(_) => Some(
                "Run it on its own, in a READ COMMITTED transaction (the default).".into(),
            ),
            BiError::Citus(_) => Some(
                "Every node of the Citus cluster must reach the others as the superuser \
                 (citus.node_conninfo, pg_dist_authinfo) and have bi_access installed."
                    .into(),
            ),
            BiError::SessionMemory { .. } => Some(
                "Close cursors (CLOSE ALL), deallocate prepared statements (DEALLOCATE ALL), or reconnect."
                    .into(),
            ),
            BiError::SessionMemoryStuck { .. } => Some(
                "Reconnect. A statement that looks up very many catalog entries (millions of OIDs cast to regclass, say) keeps them in the session's caches."
                    .into(),
            ),
            BiError::SessionLimit { hint, .. } => Some((*hint).into()),
            BiError::Secret(error) => error.hint(),
            _ => None,
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            BiError::LiveCredentials(count) | BiError::Protected(_, count) => {
                Some(format!("{count} credential(s) are not deleted."))
            }
            _ => None,
        }
    }

    pub fn report(self) -> ErrorReport {
        let mut report = ErrorReport::new(self.code(), self.to_string(), "bi_access");
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        report
    }
}

impl BiError {
    /// Whether it is a refusal a caller can act on (a wrong kind of table, a
    /// missing column…), as opposed to a failure of bi_access itself (SPI,
    /// an internal error), which is never turned into a reason or a finding.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, BiError::Spi(_) | BiError::Internal(_))
    }

    /// Raises it as an ERROR.
    pub fn raise(self) -> ! {
        self.report().report(PgLogLevel::ERROR);
        unreachable!("an ERROR does not return")
    }

    /// Raises it as a FATAL error: the session ends.
    pub fn raise_fatal(self) -> ! {
        self.report().report(PgLogLevel::FATAL);
        unreachable!("FATAL does not return")
    }
}

/// At the boundary of a worker that one of sql/api.sql's wrappers calls: the
/// value, or the error raised without the wrapper's own CONTEXT line
/// (`SQL function "revoke" statement 1`), which names nothing the caller
/// wrote. The caller's own frames (a DO block, a function of theirs) stay.
/// A function declared in Rust takes `or_raise` instead: no wrapper frame
/// is on top of the stack, the caller's is.
pub fn wrapped<T>(work: impl FnOnce() -> Result<T>) -> T {
    // SAFETY: a read of this backend's error context stack: its top is the
    // wrapper's frame (a SQL or PL/pgSQL function of bi_access), pushed
    // before it called this worker.
    let wrapper = unsafe { pgrx::pg_sys::error_context_stack };
    match work() {
        Ok(value) => value,
        Err(error) => {
            // SAFETY: the wrapper's frame is live (its function is still
            // running, and the error ends it). Its callback is silenced
            // rather than the frame popped: a popped frame was back on the
            // stack by the time generate's error reached PostgreSQL.
            unsafe {
                if !wrapper.is_null() {
                    (*wrapper).callback = Some(say_nothing);
                }
            }
            error.raise()
        }
    }
}

/// An error context callback that adds no CONTEXT line.
unsafe extern "C-unwind" fn say_nothing(_: *mut std::ffi::c_void) {}

/// At the SQL boundary: the value, or the error raised with its SQLSTATE,
/// hint and detail.
pub fn or_raise<T>(result: Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => error.raise(),
    }
}
