//! What differs between PostgreSQL majors, in one place.

use std::ffi::CStr;

use pgrx::pg_sys;

/// The record of a built-in setting (NULL if there is none of that name).
/// 14 and 15 keep the records in one array; 16 replaced it with a hash table
/// and `find_option`.
pub fn find_guc(name: &CStr) -> *mut pg_sys::config_generic {
    // SAFETY: guc.c's array of records and its length, read in the backend's
    // only thread; every entry has a NUL-terminated name.
    unsafe {
        let records = pg_sys::get_guc_variables();
        let count = pg_sys::GetNumConfigOptions();
        (0..count as usize)
            .map(|i| *records.add(i))
            .find(|record| !record.is_null() && CStr::from_ptr((**record).name) == name)
            .unwrap_or(std::ptr::null_mut())
    }
}

/// `TimeoutId` STATEMENT_TIMEOUT (utils/timeout.h), the same from 14 to 18.
pub const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

// utils/timeout.h, which pgrx's bindings leave out.
unsafe extern "C-unwind" {
    pub fn get_timeout_active(id: std::ffi::c_int) -> bool;
    pub fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
}
