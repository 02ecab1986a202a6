//! The read-only guard of credential sessions.
//!
//! Privileges alone leave a BI login a few ways to write on the primary:
//! PUBLIC's TEMPORARY right on the database (temp tables, views, functions
//! once it turns default_transaction_read_only off), large objects (lo_create
//! is allowed to every role and ignores read-only transactions), and ALTER
//! ROLE on itself (its own password, its own statement_timeout). It may also
//! LISTEN to the application's notifications. So every credential session
//! loads this library (the role's `session_preload_libraries`), and while the
//! current user is a credential:
//!
//! - a utility statement is refused (42501) unless it only reads or manages
//!   the session: transactions, SET/SHOW, cursors, prepared statements,
//!   EXPLAIN, COPY ... TO, DISCARD, UNLISTEN;
//! - creating or altering any catalog object is refused, whatever path got
//!   there (a function such as lo_create, CREATE TABLE AS under EXPLAIN...).
//!
//! The check is "is the current user a member of `bi_access_credential`", the
//! cluster-wide group every credential joins. Inside a SECURITY DEFINER
//! function the current user is its owner, so bi_access itself is unaffected.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Every credential of every database of the cluster is a member.
pub const CREDENTIAL_GROUP: &CStr = c"bi_access_credential";

static mut PREVIOUS_UTILITY_HOOK: pg_sys::ProcessUtility_hook_type = None;
static mut PREVIOUS_OBJECT_ACCESS_HOOK: pg_sys::object_access_hook_type = None;

pub fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread; the
    // previous hooks are kept and called in turn.
    unsafe {
        PREVIOUS_UTILITY_HOOK = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(utility_hook);
        PREVIOUS_OBJECT_ACCESS_HOOK = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access_hook);
    }
}

/// Whether the current user is a bi_access credential (a superuser never is).
fn current_user_is_credential() -> bool {
    // SAFETY: syscache lookups; no error is raised for a missing role.
    unsafe {
        let group = pg_sys::get_role_oid(CREDENTIAL_GROUP.as_ptr(), true);
        let user = pg_sys::GetUserId();
        group != pg_sys::InvalidOid
            && user != group
            && pg_sys::is_member_of_role_nosuper(user, group)
    }
}

/// Statements that only read, or only manage the session itself.
fn allowed(statement: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    // SAFETY: a utility statement from a PlannedStmt is a valid Node.
    let tag = unsafe { (*statement).type_ };
    match tag {
        T_TransactionStmt | T_VariableSetStmt | T_VariableShowStmt | T_DeclareCursorStmt
        | T_ClosePortalStmt | T_FetchStmt | T_PrepareStmt | T_ExecuteStmt | T_DeallocateStmt
        | T_DiscardStmt | T_ExplainStmt | T_UnlistenStmt => true,
        // SAFETY: the tag says it is a CopyStmt.
        T_CopyStmt => unsafe { !(*(statement as *mut pg_sys::CopyStmt)).is_from },
        _ => false,
    }
}

fn refuse(what: &str) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("a bi_access credential is read-only: {what} is not allowed"),
        "bi_access",
    )
    .set_hint("BI logins may read their organization's rows and nothing else.")
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn utility_hook(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let statement = (*pstmt).utilityStmt;
    if current_user_is_credential() && !allowed(statement) {
        let tag = CStr::from_ptr(pg_sys::GetCommandTagName(pg_sys::CreateCommandTag(
            statement,
        )));
        refuse(&tag.to_string_lossy());
    }
    match PREVIOUS_UTILITY_HOOK {
        Some(previous) => previous(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
        None => pg_sys::standard_ProcessUtility(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn object_access_hook(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    if let Some(previous) = PREVIOUS_OBJECT_ACCESS_HOOK {
        previous(access, class_id, object_id, sub_id, arg);
    }
    let changes_catalog = access == pg_sys::ObjectAccessType::OAT_POST_CREATE
        || access == pg_sys::ObjectAccessType::OAT_POST_ALTER;
    if changes_catalog && current_user_is_credential() {
        refuse("creating or altering a database object");
    }
}
