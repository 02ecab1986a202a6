//! What every call of the SQL surface checks before it acts, in this order:
//!
//! - a call that writes runs on a primary: on a standby it fails with 25006
//!   and a HINT naming the primary this standby replays from (without the
//!   check, the first row lock or transaction id fails with XX000);
//! - this database's SQL objects are the library's version: between a
//!   package upgrade and `ALTER EXTENSION bi_access UPDATE` an older
//!   version's objects call this library, and a management call would meet
//!   tables and columns of another shape (src/legacy.rs). It fails with
//!   55000 naming the update instead; what BI sessions need (the org
//!   lookups, the views' helpers, `pgbouncer_auth`, the event triggers)
//!   does not come here and keeps working;
//! - every argument without a NULL meaning is given (22004 naming it).

use pgrx::prelude::*;

use crate::db;
use crate::error::{BiError, Result};
use crate::names;

/// One call of the SQL surface, past its checks.
pub struct Call(&'static str);

impl Call {
    /// A call that writes: a primary, and SQL objects of this version.
    pub fn management(name: &'static str) -> Result<Call> {
        // SAFETY: a read of shared memory's recovery state.
        if unsafe { pg_sys::RecoveryInProgress() } {
            return Err(BiError::OnStandby {
                call: name,
                primary: primary_of_this_standby(),
            });
        }
        Self::reading(name)
    }

    /// A call that only reads (check(), unsynced_tables()): any server, but
    /// SQL objects of this version.
    pub fn reading(name: &'static str) -> Result<Call> {
        require_current_sql()?;
        Ok(Call(name))
    }

    /// The argument, or 22004 when it is NULL.
    pub fn required<T>(&self, argument: &'static str, value: Option<T>) -> Result<T> {
        value.ok_or(BiError::NullArgument {
            call: self.0,
            argument,
        })
    }

    /// The list's elements, or 22004 when one of them is NULL.
    pub fn no_null_element<T>(
        &self,
        argument: &'static str,
        list: Vec<Option<T>>,
    ) -> Result<Vec<T>> {
        list.into_iter()
            .map(|element| self.required(argument, element))
            .collect()
    }
}

/// 55000 naming ALTER EXTENSION bi_access UPDATE while this database's SQL
/// objects are another version's.
pub fn require_current_sql() -> Result<()> {
    match sql_version_behind()? {
        Some(installed) => Err(BiError::SqlBehind { installed }),
        None => Ok(()),
    }
}

/// The version of this database's bi_access SQL objects when it is not the
/// library's. Inside CREATE or ALTER EXTENSION (the scripts call this
/// library on their way from one version to the next) nothing is behind.
pub fn sql_version_behind() -> Result<Option<String>> {
    // SAFETY: a read of a backend-local flag.
    if unsafe { pg_sys::creating_extension } {
        return Ok(None);
    }
    let installed = db::first::<String>(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
        &[names::EXTENSION.into()],
    )?;
    Ok(installed.filter(|version| version != names::LIBRARY_VERSION))
}

/// Where the primary is, as this standby's WAL receiver connects to it
/// ("host H port P"), if it streams from one.
fn primary_of_this_standby() -> Option<String> {
    // A read-only SPI client: a writable one assigns a transaction id, which
    // a standby refuses (XX000).
    let found = Spi::connect(|client| {
        let table = client.select(
            "SELECT sender_host, sender_port FROM pg_catalog.pg_stat_wal_receiver",
            Some(1),
            &[],
        )?;
        if table.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let row = table.first();
        Ok(Some((row.get::<String>(1)?, row.get::<i32>(2)?)))
    });
    match found {
        Ok(Some((Some(host), Some(port)))) => Some(format!("host {host} port {port}")),
        _ => None,
    }
}
