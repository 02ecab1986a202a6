//! What DROP EXTENSION must do first, from an event trigger at
//! ddl_command_start: refuse while live credentials exist (their roles would
//! outlive the records that explain them), else put every exposed table back
//! as it was and drop this database's reader group, so nothing of bi_access
//! stays behind. The cluster-wide bi_access_admin role stays: other databases
//! of the cluster may use it.

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

use crate::db;
use crate::error::{BiError, Result};
use crate::exposure;
use crate::roles;

pub fn before_drop() -> Result<()> {
    let live = db::first::<i64>(
        "SELECT count(*) FROM bi_access.credential WHERE status <> 'deleted'",
        &[],
    )?
    .unwrap_or(0);
    if live > 0 {
        return Err(BiError::LiveCredentials(live));
    }
    exposure::hide_all()?;
    let reader = quote_identifier(roles::reader_group()?);
    Spi::run(&format!("DROP OWNED BY {reader}"))?;
    Spi::run(&format!("DROP ROLE {reader}"))?;
    Ok(())
}
