//! One call after a restore (DESIGN.md property 9; issue 27): `SELECT * FROM
//! bi_access.adopt(key => …)` on the restored database, whether the roles
//! came along (`pg_dumpall --roles-only`) or not. In this order, in the
//! caller's transaction, so an error leaves nothing half-done:
//!
//! 1. the key: the original's, imported before anything is sealed with the
//!    restore's own (or, without `key`, checked: 55000 if passwords are
//!    sealed with a key this database lacks);
//! 2. every current credential whose role the restore did not bring is
//!    regenerated: its role again, in the state its record says and never
//!    more (a revoked one stays revoked), with a new password (the old one
//!    lived in the role), and a read_write one's custom-schema groups;
//! 3. a sync: roles from another cluster adopted (re-marked, in this
//!    database's reader group, out of the source cluster's), grants and
//!    policies for this database's reader group.
//!
//! Each row says what was done. check() is then empty of restore findings
//! but the source cluster's reader group, whose removal it words; that fix
//! never touches a database that has bi_access (health.rs).

use pgrx::prelude::*;

use crate::entry::Call;
use crate::error::{BiError, Result};
use crate::{credentials, exposure, key, records};

type Step = (String, String, String);

fn adopt_restored(key_text: Option<&str>) -> Result<Vec<Step>> {
    key::require_superuser("adopt")?;
    let mut steps = Vec::new();
    match key_text {
        Some(text) => {
            if key::import(text)? {
                steps.push(step("key", "bi_access key", "imported"));
            }
        }
        None => {
            if let Some((_, _, finding, _)) = key::findings()?
                .into_iter()
                .find(|(severity, object, _, _)| *severity == "error" && object == "bi_access key")
            {
                return Err(BiError::KeyNeeded(finding));
            }
        }
    }
    for role in records::current_roles_without_role()? {
        credentials::regenerate(&role, None, None)?;
        steps.push(step(
            "regenerate",
            &role,
            "its role again, as its record says, with a new password: SELECT * FROM bi_access.connection_details(role)",
        ));
    }
    for (tbl, action) in exposure::sync_tables()? {
        if action.changed() {
            steps.push(step("sync", &exposure::table_name(tbl)?, action.as_str()));
        }
    }
    Ok(steps)
}

fn step(what: &str, object: &str, detail: &str) -> Step {
    (what.to_string(), object.to_string(), detail.to_string())
}

/// After a restore: the key, the roles the restore lacked, a sync (see the
/// module's header). Superusers only, as the key calls.
#[pg_extern(volatile, parallel_unsafe)]
fn adopt(
    key: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(step, String),
        name!(object, String),
        name!(detail, String),
    ),
> {
    let steps = crate::error::or_raise(Call::management("adopt").and_then(|_| adopt_restored(key)));
    TableIterator::new(steps)
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.adopt(text) IS \
     'The one call after a restore: the original key (export_key''s text), the roles a restore without roles lost, a sync; superusers only';",
    name = "adopt_comment",
    requires = [adopt]
);
