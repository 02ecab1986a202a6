//! Statements refused as soon as they are analysed, before they can keep a
//! lock. PostgreSQL's parser takes ROW EXCLUSIVE on the target of an INSERT,
//! UPDATE, DELETE or MERGE while it analyses it, before any other hook; a
//! statement that is only prepared (PREPARE, the protocol's Parse) never
//! reaches the executor's permission check (reads.rs), so it would keep that
//! lock to the end of its transaction, and `MERGE … WHEN NOT MATCHED THEN DO
//! NOTHING` needs no write privilege at all and runs in a read-only
//! transaction. So a write outside a read_write credential's custom schema
//! (any write of a read credential) is refused here, in the statement
//! itself, in a data-modifying WITH or under EXPLAIN: the error aborts the
//! statement's transaction, or its savepoint, which releases the lock.
//!
//! Also where the protocol's Parse of a named statement is counted against
//! `bi_access.max_prepared_statements` (memory.rs): PostgreSQL analyses it
//! in MessageContext, beside the CachedPlanSource it will be saved in (an
//! unnamed one in a context of its own; a simple query has no
//! CachedPlanSource; PREPARE runs in its portal's context).

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

use super::session::guarded;

static mut PREVIOUS: pg_sys::post_parse_analyze_hook_type = None;

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread; the
    // previous hook is kept and called in turn.
    unsafe {
        PREVIOUS = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn post_parse_analyze(
    state: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jumble: *mut pg_sys::JumbleState,
) {
    if let Some(previous) = PREVIOUS {
        previous(state, query, jumble);
    }
    if !guarded() {
        return;
    }
    if let Some(relid) = write_outside_custom_schema(query) {
        super::reads::refuse_write(relid);
    }
    if named_parse(state) {
        super::memory::before_prepare();
    }
    if let Some(holdable) = declares(query) {
        // Here, before the statement has a portal: refused from inside the
        // DECLARE's portal (after the count's query), the transaction could
        // not be rolled back on 17 ("ResourceOwnerEnlarge called after
        // release started").
        super::memory::before_declare(holdable);
    }
}

/// Whether the query is a DECLARE CURSOR, and if so whether WITH HOLD.
///
/// # Safety
/// `query` must be a valid analysed Query (or NULL).
unsafe fn declares(query: *mut pg_sys::Query) -> Option<bool> {
    if query.is_null() || (*query).commandType != pg_sys::CmdType::CMD_UTILITY {
        return None;
    }
    let statement = (*query).utilityStmt;
    if statement.is_null() || (*statement).type_ != pg_sys::NodeTag::T_DeclareCursorStmt {
        return None;
    }
    let options = (*(statement as *mut pg_sys::DeclareCursorStmt)).options;
    Some(options & pg_sys::CURSOR_OPT_HOLD as i32 != 0)
}

/// The target of a write the session may not make, if the query makes one.
///
/// # Safety
/// `query` must be a valid analysed Query (or NULL).
unsafe fn write_outside_custom_schema(query: *mut pg_sys::Query) -> Option<pg_sys::Oid> {
    if query.is_null() {
        return None;
    }
    use pg_sys::CmdType::*;
    match (*query).commandType {
        CMD_SELECT | CMD_NOTHING | CMD_UNKNOWN => {}
        CMD_UTILITY => {
            let statement = (*query).utilityStmt;
            if !statement.is_null() && (*statement).type_ == pg_sys::NodeTag::T_ExplainStmt {
                let inner = (*(statement as *mut pg_sys::ExplainStmt)).query;
                if !inner.is_null() && (*inner).type_ == pg_sys::NodeTag::T_Query {
                    return write_outside_custom_schema(inner as *mut pg_sys::Query);
                }
            }
            return None;
        }
        // INSERT, UPDATE, DELETE, MERGE (15 and later).
        _ => {
            let target = result_relation(query);
            if target != pg_sys::InvalidOid && !in_custom_schema(target) {
                return Some(target);
            }
        }
    }
    for cte in PgList::<pg_sys::CommonTableExpr>::from_pg((*query).cteList).iter_ptr() {
        let inner = (*cte).ctequery;
        if !inner.is_null() && (*inner).type_ == pg_sys::NodeTag::T_Query {
            if let Some(target) = write_outside_custom_schema(inner as *mut pg_sys::Query) {
                return Some(target);
            }
        }
    }
    None
}

/// # Safety
/// `query` must be a valid analysed Query.
unsafe fn result_relation(query: *mut pg_sys::Query) -> pg_sys::Oid {
    let index = (*query).resultRelation;
    if index <= 0 {
        return pg_sys::InvalidOid;
    }
    PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable)
        .get_ptr(index as usize - 1)
        .map_or(pg_sys::InvalidOid, |entry| (*entry).relid)
}

/// Whether a relation is in the session's custom schema and the session may
/// write there (a read_write credential).
fn in_custom_schema(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup of a relation the parser has locked.
    let namespace = unsafe { pg_sys::get_rel_namespace(relid) };
    super::custom::writer().is_some_and(|schema| schema.namespace == namespace)
}

/// Whether this is the analysis of the protocol's Parse of a named
/// statement (see the module's comment).
///
/// # Safety
/// `state` must be the ParseState being analysed (or NULL).
unsafe fn named_parse(state: *mut pg_sys::ParseState) -> bool {
    if state.is_null()
        || (*state).p_paramref_hook.is_none()
        || pg_sys::CurrentMemoryContext != pg_sys::MessageContext
        || pg_sys::MessageContext.is_null()
    {
        return false;
    }
    let mut child = (*pg_sys::MessageContext).firstchild;
    while !child.is_null() {
        let name = (*child).name;
        if !name.is_null() && CStr::from_ptr(name) == c"CachedPlanSource" {
            return true;
        }
        child = (*child).nextchild;
    }
    false
}
