//! Overlap rotation (issue 29): `regenerate(…, overlap)` gives the
//! credential a new role and keeps the old one logging in until
//! `previous_until`; the credentials view, the events, calls by either name,
//! retirement (by a plain regenerate, revoke, delete, a second overlap, and
//! the next management call once the overlap has ended). Logins and open
//! sessions across the overlap, on primary and replica, are
//! pg_test/test_rotation.py's.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    /// The credential's (role_name, previous_role_name), found by either.
    fn roles_of(role: &str) -> (String, Option<String>) {
        let (current, previous) = Spi::get_two::<String, String>(&format!(
            "SELECT role_name::text, previous_role_name::text FROM bi_access.credentials \
             WHERE '{role}' IN (role_name, previous_role_name)"
        ))
        .unwrap();
        (current.unwrap(), previous)
    }

    fn role_exists(role: &str) -> bool {
        one(&format!(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
        ))
    }

    fn rotate(role: &str, overlap: &str) -> String {
        one(&format!(
            "SELECT username FROM bi_access.regenerate('{role}', overlap => '{overlap}')"
        ))
    }

    fn retirements(role: &str, by: &str) -> i64 {
        one(&format!(
            "SELECT count(*) FROM bi_access.events \
             WHERE action = 'retire' AND role_name = '{role}' AND detail->>'by' = '{by}'"
        ))
    }

    #[pg_test]
    fn overlap_gives_a_new_role_and_keeps_the_old_one_until_then() {
        saas();
        let old: String = one(&format!(
            "SELECT username FROM bi_access.generate('{ACME}', 'rotation')"
        ));
        let new = rotate(&old, "1 hour");
        assert_ne!(new, old);
        assert_eq!(roles_of(&old), (new.clone(), Some(old.clone())));
        let until_is_right: bool = one(&format!(
            "SELECT previous_until = now() + interval '1 hour' FROM bi_access.credentials WHERE role_name = '{new}'"
        ));
        assert!(until_is_right);
        // The old role logs in until then (its VALID UNTIL); the new one
        // is made as generate makes one.
        let old_until_is_right: bool = one(&format!(
            "SELECT r.rolcanlogin AND r.rolvaliduntil = c.previous_until \
             FROM pg_roles r JOIN bi_access.credentials c ON c.previous_role_name = r.rolname \
             WHERE r.rolname = '{old}'"
        ));
        assert!(old_until_is_right);
        let new_is_a_credential: bool = one(&format!(
            "SELECT r.rolcanlogin AND pg_has_role(r.oid, '{}', 'MEMBER') \
                    AND pg_has_role(r.oid, 'bi_access_credential', 'MEMBER') \
             FROM pg_roles r WHERE r.rolname = '{new}'",
            reader()
        ));
        assert!(new_is_a_credential);
        assert_eq!(status(&new), "active");
        // Both see exactly the org's rows (3 of the 8).
        for role in [&old, &new] {
            let seen: i64 = as_login(role, || one("SELECT count(*) FROM public.projects"));
            assert_eq!(seen, 3, "{role}");
        }
        let detail: String = one(&format!(
            "SELECT detail->>'overlap' || ' ' || (detail->>'previous_role_name') FROM bi_access.events \
             WHERE action = 'regenerate' AND role_name = '{new}'"
        ));
        assert_eq!(detail, format!("01:00:00 {old}"));
    }

    #[pg_test]
    fn every_call_that_takes_a_role_accepts_the_previous_name() {
        let (old, _) = generate("rot-names");
        let new = rotate(&old, "1 hour");
        let shown: String = one(&format!(
            "SELECT username FROM bi_access.connection_details('{old}')"
        ));
        assert_eq!(shown, new);
        run(&format!(
            "SELECT bi_access.set_networks('{old}', ARRAY['10.0.0.0/8']::cidr[])"
        ));
        let networks: String = one(&format!(
            "SELECT allowed_networks::text FROM bi_access.credentials WHERE role_name = '{new}'"
        ));
        assert_eq!(networks, "{10.0.0.0/8}");
    }

    #[pg_test]
    fn overlap_must_be_positive_and_nothing_is_half_done() {
        let (user, _) = generate("rot-bad");
        let credential_roles = || -> i64 {
            one("SELECT count(*) FROM pg_roles WHERE pg_has_role(oid, 'bi_access_credential', 'MEMBER')")
        };
        let (roles_before, events_before) = (credential_roles(), events(&user));
        for overlap in ["0 seconds", "-1 hour"] {
            fails_with(
                &format!("SELECT bi_access.regenerate('{user}', overlap => '{overlap}')"),
                ERRCODE_INVALID_PARAMETER_VALUE,
            );
        }
        assert_eq!(roles_of(&user), (user.clone(), None));
        assert_eq!(
            (credential_roles(), events(&user)),
            (roles_before, events_before)
        );
    }

    #[pg_test]
    fn overlap_needs_a_credential_that_logs_in() {
        let (user, _) = generate("rot-revoked");
        run(&format!("SELECT bi_access.revoke('{user}')"));
        fails_with(
            &format!("SELECT bi_access.regenerate('{user}', overlap => '1 hour')"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        assert_eq!(roles_of(&user), (user.clone(), None));
    }

    #[pg_test]
    fn a_plain_regenerate_retires_the_old_role_at_once() {
        let (old, _) = generate("rot-emergency");
        let new = rotate(&old, "1 hour");
        let same: String = one(&format!(
            "SELECT username FROM bi_access.regenerate('{old}')"
        ));
        assert_eq!(same, new);
        assert!(!role_exists(&old));
        assert_eq!(roles_of(&new), (new.clone(), None));
        assert_eq!(retirements(&old, "regenerate"), 1);
    }

    #[pg_test]
    fn a_second_overlap_retires_the_first_previous_role() {
        let (first, _) = generate("rot-twice");
        let second = rotate(&first, "1 hour");
        let third = rotate(&second, "1 hour");
        assert!(!role_exists(&first));
        assert_eq!(roles_of(&third), (third.clone(), Some(second.clone())));
        assert_eq!(retirements(&first, "regenerate"), 1);
    }

    #[pg_test]
    fn revoke_acts_on_both_roles_and_activate_on_the_new_one() {
        let (old, _) = generate("rot-revoke");
        let new = rotate(&old, "1 hour");
        // By the old name: the row returned is the credential's.
        let shown: String = one(&format!(
            "SELECT role_name::text FROM bi_access.revoke('{old}')"
        ));
        assert_eq!(shown, new);
        let logins: i64 = one(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('{old}', '{new}') AND rolcanlogin"
        ));
        assert_eq!(logins, 0);
        assert_eq!(status(&new), "deactivated");
        let detail: String = one(&format!(
            "SELECT detail->>'previous_role_name' FROM bi_access.events \
             WHERE action = 'revoke' AND role_name = '{new}'"
        ));
        assert_eq!(detail, old);
        run(&format!("SELECT bi_access.activate('{old}')"));
        let logins: Vec<bool> = [&old, &new]
            .iter()
            .map(|role| {
                one(&format!(
                    "SELECT rolcanlogin FROM pg_roles WHERE rolname = '{role}'"
                ))
            })
            .collect();
        assert_eq!(logins, [false, true]);
    }

    #[pg_test]
    fn delete_and_delete_org_act_on_both_roles() {
        let (old, _) = generate("rot-delete");
        let new = rotate(&old, "1 hour");
        let shown: String = one(&format!(
            "SELECT status::text FROM bi_access.delete('{old}')"
        ));
        assert_eq!(shown, "deleted");
        assert!(!role_exists(&old));
        assert!(!role_exists(&new));
        assert_eq!(status(&new), "deleted");
        // The record keeps both names, and a later call retires nothing.
        assert_eq!(roles_of(&old), (new.clone(), Some(old.clone())));
        generate("rot-delete-later");
        assert_eq!(retirements(&old, "delete"), 1);
        assert_eq!(retirements(&old, "overlap ended"), 0);

        let (old, _) = generate("rot-delete-org");
        let new = rotate(&old, "1 hour");
        run("SELECT bi_access.delete_org('rot-delete-org')");
        assert!(!role_exists(&old));
        assert!(!role_exists(&new));
        assert_eq!(retirements(&old, "delete"), 1);
    }

    #[pg_test]
    fn the_next_management_call_retires_an_ended_overlap() {
        let (old, _) = generate("rot-ended");
        let new = rotate(&old, "10 milliseconds");
        // Ended by the clock (the transaction's start does not move).
        run("SELECT pg_sleep(0.05)");
        assert!(role_exists(&old));
        generate("rot-other");
        assert!(!role_exists(&old));
        assert_eq!(roles_of(&new), (new.clone(), None));
        assert_eq!(retirements(&old, "overlap ended"), 1);
    }

    #[pg_test]
    fn the_overlap_ends_no_later_than_the_credential_expires() {
        let old: String = one(
            "SELECT username FROM bi_access.generate('rot-expiring', valid_until => now() + interval '1 minute')",
        );
        let new = rotate(&old, "1 hour");
        let capped: bool = one(&format!(
            "SELECT previous_until = valid_until AND valid_until = now() + interval '1 minute' \
             FROM bi_access.credentials WHERE role_name = '{new}'"
        ));
        assert!(capped);
    }
}
