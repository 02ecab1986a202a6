//! The PostgreSQL roles bi_access manages: the per-database reader group and
//! one LOGIN role per credential. Role names are cluster-wide and readable by
//! everyone in pg_roles, so they are the prefix plus a random suffix and never
//! carry an org key.

use std::ffi::CString;

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};
use rand::rngs::OsRng;
use rand::Rng;
use serde_json::json;

use crate::audit::{self, NO_SUBJECT};
use crate::compat;
use crate::custody;
use crate::db;
use crate::error::{BiError, Result};
use crate::names::{self, CREDENTIAL_GROUP};
use crate::settings;

const SUFFIX_LEN: usize = 16;
const SUFFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const MAX_PREFIX_LEN: usize = 40;

/// This database's reader group: it holds every table grant; credential
/// roles are its members.
pub fn reader_group() -> Result<String> {
    db::first::<String>("SELECT reader_role::text FROM bi_access.config", &[])?
        .ok_or(BiError::NoConfig)
}

pub fn new_role_name() -> Result<String> {
    let prefix = settings::role_prefix();
    let valid = prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid || prefix.starts_with("pg_") {
        return Err(BiError::InvalidParameter(format!(
            "bi_access.role_prefix {prefix:?} must be at most {MAX_PREFIX_LEN} characters of [a-z0-9_] and not start with pg_"
        )));
    }
    let suffix: String = (0..SUFFIX_LEN)
        .map(|_| SUFFIX_ALPHABET[OsRng.gen_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect();
    Ok(format!("{prefix}{suffix}"))
}

pub fn oid(role: &str) -> Result<Option<pg_sys::Oid>> {
    db::first::<pg_sys::Oid>(
        "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1",
        &[role.into()],
    )
}

pub struct LoginOptions {
    /// Already rendered by PostgreSQL as timestamptz text.
    pub valid_until: Option<String>,
    pub connection_limit: Option<i32>,
    /// LOGIN, or NOLOGIN for a deactivated credential's role recreated.
    pub login: bool,
}

/// A LOGIN role (NOLOGIN if `options` say so) with no attribute beyond
/// logging in, member of the reader group and the credential group (on 16
/// and later without the right to SET ROLE to them), with no password yet.
pub fn create_login(role: &str, reader: &str, options: &LoginOptions) -> Result<()> {
    let quoted = quote_identifier(role);
    let mut sql = format!(
        "CREATE ROLE {quoted} {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT {}",
        if options.login { "LOGIN" } else { "NOLOGIN" },
        options.connection_limit.unwrap_or(-1),
    );
    if let Some(valid_until) = &options.valid_until {
        sql.push_str(&format!(
            " VALID UNTIL {}",
            pgrx::spi::quote_literal(valid_until)
        ));
    }
    Spi::run(&sql)?;
    // CREATE ROLE … IN ROLE takes no membership options, so the groups come
    // with a GRANT of their own.
    Spi::run(&compat::grant_membership_sql(
        &[quote_identifier(reader), quote_identifier(CREDENTIAL_GROUP)],
        &quoted,
    ))?;
    custody::mark(role)?;
    apply_session_settings(role)
}

/// Makes the role a member of this database's reader group (a role adopted
/// after a restore belongs to the group of the database it came from), in
/// the form `create_login` gives.
pub fn join_reader_group(role: &str, reader: &str) -> Result<()> {
    Spi::run(&compat::grant_membership_sql(
        &[quote_identifier(reader)],
        &quote_identifier(role),
    ))?;
    Ok(())
}

/// A role restored from another cluster with `pg_dumpall --roles-only` is
/// still a member of that cluster's reader group, which came along and that
/// no database here grants anything: the membership goes (the group itself
/// is the DBA's to drop, as check() says). Returns the groups it left.
pub fn leave_dead_reader_groups(role: &str, reader: &str) -> Result<Vec<String>> {
    let dead = db::first::<Vec<String>>(
        "SELECT coalesce(pg_catalog.array_agg(g.rolname::text ORDER BY g.rolname), '{}') \
         FROM pg_catalog.pg_auth_members m \
         JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) m.roleid \
         JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) m.member \
         WHERE r.rolname OPERATOR(pg_catalog.=) $1 \
           AND pg_catalog.starts_with(g.rolname, $2) AND g.rolname OPERATOR(pg_catalog.<>) $3 \
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_shdepend s \
                           WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
                             AND s.refobjid = g.oid AND s.deptype = 'a' \
                             AND s.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass)",
        &[
            role.into(),
            names::READER_GROUP_PREFIX.into(),
            reader.into(),
        ],
    )?
    .unwrap_or_default();
    for group in &dead {
        Spi::run(&format!(
            "REVOKE {} FROM {}",
            quote_identifier(group),
            quote_identifier(role)
        ))?;
    }
    Ok(dead)
}

/// At a sync, from PostgreSQL 16 on: every current credential role this
/// database manages whose membership in its reader group or in
/// bi_access_credential allows SET ROLE (or does not inherit) is granted
/// both again in the form `create_login` gives, which changes the options
/// of the existing memberships. pg_upgrade from 15 leaves every membership
/// so: 15 has no such options, and a membership re-created on 16+ without
/// them allows SET ROLE. Only roles that differ are altered, so a second
/// sync changes nothing. Returns how many roles changed.
pub fn sync_memberships() -> Result<i64> {
    if !compat::MEMBERSHIP_WITHOUT_SET_ROLE {
        return Ok(0);
    }
    let reader = reader_group()?;
    let roles = crate::records::current_roles_in_groups_as_before_16(&reader, CREDENTIAL_GROUP)?;
    let mut changed = 0;
    for role in &roles {
        // A copy of the database leaves the original's roles alone.
        if custody::manages(role)? {
            Spi::run(&compat::grant_membership_sql(
                &[
                    quote_identifier(&reader),
                    quote_identifier(CREDENTIAL_GROUP),
                ],
                &quote_identifier(role),
            ))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Settings every BI session starts with: read-only, a search_path, and
/// this library with the login gate loaded so the session guard (with its
/// guardrails, which read the bi_access.* caps at every statement) holds
/// from the login on; a role cannot reset a superuser-only setting on itself.
fn apply_session_settings(role: &str) -> Result<()> {
    let quoted = quote_identifier(role);
    let settings = [
        ("default_transaction_read_only", quote_literal("on")),
        ("search_path", quote_literal("public")),
        ("session_preload_libraries", session_libraries_sql()),
    ];
    for (name, value) in settings {
        Spi::run(&format!("ALTER ROLE {quoted} SET {name} = {value}"))?;
    }
    if audit_wanted() {
        set_audit(role, true)?;
    }
    Ok(())
}

/// `'bi_access', 'bi_access_gate'`: a list of two, as `SET` takes one.
fn session_libraries_sql() -> String {
    names::SESSION_LIBRARIES.map(quote_literal).join(", ")
}

/// The entry that makes in pg_db_role_setting.
fn session_libraries_entry() -> String {
    format!(
        "session_preload_libraries={}",
        names::SESSION_LIBRARIES.join(", ")
    )
}

/// At a sync, and at the update from 0.2.0 (whose roles load bi_access
/// alone): every current credential role of this database whose
/// session_preload_libraries is not bi_access's with the login gate gets it.
/// Returns how many roles changed; a second call changes nothing.
pub fn sync_session_libraries() -> Result<i64> {
    let roles = crate::records::current_roles_setting_differs(&session_libraries_entry(), true)?;
    let mut changed = 0;
    for role in &roles {
        // A copy of the database leaves the original's roles alone.
        if custody::manages(role)? {
            Spi::run(&format!(
                "ALTER ROLE {} SET session_preload_libraries = {}",
                quote_identifier(role),
                session_libraries_sql()
            ))?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[pg_schema]
mod bi_access_internal {
    use pgrx::prelude::*;

    /// Called once by the update from 0.2.0, whose roles load bi_access alone.
    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_session_libraries() -> i64 {
        crate::error::or_raise(super::sync_session_libraries())
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.sync_session_libraries() IS 'Sets the login gate in every credential role''s session_preload_libraries';",
        name = "sync_session_libraries_comment",
        requires = [sync_session_libraries]
    );
}

/// pgaudit's setting and the value bi_access.audit_reads gives it: SELECT
/// and COPY from relations or queries, logged by pgaudit as "AUDIT:
/// SESSION,...,READ,..." lines under the session's role (log_line_prefix
/// %u), which the role cannot turn off (pgaudit.log is superuser-only).
const AUDIT_SETTING: &str = "pgaudit.log";
const AUDIT_VALUE: &str = "read";

/// pgaudit is loaded when its settings are real, not placeholders: it
/// defines them only when shared_preload_libraries loads it (it refuses any
/// other way), so this backend tells for the whole server.
pub fn pgaudit_loaded() -> bool {
    let record = crate::compat::find_guc(c"pgaudit.log");
    // SAFETY: a record of guc.c's, read in the backend's only thread.
    !record.is_null() && unsafe { (*record).flags } & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 == 0
}

/// Whether credential roles should carry pgaudit's read logging now. With
/// audit_reads on but pgaudit not loaded nothing changes (check() says so):
/// the setting would be a placeholder nobody reads.
fn audit_wanted() -> bool {
    settings::audit_reads() && pgaudit_loaded()
}

fn set_audit(role: &str, on: bool) -> Result<()> {
    let quoted = quote_identifier(role);
    if on {
        Spi::run(&format!(
            "ALTER ROLE {quoted} SET {AUDIT_SETTING} = {}",
            pgrx::spi::quote_literal(AUDIT_VALUE)
        ))?;
    } else {
        Spi::run(&format!("ALTER ROLE {quoted} RESET {AUDIT_SETTING}"))?;
    }
    Ok(())
}

/// At a sync: every current credential role of this database gets
/// pgaudit's read logging when bi_access.audit_reads is on (and pgaudit is
/// loaded), and loses the one bi_access gave when the setting is off. Only
/// roles whose setting differs are altered, so a second sync changes
/// nothing. Returns how many roles changed.
pub fn sync_audit_reads() -> Result<i64> {
    let wanted = audit_wanted();
    if settings::audit_reads() && !wanted {
        return Ok(0);
    }
    let roles = crate::records::current_roles_setting_differs(
        &format!("{AUDIT_SETTING}={AUDIT_VALUE}"),
        wanted,
    )?;
    let mut changed = 0;
    for role in &roles {
        // A copy of the database (CREATE DATABASE … TEMPLATE) has the
        // original's records: it leaves the original's roles alone.
        if custody::manages(role)? {
            set_audit(role, wanted)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Gives the role a SCRAM-SHA-256 verifier without any SQL text: the
/// statement is built as a parse tree and handed to AlterRole(), so neither
/// the log, pg_stat_statements nor an error context can ever show it.
pub fn set_password(role: &str, verifier: &str) -> Result<()> {
    crate::citus::clear_password_on_workers(role)?;
    let role = CString::new(role).map_err(|_| BiError::InvalidParameter("role name".into()))?;
    let verifier =
        CString::new(verifier).map_err(|_| BiError::InvalidParameter("verifier".into()))?;
    // SAFETY: every node is palloc'd in the current memory context and has the
    // shape AlterRole() reads (user.c, the same in 14 to 18).
    unsafe {
        let mut spec = PgBox::<pg_sys::RoleSpec>::alloc_node(pg_sys::NodeTag::T_RoleSpec);
        spec.roletype = pg_sys::RoleSpecType::ROLESPEC_CSTRING;
        spec.rolename = pg_sys::pstrdup(role.as_ptr());
        spec.location = -1;

        let value = pg_sys::makeString(pg_sys::pstrdup(verifier.as_ptr()));
        let option = pg_sys::makeDefElem(
            pg_sys::pstrdup(c"password".as_ptr()),
            value as *mut pg_sys::Node,
            -1,
        );

        let mut stmt = PgBox::<pg_sys::AlterRoleStmt>::alloc_node(pg_sys::NodeTag::T_AlterRoleStmt);
        stmt.role = spec.into_pg();
        stmt.options = pg_sys::lappend(std::ptr::null_mut(), option as *mut std::ffi::c_void);
        stmt.action = 1;

        compat::alter_role(stmt.into_pg());
        pg_sys::CommandCounterIncrement();
    }
    Ok(())
}

/// VALID UNTIL, already rendered by PostgreSQL as timestamptz text.
pub fn set_valid_until(role: &str, until: &str) -> Result<()> {
    Spi::run(&format!(
        "ALTER ROLE {} VALID UNTIL {}",
        quote_identifier(role),
        pgrx::spi::quote_literal(until)
    ))?;
    Ok(())
}

/// Rewrites the role's pg_authid row unchanged (its own CONNECTION LIMIT
/// again: ALTER ROLE writes the row whatever the values). Every session of
/// the role is told of it as of any change to the role, on a standby once
/// replayed: the session guard then reads again what it keeps of the
/// credential (src/guard/networks.rs), as revoke's NOLOGIN makes it do.
pub fn touch(role: &str) -> Result<()> {
    let Some(limit) = crate::db::first::<i32>(
        "SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = $1",
        &[role.into()],
    )?
    else {
        return Ok(());
    };
    Spi::run(&format!(
        "ALTER ROLE {} CONNECTION LIMIT {limit}",
        quote_identifier(role)
    ))?;
    Ok(())
}

pub fn set_login(role: &str, login: bool) -> Result<()> {
    let attribute = if login { "LOGIN" } else { "NOLOGIN" };
    Spi::run(&format!(
        "ALTER ROLE {} {attribute}",
        quote_identifier(role)
    ))?;
    Ok(())
}

/// From a sync: every current credential whose role came from another
/// cluster, or whose managing database is gone, becomes this database's
/// (marked, and a member of this database's reader group). A role this
/// database manages whose mark names another system (pg_upgrade) is
/// re-marked. An adopted role leaves the reader group of the cluster it came
/// from (leave_dead_reader_groups). Returns how many were adopted.
pub fn adopt_all() -> Result<i64> {
    let roles = crate::records::current_roles(false)?;
    let reader = reader_group()?;
    let here = custody::mark_here()?;
    let (mut adopted, mut remarked) = (0, 0);
    let mut left = std::collections::BTreeSet::new();
    for role in roles {
        let comment = custody::comment_of(&role)?;
        match custody::judge(&role, comment.as_deref())? {
            custody::Custody::Adoptable => {
                custody::mark(&role)?;
                join_reader_group(&role, &reader)?;
                left.extend(leave_dead_reader_groups(&role, &reader)?);
                adopted += 1;
            }
            // Carried here by pg_upgrade: with the new system in its mark, a
            // copy of this database made from now on is told apart as on any
            // cluster.
            custody::Custody::Here if comment.as_deref() != Some(here.as_str()) => {
                custody::mark(&role)?;
                remarked += 1;
            }
            _ => {}
        }
    }
    if adopted > 0 {
        audit::record(
            "adopt",
            &NO_SUBJECT,
            json!({ "roles": adopted, "left_reader_groups": left }),
        )?;
    }
    for group in &left {
        pgrx::notice!(
            "bi_access: the adopted roles left {group}, another cluster's reader group that no database here uses; bi_access.check() gives the statements that drop it"
        );
    }
    if remarked > 0 {
        audit::record("remark", &NO_SUBJECT, json!({ "roles": remarked }))?;
    }
    Ok(adopted)
}

/// Drops the role with every privilege, membership and role setting, even
/// ones granted by hand. Objects it owns in this database are not destroyed
/// but handed on (a read_write credential's to its org's custom schema owner
/// group, anything else to the extension's owner); returns how many there were.
pub fn drop_login(role: &str, heir: impl FnOnce() -> Result<Option<String>>) -> Result<i64> {
    let Some(role_oid) = oid(role)? else {
        return Ok(0);
    };
    let owned = owned_objects(role_oid)?;
    let quoted = quote_identifier(role);
    if owned > 0 {
        Spi::run(&format!(
            "REASSIGN OWNED BY {quoted} TO {}",
            quote_identifier(&match heir()? {
                Some(group) => group,
                None => extension_owner()?,
            })
        ))?;
    }
    Spi::run(&format!("DROP OWNED BY {quoted}"))?;
    Spi::run(&format!("DROP ROLE {quoted}"))?;
    Ok(owned)
}

fn owned_objects(role_oid: pg_sys::Oid) -> Result<i64> {
    Ok(db::first::<i64>(
        "SELECT count(*) FROM pg_catalog.pg_shdepend \
         WHERE refclassid = 'pg_catalog.pg_authid'::regclass AND refobjid = $1 AND deptype = 'o' \
           AND dbid IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))",
        &[role_oid.into()],
    )?
    .unwrap_or(0))
}

fn extension_owner() -> Result<String> {
    Ok(db::first::<String>(
        "SELECT r.rolname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_roles r ON r.oid = e.extowner WHERE e.extname = 'bi_access'",
        &[],
    )?
    .unwrap_or_else(|| "postgres".into()))
}

pub fn exists(role: &str) -> Result<bool> {
    Ok(oid(role)?.is_some())
}
