//! What `\df+`, `\d+` and `\dx` say of bi_access (DESIGN.md: DBAs read the
//! product through psql): every function, view and view column commented.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;

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
}
