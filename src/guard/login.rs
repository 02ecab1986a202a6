//! What the login gate's checks share (gate.rs runs them): whether they are
//! running, the login's record, and how a check ends the session.

use std::cell::{Cell, RefCell};

use crate::error::BiError;
use crate::login_record::LoginRecord;

thread_local! {
    /// Whether the checks are running: a FATAL now refuses the login.
    static CHECKING: Cell<bool> = const { Cell::new(false) };
    /// The login's record, read once by the database check (home.rs) for
    /// the allowlist and connection checks after it; None on a Citus
    /// worker, which holds no records.
    static RECORD: RefCell<Option<LoginRecord>> = const { RefCell::new(None) };
}

pub(super) fn checking(running: bool) {
    CHECKING.with(|checking| checking.set(running));
}

/// Ends the session with `error` (FATAL). While the checks run, that
/// refuses the login, which the usage view counts by its cause.
pub(super) fn refuse(error: BiError) -> ! {
    if CHECKING.with(Cell::get) {
        crate::usage::refused(&error);
    }
    error.raise_fatal()
}

/// The database check found the login's record.
pub(super) fn remember_record(record: LoginRecord) {
    RECORD.with(|kept| *kept.borrow_mut() = Some(record));
}

/// `f` of the login's record, as the database check read it (None where it
/// found none: a Citus worker).
pub(super) fn with_record<T>(f: impl FnOnce(Option<&LoginRecord>) -> T) -> T {
    RECORD.with(|kept| f(kept.borrow().as_ref()))
}
