//! `#[pg_test]`s of a custom schema's quota inside a statement and of its
//! caps (issue 24, src/guard/quota.rs), and of check()'s findings on what
//! credentials share with the application (src/capacity.rs). A credential's
//! session is a SET SESSION AUTHORIZATION; settings are SET by the
//! superuser first, as a server's configuration would give them. What needs
//! real logins (COPY FROM STDIN, locks held to a commit, the replica) is in
//! pg_test/test_resources_disk.py and test_check.py.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    use crate::tests::helpers::{as_login, fails_with, one, run};

    /// A read_write credential of `org` and its custom schema.
    fn writer(org: &str) -> (String, String) {
        run("SELECT bi_access.set_target('primary', 'primary.example.com', 5432)");
        Spi::get_two::<String, String>(&format!(
            "SELECT username, custom_schema FROM bi_access.generate('{org}', 'analyst', \
             scope => 'read_write', target => 'primary')"
        ))
        .map(|(user, schema)| (user.unwrap(), schema.unwrap()))
        .unwrap()
    }

    fn size(schema: &str) -> i64 {
        one(&format!(
            "SELECT coalesce(sum(pg_total_relation_size(oid)), 0)::bigint FROM pg_class \
             WHERE relnamespace = '{schema}'::regnamespace AND relkind IN ('r', 'm', 'S')"
        ))
    }

    fn guarded(table: &str) -> bool {
        one(&format!(
            "SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = '{table}'::regclass \
             AND tgname = 'bi_access_quota' AND tgenabled = 'O' \
             AND tgfoid = 'bi_access_internal.custom_schema_quota()'::regprocedure)"
        ))
    }

    const MB: i64 = 1024 * 1024;

    #[pg_test]
    fn a_statement_that_crosses_the_quota_stops_within_the_allowance() {
        let (login, schema) = writer("q1");
        run("SET bi_access.custom_schema_quota = '1MB'");
        let allowance = 64 * MB;
        as_login(&login, || {
            run(&format!("CREATE TABLE {schema}.big (x text)"));
            // 300000 rows of 330 bytes: 100 MB, were it not stopped.
            fails_with(
                &format!(
                    "INSERT INTO {schema}.big SELECT repeat(md5(i::text), 10) \
                     FROM generate_series(1, 300000) i"
                ),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            fails_with(
                &format!(
                    "CREATE TABLE {schema}.copied AS SELECT repeat(md5(i::text), 10) AS x \
                     FROM generate_series(1, 300000) i"
                ),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
        });
        let written = size(&schema);
        assert!(
            written > 512 * 1024 && written <= MB + allowance,
            "{written}"
        );
        assert!(guarded(&format!("{schema}.big")));
    }

    #[pg_test]
    fn the_trigger_is_on_every_new_table_and_cannot_be_disabled() {
        let (login, schema) = writer("q2");
        as_login(&login, || {
            run(&format!("CREATE TABLE {schema}.t (x int)"));
            run(&format!("CREATE TABLE {schema}.c AS SELECT 1 AS x"));
            run(&format!("SELECT 1 AS x INTO {schema}.s"));
            for sql in [
                format!("ALTER TABLE {schema}.t DISABLE TRIGGER bi_access_quota"),
                format!("ALTER TABLE {schema}.t DISABLE TRIGGER ALL"),
                format!("ALTER TABLE {schema}.t ENABLE REPLICA TRIGGER bi_access_quota"),
                format!("DROP TRIGGER bi_access_quota ON {schema}.t"),
                format!("ALTER TRIGGER bi_access_quota ON {schema}.t RENAME TO other"),
                "SET session_replication_role = replica".to_string(),
                format!("CREATE TABLE {schema}.g (x int, y int GENERATED ALWAYS AS (x) STORED)"),
            ] {
                fails_with(&sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
        });
        for table in ["t", "c", "s"] {
            assert!(guarded(&format!("{schema}.{table}")), "{table}");
        }
    }

    #[pg_test]
    fn stored_generated_columns_made_before_block_nothing_but_new_ones_are_refused() {
        let (login, schema) = writer("q7");
        // As a table made before 0.3.0 would have it.
        run(&format!(
            "CREATE TABLE {schema}.old (x int, y int GENERATED ALWAYS AS (x * 2) STORED)"
        ));
        as_login(&login, || {
            run(&format!("CREATE TABLE {schema}.new (x int)"));
            fails_with(
                &format!(
                    "ALTER TABLE {schema}.new ADD COLUMN y int GENERATED ALWAYS AS (x) STORED"
                ),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
    }

    #[pg_test]
    fn an_index_build_or_a_rewrite_that_would_pass_the_quota_is_refused_before_it_starts() {
        let (login, schema) = writer("q3");
        run("SET bi_access.custom_schema_quota = '1MB'");
        as_login(&login, || {
            run(&format!("CREATE TABLE {schema}.t (x text)"));
            run(&format!(
                "INSERT INTO {schema}.t SELECT repeat(md5(i::text), 10) FROM generate_series(1, 1600) i"
            ));
            for sql in [
                format!("CREATE INDEX ON {schema}.t (x)"),
                format!("ALTER TABLE {schema}.t ALTER COLUMN x TYPE varchar"),
                format!("ALTER TABLE {schema}.t ADD COLUMN r float8 DEFAULT random()"),
            ] {
                fails_with(&sql, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED);
            }
            run(&format!(
                "ALTER TABLE {schema}.t ADD COLUMN n int DEFAULT 0"
            ));
        });
    }

    #[pg_test]
    fn relations_columns_and_expressions_past_their_caps_are_refused() {
        let (login, schema) = writer("q4");
        run("SET bi_access.custom_schema_max_relations = 3");
        run("SET bi_access.custom_schema_max_columns = 10");
        run("SET bi_access.custom_schema_max_expressions = 2");
        as_login(&login, || {
            run(&format!(
                "CREATE TABLE {schema}.a (x int DEFAULT 0, y int CHECK (y > 0))"
            ));
            run(&format!("CREATE TABLE {schema}.b (x int)"));
            fails_with(
                &format!("ALTER TABLE {schema}.b ADD CHECK (x > 0)"),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            fails_with(
                &format!("CREATE TABLE {schema}.c (c1 int, c2 int, c3 int, c4 int, c5 int, c6 int, c7 int, c8 int)"),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            run(&format!("CREATE INDEX ON {schema}.b (x)"));
            fails_with(
                &format!("CREATE TABLE {schema}.d (x int)"),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            // Dropping makes room.
            run(&format!("DROP TABLE {schema}.b"));
            run(&format!("CREATE TABLE {schema}.d (x int)"));
        });
    }

    #[pg_test]
    fn a_table_without_its_trigger_is_not_written_and_check_names_it_until_a_sync() {
        let (login, schema) = writer("q5");
        as_login(&login, || {
            run(&format!("CREATE TABLE {schema}.t (x int)"));
        });
        run(&format!("DROP TRIGGER bi_access_quota ON {schema}.t"));
        as_login(&login, || {
            fails_with(
                &format!("INSERT INTO {schema}.t VALUES (1)"),
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            );
        });
        let finding = format!(
            "SELECT count(*) FROM bi_access.check() WHERE object = '{schema}.t' \
             AND severity = 'error' AND fix = 'SELECT * FROM bi_access.sync_tables();'"
        );
        assert_eq!(one::<i64>(&finding), 1);
        run("SELECT * FROM bi_access.sync_tables()");
        assert_eq!(one::<i64>(&finding), 0);
        as_login(&login, || {
            run(&format!("INSERT INTO {schema}.t VALUES (1)"));
        });
    }

    #[pg_test]
    fn check_names_caps_that_drop_custom_schema_could_not_drop_and_parallel_shares() {
        let silent = |object: &str| -> i64 {
            one(&format!(
                "SELECT count(*) FROM bi_access.check() WHERE object = 'setting {object}'"
            ))
        };
        assert_eq!(silent("bi_access.custom_schema_max_relations"), 0);
        assert_eq!(silent("bi_access.max_parallel_workers"), 0);
        run("SET bi_access.custom_schema_max_relations = 100000");
        let fix: String = one("SELECT fix FROM bi_access.check() \
             WHERE object = 'setting bi_access.custom_schema_max_relations'");
        assert!(
            fix.contains("bi_access.custom_schema_max_relations")
                && fix.contains("max_locks_per_transaction"),
            "{fix}"
        );
        run("SET bi_access.custom_schema_max_relations = 0");
        assert_eq!(silent("bi_access.custom_schema_max_relations"), 1);
        run("RESET bi_access.custom_schema_max_relations");
        run("SET bi_access.max_parallel_workers = -1");
        assert_eq!(silent("bi_access.max_parallel_workers"), 1);
        run("RESET bi_access.max_parallel_workers");
        run("SET bi_access.temp_file_limit = -1");
        assert_eq!(silent("bi_access.temp_file_limit"), 1);
    }

    #[pg_test]
    fn a_credential_cannot_raise_max_parallel_workers() {
        let (login, _) = writer("q6");
        as_login(&login, || {
            assert_eq!(one::<String>("SHOW max_parallel_workers"), "4");
            fails_with(
                "SET max_parallel_workers = 8",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            run("SET max_parallel_workers = 1");
        });
    }
}
