//! Properties 4 and 5: the application is unchanged, and its own policies cannot widen a BI view.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

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
}
