//! Which relations a credential may read: the second layer under row-level
//! security. It asks nothing of bi_access's own tables (they may be gone):
//! the catalogs of the relation itself say whether it is exposed as it should
//! be.
//!
//! A relation in a query's range table passes if it is
//! - in `pg_catalog` or `information_schema`, for reading (but for the
//!   statistics views of tables and indexes, which show other tables'
//!   values and row counts: `oracles::is_statistics_view`);
//! - a table (or partitioned table) with row-level security on and both of
//!   bi_access's reader policies in place, each comparing a column with
//!   bi_access's org lookup, the guard binding every credential;
//! - a `security_invoker` view: it reads the tables below it with the
//!   credential's own rights, and each of those passes this same check;
//! - a shared table (bi_access's registry says so, `table_record`) that
//!   does not carry its org column.
//!
//! A column list in the registry narrows any of these to its columns,
//! whatever else is granted: a statement that reads another column (the
//! whole row included, as `SELECT *`, `row_to_json(t)` or `COPY t TO`
//! need) is refused.
//!
//! Anything else is refused with 42501: a table granted to PUBLIC by a
//! migration, a table whose policy was dropped or whose RLS was disabled, a
//! partition read directly (its parent's policies do not apply to it), a view
//! that runs as its owner, a sequence, a foreign table. Writing is refused
//! everywhere. A refusal is a whole statement's: never a partial answer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgList;

use super::custom::Verdict;
use super::session::{guarded, refuse};
use super::shapes::{compares_with_org_lookup, is_passthrough};
use crate::compat::{self, PermissionRequest};
use crate::names;

thread_local! {
    static INFORMATION_SCHEMA: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    /// Each relation's verdict, until its relcache entry is invalidated (a
    /// policy, RLS, reloptions or schema change, committed anywhere or
    /// replayed): the check runs once per relation, not once per statement.
    static VERDICTS: RefCell<HashMap<pg_sys::Oid, Admission>> = RefCell::new(HashMap::new());
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_verdict(_: pg_sys::Datum, relid: pg_sys::Oid) {
    VERDICTS.with(|verdicts| {
        if let Ok(mut verdicts) = verdicts.try_borrow_mut() {
            if relid == pg_sys::InvalidOid {
                verdicts.clear();
            } else {
                verdicts.remove(&relid);
            }
        }
    });
}

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread; compat
    // keeps the previous hook and calls it first.
    unsafe {
        compat::install_permission_check(check_permissions);
    }
    crate::invalidation::on_relation_change(forget_verdict);
}

/// What a credential may read of a relation.
pub(super) enum Admission {
    Refused,
    Whole,
    /// Only these columns (attribute numbers).
    Columns(Vec<pg_sys::AttrNumber>),
}

/// Why a relation is not readable by a credential.
enum Refusal {
    Write,
    NotExposed,
    /// A column outside the table's column list (0: the whole row).
    Column(pg_sys::AttrNumber),
}

/// The executor's permission check: every relation the statement names,
/// with the rights it needs (compat reads them from the range table on 14
/// and 15, from its own permission list on 16 and later).
fn check_permissions(requests: &mut dyn Iterator<Item = PermissionRequest>, report: bool) -> bool {
    if !guarded() {
        return true;
    }
    for request in requests {
        if let Err(refusal) = readable(&request) {
            if !report {
                return false;
            }
            refuse_relation(request.relid, refusal);
        }
    }
    true
}

/// The refusal of a write to `relid` (a read credential's, or a read_write
/// one's outside its custom schema).
pub(super) fn refuse_write(relid: pg_sys::Oid) -> ! {
    refuse_relation(relid, Refusal::Write)
}

fn refuse_relation(relid: pg_sys::Oid, refusal: Refusal) -> ! {
    let name = relation_name(relid);
    match refusal {
        // A read_write session is told where it may write instead.
        Refusal::Write if super::custom::writer().is_some() => refuse(
            format!("{}: it may not write to {name}", super::custom::WRITES_ONLY_THERE),
            super::custom::WRITES_HINT,
        ),
        Refusal::Write => refuse(
            format!("a bi_access credential is read-only: it may not write to {name}"),
            "BI logins may read their organization's rows and nothing else.",
        ),
        Refusal::NotExposed => refuse(
            format!("permission denied for {name}: a bi_access credential reads only exposed tables"),
            "A table is readable by BI logins only while bi_access exposes it with its row-level security in place; an administrator's bi_access.check() says what is missing.",
        ),
        Refusal::Column(number) => refuse(
            format!(
                "permission denied for {} of {name}: a bi_access credential reads only its listed columns",
                column_name(relid, number)
            ),
            "Name the listed columns instead of * or the whole row; bi_access.tables shows each table's columns.",
        ),
    }
}

fn column_name(relid: pg_sys::Oid, number: pg_sys::AttrNumber) -> String {
    if number == 0 {
        return "the whole row".into();
    }
    // SAFETY: a syscache lookup; NULL for a missing column.
    let name = unsafe { pg_sys::get_attname(relid, number, true) };
    if name.is_null() {
        return format!("column {number}");
    }
    // SAFETY: a NUL-terminated name from the syscache.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    format!("column {}", pgrx::spi::quote_identifier(name))
}

fn relation_name(relid: pg_sys::Oid) -> String {
    // SAFETY: syscache lookups; NULL for a relation that vanished.
    unsafe {
        let name = pg_sys::get_rel_name(relid);
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if name.is_null() || schema.is_null() {
            return format!("relation {}", relid.to_u32());
        }
        format!(
            "relation {}",
            pgrx::spi::quote_qualified_identifier(
                CStr::from_ptr(schema).to_string_lossy(),
                CStr::from_ptr(name).to_string_lossy()
            )
        )
    }
}

fn readable(request: &PermissionRequest) -> Result<(), Refusal> {
    let (relid, required) = (request.relid, request.required);
    // The session's custom schema (scope read_write): its own rules.
    match super::custom::verdict(relid, required) {
        Some(Verdict::Allowed) => return Ok(()),
        Some(Verdict::Refused) => return Err(Refusal::Write),
        Some(Verdict::Grows(namespace)) => {
            super::quota::refuse_past_quota(namespace);
            super::quota::require_trigger(relid);
            return Ok(());
        }
        None => {}
    }
    if required & !(pg_sys::ACL_SELECT as pg_sys::AclMode) != 0 {
        return Err(Refusal::Write);
    }
    with_admission(relid, |admission| match admission {
        Admission::Refused => Err(Refusal::NotExposed),
        Admission::Whole => Ok(()),
        Admission::Columns(listed) => match outside(request.selected, listed) {
            Some(column) => Err(Refusal::Column(column)),
            None => Ok(()),
        },
    })
}

/// The first column read that is not in `listed` (0: the whole row; a
/// system column is outside every list).
fn outside(
    selected: *mut pg_sys::Bitmapset,
    listed: &[pg_sys::AttrNumber],
) -> Option<pg_sys::AttrNumber> {
    let offset = pg_sys::FirstLowInvalidHeapAttributeNumber;
    let mut member = -1;
    loop {
        // SAFETY: the request's own set (NULL is the empty set).
        member = unsafe { pg_sys::bms_next_member(selected, member) };
        if member < 0 {
            return None;
        }
        let number = (member + offset) as pg_sys::AttrNumber;
        if !listed.contains(&number) {
            return Some(number);
        }
    }
}

/// Whether a credential may read anything of the relation.
pub(super) fn exposed_now(relid: pg_sys::Oid) -> bool {
    with_admission(relid, |admission| !matches!(admission, Admission::Refused))
}

/// `f` of what a credential may read of the relation (remembered until its
/// relcache entry is invalidated), borrowed from the cache: a statement
/// copies nothing, and a known relation costs one lookup.
fn with_admission<T>(relid: pg_sys::Oid, f: impl Fn(&Admission) -> T) -> T {
    if let Some(answer) = VERDICTS.with(|verdicts| verdicts.borrow().get(&relid).map(&f)) {
        return answer;
    }
    // No borrow is held while `admitted` reads the catalogs: an invalidation
    // it takes in clears the cache.
    let verdict = admitted(relid);
    let answer = f(&verdict);
    VERDICTS.with(|verdicts| verdicts.borrow_mut().insert(relid, verdict));
    answer
}

/// What a credential may read of the relation: its catalogs say whether it
/// is exposed, bi_access's registry whether it is shared and its columns
/// (read only for relations outside the system catalogs).
fn admitted(relid: pg_sys::Oid) -> Admission {
    // SAFETY: a syscache lookup of a relation the executor has locked.
    if is_catalog_namespace(unsafe { pg_sys::get_rel_namespace(relid) }) {
        return match is_statistics_view(relid) {
            true => Admission::Refused,
            false => Admission::Whole,
        };
    }
    let record = crate::table_record::of(relid);
    if !exposed(relid) && !record.as_ref().is_some_and(|record| shared(relid, record)) {
        return Admission::Refused;
    }
    let Some(listed) = record.and_then(|record| record.columns) else {
        return Admission::Whole;
    };
    // SAFETY: syscache lookups; 0 (InvalidAttrNumber) for a column that is
    // gone or renamed, which then admits nothing.
    Admission::Columns(
        listed
            .iter()
            .map(|name| unsafe { pg_sys::get_attnum(relid, name.as_ptr()) })
            .filter(|&number| number > 0)
            .collect(),
    )
}

/// A shared table (a table or partitioned table) that does not carry its
/// org column.
fn shared(relid: pg_sys::Oid, record: &crate::table_record::TableRecord) -> bool {
    // SAFETY: syscache lookups of a relation the executor has locked; 0 for
    // a column the table does not have.
    let (kind, org_column) = unsafe {
        (
            pg_sys::get_rel_relkind(relid) as u8,
            pg_sys::get_attnum(relid, record.org_column.as_ptr()),
        )
    };
    record.shared
        && org_column == 0
        && matches!(
            kind,
            pg_sys::RELKIND_RELATION | pg_sys::RELKIND_PARTITIONED_TABLE
        )
}

/// Whether a credential may read the relation, from its catalogs.
/// (Relations outside the system catalogs: `admitted` answers for those.)
fn exposed(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup of a relation the executor has locked.
    let kind = unsafe { pg_sys::get_rel_relkind(relid) } as u8;
    match kind {
        pg_sys::RELKIND_RELATION | pg_sys::RELKIND_PARTITIONED_TABLE => {
            // SAFETY: as above; the relcache entry is released before return.
            unsafe { with_relation(relid, |relation| policies_in_place(relation)) }
        }
        // SAFETY: as above.
        pg_sys::RELKIND_VIEW => unsafe {
            with_relation(relid, |relation| compat::view_is_security_invoker(relation))
        },
        _ => false,
    }
}

/// pg_stats and its kin show the values of any table whose columns the role
/// may read and whose RLS is off (a stray grant the guard refuses for the
/// table would give its values away there); the pg_stat*_tables, _indexes
/// and pg_statio_* views show every table's row counts.
fn is_statistics_view(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup; NULL for a missing relation.
    let name = unsafe { pg_sys::get_rel_name(relid) };
    // SAFETY: a NUL-terminated name from the syscache.
    !name.is_null()
        && super::oracles::is_statistics_view(unsafe { CStr::from_ptr(name) }.to_bytes())
}

fn is_catalog_namespace(namespace: pg_sys::Oid) -> bool {
    if namespace == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE) {
        return true;
    }
    let information_schema = INFORMATION_SCHEMA.with(|cached| {
        cached.get().unwrap_or_else(|| {
            // SAFETY: a syscache lookup; InvalidOid when missing.
            let oid = unsafe { pg_sys::get_namespace_oid(c"information_schema".as_ptr(), true) };
            cached.set(Some(oid));
            oid
        })
    });
    namespace != pg_sys::InvalidOid && namespace == information_schema
}

/// # Safety
/// `relid` must be a relation this backend holds a lock on.
unsafe fn with_relation(relid: pg_sys::Oid, check: impl FnOnce(pg_sys::Relation) -> bool) -> bool {
    let relation = pg_sys::RelationIdGetRelation(relid);
    if relation.is_null() {
        return false;
    }
    let answer = check(relation);
    pg_sys::RelationClose(relation);
    answer
}

/// Row-level security on, and both reader policies as bi_access makes them.
///
/// A shard of a Citus table carries the policies Citus copied from the
/// table, all of them permissive (Citus drops AS RESTRICTIVE when it copies
/// a policy, README "Citus"): its guard cannot narrow what another
/// permissive policy admits. Such a shard passes only while nothing else
/// admits anyone: every permissive policy for SELECT is the reader policy,
/// the guard, or the pass-through as bi_access writes it (false for a
/// credential). The credential then sees what the reader policy admits, as
/// on the coordinator.
///
/// # Safety
/// `relation` must be an open relcache entry of a table.
unsafe fn policies_in_place(relation: pg_sys::Relation) -> bool {
    if !(*(*relation).rd_rel).relrowsecurity || (*relation).rd_rsdesc.is_null() {
        return false;
    }
    let credential_group = pg_sys::get_role_oid(names::CREDENTIAL_GROUP_C.as_ptr(), true);
    let (mut read, mut guard, mut permissive_guard, mut others_admit) =
        (false, false, false, false);
    for policy in
        PgList::<pg_sys::RowSecurityPolicy>::from_pg((*(*relation).rd_rsdesc).policies).iter_ptr()
    {
        let name = CStr::from_ptr((*policy).policy_name).to_string_lossy();
        let for_select = matches!((*policy).polcmd as u8, b'r' | b'*');
        if !for_select {
            continue;
        }
        let qual = (*policy).qual as *mut pg_sys::Node;
        let org_match = compares_with_org_lookup(qual);
        if org_match && name == names::POLICY_READ && (*policy).permissive {
            read = true;
        } else if org_match && name == names::POLICY_GUARD && binds(policy, credential_group) {
            if (*policy).permissive {
                permissive_guard = true;
            } else {
                guard = true;
            }
        } else if (*policy).permissive
            && !(name == names::POLICY_PASSTHROUGH && is_passthrough(qual))
        {
            others_admit = true;
        }
    }
    read && (guard || (permissive_guard && !others_admit))
}

/// Whether the policy applies to members of `group` (or to PUBLIC).
///
/// # Safety
/// `policy` must come from an open relcache entry.
unsafe fn binds(policy: *mut pg_sys::RowSecurityPolicy, group: pg_sys::Oid) -> bool {
    let mut elements: *mut pg_sys::Datum = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    pg_sys::deconstruct_array(
        (*policy).roles,
        pg_sys::OIDOID,
        4,
        true,
        b'i' as std::ffi::c_char,
        &mut elements,
        std::ptr::null_mut(),
        &mut count,
    );
    (0..count as usize).any(|i| {
        let role = pg_sys::Oid::from((*elements.add(i)).value() as u32);
        role == pg_sys::InvalidOid || (group != pg_sys::InvalidOid && role == group)
    })
}
