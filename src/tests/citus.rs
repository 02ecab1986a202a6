//! Property 14, beyond one machine: what bi_access does for a Citus cluster,
//! checked where Citus is not (pg_test/test_citus.py runs it on one): the
//! shapes Citus gives the policies on its shards, and the coordinator's
//! answer to a worker's org lookup.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    /// As Citus copies a policy to a shard: its guard PERMISSIVE, the
    /// pass-through without its sub-select (the same text on a Citus table).
    fn as_on_a_shard(reader: &str) {
        run("DROP POLICY bi_access_guard ON public.projects");
        run(&format!(
            "CREATE POLICY bi_access_guard ON public.projects FOR SELECT \
             TO {reader}, bi_access_credential USING (org_id = bi_access.current_org_uuid())"
        ));
        run("DROP POLICY bi_access_passthrough ON public.projects");
        run("CREATE POLICY bi_access_passthrough ON public.projects FOR ALL TO PUBLIC \
             USING ((pg_has_role('bi_access_credential'::name, 'MEMBER'::text))::integer <> 1) \
             WITH CHECK ((pg_has_role('bi_access_credential'::name, 'MEMBER'::text))::integer <> 1)");
        // As if the event trigger had not withdrawn the grant.
        run(&format!("GRANT SELECT ON public.projects TO {reader}"));
    }

    #[pg_test]
    fn a_shards_permissive_guard_passes_only_while_nothing_else_admits() {
        saas();
        let reader: String = one("SELECT reader_role::text FROM bi_access.config");
        as_on_a_shard(&reader);
        let (acme, _) = generate(ACME);
        as_login(&acme, || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 3);
        });
        // The application's own permissive policy would widen it: refused.
        run("CREATE POLICY app_all ON public.projects FOR SELECT TO PUBLIC USING (true)");
        run(&format!("GRANT SELECT ON public.projects TO {reader}"));
        as_login(&acme, || {
            fails_with(
                "SELECT count(*) FROM public.projects",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        // A pass-through whose condition is not bi_access's admits too.
        run("DROP POLICY app_all ON public.projects");
        run("DROP POLICY bi_access_passthrough ON public.projects");
        run(
            "CREATE POLICY bi_access_passthrough ON public.projects FOR ALL TO PUBLIC USING (true)",
        );
        run(&format!("GRANT SELECT ON public.projects TO {reader}"));
        as_login(&acme, || {
            fails_with(
                "SELECT count(*) FROM public.projects",
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
    }

    #[pg_test]
    fn the_bare_pass_through_is_decided_before_planning() {
        saas();
        let reader: String = one("SELECT reader_role::text FROM bi_access.config");
        as_on_a_shard(&reader);
        let (acme, _) = generate(ACME);
        as_role(&acme, || {
            let plan = Spi::connect(|client| {
                client
                    .select(
                        "EXPLAIN (COSTS OFF) SELECT count(*) FROM public.projects",
                        None,
                        &[],
                    )
                    .unwrap()
                    .map(|row| row.get::<String>(1).unwrap().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            assert!(!plan.contains("pg_has_role"), "{plan}");
        });
        as_role("test_app", || {
            assert_eq!(one::<i64>("SELECT count(*) FROM public.projects"), 8);
        });
    }

    #[pg_test]
    fn org_of_answers_as_the_lookup_for_superusers_only() {
        let (acme, _) = generate(ACME);
        assert_eq!(
            one::<String>(&format!("SELECT bi_access_internal.org_of('{acme}')")),
            ACME
        );
        assert!(
            Spi::get_one::<String>("SELECT bi_access_internal.org_of('postgres')")
                .unwrap()
                .is_none()
        );
        run("CREATE ROLE test_org_of NOLOGIN");
        run("GRANT USAGE ON SCHEMA bi_access_internal TO test_org_of");
        as_role("test_org_of", || {
            fails_with(
                &format!("SELECT bi_access_internal.org_of('{acme}')"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
        // Granted by mistake, it still answers superusers only.
        run("GRANT EXECUTE ON FUNCTION bi_access_internal.org_of(text) TO test_org_of");
        as_role("test_org_of", || {
            fails_with(
                &format!("SELECT bi_access_internal.org_of('{acme}')"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
    }

    #[pg_test]
    fn without_citus_the_pass_through_keeps_its_sub_select() {
        saas();
        let condition = one::<String>(
            "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy \
             WHERE polrelid = 'public.projects'::regclass AND polname = 'bi_access_passthrough'",
        );
        assert!(condition.starts_with("(( SELECT"), "{condition}");
    }
}
