//! The calls on one table: expose_table and hide_table (each recorded in
//! the event log), and putting every exposed table back as it was before
//! DROP EXTENSION. They write the registry, then bring the table to its
//! state with `sync`.

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_qualified_identifier};
use serde_json::json;

use super::catalog::{caller_may, refuse_kind, relation, vet, Vet};
use super::registry::{exposed_row, exposed_tables, known, table_name};
use super::sync::{lock_exclusively, lock_to_read, sync_table};
use super::ChangingTables;
use crate::audit::{self, NO_SUBJECT};
use crate::db;
use crate::error::{BiError, Result};
use crate::policies;
use crate::roles;
use crate::settings;

/// Checked in DESIGN.md's order: 42P01 no such table, 42809 wrong kind of
/// relation or schema, 42501 the caller may not, 42703 no such column,
/// 42804 an org column of a refused type.
pub fn expose_table(tbl: pg_sys::Oid, org_column: Option<&str>) -> Result<()> {
    let column = org_column
        .map(str::to_string)
        .unwrap_or_else(settings::org_column);
    lock_to_read(tbl)?;
    vet(tbl, &column, Vet::Caller)?;
    db::exec(
        "INSERT INTO bi_access.exposed_table (tbl, org_column) VALUES ($1::regclass, $2) \
         ON CONFLICT (tbl) DO UPDATE SET org_column = EXCLUDED.org_column, hidden = false",
        &[tbl.into(), column.as_str().into()],
    )?;
    let action = sync_table(tbl)?.as_str();
    audit::record(
        "expose_table",
        &NO_SUBJECT,
        json!({ "table": table_name(tbl)?, "org_column": column, "action": action }),
    )
}

/// Withdraws grants and policies, turns RLS off again if bi_access turned it
/// on, and remembers the exclusion so no later sync exposes the table again.
///
/// Checked like expose_table (42P01, 42809, 42501), then 55000 for a table
/// bi_access does not know: neither exposed nor hidden, nor a new table (in
/// an exposed schema, with the org column) that a sync would expose. A table
/// that is exposed now can always be hidden, whatever its kind or schema:
/// an exposure made before those were refused can be undone.
pub fn hide_table(tbl: pg_sys::Oid) -> Result<()> {
    lock_to_read(tbl)?;
    let exposed = exposed_row(tbl)?;
    let relation = relation(tbl, &settings::org_column())?;
    let name = quote_qualified_identifier(&relation.schema, &relation.name);
    if exposed.is_none() {
        refuse_kind(&relation, &name)?;
    }
    caller_may(tbl, &name)?;
    if exposed.is_none() && !known(tbl)? {
        return Err(BiError::UnknownTable(name));
    }
    let column = exposed
        .as_ref()
        .map(|(column, _)| column.clone())
        .unwrap_or_else(settings::org_column);
    if let Some((_, rls_by_us)) = exposed {
        restore(tbl, &column, rls_by_us)?;
    }
    db::exec(
        "INSERT INTO bi_access.exposed_table (tbl, org_column, hidden) VALUES ($1::regclass, $2, true) \
         ON CONFLICT (tbl) DO UPDATE SET hidden = true, rls_enabled_by_bi_access = false, synced_at = NULL",
        &[tbl.into(), column.as_str().into()],
    )?;
    audit::record(
        "hide_table",
        &NO_SUBJECT,
        json!({ "table": table_name(tbl)? }),
    )
}

/// Puts every exposed table back as it was (before DROP EXTENSION).
pub fn hide_all() -> Result<()> {
    for (tbl, column) in exposed_tables()? {
        let rls_by_us = exposed_row(tbl)?.is_some_and(|(_, rls_by_us)| rls_by_us);
        restore(tbl, &column, rls_by_us)?;
    }
    Ok(())
}

fn restore(tbl: pg_sys::Oid, column: &str, rls_by_us: bool) -> Result<()> {
    // Whatever the table has become, it is put back: no validation here.
    let _changing = ChangingTables::begin();
    let relation = relation(tbl, column)?;
    let column_type = relation.column_type.clone().unwrap_or_default();
    let target = relation.into_target(tbl, column, column_type);
    lock_exclusively(&target)?;
    // The grant goes first: never readable without its policies.
    Spi::run(&format!(
        "REVOKE SELECT ON {} FROM {}",
        target.name,
        quote_identifier(roles::reader_group()?)
    ))?;
    policies::drop(&target, &[policies::READ, policies::GUARD])?;
    if rls_by_us && !target.is_view {
        policies::drop(&target, &[policies::PASSTHROUGH])?;
        Spi::run(&format!(
            "ALTER TABLE {} DISABLE ROW LEVEL SECURITY",
            target.name
        ))?;
    }
    Ok(())
}
