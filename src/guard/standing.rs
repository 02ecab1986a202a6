//! The login's standing, checked at the start of every statement of a
//! credential session, on every server:
//!
//! - revoked (NOLOGIN), deleted (no role), given a new password (or had
//!   its password removed), or past its VALID UNTIL: the session ends with
//!   FATAL 57P01, as revoke ends it on the primary at commit. A standby
//!   replays the change into the catalogs but nothing signals its sessions,
//!   and a backend applies replayed catalog changes only when it accepts
//!   invalidation messages, so the check accepts them first: a statement
//!   inside an open transaction block sees the change too. Expiry changes
//!   nothing in the catalogs: the clock decides. On the primary the same
//!   check closes the gap between the moment revoke collects a role's
//!   sessions and its commit. A role without a password (a credential's on
//!   a Citus worker, where Citus logs in with its own authentication) is
//!   not ended for that: only for losing the one it logged in with.
//!
//! The verifier to compare with is remembered at login, by the login gate
//! (gate.rs).

use std::cell::Cell;
use std::ffi::CStr;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::error::BiError;
use pgrx::pg_sys;

thread_local! {
    /// A fingerprint of the password verifier the session logged in under
    /// (None inside: the role had none, as a credential's role on a Citus
    /// worker, where only Citus's own connections log in without one).
    static LOGIN_VERIFIER: Cell<Option<Option<u64>>> = const { Cell::new(None) };
    /// The login's VALID UNTIL as last read, while no change to pg_authid
    /// has arrived since (`forget_standing`): the catalogs are read again
    /// only after one has.
    static KNOWN: Cell<Option<Option<i64>>> = const { Cell::new(None) };
}

/// What the catalogs say of the login now.
enum Standing {
    Good {
        verifier: Option<u64>,
        valid_until: Option<i64>,
    },
    Ended(&'static str),
}

pub(super) fn install() {
    crate::invalidation::on_catalog_change(&[pg_sys::SysCacheIdentifier::AUTHOID], forget_standing);
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_standing(_: pg_sys::Datum, _: std::ffi::c_int, hash: u32) {
    KNOWN.with(|known| known.set(None));
    // The same message tells the network allowlist's check (one callback
    // for both: a backend has room for few).
    super::networks::role_changed(hash);
}

/// At login (the gate), inside the startup transaction: the verifier the
/// session authenticated with.
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
                match (login, verifier) {
                    (Some(_), None) => end("has no password"),
                    (login, now) if login != now => end("was given a new password"),
                    _ => {}
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
        match (can_login, expired) {
            (false, _) => Standing::Ended("was revoked"),
            (_, true) => Standing::Ended("has expired"),
            (true, false) => Standing::Good {
                verifier,
                valid_until,
            },
        }
    }
}

fn end(why: &'static str) -> ! {
    super::login::refuse(BiError::Ended(why))
}
