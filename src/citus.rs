//! Citus: what differs where the `citus` extension shares this database out
//! to worker nodes (README, "Citus"). Everything here answers "not Citus"
//! where Citus is not installed, so the rest of bi_access runs as before.
//!
//! - Citus copies a distributed or reference table's policies to its shards
//!   on every worker, and refuses a policy with a sub-select there: the
//!   pass-through policy of such a table is written without one
//!   (`policies::create_passthrough`).
//! - `CREATE EXTENSION bi_access` runs the extension script on each worker,
//!   which gives each its own reader group; the grants and policies Citus
//!   copies to the shards name the coordinator's. `prepare_workers` creates
//!   that group on every worker, in the credential group as here, with
//!   EXECUTE on the org lookups its policies call.
//! - Citus runs a credential's shard queries on a worker as the credential
//!   itself (its own connections, which the worker tells from a tenant's by
//!   how they authenticated), so the shards' policies call the worker's org
//!   lookup. bi_access's records live on the coordinator only: a worker asks
//!   the coordinator (`org_from_coordinator`), which answers with its own
//!   lookup (`org_of`, custody and status included); org.rs caches the
//!   answer per backend until a role changes, as it does its own.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};

use crate::db;
use crate::error::{BiError, Result};
use crate::names::{CREDENTIAL_GROUP, ORG_LOOKUPS, SCHEMAS};

fn installed() -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus')",
        &[],
    )?
    .unwrap_or(false))
}

/// A table Citus manages (distributed, reference, or a coordinator-local
/// table added to its metadata): its policies go to its shards.
pub fn is_citus_table(tbl: pg_sys::Oid) -> Result<bool> {
    if !installed()? {
        return Ok(false);
    }
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)",
        &[tbl.into()],
    )?
    .unwrap_or(false))
}

/// The coordinator of a Citus cluster (group 0), where role and table DDL
/// is propagated to the workers.
pub fn is_coordinator() -> Result<bool> {
    if !installed()? {
        return Ok(false);
    }
    Ok(db::first::<bool>(
        "SELECT groupid OPERATOR(pg_catalog.=) 0 FROM pg_catalog.pg_dist_local_group",
        &[],
    )?
    .unwrap_or(false))
}

/// Before a credential gets a new password here: none on any worker.
/// bi_access gives a role its verifier without SQL text (roles.rs), which
/// Citus does not propagate; but Citus copies a role's verifier to a worker
/// it adds later, where the old password would keep working after a
/// rotation. `ALTER ROLE … PASSWORD NULL`, which Citus does propagate (in
/// the caller's transaction), removes it everywhere first; the coordinator
/// then gets its new verifier alone. Workers accept no password of a
/// credential but the one a later-added worker copied, until the next.
pub fn clear_password_on_workers(role: &str) -> Result<()> {
    if is_coordinator()? {
        Spi::run(&format!(
            "ALTER ROLE {} PASSWORD NULL",
            quote_identifier(role)
        ))?;
    }
    Ok(())
}

/// At each sync on a coordinator: the reader group on every worker
/// (`prepare_workers`), so a worker added since the last sync gets it too.
pub fn prepare_workers_for_sync(reader: &str) -> Result<()> {
    if is_coordinator()? && has_workers()? {
        prepare_workers(reader)?;
    }
    Ok(())
}

fn has_workers() -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_node \
                        WHERE groupid OPERATOR(pg_catalog.<>) 0 AND isactive)",
        &[],
    )?
    .unwrap_or(false))
}

thread_local! {
    /// `is_citus_table` per relation, until its relcache entry is
    /// invalidated (Citus invalidates it when it distributes or undistributes
    /// a table): the session guard's planner hook asks for every query.
    static CITUS_TABLES: RefCell<HashMap<pg_sys::Oid, bool>> = RefCell::new(HashMap::new());
}

/// Called from _PG_init.
pub fn init() {
    crate::invalidation::on_relation_change(forget_table);
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_table(_: pg_sys::Datum, relid: pg_sys::Oid) {
    CITUS_TABLES.with(|tables| {
        if let Ok(mut tables) = tables.try_borrow_mut() {
            if relid == pg_sys::InvalidOid {
                tables.clear();
            } else {
                tables.remove(&relid);
            }
        }
    });
}

/// `is_citus_table`, remembered per relation; false where it cannot tell.
pub fn is_citus_table_cached(tbl: pg_sys::Oid) -> bool {
    if let Some(known) = CITUS_TABLES.with(|tables| tables.borrow().get(&tbl).copied()) {
        return known;
    }
    let answer = is_citus_table(tbl).unwrap_or(false);
    CITUS_TABLES.with(|tables| tables.borrow_mut().insert(tbl, answer));
    answer
}

/// A worker of a Citus cluster: a node whose group is not the coordinator's
/// (group 0). A node not yet added to a cluster is none.
/// A worker of a Citus cluster (its records are on the coordinator).
pub fn is_worker() -> Result<bool> {
    if !installed()? {
        return Ok(false);
    }
    Ok(db::first::<bool>(
        "SELECT groupid OPERATOR(pg_catalog.<>) 0 FROM pg_catalog.pg_dist_local_group",
        &[],
    )?
    .unwrap_or(false))
}

/// Puts the coordinator's reader group on every worker as it is here: a
/// NOLOGIN member of the credential group, allowed to call the org lookups.
/// Citus creates it there by itself only once a credential is granted it
/// (generate); a table exposed before that would need it already. Each
/// worker runs this in a transaction of its own (Citus's
/// run_command_on_workers), so it stays even if the caller's rolls back,
/// which changes nothing anyone can read: the group has no member and no
/// grant but these until Citus propagates the caller's. Idempotent.
pub fn prepare_workers(reader: &str) -> Result<()> {
    let lookups = ORG_LOOKUPS
        .iter()
        .map(|lookup| format!("{}.{}()", SCHEMAS[0], lookup))
        .collect::<Vec<_>>()
        .join(", ");
    // DDL propagation off: a worker would otherwise send these on to the
    // other nodes, the coordinator included.
    let command = format!(
        "DO $bi_access$ BEGIN \
           PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true); \
           IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {name}) THEN \
             CREATE ROLE {ident} NOLOGIN NOINHERIT; \
           END IF; \
           IF NOT pg_catalog.pg_has_role({name}, {group}, 'MEMBER') THEN \
             GRANT {group_ident} TO {ident}; \
           END IF; \
           GRANT EXECUTE ON FUNCTION {lookups} TO {ident}; \
         END $bi_access$",
        ident = quote_identifier(reader),
        name = quote_literal(reader),
        group = quote_literal(CREDENTIAL_GROUP),
        group_ident = quote_identifier(CREDENTIAL_GROUP),
    );
    let failures = db::text_pairs(
        "SELECT nodename OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) nodeport, result \
         FROM pg_catalog.run_command_on_workers($1) WHERE NOT success",
        &[command.as_str().into()],
    )?;
    match failures.first() {
        None => Ok(()),
        Some((node, error)) => Err(BiError::Citus(format!(
            "could not prepare worker {node} for bi_access's reader group: {error}"
        ))),
    }
}

/// On a worker: the org key of `role` as the coordinator's bi_access sees
/// it (None where this is no worker, or the role has no live credential
/// there). Runs as the bootstrap superuser (org.rs), so Citus connects to
/// the coordinator as the superuser, never as the credential.
pub fn org_from_coordinator(role: &str) -> Result<Option<String>> {
    if !is_worker()? {
        return Ok(None);
    }
    let command = format!("SELECT {}.org_of({})", SCHEMAS[1], quote_literal(role));
    let answer = db::text_pairs(
        "SELECT success::pg_catalog.text, coalesce(result, '') \
         FROM pg_catalog.run_command_on_coordinator($1)",
        &[command.as_str().into()],
    )?;
    match answer.first() {
        // Citus reports a NULL result as empty text; no org key is empty.
        Some((success, org)) if success == "true" => {
            Ok(Some(org.clone()).filter(|o| !o.is_empty()))
        }
        Some((_, error)) => Err(BiError::Citus(format!(
            "the coordinator did not answer for the org of this role: {error}"
        ))),
        None => Err(BiError::Citus(
            "this worker knows no coordinator to ask for the org of this role".into(),
        )),
    }
}
