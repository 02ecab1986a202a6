//! What would tell a credential about rows it may not read, without reading
//! them: the planner's estimates and the statistics of tables, which
//! PostgreSQL computes over every org's rows.
//!
//! - EXPLAIN in every form (42501): the estimates come from statistics of
//!   the whole table (another org's values, confirmed by a guess's row
//!   count), and EXPLAIN ANALYZE shows the rows a filter removed.
//!   `bi_access.allow_explain` lets a deployment that accepts the estimates
//!   allow plain EXPLAIN; EXPLAIN ANALYZE stays refused;
//! - messages below NOTICE never reach a credential's client:
//!   `client_min_messages` is kept at NOTICE or above, so what auto_explain
//!   or `debug_print_plan` write at LOG (a plan with its estimates) stays in
//!   the server's log;
//! - the statistics views of tables and indexes (`pg_stat*_tables`,
//!   `pg_stat*_indexes`, `pg_statio_*`, and `pg_stats*`), refused whole by
//!   `reads`; the relation-level `pg_stat_get_*` functions they call and
//!   pg_stat_statements' functions, refused by name by `calls`;
//! - for a `read` credential, the functions that assign a transaction id
//!   (a write to the server's state it has no other way to make).
//!
//! `pg_stat_activity` and the other server-wide views stay readable (BI
//! clients read them when they connect); what they show is listed in
//! README's "What a BI login can still learn".

use std::ffi::{c_int, c_void};

use pgrx::pg_sys;
use pgrx::PgList;
use pgrx::PgSqlErrorCode;

use super::session::refuse;

/// Refuses EXPLAIN to a credential (42501), but plain EXPLAIN where
/// `bi_access.allow_explain` is on.
///
/// # Safety
/// `statement` must be a valid utility statement node.
pub(super) unsafe fn refuse_explain(statement: *mut pg_sys::Node) {
    if (*statement).type_ != pg_sys::NodeTag::T_ExplainStmt {
        return;
    }
    let explain = statement as *mut pg_sys::ExplainStmt;
    let analyze = PgList::<pg_sys::DefElem>::from_pg((*explain).options)
        .iter_ptr()
        .any(|option| {
            std::ffi::CStr::from_ptr((*option).defname).to_bytes() == b"analyze"
                && pg_sys::defGetBoolean(option)
        });
    if analyze {
        refuse(
            "a bi_access credential may not run EXPLAIN ANALYZE: it counts the rows of every organization that a filter removes".into(),
            "BI logins may read their organization's rows and nothing else.",
        );
    }
    if !crate::settings::allow_explain() {
        refuse(
            "a bi_access credential may not run EXPLAIN: the planner's estimates come from statistics over every organization's rows".into(),
            "An administrator may allow plain EXPLAIN with bi_access.allow_explain = on, for a deployment that accepts what the estimates tell.",
        );
    }
}

/// The views that show the statistics of tables and indexes: column values
/// (`pg_stats`, `pg_stats_ext`, `pg_stats_ext_exprs`), row counts, scans and
/// blocks of every table (`pg_stat_all_tables`, `pg_stat_xact_user_tables`,
/// `pg_stat_user_indexes`… and every `pg_statio_*`), whatever the reader's
/// privileges on the table.
pub(super) fn is_statistics_view(name: &[u8]) -> bool {
    name.starts_with(b"pg_stats")
        || name.starts_with(b"pg_statio_")
        || (name.starts_with(b"pg_stat_")
            && (name.ends_with(b"_tables") || name.ends_with(b"_indexes")))
}

/// The relation-level statistics functions of pg_catalog (a table's or an
/// index's counters, by OID): every one the views above call, 14 to 18, and
/// their `pg_stat_get_xact_*` siblings.
const RELATION_STATISTICS: [&str; 38] = [
    "pg_stat_get_analyze_count",
    "pg_stat_get_autoanalyze_count",
    "pg_stat_get_autovacuum_count",
    "pg_stat_get_blocks_fetched",
    "pg_stat_get_blocks_hit",
    "pg_stat_get_dead_tuples",
    "pg_stat_get_ins_since_vacuum",
    "pg_stat_get_last_analyze_time",
    "pg_stat_get_last_autoanalyze_time",
    "pg_stat_get_last_autovacuum_time",
    "pg_stat_get_last_vacuum_time",
    "pg_stat_get_lastscan",
    "pg_stat_get_live_tuples",
    "pg_stat_get_mod_since_analyze",
    "pg_stat_get_numscans",
    "pg_stat_get_total_analyze_time",
    "pg_stat_get_total_autoanalyze_time",
    "pg_stat_get_total_autovacuum_time",
    "pg_stat_get_total_vacuum_time",
    "pg_stat_get_tuples_deleted",
    "pg_stat_get_tuples_fetched",
    "pg_stat_get_tuples_hot_updated",
    "pg_stat_get_tuples_inserted",
    "pg_stat_get_tuples_newpage_updated",
    "pg_stat_get_tuples_returned",
    "pg_stat_get_tuples_updated",
    "pg_stat_get_vacuum_count",
    "pg_stat_get_xact_blocks_fetched",
    "pg_stat_get_xact_blocks_hit",
    "pg_stat_get_xact_numscans",
    "pg_stat_get_xact_tuples_deleted",
    "pg_stat_get_xact_tuples_fetched",
    "pg_stat_get_xact_tuples_hot_updated",
    "pg_stat_get_xact_tuples_inserted",
    "pg_stat_get_xact_tuples_newpage_updated",
    "pg_stat_get_xact_tuples_returned",
    "pg_stat_get_xact_tuples_updated",
    "pg_stat_have_stats",
];

/// A statistics function a credential may not call: a relation-level one of
/// pg_catalog, or one of pg_stat_statements' (whatever schema the extension
/// was installed in, whatever the arguments: `pg_stat_statements(true)` shows
/// other roles' statements and their row counts).
pub(super) fn is_statistics_function(name: &str, in_catalog: bool) -> bool {
    (in_catalog && RELATION_STATISTICS.contains(&name)) || name.starts_with("pg_stat_statements")
}

/// Built-ins that assign the session a transaction id: a write to the
/// server's state (and on a standby an error), refused to `read`
/// credentials.
pub(super) fn assigns_xid(name: &str) -> bool {
    matches!(name, "pg_current_xact_id" | "txid_current")
}

// ---------------------------------------------------------------------------
// client_min_messages

/// `client_min_messages`' record and its original check hook, found once.
static mut MESSAGES_RECORD: *mut pg_sys::config_enum = std::ptr::null_mut();
static mut MESSAGES_ORIGINAL: pg_sys::GucEnumCheckHook = None;

/// The lowest level whose messages a credential's client receives.
const LOWEST_CLIENT_LEVEL: c_int = pg_sys::NOTICE as c_int;

pub(super) fn install() {
    // SAFETY: called once from _PG_init; guc.c's records live for the life
    // of the process, and a check hook is a plain function pointer.
    unsafe {
        let record = crate::compat::find_guc(c"client_min_messages") as *mut pg_sys::config_enum;
        if record.is_null() {
            return;
        }
        MESSAGES_RECORD = record;
        MESSAGES_ORIGINAL = (*record).check_hook;
        (*record).check_hook = Some(check_client_min_messages);
    }
}

/// Whether this is a credential's session, looked up where the catalogs can
/// be read (the startup transaction applies the startup packet's and the
/// role's settings before the library is told of the session), else as far
/// as the session already knows.
fn credential_session() -> bool {
    // SAFETY: reads of backend-local state.
    if unsafe { pg_sys::IsTransactionState() } {
        super::session::session_is_credential()
    } else {
        super::session::known_credential_session()
    }
}

/// In a credential session, a level below NOTICE is refused when the
/// session SETs it (42501) and raised to NOTICE from any other source (the
/// startup packet, the role's or the server's settings, a function's SET
/// clause).
unsafe extern "C-unwind" fn check_client_min_messages(
    value: *mut c_int,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by guc.c with a valid value pointer.
    unsafe {
        if let Some(original) = MESSAGES_ORIGINAL {
            if !original(value, extra, source) {
                return false;
            }
        }
        if *value >= LOWEST_CLIENT_LEVEL || !credential_session() {
            return true;
        }
        if source == pg_sys::GucSource::PGC_S_SESSION {
            pg_sys::GUC_check_errcode(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as c_int);
            pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
                c"a bi_access credential may not receive messages below NOTICE: plans logged at LOG carry the planner's estimates".as_ptr(),
            );
            pg_sys::GUC_check_errhint_string =
                pg_sys::pstrdup(c"NOTICE, WARNING and ERROR are accepted.".as_ptr());
            return false;
        }
        *value = LOWEST_CLIENT_LEVEL;
        true
    }
}

/// When the library loads at a credential's login (its role's
/// session_preload_libraries), the startup packet's and the role's settings
/// are already in force: a level below NOTICE, now or as what RESET would
/// bring back, is raised to NOTICE.
pub(super) fn at_login() {
    // SAFETY: the record was found at install and lives for the process.
    let record = unsafe { MESSAGES_RECORD };
    if record.is_null() {
        return;
    }
    // SAFETY: as above; reads of this backend's GUC state.
    let (current, reset) = unsafe { (*(*record).variable, (*record).reset_val) };
    if current >= LOWEST_CLIENT_LEVEL && reset >= LOWEST_CLIENT_LEVEL {
        return;
    }
    // SAFETY: guc.c copies both strings; NOTICE passes the check hook.
    unsafe {
        for source in [
            pg_sys::GucSource::PGC_S_OVERRIDE,
            pg_sys::GucSource::PGC_S_SESSION,
        ] {
            pg_sys::SetConfigOption(
                c"client_min_messages".as_ptr(),
                c"notice".as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                source,
            );
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn statistics_views_of_tables_and_indexes() {
        for name in [
            "pg_stats",
            "pg_stats_ext",
            "pg_stats_ext_exprs",
            "pg_stat_all_tables",
            "pg_stat_user_tables",
            "pg_stat_sys_tables",
            "pg_stat_xact_all_tables",
            "pg_stat_xact_user_tables",
            "pg_stat_all_indexes",
            "pg_stat_user_indexes",
            "pg_statio_user_tables",
            "pg_statio_all_sequences",
            "pg_statio_sys_indexes",
        ] {
            assert!(is_statistics_view(name.as_bytes()), "{name}");
        }
        for name in [
            "pg_stat_activity",
            "pg_stat_database",
            "pg_stat_user_functions",
            "pg_stat_progress_vacuum",
            "pg_stat_io",
            "pg_class",
            "pg_statistic_ext",
        ] {
            assert!(!is_statistics_view(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn statistics_functions() {
        assert!(is_statistics_function("pg_stat_get_live_tuples", true));
        assert!(is_statistics_function(
            "pg_stat_get_xact_tuples_returned",
            true
        ));
        assert!(is_statistics_function("pg_stat_statements", false));
        assert!(is_statistics_function("pg_stat_statements_info", false));
        // A function of the same name outside pg_catalog is the DBA's.
        assert!(!is_statistics_function("pg_stat_get_live_tuples", false));
        for name in [
            "pg_stat_get_activity",
            "pg_stat_get_backend_pid",
            "pg_stat_get_db_xact_commit",
            "pg_stat_get_function_calls",
        ] {
            assert!(!is_statistics_function(name, true), "{name}");
        }
    }
}
