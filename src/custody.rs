//! Which database manages a credential role.
//!
//! Role names are cluster-wide, and a database's records travel: pg_restore
//! into another database of the cluster, CREATE DATABASE … TEMPLATE, a
//! restore into another cluster, pg_upgrade, a failover. The records alone
//! cannot tell these apart, so each role carries a mark in a shared catalog
//! that `pg_dumpall --roles-only` also carries (its COMMENT): the cluster's
//! system identifier and the managing database's OID.
//!
//! - same system, same database: managed here (after a failover too: a
//!   standby shares its primary's system identifier and database OIDs);
//! - same system, another database that exists: this database is a copy. It
//!   refuses to manage the role (55000 naming the managing database), its
//!   records read `failed`, and its org lookup answers nothing for the role.
//!   A copy of a copy sees the same mark: a copy never re-marks a role;
//! - another system, and the role is a member of this database's reader
//!   group: the database and its roles came together, as pg_upgrade carries
//!   them (it keeps database and role OIDs, and copies bi_access's tables,
//!   but the new cluster has its own system identifier; a logical restore
//!   makes a new reader group at CREATE EXTENSION, which the restored roles
//!   are not members of). Managed here if the mark names this database, a
//!   copy if it names another that exists. The next sync re-marks the roles
//!   this database manages with the new system identifier;
//! - another system otherwise (a restore into another cluster), or a
//!   managing database that no longer exists: the next sync adopts the role,
//!   once, in its transaction (re-marked, and made a member of this
//!   database's reader group).
//! - no mark (a role 0.1.0 made): managed here until the update marks it.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};

use crate::db;
use crate::error::{BiError, Result};

const MARK: &str = "bi_access credential: system ";

/// Who manages a role, as its mark says.
#[derive(Debug, PartialEq)]
pub enum Custody {
    Here,
    Unmarked,
    /// Another live database of this cluster manages it: this is a copy.
    Copy {
        database: String,
    },
    /// Restored from another cluster, or its database is gone.
    Adoptable,
}

thread_local! {
    static SYSTEM: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// This cluster's system identifier (pg_control), read once per backend.
fn system() -> Result<String> {
    if let Some(known) = SYSTEM.with(|cell| cell.borrow().clone()) {
        return Ok(known);
    }
    let id = db::first::<String>(
        "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
        &[],
    )?
    .unwrap_or_default();
    SYSTEM.with(|cell| cell.replace(Some(id.clone())));
    Ok(id)
}

fn database() -> u32 {
    // SAFETY: a read of backend-local state set at connection.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// The mark of a role this database manages.
pub fn mark_here() -> Result<String> {
    Ok(format!("{MARK}{} database {}", system()?, database()))
}

/// Marks the role as managed by this database.
pub fn mark(role: &str) -> Result<()> {
    Spi::run(&format!(
        "COMMENT ON ROLE {} IS {}",
        quote_identifier(role),
        quote_literal(mark_here()?)
    ))?;
    Ok(())
}

/// Whether this database may change the role (a copy of the database
/// leaves the original's roles alone).
pub fn manages(role: &str) -> Result<bool> {
    Ok(matches!(of(role)?, Custody::Here | Custody::Unmarked))
}

/// Who manages the role, by its mark.
pub fn of(role: &str) -> Result<Custody> {
    judge(role, comment_of(role)?.as_deref())
}

/// The role's COMMENT, where its mark is.
pub fn comment_of(role: &str) -> Result<Option<String>> {
    db::first::<String>(
        "SELECT pg_catalog.shobj_description(r.oid, 'pg_authid') FROM pg_catalog.pg_roles r \
         WHERE r.rolname = $1",
        &[role.into()],
    )
}

/// Who manages the role, by its mark `comment`.
pub fn judge(role: &str, comment: Option<&str>) -> Result<Custody> {
    let Some((system_id, database_id)) = comment.and_then(parse) else {
        return Ok(Custody::Unmarked);
    };
    if system_id != system()? && !in_reader_group(role)? {
        return Ok(Custody::Adoptable);
    }
    if database_id == database() {
        return Ok(Custody::Here);
    }
    Ok(
        match db::first::<String>(
            "SELECT datname::text FROM pg_catalog.pg_database WHERE oid = $1",
            &[pg_sys::Oid::from(database_id).into()],
        )? {
            Some(database) => Custody::Copy { database },
            None => Custody::Adoptable,
        },
    )
}

/// Whether the role is a member of this database's reader group: the group
/// granted this database's org lookup (CREATE EXTENSION grants it, so a
/// logical restore grants it to the new group, not to the restored one).
/// Read from pg_proc, not bi_access.config: the credentials view calls this
/// as its reader, who may not read the config.
fn in_reader_group(role: &str) -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
                        JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) m.member \
                        WHERE r.rolname OPERATOR(pg_catalog.=) $1 \
                          AND m.roleid IN (SELECT a.grantee FROM pg_catalog.pg_proc p, \
                                                  pg_catalog.aclexplode(p.proacl) a \
                                           WHERE p.oid OPERATOR(pg_catalog.=) \
                                                 'bi_access.current_org()'::pg_catalog.regprocedure \
                                             AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'))",
        &[role.into()],
    )?
    .unwrap_or(false))
}

fn parse(comment: &str) -> Option<(String, u32)> {
    let rest = comment.strip_prefix(MARK)?;
    let (system_id, database_id) = rest.split_once(" database ")?;
    Some((system_id.to_string(), database_id.parse().ok()?))
}

/// Refuses to manage a role another database manages (55000 naming it), or
/// one restored from elsewhere that no sync has adopted yet.
/// (`comment`: the role's comment, its custody mark, as records::lock read it.)
pub fn require_marked_here(role: &str, comment: Option<&str>) -> Result<()> {
    match judge(role, comment)? {
        Custody::Here | Custody::Unmarked => Ok(()),
        Custody::Copy { database } => Err(BiError::ManagedElsewhere {
            role: role.into(),
            database,
        }),
        Custody::Adoptable => Err(BiError::NotAdopted(role.into())),
    }
}

/// Why a role does not work as recorded here, for the credentials view
/// (NULL when it is managed here).
pub fn problem(role: &str) -> Result<Option<String>> {
    Ok(match of(role)? {
        Custody::Here | Custody::Unmarked => None,
        Custody::Copy { database } => Some(format!(
            "this database is a copy: database {database} manages this role"
        )),
        Custody::Adoptable => Some(
            "restored from another cluster (or its database is gone): SELECT * FROM bi_access.sync_tables() adopts it"
                .into(),
        ),
    })
}

#[cfg(test)]
mod unit {
    use super::parse;

    #[test]
    fn marks_parse_back() {
        assert_eq!(
            parse("bi_access credential: system 7301 database 16384"),
            Some(("7301".to_string(), 16384))
        );
        assert_eq!(parse("something else"), None);
        assert_eq!(parse("bi_access credential: system 1 database x"), None);
    }
}

#[pg_schema]
mod bi_access_internal {
    use pgrx::prelude::*;

    /// Called once by the update from 0.1.0: 0.1.0 left its roles unmarked.
    #[pg_extern(volatile, parallel_unsafe)]
    fn mark_credentials() -> i64 {
        crate::error::or_raise(
            crate::entry::Call::management("mark_credentials").and_then(|_| super::mark_unmarked()),
        )
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.mark_credentials() IS 'Marks this database''s credential roles as managed here (custody: copies and restores)';",
        name = "mark_credentials_comment",
        requires = [mark_credentials]
    );
}

/// Marks every current credential role of this database that has no mark.
fn mark_unmarked() -> Result<i64> {
    let mut marked = 0;
    for role in crate::records::current_roles(true)? {
        mark(&role)?;
        marked += 1;
    }
    Ok(marked)
}
