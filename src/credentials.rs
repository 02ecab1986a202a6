//! The credential lifecycle: generate, reveal, regenerate, revoke, activate,
//! delete, purge, and the org-level revoke_org and delete_org. Every call runs
//! in the caller's transaction and touches one role and one record per
//! credential (O(1): no table's ACL or policies), so an error anywhere leaves
//! neither a role without a record nor a record without a role.

use pgrx::prelude::*;
use serde_json::json;

use crate::audit::{self, Subject};
use crate::connection::{Details, Org};
use crate::custom_schema;
use crate::db;
use crate::error::{BiError, Result};
use crate::key;
use crate::roles::{self, LoginOptions};
use crate::secrets::{self, SecretError};
use crate::sessions;
use crate::settings;
use crate::targets::{self, Target};

const MAX_ORG_ID_LEN: usize = 256;
const MAX_LABEL_LEN: usize = 63;
const MAX_CONNECTION_LIMIT: i32 = 10_000;

/// What generate is asked for.
pub struct Request<'a> {
    pub org_id: Option<&'a str>,
    pub label: Option<&'a str>,
    pub org_name: Option<&'a str>,
    pub valid_until: Option<TimestampWithTimeZone>,
    pub connection_limit: Option<i32>,
    pub scope: Option<&'a str>,
    pub target: Option<&'a str>,
}

/// One record, locked FOR UPDATE for the rest of the transaction.
struct Record {
    id: i64,
    org_id: String,
    org_name: Option<String>,
    label: String,
    role: String,
    status: String,
    target: String,
}

impl Record {
    fn subject(&self) -> Subject<'_> {
        Subject {
            role_name: Some(&self.role),
            org_id: Some(&self.org_id),
        }
    }

    fn org(&self) -> Org<'_> {
        Org {
            org_id: &self.org_id,
            org_name: self.org_name.as_deref(),
            label: &self.label,
        }
    }

    fn is_live(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "active" | "syncing")
    }

    /// Its target, resolved; a named target that was removed behind
    /// bi_access's back is an error, never a silent fallback.
    fn target(&self) -> Result<Target> {
        targets::find(&self.target)?.ok_or_else(|| BiError::TargetGone {
            role: self.role.clone(),
            target: self.target.clone(),
        })
    }

    fn refuse(&self, action: &'static str, needs: &'static str) -> BiError {
        BiError::WrongStatus {
            role: self.role.clone(),
            status: self.status.clone(),
            action,
            needs,
        }
    }
}

pub fn generate(
    request: Request,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let (org_id, label) = validate(&request)?;
    let valid_until = resolve_valid_until(request.valid_until)?;
    let key = key::for_sealing()?;
    // Never unlimited unless asked for (-1) or configured so.
    let connection_limit = request
        .connection_limit
        .unwrap_or_else(settings::default_connection_limit);
    let target = targets::for_generate(request.target)?;
    let scope = custom_schema::scope(request.scope)?;
    custom_schema::check_target(scope, &target)?;
    replace_failed(org_id, label)?;

    let role = roles::new_role_name()?;
    let status = if target.standby.is_some() {
        "pending"
    } else {
        "active"
    };
    let inserted = db::first_mut::<i64>(
        "INSERT INTO bi_access.credential \
             (org_id, org_name, label, role_name, status, valid_until, connection_limit, target, scope) \
         VALUES ($1, $2, $3, $4, $5::bi_access.credential_status, $6::timestamptz, $7, $8, $9) \
         ON CONFLICT (org_id, label) WHERE status NOT IN ('failed', 'deleted') DO NOTHING \
         RETURNING id",
        &[
            org_id.into(),
            request.org_name.into(),
            label.into(),
            role.as_str().into(),
            status.into(),
            valid_until.as_deref().into(),
            connection_limit.into(),
            target.name.as_str().into(),
            scope.into(),
        ],
    )?;
    if inserted.is_none() {
        return Err(duplicate(org_id, label)?);
    }

    let options = LoginOptions {
        valid_until,
        connection_limit: Some(connection_limit),
    };
    roles::create_login(&role, &roles::reader_group()?, &options)?;
    custom_schema::join(&role, org_id, scope)?;
    let (password, sealed, sealed_with) = new_password(&role, &key)?;
    // created_lsn: the WAL position the standby must replay before the role
    // can log in there.
    db::exec(
        "UPDATE bi_access.credential \
         SET secret = $2, sealed_with = $3, created_lsn = pg_catalog.pg_current_wal_insert_lsn() \
         WHERE role_name = $1",
        &[
            role.as_str().into(),
            sealed.into(),
            sealed_with.as_str().into(),
        ],
    )?;

    let org = Org {
        org_id,
        org_name: request.org_name,
        label,
    };
    let subject = Subject {
        role_name: Some(&role),
        org_id: Some(org_id),
    };
    audit::record(
        "generate",
        &subject,
        json!({ "label": label, "status": status, "target": target.name, "scope": scope }),
    )?;
    Details::new(&role, password, &org, &target)?.into_tuple()
}

/// "View Details": the same details again, password included.
pub fn connection_details(
    role: &str,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let record = lock(role)?;
    if !record.is_live() {
        return Err(record.refuse("connection_details", "active"));
    }
    let (sealed, sealed_with) = Spi::get_two_with_args::<Vec<u8>, String>(
        "SELECT secret, sealed_with FROM bi_access.credential WHERE id = $1",
        &[record.id.into()],
    )?;
    let Some(sealed) = sealed else {
        return Err(SecretError::CannotOpen.into());
    };
    let key = key::for_opening(sealed_with.as_deref())?;
    let password = secrets::open_with(&key.key, &record.role, &sealed)?;
    let target = record.target()?;
    audit::record("reveal", &record.subject(), json!({}))?;
    Details::new(&record.role, password, &record.org(), &target)?.into_tuple()
}

/// A new password (and expiry, if given); the old one stops working at
/// commit, and the role's open sessions end: on this server at commit, on a
/// standby at their next statement once it has replayed the change.
pub fn regenerate(
    role: &str,
    valid_until: Option<TimestampWithTimeZone>,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let record = lock(role)?;
    // lock() reads a record whose role is gone as failed: regenerate
    // recreates the role (a restore without roles, a role dropped by hand).
    let role_missing = record.status == "failed" && !roles::exists(role)?;
    if matches!(record.status.as_str(), "deleted" | "deleting")
        || (record.status == "failed" && !role_missing)
    {
        return Err(record.refuse("regenerate", "active or deactivated"));
    }
    if role_missing {
        recreate_role(&record)?;
    }
    if record.status == "expired" && valid_until.is_none() {
        return Err(record.refuse("regenerate", "given a new valid_until"));
    }
    let target = record.target()?;
    let until = match valid_until {
        Some(at) => resolve_valid_until(Some(at))?,
        None => None,
    };
    if let Some(until) = &until {
        roles::set_valid_until(role, until)?;
    }
    let (password, sealed, sealed_with) = new_password(role, &key::for_sealing()?)?;
    // The new password is usable on the target's standby once replayed: a
    // live credential is pending until then (a deactivated one stays so).
    db::exec(
        "UPDATE bi_access.credential \
         SET secret = $2, sealed_with = $4, rotated_at = now(), updated_at = now(), last_error = NULL, \
             valid_until = coalesce($3::timestamptz, valid_until), \
             created_lsn = pg_catalog.pg_current_wal_insert_lsn(), \
             status = CASE WHEN $5 AND status IN ('pending', 'active', 'syncing') \
                           THEN 'pending'::bi_access.credential_status ELSE status END \
         WHERE id = $1",
        &[
            record.id.into(),
            sealed.into(),
            until.as_deref().into(),
            sealed_with.as_str().into(),
            target.standby.is_some().into(),
        ],
    )?;
    let ended = end_sessions(role)?;
    audit::record(
        "regenerate",
        &record.subject(),
        json!({ "sessions_ended": ended }),
    )?;
    Details::new(role, password, &record.org(), &target)?.into_tuple()
}

/// Login disabled, open sessions ended at commit; record and role stay.
pub fn revoke(role: &str) -> Result<()> {
    let record = lock(role)?;
    if !revocable(&record) {
        return Err(record.refuse("revoke", "active or expired"));
    }
    revoke_locked(&record, json!({}))
}

fn revocable(record: &Record) -> bool {
    record.is_live() || record.status == "expired"
}

fn revoke_locked(record: &Record, mut detail: serde_json::Value) -> Result<()> {
    roles::set_login(&record.role, false)?;
    set_status(record, "deactivated")?;
    detail["sessions_ended"] = json!(end_sessions(&record.role)?);
    audit::record("revoke", &record.subject(), detail)
}

pub fn activate(role: &str) -> Result<()> {
    let record = lock(role)?;
    if record.status != "deactivated" {
        return Err(record.refuse("activate", "deactivated"));
    }
    roles::set_login(role, true)?;
    set_status(&record, "active")?;
    audit::record("activate", &record.subject(), json!({}))
}

/// Ends sessions, drops the role with everything it was given; the record
/// stays, marked deleted, for audit. Deleting a deleted credential changes
/// nothing, so a retried call succeeds.
pub fn delete(role: &str) -> Result<()> {
    let record = lock(role)?;
    if matches!(record.status.as_str(), "deleted" | "deleting") {
        return audit::record(
            "delete",
            &record.subject(),
            json!({ "already_deleted": true }),
        );
    }
    delete_locked(&record, json!({}))
}

/// The record stays `deleting` until the target's standby has replayed the
/// drop (created_lsn: the WAL position once the role was dropped).
fn delete_locked(record: &Record, mut detail: serde_json::Value) -> Result<()> {
    detail["sessions_ended"] = json!(end_sessions(&record.role)?);
    detail["objects_reassigned"] = json!(roles::drop_login(&record.role)?);
    db::exec(
        "UPDATE bi_access.credential SET status = 'deleted', secret = NULL, updated_at = now(), \
                created_lsn = pg_catalog.pg_current_wal_insert_lsn() \
         WHERE id = $1",
        &[record.id.into()],
    )?;
    audit::record("delete", &record.subject(), detail)
}

/// Offboarding, or an incident: every credential of the org that revoke
/// accepts is revoked, in one transaction; one `revoke` event per credential
/// and one `revoke_org` for the call. Returns the roles revoked.
pub fn revoke_org(org_id: Option<&str>) -> Result<Vec<String>> {
    for_org("revoke_org", org_id, revocable, revoke_locked)
}

/// Every current credential of the org is deleted, in one transaction; its
/// custom schema stays. Events as revoke_org's. Returns the roles deleted.
pub fn delete_org(org_id: Option<&str>) -> Result<Vec<String>> {
    for_org(
        "delete_org",
        org_id,
        |record| !matches!(record.status.as_str(), "failed" | "deleted" | "deleting"),
        delete_locked,
    )
}

fn for_org(
    action: &'static str,
    org_id: Option<&str>,
    applies: impl Fn(&Record) -> bool,
    apply: impl Fn(&Record, serde_json::Value) -> Result<()>,
) -> Result<Vec<String>> {
    let org_id = org_id.unwrap_or_default();
    // Every record of the org, locked in one order (so two offboarding
    // calls cannot deadlock), then read one by one as the single calls do.
    let roles = Spi::connect_mut(|client| {
        let mut roles = Vec::new();
        let table = client.update(
            "SELECT role_name::text FROM bi_access.credential WHERE org_id = $1 \
             ORDER BY id FOR UPDATE",
            None,
            &[org_id.into()],
        )?;
        for row in table {
            if let Some(role) = row.get::<String>(1)? {
                roles.push(role);
            }
        }
        Ok::<_, BiError>(roles)
    })?;
    if roles.is_empty() {
        return Err(BiError::NoSuchOrg(org_id.into()));
    }
    let mut done = Vec::new();
    for role in roles {
        let record = lock(&role)?;
        if applies(&record) {
            apply(&record, json!({ "by": action }))?;
            done.push(role);
        }
    }
    let subject = Subject {
        role_name: None,
        org_id: Some(org_id),
    };
    audit::record(action, &subject, json!({ "roles": done }))?;
    Ok(done)
}

/// Removes a deleted record from the list; the event log keeps its history.
pub fn purge(role: &str) -> Result<()> {
    let record = lock(role)?;
    if record.status != "deleted" {
        return Err(record.refuse("purge", "deleted"));
    }
    db::exec(
        "DELETE FROM bi_access.credential WHERE id = $1",
        &[record.id.into()],
    )?;
    audit::record("purge", &record.subject(), json!({ "label": record.label }))
}

/// Whether the standby of the credential's target has replayed past `lsn`
/// (true when the target has no standby: the change is usable at commit).
pub fn replayed(target: Option<&str>, lsn: Option<&str>) -> Result<bool> {
    let Some(lsn) = lsn else {
        return Ok(true);
    };
    let standby = targets::standby_of(target.unwrap_or(targets::DEFAULT))?;
    targets::replayed(standby.as_deref(), Some(lsn))
}

/// The org key and label, checked; 22023 for anything generate cannot use.
fn validate<'a>(request: &Request<'a>) -> Result<(&'a str, &'a str)> {
    let bad = |what: String| Err(BiError::InvalidParameter(what));
    let org_id = request.org_id.unwrap_or_default();
    let label = request.label.unwrap_or_default();
    if org_id.trim().is_empty() || org_id.len() > MAX_ORG_ID_LEN {
        return bad(format!(
            "org_id must be 1 to {MAX_ORG_ID_LEN} bytes and not blank"
        ));
    }
    if label.trim().is_empty() || label.len() > MAX_LABEL_LEN {
        return bad(format!(
            "label must be 1 to {MAX_LABEL_LEN} bytes and not blank"
        ));
    }
    match request.connection_limit {
        Some(limit) if limit != -1 && !(1..=MAX_CONNECTION_LIMIT).contains(&limit) => bad(format!(
            "connection_limit must be -1 (no limit) or 1 to {MAX_CONNECTION_LIMIT}, not {limit}"
        )),
        _ => Ok((org_id, label)),
    }
}

/// VALID UNTIL as PostgreSQL renders it: the argument, else now() plus
/// bi_access.default_valid_for, else none. A past instant is refused.
fn resolve_valid_until(valid_until: Option<TimestampWithTimeZone>) -> Result<Option<String>> {
    let (until, is_past) = match (valid_until, settings::default_valid_for()) {
        (Some(at), _) => {
            Spi::get_two_with_args::<String, bool>("SELECT $1::text, $1 <= now()", &[at.into()])?
        }
        (None, Some(interval)) => Spi::get_two_with_args::<String, bool>(
            "SELECT (now() + $1::interval)::text, now() + $1::interval <= now()",
            &[interval.as_str().into()],
        )?,
        (None, None) => return Ok(None),
    };
    if is_past.unwrap_or(false) {
        return Err(BiError::InvalidParameter(format!(
            "valid_until {} is not in the future",
            until.unwrap_or_default()
        )));
    }
    Ok(until)
}

/// Generating again for an org and label whose credential failed replaces
/// it: whatever role it left is dropped and its record removed (the event
/// log keeps its history).
fn replace_failed(org_id: &str, label: &str) -> Result<()> {
    let failed = db::column::<String>(
        "SELECT role_name::text FROM bi_access.credential \
         WHERE org_id = $1 AND label = $2 \
           AND (status = 'failed' \
                OR (status <> 'deleted' \
                    AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name)))",
        &[org_id.into(), label.into()],
    )?;
    for role in failed {
        roles::drop_login(&role)?;
        db::exec(
            "DELETE FROM bi_access.credential WHERE role_name = $1",
            &[role.as_str().into()],
        )?;
        let subject = Subject {
            role_name: Some(&role),
            org_id: Some(org_id),
        };
        audit::record("replace_failed", &subject, json!({ "label": label }))?;
    }
    Ok(())
}

fn duplicate(org_id: &str, label: &str) -> Result<BiError> {
    let role = db::first::<String>(
        "SELECT role_name::text FROM bi_access.credential \
         WHERE org_id = $1 AND label = $2 AND status NOT IN ('failed', 'deleted')",
        &[org_id.into(), label.into()],
    )?;
    Ok(BiError::Duplicate {
        org_id: org_id.into(),
        label: label.into(),
        role,
    })
}

/// Gives the role a new password; returns it, its sealed copy and the
/// fingerprint of the key that sealed it, which the caller stores with the
/// rest of its update.
fn new_password(role: &str, key: &key::SealingKey) -> Result<(String, Vec<u8>, String)> {
    let password = secrets::new_password();
    roles::set_password(role, &secrets::scram_verifier(&password))?;
    let sealed = secrets::seal_with(&key.key, role, &password)?;
    Ok((password, sealed, key.fingerprint.clone()))
}

fn lock(role: &str) -> Result<Record> {
    let found = Spi::connect_mut(|client| {
        let table = client.update(
            "SELECT id, org_id, org_name, label, status::text, created_lsn::text, \
                    coalesce(valid_until <= now(), false), target \
             FROM bi_access.credential WHERE role_name = $1 FOR UPDATE",
            Some(1),
            &[role.into()],
        )?;
        if table.is_empty() {
            return Ok::<_, BiError>(None);
        }
        let row = table.first();
        Ok(Some((
            Record {
                id: row.get::<i64>(1)?.unwrap_or_default(),
                org_id: row.get::<String>(2)?.unwrap_or_default(),
                org_name: row.get::<String>(3)?,
                label: row.get::<String>(4)?.unwrap_or_default(),
                role: role.to_string(),
                status: row.get::<String>(5)?.unwrap_or_default(),
                target: row
                    .get::<String>(8)?
                    .unwrap_or_else(|| targets::DEFAULT.into()),
            },
            row.get::<String>(6)?,
            row.get::<bool>(7)?.unwrap_or(false),
        )))
    })?;
    let Some((mut record, lsn, expired)) = found else {
        return Err(BiError::NoSuchCredential(role.into()));
    };
    if matches!(record.status.as_str(), "pending" | "deleted") {
        let standby = targets::standby_of(&record.target)?;
        let replayed = targets::replayed(standby.as_deref(), lsn.as_deref())?;
        match record.status.as_str() {
            "pending" if replayed => {
                set_status(&record, "active")?;
                record.status = "active".into();
            }
            "deleted" if !replayed => record.status = "deleting".into(),
            _ => {}
        }
    }
    if !matches!(record.status.as_str(), "deleted" | "deleting") && !roles::exists(role)? {
        // Dropped outside bi_access, or restored without its roles: the
        // credentials view shows it failed, and generate replaces it.
        record.status = "failed".into();
    } else if record.status != "deleted" {
        // A copy never manages the original's roles (src/custody.rs).
        crate::custody::require_here(role)?;
    }
    if expired && record.is_live() {
        record.status = "expired".into();
    }
    Ok(record)
}

/// The role of a record whose role is gone, as generate made it, with the
/// record's expiry and connection limit; the record is current again.
fn recreate_role(record: &Record) -> Result<()> {
    let (valid_until, connection_limit) = Spi::get_two_with_args::<String, i32>(
        "SELECT valid_until::text, connection_limit FROM bi_access.credential WHERE id = $1",
        &[record.id.into()],
    )?;
    let options = LoginOptions {
        valid_until,
        connection_limit,
    };
    roles::create_login(&record.role, &roles::reader_group()?, &options)?;
    let (scope, _) = custom_schema::of_credential(&record.role)?;
    custom_schema::join(&record.role, &record.org_id, &scope)?;
    let status = if settings::replica_application_name().is_some() {
        "pending"
    } else {
        "active"
    };
    db::exec(
        "UPDATE bi_access.credential SET status = $2::bi_access.credential_status, \
             created_lsn = pg_catalog.pg_current_wal_insert_lsn() WHERE id = $1",
        &[record.id.into(), status.into()],
    )
}

fn set_status(record: &Record, status: &str) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential \
         SET status = $2::bi_access.credential_status, updated_at = now() WHERE id = $1",
        &[record.id.into(), status.into()],
    )
}

fn end_sessions(role: &str) -> Result<usize> {
    match roles::oid(role)? {
        Some(oid) => sessions::end_at_commit(oid),
        None => Ok(0),
    }
}
