//! Ending a credential's open sessions, at commit and only at commit: a
//! rolled-back revoke must leave them alone.
//!
//! The PIDs are collected inside the transaction. At commit nothing may touch
//! the catalog (no snapshot; an ERROR there becomes a PANIC), so the callback
//! only re-checks each PID against the shared process array and signals it.
//! Sessions on a streaming replica are out of reach from the primary: there
//! the role's NOLOGIN, new password or absence takes effect for new logins
//! once replayed, and statement_timeout / VALID UNTIL bound the rest.

use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};

use crate::db;
use crate::error::Result;

pub fn end_at_commit(role_oid: pg_sys::Oid) -> Result<usize> {
    let pids = open_sessions(role_oid)?;
    let count = pids.len();
    if count > 0 {
        register_xact_callback(PgXactCallbackEvent::Commit, move || {
            for pid in pids {
                terminate_if_still(pid, role_oid);
            }
        });
    }
    Ok(count)
}

fn open_sessions(role_oid: pg_sys::Oid) -> Result<Vec<i32>> {
    db::column::<i32>(
        "SELECT pid FROM pg_catalog.pg_stat_activity \
         WHERE usesysid = $1 AND pid <> pg_catalog.pg_backend_pid()",
        &[role_oid.into()],
    )
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
