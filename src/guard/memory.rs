//! The memory a credential session keeps between its statements.
//!
//! What a session keeps outlives the statement that made it: a cursor's
//! executor state (its sorts and hashes, up to work_mem each, until CLOSE or
//! the transaction's end), a held cursor's result (materialized at COMMIT,
//! up to work_mem in memory each, until CLOSE), a prepared statement's plans
//! (SQL PREPARE or the protocol's Parse with a name, until DEALLOCATE). On a
//! replica, 12 held cursors took one idle backend to 764 MB. So:
//! - cursors (`bi_access.max_cursors`, held ones included), held cursors
//!   (`bi_access.max_held_cursors`) and prepared statements
//!   (`bi_access.max_prepared_statements`) are counted before each DECLARE,
//!   PREPARE and named Parse, and refused at the cap with 53400;
//! - the memory the session has allocated (every memory context of the
//!   backend) is checked against `bi_access.session_memory` before each
//!   statement's executor starts, at the end of each run of the executor
//!   (the memory of a statement that ran to completion left aside: it is
//!   freed as its executor ends; a cursor's or a portal's that stays open
//!   counted: FETCH, the protocol's Execute with a row count, and a held
//!   cursor's materialization at COMMIT, so the COMMIT that would keep too
//!   much fails), and before each DECLARE, PREPARE and named Parse; past it
//!   the statement is refused with 53200. Past it by what CLOSE and
//!   DEALLOCATE cannot free (catalog caches: one statement that looks up
//!   millions of missing OIDs keeps hundreds of MB of them), the session
//!   ends (FATAL 53200): nothing else gives that memory back. Not when an
//!   executor ends: CLOSE and COMMIT end cursors' executors too, and must
//!   never be refused.
//!
//! CLOSE, DEALLOCATE and DISCARD are never refused: they free memory.

use pgrx::pg_sys;

use super::session::guarded;
use crate::db;
use crate::error::BiError;
use crate::settings;

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread;
    // compat keeps the previous hook and calls it first.
    unsafe { crate::compat::install_after_executor_run(after_run) };
}

/// Every byte a memory context and its descendants hold.
fn allocated(context: pg_sys::MemoryContext) -> usize {
    if context.is_null() {
        return 0;
    }
    // SAFETY: walks this backend's memory context tree, reading counters.
    unsafe { pg_sys::MemoryContextMemAllocated(context, true) }
}

/// Refuses (53200) if the session holds more than bi_access.session_memory
/// (a parallel worker's memory is its own, gone at the query's end).
pub(super) fn check_kept() {
    check_kept_but(std::ptr::null_mut());
}

/// The same, leaving aside `running`: the memory of a statement that ends.
fn check_kept_but(running: pg_sys::MemoryContext) {
    let Some(cap) = settings::session_memory_bytes().filter(|_| super::session::client_backend())
    else {
        return;
    };
    // SAFETY: a read of a backend-global pointer.
    let kept = allocated(unsafe { pg_sys::TopMemoryContext }).saturating_sub(allocated(running));
    if kept <= cap {
        return;
    }
    if kept.saturating_sub(freeable()) > cap {
        BiError::SessionMemoryStuck { kept, cap }.raise_fatal();
    }
    BiError::SessionMemory { kept, cap }.raise();
}

/// What CLOSE and DEALLOCATE may free: the portals (cursors, held ones
/// included) and the saved plans (prepared statements among them). Only
/// looked at past the bound.
fn freeable() -> usize {
    // SAFETY: walks the direct children of two long-lived contexts of this
    // backend by their names (portalmem.c keeps TopPortalContext static).
    unsafe {
        let named = |parent: pg_sys::MemoryContext, names: &[&std::ffi::CStr]| {
            let mut total = 0;
            let mut child = if parent.is_null() {
                std::ptr::null_mut()
            } else {
                (*parent).firstchild
            };
            while !child.is_null() {
                let name = (*child).name;
                if !name.is_null() && names.contains(&std::ffi::CStr::from_ptr(name)) {
                    total += allocated(child);
                }
                child = (*child).nextchild;
            }
            total
        };
        named(pg_sys::TopMemoryContext, &[c"TopPortalContext"])
            + named(
                pg_sys::CacheMemoryContext,
                &[c"CachedPlanSource", c"CachedPlan"],
            )
    }
}

/// After each run of the executor. A portal that stays open after it (a
/// cursor, or a protocol portal run for a row count) keeps its executor's
/// memory until it is closed, so it counts; a statement that ran to the end
/// frees its own as its executor ends.
fn after_run(query: *mut pg_sys::QueryDesc, count: u64) {
    if !guarded() {
        return;
    }
    // SAFETY: ActivePortal is the portal being run, or NULL; the query's
    // executor state lives until its executor ends.
    let running = unsafe {
        let portal = pg_sys::ActivePortal;
        let stays_open = count > 0 || (!portal.is_null() && (*portal).visible);
        let estate = (*query).estate;
        if stays_open || estate.is_null() {
            std::ptr::null_mut()
        } else {
            (*estate).es_query_cxt
        }
    };
    check_kept_but(running);
}

/// Before DECLARE: the session's cursors and held cursors, and its memory.
pub(super) fn before_declare(holdable: bool) {
    check_kept();
    let limits = (settings::max_cursors(), settings::max_held_cursors());
    if limits == (None, None) {
        return;
    }
    // As the session's own user (pg_cursors shows the session's own
    // cursors to anyone): on 17, counting as the bootstrap superuser and
    // then refusing in the same statement left a transaction block that
    // ROLLBACK could not end ("ResourceOwnerEnlarge called after release
    // started"; test_held_cursors_are_capped).
    let counts = db::text_pairs(
        "SELECT count(*)::text, (count(*) FILTER (WHERE is_holdable))::text \
         FROM pg_catalog.pg_cursors",
        &[],
    );
    let (open, held) = match counts {
        Ok(rows) => rows
            .first()
            .map(|(open, held)| (open.parse().unwrap_or(0), held.parse().unwrap_or(0)))
            .unwrap_or((0, 0)),
        Err(error) => error.raise(),
    };
    if let Some(limit) = limits.0.filter(|limit| open >= i64::from(*limit)) {
        too_many(
            "open cursors",
            limit,
            "max_cursors",
            "CLOSE a cursor first (CLOSE ALL closes every one).",
        );
    }
    if let Some(limit) = limits
        .1
        .filter(|limit| holdable && held >= i64::from(*limit))
    {
        too_many(
            "held cursors (WITH HOLD)",
            limit,
            "max_held_cursors",
            "CLOSE a held cursor first, or declare it without WITH HOLD.",
        );
    }
}

/// Before PREPARE and the protocol's Parse of a named statement: the
/// session's prepared statements, and its memory.
pub(super) fn before_prepare() {
    check_kept();
    let Some(limit) = settings::max_prepared_statements() else {
        return;
    };
    // As the session's own user, as before_declare counts.
    let count = db::first::<i64>(
        "SELECT count(*) FROM pg_catalog.pg_prepared_statements",
        &[],
    );
    match count {
        Ok(count) if count.unwrap_or(0) >= i64::from(limit) => too_many(
            "prepared statements",
            limit,
            "max_prepared_statements",
            "DEALLOCATE a prepared statement first (DEALLOCATE ALL deallocates every one).",
        ),
        Ok(_) => {}
        Err(error) => error.raise(),
    }
}

fn too_many(what: &'static str, limit: i32, setting: &'static str, hint: &'static str) -> ! {
    BiError::SessionLimit {
        what,
        limit,
        setting,
        hint,
    }
    .raise()
}
