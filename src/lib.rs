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
//! - `health`: `check()`, the security posture;
//! - `pooler`: PgBouncer's auth_query (`pgbouncer_auth`);
//! - `connection`: the details handed to BI tools (URL, JDBC URL);
//! - `custom_schema`: scope read_write, each org's custom schema and its groups;
//! - `targets`: named targets (host, port, sslmode, standby) credentials point at;
//! - `guard`: the session guard: what a credential's own session may do;
//! - `uninstall`: the drop guard, and what removing the extension does first;
//! - `names`: every name bi_access gives, spelled once;
//! - `compat`: what differs between PostgreSQL majors;
//! - `legacy`: symbols older versions' SQL calls until ALTER EXTENSION UPDATE;
//! - `audit`: the event log; `settings`: the GUCs; `error`: SQLSTATEs;
//! - `api` and `sql/api.sql`: the SQL surface.

use pgrx::prelude::*;

mod api;
mod audit;
mod compat;
mod connection;
mod credentials;
mod custody;
mod custom_schema;
mod db;
mod error;
mod exposure;
mod guard;
mod health;
mod key;
mod legacy;
mod names;
mod org;
mod policies;
mod pooler;
mod records;
mod roles;
mod secrets;
mod sessions;
mod settings;
mod status;
mod targets;
mod uninstall;

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
    settings::init(if guard::credential_at_start() {
        settings::Scope::CredentialSession
    } else {
        settings::Scope::All
    });
    guard::install();
    guard::gate::remember_client_settings(asked);
    org::init();
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
