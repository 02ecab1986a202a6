//! Every difference between the PostgreSQL majors bi_access supports (14 to
//! 18, one cargo feature each), in one place. The rest of the crate calls
//! these and never looks at the major itself.
//!
//! | what | 14 | 15 | 16 and later |
//! | --- | --- | --- | --- |
//! | reserving the `bi_access.` GUC prefix | `EmitWarningsOnPlaceholders` | `MarkGUCPrefixReserved` | same |
//! | `AlterRole()` | no `ParseState` | takes one | same |
//! | a `String` parse node | `Value` | `String` | same |
//! | views with `security_invoker` | none | yes | yes |
//! | executor permission hook | range table | range table | range table and `RTEPermissionInfo` list |
//! | a membership allows `SET ROLE` to the group | always | always | only `WITH SET TRUE` |
//! | finding a built-in setting's record | the GUC array | the GUC array | `find_option` (a hash table) |
//! | `session_preload_libraries` load | after the startup transaction | inside it | inside it |
//! | shared memory requested | in `_PG_init` | in `shmem_request_hook` | same |
//! | `transaction_timeout` | none (bi_access runs a timer) | none | 16: none; 17 on: PostgreSQL's own |
//! | first free `TimeoutId` (`USER_TIMEOUT`) | 10 | 12 | 16: 12; 17 on: 13 |
//! | `AddinShmemInitLock` | main LWLock 21 | same | same |
//! | `ExecutorRun_hook` | with `execute_once` | same | same, and without it from 18 |
//! | connection slots reserved | `superuser_reserved_connections` | same | and `reserved_connections` |
//!
//! (From 17 on `ALTER SYSTEM SET bi_access.…` no longer needs the library
//! loaded in the session; nothing here depends on it, README says so.)

#[cfg(not(any(
    feature = "pg14",
    feature = "pg15",
    feature = "pg16",
    feature = "pg17",
    feature = "pg18"
)))]
compile_error!("enable exactly one of the features pg14, pg15, pg16, pg17, pg18");

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgList;

/// The record of a setting, defined or a placeholder (NULL if there is none
/// of that name).
/// 14 and 15 keep the records in one array; 16 replaced it with a hash table
/// and exports `find_option` to search it.
pub fn find_guc(name: &CStr) -> *mut pg_sys::config_generic {
    // Names compare as guc.c compares them: ASCII case folded (a
    // placeholder keeps the case the client spelled it in).
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    {
        guc_records()
            .iter()
            .copied()
            .find(|&record| guc_name_order(guc_name(record), name).is_eq())
            .unwrap_or(std::ptr::null_mut())
    }
    #[cfg(not(any(feature = "pg14", feature = "pg15")))]
    // SAFETY: a lookup in guc.c's hash table; with create_placeholders false
    // it raises nothing and answers NULL for an unknown name.
    unsafe {
        pg_sys::find_option(
            name.as_ptr(),
            false,
            true,
            pg_sys::WARNING as std::ffi::c_int,
        )
    }
}

/// guc.c's array of records, sorted by name (14 and 15).
#[cfg(any(feature = "pg14", feature = "pg15"))]
fn guc_records() -> &'static mut [*mut pg_sys::config_generic] {
    // SAFETY: guc.c's array and its length, in the backend's only thread;
    // the slice is used before any call that could grow (move) the array.
    unsafe {
        let records = pg_sys::get_guc_variables();
        let count = pg_sys::GetNumConfigOptions() as usize;
        if records.is_null() || count == 0 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut(records, count)
    }
}

/// A record's name.
#[cfg(any(feature = "pg14", feature = "pg15"))]
fn guc_name<'a>(record: *mut pg_sys::config_generic) -> &'a CStr {
    // SAFETY: every record of guc.c's array has a NUL-terminated name.
    unsafe { CStr::from_ptr((*record).name) }
}

/// guc.c's `guc_name_compare` (static in 14 and 15), the order of its
/// array: bytes compared as C's signed `char`, A to Z folded to lower case.
#[cfg(any(feature = "pg14", feature = "pg15"))]
fn guc_name_order(a: &CStr, b: &CStr) -> std::cmp::Ordering {
    let fold = |byte: &u8| byte.to_ascii_lowercase() as i8;
    a.to_bytes()
        .iter()
        .map(fold)
        .cmp(b.to_bytes().iter().map(fold))
}

/// The name to define an extension setting under (14 and 15).
///
/// Defining a setting appends its record to guc.c's array and sorts all of
/// it (about 360 records), at each of a credential session's 18 definitions
/// at every login: 2.4 ms of a 14 ms login on the bench's cluster, a fifth
/// of a backend's CPU during logins. A record whose name sorts after every
/// other leaves the array sorted, which the sort checks first and in one
/// pass. So a setting with no record yet is defined under a stand-in name
/// that sorts last, and `settings_defined` renames the stand-ins and sorts
/// once. A setting that already has a record (a placeholder from the
/// server's configuration, the role, the database or the client) keeps its
/// name: defining it replaces that record in place, with its value, and
/// sorts nothing. 16 and later keep the records in a hash table.
pub fn setting_name(name: &'static CStr) -> &'static CStr {
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    {
        if !find_guc(name).is_null() {
            return name;
        }
        STAND_INS.with(|stand_ins| {
            let mut stand_ins = stand_ins.borrow_mut();
            // Leaked, a few bytes once per backend: guc.c keeps a defined
            // setting's name for the backend's life (settings_defined
            // points the record at `name` instead).
            let stand_in: &'static CStr = Box::leak(
                std::ffi::CString::new(format!("{STAND_IN_PREFIX}{:04}", stand_ins.len()))
                    .expect("no NUL in a stand-in name")
                    .into_boxed_c_str(),
            );
            stand_ins.push((stand_in, name));
            stand_in
        })
    }
    #[cfg(not(any(feature = "pg14", feature = "pg15")))]
    name
}

/// Sorts after every setting's name (guc_name_compare: "z" is the highest
/// letter, and no built-in or known extension setting starts with it twice).
#[cfg(any(feature = "pg14", feature = "pg15"))]
const STAND_IN_PREFIX: &str = "zzzzzzzz_bi_access_stand_in.s";

#[cfg(any(feature = "pg14", feature = "pg15"))]
thread_local! {
    /// The stand-in names given out since the last `settings_defined`, each
    /// with its setting's name.
    static STAND_INS: std::cell::RefCell<Vec<(&'static CStr, &'static CStr)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// After the settings' definitions (14 and 15): each record defined under
/// a stand-in name takes its setting's, and the array is sorted again, as
/// guc.c would have left it. Fails (ERROR; FATAL at login) unless the array
/// is then strictly ordered: no name twice, every lookup finds its record.
pub fn settings_defined() {
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    {
        let stand_ins = STAND_INS.with(|stand_ins| std::mem::take(&mut *stand_ins.borrow_mut()));
        if stand_ins.is_empty() {
            return;
        }
        let records = guc_records();
        let mut renamed = 0;
        for &record in records.iter() {
            let name = guc_name(record);
            if let Some((_, real)) = stand_ins.iter().find(|(stand_in, _)| *stand_in == name) {
                // SAFETY: the record is ours, defined just now under the
                // stand-in; guc.c never frees a defined setting's name, and
                // `real` is static.
                unsafe { (*record).name = real.as_ptr() };
                renamed += 1;
            }
        }
        records.sort_by(|&a, &b| guc_name_order(guc_name(a), guc_name(b)));
        let ordered = records
            .windows(2)
            .all(|pair| guc_name_order(guc_name(pair[0]), guc_name(pair[1])).is_lt());
        if renamed != stand_ins.len() || !ordered {
            pgrx::error!(
                "bi_access could not define its settings ({renamed} of {} renamed, order {})",
                stand_ins.len(),
                if ordered { "kept" } else { "broken" }
            );
        }
    }
}

/// `TimeoutId` STATEMENT_TIMEOUT (utils/timeout.h), the same from 14 to 18.
pub const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

/// `TimeoutId` USER_TIMEOUT (utils/timeout.h): asking `RegisterTimeout` for
/// it gives the first timer no one registered yet. It moved as PostgreSQL
/// added timers of its own.
#[cfg(feature = "pg14")]
pub const USER_TIMEOUT: std::ffi::c_int = 10;
#[cfg(any(feature = "pg15", feature = "pg16"))]
pub const USER_TIMEOUT: std::ffi::c_int = 12;
#[cfg(not(any(feature = "pg14", feature = "pg15", feature = "pg16")))]
pub const USER_TIMEOUT: std::ffi::c_int = 13;

/// PostgreSQL 17's ERRCODE_TRANSACTION_TIMEOUT, `25P04`.
pub const TRANSACTION_TIMEOUT: i32 = sqlstate(*b"25P04");

/// MAKE_SQLSTATE (utils/elog.h): six bits per character.
pub(crate) const fn sqlstate(code: [u8; 5]) -> i32 {
    let mut value = 0;
    let mut i = 0;
    while i < 5 {
        value |= ((code[i] as i32 - b'0' as i32) & 0x3f) << (6 * i);
        i += 1;
    }
    value
}

/// Whether PostgreSQL has `transaction_timeout` (17 and later): the session
/// guard caps it there, and runs a timer of its own before.
pub const TRANSACTION_TIMEOUT_BUILT_IN: bool = cfg!(not(any(
    feature = "pg14",
    feature = "pg15",
    feature = "pg16"
)));

// utils/timeout.h, which pgrx's bindings leave out.
unsafe extern "C-unwind" {
    pub fn get_timeout_active(id: std::ffi::c_int) -> bool;
    pub fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    pub fn enable_timeout_at(id: std::ffi::c_int, fin_time: pg_sys::TimestampTz);
    pub fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
    pub fn RegisterTimeout(
        id: std::ffi::c_int,
        handler: Option<unsafe extern "C-unwind" fn()>,
    ) -> std::ffi::c_int;
}

/// `AddinShmemInitLock` (storage/lwlocknames.h), a macro pgrx's bindings
/// leave out: the 22nd of the main LWLocks on every major from 14 to 18.
pub fn addin_shmem_init_lock() -> *mut pg_sys::LWLock {
    // SAFETY: MainLWLockArray is in shared memory from its initialisation
    // on, and holds every built-in LWLock.
    unsafe { &raw mut (*pg_sys::MainLWLockArray.add(21)).lock }
}

#[cfg(not(feature = "pg14"))]
static mut SHMEM_REQUEST: Option<fn()> = None;
#[cfg(not(feature = "pg14"))]
static mut PREVIOUS_SHMEM_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;

/// Has `request` ask for shared memory and LWLocks at server start, where
/// the major allows it: 15 and later only in `shmem_request_hook` (once the
/// size of everything else is known), 14 only in `_PG_init` itself.
///
/// # Safety
/// Once, from `_PG_init`, while shared_preload_libraries is being processed.
pub unsafe fn request_shared_memory(request: fn()) {
    #[cfg(feature = "pg14")]
    request();
    #[cfg(not(feature = "pg14"))]
    {
        SHMEM_REQUEST = Some(request);
        PREVIOUS_SHMEM_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
    }
}

#[cfg(not(feature = "pg14"))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    if let Some(previous) = PREVIOUS_SHMEM_REQUEST_HOOK {
        previous();
    }
    if let Some(request) = SHMEM_REQUEST {
        request();
    }
}

/// Whether this build's PostgreSQL has `security_invoker` views (15 and
/// later). Before that every view runs as its owner, past row-level security,
/// so bi_access can expose no view at all.
pub const VIEWS_HAVE_SECURITY_INVOKER: bool = cfg!(not(feature = "pg14"));

/// Whether a role membership can be granted without the right to `SET ROLE`
/// to the group (`WITH SET FALSE`, 16 and later). Before 16 every membership
/// allows it, which is why the session guard is keyed on the login and never
/// on the current user.
pub const MEMBERSHIP_WITHOUT_SET_ROLE: bool = cfg!(not(any(feature = "pg14", feature = "pg15")));

/// Runs `f` where the catalogs can be read while the library is loaded at
/// session start (`session_preload_libraries`, before any query), or answers
/// `None` where they cannot. 15 and later load it inside the startup
/// transaction. 14 loads it just after that transaction committed, so `f`
/// gets a transaction of its own there, committed after it (a FATAL from `f`
/// ends the session either way). A shared preload in the postmaster has no
/// session yet, and is answered `None` on every major.
pub fn at_session_start<T>(f: impl FnOnce() -> T) -> Option<T> {
    // SAFETY: reads of backend-local state.
    if unsafe { pg_sys::IsTransactionState() } {
        return Some(f());
    }
    #[cfg(feature = "pg14")]
    // SAFETY: a backend with a session, between statements (no query yet) and
    // outside any transaction: what PostgresMain itself does around each
    // command.
    unsafe {
        let port = pg_sys::MyProcPort;
        if pg_sys::IsUnderPostmaster
            && !port.is_null()
            && pg_sys::GetSessionUserId() != pg_sys::InvalidOid
        {
            pg_sys::StartTransactionCommand();
            let answer = f();
            pg_sys::CommitTransactionCommand();
            return Some(answer);
        }
    }
    None
}

/// Whether `reserve_guc_prefix` really reserves (15 and later).
#[cfg_attr(not(feature = "pg_test"), allow(dead_code))] // the tests ask
pub const GUC_PREFIX_RESERVED: bool = cfg!(not(feature = "pg14"));

/// Stops sessions from inventing placeholders under `prefix` (`SET
/// bi_access.typo = …`) once the extension's own settings are defined.
///
/// PostgreSQL 14 has no reservation: `EmitWarningsOnPlaceholders` only warns
/// about the placeholders that exist when it runs, and a later `SET` of an
/// unknown `bi_access.` name still creates one. bi_access reads no setting it
/// did not define, so such a placeholder steers nothing.
///
/// `quietly`: without the WARNING each remaining placeholder (a setting of
/// the server's configuration this session chose not to define) would give
/// the client and the log.
pub fn reserve_guc_prefix(prefix: &'static CStr, quietly: bool) {
    // SAFETY: called from _PG_init with a static C string; both functions
    // copy the prefix and only walk the GUC table. The message levels are
    // this backend's own variables, restored right after.
    unsafe {
        let levels = (pg_sys::client_min_messages, pg_sys::log_min_messages);
        if quietly {
            pg_sys::client_min_messages = pg_sys::PGERROR as i32;
            pg_sys::log_min_messages = pg_sys::PGERROR as i32;
        }
        #[cfg(feature = "pg14")]
        pg_sys::EmitWarningsOnPlaceholders(prefix.as_ptr());
        #[cfg(not(feature = "pg14"))]
        pg_sys::MarkGUCPrefixReserved(prefix.as_ptr());
        (pg_sys::client_min_messages, pg_sys::log_min_messages) = levels;
    }
}

/// Runs an `ALTER ROLE` parse tree, as `ProcessUtility` would.
///
/// # Safety
/// `stmt` must be a complete `AlterRoleStmt` in a memory context that
/// outlives the call, inside a transaction.
pub unsafe fn alter_role(stmt: *mut pg_sys::AlterRoleStmt) {
    #[cfg(feature = "pg14")]
    pg_sys::AlterRole(stmt);
    #[cfg(not(feature = "pg14"))]
    pg_sys::AlterRole(pg_sys::make_parsestate(std::ptr::null_mut()), stmt);
}

/// The text of a `String` parse node (an identifier in a name list), or
/// `None` for any other node. PostgreSQL 14 keeps it in a `Value` node.
///
/// # Safety
/// `node` must be NULL or a valid parse node that outlives the answer.
pub unsafe fn string_node<'a>(node: *mut pg_sys::Node) -> Option<&'a CStr> {
    if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_String {
        return None;
    }
    #[cfg(feature = "pg14")]
    let text = (*(node as *mut pg_sys::Value)).val.str_;
    #[cfg(not(feature = "pg14"))]
    let text = (*(node as *mut pg_sys::String)).sval;
    (!text.is_null()).then(|| CStr::from_ptr(text))
}

/// Whether an open view runs with its caller's rights. On 14, never.
///
/// # Safety
/// `relation` must be an open relcache entry of a view.
pub unsafe fn view_is_security_invoker(relation: pg_sys::Relation) -> bool {
    #[cfg(feature = "pg14")]
    {
        let _ = relation;
        false
    }
    #[cfg(not(feature = "pg14"))]
    {
        let options = (*relation).rd_options as *const pg_sys::ViewOptions;
        !options.is_null() && (*options).security_invoker
    }
}

/// Whether CREATEROLE lets a role grant itself any role (14 and 15), such
/// as pg_read_server_files; from 16 on only roles it has ADMIN on.
pub const CREATEROLE_GRANTS_ANY_ROLE: bool = cfg!(any(feature = "pg14", feature = "pg15"));

/// A condition on a `pg_auth_members m` row, for 16 and later (the column
/// is new there): the membership lets its member SET ROLE to the group.
pub const MEMBERSHIP_ALLOWS_SET_ROLE_SQL: &str = "m.set_option";

/// The statement that makes `role` a member of `groups` (all quoted
/// already), inheriting their privileges. From 16 on the membership does not
/// allow `SET ROLE` to the group: a credential can never act as its reader
/// group or as `bi_access_credential`.
pub fn grant_membership_sql(groups: &[String], role: &str) -> String {
    let options = if MEMBERSHIP_WITHOUT_SET_ROLE {
        " WITH INHERIT TRUE, SET FALSE"
    } else {
        ""
    };
    format!("GRANT {} TO {role}{options}", groups.join(", "))
}

/// A relation the executor is about to access, and the rights the statement
/// needs on it (`ACL_SELECT`, `ACL_INSERT`…).
#[derive(Clone, Copy, Debug)]
pub struct PermissionRequest {
    pub relid: pg_sys::Oid,
    pub required: pg_sys::AclMode,
    /// The columns read, each as its attribute number less
    /// FirstLowInvalidHeapAttributeNumber (0, the whole row, included).
    pub selected: *mut pg_sys::Bitmapset,
}

/// What the executor permission hook asks: `check(requests, report)` returns
/// whether the statement may run; with `report` it raises instead of
/// answering `false`.
pub type PermissionCheck = fn(&mut dyn Iterator<Item = PermissionRequest>, bool) -> bool;

static mut PERMISSION_CHECK: Option<PermissionCheck> = None;
static mut PREVIOUS_PERMISSION_HOOK: pg_sys::ExecutorCheckPerms_hook_type = None;

/// Installs `check` as `ExecutorCheckPerms_hook`, behind whatever hook was
/// there (it runs first and can refuse on its own).
///
/// # Safety
/// Once per backend, from `_PG_init`, before any query runs.
pub unsafe fn install_permission_check(check: PermissionCheck) {
    PERMISSION_CHECK = Some(check);
    PREVIOUS_PERMISSION_HOOK = pg_sys::ExecutorCheckPerms_hook;
    pg_sys::ExecutorCheckPerms_hook = Some(executor_check_perms);
}

/// A range-table entry (14, 15) as a request, if the statement itself names
/// it: an entry with no required permission is one the planner added (an
/// inheritance child, read through its parent).
///
/// # Safety
/// `entry` must be a valid RangeTblEntry.
#[cfg(any(feature = "pg14", feature = "pg15"))]
unsafe fn request(entry: *mut pg_sys::RangeTblEntry) -> Option<PermissionRequest> {
    ((*entry).rtekind == pg_sys::RTEKind::RTE_RELATION && (*entry).requiredPerms != 0).then(|| {
        PermissionRequest {
            relid: (*entry).relid,
            required: (*entry).requiredPerms,
            selected: (*entry).selectedCols,
        }
    })
}

/// From 16 on the permissions live in a list of their own, one element per
/// relation the statement names (inheritance children have none).
///
/// # Safety
/// `info` must be a valid RTEPermissionInfo.
#[cfg(not(any(feature = "pg14", feature = "pg15")))]
unsafe fn request(info: *mut pg_sys::RTEPermissionInfo) -> Option<PermissionRequest> {
    ((*info).requiredPerms != 0).then(|| PermissionRequest {
        relid: (*info).relid,
        required: (*info).requiredPerms,
        selected: (*info).selectedCols,
    })
}

/// The hook in the shape of 14 and 15: `(rangeTable, ereport)`.
#[cfg(any(feature = "pg14", feature = "pg15"))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_check_perms(
    range_table: *mut pg_sys::List,
    report: bool,
) -> bool {
    if let Some(previous) = PREVIOUS_PERMISSION_HOOK {
        if !previous(range_table, report) {
            return false;
        }
    }
    let Some(check) = PERMISSION_CHECK else {
        return true;
    };
    let entries = PgList::<pg_sys::RangeTblEntry>::from_pg(range_table);
    // SAFETY: every element of a range table is a RangeTblEntry.
    let mut requests = entries
        .iter_ptr()
        .filter_map(|entry| unsafe { request(entry) });
    check(&mut requests, report)
}

/// The hook in the shape of 16 and later: `(rangeTable, rtePermInfos,
/// ereport)`; the range table itself carries no permissions any more.
#[cfg(not(any(feature = "pg14", feature = "pg15")))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_check_perms(
    range_table: *mut pg_sys::List,
    permission_infos: *mut pg_sys::List,
    report: bool,
) -> bool {
    if let Some(previous) = PREVIOUS_PERMISSION_HOOK {
        if !previous(range_table, permission_infos, report) {
            return false;
        }
    }
    let Some(check) = PERMISSION_CHECK else {
        return true;
    };
    let infos = PgList::<pg_sys::RTEPermissionInfo>::from_pg(permission_infos);
    // SAFETY: every element of rtePermInfos is an RTEPermissionInfo.
    let mut requests = infos.iter_ptr().filter_map(|info| unsafe { request(info) });
    check(&mut requests, report)
}

/// The connection slots a role without reserved connections may take:
/// max_connections less superuser_reserved_connections and, from 16,
/// reserved_connections (for members of pg_use_reserved_connections).
pub fn unreserved_connection_slots() -> i32 {
    // SAFETY: reads of this backend's GUC variables.
    unsafe {
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        let reserved = pg_sys::ReservedBackends;
        #[cfg(not(any(feature = "pg14", feature = "pg15")))]
        let reserved = pg_sys::SuperuserReservedConnections + pg_sys::ReservedConnections;
        pg_sys::MaxConnections - reserved
    }
}

/// What runs around every ExecutorRun: `run` runs the executor (the hook
/// that was there before, or PostgreSQL's own), once.
pub type RunWrapper = unsafe fn(*mut pg_sys::QueryDesc, &mut dyn FnMut());

/// One ExecutorRun hook for bi_access (18 dropped its `execute_once`
/// argument): the quota's wrapper around the run (guard/quota.rs), and the
/// memory check after each outermost run (guard/memory.rs).
static mut RUN_WRAPPER: Option<RunWrapper> = None;
/// What runs after an outermost run: the memory check and the usage
/// counters' rows (src/usage.rs).
static mut AFTER_EXECUTOR_RUN: [Option<AfterRun>; 2] = [None; 2];
type AfterRun = fn(*mut pg_sys::QueryDesc, u64);
static mut PREVIOUS_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut EXECUTOR_RUN_HOOKED: bool = false;

thread_local! {
    /// Runs of the executor in progress: more than one inside a function a
    /// statement calls.
    static RUNS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the executor is running a statement now (what starts then is a
/// function's statement inside it).
pub fn inside_executor_run() -> bool {
    RUNS.with(|runs| runs.get() > 0)
}

/// Counts a run for as long as it lasts, however it ends (an error unwinds
/// through it).
struct Running;

impl Running {
    fn enter() -> Self {
        RUNS.with(|runs| runs.set(runs.get() + 1));
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNS.with(|runs| runs.set(runs.get().saturating_sub(1)));
    }
}

/// # Safety
/// From `_PG_init` only.
unsafe fn hook_executor_run() {
    if !EXECUTOR_RUN_HOOKED {
        EXECUTOR_RUN_HOOKED = true;
        PREVIOUS_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
    }
}

/// Installs `wrapper` around every ExecutorRun, in front of whatever hook
/// was there.
///
/// # Safety
/// Once per backend, from `_PG_init`, before any query runs.
pub unsafe fn install_executor_run(wrapper: RunWrapper) {
    RUN_WRAPPER = Some(wrapper);
    hook_executor_run();
}

/// Installs `after` to run after every outermost run of the executor (with
/// the query and the row count it was asked for, 0 for all), after those
/// installed before it.
///
/// # Safety
/// Once per backend and caller, from `_PG_init`, before any query runs.
pub unsafe fn install_after_executor_run(after: fn(*mut pg_sys::QueryDesc, u64)) {
    let slots = &mut *std::ptr::addr_of_mut!(AFTER_EXECUTOR_RUN);
    let Some(free) = slots.iter_mut().find(|slot| slot.is_none()) else {
        panic!("bi_access installs more executor run hooks than it has slots for");
    };
    *free = Some(after);
    hook_executor_run();
}

/// Runs the executor through the wrapper, counted while it runs, then what
/// comes after an outermost run.
///
/// # Safety
/// From the ExecutorRun hook, with its query.
unsafe fn around_executor_run(query: *mut pg_sys::QueryDesc, count: u64, run: &mut dyn FnMut()) {
    let running = Running::enter();
    match RUN_WRAPPER {
        Some(wrapper) => wrapper(query, run),
        None => run(),
    }
    drop(running);
    if !inside_executor_run() {
        for after in (*std::ptr::addr_of!(AFTER_EXECUTOR_RUN)).iter().flatten() {
            after(query, count);
        }
    }
}

/// The hook in the shape of 14 to 17.
#[cfg(not(feature = "pg18"))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    let mut run = || match PREVIOUS_EXECUTOR_RUN {
        // Guarded like pg_sys's own calls: an error there unwinds through
        // the run counter, which must not stay counted.
        Some(previous) => {
            pg_sys::ffi::pg_guard_ffi_boundary(|| previous(query, direction, count, execute_once))
        }
        None => pg_sys::standard_ExecutorRun(query, direction, count, execute_once),
    };
    around_executor_run(query, count, &mut run);
}

/// The hook in the shape of 18, which dropped `execute_once`.
#[cfg(feature = "pg18")]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    let mut run = || match PREVIOUS_EXECUTOR_RUN {
        // As above.
        Some(previous) => pg_sys::ffi::pg_guard_ffi_boundary(|| previous(query, direction, count)),
        None => pg_sys::standard_ExecutorRun(query, direction, count),
    };
    around_executor_run(query, count, &mut run);
}
