//! The session's custom schema (scope read_write, src/custom_schema.rs), as
//! the catalogs say: a schema owned by a custom owner group of which the
//! login is a member (it writes there), or whose reader group it is a member
//! of (it reads there). Never anything of bi_access's own tables, which may
//! be gone: the owner's name says the schema is a custom schema, and
//! memberships say whose.
//!
//! - reads: the relations of the session's schema are readable;
//! - writes: a read_write session may write its schema's relations, and
//!   nothing else; INSERT, UPDATE, COPY FROM and DDL that can grow the schema
//!   are refused (53400) while the schema is past `bi_access.custom_schema_quota`,
//!   and a statement that crosses it is stopped inside it (src/guard/quota.rs);
//!   a table without bi_access's quota trigger is not written (55000);
//! - catalog changes: a read_write session may create or alter relations
//!   in its schema (and what comes with them: row types, constraints,
//!   defaults, the rules of a view, TOAST), nothing else.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::names;

/// The refusal of a read_write session's DDL outside its custom schema, by
/// the utility hook (the statement) or the object-access hook (the object).
pub(super) const ONLY_ITS_SCHEMA: &str = "a bi_access read_write credential creates and alters only tables, views, indexes and sequences of its custom schema";
/// How a read_write session's refused statement or write begins.
pub(super) const WRITES_ONLY_THERE: &str =
    "a bi_access read_write credential writes only in its custom schema";
/// The HINT of a read_write session's refused statement or write.
pub(super) const WRITES_HINT: &str = "It may create, alter, drop, truncate and load tables, views, indexes and sequences of its organization's custom schema.";

#[derive(Clone, Copy, Debug)]
pub(super) struct SessionSchema {
    pub namespace: pg_sys::Oid,
    pub writable: bool,
}

thread_local! {
    /// The login it was found for, and the schema (None: none).
    static SESSION_SCHEMA: Cell<Option<(pg_sys::Oid, Option<SessionSchema>)>> = const { Cell::new(None) };
    static LOOKING: Cell<bool> = const { Cell::new(false) };
}

pub(super) fn install() {
    crate::invalidation::on_catalog_change(
        &[
            pg_sys::SysCacheIdentifier::NAMESPACEOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
            pg_sys::SysCacheIdentifier::AUTHOID,
        ],
        forget,
    );
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    SESSION_SCHEMA.with(|cached| cached.set(None));
}

/// The custom schema of this session's login, if any. Looked up once per
/// login until a schema, role or membership changes; a lookup that would
/// recurse (its own catalog reads) answers None.
pub(super) fn session_schema() -> Option<SessionSchema> {
    // SAFETY: a read of backend-local state.
    let login = unsafe { pg_sys::GetSessionUserId() };
    if let Some((known, schema)) = SESSION_SCHEMA.with(Cell::get) {
        if known == login {
            return schema;
        }
    }
    // SAFETY: a read of backend-local state.
    if LOOKING.with(Cell::get) || unsafe { !pg_sys::IsTransactionState() } {
        return None;
    }
    /// Clears LOOKING however the lookup ends (an error unwinds through it).
    struct Looking;
    impl Drop for Looking {
        fn drop(&mut self) {
            LOOKING.with(|looking| looking.set(false));
        }
    }
    LOOKING.with(|looking| looking.set(true));
    let looking = Looking;
    let found = lookup(login);
    drop(looking);
    let schema = found.ok().flatten();
    SESSION_SCHEMA.with(|cached| cached.set(Some((login, schema))));
    schema
}

fn lookup(login: pg_sys::Oid) -> Result<Option<SessionSchema>, pgrx::spi::SpiError> {
    Spi::connect(|client| {
        let table = client.select(
            "SELECT n.oid, pg_catalog.pg_has_role($1, n.nspowner, 'MEMBER') \
             FROM pg_catalog.pg_namespace n \
             JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner \
             LEFT JOIN pg_catalog.pg_roles r \
                    ON r.rolname = $3 || substr(o.rolname, length($2) + 1) \
             WHERE starts_with(o.rolname, $2) \
               AND (pg_catalog.pg_has_role($1, n.nspowner, 'MEMBER') \
                    OR (r.oid IS NOT NULL AND pg_catalog.pg_has_role($1, r.oid, 'MEMBER'))) \
             ORDER BY 2 DESC, 1 LIMIT 1",
            Some(1),
            &[
                login.into(),
                names::CUSTOM_OWNER_PREFIX.into(),
                names::CUSTOM_READER_PREFIX.into(),
            ],
        )?;
        if table.is_empty() {
            return Ok(None);
        }
        let row = table.first();
        Ok(row.get::<pg_sys::Oid>(1)?.map(|namespace| SessionSchema {
            namespace,
            writable: row.get::<bool>(2).ok().flatten().unwrap_or(false),
        }))
    })
}

/// Whether the session may write its custom schema: a read_write session.
pub(super) fn writer() -> Option<SessionSchema> {
    session_schema().filter(|schema| schema.writable)
}

/// What a session may do with a relation of its custom schema.
pub(super) enum Verdict {
    Allowed,
    Refused,
    /// A write that can grow the schema: allowed within its quota, through
    /// the quota trigger (quota.rs).
    Grows(pg_sys::Oid),
}

/// The verdict on a relation of the session's custom schema (None: not one
/// of them, the other rules decide).
pub(super) fn verdict(relid: pg_sys::Oid, required: pg_sys::AclMode) -> Option<Verdict> {
    // SAFETY: a syscache lookup of a relation the executor has locked.
    let namespace = unsafe { pg_sys::get_rel_namespace(relid) };
    if namespace == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)
        || namespace == pg_sys::InvalidOid
    {
        return None;
    }
    let schema = session_schema()?;
    if namespace != schema.namespace {
        return None;
    }
    if required & !(pg_sys::ACL_SELECT as pg_sys::AclMode) == 0 {
        return Some(Verdict::Allowed);
    }
    if !schema.writable {
        return Some(Verdict::Refused);
    }
    let grows = (pg_sys::ACL_INSERT | pg_sys::ACL_UPDATE) as pg_sys::AclMode;
    Some(if required & grows != 0 {
        Verdict::Grows(schema.namespace)
    } else {
        Verdict::Allowed
    })
}

thread_local! {
    /// Inside a statement the utility hook admitted for a read_write
    /// session (nesting depth: CREATE TABLE runs CREATE SEQUENCE for a serial).
    static ADMITTED: Cell<u32> = const { Cell::new(0) };
}

/// Marks a statement admitted for a read_write session until dropped (an
/// error unwinds through it too).
pub(super) struct Admitted;

impl Admitted {
    pub(super) fn enter() -> Self {
        ADMITTED.with(|depth| depth.set(depth.get() + 1));
        Admitted
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        ADMITTED.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Whether a read_write session may create or alter this catalog object now:
/// inside a statement the utility hook admitted (it checked where the
/// statement creates), a relation, a column of one, or what comes with a
/// relation (row types, constraints, defaults, the rules of a view, index
/// entries, the internal triggers of a foreign key between its own tables).
/// Functions, schemas, policies, large objects and anything made by a
/// statement the hook did not admit are refused.
pub(super) fn may_change(class_id: pg_sys::Oid) -> bool {
    // The catalogs' OIDs are fixed (catalog/pg_*.h) and the same in 14 to
    // 18: pg_class, pg_type, pg_constraint, pg_attrdef, pg_rewrite,
    // pg_trigger, pg_index.
    const COMES_WITH_A_RELATION: [u32; 7] = [1259, 1247, 2606, 2604, 2618, 2620, 2610];
    ADMITTED.with(Cell::get) > 0
        && writer().is_some()
        && COMES_WITH_A_RELATION.contains(&u32::from(class_id))
}

/// The existing relation a statement names (InvalidOid for none found).
///
/// # Safety
/// `relation` must be a valid RangeVar (or NULL).
pub(super) unsafe fn relation_of(relation: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if relation.is_null() {
        return pg_sys::InvalidOid;
    }
    pg_sys::RangeVarGetRelidExtended(
        relation,
        pg_sys::NoLock as pg_sys::LOCKMODE,
        pg_sys::RVROption::RVR_MISSING_OK,
        None,
        std::ptr::null_mut(),
    )
}

/// The namespace of an existing relation a statement names (InvalidOid for
/// none found).
///
/// # Safety
/// `relation` must be a valid RangeVar (or NULL).
pub(super) unsafe fn namespace_of(relation: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    let relid = relation_of(relation);
    if relid == pg_sys::InvalidOid {
        return pg_sys::InvalidOid;
    }
    pg_sys::get_rel_namespace(relid)
}

/// The namespace a statement creates in or alters (InvalidOid: a temporary
/// relation, or none found), for the statements that name one; None for the
/// others.
///
/// # Safety
/// `statement` must be a valid utility statement node.
pub(super) unsafe fn works_in(statement: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    use pg_sys::NodeTag::*;
    unsafe fn creating(relation: *mut pg_sys::RangeVar) -> pg_sys::Oid {
        if relation.is_null()
            || (*relation).relpersistence == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char
        {
            return pg_sys::InvalidOid;
        }
        pg_sys::RangeVarGetCreationNamespace(relation)
    }
    Some(match (*statement).type_ {
        T_CreateStmt => creating((*(statement as *mut pg_sys::CreateStmt)).relation),
        T_CreateTableAsStmt => {
            let into = (*(statement as *mut pg_sys::CreateTableAsStmt)).into;
            if into.is_null() {
                pg_sys::InvalidOid
            } else {
                creating((*into).rel)
            }
        }
        T_ViewStmt => creating((*(statement as *mut pg_sys::ViewStmt)).view),
        T_CreateSeqStmt => creating((*(statement as *mut pg_sys::CreateSeqStmt)).sequence),
        T_IndexStmt => namespace_of((*(statement as *mut pg_sys::IndexStmt)).relation),
        T_AlterTableStmt => namespace_of((*(statement as *mut pg_sys::AlterTableStmt)).relation),
        T_AlterSeqStmt => namespace_of((*(statement as *mut pg_sys::AlterSeqStmt)).sequence),
        _ => return None,
    })
}
