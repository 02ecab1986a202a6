//! Exposed tables: which tables BI roles may read, and bringing each to its
//! exposed state (a SELECT grant to the reader group, RLS on, the policies
//! of `policies`). Grants go to the reader group only, never to credential
//! roles, so a table's ACL stays one entry long whatever the number of
//! credentials. By job:
//! - `registry`: the list of exposed and hidden tables (what is exposed,
//!   what is hidden, what is new);
//! - `tables`: the calls on one table (expose_table, share_table,
//!   hide_table), which
//!   write the registry and then sync the table;
//! - `sync`: bringing tables to their exposed state (sync_tables, the steps
//!   of CALL bi_access.sync(), unsynced_tables);
//! - `catalog`: what the catalogs say of a relation, and what may be exposed;
//! - `events`: the event-trigger handlers (new tables, weakened tables,
//!   dropped tables).

mod catalog;
mod events;
mod registry;
mod sync;
mod tables;

pub use catalog::{org_column_types, ACCEPTED_TYPE};
pub use events::{after_ddl, forget_dropped};
pub use registry::table_name;
pub use sync::{sync_begin, sync_end, sync_table, sync_tables, unsynced_tables, Unsynced};
pub use tables::{expose_table, hide_all, hide_table, share_table};

thread_local! {
    static CHANGING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While bi_access itself changes a table's RLS, policies or grants, the
/// ddl_command_end trigger must not take its intermediate steps for a
/// weakening.
pub(crate) struct ChangingTables {
    outer: bool,
}

impl ChangingTables {
    pub(crate) fn begin() -> Self {
        ChangingTables {
            outer: CHANGING.with(|changing| changing.replace(true)),
        }
    }

    pub(crate) fn active() -> bool {
        CHANGING.with(std::cell::Cell::get)
    }
}

impl Drop for ChangingTables {
    fn drop(&mut self) {
        CHANGING.with(|changing| changing.set(self.outer));
    }
}
