//! Property 7, least privilege of management: tiers, and the caller's own rights over a table (the confused deputy).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    #[pg_test]
    fn management_needs_bi_access_admin() {
        run("CREATE ROLE test_plain NOLOGIN");
        as_role("test_plain", || {
            fails_with(
                "SELECT bi_access.generate('acme')",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            fails_with(
                "SELECT * FROM bi_access.credentials",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            fails_with(
                "SELECT bi_access_internal.generate('acme', 'x', NULL, NULL, NULL, NULL, NULL)",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        run("CREATE ROLE test_admin NOLOGIN IN ROLE bi_access_admin");
        let user = as_role("test_admin", || {
            one::<String>("SELECT username FROM bi_access.generate('acme')")
        });
        assert_eq!(status(&user), "active");
    }

    #[pg_test]
    fn expose_table_refuses_a_table_the_caller_cannot_read_with_42501() {
        plain_admin("test_mgmt_admin");
        run("CREATE SCHEMA hr");
        run("CREATE TABLE hr.salaries (org_id bigint, amount int)");
        let oid: u32 = one::<pg_sys::Oid>("SELECT 'hr.salaries'::regclass::oid").into();
        as_role("test_mgmt_admin", || {
            // By OID: the regclass input function never reads the schema.
            fails_with(
                &format!("SELECT bi_access.expose_table({oid})"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            fails_with(
                &format!("SELECT bi_access.hide_table({oid})"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        // USAGE and SELECT without membership in the owner: still 42501.
        run("GRANT USAGE ON SCHEMA hr TO test_mgmt_admin");
        run("GRANT SELECT ON hr.salaries TO test_mgmt_admin");
        as_role("test_mgmt_admin", || {
            fails_with(
                "SELECT bi_access.expose_table('hr.salaries')",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        // A member of the owner without USAGE on the schema: 42501.
        run("CREATE ROLE test_hr_owner NOLOGIN");
        run("ALTER TABLE hr.salaries OWNER TO test_hr_owner");
        run("GRANT test_hr_owner TO test_mgmt_admin");
        run("REVOKE USAGE ON SCHEMA hr FROM test_mgmt_admin");
        as_role("test_mgmt_admin", || {
            fails_with(
                &format!("SELECT bi_access.expose_table({oid})"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        // A member of the owner, with USAGE and SELECT: allowed.
        run("GRANT USAGE ON SCHEMA hr TO test_mgmt_admin");
        as_role("test_mgmt_admin", || {
            run("SELECT bi_access.expose_table('hr.salaries')");
        });
        let exposed: i64 = one("SELECT count(*) FROM bi_access.exposed_table \
             WHERE tbl = 'hr.salaries'::regclass AND NOT hidden");
        assert_eq!(exposed, 1);
    }

    #[pg_test]
    fn the_caller_is_the_role_the_session_set_role_to() {
        plain_admin("test_mgmt_setrole");
        run("CREATE SCHEMA t_caller");
        run("GRANT USAGE ON SCHEMA t_caller TO test_mgmt_setrole");
        run("CREATE TABLE t_caller.owned_elsewhere (org_id bigint)");
        // The superuser who SET ROLEs to a plain admin is checked as that
        // admin, not as the extension's owner nor as its login.
        as_role("test_mgmt_setrole", || {
            fails_with(
                "SELECT bi_access.expose_table('t_caller.owned_elsewhere')",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        // Once the admin is a member of the owner: allowed, SET ROLE or not.
        run("CREATE ROLE test_mgmt_caller_owner NOLOGIN");
        run("ALTER TABLE t_caller.owned_elsewhere OWNER TO test_mgmt_caller_owner");
        run("GRANT test_mgmt_caller_owner TO test_mgmt_setrole");
        as_role("test_mgmt_setrole", || {
            run("SELECT bi_access.expose_table('t_caller.owned_elsewhere')");
        });
    }

    /// A sync runs with the extension owner's rights: it exposes a new table
    /// only when its caller could expose it itself (the confused deputy of
    /// issue 25); the table stays new, with the reason, until one who may
    /// exposes it.
    #[pg_test]
    fn a_sync_exposes_only_the_new_tables_its_caller_could() {
        plain_admin("test_sync_admin");
        run("CREATE TABLE public.payroll (org_id bigint, salary int)");
        let exposed = "SELECT count(*) FROM bi_access.exposed_table \
                       WHERE tbl = 'public.payroll'::regclass AND NOT hidden";
        let reason = "SELECT reason FROM bi_access.unsynced_tables() \
                      WHERE tbl = 'public.payroll'::regclass";
        let refused: String = as_role("test_sync_admin", || {
            run("SELECT * FROM bi_access.sync_tables()");
            one(reason)
        });
        assert_eq!(one::<i64>(exposed), 0);
        assert!(
            refused.contains(
                "test_sync_admin may not expose or hide public.payroll: it lacks \
                              membership in its owner postgres, SELECT on it"
            ),
            "{refused}"
        );
        assert_eq!(
            one::<String>(reason),
            "new table with the org column, not exposed",
            "the superuser could"
        );
        run("SELECT * FROM bi_access.sync_tables()");
        assert_eq!(one::<i64>(exposed), 1);
    }
}
