//! Property 10, audited: the append-only event log.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    #[pg_test]
    fn the_event_log_is_append_only() {
        generate("acme");
        fails_with(
            "DELETE FROM bi_access.event",
            ERRCODE_INSUFFICIENT_PRIVILEGE,
        );
        fails_with(
            "UPDATE bi_access.event SET actor = 'x'",
            ERRCODE_INSUFFICIENT_PRIVILEGE,
        );
        fails_with("TRUNCATE bi_access.event", ERRCODE_INSUFFICIENT_PRIVILEGE);
    }

    #[pg_test]
    fn events_name_the_application_actor() {
        run("SET LOCAL bi_access.actor = 'alice@example.com'");
        let (user, _) = generate("acme");
        let actor: String = one(&format!(
            "SELECT actor FROM bi_access.events WHERE role_name = '{user}'"
        ));
        assert_eq!(
            actor,
            format!(
                "{} (alice@example.com)",
                one::<String>("SELECT session_user::text")
            )
        );
    }
}
