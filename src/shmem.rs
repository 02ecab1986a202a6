//! bi_access's shared-memory segment: one per server, created at server
//! start when the library is preloaded (`shared_preload_libraries`), absent
//! otherwise. What it holds lives as long as the server: counters since
//! start, and what one process tells another.
//!
//! Layout (`Segment`, fixed size, `#[repr(C)]`):
//! - `yields`: every yield of the yield worker on this server (src/yielding.rs).
//! - `notices`: the sessions the yield worker just signalled, so that their
//!   own backend words the error they get (cancel, terminate).
//! - `lock`: for keyed entries that processes add, the per-credential usage
//!   counters (src/usage.rs): `usage_capacity` entries of `Usage`, keyed by
//!   the login role's oid, right after `Segment` (their size in `size()`).
//!   An entry is added at a credential's first login since the server
//!   started and kept until it stops (the counters are since then); when
//!   every entry is taken, a new credential's login is counted in
//!   `usage_overflow` only.
//!
//! Lock discipline:
//! - counters are atomics: any process adds to them, any reads them, no lock;
//! - notices are written by the yield worker only (one writer), read by any
//!   backend: atomics, no lock;
//! - a keyed table takes `lock` exclusive to add an entry and shared to
//!   find one; an entry's own counters are atomics again, and an entry
//!   never moves, so a backend finds its entry once (at login) and counts
//!   each statement without the lock. Nothing may raise an error or wait
//!   on anything else while holding it.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};

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
    /// How many `Usage` entries follow (bi_access.usage_max_credentials at
    /// server start).
    usage_capacity: u32,
    /// Logins of credentials that found every entry taken.
    pub usage_overflow: AtomicU64,
}

/// Why a credential's login was refused (`bi_access.usage`).
#[derive(Clone, Copy)]
pub enum Refusal {
    /// The org's or the server's limit of BI sessions, or the role's own.
    Limits = 0,
    /// The credential's network allowlist.
    Networks = 1,
    /// Revoked, deleted, rotated or expired.
    Revocation = 2,
    /// Anything else the login gate refuses (another database, settings in
    /// the startup packet).
    Other = 3,
}

/// One credential's counters on this server since it started. `role` is
/// written once, under the exclusive `lock`; every counter is an atomic.
#[repr(C)]
pub struct Usage {
    /// The login role's oid; 0: a free entry.
    role: AtomicU32,
    pub sessions_now: AtomicI64,
    pub logins: AtomicU64,
    /// Indexed by `Refusal`.
    pub refused: [AtomicU64; 4],
    /// TimestampTz of the last login; 0: none since the server started.
    pub last_login_at: AtomicI64,
    pub statements: AtomicU64,
    pub rows_returned: AtomicU64,
    pub cancelled: AtomicU64,
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
        pg_sys::RequestAddinShmemSpace(size());
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
    let segment = pg_sys::ShmemInitStruct(NAME.as_ptr(), size(), &mut found) as *mut Segment;
    if !found {
        // Zeroed atomics are zero counters, empty notices and free entries.
        std::ptr::write_bytes(segment.cast::<u8>(), 0, size());
        (*segment).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(NAME.as_ptr())).lock;
        (*segment).usage_capacity = usage_capacity();
    }
    pg_sys::LWLockRelease(init_lock);
    SEGMENT = segment;
}

fn usage_capacity() -> u32 {
    crate::settings::usage_max_credentials().max(1) as u32
}

/// The segment and its usage entries, in bytes. In the postmaster only
/// (the setting's value at server start).
fn size() -> usize {
    // Segment's size is a multiple of its alignment (8), Usage's too.
    std::mem::size_of::<Segment>() + usage_capacity() as usize * std::mem::size_of::<Usage>()
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

    /// The usage entries, right after the segment.
    fn entries(&self) -> &[Usage] {
        // SAFETY: startup() sized the segment for `usage_capacity` entries
        // after `Segment`, zeroed (free), aligned (Segment's size is a
        // multiple of 8); they live as long as the server.
        unsafe {
            let first = (self as *const Segment).add(1).cast::<Usage>();
            std::slice::from_raw_parts(first, self.usage_capacity as usize)
        }
    }

    /// `role`'s usage entry, added if `add` and there is none (None when
    /// every entry is taken, or without `add` when it has none). Open
    /// addressing from the oid's slot; entries are never removed, so a free
    /// slot ends a search. Under `lock` (shared to find, exclusive to add);
    /// nothing in between raises or waits.
    pub fn usage_of(&self, role: pg_sys::Oid, add: bool) -> Option<&Usage> {
        let role = role.to_u32();
        if role == 0 {
            return None;
        }
        let entries = self.entries();
        let probe = |claim: bool| -> Option<&Usage> {
            let start = role as usize % entries.len();
            for i in 0..entries.len() {
                let entry = &entries[(start + i) % entries.len()];
                match entry.role.load(Ordering::Acquire) {
                    found if found == role => return Some(entry),
                    0 if claim => {
                        entry.role.store(role, Ordering::Release);
                        return Some(entry);
                    }
                    0 => return None,
                    _ => {}
                }
            }
            None
        };
        // SAFETY: the segment's own LWLock, released before returning; the
        // probe between raises nothing.
        unsafe {
            pg_sys::LWLockAcquire(self.lock, pg_sys::LWLockMode::LW_SHARED);
            let found = probe(false);
            pg_sys::LWLockRelease(self.lock);
            if found.is_some() || !add {
                return found;
            }
            pg_sys::LWLockAcquire(self.lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let added = probe(true);
            pg_sys::LWLockRelease(self.lock);
            if added.is_none() {
                self.usage_overflow.fetch_add(1, Ordering::Relaxed);
            }
            added
        }
    }

    /// Every entry in use, with its role (read without the lock: a role
    /// is written once and then never changes).
    pub fn usage(&self) -> impl Iterator<Item = (pg_sys::Oid, &Usage)> {
        self.entries().iter().filter_map(|entry| {
            let role = entry.role.load(Ordering::Acquire);
            (role != 0).then(|| (pg_sys::Oid::from(role), entry))
        })
    }
}

impl Usage {
    pub fn count(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> i64 {
        counter.load(Ordering::Relaxed) as i64
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
