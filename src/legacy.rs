//! Symbols 0.1.0's SQL definitions call, with 0.1.0's signatures.
//!
//! A package upgrade replaces the library before `ALTER EXTENSION bi_access
//! UPDATE` replaces the SQL: in between, 0.1.0's functions and event triggers
//! call this library by symbol name. Each such symbol must exist and take the
//! arguments 0.1.0 passes (a wrapper that read a second argument the caller
//! never passed would read garbage). None has SQL of its own (`sql = false`):
//! the update drops the 0.1.0 definitions that use them.

use pgrx::prelude::*;

use crate::error::or_raise;

/// 0.1.0's ddl_command_end trigger function.
#[pg_extern(sql = false)]
fn note_new_tables() {
    or_raise(crate::exposure::after_ddl())
}

/// 0.1.0's DROP EXTENSION trigger function.
#[pg_extern(sql = false)]
fn before_drop() {
    or_raise(crate::uninstall::before_drop())
}

/// 0.1.0's `replayed(lsn)`, which its credentials view calls: the default
/// target was the only one.
#[pg_extern(sql = false)]
fn replayed(lsn: Option<&str>) -> bool {
    or_raise(crate::records::replayed(None, lsn))
}

/// 0.1.0's step of `CALL bi_access.sync()`, which returned the action.
#[pg_extern(sql = false)]
fn sync_one(tbl: pg_sys::Oid) -> String {
    or_raise(crate::exposure::sync_table(tbl))
        .as_str()
        .to_string()
}

/// 0.1.0's `regenerate(role)`, before `valid_until` existed.
#[pg_extern(sql = false)]
fn regenerate(role: &str) -> pgrx::composite_type!('static, "bi_access.connection") {
    or_raise(crate::credentials::regenerate(role, None))
}
