//! What every part of the guard asks about this session: is its login a
//! credential, does the guard apply to what runs now, was the library
//! loaded from the start; and the refusal they raise.

use std::cell::Cell;

use pgrx::pg_sys;

use crate::error::BiError;
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

/// Whether bi_access is in shared_preload_libraries: its _PG_init ran in the
/// postmaster, whose memory every backend starts with.
static PRELOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn preloaded() -> bool {
    PRELOADED.load(std::sync::atomic::Ordering::Relaxed)
}

/// At load: whether the server preloads bi_access, and whether this
/// session loaded it before its first query.
pub(super) fn loaded() {
    // SAFETY: a read of a flag of this process.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        PRELOADED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // Before the session's first query there is no query text; a function
    // call that loads the library runs inside one. (Session preload runs
    // inside the startup transaction, so transaction state cannot tell.)
    // SAFETY: a read of backend-local state.
    let before_any_query = unsafe { pg_sys::debug_query_string.is_null() };
    LOADED_AT_START.with(|loaded| loaded.set(before_any_query));
}

/// Runs during invalidation processing: no catalog access, no error.
pub(super) unsafe extern "C-unwind" fn forget_identity(
    _: pg_sys::Datum,
    _: std::ffi::c_int,
    _: u32,
) {
    CREDENTIAL_SESSION.with(|cached| {
        if matches!(cached.get(), Some((_, false))) {
            cached.set(None);
        }
    });
}

/// Whether this process is a client's own backend: not a parallel worker,
/// which loads the leader's libraries (the login gate's included) and
/// restores its settings as the leader accepted them, nor another worker.
pub(crate) fn client_backend() -> bool {
    // SAFETY: a read of backend-local state.
    unsafe { pg_sys::MyBackendType == pg_sys::BackendType::B_BACKEND }
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

/// The answer of `session_is_credential` if this session already knows it;
/// never looks anything up (check hooks may run outside any transaction).
pub fn known_credential_session() -> bool {
    // SAFETY: a read of backend-local state.
    let login = unsafe { pg_sys::GetSessionUserId() };
    matches!(CREDENTIAL_SESSION.with(Cell::get), Some((known, true)) if known == login)
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
