//! Property 6 and the status table: connection_details, regenerate, revoke, activate, delete, purge, by status.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

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
    fn regenerate_recreates_a_missing_role_and_the_credential_works_again() {
        for stored in ["active", "failed"] {
            let (user, _) = generate(&format!("acme-{stored}"));
            run(&format!("DROP ROLE {user}"));
            run(&format!(
                "UPDATE bi_access.credential SET status = '{stored}' WHERE role_name = '{user}'"
            ));
            assert_eq!(status(&user), "failed");
            let password: String = one(&format!(
                "SELECT password FROM bi_access.regenerate('{user}')"
            ));
            assert_eq!(status(&user), "active", "stored {stored}");
            let revealed: String = one(&format!(
                "SELECT password FROM bi_access.connection_details('{user}')"
            ));
            assert_eq!(revealed, password);
        }
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

    /// "Current" is decided once, by `Status::is_current`, and spelled in
    /// SQL twice: `records::CURRENT` and the predicate of the partial unique
    /// index `credential_live_org_label`. Both SQL forms read the stored
    /// status, where `deleting` is stored as `deleted`: every status, in its
    /// stored form, is current in all three alike.
    #[pg_test]
    fn current_means_the_same_in_rust_in_the_records_and_in_the_index() {
        use crate::status::Status;
        let index: String = one(
            "SELECT pg_catalog.pg_get_expr(indpred, indrelid) FROM pg_catalog.pg_index \
             WHERE indexrelid = 'bi_access.credential_live_org_label'::regclass",
        );
        for status in Status::ALL {
            let stored = match status {
                Status::Deleting => Status::Deleted,
                other => other,
            };
            let holds = |predicate: &str| -> bool {
                one(&format!(
                    "SELECT {predicate} FROM (SELECT '{}'::bi_access.credential_status AS status) c",
                    stored.as_str()
                ))
            };
            assert_eq!(
                holds(crate::records::CURRENT),
                status.is_current(),
                "{status}: records::CURRENT"
            );
            assert_eq!(
                holds(&index),
                status.is_current(),
                "{status}: the index's predicate {index}"
            );
        }
    }

    /// "Live" is decided once, by `Status::is_live`, and spelled in SQL
    /// twice, on the status the credentials view shows: `records::LIVE`
    /// (check()'s stale credentials) and the targets view's count.
    #[pg_test]
    fn live_means_the_same_in_rust_in_the_records_and_in_the_targets_view() {
        use crate::status::Status;
        for status in Status::ALL {
            let live: bool = one(&format!(
                "SELECT {} FROM (SELECT '{}'::bi_access.credential_status AS status) c",
                crate::records::LIVE,
                status.as_str()
            ));
            assert_eq!(live, status.is_live(), "{status}: records::LIVE");
        }
        // Every name qualified in the definition, whatever the test's
        // search_path.
        Spi::run("SET LOCAL search_path = pg_catalog").unwrap();
        let view: String = one("SELECT pg_catalog.pg_get_viewdef('bi_access.targets'::regclass)");
        let listed = Status::names(Status::is_live)
            .iter()
            .map(|name| format!("'{name}'::bi_access.credential_status"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            view.contains(&format!("c.status = ANY (ARRAY[{listed}])")),
            "the targets view counts other statuses than the live ones: {view}"
        );
    }
}
