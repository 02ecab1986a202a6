//! Shared tables and column lists: share_table, expose_table's `columns`,
//! what each leaves in the catalogs, and the bi_access.tables view.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    fn registry() -> String {
        one("SELECT coalesce(string_agg(tbl::text || ':' || shared || ':' || coalesce(columns::text, '-'), ' ' \
             ORDER BY tbl::text), '') FROM bi_access.exposed_table WHERE tbl::text LIKE 'shares.%'")
    }

    /// What the reader group holds on the table: `table` (the whole of it)
    /// and the columns granted one by one.
    fn grants(table: &str) -> String {
        one(&format!(
            "SELECT (SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a \
                     WHERE c.oid = '{table}'::regclass AND a.grantee = '{r}'::regrole \
                       AND a.privilege_type = 'SELECT')::text || ' table; ' || \
                    coalesce((SELECT string_agg(att.attname, ',' ORDER BY att.attnum) \
                              FROM pg_attribute att, aclexplode(att.attacl) a \
                              WHERE att.attrelid = '{table}'::regclass AND a.grantee = '{r}'::regrole \
                                AND a.privilege_type = 'SELECT'), '-')",
            r = reader()
        ))
    }

    fn shares() {
        run("CREATE SCHEMA shares");
        run("CREATE TABLE shares.plans (id int PRIMARY KEY, name text, cost int)");
        run("CREATE TABLE shares.users (id int PRIMARY KEY, org_id bigint, email text, secret text)");
        run("CREATE TABLE shares.teams (id int PRIMARY KEY, tenant bigint, name text)");
        run("CREATE VIEW shares.by_owner AS SELECT id, name FROM shares.plans");
    }

    #[pg_test]
    fn share_table_checks_as_expose_table_then_the_org_column() {
        shares();
        for (sql, code) in [
            (
                "SELECT bi_access.share_table('shares.nothing')",
                ERRCODE_UNDEFINED_TABLE,
            ),
            (
                "SELECT bi_access.share_table('bi_access.event')",
                ERRCODE_WRONG_OBJECT_TYPE,
            ),
            (
                "SELECT bi_access.share_table('shares.by_owner')",
                ERRCODE_WRONG_OBJECT_TYPE,
            ),
            (
                "SELECT bi_access.share_table('shares.plans', '{}')",
                ERRCODE_INVALID_PARAMETER_VALUE,
            ),
            (
                "SELECT bi_access.share_table('shares.plans', ARRAY['id', 'id'])",
                ERRCODE_INVALID_PARAMETER_VALUE,
            ),
            (
                "SELECT bi_access.share_table('shares.plans', ARRAY['nope'])",
                ERRCODE_UNDEFINED_COLUMN,
            ),
            (
                "SELECT bi_access.share_table('shares.users')",
                ERRCODE_INVALID_PARAMETER_VALUE,
            ),
            (
                "SELECT bi_access.share_table(NULL)",
                ERRCODE_NULL_VALUE_NOT_ALLOWED,
            ),
        ] {
            fails_with(sql, code);
        }
        let (_, message, hint) = error_of("SELECT bi_access.share_table('shares.users')").unwrap();
        assert!(message.contains("org column \"org_id\""), "{message}");
        assert_eq!(
            hint.as_deref(),
            Some(
                "Expose it instead, so each credential reads its own org's rows: \
                  SELECT bi_access.expose_table('shares.users', 'org_id');"
            )
        );
        assert_eq!(registry(), "");
    }

    #[pg_test]
    fn a_shared_table_is_granted_whole_without_rls_and_hidden_again() {
        shares();
        run("SELECT bi_access.share_table('shares.plans')");
        assert_eq!(registry(), "shares.plans:true:-");
        assert_eq!(grants("shares.plans"), "1 table; -");
        let (rls, policies): (bool, i64) = (
            one("SELECT relrowsecurity FROM pg_class WHERE oid = 'shares.plans'::regclass"),
            one("SELECT count(*) FROM pg_policy WHERE polrelid = 'shares.plans'::regclass"),
        );
        assert!(!rls && policies == 0);
        let listed: i64 =
            one("SELECT count(*) FROM bi_access.unsynced_tables() WHERE tbl::text LIKE 'shares.%'");
        assert_eq!(listed, 0);
        run("SELECT bi_access.hide_table('shares.plans')");
        assert_eq!(grants("shares.plans"), "0 table; -");
        let kind: String = one("SELECT kind || '/' || state FROM bi_access.tables WHERE tbl = 'shares.plans'::regclass");
        assert_eq!(kind, "hidden/withdrawn");
    }

    #[pg_test]
    fn a_column_list_is_column_grants_only_and_a_sync_puts_it_back() {
        shares();
        run("SELECT bi_access.expose_table('shares.users', columns => ARRAY['email', 'id'])");
        assert_eq!(grants("shares.users"), "0 table; id,email");
        // A table-level grant to the reader group, by hand: a sync takes it
        // back to the list.
        run(&format!("GRANT SELECT ON shares.users TO {}", reader()));
        let reason: String = one(
            "SELECT reason FROM bi_access.unsynced_tables() WHERE tbl = 'shares.users'::regclass",
        );
        assert_eq!(
            reason,
            "the reader group's SELECT grant is not the table's column list"
        );
        run("SELECT * FROM bi_access.sync_tables()");
        assert_eq!(grants("shares.users"), "0 table; id,email");
        // Another list, then none: every column.
        run("SELECT bi_access.expose_table('shares.users', columns => ARRAY['org_id'])");
        assert_eq!(grants("shares.users"), "0 table; org_id");
        run("SELECT bi_access.expose_table('shares.users')");
        assert_eq!(grants("shares.users"), "1 table; -");
        let detail: String = one("SELECT detail->>'columns' FROM bi_access.event WHERE action = 'expose_table' \
                                  AND detail->>'table' = 'shares.users' ORDER BY id DESC LIMIT 1 OFFSET 1");
        assert_eq!(detail, "[\"org_id\"]");
    }

    #[pg_test]
    fn an_exposed_table_shared_instead_loses_its_policies_and_rls() {
        shares();
        run("SELECT bi_access.expose_table('shares.teams', 'tenant', ARRAY['id', 'name'])");
        let exposed: String = one("SELECT kind || ':' || org_column || ':' || columns::text \
                                   FROM bi_access.tables WHERE tbl = 'shares.teams'::regclass");
        assert_eq!(exposed, "exposed:tenant:{id,name}");
        run("SELECT bi_access.share_table('shares.teams')");
        let (rls, policies): (bool, i64) = (
            one("SELECT relrowsecurity FROM pg_class WHERE oid = 'shares.teams'::regclass"),
            one("SELECT count(*) FROM pg_policy WHERE polrelid = 'shares.teams'::regclass"),
        );
        assert!(!rls && policies == 0, "rls {rls}, {policies} policies");
        assert_eq!(grants("shares.teams"), "1 table; -");
        run("SELECT bi_access.expose_table('shares.teams', 'tenant')");
        let rls: bool =
            one("SELECT relrowsecurity FROM pg_class WHERE oid = 'shares.teams'::regclass");
        assert!(rls);
        assert_eq!(registry(), "shares.teams:false:-");
    }
}
