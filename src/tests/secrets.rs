//! Property 8, secrets stay secret: no plaintext stored.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn no_plaintext_is_stored() {
        let (user, password) = generate("acme");
        let stored: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.credential \
             WHERE position(convert_to('{password}', 'UTF8') in secret) > 0 \
                OR row(credential.*)::text LIKE '%{password}%'"
        ));
        assert_eq!(stored, 0);
        let events: i64 = one(&format!(
            "SELECT count(*) FROM bi_access.event WHERE row(event.*)::text LIKE '%{password}%'"
        ));
        assert_eq!(events, 0);
        assert_eq!(status(&user), "active");
    }
}
