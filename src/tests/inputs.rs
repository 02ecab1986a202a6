//! What calls accept (issue 27): NULL where it means nothing is 22004 naming
//! the argument; names, org names and hosts are bounded (22023); display
//! names expand their placeholders once. The same on a standby and across
//! rollbacks needs real servers: pg_test/test_errors.py, test_rollback.py.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    #[pg_test]
    fn null_without_a_meaning_is_22004() {
        for sql in [
            "SELECT bi_access.generate(NULL)",
            "SELECT bi_access.generate('acme', NULL)",
            "SELECT bi_access.generate('acme', 'x', scope => NULL)",
            "SELECT bi_access.connection_details(NULL)",
            "SELECT bi_access.regenerate(NULL)",
            "SELECT bi_access.revoke(NULL)",
            "SELECT bi_access.activate(NULL)",
            "SELECT bi_access.delete(NULL)",
            "SELECT bi_access.purge(NULL)",
            "SELECT bi_access.revoke_org(NULL)",
            "SELECT bi_access.delete_org(NULL)",
            "SELECT bi_access.drop_custom_schema(NULL)",
            "SELECT bi_access.set_target(NULL, 'h', 5432)",
            "SELECT bi_access.set_target('t', NULL, 5432)",
            "SELECT bi_access.set_target('t', 'h', NULL)",
            "SELECT bi_access.drop_target(NULL)",
            "SELECT bi_access.expose_table(NULL)",
            "SELECT bi_access.hide_table(NULL)",
            "SELECT bi_access.import_key(NULL)",
        ] {
            fails_with(sql, ERRCODE_NULL_VALUE_NOT_ALLOWED);
        }
    }

    #[pg_test]
    fn names_and_hosts_are_bounded() {
        for sql in [
            "SELECT bi_access.generate('acme', 'x', org_name => repeat('n', 257))",
            "SELECT bi_access.generate('acme', 'x', org_name => E'Acme\\u202Eexe')",
            "SELECT bi_access.generate('acme', E'eu\\u200Breplica')",
            "SELECT bi_access.set_target(E'east\\u200D', 'h', 5432)",
            "SELECT bi_access.set_target('east', 'h:5432', 5432)",
            "SELECT bi_access.set_target('east', '[::1]:5432', 5432)",
        ] {
            fails_with(sql, ERRCODE_INVALID_PARAMETER_VALUE);
        }
        run("SELECT bi_access.set_target('v6', '::1', 5432)");
    }

    #[pg_test]
    fn display_names_expand_placeholders_once() {
        let name: String = one(
            "SELECT display_name FROM bi_access.generate('acme', org_name => '{org_id} {label}')",
        );
        assert_eq!(name, "BI - {org_id} {label}");
    }
}
