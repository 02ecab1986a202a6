//! bi_access's shared-memory segment: one per server, created at server
//! start when the library is preloaded (`shared_preload_libraries`), absent
//! otherwise. What it holds lives as long as the server: counters since
//! start, and what one process tells another.
//!
//! Layout (`Segment`, fixed size, `#[repr(C)]`):
//! - `yields`: every yield of the yield worker on this server (src/yielding.rs).
//! - `notices`: the sessions the yield worker just signalled, so that their
//!   own backend words the error they get (cancel, terminate).
//! - `lock`: for keyed entries that processes add and remove, such as the
//!   per-credential usage counters (logins, refused logins, statements, rows,
//!   cancellations, last login, keyed by role) of a later version, which go
//!   at the end of `Segment`, with their size in `size()`.
//!
//! Lock discipline:
//! - counters are atomics: any process adds to them, any reads them, no lock;
//! - notices are written by the yield worker only (one writer), read by any
//!   backend: atomics, no lock;
//! - a keyed table takes `lock` exclusive to add or remove an entry and
//!   shared to find one; an entry's own counters are atomics again, so a
//!   backend counting a statement takes the lock shared, never exclusive.
//!   Nothing may raise an error or wait on anything else while holding it.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use pgrx::pg_sys;

const NAME: &CStr = c"bi_access";

/// How many signalled sessions the notices remember at once; more yields at
/// the same moment still happen, the extra ones with PostgreSQL's wording.
const NOTICES: usize = 64;

#[repr(C)]
pub struct Segment {
    lock: *mut pg_sys::LWLock,
    pub yields: Yields,
    notices: [AtomicI32; NOTICES],
}

/// Counted by the yield worker, since the server started.
#[repr(C)]
pub struct Yields {
    /// Credential statements cancelled (57014).
    pub cancelled: AtomicU64,
    /// Credential sessions ended because they still held the lock (57P01).
    pub terminated: AtomicU64,
}

static mut SEGMENT: *const Segment = std::ptr::null();
static mut PREVIOUS_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Asks for the segment, and creates or attaches to it at shared-memory
/// startup. Only while shared_preload_libraries is being processed.
pub fn request() {
    // SAFETY: called once from _PG_init in the postmaster, during the
    // preload; the startup hook is kept and called in turn.
    unsafe {
        crate::compat::request_shared_memory(ask);
        PREVIOUS_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup);
    }
}

fn ask() {
    // SAFETY: PostgreSQL's request functions, at the moment the major
    // accepts requests (compat::request_shared_memory).
    unsafe {
        pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Segment>());
        pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), 1);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup() {
    if let Some(previous) = PREVIOUS_STARTUP_HOOK {
        previous();
    }
    let mut found = false;
    let init_lock = crate::compat::addin_shmem_init_lock();
    pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let segment = pg_sys::ShmemInitStruct(NAME.as_ptr(), std::mem::size_of::<Segment>(), &mut found)
        as *mut Segment;
    if !found {
        // Zeroed atomics are zero counters and empty notices.
        std::ptr::write_bytes(segment, 0, 1);
        (*segment).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(NAME.as_ptr())).lock;
    }
    pg_sys::LWLockRelease(init_lock);
    SEGMENT = segment;
}

/// The segment, if bi_access was preloaded on this server. Backends and
/// workers inherit the postmaster's pointer when they are forked.
pub fn segment() -> Option<&'static Segment> {
    // SAFETY: set once at shared-memory startup, before any backend exists,
    // and never changed; the segment lives as long as the server.
    unsafe { SEGMENT.as_ref() }
}

impl Segment {
    /// Tells `pid`'s own backend that the yield worker is about to signal
    /// it. A notice is taken back with `withdraw`; when every slot is taken
    /// the oldest is replaced.
    pub fn give_notice(&self, pid: i32) {
        if self.noticed(pid) {
            return;
        }
        let slot = self
            .notices
            .iter()
            .find(|slot| slot.load(Ordering::Acquire) == 0)
            .unwrap_or(&self.notices[pid.unsigned_abs() as usize % NOTICES]);
        slot.store(pid, Ordering::Release);
    }

    pub fn withdraw(&self, pid: i32) {
        for slot in &self.notices {
            let _ = slot.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Whether the yield worker signalled `pid` (a backend asks about itself).
    pub fn noticed(&self, pid: i32) -> bool {
        pid != 0
            && self
                .notices
                .iter()
                .any(|slot| slot.load(Ordering::Acquire) == pid)
    }

    /// The lock of keyed entries (see the module's lock discipline).
    #[allow(dead_code)] // the usage counters of a later version take it
    pub fn lock(&self) -> *mut pg_sys::LWLock {
        self.lock
    }
}

impl Yields {
    pub fn count_cancel(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_termination(&self) {
        self.terminated.fetch_add(1, Ordering::Relaxed);
    }

    /// (cancelled, terminated)
    pub fn read(&self) -> (u64, u64) {
        (
            self.cancelled.load(Ordering::Relaxed),
            self.terminated.load(Ordering::Relaxed),
        )
    }
}
