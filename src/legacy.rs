//! Symbols older versions' SQL definitions call, with their signatures.
//!
//! A package upgrade replaces the library before `ALTER EXTENSION bi_access
//! UPDATE` replaces the SQL: in between, 0.1.0's or 0.2.0's functions, views
//! and event triggers call this library by symbol name. Each such symbol
//! must exist and take the arguments the old definition passes (a wrapper
//! that read an argument the caller never passed fails with XX000 before
//! its body runs). What works in that window and what does not:
//!
//! - what BI sessions and the application need keeps working: the org
//!   lookups the policies call, the views' helpers (`replayed`,
//!   `credential_state`, `sync_running`, `targets`), `pgbouncer_auth`, and
//!   the event triggers, so the application's DDL goes on;
//! - every management call (and check(), unsynced_tables()) fails with 55000
//!   naming `ALTER EXTENSION bi_access UPDATE` (src/entry.rs), whatever the
//!   shape of the old tables it would have met; so does DROP EXTENSION.
//!
//! The symbols below have no SQL of their own (`sql = false`): the update
//! drops the old definitions that use them. pg_test/upgrade/check_upgrade.py
//! calls every function of the frozen 0.1.0 and 0.2.0 scripts in the window.

use pgrx::prelude::*;

use crate::entry::Call;
use crate::error::{internal, or_raise, BiError};

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
    or_raise(crate::targets::replayed_on_target(None, lsn, false))
}

/// 0.1.0's step of `CALL bi_access.sync()`, which returned the action.
#[pg_extern(sql = false)]
fn sync_one(tbl: pg_sys::Oid) -> String {
    or_raise(Call::management("sync").and_then(|_| crate::exposure::sync_table(tbl)))
        .as_str()
        .to_string()
}

/// 0.1.0's `regenerate(role)`, before `valid_until` existed.
#[pg_extern(sql = false)]
fn regenerate(role: &str) -> pgrx::composite_type!('static, "bi_access.connection") {
    or_raise(
        Call::management("regenerate")
            .and_then(|_| crate::credentials::regenerate(role, None, None)),
    )
}

/// 0.1.0's and 0.2.0's `expose_table(tbl, org_column)`, before column
/// lists existed.
#[pg_extern(sql = false)]
fn expose_table(tbl: Option<pg_sys::Oid>, org_column: Option<&str>) {
    or_raise(Call::management("expose_table").and_then(|call| {
        crate::exposure::expose_table(call.required("tbl", tbl)?, org_column, None)
    }))
}

/// 0.2.0's `regenerate(role, valid_until)`, before `overlap` existed.
#[pg_extern(sql = false)]
fn regenerate_until(
    role: &str,
    valid_until: Option<TimestampWithTimeZone>,
) -> pgrx::composite_type!('static, "bi_access.connection") {
    or_raise(
        Call::management("regenerate")
            .and_then(|_| crate::credentials::regenerate(role, valid_until, None)),
    )
}

/// 0.2.0's `connection_details(role text)` (this version's takes a name).
#[pg_extern(sql = false)]
fn connection_details(
    role: Option<&str>,
) -> pgrx::composite_type!('static, "bi_access.connection") {
    or_raise(
        Call::management("connection_details")
            .and_then(|call| crate::credentials::connection_details(call.required("role", role)?)),
    )
}

/// 0.2.0's `purge(role text)` (this version's takes a name).
#[pg_extern(sql = false)]
fn purge(role: Option<&str>) {
    or_raise(
        Call::management("purge")
            .and_then(|call| crate::credentials::purge(call.required("role", role)?)),
    )
}

/// 0.2.0's `unsynced_tables()`, whose columns were oid, text, text (this
/// version's are regclass, name, text).
#[pg_extern(sql = false)]
fn unsynced_tables() -> TableIterator<
    'static,
    (
        name!(tbl, pg_sys::Oid),
        name!(org_column, String),
        name!(reason, String),
    ),
> {
    let rows =
        or_raise(Call::reading("unsynced_tables").and_then(|_| crate::exposure::unsynced_tables()))
            .into_iter()
            .map(|pending| (pending.tbl, pending.org_column, pending.reason.to_string()));
    TableIterator::new(rows.collect::<Vec<_>>())
}

/// 0.2.0's `pgbouncer_auth`, whose usename was text (this version's is a
/// name): PgBouncer logs credentials in through it until the update.
#[pg_extern(sql = false)]
fn pgbouncer_auth(
    username: &str,
) -> TableIterator<'static, (name!(usename, String), name!(passwd, String))> {
    TableIterator::new(or_raise(crate::pooler::verifier(username)))
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_generate_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `generate` of 0.1.0 (five arguments) and of 0.2.0 (seven), one symbol.
/// Only an older version's SQL calls it (this version's `generate` is
/// `generate_for_text_wrapper`), so it reads no argument: it refuses as
/// every management call does in the window (55000; 25006 on a standby).
///
/// # Safety
/// Called by PostgreSQL's function manager.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn generate_wrapper(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    or_raise(Call::management("generate").and_then(|_| {
        Err::<(), BiError>(internal(
            "generate_wrapper is the symbol of an older version's generate; \
             this version's SQL calls generate_for_text_wrapper",
        ))
    }));
    pg_sys::Datum::from(0)
}
