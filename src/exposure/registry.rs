//! The registry of exposed tables: `bi_access.exposed_table` (exposed, or
//! hidden and kept out of syncs), and the new tables a sync would expose.

use pgrx::prelude::*;

use crate::db;
use crate::error::Result;
use crate::settings;

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

/// A table's row in the registry, while it is exposed or shared.
pub(super) struct Exposure {
    /// The org column (of a shared table: the one it must not carry).
    pub(super) column: String,
    pub(super) rls_by_us: bool,
    pub(super) shared: bool,
    /// The only columns credentials may read; None: all of them.
    pub(super) columns: Option<Vec<String>>,
}

/// A table's row, while it is exposed or shared.
pub(super) fn exposed_row(tbl: pg_sys::Oid) -> Result<Option<Exposure>> {
    Ok(exposures(Some(tbl))?.pop().map(|(_, exposure)| exposure))
}

/// Every exposed or shared table that still exists, with its row, in the
/// order of the tables' names: one query for all of them.
pub(super) fn exposed_rows() -> Result<Vec<(pg_sys::Oid, Exposure)>> {
    exposures(None)
}

fn exposures(only: Option<pg_sys::Oid>) -> Result<Vec<(pg_sys::Oid, Exposure)>> {
    Spi::connect(|client| {
        let mut rows = Vec::new();
        for row in client.select(EXPOSURES, None, &[only.into()])? {
            let Some(tbl) = row.get::<pg_sys::Oid>(1)? else {
                continue;
            };
            rows.push((
                tbl,
                Exposure {
                    column: row.get::<String>(2)?.unwrap_or_default(),
                    rls_by_us: row.get::<bool>(3)?.unwrap_or(false),
                    shared: row.get::<bool>(4)?.unwrap_or(false),
                    columns: row.get::<Vec<String>>(5)?,
                },
            ));
        }
        Ok(rows)
    })
}

// 0.3.0's columns are read from the row as json: the chain of updates from
// 0.1.0 syncs every table on its way through 0.2.0
// (sql/upgrade/0.1.0--0.2.0.post.sql), before they exist.
const EXPOSURES: &str = "\
    SELECT e.tbl::pg_catalog.oid, e.org_column::text, e.rls_enabled_by_bi_access, \
           coalesce((j ->> 'shared')::boolean, false), \
           CASE WHEN pg_catalog.jsonb_typeof(j -> 'columns') = 'array' \
                THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(j -> 'columns')) END \
      FROM bi_access.exposed_table e \
      JOIN pg_catalog.pg_class c ON c.oid = e.tbl, \
      LATERAL pg_catalog.to_jsonb(e) j \
     WHERE NOT e.hidden AND ($1::pg_catalog.oid IS NULL OR e.tbl = $1::pg_catalog.oid) \
     ORDER BY e.tbl::text";

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
