//! Usage and last login of each credential on this server, since it started
//! (`bi_access.usage`, `credentials.last_login_at`): counters in the shared
//! segment (src/shmem.rs), so only where bi_access is preloaded. Nothing is
//! written to any table at login, so a standby counts its own logins.
//!
//! - a login: the login gate (src/guard/gate.rs), once its checks passed,
//!   finds or adds the role's entry (the segment's lock, once per session),
//!   keeps it for the session, counts the login and the open session; the
//!   session's end counts it closed (`before_shmem_exit`);
//! - a refused login: the gate's FATAL (`refused`, the cause from the error
//!   in `cause`), and PostgreSQL's own refusal of the role's CONNECTION
//!   LIMIT or of a revoked (NOLOGIN) role, for a role counted before
//!   (`at_error`: whether an unknown role is a credential would take a
//!   catalog lookup inside an error report);
//! - each top-level statement and the rows its runs return: the executor
//!   hooks, one atomic add each on the kept entry, no lock;
//! - cancellations: the session's errors (`at_error`): a cancelled
//!   statement (57014: the statement_timeout cap, a yield, a cancel
//!   request), the idle-in-transaction and transaction caps' ends, and the
//!   yield worker's termination.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::error::BiError;
use crate::shmem::{self, Refusal, Usage};

thread_local! {
    /// This session's entry, once its login was counted.
    static MINE: Cell<Option<&'static Usage>> = const { Cell::new(None) };
    /// The login gate's checks ran (or are running) in this session: they
    /// count their own refusals (`refused`).
    static GATE_RAN: Cell<bool> = const { Cell::new(false) };
}

/// Called by the login gate (src/guard/gate.rs) when its checks run.
pub fn gate_ran() {
    GATE_RAN.with(|ran| ran.set(true));
}

/// Installs the executor hook that counts returned rows. From `_PG_init`.
pub fn install() {
    // SAFETY: once per backend, from _PG_init, before any query runs.
    unsafe { crate::compat::install_after_executor_run(after_run) };
}

/// Counts a credential's login, at the end of the login gate.
pub fn at_login() {
    let Some(segment) = shmem::segment() else {
        return;
    };
    if MINE.with(Cell::get).is_some() {
        return;
    }
    // SAFETY: reads of backend-local state.
    let (role, now) = unsafe { (pg_sys::GetSessionUserId(), pg_sys::GetCurrentTimestamp()) };
    let Some(entry) = segment.usage_of(role, true) else {
        return;
    };
    Usage::count(&entry.logins, 1);
    entry
        .last_login_at
        .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    entry
        .sessions_now
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    MINE.with(|mine| mine.set(Some(entry)));
    // SAFETY: registers a callback for this backend's exit.
    unsafe { pg_sys::before_shmem_exit(Some(session_ends), pg_sys::Datum::from(0)) };
}

/// At the backend's exit; raises nothing.
unsafe extern "C-unwind" fn session_ends(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    if let Some(entry) = MINE.with(|mine| mine.take()) {
        entry
            .sessions_now
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why the login gate refused a login, from the error it raises: the one
/// place a refusal gets its cause.
fn cause(error: &BiError) -> Refusal {
    match error {
        BiError::TooManyConnections(_) => Refusal::Limits,
        BiError::Ended(_) => Refusal::Revocation,
        BiError::NetworkRefused => Refusal::Networks,
        _ => Refusal::Other,
    }
}

/// Counts a login the gate refuses with `error`, right before its FATAL.
pub fn refused(error: &BiError) {
    if MINE.with(Cell::get).is_some() {
        return; // a session already counted: not a login
    }
    let Some(segment) = shmem::segment() else {
        return;
    };
    // SAFETY: a read of backend-local state.
    let role = unsafe { pg_sys::GetSessionUserId() };
    if let Some(entry) = segment.usage_of(role, true) {
        Usage::count(&entry.refused[cause(error) as usize], 1);
    }
}

/// Whether the executor runs `query` for the client: not for SPI (the
/// guard's and the org lookup's own queries, PL/pgSQL), whose results go
/// to the code that asked. Callers also check that no run encloses it.
///
/// # Safety
/// With a query the executor was handed.
unsafe fn for_the_client(query: *mut pg_sys::QueryDesc) -> bool {
    let dest = (*query).dest;
    !dest.is_null() && (*dest).mydest != pg_sys::CommandDest::DestSPI
}

/// One more statement of this credential session, if `query` is one the
/// client sent (the ExecutorStart hook, outside any run).
#[inline]
pub fn count_statement(query: *mut pg_sys::QueryDesc) {
    if let Some(entry) = MINE.with(Cell::get) {
        // SAFETY: the query handed to ExecutorStart.
        if unsafe { for_the_client(query) } {
            Usage::count(&entry.statements, 1);
        }
    }
}

/// After each outermost run of the executor: the rows it returned.
fn after_run(query: *mut pg_sys::QueryDesc, _: u64) {
    let Some(entry) = MINE.with(Cell::get) else {
        return;
    };
    // SAFETY: the query the run just ran, with its executor state.
    let rows = unsafe {
        let returns = for_the_client(query)
            && ((*query).operation == pg_sys::CmdType::CMD_SELECT
                || (!(*query).plannedstmt.is_null() && (*(*query).plannedstmt).hasReturning));
        match (*query).estate.as_ref() {
            Some(estate) if returns => estate.es_processed,
            _ => 0,
        }
    };
    if rows > 0 {
        Usage::count(&entry.rows_returned, rows);
    }
}

/// Every error report of this process (the emit_log_hook, src/yielding.rs):
/// counts a credential session's cancellations, and PostgreSQL's own
/// refusal of a login of a role counted before. Raises nothing, takes no
/// catalog lookup.
///
/// # Safety
/// With the error being reported.
pub unsafe fn at_error(error: *const pg_sys::ErrorData) {
    let code = (*error).sqlerrcode;
    let elevel = (*error).elevel;
    if elevel < pg_sys::PGERROR as i32 {
        return;
    }
    let is = |wanted: PgSqlErrorCode| code == wanted as i32;
    match MINE.with(Cell::get) {
        Some(entry) => {
            let yielded = is(PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN)
                && shmem::segment().is_some_and(|segment| segment.noticed(pg_sys::MyProcPid));
            if is(PgSqlErrorCode::ERRCODE_QUERY_CANCELED)
                || is(PgSqlErrorCode::ERRCODE_IDLE_IN_TRANSACTION_SESSION_TIMEOUT)
                || code == crate::compat::TRANSACTION_TIMEOUT
                || yielded
            {
                Usage::count(&entry.cancelled, 1);
            }
        }
        None if elevel == pg_sys::FATAL as i32
            && pg_sys::debug_query_string.is_null()
            && pg_sys::MyBackendType == pg_sys::BackendType::B_BACKEND =>
        {
            // During authentication: the role is known once PostgreSQL
            // checks its CONNECTION LIMIT and whether it may log in.
            let cause = if is(PgSqlErrorCode::ERRCODE_TOO_MANY_CONNECTIONS) {
                Refusal::Limits
            } else if is(PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION) {
                Refusal::Revocation
            } else {
                return;
            };
            if GATE_RAN.with(Cell::get) {
                return; // the gate counted its own refusal
            }
            let role = pg_sys::GetSessionUserId();
            if let Some(entry) = shmem::segment().and_then(|segment| segment.usage_of(role, false))
            {
                Usage::count(&entry.refused[cause as usize], 1);
            }
        }
        None => {}
    }
}

/// The rows of `bi_access_internal.usage()`: (role, sessions_now, logins,
/// refused by cause, last_login_at or None, statements, rows_returned,
/// cancelled).
pub type Row = (
    pg_sys::Oid,
    i64,
    i64,
    [i64; 4],
    Option<pg_sys::TimestampTz>,
    i64,
    i64,
    i64,
);

pub fn rows() -> Vec<Row> {
    let Some(segment) = shmem::segment() else {
        return Vec::new();
    };
    segment
        .usage()
        .map(|(role, entry)| {
            let last = entry
                .last_login_at
                .load(std::sync::atomic::Ordering::Relaxed);
            (
                role,
                entry
                    .sessions_now
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(0),
                Usage::read(&entry.logins),
                [0, 1, 2, 3].map(|cause| Usage::read(&entry.refused[cause])),
                (last != 0).then_some(last),
                Usage::read(&entry.statements),
                Usage::read(&entry.rows_returned),
                Usage::read(&entry.cancelled),
            )
        })
        .collect()
}

/// Logins of credentials that found every usage entry taken, or None
/// without the preload.
pub fn overflow() -> Option<i64> {
    shmem::segment().map(|segment| Usage::read(&segment.usage_overflow))
}
