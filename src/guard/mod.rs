//! The session guard: what a credential's own session may do, whatever it
//! does to its settings and roles.
//!
//! Every credential role has `session_preload_libraries = bi_access` (a role
//! setting, which outlives any DROP … CASCADE of the extension), so this
//! library is loaded before its first statement and installs three hooks:
//!
//! - `statements`: a utility statement is refused (42501) unless it only
//!   reads or manages the session;
//! - `reads`: a relation is readable only if it is a system catalog, an
//!   exposed table whose row-level security and bi_access policies are in
//!   place (a stray grant to PUBLIC, a view, a partition admit nothing), or
//!   in its org's custom schema;
//! - `custom`: the session's custom schema; a read_write credential writes
//!   there and nowhere else, within its quota;
//! - `calls`: creating or altering any catalog object is refused, and so are
//!   the built-in functions that write without a table privilege (large
//!   objects, NOTIFY, advisory locks, sequences);
//! - `definers`: no SECURITY DEFINER function but bi_access's own (and those
//!   an exposed table's policies call), however the call is reached;
//! - `oracles`: EXPLAIN, the statistics of tables and statements, and
//!   messages below NOTICE, which would tell about other orgs' rows;
//! - `plans`: the pass-through policy's condition is decided before
//!   planning (false for a credential, true for anyone else), so it costs
//!   nothing;
//! - `caps`: the guardrails, settings a session may lower but never raise;
//! - `standing`: at every statement, the login must still be what it was
//!   (not revoked, deleted, rotated or expired) and within the connection
//!   limits, or the session ends.
//!
//! The guard is keyed on the session's login (`session_user`), never on the
//! current user, so `SET ROLE` to a group changes nothing it refuses. Inside a
//! SECURITY DEFINER function owned by a superuser (bi_access's own org lookup)
//! the guard stands aside: that code is the extension's, not the tenant's
//! (`definers` lets a credential call no other definer function).

mod calls;
pub mod caps;
mod custom;
mod definers;
mod oracles;
mod plans;
mod reads;
mod standing;
mod statements;

use std::cell::Cell;

use crate::error::BiError;
use pgrx::pg_sys;

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
    plans::install();
    custom::install();
    caps::install();
    standing::install();
    definers::install();
    oracles::install();
    // Loaded by the role's session_preload_libraries, after authentication
    // (a shared preload runs in the postmaster, where there is no session
    // yet: the first statement does it). compat says where the catalogs are
    // readable then.
    if before_any_query {
        crate::compat::at_session_start(|| {
            if session_is_credential() {
                standing::remember_login();
                caps::enforce(true);
                oracles::at_login();
            }
        });
    }
    on_catalog_change(
        &[
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
        ],
        forget_identity,
    );
}

/// Registers `forget` for every change to the catalog entries of `caches`,
/// committed anywhere (replayed on a standby too), for the life of the
/// backend. Called from _PG_init only.
pub(crate) fn on_catalog_change(
    caches: &[pg_sys::SysCacheIdentifier::Type],
    forget: unsafe extern "C-unwind" fn(pg_sys::Datum, std::ffi::c_int, u32),
) {
    for cache in caches {
        // SAFETY: registers a callback for the life of the backend, in its
        // only thread; PostgreSQL keeps room for this many.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                *cache as i32,
                Some(forget),
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

/// Whether the library is being loaded at the start of a credential's own
/// session (its role's session_preload_libraries), before any query.
pub fn credential_at_start() -> bool {
    // SAFETY: a read of backend-local state.
    let before_any_query = unsafe { pg_sys::debug_query_string.is_null() };
    before_any_query && crate::compat::at_session_start(session_is_credential) == Some(true)
}

/// A credential that sends bi_access.* settings in its startup packet would
/// have its session fall back to the built-in defaults (see
/// `settings::asked_for_by_the_client`): its login is refused instead.
pub fn refuse_client_settings(asked: &[String]) {
    // SAFETY: a read of backend-local state.
    let at_login = unsafe { pg_sys::debug_query_string.is_null() };
    if asked.is_empty()
        || !at_login
        || crate::compat::at_session_start(session_is_credential) != Some(true)
    {
        return;
    }
    BiError::ClientSettings(asked.join(", ")).raise_fatal();
}

/// The answer of `session_is_credential` if this session already knows it;
/// never looks anything up (check hooks may run outside any transaction).
pub fn known_credential_session() -> bool {
    // SAFETY: a read of backend-local state.
    let login = unsafe { pg_sys::GetSessionUserId() };
    matches!(CREDENTIAL_SESSION.with(Cell::get), Some((known, true)) if known == login)
}

/// At the start of every statement of a credential session: the login's
/// standing, then the caps (re-arming the running statement's timeout if a
/// lowered cap changed it).
pub(crate) fn every_statement() {
    standing::check();
    if caps::enforce(false) {
        // SAFETY: re-arms this backend's own statement timer.
        unsafe {
            if crate::compat::get_timeout_active(crate::compat::STATEMENT_TIMEOUT) {
                crate::compat::enable_timeout_after(
                    crate::compat::STATEMENT_TIMEOUT,
                    pg_sys::StatementTimeout,
                );
            }
        }
    }
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
    BiError::Refused {
        message,
        hint: hint.into(),
    }
    .raise()
}
