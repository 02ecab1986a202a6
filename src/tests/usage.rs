//! Issue 29, usage and last login: the SQL surface of the usage counters
//! (the view, its tier, the settings) and the shared table behind them.
//! Counting real logins, on the primary and the replica, is
//! pg_test/test_usage.py (a login needs a real session); `cargo pgrx test`
//! preloads bi_access, so the segment exists here.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    /// Viewers read the view (and call the function behind it); PUBLIC and
    /// credentials do not.
    #[pg_test]
    fn the_usage_view_is_for_viewers() {
        assert!(one::<bool>(
            "SELECT has_table_privilege('bi_access_viewer', 'bi_access.usage', 'SELECT')"
        ));
        assert!(one::<bool>(
            "SELECT has_function_privilege('bi_access_viewer', 'bi_access_internal.usage()', 'EXECUTE')"
        ));
        assert!(!one::<bool>(
            "SELECT has_table_privilege('bi_access_editor', 'bi_access.usage', 'INSERT')"
        ));
        let (acme, _) = generate(ACME);
        as_role(&acme, || {
            fails_with(
                "SELECT * FROM bi_access.usage",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            )
        });
    }

    /// A credential that never logged in on this server has no row, and its
    /// last_login_at is NULL.
    #[pg_test]
    fn a_credential_without_a_login_has_no_usage() {
        let (acme, _) = generate(ACME);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM bi_access.usage WHERE role_name = '{acme}'"
            )),
            0
        );
        assert!(one::<bool>(&format!(
            "SELECT last_login_at IS NULL FROM bi_access.credentials WHERE role_name = '{acme}'"
        )));
    }

    /// The settings: stale_after (90 days, superusers only) and the
    /// table's size, fixed at server start.
    #[pg_test]
    fn the_usage_settings() {
        assert_eq!(one::<String>("SHOW bi_access.stale_after"), "90d");
        assert_eq!(crate::settings::stale_after_s(), Some(90 * 24 * 60 * 60));
        run("SET bi_access.stale_after = 0");
        assert_eq!(crate::settings::stale_after_s(), None);
        assert_eq!(
            one::<String>("SHOW bi_access.usage_max_credentials"),
            "4096"
        );
        fails_with(
            "SET bi_access.usage_max_credentials = 10",
            ERRCODE_CANT_CHANGE_RUNTIME_PARAM,
        );
        run("CREATE ROLE usage_plain");
        as_role("usage_plain", || {
            fails_with(
                "SET bi_access.stale_after = '1d'",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            )
        });
    }

    /// The shared table: a role's entry is found only once added, and
    /// found again at the same place; counters start at zero.
    #[pg_test]
    fn an_entry_is_added_once_and_found_again() {
        let segment = crate::shmem::segment().expect("cargo pgrx test preloads bi_access");
        // An oid no role has (roles start far below it).
        let role = pg_sys::Oid::from(4_000_000_123u32);
        assert!(segment.usage_of(role, false).is_none());
        let added = segment.usage_of(role, true).expect("room for one more");
        let found = segment.usage_of(role, false).expect("added");
        assert!(std::ptr::eq(added, found));
        assert_eq!(crate::shmem::Usage::read(&found.logins), 0);
        assert!(segment.usage().any(|(oid, _)| oid == role));
        // No row in the view: no such role.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM bi_access.usage WHERE role_name IS NULL"),
            0
        );
    }
}
