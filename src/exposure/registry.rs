//! The registry of exposed tables: `bi_access.exposed_table` (exposed, or
//! hidden and kept out of syncs), and the new tables a sync would expose.

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_qualified_identifier};
use serde_json::json;

use super::catalog::{caller_may, refuse_kind, relation, vet, Vet};
use super::sync::sync_table;
use super::sync::{lock_exclusively, lock_to_read};
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

pub(super) fn restore(tbl: pg_sys::Oid, column: &str, rls_by_us: bool) -> Result<()> {
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

/// Exposed or hidden before, or a new table a sync would expose.
pub(super) fn known(tbl: pg_sys::Oid) -> Result<bool> {
    if db::first::<bool>(
        "SELECT EXISTS (SELECT FROM bi_access.exposed_table WHERE tbl = $1::regclass)",
        &[tbl.into()],
    )?
    .unwrap_or(false)
    {
        return Ok(true);
    }
    Ok(new_tables()?.iter().any(|(new, _)| *new == tbl))
}

pub fn table_name(tbl: pg_sys::Oid) -> Result<String> {
    Ok(db::first::<String>("SELECT $1::regclass::text", &[tbl.into()])?.unwrap_or_default())
}

pub(super) fn exposed_row(tbl: pg_sys::Oid) -> Result<Option<(String, bool)>> {
    Spi::connect(|client| {
        let table = client.select(
            "SELECT org_column::text, rls_enabled_by_bi_access FROM bi_access.exposed_table \
             WHERE tbl = $1::regclass AND NOT hidden",
            Some(1),
            &[tbl.into()],
        )?;
        if table.is_empty() {
            return Ok(None);
        }
        let row = table.first();
        Ok(Some((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<bool>(2)?.unwrap_or(false),
        )))
    })
}

pub(super) fn pairs(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Vec<(pg_sys::Oid, String)>> {
    Spi::connect(|client| {
        let mut pairs = Vec::new();
        for row in client.select(sql, None, args)? {
            if let (Some(tbl), Some(column)) = (row.get::<pg_sys::Oid>(1)?, row.get::<String>(2)?) {
                pairs.push((tbl, column));
            }
        }
        Ok(pairs)
    })
}

/// Exposed, not hidden, and still existing.
pub(super) fn exposed_tables() -> Result<Vec<(pg_sys::Oid, String)>> {
    pairs(
        "SELECT e.tbl::oid, e.org_column::text FROM bi_access.exposed_table e \
         JOIN pg_catalog.pg_class c ON c.oid = e.tbl \
         WHERE NOT e.hidden ORDER BY e.tbl::text",
        &[],
    )
}

pub(super) fn new_tables() -> Result<Vec<(pg_sys::Oid, String)>> {
    pairs(
        "SELECT c.oid, a.attname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_attribute a \
           ON a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE n.nspname = ANY ($1) AND NOT c.relispartition \
           AND (c.relkind IN ('r', 'p') \
                OR (c.relkind = 'v' AND EXISTS (SELECT FROM pg_catalog.pg_options_to_table(c.reloptions) o \
                                               WHERE o.option_name = 'security_invoker' \
                                                 AND o.option_value::bool))) \
           AND NOT EXISTS (SELECT FROM bi_access.exposed_table e WHERE e.tbl = c.oid) \
         ORDER BY n.nspname, c.relname",
        &[
            settings::exposed_schemas().into(),
            settings::org_column().as_str().into(),
        ],
    )
}
