//! The security check, `check()`: each planted misconfiguration is a finding.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode;

    /// From 16 on bi_access's memberships are WITH SET FALSE, so one that
    /// allows SET ROLE was given by hand: check() names the credential.
    #[pg_test]
    fn check_reports_a_membership_that_allows_set_role() {
        let (acme, _) = generate(ACME);
        let about_acme = format!(
            "SELECT count(*) FROM bi_access.check() WHERE object = 'role ' || quote_ident('{acme}')"
        );
        assert_eq!(one::<i64>(&about_acme), 0, "as generated");
        if !crate::compat::MEMBERSHIP_WITHOUT_SET_ROLE {
            return; // before 16 every membership allows SET ROLE
        }
        run(&format!("GRANT {} TO {acme} WITH SET TRUE", reader()));
        assert_eq!(
            one::<i64>(&about_acme),
            1,
            "a membership that allows SET ROLE"
        );
    }

    /// A key made before any table was exposed, that no exposed org column
    /// prints, is named with the key to use; a canonical one is not.
    #[pg_test]
    fn check_names_a_current_key_that_no_exposed_org_column_prints() {
        // Labels of its own: other tests generate ACME's 'default' after
        // saas(), and taking that key before saas() here would deadlock
        // with them when tests run side by side (14, 15).
        let made = |key: &str| -> String {
            one(&format!(
                "SELECT username FROM bi_access.generate('{key}', 'check-keys')"
            ))
        };
        let (padded, acme) = (made("042"), made(ACME));
        saas();
        let found = |role: &str| -> String {
            one(&format!(
                "SELECT coalesce(string_agg(severity || '|' || finding || '|' || fix, E'\\n'), '') \
                 FROM bi_access.check() WHERE object = 'role {role}'"
            ))
        };
        assert_eq!(
            found(&padded),
            format!(
                "warning|its org key \"042\" is not an integer or a uuid as the exposed org \
                 columns print it: the credential logs in and sees no row|Pass org_id '42', the \
                 key as bigint::text or uuid::text prints it. Generate the org's credential with \
                 that key, then SELECT bi_access.delete('{padded}');"
            )
        );
        assert_eq!(found(&acme), "");
        // generate refuses that key now.
        assert_eq!(
            sqlstate("SELECT * FROM bi_access.generate('042', 'again')"),
            Some(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE)
        );
    }

    /// A clean posture reports nothing; each planted misconfiguration is
    /// reported with its fix.
    #[pg_test]
    fn check_reports_each_planted_misconfiguration() {
        run("SET LOCAL bi_access.sslmode = 'disable'");
        run("SET LOCAL password_encryption = 'scram-sha-256'");
        // The temporary-files finding weighs the limit against this machine's
        // free disk: a limit that fits any disk keeps the test off it.
        run("SET LOCAL bi_access.temp_file_limit = '1MB'");
        run("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
        let others: Vec<String> = Spi::connect(|client| {
            client
                .select(
                    "SELECT datname::text FROM pg_database \
                     WHERE datname <> current_database() AND datallowconn",
                    None,
                    &[],
                )
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap())
                .collect()
        });
        for db in others {
            run(&format!(
                "REVOKE CONNECT ON DATABASE {} FROM PUBLIC",
                pgrx::spi::quote_identifier(db)
            ));
        }
        saas();
        let (acme, _) = generate(ACME);
        // Nothing but the regime that bounds lock waits (always there) and
        // the application role under the RLS bi_access turned on (property
        // 4), with the fix that suits it: it has no RLS of its own.
        let findings = "SELECT coalesce(string_agg(severity || '|' || object || '|' || fix, E'\\n' ORDER BY object), '') \
                        FROM bi_access.check() WHERE object <> 'lock waits'";
        assert_eq!(
            one::<String>(findings),
            "warning|role test_app|ALTER ROLE test_app BYPASSRLS; -- it is under no row-level \
             security of the application's own here",
            "a clean setup reports the application role only"
        );

        run("GRANT CREATE ON SCHEMA public TO PUBLIC");
        run("CREATE FUNCTION public.definer() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'");
        // In any schema: a warning where BI roles may not use the schema.
        run("CREATE SCHEMA reporting");
        run("CREATE FUNCTION reporting.hidden() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'");
        run("GRANT CONNECT ON DATABASE template1 TO PUBLIC");
        run("CREATE VIEW public.leaky AS SELECT * FROM public.projects");
        run("GRANT SELECT ON public.leaky TO PUBLIC");
        run("DROP POLICY bi_access_guard ON public.invoices");
        run(&format!("ALTER ROLE {acme} CREATEDB"));
        run("SET LOCAL bi_access.sslmode = 'require'");
        run("SET LOCAL password_encryption = 'md5'");
        let report: String = one(findings);
        for expected in [
            "schema public|REVOKE CREATE ON SCHEMA public FROM PUBLIC;".to_string(),
            "error|function public.definer()|REVOKE EXECUTE ON FUNCTION public.definer() FROM PUBLIC;"
                .into(),
            "warning|function reporting.hidden()|REVOKE EXECUTE ON FUNCTION reporting.hidden() FROM PUBLIC;"
                .into(),
            "warning|database template1|REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;".into(),
            if crate::compat::VIEWS_HAVE_SECURITY_INVOKER {
                "public.leaky|ALTER VIEW public.leaky SET (security_invoker = true);".into()
            } else {
                format!(
                    "public.leaky|REVOKE SELECT ON public.leaky FROM PUBLIC, {};",
                    reader()
                )
            },
            "public.leaky|REVOKE SELECT ON public.leaky FROM PUBLIC;".into(),
            "public.invoices|SELECT * FROM bi_access.sync_tables();".into(),
            format!("role {acme}|ALTER ROLE {acme} NOCREATEDB;"),
            "setting ssl|".into(),
            "setting password_encryption|SET password_encryption = 'scram-sha-256';".into(),
        ] {
            assert!(
                report.contains(&expected),
                "missing {expected:?} in\n{report}"
            );
        }
    }

    #[pg_test]
    fn check_reports_every_definer_view_and_refused_org_columns() {
        run("CREATE VIEW public.quiet AS SELECT 1 AS x");
        run("CREATE TABLE public.legacy_flags (flag boolean)");
        // As an older version recorded it, before boolean org columns were refused.
        run("INSERT INTO bi_access.exposed_table (tbl, org_column) \
             VALUES ('public.legacy_flags', 'flag')");
        let report: String = one(
            "SELECT coalesce(string_agg(severity || '|' || object || '|' || fix, E'\\n' ORDER BY object), '') \
             FROM bi_access.check()",
        );
        if crate::compat::VIEWS_HAVE_SECURITY_INVOKER {
            assert!(
                report.contains(
                    "warning|public.quiet|ALTER VIEW public.quiet SET (security_invoker = true);"
                ),
                "{report}"
            );
        } else {
            // 14: every view is one; only those BI roles may read are reported.
            assert!(!report.contains("public.quiet"), "{report}");
        }
        assert!(
            report.contains(
                "error|public.legacy_flags|SELECT bi_access.hide_table('public.legacy_flags');"
            ),
            "{report}"
        );
        run(&format!("GRANT SELECT ON public.quiet TO {}", reader()));
        let readable: String =
            one("SELECT severity FROM bi_access.check() WHERE object = 'public.quiet'");
        assert_eq!(readable, "error");
    }

    /// Property 4: each application role under the RLS bi_access turned on
    /// is named with the fix that suits it; the owner's members, BYPASSRLS
    /// roles and tables whose RLS was the application's are not.
    #[pg_test]
    fn check_names_each_application_role_under_bi_access_rls_with_its_fix() {
        for sql in [
            "CREATE SCHEMA p4",
            "CREATE ROLE p4_owner NOLOGIN",
            "CREATE TABLE p4.orders (id int, org_id bigint)",
            "ALTER TABLE p4.orders OWNER TO p4_owner",
            "CREATE TABLE p4.notes (id int, org_id bigint)",
            "ALTER TABLE p4.notes ENABLE ROW LEVEL SECURITY",
            "CREATE ROLE p4_loader NOLOGIN",
            "CREATE ROLE p4_tenant_app NOLOGIN",
            "CREATE ROLE p4_member NOLOGIN IN ROLE p4_owner",
            "CREATE ROLE p4_bypass NOLOGIN BYPASSRLS",
            "GRANT SELECT, INSERT ON p4.orders TO p4_loader, p4_tenant_app, p4_member, p4_bypass",
            "GRANT SELECT ON p4.notes TO p4_loader, p4_tenant_app",
            "CREATE POLICY app_own ON p4.notes TO p4_tenant_app USING (true)",
            "SELECT bi_access.expose_table('p4.orders')",
            "SELECT bi_access.expose_table('p4.notes')",
        ] {
            run(sql);
        }
        let found: String = one(
            "SELECT coalesce(string_agg(object || '|' || finding || '|' || fix, E'\\n' ORDER BY object), '') \
             FROM bi_access.check() WHERE object LIKE 'role p4\\_%'",
        );
        let planning = if crate::guard::session::preloaded() {
            ""
        } else {
            ", and each of its statements on them plans bi_access's pass-through policy \
             (about 1.1x on a point lookup) unless its session loads bi_access"
        };
        let preload = if crate::guard::session::preloaded() {
            ""
        } else {
            "preload bi_access (see the shared_preload_libraries finding); "
        };
        let under =
            "an application role under the row-level security bi_access turned on for p4.orders: \
                     PostgreSQL refuses its COPY ... FROM them";
        assert_eq!(
            found,
            format!(
                "role p4_loader|{under}{planning}|ALTER ROLE p4_loader BYPASSRLS; -- it is under no \
                 row-level security of the application's own here\n\
                 role p4_tenant_app|{under}{planning}|It is under row-level security of the \
                 application's own here, so keep it: {preload}run COPY ... FROM as the tables' owner \
                 (GRANT the owner role to a loader role)."
            )
        );
    }
}
