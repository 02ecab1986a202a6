//! What the session guard needs of `bi_access.exposed_table`: a relation's
//! row, read without a statement (the store layer, beside records.rs). A
//! statement from the guard's permission check would be checked by the
//! guard itself, and a credential may not read bi_access's tables.
//!
//! Read once per relation and session: the guard keeps the answer until the
//! relation's relcache entry is invalidated, which every change of its row
//! brings about (the registry's writers change the table's grants, or
//! invalidate it themselves: `exposure::tables`).

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

use crate::index_scan::{self, name_text};

/// A relation's row, while it is exposed or shared (not hidden).
pub struct TableRecord {
    /// A shared reference table (share_table): no RLS, every row.
    pub shared: bool,
    /// The org column; of a shared table, the one it must not carry.
    pub org_column: CString,
    /// The only columns credentials may read; None: all of them.
    pub columns: Option<Vec<CString>>,
}

/// The relation's row: None where bi_access is not installed here, the
/// relation has no row, or its row is hidden. In the upgrade window (no
/// 0.3.0 columns yet) every row is an exposure of every column.
pub fn of(relid: pg_sys::Oid) -> Option<TableRecord> {
    let table = Table::find()?;
    // SAFETY: `index` is the unique btree of the table's primary key, on
    // `tbl` (regclass, compared as an oid); the key is a by-value datum.
    unsafe {
        index_scan::unique_row(
            table.oid,
            table.index,
            table.tbl,
            pg_sys::RegProcedure::from(pg_sys::F_OIDEQ),
            pg_sys::Datum::from(relid),
            |relation, tuple| table.record(relation, tuple),
        )
    }
    .flatten()
}

struct Table {
    oid: pg_sys::Oid,
    index: pg_sys::Oid,
    tbl: pg_sys::AttrNumber,
    org_column: pg_sys::AttrNumber,
    hidden: pg_sys::AttrNumber,
    shared: Option<pg_sys::AttrNumber>,
    columns: Option<pg_sys::AttrNumber>,
}

impl Table {
    fn find() -> Option<Table> {
        // SAFETY: catalog-cache lookups; with missing_ok they raise nothing
        // and answer InvalidOid (or attribute 0) for a missing name.
        unsafe {
            let namespace = pg_sys::get_namespace_oid(c"bi_access".as_ptr(), true);
            if namespace == pg_sys::InvalidOid {
                return None;
            }
            let oid = pg_sys::get_relname_relid(c"exposed_table".as_ptr(), namespace);
            let index = pg_sys::get_relname_relid(c"exposed_table_pkey".as_ptr(), namespace);
            if oid == pg_sys::InvalidOid || index == pg_sys::InvalidOid {
                return None;
            }
            let column = |name: &CStr| {
                let number = pg_sys::get_attnum(oid, name.as_ptr());
                (number > 0).then_some(number)
            };
            Some(Table {
                oid,
                index,
                tbl: column(c"tbl")?,
                org_column: column(c"org_column")?,
                hidden: column(c"hidden")?,
                shared: column(c"shared"),
                columns: column(c"columns"),
            })
        }
    }

    /// SAFETY: `tuple` is a live tuple of `relation`, this table.
    unsafe fn record(
        &self,
        relation: pg_sys::Relation,
        tuple: pg_sys::HeapTuple,
    ) -> Option<TableRecord> {
        let row = index_scan::values(relation, tuple);
        let flag = |number: Option<pg_sys::AttrNumber>| {
            number
                .and_then(|n| row.at(n))
                .is_some_and(|datum| datum.value() != 0)
        };
        if flag(Some(self.hidden)) {
            return None;
        }
        let text = |datum| CString::new(name_text(datum)).unwrap_or_default();
        Some(TableRecord {
            shared: flag(self.shared),
            org_column: row.at(self.org_column).map(text).unwrap_or_default(),
            columns: self
                .columns
                .and_then(|n| row.at(n))
                .map(|datum| names(datum)),
        })
    }
}

/// The elements of a `name[]` datum.
///
/// # Safety
/// `datum` must be a non-NULL `name[]` datum.
unsafe fn names(datum: pg_sys::Datum) -> Vec<CString> {
    let array = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::ArrayType;
    let mut elements: *mut pg_sys::Datum = std::ptr::null_mut();
    let mut nulls: *mut bool = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    pg_sys::deconstruct_array(
        array,
        pg_sys::NAMEOID,
        pg_sys::NAMEDATALEN as std::ffi::c_int,
        false,
        b'c' as std::ffi::c_char,
        &mut elements,
        &mut nulls,
        &mut count,
    );
    (0..count as usize)
        .filter(|&i| !*nulls.add(i))
        .map(|i| CString::new(name_text(*elements.add(i))).unwrap_or_default())
        .collect()
}
