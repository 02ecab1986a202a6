//! Ending a credential's open sessions, at commit and only at commit: a
//! revoke that is rolled back, whole or in part, must leave them alone.
//!
//! The PIDs are collected inside the transaction and belong to the
//! (sub)transaction that collected them, as PostgreSQL's own pending
//! notifications do: a subtransaction that commits hands them to its parent,
//! one that aborts (ROLLBACK TO SAVEPOINT, a plpgsql EXCEPTION block) drops
//! them, and the top transaction's abort drops the rest. At commit nothing
//! may touch the catalog (no snapshot; an ERROR there becomes a PANIC), so
//! the callback only re-checks each PID against the shared process array and
//! signals it.
//!
//! PREPARE TRANSACTION is refused once a call queued terminations (0A000, as
//! PostgreSQL refuses it after NOTIFY): its COMMIT PREPARED may run in
//! another backend, which knows nothing of them, and the role keeps logging
//! in until then.
//!
//! Sessions on a streaming replica are out of reach of these signals: there
//! the role's NOLOGIN, new password or absence takes effect for new logins
//! once replayed, and an open session ends at its next statement once the
//! change is replayed (the session guard's standing check,
//! src/guard/standing.rs).

use std::cell::{Cell, RefCell};

use pgrx::prelude::*;

use crate::db;
use crate::error::{BiError, Result};

/// Sessions of one role to end at commit, queued by one call.
struct Pending {
    role_oid: pg_sys::Oid,
    pids: Vec<i32>,
    /// The subtransaction that queued them (its parent's once it commits).
    owner: pg_sys::SubTransactionId,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Queues the end of `role_oid`'s open sessions (but this one's) at the
/// commit of the current transaction, if every (sub)transaction up to it
/// commits; returns how many there are now.
pub fn end_at_commit(role_oid: pg_sys::Oid) -> Result<usize> {
    let pids = open_sessions(role_oid)?;
    let count = pids.len();
    register_callbacks();
    // SAFETY: a read of this backend's transaction state.
    let owner = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with(|pending| {
        pending.borrow_mut().push(Pending {
            role_oid,
            pids,
            owner,
        })
    });
    Ok(count)
}

fn open_sessions(role_oid: pg_sys::Oid) -> Result<Vec<i32>> {
    db::column::<i32>(
        "SELECT pid FROM pg_catalog.pg_stat_activity \
         WHERE usesysid = $1 AND pid <> pg_catalog.pg_backend_pid()",
        &[role_oid.into()],
    )
}

/// Once per backend: the callbacks live as long as it does and cost an
/// empty-list check per transaction.
fn register_callbacks() {
    if REGISTERED.with(|registered| registered.replace(true)) {
        return;
    }
    // SAFETY: registers functions with the signatures xact.c calls.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

fn take_all() -> Vec<Pending> {
    PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()))
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT => {
            for queued in take_all() {
                for pid in queued.pids {
                    terminate_if_still(pid, queued.role_oid);
                }
            }
        }
        // Before anything of the PREPARE is done: the ERROR aborts the
        // transaction, whose abort then drops the queue.
        XACT_EVENT_PRE_PREPARE if PENDING.with(|pending| !pending.borrow().is_empty()) => {
            BiError::PrepareAfterEndingSessions.raise()
        }
        XACT_EVENT_ABORT | XACT_EVENT_PREPARE => drop(take_all()),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    subid: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        match event {
            SUBXACT_EVENT_COMMIT_SUB => pending
                .iter_mut()
                .filter(|queued| queued.owner == subid)
                .for_each(|queued| queued.owner = parent),
            SUBXACT_EVENT_ABORT_SUB => pending.retain(|queued| queued.owner != subid),
            _ => {}
        }
    });
}

/// Runs inside the commit callback: no catalog access, no ERROR.
fn terminate_if_still(pid: i32, role_oid: pg_sys::Oid) {
    // SAFETY: BackendPidGetProc only reads the proc array under its own lock.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() && (*proc_).roleId == role_oid {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}
