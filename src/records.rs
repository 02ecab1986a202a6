//! The store: the credential records and the event log. Every statement on
//! `bi_access.credential` and `bi_access.event` of the lifecycle is here,
//! and each returns plain data. It is the bottom layer: it imports nothing
//! but `db`, `error`, `names`, `settings`, `status` and `compat` (no
//! catalog module: roles, targets, custody, custom schemas; no case). `lock`
//! reads a record together with its role (oid, custody mark) in one query
//! and decides nothing; `status` decides, and `credentials` orchestrates.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::db;
use crate::error::{BiError, Result};
use crate::names;
use crate::settings;
use crate::status::{self, Facts, Status};

/// The predicate of the partial unique index `credential_live_org_label`
/// (sql/bootstrap.sql) on the stored status: a current record
/// (`Status::is_current`; `deleting` is stored as `deleted`). `ON CONFLICT`
/// must spell it as the index does.
pub const CURRENT: &str = "status NOT IN ('failed', 'deleted')";

/// A live credential (`Status::is_live`) on the status the credentials view
/// shows. The targets view (sql/api.sql) spells it too: a #[pg_test] holds
/// all three equal.
pub const LIVE: &str = "status IN ('pending', 'active', 'syncing')";

/// The org a credential serves, as its connection details show it.
pub struct Org<'a> {
    pub org_id: &'a str,
    pub org_name: Option<&'a str>,
    pub label: &'a str,
}

/// Who an event is about.
pub struct Subject<'a> {
    pub role_name: Option<&'a str>,
    pub org_id: Option<&'a str>,
}

pub const NO_SUBJECT: Subject<'static> = Subject {
    role_name: None,
    org_id: None,
};

/// Appends one event (`actor`: the login, plus the application's user when
/// it set `bi_access.actor`).
pub fn append_event(action: &str, subject: &Subject, detail: serde_json::Value) -> Result<()> {
    db::exec(
        "INSERT INTO bi_access.event (action, role_name, org_id, actor, detail) \
         VALUES ($1, $2, $3, session_user || coalesce(' (' || $4 || ')', ''), $5)",
        &[
            action.into(),
            subject.role_name.into(),
            subject.org_id.into(),
            settings::actor().into(),
            JsonB(detail).into(),
        ],
    )
}

/// One record, locked FOR UPDATE for the rest of the transaction, with what
/// the catalogs say of its role when it was read.
pub struct Record {
    pub id: i64,
    pub org_id: String,
    pub org_name: Option<String>,
    pub label: String,
    pub role: String,
    /// The status as stored (`status()` is the one it shows).
    pub stored: Status,
    pub target: String,
    pub valid_until: Option<String>,
    pub connection_limit: Option<i32>,
    pub secret: Option<Vec<u8>>,
    pub sealed_with: Option<String>,
    /// The role's oid; None when the role does not exist.
    pub role_oid: Option<pg_sys::Oid>,
    /// The role's comment: which database manages it (src/custody.rs).
    pub custody_mark: Option<String>,
    /// `valid_until` has passed.
    pub expired: bool,
    /// The target's standby has replayed the record's latest change (read
    /// for a pending or deleted record only, by the caller of `lock`: true
    /// otherwise).
    pub replayed: bool,
    /// The LSN of the record's latest change.
    pub created_lsn: Option<String>,
    /// read or read_write, and a read_write credential's custom schema.
    pub scope: String,
    pub custom_schema: Option<String>,
    /// During an overlap rotation: the role it had before, which logs in
    /// until `previous_until` (src/credentials.rs).
    pub previous_role: Option<String>,
    pub previous_oid: Option<pg_sys::Oid>,
}

impl Record {
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            role_name: Some(&self.role),
            org_id: Some(&self.org_id),
        }
    }

    pub fn org(&self) -> Org<'_> {
        Org {
            org_id: &self.org_id,
            org_name: self.org_name.as_deref(),
            label: &self.label,
        }
    }

    pub fn role_exists(&self) -> bool {
        self.role_oid.is_some()
    }

    /// The status it shows (src/status.rs), as the credentials view does;
    /// which database manages the role is checked by the caller, which
    /// refuses to manage another's (custody::require_marked_here).
    pub fn status(&self) -> Status {
        let facts = Facts {
            role_exists: self.role_exists(),
            custody_problem: None,
            expired: self.expired,
            syncing: false,
        };
        status::effective(self.stored, &facts, || Ok(self.replayed))
            .map(|(status, _)| status)
            .unwrap_or(self.stored)
    }
}

/// The record of `role` (its role, or during an overlap its previous one)
/// and its role, locked FOR UPDATE; 42704 if none.
pub fn lock(role: &str) -> Result<Record> {
    let found = Spi::connect_mut(|client| {
        let table = client.update(
            "SELECT c.id, c.org_id, c.org_name, c.label, c.status::text, c.created_lsn::text, \
                    coalesce(c.valid_until <= now(), false), c.target, c.valid_until::text, \
                    c.connection_limit, c.secret, c.sealed_with, \
                    r.oid, pg_catalog.shobj_description(r.oid, 'pg_authid'), \
                    c.role_name::text, c.previous_role_name::text, p.oid, \
                    c.scope, cs.schema_name::text \
             FROM bi_access.credential c \
             LEFT JOIN pg_catalog.pg_roles r ON r.rolname = c.role_name \
             LEFT JOIN pg_catalog.pg_roles p ON p.rolname = c.previous_role_name \
             LEFT JOIN bi_access.custom_schema cs \
                    ON cs.org_id = c.org_id AND c.scope = 'read_write' \
             WHERE $1 IN (c.role_name, c.previous_role_name) FOR UPDATE OF c",
            Some(1),
            &[role.into()],
        )?;
        if table.is_empty() {
            return Ok::<_, BiError>(None);
        }
        let row = table.first();
        let stored = Status::parse(&row.get::<String>(5)?.unwrap_or_default())?;
        Ok(Some(Record {
            id: row.get::<i64>(1)?.unwrap_or_default(),
            org_id: row.get::<String>(2)?.unwrap_or_default(),
            org_name: row.get::<String>(3)?,
            label: row.get::<String>(4)?.unwrap_or_default(),
            role: row.get::<String>(15)?.unwrap_or_else(|| role.to_string()),
            stored,
            target: row
                .get::<String>(8)?
                .unwrap_or_else(|| names::DEFAULT_TARGET.into()),
            valid_until: row.get::<String>(9)?,
            connection_limit: row.get::<i32>(10)?,
            secret: row.get::<Vec<u8>>(11)?,
            sealed_with: row.get::<String>(12)?,
            role_oid: row.get::<pg_sys::Oid>(13)?,
            custody_mark: row.get::<String>(14)?,
            expired: row.get::<bool>(7)?.unwrap_or(false),
            replayed: true,
            previous_role: row.get::<String>(16)?,
            previous_oid: row.get::<pg_sys::Oid>(17)?,
            created_lsn: row.get::<String>(6)?,
            scope: row.get::<String>(18)?.unwrap_or_else(|| "read".into()),
            custom_schema: row.get::<String>(19)?,
        }))
    })?;
    found.ok_or_else(|| BiError::NoSuchCredential(role.into()))
}

/// Every record of the org, locked in one order (so two offboarding calls
/// cannot deadlock); their roles.
pub fn lock_org(org_id: &str) -> Result<Vec<String>> {
    Spi::connect_mut(|client| {
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
        Ok(roles)
    })
}

/// A new record, as generate asks for it.
pub struct New<'a> {
    pub org_id: &'a str,
    pub org_name: Option<&'a str>,
    pub label: &'a str,
    pub role: &'a str,
    pub status: Status,
    pub valid_until: Option<&'a str>,
    pub connection_limit: i32,
    pub target: &'a str,
    /// `read` or `read_write` (src/custom_schema.rs).
    pub scope: &'a str,
    /// cidr text of each network it may log in from; None: any.
    pub allowed_networks: Option<Vec<String>>,
}

/// Inserts the record; false when a current one holds its (org_id, label)
/// (concurrent generates serialize on the partial unique index).
pub fn insert(new: &New) -> Result<bool> {
    let inserted = db::first_mut::<i64>(
        &format!(
            "INSERT INTO bi_access.credential \
                 (org_id, org_name, label, role_name, status, valid_until, connection_limit, target, scope, \
                  allowed_networks) \
             VALUES ($1, $2, $3, $4, $5::bi_access.credential_status, $6::timestamptz, $7, $8, $9, \
                     $10::cidr[]) \
             ON CONFLICT (org_id, label) WHERE {CURRENT} DO NOTHING \
             RETURNING id"
        ),
        &[
            new.org_id.into(),
            new.org_name.into(),
            new.label.into(),
            new.role.into(),
            new.status.as_str().into(),
            new.valid_until.into(),
            new.connection_limit.into(),
            new.target.into(),
            new.scope.into(),
            new.allowed_networks.clone().into(),
        ],
    )?;
    Ok(inserted.is_some())
}

/// The role of the current record of (org_id, label), for 23505's hint.
pub fn current_role_of(org_id: &str, label: &str) -> Result<Option<String>> {
    db::first::<String>(
        &format!(
            "SELECT role_name::text FROM bi_access.credential \
             WHERE org_id = $1 AND label = $2 AND {CURRENT}"
        ),
        &[org_id.into(), label.into()],
    )
}

/// Records of (org_id, label) that generate replaces: failed, or current
/// with their role gone.
pub fn replaceable(org_id: &str, label: &str) -> Result<Vec<String>> {
    db::column::<String>(
        "SELECT role_name::text FROM bi_access.credential \
         WHERE org_id = $1 AND label = $2 \
           AND (status = $3::bi_access.credential_status \
                OR (status <> $4::bi_access.credential_status \
                    AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name)))",
        &[
            org_id.into(),
            label.into(),
            Status::Failed.as_str().into(),
            Status::Deleted.as_str().into(),
        ],
    )
}

pub fn remove_by_role(role: &str) -> Result<()> {
    db::exec(
        "DELETE FROM bi_access.credential WHERE role_name = $1",
        &[role.into()],
    )
}

pub fn remove(record: &Record) -> Result<()> {
    db::exec(
        "DELETE FROM bi_access.credential WHERE id = $1",
        &[record.id.into()],
    )
}

/// The sealed password of a new role, and the WAL position the standby must
/// replay before the role can log in there.
pub fn store_first_secret(role: &str, sealed: Vec<u8>, sealed_with: &str) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential \
         SET secret = $2, sealed_with = $3, created_lsn = pg_catalog.pg_current_wal_insert_lsn() \
         WHERE role_name = $1",
        &[role.into(), sealed.into(), sealed_with.into()],
    )
}

/// A new password (sealed), an expiry if given, and the status it has now.
pub fn store_new_password(
    record: &Record,
    sealed: Vec<u8>,
    sealed_with: &str,
    valid_until: Option<&str>,
    status: Status,
) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential \
         SET secret = $2, sealed_with = $4, rotated_at = now(), updated_at = now(), last_error = NULL, \
             valid_until = coalesce($3::timestamptz, valid_until), \
             created_lsn = pg_catalog.pg_current_wal_insert_lsn(), \
             status = $5::bi_access.credential_status \
         WHERE id = $1",
        &[
            record.id.into(),
            sealed.into(),
            valid_until.into(),
            sealed_with.into(),
            status.as_str().into(),
        ],
    )
}

/// An overlap rotation: the record's role is `role` from now on, with its
/// first sealed password; the role it had logs in until `previous_until`.
pub struct Rotation<'a> {
    pub role: &'a str,
    pub sealed: Vec<u8>,
    pub sealed_with: &'a str,
    pub valid_until: Option<&'a str>,
    pub previous_until: &'a str,
    pub status: Status,
}

pub fn start_overlap(record: &Record, rotation: Rotation) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential \
         SET previous_role_name = role_name, previous_until = $6::timestamptz, role_name = $2, \
             secret = $3, sealed_with = $4, rotated_at = now(), updated_at = now(), last_error = NULL, \
             valid_until = coalesce($5::timestamptz, valid_until), \
             created_lsn = pg_catalog.pg_current_wal_insert_lsn(), \
             status = $7::bi_access.credential_status \
         WHERE id = $1",
        &[
            record.id.into(),
            rotation.role.into(),
            rotation.sealed.into(),
            rotation.sealed_with.into(),
            rotation.valid_until.into(),
            rotation.previous_until.into(),
            rotation.status.as_str().into(),
        ],
    )
}

/// The overlap is over: the record has one role again.
pub fn end_overlap(record: &Record) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential \
         SET previous_role_name = NULL, previous_until = NULL, updated_at = now() WHERE id = $1",
        &[record.id.into()],
    )
}

/// The previous roles whose overlap has ended (by the clock, not the
/// transaction's start: a long transaction retires what ended during it),
/// but those whose record another transaction holds; a deleted record
/// keeps its previous role's name (delete dropped the role).
pub fn overlaps_ended() -> Result<Vec<String>> {
    Spi::connect_mut(|client| {
        let mut roles = Vec::new();
        let table = client.update(
            "SELECT previous_role_name::text FROM bi_access.credential \
             WHERE previous_until <= pg_catalog.clock_timestamp() AND status <> 'deleted' \
             ORDER BY id FOR UPDATE SKIP LOCKED",
            None,
            &[],
        )?;
        for row in table {
            if let Some(role) = row.get::<String>(1)? {
                roles.push(role);
            }
        }
        Ok(roles)
    })
}

/// The new network allowlist (None: any address); returns it as stored
/// (each network as cidr prints it), for the event.
pub fn set_networks(record: &Record, networks: Option<Vec<String>>) -> Result<Option<Vec<String>>> {
    db::first_mut::<Vec<String>>(
        "UPDATE bi_access.credential SET allowed_networks = $2::cidr[], updated_at = now() \
         WHERE id = $1 RETURNING allowed_networks::text[]",
        &[record.id.into(), networks.into()],
    )
}

/// The allowlist test, for a `cidr[]` expression `list`: true when the
/// client's address is in no network of it (over a Unix socket there is no
/// address: true as well). The login gate's one spelling of it.
pub fn address_outside(list: &str) -> String {
    format!(
        "NOT coalesce(pg_catalog.inet_client_addr() OPERATOR(pg_catalog.<<=) ANY ({list}), false)"
    )
}

/// The login gate, as the bootstrap superuser: whether the session's
/// client address (libpq's, from MyProcPort; none over a Unix socket) is
/// outside its credential's allowlist. No record here (a Citus worker's
/// credential) or no list: not refused; nor before ALTER EXTENSION UPDATE
/// has added the column (the upgrade window: 0.2.0 had no lists). Every
/// name is schema-qualified: the login's search_path is its own.
pub fn session_address_refused() -> Result<bool> {
    if !has_03_columns()? {
        return Ok(false);
    }
    Ok(db::first::<bool>(
        &format!(
            "SELECT {} FROM bi_access.credential c WHERE {} AND c.allowed_networks IS NOT NULL",
            address_outside("c.allowed_networks"),
            role_of("c", "session_user")?
        ),
        &[],
    )?
    .unwrap_or(false))
}

/// The login gate, as the bootstrap superuser: during an overlap rotation
/// of the session's credential, the oid of its other role and the
/// credential's connection limit (none when it has no limit).
pub fn overlap_of_session_user() -> Result<Option<(i64, i32)>> {
    if !has_03_columns()? {
        return Ok(None);
    }
    Spi::connect(|client| {
        let table = client.select(
            &format!(
                "SELECT o.oid::pg_catalog.int8, c.connection_limit FROM bi_access.credential c \
                 JOIN pg_catalog.pg_authid o ON o.rolname OPERATOR(pg_catalog.=) \
                      (CASE WHEN c.role_name OPERATOR(pg_catalog.=) session_user \
                            THEN c.previous_role_name ELSE c.role_name END) \
                 WHERE {} AND c.previous_role_name IS NOT NULL \
                   AND c.connection_limit OPERATOR(pg_catalog.>=) 0",
                role_of("c", "session_user")?
            ),
            Some(1),
            &[],
        )?;
        for row in table {
            if let (Some(oid), Some(limit)) = (row.get::<i64>(1)?, row.get::<i32>(2)?) {
                return Ok(Some((oid, limit)));
            }
        }
        Ok(None)
    })
}

thread_local! {
    /// This database's records have 0.3.0's columns (once seen, for good:
    /// no downgrade script exists).
    static HAS_03_COLUMNS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether ALTER EXTENSION UPDATE has added 0.3.0's columns (allowed_networks,
/// previous_role_name, previous_until): in the upgrade window a login and a
/// BI statement run against 0.2.0's table, which had no allowlists and no
/// overlaps. Every name is schema-qualified: a login's search_path is its own.
fn has_03_columns() -> Result<bool> {
    if HAS_03_COLUMNS.get() {
        return Ok(true);
    }
    let has = db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a \
                        WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('bi_access.credential') \
                          AND a.attname OPERATOR(pg_catalog.=) 'previous_role_name' AND NOT a.attisdropped)",
        &[],
    )?
    .unwrap_or(false);
    HAS_03_COLUMNS.set(has);
    Ok(has)
}

/// The predicate "`who` is the login of record `c`": its role or, during an
/// overlap rotation, its previous one; its role only in the upgrade window.
/// Two equalities, so that each can use its unique index.
fn role_of(c: &str, who: &str) -> Result<String> {
    Ok(if has_03_columns()? {
        format!(
            "({c}.role_name OPERATOR(pg_catalog.=) {who} OR {c}.previous_role_name OPERATOR(pg_catalog.=) {who})"
        )
    } else {
        format!("{c}.role_name OPERATOR(pg_catalog.=) {who}")
    })
}

pub fn set_status(record: &Record, status: Status) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential \
         SET status = $2::bi_access.credential_status, updated_at = now() WHERE id = $1",
        &[record.id.into(), status.as_str().into()],
    )
}

/// Its role was recreated: the status it starts with, and the WAL position
/// of the creation.
pub fn set_recreated(record: &Record, status: Status) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential SET status = $2::bi_access.credential_status, \
             created_lsn = pg_catalog.pg_current_wal_insert_lsn() WHERE id = $1",
        &[record.id.into(), status.as_str().into()],
    )
}

/// Deleted, its secret forgotten; `deleting` until the target's standby has
/// replayed past the drop (created_lsn).
pub fn set_deleted(record: &Record) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential SET status = $2::bi_access.credential_status, secret = NULL, \
                updated_at = now(), created_lsn = pg_catalog.pg_current_wal_insert_lsn() \
         WHERE id = $1",
        &[record.id.into(), Status::Deleted.as_str().into()],
    )
}

/// Which sealed secrets (records with a secret) a statement is about.
pub enum Sealed<'a> {
    All,
    /// Sealed by 0.1.0's key file: no fingerprint.
    Legacy,
    With(&'a str),
    /// Not sealed with this key (None: with any key but 0.1.0's).
    NotWith(Option<&'a str>),
}

impl Sealed<'_> {
    fn condition(&self) -> &'static str {
        match self {
            Sealed::All => "true",
            Sealed::Legacy => "sealed_with IS NULL",
            Sealed::With(_) => "sealed_with = $1",
            Sealed::NotWith(_) => "sealed_with IS DISTINCT FROM $1",
        }
    }

    fn args(&self) -> Vec<pgrx::datum::DatumWithOid<'_>> {
        match self {
            Sealed::All | Sealed::Legacy => vec![],
            Sealed::With(fingerprint) => vec![(*fingerprint).into()],
            Sealed::NotWith(fingerprint) => vec![(*fingerprint).into()],
        }
    }
}

pub fn count_sealed(which: Sealed) -> Result<i64> {
    Ok(db::first::<i64>(
        &format!(
            "SELECT count(*) FROM bi_access.credential WHERE secret IS NOT NULL AND {}",
            which.condition()
        ),
        &which.args(),
    )?
    .unwrap_or(0))
}

/// (id, role, sealed secret) of each.
pub fn sealed_secrets(which: Sealed) -> Result<Vec<(i64, String, Vec<u8>)>> {
    read_sealed(which, "")
}

/// The same, each record locked FOR UPDATE (in one order) for the rest of
/// the transaction: a re-seal then overwrites no concurrent change (a
/// delete's forgotten secret, a regenerate's new one).
pub fn lock_sealed_secrets(which: Sealed) -> Result<Vec<(i64, String, Vec<u8>)>> {
    read_sealed(which, "ORDER BY id FOR UPDATE")
}

fn read_sealed(which: Sealed, tail: &str) -> Result<Vec<(i64, String, Vec<u8>)>> {
    Spi::connect_mut(|client| {
        let mut rows = Vec::new();
        for row in client.update(
            &format!(
                "SELECT id, role_name::text, secret FROM bi_access.credential \
                 WHERE secret IS NOT NULL AND {} {tail}",
                which.condition()
            ),
            None,
            &which.args(),
        )? {
            rows.push((
                row.get::<i64>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<Vec<u8>>(3)?.unwrap_or_default(),
            ));
        }
        Ok(rows)
    })
}

pub fn set_sealed_with(id: i64, fingerprint: &str) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential SET sealed_with = $2 WHERE id = $1",
        &[id.into(), fingerprint.into()],
    )
}

pub fn reseal(id: i64, secret: Vec<u8>, fingerprint: &str) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential SET secret = $2, sealed_with = $3 WHERE id = $1",
        &[id.into(), secret.into(), fingerprint.into()],
    )
}

/// Forgets every sealed secret, saying why in `last_error`; their roles.
pub fn forget_secrets(why: &str) -> Result<Vec<String>> {
    Spi::connect_mut(|client| {
        let mut roles = Vec::new();
        for row in client.update(
            "UPDATE bi_access.credential \
             SET secret = NULL, sealed_with = NULL, updated_at = now(), last_error = $1 \
             WHERE secret IS NOT NULL RETURNING role_name::text",
            None,
            &[why.into()],
        )? {
            roles.extend(row.get::<String>(1)?);
        }
        Ok(roles)
    })
}

pub fn unmark_sealed_with(fingerprint: &str) -> Result<()> {
    db::exec(
        "UPDATE bi_access.credential SET sealed_with = NULL WHERE sealed_with = $1",
        &[fingerprint.into()],
    )
}

/// How many current records exist (DROP EXTENSION is refused while any do).
pub fn count_current() -> Result<i64> {
    Ok(db::first::<i64>(
        &format!("SELECT count(*) FROM bi_access.credential WHERE {CURRENT}"),
        &[],
    )?
    .unwrap_or(0))
}

/// How many current records whose role exists point at `target`, locked so
/// no generate for it commits in between (generate reads the target row FOR
/// SHARE).
pub fn lock_current_using(target: &str) -> Result<i64> {
    Ok(db::first_mut::<i64>(
        &format!(
            "SELECT count(*) FROM (SELECT FROM bi_access.credential \
                                   WHERE target = $1 AND {CURRENT} \
                                     AND EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) \
                                   FOR UPDATE) c"
        ),
        &[target.into()],
    )?
    .unwrap_or(0))
}

/// Roles of current records whose role exists (`unmarked`: only those
/// whose role has no custody mark yet).
pub fn current_roles(unmarked: bool) -> Result<Vec<String>> {
    db::column::<String>(
        "SELECT c.role_name::text FROM bi_access.credential c \
         JOIN pg_catalog.pg_roles r ON r.rolname = c.role_name \
         WHERE c.status::text <> ALL ($1) \
           AND (NOT $2 OR pg_catalog.shobj_description(r.oid, 'pg_authid') IS NULL) \
         ORDER BY 1",
        &[Status::names(|s| !s.is_current()).into(), unmarked.into()],
    )
}

/// (role, org key) of every current record, for check()'s keys that no
/// exposed org column prints.
pub fn current_keys() -> Result<Vec<(String, String)>> {
    db::text_pairs(
        &format!(
            "SELECT role_name::text, org_id FROM bi_access.credential \
             WHERE {CURRENT} ORDER BY role_name"
        ),
        &[],
    )
}

/// Roles of current records whose role does not exist (a restore without
/// roles, a role dropped by hand).
pub fn current_roles_without_role() -> Result<Vec<String>> {
    db::column::<String>(
        &format!(
            "SELECT c.role_name::text FROM bi_access.credential c \
             WHERE c.{CURRENT} \
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = c.role_name) \
             ORDER BY c.id"
        ),
        &[],
    )
}

/// Roles of current records whose role has the role setting `setting`
/// (`name=value`, for every database) when `wanted` is false, or lacks it
/// when it is true.
pub fn current_roles_setting_differs(setting: &str, wanted: bool) -> Result<Vec<String>> {
    db::column::<String>(
        "SELECT c.role_name::text \
         FROM bi_access.credential c \
         JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) c.role_name \
         WHERE c.status::pg_catalog.text OPERATOR(pg_catalog.<>) ALL ($3::pg_catalog.text[]) \
           AND EXISTS (SELECT FROM pg_catalog.pg_db_role_setting s \
                       WHERE s.setrole OPERATOR(pg_catalog.=) r.oid \
                         AND s.setdatabase OPERATOR(pg_catalog.=) 0::pg_catalog.oid \
                         AND $1::text OPERATOR(pg_catalog.=) ANY (s.setconfig)) \
               IS DISTINCT FROM $2::boolean \
         ORDER BY 1",
        &[
            setting.into(),
            wanted.into(),
            Status::names(|s| !s.is_current()).into(),
        ],
    )
}

/// The org key of a live credential role of this database, for the org
/// lookup every BI query makes (src/org.rs). It runs under the caller's
/// search_path: every name and operator is schema-qualified. `mark` is this
/// database's custody mark: a role another database manages gets nothing.
pub fn live_org_of(role: &str, role_oid: pg_sys::Oid, mark: &str) -> Result<Option<String>> {
    db::first::<String>(
        &format!(
            "{} AND coalesce(pg_catalog.shobj_description($3, 'pg_authid'), $4) \
                         OPERATOR(pg_catalog.=) $4",
            live_org()?
        ),
        &[
            role.into(),
            Status::names(Status::is_live).into(),
            role_oid.into(),
            mark.into(),
        ],
    )
}

/// The same, whatever the role's mark says (the org lookup then asks
/// custody: after pg_upgrade the mark names the old system until a sync).
pub fn live_org_of_any_mark(role: &str) -> Result<Option<String>> {
    db::first::<String>(
        &live_org()?,
        &[role.into(), Status::names(Status::is_live).into()],
    )
}

fn live_org() -> Result<String> {
    Ok(format!(
        "SELECT c.org_id FROM bi_access.credential c WHERE {} \
           AND c.status::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[])",
        role_of("c", "$1::pg_catalog.name")?
    ))
}

/// The role and its verifier, only when all of these hold:
/// - this database's bi_access has a record for it whose status is live
///   (pending, active or syncing: on a standby, what the primary recorded and
///   this server replayed together with the role's password) and that has
///   not expired;
/// - the role can log in now (LOGIN, VALID UNTIL in the future), so a revoked
///   or expired credential gets no row even before its record says so;
/// - it is a member of this database's reader group and of
///   bi_access_credential, and its custody mark (src/custody.rs) says this
///   database manages it: a copy of the database (restored, or created from
///   it as a template) never vouches for the original's roles, nor does a
///   restore into another cluster before a sync adopted them;
/// - its password is a SCRAM-SHA-256 verifier (PgBouncer's
///   auth_type = scram-sha-256 needs one; bi_access never stores anything
///   else) and it has no attribute a credential never has.
///
/// During an overlap rotation either role of the credential qualifies: the
/// previous one until its VALID UNTIL.
const LIVE_VERIFIER: &str = "\
SELECT a.rolname::pg_catalog.text, a.rolpassword \
FROM bi_access.credential c \
JOIN pg_catalog.pg_authid a ON a.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.name \
WHERE {role_of} \
  AND c.status::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]) \
  AND (c.valid_until IS NULL OR c.valid_until OPERATOR(pg_catalog.>) pg_catalog.now()) \
  AND a.rolcanlogin \
  AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil OPERATOR(pg_catalog.>) pg_catalog.now()) \
  AND NOT (a.rolsuper OR a.rolreplication OR a.rolbypassrls OR a.rolcreaterole OR a.rolcreatedb) \
  AND pg_catalog.starts_with(a.rolpassword, 'SCRAM-SHA-256$') \
  AND EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
              JOIN pg_catalog.pg_authid g ON g.oid OPERATOR(pg_catalog.=) m.roleid \
              JOIN bi_access.config cfg ON g.rolname OPERATOR(pg_catalog.=) cfg.reader_role \
              WHERE m.member OPERATOR(pg_catalog.=) a.oid) \
  AND EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
              JOIN pg_catalog.pg_authid g ON g.oid OPERATOR(pg_catalog.=) m.roleid \
              WHERE m.member OPERATOR(pg_catalog.=) a.oid \
                AND g.rolname OPERATOR(pg_catalog.=) 'bi_access_credential')";

/// PgBouncer's auth_query (src/pooler.rs): the role and SCRAM verifier of
/// `username` if it is a live credential as above.
pub fn live_verifier(username: &str) -> Result<Option<(String, String)>> {
    Spi::connect(|client| {
        let table = client.select(
            &LIVE_VERIFIER.replace("{role_of}", &role_of("c", "$1::pg_catalog.name")?),
            Some(1),
            &[username.into(), Status::names(Status::is_live).into()],
        )?;
        for row in table {
            let role = row.get::<String>(1)?;
            let secret = row.get::<String>(2)?;
            if let (Some(role), Some(secret)) = (role, secret) {
                return Ok(Some((role, secret)));
            }
        }
        Ok(None)
    })
}

/// For the login gate's org connection limit: how many of `sessions` (the
/// login roles of other BI sessions of this database, by OID) are
/// credentials of the login's org; None where this database has no
/// bi_access (a credential of another database visiting). Runs under the
/// session's search_path: every name is schema-qualified.
pub fn sessions_of_my_org(sessions: Vec<i64>) -> Result<Option<i64>> {
    if !installed_here()? {
        return Ok(None);
    }
    db::first::<i64>(
        &format!(
            "SELECT count(*) FROM pg_catalog.unnest($1::pg_catalog.int8[]) AS s(role) \
             JOIN pg_catalog.pg_authid a ON a.oid OPERATOR(pg_catalog.=) s.role::pg_catalog.oid \
             JOIN bi_access.credential c ON {} \
             WHERE c.org_id OPERATOR(pg_catalog.=) (SELECT k.org_id FROM bi_access.credential k WHERE {})",
            role_of("c", "a.rolname")?,
            role_of("k", "session_user")?
        ),
        &[sessions.into()],
    )
}

/// Whether bi_access's records exist in this database (a login may reach
/// one without the extension).
fn installed_here() -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT pg_catalog.to_regclass('bi_access.credential') IS NOT NULL",
        &[],
    )?
    .unwrap_or(false))
}

/// Whether this database manages the session's login: bi_access is
/// installed here and holds a record of the role. Runs under the session's
/// search_path: every name is schema-qualified.
pub fn manages_session_user() -> Result<bool> {
    if !installed_here()? {
        return Ok(false);
    }
    Ok(db::first::<bool>(
        &format!(
            "SELECT EXISTS (SELECT FROM bi_access.credential c WHERE {})",
            role_of("c", "session_user")?
        ),
        &[],
    )?
    .unwrap_or(false))
}

/// check(): (object, fix) of each credential role with an attribute or a
/// membership bi_access never gives. The fix is the exact statements: the
/// attributes it has taken away, each membership that is not its groups'
/// revoked, and (`settable`: a membership's SQL that allows SET ROLE, 16 and
/// later; `false` before) each of its own groups granted again without SET.
pub fn overgranted_roles(reader: &str, settable: &str) -> Result<Vec<(String, String)>> {
    db::text_pairs(
        &format!(
            "WITH extra AS ( \
               SELECT m.member, g.rolname, \
                      g.rolname IN ($1, 'bi_access_credential') \
                      OR EXISTS (SELECT FROM bi_access.custom_schema cs \
                                 WHERE cs.org_id = c.org_id \
                                   AND (g.rolname = cs.reader_role \
                                        OR (c.scope = 'read_write' AND g.rolname = cs.owner_role))) AS own, \
                      {settable} AS settable \
               FROM bi_access.credential c \
               JOIN pg_catalog.pg_roles r ON r.rolname = c.role_name \
               JOIN pg_catalog.pg_auth_members m ON m.member = r.oid \
               JOIN pg_catalog.pg_roles g ON g.oid = m.roleid) \
             SELECT 'role ' || quote_ident(r.rolname), \
                    concat_ws(' ', \
                      CASE WHEN cardinality(a.attributes) > 0 \
                           THEN format('ALTER ROLE %I %s;', r.rolname, array_to_string(a.attributes, ' ')) END, \
                      (SELECT string_agg(format('REVOKE %I FROM %I;', e.rolname, r.rolname), ' ' \
                                         ORDER BY e.rolname) \
                       FROM extra e WHERE e.member = r.oid AND NOT e.own), \
                      (SELECT string_agg(format('REVOKE %I FROM %I; GRANT %I TO %I WITH INHERIT TRUE, SET FALSE;', \
                                                e.rolname, r.rolname, e.rolname, r.rolname), ' ' ORDER BY e.rolname) \
                       FROM extra e WHERE e.member = r.oid AND e.own AND e.settable)) \
             FROM bi_access.credential c JOIN pg_catalog.pg_roles r ON r.rolname = c.role_name, \
             LATERAL (SELECT array_remove(ARRAY[ \
                        CASE WHEN r.rolsuper THEN 'NOSUPERUSER' END, \
                        CASE WHEN r.rolcreatedb THEN 'NOCREATEDB' END, \
                        CASE WHEN r.rolcreaterole THEN 'NOCREATEROLE' END, \
                        CASE WHEN r.rolreplication THEN 'NOREPLICATION' END, \
                        CASE WHEN r.rolbypassrls THEN 'NOBYPASSRLS' END], NULL) AS attributes) a \
             WHERE cardinality(a.attributes) > 0 \
                OR EXISTS (SELECT FROM extra e WHERE e.member = r.oid AND (NOT e.own OR e.settable)) \
             ORDER BY 1",
        ),
        &[reader.into()],
    )
}

/// check(): (object, fix) of each credential role of the cluster (a member
/// of bi_access_credential) that no database manages any more: not in a live
/// reader group (`reader_groups`: a `WITH readers` CTE, health.rs) and not
/// recorded here as anything but deleted.
pub fn unmanaged_credential_roles(reader_groups: &str) -> Result<Vec<(String, String)>> {
    db::text_pairs(
        &format!(
            "{reader_groups} \
             SELECT 'role ' || quote_ident(r.rolname), format('DROP ROLE %I;', r.rolname) \
             FROM pg_catalog.pg_roles r \
             JOIN pg_catalog.pg_auth_members m ON m.member = r.oid \
             JOIN pg_catalog.pg_roles g ON g.oid = m.roleid AND g.rolname = $2 \
             WHERE NOT starts_with(r.rolname, $1) \
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members rm \
                               JOIN readers rd ON rd.oid = rm.roleid \
                               WHERE rm.member = r.oid AND rd.alive) \
               AND NOT EXISTS (SELECT FROM bi_access.credential c \
                               WHERE c.role_name = r.rolname AND c.status::text <> $3) \
             ORDER BY 1"
        ),
        &[
            crate::names::READER_GROUP_PREFIX.into(),
            crate::names::CREDENTIAL_GROUP.into(),
            Status::Deleted.as_str().into(),
        ],
    )
}

/// check(): (object, fix) of each current credential without a login on
/// this server for `stale_after_s` seconds: its last login here, or the
/// server's start if it has none since (the counters start then), and its
/// creation, all that long ago.
pub fn stale_credentials(stale_after_s: i32) -> Result<Vec<(String, String)>> {
    db::text_pairs(
        &format!(
            "SELECT 'credential ' || quote_ident(c.role_name::text), \
                    format('SELECT bi_access.revoke(%L);  -- if no BI tool uses it any more', c.role_name) \
             FROM bi_access.credentials c \
             WHERE c.{LIVE} \
               AND greatest(c.created_at, \
                            coalesce(c.last_login_at, pg_catalog.pg_postmaster_start_time())) \
                   <= pg_catalog.now() - pg_catalog.make_interval(secs => $1) \
             ORDER BY 1"
        ),
        &[f64::from(stale_after_s).into()],
    )
}

/// The first step of `CALL bi_access.sync()`: which backend syncs. Every
/// current credential reads `syncing` while that backend runs the procedure
/// (`sync_running`), and at no other time: nothing is written on the
/// records, so a sync cancelled, timed out or killed leaves nothing
/// `syncing`, and no step waits on a credential's row.
pub fn begin_sync() -> Result<()> {
    db::exec(
        "UPDATE bi_access.config SET sync_pid = pg_catalog.pg_backend_pid()",
        &[],
    )
}

/// The last step of this backend's `CALL bi_access.sync()` (a sync that
/// skipped never began, and leaves the running one's pid as it is).
pub fn end_sync() -> Result<()> {
    db::exec(
        "UPDATE bi_access.config SET sync_pid = NULL \
         WHERE sync_pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()",
        &[],
    )
}

/// Serialises the syncs of this database: the second waits for the first's
/// transaction (`sync_tables()`, or the first step of `CALL
/// bi_access.sync()`), so two never expose the same new table or alter the
/// same role at once.
pub fn one_sync_at_a_time() -> Result<()> {
    db::exec("SELECT FROM bi_access.config FOR UPDATE", &[])
}

/// The backend of another `CALL bi_access.sync()` running now in this
/// database, if any.
pub fn other_sync() -> Result<Option<i32>> {
    sync_backend(true)
}

/// Whether `CALL bi_access.sync()` runs now in this database: the backend
/// that began the last one is still running that statement.
pub fn sync_running() -> Result<bool> {
    Ok(sync_backend(false)?.is_some())
}

/// The backend running `CALL bi_access.sync()` in this database, if any
/// (another than this one's, when `other_than_me`).
fn sync_backend(other_than_me: bool) -> Result<Option<i32>> {
    db::first::<i32>(
        "SELECT a.pid FROM pg_catalog.pg_stat_activity a, bi_access.config c \
         WHERE a.pid OPERATOR(pg_catalog.=) c.sync_pid \
           AND (NOT $1 OR a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()) \
           AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database() \
           AND a.state OPERATOR(pg_catalog.=) 'active' \
           AND a.query OPERATOR(pg_catalog.~*) '\\mcall\\s+bi_access\\.sync\\M'",
        &[other_than_me.into()],
    )
}

/// The current credential roles of this database that are members of the
/// reader group `reader` or of `group` in a form that allows SET ROLE (or
/// does not inherit): memberships as PostgreSQL 15 and earlier made them
/// (roles::sync_memberships).
pub fn current_roles_in_groups_as_before_16(reader: &str, group: &str) -> Result<Vec<String>> {
    db::column::<String>(
        &format!(
            "SELECT c.role_name::text \
             FROM bi_access.credential c \
             JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) c.role_name \
             WHERE c.{CURRENT} \
               AND EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
                           JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) m.roleid \
                           WHERE m.member OPERATOR(pg_catalog.=) r.oid \
                             AND g.rolname OPERATOR(pg_catalog.=) ANY (ARRAY[$1::name, $2::name]) \
                             AND ({} OR NOT m.inherit_option)) \
             ORDER BY 1",
            crate::compat::MEMBERSHIP_ALLOWS_SET_ROLE_SQL
        ),
        &[reader.into(), group.into()],
    )
}

// ------------------------------------------------------ custom schemas
// (scope read_write, src/custom_schema.rs)

/// The owner group of a read_write credential's custom schema, if it exists.
pub fn custom_schema_owner_of(role: &str) -> Result<Option<String>> {
    db::first::<String>(
        "SELECT cs.owner_role::text FROM bi_access.credential c \
         JOIN bi_access.custom_schema cs ON cs.org_id = c.org_id \
         JOIN pg_catalog.pg_roles r ON r.rolname = cs.owner_role \
         WHERE $1 IN (c.role_name, c.previous_role_name) AND c.scope = 'read_write'",
        &[role.into()],
    )
}

/// The current credential roles of an org (their roles exist), but `except`.
pub fn current_roles_of_org(org_id: &str, except: &str) -> Result<Vec<String>> {
    db::column::<String>(
        &format!(
            "SELECT c.role_name::text FROM bi_access.credential c \
             JOIN pg_catalog.pg_roles r ON r.rolname = c.role_name \
             WHERE c.org_id = $1 AND c.role_name <> $2 AND c.{CURRENT} ORDER BY c.id"
        ),
        &[org_id.into(), except.into()],
    )
}

/// After a restore without roles: (kind for ALTER, name) of each relation
/// of the custom schema `schema` owned neither by its owner group nor by a
/// read_write credential role of the org (the restore left them to whoever
/// ran it). Sequences owned by a column follow their table.
pub fn custom_schema_relations_to_reown(
    schema: &str,
    owner_group: &str,
    org_id: &str,
) -> Result<Vec<(String, String)>> {
    db::text_pairs(
        "SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' \
                    WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, \
                c.oid::pg_catalog.regclass::text \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d \
                           WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid \
                             AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                             AND d.deptype IN ('a', 'i')) \
           AND c.relowner NOT IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $2 \
                                  UNION ALL \
                                  SELECT r.oid FROM bi_access.credential k \
                                  JOIN pg_catalog.pg_roles r ON r.rolname = k.role_name \
                                  WHERE k.org_id = $3 AND k.scope = 'read_write') \
         ORDER BY 2",
        &[schema.into(), owner_group.into(), org_id.into()],
    )
}

/// How many current read_write credentials the org has, their records
/// locked for the rest of the transaction.
pub fn lock_current_writers(org_id: &str) -> Result<i64> {
    Ok(db::first_mut::<i64>(
        &format!(
            "SELECT count(*) FROM (SELECT FROM bi_access.credential \
             WHERE org_id = $1 AND scope = 'read_write' AND {CURRENT} FOR UPDATE) c"
        ),
        &[org_id.into()],
    )?
    .unwrap_or(0))
}

/// (role, group) of every membership in its org's custom schema groups that
/// a current credential lacks: the reader group for each, the owner group
/// for a read_write one.
pub fn missing_custom_schema_memberships() -> Result<Vec<(String, String)>> {
    Spi::connect(|client| {
        let mut missing = Vec::new();
        for row in client.select(
            &format!(
                "SELECT c.role_name::text, g.rolname::text \
             FROM bi_access.credential c \
             JOIN bi_access.custom_schema cs ON cs.org_id = c.org_id \
             JOIN pg_catalog.pg_roles r ON r.rolname = c.role_name \
             JOIN pg_catalog.pg_roles g \
               ON g.rolname = cs.reader_role \
               OR (c.scope = 'read_write' AND g.rolname = cs.owner_role) \
             WHERE c.{CURRENT} \
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
                               WHERE m.member = r.oid AND m.roleid = g.oid) \
             ORDER BY 1, 2"
            ),
            None,
            &[],
        )? {
            if let (Some(role), Some(group)) = (row.get::<String>(1)?, row.get::<String>(2)?) {
                missing.push((role, group));
            }
        }
        Ok(missing)
    })
}
