//! SECURITY DEFINER functions in a credential session.
//!
//! A definer function runs with its owner's rights: a DBA's reporting
//! function owned by a superuser reads every org's rows past row-level
//! security and past the session guard (which stands aside for a superuser's
//! code). So a credential may call none but bi_access's own, however the call
//! is reached: directly, in a view, an operator, an index expression,
//! another function, the planner folding a constant. Every one of those
//! calls passes through the function manager's hook: PostgreSQL runs each
//! definer function through `fmgr_security_definer`, which calls
//! `fmgr_hook` once it has switched to the owner. The check is keyed on the
//! session's login, not on the current user, which is the owner by then.
//!
//! The exception: the functions that an exposed table's own policies call
//! (the application's policies apply to credentials too, and a query on the
//! table would fail without them). `check()` lists them.
//!
//! The hook runs in every session where the library is loaded (preloaded:
//! every backend), but only for calls of definer functions and functions
//! with a SET clause; outside a credential's session it answers from the
//! cached login at once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::session::refuse;
use crate::names;

static mut PREVIOUS: pg_sys::fmgr_hook_type = None;

thread_local! {
    /// Each function's verdict (may a credential call it?), until a
    /// function, a policy or an exposed table changes.
    static VERDICTS: RefCell<HashMap<pg_sys::Oid, bool>> = RefCell::new(HashMap::new());
    static LOOKING: Cell<bool> = const { Cell::new(false) };
}

/// The login this backend last answered for (InvalidOid: none), and whether
/// it is a credential: the hook's whole cost outside credential sessions,
/// so a plain static (the backend has one thread) rather than a
/// thread-local, which a loaded library reaches through a function call.
static mut LOGIN: (pg_sys::Oid, bool) = (pg_sys::InvalidOid, false);

// miscinit.c: returns a backend-local variable and raises nothing, so it is
// called without pgrx's error boundary (a sigsetjmp per call): this runs at
// every call of a definer function in every session that loaded the library.
unsafe extern "C" {
    #[link_name = "GetSessionUserId"]
    fn session_user_id() -> pg_sys::Oid;
}

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread; the
    // previous hook is kept and called in turn.
    unsafe {
        PREVIOUS = pg_sys::fmgr_hook;
        pg_sys::fmgr_hook = Some(fmgr_hook);
    }
    // A policy's change (and RLS turned on or off) invalidates its table's
    // relcache entry.
    crate::invalidation::on_relation_change(forget_relation);
    crate::invalidation::on_catalog_change(&[pg_sys::SysCacheIdentifier::PROCOID], forget_function);
    crate::invalidation::on_catalog_change(
        &[
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
        ],
        forget_login,
    );
}

/// Runs during invalidation processing: no catalog access, no error. A
/// credential stays one for the life of its login (fail closed).
unsafe extern "C-unwind" fn forget_login(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    // SAFETY: backend-local state, in the backend's only thread.
    unsafe {
        if !LOGIN.1 {
            LOGIN = (pg_sys::InvalidOid, false);
        }
    }
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_function(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    forget();
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_relation(_: pg_sys::Datum, _: pg_sys::Oid) {
    forget();
}

fn forget() {
    VERDICTS.with(|verdicts| {
        if let Ok(mut verdicts) = verdicts.try_borrow_mut() {
            if !verdicts.is_empty() {
                verdicts.clear();
            }
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn fmgr_hook(
    event: pg_sys::FmgrHookEventType::Type,
    flinfo: *mut pg_sys::FmgrInfo,
    arg: *mut pg_sys::Datum,
) {
    if event == pg_sys::FmgrHookEventType::FHET_START && credential_session() {
        check((*flinfo).fn_oid);
    }
    if let Some(previous) = PREVIOUS {
        previous(event, flinfo, arg);
    }
}

/// The session's login is a credential (looked up once per login, inside
/// the function call's transaction).
fn credential_session() -> bool {
    // SAFETY: reads of backend-local state, in the backend's only thread.
    unsafe {
        let login = session_user_id();
        if LOGIN.0 == login && login != pg_sys::InvalidOid {
            return LOGIN.1;
        }
        if !pg_sys::IsTransactionState() {
            return super::session::known_credential_session(); // no catalog to read
        }
        let answer = super::session::session_is_credential();
        LOGIN = (login, answer);
        answer
    }
}

/// Refuses (42501) a definer function that is not bi_access's own nor
/// called by an exposed table's policies.
fn check(function: pg_sys::Oid) {
    if let Some(allowed) = VERDICTS.with(|verdicts| verdicts.borrow().get(&function).copied()) {
        if !allowed {
            refuse_call(function);
        }
        return;
    }
    let Some(allowed) = verdict(function) else {
        return;
    };
    VERDICTS.with(|verdicts| verdicts.borrow_mut().insert(function, allowed));
    if !allowed {
        refuse_call(function);
    }
}

/// None while a lookup of this module's own is running (its catalog
/// queries call no definer function, but the answer must not recurse).
fn verdict(function: pg_sys::Oid) -> Option<bool> {
    if LOOKING.with(Cell::get) {
        return None;
    }
    let Some((definer, namespace)) = definer_and_namespace(function) else {
        return Some(true); // a function that vanished: fmgr raises
    };
    if !definer || is_own_schema(namespace) {
        return Some(true);
    }
    /// Clears LOOKING however the lookup ends (an error unwinds through it).
    struct Looking;
    impl Drop for Looking {
        fn drop(&mut self) {
            LOOKING.with(|looking| looking.set(false));
        }
    }
    LOOKING.with(|looking| looking.set(true));
    let _looking = Looking;
    Some(called_by_exposed_policies(function))
}

/// Whether the function is SECURITY DEFINER, and its schema.
fn definer_and_namespace(function: pg_sys::Oid) -> Option<(bool, pg_sys::Oid)> {
    // SAFETY: a syscache lookup, released before return; the fields are
    // copied out first.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            pg_sys::Datum::from(function),
        );
        if tuple.is_null() {
            return None;
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(tuple);
        let answer = ((*form).prosecdef, (*form).pronamespace);
        pg_sys::ReleaseSysCache(tuple);
        Some(answer)
    }
}

fn is_own_schema(namespace: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup; NULL for a missing schema.
    let name = unsafe { pg_sys::get_namespace_name(namespace) };
    // SAFETY: a NUL-terminated name from the syscache.
    !name.is_null()
        && names::SCHEMAS
            .iter()
            .any(|schema| unsafe { CStr::from_ptr(name) }.to_bytes() == schema.as_bytes())
}

/// Whether a policy of an exposed table (as the session guard reads it:
/// RLS and bi_access's policies in place) calls the function.
fn called_by_exposed_policies(function: pg_sys::Oid) -> bool {
    let tables = Spi::connect(|client| {
        let mut tables = Vec::new();
        for row in client.select(
            "SELECT DISTINCT p.polrelid FROM pg_catalog.pg_depend d \
             JOIN pg_catalog.pg_policy p ON p.oid = d.objid \
             WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass \
               AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
               AND d.refobjid = $1",
            None,
            &[function.into()],
        )? {
            if let Some(table) = row.get::<pg_sys::Oid>(1)? {
                tables.push(table);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(tables)
    });
    tables.unwrap_or_default().into_iter().any(|table| {
        // SAFETY: the lock a query on the table holds already (its policy
        // is what calls the function), taken otherwise; released at the end
        // of the transaction. reads opens the table's relcache entry.
        unsafe { pg_sys::LockRelationOid(table, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
        super::reads::exposed_now(table)
    })
}

fn refuse_call(function: pg_sys::Oid) -> ! {
    // SAFETY: formats the function's qualified signature (its OID if it
    // vanished), in the current memory context.
    let name = unsafe {
        CStr::from_ptr(pg_sys::format_procedure_qualified(function))
            .to_string_lossy()
            .into_owned()
    };
    refuse(
        format!("a bi_access credential may not call SECURITY DEFINER function {name}"),
        "A SECURITY DEFINER function runs with its owner's rights, past row-level security: BI logins may call none but bi_access's own and those an exposed table's policies call.",
    )
}
