//! The event-trigger handlers: at ddl_command_end, name new tables and
//! withdraw the grant of exposed tables a statement weakened; at sql_drop,
//! forget dropped tables.

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use serde_json::json;

use super::registry::new_tables;
use super::ChangingTables;
use crate::audit::{self, NO_SUBJECT};
use crate::db;
use crate::error::{BiError, Result};
use crate::names;
use crate::roles;

/// From the ddl_command_end event trigger: name new tables, and withdraw the
/// grant of exposed tables the statement weakened.
pub fn after_ddl() -> Result<()> {
    // A read_write credential's DDL: its session guard let it touch its
    // org's custom schema only, which is never exposed, so there is nothing
    // to name or withdraw (and its session defines no management settings).
    if ChangingTables::active() || crate::guard::session::session_is_credential() {
        return Ok(());
    }
    note_new_tables()?;
    withdraw_weakened()
}

/// An exposed table that the reader group may read but whose RLS is off or
/// whose reader policies are gone (dropped, altered, or dropped with its org
/// column) loses its grant at once, in the same transaction: the session
/// guard refuses it anyway, and this makes the catalogs say so too. A WARNING
/// tells the DBA, an event records it, check() reports it, and a sync puts
/// it back. A shared table has no RLS to lose. (`shared` is read from the
/// row as json: in the upgrade window, before ALTER EXTENSION UPDATE, the
/// registry has no such column and this trigger still runs.)
fn withdraw_weakened() -> Result<()> {
    let reader = roles::reader_group()?;
    let weakened = Spi::connect(|client| {
        let mut weakened = Vec::new();
        for row in client.select(
            "SELECT c.oid::regclass::text, \
                    CASE WHEN NOT c.relrowsecurity THEN 'row level security was disabled' \
                         ELSE 'a bi_access policy was dropped or altered' END \
             FROM bi_access.exposed_table e JOIN pg_catalog.pg_class c ON c.oid = e.tbl \
             WHERE NOT e.hidden AND c.relkind IN ('r', 'p') \
               AND NOT coalesce((pg_catalog.to_jsonb(e) ->> 'shared')::boolean, false) \
               AND (EXISTS (SELECT FROM pg_catalog.aclexplode(c.relacl) a \
                            JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
                            WHERE r.rolname = $1 AND a.privilege_type = 'SELECT') \
                    OR EXISTS (SELECT FROM pg_catalog.pg_attribute att, \
                                           pg_catalog.aclexplode(att.attacl) a \
                               JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
                               WHERE att.attrelid = c.oid AND r.rolname = $1 \
                                 AND a.privilege_type = 'SELECT')) \
               AND (NOT c.relrowsecurity \
                    OR (SELECT count(*) FROM pg_catalog.pg_policy p \
                        WHERE p.polrelid = c.oid AND p.polcmd = 'r' \
                          AND ((p.polname = $2 AND p.polpermissive) \
                               OR (p.polname = $3 AND NOT p.polpermissive))) < 2) \
             ORDER BY 1",
            None,
            &[
                reader.as_str().into(),
                names::POLICY_READ.into(),
                names::POLICY_GUARD.into(),
            ],
        )? {
            weakened.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
            ));
        }
        Ok::<_, BiError>(weakened)
    })?;
    let _changing = ChangingTables::begin();
    for (table, reason) in weakened {
        Spi::run(&format!(
            "REVOKE SELECT ON {table} FROM {}",
            quote_identifier(&reader)
        ))?;
        audit::record(
            "withdraw",
            &NO_SUBJECT,
            json!({ "table": table, "reason": reason }),
        )?;
        pgrx::warning!(
            "bi_access: {reason} on {table}; BI roles may no longer read it until \
             SELECT * FROM bi_access.sync_tables() (or CALL bi_access.sync()) restores it"
        );
    }
    Ok(())
}

/// From the ddl_command_end event trigger: a table created or altered in an
/// exposed schema that carries the org column and is neither exposed nor
/// hidden is named to the DBA, who sees it in unsynced_tables() too.
fn note_new_tables() -> Result<()> {
    let noted = db::column::<String>(
        "SELECT DISTINCT c.objid::regclass::text \
         FROM pg_catalog.pg_event_trigger_ddl_commands() c \
         WHERE c.classid = 'pg_catalog.pg_class'::regclass AND c.objsubid = 0 \
           AND c.objid IN (SELECT unnest($1::oid[]))",
        &[new_tables()?
            .into_iter()
            .map(|(tbl, _)| tbl)
            .collect::<Vec<_>>()
            .into()],
    )?;
    for table in noted {
        pgrx::notice!(
            "bi_access: {table} carries the org column and is not exposed; \
             SELECT * FROM bi_access.sync_tables() (or CALL bi_access.sync()) exposes it"
        );
    }
    Ok(())
}

/// From the sql_drop event trigger: forget exposed tables that are gone.
pub fn forget_dropped() -> Result<()> {
    db::exec(
        "DELETE FROM bi_access.exposed_table e \
         WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = e.tbl)",
        &[],
    )
}
