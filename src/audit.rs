//! The append-only event log: one row per management call, reveals of a
//! password included. `actor` is the login (session_user, which a SECURITY
//! DEFINER function does not change) plus the application's own user when it
//! sets `bi_access.actor` for the transaction.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::error::Result;
use crate::settings;

pub struct Subject<'a> {
    pub role_name: Option<&'a str>,
    pub org_id: Option<&'a str>,
}

pub const NO_SUBJECT: Subject<'static> = Subject {
    role_name: None,
    org_id: None,
};

pub fn record(action: &str, subject: &Subject, detail: serde_json::Value) -> Result<()> {
    let actor = settings::actor();
    Spi::run_with_args(
        "INSERT INTO bi_access.event (action, role_name, org_id, actor, detail) \
         VALUES ($1, $2, $3, session_user || coalesce(' (' || $4 || ')', ''), $5)",
        &[
            action.into(),
            subject.role_name.into(),
            subject.org_id.into(),
            actor.into(),
            JsonB(detail).into(),
        ],
    )?;
    Ok(())
}
