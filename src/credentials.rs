//! The credential lifecycle: generate, reveal, regenerate, revoke, activate,
//! delete, purge. Every call runs in the caller's transaction and touches one
//! role and one record (O(1): no table's ACL or policies), so an error
//! anywhere leaves neither a role without a record nor a record without a role.

use pgrx::prelude::*;
use serde_json::json;

use crate::audit::{self, Subject};
use crate::connection::{Details, Org};
use crate::db;
use crate::error::{BiError, Result};
use crate::roles::{self, LoginOptions};
use crate::secrets;
use crate::sessions;
use crate::settings;

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
}

/// One record, locked FOR UPDATE for the rest of the transaction.
struct Record {
    id: i64,
    org_id: String,
    org_name: Option<String>,
    label: String,
    role: String,
    status: String,
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
    // Never unlimited unless asked for (-1) or configured so.
    let connection_limit = request
        .connection_limit
        .unwrap_or_else(settings::default_connection_limit);
    replace_failed(org_id, label)?;

    let role = roles::new_role_name()?;
    let status = if settings::replica_application_name().is_some() {
        "pending"
    } else {
        "active"
    };
    let inserted = db::first_mut::<i64>(
        "INSERT INTO bi_access.credential \
             (org_id, org_name, label, role_name, status, valid_until, connection_limit) \
         VALUES ($1, $2, $3, $4, $5::bi_access.credential_status, $6::timestamptz, $7) \
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
    let (password, sealed) = new_password(&role)?;
    // created_lsn: the WAL position the standby must replay before the role
    // can log in there.
    db::exec(
        "UPDATE bi_access.credential \
         SET secret = $2, created_lsn = pg_catalog.pg_current_wal_insert_lsn() WHERE role_name = $1",
        &[role.as_str().into(), sealed.into()],
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
        json!({ "label": label, "status": status }),
    )?;
    Details::new(&role, password, &org)?.into_tuple()
}

/// "View Details": the same details again, password included.
pub fn connection_details(
    role: &str,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let record = lock(role)?;
    if !record.is_live() {
        return Err(record.refuse("connection_details", "active"));
    }
    let sealed = db::first::<Vec<u8>>(
        "SELECT secret FROM bi_access.credential WHERE id = $1",
        &[record.id.into()],
    )?;
    let password = secrets::open(&record.role, sealed.as_deref().unwrap_or_default())?;
    audit::record("reveal", &record.subject(), json!({}))?;
    Details::new(&record.role, password, &record.org())?.into_tuple()
}

/// A new password (and expiry, if given); the old one stops working at
/// commit, and the role's open sessions end: on this server at commit, on a
/// standby at their next statement once it has replayed the change.
pub fn regenerate(
    role: &str,
    valid_until: Option<TimestampWithTimeZone>,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let record = lock(role)?;
    // lock() reads a record whose role is gone as failed.
    if matches!(record.status.as_str(), "deleted" | "deleting" | "failed") {
        return Err(record.refuse("regenerate", "active or deactivated"));
    }
    if record.status == "expired" && valid_until.is_none() {
        return Err(record.refuse("regenerate", "given a new valid_until"));
    }
    let until = match valid_until {
        Some(at) => resolve_valid_until(Some(at))?,
        None => None,
    };
    if let Some(until) = &until {
        roles::set_valid_until(role, until)?;
    }
    let (password, sealed) = new_password(role)?;
    db::exec(
        "UPDATE bi_access.credential \
         SET secret = $2, rotated_at = now(), updated_at = now(), last_error = NULL, \
             valid_until = coalesce($3::timestamptz, valid_until) WHERE id = $1",
        &[record.id.into(), sealed.into(), until.as_deref().into()],
    )?;
    let ended = end_sessions(role)?;
    audit::record(
        "regenerate",
        &record.subject(),
        json!({ "sessions_ended": ended }),
    )?;
    Details::new(role, password, &record.org())?.into_tuple()
}

/// Login disabled, open sessions ended at commit; record and role stay.
pub fn revoke(role: &str) -> Result<()> {
    let record = lock(role)?;
    if !record.is_live() && record.status != "expired" {
        return Err(record.refuse("revoke", "active or expired"));
    }
    roles::set_login(role, false)?;
    set_status(&record, "deactivated")?;
    let ended = end_sessions(role)?;
    audit::record(
        "revoke",
        &record.subject(),
        json!({ "sessions_ended": ended }),
    )
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
    if record.status == "deleted" {
        return audit::record(
            "delete",
            &record.subject(),
            json!({ "already_deleted": true }),
        );
    }
    let ended = end_sessions(role)?;
    let reassigned = roles::drop_login(role)?;
    db::exec(
        "UPDATE bi_access.credential SET status = 'deleted', secret = NULL, updated_at = now() \
         WHERE id = $1",
        &[record.id.into()],
    )?;
    audit::record(
        "delete",
        &record.subject(),
        json!({ "sessions_ended": ended, "objects_reassigned": reassigned }),
    )
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

/// Whether the configured standby has replayed past `lsn` (true when no
/// standby is configured: a credential is then active at commit).
pub fn replayed(lsn: Option<&str>) -> Result<bool> {
    let (Some(standby), Some(lsn)) = (settings::replica_application_name(), lsn) else {
        return Ok(true);
    };
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_replication \
                        WHERE application_name = $1 AND replay_lsn >= $2::pg_lsn)",
        &[standby.as_str().into(), lsn.into()],
    )?
    .unwrap_or(false))
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

/// Gives the role a new password; returns it and its sealed copy, which the
/// caller stores with the rest of its update.
fn new_password(role: &str) -> Result<(String, Vec<u8>)> {
    let password = secrets::new_password();
    roles::set_password(role, &secrets::scram_verifier(&password))?;
    let sealed = secrets::seal(role, &password)?;
    Ok((password, sealed))
}

fn lock(role: &str) -> Result<Record> {
    let found = Spi::connect_mut(|client| {
        let table = client.update(
            "SELECT id, org_id, org_name, label, status::text, created_lsn::text, \
                    coalesce(valid_until <= now(), false) \
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
            },
            row.get::<String>(6)?,
            row.get::<bool>(7)?.unwrap_or(false),
        )))
    })?;
    let Some((mut record, lsn, expired)) = found else {
        return Err(BiError::NoSuchCredential(role.into()));
    };
    if record.status == "pending" && replayed(lsn.as_deref())? {
        set_status(&record, "active")?;
        record.status = "active".into();
    }
    if record.status != "deleted" && !roles::exists(role)? {
        // Dropped outside bi_access, or restored without its roles: the
        // credentials view shows it failed, and generate replaces it.
        record.status = "failed".into();
    }
    if expired && record.is_live() {
        record.status = "expired".into();
    }
    Ok(record)
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
