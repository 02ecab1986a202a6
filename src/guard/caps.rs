//! Guardrails: caps on the settings a credential session could otherwise
//! raise to take a server from the application and the other orgs.
//!
//! Each capped setting is one PostgreSQL lets any role SET (or, for
//! temp_file_limit, one only a superuser may SET, which a session gets from
//! the server). In a credential session:
//! - a raise above the cap through SET, RESET to a raised default,
//!   `set_config()` or a function's SET clause is refused with 42501 and the
//!   value stays as it was: the settings' own check hooks are wrapped;
//! - a value above the cap from the startup packet (PGOPTIONS), the role's or
//!   the database's settings or the server's configuration is lowered to the
//!   cap when the library loads, with a WARNING for what the client asked;
//! - when a DBA lowers a cap, every statement from the next one on runs under
//!   the new cap (checked at the start of each statement).
//!
//! For the timeouts and temp_file_limit, "no limit" (0, -1) counts as a raise.

use std::ffi::{c_int, c_void, CStr, CString};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use super::session::known_credential_session;
use crate::compat;
use crate::settings;

/// The cap on a setting of type integer, in the setting's own unit.
struct IntCap {
    name: &'static CStr,
    unit: &'static str,
    cap: fn() -> Option<i32>,
    /// The value that means "no limit", if the setting has one.
    unlimited: Option<i32>,
}

impl IntCap {
    fn exceeds(&self, value: i32, cap: i32) -> bool {
        Some(value) == self.unlimited || value > cap
    }
}

/// BLCKSZ is 8 kB in every build bi_access supports; temp_buffers counts blocks.
fn temp_buffers_cap() -> Option<i32> {
    settings::work_mem_kb().map(|kb| (kb / 8).max(100))
}

/// A parallel query uses work_mem once per worker.
fn parallel_workers_cap() -> Option<i32> {
    Some(MAX_PARALLEL_WORKERS)
}

pub const MAX_PARALLEL_WORKERS: i32 = 2;
pub const MAX_HASH_MEM_MULTIPLIER: f64 = 2.0;

const INT_CAPS: [IntCap; 10] = [
    IntCap {
        name: c"statement_timeout",
        unit: "ms",
        cap: settings::statement_timeout_ms,
        unlimited: Some(0),
    },
    IntCap {
        name: c"idle_in_transaction_session_timeout",
        unit: "ms",
        cap: settings::idle_in_transaction_session_timeout_ms,
        unlimited: Some(0),
    },
    IntCap {
        name: c"idle_session_timeout",
        unit: "ms",
        cap: settings::idle_session_timeout_ms,
        unlimited: Some(0),
    },
    IntCap {
        name: c"work_mem",
        unit: "kB",
        cap: settings::work_mem_kb,
        unlimited: None,
    },
    IntCap {
        name: c"maintenance_work_mem",
        unit: "kB",
        cap: settings::work_mem_kb,
        unlimited: None,
    },
    IntCap {
        name: c"temp_buffers",
        unit: "blocks of 8kB",
        cap: temp_buffers_cap,
        unlimited: None,
    },
    IntCap {
        name: c"max_parallel_workers_per_gather",
        unit: "workers",
        cap: parallel_workers_cap,
        unlimited: None,
    },
    IntCap {
        name: c"temp_file_limit",
        unit: "kB",
        cap: settings::temp_file_limit_kb,
        unlimited: Some(-1),
    },
    // 17 and later (before, the setting does not exist and transaction.rs
    // keeps the cap with a timer of its own).
    IntCap {
        name: c"transaction_timeout",
        unit: "ms",
        cap: settings::transaction_timeout_ms,
        unlimited: Some(0),
    },
    // Checked by the backend that launches a parallel worker against the
    // workers running on the whole server: credentials' queries leave the
    // rest of the pool to the application (parallel index builds included).
    IntCap {
        name: c"max_parallel_workers",
        unit: "workers",
        cap: settings::max_parallel_workers,
        unlimited: None,
    },
];
const HASH_MEM_MULTIPLIER: &CStr = c"hash_mem_multiplier";

type IntCheck =
    unsafe extern "C-unwind" fn(*mut c_int, *mut *mut c_void, pg_sys::GucSource::Type) -> bool;
type RealCheck =
    unsafe extern "C-unwind" fn(*mut f64, *mut *mut c_void, pg_sys::GucSource::Type) -> bool;

/// The settings' own records and original check hooks, found once.
static mut INT_RECORDS: [*mut pg_sys::config_int; 10] = [std::ptr::null_mut(); 10];
static mut INT_ORIGINAL: [pg_sys::GucIntCheckHook; 10] = [None; 10];
static mut REAL_RECORD: *mut pg_sys::config_real = std::ptr::null_mut();
static mut REAL_ORIGINAL: pg_sys::GucRealCheckHook = None;

/// One check hook per capped integer setting (a check hook is not told
/// which setting it checks).
macro_rules! int_checks {
    ($($index:literal),*) => {
        [$({
            unsafe extern "C-unwind" fn check(
                value: *mut c_int,
                extra: *mut *mut c_void,
                source: pg_sys::GucSource::Type,
            ) -> bool {
                // SAFETY: called by guc.c with a valid value pointer.
                unsafe { check_int($index, value, extra, source) }
            }
            check as IntCheck
        }),*]
    };
}

const INT_CHECKS: [IntCheck; 10] = int_checks!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);

pub(super) fn install() {
    // SAFETY: called once from _PG_init; guc.c's records live for the life of
    // the process, and a check hook is a plain function pointer.
    unsafe {
        for (index, cap) in INT_CAPS.iter().enumerate() {
            let record = compat::find_guc(cap.name) as *mut pg_sys::config_int;
            if record.is_null() {
                continue;
            }
            INT_RECORDS[index] = record;
            INT_ORIGINAL[index] = (*record).check_hook;
            (*record).check_hook = Some(INT_CHECKS[index]);
        }
        let record = compat::find_guc(HASH_MEM_MULTIPLIER) as *mut pg_sys::config_real;
        if !record.is_null() {
            REAL_RECORD = record;
            REAL_ORIGINAL = (*record).check_hook;
            (*record).check_hook = Some(check_hash_mem_multiplier as RealCheck);
        }
    }
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
    let cap = &INT_CAPS[index];
    match (cap.cap)() {
        Some(limit) if known_credential_session() && cap.exceeds(*value, limit) => {
            if source == pg_sys::GucSource::PGC_S_SESSION {
                refuse(cap.name, &format!("{limit} {}", cap.unit));
                return false;
            }
            *value = limit;
            true
        }
        _ => true,
    }
}

unsafe extern "C-unwind" fn check_hash_mem_multiplier(
    value: *mut f64,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by guc.c with a valid value pointer.
    unsafe {
        if let Some(original) = REAL_ORIGINAL {
            if !original(value, extra, source) {
                return false;
            }
        }
        if known_credential_session() && *value > MAX_HASH_MEM_MULTIPLIER {
            if source == pg_sys::GucSource::PGC_S_SESSION {
                refuse(HASH_MEM_MULTIPLIER, &MAX_HASH_MEM_MULTIPLIER.to_string());
                return false;
            }
            *value = MAX_HASH_MEM_MULTIPLIER;
        }
        true
    }
}

/// Makes guc.c refuse the value with 42501 and say why.
///
/// # Safety
/// Only from a check hook.
unsafe fn refuse(name: &CStr, cap: &str) {
    refuse_in_check_hook(
        &format!(
            "a bi_access credential may not raise {} above its cap ({cap}), nor disable it",
            name.to_string_lossy()
        ),
        "A lower value is accepted. The caps are the bi_access.* settings of the server.",
    );
}

/// Makes guc.c refuse a value with 42501, `message` and `hint`. A check hook
/// must not raise: it reports through these variables.
///
/// # Safety
/// Only from a check hook.
pub(super) unsafe fn refuse_in_check_hook(message: &str, hint: &str) {
    pg_sys::GUC_check_errcode(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as c_int);
    pg_sys::GUC_check_errmsg_string = palloc_str(message);
    pg_sys::GUC_check_errhint_string = palloc_str(hint);
}

fn palloc_str(text: &str) -> *mut std::ffi::c_char {
    let text = CString::new(text.replace('\0', "")).unwrap_or_default();
    // SAFETY: copies into the current memory context, as guc.c expects.
    unsafe { pg_sys::pstrdup(text.as_ptr()) }
}

/// Brings every capped setting, and the value RESET would restore, down to
/// its cap. At load (`startup`) a value the client asked for in its startup
/// packet is named in a WARNING. Returns whether statement_timeout changed.
pub fn enforce(startup: bool) -> bool {
    let mut statement_timeout_changed = false;
    for (index, cap) in INT_CAPS.iter().enumerate() {
        // SAFETY: the record was found at install and lives for the process.
        let record = unsafe { INT_RECORDS[index] };
        let Some(limit) = (cap.cap)() else { continue };
        if record.is_null() {
            continue;
        }
        // SAFETY: as above; reads of this backend's GUC state.
        let (current, reset, source) = unsafe {
            (
                *(*record).variable,
                (*record).reset_val,
                (*record).gen_.source,
            )
        };
        if !cap.exceeds(current, limit) && !cap.exceeds(reset, limit) {
            continue;
        }
        if startup && source == pg_sys::GucSource::PGC_S_CLIENT && cap.exceeds(current, limit) {
            pgrx::warning!(
                "bi_access: {} = {current} asked for at connection is above the cap; it is {limit} {}",
                cap.name.to_string_lossy(),
                cap.unit
            );
        }
        set(cap.name, &limit.to_string());
        statement_timeout_changed |= index == 0 && current != limit;
    }
    // SAFETY: as above.
    unsafe {
        let record = REAL_RECORD;
        if !record.is_null()
            && (*(*record).variable > MAX_HASH_MEM_MULTIPLIER
                || (*record).reset_val > MAX_HASH_MEM_MULTIPLIER)
        {
            set(HASH_MEM_MULTIPLIER, &MAX_HASH_MEM_MULTIPLIER.to_string());
        }
    }
    statement_timeout_changed
}

/// Sets the value both as the default RESET returns to (an override, below
/// the session's own SETs) and as the session's current value.
pub(super) fn set(name: &CStr, value: &str) {
    let value = CString::new(value).unwrap_or_default();
    // SAFETY: guc.c copies both strings; the value is within the cap, so our
    // own check hook accepts it.
    unsafe {
        pg_sys::SetConfigOption(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
        pg_sys::SetConfigOption(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn no_limit_counts_as_a_raise() {
        let timeout = &INT_CAPS[0];
        assert!(timeout.exceeds(0, 1000));
        assert!(timeout.exceeds(1001, 1000));
        assert!(!timeout.exceeds(999, 1000));
        let temp_files = &INT_CAPS[7];
        assert!(temp_files.exceeds(-1, 1024));
        assert!(!temp_files.exceeds(0, 1024));
        let work_mem = &INT_CAPS[3];
        assert!(!work_mem.exceeds(64, 1024));
    }
}
