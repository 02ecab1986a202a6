//! PgBouncer's `auth_query`: `bi_access.pgbouncer_auth(username)` (declared
//! in `sql/api.sql`, executable by `bi_access_pooler` only) hands PgBouncer
//! the SCRAM verifier of a live credential of this database, and nothing of
//! any other role. With one login per org a userlist file could never keep
//! up with generate/regenerate/revoke; this lookup is always in step,
//! because it reads the same catalogs the server itself authenticates with.
//!
//! It runs on every login through PgBouncer, usually on a read replica, so
//! it only reads (no event, no transaction id) and costs one indexed lookup.

use pgrx::prelude::*;

use crate::custody::{self, Custody};
use crate::error::Result;

/// The role and its verifier, only when all of these hold:
/// - this database's bi_access has a record for it whose status is live
///   (pending, active or syncing: on a standby, what the primary recorded and
///   this server replayed together with the role's password) and that has
///   not expired;
/// - the role can log in now (LOGIN, VALID UNTIL in the future), so a revoked
///   or expired credential gets no row even before its record says so;
/// - it is a member of this database's reader group and of
///   bi_access_credential, and its custody mark (src/custody.rs) says this
///   database manages it: a copy of the database (restored, or created from
///   it as a template) never vouches for the original's roles, nor does a
///   restore into another cluster before a sync adopted them;
/// - its password is a SCRAM-SHA-256 verifier (PgBouncer's
///   auth_type = scram-sha-256 needs one; bi_access never stores anything
///   else) and it has no attribute a credential never has.
const LOOKUP: &str = "\
SELECT a.rolname::pg_catalog.text, a.rolpassword \
FROM bi_access.credential c \
JOIN pg_catalog.pg_authid a ON a.rolname OPERATOR(pg_catalog.=) c.role_name \
WHERE c.role_name OPERATOR(pg_catalog.=) $1::pg_catalog.name \
  AND c.status IN ('pending', 'active', 'syncing') \
  AND (c.valid_until IS NULL OR c.valid_until OPERATOR(pg_catalog.>) pg_catalog.now()) \
  AND a.rolcanlogin \
  AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil OPERATOR(pg_catalog.>) pg_catalog.now()) \
  AND NOT (a.rolsuper OR a.rolreplication OR a.rolbypassrls OR a.rolcreaterole OR a.rolcreatedb) \
  AND pg_catalog.starts_with(a.rolpassword, 'SCRAM-SHA-256$') \
  AND EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
              JOIN pg_catalog.pg_authid g ON g.oid OPERATOR(pg_catalog.=) m.roleid \
              JOIN bi_access.config cfg ON g.rolname OPERATOR(pg_catalog.=) cfg.reader_role \
              WHERE m.member OPERATOR(pg_catalog.=) a.oid) \
  AND EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
              JOIN pg_catalog.pg_authid g ON g.oid OPERATOR(pg_catalog.=) m.roleid \
              WHERE m.member OPERATOR(pg_catalog.=) a.oid \
                AND g.rolname OPERATOR(pg_catalog.=) 'bi_access_credential')";

/// At most one (role, verifier) pair; none for anything that is not a live
/// credential of this database. Names longer than a role name can be match
/// nothing (PostgreSQL would truncate them into another role's name).
pub fn verifier(username: &str) -> Result<Option<(String, String)>> {
    if username.is_empty() || username.len() >= pg_sys::NAMEDATALEN as usize {
        return Ok(None);
    }
    Spi::connect(|client| {
        let table = client.select(LOOKUP, Some(1), &[username.into()])?;
        for row in table {
            let role = row.get::<String>(1)?;
            let secret = row.get::<String>(2)?;
            if let (Some(role), Some(secret)) = (role, secret) {
                return Ok(Some((role, secret)));
            }
        }
        Ok(None)
    })
    .and_then(|found| match found {
        Some((role, secret)) => Ok(managed_here(&role)?.then_some((role, secret))),
        None => Ok(None),
    })
}

fn managed_here(role: &str) -> Result<bool> {
    Ok(matches!(
        custody::of(role)?,
        Custody::Here | Custody::Unmarked
    ))
}
