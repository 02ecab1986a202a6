//! The login gate: every check that must hold before a credential's session
//! can send a statement or sit idle, run once per session, at login.
//!
//! PostgreSQL runs a library's `_PG_init` in a session only where that
//! session loads it. Preloaded (`shared_preload_libraries = 'bi_access'`),
//! bi_access's own ran once, in the postmaster, and PostgreSQL 14 to 16 have
//! no hook at session start. So every credential role names a second, tiny
//! library beside bi_access in its `session_preload_libraries`
//! (`gate/bi_access_gate.c`, `names::GATE_LIBRARY`), whose `_PG_init` calls
//! `bi_access_login_gate` below in each session, preloaded or not. It runs
//! after authentication, inside the startup transaction (compat gives 14,
//! which loads it after that transaction, one of its own), before the
//! session's error handling exists: anything a check raises ends the login
//! with a FATAL, and so does a gate library missing from disk. A session
//! whose role lost the gate library runs the same checks at its first
//! statement instead (`ensure_ran`), as bi_access 0.2.0 did.
//!
//! Adding a check is one entry in `CHECKS`: a function that raises a FATAL
//! (`refuse`) to refuse the login. Each runs in the session of
//! a credential only, with the catalogs readable and as the login itself.

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::error::BiError;
use crate::login_record::LoginRecord;

/// A check at login: raises (FATAL) to refuse it.
type Check = fn();

/// Every check, in order.
const CHECKS: [Check; 7] = [
    // bi_access.* settings in the startup packet.
    refuse_client_settings,
    // Only the database that manages the credential (home.rs).
    super::home::check,
    // Only from an address of the credential's allowlist (networks.rs).
    super::networks::check,
    // The org's and the server's limits of BI sessions (the credential's own
    // is PostgreSQL's CONNECTION LIMIT, checked before this).
    super::connections::check,
    // The password verifier the session logged in with (standing.rs).
    super::standing::remember_login,
    // The guardrails: values above a cap lowered to it.
    clamp_caps,
    // No message below NOTICE reaches the client (oracles.rs).
    super::oracles::at_login,
];

thread_local! {
    /// Whether the checks ran in this session (at login, or at the first
    /// statement for a role without the gate library).
    static RAN: Cell<bool> = const { Cell::new(false) };
    /// Whether the checks are running: a FATAL now refuses the login.
    static CHECKING: Cell<bool> = const { Cell::new(false) };
    /// The bi_access.* settings the client sent in its startup packet,
    /// read by `_PG_init` before they are defined (see settings.rs).
    static CLIENT_SETTINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The login's record, read once by the database check (home.rs) for
    /// the allowlist and connection checks after it; None on a Citus
    /// worker, which holds no records.
    static RECORD: RefCell<Option<LoginRecord>> = const { RefCell::new(None) };
}

/// Called by the gate library's `_PG_init` in every session of a role that
/// names it, whether bi_access is preloaded or was loaded just before.
#[no_mangle]
#[pgrx::pg_guard]
pub extern "C-unwind" fn bi_access_login_gate() {
    // LOAD in the middle of a session, or a parallel worker loading its
    // leader's libraries: not a login.
    // SAFETY: a read of backend-local state.
    if unsafe { !pg_sys::debug_query_string.is_null() } || !super::client_backend() {
        return;
    }
    crate::compat::at_session_start(|| {
        if super::session_is_credential() {
            run();
        }
        RAN.with(|ran| ran.set(true));
    });
}

/// At every statement of a credential session: the checks, if the login
/// did not run them (the role's session_preload_libraries lacks the gate).
pub(super) fn ensure_ran() {
    if !RAN.with(Cell::get) && super::client_backend() {
        run();
    }
}

fn run() {
    RAN.with(|ran| ran.set(true));
    // At login no snapshot is active yet, and a check may query.
    // SAFETY: pushes a snapshot of the current transaction, popped below; an
    // error unwinds the snapshot stack with the transaction.
    let pushed = unsafe {
        let pushed = !pg_sys::ActiveSnapshotSet();
        if pushed {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        pushed
    };
    CHECKING.with(|checking| checking.set(true));
    for check in CHECKS {
        check();
    }
    CHECKING.with(|checking| checking.set(false));
    crate::usage::at_login();
    if pushed {
        // SAFETY: the snapshot pushed above is still the active one.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
}

/// Whether the login gate's checks ran (or are running) in this session.
pub fn ran() -> bool {
    RAN.with(Cell::get)
}

/// Ends the session with `error` (FATAL). While the checks run, that
/// refuses the login, which the usage view counts by its cause.
pub(super) fn refuse(error: BiError) -> ! {
    if CHECKING.with(Cell::get) {
        crate::usage::refused(&error);
    }
    error.raise_fatal()
}

/// The database check found the login's record.
pub(super) fn remember_record(record: LoginRecord) {
    RECORD.with(|kept| *kept.borrow_mut() = Some(record));
}

/// `f` of the login's record, as the database check read it (None where it
/// found none: a Citus worker).
pub(super) fn with_record<T>(f: impl FnOnce(Option<&LoginRecord>) -> T) -> T {
    RECORD.with(|kept| f(kept.borrow().as_ref()))
}

/// `_PG_init` keeps what the client asked for until the gate runs.
pub fn remember_client_settings(asked: Vec<String>) {
    CLIENT_SETTINGS.with(|settings| *settings.borrow_mut() = asked);
}

/// A credential that sends bi_access.* settings in its startup packet would
/// have its session fall back to the built-in defaults (see
/// `settings::asked_for_by_the_client`): its login is refused instead.
/// (Preloaded, the settings are defined before the packet is read, and
/// PostgreSQL itself refuses a non-superuser's value for them.)
fn refuse_client_settings() {
    let asked = CLIENT_SETTINGS.with(|settings| settings.borrow().join(", "));
    if !asked.is_empty() {
        refuse(BiError::ClientSettings(asked));
    }
}

/// The caps on the settings a session could raise: a value above one from
/// the startup packet, the role, the database or the server is lowered to
/// it, with a WARNING for what the client asked.
fn clamp_caps() {
    super::caps::enforce(true);
    super::search::enforce_at_login();
}
