//! The credential lifecycle: generate, reveal, regenerate, revoke, activate,
//! delete, purge, and the org-level revoke_org and delete_org. Every call runs
//! in the caller's transaction and touches one role and one record per
//! credential (O(1): no table's ACL or policies), so an error anywhere leaves
//! neither a role without a record nor a record without a role.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use serde_json::json;

use crate::audit;
use crate::connection::Details;
use crate::custom_schema;
use crate::error::{internal, BiError, Result};
use crate::exposure;
use crate::input;
use crate::key;
use crate::org;
use crate::records::{self, Org, Record, Subject};
use crate::roles::{self, LoginOptions};
use crate::secrets::{self, SecretError};
use crate::sessions;
use crate::settings;
use crate::status::{Action, Rule, Status};
use crate::targets;

const MAX_ORG_ID_LEN: usize = 256;
const MAX_LABEL_LEN: usize = 63;
const MAX_ORG_NAME_LEN: usize = 256;
const MAX_CONNECTION_LIMIT: i32 = 10_000;

/// What generate is asked for (NULL where NULL has a meaning: no org
/// name, the default expiry, connection limit and target).
pub struct Request<'a> {
    pub org_id: &'a str,
    pub label: &'a str,
    pub org_name: Option<&'a str>,
    pub valid_until: Option<TimestampWithTimeZone>,
    pub connection_limit: Option<i32>,
    pub scope: &'a str,
    pub target: Option<&'a str>,
    /// The addresses it may log in from, as cidr text; None: any.
    pub allowed_networks: Option<Vec<Option<String>>>,
}

pub fn generate(
    request: Request,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let (org_id, label) = validate(&request)?;
    let allowed_networks = networks(request.allowed_networks)?;
    org::check_canonical(org_id, &exposure::org_column_types()?)?;
    let valid_until = resolve_valid_until(request.valid_until)?;
    let key = key::for_sealing()?;
    // Never unlimited unless asked for (-1) or configured so.
    let connection_limit = request
        .connection_limit
        .unwrap_or_else(settings::default_connection_limit);
    let target = targets::for_generate(request.target)?;
    let scope = custom_schema::scope(Some(request.scope))?;
    custom_schema::check_target(scope, &target)?;
    replace_failed(org_id, label)?;

    let role = roles::new_role_name()?;
    let status = after_login_change(&target, Status::Active);
    let inserted = records::insert(&records::New {
        org_id,
        org_name: request.org_name,
        label,
        role: &role,
        status,
        valid_until: valid_until.as_deref(),
        connection_limit,
        target: &target.name,
        scope,
        allowed_networks: allowed_networks.clone(),
    })?;
    if !inserted {
        return Err(BiError::Duplicate {
            org_id: org_id.into(),
            label: label.into(),
            role: records::current_role_of(org_id, label)?,
        });
    }

    let options = LoginOptions {
        valid_until,
        connection_limit: Some(connection_limit),
        login: true,
    };
    roles::create_login(&role, &roles::reader_group()?, &options)?;
    let custom_schema = custom_schema::join(&role, org_id, scope)?;
    let (password, sealed, sealed_with) = new_password(&role, &key)?;
    records::store_first_secret(&role, sealed, &sealed_with)?;

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
        json!({ "label": label, "status": status.as_str(), "target": target.name, "scope": scope,
                "allowed_networks": allowed_networks }),
    )?;
    Details::new(&role, password, &org, &target, scope, custom_schema)?.into_tuple()
}

/// The one standby rule, for every change to a credential's login (a new
/// role, a new password): usable at commit on the primary, so a live
/// credential whose target has a standby is pending until the standby has
/// replayed the change; otherwise, or not live, it is `status`.
fn after_login_change(target: &targets::Target, status: Status) -> Status {
    if target.standby.is_some() && status.is_live() {
        Status::Pending
    } else {
        status
    }
}

/// "View Details": the same details again, password included.
pub fn connection_details(
    role: &str,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let (record, status) = open(role)?;
    allow(Action::ConnectionDetails, &record, status)?;
    let Some(sealed) = &record.secret else {
        return Err(SecretError::CannotOpen.into());
    };
    let key = key::for_opening(record.sealed_with.as_deref())?;
    let password = secrets::open_with(&key.key, &record.role, sealed)?;
    let target = targets::of_credential(&record)?;
    audit::record("reveal", &record.subject(), json!({}))?;
    details(&record, &record.role, password, &target)
}

/// A new password (and expiry, if given); the old one stops working at
/// commit, and the role's open sessions end: on this server at commit, on a
/// standby at their next statement once it has replayed the change. With
/// `overlap`, a new role instead, while the old one keeps working for that
/// long (`rotate_with_overlap`). Either way an overlap in progress ends now:
/// an emergency rotation is never refused nor delayed by one.
pub fn regenerate(
    role: &str,
    valid_until: Option<TimestampWithTimeZone>,
    overlap: Option<Interval>,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let overlap = overlap.map(positive_overlap).transpose()?;
    // The key before the record, as generate takes it: rotate_key holds the
    // key and then locks every sealed record.
    let key = key::for_sealing()?;
    let (mut record, status) = open(role)?;
    if overlap.is_some() && !matches!(status, Status::Active | Status::Pending) {
        return Err(Action::Regenerate.refuse_needing(
            role,
            status,
            "active or pending to keep its old role working (regenerate it without overlap)",
        ));
    }
    retire_previous(&record, "regenerate")?;
    if let Some(overlap) = overlap {
        return rotate_with_overlap(&record, valid_until, &overlap, &key);
    }
    let role = record.role.clone();
    let role = role.as_str();
    match Action::Regenerate.rule(status) {
        Rule::Allow => {}
        // A record whose role is gone reads failed: regenerate recreates
        // the role (a restore without roles, a role dropped by hand).
        Rule::RecreatesRole if !record.role_exists() => recreate_role(&mut record)?,
        Rule::NeedsValidUntil if valid_until.is_some() => {}
        Rule::NeedsValidUntil => {
            return Err(Action::Regenerate.refuse_needing(role, status, "given a new valid_until"))
        }
        _ => return Err(Action::Regenerate.refuse(role, status)),
    }
    let target = targets::of_credential(&record)?;
    let until = match valid_until {
        Some(at) => resolve_valid_until(Some(at))?,
        None => None,
    };
    if let Some(until) = &until {
        roles::set_valid_until(role, until)?;
    }
    let (password, sealed, sealed_with) = new_password(role, &key)?;
    // The new password is usable on the target's standby once replayed: a
    // live credential is pending until then (a deactivated one stays so).
    let stored = after_login_change(&target, record.stored);
    records::store_new_password(&record, sealed, &sealed_with, until.as_deref(), stored)?;
    let ended = end_sessions(record.role_oid)?;
    audit::record(
        "regenerate",
        &record.subject(),
        json!({ "sessions_ended": ended }),
    )?;
    details(&record, role, password, &target)
}

/// 22023 unless the overlap is longer than nothing; as interval text.
fn positive_overlap(overlap: Interval) -> Result<String> {
    let (text, positive) = Spi::get_two_with_args::<String, bool>(
        "SELECT $1::text, $1 > '0'::interval",
        &[overlap.into()],
    )?;
    let text = text.unwrap_or_default();
    if positive != Some(true) {
        return Err(BiError::InvalidParameter(format!(
            "overlap must be a positive interval, not {text:?}"
        )));
    }
    Ok(text)
}

/// Rotation without downtime: the credential gets a new login role, made as
/// generate makes one (same org, scope and custom-schema memberships,
/// connection limit and expiry; the networks and target are the record's),
/// and its role until now logs in until `now() + overlap` (its VALID UNTIL,
/// which every server checks at login and the session guard at each
/// statement) or the credential's expiry if sooner. The next management
/// call after that drops it (`retire_ended_overlaps`).
fn rotate_with_overlap(
    record: &Record,
    valid_until: Option<TimestampWithTimeZone>,
    overlap: &str,
    key: &key::SealingKey,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let target = targets::of_credential(record)?;
    let until = match valid_until {
        Some(at) => resolve_valid_until(Some(at))?,
        None => record.valid_until.clone(),
    };
    let role = roles::new_role_name()?;
    let options = LoginOptions {
        valid_until: until.clone(),
        connection_limit: record.connection_limit,
        login: true,
    };
    roles::create_login(&role, &roles::reader_group()?, &options)?;
    custom_schema::join(&role, &record.org_id, &record.scope)?;
    let previous_until = Spi::get_one_with_args::<String>(
        "SELECT LEAST(now() + $1::interval, $2::timestamptz)::text",
        &[overlap.into(), record.valid_until.as_deref().into()],
    )?
    .ok_or_else(|| internal("now() plus an interval is NULL"))?;
    roles::set_valid_until(&record.role, &previous_until)?;
    let (password, sealed, sealed_with) = new_password(&role, key)?;
    let status = after_login_change(&target, record.stored);
    records::start_overlap(
        record,
        records::Rotation {
            role: &role,
            sealed,
            sealed_with: &sealed_with,
            valid_until: until.as_deref(),
            previous_until: &previous_until,
            status,
        },
    )?;
    let subject = Subject {
        role_name: Some(&role),
        org_id: Some(&record.org_id),
    };
    audit::record(
        "regenerate",
        &subject,
        json!({ "overlap": overlap, "previous_role_name": record.role,
                "previous_until": previous_until, "sessions_ended": 0 }),
    )?;
    details(record, &role, password, &target)
}

/// Ends an overlap in progress: the old role goes (`drop_previous`) and the
/// record has one role again.
fn retire_previous(record: &Record, why: &str) -> Result<()> {
    if record.previous_role.is_some() {
        drop_previous(record, why)?;
        records::end_overlap(record)?;
    }
    Ok(())
}

/// The previous role's sessions end at commit and its role is dropped (what
/// it owns goes where a deleted credential's goes); event `retire`. A copy of
/// the database (the role's custody mark names another) leaves the role to
/// the database that manages it. Delete calls it alone: the deleted record
/// keeps the old name (as it keeps its role's) for the history and for
/// calls by that name.
fn drop_previous(record: &Record, why: &str) -> Result<()> {
    let Some(previous) = &record.previous_role else {
        return Ok(());
    };
    let manages = record.previous_oid.is_some() && crate::custody::manages(previous)?;
    let (ended, reassigned) = if manages {
        (end_sessions(record.previous_oid)?, drop_login(previous)?)
    } else {
        (0, 0)
    };
    let subject = Subject {
        role_name: Some(previous),
        org_id: Some(&record.org_id),
    };
    audit::record(
        "retire",
        &subject,
        json!({ "by": why, "credential_role": record.role, "dropped": manages,
                "sessions_ended": ended, "objects_reassigned": reassigned }),
    )
}

/// Every overlap that has ended by now is retired: each management call
/// runs this first, so a previous role does not outlive its overlap by more
/// than the time to the next call (it cannot log in after its VALID UNTIL
/// either way). Records another transaction holds wait for a later call.
pub fn retire_ended_overlaps() -> Result<()> {
    for role in records::overlaps_ended()? {
        let record = lock(&role)?;
        retire_previous(&record, "overlap ended")?;
    }
    Ok(())
}

/// Replaces the credential's network allowlist (None: any address). The
/// login gate checks it at every login on every server; the role is touched
/// so that its open sessions, told of the change like of a revoke (on a
/// standby once replayed), check their address again at their next
/// statement (src/guard/networks.rs).
pub fn set_networks(role: &str, allowed_networks: Option<Vec<Option<String>>>) -> Result<()> {
    let (record, status) = open(role)?;
    allow(Action::SetNetworks, &record, status)?;
    let allowed_networks = networks(allowed_networks)?;
    let stored = records::set_networks(&record, allowed_networks)?;
    roles::touch(&record.role)?;
    audit::record(
        "set_networks",
        &record.subject(),
        json!({ "allowed_networks": stored }),
    )
}

/// Login disabled, open sessions ended at commit; record and role stay.
pub fn revoke(role: &str) -> Result<()> {
    let (record, status) = open(role)?;
    allow(Action::Revoke, &record, status)?;
    revoke_locked(&record, json!({}))
}

/// During an overlap both roles lose LOGIN and their sessions; the old one
/// is retired when its overlap ends, as it would have been (activate gives
/// LOGIN back to the credential's role only).
fn revoke_locked(record: &Record, mut detail: serde_json::Value) -> Result<()> {
    roles::set_login(&record.role, false)?;
    records::set_status(record, Status::Deactivated)?;
    let mut ended = end_sessions(record.role_oid)?;
    if let (Some(previous), Some(_)) = (&record.previous_role, record.previous_oid) {
        roles::set_login(previous, false)?;
        ended += end_sessions(record.previous_oid)?;
        detail["previous_role_name"] = json!(previous);
    }
    detail["sessions_ended"] = json!(ended);
    audit::record("revoke", &record.subject(), detail)
}

pub fn activate(role: &str) -> Result<()> {
    let (record, status) = open(role)?;
    allow(Action::Activate, &record, status)?;
    roles::set_login(&record.role, true)?;
    records::set_status(&record, Status::Active)?;
    audit::record("activate", &record.subject(), json!({}))
}

/// Ends sessions, drops the role with everything it was given; the record
/// stays, marked deleted, for audit. Deleting a deleted credential changes
/// nothing, so a retried call succeeds.
pub fn delete(role: &str) -> Result<()> {
    let (record, status) = open(role)?;
    if Action::Delete.rule(status) == Rule::NoOp {
        return audit::record(
            "delete",
            &record.subject(),
            json!({ "already_deleted": true }),
        );
    }
    allow(Action::Delete, &record, status)?;
    delete_locked(&record, json!({}))
}

/// The record stays `deleting` until the target's standby has replayed the
/// drop.
fn delete_locked(record: &Record, mut detail: serde_json::Value) -> Result<()> {
    drop_previous(record, "delete")?;
    detail["sessions_ended"] = json!(end_sessions(record.role_oid)?);
    detail["objects_reassigned"] = json!(drop_login(&record.role)?);
    records::set_deleted(record)?;
    audit::record("delete", &record.subject(), detail)
}

/// Offboarding, or an incident: every credential of the org that revoke
/// accepts is revoked, in one transaction; one `revoke` event per credential
/// and one `revoke_org` for the call. Returns the roles revoked.
pub fn revoke_org(org_id: &str) -> Result<Vec<String>> {
    for_org(
        "revoke_org",
        org_id,
        |status| Action::Revoke.applies(status),
        revoke_locked,
    )
}

/// Every current credential of the org is deleted, in one transaction; its
/// custom schema stays. Events as revoke_org's. Returns the roles deleted.
pub fn delete_org(org_id: &str) -> Result<Vec<String>> {
    for_org("delete_org", org_id, Status::is_current, delete_locked)
}

fn for_org(
    action: &'static str,
    org_id: &str,
    applies: impl Fn(Status) -> bool,
    apply: impl Fn(&Record, serde_json::Value) -> Result<()>,
) -> Result<Vec<String>> {
    // Every record of the org locked in one order, then read one by one as
    // the single calls do.
    let roles = records::lock_org(org_id)?;
    if roles.is_empty() {
        return Err(BiError::NoSuchOrg(org_id.into()));
    }
    let mut done = Vec::new();
    for role in roles {
        let (record, status) = open(&role)?;
        if applies(status) {
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
    let (record, status) = open(role)?;
    allow(Action::Purge, &record, status)?;
    records::remove(&record)?;
    audit::record("purge", &record.subject(), json!({ "label": record.label }))
}

/// The record of `role`, locked, and the status it shows. A record pending
/// on a standby that has replayed it is active from now on; a role another
/// database manages is refused (src/custody.rs: a copy never manages the
/// original's roles).
fn open(role: &str) -> Result<(Record, Status)> {
    let mut record = lock(role)?;
    if record.stored == Status::Pending && record.replayed {
        records::set_status(&record, Status::Active)?;
        record.stored = Status::Active;
    }
    if record.role_exists() && record.stored != Status::Deleted {
        crate::custody::require_marked_here(role, record.custody_mark.as_deref())?;
    }
    let status = record.status();
    Ok((record, status))
}

/// 55000 unless the transition table allows `action` in `status`.
fn allow(action: Action, record: &Record, status: Status) -> Result<()> {
    if action.rule(status) == Rule::Allow {
        Ok(())
    } else {
        Err(action.refuse(&record.role, status))
    }
}

/// The org key and label, checked; 22023 for anything generate cannot use.
fn validate<'a>(request: &Request<'a>) -> Result<(&'a str, &'a str)> {
    let bad = |what: String| Err(BiError::InvalidParameter(what));
    let (org_id, label) = (request.org_id, request.label);
    if org_id.trim().is_empty() || org_id.len() > MAX_ORG_ID_LEN {
        return bad(format!(
            "org_id must be 1 to {MAX_ORG_ID_LEN} bytes and not blank"
        ));
    }
    input::name("label", label, MAX_LABEL_LEN)?;
    if let Some(org_name) = request.org_name {
        input::display_text("org_name", org_name, MAX_ORG_NAME_LEN)?;
    }
    match request.connection_limit {
        Some(limit) if limit != -1 && !(1..=MAX_CONNECTION_LIMIT).contains(&limit) => bad(format!(
            "connection_limit must be -1 (no limit) or 1 to {MAX_CONNECTION_LIMIT}, not {limit}"
        )),
        _ => Ok((org_id, label)),
    }
}

/// A network allowlist as given: None (any address), or at least one
/// network and no NULL (22023). PostgreSQL has parsed each as cidr already.
fn networks(given: Option<Vec<Option<String>>>) -> Result<Option<Vec<String>>> {
    let Some(given) = given else { return Ok(None) };
    if given.is_empty() {
        return Err(BiError::InvalidParameter(
            "allowed_networks must list at least one network (NULL allows any address)".into(),
        ));
    }
    given
        .into_iter()
        .map(|network| {
            network.ok_or_else(|| {
                BiError::InvalidParameter("allowed_networks must not contain NULL".into())
            })
        })
        .collect::<Result<Vec<String>>>()
        .map(Some)
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
    for role in records::replaceable(org_id, label)? {
        drop_login(&role)?;
        records::remove_by_role(&role)?;
        let subject = Subject {
            role_name: Some(&role),
            org_id: Some(org_id),
        };
        audit::record("replace_failed", &subject, json!({ "label": label }))?;
    }
    Ok(())
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

/// The role of a record whose role is gone (a restore without roles, a
/// role dropped by hand), as generate made it, in the state the record
/// says it was and never more: a deactivated credential comes back NOLOGIN
/// and deactivated, an expired one with its past VALID UNTIL, each with its
/// connection limit; a read_write one in its org's custom schema, whose
/// groups are created again if the restore lost them (its data stays). The
/// record is current again (and `record` says so: its stored status and its
/// role's oid).
fn recreate_role(record: &mut Record) -> Result<()> {
    let deactivated = record.stored == Status::Deactivated;
    let options = LoginOptions {
        valid_until: record.valid_until.clone(),
        connection_limit: record.connection_limit,
        login: !deactivated,
    };
    roles::create_login(&record.role, &roles::reader_group()?, &options)?;
    custom_schema::join(&record.role, &record.org_id, &record.scope)?;
    let status = after_login_change(
        &targets::of_credential(record)?,
        if deactivated {
            Status::Deactivated
        } else {
            Status::Active
        },
    );
    records::set_recreated(record, status)?;
    record.stored = status;
    record.role_oid =
        Some(roles::oid(&record.role)?.ok_or_else(|| internal("a role just created is missing"))?);
    Ok(())
}

fn end_sessions(role_oid: Option<pg_sys::Oid>) -> Result<usize> {
    match role_oid {
        Some(oid) => sessions::end_at_commit(oid),
        None => Ok(0),
    }
}

/// The record of `role`, locked (records::lock), with whether its latest
/// change is usable where the credential connects.
fn lock(role: &str) -> Result<Record> {
    let mut record = records::lock(role)?;
    if matches!(record.stored, Status::Pending | Status::Deleted) {
        record.replayed = targets::replayed_on_target(
            Some(&record.target),
            record.created_lsn.as_deref(),
            false,
        )?;
    }
    Ok(record)
}

/// The status a credential shows and, when it failed, why: the credentials
/// view's one call per row (`bi_access_internal.credential_state`).
pub fn shown_state(
    stored: &str,
    role: &str,
    target: Option<&str>,
    lsn: Option<&str>,
    expired: bool,
    syncing: bool,
    written_by: Option<u32>,
) -> Result<(Status, Option<String>)> {
    let stored = Status::parse(stored)?;
    // SAFETY: a check of this backend's own transaction state.
    let uncommitted = written_by.is_some_and(|xid| unsafe {
        pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(xid))
    });
    let facts = if matches!(stored, Status::Failed | Status::Deleted | Status::Deleting) {
        crate::status::Facts {
            role_exists: true,
            custody_problem: None,
            expired,
            syncing,
        }
    } else {
        let role_exists = crate::roles::exists(role)?;
        crate::status::Facts {
            role_exists,
            custody_problem: if role_exists {
                crate::custody::problem(role)?
            } else {
                None
            },
            expired,
            syncing,
        }
    };
    crate::status::effective(stored, &facts, || {
        targets::replayed_on_target(target, lsn, uncommitted)
    })
}

/// Drops the credential's role; what it owns goes to its org's custom schema
/// owner group (a read_write credential's) or the extension's owner.
fn drop_login(role: &str) -> Result<i64> {
    roles::drop_login(role, || custom_schema::heir_of(role))
}

/// The connection details of the credential of `record`, logging in as
/// `role` (its role, or the new one of a rotation) with `password`.
fn details(
    record: &Record,
    role: &str,
    password: String,
    target: &targets::Target,
) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
    let custom_schema = record.custom_schema.clone();
    Details::new(
        role,
        password,
        &record.org(),
        target,
        &record.scope,
        custom_schema,
    )?
    .into_tuple()
}
