//! Helpers of the `#[pg_test]`s: SQL in a subtransaction, SQLSTATEs, roles,
//! and the small SaaS most tests expose.

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Runs `sql` in a subtransaction; the SQLSTATE it failed with, if any.
pub(crate) fn sqlstate(sql: &str) -> Option<PgSqlErrorCode> {
    error_of(sql).map(|(code, _, _)| code)
}

/// Runs `sql` in a subtransaction; the SQLSTATE, message and HINT it failed
/// with, if it failed.
pub(crate) fn error_of(sql: &str) -> Option<(PgSqlErrorCode, String, Option<String>)> {
    // SAFETY: the same dance as a PL/pgSQL EXCEPTION block: a
    // subtransaction that is rolled back on error, restoring the memory
    // context and resource owner.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let failed = PgTryBuilder::new(|| {
            Spi::run(sql).expect("SPI");
            None
        })
        .catch_others(|error| match error {
            CaughtError::PostgresError(report)
            | CaughtError::ErrorReport(report)
            | CaughtError::RustPanic {
                ereport: report, ..
            } => Some((
                report.sql_error_code(),
                report.message().to_string(),
                report.hint().map(str::to_string),
            )),
        })
        .execute();
        if failed.is_some() {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        } else {
            pg_sys::ReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        failed
    }
}

/// Runs `f` in a subtransaction that is then rolled back.
pub(crate) fn rolled_back(f: impl FnOnce()) {
    // SAFETY: as in sqlstate(); `f` raises no error (a failed assertion
    // aborts the whole test).
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        f();
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    }
}

pub(crate) fn fails_with(sql: &str, code: PgSqlErrorCode) {
    assert_eq!(sqlstate(sql), Some(code), "{sql}");
}

pub(crate) fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: NULL"))
}

pub(crate) fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// As a login would be: the session guard keys on session_user.
pub(crate) fn as_login<T>(role: &str, f: impl FnOnce() -> T) -> T {
    run(&format!(
        "SET SESSION AUTHORIZATION {}",
        pgrx::spi::quote_identifier(role)
    ));
    let result = f();
    run("RESET SESSION AUTHORIZATION");
    result
}

pub(crate) fn as_role<T>(role: &str, f: impl FnOnce() -> T) -> T {
    run(&format!("SET ROLE {}", pgrx::spi::quote_identifier(role)));
    let result = f();
    run("RESET ROLE");
    result
}

pub(crate) const ACME: &str = "00000000-0000-0000-0000-00000000000a";

pub(crate) const GLOBEX: &str = "00000000-0000-0000-0000-00000000000b";

/// A small SaaS: a uuid-keyed and a bigint-keyed table (org keys '10'
/// and '20' there), both exposed; an application role that is not the
/// owner.
pub(crate) fn saas() {
    run("CREATE TABLE public.projects (id serial PRIMARY KEY, org_id uuid NOT NULL, name text)");
    run("CREATE INDEX ON public.projects (org_id)");
    run(&format!(
        "INSERT INTO public.projects (org_id, name) \
         SELECT '{ACME}'::uuid, 'acme ' || i FROM generate_series(1, 3) i \
         UNION ALL SELECT '{GLOBEX}'::uuid, 'globex ' || i FROM generate_series(1, 5) i"
    ));
    run(
        "CREATE TABLE public.invoices (id serial PRIMARY KEY, account bigint NOT NULL, amount int)",
    );
    run("INSERT INTO public.invoices (account, amount) \
         SELECT 10, i FROM generate_series(1, 4) i \
         UNION ALL SELECT 20, i FROM generate_series(1, 2) i");
    run("CREATE ROLE test_app NOLOGIN");
    run("GRANT SELECT, INSERT, UPDATE, DELETE ON public.projects, public.invoices TO test_app");
    run("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO test_app");
    run("SELECT bi_access.expose_table('public.projects')");
    run("SELECT bi_access.expose_table('public.invoices', 'account')");
}

pub(crate) fn generate(org: &str) -> (String, String) {
    Spi::get_two::<String, String>(&format!(
        "SELECT username, password FROM bi_access.generate('{org}', org_name => 'Org {org}')"
    ))
    .map(|(user, password)| (user.unwrap(), password.unwrap()))
    .unwrap()
}

pub(crate) fn status(role: &str) -> String {
    one(&format!(
        "SELECT status::text FROM bi_access.credentials WHERE role_name = '{role}'"
    ))
}

pub(crate) fn events(role: &str) -> i64 {
    one(&format!(
        "SELECT count(*) FROM bi_access.events WHERE role_name = '{role}'"
    ))
}

pub(crate) fn reader() -> String {
    one("SELECT reader_role::text FROM bi_access.config")
}

/// A table that is not exposed, granted to PUBLIC (a migration's doing).
pub(crate) fn public_table() {
    run("CREATE TABLE public.leaky (id int, org_id uuid)");
    run(&format!(
        "INSERT INTO public.leaky VALUES (1, '{ACME}'), (2, '{GLOBEX}')"
    ));
    run("GRANT SELECT ON public.leaky TO PUBLIC");
    run("SELECT bi_access.hide_table('public.leaky')");
}

// These tests run concurrently with the others in one database: each
// works in a schema and with roles of its own, so none waits for
// another's uncommitted catalog rows (the `public` schema's ACL row
// included, which the first exposure there updates).

/// A non-superuser admin (a member of bi_access_admin) that owns nothing.
pub(crate) fn plain_admin(name: &str) {
    run(&format!(
        "CREATE ROLE {name} NOLOGIN IN ROLE bi_access_admin"
    ));
}

/// The plan of `sql`, as EXPLAIN prints it.
pub(crate) fn explain(sql: &str) -> String {
    Spi::connect(|client| {
        client
            .select(&format!("EXPLAIN {sql}"), None, &[])
            .unwrap()
            .map(|row| row.get::<String>(1).unwrap().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// saas()'s `public.projects` id sequence, by its name in this transaction:
/// a concurrent test's uncommitted `public.projects` can make it
/// `projects_id_seq1`.
pub(crate) fn projects_sequence() -> String {
    one("SELECT pg_get_serial_sequence('public.projects', 'id')")
}
