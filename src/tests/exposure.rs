//! Exposed tables: expose_table, hide_table and syncing, with DESIGN.md's SQLSTATEs in order.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

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

    #[pg_test]
    fn dropping_an_exposed_table_forgets_it() {
        saas();
        run("CREATE TABLE public.later (id int, org_id uuid)");
        run("SELECT bi_access.expose_table('public.later')");
        run("DROP TABLE public.later");
        let remembered: i64 = one("SELECT count(*) FROM bi_access.exposed_table");
        assert_eq!(remembered, 2, "the dropped table is forgotten");
    }

    #[pg_test]
    fn hide_table_of_a_missing_table_is_42p01() {
        fails_with(
            "SELECT bi_access.hide_table('public.nothing_here')",
            ERRCODE_UNDEFINED_TABLE,
        );
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
}
