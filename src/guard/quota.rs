//! A custom schema's quota inside the statement that crosses it, and its
//! caps (scope read_write, src/custom_schema.rs).
//!
//! PostgreSQL has no storage hook, so bi_access counts what a read_write
//! session writes where it passes:
//! - rows (INSERT, UPDATE, COPY FROM, INSERT … ON CONFLICT, MERGE): a BEFORE
//!   row trigger on every table of the schema, `bi_access_quota`, put there
//!   by bi_access as the bootstrap superuser when the table is created (and
//!   by a sync, and by the upgrade, for older tables). The credential owns
//!   its tables, so the guard refuses every way to drop, rename or disable
//!   the trigger (DROP TRIGGER, ALTER TRIGGER and ALTER TABLE … DISABLE
//!   TRIGGER are refused; session_replication_role is a superuser's; the
//!   guard refuses partitions to credentials), puts it on every table a DDL
//!   statement leaves without it (a table re-created), and refuses to write
//!   a table that lacks it (stored generated columns, which PostgreSQL
//!   computes after BEFORE triggers, are refused);
//! - `CREATE TABLE AS`, `SELECT INTO` and `CREATE MATERIALIZED VIEW`: the
//!   rows the executor hands the new relation, through a DestReceiver that
//!   wraps the one PostgreSQL made;
//! - index builds and table rewrites (CREATE INDEX, ALTER TABLE that builds
//!   an index or may rewrite): refused before they start when the schema
//!   plus what they would write (estimated from the table) passes the quota,
//!   and undone after they end when the schema is past it.
//!
//! Each row counts what it can take on disk (`Shape::weight`: the heap page
//! it fills at its table's fillfactor, TOAST, an entry in each index, at
//! least twice its size for an index that splits), never less. Every
//! `interval()` bytes counted, the session measures the schema's real size
//! (`custom_schema::size_sql`) and refuses the row (53400) if the schema plus
//! that row passes the quota: a statement overshoots by at most one interval,
//! and all of an org's sessions together by at most the allowance, the larger
//! of 64 MB and 10 % of the quota.
//!
//! Catalog growth has caps (relations, columns, stored expressions per
//! schema), checked after each DDL statement of a read_write session: a
//! statement that leaves the schema past a cap fails (53400) and is undone.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

use crate::error::BiError;
use crate::settings;

/// The most a session writes between two measures of its schema.
const CHECK_EVERY: i64 = 8 << 20;
/// The least: with very many sessions per org, a measure every 256 kB.
const CHECK_AT_LEAST: i64 = 256 << 10;
/// The smallest allowance past the quota.
const MIN_ALLOWANCE: i64 = 64 << 20;

const BLOCK: i64 = 8192;
/// What a heap page holds for tuples (BLCKSZ less its header).
const PAGE_ROOM: i64 = 8168;
/// The largest B-tree entry (BTMaxItemSize at 8 kB pages), and an index
/// tuple's header with its line pointer, rounded up.
const MAX_INDEX_ENTRY: i64 = 2704;
const INDEX_ENTRY_OVERHEAD: i64 = 16;
/// Past this a row's values are compressed or moved to TOAST.
const TOAST_THRESHOLD: i64 = 2032;

thread_local! {
    /// Bytes counted since the schema was last measured.
    static COUNTED: Cell<i64> = const { Cell::new(0) };
    /// Each written table's shape, until a relcache invalidation.
    static SHAPES: RefCell<HashMap<pg_sys::Oid, Shape>> = RefCell::new(HashMap::new());
    /// The fillfactor of the relation the running CREATE TABLE AS fills.
    static INTO_FILLFACTOR: Cell<i64> = const { Cell::new(100) };
}

pub(super) fn install() {
    // SAFETY: called once from _PG_init, in the backend's only thread.
    unsafe {
        crate::compat::install_executor_run(around_run);
    }
    crate::invalidation::on_relation_change(forget_shapes);
}

/// Runs during invalidation processing: no catalog access, no error.
unsafe extern "C-unwind" fn forget_shapes(_: pg_sys::Datum, _: pg_sys::Oid) {
    SHAPES.with(|shapes| {
        if let Ok(mut shapes) = shapes.try_borrow_mut() {
            shapes.clear();
        }
    });
}

/// How far past its quota a schema may go: the larger of 64 MB and 10 %.
pub fn allowance(quota: i64) -> i64 {
    (quota / 10).max(MIN_ALLOWANCE)
}

/// How many bytes a session writes between two measures: 8 MB, or less when
/// the org may have so many sessions that their intervals together would
/// pass the allowance (bi_access.org_connection_limit, else the server's).
fn interval(quota: i64) -> i64 {
    // SAFETY: a read of a GUC variable of this backend.
    let connections = unsafe { pg_sys::MaxConnections };
    let sessions = settings::org_connection_limit()
        .or_else(settings::max_bi_connections)
        .unwrap_or(connections)
        .max(1);
    (allowance(quota) / i64::from(sessions)).clamp(CHECK_AT_LEAST, CHECK_EVERY)
}

/// Counts `weight` bytes about to be written into the schema `namespace`,
/// measuring the schema once an interval has been counted: 53400 if the
/// schema plus this row would pass the quota.
fn count(namespace: pg_sys::Oid, weight: i64, what: &'static str) {
    let Some(quota) = settings::custom_schema_quota_bytes() else {
        return;
    };
    let counted = COUNTED.with(|counted| {
        let total = counted.get().saturating_add(weight);
        counted.set(total);
        total
    });
    if counted < interval(quota) {
        return;
    }
    COUNTED.with(|counted| counted.set(0));
    let size = schema_size(namespace);
    if size.saturating_add(weight) > quota {
        BiError::QuotaWouldExceed {
            what: what.into(),
            size,
            adding: weight,
            quota,
        }
        .raise();
    }
}

/// Raises 53400 if the schema is past its quota.
pub(super) fn refuse_past_quota(namespace: pg_sys::Oid) {
    let Some(quota) = crate::settings::custom_schema_quota_bytes() else {
        return;
    };
    let size = schema_size(namespace);
    if size > quota {
        crate::error::BiError::QuotaExceeded { size, quota }.raise();
    }
}

/// The schema's size as the quota counts it (unreadable: past any quota).
/// The session's count of bytes written starts again from it.
pub(super) fn schema_size(namespace: pg_sys::Oid) -> i64 {
    measured();
    Spi::get_one_with_args::<i64>(
        &format!("SELECT {}", crate::custom_schema::size_sql("$1")),
        &[namespace.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(i64::MAX)
}

/// Forgets what was counted: the schema was just measured.
pub(super) fn measured() {
    COUNTED.with(|counted| counted.set(0));
}

/// What a table's rows cost on disk besides their own bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Shape {
    /// The heap's fillfactor (10 to 100).
    fillfactor: i64,
    /// B-tree, hash and BRIN indexes on plain columns: an entry holds at most
    /// the row's bytes.
    plain_indexes: i64,
    /// B-tree and hash indexes on expressions: an entry up to the largest.
    expression_indexes: i64,
    /// GIN, GiST, SP-GiST and any other method: many entries per row.
    other_indexes: i64,
    /// The lowest fillfactor of its indexes (100 when none is set).
    index_fillfactor: i64,
}

impl Shape {
    /// The bytes a row of `length` bytes (of which `copied` more are values
    /// stored out of line elsewhere, copied in) can take on disk, counted
    /// high: the heap page share it takes at the fillfactor, its values in
    /// TOAST (with chunk overhead), and an entry in each index, whose pages
    /// a split leaves half full (or at the index's fillfactor).
    fn weight(&self, length: i64, copied: i64) -> i64 {
        let tuple = ((length.min(PAGE_ROOM) + 7) & !7) + 4;
        let room = (PAGE_ROOM * self.fillfactor.clamp(10, 100) / 100).max(tuple);
        let heap = BLOCK / (room / tuple).max(1);
        let stored_elsewhere = if length > TOAST_THRESHOLD { length } else { 0 } + copied;
        let toast = stored_elsewhere + stored_elsewhere / 16;
        let spread = (100 / self.index_fillfactor.clamp(10, 100)).max(2);
        let entry = length.min(MAX_INDEX_ENTRY) + INDEX_ENTRY_OVERHEAD;
        let indexes = spread
            * (self.plain_indexes * entry
                + self.expression_indexes * (MAX_INDEX_ENTRY + INDEX_ENTRY_OVERHEAD)
                + self.other_indexes * 32 * (length + copied + INDEX_ENTRY_OVERHEAD));
        heap + toast + indexes
    }
}

/// The shape of a table, from the catalogs (once per relcache invalidation).
fn shape(relid: pg_sys::Oid) -> Shape {
    if let Some(known) = SHAPES.with(|shapes| shapes.borrow().get(&relid).copied()) {
        return known;
    }
    let found = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT coalesce((SELECT o.option_value::int \
                                  FROM pg_catalog.pg_options_to_table(c.reloptions) o \
                                  WHERE o.option_name = 'fillfactor'), 100), \
                        count(i.indexrelid) FILTER (WHERE am.amname IN ('btree', 'hash', 'brin') \
                                                     AND i.indexprs IS NULL), \
                        count(i.indexrelid) FILTER (WHERE am.amname IN ('btree', 'hash') \
                                                     AND i.indexprs IS NOT NULL), \
                        count(i.indexrelid) FILTER (WHERE am.amname NOT IN ('btree', 'hash', 'brin')), \
                        min(coalesce((SELECT o.option_value::int \
                                      FROM pg_catalog.pg_options_to_table(ic.reloptions) o \
                                      WHERE o.option_name = 'fillfactor'), 100)) \
                 FROM pg_catalog.pg_class c \
                 LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid \
                 LEFT JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
                 LEFT JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
                 WHERE c.oid = $1 GROUP BY c.reloptions",
                Some(1),
                &[relid.into()],
            )?
            .first();
        let number = |n: usize| -> Result<i64, pgrx::spi::SpiError> {
            Ok(row.get::<i64>(n)?.unwrap_or_default())
        };
        Ok::<_, pgrx::spi::SpiError>(Shape {
            fillfactor: i64::from(row.get::<i32>(1)?.unwrap_or(100)),
            plain_indexes: number(2)?,
            expression_indexes: number(3)?,
            other_indexes: number(4)?,
            index_fillfactor: i64::from(row.get::<i32>(5)?.unwrap_or(100)),
        })
    });
    // Unreadable: counted as the worst shape, an index of every kind.
    let shape = found.unwrap_or(Shape {
        fillfactor: 10,
        plain_indexes: 1,
        expression_indexes: 1,
        other_indexes: 1,
        index_fillfactor: 10,
    });
    SHAPES.with(|shapes| shapes.borrow_mut().insert(relid, shape));
    shape
}

/// Whether a varlena datum points at a value stored out of line in a TOAST
/// table (as a row read from another table carries it).
///
/// # Safety
/// `value` must be a valid varlena datum.
unsafe fn on_disk_elsewhere(value: pg_sys::Datum) -> bool {
    let pointer = value.cast_mut_ptr::<pg_sys::varlena>();
    pgrx::varlena::varatt_is_1b_e(pointer)
        && u32::from(pgrx::varlena::vartag_external(pointer))
            == pg_sys::vartag_external::VARTAG_ONDISK
}

/// Whether a column is of a variable-length type (pgrx reads the attribute
/// where each major keeps it: 18 put compact attributes first).
///
/// # Safety
/// `descriptor` must be a valid tuple descriptor with `column` in range.
unsafe fn is_varlena(descriptor: pg_sys::TupleDesc, column: usize) -> bool {
    pgrx::PgTupleDesc::from_pg_unchecked(descriptor)
        .get(column)
        .is_some_and(|attribute| attribute.attlen == -1)
}

/// The bytes of out-of-line values a row carries that its table will store
/// again: every one, but for an UPDATE those the old row already points at
/// (PostgreSQL keeps them as they are).
///
/// # Safety
/// `tuple` (and `old`, if not NULL) must be valid tuples of `relation`.
unsafe fn copied_values(
    relation: pg_sys::Relation,
    tuple: pg_sys::HeapTuple,
    old: pg_sys::HeapTuple,
) -> i64 {
    let descriptor = (*relation).rd_att;
    let columns = (*descriptor).natts as usize;
    let deform = |tuple: pg_sys::HeapTuple| {
        let mut values = vec![pg_sys::Datum::from(0); columns];
        let mut nulls = vec![true; columns];
        pg_sys::heap_deform_tuple(tuple, descriptor, values.as_mut_ptr(), nulls.as_mut_ptr());
        (values, nulls)
    };
    let (values, nulls) = deform(tuple);
    let previous = (!old.is_null()).then(|| deform(old));
    let mut bytes = 0;
    for column in 0..columns {
        if nulls[column] || !is_varlena(descriptor, column) || !on_disk_elsewhere(values[column]) {
            continue;
        }
        let kept = previous.as_ref().is_some_and(|(old_values, old_nulls)| {
            !old_nulls[column]
                && on_disk_elsewhere(old_values[column])
                && pgrx::varlena::varsize_any(old_values[column].cast_mut_ptr())
                    == pgrx::varlena::varsize_any(values[column].cast_mut_ptr())
                && libc::memcmp(
                    old_values[column].cast_mut_ptr(),
                    values[column].cast_mut_ptr(),
                    pgrx::varlena::varsize_any(values[column].cast_mut_ptr()),
                ) == 0
        });
        if !kept {
            bytes += pg_sys::toast_datum_size(values[column]) as i64;
        }
    }
    bytes
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_bi_access_custom_schema_quota() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `bi_access_internal.custom_schema_quota()`, the BEFORE INSERT OR UPDATE
/// row trigger of every custom-schema table (LANGUAGE c): counts the row of
/// a credential's session (anyone else's writes are not the quota's) and
/// returns it unchanged.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn bi_access_custom_schema_quota(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let context = (*fcinfo).context;
    if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
        BiError::NotATrigger("bi_access_internal.custom_schema_quota()").raise();
    }
    let data = context as *mut pg_sys::TriggerData;
    let event = (*data).tg_event;
    let update = event & pg_sys::TRIGGER_EVENT_OPMASK == pg_sys::TRIGGER_EVENT_UPDATE;
    let (row, old) = if update {
        ((*data).tg_newtuple, (*data).tg_trigtuple)
    } else {
        ((*data).tg_trigtuple, std::ptr::null_mut())
    };
    if row.is_null() || event & pg_sys::TRIGGER_EVENT_ROW == 0 {
        return pg_sys::Datum::from(row);
    }
    if super::session::guarded() {
        let relation = (*data).tg_relation;
        let length = i64::from((*row).t_len);
        let external = u32::from((*(*row).t_data).t_infomask) & pg_sys::HEAP_HASEXTERNAL != 0;
        let copied = if external {
            copied_values(relation, row, old)
        } else {
            0
        };
        let weight = shape((*relation).rd_id).weight(length, copied);
        count((*(*relation).rd_rel).relnamespace, weight, "this row");
    }
    pg_sys::Datum::from(row)
}

/// A DestReceiver that counts the rows it passes on to PostgreSQL's own
/// (the one that fills the relation a CREATE TABLE AS creates).
#[repr(C)]
struct Counting {
    base: pg_sys::DestReceiver,
    inner: *mut pg_sys::DestReceiver,
    namespace: pg_sys::Oid,
    shape: Shape,
}

/// The bytes a row of the slot takes as a heap tuple: its header, null
/// bitmap and data (out-of-line values as their pointers), and the
/// out-of-line values it will copy.
///
/// # Safety
/// `slot` must be a valid slot with its descriptor.
unsafe fn slot_length(slot: *mut pg_sys::TupleTableSlot) -> (i64, i64) {
    let descriptor = (*slot).tts_tupleDescriptor;
    let columns = (*descriptor).natts;
    if i32::from((*slot).tts_nvalid) < columns {
        pg_sys::slot_getsomeattrs_int(slot, columns);
    }
    let values = (*slot).tts_values;
    let nulls = (*slot).tts_isnull;
    let data = pg_sys::heap_compute_data_size(descriptor, values, nulls) as i64;
    let mut copied = 0;
    let mut has_nulls = false;
    for column in 0..columns as usize {
        if *nulls.add(column) {
            has_nulls = true;
            continue;
        }
        if is_varlena(descriptor, column) && on_disk_elsewhere(*values.add(column)) {
            copied += pg_sys::toast_datum_size(*values.add(column)) as i64;
        }
    }
    // HeapTupleHeaderData up to its null bitmap, then MAXALIGN.
    let bitmap = if has_nulls {
        (i64::from(columns) + 7) / 8
    } else {
        0
    };
    let header = (23 + bitmap + 7) & !7;
    (header + data, copied)
}

#[pg_guard]
unsafe extern "C-unwind" fn counting_receive(
    slot: *mut pg_sys::TupleTableSlot,
    receiver: *mut pg_sys::DestReceiver,
) -> bool {
    let me = receiver as *mut Counting;
    let (length, copied) = slot_length(slot);
    count(
        (*me).namespace,
        (*me).shape.weight(length, copied),
        "this row",
    );
    let inner = (*me).inner;
    match (*inner).receiveSlot {
        // SAFETY: PostgreSQL's own receiver, with its own argument; an error
        // it raises comes back as a Rust panic through this frame.
        Some(receive) => pg_sys::ffi::pg_guard_ffi_boundary(|| receive(slot, inner)),
        None => true,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn counting_startup(
    receiver: *mut pg_sys::DestReceiver,
    operation: std::ffi::c_int,
    descriptor: pg_sys::TupleDesc,
) {
    let inner = (*(receiver as *mut Counting)).inner;
    if let Some(startup) = (*inner).rStartup {
        // SAFETY: as in counting_receive.
        pg_sys::ffi::pg_guard_ffi_boundary(|| startup(inner, operation, descriptor));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn counting_shutdown(receiver: *mut pg_sys::DestReceiver) {
    let inner = (*(receiver as *mut Counting)).inner;
    if let Some(shutdown) = (*inner).rShutdown {
        // SAFETY: as in counting_receive.
        pg_sys::ffi::pg_guard_ffi_boundary(|| shutdown(inner));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn counting_destroy(receiver: *mut pg_sys::DestReceiver) {
    let inner = (*(receiver as *mut Counting)).inner;
    if let Some(destroy) = (*inner).rDestroy {
        // SAFETY: as in counting_receive.
        pg_sys::ffi::pg_guard_ffi_boundary(|| destroy(inner));
    }
}

/// Around every ExecutorRun: a read_write session's rows into a relation
/// that CREATE TABLE AS (SELECT INTO, CREATE MATERIALIZED VIEW, CREATE TABLE
/// AS EXECUTE) creates, or that REFRESH MATERIALIZED VIEW fills, pass through
/// a counting receiver. The receiver is known only here: a portal sets it
/// after ExecutorStart. (From 17, CREATE MATERIALIZED VIEW fills its
/// relation as REFRESH does, through a transient relation's receiver.)
///
/// # Safety
/// `query` must be the QueryDesc ExecutorRun was given.
unsafe fn around_run(query: *mut pg_sys::QueryDesc, run: &mut dyn FnMut()) {
    let dest = (*query).dest;
    let fills = !dest.is_null()
        && matches!(
            (*dest).mydest,
            pg_sys::CommandDest::DestIntoRel | pg_sys::CommandDest::DestTransientRel
        );
    if !fills || !super::session::guarded() {
        return run();
    }
    let Some(schema) = super::custom::writer() else {
        return run();
    };
    let counting = pg_sys::palloc0(std::mem::size_of::<Counting>()) as *mut Counting;
    (*counting).base = pg_sys::DestReceiver {
        receiveSlot: Some(counting_receive),
        rStartup: Some(counting_startup),
        rShutdown: Some(counting_shutdown),
        rDestroy: Some(counting_destroy),
        mydest: (*dest).mydest,
    };
    (*counting).inner = dest;
    (*counting).namespace = schema.namespace;
    (*counting).shape = Shape {
        fillfactor: INTO_FILLFACTOR.with(Cell::get),
        index_fillfactor: 100,
        ..Shape::default()
    };
    (*query).dest = counting as *mut pg_sys::DestReceiver;
    run();
    (*query).dest = dest;
}

/// The fillfactor a CREATE TABLE AS gives its relation (WITH (fillfactor)).
///
/// # Safety
/// `into` must be a valid IntoClause (or NULL).
unsafe fn fillfactor_of(into: *mut pg_sys::IntoClause) -> i64 {
    if into.is_null() {
        return 100;
    }
    for option in PgList::<pg_sys::DefElem>::from_pg((*into).options).iter_ptr() {
        let name = (*option).defname;
        if (*option).defnamespace.is_null()
            && !name.is_null()
            && std::ffi::CStr::from_ptr(name).to_bytes() == b"fillfactor"
        {
            return i64::from(pg_sys::defGetInt32(option));
        }
    }
    100
}

/// ALTER TABLE subcommands that would let a credential's rows pass its
/// quota trigger: enabling or disabling triggers (only the quota trigger is
/// the credential's to touch, and it may not).
#[allow(non_upper_case_globals)] // bindgen's names of the C enum's constants
fn touches_triggers(subtype: pg_sys::AlterTableType::Type) -> bool {
    use pg_sys::AlterTableType::*;
    matches!(
        subtype,
        AT_EnableTrig
            | AT_EnableAlwaysTrig
            | AT_EnableReplicaTrig
            | AT_DisableTrig
            | AT_EnableTrigAll
            | AT_DisableTrigAll
            | AT_EnableTrigUser
            | AT_DisableTrigUser
    )
}

/// What an ALTER TABLE may write besides rows: a copy of the table, or a
/// new index.
#[derive(PartialEq, PartialOrd)]
enum Writes {
    Nothing,
    Index,
    Copy,
}

/// # Safety
/// `command` must be a valid AlterTableCmd.
#[allow(non_upper_case_globals)] // as above
unsafe fn writes(command: *mut pg_sys::AlterTableCmd) -> Writes {
    use pg_sys::AlterTableType::*;
    match (*command).subtype {
        AT_AlterColumnType | AT_SetLogged | AT_SetUnLogged => Writes::Copy,
        AT_AddColumn if fills_rows((*command).def) => Writes::Copy,
        AT_AddIndex => Writes::Index,
        AT_AddConstraint => {
            let constraint = (*command).def as *mut pg_sys::Constraint;
            if !constraint.is_null()
                && (*constraint).type_ == pg_sys::NodeTag::T_Constraint
                && matches!(
                    (*constraint).contype,
                    pg_sys::ConstrType::CONSTR_PRIMARY
                        | pg_sys::ConstrType::CONSTR_UNIQUE
                        | pg_sys::ConstrType::CONSTR_EXCLUSION
                )
                && (*constraint).indexname.is_null()
            {
                Writes::Index
            } else {
                Writes::Nothing
            }
        }
        _ => Writes::Nothing,
    }
}

/// Whether ADD COLUMN writes every row again: a default that is not a
/// constant (PostgreSQL keeps a constant one in the catalog), an identity or
/// a generated column.
///
/// # Safety
/// `definition` must be the ColumnDef of an ADD COLUMN (or NULL).
unsafe fn fills_rows(definition: *mut pg_sys::Node) -> bool {
    if definition.is_null() || (*definition).type_ != pg_sys::NodeTag::T_ColumnDef {
        return false;
    }
    let column = definition as *mut pg_sys::ColumnDef;
    if (*column).identity != 0 || (*column).generated != 0 || !(*column).raw_default.is_null() {
        return true;
    }
    PgList::<pg_sys::Constraint>::from_pg((*column).constraints)
        .iter_ptr()
        .any(|constraint| match (*constraint).contype {
            pg_sys::ConstrType::CONSTR_IDENTITY | pg_sys::ConstrType::CONSTR_GENERATED => true,
            pg_sys::ConstrType::CONSTR_DEFAULT => !is_constant((*constraint).raw_expr),
            _ => false,
        })
}

/// A literal, possibly cast (`0`, `'x'::text`).
///
/// # Safety
/// `node` must be a raw expression node (or NULL).
unsafe fn is_constant(node: *mut pg_sys::Node) -> bool {
    if node.is_null() {
        return true;
    }
    match (*node).type_ {
        pg_sys::NodeTag::T_A_Const => true,
        pg_sys::NodeTag::T_TypeCast => is_constant((*(node as *mut pg_sys::TypeCast)).arg),
        _ => false,
    }
}

/// What `after` compares with: the schema's stored generated columns before
/// the statement (those of tables made before 0.3.0 stay; a statement may
/// add none).
pub(super) struct Before {
    stored_generated: i64,
}

/// Whether `after` checks a statement of this kind: those that can add to
/// what the caps count.
///
/// # Safety
/// `statement` must be a valid utility statement node.
unsafe fn adds_objects(statement: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    matches!(
        (*statement).type_,
        T_CreateStmt
            | T_CreateTableAsStmt
            | T_ViewStmt
            | T_IndexStmt
            | T_CreateSeqStmt
            | T_AlterTableStmt
    )
}

/// Before a DDL statement the utility hook admitted for a read_write
/// session: refuses what would disable the quota trigger (42501), and an
/// index build or rewrite whose estimate passes the quota (53400); notes
/// the fillfactor of the relation a CREATE TABLE AS fills.
///
/// # Safety
/// `statement` must be a valid utility statement node.
pub(super) unsafe fn before(statement: *mut pg_sys::Node, namespace: pg_sys::Oid) -> Before {
    let before = Before {
        stored_generated: if adds_objects(statement) {
            crate::error::or_raise(crate::custom_schema::usage(namespace)).stored_generated
        } else {
            0
        },
    };
    check_before(statement, namespace);
    before
}

/// # Safety
/// As `before`.
unsafe fn check_before(statement: *mut pg_sys::Node, namespace: pg_sys::Oid) {
    use pg_sys::NodeTag::*;
    let (relation, writes) = match (*statement).type_ {
        T_CreateTableAsStmt => {
            let into = (*(statement as *mut pg_sys::CreateTableAsStmt)).into;
            INTO_FILLFACTOR.with(|fillfactor| fillfactor.set(fillfactor_of(into)));
            return;
        }
        T_IndexStmt => {
            let index = statement as *mut pg_sys::IndexStmt;
            (super::custom::relation_of((*index).relation), Writes::Index)
        }
        T_AlterTableStmt => {
            let alter = statement as *mut pg_sys::AlterTableStmt;
            let mut most = Writes::Nothing;
            for command in PgList::<pg_sys::AlterTableCmd>::from_pg((*alter).cmds).iter_ptr() {
                if touches_triggers((*command).subtype) {
                    super::session::refuse(
                        "a bi_access read_write credential may not enable or disable triggers: \
                         bi_access's quota trigger counts what it writes"
                            .into(),
                        "bi_access.custom_schema_quota applies to every table of the custom schema.",
                    );
                }
                let this = writes(command);
                if this > most {
                    most = this;
                }
            }
            (super::custom::relation_of((*alter).relation), most)
        }
        _ => return,
    };
    if writes == Writes::Nothing || relation == pg_sys::InvalidOid {
        return;
    }
    let Some(quota) = settings::custom_schema_quota_bytes() else {
        return;
    };
    let size = schema_size(namespace);
    let estimate = estimate(relation, &writes);
    if size.saturating_add(estimate) > quota {
        BiError::QuotaWouldExceed {
            what: if writes == Writes::Copy {
                "rewriting this table".into()
            } else {
                "building this index".into()
            },
            size,
            adding: estimate,
            quota,
        }
        .raise();
    }
}

/// What an index build or a rewrite of the table would write: a copy of the
/// table with its TOAST and indexes, or an index holding at most the table's
/// rows (its heap and TOAST).
fn estimate(relation: pg_sys::Oid, writes: &Writes) -> i64 {
    let function = if *writes == Writes::Copy {
        "pg_total_relation_size"
    } else {
        "pg_table_size"
    };
    Spi::get_one_with_args::<i64>(
        &format!("SELECT pg_catalog.{function}($1)"),
        &[relation.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// After a DDL statement the utility hook admitted for a read_write
/// session: the quota trigger on every table of the schema, the caps, and
/// for an index build or rewrite the quota itself; each refusal undoes the
/// statement.
///
/// # Safety
/// `statement` must be a valid utility statement node.
pub(super) unsafe fn after(statement: *mut pg_sys::Node, namespace: pg_sys::Oid, before: Before) {
    use pg_sys::NodeTag::*;
    let tag = (*statement).type_;
    if !adds_objects(statement) {
        return;
    }
    if matches!(tag, T_CreateStmt | T_CreateTableAsStmt | T_AlterTableStmt) {
        crate::error::or_raise(crate::db::as_superuser(|| {
            crate::custom_schema::add_quota_triggers(Some(namespace))
        }));
    }
    refuse_past_caps(namespace, &before);
    if matches!(tag, T_IndexStmt | T_AlterTableStmt) {
        refuse_past_quota(namespace);
    }
}

/// 53400 for the first cap the schema is past; 42501 for a new stored
/// generated column, whose values the quota trigger never sees (PostgreSQL
/// computes them after BEFORE triggers).
fn refuse_past_caps(namespace: pg_sys::Oid, before: &Before) {
    let usage = crate::error::or_raise(crate::custom_schema::usage(namespace));
    if usage.stored_generated > before.stored_generated {
        super::session::refuse(
            "a bi_access read_write credential may not create stored generated columns: \
             the custom schema's quota cannot count their values"
                .into(),
            "Compute the value in the INSERT or UPDATE, or in a view.",
        );
    }
    for (count, cap, what, setting) in [
        (
            usage.relations,
            settings::custom_schema_max_relations(),
            "relations",
            "custom_schema_max_relations",
        ),
        (
            usage.columns,
            settings::custom_schema_max_columns(),
            "columns",
            "custom_schema_max_columns",
        ),
        (
            usage.expressions,
            settings::custom_schema_max_expressions(),
            "stored expressions and constraints",
            "custom_schema_max_expressions",
        ),
    ] {
        if let Some(cap) = cap.filter(|cap| count > i64::from(*cap)) {
            BiError::CustomSchemaCap {
                what,
                count,
                cap,
                setting,
            }
            .raise();
        }
    }
}

/// Writes into a table of the custom schema need its quota trigger in
/// place (a table made by someone else, or whose trigger a superuser
/// dropped or disabled, waits for a sync): 55000 otherwise. Between a
/// package upgrade from 0.2.0 and ALTER EXTENSION UPDATE there is no
/// trigger function yet, and writes go on as 0.2.0 let them.
pub(super) fn require_trigger(relid: pg_sys::Oid) {
    if settings::custom_schema_quota_bytes().is_none() {
        return;
    }
    // SAFETY: the relation is locked by the statement about to write it;
    // its relcache entry is opened and closed here.
    let guarded = unsafe {
        let relation = pg_sys::RelationIdGetRelation(relid);
        if relation.is_null() {
            return;
        }
        let kind = (*(*relation).rd_rel).relkind as u8;
        let guarded = !matches!(kind, b'r' | b'p') || has_quota_trigger(relation);
        pg_sys::RelationClose(relation);
        guarded
    };
    // Before the update that brings the trigger's function, as 0.2.0 did.
    // (Looked up as the superuser: a credential has no USAGE on that schema.)
    if !guarded
        && crate::db::as_superuser(crate::custom_schema::quota_function_exists).unwrap_or(true)
    {
        // SAFETY: a syscache lookup; NULL for a vanished relation.
        let name = unsafe { pg_sys::get_rel_name(relid) };
        let name = if name.is_null() {
            relid.to_u32().to_string()
        } else {
            // SAFETY: a NUL-terminated name from the syscache.
            unsafe { std::ffi::CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned()
        };
        BiError::QuotaUnguarded(name).raise();
    }
}

/// # Safety
/// `relation` must be an open relcache entry.
unsafe fn has_quota_trigger(relation: pg_sys::Relation) -> bool {
    let triggers = (*relation).trigdesc;
    if triggers.is_null() {
        return false;
    }
    (0..(*triggers).numtriggers as usize).any(|index| {
        let trigger = (*triggers).triggers.add(index);
        let enabled = (*trigger).tgenabled as u8;
        !(*trigger).tgname.is_null()
            && std::ffi::CStr::from_ptr((*trigger).tgname).to_bytes()
                == crate::names::QUOTA_TRIGGER.as_bytes()
            && matches!(enabled, b'O' | b'A')
            && is_quota_function((*trigger).tgfoid)
    })
}

/// Whether a function is bi_access's quota trigger function.
fn is_quota_function(function: pg_sys::Oid) -> bool {
    // SAFETY: syscache lookups; NULL for a missing function or schema.
    unsafe {
        let name = pg_sys::get_func_name(function);
        let schema = pg_sys::get_namespace_name(pg_sys::get_func_namespace(function));
        !name.is_null()
            && !schema.is_null()
            && std::ffi::CStr::from_ptr(name).to_bytes() == crate::names::QUOTA_FUNCTION.as_bytes()
            && std::ffi::CStr::from_ptr(schema).to_bytes() == crate::names::SCHEMAS[1].as_bytes()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn plain(indexes: i64) -> Shape {
        Shape {
            fillfactor: 100,
            plain_indexes: indexes,
            index_fillfactor: 100,
            ..Shape::default()
        }
    }

    #[test]
    fn a_row_counts_at_least_its_bytes_and_its_page_share() {
        // A 36-byte row: 44 bytes with alignment and line pointer.
        assert!(plain(0).weight(36, 0) >= 44);
        // A row just too large for two per page takes a whole page.
        assert_eq!(plain(0).weight(4100, 0) - 4100 - 4100 / 16, BLOCK);
        // At fillfactor 10 a row of 1 kB takes a page too.
        let sparse = Shape {
            fillfactor: 10,
            ..plain(0)
        };
        assert!(sparse.weight(1000, 0) >= BLOCK);
    }

    #[test]
    fn indexes_and_copied_values_count() {
        assert!(plain(2).weight(100, 0) >= plain(0).weight(100, 0) + 2 * 2 * 116);
        assert!(plain(0).weight(40, 1_000_000) > 1_000_000);
        let expression = Shape {
            expression_indexes: 1,
            ..plain(0)
        };
        assert!(expression.weight(30, 0) >= 2 * MAX_INDEX_ENTRY);
    }

    #[test]
    fn the_allowance_is_64_mb_or_a_tenth() {
        assert_eq!(allowance(10 << 20), 64 << 20);
        assert_eq!(allowance(10 << 30), 1 << 30);
    }
}
