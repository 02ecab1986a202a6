//! The login's standing, checked at the start of every statement of a
//! credential session, on every server:
//!
//! - revoked (NOLOGIN), deleted (no role), given a new password, or past its
//!   VALID UNTIL: the session ends with FATAL 57P01, as revoke ends it on the
//!   primary at commit. A standby replays the change into the catalogs but
//!   nothing signals its sessions, and a backend applies replayed catalog
//!   changes only when it accepts invalidation messages, so the check accepts
//!   them first: a statement inside an open transaction block sees the change
//!   too. Expiry changes nothing in the catalogs: the clock decides. On the
//!   primary the same check closes the gap between the moment revoke collects
//!   a role's sessions and its commit.
//! - over its org's or the server's connection limit for BI sessions: FATAL
//!   53300 before its first statement (the library loads after
//!   authentication; a role's own CONNECTION LIMIT is PostgreSQL's, at login).

use std::cell::Cell;
use std::ffi::CStr;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::error::BiError;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::db;
use crate::names;
use crate::settings;

thread_local! {
    /// A fingerprint of the password verifier the session logged in under.
    static LOGIN_VERIFIER: Cell<Option<u64>> = const { Cell::new(None) };
    static LIMITS_CHECKED: Cell<bool> = const { Cell::new(false) };
    /// The login's VALID UNTIL as last read, while no change to pg_authid
    /// has arrived since (`forget_standing`): the catalogs are read again
    /// only after one has.
    static KNOWN: Cell<Option<Option<i64>>> = const { Cell::new(None) };
}

/// What the catalogs say of the login now.
enum Standing {
    Good {
        verifier: u64,
        valid_until: Option<i64>,
    },
    Ended(&'static str),
}

pub(super) fn install() {
    // SAFETY: registers a callback for the life of the backend; called once
    // from _PG_init.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            Some(forget_standing),
            pg_sys::Datum::from(0),
        );
    }
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_standing(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    KNOWN.with(|known| known.set(None));
}

/// At load, inside the startup transaction: the verifier the session
/// authenticated with.
pub(super) fn remember_login() {
    if let Standing::Good { verifier, .. } = standing() {
        LOGIN_VERIFIER.with(|login| login.set(Some(verifier)));
    }
}

/// At the start of every statement of a credential session.
pub(super) fn check() {
    // SAFETY: processes pending invalidation messages of this backend, as
    // every transaction start does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let valid_until = match KNOWN.with(Cell::get) {
        Some(valid_until) => valid_until,
        None => match standing() {
            Standing::Ended(why) => end(why),
            Standing::Good {
                verifier,
                valid_until,
            } => {
                let login = LOGIN_VERIFIER.with(|login| {
                    let known = login.get().unwrap_or(verifier);
                    login.set(Some(known));
                    known
                });
                if login != verifier {
                    end("was given a new password");
                }
                KNOWN.with(|known| known.set(Some(valid_until)));
                valid_until
            }
        },
    };
    // Expiry changes nothing in the catalogs: the clock decides.
    // SAFETY: reads the clock.
    if valid_until.is_some_and(|until| until < unsafe { pg_sys::GetCurrentTimestamp() }) {
        end("has expired");
    }
    if !LIMITS_CHECKED.with(|checked| checked.replace(true)) {
        connection_limits();
    }
}

fn standing() -> Standing {
    // SAFETY: a syscache lookup of the session's login, released before
    // return; the attributes are copied out first.
    unsafe {
        let login = pg_sys::GetSessionUserId();
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            pg_sys::Datum::from(login),
        );
        if tuple.is_null() {
            return Standing::Ended("was deleted");
        }
        let attribute = |number: u32| {
            let mut null = false;
            let value = pg_sys::SysCacheGetAttr(
                pg_sys::SysCacheIdentifier::AUTHOID as i32,
                tuple,
                number as pg_sys::AttrNumber,
                &mut null,
            );
            (!null).then_some(value)
        };
        let can_login =
            attribute(pg_sys::Anum_pg_authid_rolcanlogin).is_some_and(|v| v.value() != 0);
        let verifier = attribute(pg_sys::Anum_pg_authid_rolpassword).map(|v| {
            let text = pg_sys::text_to_cstring(v.cast_mut_ptr());
            let mut hasher = DefaultHasher::new();
            CStr::from_ptr(text).to_bytes().hash(&mut hasher);
            pg_sys::pfree(text.cast());
            hasher.finish()
        });
        let valid_until = attribute(pg_sys::Anum_pg_authid_rolvaliduntil).map(|v| v.value() as i64);
        let expired = valid_until.is_some_and(|until| until < pg_sys::GetCurrentTimestamp());
        pg_sys::ReleaseSysCache(tuple);
        match (can_login, verifier, expired) {
            (false, _, _) => Standing::Ended("was revoked"),
            (_, _, true) => Standing::Ended("has expired"),
            (_, None, _) => Standing::Ended("has no password"),
            (true, Some(verifier), false) => Standing::Good {
                verifier,
                valid_until,
            },
        }
    }
}

fn end(why: &'static str) -> ! {
    BiError::Ended(why).raise_fatal()
}

fn too_many(what: String) -> ! {
    BiError::TooManyConnections(what).raise_fatal()
}

/// Counts other BI sessions on this server, as the bootstrap superuser: the
/// credential itself may read neither bi_access's records nor other roles'
/// memberships through the session guard's eyes.
fn connection_limits() {
    let server_limit = settings::max_bi_connections();
    let org_limit = settings::org_connection_limit();
    if server_limit.is_none() && org_limit.is_none() {
        return;
    }
    let (on_server, of_org) = as_superuser(|| {
        // db::first runs read-only: it assigns no transaction id, which a
        // standby could not.
        // The backend status array directly, not the pg_stat_activity view,
        // which builds every column of every backend.
        let on_server = db::first::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_stat_get_backend_idset() i \
             WHERE pg_catalog.pg_stat_get_backend_pid(i) OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() \
               AND EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
                           WHERE m.member OPERATOR(pg_catalog.=) pg_catalog.pg_stat_get_backend_userid(i) \
                             AND m.roleid OPERATOR(pg_catalog.=) pg_catalog.to_regrole($1)::pg_catalog.oid)",
            &[names::CREDENTIAL_GROUP.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        let of_org = if org_limit.is_some() {
            crate::records::other_sessions_of_my_org().ok().flatten()
        } else {
            None
        };
        (on_server, of_org)
    });
    if let Some(limit) = server_limit {
        if on_server >= i64::from(limit) {
            too_many(format!(
                "too many bi_access connections on this server ({limit}, bi_access.max_bi_connections)"
            ));
        }
    }
    if let (Some(limit), Some(count)) = (org_limit, of_org) {
        if count >= i64::from(limit) {
            too_many(format!(
                "too many connections for this organization's bi_access credentials ({limit}, bi_access.org_connection_limit)"
            ));
        }
    }
}

fn as_superuser<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> T {
    let mut user = pg_sys::InvalidOid;
    let mut context: std::ffi::c_int = 0;
    // SAFETY: saves and restores this backend's current user; the restore
    // runs whether `f` returns or raises.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    PgTryBuilder::new(|| {
        // SAFETY: as above.
        unsafe {
            pg_sys::SetUserIdAndSecContext(
                pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as std::ffi::c_int,
            )
        };
        f()
    })
    // SAFETY: as above.
    .finally(|| unsafe { pg_sys::SetUserIdAndSecContext(user, context) })
    .execute()
}
