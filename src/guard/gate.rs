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
//! (`login::refuse`) to refuse the login. Each runs in the session of
//! a credential only, with the catalogs readable and as the login itself.

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::db;
use crate::error::BiError;

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
    /// The bi_access.* settings the client sent in its startup packet,
    /// read by `_PG_init` before they are defined (see settings.rs).
    static CLIENT_SETTINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Called by the gate library's `_PG_init` in every session of a role that
/// names it, whether bi_access is preloaded or was loaded just before.
#[no_mangle]
#[pgrx::pg_guard]
pub extern "C-unwind" fn bi_access_login_gate() {
    // LOAD in the middle of a session, or a parallel worker loading its
    // leader's libraries: not a login.
    // SAFETY: a read of backend-local state.
    if unsafe { !pg_sys::debug_query_string.is_null() } || !super::session::client_backend() {
        return;
    }
    crate::compat::at_session_start(|| {
        if super::session::session_is_credential() {
            run();
        } else {
            refuse_outside_the_group();
        }
        mark_ran();
    });
}

/// The guard knows a credential's session by its membership in
/// bi_access_credential, looked up by name. A role whose own settings load
/// the gate, which only bi_access gives its credentials, and that is no
/// member (the group renamed or dropped, the membership revoked) would log
/// in unguarded: it is refused instead. A superuser is never a credential,
/// and a server-wide session_preload_libraries naming the gate is no role's.
fn refuse_outside_the_group() {
    // SAFETY: reads of backend-local state set at login.
    let (login, database) = unsafe { (pg_sys::GetSessionUserId(), pg_sys::MyDatabaseId) };
    // SAFETY: superuser_arg looks the role up in the syscache.
    if unsafe { pg_sys::superuser_arg(login) } {
        return;
    }
    let loads_the_gate = with_snapshot(|| {
        db::as_superuser(|| {
            db::first::<String>(ROLE_LOADS_THE_GATE, &[login.into(), database.into()])
        })
    });
    match loads_the_gate {
        Ok(None) => {}
        Ok(Some(role)) => super::login::refuse(BiError::OutsideTheCredentialGroup(role)),
        Err(error) => super::login::refuse(error),
    }
}

/// The login's name where its own settings, for every database or this one,
/// name the gate in session_preload_libraries.
const ROLE_LOADS_THE_GATE: &str = "SELECT pg_catalog.quote_ident(r.rolname::text) \
       FROM pg_catalog.pg_db_role_setting s \
       JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) s.setrole, \
       LATERAL pg_catalog.unnest(s.setconfig) c \
      WHERE s.setrole OPERATOR(pg_catalog.=) $1 \
        AND s.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[0, $2]::pg_catalog.oid[]) \
        AND c OPERATOR(pg_catalog.~) '^session_preload_libraries=.*bi_access_gate' \
      LIMIT 1";

/// `f` with a snapshot active: at login none is yet, and `f` may query.
fn with_snapshot<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: pushes a snapshot of the current transaction, popped below; an
    // error unwinds the snapshot stack with the transaction.
    let pushed = unsafe {
        let pushed = !pg_sys::ActiveSnapshotSet();
        if pushed {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        pushed
    };
    let answer = f();
    if pushed {
        // SAFETY: the snapshot pushed above is still the active one.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    answer
}

/// At every statement of a credential session: the checks, if the login
/// did not run them (the role's session_preload_libraries lacks the gate).
pub(super) fn ensure_ran() {
    if !RAN.with(Cell::get) && super::session::client_backend() {
        run();
    }
}

fn run() {
    mark_ran();
    with_snapshot(|| {
        super::login::checking(true);
        for check in CHECKS {
            check();
        }
        super::login::checking(false);
        crate::usage::at_login();
    });
}

/// The checks ran (or are running) in this session; the usage view counts
/// their refusals itself, not again as PostgreSQL's.
fn mark_ran() {
    RAN.with(|ran| ran.set(true));
    crate::usage::gate_ran();
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
        super::login::refuse(BiError::ClientSettings(asked));
    }
}

/// The caps on the settings a session could raise: a value above one from
/// the startup packet, the role, the database or the server is lowered to
/// it, with a WARNING for what the client asked.
fn clamp_caps() {
    super::caps::enforce(true);
    super::search::enforce_at_login();
}
