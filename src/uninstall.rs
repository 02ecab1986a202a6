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
    pg_sys::Datum::from(0)
}
