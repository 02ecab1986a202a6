//! The Rust side of the SQL surface. `sql/api.sql` declares the public
//! functions of schema `bi_access` with their exact SQL types (name,
//! regclass), SECURITY DEFINER and a pinned search_path; each calls one of
//! these, which PUBLIC cannot execute. Here errors become PostgreSQL errors
//! with their SQLSTATE, without the wrapper's CONTEXT line (`wrapped`), and
//! each call passes its entry checks first (src/entry.rs: a primary for a
//! call that writes, SQL objects of this library's version, no NULL where
//! NULL means nothing).

use pgrx::prelude::*;

use crate::error::or_raise;
use crate::org;

// The org lookups run once per BI query, so they are the one exception to
// "SECURITY DEFINER pins search_path": a pinned search_path costs a GUC save,
// set and restore on every call and invalidates the cached namespace path.
// They do not need it: the only SQL they run (org::look_up) names every
// relation, type and operator with its schema.

/// Used by every bi_access policy: the org key of the role running the
/// query. Executable by the reader group only.
#[pg_extern(stable, parallel_safe, security_definer)]
fn current_org() -> Option<String> {
    or_raise(org::current_org())
}

/// The org key as a bigint, for integer org columns; NULL (no row) unless
/// the key is exactly what `bigint::text` prints (see org::as_bigint).
#[pg_extern(stable, parallel_safe, security_definer)]
fn current_org_bigint() -> Option<i64> {
    or_raise(org::current_org())
        .as_deref()
        .and_then(org::as_bigint)
}

/// The org key as a uuid, for uuid org columns; NULL (no row) unless the
/// key is exactly what `uuid::text` prints (see org::as_uuid).
#[pg_extern(stable, parallel_safe, security_definer)]
fn current_org_uuid() -> Option<pgrx::Uuid> {
    or_raise(org::current_org())
        .as_deref()
        .and_then(org::as_uuid)
        .map(pgrx::Uuid::from_bytes)
}

#[pg_schema]
mod bi_access_internal {
    use pgrx::prelude::*;

    /// The planner support function of the three org lookups (sql/api.sql
    /// attaches it): see org::simplify.
    #[pg_extern(immutable, parallel_safe)]
    fn org_lookup_support(request: pgrx::Internal) -> pgrx::Internal {
        let node = request
            .unwrap()
            .map_or(std::ptr::null_mut(), |datum| datum.cast_mut_ptr());
        // SAFETY: the planner calls a support function with a request node.
        let answer = unsafe { crate::org::simplify(node) };
        // A support function answers with a pointer, NULL for "no
        // simplification", never with an SQL NULL.
        pgrx::Internal::from(Some(pg_sys::Datum::from(answer)))
    }

    /// The org key of a role as this database's lookup answers it: what a
    /// Citus worker asks its coordinator (src/citus.rs). Superusers only.
    #[pg_extern(stable, parallel_safe)]
    fn org_of(role: &str) -> Option<String> {
        crate::error::or_raise(crate::org::org_of(role))
    }

    use crate::credentials::{self, Request};
    use crate::entry::Call;
    use crate::error::{or_raise, wrapped, Result};
    use crate::exposure;
    use crate::targets;

    /// Its symbol is neither 0.1.0's nor 0.2.0's `generate`, which took
    /// other arguments (see `legacy`).
    /// One argument per SQL parameter of generate (sql/api.sql).
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe, name = "generate")]
    fn generate_credential(
        org_id: Option<&str>,
        label: Option<&str>,
        org_name: Option<&str>,
        valid_until: Option<TimestampWithTimeZone>,
        connection_limit: Option<i32>,
        scope: Option<&str>,
        target: Option<&str>,
        allowed_networks: Option<Vec<Option<String>>>,
    ) -> pgrx::composite_type!('static, "bi_access.connection") {
        wrapped(|| {
            let call = managing("generate")?;
            credentials::generate(Request {
                org_id: call.required("org_id", org_id)?,
                label: call.required("label", label)?,
                org_name,
                valid_until,
                connection_limit,
                scope: call.required("scope", scope)?,
                target,
                allowed_networks,
            })
        })
    }

    /// The entry checks of a call on credentials, then what is due before
    /// it: overlaps that have ended are retired (credentials.rs).
    fn managing(name: &'static str) -> Result<Call> {
        let call = Call::management(name)?;
        credentials::retire_ended_overlaps()?;
        Ok(call)
    }

    /// A call that takes one role, which must be given.
    fn on_role<T>(name: &'static str, role: Option<&str>, f: impl FnOnce(&str) -> Result<T>) -> T {
        wrapped(|| managing(name).and_then(|call| f(call.required("role", role)?)))
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn connection_details(
        role: Option<&str>,
    ) -> pgrx::composite_type!('static, "bi_access.connection") {
        on_role("connection_details", role, credentials::connection_details)
    }

    /// Its symbol is neither 0.1.0's `regenerate` nor 0.2.0's
    /// `regenerate_until`, which took fewer arguments (see `legacy`).
    #[pg_extern(volatile, parallel_unsafe, name = "regenerate")]
    fn regenerate_overlap(
        role: Option<&str>,
        valid_until: Option<TimestampWithTimeZone>,
        overlap: Option<pgrx::datum::Interval>,
    ) -> pgrx::composite_type!('static, "bi_access.connection") {
        on_role("regenerate", role, |role| {
            credentials::regenerate(role, valid_until, overlap)
        })
    }

    /// `allowed_networks` arrives as text (sql/api.sql casts the cidr[]):
    /// PostgreSQL has parsed every address already.
    #[pg_extern(volatile, parallel_unsafe)]
    fn set_networks(role: Option<&str>, allowed_networks: Option<Vec<Option<String>>>) {
        on_role("set_networks", role, |role| {
            credentials::set_networks(role, allowed_networks)
        })
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn revoke(role: Option<&str>) {
        on_role("revoke", role, credentials::revoke)
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn activate(role: Option<&str>) {
        on_role("activate", role, credentials::activate)
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn delete(role: Option<&str>) {
        on_role("delete", role, credentials::delete)
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn purge(role: Option<&str>) {
        on_role("purge", role, credentials::purge)
    }

    /// The status a credential shows, and why when it failed: the
    /// credentials view calls it once per record (src/status.rs decides).
    /// SECURITY DEFINER: it reads the role's custody mark and the standby's
    /// replay position.
    #[pg_extern(stable, parallel_safe, security_definer)]
    #[search_path(pg_catalog, pg_temp)]
    fn credential_state(
        stored: &str,
        role_name: &str,
        target: Option<&str>,
        lsn: Option<&str>,
        expired: bool,
        syncing: bool,
        written_by: &str,
    ) -> TableIterator<'static, (name!(status, String), name!(problem, Option<String>))> {
        let (status, problem) = or_raise(crate::credentials::shown_state(
            stored,
            role_name,
            target,
            lsn,
            expired,
            syncing,
            written_by.parse().ok(),
        ));
        TableIterator::once((status.as_str().to_string(), problem))
    }

    /// A call that takes one org key, which must be given.
    fn on_org<T>(name: &'static str, org_id: Option<&str>, f: impl FnOnce(&str) -> Result<T>) -> T {
        wrapped(|| managing(name).and_then(|call| f(call.required("org_id", org_id)?)))
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn revoke_org(org_id: Option<&str>) -> Vec<String> {
        on_org("revoke_org", org_id, credentials::revoke_org)
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn delete_org(org_id: Option<&str>) -> Vec<String> {
        on_org("delete_org", org_id, credentials::delete_org)
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn set_target(
        name: Option<&str>,
        host: Option<&str>,
        port: Option<i32>,
        sslmode: Option<&str>,
        standby: Option<&str>,
    ) {
        wrapped(|| {
            let call = Call::management("set_target")?;
            targets::set_target(targets::Definition {
                name: call.required("name", name)?,
                host: call.required("host", host)?,
                port: call.required("port", port)?,
                sslmode,
                standby,
            })
        })
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn drop_target(name: Option<&str>) {
        wrapped(|| {
            Call::management("drop_target")
                .and_then(|call| targets::drop_target(call.required("name", name)?))
        })
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn drop_custom_schema(org_id: Option<&str>) {
        on_org("drop_custom_schema", org_id, crate::custom_schema::drop)
    }

    /// The quota trigger on every custom-schema table that lacks it (the
    /// upgrade from 0.2.0 calls it; a sync does the same); how many tables.
    #[pg_extern(volatile, parallel_unsafe)]
    fn add_quota_triggers() -> i64 {
        or_raise(crate::custom_schema::add_quota_triggers(None))
    }

    /// The rows of the targets view, `default` first, each with its
    /// effective values.
    #[pg_extern(stable, parallel_unsafe, security_definer)]
    #[search_path(pg_catalog, pg_temp)]
    fn targets() -> TableIterator<
        'static,
        (
            name!(name, String),
            name!(host, String),
            name!(port, i32),
            name!(sslmode, String),
            name!(standby, Option<String>),
        ),
    > {
        let rows = or_raise(targets::list())
            .into_iter()
            .map(|t| (t.name, t.host, t.port, t.sslmode, t.standby));
        TableIterator::new(rows.collect::<Vec<_>>())
    }

    /// Its symbol is not 0.2.0's `expose_table`, which took no column list
    /// (see `legacy`).
    #[pg_extern(volatile, parallel_unsafe, name = "expose_table")]
    fn expose_listed_table(
        tbl: Option<pg_sys::Oid>,
        org_column: Option<&str>,
        columns: Option<Vec<String>>,
    ) {
        wrapped(|| {
            Call::management("expose_table").and_then(|call| {
                exposure::expose_table(call.required("tbl", tbl)?, org_column, columns)
            })
        })
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn share_table(tbl: Option<pg_sys::Oid>, columns: Option<Vec<String>>) {
        wrapped(|| {
            Call::management("share_table")
                .and_then(|call| exposure::share_table(call.required("tbl", tbl)?, columns))
        })
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn hide_table(tbl: Option<pg_sys::Oid>) {
        wrapped(|| {
            Call::management("hide_table")
                .and_then(|call| exposure::hide_table(call.required("tbl", tbl)?))
        })
    }

    /// One table of `CALL bi_access.sync()`: whether it changed.
    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_table(tbl: pg_sys::Oid) -> bool {
        wrapped(|| Call::management("sync").and_then(|_| exposure::sync_table(tbl))).changed()
    }

    #[pg_extern(stable, parallel_unsafe)]
    fn check() -> TableIterator<
        'static,
        (
            name!(severity, String),
            name!(object, String),
            name!(finding, String),
            name!(fix, String),
        ),
    > {
        let rows = wrapped(|| Call::reading("check").and_then(|_| crate::health::check()))
            .into_iter()
            .map(|finding| {
                (
                    finding.severity.to_string(),
                    finding.object,
                    finding.finding,
                    finding.fix,
                )
            });
        TableIterator::new(rows.collect::<Vec<_>>())
    }

    /// What the yield worker did on this server since it started
    /// (src/shmem.rs): one row, or none when bi_access is not preloaded.
    #[pg_extern(volatile, parallel_safe)]
    fn lock_yields() -> TableIterator<'static, (name!(cancelled, i64), name!(terminated, i64))> {
        let counts = crate::shmem::segment().map(|segment| {
            let (cancelled, terminated) = segment.yields.read();
            (cancelled as i64, terminated as i64)
        });
        TableIterator::new(counts)
    }

    /// The usage counters of this server since it started (src/usage.rs):
    /// one row per credential role counted, none without the preload.
    #[pg_extern(volatile, parallel_safe)]
    #[allow(clippy::type_complexity)] // the view's columns, as pgrx spells them
    fn usage() -> TableIterator<
        'static,
        (
            name!(role, pg_sys::Oid),
            name!(sessions_now, i64),
            name!(logins, i64),
            name!(refused_limits, i64),
            name!(refused_networks, i64),
            name!(refused_revocation, i64),
            name!(refused_other, i64),
            name!(last_login_at, Option<TimestampWithTimeZone>),
            name!(statements, i64),
            name!(rows_returned, i64),
            name!(cancelled, i64),
        ),
    > {
        TableIterator::new(crate::usage::rows().into_iter().map(
            |(role, now, logins, refused, last, statements, rows, cancelled)| {
                (
                    role,
                    now,
                    logins,
                    refused[0],
                    refused[1],
                    refused[2],
                    refused[3],
                    last.and_then(|at| TimestampWithTimeZone::try_from(at).ok()),
                    statements,
                    rows,
                    cancelled,
                )
            },
        ))
    }

    /// The steps of `CALL bi_access.sync()`, which commits between them.
    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_begin() -> Vec<pg_sys::Oid> {
        wrapped(|| Call::management("sync").and_then(|_| exposure::sync_begin()))
    }

    /// For the credentials view: `syncing` while CALL bi_access.sync() runs.
    /// SECURITY DEFINER: it reads another session's activity.
    #[pg_extern(stable, parallel_safe, security_definer)]
    #[search_path(pg_catalog, pg_temp)]
    fn sync_running() -> bool {
        or_raise(crate::records::sync_running())
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_end(synced: i32, unchanged: i32, skipped: Vec<String>) {
        wrapped(|| managing("sync").and_then(|_| exposure::sync_end(synced, unchanged, skipped)))
    }

    /// Called by the ddl_command_end event trigger.
    #[pg_extern(volatile, parallel_unsafe)]
    fn after_ddl() {
        or_raise(exposure::after_ddl())
    }

    /// Called by the sql_drop event trigger.
    #[pg_extern(volatile, parallel_unsafe)]
    fn forget_dropped() {
        or_raise(exposure::forget_dropped())
    }

    #[pg_extern(stable, parallel_unsafe)]
    fn unsynced_tables() -> TableIterator<
        'static,
        (
            name!(tbl, pg_sys::Oid),
            name!(org_column, String),
            name!(reason, String),
        ),
    > {
        let rows =
            wrapped(|| Call::reading("unsynced_tables").and_then(|_| exposure::unsynced_tables()))
                .into_iter()
                .map(|pending| (pending.tbl, pending.org_column, pending.reason.to_string()));
        TableIterator::new(rows.collect::<Vec<_>>())
    }

    /// PgBouncer's auth_query (src/pooler.rs): stable and read-only, so it
    /// runs on a hot standby.
    #[pg_extern(stable, strict, parallel_safe)]
    fn pgbouncer_auth(
        username: &str,
    ) -> TableIterator<'static, (name!(usename, String), name!(passwd, String))> {
        TableIterator::new(or_raise(crate::pooler::verifier(username)))
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_tables() -> TableIterator<'static, (name!(tbl, pg_sys::Oid), name!(action, String))> {
        let rows =
            wrapped(|| Call::management("sync_tables").and_then(|_| exposure::sync_tables()))
                .into_iter()
                .map(|(tbl, action)| (tbl, action.as_str().to_string()));
        TableIterator::new(rows.collect::<Vec<_>>())
    }
}
