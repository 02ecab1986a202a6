//! bi_access: per-organization read-only PostgreSQL logins for BI tools,
//! isolated by row-level security.
//!
//! Where things are:
//! - `status`: where a credential's status is decided (the `Status` type,
//!   live/current, the shown status, what each call does in each status);
//! - `records`: every statement on the credential and event tables;
//! - `credentials`: the lifecycle (generate … purge), orchestration only;
//! - `org`: the org lookup every policy calls;
//! - `custody`: which database manages a credential role (copies, restores);
//! - `roles`: creating, altering and dropping PostgreSQL roles;
//! - `secrets`: passwords, SCRAM verifiers, the sealed copy;
//! - `key`: the key that seals it, where it lives, export/import/rotate;
//! - `sessions`: ending a role's sessions at commit;
//! - `exposure` and `policies`: exposed tables, syncing, RLS policies;
//! - `health`: `check()`, the security posture; `capacity`: its findings on
//!   what credentials take of the server's shared resources;
//! - `pooler`: PgBouncer's auth_query (`pgbouncer_auth`);
//! - `connection`: the details handed to BI tools (URL, JDBC URL);
//! - `custom_schema`: scope read_write, each org's custom schema and its groups;
//! - `targets`: named targets (host, port, sslmode, standby) credentials point at;
//! - `guard`: the session guard: what a credential's own session may do;
//! - `shmem`: bi_access's shared-memory segment (preloaded only);
//! - `yielding`: the yield worker: credential sessions yield their locks to
//!   the application and to replay (preloaded only);
//! - `usage`: each credential's logins, statements and rows on this server
//!   (the `usage` view; counters in the shared segment, preloaded only);
//! - `uninstall`: the drop guard, and what removing the extension does first;
//! - `names`: every name bi_access gives, spelled once;
//! - `compat`: what differs between PostgreSQL majors;
//! - `citus`: what differs on a Citus cluster (coordinator and workers);
//! - `legacy`: symbols older versions' SQL calls until ALTER EXTENSION UPDATE;
//! - `entry`: what every call checks first (a primary, SQL objects of this
//!   version, no NULL where NULL means nothing);
//! - `input`: bounds on callers' text (lengths, characters, error quoting);
//! - `audit`: the event log; `settings`: the GUCs; `error`: SQLSTATEs;
//! - `api`: the SQL surface, each function declared once with its COMMENT and
//!   tier GRANT beside it; `sql_types`: the SQL types pgrx lacks (`name`,
//!   `regclass`, `name[]`, `cidr[]`); `sql/api.sql`: the views and the
//!   functions that return a view's row.

use pgrx::prelude::*;

mod api;
mod audit;
mod capacity;
mod citus;
mod compat;
mod connection;
mod credentials;
mod custody;
mod custom_schema;
mod db;
mod entry;
mod error;
mod exposure;
mod finding;
mod guard;
mod health;
mod index_scan;
mod input;
mod invalidation;
mod key;
mod legacy;
mod login_record;
mod names;
mod org;
mod policies;
mod pooler;
mod records;
mod restore;
mod roles;
mod secrets;
mod sessions;
mod setting_origin;
mod settings;
mod shmem;
mod sql_types;
mod status;
mod table_record;
mod targets;
mod uninstall;
mod usage;
mod yielding;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/api.sql", name = "api", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx's panic hook captures a Rust backtrace (with the build machine's
    // paths) whenever RUST_BACKTRACE is set in the server's environment, and
    // puts it in the DETAIL of any error that crosses a guarded boundary,
    // where a BI user would read it. bi_access reports every error itself,
    // so the hook records nothing.
    std::panic::set_hook(Box::new(|_| {}));
    let asked = settings::asked_for_by_the_client();
    settings::init(if guard::session::credential_at_start() {
        settings::Scope::CredentialSession
    } else {
        settings::Scope::All
    });
    guard::install();
    guard::statements::before_reassign_owned(uninstall::before_reassign);
    guard::gate::remember_client_settings(asked);
    org::init();
    citus::init();
    // SAFETY: a flag of the postmaster's, true while it loads
    // shared_preload_libraries.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        shmem::request();
        yielding::register();
    }
    yielding::install();
    usage::install();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // As a credential's session_preload_libraries would: the session
        // guard is in place before any test's first statement.
        vec!["shared_preload_libraries = 'bi_access'"]
    }
}
