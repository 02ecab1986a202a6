//! The session guard: what a credential's own session may do, whatever it
//! does to its settings and roles.
//!
//! Every credential role has `session_preload_libraries = 'bi_access,
//! bi_access_gate'` (a role setting, which outlives any DROP … CASCADE of the
//! extension), so this library is loaded before its first statement (or
//! preloaded by the server for every session) and installs its hooks:
//!
//! - `gate`: the login gate, every check that must hold at login, run by the
//!   small `bi_access_gate` library in each credential session;
//! - `connections`: the org's and the server's limits of BI sessions;
//! - `statements`: a utility statement is refused (42501) unless it only
//!   reads or manages the session;
//! - `reads`: a relation is readable only if it is a system catalog, an
//!   exposed table whose row-level security and bi_access policies are in
//!   place (a stray grant to PUBLIC, a view, a partition admit nothing), or
//!   in its org's custom schema;
//! - `custom`: the session's custom schema; a read_write credential writes
//!   there and nowhere else, within its quota;
//! - `quota`: the quota counted inside a statement (a row trigger, a counting
//!   DestReceiver for CREATE TABLE AS), index builds and rewrites checked
//!   before and after, and the caps on what a custom schema holds;
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
//! - `transaction`: the cap on a transaction's length (a timer before 17);
//! - `search`: the planner's search settings, movable only toward less work;
//! - `memory`: cursors, held cursors and prepared statements per session,
//!   and the memory the session keeps, checked at each executor start and end;
//! - `standing`: at every statement, the login must still be what it was
//!   (not revoked, deleted, rotated or expired), or the session ends;
//! - `networks`: the credential's network allowlist, at login and again
//!   after a change.
//!
//! The guard is keyed on the session's login (`session_user`), never on the
//! current user, so `SET ROLE` to a group changes nothing it refuses. Inside a
//! SECURITY DEFINER function owned by a superuser (bi_access's own org lookup)
//! the guard stands aside: that code is the extension's, not the tenant's
//! (`definers` lets a credential call no other definer function).

mod analysis;
mod calls;
pub mod caps;
mod connections;
mod custom;
mod definers;
pub mod gate;
mod home;
mod memory;
mod networks;
mod oracles;
mod plans;
mod quota;
mod reads;
mod search;
mod standing;
mod statements;
mod transaction;

use std::cell::Cell;

pub(crate) use transaction::TRANSACTION_TIMEOUT as TRANSACTION_TIMEOUT_CODE;

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

/// Whether bi_access is in shared_preload_libraries: its _PG_init ran in the
/// postmaster, whose memory every backend starts with.
static PRELOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn preloaded() -> bool {
    PRELOADED.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn install() {
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
    statements::install();
    analysis::install();
    reads::install();
    calls::install();
    plans::install();
    custom::install();
    quota::install();
    caps::install();
    transaction::install();
    search::install();
    memory::install();
    standing::install();
    definers::install();
    oracles::install();
    on_catalog_change(
        &[
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
        ],
        forget_identity,
    );
}

/// A cache keyed on relations: told of every relcache invalidation.
type ForgetRelation = unsafe extern "C-unwind" fn(pg_sys::Datum, pg_sys::Oid);

/// Every bi_access cache keyed on relations, in registration order (set
/// from _PG_init only, in the backend's only thread).
static mut RELATION_CACHES: [Option<ForgetRelation>; 8] = [None; 8];

/// Registers `forget` for every relcache invalidation, for the life of the
/// backend, through one callback of bi_access's own: PostgreSQL has room for
/// ten relcache callbacks in a backend (MAX_RELCACHE_CALLBACKS), and Citus
/// takes most of them (with one each, CREATE EXTENSION bi_access failed
/// there: "out of relcache_callback_list slots"). Called from _PG_init only.
pub(crate) fn on_relation_change(forget: ForgetRelation) {
    // SAFETY: _PG_init runs once per backend, in its only thread; nothing
    // reads the array until the callback is registered below.
    unsafe {
        let caches = &mut *std::ptr::addr_of_mut!(RELATION_CACHES);
        let first = caches.iter().all(Option::is_none);
        let Some(free) = caches.iter_mut().find(|slot| slot.is_none()) else {
            panic!("bi_access registers more relation caches than it has slots for");
        };
        *free = Some(forget);
        if first {
            pg_sys::CacheRegisterRelcacheCallback(Some(forget_relations), pg_sys::Datum::from(0));
        }
    }
}

/// Runs during invalidation processing: each cache forgets, nothing raises.
unsafe extern "C-unwind" fn forget_relations(arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // SAFETY: the array is only written from _PG_init, before this runs.
    let caches = &*std::ptr::addr_of!(RELATION_CACHES);
    for forget in caches.iter().flatten() {
        forget(arg, relid);
    }
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

/// At the start of every statement of a credential session: the login gate's
/// checks if the login did not run them, the login's standing, then the caps
/// (re-arming the running statement's timeout if a lowered cap changed it).
pub(crate) fn every_statement() {
    // A parallel worker runs its leader's statement with its leader's
    // settings (it restores the values, not what RESET would return to).
    if !client_backend() {
        return;
    }
    gate::ensure_ran();
    standing::check();
    networks::check_again();
    transaction::arm();
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
