//! Removing bi_access, and refusing to while credentials are current.
//!
//! DROP EXTENSION is one of several statements that remove the extension:
//! DROP SCHEMA bi_access … CASCADE, DROP OWNED BY its owner, ALTER EXTENSION
//! … DROP of a member, each in any spelling (comments, quoted or Unicode
//! names, dynamic SQL in a function). So the drop guard is an event trigger
//! at ddl_command_start written in C: PostgreSQL hands C functions the
//! statement's parse tree, where every spelling is the same name. It refuses
//! (2BP01) while current credentials exist; otherwise it puts every exposed
//! table back as it was and drops this database's reader group, so nothing of
//! bi_access stays behind. The cluster-wide roles stay: other databases of the
//! cluster may use them.
//!
//! The same trigger refuses, while credentials are current, every way to
//! move what it protects out of its reach: renaming bi_access's schemas or
//! giving them another owner, `ALTER EXTENSION bi_access SET SCHEMA`, and
//! renaming, moving or re-owning any object in those schemas (its tables, a
//! column or constraint of one, its functions, views, types). `REASSIGN OWNED`
//! fires no event trigger: the utility hook refuses it wherever the library
//! is loaded, and `check()` names bi_access's objects that another role than
//! the extension's owner came to own by a path no hook saw.
//!
//! Paths no event trigger sees (single-user mode, event_triggers = off on
//! PostgreSQL 17+) still fail closed: the policies that admit credentials go
//! with the extension's functions, the pass-through policy never admits them,
//! and the session guard reads nothing without bi_access's policies. `check()`
//! in any other database then names the orphaned roles.

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgList;

use crate::compat;
use crate::db;
use crate::error::{or_raise, BiError, Result};
use crate::exposure;
use crate::names;
use crate::roles;

/// Refuses while current credentials exist, else leaves every exposed table
/// as it was before bi_access and drops the reader group.
pub fn before_drop() -> Result<()> {
    // Between a package upgrade and ALTER EXTENSION UPDATE the old tables'
    // shape is not this library's: 55000 naming the update (src/entry.rs).
    crate::entry::require_current_sql()?;
    refuse_while_current()?;
    exposure::hide_all()?;
    // Custom schemas outlive the extension; its triggers on their tables go.
    crate::custom_schema::drop_quota_triggers()?;
    let reader = quote_identifier(roles::reader_group()?);
    Spi::run(&format!("DROP OWNED BY {reader}"))?;
    Spi::run(&format!("DROP ROLE {reader}"))?;
    Ok(())
}

/// 2BP01 while current credentials exist: their roles would outlive the
/// records that explain them.
fn refuse_while_current() -> Result<()> {
    let current = crate::records::count_current()?;
    if current > 0 {
        return Err(BiError::LiveCredentials(current));
    }
    Ok(())
}

/// 2BP01 while current credentials exist, for a statement that would
/// rename, move or re-own `what`.
fn refuse_moving(what: String) -> Result<()> {
    let current = crate::records::count_current()?;
    if current > 0 {
        return Err(BiError::Protected(what, current));
    }
    Ok(())
}

/// What of bi_access a statement would rename, move to another schema or
/// give another owner (None: nothing). An extension script (ALTER EXTENSION
/// UPDATE) may do all of these, and giving an object back to the extension's
/// owner (check()'s fix) moves nothing away.
///
/// # Safety
/// `statement` must be a valid parse tree (or NULL).
unsafe fn moved(statement: *mut pg_sys::Node) -> Result<Option<String>> {
    if statement.is_null() || pg_sys::creating_extension || to_the_owner(statement)? {
        return Ok(None);
    }
    Ok(moving(statement))
}

/// Whether the statement gives an object to the extension's owner.
///
/// # Safety
/// `statement` must be a valid parse tree.
unsafe fn to_the_owner(statement: *mut pg_sys::Node) -> Result<bool> {
    let new_owner = match (*statement).type_ {
        pg_sys::NodeTag::T_AlterOwnerStmt => (*(statement as *mut pg_sys::AlterOwnerStmt)).newowner,
        pg_sys::NodeTag::T_AlterTableStmt => {
            let mut owners = PgList::<pg_sys::AlterTableCmd>::from_pg(
                (*(statement as *mut pg_sys::AlterTableStmt)).cmds,
            )
            .iter_ptr()
            .filter(|cmd| (**cmd).subtype == pg_sys::AlterTableType::AT_ChangeOwner)
            .map(|cmd| (*cmd).newowner)
            .collect::<Vec<_>>();
            match owners.pop() {
                Some(owner) if owners.is_empty() => owner,
                _ => return Ok(false),
            }
        }
        _ => return Ok(false),
    };
    if new_owner.is_null() {
        return Ok(false);
    }
    let owner = pg_sys::get_rolespec_oid(new_owner, true);
    Ok(owner != pg_sys::InvalidOid && owner == extension_owner()?)
}

/// # Safety
/// `statement` must be a valid parse tree.
unsafe fn moving(statement: *mut pg_sys::Node) -> Option<String> {
    use pg_sys::NodeTag::*;
    use pg_sys::ObjectType::*;
    match (*statement).type_ {
        T_RenameStmt => {
            let rename = statement as *mut pg_sys::RenameStmt;
            if (*rename).renameType == OBJECT_SCHEMA {
                return own_schema(
                    (!(*rename).subname.is_null()).then(|| CStr::from_ptr((*rename).subname)),
                );
            }
            own_object((*rename).renameType, (*rename).relation, (*rename).object)
        }
        T_AlterOwnerStmt => {
            let alter = statement as *mut pg_sys::AlterOwnerStmt;
            if (*alter).objectType == OBJECT_SCHEMA {
                return own_schema(compat::string_node((*alter).object));
            }
            own_object((*alter).objectType, (*alter).relation, (*alter).object)
        }
        T_AlterObjectSchemaStmt => {
            let alter = statement as *mut pg_sys::AlterObjectSchemaStmt;
            if (*alter).objectType == OBJECT_EXTENSION {
                return compat::string_node((*alter).object)
                    .filter(|name| name.to_bytes() == names::EXTENSION.as_bytes())
                    .map(|_| format!("extension {}", names::EXTENSION));
            }
            own_object((*alter).objectType, (*alter).relation, (*alter).object)
        }
        T_AlterTableStmt => {
            let alter = statement as *mut pg_sys::AlterTableStmt;
            let re_owns = PgList::<pg_sys::AlterTableCmd>::from_pg((*alter).cmds)
                .iter_ptr()
                .any(|cmd| (*cmd).subtype == pg_sys::AlterTableType::AT_ChangeOwner);
            if re_owns {
                own_relation((*alter).relation)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// "schema bi_access" if `name` is one of bi_access's schemas.
fn own_schema(name: Option<&CStr>) -> Option<String> {
    let name = name?.to_str().ok()?;
    names::SCHEMAS
        .contains(&name)
        .then(|| format!("schema {name}"))
}

fn in_own_schema(namespace: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup; NULL for a missing schema.
    let name = unsafe { pg_sys::get_namespace_name(namespace) };
    // SAFETY: a NUL-terminated name from the syscache.
    !name.is_null() && own_schema(Some(unsafe { CStr::from_ptr(name) })).is_some()
}

/// The relation a statement names (its column, constraint, trigger…) if it
/// is one of bi_access's.
///
/// # Safety
/// `relation` must be a valid RangeVar (or NULL).
unsafe fn own_relation(relation: *mut pg_sys::RangeVar) -> Option<String> {
    if relation.is_null() {
        return None;
    }
    let relid = pg_sys::RangeVarGetRelidExtended(
        relation,
        pg_sys::NoLock as pg_sys::LOCKMODE,
        pg_sys::RVROption::RVR_MISSING_OK,
        None,
        std::ptr::null_mut(),
    );
    let namespace = pg_sys::get_rel_namespace(relid);
    if relid == pg_sys::InvalidOid || !in_own_schema(namespace) {
        return None;
    }
    let (schema, name) = (
        pg_sys::get_namespace_name(namespace),
        pg_sys::get_rel_name(relid),
    );
    (!schema.is_null() && !name.is_null()).then(|| {
        format!(
            "relation {}",
            pgrx::spi::quote_qualified_identifier(
                CStr::from_ptr(schema).to_string_lossy(),
                CStr::from_ptr(name).to_string_lossy()
            )
        )
    })
}

/// The object a statement names (by relation, or by name and arguments) if
/// it lives in one of bi_access's schemas. Of the kinds named by name, those
/// bi_access has: routines and types (the statements name a type by a list
/// of names, where the object address wants a TypeName; a kind whose parse
/// node another shape would need is not looked at).
///
/// # Safety
/// `relation` and `object` must be valid parse nodes (or NULL) of a
/// statement about an object of type `kind`.
unsafe fn own_object(
    kind: pg_sys::ObjectType::Type,
    relation: *mut pg_sys::RangeVar,
    mut object: *mut pg_sys::Node,
) -> Option<String> {
    use pg_sys::ObjectType::*;
    if !relation.is_null() {
        return own_relation(relation);
    }
    if object.is_null() {
        return None;
    }
    match kind {
        OBJECT_FUNCTION | OBJECT_PROCEDURE | OBJECT_ROUTINE | OBJECT_AGGREGATE
            if (*object).type_ == pg_sys::NodeTag::T_ObjectWithArgs => {}
        OBJECT_TYPE | OBJECT_DOMAIN if (*object).type_ == pg_sys::NodeTag::T_List => {
            object = pg_sys::makeTypeNameFromNameList(object as *mut pg_sys::List).cast();
        }
        _ => return None,
    }
    let mut opened: pg_sys::Relation = std::ptr::null_mut();
    // The statement itself resolves the name the same way (and raises the
    // same errors) right after this trigger.
    let address = pg_sys::get_object_address(
        kind,
        object,
        &mut opened,
        pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        true,
    );
    if !opened.is_null() {
        pg_sys::relation_close(opened, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
    if address.objectId == pg_sys::InvalidOid
        || !in_own_schema(pg_sys::get_object_namespace(&address))
    {
        return None;
    }
    let description = pg_sys::getObjectDescription(&address, true);
    (!description.is_null()).then(|| CStr::from_ptr(description).to_string_lossy().into_owned())
}

/// In every session where the library is loaded, before `REASSIGN OWNED BY
/// role`: refused (2BP01) while credentials are current if `role` owns
/// bi_access or one of its schemas in this database. Its objects would pass
/// to another role (a non-superuser, say, who could then read the sealed
/// secrets or drop what the drop guard protects), and the statement fires no
/// event trigger.
///
/// # Safety
/// `statement` must be a valid ReassignOwnedStmt.
pub unsafe fn before_reassign(statement: *mut pg_sys::ReassignOwnedStmt) {
    if pg_sys::get_extension_oid(names::EXTENSION_C.as_ptr(), true) == pg_sys::InvalidOid {
        return;
    }
    // Resolved as the session's user (CURRENT_USER, SESSION_USER).
    let roles: Vec<(pg_sys::Oid, String)> = PgList::<pg_sys::RoleSpec>::from_pg((*statement).roles)
        .iter_ptr()
        .map(|role| {
            let oid = pg_sys::get_rolespec_oid(role, true);
            let name = pg_sys::GetUserNameFromId(oid, true);
            let name = if name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            };
            (oid, name)
        })
        .collect();
    or_raise(db::as_superuser(|| refuse_reassign(&roles)));
}

fn refuse_reassign(roles: &[(pg_sys::Oid, String)]) -> Result<()> {
    let owners = db::column::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = $1 \
         UNION SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = ANY ($2)",
        &[names::EXTENSION.into(), names::SCHEMAS.to_vec().into()],
    )?;
    match roles.iter().find(|(role, _)| owners.contains(role)) {
        Some((_, name)) => refuse_moving(format!(
            "bi_access's objects (owned by {})",
            quote_identifier(name)
        )),
        None => Ok(()),
    }
}

/// What a statement would remove of bi_access.
#[derive(PartialEq)]
enum Removal {
    Nothing,
    /// The extension itself (DROP EXTENSION, DROP SCHEMA, DROP OWNED BY).
    Extension,
    /// A member object, detached by ALTER EXTENSION … DROP.
    Member,
}

/// # Safety
/// `statement` must be a valid parse tree (or NULL).
unsafe fn removal(statement: *mut pg_sys::Node) -> Result<Removal> {
    if statement.is_null() {
        return Ok(Removal::Nothing);
    }
    use pg_sys::NodeTag::*;
    let removes = |yes: bool, what: Removal| if yes { what } else { Removal::Nothing };
    Ok(match (*statement).type_ {
        T_DropStmt => {
            let drop = statement as *mut pg_sys::DropStmt;
            match (*drop).removeType {
                pg_sys::ObjectType::OBJECT_EXTENSION => removes(
                    names_any((*drop).objects, &[names::EXTENSION]),
                    Removal::Extension,
                ),
                pg_sys::ObjectType::OBJECT_SCHEMA => removes(
                    names_any((*drop).objects, &names::SCHEMAS),
                    Removal::Extension,
                ),
                _ => Removal::Nothing,
            }
        }
        T_DropOwnedStmt => {
            let owner = extension_owner()?;
            let roles = (*(statement as *mut pg_sys::DropOwnedStmt)).roles;
            removes(
                PgList::<pg_sys::RoleSpec>::from_pg(roles)
                    .iter_ptr()
                    .any(|role| pg_sys::get_rolespec_oid(role, true) == owner),
                Removal::Extension,
            )
        }
        T_AlterExtensionContentsStmt => {
            let alter = statement as *mut pg_sys::AlterExtensionContentsStmt;
            // An update script may move objects in and out.
            removes(
                !pg_sys::creating_extension
                    && (*alter).action < 0
                    && CStr::from_ptr((*alter).extname).to_bytes() == names::EXTENSION.as_bytes(),
                Removal::Member,
            )
        }
        _ => Removal::Nothing,
    })
}

/// Whether a list of name nodes (DROP SCHEMA a, b / DROP EXTENSION a, b)
/// names one of `wanted`.
///
/// # Safety
/// `objects` must be a List of String nodes (or NIL).
unsafe fn names_any(objects: *mut pg_sys::List, wanted: &[&str]) -> bool {
    PgList::<pg_sys::Node>::from_pg(objects)
        .iter_ptr()
        .any(|object| {
            compat::string_node(object)
                .is_some_and(|text| wanted.iter().any(|name| text.to_bytes() == name.as_bytes()))
        })
}

fn extension_owner() -> Result<pg_sys::Oid> {
    Ok(db::first::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = $1",
        &[names::EXTENSION.into()],
    )?
    .unwrap_or(pg_sys::InvalidOid))
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_bi_access_drop_guard() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `bi_access_internal.drop_guard()`, the event trigger function (LANGUAGE c).
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn bi_access_drop_guard(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let context = (*fcinfo).context;
    if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
        BiError::NotAnEventTrigger("bi_access_internal.drop_guard()").raise();
    }
    let statement = (*(context as *mut pg_sys::EventTriggerData)).parsetree;
    match or_raise(removal(statement)) {
        Removal::Extension => or_raise(before_drop()),
        Removal::Member => or_raise(refuse_while_current()),
        Removal::Nothing => {}
    }
    if let Some(what) = or_raise(moved(statement)) {
        or_raise(refuse_moving(what));
    }
    pg_sys::Datum::from(0)
}
