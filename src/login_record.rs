//! What the login gate needs of the session's credential record, read once
//! per login and without a statement (the store layer, beside records.rs).
//!
//! The gate's first statements in a new backend cost more than they do:
//! planning any statement on `bi_access.credential` opens each of its
//! indexes, cold, and a login runs three of them (its record, its allowlist,
//! its overlap partner). Measured on the bench's cluster (PostgreSQL 15,
//! release build), the gate took 2.6 ms of a 14 ms login that way. Here the
//! table and its columns come from the catalog caches and the record from
//! one unique index, `credential_role_name_key` (then
//! `credential_previous_role_name_key`, the overlap rotation's old role): no
//! planner, one index opened. A statement runs only for an allowlist, and it
//! reads no table.
//!
//! Where the indexes are missing (an install that lost them) the gate falls
//! back to the statements of records.rs, which give the same answers.

use std::ffi::CStr;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

use crate::db;
use crate::error::Result;
use crate::index_scan;

/// What the gate checks of the login's record.
pub struct LoginRecord {
    /// The session's address is outside the credential's allowlist.
    pub address_refused: bool,
    /// During an overlap rotation of a credential with a connection limit:
    /// the oid of its other role and the limit.
    pub overlap: Option<(i64, i32)>,
}

/// The login's record in this database: None where bi_access is not
/// installed here or holds no record of the session user (its role, or
/// during an overlap rotation its previous one).
pub fn read() -> Result<Option<LoginRecord>> {
    let Some(table) = Table::find() else {
        return Ok(None);
    };
    let Some((by_role, by_previous)) = table.indexes() else {
        return by_statement();
    };
    // SAFETY: a read of backend-local state set at login.
    let login = unsafe { pg_sys::GetSessionUserId() };
    let Some(name) = role_name(login) else {
        return Ok(None);
    };
    let found = match table.scan(by_role, table.role_name, &name) {
        Some(found) => Some(found),
        None => match (by_previous, table.previous_role_name) {
            (Some(index), Some(column)) => table.scan(index, column, &name),
            _ => None,
        },
    };
    found.map(|found| found.into_record(&name)).transpose()
}

/// The same answers from records.rs's statements.
fn by_statement() -> Result<Option<LoginRecord>> {
    if !crate::records::manages_session_user()? {
        return Ok(None);
    }
    Ok(Some(LoginRecord {
        address_refused: crate::records::session_address_refused()?,
        overlap: crate::records::overlap_of_session_user()?,
    }))
}

/// `bi_access.credential` and the attribute numbers of the columns read.
struct Table {
    oid: pg_sys::Oid,
    namespace: pg_sys::Oid,
    role_name: pg_sys::AttrNumber,
    connection_limit: pg_sys::AttrNumber,
    /// 0.3.0's columns: absent in the upgrade window (ALTER EXTENSION UPDATE
    /// not yet run), when no credential has an allowlist or an overlap.
    previous_role_name: Option<pg_sys::AttrNumber>,
    allowed_networks: Option<pg_sys::AttrNumber>,
}

/// A record found: the columns the gate reads.
struct Found {
    role_name: String,
    previous_role_name: Option<String>,
    connection_limit: Option<i32>,
    /// The allowlist's text form (`{10.0.0.0/8,…}`).
    allowed_networks: Option<String>,
}

impl Table {
    fn find() -> Option<Table> {
        // SAFETY: catalog-cache lookups; with missing_ok they raise nothing
        // and answer InvalidOid for a missing name.
        let (namespace, oid) = unsafe {
            let namespace = pg_sys::get_namespace_oid(c"bi_access".as_ptr(), true);
            if namespace == pg_sys::InvalidOid {
                return None;
            }
            (
                namespace,
                pg_sys::get_relname_relid(c"credential".as_ptr(), namespace),
            )
        };
        if oid == pg_sys::InvalidOid {
            return None;
        }
        let column = |name: &CStr| {
            // SAFETY: a catalog-cache lookup; 0 (InvalidAttrNumber) for a
            // missing or dropped column.
            let number = unsafe { pg_sys::get_attnum(oid, name.as_ptr()) };
            (number > 0).then_some(number)
        };
        Some(Table {
            oid,
            namespace,
            role_name: column(c"role_name")?,
            connection_limit: column(c"connection_limit")?,
            previous_role_name: column(c"previous_role_name"),
            allowed_networks: column(c"allowed_networks"),
        })
    }

    /// The unique indexes on role_name and previous_role_name (the second
    /// absent in the upgrade window); None when the first is missing.
    fn indexes(&self) -> Option<(pg_sys::Oid, Option<pg_sys::Oid>)> {
        let index = |name: &CStr| {
            // SAFETY: a catalog-cache lookup, InvalidOid for a missing name.
            let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), self.namespace) };
            (oid != pg_sys::InvalidOid).then_some(oid)
        };
        let by_role = index(c"credential_role_name_key")?;
        let by_previous = match self.previous_role_name {
            Some(_) => Some(index(c"credential_previous_role_name_key")?),
            None => None,
        };
        Some((by_role, by_previous))
    }

    /// The record whose `column` equals `name`, through `index`.
    fn scan(&self, index: pg_sys::Oid, column: pg_sys::AttrNumber, name: &CStr) -> Option<Found> {
        // SAFETY: `index` is a unique btree on the `name` column `column` of
        // this table; the key is a NameData that outlives the scan.
        unsafe {
            let mut wanted: pg_sys::NameData = std::mem::zeroed();
            pg_sys::namestrcpy(&mut wanted, name.as_ptr());
            index_scan::unique_row(
                self.oid,
                index,
                column,
                pg_sys::RegProcedure::from(pg_sys::F_NAMEEQ),
                pg_sys::Datum::from(&mut wanted as *mut pg_sys::NameData),
                |relation, tuple| self.columns(relation, tuple),
            )
        }
    }

    /// SAFETY: `tuple` is a live tuple of `relation`, this table.
    unsafe fn columns(&self, relation: pg_sys::Relation, tuple: pg_sys::HeapTuple) -> Found {
        let row = index_scan::values(relation, tuple);
        let name = |datum| index_scan::name_text(datum);
        Found {
            role_name: row.at(self.role_name).map(name).unwrap_or_default(),
            previous_role_name: self.previous_role_name.and_then(|n| row.at(n)).map(name),
            connection_limit: row
                .at(self.connection_limit)
                .map(|datum| datum.value() as i32),
            allowed_networks: self
                .allowed_networks
                .and_then(|number| row.at(number).map(|datum| (number, datum)))
                .map(|(number, datum)| {
                    // The column's own output function: the list as text,
                    // detoasted on the way.
                    let mut output = pg_sys::InvalidOid;
                    let mut varlena = false;
                    pg_sys::getTypeOutputInfo(
                        pg_sys::get_atttype(self.oid, number),
                        &mut output,
                        &mut varlena,
                    );
                    let text = pg_sys::OidOutputFunctionCall(output, datum);
                    let owned = CStr::from_ptr(text).to_string_lossy().into_owned();
                    pg_sys::pfree(text.cast());
                    owned
                }),
        }
    }
}

impl Found {
    fn into_record(self, login: &CStr) -> Result<LoginRecord> {
        let address_refused = match &self.allowed_networks {
            None => false,
            Some(list) => db::first::<bool>(
                &format!(
                    "SELECT {}",
                    crate::records::address_outside("$1::pg_catalog.cidr[]")
                ),
                &[DatumWithOid::from(list.as_str())],
            )?
            .unwrap_or(false),
        };
        let login = login.to_string_lossy();
        let other = match &self.previous_role_name {
            None => None,
            Some(previous) if *previous == login => Some(self.role_name.clone()),
            Some(_) => self.previous_role_name.clone(),
        };
        let overlap = match (other, self.connection_limit) {
            (Some(other), Some(limit)) if limit >= 0 => role_oid(&other).map(|oid| (oid, limit)),
            _ => None,
        };
        Ok(LoginRecord {
            address_refused,
            overlap,
        })
    }
}

/// The name of role `oid` (None if it is gone).
fn role_name(oid: pg_sys::Oid) -> Option<std::ffi::CString> {
    // SAFETY: a catalog-cache lookup; with noerr it raises nothing and
    // answers NULL for a missing role; the palloc'd copy is copied out.
    unsafe {
        let name = pg_sys::GetUserNameFromId(oid, true);
        (!name.is_null()).then(|| CStr::from_ptr(name).to_owned())
    }
}

/// The oid of role `name`, as an int8 (None if there is no such role).
fn role_oid(name: &str) -> Option<i64> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a catalog-cache lookup; with missing_ok it raises nothing.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then(|| i64::from(oid.to_u32()))
}
