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
        // bi_access.sslmode unset, on a test server with ssl = off.
        assert_eq!(
            url,
            format!("postgresql://{user}:{password}@localhost:{port}/{db}?sslmode=prefer")
        );
        assert_eq!(
            jdbc,
            format!("jdbc:postgresql://localhost:{port}/{db}?user={user}&password={password}&sslmode=prefer")
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

    fn org_of(role: &str) -> String {
        one(&format!(
            "SELECT org_id FROM bi_access.credentials WHERE role_name = '{role}'"
        ))
    }

    /// The org key as applications hold it (DESIGN.md, generate): bigint
    /// and uuid overloads beside the text one, with its parameter names and
    /// defaults; what each resolves to; each credential sees its org's rows
    /// (as_role: a backend's guard follows one login, and this test has four).
    #[pg_test]
    fn generate_takes_an_integer_or_uuid_org_key() {
        saas();
        let shapes: Vec<(String, String)> = Spi::connect(|client| {
            client
                .select(
                    "SELECT (p.proargtypes[0])::regtype::text, \
                            p.proargnames[2:]::text || ' ' || pg_get_expr(p.proargdefaults, 0) \
                     FROM pg_proc p \
                     WHERE p.pronamespace = 'bi_access'::regnamespace AND p.proname = 'generate' \
                     ORDER BY 1",
                    None,
                    &[],
                )
                .unwrap()
                .map(|row| (row.get(1).unwrap().unwrap(), row.get(2).unwrap().unwrap()))
                .collect()
        });
        let types: Vec<&str> = shapes.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["bigint", "text", "uuid"]);
        assert!(
            shapes.iter().all(|(_, rest)| *rest == shapes[0].1),
            "the same names and defaults: {shapes:?}"
        );

        let invoices_of_10: i64 = one("SELECT count(*) FROM public.invoices WHERE account = 10");
        let projects_of_acme: i64 = one(&format!(
            "SELECT count(*) FROM public.projects WHERE org_id = '{ACME}'"
        ));
        assert_eq!((invoices_of_10, projects_of_acme), (4, 3));
        for (i, key) in ["10::smallint", "10", "10::bigint"].iter().enumerate() {
            let user: String = one(&format!(
                "SELECT username FROM bi_access.generate({key}, 'int{i}')"
            ));
            assert_eq!(org_of(&user), "10", "{key}");
            let seen: i64 = as_role(&user, || one("SELECT count(*) FROM public.invoices"));
            assert_eq!(seen, invoices_of_10, "{key}");
        }
        let user: String = one(&format!(
            "SELECT username FROM bi_access.generate('{ACME}'::uuid, 'uuid')"
        ));
        assert_eq!(org_of(&user), ACME);
        let seen: i64 = as_role(&user, || one("SELECT count(*) FROM public.projects"));
        assert_eq!(seen, projects_of_acme);

        // numeric reaches none of the three.
        fails_with(
            "SELECT bi_access.generate(10::numeric, 'numeric')",
            ERRCODE_UNDEFINED_FUNCTION,
        );
        // An unknown literal resolves to text: ' 10 ' is refused as a key
        // (22023), where bigint's or uuid's input would fail with 22P02.
        fails_with(
            "SELECT bi_access.generate(' 10 ', 'unknown')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        // NULL as either type is still 22004.
        fails_with(
            "SELECT bi_access.generate(NULL::bigint)",
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
        );
        fails_with(
            "SELECT bi_access.generate(NULL::uuid)",
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
        );
    }

    /// A key that no exposed org column's type prints gives a login that
    /// sees nothing: refused with 22023 and its canonical form.
    #[pg_test]
    fn generate_refuses_an_org_key_no_exposed_column_prints() {
        run("CREATE TABLE public.accounts (id serial, org_id bigint NOT NULL)");
        run("CREATE TABLE public.sites (id serial, org_id integer NOT NULL)");
        run("SELECT bi_access.expose_table('public.accounts')");
        run("SELECT bi_access.expose_table('public.sites')");
        let integer_message = |key: &str| {
            format!(
                "org_id {key:?} matches no row of any exposed table: every exposed org column is \
                 an integer, and this key is not how PostgreSQL prints one"
            )
        };
        for (key, hint) in [
            (
                " 42 ",
                "Pass org_id '42', the key as bigint::text prints it.",
            ),
            (
                "042",
                "Pass org_id '42', the key as bigint::text prints it.",
            ),
            (
                "+42",
                "Pass org_id '42', the key as bigint::text prints it.",
            ),
            ("acme", "Pass the org key as bigint::text prints it."),
        ] {
            assert_eq!(
                error_of(&format!("SELECT bi_access.generate('{key}')")),
                Some((
                    ERRCODE_INVALID_PARAMETER_VALUE,
                    integer_message(key),
                    Some(hint.to_string())
                )),
                "{key:?}"
            );
        }
        one::<String>("SELECT username FROM bi_access.generate('42')");
        one::<String>("SELECT username FROM bi_access.generate(-7)");

        // Every exposed org column a uuid (the integer ones hidden).
        run("SELECT bi_access.hide_table('public.accounts')");
        run("SELECT bi_access.hide_table('public.sites')");
        run("CREATE TABLE public.people (id serial, org_id uuid NOT NULL)");
        run("SELECT bi_access.expose_table('public.people')");
        let upper = ACME.to_uppercase();
        for (sql, hint) in [
            (
                format!("SELECT bi_access.generate('{upper}')"),
                format!("Pass org_id '{ACME}', the key as uuid::text prints it."),
            ),
            (
                "SELECT bi_access.generate(42)".to_string(),
                "Pass the org key as uuid::text prints it.".to_string(),
            ),
        ] {
            let (code, message, got) = error_of(&sql).expect(&sql);
            assert_eq!(code, ERRCODE_INVALID_PARAMETER_VALUE, "{sql}");
            assert!(
                message.ends_with("every exposed org column is a uuid, and this key is not how PostgreSQL prints one"),
                "{message}"
            );
            assert_eq!(got.as_deref(), Some(hint.as_str()), "{sql}");
        }
        one::<String>(&format!(
            "SELECT username FROM bi_access.generate('{ACME}', 'lower')"
        ));

        // A text org column takes any key.
        run("CREATE TABLE public.notes (id serial, org_id text NOT NULL)");
        run("SELECT bi_access.expose_table('public.notes')");
        one::<String>("SELECT username FROM bi_access.generate(' 42 ')");
        let refused: i64 = one(
            "SELECT count(*) FROM bi_access.credential WHERE org_id IN (' 42 ', '042', '+42', 'acme')",
        );
        assert_eq!(
            refused, 1,
            "only the key accepted once a text column is exposed"
        );
    }

    /// bi_access.sslmode unset: `prefer` on a server with ssl = off (this
    /// test server), so the first URL connects; a value the DBA sets is
    /// kept as set, whatever the server offers (ssl = on:
    /// pg_test/test_sslmode.py).
    #[pg_test]
    fn sslmode_unset_follows_the_server_and_a_set_value_is_kept() {
        assert_eq!(one::<String>("SHOW ssl"), "off");
        assert_eq!(one::<String>("SHOW bi_access.sslmode"), "");
        let details = |label: &str| -> (String, String) {
            Spi::get_two::<String, String>(&format!(
                "SELECT sslmode, url FROM bi_access.generate('acme', '{label}')"
            ))
            .map(|(mode, url)| (mode.unwrap(), url.unwrap()))
            .unwrap()
        };
        let (mode, url) = details("unset");
        assert_eq!(mode, "prefer");
        assert!(url.ends_with("?sslmode=prefer"), "{url}");
        assert_eq!(
            one::<String>("SELECT sslmode FROM bi_access.targets WHERE name = 'default'"),
            "prefer"
        );
        for set in ["require", "disable", "verify-full"] {
            run(&format!("SET LOCAL bi_access.sslmode = '{set}'"));
            let (mode, url) = details(set);
            assert_eq!(mode, set);
            assert!(url.ends_with(&format!("?sslmode={set}")), "{url}");
        }
    }
}
