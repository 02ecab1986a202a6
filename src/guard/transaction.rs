//! The cap on a credential's transaction, `bi_access.transaction_timeout`:
//! the longest one may last, counted from its start, then the session ends,
//! whether a statement runs or the session sits idle in the transaction. It
//! bounds how long the application can wait on a credential's lock where
//! the yield worker is absent (bi_access not preloaded), and applies in both
//! modes.
//!
//! From 17 on it is PostgreSQL's own `transaction_timeout`, capped like the
//! other settings (caps.rs). On 14 to 16 it is a timer of the guard's,
//! armed at a transaction's first statement for the transaction's start
//! plus the cap, and disarmed when it ends. When it fires, the session ends
//! as 17's does: FATAL 25P04, worded here to name the setting.

use std::cell::Cell;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::compat;
use crate::settings;

thread_local! {
    /// The timer, once registered in this backend.
    static TIMER: Cell<Option<c_int>> = const { Cell::new(None) };
    /// The transaction start and the cap (ms) the timer is armed for.
    static ARMED: Cell<Option<(pg_sys::TimestampTz, i32)>> = const { Cell::new(None) };
}

/// Set by the timer, in its signal handler.
static FIRED: AtomicBool = AtomicBool::new(false);

static mut PREVIOUS_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

pub(super) fn install() {
    if compat::TRANSACTION_TIMEOUT_BUILT_IN {
        return;
    }
    // SAFETY: called once from _PG_init; the previous hook is kept and
    // called in turn.
    unsafe {
        PREVIOUS_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(word_the_error);
    }
}

/// At every statement of a credential session (14 to 16): arms the timer
/// for the running transaction, or again when the cap changed.
pub(super) fn arm() {
    if compat::TRANSACTION_TIMEOUT_BUILT_IN {
        return;
    }
    // SAFETY: reads the running transaction's start.
    let start = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let wanted = settings::transaction_timeout_ms().map(|cap| (start, cap));
    if ARMED.get() == wanted {
        return;
    }
    let timer = timer();
    // SAFETY: this backend's own timer; timeout.c fires it at once when its
    // time has passed already.
    unsafe {
        match wanted {
            Some((start, cap)) => {
                compat::enable_timeout_at(timer, start + i64::from(cap) * 1000);
            }
            None => compat::disable_timeout(timer, false),
        }
    }
    ARMED.set(wanted);
}

/// Registers the timer and the transaction-end callback that disarms it,
/// once per backend, at its first use: in the backend itself, since a
/// backend starts with no timer of anyone's (a shared preload registered
/// nothing that lasts).
fn timer() -> c_int {
    if let Some(timer) = TIMER.get() {
        return timer;
    }
    // SAFETY: timeout.c and xact.c registrations of this backend, for its
    // life.
    let timer = unsafe {
        let timer = compat::RegisterTimeout(compat::USER_TIMEOUT, Some(fired));
        pg_sys::RegisterXactCallback(Some(at_end), std::ptr::null_mut());
        timer
    };
    TIMER.set(Some(timer));
    timer
}

/// The timer's handler, run in a signal handler: ends the session the way
/// a termination request does, at the next point where it may (also while
/// it waits, idle in its transaction, for the client).
unsafe extern "C-unwind" fn fired() {
    FIRED.store(true, Ordering::SeqCst);
    // SAFETY: what PostgreSQL's own die() sets, in a signal handler too.
    unsafe {
        std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::ProcDiePending, 1);
        if !pg_sys::MyLatch.is_null() {
            pg_sys::SetLatch(pg_sys::MyLatch);
        }
    }
}

/// The transaction ended (commit, abort, prepare): disarm. Raises nothing.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_end(event: pg_sys::XactEvent::Type, _argument: *mut c_void) {
    use pg_sys::XactEvent::*;
    if !matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        return;
    }
    if ARMED.replace(None).is_some() {
        if let Some(timer) = TIMER.get() {
            compat::disable_timeout(timer, false);
        }
    }
}

/// The termination the timer caused says so, with 17's SQLSTATE, instead
/// of "due to administrator command".
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn word_the_error(error: *mut pg_sys::ErrorData) {
    if (*error).elevel == pg_sys::FATAL as i32
        && (*error).sqlerrcode == PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN as i32
        && FIRED.load(Ordering::SeqCst)
    {
        let cap = ARMED.get().map_or(0, |(_, cap)| cap);
        let message = format!(
            "terminating connection: this bi_access credential's transaction lasted longer than bi_access.transaction_timeout ({})",
            settings::duration(cap)
        );
        (*error).sqlerrcode = compat::TRANSACTION_TIMEOUT;
        (*error).message = palloc_str(&message);
        (*error).hint = palloc_str(
            "Reconnect. Commit or roll back as soon as the results are read; an administrator sets bi_access.transaction_timeout.",
        );
    }
    if let Some(previous) = PREVIOUS_EMIT_LOG_HOOK {
        previous(error);
    }
}

fn palloc_str(text: &str) -> *mut std::ffi::c_char {
    let text = CString::new(text.replace('\0', "")).unwrap_or_default();
    // SAFETY: copies into the current memory context (the error's).
    unsafe { pg_sys::pstrdup(text.as_ptr()) }
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::compat::sqlstate;

    #[test]
    fn the_sqlstate_is_17s() {
        assert_eq!(
            sqlstate(*b"57014"),
            PgSqlErrorCode::ERRCODE_QUERY_CANCELED as i32
        );
        assert_eq!(compat::TRANSACTION_TIMEOUT, sqlstate(*b"25P04"));
    }
}
