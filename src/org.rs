//! The org lookup every bi_access policy calls: the org key of the role
//! running the query. It is keyed on the role, never on a setting a session
//! can change, and typed per org column so the comparison uses the column's
//! index; a key that is not a valid value of the column's type matches no
//! row instead of failing the query.
//!
//! A policy calls the lookup bare (`org_id = bi_access.current_org_bigint()`)
//! and the planner asks `simplify` for its value: the call becomes a
//! constant when the query is planned, so the org column is compared with a
//! literal, as in a hand-written policy, with no sub-select to plan and none
//! to run. A plan keeps that constant only while it holds: PostgreSQL plans
//! a query that row-level security touched again when the current role
//! changes, and within one session nothing else changes a role's answer
//! (revoke, delete, a new password or expiry end the session before its next
//! statement: guard::standing). Where the planner does not simplify, the call
//! still answers at run time.
//!
//! The answer is cached per backend. A role's org key never changes; what
//! makes it stop answering (revoke's NOLOGIN, delete's DROP ROLE) changes
//! pg_authid, and any change there, committed anywhere (replayed, on a
//! standby) or made earlier in this transaction, clears the cache through a
//! syscache callback before the next statement reads it.

use std::cell::RefCell;

use pgrx::prelude::*;

use crate::db;
use crate::error::{BiError, Result};

thread_local! {
    /// (outer user, its org key or None).
    static CACHE: RefCell<Option<(pg_sys::Oid, Option<String>)>> = const { RefCell::new(None) };
}

pub fn init() {
    crate::invalidation::on_catalog_change(&[pg_sys::SysCacheIdentifier::AUTHOID], forget);
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    CACHE.with(|cache| cache.replace(None));
}

/// The outer user is the login, or the role it SET ROLE to; inside this
/// SECURITY DEFINER function current_user would be the extension's owner.
pub fn current_org() -> Result<Option<String>> {
    if crate::guard::session::session_is_credential()
        && !crate::guard::session::held_from_the_start()
    {
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
    // As the superuser: the planner asks as the credential, which may not
    // read bi_access's records (SECURITY DEFINER covers the calls only).
    db::as_superuser(|| live_org(&role, user))
}

fn live_org(role: &str, user: pg_sys::Oid) -> Result<Option<String>> {
    // Runs under the caller's search_path (see api.rs): every name and
    // operator is schema-qualified, so no object of the caller's can stand in.
    // A role another database manages (this one is a copy) or one not yet
    // adopted after a restore gets no org here (src/custody.rs).
    if let Some(org) = crate::records::live_org_of(role, user, &crate::custody::mark_here()?)? {
        return Ok(Some(org));
    }
    // A mark that is not this database's exact one can still be: pg_upgrade
    // gives the cluster a new system identifier (src/custody.rs), and the
    // role is this database's until a sync re-marks it.
    let Some(org) = crate::records::live_org_of_any_mark(role)? else {
        // No record here: on a Citus worker, the coordinator's bi_access has
        // them (src/citus.rs).
        return crate::citus::org_from_coordinator(role);
    };
    Ok((crate::custody::of(role)? == crate::custody::Custody::Here).then_some(org))
}

/// The org key of `role` as this database's lookup answers it for a session
/// of that role: what a Citus worker asks its coordinator (src/citus.rs).
/// Superusers only, since it tells which org any role belongs to.
pub fn org_of(role: &str) -> Result<Option<String>> {
    // SAFETY: reads a cached flag of the current user.
    if !unsafe { pg_sys::superuser() } {
        return Err(crate::error::BiError::Refused {
            message: "permission denied: only a superuser may ask for the org of a role".into(),
            hint: "A Citus worker asks its coordinator as the superuser.".into(),
        });
    }
    let Some(user) = crate::roles::oid(role)? else {
        return Ok(None);
    };
    look_up(user)
}

/// The planner's question about a call of one of the three lookups
/// (`SupportRequestSimplify`): the answer as a constant of the call's type,
/// or NULL (no simplification) for any other request or if the lookup fails,
/// which then raises when the call runs.
///
/// # Safety
/// `request` must be the node a planner support call received.
pub unsafe fn simplify(request: *mut pg_sys::Node) -> *mut pg_sys::Node {
    if request.is_null() || (*request).type_ != pg_sys::NodeTag::T_SupportRequestSimplify {
        return std::ptr::null_mut();
    }
    let call = (*(request as *mut pg_sys::SupportRequestSimplify)).fcall;
    let Ok(org) = current_org() else {
        return std::ptr::null_mut();
    };
    let org = org.as_deref();
    let (kind, collation) = ((*call).funcresulttype, (*call).funccollid);
    let constant = match kind {
        pg_sys::INT8OID => match org.and_then(as_bigint) {
            Some(value) => pg_sys::makeConst(kind, -1, collation, 8, value.into(), false, true),
            None => pg_sys::makeNullConst(kind, -1, collation),
        },
        pg_sys::UUIDOID => match org.and_then(as_uuid) {
            Some(bytes) => {
                let datum = pg_sys::palloc(16) as *mut u8;
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), datum, 16);
                pg_sys::makeConst(kind, -1, collation, 16, datum.into(), false, false)
            }
            None => pg_sys::makeNullConst(kind, -1, collation),
        },
        pg_sys::TEXTOID => match org {
            Some(key) => {
                let text = pgrx::IntoDatum::into_datum(key).unwrap_or(pg_sys::Datum::from(0));
                pg_sys::makeConst(kind, -1, collation, -1, text, false, false)
            }
            None => pg_sys::makeNullConst(kind, -1, collation),
        },
        _ => return std::ptr::null_mut(),
    };
    constant as *mut pg_sys::Node
}

/// The SQL a policy compares its org column with, by the column's type
/// (as `format_type` names it). Org key matching (DESIGN.md): a key matches
/// a row iff it equals the row's org value cast to text. The lookup is cast
/// to the column's own type so the column's index serves, and it never
/// raises: an integer or uuid column gets NULL (no row) for a key that is not
/// the exact text form of one of its values (see `as_bigint`, `as_uuid`);
/// text and varchar compare byte for byte (the column's collation is the
/// type's default, which `exposure` checks: deterministic, so `=` is byte
/// equality); citext compares with citext's own `=`, case-insensitively, as
/// the application's own `WHERE org_id = $1` on that column does.
///
/// Other types are refused when a table is exposed (42804); an exposure made
/// before that rule keeps the plain cast it was created with (check()
/// reports it).
pub fn lookup_expression(column_type: &str) -> String {
    match column_type {
        "uuid" => "bi_access.current_org_uuid()".to_string(),
        "smallint" | "integer" | "bigint" => "bi_access.current_org_bigint()".to_string(),
        other => format!("bi_access.current_org()::{other}"),
    }
}

/// The key as a bigint when it is exactly the text form of one (what
/// `bigint::text` prints: no blanks, no `+`, no leading zeros, `-0` is not
/// `0`); None otherwise, which matches no row. Compared with a smallint or
/// integer column, a value out of the column's range matches no row either.
pub fn as_bigint(org: &str) -> Option<i64> {
    let value: i64 = org.parse().ok()?;
    (value.to_string() == org).then_some(value)
}

/// The key as a uuid when it is exactly what `uuid::text` prints: 32
/// lower-case hex digits in groups of 8-4-4-4-12. Upper case, braces or no
/// hyphens are other keys, which match no row.
pub fn as_uuid(org: &str) -> Option<[u8; 16]> {
    let bytes = org.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut digits = Vec::with_capacity(32);
    for (i, byte) in bytes.iter().enumerate() {
        match (i, byte) {
            (8 | 13 | 18 | 23, b'-') => {}
            (8 | 13 | 18 | 23, _) => return None,
            (_, b'0'..=b'9') => digits.push(byte - b'0'),
            (_, b'a'..=b'f') => digits.push(byte - b'a' + 10),
            _ => return None,
        }
    }
    let mut uuid = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        uuid[i] = (pair[0] << 4) | pair[1];
    }
    Some(uuid)
}

/// generate's check of a new key against the types of the exposed org
/// columns (`column_types`, as `format_type` names them): a key that no
/// exposed column's type prints (`' 42 '`, `'042'` where every org column is
/// an integer; an upper-case uuid where every one is a uuid) would give a
/// login that silently sees nothing, so it is refused (22023) with its
/// canonical form when it has one. A text, varchar or citext column (or a
/// domain, which the lookup casts to) takes any key, and so does a database
/// that exposes nothing yet.
pub fn check_canonical(key: &str, column_types: &[String]) -> Result<()> {
    let integer = column_types
        .iter()
        .any(|t| matches!(t.as_str(), "smallint" | "integer" | "bigint"));
    let uuid = column_types.iter().any(|t| t == "uuid");
    let any_key = column_types
        .iter()
        .any(|t| !matches!(t.as_str(), "smallint" | "integer" | "bigint" | "uuid"));
    if column_types.is_empty()
        || any_key
        || (integer && as_bigint(key).is_some())
        || (uuid && as_uuid(key).is_some())
    {
        return Ok(());
    }
    let canonical = integer
        .then(|| canonical_bigint(key))
        .flatten()
        .or_else(|| uuid.then(|| canonical_uuid(key)).flatten());
    let (kinds, printed) = match (integer, uuid) {
        (true, true) => ("an integer or a uuid", "bigint::text or uuid::text"),
        (true, false) => ("an integer", "bigint::text"),
        _ => ("a uuid", "uuid::text"),
    };
    let hint = match canonical {
        Some(form) => format!("Pass org_id '{form}', the key as {printed} prints it."),
        None => format!("Pass the org key as {printed} prints it."),
    };
    Err(BiError::NonCanonicalOrgKey {
        key: key.to_string(),
        kinds: kinds.to_string(),
        hint,
    })
}

/// The integer a key spells with blanks, a `+` or leading zeros, as
/// `bigint::text` prints it.
fn canonical_bigint(key: &str) -> Option<String> {
    key.trim()
        .parse::<i64>()
        .ok()
        .map(|value| value.to_string())
}

/// The uuid a key spells in upper case, with braces or without hyphens, as
/// `uuid::text` prints it.
fn canonical_uuid(key: &str) -> Option<String> {
    let bare = key.trim().trim_start_matches('{').trim_end_matches('}');
    let digits: String = bare
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..]
    ))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn bigint_keys_match_only_their_exact_text_form() {
        assert_eq!(as_bigint("42"), Some(42));
        assert_eq!(as_bigint("-7"), Some(-7));
        assert_eq!(as_bigint("0"), Some(0));
        assert_eq!(as_bigint(&i64::MIN.to_string()), Some(i64::MIN));
        for other in [
            " 42 ", "42 ", " 42", "+42", "042", "-0", "4_2", "42.0", "", "acme",
        ] {
            assert_eq!(as_bigint(other), None, "{other:?}");
        }
        assert_eq!(as_bigint("99999999999999999999"), None);
    }

    #[test]
    fn uuid_keys_match_only_their_canonical_text_form() {
        let canonical = as_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(
            canonical,
            [
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11
            ]
        );
        for other in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "A0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc99-9c0b4ef8-bb6d-6bb9bd380a11-",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "acme",
        ] {
            assert_eq!(as_uuid(other), None, "{other:?}");
        }
    }

    #[test]
    fn lookups_are_typed_for_the_index() {
        assert!(lookup_expression("uuid").contains("current_org_uuid"));
        assert!(lookup_expression("integer").contains("current_org_bigint"));
        assert_eq!(
            lookup_expression("public.citext"),
            "bi_access.current_org()::public.citext"
        );
    }

    fn types(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn hint_of(key: &str, names: &[&str]) -> Option<String> {
        match check_canonical(key, &types(names)) {
            Ok(()) => None,
            Err(BiError::NonCanonicalOrgKey { hint, .. }) => Some(hint),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn a_key_is_refused_only_when_no_exposed_type_prints_it() {
        assert_eq!(hint_of(" 42 ", &[]), None);
        assert_eq!(hint_of(" 42 ", &["integer", "text"]), None);
        assert_eq!(hint_of("Acme", &["public.citext"]), None);
        assert_eq!(hint_of("42", &["integer", "bigint"]), None);
        assert_eq!(hint_of("-7", &["smallint"]), None);
        let uuid = "1a2b3c4d-0000-4000-8000-00000000000a";
        assert_eq!(hint_of(uuid, &["uuid"]), None);
        assert_eq!(hint_of(uuid, &["integer", "uuid"]), None);
        assert_eq!(
            hint_of("042", &["integer"]).as_deref(),
            Some("Pass org_id '42', the key as bigint::text prints it.")
        );
        assert_eq!(
            hint_of(" +42 ", &["bigint", "uuid"]).as_deref(),
            Some("Pass org_id '42', the key as bigint::text or uuid::text prints it.")
        );
        assert_eq!(
            hint_of(&uuid.to_uppercase(), &["uuid"]).as_deref(),
            Some(format!("Pass org_id '{uuid}', the key as uuid::text prints it.").as_str())
        );
        assert_eq!(
            hint_of("{1A2B3C4D00004000800000000000000A}", &["uuid"]).as_deref(),
            Some(format!("Pass org_id '{uuid}', the key as uuid::text prints it.").as_str())
        );
        assert_eq!(
            hint_of("acme", &["integer"]).as_deref(),
            Some("Pass the org key as bigint::text prints it.")
        );
        assert_eq!(
            hint_of("42", &["uuid"]).as_deref(),
            Some("Pass the org key as uuid::text prints it.")
        );
    }
}
