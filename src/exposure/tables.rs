//! The calls on one table: expose_table, share_table and hide_table (each
//! recorded in the event log), and putting every exposed table back as it
//! was before DROP EXTENSION. They write the registry, then bring the table
//! to its state with `sync`.

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_qualified_identifier};
use serde_json::json;

use super::catalog::{caller_may, refuse_kind, relation, vet, vet_shared, Vet};
use super::registry::{exposed_row, exposed_rows, known, table_name, Exposure};
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
/// 42804 an org column of a refused type. `columns` limits what credentials
/// may read (None: every column); calling it again with another list
/// changes the list.
pub fn expose_table(
    tbl: pg_sys::Oid,
    org_column: Option<&str>,
    columns: Option<Vec<String>>,
) -> Result<()> {
    let column = org_column
        .map(str::to_string)
        .unwrap_or_else(settings::org_column);
    lock_to_read(tbl)?;
    vet(tbl, &column, Vet::Caller, columns.as_deref())?;
    withdraw_other_kind(tbl, false)?;
    register(tbl, &column, false, &columns)?;
    let action = sync_table(tbl)?.as_str();
    audit::record(
        "expose_table",
        &NO_SUBJECT,
        json!({ "table": table_name(tbl)?, "org_column": column, "columns": columns,
                "action": action }),
    )
}

/// A shared reference table: every credential reads all its rows (or only
/// `columns`), and no RLS is added. Checked as expose_table, then 22023 if
/// the table carries the org column (bi_access.org_column). An exposed
/// table shared instead loses its policies (and its RLS, if bi_access
/// turned it on) first.
pub fn share_table(tbl: pg_sys::Oid, columns: Option<Vec<String>>) -> Result<()> {
    let column = settings::org_column();
    lock_to_read(tbl)?;
    vet_shared(tbl, &column, Vet::Caller, columns.as_deref())?;
    withdraw_other_kind(tbl, true)?;
    register(tbl, &column, true, &columns)?;
    let action = sync_table(tbl)?.as_str();
    audit::record(
        "share_table",
        &NO_SUBJECT,
        json!({ "table": table_name(tbl)?, "columns": columns, "action": action }),
    )
}

/// The table's row in the registry, exposed or shared as the call says.
fn register(
    tbl: pg_sys::Oid,
    column: &str,
    shared: bool,
    columns: &Option<Vec<String>>,
) -> Result<()> {
    db::exec(
        "INSERT INTO bi_access.exposed_table (tbl, org_column, shared, columns) \
         VALUES ($1::regclass, $2, $3, $4::name[]) \
         ON CONFLICT (tbl) DO UPDATE SET org_column = EXCLUDED.org_column, hidden = false, \
             shared = EXCLUDED.shared, columns = EXCLUDED.columns, \
             exposed_at = CASE WHEN exposed_table.hidden OR exposed_table.shared <> EXCLUDED.shared \
                               THEN now() ELSE exposed_table.exposed_at END",
        &[tbl.into(), column.into(), shared.into(), columns.clone().into()],
    )?;
    // Sessions' guards keep what they read of the registry until the
    // table's relcache entry is invalidated: a change of the list alone
    // changes no grant, so it invalidates the entry itself (at commit,
    // everywhere, standbys included).
    // SAFETY: queues an invalidation message for a relation that exists.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(tbl) };
    Ok(())
}

/// A table exposed where it was shared, or shared where it was exposed:
/// what the other kind put on it goes first. A shared table's grant goes
/// (sync_table grants again once the policies are in place); an exposed
/// table's policies go, and its RLS if bi_access turned it on.
fn withdraw_other_kind(tbl: pg_sys::Oid, shared: bool) -> Result<()> {
    if let Some(other) = exposed_row(tbl)?.filter(|exposed| exposed.shared != shared) {
        restore(tbl, &other)?;
    }
    Ok(())
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
        .map(|exposed| exposed.column.clone())
        .unwrap_or_else(settings::org_column);
    if let Some(exposed) = &exposed {
        restore(tbl, exposed)?;
    }
    db::exec(
        "INSERT INTO bi_access.exposed_table (tbl, org_column, hidden) VALUES ($1::regclass, $2, true) \
         ON CONFLICT (tbl) DO UPDATE SET hidden = true, rls_enabled_by_bi_access = false, synced_at = NULL, \
             exposed_at = CASE WHEN exposed_table.hidden THEN exposed_table.exposed_at ELSE now() END",
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
    for (tbl, exposed) in exposed_rows()? {
        restore(tbl, &exposed)?;
    }
    Ok(())
}

fn restore(tbl: pg_sys::Oid, exposed: &Exposure) -> Result<()> {
    // Whatever the table has become, it is put back: no validation here.
    let _changing = ChangingTables::begin();
    let column = exposed.column.as_str();
    let relation = relation(tbl, column)?;
    let column_type = relation.column_type.clone().unwrap_or_default();
    let target = relation.into_target(tbl, column, column_type);
    // A shared table has nothing but its grant: no lock beyond GRANT's own.
    if !exposed.shared {
        lock_exclusively(&target)?;
    }
    // The grant goes first (its column grants with it): never readable
    // without its policies.
    Spi::run(&format!(
        "REVOKE SELECT ON {} FROM {}",
        target.name,
        quote_identifier(roles::reader_group()?)
    ))?;
    if exposed.shared {
        return Ok(());
    }
    policies::drop(&target, &[policies::READ, policies::GUARD])?;
    if exposed.rls_by_us && !target.is_view {
        policies::drop(&target, &[policies::PASSTHROUGH])?;
        Spi::run(&format!(
            "ALTER TABLE {} DISABLE ROW LEVEL SECURITY",
            target.name
        ))?;
    }
    Ok(())
}
