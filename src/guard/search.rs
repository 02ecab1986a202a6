//! The planner's search settings: a credential session may move them only
//! toward less planning work, never past the server's value.
//!
//! Raising the collapse limits and turning `geqo` off made one `EXPLAIN` of a
//! 16-way join take 3.2 GB in 30 s: the planner's exhaustive search grows
//! exponentially with them, and no work_mem or statement timeout holds it
//! (planning allocates outside work_mem, and a timeout leaves the memory to
//! the allocator). So, in a credential session:
//! - `geqo` may not be turned off; `enable_partitionwise_join`,
//!   `enable_partitionwise_aggregate` and `jit` may not be turned on;
//! - `geqo_threshold`, `join_collapse_limit`, `from_collapse_limit`,
//!   `geqo_effort`, `geqo_pool_size` and `geqo_generations` may not be
//!   raised (the last two's 0, chosen by the effort, counts as 500, the most
//!   it chooses);
//! - `jit_above_cost`, `jit_inline_above_cost` and `jit_optimize_above_cost`
//!   may not be lowered (lowering a cost is the raise; -1, never, is the
//!   least work).
//!
//! "The server's value" is the one the session got from the server's
//! configuration, the database's or the role's settings. A value the client
//! asked for in its startup packet replaced it: the login gate looks it up
//! (the configuration files, then pg_db_role_setting; else the built-in
//! default) and lowers the client's to it with a WARNING. A raise by SET,
//! SET LOCAL, set_config() or a function's SET clause is refused with 42501
//! and the value stays as it was (the settings' check hooks are wrapped, as
//! for the guardrails in caps.rs).

use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr, CString};

use pgrx::pg_sys;

use super::session::known_credential_session;
use crate::compat;

/// What "more work" means for one setting.
#[derive(Clone, Copy)]
enum Work {
    /// A boolean that costs more work in this state.
    When(bool),
    /// An integer that costs more as it grows; `auto` is what its 0 counts as.
    Grows { auto: Option<i32> },
    /// A cost threshold: below it the work is done; -1 is never.
    CostBelow,
}

impl Work {
    /// Whether `value` is more work than `server` (booleans as 0 and 1).
    fn more(self, value: f64, server: f64) -> bool {
        match self {
            Work::When(state) => {
                let more = if state { 1.0 } else { 0.0 };
                value == more && server != more
            }
            Work::Grows { auto } => {
                let effective = |v: f64| match auto {
                    Some(auto) if v == 0.0 => f64::from(auto),
                    _ => v,
                };
                effective(value) > effective(server)
            }
            Work::CostBelow => value != -1.0 && (server == -1.0 || value < server),
        }
    }
}

struct Setting {
    name: &'static CStr,
    work: Work,
}

/// The most generations or individuals an automatic geqo_pool_size or
/// geqo_generations (0) gets: 50 × geqo_effort, whose maximum is 10.
const GEQO_AUTO_MAX: i32 = 500;

const BOOLS: [Setting; 4] = [
    Setting {
        name: c"geqo",
        work: Work::When(false),
    },
    Setting {
        name: c"enable_partitionwise_join",
        work: Work::When(true),
    },
    Setting {
        name: c"enable_partitionwise_aggregate",
        work: Work::When(true),
    },
    Setting {
        name: c"jit",
        work: Work::When(true),
    },
];

const INTS: [Setting; 6] = [
    Setting {
        name: c"geqo_threshold",
        work: Work::Grows { auto: None },
    },
    Setting {
        name: c"join_collapse_limit",
        work: Work::Grows { auto: None },
    },
    Setting {
        name: c"from_collapse_limit",
        work: Work::Grows { auto: None },
    },
    Setting {
        name: c"geqo_effort",
        work: Work::Grows { auto: None },
    },
    Setting {
        name: c"geqo_pool_size",
        work: Work::Grows {
            auto: Some(GEQO_AUTO_MAX),
        },
    },
    Setting {
        name: c"geqo_generations",
        work: Work::Grows {
            auto: Some(GEQO_AUTO_MAX),
        },
    },
];

const REALS: [Setting; 3] = [
    Setting {
        name: c"jit_above_cost",
        work: Work::CostBelow,
    },
    Setting {
        name: c"jit_inline_above_cost",
        work: Work::CostBelow,
    },
    Setting {
        name: c"jit_optimize_above_cost",
        work: Work::CostBelow,
    },
];

type BoolCheck =
    unsafe extern "C-unwind" fn(*mut bool, *mut *mut c_void, pg_sys::GucSource::Type) -> bool;
type IntCheck =
    unsafe extern "C-unwind" fn(*mut c_int, *mut *mut c_void, pg_sys::GucSource::Type) -> bool;
type RealCheck =
    unsafe extern "C-unwind" fn(*mut f64, *mut *mut c_void, pg_sys::GucSource::Type) -> bool;

/// The settings' records and original check hooks, found once.
static mut BOOL_RECORDS: [*mut pg_sys::config_bool; 4] = [std::ptr::null_mut(); 4];
static mut BOOL_ORIGINAL: [pg_sys::GucBoolCheckHook; 4] = [None; 4];
static mut INT_RECORDS: [*mut pg_sys::config_int; 6] = [std::ptr::null_mut(); 6];
static mut INT_ORIGINAL: [pg_sys::GucIntCheckHook; 6] = [None; 6];
static mut REAL_RECORDS: [*mut pg_sys::config_real; 3] = [std::ptr::null_mut(); 3];
static mut REAL_ORIGINAL: [pg_sys::GucRealCheckHook; 3] = [None; 3];

thread_local! {
    /// The server's value of each setting the client replaced at login, as
    /// the gate found it (in the order BOOLS, INTS, REALS).
    static AT_LOGIN: [Cell<Option<f64>>; 13] = const { [const { Cell::new(None) }; 13] };
}

/// One check hook per setting (a check hook is not told which setting it
/// checks).
macro_rules! checks {
    ($kind:ty, $check:ident, $($index:literal),*) => {
        [$({
            unsafe extern "C-unwind" fn check(
                value: *mut $kind,
                extra: *mut *mut c_void,
                source: pg_sys::GucSource::Type,
            ) -> bool {
                // SAFETY: called by guc.c with a valid value pointer.
                unsafe { $check($index, value, extra, source) }
            }
            check
        }),*]
    };
}

const BOOL_CHECKS: [BoolCheck; 4] = checks!(bool, check_bool, 0, 1, 2, 3);
const INT_CHECKS: [IntCheck; 6] = checks!(c_int, check_int, 0, 1, 2, 3, 4, 5);
const REAL_CHECKS: [RealCheck; 3] = checks!(f64, check_real, 0, 1, 2);

pub(super) fn install() {
    // SAFETY: called once from _PG_init; guc.c's records live for the life of
    // the process, and a check hook is a plain function pointer. A setting
    // this build lacks (jit without LLVM still has its records) is skipped.
    unsafe {
        for (index, setting) in BOOLS.iter().enumerate() {
            let record = compat::find_guc(setting.name) as *mut pg_sys::config_bool;
            if !record.is_null() {
                BOOL_RECORDS[index] = record;
                BOOL_ORIGINAL[index] = (*record).check_hook;
                (*record).check_hook = Some(BOOL_CHECKS[index]);
            }
        }
        for (index, setting) in INTS.iter().enumerate() {
            let record = compat::find_guc(setting.name) as *mut pg_sys::config_int;
            if !record.is_null() {
                INT_RECORDS[index] = record;
                INT_ORIGINAL[index] = (*record).check_hook;
                (*record).check_hook = Some(INT_CHECKS[index]);
            }
        }
        for (index, setting) in REALS.iter().enumerate() {
            let record = compat::find_guc(setting.name) as *mut pg_sys::config_real;
            if !record.is_null() {
                REAL_RECORDS[index] = record;
                REAL_ORIGINAL[index] = (*record).check_hook;
                (*record).check_hook = Some(REAL_CHECKS[index]);
            }
        }
    }
}

/// A setting's state, read from its record, as numbers.
struct State {
    current: f64,
    reset: f64,
    boot: f64,
    source: pg_sys::GucSource::Type,
    reset_source: pg_sys::GucSource::Type,
}

/// Every setting found: its position in AT_LOGIN, description and state.
fn settings() -> Vec<(usize, &'static Setting, State)> {
    let mut all = Vec::new();
    // SAFETY: the records were found at install and live for the process;
    // reads of this backend's GUC state.
    unsafe {
        for (index, setting) in BOOLS.iter().enumerate() {
            let record = BOOL_RECORDS[index];
            if !record.is_null() {
                let number = |value: bool| if value { 1.0 } else { 0.0 };
                all.push((
                    index,
                    setting,
                    State {
                        current: number(*(*record).variable),
                        reset: number((*record).reset_val),
                        boot: number((*record).boot_val),
                        source: (*record).gen_.source,
                        reset_source: (*record).gen_.reset_source,
                    },
                ));
            }
        }
        for (index, setting) in INTS.iter().enumerate() {
            let record = INT_RECORDS[index];
            if !record.is_null() {
                all.push((
                    BOOLS.len() + index,
                    setting,
                    State {
                        current: f64::from(*(*record).variable),
                        reset: f64::from((*record).reset_val),
                        boot: f64::from((*record).boot_val),
                        source: (*record).gen_.source,
                        reset_source: (*record).gen_.reset_source,
                    },
                ));
            }
        }
        for (index, setting) in REALS.iter().enumerate() {
            let record = REAL_RECORDS[index];
            if !record.is_null() {
                all.push((
                    BOOLS.len() + INTS.len() + index,
                    setting,
                    State {
                        current: *(*record).variable,
                        reset: (*record).reset_val,
                        boot: (*record).boot_val,
                        source: (*record).gen_.source,
                        reset_source: (*record).gen_.reset_source,
                    },
                ));
            }
        }
    }
    all
}

/// The value a session's own SET may not exceed: what the server, the
/// database or the role gave the session, or, where the client replaced it
/// at connection, what the gate found it was.
fn server_value(position: usize, state: &State) -> f64 {
    if state.reset_source < pg_sys::GucSource::PGC_S_CLIENT {
        return state.reset;
    }
    AT_LOGIN
        .with(|values| values[position].get())
        .unwrap_or(state.boot)
}

/// At login (the gate): a value the client asked for (or any other set above
/// the server's) is brought back to the server's value, with a WARNING for
/// the client's.
pub(super) fn enforce_at_login() {
    for (position, setting, state) in settings() {
        if state.reset_source < pg_sys::GucSource::PGC_S_CLIENT {
            continue;
        }
        let server = configured(setting.name).unwrap_or(state.boot);
        AT_LOGIN.with(|values| values[position].set(Some(server)));
        let work = setting.work;
        if !work.more(state.current, server) && !work.more(state.reset, server) {
            continue;
        }
        let shown = shown_value(setting.work, server);
        if state.source == pg_sys::GucSource::PGC_S_CLIENT {
            pgrx::warning!(
                "bi_access: {} = {} asked for at connection is more planning work than the server allows; it is {shown}",
                setting.name.to_string_lossy(),
                shown_value(setting.work, state.current)
            );
        }
        super::caps::set(setting.name, &shown);
    }
}

fn shown_value(work: Work, value: f64) -> String {
    match work {
        Work::When(_) => if value == 1.0 { "on" } else { "off" }.to_string(),
        _ => value.to_string(),
    }
}

/// The value the configuration files, then the database's and the role's
/// settings give `name` (the order PostgreSQL applies them in), read as the
/// bootstrap superuser (pg_file_settings is a superuser's), or None where
/// none does or it does not parse.
fn configured(name: &CStr) -> Option<f64> {
    let name = name.to_string_lossy().into_owned();
    // SAFETY: reads of backend-local state.
    let (database, role) = unsafe { (pg_sys::MyDatabaseId, pg_sys::GetSessionUserId()) };
    let text = crate::db::as_superuser(|| {
        crate::db::first::<String>(
            "SELECT v FROM ( \
               SELECT 0 AS rank, f.setting AS v FROM pg_catalog.pg_file_settings f \
               WHERE f.name OPERATOR(pg_catalog.=) $1 AND f.applied \
               UNION ALL \
               SELECT CASE WHEN s.setdatabase OPERATOR(pg_catalog.<>) 0 \
                            AND s.setrole OPERATOR(pg_catalog.<>) 0 THEN 3 \
                           WHEN s.setrole OPERATOR(pg_catalog.<>) 0 THEN 2 ELSE 1 END, \
                      pg_catalog.substr(c, pg_catalog.length($1) OPERATOR(pg_catalog.+) 2) \
               FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c \
               WHERE s.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[0, $2]::pg_catalog.oid[]) \
                 AND s.setrole OPERATOR(pg_catalog.=) ANY (ARRAY[0, $3]::pg_catalog.oid[]) \
                 AND pg_catalog.starts_with(c, $1 OPERATOR(pg_catalog.||) '=')) x \
             ORDER BY rank DESC LIMIT 1",
            &[name.as_str().into(), database.into(), role.into()],
        )
    });
    parse(&name, text.ok()??.as_str())
}

/// A setting's text as guc.c would read it (units included), as a number.
fn parse(name: &str, text: &str) -> Option<f64> {
    let text = CString::new(text).ok()?;
    let record = compat::find_guc(&CString::new(name).ok()?);
    if record.is_null() {
        return None;
    }
    // SAFETY: guc.c's parsers read a C string and write the result; the
    // record gives the setting's type and units.
    unsafe {
        match (*record).vartype {
            pg_sys::config_type::PGC_BOOL => {
                let mut value = false;
                pg_sys::parse_bool(text.as_ptr(), &mut value).then_some(if value {
                    1.0
                } else {
                    0.0
                })
            }
            pg_sys::config_type::PGC_INT => {
                let mut value: c_int = 0;
                pg_sys::parse_int(
                    text.as_ptr(),
                    &mut value,
                    (*record).flags,
                    std::ptr::null_mut(),
                )
                .then_some(f64::from(value))
            }
            pg_sys::config_type::PGC_REAL => {
                let mut value = 0.0;
                pg_sys::parse_real(
                    text.as_ptr(),
                    &mut value,
                    (*record).flags,
                    std::ptr::null_mut(),
                )
                .then_some(value)
            }
            _ => None,
        }
    }
}

/// # Safety
/// From a check hook, with the candidate value.
unsafe fn refuse(setting: &Setting, position: usize, state: &State) {
    let server = shown_value(setting.work, server_value(position, state));
    super::caps::refuse_in_check_hook(
        &format!(
            "a bi_access credential may not set {} to more planning work than the server's value ({server})",
            setting.name.to_string_lossy()
        ),
        "Values that make the planner do less work are accepted.",
    );
}

fn state_at(position: usize) -> Option<State> {
    settings()
        .into_iter()
        .find(|(at, _, _)| *at == position)
        .map(|(_, _, state)| state)
}

/// # Safety
/// `value` must point to the candidate value, as guc.c passes it.
unsafe fn check_bool(
    index: usize,
    value: *mut bool,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if let Some(original) = BOOL_ORIGINAL[index] {
        if !original(value, extra, source) {
            return false;
        }
    }
    let candidate = if *value { 1.0 } else { 0.0 };
    checked(index, &BOOLS[index], candidate, source)
}

/// # Safety
/// `value` must point to the candidate value, as guc.c passes it.
unsafe fn check_int(
    index: usize,
    value: *mut c_int,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if let Some(original) = INT_ORIGINAL[index] {
        if !original(value, extra, source) {
            return false;
        }
    }
    checked(BOOLS.len() + index, &INTS[index], f64::from(*value), source)
}

/// # Safety
/// `value` must point to the candidate value, as guc.c passes it.
unsafe fn check_real(
    index: usize,
    value: *mut f64,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if let Some(original) = REAL_ORIGINAL[index] {
        if !original(value, extra, source) {
            return false;
        }
    }
    checked(
        BOOLS.len() + INTS.len() + index,
        &REALS[index],
        *value,
        source,
    )
}

/// Only the session's own SETs are refused: the server's configuration, the
/// role's and the database's settings are the server's value, and the gate
/// brings a client's back to it. A parallel worker restores what its leader
/// accepted, against settings of its own that are not the leader's.
///
/// # Safety
/// From a check hook.
unsafe fn checked(
    position: usize,
    setting: &Setting,
    candidate: f64,
    source: pg_sys::GucSource::Type,
) -> bool {
    if source != pg_sys::GucSource::PGC_S_SESSION
        || !known_credential_session()
        || !super::session::client_backend()
    {
        return true;
    }
    let Some(state) = state_at(position) else {
        return true;
    };
    if setting.work.more(candidate, server_value(position, &state)) {
        refuse(setting, position, &state);
        return false;
    }
    true
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn less_work_only() {
        let geqo = Work::When(false);
        assert!(geqo.more(0.0, 1.0));
        assert!(!geqo.more(1.0, 0.0));
        let jit = Work::When(true);
        assert!(jit.more(1.0, 0.0));
        assert!(!jit.more(1.0, 1.0));
        let limit = Work::Grows { auto: None };
        assert!(limit.more(20.0, 8.0));
        assert!(!limit.more(4.0, 8.0));
        let pool = Work::Grows { auto: Some(500) };
        assert!(pool.more(600.0, 0.0));
        assert!(!pool.more(100.0, 0.0));
        assert!(pool.more(0.0, 100.0));
        let cost = Work::CostBelow;
        assert!(cost.more(10.0, 100_000.0));
        assert!(cost.more(10.0, -1.0));
        assert!(!cost.more(-1.0, 10.0));
        assert!(!cost.more(500_000.0, 100_000.0));
    }
}
