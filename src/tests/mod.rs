//! `#[pg_test]`s of the SQL surface. Each runs inside a transaction that the
//! framework rolls back, as the superuser; `as_role` switches to a credential
//! (SET ROLE) for what a BI session would do. What needs a COMMIT or a real
//! login (ending sessions, the replica) is in pg_test/.

use pgrx::prelude::*;

mod read_write;

#[pg_schema]
mod tests {
    use pgrx::pg_sys::panic::CaughtError;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::{self, *};

    // ---------------------------------------------------------------- helpers

    /// Runs `sql` in a subtransaction; the SQLSTATE it failed with, if any.
    fn sqlstate(sql: &str) -> Option<PgSqlErrorCode> {
        // SAFETY: the same dance as a PL/pgSQL EXCEPTION block: a
        // subtransaction that is rolled back on error, restoring the memory
        // context and resource owner.
        unsafe {
            let context = pg_sys::CurrentMemoryContext;
            let owner = pg_sys::CurrentResourceOwner;
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            pg_sys::MemoryContextSwitchTo(context);
            let failed = PgTryBuilder::new(|| {
                Spi::run(sql).expect("SPI");
                None
            })
            .catch_others(|error| match error {
                CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                    Some(report.sql_error_code())
                }
                CaughtError::RustPanic { ereport, .. } => Some(ereport.sql_error_code()),
            })
            .execute();
            if failed.is_some() {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            } else {
                pg_sys::ReleaseCurrentSubTransaction();
            }
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            failed
        }
    }

    /// Runs `f` in a subtransaction that is then rolled back.
    fn rolled_back(f: impl FnOnce()) {
        // SAFETY: as in sqlstate(); `f` raises no error (a failed assertion
        // aborts the whole test).
        unsafe {
            let context = pg_sys::CurrentMemoryContext;
            let owner = pg_sys::CurrentResourceOwner;
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            pg_sys::MemoryContextSwitchTo(context);
            f();
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
    }

    fn fails_with(sql: &str, code: PgSqlErrorCode) {
        assert_eq!(sqlstate(sql), Some(code), "{sql}");
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// As a login would be: the session guard keys on session_user.
    fn as_login<T>(role: &str, f: impl FnOnce() -> T) -> T {
        run(&format!(
            "SET SESSION AUTHORIZATION {}",
            pgrx::spi::quote_identifier(role)
        ));
        let result = f();
        run("RESET SESSION AUTHORIZATION");
        result
    }

    fn as_role<T>(role: &str, f: impl FnOnce() -> T) -> T {
        run(&format!("SET ROLE {}", pgrx::spi::quote_identifier(role)));
        let result = f();
        run("RESET ROLE");
        result
    }

    const ACME: &str = "00000000-0000-0000-0000-00000000000a";
    const GLOBEX: &str = "00000000-0000-0000-0000-00000000000b";

    /// A small SaaS: a uuid-keyed and a bigint-keyed table (org keys '10'
    /// and '20' there), both exposed; an application role that is not the
    /// owner.
    fn saas() {
        run(
            "CREATE TABLE public.projects (id serial PRIMARY KEY, org_id uuid NOT NULL, name text)",
        );
        run("CREATE INDEX ON public.projects (org_id)");
        run(&format!(
            "INSERT INTO public.projects (org_id, name) \
             SELECT '{ACME}'::uuid, 'acme ' || i FROM generate_series(1, 3) i \
             UNION ALL SELECT '{GLOBEX}'::uuid, 'globex ' || i FROM generate_series(1, 5) i"
        ));
        run("CREATE TABLE public.invoices (id serial PRIMARY KEY, account bigint NOT NULL, amount int)");
        run("INSERT INTO public.invoices (account, amount) \
             SELECT 10, i FROM generate_series(1, 4) i \
             UNION ALL SELECT 20, i FROM generate_series(1, 2) i");
        run("CREATE ROLE test_app NOLOGIN");
        run("GRANT SELECT, INSERT, UPDATE, DELETE ON public.projects, public.invoices TO test_app");
        run("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO test_app");
        run("SELECT bi_access.expose_table('public.projects')");
        run("SELECT bi_access.expose_table('public.invoices', 'account')");
    }

    fn generate(org: &str) -> (String, String) {
        Spi::get_two::<String, String>(&format!(
            "SELECT username, password FROM bi_access.generate('{org}', org_name => 'Org {org}')"
        ))
        .map(|(user, password)| (user.unwrap(), password.unwrap()))
        .unwrap()
    }

    fn status(role: &str) -> String {
        one(&format!(
            "SELECT status::text FROM bi_access.credentials WHERE role_name = '{role}'"
        ))
    }

    fn events(role: &str) -> i64 {
        one(&format!(
            "SELECT count(*) FROM bi_access.events WHERE role_name = '{role}'"
        ))
    }

    fn reader() -> String {
        one("SELECT reader_role::text FROM bi_access.config")
    }

    // ----------------------------------------------------------- generate

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
            "default_transaction_read_only=on search_path=public session_preload_libraries=bi_access"
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
        fails_with(
            "SELECT bi_access.generate(NULL)",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
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

    // ---------------------------------------------------------- isolation

    #[pg_test]
    fn credential_sees_only_its_org_in_tables_of_any_org_column_type() {
        saas();
        let (acme, _) = generate(ACME);
        let (ten, _) = generate("10");
        as_role(&acme, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 3);
            assert_eq!(
                one::<i64>(&format!(
                    "SELECT count(*) FROM public.projects WHERE org_id <> '{ACME}'"
                )),
                0
            );
            // Its key is not a bigint: the bigint table is simply empty to it.
            assert_eq!(one::<i64>("SELECT count(*) FROM public.invoices"), 0);
        });
        as_role(&ten, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.invoices"), 4);
            assert_eq!(
                one::<i64>("SELECT sum(account)::bigint FROM public.invoices"),
                40
            );
        });
    }

    #[pg_test]
    fn credential_cannot_write() {
        saas();
        let (acme, _) = generate(ACME);
        let writes = [
            format!("INSERT INTO public.projects (org_id, name) VALUES ('{ACME}'::uuid, 'x')"),
            "UPDATE public.projects SET name = 'x'".to_string(),
            "DELETE FROM public.projects".to_string(),
            "TRUNCATE public.projects".to_string(),
            "CREATE TABLE public.mine (x int)".to_string(),
            "SELECT nextval('public.projects_id_seq')".to_string(),
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
    fn credential_cannot_reach_bi_access_itself() {
        let (acme, _) = generate("acme");
        let (other, _) = generate("other");
        as_role(&acme, || {
            for sql in [
                "SELECT * FROM bi_access.credential",
                "SELECT * FROM bi_access.credentials",
                "SELECT * FROM bi_access.events",
                "SELECT * FROM bi_access.config",
                "SELECT bi_access.generate('mine')",
            ] {
                fails_with(sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
            fails_with(
                &format!("SELECT bi_access.connection_details('{other}')"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            // Placeholders of the bi_access prefix cannot be invented (15
            // and later; on 14 one can, and bi_access reads none), and its
            // settings are not a credential's to change.
            if crate::compat::GUC_PREFIX_RESERVED {
                assert!(sqlstate("SET bi_access.org = 'other'").is_some());
            }
            fails_with(
                "SET bi_access.host = 'elsewhere'",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
    }

    #[pg_test]
    fn set_role_to_the_reader_group_sees_nothing() {
        saas();
        let (acme, _) = generate(ACME);
        let reader = reader();
        run(&format!("GRANT {reader} TO test_app"));
        as_role(&acme, || {
            run(&format!("SET ROLE {reader}"));
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 0);
        });
    }

    #[pg_test]
    fn existing_permissive_policies_cannot_widen_a_credential() {
        saas();
        run("ALTER TABLE public.projects DISABLE ROW LEVEL SECURITY");
        run("SELECT bi_access.hide_table('public.projects')");
        // The application's own RLS: everyone sees every row.
        run("ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY");
        run("CREATE POLICY app_all ON public.projects TO PUBLIC USING (true)");
        run("SELECT bi_access.expose_table('public.projects')");
        let (acme, _) = generate(ACME);
        as_role(&acme, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 3);
        });
        as_role("test_app", || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 8);
        });
    }

    #[pg_test]
    fn exposing_never_changes_what_the_application_sees_or_writes() {
        run("CREATE TABLE public.notes (id serial PRIMARY KEY, org_id text, body text)");
        run("INSERT INTO public.notes (org_id, body) SELECT 'o' || (i % 3), 'n' || i FROM generate_series(1, 30) i");
        run("CREATE ROLE test_writer NOLOGIN");
        run("GRANT SELECT, INSERT, UPDATE ON public.notes TO test_writer");
        run("GRANT USAGE ON SEQUENCE public.notes_id_seq TO test_writer");
        let snapshot = "SELECT string_agg(id || ':' || org_id || ':' || body, ',' ORDER BY id) FROM public.notes";
        let before: String = as_role("test_writer", || one(snapshot));
        run("SELECT bi_access.expose_table('public.notes')");
        generate("o1");
        let exposed: String = as_role("test_writer", || {
            run("INSERT INTO public.notes (org_id, body) VALUES ('o9', 'new')");
            run("UPDATE public.notes SET body = body WHERE org_id = 'o2'");
            one(snapshot)
        });
        assert_eq!(exposed, format!("{before},31:o9:new"));
        run("SELECT bi_access.hide_table('public.notes')");
        let hidden: String = as_role("test_writer", || one(snapshot));
        assert_eq!(hidden, exposed);
    }

    #[pg_test]
    fn org_lookup_is_an_initplan_and_uses_the_index() {
        saas();
        run("ANALYZE public.projects");
        let (acme, _) = generate(ACME);
        let plan: String = as_role(&acme, || {
            run("SET LOCAL enable_seqscan = off");
            Spi::connect(|client| {
                client
                    .select("EXPLAIN SELECT * FROM public.projects", None, &[])
                    .unwrap()
                    .map(|row| row.get::<String>(1).unwrap().unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        });
        assert!(plan.contains("InitPlan"), "{plan}");
        assert!(plan.contains("projects_org_id_idx"), "{plan}");
        assert!(!plan.contains("00000000"), "no org key in a plan: {plan}");
    }

    // ------------------------------------------------- exposure and syncing

    #[pg_test]
    fn policies_and_grants_stay_fixed_whatever_the_number_of_credentials() {
        saas();
        for org in 0..20 {
            generate(&format!("org-{org}"));
        }
        let policies: i64 =
            one("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.projects'::regclass");
        assert_eq!(policies, 3, "read, guard and pass-through");
        let bi_grantees: i64 = one("SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a \
             JOIN pg_roles r ON r.oid = a.grantee \
             WHERE c.oid = 'public.projects'::regclass AND r.rolname LIKE 'bi\\_%'");
        assert_eq!(bi_grantees, 1, "only the reader group");
        let policy_text: String = one(
            "SELECT string_agg(coalesce(qual, '') || roles::text, ' ') FROM pg_policies WHERE tablename = 'projects'",
        );
        assert!(!policy_text.contains("org-"), "{policy_text}");
    }

    #[pg_test]
    fn expose_table_refuses_what_it_cannot_expose() {
        run("CREATE TABLE public.plain (id int)");
        fails_with(
            "SELECT bi_access.expose_table('public.plain')",
            ERRCODE_UNDEFINED_COLUMN,
        );
        fails_with(
            "SELECT bi_access.expose_table('public.nothing_here')",
            ERRCODE_UNDEFINED_TABLE,
        );
        run("CREATE VIEW public.v AS SELECT 1 AS org_id");
        fails_with(
            "SELECT bi_access.expose_table('public.v')",
            ERRCODE_WRONG_OBJECT_TYPE,
        );
    }

    #[pg_test]
    fn sync_is_idempotent_and_finds_new_tables() {
        saas();
        run("CREATE TABLE public.tickets (id int, org_id uuid)");
        let unsynced: String = one(
            "SELECT string_agg(tbl::text || ' ' || reason, ';') FROM bi_access.unsynced_tables()",
        );
        assert!(unsynced.starts_with("tickets new table"), "{unsynced}");
        let first: String = one("SELECT string_agg(tbl::text || '=' || action, ',' ORDER BY tbl::text) FROM bi_access.sync_tables()");
        assert_eq!(
            first,
            "invoices=unchanged,projects=unchanged,tickets=exposed"
        );
        let second: String = one("SELECT string_agg(tbl::text || '=' || action, ',' ORDER BY tbl::text) FROM bi_access.sync_tables()");
        assert_eq!(
            second,
            "invoices=unchanged,projects=unchanged,tickets=unchanged"
        );
        let left: i64 = one("SELECT count(*) FROM bi_access.unsynced_tables()");
        assert_eq!(left, 0);
    }

    #[pg_test]
    fn sync_repairs_a_dropped_policy() {
        saas();
        run("DROP POLICY bi_access_guard ON public.projects");
        // The event trigger withdrew the grant at once; the sync restores both.
        let reason: String = one(
            "SELECT string_agg(reason, '; ' ORDER BY reason) FROM bi_access.unsynced_tables() \
                                  WHERE tbl = 'public.projects'::regclass",
        );
        assert_eq!(
            reason,
            "bi_access policies are missing or stale; the reader group has no SELECT grant"
        );
        let action: String = one(
            "SELECT action FROM bi_access.sync_tables() WHERE tbl = 'public.projects'::regclass",
        );
        assert_eq!(action, "synced");
    }

    #[pg_test]
    fn hide_table_restores_the_table_and_sticks() {
        run("CREATE TABLE public.docs (id int, org_id text)");
        run("SELECT bi_access.expose_table('public.docs')");
        run("SELECT bi_access.hide_table('public.docs')");
        let (rls, policies, acl): (Option<bool>, Option<i64>, Option<String>) = Spi::get_three(
            "SELECT relrowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid), \
                    coalesce(relacl::text, '') FROM pg_class c WHERE oid = 'public.docs'::regclass",
        )
        .unwrap();
        assert_eq!(rls, Some(false));
        assert_eq!(policies, Some(0));
        assert!(!acl.unwrap().contains("bi_access_reader"));
        let synced: i64 =
            one("SELECT count(*) FROM bi_access.sync_tables() WHERE tbl = 'public.docs'::regclass");
        assert_eq!(synced, 0, "a hidden table stays hidden");
    }

    // ---------------------------------------------------------- lifecycle

    #[pg_test]
    fn connection_details_reveals_the_same_password_and_is_audited() {
        let (user, password) = generate("acme");
        let again: String = one(&format!(
            "SELECT password FROM bi_access.connection_details('{user}')"
        ));
        assert_eq!(again, password);
        let reveals: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.events WHERE role_name = '{user}' AND action = 'reveal'"
        ));
        assert_eq!(reveals, 1);
        fails_with(
            "SELECT bi_access.connection_details('nobody')",
            ERRCODE_UNDEFINED_OBJECT,
        );
        fails_with(
            "SELECT bi_access.connection_details('postgres')",
            ERRCODE_UNDEFINED_OBJECT,
        );
    }

    #[pg_test]
    fn no_plaintext_is_stored() {
        let (user, password) = generate("acme");
        let stored: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.credential \
             WHERE position(convert_to('{password}', 'UTF8') in secret) > 0 \
                OR row(credential.*)::text LIKE '%{password}%'"
        ));
        assert_eq!(stored, 0);
        let events: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.event WHERE row(event.*)::text LIKE '%{password}%'"
        ));
        assert_eq!(events, 0);
        assert_eq!(status(&user), "active");
    }

    #[pg_test]
    fn regenerate_replaces_the_password() {
        let (user, old) = generate("acme");
        let new: String = one(&format!(
            "SELECT password FROM bi_access.regenerate('{user}')"
        ));
        assert_ne!(old, new);
        let revealed: String = one(&format!(
            "SELECT password FROM bi_access.connection_details('{user}')"
        ));
        assert_eq!(revealed, new);
        let rotated: bool = one(&format!(
            "SELECT rotated_at IS NOT NULL FROM bi_access.credentials WHERE role_name = '{user}'"
        ));
        assert!(rotated);
        fails_with(
            "SELECT bi_access.regenerate('nobody')",
            ERRCODE_UNDEFINED_OBJECT,
        );
    }

    #[pg_test]
    fn revoke_and_activate_follow_the_lifecycle() {
        let (user, _) = generate("acme");
        let revoked: String = one(&format!(
            "SELECT status::text FROM bi_access.revoke('{user}')"
        ));
        assert_eq!(revoked, "deactivated");
        assert!(!one::<bool>(&format!(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = '{user}'"
        )));
        fails_with(
            &format!("SELECT bi_access.revoke('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        fails_with(
            &format!("SELECT bi_access.connection_details('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        let active: String = one(&format!(
            "SELECT status::text FROM bi_access.activate('{user}')"
        ));
        assert_eq!(active, "active");
        assert!(one::<bool>(&format!(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = '{user}'"
        )));
        fails_with(
            &format!("SELECT bi_access.activate('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        fails_with(
            "SELECT bi_access.revoke('nobody')",
            ERRCODE_UNDEFINED_OBJECT,
        );
        fails_with(
            "SELECT bi_access.activate('nobody')",
            ERRCODE_UNDEFINED_OBJECT,
        );
        assert_eq!(events(&user), 3);
    }

    #[pg_test]
    fn delete_drops_the_role_and_keeps_the_record() {
        saas();
        let (user, _) = generate(ACME);
        // Given more by hand than bi_access gave it.
        run(&format!("GRANT SELECT ON public.invoices TO {user}"));
        run(&format!("ALTER ROLE {user} SET work_mem = '8MB'"));
        run("CREATE TABLE public.owned_by_bi (x int)");
        run(&format!("ALTER TABLE public.owned_by_bi OWNER TO {user}"));
        let deleted: String = one(&format!(
            "SELECT status::text FROM bi_access.delete('{user}')"
        ));
        assert_eq!(deleted, "deleted");
        let roles: i64 = one(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"
        ));
        assert_eq!(roles, 0);
        let owner: String = one(
            "SELECT r.rolname::text FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
             WHERE c.oid = 'public.owned_by_bi'::regclass",
        );
        assert!(
            !owner.starts_with("bi_"),
            "reassigned, not dropped: {owner}"
        );
        let reassigned: i64 = one(&format!(
            "SELECT (detail->>'objects_reassigned')::bigint FROM bi_access.events \
             WHERE role_name = '{user}' AND action = 'delete'"
        ));
        assert_eq!(reassigned, 1);
        // Retrying a delete is harmless; other calls refuse a deleted credential.
        one::<String>(&format!(
            "SELECT status::text FROM bi_access.delete('{user}')"
        ));
        fails_with(
            &format!("SELECT bi_access.regenerate('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        fails_with(
            &format!("SELECT bi_access.revoke('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        fails_with(
            &format!("SELECT bi_access.activate('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        fails_with(
            "SELECT bi_access.delete('nobody')",
            ERRCODE_UNDEFINED_OBJECT,
        );
        // The org and label are free again.
        generate(ACME);
    }

    #[pg_test]
    fn purge_removes_only_deleted_records_and_keeps_history() {
        let (user, _) = generate("acme");
        fails_with(
            &format!("SELECT bi_access.purge('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        run(&format!("SELECT bi_access.delete('{user}')"));
        run(&format!("SELECT bi_access.purge('{user}')"));
        let left: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.credentials WHERE role_name = '{user}'"
        ));
        assert_eq!(left, 0);
        let history: String = one(&format!(
            "SELECT string_agg(action, ',' ORDER BY id) FROM bi_access.events WHERE role_name = '{user}'"
        ));
        assert_eq!(history, "generate,delete,purge");
        fails_with(
            &format!("SELECT bi_access.purge('{user}')"),
            ERRCODE_UNDEFINED_OBJECT,
        );
    }

    #[pg_test]
    fn the_event_log_is_append_only() {
        generate("acme");
        fails_with(
            "DELETE FROM bi_access.event",
            ERRCODE_INSUFFICIENT_PRIVILEGE,
        );
        fails_with(
            "UPDATE bi_access.event SET actor = 'x'",
            ERRCODE_INSUFFICIENT_PRIVILEGE,
        );
        fails_with("TRUNCATE bi_access.event", ERRCODE_INSUFFICIENT_PRIVILEGE);
    }

    #[pg_test]
    fn events_name_the_application_actor() {
        run("SET LOCAL bi_access.actor = 'alice@example.com'");
        let (user, _) = generate("acme");
        let actor: String = one(&format!(
            "SELECT actor FROM bi_access.events WHERE role_name = '{user}'"
        ));
        assert_eq!(
            actor,
            format!(
                "{} (alice@example.com)",
                one::<String>("SELECT session_user::text")
            )
        );
    }

    #[pg_test]
    fn a_role_bi_access_did_not_create_is_unknown() {
        run("CREATE ROLE bi_lookalike LOGIN");
        for call in [
            "regenerate",
            "revoke",
            "activate",
            "delete",
            "purge",
            "connection_details",
        ] {
            fails_with(
                &format!("SELECT bi_access.{call}('bi_lookalike')"),
                ERRCODE_UNDEFINED_OBJECT,
            );
        }
    }

    // ------------------------------------------------ views, DDL, posture

    #[pg_test]
    fn materialized_views_cannot_be_exposed() {
        run("CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS org_id");
        fails_with(
            "SELECT bi_access.expose_table('public.mv')",
            ERRCODE_WRONG_OBJECT_TYPE,
        );
    }

    #[pg_test]
    fn security_invoker_views_are_exposed_and_filtered_by_the_tables_under_them() {
        saas();
        if !crate::compat::VIEWS_HAVE_SECURITY_INVOKER {
            return every_view_is_refused_on_14();
        }
        run(
            "CREATE VIEW public.project_names WITH (security_invoker = true) AS \
             SELECT org_id, name FROM public.projects",
        );
        run("CREATE VIEW public.leaky AS SELECT org_id, name FROM public.projects");
        let unsynced: String = one(
            "SELECT string_agg(tbl::text, ',' ORDER BY tbl::text) FROM bi_access.unsynced_tables()",
        );
        assert_eq!(
            unsynced, "project_names",
            "a definer view is never a candidate"
        );
        run("SELECT bi_access.expose_table('public.project_names')");
        let (acme, _) = generate(ACME);
        as_role(&acme, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.project_names"), 3);
            fails_with(
                "SELECT count(*) FROM public.leaky",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
    }

    /// PostgreSQL 14 has no security_invoker views: each one runs as its
    /// owner, past row-level security, so none is exposed or readable.
    fn every_view_is_refused_on_14() {
        fails_with(
            "CREATE VIEW public.project_names WITH (security_invoker = true) AS \
             SELECT org_id, name FROM public.projects",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        run("CREATE VIEW public.project_names AS SELECT org_id, name FROM public.projects");
        let unsynced: i64 = one("SELECT count(*) FROM bi_access.unsynced_tables()");
        assert_eq!(unsynced, 0, "a view is never a candidate");
        fails_with(
            "SELECT bi_access.expose_table('public.project_names')",
            ERRCODE_WRONG_OBJECT_TYPE,
        );
        // Even granted to PUBLIC, the session guard refuses it to a login.
        run("GRANT SELECT ON public.project_names TO PUBLIC");
        let (acme, _) = generate(ACME);
        as_login(&acme, || {
            fails_with(
                "SELECT count(*) FROM public.project_names",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
    }

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

    #[pg_test]
    fn dropping_an_exposed_table_forgets_it() {
        saas();
        run("CREATE TABLE public.later (id int, org_id uuid)");
        run("SELECT bi_access.expose_table('public.later')");
        run("DROP TABLE public.later");
        let remembered: i64 = one("SELECT count(*) FROM bi_access.exposed_table");
        assert_eq!(remembered, 2, "the dropped table is forgotten");
    }

    /// A clean posture reports nothing; each planted misconfiguration is
    /// reported with its fix.
    #[pg_test]
    fn check_reports_each_planted_misconfiguration() {
        run("SET LOCAL bi_access.sslmode = 'disable'");
        run("SET LOCAL password_encryption = 'scram-sha-256'");
        run("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
        let others: Vec<String> = Spi::connect(|client| {
            client
                .select(
                    "SELECT datname::text FROM pg_database \
                     WHERE datname <> current_database() AND datallowconn AND NOT datistemplate",
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
        let findings = "SELECT coalesce(string_agg(severity || '|' || object || '|' || fix, E'\\n' ORDER BY object), '') FROM bi_access.check()";
        assert_eq!(one::<String>(findings), "", "a clean setup reports nothing");

        run("GRANT CREATE ON SCHEMA public TO PUBLIC");
        run("CREATE FUNCTION public.definer() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'");
        run("CREATE VIEW public.leaky AS SELECT * FROM public.projects");
        run("GRANT SELECT ON public.leaky TO PUBLIC");
        run("DROP POLICY bi_access_guard ON public.invoices");
        run(&format!("ALTER ROLE {acme} CREATEDB"));
        run("SET LOCAL bi_access.sslmode = 'require'");
        run("SET LOCAL password_encryption = 'md5'");
        let report: String = one(findings);
        for expected in [
            "schema public|REVOKE CREATE ON SCHEMA public FROM PUBLIC;".to_string(),
            "function public.definer()|REVOKE EXECUTE ON FUNCTION public.definer() FROM PUBLIC;"
                .into(),
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
            format!("role {acme}|ALTER ROLE {acme} NOSUPERUSER"),
            "setting ssl|".into(),
            "setting password_encryption|ALTER SYSTEM SET password_encryption".into(),
        ] {
            assert!(
                report.contains(&expected),
                "missing {expected:?} in\n{report}"
            );
        }
    }

    #[pg_test]
    fn a_credential_whose_role_vanished_is_failed_and_generate_replaces_it() {
        let (user, _) = generate("acme");
        run(&format!("DROP ROLE {user}"));
        assert_eq!(status(&user), "failed");
        let error: String = one(&format!(
            "SELECT last_error FROM bi_access.credentials WHERE role_name = '{user}'"
        ));
        assert!(error.contains("does not exist"), "{error}");
        fails_with(
            &format!("SELECT bi_access.revoke('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        let (replacement, _) = generate("acme");
        assert_ne!(replacement, user);
        let left: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.credentials WHERE role_name = '{user}'"
        ));
        assert_eq!(left, 0, "the failed record was replaced");
        let replaced: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.events WHERE role_name = '{user}' AND action = 'replace_failed'"
        ));
        assert_eq!(replaced, 1);
    }

    #[pg_test]
    fn a_deactivated_credential_can_be_rotated_and_deleted_but_not_revealed() {
        let (user, old) = generate("acme");
        run(&format!("SELECT bi_access.revoke('{user}')"));
        let new: String = one(&format!(
            "SELECT password FROM bi_access.regenerate('{user}')"
        ));
        assert_ne!(new, old);
        assert_eq!(
            status(&user),
            "deactivated",
            "rotation does not re-activate"
        );
        assert!(!one::<bool>(&format!(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = '{user}'"
        )));
        let deleted: String = one(&format!(
            "SELECT status::text FROM bi_access.delete('{user}')"
        ));
        assert_eq!(deleted, "deleted");
        fails_with(
            &format!("SELECT bi_access.connection_details('{user}')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
    }

    #[pg_test]
    fn hide_table_of_a_missing_table_is_42p01() {
        fails_with(
            "SELECT bi_access.hide_table('public.nothing_here')",
            ERRCODE_UNDEFINED_TABLE,
        );
    }

    // ------------------------------------------------------- session guard

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
            config.contains("session_preload_libraries=bi_access"),
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

    // -------------------------------------------------------- column types

    #[pg_test]
    fn citext_org_columns_compare_as_citext_and_use_their_index() {
        run("CREATE EXTENSION IF NOT EXISTS citext");
        run("CREATE TABLE public.accounts (id serial PRIMARY KEY, org_id public.citext, n int)");
        run("INSERT INTO public.accounts (org_id, n) \
             SELECT CASE WHEN i % 4 = 0 THEN 'Acme' ELSE 'org' || i END, i FROM generate_series(1, 2000) i");
        run("CREATE INDEX accounts_org ON public.accounts (org_id)");
        run("ANALYZE public.accounts");
        run("SELECT bi_access.expose_table('public.accounts')");
        let (user, _) = generate("ACME");
        as_role(&user, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.accounts"), 500);
            run("SET LOCAL enable_seqscan = off");
            let plan: String = Spi::connect(|client| {
                client
                    .select("EXPLAIN SELECT * FROM public.accounts", None, &[])
                    .unwrap()
                    .map(|row| row.get::<String>(1).unwrap().unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            assert!(plan.contains("accounts_org"), "{plan}");
        });
    }

    #[pg_test]
    fn dormant_application_policies_are_never_switched_on() {
        run("CREATE TABLE public.orders (id int, org_id text)");
        run("INSERT INTO public.orders SELECT i, 'o' || (i % 3) FROM generate_series(1, 9) i");
        run("CREATE POLICY only_o1 ON public.orders AS RESTRICTIVE USING (org_id = 'o1')");
        fails_with(
            "SELECT bi_access.expose_table('public.orders')",
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        let reason: String = one(
            "SELECT reason FROM bi_access.unsynced_tables() WHERE tbl = 'public.orders'::regclass",
        );
        assert!(reason.contains("not exposable"), "{reason}");
        let exposed: i64 = one(
            "SELECT count(*) FROM bi_access.sync_tables() WHERE tbl = 'public.orders'::regclass",
        );
        assert_eq!(exposed, 0);
        let rls: bool =
            one("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.orders'::regclass");
        assert!(!rls, "RLS stays off");
    }

    // -------------------------------------- fail-closed isolation (property 2)

    /// A table that is not exposed, granted to PUBLIC (a migration's doing).
    fn public_table() {
        run("CREATE TABLE public.leaky (id int, org_id uuid)");
        run(&format!(
            "INSERT INTO public.leaky VALUES (1, '{ACME}'), (2, '{GLOBEX}')"
        ));
        run("GRANT SELECT ON public.leaky TO PUBLIC");
        run("SELECT bi_access.hide_table('public.leaky')");
    }

    #[pg_test]
    fn the_guard_reads_exposed_tables_and_catalogs_only() {
        saas();
        public_table();
        run("CREATE VIEW public.leaky_view AS SELECT * FROM public.projects");
        run("GRANT SELECT ON public.leaky_view TO PUBLIC");
        run("CREATE TABLE public.part (org_id uuid, n int) PARTITION BY LIST (org_id)");
        run(&format!(
            "CREATE TABLE public.part_acme PARTITION OF public.part FOR VALUES IN ('{ACME}')"
        ));
        run("SELECT bi_access.expose_table('public.part')");
        run("GRANT SELECT ON public.part_acme TO PUBLIC");
        let (acme, _) = generate(ACME);
        as_login(&acme, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 3);
            assert_eq!(one::<i64>("SELECT count(*) FROM public.part"), 0);
            assert!(one::<i64>("SELECT count(*) FROM pg_catalog.pg_class") > 0);
            assert!(one::<i64>("SELECT count(*) FROM information_schema.tables") > 0);
            for sql in [
                "SELECT count(*) FROM public.leaky",
                "SELECT count(*) FROM public.leaky_view",
                "SELECT count(*) FROM public.part_acme",
                "SELECT count(*) FROM public.projects_id_seq",
                "WITH x AS (SELECT * FROM public.leaky) SELECT count(*) FROM x",
            ] {
                fails_with(sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
        });
    }

    #[pg_test]
    fn a_weakened_table_reads_nothing_even_with_its_grant() {
        saas();
        let (acme, _) = generate(ACME);
        let reader: String = one("SELECT reader_role::text FROM bi_access.config");
        for weakening in [
            "ALTER TABLE public.projects DISABLE ROW LEVEL SECURITY",
            "DROP POLICY bi_access_guard ON public.projects",
            "DROP POLICY bi_access_read ON public.projects",
            // A look-alike that compares nothing.
            "DROP POLICY bi_access_guard ON public.projects; \
             CREATE POLICY bi_access_guard ON public.projects AS RESTRICTIVE FOR SELECT \
             TO bi_access_credential USING (true)",
        ] {
            rolled_back(|| {
                run(weakening);
                // As if the event trigger had not withdrawn the grant.
                run(&format!("GRANT SELECT ON public.projects TO {reader}"));
                as_login(&acme, || {
                    fails_with(
                        "SELECT count(*) FROM public.projects",
                        ERRCODE_INSUFFICIENT_PRIVILEGE,
                    );
                });
            });
        }
        as_login(&acme, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 3);
        });
    }

    #[pg_test]
    fn a_weakening_withdraws_the_grant_and_a_sync_restores_it() {
        saas();
        run("ALTER TABLE public.projects DISABLE ROW LEVEL SECURITY");
        let reader: String = one("SELECT reader_role::text FROM bi_access.config");
        let granted =
            format!("SELECT has_table_privilege('{reader}', 'public.projects', 'SELECT')");
        assert!(!one::<bool>(&granted));
        let withdrawn: i64 = one(
            "SELECT count(*) FROM bi_access.events WHERE action = 'withdraw' \
             AND detail->>'table' = 'public.projects'",
        );
        assert_eq!(withdrawn, 1);
        run("SELECT * FROM bi_access.sync_tables()");
        assert!(one::<bool>(&granted));
        let rls: bool =
            one("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.projects'::regclass");
        assert!(rls);
    }

    #[pg_test]
    fn set_role_changes_nothing_the_guard_refuses() {
        saas();
        let (acme, _) = generate(ACME);
        let reader: String = one("SELECT reader_role::text FROM bi_access.config");
        for group in ["bi_access_credential", reader.as_str()] {
            as_login(&acme, || {
                let set_role = format!("SET ROLE {}", pgrx::spi::quote_identifier(group));
                if crate::compat::MEMBERSHIP_WITHOUT_SET_ROLE {
                    // 16 and later: the memberships are WITH SET FALSE, so
                    // the login stays itself; the guard must hold all the same.
                    fails_with(&set_role, ERRCODE_INSUFFICIENT_PRIVILEGE);
                } else {
                    run(&set_role);
                }
                run("SET transaction_read_only = off");
                for sql in [
                    "CREATE TEMP TABLE scratch (x int)",
                    "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                    "LISTEN app_events",
                    "NOTIFY app_events",
                    "SELECT lo_from_bytea(0, 'x')",
                    "SELECT pg_notify('app_events', 'forged')",
                    "SELECT pg_advisory_lock(1)",
                    "SELECT pg_try_advisory_xact_lock(1)",
                    "SELECT nextval(c.oid) FROM pg_catalog.pg_class c WHERE c.relname = 'projects_id_seq'",
                ] {
                    fails_with(sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
                }
                run("RESET ROLE");
            });
        }
    }

    #[pg_test]
    fn every_spelling_of_dropping_bi_access_is_refused_while_credentials_exist() {
        saas();
        generate(ACME);
        for sql in [
            "DROP EXTENSION bi_access CASCADE",
            "DROP /* x */ EXTENSION IF EXISTS bi_access CASCADE",
            "DROP EXTENSION U&\"bi_\\0061ccess\" CASCADE",
            "DROP SCHEMA bi_access CASCADE",
            "DROP SCHEMA public, \"bi_access_internal\" CASCADE",
            "DO $$ BEGIN EXECUTE format('DROP EXTENSION %I CASCADE', 'bi_' || 'access'); END $$",
            "DROP OWNED BY CURRENT_USER",
            "ALTER EXTENSION bi_access DROP FUNCTION bi_access.check()",
        ] {
            fails_with(sql, ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST);
        }
        let enabled: String = one(
            "SELECT evtenabled::text FROM pg_event_trigger WHERE evtname = 'bi_access_drop_guard'",
        );
        assert_eq!(
            enabled, "A",
            "fires under session_replication_role = replica too"
        );
    }

    #[pg_test]
    fn the_pass_through_policy_admits_every_login_but_credentials() {
        saas();
        let expression: String = one("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy \
             WHERE polrelid = 'public.projects'::regclass AND polname = 'bi_access_passthrough'");
        assert!(expression.contains("pg_has_role"), "{expression}");
        assert!(
            !expression.contains("bi_access."),
            "depends on no bi_access object: {expression}"
        );
        as_role("test_app", || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 8);
            // Computed once (an InitPlan), compared so that row estimates
            // stay as they were (see policies::NOT_A_CREDENTIAL).
            let plan: Vec<String> = Spi::connect(|client| {
                client
                    .select(
                        "EXPLAIN SELECT * FROM public.projects WHERE id = 1",
                        None,
                        &[],
                    )
                    .expect("EXPLAIN")
                    .map(|row| row.get::<String>(1).ok().flatten().unwrap_or_default())
                    .collect()
            });
            assert!(
                plan.iter().any(|line| line.contains("InitPlan"))
                    && plan.iter().any(|line| line.contains("<> 1)"))
                    && !plan.iter().any(|line| line.contains("Filter: (NOT")),
                "{plan:?}"
            );
        });
    }

    // ------------------------- least privilege of management, org key matching

    // These tests run concurrently with the others in one database: each
    // works in a schema and with roles of its own, so none waits for
    // another's uncommitted catalog rows (the `public` schema's ACL row
    // included, which the first exposure there updates).

    /// A non-superuser admin (a member of bi_access_admin) that owns nothing.
    fn plain_admin(name: &str) {
        run(&format!(
            "CREATE ROLE {name} NOLOGIN IN ROLE bi_access_admin"
        ));
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

    #[pg_test]
    fn bi_access_and_system_relations_are_refused_with_42809() {
        plain_admin("test_mgmt_system");
        as_role("test_mgmt_system", || {
            for relation in [
                "bi_access.credential",
                "bi_access.credentials",
                "bi_access.exposed_table",
                "pg_catalog.pg_class",
                "pg_catalog.pg_authid",
                "information_schema.tables",
            ] {
                fails_with(
                    &format!("SELECT bi_access.expose_table('{relation}', 'oid')"),
                    ERRCODE_WRONG_OBJECT_TYPE,
                );
                fails_with(
                    &format!("SELECT bi_access.hide_table('{relation}')"),
                    ERRCODE_WRONG_OBJECT_TYPE,
                );
            }
        });
        // Refused to a superuser too: no one exposes bi_access's own records.
        fails_with(
            "SELECT bi_access.expose_table('bi_access.credential', 'org_id')",
            ERRCODE_WRONG_OBJECT_TYPE,
        );
        fails_with(
            "SELECT bi_access.hide_table('pg_class')",
            ERRCODE_WRONG_OBJECT_TYPE,
        );
        let toast: String = one(
            "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'bi_access.credential'::regclass",
        );
        fails_with(
            &format!("SELECT bi_access.expose_table('{toast}', 'chunk_id')"),
            ERRCODE_WRONG_OBJECT_TYPE,
        );
    }

    #[pg_test]
    fn wrong_kinds_of_relation_are_refused_with_42809() {
        run("CREATE SCHEMA t_kinds");
        run("CREATE MATERIALIZED VIEW t_kinds.mv_org AS SELECT 1::bigint AS org_id");
        run("CREATE VIEW t_kinds.definer_org AS SELECT 1::bigint AS org_id");
        run("CREATE SEQUENCE t_kinds.seq_org");
        run("CREATE TABLE t_kinds.has_index (org_id bigint PRIMARY KEY)");
        run("CREATE FOREIGN DATA WRAPPER test_kinds_fdw");
        run("CREATE SERVER test_kinds_server FOREIGN DATA WRAPPER test_kinds_fdw");
        run("CREATE FOREIGN TABLE t_kinds.remote (org_id bigint) SERVER test_kinds_server");
        for relation in [
            "t_kinds.mv_org",
            "t_kinds.definer_org",
            "t_kinds.seq_org",
            "t_kinds.has_index_pkey",
            "t_kinds.remote",
        ] {
            fails_with(
                &format!("SELECT bi_access.expose_table('{relation}')"),
                ERRCODE_WRONG_OBJECT_TYPE,
            );
        }
    }

    #[pg_test]
    fn the_sqlstates_come_in_designs_order() {
        plain_admin("test_mgmt_order");
        run("CREATE SCHEMA t_order");
        run("GRANT USAGE ON SCHEMA t_order TO test_mgmt_order");
        run("CREATE TABLE t_order.flags (id int, flag boolean, org_id bigint)");
        // 42P01 first: a table given by an OID that names nothing.
        as_role("test_mgmt_order", || {
            fails_with(
                "SELECT bi_access.expose_table(4294967000)",
                ERRCODE_UNDEFINED_TABLE,
            );
            fails_with(
                "SELECT bi_access.hide_table(4294967000)",
                ERRCODE_UNDEFINED_TABLE,
            );
            // 42809 before 42501: the admin may not read pg_authid either.
            fails_with(
                "SELECT bi_access.expose_table('pg_authid', 'no_such_column')",
                ERRCODE_WRONG_OBJECT_TYPE,
            );
            // 42501 before 42703 and 42804: nothing about the table's columns leaks.
            fails_with(
                "SELECT bi_access.expose_table('t_order.flags', 'no_such_column')",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            fails_with(
                "SELECT bi_access.expose_table('t_order.flags', 'flag')",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        fails_with(
            "SELECT bi_access.expose_table('t_order.flags', 'no_such_column')",
            ERRCODE_UNDEFINED_COLUMN,
        );
        fails_with(
            "SELECT bi_access.expose_table('t_order.flags', 'flag')",
            ERRCODE_DATATYPE_MISMATCH,
        );
    }

    #[pg_test]
    fn org_columns_of_a_refused_type_are_42804() {
        run("CREATE SCHEMA t_odd");
        run("CREATE TYPE t_odd.tier AS ENUM ('1', '2')");
        run("CREATE DOMAIN t_odd.org_text AS text CHECK (VALUE <> 'x')");
        run(
            "CREATE TABLE t_odd.odd (flag boolean, amount numeric, tier t_odd.tier, \
             code char(4), domained t_odd.org_text, stamp timestamptz, \
             c_text text COLLATE \"C\", ok_text text, ok_varchar varchar(8), \
             ok_small smallint, ok_int integer, ok_big bigint, ok_uuid uuid)",
        );
        for column in [
            "flag", "amount", "tier", "code", "domained", "stamp", "c_text",
        ] {
            fails_with(
                &format!("SELECT bi_access.expose_table('t_odd.odd', '{column}')"),
                ERRCODE_DATATYPE_MISMATCH,
            );
        }
        for column in [
            "ok_text",
            "ok_varchar",
            "ok_small",
            "ok_int",
            "ok_big",
            "ok_uuid",
        ] {
            assert_eq!(
                sqlstate(&format!(
                    "SELECT bi_access.expose_table('t_odd.odd', '{column}')"
                )),
                None,
                "{column}"
            );
        }
    }

    #[pg_test]
    fn hide_table_of_a_table_bi_access_does_not_know_is_55000() {
        run("CREATE TABLE public.unrelated (id int)");
        fails_with(
            "SELECT bi_access.hide_table('public.unrelated')",
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        // A new table (exposed schema, org column) may be hidden before any
        // sync exposes it, and hiding twice changes nothing.
        run("CREATE TABLE public.newcomer (id int, org_id bigint)");
        run("SELECT bi_access.hide_table('public.newcomer')");
        run("SELECT bi_access.hide_table('public.newcomer')");
        let hidden: i64 = one("SELECT count(*) FROM bi_access.exposed_table \
             WHERE tbl = 'public.newcomer'::regclass AND hidden");
        assert_eq!(hidden, 1);
    }

    #[pg_test]
    fn an_exposure_of_a_refused_schema_made_earlier_can_still_be_hidden() {
        // As an older version could have recorded it.
        run("CREATE SCHEMA t_moved");
        run("CREATE TABLE t_moved.later_moved (org_id bigint)");
        run("SELECT bi_access.expose_table('t_moved.later_moved')");
        run("ALTER TABLE t_moved.later_moved SET SCHEMA bi_access_internal");
        run("SELECT bi_access.hide_table('bi_access_internal.later_moved')");
        let grants: i64 = one(&format!(
            "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a \
             WHERE c.oid = 'bi_access_internal.later_moved'::regclass \
               AND a.grantee = '{}'::regrole",
            reader()
        ));
        assert_eq!(grants, 0, "its grant is withdrawn");
    }

    /// Org key matching (DESIGN.md): a key reads the rows whose org value
    /// cast to text equals it, exactly; any other key reads nothing, and no
    /// key raises. One table per accepted column type, one credential per
    /// key, which reads every table (pg_test/test_management.py has the full
    /// table of keys; this one stays short, as the transaction holds its
    /// locks while the other tests run).
    #[pg_test]
    fn org_keys_match_their_exact_text_form_per_column_type() {
        run("CREATE EXTENSION IF NOT EXISTS citext");
        run("CREATE SCHEMA t_keys");
        let tables: [(&str, &str, &[&str]); 7] = [
            ("bigint", "bigint", &["42", "42", "-7", "0"]),
            ("integer", "integer", &["42", "42", "-7", "0"]),
            ("smallint", "smallint", &["42", "42", "-7", "0"]),
            ("text", "text", &["acme", "acme", "42", "Globex"]),
            ("varchar", "varchar(8)", &["acme", "acme", "42", "Globex"]),
            ("uuid", "uuid", &[ACME, ACME, GLOBEX]),
            ("citext", "public.citext", &["Acme", "acme", "Globex"]),
        ];
        for (name, column_type, values) in tables {
            run(&format!(
                "CREATE TABLE t_keys.{name} (id serial, org_id {column_type})"
            ));
            for value in values {
                run(&format!(
                    "INSERT INTO t_keys.{name} (org_id) VALUES ({})",
                    pgrx::spi::quote_literal(value)
                ));
            }
            run(&format!("SELECT bi_access.expose_table('t_keys.{name}')"));
        }
        let upper = ACME.to_uppercase();
        let braces = format!("{{{ACME}}}");
        // key -> rows it reads in bigint, integer, smallint, text, varchar,
        // uuid, citext.
        let expected: [(&str, [i64; 7]); 14] = [
            ("42", [2, 2, 2, 1, 1, 0, 0]),
            ("-7", [1, 1, 1, 0, 0, 0, 0]),
            ("0", [1, 1, 1, 0, 0, 0, 0]),
            (" 42 ", [0; 7]),
            ("+42", [0; 7]),
            ("042", [0; 7]),
            ("-0", [0; 7]),
            ("99999999999999999999", [0; 7]),
            ("acme", [0, 0, 0, 2, 2, 0, 2]),
            ("ACME", [0, 0, 0, 0, 0, 0, 2]),
            (" acme", [0; 7]),
            (ACME, [0, 0, 0, 0, 0, 2, 0]),
            (&upper, [0; 7]),
            (&braces, [0; 7]),
        ];
        for (key, rows) in expected {
            let (user, _) = Spi::get_two::<String, String>(&format!(
                "SELECT username, password FROM bi_access.generate({}, 'keys')",
                pgrx::spi::quote_literal(key)
            ))
            .map(|(user, password)| (user.unwrap(), password.unwrap()))
            .unwrap();
            let seen: Vec<i64> = as_role(&user, || {
                tables
                    .iter()
                    .map(|(name, _, _)| {
                        let sql = format!("SELECT count(*) FROM t_keys.{name}");
                        assert_eq!(sqlstate(&sql), None, "key {key:?} raised on {name}");
                        one::<i64>(&sql)
                    })
                    .collect()
            });
            assert_eq!(seen, rows.to_vec(), "key {key:?}");
        }
    }

    #[pg_test]
    fn a_key_beyond_a_small_columns_range_reads_nothing() {
        run("CREATE SCHEMA t_small");
        run("CREATE TABLE t_small.keys (org_id smallint)");
        run("INSERT INTO t_small.keys VALUES (1), (-32768)");
        run("SELECT bi_access.expose_table('t_small.keys')");
        for (key, rows) in [
            ("1", 1),
            ("-32768", 1),
            ("70000", 0),
            ("-9223372036854775808", 0),
        ] {
            let user: String = one(&format!(
                "SELECT username FROM bi_access.generate('{key}', 'small')"
            ));
            let seen = as_role(&user, || {
                assert_eq!(sqlstate("SELECT count(*) FROM t_small.keys"), None, "{key}");
                one::<i64>("SELECT count(*) FROM t_small.keys")
            });
            assert_eq!(seen, rows, "key {key:?}");
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
}
