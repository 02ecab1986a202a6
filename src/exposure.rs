//! Which tables BI roles may read, and syncing: bringing each exposed table to
//! its exposed state (a SELECT grant to the reader group, RLS on, the policies
//! of `policies`). Grants go to the reader group only, never to credential
//! roles, so a table's ACL stays one entry long whatever the number of
//! credentials.

use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_qualified_identifier};
use serde_json::json;

use crate::audit::{self, NO_SUBJECT};
use crate::db;
use crate::error::{BiError, Result};
use crate::names;
use crate::policies::{self, Target};
use crate::roles;
use crate::settings;

/// What unsynced_tables reports for one table.
pub struct Pending {
    pub tbl: pg_sys::Oid,
    pub org_column: String,
    pub reason: String,
}

struct Relation {
    schema: String,
    name: String,
    kind: String,
    rls: bool,
    security_invoker: bool,
    column_type: Option<String>,
    eq_schema: String,
    /// Policies on the table that are not bi_access's own.
    foreign_policies: i64,
    /// The org column's type is one org keys are matched against (text,
    /// varchar, an integer type, uuid, citext) with its type's collation.
    accepted_type: bool,
}

/// Schemas whose relations are never exposed or hidden: bi_access's own
/// (its records hold sealed secrets), the orgs' custom schemas (each
/// belongs to one org: src/custom_schema.rs) and the system's. Every `pg_*`
/// schema name is reserved to the system (pg_catalog, pg_toast, pg_temp_N…).
fn refused_schema(schema: &str) -> bool {
    matches!(
        schema,
        "bi_access" | "bi_access_internal" | "information_schema"
    ) || schema.starts_with("pg_")
        || schema.starts_with(crate::names::CUSTOM_SCHEMA_PREFIX)
}

/// Checked in DESIGN.md's order: 42P01 no such table, 42809 wrong kind of
/// relation or schema, 42501 the caller may not, 42703 no such column,
/// 42804 an org column of a refused type.
pub fn expose_table(tbl: pg_sys::Oid, org_column: Option<&str>) -> Result<()> {
    let column = org_column
        .map(str::to_string)
        .unwrap_or_else(settings::org_column);
    vet(tbl, &column, Vet::Caller)?;
    db::exec(
        "INSERT INTO bi_access.exposed_table (tbl, org_column) VALUES ($1::regclass, $2) \
         ON CONFLICT (tbl) DO UPDATE SET org_column = EXCLUDED.org_column, hidden = false",
        &[tbl.into(), column.as_str().into()],
    )?;
    let action = sync_one(tbl)?;
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

/// What a sync would change: exposed tables missing their grant, RLS or
/// policies, and new tables (in an exposed schema, with the org column,
/// neither exposed nor hidden).
pub fn unsynced_tables() -> Result<Vec<Pending>> {
    let reader = roles::reader_group()?;
    let mut pending = Vec::new();
    for (tbl, column) in exposed_tables()? {
        let reasons = match target(tbl, &column) {
            Ok(target) => missing(&target, &reader)?,
            Err(error) => vec![error.to_string()],
        };
        pending.extend(reasons.into_iter().map(|reason| Pending {
            tbl,
            org_column: column.clone(),
            reason,
        }));
    }
    for (tbl, column) in new_tables()? {
        let reason = match vet(tbl, &column, Vet::New) {
            Ok(_) => "new table with the org column, not exposed".to_string(),
            Err(error) => format!("new table with the org column, not exposable: {error}"),
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
pub fn sync_tables() -> Result<Vec<(pg_sys::Oid, String)>> {
    crate::custody::adopt_all()?;
    let mut done = Vec::new();
    for tbl in expose_new_tables()? {
        sync_one(tbl)?;
        done.push((tbl, "exposed".to_string()));
    }
    for (tbl, _) in exposed_tables()? {
        if done.iter().any(|(exposed, _)| *exposed == tbl) {
            continue;
        }
        done.push((tbl, sync_one(tbl)?.to_string()));
    }
    // Credentials' pgaudit read logging follows bi_access.audit_reads.
    crate::roles::sync_audit_reads()?;
    // Each credential is in its org's custom schema groups.
    crate::custom_schema::sync_memberships()?;
    let changed = done
        .iter()
        .filter(|(_, action)| action != "unchanged")
        .count();
    audit::record(
        "sync_tables",
        &NO_SUBJECT,
        json!({ "tables": done.len(), "changed": changed }),
    )?;
    Ok(done)
}

/// With bi_access.auto_expose, records every new table that can be exposed
/// as exposed (not yet synced); returns them.
fn expose_new_tables() -> Result<Vec<pg_sys::Oid>> {
    if !settings::auto_expose() {
        return Ok(Vec::new());
    }
    let mut exposed = Vec::new();
    for (tbl, column) in new_tables()? {
        if vet(tbl, &column, Vet::New).is_err() {
            continue; // unsynced_tables() says why
        }
        db::exec(
            "INSERT INTO bi_access.exposed_table (tbl, org_column) VALUES ($1::regclass, $2)",
            &[tbl.into(), column.as_str().into()],
        )?;
        exposed.push(tbl);
    }
    Ok(exposed)
}

/// Syncs one exposed table; "synced" if anything changed, else "unchanged".
/// The exclusive lock is taken only when RLS or a policy must change, and
/// never for longer than lock_timeout.
///
/// The grant comes last: a table is readable only once its RLS and policies
/// are in place, never the other way round.
pub fn sync_one(tbl: pg_sys::Oid) -> Result<&'static str> {
    let Some((column, rls_by_us)) = exposed_row(tbl)? else {
        return Ok("not exposed");
    };
    let _changing = ChangingTables::begin();
    let target = target(tbl, &column)?;
    let reader = roles::reader_group()?;
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
    changed |= grant_read(&target, &reader)?;
    finish_sync(tbl, changed)
}

thread_local! {
    static CHANGING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While bi_access itself changes a table's RLS, policies or grants, the
/// ddl_command_end trigger must not take its intermediate steps for a
/// weakening.
struct ChangingTables {
    outer: bool,
}

impl ChangingTables {
    fn begin() -> Self {
        ChangingTables {
            outer: CHANGING.with(|changing| changing.replace(true)),
        }
    }

    fn active() -> bool {
        CHANGING.with(std::cell::Cell::get)
    }
}

impl Drop for ChangingTables {
    fn drop(&mut self) {
        CHANGING.with(|changing| changing.set(self.outer));
    }
}

fn finish_sync(tbl: pg_sys::Oid, changed: bool) -> Result<&'static str> {
    if !changed {
        return Ok("unchanged");
    }
    db::exec(
        "UPDATE bi_access.exposed_table SET synced_at = now() WHERE tbl = $1::regclass",
        &[tbl.into()],
    )?;
    Ok("synced")
}

fn enable_rls(target: &Target) -> Result<()> {
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

/// USAGE on the table's schema and SELECT on the table, for the reader group.
fn grant_read(target: &Target, reader: &str) -> Result<bool> {
    let (has_usage, has_select) = Spi::get_two_with_args::<bool, bool>(
        "SELECT pg_catalog.has_schema_privilege($2, c.relnamespace, 'USAGE'), \
                EXISTS (SELECT FROM pg_catalog.aclexplode(c.relacl) a \
                        JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
                        WHERE r.rolname = $2 AND a.privilege_type = 'SELECT') \
         FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[target.oid.into(), reader.into()],
    )?;
    let quoted_reader = quote_identifier(reader);
    if !has_usage.unwrap_or(false) {
        let schema = db::first::<String>(
            "SELECT n.nspname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[target.oid.into()],
        )?
        .unwrap_or_default();
        Spi::run(&format!(
            "GRANT USAGE ON SCHEMA {} TO {quoted_reader}",
            quote_identifier(schema)
        ))?;
    }
    if !has_select.unwrap_or(false) {
        Spi::run(&format!(
            "GRANT SELECT ON {} TO {quoted_reader}",
            target.name
        ))?;
    }
    Ok(!has_usage.unwrap_or(false) || !has_select.unwrap_or(false))
}

fn missing(target: &Target, reader: &str) -> Result<Vec<String>> {
    let mut reasons = Vec::new();
    let has_select = db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a \
                        JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
                        WHERE c.oid = $1 AND r.rolname = $2 AND a.privilege_type = 'SELECT')",
        &[target.oid.into(), reader.into()],
    )?
    .unwrap_or(false);
    if !has_select {
        reasons.push("the reader group has no SELECT grant".to_string());
    }
    if target.is_view {
        return Ok(reasons);
    }
    if !target.rls {
        reasons.push("row level security is off".to_string());
    }
    if !policies::reader_policies_ok(target, reader)? {
        reasons.push("bi_access policies are missing or stale".to_string());
    }
    Ok(reasons)
}

/// How much `vet` checks.
#[derive(Clone, Copy, PartialEq)]
enum Vet {
    /// An existing exposure being synced: what would let a BI role past
    /// row-level security. An org column of a type refused since it was
    /// exposed is left as it is (check() reports it).
    Sync,
    /// A new table a sync would expose: the same, and the column's type.
    New,
    /// expose_table: the same, and the caller's own rights over the table.
    Caller,
}

/// The table (or security_invoker view) as a target; refuses what would
/// let a BI role past row-level security, or what bi_access must not
/// expose, in DESIGN.md's order of SQLSTATEs.
fn vet(tbl: pg_sys::Oid, column: &str, vet: Vet) -> Result<Target> {
    let relation = relation(tbl, column)?;
    let name = quote_qualified_identifier(&relation.schema, &relation.name);
    refuse_kind(&relation, &name)?;
    if vet == Vet::Caller {
        caller_may(tbl, &name)?;
    }
    let Some(column_type) = relation.column_type.clone() else {
        return Err(BiError::NoSuchColumn {
            table: name,
            column: column.into(),
        });
    };
    if vet != Vet::Sync && !relation.accepted_type {
        return Err(BiError::RefusedColumnType {
            table: name,
            column: column.into(),
            column_type,
        });
    }
    if !relation.rls && relation.foreign_policies > 0 {
        // Turning RLS on would put the application's dormant policies in
        // force and change what its roles see.
        return Err(BiError::DormantPolicies(name));
    }
    Ok(relation.into_target(tbl, column, column_type))
}

fn target(tbl: pg_sys::Oid, column: &str) -> Result<Target> {
    vet(tbl, column, Vet::Sync)
}

/// 42809: only tables, partitioned tables and security_invoker views, and
/// none of bi_access's own or the system's.
fn refuse_kind(relation: &Relation, name: &str) -> Result<()> {
    if refused_schema(&relation.schema) {
        return Err(BiError::RefusedSchema {
            table: name.to_string(),
            schema: quote_identifier(&relation.schema),
        });
    }
    match relation.kind.as_str() {
        "r" | "p" => Ok(()),
        "v" if relation.security_invoker => Ok(()),
        "v" => Err(BiError::DefinerView(name.to_string())),
        _ => Err(BiError::WrongObjectType(name.to_string())),
    }
}

/// 42501 unless the caller is a member of the table's owner and has USAGE on
/// its schema and SELECT on it: the management functions are SECURITY
/// DEFINER, so without this an admin would expose, through the extension
/// owner's rights, a table it cannot read itself (the confused deputy).
///
/// The caller is the outer user: the session's login, or the role it SET
/// ROLE to. That is the role whose rights the session acts with (an admin
/// who SET ROLEs to a smaller role is checked as that role, one who SET
/// ROLEs to the table's owner may expose its tables); current_user would be
/// the extension's owner here, and session_user would ignore SET ROLE.
fn caller_may(tbl: pg_sys::Oid, name: &str) -> Result<()> {
    // SAFETY: a read of backend-local state.
    let caller = unsafe { pg_sys::GetOuterUserId() };
    let allowed = db::first::<bool>(
        "SELECT pg_catalog.pg_has_role($2, c.relowner, 'MEMBER') \
                AND pg_catalog.has_schema_privilege($2, c.relnamespace, 'USAGE') \
                AND pg_catalog.has_table_privilege($2, c.oid, 'SELECT') \
         FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[tbl.into(), caller.into()],
    )?
    .unwrap_or(false);
    if allowed {
        return Ok(());
    }
    // SAFETY: a syscache lookup; NULL for a role that no longer exists.
    let role = unsafe {
        let role = pg_sys::GetUserNameFromId(caller, true);
        if role.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(role)
                .to_string_lossy()
                .into_owned()
        }
    };
    Err(BiError::NotPermitted {
        role: quote_identifier(&role),
        table: name.to_string(),
    })
}

/// Exposed or hidden before, or a new table a sync would expose.
fn known(tbl: pg_sys::Oid) -> Result<bool> {
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

impl Relation {
    fn into_target(self, tbl: pg_sys::Oid, column: &str, column_type: String) -> Target {
        Target {
            oid: tbl,
            name: quote_qualified_identifier(&self.schema, &self.name),
            column: column.to_string(),
            column_type,
            eq_schema: self.eq_schema,
            is_view: self.kind == "v",
            rls: self.rls,
        }
    }
}

fn relation(tbl: pg_sys::Oid, column: &str) -> Result<Relation> {
    Spi::connect(|client| {
        let table = client.select(
            &format!("SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relrowsecurity, \
                    coalesce((SELECT o.option_value::bool \
                              FROM pg_catalog.pg_options_to_table(c.reloptions) o \
                              WHERE o.option_name = 'security_invoker'), false), \
                    pg_catalog.format_type(a.atttypid, NULL), \
                    coalesce((SELECT quote_ident(ns.nspname) \
                              FROM pg_catalog.pg_operator o \
                              JOIN pg_catalog.pg_namespace ns ON ns.oid = o.oprnamespace \
                              WHERE o.oprname = '=' AND o.oprleft = a.atttypid \
                                AND o.oprright = a.atttypid LIMIT 1), 'pg_catalog'), \
                    (SELECT count(*) FROM pg_catalog.pg_policy p \
                     WHERE p.polrelid = c.oid AND p.polname NOT LIKE 'bi\\_access\\_%'), \
                    {ACCEPTED_TYPE} \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attribute a \
                    ON a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE c.oid = $1"),
            Some(1),
            &[tbl.into(), column.into()],
        )?;
        if table.is_empty() {
            // A regclass argument given by name is checked by its input
            // function; one given by OID is checked here.
            return Err(BiError::NoSuchTable(u32::from(tbl).to_string()));
        }
        let row = table.first();
        Ok(Relation {
            schema: row.get::<String>(1)?.unwrap_or_default(),
            name: row.get::<String>(2)?.unwrap_or_default(),
            kind: row.get::<String>(3)?.unwrap_or_default(),
            rls: row.get::<bool>(4)?.unwrap_or(false),
            security_invoker: row.get::<bool>(5)?.unwrap_or(false),
            column_type: row.get::<String>(6)?,
            eq_schema: row.get::<String>(7)?.unwrap_or_else(|| "pg_catalog".into()),
            foreign_policies: row.get::<i64>(8)?.unwrap_or(0),
            accepted_type: row.get::<bool>(9)?.unwrap_or(false),
        })
    })
}

/// Whether the org column `a` (of type `t`) is of a type org keys are matched
/// against: text, varchar, smallint, integer, bigint, uuid, or the citext
/// of the citext extension, with its type's own collation (a policy compares
/// it with the lookup, whose collation is the type's: two different
/// collations would make every BI query fail). Anything else (boolean,
/// numeric, an enum, a domain, char(n)…) is refused: its cast from a key
/// could raise or match loosely.
pub const ACCEPTED_TYPE: &str = "(a.attcollation = t.typcollation \
      AND (a.atttypid IN ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype, \
                          'pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype, \
                          'pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.uuid'::pg_catalog.regtype) \
           OR (t.typname = 'citext' AND EXISTS ( \
                  SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid \
                  WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid \
                    AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
                    AND d.deptype = 'e' AND e.extname = 'citext'))))";

fn table_name(tbl: pg_sys::Oid) -> Result<String> {
    Ok(db::first::<String>("SELECT $1::regclass::text", &[tbl.into()])?.unwrap_or_default())
}

fn exposed_row(tbl: pg_sys::Oid) -> Result<Option<(String, bool)>> {
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

fn pairs(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<Vec<(pg_sys::Oid, String)>> {
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
fn exposed_tables() -> Result<Vec<(pg_sys::Oid, String)>> {
    pairs(
        "SELECT e.tbl::oid, e.org_column::text FROM bi_access.exposed_table e \
         JOIN pg_catalog.pg_class c ON c.oid = e.tbl \
         WHERE NOT e.hidden ORDER BY e.tbl::text",
        &[],
    )
}

fn new_tables() -> Result<Vec<(pg_sys::Oid, String)>> {
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

/// AccessExclusiveLock within lock_timeout (55P03 naming the table), polling
/// a conditional lock so the error can say which table it was.
fn lock_exclusively(target: &Target) -> Result<()> {
    let mode = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: reading a GUC variable of this backend.
    let timeout_ms = unsafe { pg_sys::LockTimeout };
    if timeout_ms <= 0 {
        // SAFETY: an ordinary heavyweight lock, released at transaction end.
        unsafe { pg_sys::LockRelationOid(target.oid, mode) };
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    loop {
        // SAFETY: as above; returns false instead of waiting.
        if unsafe { pg_sys::ConditionalLockRelationOid(target.oid, mode) } {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BiError::LockNotAvailable(target.name.clone()));
        }
        pgrx::check_for_interrupts!();
        // SAFETY: sleeps this backend only.
        unsafe { pg_sys::pg_usleep(5_000) };
    }
}

/// First step of `CALL bi_access.sync()`: exposes new tables (with
/// bi_access.auto_expose), records which backend syncs, and returns the
/// tables to sync, one transaction each. `syncing` is derived from that
/// backend running the procedure now (`sync_running`), never written on the
/// records: a sync cancelled, timed out or killed leaves nothing `syncing`,
/// and no step waits on a credential's row.
pub fn sync_begin() -> Result<Vec<pg_sys::Oid>> {
    crate::custody::adopt_all()?;
    expose_new_tables()?;
    // Credentials' pgaudit read logging follows bi_access.audit_reads.
    crate::roles::sync_audit_reads()?;
    // Each credential is in its org's custom schema groups.
    crate::custom_schema::sync_memberships()?;
    db::exec(
        "UPDATE bi_access.config SET sync_pid = pg_catalog.pg_backend_pid()",
        &[],
    )?;
    Ok(exposed_tables()?.into_iter().map(|(tbl, _)| tbl).collect())
}

/// Whether `CALL bi_access.sync()` runs now in this database: the backend
/// that began the last one is still running that statement.
pub fn sync_running() -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a, bi_access.config c \
                        WHERE a.pid = c.sync_pid AND a.datid = (SELECT oid FROM pg_catalog.pg_database \
                                                                 WHERE datname = current_database()) \
                          AND a.state = 'active' AND a.query ~* '\\mcall\\s+bi_access\\.sync\\M')",
        &[],
    )?
    .unwrap_or(false))
}

/// Last step: one event tells what was done.
pub fn sync_end(synced: i32, unchanged: i32, skipped: Vec<String>) -> Result<()> {
    db::exec("UPDATE bi_access.config SET sync_pid = NULL", &[])?;
    audit::record(
        "sync",
        &NO_SUBJECT,
        json!({ "synced": synced, "unchanged": unchanged, "skipped": skipped }),
    )
}

/// From the ddl_command_end event trigger: name new tables, and withdraw the
/// grant of exposed tables the statement weakened.
pub fn after_ddl() -> Result<()> {
    if ChangingTables::active() {
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
/// it back.
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
               AND EXISTS (SELECT FROM pg_catalog.aclexplode(c.relacl) a \
                           JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
                           WHERE r.rolname = $1 AND a.privilege_type = 'SELECT') \
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
