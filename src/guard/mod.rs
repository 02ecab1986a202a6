//! The session guard: what a credential's own session may do, whatever it
//! does to its settings and roles.
//!
//! Every credential role has `session_preload_libraries = bi_access` (a role
//! setting, which outlives any DROP … CASCADE of the extension), so this
//! library is loaded before its first statement and installs three hooks:
//!
//! - `statements`: a utility statement is refused (42501) unless it only
//!   reads or manages the session;
//! - `reads`: a relation is readable only if it is a system catalog, or an
//!   exposed table whose row-level security and bi_access policies are in
//!   place (a stray grant to PUBLIC, a view, a partition admit nothing);
//! - `calls`: creating or altering any catalog object is refused, and so are
//!   the built-in functions that write without a table privilege (large
//!   objects, NOTIFY, advisory locks, sequences).
//!
//! The guard is keyed on the session's login (`session_user`), never on the
//! current user, so `SET ROLE` to a group changes nothing it refuses. Inside a
//! SECURITY DEFINER function owned by a superuser (bi_access's own org lookup)
//! the guard stands aside: that code is the extension's, not the tenant's.

mod calls;
mod reads;
mod statements;

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use crate::names;

thread_local! {
    /// The session's login and whether it is a credential. For one login a
    /// `true` never changes (fail closed); a `false` is re-read after any
    /// change to roles or memberships. A superuser's SET SESSION
    /// AUTHORIZATION changes the login, and so the answer.
    static CREDENTIAL_SESSION: Cell<Option<(pg_sys::Oid, bool)>> = const { Cell::new(None) };
    /// Loaded before the session's first query (session or shared preload),
    /// rather than by a function call in the middle of one.
    static LOADED_AT_START: Cell<bool> = const { Cell::new(false) };
}

pub fn install() {
    // Before the session's first query there is no query text; a function
    // call that loads the library runs inside one. (Session preload runs
    // inside the startup transaction, so transaction state cannot tell.)
    // SAFETY: a read of backend-local state.
    let before_any_query = unsafe { pg_sys::debug_query_string.is_null() };
    LOADED_AT_START.with(|loaded| loaded.set(before_any_query));
    statements::install();
    reads::install();
    calls::install();
    // SAFETY: registers callbacks for the life of the backend; called once
    // from _PG_init.
    unsafe {
        for cache in [
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(forget_identity),
                pg_sys::Datum::from(0),
            );
        }
    }
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_identity(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    CREDENTIAL_SESSION.with(|cached| {
        if matches!(cached.get(), Some((_, false))) {
            cached.set(None);
        }
    });
}

/// Whether this session's login is a bi_access credential (a member of the
/// cluster-wide credential group; a superuser never is).
pub fn session_is_credential() -> bool {
    // SAFETY: a read of backend-local state.
    let login = unsafe { pg_sys::GetSessionUserId() };
    if login == pg_sys::InvalidOid {
        return false; // still authenticating
    }
    if let Some((known_login, known)) = CREDENTIAL_SESSION.with(Cell::get) {
        if known_login == login {
            return known;
        }
    }
    // SAFETY: syscache lookups of this backend; none raises for a missing role.
    let member = unsafe {
        let group = pg_sys::get_role_oid(names::CREDENTIAL_GROUP_C.as_ptr(), true);
        group != pg_sys::InvalidOid
            && login != group
            && pg_sys::is_member_of_role_nosuper(login, group)
    };
    CREDENTIAL_SESSION.with(|cached| cached.set(Some((login, member))));
    member
}

/// Whether the guard applies to what runs now: a credential's session, not
/// inside a superuser's SECURITY DEFINER function.
pub fn guarded() -> bool {
    // SAFETY: superuser_arg reads a cached flag of the current user.
    session_is_credential() && unsafe { !pg_sys::superuser_arg(pg_sys::GetUserId()) }
}

/// Whether the guard has held since the session began. A credential whose
/// role lost its `session_preload_libraries` loads the library only when a
/// policy first calls the org lookup, too late for that statement's checks,
/// so the lookup answers nothing for such a session.
pub fn held_from_the_start() -> bool {
    LOADED_AT_START.with(Cell::get)
}

/// Raises 42501 for what a credential may not do.
pub(crate) fn refuse(message: String, hint: &str) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        message,
        "bi_access",
    )
    .set_hint(hint)
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}
