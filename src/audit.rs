//! The append-only event log: one row per management call, reveals of a
//! password included. `actor` is the login (session_user, which a SECURITY
//! DEFINER function does not change) plus the application's own user when it
//! sets `bi_access.actor` for the transaction. The statement is
//! `records::append_event`.

pub use crate::records::{Subject, NO_SUBJECT};

use crate::error::Result;

pub fn record(action: &str, subject: &Subject, detail: serde_json::Value) -> Result<()> {
    crate::records::append_event(action, subject, detail)
}
