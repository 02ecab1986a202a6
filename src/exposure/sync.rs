//! Syncing: bringing each exposed table to its exposed state, in the
//! caller's transaction (sync_tables) or table by table (the steps of CALL
//! bi_access.sync()); and what a sync would change (unsynced_tables).

use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use serde_json::json;

use super::catalog::{live_columns, target, vet, vet_shared, Vet};
use super::registry::{exposed_row, exposed_rows, new_tables, Exposure};
use super::ChangingTables;
use crate::audit::{self, NO_SUBJECT};
use crate::db;
use crate::error::{BiError, Result};
use crate::policies::{self, Target};
use crate::roles;
use crate::settings;

/// What unsynced_tables reports for one table.
pub struct Pending {
    pub tbl: pg_sys::Oid,
    pub org_column: String,
    pub reason: Unsynced,
}

/// Why a table is not in its exposed state.
pub enum Unsynced {
    NoGrant,
    /// The reader group's grant is not the column list (or the whole table).
    ColumnGrants,
    RlsOff,
    StalePolicies,
    /// An exposed table a sync cannot bring back as it stands (the refusal
    /// that stops it: a refused kind, a dropped org column…).
    CannotSync(BiError),
    /// A new table a sync exposes (with bi_access.auto_expose).
    NewTable,
    /// A new table a sync would not expose, and why.
    NewTableRefused(BiError),
}

impl Unsynced {
    /// A new table is news, not a weakening (check() reports it as info).
    pub fn is_new_table(&self) -> bool {
        matches!(self, Unsynced::NewTable | Unsynced::NewTableRefused(_))
    }
}

impl std::fmt::Display for Unsynced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsynced::NoGrant => f.write_str("the reader group has no SELECT grant"),
            Unsynced::ColumnGrants => {
                f.write_str("the reader group's SELECT grant is not the table's column list")
            }
            Unsynced::RlsOff => f.write_str("row level security is off"),
            Unsynced::StalePolicies => f.write_str("bi_access policies are missing or stale"),
            Unsynced::CannotSync(error) => write!(f, "{error}"),
            Unsynced::NewTable => f.write_str("new table with the org column, not exposed"),
            Unsynced::NewTableRefused(error) => {
                write!(f, "new table with the org column, not exposable: {error}")
            }
        }
    }
}

/// What a sync did to one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncAction {
    /// A new table, exposed by this sync.
    Exposed,
    /// Its RLS, policies or grant were put back.
    Synced,
    Unchanged,
    /// Not exposed (any more) when its turn came.
    NotExposed,
}

impl SyncAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncAction::Exposed => "exposed",
            SyncAction::Synced => "synced",
            SyncAction::Unchanged => "unchanged",
            SyncAction::NotExposed => "not exposed",
        }
    }

    pub fn changed(self) -> bool {
        self != SyncAction::Unchanged
    }
}

/// What a sync would change: exposed tables missing their grant, RLS or
/// policies, and new tables (in an exposed schema, with the org column,
/// neither exposed nor hidden). A refusal is a reason; any other error is
/// raised.
pub fn unsynced_tables() -> Result<Vec<Pending>> {
    let reader = roles::reader_group()?;
    let mut pending = Vec::new();
    for (tbl, exposure) in exposed_rows()? {
        let reasons = match missing_of(tbl, &exposure, &reader) {
            Ok(reasons) => reasons,
            Err(error) if error.is_refusal() => vec![Unsynced::CannotSync(error)],
            Err(error) => return Err(error),
        };
        pending.extend(reasons.into_iter().map(|reason| Pending {
            tbl,
            org_column: exposure.column.clone(),
            reason,
        }));
    }
    for (tbl, column) in new_tables()? {
        // As a sync by this caller would: with expose_table's caller check.
        let reason = match vet(tbl, &column, Vet::Caller, None) {
            Ok(_) => Unsynced::NewTable,
            Err(error) if error.is_refusal() => Unsynced::NewTableRefused(error),
            Err(error) => return Err(error),
        };
        pending.push(Pending {
            tbl,
            org_column: column,
            reason,
        });
    }
    Ok(pending)
}

/// Brings every exposed table (and, with bi_access.auto_expose, every new
/// table) to its exposed state in the caller's transaction. Idempotent.
pub fn sync_tables() -> Result<Vec<(pg_sys::Oid, SyncAction)>> {
    crate::records::one_sync_at_a_time()?;
    crate::roles::adopt_all()?;
    crate::citus::prepare_workers_for_sync(&roles::reader_group()?)?;
    // After pg_upgrade from 15: memberships in 16+'s form.
    crate::roles::sync_memberships()?;
    let mut done = Vec::new();
    for tbl in expose_new_tables()? {
        sync_table(tbl)?;
        done.push((tbl, SyncAction::Exposed));
    }
    // Each table's row is read again as it is synced, not taken from this
    // list: an expose_table that commits meanwhile (a new column list, say)
    // is what the sync then puts in place.
    for (tbl, _) in exposed_rows()? {
        if done.iter().any(|(exposed, _)| *exposed == tbl) {
            continue;
        }
        done.push((tbl, sync_table(tbl)?));
    }
    credentials_in_place()?;
    let changed = done.iter().filter(|(_, action)| action.changed()).count();
    audit::record(
        "sync_tables",
        &NO_SUBJECT,
        json!({ "tables": done.len(), "changed": changed }),
    )?;
    Ok(done)
}

/// With bi_access.auto_expose, records every new table that can be exposed
/// as exposed (not yet synced); returns them. Checked as expose_table checks
/// its caller: a table the caller could not expose itself stays new, and a
/// NOTICE names it with the right the caller lacks (the sync runs with the
/// extension owner's rights, which must not expose what the caller cannot
/// read: the confused deputy).
pub(super) fn expose_new_tables() -> Result<Vec<pg_sys::Oid>> {
    if !settings::auto_expose() {
        return Ok(Vec::new());
    }
    let mut exposed = Vec::new();
    for (tbl, column) in new_tables()? {
        match vet(tbl, &column, Vet::Caller, None) {
            Ok(_) => {}
            Err(error @ BiError::NotPermitted { .. }) => {
                pgrx::notice!("bi_access: new table not exposed: {error}");
                continue;
            }
            Err(_) => continue, // unsynced_tables() says why
        }
        // A sync that began before another one committed the same table
        // (under REPEATABLE READ the lock above does not refresh what it
        // sees) finds it there: exposed once, by the first.
        let inserted = db::first::<bool>(
            "INSERT INTO bi_access.exposed_table (tbl, org_column) VALUES ($1::regclass, $2) \
             ON CONFLICT (tbl) DO NOTHING RETURNING true",
            &[tbl.into(), column.as_str().into()],
        )?;
        if inserted.is_some() {
            exposed.push(tbl);
        }
    }
    Ok(exposed)
}

/// Syncs one exposed table: Synced if anything changed, else Unchanged.
/// The exclusive lock is taken only when RLS or a policy must change, and
/// never for longer than lock_timeout.
///
/// The grant comes last: a table is readable only once its RLS and policies
/// are in place, never the other way round.
pub fn sync_table(tbl: pg_sys::Oid) -> Result<SyncAction> {
    let Some(exposure) = exposed_row(tbl)? else {
        return Ok(SyncAction::NotExposed);
    };
    lock_to_read(tbl)?;
    let _changing = ChangingTables::begin();
    let reader = roles::reader_group()?;
    if exposure.shared {
        return sync_shared(tbl, &exposure, &reader);
    }
    let wanted = Wanted::of(tbl, exposure.columns.as_deref())?;
    let target = target(tbl, &exposure.column)?;
    let rls_by_us = exposure.rls_by_us;
    // A Citus table's grant and policies go to its shards on every worker,
    // where they name the coordinator's reader group: it must be there first.
    if crate::citus::is_citus_table(tbl)?
        && !in_exposed_state(&target, &reader, rls_by_us, &wanted)?
    {
        crate::citus::prepare_workers(&reader)?;
    }
    let mut changed = false;
    if !target.is_view {
        // A security_invoker view runs with the BI role's rights, so the
        // policies of the tables under it apply; it needs only the grant.
        let rls_on = target.rls;
        let policies_ok = policies::reader_policies_ok(&target, &reader)?;
        let passthrough_ok = !rls_by_us || policies::passthrough_ok(&target)?;
        if !rls_on || !policies_ok || !passthrough_ok {
            lock_exclusively(&target)?;
            if !rls_on {
                enable_rls(&target)?;
            } else if !passthrough_ok {
                policies::create_passthrough(&target)?;
            }
            if !policies_ok {
                policies::create_reader_policies(&target, &reader)?;
            }
            changed = true;
        }
    }
    changed |= grant_read(target.oid, &target.name, &reader, &wanted)?;
    finish_sync(tbl, changed)
}

/// A shared table gets its grant and nothing else. One that has gained the
/// org column since it was shared loses its grant instead (the session
/// guard refuses it anyway; check() names it): shared, every credential
/// would read every org's rows.
fn sync_shared(tbl: pg_sys::Oid, exposure: &Exposure, reader: &str) -> Result<SyncAction> {
    let name = match vet_shared(tbl, &exposure.column, Vet::Sync, None) {
        Err(BiError::SharedHasOrgColumn { table, .. }) => {
            let granted = reader_selects(tbl, reader)?;
            if granted {
                revoke_read(&table, reader)?;
            }
            return finish_sync(tbl, granted);
        }
        other => other?,
    };
    let wanted = Wanted::of(tbl, exposure.columns.as_deref())?;
    if crate::citus::is_citus_table(tbl)? && grant_reason(tbl, reader, &wanted)?.is_some() {
        crate::citus::prepare_workers(reader)?;
    }
    let changed = grant_read(tbl, &name, reader, &wanted)?;
    finish_sync(tbl, changed)
}

fn in_exposed_state(
    target: &Target,
    reader: &str,
    rls_by_us: bool,
    wanted: &Wanted,
) -> Result<bool> {
    Ok(missing(target, reader, wanted)?.is_empty()
        && (target.is_view || !rls_by_us || policies::passthrough_ok(target)?))
}

/// What keeps an exposed or shared table from its state, for unsynced_tables.
fn missing_of(tbl: pg_sys::Oid, exposure: &Exposure, reader: &str) -> Result<Vec<Unsynced>> {
    if exposure.shared {
        vet_shared(tbl, &exposure.column, Vet::Sync, None)?;
    }
    let wanted = Wanted::of(tbl, exposure.columns.as_deref())?;
    if exposure.shared {
        return Ok(grant_reason(tbl, reader, &wanted)?.into_iter().collect());
    }
    missing(&target(tbl, &exposure.column)?, reader, &wanted)
}

pub(super) fn finish_sync(tbl: pg_sys::Oid, changed: bool) -> Result<SyncAction> {
    if !changed {
        return Ok(SyncAction::Unchanged);
    }
    db::exec(
        "UPDATE bi_access.exposed_table SET synced_at = now() WHERE tbl = $1::regclass",
        &[tbl.into()],
    )?;
    Ok(SyncAction::Synced)
}

pub(super) fn enable_rls(target: &Target) -> Result<()> {
    Spi::run(&format!(
        "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
        target.name
    ))?;
    policies::create_passthrough(target)?;
    db::exec(
        "UPDATE bi_access.exposed_table SET rls_enabled_by_bi_access = true WHERE tbl = $1::regclass",
        &[target.oid.into()],
    )
}

/// USAGE on the table's schema, and SELECT for the reader group: on the
/// whole table, or (with a column list) on exactly the listed columns the
/// table still has, and on nothing else of it.
fn grant_read(tbl: pg_sys::Oid, name: &str, reader: &str, wanted: &Wanted) -> Result<bool> {
    let (has_usage, schema) = Spi::get_two_with_args::<bool, String>(
        "SELECT pg_catalog.has_schema_privilege($2, c.relnamespace, 'USAGE'), n.nspname::text \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = $1",
        &[tbl.into(), reader.into()],
    )?;
    let quoted_reader = quote_identifier(reader);
    let granting_usage = !has_usage.unwrap_or(false);
    if granting_usage {
        Spi::run(&format!(
            "GRANT USAGE ON SCHEMA {} TO {quoted_reader}",
            quote_identifier(schema.unwrap_or_default())
        ))?;
    }
    if grant_reason(tbl, reader, wanted)?.is_none() {
        return Ok(granting_usage);
    }
    // Whatever was granted goes first (REVOKE on a table takes its column
    // grants with it), in the same transaction as the new grant.
    revoke_read(name, reader)?;
    let grant = match wanted {
        Wanted::Whole => Some(format!("GRANT SELECT ON {name} TO {quoted_reader}")),
        Wanted::Columns(live) => (!live.is_empty()).then(|| {
            let quoted: Vec<String> = live.iter().map(quote_identifier).collect();
            format!(
                "GRANT SELECT ({}) ON {name} TO {quoted_reader}",
                quoted.join(", ")
            )
        }),
    };
    if let Some(grant) = grant {
        Spi::run(&grant)?;
    }
    Ok(true)
}

fn revoke_read(name: &str, reader: &str) -> Result<()> {
    Spi::run(&format!(
        "REVOKE SELECT ON {name} FROM {}",
        quote_identifier(reader)
    ))?;
    Ok(())
}

/// The reader group's SELECT on the table itself (`whole`), and on which of
/// its columns, in the table's column order.
fn reader_grants(tbl: pg_sys::Oid, reader: &str) -> Result<(bool, Vec<String>)> {
    let whole = db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a \
                        JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
                        WHERE c.oid = $1 AND r.rolname = $2 AND a.privilege_type = 'SELECT')",
        &[tbl.into(), reader.into()],
    )?
    .unwrap_or(false);
    let columns = db::column::<String>(
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a, pg_catalog.aclexplode(a.attacl) x \
         JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
           AND r.rolname = $2 AND x.privilege_type = 'SELECT' ORDER BY a.attnum",
        &[tbl.into(), reader.into()],
    )?;
    Ok((whole, columns))
}

/// Whether the reader group may read anything of the table.
fn reader_selects(tbl: pg_sys::Oid, reader: &str) -> Result<bool> {
    let (whole, columns) = reader_grants(tbl, reader)?;
    Ok(whole || !columns.is_empty())
}

/// The reader group's SELECT the registry asks for, read once per table
/// and handed to both the check and the grant.
enum Wanted {
    /// The whole table (no column list).
    Whole,
    /// Exactly the listed columns the table still has, in its column order.
    Columns(Vec<String>),
}

impl Wanted {
    fn of(tbl: pg_sys::Oid, columns: Option<&[String]>) -> Result<Wanted> {
        Ok(match columns {
            None => Wanted::Whole,
            Some(listed) => Wanted::Columns(live_columns(tbl, listed)?),
        })
    }
}

/// Why the reader group's SELECT is not the wanted one, if it is not.
fn grant_reason(tbl: pg_sys::Oid, reader: &str, wanted: &Wanted) -> Result<Option<Unsynced>> {
    let (whole, granted) = reader_grants(tbl, reader)?;
    Ok(match wanted {
        Wanted::Whole if whole => None,
        Wanted::Whole => Some(Unsynced::NoGrant),
        Wanted::Columns(live) if !whole && granted == *live => None,
        Wanted::Columns(_) if !whole && granted.is_empty() => Some(Unsynced::NoGrant),
        Wanted::Columns(_) => Some(Unsynced::ColumnGrants),
    })
}

fn missing(target: &Target, reader: &str, wanted: &Wanted) -> Result<Vec<Unsynced>> {
    let mut reasons: Vec<Unsynced> = grant_reason(target.oid, reader, wanted)?
        .into_iter()
        .collect();
    if target.is_view {
        return Ok(reasons);
    }
    if !target.rls {
        reasons.push(Unsynced::RlsOff);
    }
    if !policies::reader_policies_ok(target, reader)? {
        reasons.push(Unsynced::StalePolicies);
    }
    Ok(reasons)
}

/// AccessExclusiveLock within lock_timeout (55P03 naming the table).
pub(super) fn lock_exclusively(target: &Target) -> Result<()> {
    lock_within_timeout(target.oid, pg_sys::AccessExclusiveLock, &target.name)
}

/// The ACCESS SHARE lock that reading the table's definition takes, within
/// lock_timeout (55P03 naming the table): behind an application's ACCESS
/// EXCLUSIVE lock (a migration) the call would otherwise end with
/// PostgreSQL's "canceling statement due to lock timeout", which names no
/// table. Taken first by every call that acts on a table.
pub(super) fn lock_to_read(tbl: pg_sys::Oid) -> Result<()> {
    lock_within_timeout(
        tbl,
        pg_sys::AccessShareLock,
        &super::registry::table_name(tbl)?,
    )
}

/// Polls a conditional lock, so the error can say which table it was.
fn lock_within_timeout(tbl: pg_sys::Oid, mode: u32, name: &str) -> Result<()> {
    let mode = mode as pg_sys::LOCKMODE;
    // SAFETY: reading a GUC variable of this backend.
    let timeout_ms = unsafe { pg_sys::LockTimeout };
    if timeout_ms <= 0 {
        // SAFETY: an ordinary heavyweight lock, released at transaction end.
        unsafe { pg_sys::LockRelationOid(tbl, mode) };
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    loop {
        // SAFETY: as above; returns false instead of waiting.
        if unsafe { pg_sys::ConditionalLockRelationOid(tbl, mode) } {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BiError::LockNotAvailable(name.to_string()));
        }
        pgrx::check_for_interrupts!();
        // SAFETY: sleeps this backend only.
        unsafe { pg_sys::pg_usleep(5_000) };
    }
}

/// What a sync puts back for the credentials, whatever the tables: their
/// pgaudit read logging as bi_access.audit_reads says, their login gate, their
/// org's custom schema groups, and each custom-schema table's quota trigger.
fn credentials_in_place() -> Result<()> {
    crate::roles::sync_audit_reads()?;
    crate::roles::sync_session_libraries()?;
    crate::custom_schema::sync_memberships()?;
    crate::custom_schema::add_quota_triggers(None)?;
    Ok(())
}

thread_local! {
    /// This backend's `CALL bi_access.sync()` found another running and
    /// synced nothing: its last step records no event either.
    static SKIPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// First step of `CALL bi_access.sync()`: exposes new tables (with
/// bi_access.auto_expose), records which backend syncs (credentials read
/// `syncing` meanwhile: `records::begin_sync`), and returns the tables to
/// sync, one transaction each. While another backend's CALL runs, it syncs
/// nothing (a NOTICE says so).
pub fn sync_begin() -> Result<Vec<pg_sys::Oid>> {
    crate::records::one_sync_at_a_time()?;
    if let Some(pid) = crate::records::other_sync()? {
        // Its tables would be synced twice at once: this one leaves them.
        pgrx::notice!(
            "bi_access.sync: CALL bi_access.sync() is running in backend {pid}; this one syncs nothing"
        );
        SKIPPED.with(|skipped| skipped.set(true));
        return Ok(Vec::new());
    }
    SKIPPED.with(|skipped| skipped.set(false));
    crate::roles::adopt_all()?;
    crate::citus::prepare_workers_for_sync(&roles::reader_group()?)?;
    // After pg_upgrade from 15: memberships in 16+'s form.
    crate::roles::sync_memberships()?;
    expose_new_tables()?;
    credentials_in_place()?;
    crate::records::begin_sync()?;
    Ok(exposed_rows()?.into_iter().map(|(tbl, _)| tbl).collect())
}

/// Last step: one event tells what was done.
pub fn sync_end(synced: i32, unchanged: i32, skipped: Vec<String>) -> Result<()> {
    if SKIPPED.with(std::cell::Cell::get) {
        return Ok(());
    }
    crate::records::end_sync()?;
    audit::record(
        "sync",
        &NO_SUBJECT,
        json!({ "synced": synced, "unchanged": unchanged, "skipped": skipped }),
    )
}
