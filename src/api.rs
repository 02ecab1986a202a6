//! The SQL surface, declared once: each public function of schema
//! `bi_access` is a `#[pg_extern]` below with its SQL signature (the types
//! of src/sql_types.rs where pgrx has none), SECURITY DEFINER, its pinned
//! search_path and defaults, and beside it, in `extension_sql!`, its COMMENT
//! and the management tier that may call it (bi_access_viewer,
//! bi_access_editor, bi_access_admin: sql/bootstrap.sql). sql/api.sql holds
//! what SQL says better: the views, and the functions that return a view's
//! row (they call the workers of `bi_access_internal` below, which nobody
//! else may call). PUBLIC executes none of them (sql/api.sql revokes it).
//!
//! Every call passes its entry checks first (src/entry.rs: a primary for a
//! call that writes, SQL objects of this library's version, no NULL where
//! NULL means nothing), and its errors become PostgreSQL errors with their
//! SQLSTATE. No management function is STRICT: a NULL where NULL means
//! nothing is refused (22004 naming the argument), never a silent NULL.

use pgrx::prelude::*;
use pgrx::Uuid;

use crate::credentials::{self, Request};
use crate::entry::Call;
use crate::error::{or_raise, Result};
use crate::exposure;
use crate::org;
use crate::sql_types::{Cidrs, Name, Names, RegClass};
use crate::targets;

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

extension_sql!(
    "COMMENT ON FUNCTION bi_access.current_org() IS \
     'The org key of the login running the query (every bi_access policy calls it); NULL for any other role';",
    name = "current_org_surface",
    requires = [current_org]
);

/// The org key as a bigint, for integer org columns; NULL (no row) unless
/// the key is exactly what `bigint::text` prints (see org::as_bigint).
#[pg_extern(stable, parallel_safe, security_definer)]
fn current_org_bigint() -> Option<i64> {
    or_raise(org::current_org())
        .as_deref()
        .and_then(org::as_bigint)
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.current_org_bigint() IS \
     'current_org() as a bigint, for integer org columns; NULL unless the key is exactly what bigint::text prints';",
    name = "current_org_bigint_surface",
    requires = [current_org_bigint]
);

/// The org key as a uuid, for uuid org columns; NULL (no row) unless the
/// key is exactly what `uuid::text` prints (see org::as_uuid).
#[pg_extern(stable, parallel_safe, security_definer)]
fn current_org_uuid() -> Option<pgrx::Uuid> {
    or_raise(org::current_org())
        .as_deref()
        .and_then(org::as_uuid)
        .map(pgrx::Uuid::from_bytes)
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.current_org_uuid() IS \
     'current_org() as a uuid, for uuid org columns; NULL unless the key is exactly what uuid::text prints';",
    name = "current_org_uuid_surface",
    requires = [current_org_uuid]
);

/// The entry checks of a call on credentials, then what is due before it:
/// overlaps that have ended are retired (credentials.rs).
fn managing(name: &'static str) -> Result<Call> {
    let call = Call::management(name)?;
    credentials::retire_ended_overlaps()?;
    Ok(call)
}

/// A call that takes one role, which must be given.
fn for_role<T>(name: &'static str, role: Option<Name>, f: impl FnOnce(&str) -> Result<T>) -> T {
    or_raise(managing(name).and_then(|call| f(&call.required("role", role)?.0)))
}

/// A call that writes: a primary, this version's SQL objects.
fn calling<T>(name: &'static str, f: impl FnOnce(&Call) -> Result<T>) -> T {
    or_raise(Call::management(name).and_then(|call| f(&call)))
}

/// A column list as exposure takes it: given elements only.
fn column_list(call: &Call, columns: Option<Names>) -> Result<Option<Vec<String>>> {
    columns
        .map(|list| call.no_null_element("columns", list.0))
        .transpose()
}

/// generate() for each type an org key comes in, one argument per SQL
/// parameter. The three share parameter names and defaults, so an unknown
/// literal resolves to text, int2/int4/int8 to bigint (no implicit cast
/// reaches text), and numeric to none (42883); a bigint or uuid key is
/// passed on as the type prints it, its canonical form. Their symbols are
/// not 0.1.0's or 0.2.0's `generate` (see src/legacy.rs).
macro_rules! generate_with_key {
    ($rust:ident, $key:tt, $surface:literal, $declaration:literal) => {
        #[allow(clippy::too_many_arguments)]
        #[pg_extern(volatile, security_definer, name = "generate")]
        #[search_path(pg_catalog, pg_temp)]
        fn $rust(
            org_id: Option<$key>,
            label: default!(Option<&str>, "'default'"),
            org_name: default!(Option<&str>, "NULL"),
            valid_until: default!(Option<TimestampWithTimeZone>, "NULL"),
            connection_limit: default!(Option<i32>, "NULL"),
            scope: default!(Option<&str>, "'read'"),
            target: default!(Option<&str>, "NULL"),
            allowed_networks: default!(Option<Cidrs>, "NULL"),
) -> pgrx::composite_type!('static, "bi_access.connection") {
            or_raise(managing("generate").and_then(|call| {
                let org_id = call.required("org_id", org_id.map(|key| key.to_string()))?;
                credentials::generate(Request {
                    org_id: &org_id,
                    label: call.required("label", label)?,
                    org_name,
                    valid_until,
                    connection_limit,
                    scope: call.required("scope", scope)?,
                    target,
                    allowed_networks: allowed_networks.map(|list| list.0),
                })
            }))
        }

        extension_sql!($declaration, name = $surface, requires = [$rust]);
    };
}

generate_with_key!(
    generate_for_text,
    String,
    "generate_for_text_surface",
    "COMMENT ON FUNCTION bi_access.generate(text, text, text, timestamptz, integer, text, text, cidr[]) IS \
     'Creates a login for an org (scope read, or read_write in its custom schema; allowed_networks: the addresses it may log in from, NULL any): role, password, record; returns the connection details once';
GRANT EXECUTE ON FUNCTION bi_access.generate(text, text, text, timestamptz, integer, text, text, cidr[]) TO bi_access_editor;"
);

generate_with_key!(
    generate_for_bigint,
    i64,
    "generate_for_bigint_surface",
    "COMMENT ON FUNCTION bi_access.generate(bigint, text, text, timestamptz, integer, text, text, cidr[]) IS \
     'generate() with an integer org key (smallint, integer or bigint), as applications pass it';
GRANT EXECUTE ON FUNCTION bi_access.generate(bigint, text, text, timestamptz, integer, text, text, cidr[]) TO bi_access_editor;"
);

generate_with_key!(
    generate_for_uuid,
    Uuid,
    "generate_for_uuid_surface",
    "COMMENT ON FUNCTION bi_access.generate(uuid, text, text, timestamptz, integer, text, text, cidr[]) IS \
     'generate() with a uuid org key, as applications pass it';
GRANT EXECUTE ON FUNCTION bi_access.generate(uuid, text, text, timestamptz, integer, text, text, cidr[]) TO bi_access_editor;"
);

/// Its symbol is not 0.2.0's `connection_details`, which took text (see
/// src/legacy.rs).
#[pg_extern(volatile, security_definer, name = "connection_details")]
#[search_path(pg_catalog, pg_temp)]
fn connection_details_of(
    role: Option<Name>,
) -> pgrx::composite_type!('static, "bi_access.connection") {
    for_role("connection_details", role, credentials::connection_details)
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.connection_details(name) IS \
     'View Details: the connection details again, password included (audited)';
GRANT EXECUTE ON FUNCTION bi_access.connection_details(name) TO bi_access_editor;",
    name = "connection_details_surface",
    requires = [connection_details_of]
);

/// With overlap: rotation without downtime (src/credentials.rs), a new
/// role for the credential, the old one logging in until now() + overlap.
/// Its symbol is neither 0.1.0's `regenerate` nor 0.2.0's
/// `regenerate_until`, which took other arguments (see src/legacy.rs).
#[pg_extern(volatile, security_definer, name = "regenerate")]
#[search_path(pg_catalog, pg_temp)]
fn regenerate_overlap(
    role: Option<Name>,
    valid_until: default!(Option<TimestampWithTimeZone>, "NULL"),
    overlap: default!(Option<pgrx::datum::Interval>, "NULL"),
) -> pgrx::composite_type!('static, "bi_access.connection") {
    for_role("regenerate", role, |role| {
        credentials::regenerate(role, valid_until, overlap)
    })
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.regenerate(name, timestamptz, interval) IS \
     'New password (and expiry, if given); the old one and open sessions end at commit, on a standby once replayed. With overlap: a new role, the old one working until now() + overlap';
GRANT EXECUTE ON FUNCTION bi_access.regenerate(name, timestamptz, interval) TO bi_access_admin;",
    name = "regenerate_surface",
    requires = [regenerate_overlap]
);

/// Its symbol is not 0.2.0's `purge`, which took text (see src/legacy.rs).
#[pg_extern(volatile, security_definer, name = "purge")]
#[search_path(pg_catalog, pg_temp)]
fn purge_record(role: Option<Name>) {
    for_role("purge", role, credentials::purge)
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.purge(name) IS \
     'Removes a deleted credential from the list; the event log keeps its history';
GRANT EXECUTE ON FUNCTION bi_access.purge(name) TO bi_access_admin;",
    name = "purge_surface",
    requires = [purge_record]
);

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_target(
    name: Option<&str>,
    host: Option<&str>,
    port: Option<i32>,
    sslmode: default!(Option<&str>, "NULL"),
    standby: default!(Option<&str>, "NULL"),
) {
    calling("set_target", |call| {
        targets::set_target(targets::Definition {
            name: call.required("name", name)?,
            host: call.required("host", host)?,
            port: call.required("port", port)?,
            sslmode,
            standby,
        })
    })
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.set_target(text, text, integer, text, text) IS \
     'Creates or updates a named target; standby: the application_name whose replay makes a credential usable there, NULL for the primary';
GRANT EXECUTE ON FUNCTION bi_access.set_target(text, text, integer, text, text) TO bi_access_admin;",
    name = "set_target_surface",
    requires = [set_target]
);

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn drop_target(name: Option<&str>) {
    calling("drop_target", |call| {
        targets::drop_target(call.required("name", name)?)
    })
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.drop_target(text) IS \
     'Removes a named target no current credential uses';
GRANT EXECUTE ON FUNCTION bi_access.drop_target(text) TO bi_access_admin;",
    name = "drop_target_surface",
    requires = [drop_target]
);

/// Custom schemas (src/custom_schema.rs): one per org, created with its
/// first read_write credential; it outlives them until this call.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn drop_custom_schema(org_id: Option<&str>) {
    or_raise(
        managing("drop_custom_schema")
            .and_then(|call| crate::custom_schema::drop(call.required("org_id", org_id)?)),
    )
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.drop_custom_schema(text) IS \
     'Drops an org''s custom schema and everything in it, once no current read_write credential of the org exists';
GRANT EXECUTE ON FUNCTION bi_access.drop_custom_schema(text) TO bi_access_admin;",
    name = "drop_custom_schema_surface",
    requires = [drop_custom_schema]
);

/// Its symbol is neither 0.2.0's `expose_table`, which took no column list
/// (see src/legacy.rs), nor its regclass.
#[pg_extern(volatile, security_definer, name = "expose_table")]
#[search_path(pg_catalog, pg_temp)]
fn expose_listed_table(
    tbl: Option<RegClass>,
    org_column: default!(Option<Name>, "NULL"),
    columns: default!(Option<Names>, "NULL"),
) {
    calling("expose_table", |call| {
        let tbl = call.required("tbl", tbl)?.0;
        let columns = column_list(call, columns)?;
        exposure::expose_table(tbl, org_column.as_ref().map(|c| c.0.as_str()), columns)
    })
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.expose_table(regclass, name, name[]) IS \
     'Exposes a table to BI roles by its org column (default: bi_access.org_column), only its listed columns if columns is given, and syncs it';
GRANT EXECUTE ON FUNCTION bi_access.expose_table(regclass, name, name[]) TO bi_access_admin;",
    name = "expose_table_surface",
    requires = [expose_listed_table]
);

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn share_table(tbl: Option<RegClass>, columns: default!(Option<Names>, "NULL")) {
    calling("share_table", |call| {
        let tbl = call.required("tbl", tbl)?.0;
        exposure::share_table(tbl, column_list(call, columns)?)
    })
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.share_table(regclass, name[]) IS \
     'Shares a reference table without an org column: every BI role reads all its rows (only its listed columns if columns is given)';
GRANT EXECUTE ON FUNCTION bi_access.share_table(regclass, name[]) TO bi_access_admin;",
    name = "share_table_surface",
    requires = [share_table]
);

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn hide_table(tbl: Option<RegClass>) {
    calling("hide_table", |call| {
        exposure::hide_table(call.required("tbl", tbl)?.0)
    })
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.hide_table(regclass) IS \
     'Withdraws a table from BI roles, restores it as it was, and keeps it out of later syncs';
GRANT EXECUTE ON FUNCTION bi_access.hide_table(regclass) TO bi_access_admin;",
    name = "hide_table_surface",
    requires = [hide_table]
);

/// Its symbol is not 0.2.0's `unsynced_tables`, whose columns were oid and
/// text (see src/legacy.rs).
#[pg_extern(stable, security_definer, name = "unsynced_tables")]
#[search_path(pg_catalog, pg_temp)]
fn unsynced_tables_now() -> TableIterator<
    'static,
    (
        name!(tbl, RegClass),
        name!(org_column, Name),
        name!(reason, String),
    ),
> {
    let rows = or_raise(Call::reading("unsynced_tables").and_then(|_| exposure::unsynced_tables()))
        .into_iter()
        .map(|pending| {
            (
                RegClass(pending.tbl),
                Name(pending.org_column),
                pending.reason.to_string(),
            )
        });
    TableIterator::new(rows.collect::<Vec<_>>())
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.unsynced_tables() IS 'What a sync would change, and why';
GRANT EXECUTE ON FUNCTION bi_access.unsynced_tables() TO bi_access_viewer;",
    name = "unsynced_tables_surface",
    requires = [unsynced_tables_now]
);

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sync_tables() -> TableIterator<'static, (name!(tbl, RegClass), name!(action, String))> {
    let rows = calling("sync_tables", |_| exposure::sync_tables())
        .into_iter()
        .map(|(tbl, action)| (RegClass(tbl), action.as_str().to_string()));
    TableIterator::new(rows.collect::<Vec<_>>())
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.sync_tables() IS \
     'Brings every exposed table to its exposed state, all or nothing, in the caller''s transaction';
GRANT EXECUTE ON FUNCTION bi_access.sync_tables() TO bi_access_admin;",
    name = "sync_tables_surface",
    requires = [sync_tables]
);

#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn check() -> TableIterator<
    'static,
    (
        name!(severity, String),
        name!(object, String),
        name!(finding, String),
        name!(fix, String),
    ),
> {
    let rows = or_raise(Call::reading("check").and_then(|_| crate::health::check()))
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

extension_sql!(
    "COMMENT ON FUNCTION bi_access.check() IS \
     'Health check of the security posture around BI credentials, each finding with its fix';
GRANT EXECUTE ON FUNCTION bi_access.check() TO bi_access_viewer;",
    name = "check_surface",
    requires = [check]
);

/// What the yield worker did on this server since it started (src/shmem.rs,
/// src/yielding.rs): one row, none when bi_access is not preloaded.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn lock_yields() -> TableIterator<'static, (name!(cancelled, i64), name!(terminated, i64))> {
    let counts = crate::shmem::segment().map(|segment| {
        let (cancelled, terminated) = segment.yields.read();
        (cancelled as i64, terminated as i64)
    });
    TableIterator::new(counts)
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.lock_yields() IS \
     'Credential statements cancelled and sessions ended on this server since it started, yielding a lock to the application or replay';
GRANT EXECUTE ON FUNCTION bi_access.lock_yields() TO bi_access_viewer;",
    name = "lock_yields_surface",
    requires = [lock_yields]
);

/// PgBouncer's auth_query (src/pooler.rs): the SCRAM verifier of a live
/// credential of this database, no row for any other role. It reads
/// pg_authid, so it runs as the extension's owner; only bi_access_pooler,
/// which the DBA grants to PgBouncer's auth_user, may call it. Read-only
/// and without an event: it runs at every login, on hot standbys too. Its
/// symbol is not 0.2.0's `pgbouncer_auth`, whose usename was text (see
/// src/legacy.rs), which PgBouncer calls until the update.
#[pg_extern(stable, strict, security_definer, name = "pgbouncer_auth")]
#[search_path(pg_catalog, pg_temp)]
fn pgbouncer_verifier(
    username: &str,
) -> TableIterator<'static, (name!(usename, Name), name!(passwd, String))> {
    let row = or_raise(crate::pooler::verifier(username));
    TableIterator::new(row.map(|(usename, passwd)| (Name(usename), passwd)))
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.pgbouncer_auth(text) IS \
     'PgBouncer auth_query: the SCRAM verifier of a live bi_access credential of this database, else no row';
GRANT EXECUTE ON FUNCTION bi_access.pgbouncer_auth(text) TO bi_access_pooler;",
    name = "pgbouncer_auth_surface",
    requires = [pgbouncer_verifier]
);

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

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.org_lookup_support(internal) IS 'Planner support of the org lookups: turns a policy''s call into the org key as a constant';",
        name = "org_lookup_support_comment",
        requires = [org_lookup_support]
    );

    /// The org key of a role as this database's lookup answers it: what a
    /// Citus worker asks its coordinator (src/citus.rs). Superusers only.
    #[pg_extern(stable, parallel_safe)]
    fn org_of(role: &str) -> Option<String> {
        crate::error::or_raise(crate::org::org_of(role))
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.org_of(text) IS 'Superusers: the org key of a role as this database answers it (what a Citus worker asks its coordinator)';",
        name = "org_of_comment",
        requires = [org_of]
    );

    use super::managing;
    use crate::credentials;
    use crate::entry::Call;
    use crate::error::{or_raise, wrapped, Result};
    use crate::exposure;
    use crate::targets;

    /// A call that takes one role, which must be given.
    fn on_role<T>(name: &'static str, role: Option<&str>, f: impl FnOnce(&str) -> Result<T>) -> T {
        wrapped(|| managing(name).and_then(|call| f(call.required("role", role)?)))
    }

    /// `allowed_networks` arrives as text (sql/api.sql casts the cidr[]):
    /// PostgreSQL has parsed every address already.
    #[pg_extern(volatile, parallel_unsafe)]
    fn set_networks(role: Option<&str>, allowed_networks: Option<Vec<Option<String>>>) {
        on_role("set_networks", role, |role| {
            credentials::set_networks(role, allowed_networks)
        })
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.set_networks(text, text[]) IS 'Worker of bi_access.set_networks()';",
        name = "set_networks_comment",
        requires = [set_networks]
    );

    #[pg_extern(volatile, parallel_unsafe)]
    fn revoke(role: Option<&str>) {
        on_role("revoke", role, credentials::revoke)
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.revoke(text) IS 'Worker of bi_access.revoke()';",
        name = "revoke_comment",
        requires = [revoke]
    );

    #[pg_extern(volatile, parallel_unsafe)]
    fn activate(role: Option<&str>) {
        on_role("activate", role, credentials::activate)
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.activate(text) IS 'Worker of bi_access.activate()';",
        name = "activate_comment",
        requires = [activate]
    );

    #[pg_extern(volatile, parallel_unsafe)]
    fn delete(role: Option<&str>) {
        on_role("delete", role, credentials::delete)
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.delete(text) IS 'Worker of bi_access.delete()';",
        name = "delete_comment",
        requires = [delete]
    );

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

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.credential_state(text, text, text, text, boolean, boolean, text) IS 'The status a credential shows, and why when it failed (the credentials view calls it per record)';",
        name = "credential_state_comment",
        requires = [credential_state]
    );

    /// A call that takes one org key, which must be given.
    fn on_org<T>(name: &'static str, org_id: Option<&str>, f: impl FnOnce(&str) -> Result<T>) -> T {
        wrapped(|| managing(name).and_then(|call| f(call.required("org_id", org_id)?)))
    }

    #[pg_extern(volatile, parallel_unsafe)]
    fn revoke_org(org_id: Option<&str>) -> Vec<String> {
        on_org("revoke_org", org_id, credentials::revoke_org)
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.revoke_org(text) IS 'Worker of bi_access.revoke_org()';",
        name = "revoke_org_comment",
        requires = [revoke_org]
    );

    #[pg_extern(volatile, parallel_unsafe)]
    fn delete_org(org_id: Option<&str>) -> Vec<String> {
        on_org("delete_org", org_id, credentials::delete_org)
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.delete_org(text) IS 'Worker of bi_access.delete_org()';",
        name = "delete_org_comment",
        requires = [delete_org]
    );

    /// The quota trigger on every custom-schema table that lacks it (the
    /// upgrade from 0.2.0 calls it; a sync does the same); how many tables.
    #[pg_extern(volatile, parallel_unsafe)]
    fn add_quota_triggers() -> i64 {
        or_raise(crate::custom_schema::add_quota_triggers(None))
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.add_quota_triggers() IS 'Gives every custom-schema table its quota trigger';",
        name = "add_quota_triggers_comment",
        requires = [add_quota_triggers]
    );

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

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.targets() IS 'The default target (the settings) and every named target, for the targets view';",
        name = "targets_comment",
        requires = [targets]
    );

    /// One table of `CALL bi_access.sync()`: whether it changed.
    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_table(tbl: pg_sys::Oid) -> bool {
        wrapped(|| Call::management("sync").and_then(|_| exposure::sync_table(tbl))).changed()
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.sync_table(oid) IS 'CALL bi_access.sync(): syncs one table (through step_sync_table)';",
        name = "sync_table_comment",
        requires = [sync_table]
    );

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

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.usage() IS 'Rows of bi_access.usage: the usage counters of this server';",
        name = "usage_comment",
        requires = [usage]
    );

    /// The steps of `CALL bi_access.sync()`, which commits between them.
    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_begin() -> Vec<pg_sys::Oid> {
        wrapped(|| Call::management("sync").and_then(|_| exposure::sync_begin()))
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.sync_begin() IS 'CALL bi_access.sync(): its first step, the tables to sync (through step_sync_begin)';",
        name = "sync_begin_comment",
        requires = [sync_begin]
    );

    /// For the credentials view: `syncing` while CALL bi_access.sync() runs.
    /// SECURITY DEFINER: it reads another session's activity.
    #[pg_extern(stable, parallel_safe, security_definer)]
    #[search_path(pg_catalog, pg_temp)]
    fn sync_running() -> bool {
        or_raise(crate::records::sync_running())
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.sync_running() IS 'Whether CALL bi_access.sync() runs now (the credentials view shows syncing)';",
        name = "sync_running_comment",
        requires = [sync_running]
    );

    #[pg_extern(volatile, parallel_unsafe)]
    fn sync_end(synced: i32, unchanged: i32, skipped: Vec<String>) {
        wrapped(|| managing("sync").and_then(|_| exposure::sync_end(synced, unchanged, skipped)))
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.sync_end(integer, integer, text[]) IS 'CALL bi_access.sync(): its last step and event (through step_sync_end)';",
        name = "sync_end_comment",
        requires = [sync_end]
    );

    /// Called by the ddl_command_end event trigger.
    #[pg_extern(volatile, parallel_unsafe)]
    fn after_ddl() {
        or_raise(exposure::after_ddl())
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.after_ddl() IS 'Worker of the ddl_command_end event trigger: new tables, weakened exposed tables';",
        name = "after_ddl_comment",
        requires = [after_ddl]
    );

    /// Called by the sql_drop event trigger.
    #[pg_extern(volatile, parallel_unsafe)]
    fn forget_dropped() {
        or_raise(exposure::forget_dropped())
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.forget_dropped() IS 'Worker of the sql_drop event trigger: forgets dropped exposed tables';",
        name = "forget_dropped_comment",
        requires = [forget_dropped]
    );
}
