//! Statements in a credential session. Each one, planned or utility, first
//! passes `every_statement` (standing, caps). Of utility statements only
//! those that read or manage the session itself pass. Everything else (DDL,
//! LOCK, LISTEN, NOTIFY, COPY FROM, DO, CALL, ALTER ROLE on itself, LOAD…)
//! is refused.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::{every_statement, guarded, refuse};

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;
static mut PREVIOUS_START: pg_sys::ExecutorStart_hook_type = None;

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread; the
    // previous hooks are kept and called in turn.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(utility_hook);
        PREVIOUS_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, flags: std::ffi::c_int) {
    if guarded() {
        every_statement();
    }
    match PREVIOUS_START {
        Some(previous) => previous(query, flags),
        None => pg_sys::standard_ExecutorStart(query, flags),
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
    let guarded = guarded();
    if guarded {
        every_statement();
    }
    if guarded && !allowed(statement) {
        let tag = CStr::from_ptr(pg_sys::GetCommandTagName(pg_sys::CreateCommandTag(
            statement,
        )));
        refuse(
            format!(
                "a bi_access credential is read-only: {} is not allowed",
                tag.to_string_lossy()
            ),
            "BI logins may read their organization's rows and nothing else.",
        );
    }
    match PREVIOUS {
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
    if guarded {
        // SET ROLE, RESET, DISCARD ALL… may have brought back a value above a
        // cap that was lowered since it was set.
        super::caps::enforce(false);
    }
}
