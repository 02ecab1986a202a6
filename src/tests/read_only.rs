//! Property 3, read-only: a `read` credential writes nothing anywhere (the session guard).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    #[pg_test]
    fn credential_cannot_write() {
        saas();
        let (acme, _) = generate(ACME);
        let sequence = projects_sequence();
        let writes = [
            format!("INSERT INTO public.projects (org_id, name) VALUES ('{ACME}'::uuid, 'x')"),
            "UPDATE public.projects SET name = 'x'".to_string(),
            "DELETE FROM public.projects".to_string(),
            "TRUNCATE public.projects".to_string(),
            "CREATE TABLE public.mine (x int)".to_string(),
            format!("SELECT nextval('{sequence}')"),
            "LOCK TABLE public.projects".to_string(),
        ];
        // As the login (the session guard and the privileges).
        as_login(&acme, || {
            for sql in &writes {
                fails_with(sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
        });
        // The privileges alone (SET ROLE from a superuser session, where the
        // guard stands aside) refuse every write too, except CREATE where
        // the schema allows it to PUBLIC: PostgreSQL 14's default for
        // `public`, which check() reports.
        let public_may_create: bool =
            one("SELECT has_schema_privilege('public', 'public', 'CREATE')");
        as_role(&acme, || {
            for sql in &writes {
                if public_may_create && sql.starts_with("CREATE") {
                    continue;
                }
                fails_with(sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
        });
    }

    #[pg_test]
    fn a_credential_session_cannot_write_even_outside_read_only() {
        saas();
        let (acme, _) = generate(ACME);
        as_login(&acme, || {
            run("SET default_transaction_read_only = off");
            run("SET transaction_read_only = off");
            for sql in [
                "CREATE TEMP TABLE scratch (x int)",
                "CREATE TEMP VIEW scratch AS SELECT 1",
                "CREATE FUNCTION pg_temp.leak() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                "SELECT lo_create(0)",
                "SELECT lo_from_bytea(0, 'x')",
                "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
                "ALTER ROLE CURRENT_USER PASSWORD 'mine'",
                "LISTEN app_events",
                "DO 'BEGIN NULL; END'",
                "ANALYZE public.projects",
            ] {
                fails_with(sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
            // What BI tools do still works.
            run("SET statement_timeout = '10s'");
            run("PREPARE q AS SELECT count(*) FROM public.projects");
            assert_eq!(one::<i64>("EXECUTE q"), 3);
            run("DEALLOCATE q");
            run("SHOW search_path");
        });
        let config: String = one(&format!(
            "SELECT array_to_string(rolconfig, ' ') FROM pg_roles WHERE rolname = '{acme}'"
        ));
        assert!(
            config.contains("session_preload_libraries=bi_access, bi_access_gate"),
            "{config}"
        );
    }

    #[pg_test]
    fn the_session_guard_leaves_other_roles_alone() {
        saas();
        as_role("test_app", || {
            run("CREATE TEMP TABLE app_scratch (x int)");
            run("DROP TABLE app_scratch");
        });
    }
}
