//! Per-credential network allowlists (issue 29): generate's
//! `allowed_networks`, `set_networks`, the credentials view's column, the
//! event, and check()'s finding for PgBouncer. Logins from an address are
//! pg_test/test_networks.py's.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    fn networks_of(role: &str) -> Option<String> {
        Spi::get_one(&format!(
            "SELECT allowed_networks::text FROM bi_access.credentials WHERE role_name = '{role}'"
        ))
        .unwrap()
    }

    #[pg_test]
    fn generate_stores_the_list_and_null_means_any() {
        let user: String = one("SELECT username FROM bi_access.generate('net1', \
                 allowed_networks => ARRAY['10.1.0.0/16', '2001:db8::/32', '192.0.2.7']::cidr[])");
        assert_eq!(
            networks_of(&user).as_deref(),
            Some("{10.1.0.0/16,2001:db8::/32,192.0.2.7/32}")
        );
        let (any, _) = generate("net2");
        assert_eq!(networks_of(&any), None);
        // The bigint and uuid overloads take it too, by name and by position.
        let by_bigint: String = one(
            "SELECT username FROM bi_access.generate(4242::bigint, 'l', NULL, NULL, NULL, 'read', NULL, \
                 ARRAY['10.0.0.0/8']::cidr[])",
        );
        assert_eq!(networks_of(&by_bigint).as_deref(), Some("{10.0.0.0/8}"));
        let by_uuid: String = one(
            "SELECT username FROM bi_access.generate('00000000-0000-0000-0000-0000000000aa'::uuid, \
                 allowed_networks => ARRAY['::1/128']::cidr[])",
        );
        assert_eq!(networks_of(&by_uuid).as_deref(), Some("{::1/128}"));
        let detail: String = one(&format!(
            "SELECT detail->>'allowed_networks' FROM bi_access.events \
             WHERE role_name = '{user}' AND action = 'generate'"
        ));
        assert_eq!(
            detail,
            r#"["10.1.0.0/16", "2001:db8::/32", "192.0.2.7/32"]"#
        );
    }

    #[pg_test]
    fn generate_refuses_an_empty_list_or_a_null_network() {
        fails_with(
            "SELECT bi_access.generate('net3', allowed_networks => '{}'::cidr[])",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            "SELECT bi_access.generate('net3', allowed_networks => ARRAY[NULL]::cidr[])",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        // A host address with bits set past the mask is not a cidr.
        fails_with(
            "SELECT bi_access.generate('net3', allowed_networks => ARRAY['10.1.2.3/16']::cidr[])",
            ERRCODE_INVALID_TEXT_REPRESENTATION,
        );
        // Nothing half-done: no record, no event.
        let records: i64 = one("SELECT count(*) FROM bi_access.credentials WHERE org_id = 'net3'");
        assert_eq!(records, 0);
    }

    #[pg_test]
    fn set_networks_replaces_the_list_and_is_audited() {
        let (user, _) = generate("net4");
        let shown: Option<String> = Spi::get_one(&format!(
            "SELECT allowed_networks::text FROM bi_access.set_networks('{user}', ARRAY['198.51.100.0/24']::cidr[])"
        ))
        .unwrap();
        assert_eq!(shown.as_deref(), Some("{198.51.100.0/24}"));
        assert_eq!(networks_of(&user).as_deref(), Some("{198.51.100.0/24}"));
        let detail: String = one(&format!(
            "SELECT detail->>'allowed_networks' FROM bi_access.events \
             WHERE role_name = '{user}' AND action = 'set_networks'"
        ));
        assert_eq!(detail, r#"["198.51.100.0/24"]"#);
        // NULL: any address again.
        run(&format!("SELECT bi_access.set_networks('{user}', NULL)"));
        assert_eq!(networks_of(&user), None);
        let events: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.events WHERE role_name = '{user}' AND action = 'set_networks'"
        ));
        assert_eq!(events, 2);
        assert_eq!(status(&user), "active");
    }

    #[pg_test]
    fn set_networks_refusals_carry_their_sqlstates() {
        let (user, _) = generate("net5");
        fails_with(
            "SELECT bi_access.set_networks('nobody', NULL)",
            ERRCODE_UNDEFINED_OBJECT,
        );
        fails_with(
            &format!("SELECT bi_access.set_networks('{user}', '{{}}'::cidr[])"),
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            &format!("SELECT bi_access.set_networks('{user}', ARRAY[NULL]::cidr[])"),
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        fails_with(
            "SELECT bi_access.set_networks(NULL, NULL)",
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
        );
        // A deactivated credential is current: its list can change.
        run(&format!("SELECT bi_access.revoke('{user}')"));
        run(&format!(
            "SELECT bi_access.set_networks('{user}', ARRAY['10.0.0.0/8']::cidr[])"
        ));
        assert_eq!(status(&user), "deactivated");
        // A deleted one is not.
        run(&format!("SELECT bi_access.delete('{user}')"));
        fails_with(
            &format!("SELECT bi_access.set_networks('{user}', NULL)"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        assert_eq!(networks_of(&user).as_deref(), Some("{10.0.0.0/8}"));
    }

    /// set_networks rewrites the role's row: the message that tells its
    /// sessions (on a standby, once replayed) to read the list again.
    #[pg_test]
    fn set_networks_touches_the_role_and_keeps_its_attributes() {
        let (user, _) = generate("net6");
        let before: i32 = one(&format!(
            "SELECT rolconnlimit FROM pg_authid WHERE rolname = '{user}'"
        ));
        run(&format!(
            "SELECT bi_access.set_networks('{user}', ARRAY['10.0.0.0/8']::cidr[])"
        ));
        let after: i32 = one(&format!(
            "SELECT rolconnlimit FROM pg_authid WHERE rolname = '{user}'"
        ));
        assert_eq!(before, after, "the connection limit is unchanged");
        let written_now: bool = one(&format!(
            "SELECT xmin = pg_current_xact_id()::xid FROM pg_authid WHERE rolname = '{user}'"
        ));
        assert!(
            written_now,
            "the role's row was rewritten by this transaction"
        );
    }

    /// The view gains allowed_networks right after last_error.
    #[pg_test]
    fn the_credentials_view_shows_allowed_networks_after_last_error() {
        let position: i32 = one(
            "SELECT a.attnum::int - b.attnum::int FROM pg_attribute a, pg_attribute b \
             WHERE a.attrelid = 'bi_access.credentials'::regclass AND a.attname = 'allowed_networks' \
               AND b.attrelid = 'bi_access.credentials'::regclass AND b.attname = 'last_error'",
        );
        assert_eq!(position, 1);
        let kind: String = one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'bi_access.credentials'::regclass AND attname = 'allowed_networks'");
        assert_eq!(kind, "cidr[]");
    }

    /// check(): a credential with a list is named once bi_access_pooler has
    /// a member (PgBouncer's auth_user), not before.
    #[pg_test]
    fn check_names_allowlists_behind_pgbouncer() {
        let user: String = one(
            "SELECT username FROM bi_access.generate('net7', allowed_networks => ARRAY['10.0.0.0/8']::cidr[])",
        );
        let named = || -> i64 {
            one(&format!(
                "SELECT count(*) FROM bi_access.check() WHERE object = 'credential ' || quote_ident('{user}')"
            ))
        };
        assert_eq!(named(), 0);
        run("CREATE ROLE net_pgbouncer_auth LOGIN IN ROLE bi_access_pooler");
        assert_eq!(named(), 1);
        run(&format!("SELECT bi_access.set_networks('{user}', NULL)"));
        assert_eq!(named(), 0);
    }
}
