//! Catalog changes and function calls in a credential session.
//!
//! PostgreSQL's object-access hook sees every object created or altered,
//! whatever path got there (a function such as lo_from_bytea, CREATE TABLE AS
//! under EXPLAIN, a temp object), and every function about to run: in a query,
//! folded by the planner, or through libpq's fast-path interface (which is
//! how clients call the large-object functions). Some built-ins need no table
//! privilege yet write or reach other sessions: large objects, NOTIFY,
//! advisory locks, sequences. A credential may call none of them, nor the
//! statistics functions of tables and pg_stat_statements' (`oracles`); a
//! `read` credential none that assigns a transaction id.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::session::{guarded, refuse};

static mut PREVIOUS: pg_sys::object_access_hook_type = None;

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread; the
    // previous hook is kept and called in turn.
    unsafe {
        PREVIOUS = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access_hook);
    }
}

/// Built-ins (schema pg_catalog) a credential may not call, by name.
fn forbidden(name: &str) -> bool {
    const EXACT: [&str; 6] = [
        "pg_notify",
        "loread",
        "lowrite",
        "nextval",
        "setval",
        "pg_logical_emit_message",
    ];
    const PREFIXES: [&str; 3] = ["lo_", "pg_advisory_", "pg_try_advisory_"];
    EXACT.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The function's name, and whether it is a built-in of pg_catalog.
fn function_name(function: pg_sys::Oid) -> Option<(String, bool)> {
    // SAFETY: syscache lookups; both return NULL/InvalidOid for a missing
    // function instead of raising.
    unsafe {
        let builtin =
            pg_sys::get_func_namespace(function) == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE);
        let name = pg_sys::get_func_name(function);
        (!name.is_null()).then(|| (CStr::from_ptr(name).to_string_lossy().into_owned(), builtin))
    }
}

/// Refuses (42501) a function call a credential may not make.
fn refuse_call(name: &str, builtin: bool) {
    // nextval/setval too for a read_write session: the hook does not see
    // which sequence, and a stray grant on an application sequence would
    // let it write there. Its tables number rows with identity columns (no
    // function call).
    if builtin && forbidden(name) {
        refuse(
            format!("a bi_access credential may not call {name}()"),
            "Large objects, NOTIFY, advisory locks and sequences are not available to BI logins.",
        );
    }
    if super::oracles::is_statistics_function(name, builtin) {
        refuse(
            format!("a bi_access credential may not call {name}(): the statistics of tables and statements count every organization's rows"),
            "BI logins may read their organization's rows and nothing else.",
        );
    }
    if builtin && super::oracles::assigns_xid(name) && super::custom::writer().is_none() {
        refuse(
            format!("a bi_access read credential may not call {name}(): it assigns a transaction id"),
            "A read credential reads; pg_current_snapshot() and pg_current_xact_id_if_assigned() assign nothing.",
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn object_access_hook(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    if let Some(previous) = PREVIOUS {
        previous(access, class_id, object_id, sub_id, arg);
    }
    use pg_sys::ObjectAccessType::*;
    match access {
        OAT_POST_CREATE | OAT_POST_ALTER
            if guarded() && super::custom::may_change(class_id) => {}
        OAT_POST_CREATE | OAT_POST_ALTER if guarded() && super::custom::writer().is_some() => {
            refuse(
                super::custom::ONLY_ITS_SCHEMA.into(),
                "Temporary objects, functions, triggers and objects in other schemas are not available to BI logins.",
            )
        }
        OAT_POST_CREATE | OAT_POST_ALTER if guarded() => refuse(
            "a bi_access credential is read-only: creating or altering a database object is not allowed".into(),
            "BI logins may read their organization's rows and nothing else.",
        ),
        OAT_FUNCTION_EXECUTE if guarded() => {
            if let Some((name, builtin)) = function_name(object_id) {
                refuse_call(&name, builtin);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod unit {
    use super::forbidden;

    #[test]
    fn writes_without_a_table_privilege_are_forbidden() {
        for name in [
            "pg_notify",
            "lo_from_bytea",
            "lo_creat",
            "lo_open",
            "lowrite",
            "loread",
            "pg_advisory_lock",
            "pg_advisory_xact_lock_shared",
            "pg_try_advisory_lock",
            "nextval",
            "setval",
        ] {
            assert!(forbidden(name), "{name}");
        }
        for name in ["count", "now", "pg_sleep", "lower", "log", "set_config"] {
            assert!(!forbidden(name), "{name}");
        }
    }
}
