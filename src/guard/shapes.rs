//! The shapes of bi_access's own policy conditions, recognised in a query
//! tree: the reader and guard policies' `column = bi_access.current_org…()`
//! and the pass-through policy's membership test. The reads hook trusts a
//! policy only in these shapes (reads.rs); the planner folds the
//! pass-through condition to a constant (plans.rs).

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgList;

use crate::names;

/// `(SELECT pg_catalog.pg_has_role('bi_access_credential', 'MEMBER')::int4) <> 1`,
/// exactly as bi_access's create_passthrough writes it (without the sub-select
/// on a table Citus manages).
///
/// # Safety
/// `node` must be a valid node (or NULL).
pub(super) unsafe fn is_passthrough(node: *mut pg_sys::Node) -> bool {
    if !is(node, pg_sys::NodeTag::T_OpExpr) {
        return false;
    }
    let operator = node as *mut pg_sys::OpExpr;
    let args = PgList::<pg_sys::Node>::from_pg((*operator).args);
    // The function is in the stored expression; get_opcode only for a
    // node built without it.
    let function = match (*operator).opfuncid {
        pg_sys::InvalidOid => pg_sys::get_opcode((*operator).opno),
        known => known,
    };
    if function != pg_sys::Oid::from(pg_sys::F_INT4NE) || args.len() != 2 {
        return false;
    }
    let (Some(left), Some(right)) = (args.get_ptr(0), args.get_ptr(1)) else {
        return false;
    };
    is_int4_one(right) && (is_membership_sublink(left) || is_membership_cast(left))
}

/// # Safety
/// `node` must be a valid node (or NULL).
unsafe fn is_int4_one(node: *mut pg_sys::Node) -> bool {
    if !is(node, pg_sys::NodeTag::T_Const) {
        return false;
    }
    let constant = node as *mut pg_sys::Const;
    (*constant).consttype == pg_sys::INT4OID
        && !(*constant).constisnull
        && (*constant).constvalue.value() as i32 == 1
}

/// # Safety
/// `node` must be a valid node (or NULL).
unsafe fn is_membership_sublink(node: *mut pg_sys::Node) -> bool {
    sole_target_of_sublink(node).is_some_and(|cast| is_membership_cast(cast))
}

/// # Safety
/// `cast` must be a valid node (or NULL).
unsafe fn is_membership_cast(cast: *mut pg_sys::Node) -> bool {
    // The int4 cast of the boolean, then the call.
    if !is(cast, pg_sys::NodeTag::T_FuncExpr) {
        return false;
    }
    let cast_args = PgList::<pg_sys::Node>::from_pg((*(cast as *mut pg_sys::FuncExpr)).args);
    match cast_args.get_ptr(0) {
        Some(call) if cast_args.len() == 1 => is_credential_membership_call(call),
        _ => false,
    }
}

/// `pg_has_role('bi_access_credential', 'MEMBER')`.
///
/// # Safety
/// `node` must be a valid node (or NULL).
unsafe fn is_credential_membership_call(node: *mut pg_sys::Node) -> bool {
    if !is(node, pg_sys::NodeTag::T_FuncExpr) {
        return false;
    }
    let call = node as *mut pg_sys::FuncExpr;
    let args = PgList::<pg_sys::Node>::from_pg((*call).args);
    if (*call).funcid != pg_sys::Oid::from(pg_sys::F_PG_HAS_ROLE_NAME_TEXT) || args.len() != 2 {
        return false;
    }
    let (Some(role), Some(mode)) = (args.get_ptr(0), args.get_ptr(1)) else {
        return false;
    };
    constant_bytes(role, pg_sys::NAMEOID) == Some(names::CREDENTIAL_GROUP.as_bytes())
        && constant_bytes(mode, pg_sys::TEXTOID) == Some(b"MEMBER".as_slice())
}

/// The bytes of a non-null constant of `kind` (name or text), read in
/// place: this runs for every query that touches an exposed table.
///
/// # Safety
/// `node` must be a valid node (or NULL); the slice lives as long as it.
unsafe fn constant_bytes<'a>(node: *mut pg_sys::Node, kind: pg_sys::Oid) -> Option<&'a [u8]> {
    if !is(node, pg_sys::NodeTag::T_Const) {
        return None;
    }
    let constant = node as *mut pg_sys::Const;
    if (*constant).consttype != kind || (*constant).constisnull {
        return None;
    }
    let value = (*constant).constvalue;
    if kind == pg_sys::NAMEOID {
        let name = value.cast_mut_ptr::<pg_sys::NameData>();
        Some(CStr::from_ptr((*name).data.as_ptr()).to_bytes())
    } else {
        // A short constant is never compressed; one that were would not
        // match, and the query would keep its sub-select.
        Some(pgrx::varlena::varlena_to_byte_slice(
            value.cast_mut_ptr::<pg_sys::varlena>(),
        ))
    }
}

/// `column = bi_access.current_org…()`, casts aside: the shape of every
/// reader policy bi_access creates (an earlier 0.2.0 wrapped the call in a
/// sub-select, kept until the next sync). A policy of the same name that
/// compares otherwise (or not at all) is not bi_access's.
///
/// # Safety
/// `qual` must be a node tree of an open relcache entry (or NULL).
pub(super) unsafe fn compares_with_org_lookup(qual: *mut pg_sys::Node) -> bool {
    if !is(qual, pg_sys::NodeTag::T_OpExpr) {
        return false;
    }
    let operator = qual as *mut pg_sys::OpExpr;
    let name = pg_sys::get_opname((*operator).opno);
    if name.is_null() || CStr::from_ptr(name) != c"=" {
        return false;
    }
    let args = PgList::<pg_sys::Node>::from_pg((*operator).args);
    if args.len() != 2 {
        return false;
    }
    let (Some(left), Some(right)) = (args.get_ptr(0), args.get_ptr(1)) else {
        return false;
    };
    let right = without_casts(right);
    is(without_casts(left), pg_sys::NodeTag::T_Var)
        && (is_org_lookup_call(right) || is_org_lookup_sublink(right))
}

/// # Safety
/// `node` must be a valid node (or NULL).
unsafe fn is_org_lookup_call(node: *mut pg_sys::Node) -> bool {
    is(node, pg_sys::NodeTag::T_FuncExpr)
        && is_org_lookup((*(node as *mut pg_sys::FuncExpr)).funcid)
}

/// # Safety
/// `node` must be a valid node (or NULL).
unsafe fn is_org_lookup_sublink(node: *mut pg_sys::Node) -> bool {
    sole_target_of_sublink(node).is_some_and(|target| is_org_lookup_call(without_casts(target)))
}

/// The expression of `(SELECT expression)`: an expression sub-select with
/// no FROM and one output column, as bi_access's policies write them.
///
/// # Safety
/// `node` must be a valid node (or NULL).
pub(super) unsafe fn sole_target_of_sublink(node: *mut pg_sys::Node) -> Option<*mut pg_sys::Node> {
    if !is(node, pg_sys::NodeTag::T_SubLink) {
        return None;
    }
    let sublink = node as *mut pg_sys::SubLink;
    let query = (*sublink).subselect;
    if (*sublink).subLinkType != pg_sys::SubLinkType::EXPR_SUBLINK
        || !is(query, pg_sys::NodeTag::T_Query)
    {
        return None;
    }
    let query = query as *mut pg_sys::Query;
    let targets = PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
    if !(*query).rtable.is_null() || targets.len() != 1 {
        return None;
    }
    targets
        .get_ptr(0)
        .map(|target| (*target).expr as *mut pg_sys::Node)
}

fn is_org_lookup(function: pg_sys::Oid) -> bool {
    // SAFETY: syscache lookups; NULL for a missing function or schema.
    unsafe {
        let name = pg_sys::get_func_name(function);
        let schema = pg_sys::get_namespace_name(pg_sys::get_func_namespace(function));
        if name.is_null() || schema.is_null() {
            return false;
        }
        CStr::from_ptr(schema).to_bytes() == names::SCHEMAS[0].as_bytes()
            && names::ORG_LOOKUPS
                .iter()
                .any(|lookup| CStr::from_ptr(name).to_bytes() == lookup.as_bytes())
    }
}

/// The expression under binary-compatible relabelings, I/O conversions and
/// cast functions.
///
/// # Safety
/// `node` must be a valid node (or NULL).
pub(super) unsafe fn without_casts(mut node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    loop {
        if is(node, pg_sys::NodeTag::T_RelabelType) {
            node = (*(node as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node;
        } else if is(node, pg_sys::NodeTag::T_CoerceViaIO) {
            node = (*(node as *mut pg_sys::CoerceViaIO)).arg as *mut pg_sys::Node;
        } else if is(node, pg_sys::NodeTag::T_FuncExpr)
            && (*(node as *mut pg_sys::FuncExpr)).funcformat
                != pg_sys::CoercionForm::COERCE_EXPLICIT_CALL
        {
            let args = PgList::<pg_sys::Node>::from_pg((*(node as *mut pg_sys::FuncExpr)).args);
            match args.get_ptr(0) {
                Some(arg) if args.len() == 1 => node = arg,
                _ => return node,
            }
        } else {
            return node;
        }
    }
}

/// # Safety
/// `node` must be a valid node (or NULL).
pub(super) unsafe fn is(node: *mut pg_sys::Node, tag: pg_sys::NodeTag) -> bool {
    !node.is_null() && (*node).type_ == tag
}
