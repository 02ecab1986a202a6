//! Property 13 (issue 24), the SQL surface of the login gate and the memory
//! bound: credential roles load the gate, the settings' defaults, and what a
//! credential's session refuses (the recipes themselves, with real logins,
//! sizes and locks, are pg_test/test_resources.py, and so is PREPARE
//! TRANSACTION, which SPI does not run).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    fn preload_libraries(role: &str) -> String {
        one(&format!(
            "SELECT coalesce((SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) c \
                              WHERE s.setrole = '{role}'::regrole AND s.setdatabase = 0 \
                                AND c LIKE 'session_preload_libraries=%'), '')"
        ))
    }

    /// A credential made by 0.2.0 loads bi_access alone; a sync gives it
    /// the login gate, and a second sync changes nothing.
    #[pg_test]
    fn a_sync_gives_every_credential_the_login_gate() {
        let (acme, _) = generate(ACME);
        let wanted = "session_preload_libraries=bi_access, bi_access_gate";
        assert_eq!(preload_libraries(&acme), wanted, "as generated");
        run(&format!(
            "ALTER ROLE {acme} SET session_preload_libraries = 'bi_access'"
        ));
        run("SELECT * FROM bi_access.sync_tables()");
        assert_eq!(preload_libraries(&acme), wanted, "after a sync");
        assert_eq!(crate::roles::sync_session_libraries().unwrap(), 0);
    }

    /// The defaults README states: the session's memory follows the work_mem
    /// cap, BI sessions may take half of the slots no role reserves, and
    /// each may write 1GB of temporary files.
    #[pg_test]
    fn the_defaults_leave_the_application_its_slots_and_bound_the_memory() {
        assert_eq!(
            crate::settings::session_memory_bytes(),
            Some((2 * 64 + 32) * 1024 * 1024)
        );
        let mut reserved: i32 = one::<String>("SHOW superuser_reserved_connections")
            .parse()
            .unwrap();
        if !cfg!(any(feature = "pg14", feature = "pg15")) {
            reserved += one::<String>("SHOW reserved_connections")
                .parse::<i32>()
                .unwrap();
        }
        let max: i32 = one::<String>("SHOW max_connections").parse().unwrap();
        assert_eq!(
            crate::settings::max_bi_connections(),
            Some((max - reserved) / 2)
        );
        assert_eq!(crate::settings::max_cursors(), Some(50));
        assert_eq!(crate::settings::max_held_cursors(), Some(4));
        assert_eq!(crate::settings::max_prepared_statements(), Some(500));
        // pg_test's servers set 64MB (cluster.py): this is where 1GB is held.
        assert_eq!(crate::settings::temp_file_limit_kb(), Some(1024 * 1024));
    }

    /// A write is refused as it is analysed: PREPARE of one too, which
    /// never reaches the executor's permission check.
    #[pg_test]
    fn a_credential_may_not_prepare_a_write() {
        saas();
        let (acme, _) = generate(ACME);
        as_login(&acme, || {
            fails_with(
                "PREPARE w AS DELETE FROM public.projects",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            if !cfg!(feature = "pg14") {
                fails_with(
                    "MERGE INTO public.projects t USING (SELECT 1 AS id) s ON t.id = s.id \
                     WHEN NOT MATCHED THEN DO NOTHING",
                    ERRCODE_INSUFFICIENT_PRIVILEGE,
                );
            }
        });
    }

    /// The planner's search settings move only toward less work.
    #[pg_test]
    fn a_credential_may_not_make_the_planner_work_harder() {
        let (acme, _) = generate(ACME);
        as_login(&acme, || {
            for raise in [
                "SET join_collapse_limit = 100",
                "SET from_collapse_limit = 100",
                "SET geqo = off",
                "SET geqo_threshold = 100",
                "SET enable_partitionwise_join = on",
                "SET jit_above_cost = 0",
            ] {
                fails_with(raise, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
            for lower in [
                "SET join_collapse_limit = 2",
                "SET geqo_threshold = 2",
                "SET jit_above_cost = -1",
            ] {
                assert_eq!(sqlstate(lower), None, "{lower}");
            }
        });
    }
}
