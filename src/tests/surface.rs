//! What `\df+`, `\d+` and `\dx` say of bi_access (DESIGN.md: DBAs read the
//! product through psql): every function, view and view column commented.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    /// Read from the catalogs, so a function or column added later without
    /// a COMMENT fails here.
    #[pg_test]
    fn every_function_view_and_view_column_has_a_comment() {
        let functions: Option<String> = Spi::get_one(
            "SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1) \
             FROM pg_proc p \
             WHERE p.pronamespace IN ('bi_access'::regnamespace, 'bi_access_internal'::regnamespace) \
               AND obj_description(p.oid, 'pg_proc') IS NULL",
        )
        .unwrap();
        assert_eq!(functions, None, "functions without a COMMENT");
        let views: Option<String> = Spi::get_one(
            "SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY 1) \
             FROM pg_class c \
             WHERE c.relkind = 'v' \
               AND c.relnamespace IN ('bi_access'::regnamespace, 'bi_access_internal'::regnamespace) \
               AND obj_description(c.oid, 'pg_class') IS NULL",
        )
        .unwrap();
        assert_eq!(views, None, "views without a COMMENT");
        let columns: Option<String> = Spi::get_one(
            "SELECT string_agg(c.oid::regclass::text || '.' || a.attname, ', ' ORDER BY 1) \
             FROM pg_class c \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.relkind = 'v' \
               AND c.relnamespace IN ('bi_access'::regnamespace, 'bi_access_internal'::regnamespace) \
               AND col_description(c.oid, a.attnum) IS NULL",
        )
        .unwrap();
        assert_eq!(columns, None, "view columns without a COMMENT");
        let counted: i64 = one(
            "SELECT count(*) FROM pg_proc \
             WHERE pronamespace IN ('bi_access'::regnamespace, 'bi_access_internal'::regnamespace)",
        );
        assert!(counted > 50, "the catalogs were read: {counted} functions");
        let extension: String =
            one("SELECT obj_description(oid, 'pg_extension') FROM pg_extension WHERE extname = 'bi_access'");
        assert!(
            !extension.contains("read-only") && extension.contains("read_write"),
            "{extension}"
        );
    }

    /// The signatures src/api.rs declares, read back from the catalog: the
    /// SQL types callers and 0.2.0 know (name, regclass, name[], cidr[]:
    /// src/sql_types.rs), their defaults and result columns.
    #[pg_test]
    fn functions_declared_in_rust_keep_their_sql_signatures() {
        let got: String = one(
            "SELECT string_agg(p.proname || '(' || pg_get_function_arguments(p.oid) || ') -> ' \
                               || pg_get_function_result(p.oid), E'\n' \
                               ORDER BY p.proname, pg_get_function_arguments(p.oid)) \
             FROM pg_proc p \
             WHERE p.pronamespace = 'bi_access'::regnamespace \
               AND p.proname IN ('generate', 'connection_details', 'regenerate', 'purge', \
                                 'expose_table', 'share_table', 'hide_table', 'unsynced_tables', \
                                 'sync_tables', 'pgbouncer_auth')",
        );
        let generate = |key: &str| {
            format!(
                "generate(org_id {key}, label text DEFAULT 'default'::text, org_name text DEFAULT NULL::text, \
                 valid_until timestamp with time zone DEFAULT NULL::timestamp with time zone, \
                 connection_limit integer DEFAULT NULL::integer, scope text DEFAULT 'read'::text, \
                 target text DEFAULT NULL::text, allowed_networks cidr[] DEFAULT NULL::cidr[]) -> bi_access.connection"
            )
        };
        let expected = [
            "connection_details(role name) -> bi_access.connection".to_string(),
            "expose_table(tbl regclass, org_column name DEFAULT NULL::name, columns name[] DEFAULT NULL::name[]) -> void"
                .to_string(),
            generate("bigint"),
            generate("text"),
            generate("uuid"),
            "hide_table(tbl regclass) -> void".to_string(),
            "pgbouncer_auth(username text) -> TABLE(usename name, passwd text)".to_string(),
            "purge(role name) -> void".to_string(),
            "regenerate(role name, valid_until timestamp with time zone DEFAULT NULL::timestamp with time zone, \
             overlap interval DEFAULT NULL::interval) -> bi_access.connection"
                .to_string(),
            "share_table(tbl regclass, columns name[] DEFAULT NULL::name[]) -> void".to_string(),
            "sync_tables() -> TABLE(tbl regclass, action text)".to_string(),
            "unsynced_tables() -> TABLE(tbl regclass, org_column name, reason text)".to_string(),
        ]
        .join("\n");
        assert_eq!(got, expected);
    }

    /// Every SECURITY DEFINER function of both schemas pins search_path,
    /// but the org lookups (src/api.rs says why), and PUBLIC executes none.
    #[pg_test]
    fn every_definer_pins_its_search_path_and_none_is_publics() {
        let unpinned: Option<String> = Spi::get_one(
            "SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1) FROM pg_proc p \
             WHERE p.pronamespace IN ('bi_access'::regnamespace, 'bi_access_internal'::regnamespace) \
               AND p.prosecdef \
               AND p.proname NOT IN ('current_org', 'current_org_bigint', 'current_org_uuid') \
               AND p.proconfig IS DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp']",
        )
        .unwrap();
        assert_eq!(
            unpinned, None,
            "SECURITY DEFINER without a pinned search_path"
        );
        let publics: Option<String> = Spi::get_one(
            "SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1) FROM pg_proc p \
             WHERE p.pronamespace IN ('bi_access'::regnamespace, 'bi_access_internal'::regnamespace) \
               AND has_function_privilege('public', p.oid, 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(publics, None, "functions PUBLIC may execute");
        let definers: i64 = one("SELECT count(*) FROM pg_proc p \
             WHERE p.pronamespace = 'bi_access'::regnamespace AND p.prosecdef");
        assert!(
            definers >= 20,
            "the catalogs were read: {definers} definers"
        );
    }

    /// A column list with a NULL element is refused before anything
    /// changes (22004 naming the list), as a NULL argument is.
    #[pg_test]
    fn a_column_list_with_a_null_element_is_refused() {
        Spi::run("CREATE TABLE public.null_listed (id int, org_id text)").unwrap();
        fails_with(
            "SELECT bi_access.expose_table('public.null_listed', 'org_id', ARRAY['id', NULL]::name[])",
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
        );
        fails_with(
            "SELECT bi_access.share_table('public.null_listed', ARRAY[NULL]::name[])",
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
        );
        let known: i64 = one(
            "SELECT count(*) FROM bi_access.exposed_table WHERE tbl = 'public.null_listed'::regclass",
        );
        assert_eq!(known, 0);
    }
}
