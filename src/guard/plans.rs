//! Planning wherever the library is loaded: the pass-through policy's
//! condition is decided before the planner sees it.
//!
//! Where bi_access turned row-level security on, every query on the table
//! carries `bi_access_passthrough` (OR-ed, for a credential, with the reader
//! policy): `(SELECT pg_has_role('bi_access_credential', 'MEMBER')::int4) <> 1`.
//! Its value is known when the query is planned: false when the current role
//! is a member of the credential group (a credential, or a group it SET ROLE
//! to), true otherwise. Replacing it with that constant lets the planner drop
//! it with its sub-select: a credential's plan is the reader policy's alone,
//! and an application role's is the table's own, as if it were never
//! exposed. The answer is the one the sub-select would give when the plan
//! runs: PostgreSQL plans a query that row-level security touched again when
//! the current role changes. Anything the walk does not reach (a sub-select
//! in an expression) keeps the condition as it is, which answers the same at
//! run time.
//!
//! A credential's session always loads the library. An application's
//! sessions do where the server or its role preloads it
//! (`shared_preload_libraries`, or `ALTER ROLE … SET session_preload_libraries
//! = 'bi_access'`); elsewhere the sub-select runs, once per query.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

use super::shapes::{compares_with_org_lookup, is, is_passthrough, without_casts};
use crate::names;

static mut PREVIOUS: pg_sys::planner_hook_type = None;

thread_local! {
    /// The last role asked about and the answer of
    /// `current_role_is_a_credential` for it.
    static MEMBERSHIP: Cell<Option<(pg_sys::Oid, Option<bool>)>> = const { Cell::new(None) };
}

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread; the
    // previous hook is kept and called in turn.
    unsafe {
        PREVIOUS = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
    }
    crate::invalidation::on_catalog_change(
        &[
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
        ],
        forget_membership,
    );
}

#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // The role is looked up only for a query that carries the policy:
    // every statement of the session is planned here.
    let mut found = Vec::new();
    find_passthrough(parse, &mut found);
    if let (false, Some(member)) = (found.is_empty(), current_role_is_a_credential()) {
        for cell in found {
            (*cell).ptr_value = constant(!member).cast();
        }
    }
    if super::session::guarded() {
        add_org_filter_for_citus(parse);
    }
    match PREVIOUS {
        Some(previous) => previous(parse, query_string, cursor_options, bound_params),
        None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
    }
}

/// A credential's query on one Citus table: the guard policy's condition,
/// its org lookup evaluated (`org_id = 42`), added to the query's own WHERE
/// too. Citus plans a single-table query with its distribution column
/// compared with a constant in the WHERE on its fast path, as it does the
/// owner's hand-written filter, instead of planning it in full; the
/// condition is already the guard's, so no row changes (row-level security
/// still applies on the coordinator and on the shards). A query that names
/// the column in its WHERE already is left as it is (Citus's fast path
/// wants the column there once).
///
/// # Safety
/// `query` must be the planner's input, which it may modify.
unsafe fn add_org_filter_for_citus(query: *mut pg_sys::Query) {
    if (*query).commandType != pg_sys::CmdType::CMD_SELECT || (*query).jointree.is_null() {
        return;
    }
    let rtable = PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable);
    let Some(entry) = rtable.get_ptr(0) else {
        return;
    };
    if rtable.len() != 1 || (*entry).rtekind != pg_sys::RTEKind::RTE_RELATION {
        return;
    }
    let Some(guard) = list_cells((*entry).securityQuals)
        .into_iter()
        .map(|cell| (*cell).ptr_value as *mut pg_sys::Node)
        .find(|qual| compares_with_org_lookup(*qual))
    else {
        return;
    };
    let column = PgList::<pg_sys::Node>::from_pg((*(guard as *mut pg_sys::OpExpr)).args)
        .get_ptr(0)
        .map(|left| without_casts(left));
    let Some(column) = column.filter(|c| is(*c, pg_sys::NodeTag::T_Var)) else {
        return;
    };
    let quals = (*(*query).jointree).quals;
    let mut named: *mut pg_sys::Bitmapset = std::ptr::null_mut();
    pg_sys::pull_varattnos(quals, 1, &mut named);
    let attno = (*(column as *mut pg_sys::Var)).varattno as i32;
    if pg_sys::bms_is_member(attno - pg_sys::FirstLowInvalidHeapAttributeNumber, named)
        || !crate::citus::is_citus_table_cached((*entry).relid)
    {
        return;
    }
    // The planner support function turns the lookup into its constant.
    let filter = pg_sys::eval_const_expressions(
        std::ptr::null_mut(),
        pg_sys::copyObjectImpl(guard.cast()).cast(),
    );
    (*(*query).jointree).quals = pg_sys::make_and_qual(quals, filter);
}

/// What `pg_has_role(…, 'MEMBER')` answers for the current role; None where
/// it raises (the group does not exist), which the query then does itself.
/// Remembered per role until roles or memberships change: this runs for
/// every query that touches an exposed table.
fn current_role_is_a_credential() -> Option<bool> {
    // SAFETY: a read of backend-local state.
    let role = unsafe { pg_sys::GetUserId() };
    if let Some((known_role, answer)) = MEMBERSHIP.with(Cell::get) {
        if known_role == role {
            return answer;
        }
    }
    // SAFETY: syscache lookups of this backend; none raises for a missing role.
    let answer = unsafe {
        let group = pg_sys::get_role_oid(names::CREDENTIAL_GROUP_C.as_ptr(), true);
        (group != pg_sys::InvalidOid).then(|| pg_sys::is_member_of_role(role, group))
    };
    MEMBERSHIP.with(|known| known.set(Some((role, answer))));
    answer
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_membership(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    MEMBERSHIP.with(|known| known.set(None));
}

/// The list cells holding the pass-through's condition, in every range
/// table entry of the query, of its sub-queries (views included) and of its
/// CTEs.
///
/// # Safety
/// `query` must be a valid Query (the planner's input, which it may modify).
unsafe fn find_passthrough(query: *mut pg_sys::Query, found: &mut Vec<*mut pg_sys::ListCell>) {
    if query.is_null() {
        return;
    }
    for entry in PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable).iter_ptr() {
        find_in_quals((*entry).securityQuals, found);
        if (*entry).rtekind == pg_sys::RTEKind::RTE_SUBQUERY {
            find_passthrough((*entry).subquery, found);
        }
    }
    for cte in PgList::<pg_sys::CommonTableExpr>::from_pg((*query).cteList).iter_ptr() {
        let inner = (*cte).ctequery;
        if !inner.is_null() && (*inner).type_ == pg_sys::NodeTag::T_Query {
            find_passthrough(inner as *mut pg_sys::Query, found);
        }
    }
}

/// Row-level security puts each restrictive condition in the list by
/// itself and the permissive ones OR-ed together (or alone).
///
/// # Safety
/// `quals` must be a List of expressions (or NULL).
unsafe fn find_in_quals(quals: *mut pg_sys::List, found: &mut Vec<*mut pg_sys::ListCell>) {
    for cell in list_cells(quals) {
        let qual = (*cell).ptr_value as *mut pg_sys::Node;
        if is_passthrough(qual) {
            found.push(cell);
        } else if is(qual, pg_sys::NodeTag::T_BoolExpr)
            && (*(qual as *mut pg_sys::BoolExpr)).boolop == pg_sys::BoolExprType::OR_EXPR
        {
            found.extend(
                list_cells((*(qual as *mut pg_sys::BoolExpr)).args)
                    .into_iter()
                    .filter(|arm| is_passthrough((**arm).ptr_value as *mut pg_sys::Node)),
            );
        }
    }
}

/// # Safety
/// `list` must be a pointer List (or NULL).
unsafe fn list_cells(list: *mut pg_sys::List) -> Vec<*mut pg_sys::ListCell> {
    if list.is_null() {
        return Vec::new();
    }
    (0..(*list).length as usize)
        .map(|i| (*list).elements.add(i))
        .collect()
}

fn constant(value: bool) -> *mut pg_sys::Node {
    // SAFETY: allocates a Const in the current (planning) memory context.
    unsafe { pg_sys::makeBoolConst(value, false) }
}
