//! One row of one of bi_access's own tables, read through a unique index
//! without a statement (the store layer): for the login gate and the
//! session guard, which run where planning a statement would cost more than
//! the answer, or would run into the guard itself.

use pgrx::pg_sys;

/// The row of `table` whose `column` equals `key` (compared by `equal`)
/// through the unique btree `index`, handed to `read` with the table open;
/// None when there is none.
///
/// # Safety
/// `table` must be a table and `index` a unique btree index on it whose
/// first column is `column`; `key` must be a datum of that column's type
/// that outlives the call.
pub unsafe fn unique_row<T>(
    table: pg_sys::Oid,
    index: pg_sys::Oid,
    column: pg_sys::AttrNumber,
    equal: pg_sys::RegProcedure,
    key: pg_sys::Datum,
    read: impl FnOnce(pg_sys::Relation, pg_sys::HeapTuple) -> T,
) -> Option<T> {
    // The table is opened and closed here with AccessShareLock, as any
    // reader of it would. The latest snapshot (a row written earlier in
    // this transaction, or committed since it began, is seen) is registered
    // for the scan and unregistered after it; `read` copies what it needs
    // before the scan ends. A parallel worker may take no new snapshot but
    // the catalog snapshot, which it shares with the catalog caches (and
    // which an invalidation refreshes).
    let relation = pg_sys::table_open(table, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    let latest = if pg_sys::IsInParallelMode() {
        pg_sys::GetCatalogSnapshot(table)
    } else {
        pg_sys::GetLatestSnapshot()
    };
    let mut scan_key: pg_sys::ScanKeyData = std::mem::zeroed();
    pg_sys::ScanKeyInit(
        &mut scan_key,
        column,
        pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
        equal,
        key,
    );
    let snapshot = pg_sys::RegisterSnapshot(latest);
    let scan = pg_sys::systable_beginscan(relation, index, true, snapshot, 1, &mut scan_key);
    let tuple = pg_sys::systable_getnext(scan);
    let found = (!tuple.is_null()).then(|| read(relation, tuple));
    pg_sys::systable_endscan(scan);
    pg_sys::UnregisterSnapshot(snapshot);
    pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    found
}

/// A tuple's values and null flags, by attribute number (1-based).
///
/// # Safety
/// `tuple` must be a live tuple of `relation`.
pub unsafe fn values(relation: pg_sys::Relation, tuple: pg_sys::HeapTuple) -> Values {
    let descriptor = (*relation).rd_att;
    let count = (*descriptor).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); count];
    let mut nulls = vec![false; count];
    pg_sys::heap_deform_tuple(tuple, descriptor, values.as_mut_ptr(), nulls.as_mut_ptr());
    Values { values, nulls }
}

pub struct Values {
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Values {
    /// The value of attribute `number`, None when it is NULL.
    pub fn at(&self, number: pg_sys::AttrNumber) -> Option<pg_sys::Datum> {
        let i = number as usize - 1;
        (!self.nulls[i]).then_some(self.values[i])
    }
}

/// The text of a `name` datum.
///
/// # Safety
/// `datum` must be a `name` datum.
pub unsafe fn name_text(datum: pg_sys::Datum) -> String {
    std::ffi::CStr::from_ptr(datum.cast_mut_ptr::<std::ffi::c_char>())
        .to_string_lossy()
        .into_owned()
}
