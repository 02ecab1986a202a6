//! BI sessions yield: the yield worker, a background worker on every server
//! where bi_access is preloaded (primary and standbys alike).
//!
//! When an application backend (any session that is not a credential's)
//! or a standby's startup process (replay) has waited `bi_access.yield_after`
//! on a heavyweight lock, directly or through a chain of waits, and a
//! credential's session is what it waits behind, the worker cancels that
//! session's statement (57014). If the session still blocks the wait
//! `GRACE_MS` later (idle in transaction, or inside a savepoint, whose
//! cancel leaves the outer transaction's locks), it ends the session
//! (57P01). Each signal is counted in the shared segment (src/shmem.rs), and
//! the credential's own backend words the error it gets (`word_the_error`):
//! it yielded to the application.
//!
//! A chain: the application's `SELECT` waits behind its `ALTER TABLE`
//! (queued ahead of it), which waits behind a credential's lock. Whoever
//! waits behind whom comes from the lock table (`GetLockStatusData`, what
//! `pg_locks` shows): holders whose mode conflicts with the wait, and
//! waiters queued ahead of it (earlier wait start) whose requested mode
//! conflicts; a chain is followed through every such blocker that is not a
//! credential's.
//!
//! Cost: each round reads every PGPROC's pid, role and wait without a lock
//! (a few microseconds). The lock table is read only while a credential is
//! connected and something has waited `yield_after`; the catalogs only for
//! a role the worker has not seen yet (and again every `ROLES_FOR_MS`), and
//! right before each signal, when the target's role is asked again: only a
//! credential's session is ever signalled. Without a credential connected a
//! round comes every `yield_after / 2` (at most 1 s), else every
//! `yield_after / 10` (at most 100 ms).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::names;
use crate::settings;
use crate::shmem;

/// The worker's name and type (pg_stat_activity.backend_type).
pub const WORKER_TYPE: &str = "bi_access yield worker";
/// How long after the cancel a session that still blocks the wait is ended.
const GRACE_MS: i64 = 250;
/// How long a signalled session's notice outlives its last block: its error
/// is worded before it releases the lock, so this only has to outlast the
/// signal's delivery.
const LINGER_MS: i64 = 1000;
/// How long the worker trusts what it learnt of a role (credential or not).
const ROLES_FOR_MS: i64 = 10_000;

/// Registers the worker. Only while shared_preload_libraries is processed.
pub fn register() {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library(names::EXTENSION)
        .set_function("bi_access_yield_worker_main")
        .enable_spi_access()
        // A standby's sessions and replay need it as much as the primary's.
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pgrx::pg_guard]
#[no_mangle]
pub extern "C-unwind" fn bi_access_yield_worker_main(_argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: the shared catalogs (pg_authid, pg_auth_members) are all
    // it reads.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let Some(segment) = shmem::segment() else {
        return;
    };
    let mut worker = Worker::new(segment);
    loop {
        let pause = worker.round();
        if !BackgroundWorker::wait_latch(Some(pause)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the worker's own configuration reload, between rounds.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
}

/// One process as the worker sees it in a round.
struct Proc {
    pid: i32,
    role: pg_sys::Oid,
    /// The LOCK it waits on (its address), if it waits.
    waits_on: Option<usize>,
    /// When that wait began (PGPROC.waitStart), 0 if not set: the startup
    /// process never sets it.
    wait_start: pg_sys::TimestampTz,
}

/// One entry of the lock table (a process's hold or wait on one lock).
struct Instance {
    tag: (u32, u32, u32, u16, u8, u8),
    hold: i32,
    /// The mode it waits for (0: none), and the modes that conflict with it.
    waits_for: i32,
    conflicts: i32,
    pid: i32,
    leader: i32,
    wait_start: pg_sys::TimestampTz,
}

/// A credential session the worker signalled.
struct Yielding {
    cancelled_at: pg_sys::TimestampTz,
    terminated: bool,
    /// The last round in which it still blocked a wait.
    seen_at: pg_sys::TimestampTz,
}

struct Worker {
    segment: &'static shmem::Segment,
    roles: HashMap<pg_sys::Oid, bool>,
    roles_since: pg_sys::TimestampTz,
    /// pid -> (the LOCK it waits on, when the worker first saw that wait).
    first_seen: HashMap<i32, (usize, pg_sys::TimestampTz)>,
    yielding: HashMap<i32, Yielding>,
    context: pg_sys::MemoryContext,
}

fn now() -> pg_sys::TimestampTz {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

impl Worker {
    fn new(segment: &'static shmem::Segment) -> Worker {
        // SAFETY: a memory context of the worker's own, under its top
        // context, for the lock table it copies each round.
        let context = unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::TopMemoryContext,
                c"bi_access yield worker".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        Worker {
            segment,
            roles: HashMap::new(),
            roles_since: now(),
            first_seen: HashMap::new(),
            yielding: HashMap::new(),
            context,
        }
    }

    /// One look at the server; returns how long to wait before the next.
    fn round(&mut self) -> Duration {
        let now = now();
        let Some(after_ms) = settings::yield_after_ms() else {
            self.act(&HashMap::new(), now);
            return Duration::from_secs(1);
        };
        let procs = processes();
        if now - self.roles_since > ROLES_FOR_MS * 1000 {
            self.roles.clear();
            self.roles_since = now;
        }
        self.learn_roles(&procs);
        let credentials: HashSet<i32> = procs
            .iter()
            .filter(|p| self.roles.get(&p.role) == Some(&true))
            .map(|p| p.pid)
            .collect();
        self.track_waits(&procs, now);
        let mut targets = HashMap::new();
        if !credentials.is_empty() {
            let since = now - i64::from(after_ms) * 1000;
            let long: Vec<i32> = procs
                .iter()
                .filter(|p| p.waits_on.is_some() && !credentials.contains(&p.pid))
                .filter(|p| self.waiting_since(p.pid, p.wait_start, now) <= since)
                .map(|p| p.pid)
                .collect();
            if !long.is_empty() {
                targets = self.blockers(&long, &credentials, now);
            }
        }
        self.act(&targets, now);
        let fast = (after_ms / 10).clamp(10, 100);
        let pause = if credentials.is_empty() {
            (after_ms / 2).clamp(fast, 1000)
        } else {
            fast
        };
        Duration::from_millis(pause as u64)
    }

    /// Whether each role not seen yet is a credential's, in one transaction.
    fn learn_roles(&mut self, procs: &[Proc]) {
        let unknown: Vec<pg_sys::Oid> = procs
            .iter()
            .map(|p| p.role)
            .filter(|role| *role != pg_sys::InvalidOid && !self.roles.contains_key(role))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if unknown.is_empty() {
            return;
        }
        let answers = BackgroundWorker::transaction(move || {
            unknown
                .iter()
                .map(|role| (*role, is_credential_role(*role)))
                .collect::<Vec<_>>()
        });
        self.roles.extend(answers);
    }

    /// Remembers when each wait was first seen, for processes that do not
    /// say when theirs began (the startup process).
    fn track_waits(&mut self, procs: &[Proc], now: pg_sys::TimestampTz) {
        let mut seen = HashMap::new();
        for p in procs {
            if let Some(lock) = p.waits_on {
                let since = match self.first_seen.get(&p.pid) {
                    Some(&(known, since)) if known == lock => since,
                    _ => now,
                };
                seen.insert(p.pid, (lock, since));
            }
        }
        self.first_seen = seen;
    }

    fn waiting_since(
        &self,
        pid: i32,
        wait_start: pg_sys::TimestampTz,
        now: pg_sys::TimestampTz,
    ) -> pg_sys::TimestampTz {
        if wait_start != 0 {
            return wait_start;
        }
        self.first_seen.get(&pid).map_or(now, |&(_, since)| since)
    }

    /// The credential sessions (lock group leaders) the long waits `long`
    /// wait behind, each with the wait it blocks.
    fn blockers(
        &self,
        long: &[i32],
        credentials: &HashSet<i32>,
        now: pg_sys::TimestampTz,
    ) -> HashMap<i32, i32> {
        let instances = self.lock_table();
        let mut by_tag: HashMap<_, Vec<&Instance>> = HashMap::new();
        let mut waiting: HashMap<i32, &Instance> = HashMap::new();
        for instance in &instances {
            by_tag.entry(instance.tag).or_default().push(instance);
            if instance.waits_for != 0 {
                waiting.insert(instance.pid, instance);
            }
        }
        let since = |i: &Instance| self.waiting_since(i.pid, i.wait_start, now);
        let mut targets = HashMap::new();
        let mut visited: HashSet<i32> = long.iter().copied().collect();
        let mut chain: Vec<(i32, i32)> = long.iter().map(|pid| (*pid, *pid)).collect();
        while let Some((pid, origin)) = chain.pop() {
            let Some(wait) = waiting.get(&pid) else {
                continue;
            };
            for other in &by_tag[&wait.tag] {
                if other.leader == wait.leader {
                    continue; // itself, or its own lock group
                }
                let holds = wait.conflicts & other.hold != 0;
                let queued_ahead = other.waits_for != 0
                    && wait.conflicts & (1 << other.waits_for) != 0
                    && since(other) < since(wait);
                if !holds && !queued_ahead {
                    continue;
                }
                if credentials.contains(&other.leader) {
                    targets.entry(other.leader).or_insert(origin);
                } else if credentials.contains(&other.pid) {
                    targets.entry(other.pid).or_insert(origin);
                } else if visited.insert(other.pid) {
                    chain.push((other.pid, origin));
                }
            }
        }
        targets
    }

    /// A copy of the lock table, as pg_locks reads it.
    fn lock_table(&self) -> Vec<Instance> {
        // SAFETY: GetLockStatusData takes every lock-table partition lock
        // in turn and returns a palloc'd copy, made here in the worker's own
        // context, read, and freed with it.
        unsafe {
            let previous = pg_sys::MemoryContextSwitchTo(self.context);
            let data = pg_sys::GetLockStatusData();
            let entries = std::slice::from_raw_parts((*data).locks, (*data).nelements as usize);
            let instances = entries
                .iter()
                .map(|entry| {
                    let tag = &entry.locktag;
                    let conflicts = if entry.waitLockMode != 0 {
                        let method = pg_sys::GetLockTagsMethodTable(tag);
                        *(*method).conflictTab.add(entry.waitLockMode as usize)
                    } else {
                        0
                    };
                    Instance {
                        tag: (
                            tag.locktag_field1,
                            tag.locktag_field2,
                            tag.locktag_field3,
                            tag.locktag_field4,
                            tag.locktag_type,
                            tag.locktag_lockmethodid,
                        ),
                        hold: entry.holdMask,
                        waits_for: entry.waitLockMode,
                        conflicts,
                        pid: entry.pid,
                        leader: entry.leaderPid,
                        wait_start: entry.waitStart,
                    }
                })
                .collect();
            pg_sys::MemoryContextSwitchTo(previous);
            pg_sys::MemoryContextReset(self.context);
            instances
        }
    }

    /// Cancels each new target, ends one that still blocks `GRACE_MS` after
    /// its cancel, and forgets those that stopped blocking.
    fn act(&mut self, targets: &HashMap<i32, i32>, now: pg_sys::TimestampTz) {
        for (&pid, &waiter) in targets {
            match self.yielding.get_mut(&pid) {
                None => {
                    if self.signal(pid, libc::SIGINT) {
                        self.segment.yields.count_cancel();
                        pgrx::log!(
                            "bi_access: cancelled the statement of credential session {pid}: process {waiter} waited on its lock longer than bi_access.yield_after"
                        );
                        self.yielding.insert(
                            pid,
                            Yielding {
                                cancelled_at: now,
                                terminated: false,
                                seen_at: now,
                            },
                        );
                    }
                }
                Some(known) => {
                    known.seen_at = now;
                    if !known.terminated && now - known.cancelled_at >= GRACE_MS * 1000 {
                        known.terminated = true;
                        if self.signal(pid, libc::SIGTERM) {
                            self.segment.yields.count_termination();
                            pgrx::log!(
                                "bi_access: ended credential session {pid}: after its cancel it still held the lock process {waiter} waited on"
                            );
                        }
                    }
                }
            }
        }
        let segment = self.segment;
        self.yielding.retain(|pid, known| {
            let keep = targets.contains_key(pid) || now - known.seen_at < LINGER_MS * 1000;
            if !keep {
                segment.withdraw(*pid);
            }
            keep
        });
    }

    /// Signals `pid` if it is still a credential's session: its role is
    /// asked again of the catalogs, in a transaction of its own, right
    /// before; its backend is told first, to word the error.
    fn signal(&self, pid: i32, signal: i32) -> bool {
        let credential = BackgroundWorker::transaction(move || {
            // SAFETY: BackendPidGetProc takes the proc array's lock; the
            // role is read from a PGPROC that was in the array a moment ago.
            unsafe {
                let proc = pg_sys::BackendPidGetProc(pid);
                !proc.is_null() && is_credential_role((*proc).roleId)
            }
        });
        if !credential {
            return false;
        }
        self.segment.give_notice(pid);
        // SAFETY: a signal to another process of the server, as
        // pg_cancel_backend and pg_terminate_backend send it.
        if unsafe { libc::kill(pid, signal) } != 0 {
            self.segment.withdraw(pid);
            return false;
        }
        true
    }
}

/// Whether `role` is a credential's login (a member of the credential
/// group). Inside a transaction.
fn is_credential_role(role: pg_sys::Oid) -> bool {
    // SAFETY: syscache lookups of shared catalogs; none raises for a
    // missing role.
    unsafe {
        let group = pg_sys::get_role_oid(names::CREDENTIAL_GROUP_C.as_ptr(), true);
        group != pg_sys::InvalidOid
            && role != group
            && pg_sys::is_member_of_role_nosuper(role, group)
    }
}

/// Every live process with a PGPROC (backends, workers, the startup
/// process), read without a lock: a process that starts or ends meanwhile
/// is seen in the next round.
fn processes() -> Vec<Proc> {
    // SAFETY: ProcGlobal and its PGPROC array live in shared memory for the
    // life of the server; each field is a plain value read as it is. A
    // PGPROC back on the free list keeps its last pid, but its latch has no
    // owner: only a PGPROC whose latch its pid owns is a live process.
    unsafe {
        let global = pg_sys::ProcGlobal;
        if global.is_null() {
            return Vec::new();
        }
        (0..(*global).allProcCount as usize)
            .filter_map(|i| {
                let proc = (*global).allProcs.add(i);
                let pid = std::ptr::read_volatile(&raw const (*proc).pid);
                let owner = std::ptr::read_volatile(&raw const (*proc).procLatch.owner_pid);
                if pid == 0 || owner != pid || pid == pg_sys::MyProcPid {
                    return None;
                }
                let lock = std::ptr::read_volatile(&raw const (*proc).waitLock);
                Some(Proc {
                    pid,
                    role: std::ptr::read_volatile(&raw const (*proc).roleId),
                    waits_on: (!lock.is_null()).then_some(lock as usize),
                    wait_start: std::ptr::read_volatile(&raw const (*proc).waitStart.value)
                        as pg_sys::TimestampTz,
                })
            })
            .collect()
    }
}

static mut PREVIOUS_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Installs the wording of a yielded session's error, in every process
/// (the credential's own backend words it).
pub fn install() {
    // SAFETY: called once from _PG_init; the previous hook is kept and
    // called in turn.
    unsafe {
        PREVIOUS_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(word_the_error);
    }
}

/// The cancel and the termination of a session the yield worker signalled
/// say why: PostgreSQL's own words would be "due to user request" and "due
/// to administrator command".
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn word_the_error(error: *mut pg_sys::ErrorData) {
    // The same report counts for the usage view (a cancel, a refused login).
    crate::usage::at_error(error);
    let code = (*error).sqlerrcode;
    let cancel = code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED as i32;
    let ended = code == PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN as i32;
    if (*error).elevel >= pg_sys::PGERROR as i32
        && (cancel || ended)
        && shmem::segment().is_some_and(|segment| segment.noticed(pg_sys::MyProcPid))
    {
        let after = settings::duration(settings::yield_after_ms().unwrap_or(0));
        let (message, detail, hint) = if cancel {
            (
                "canceling statement: this bi_access credential yielded its lock to the application",
                format!("The application, or this standby's replay, waited longer than bi_access.yield_after ({after}) for a lock this session held."),
                "Run the statement again. Keep transactions short: the application's statements come first.",
            )
        } else {
            (
                "terminating connection: this bi_access credential yielded its lock to the application",
                format!("The application, or this standby's replay, waited longer than bi_access.yield_after ({after}) for a lock this session still held after its statement was cancelled (idle in transaction, or inside a savepoint)."),
                "Reconnect. Commit or roll back as soon as the results are read: the application's statements come first.",
            )
        };
        (*error).message = palloc_str(message);
        (*error).detail = palloc_str(&detail);
        (*error).hint = palloc_str(hint);
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
