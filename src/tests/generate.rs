//! The SQL surface: `generate` and what it creates (DESIGN.md, SQL surface).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    #[pg_test]
    fn generate_returns_working_connection_details() {
        let (url, jdbc, user, password, display, port, db) = Spi::connect(|client| {
            let row = client
                .select(
                    "SELECT url, jdbc_url, username, password, display_name, port, database \
                     FROM bi_access.generate('acme', org_name => 'Acme Inc')",
                    None,
                    &[],
                )
                .unwrap()
                .first();
            (
                row.get::<String>(1).unwrap().unwrap(),
                row.get::<String>(2).unwrap().unwrap(),
                row.get::<String>(3).unwrap().unwrap(),
                row.get::<String>(4).unwrap().unwrap(),
                row.get::<String>(5).unwrap().unwrap(),
                row.get::<i32>(6).unwrap().unwrap(),
                row.get::<String>(7).unwrap().unwrap(),
            )
        });
        assert!(user.starts_with("bi_") && user.len() == 3 + 16, "{user}");
        assert_eq!(password.len(), 32);
        assert_eq!(display, "BI - Acme Inc");
        assert_eq!(
            url,
            format!("postgresql://{user}:{password}@localhost:{port}/{db}?sslmode=require")
        );
        assert_eq!(
            jdbc,
            format!("jdbc:postgresql://localhost:{port}/{db}?user={user}&password={password}&sslmode=require")
        );
        assert_eq!(status(&user), "active");
        assert_eq!(events(&user), 1);
    }

    #[pg_test]
    fn generated_role_is_a_plain_read_only_login() {
        let (user, password) = generate("acme");
        let attributes: String = one(&format!(
            "SELECT concat_ws(',', rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit) \
             FROM pg_roles WHERE rolname = '{user}'"
        ));
        assert_eq!(attributes, "t,f,f,f,f,f,t");
        let member: bool = one(&format!(
            "SELECT pg_has_role('{user}', (SELECT reader_role FROM bi_access.config), 'MEMBER')"
        ));
        assert!(member);
        let reads_as_reader: bool = one(&format!(
            "SELECT pg_has_role('{user}', (SELECT reader_role FROM bi_access.config), 'USAGE')"
        ));
        assert!(reads_as_reader, "it inherits the reader group's grants");
        if crate::compat::MEMBERSHIP_WITHOUT_SET_ROLE {
            // 'SET' is a privilege pg_has_role knows from 16 on.
            let may_set_role: bool = one(&format!(
                "SELECT bool_or(pg_has_role('{user}', g, 'SET')) FROM (VALUES \
                 ((SELECT reader_role FROM bi_access.config)::text), ('bi_access_credential')) AS v(g)"
            ));
            assert!(!may_set_role, "no membership allows SET ROLE");
        }
        let config: String = one(&format!(
            "SELECT array_to_string(rolconfig, ' ') FROM pg_roles WHERE rolname = '{user}'"
        ));
        // The timeouts are the session guard's caps, read at every statement,
        // not role settings that would go stale when a cap changes.
        assert_eq!(
            config,
            "default_transaction_read_only=on search_path=public session_preload_libraries=bi_access, bi_access_gate"
        );
        let limit: i32 = one(&format!(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = '{user}'"
        ));
        assert_eq!(limit, 5, "bi_access.default_connection_limit");
        let verifier: String = one(&format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"
        ));
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!verifier.contains(&password));
    }

    #[pg_test]
    fn generate_applies_validity_and_connection_limit() {
        let user: String = one(
            "SELECT username FROM bi_access.generate('acme', valid_until => now() + interval '1 day', connection_limit => 3)",
        );
        let (limit, future) = Spi::get_two::<i32, bool>(&format!(
            "SELECT rolconnlimit, rolvaliduntil > now() FROM pg_roles WHERE rolname = '{user}'"
        ))
        .unwrap();
        assert_eq!((limit, future), (Some(3), Some(true)));
    }

    #[pg_test]
    fn generate_refuses_bad_input_with_22023() {
        fails_with(
            "SELECT bi_access.generate('')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            "SELECT bi_access.generate('  ')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        // NULL is 22004 (src/tests/inputs.rs).
        fails_with(
            "SELECT bi_access.generate(repeat('x', 257))",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            "SELECT bi_access.generate('acme', '')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            "SELECT bi_access.generate('acme', repeat('l', 64))",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            "SELECT bi_access.generate('acme', valid_until => now() - interval '1 minute')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            "SELECT bi_access.generate('acme', connection_limit => 0)",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        let left: i64 = one("SELECT count(*) FROM bi_access.credential");
        assert_eq!(left, 0, "a refused generate leaves nothing behind");
    }

    #[pg_test]
    fn generate_twice_for_one_org_and_label_is_23505() {
        generate("acme");
        let roles_before: i64 = one("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'bi\\_%'");
        fails_with(
            "SELECT bi_access.generate('acme')",
            ERRCODE_UNIQUE_VIOLATION,
        );
        let roles_after: i64 = one("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'bi\\_%'");
        assert_eq!(roles_before, roles_after, "no role without a record");
        // Another label for the same org is another credential.
        one::<String>("SELECT username FROM bi_access.generate('acme', 'finance')");
    }
}
