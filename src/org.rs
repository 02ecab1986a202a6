//! The org lookup every bi_access policy calls: the org key of the role
//! running the query. It is keyed on the role, never on a setting a session
//! can change, and typed per org column so the comparison uses the column's
//! index; a key that is not a valid value of the column's type matches no
//! row instead of failing the query.
//!
//! The answer is cached per backend. A role's org key never changes; what
//! makes it stop answering (revoke's NOLOGIN, delete's DROP ROLE) changes
//! pg_authid, and any change there, committed anywhere (replayed, on a
//! standby) or made earlier in this transaction, clears the cache through a
//! syscache callback before the next statement reads it.

use std::cell::RefCell;

use pgrx::prelude::*;

use crate::db;
use crate::error::Result;

thread_local! {
    /// (outer user, its org key or None).
    static CACHE: RefCell<Option<(pg_sys::Oid, Option<String>)>> = const { RefCell::new(None) };
}

pub fn init() {
    // SAFETY: registers a callback for the life of the backend; called once
    // from _PG_init.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            Some(forget),
            pg_sys::Datum::from(0),
        );
    }
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    CACHE.with(|cache| cache.replace(None));
}

/// The outer user is the login, or the role it SET ROLE to; inside this
/// SECURITY DEFINER function current_user would be the extension's owner.
pub fn current_org() -> Result<Option<String>> {
    if crate::guard::session_is_credential() && !crate::guard::held_from_the_start() {
        // A credential session without its session guard (its role lost the
        // session_preload_libraries setting): fail closed.
        return Ok(None);
    }
    // SAFETY: a read of backend-local state.
    let user = unsafe { pg_sys::GetOuterUserId() };
    let cached = CACHE.with(|cache| match &*cache.borrow() {
        Some((cached_user, org)) if *cached_user == user => Some(org.clone()),
        _ => None,
    });
    if let Some(org) = cached {
        return Ok(org);
    }
    let org = look_up(user)?;
    CACHE.with(|cache| cache.replace(Some((user, org.clone()))));
    Ok(org)
}

fn look_up(user: pg_sys::Oid) -> Result<Option<String>> {
    // SAFETY: a syscache lookup; NULL for a role that does not exist.
    let role = unsafe {
        let name = pg_sys::GetUserNameFromId(user, true);
        if name.is_null() {
            return Ok(None);
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    };
    // Runs under the caller's search_path (see api.rs): every name and
    // operator is schema-qualified, so no object of the caller's can stand in.
    db::first::<String>(
        "SELECT c.org_id FROM bi_access.credential c \
         WHERE c.role_name OPERATOR(pg_catalog.=) $1::pg_catalog.name \
           AND c.status::pg_catalog.text OPERATOR(pg_catalog.=) \
               ANY ('{pending,active,syncing}'::pg_catalog.text[])",
        &[role.as_str().into()],
    )
}

/// The SQL a policy compares its org column with, by the column's type
/// (as `format_type` names it).
pub fn lookup_expression(column_type: &str) -> String {
    match column_type {
        "uuid" => "(SELECT bi_access.current_org_uuid())".to_string(),
        "smallint" | "integer" | "bigint" => "(SELECT bi_access.current_org_bigint())".to_string(),
        other => format!("(SELECT bi_access.current_org()::{other})"),
    }
}

/// As PostgreSQL's int8in reads it: surrounding blanks, an optional sign.
pub fn as_bigint(org: &str) -> Option<i64> {
    org.trim().parse().ok()
}

/// As PostgreSQL's uuid_in reads it: 32 hex digits, hyphens between groups
/// of four, optionally in braces.
pub fn as_uuid(org: &str) -> Option<[u8; 16]> {
    let inner = org
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or(org);
    if inner.starts_with('-') || inner.ends_with('-') || inner.contains("--") {
        return None;
    }
    let digits: Vec<u8> = inner.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn bigint_keys_parse_like_postgres() {
        assert_eq!(as_bigint(" 42 "), Some(42));
        assert_eq!(as_bigint("-7"), Some(-7));
        assert_eq!(as_bigint("acme"), None);
        assert_eq!(as_bigint("99999999999999999999"), None);
    }

    #[test]
    fn uuid_keys_parse_like_postgres() {
        let canonical = as_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(canonical[0], 0xa0);
        assert_eq!(
            as_uuid("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}"),
            Some(canonical)
        );
        assert_eq!(as_uuid("a0eebc999c0b4ef8bb6d6bb9bd380a11"), Some(canonical));
        assert_eq!(as_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"), None);
        assert_eq!(as_uuid("acme"), None);
        assert_eq!(as_uuid("-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), None);
    }

    #[test]
    fn lookups_are_typed_for_the_index() {
        assert!(lookup_expression("uuid").contains("current_org_uuid"));
        assert!(lookup_expression("integer").contains("current_org_bigint"));
        assert_eq!(
            lookup_expression("public.citext"),
            "(SELECT bi_access.current_org()::public.citext)"
        );
    }
}
