//! PgBouncer's `auth_query`: `bi_access.pgbouncer_auth(username)` (declared
//! in `src/api.rs`, executable by `bi_access_pooler` only) hands PgBouncer
//! the SCRAM verifier of a live credential of this database, and nothing of
//! any other role. With one login per org a userlist file could never keep
//! up with generate/regenerate/revoke; this lookup is always in step,
//! because it reads the same catalogs the server itself authenticates with.
//!
//! It runs on every login through PgBouncer, usually on a read replica, so
//! it only reads (no event, no transaction id) and costs one indexed lookup.

use pgrx::prelude::*;

use crate::custody;
use crate::error::Result;

/// At most one (role, verifier) pair; none for anything that is not a live
/// credential of this database. Names longer than a role name can be match
/// nothing (PostgreSQL would truncate them into another role's name).
pub fn verifier(username: &str) -> Result<Option<(String, String)>> {
    if username.is_empty() || username.len() >= pg_sys::NAMEDATALEN as usize {
        return Ok(None);
    }
    crate::records::live_verifier(username).and_then(|found| match found {
        Some((role, secret)) => Ok(custody::manages(&role)?.then_some((role, secret))),
        None => Ok(None),
    })
}
