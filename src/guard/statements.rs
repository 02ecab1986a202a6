//! Statements in a credential session. Each one, planned or utility, first
//! passes `every_statement` (standing, caps). Of utility statements only
//! those that read or manage the session itself pass (EXPLAIN only as
//! `oracles` allows). Everything else (DDL,
//! LOCK, LISTEN, NOTIFY, COPY FROM, DO, CALL, ALTER ROLE on itself, LOAD…)
//! is refused, and so is two-phase commit: a prepared transaction keeps its
//! locks and its transaction id after the session, revoke and delete, until
//! a superuser ends it. DECLARE and PREPARE are counted (memory.rs), and the
//! session's memory is checked before each statement's executor starts.
//!
//! In every session (the hook runs wherever the library is loaded), the
//! check `before_reassign_owned` registered runs before REASSIGN OWNED,
//! which fires no event trigger: the drop guard's (src/uninstall.rs).

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::session::{guarded, refuse};

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;
/// Set from _PG_init only, in the backend's only thread.
static mut BEFORE_REASSIGN: Option<unsafe fn(*mut pg_sys::ReassignOwnedStmt)> = None;
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

/// Registers `check` to run before every REASSIGN OWNED, in any session.
/// Called from _PG_init only.
pub(crate) fn before_reassign_owned(check: unsafe fn(*mut pg_sys::ReassignOwnedStmt)) {
    // SAFETY: _PG_init runs once per backend, in its only thread, before
    // any statement reads it.
    unsafe { BEFORE_REASSIGN = Some(check) };
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, flags: std::ffi::c_int) {
    if guarded() {
        every_statement();
        // A function's statement inside a running one: the running
        // statement's own working memory is not what the session keeps.
        if !crate::compat::inside_executor_run() {
            super::memory::check_kept();
            crate::usage::count_statement(query);
        }
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

/// PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED.
fn two_phase(statement: *mut pg_sys::Node) -> bool {
    use pg_sys::TransactionStmtKind::*;
    // SAFETY: a utility statement from a PlannedStmt is a valid Node, and
    // the tag says whether it is a TransactionStmt.
    unsafe {
        (*statement).type_ == pg_sys::NodeTag::T_TransactionStmt
            && matches!(
                (*(statement as *mut pg_sys::TransactionStmt)).kind,
                TRANS_STMT_PREPARE | TRANS_STMT_COMMIT_PREPARED | TRANS_STMT_ROLLBACK_PREPARED
            )
    }
}

/// Counts what PREPARE would add to what the session keeps (memory.rs);
/// DECLARE is counted at parse analysis (analysis.rs), before its portal
/// exists.
fn before_keeping(statement: *mut pg_sys::Node) {
    // SAFETY: as above; a utility statement is a valid Node.
    if unsafe { (*statement).type_ } == pg_sys::NodeTag::T_PrepareStmt {
        super::memory::before_prepare();
    }
}

/// What a read_write session may do besides (src/guard/custom.rs): create,
/// alter, drop and truncate relations, COPY FROM. PostgreSQL's own
/// privileges keep these to the relations it owns or may write; the
/// object-access hook keeps what it creates in its custom schema. Another
/// DROP than of a relation (its schema!), triggers, functions, rules,
/// GRANT and SET SCHEMA are refused.
fn allowed_for_writer(statement: *mut pg_sys::Node, schema: pg_sys::Oid) -> bool {
    use pg_sys::NodeTag::*;
    use pg_sys::ObjectType::*;
    // SAFETY: a utility statement from a PlannedStmt is a valid Node.
    let tag = unsafe { (*statement).type_ };
    match tag {
        T_CreateStmt | T_CreateTableAsStmt | T_ViewStmt | T_IndexStmt | T_CreateSeqStmt
        | T_AlterSeqStmt | T_AlterTableStmt | T_CopyStmt => true,
        // SAFETY: the tag says it is a DropStmt.
        T_DropStmt => unsafe {
            matches!(
                (*(statement as *mut pg_sys::DropStmt)).removeType,
                OBJECT_TABLE | OBJECT_VIEW | OBJECT_INDEX | OBJECT_SEQUENCE
            )
        },
        // SAFETY: the tag says it is a TruncateStmt.
        T_TruncateStmt => unsafe { truncates_only(statement as *mut pg_sys::TruncateStmt, schema) },
        _ => false,
    }
}

/// Statements that can grow the custom schema: refused past its quota.
fn grows(statement: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    // SAFETY: a utility statement from a PlannedStmt is a valid Node.
    matches!(
        unsafe { (*statement).type_ },
        T_CreateStmt | T_CreateTableAsStmt | T_IndexStmt | T_AlterTableStmt | T_CreateSeqStmt
    )
}

/// Whether every relation a TRUNCATE names is in `schema`, the session's
/// custom schema (PostgreSQL checks the TRUNCATE privilege itself).
///
/// # Safety
/// `statement` must be a valid TruncateStmt.
unsafe fn truncates_only(statement: *mut pg_sys::TruncateStmt, schema: pg_sys::Oid) -> bool {
    pgrx::PgList::<pg_sys::RangeVar>::from_pg((*statement).relations)
        .iter_ptr()
        .all(|relation| {
            let namespace = super::custom::namespace_of(relation);
            namespace != pg_sys::InvalidOid && namespace == schema
        })
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
    // In an aborted transaction block only ROLLBACK and its kin get here
    // (PostgreSQL refuses the rest with 25P02 before), and nothing may read
    // the catalogs: from 17 the released resource owner refuses it
    // ("ResourceOwnerEnlarge called after release started"), and the
    // session could never leave the block.
    if !pg_sys::IsTransactionState() {
        forward(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        );
        return;
    }
    let statement = (*pstmt).utilityStmt;
    if (*statement).type_ == pg_sys::NodeTag::T_ReassignOwnedStmt {
        if let Some(check) = BEFORE_REASSIGN {
            check(statement as *mut pg_sys::ReassignOwnedStmt);
        }
    }
    let guarded = guarded();
    if guarded {
        every_statement();
        if two_phase(statement) {
            refuse(
                "a bi_access credential may not use two-phase commit (PREPARE TRANSACTION)".into(),
                "A prepared transaction would keep its locks after the session ends; use COMMIT.",
            );
        }
        before_keeping(statement);
        super::oracles::refuse_explain(statement);
    }
    let refused = guarded && !allowed(statement);
    let writer = if refused {
        super::custom::writer()
    } else {
        None
    };
    let mut admitted = None;
    if let Some(schema) = writer.filter(|schema| allowed_for_writer(statement, schema.namespace)) {
        match super::custom::works_in(statement) {
            Some(namespace) if namespace != schema.namespace => refuse(
                super::custom::ONLY_ITS_SCHEMA.into(),
                "Temporary objects and objects in other schemas are not available to BI logins; name the custom schema (bi_access.connection's custom_schema).",
            ),
            _ => {}
        }
        if grows(statement) {
            super::quota::refuse_past_quota(schema.namespace);
        }
        let before = super::quota::before(statement, schema.namespace);
        admitted = Some((super::custom::Admitted::enter(), schema.namespace, before));
    } else if refused {
        let tag = CStr::from_ptr(pg_sys::GetCommandTagName(pg_sys::CreateCommandTag(
            statement,
        )));
        if writer.is_some() {
            refuse(
                format!(
                    "{}: {} is not allowed",
                    super::custom::WRITES_ONLY_THERE,
                    tag.to_string_lossy()
                ),
                super::custom::WRITES_HINT,
            );
        }
        refuse(
            format!(
                "a bi_access credential is read-only: {} is not allowed",
                tag.to_string_lossy()
            ),
            "BI logins may read their organization's rows and nothing else.",
        );
    }
    forward(
        pstmt,
        query_string,
        read_only_tree,
        context,
        params,
        query_env,
        dest,
        qc,
    );
    if let Some((admitted, namespace, before)) = admitted {
        drop(admitted);
        super::quota::after(statement, namespace, before);
    }
    if guarded {
        // SET ROLE, RESET, DISCARD ALL… may have brought back a value above a
        // cap that was lowered since it was set.
        super::caps::enforce(false);
    }
}

/// The previous ProcessUtility hook, or PostgreSQL's own.
///
/// # Safety
/// The arguments are the hook's, passed on unchanged.
#[allow(clippy::too_many_arguments)]
unsafe fn forward(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
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
}

/// At the start of every statement of a credential session: the login gate's
/// checks if the login did not run them, the login's standing, then the caps
/// (re-arming the running statement's timeout if a lowered cap changed it).
fn every_statement() {
    // A parallel worker runs its leader's statement with its leader's
    // settings (it restores the values, not what RESET would return to).
    if !super::session::client_backend() {
        return;
    }
    super::gate::ensure_ran();
    super::standing::check();
    super::networks::check_again();
    super::transaction::arm();
    if super::caps::enforce(false) {
        // SAFETY: re-arms this backend's own statement timer.
        unsafe {
            if crate::compat::get_timeout_active(crate::compat::STATEMENT_TIMEOUT) {
                crate::compat::enable_timeout_after(
                    crate::compat::STATEMENT_TIMEOUT,
                    pg_sys::StatementTimeout,
                );
            }
        }
    }
}
