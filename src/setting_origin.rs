//! Where a setting's value comes from, and the statement that changes it
//! there: a fix that says `ALTER SYSTEM` for a value made with `ALTER
//! DATABASE` changes nothing (the database's value wins).

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};

use crate::db;
use crate::error::Result;

/// The statement that sets `name` to `value` (or, with None, resets it)
/// where its value comes from in this session: the session itself, the
/// database's settings, the login role's (in this database or everywhere),
/// a configuration file, or else ALTER SYSTEM (which, for a bi_access setting, needs the library
/// loaded before 17).
pub fn change(name: &str, value: Option<&str>) -> Result<String> {
    let (source, file, line) = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT source, coalesce(sourcefile, ''), sourceline FROM pg_catalog.pg_settings \
                 WHERE name = $1",
                Some(1),
                &[name.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::SpiError>((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
            row.get::<i32>(3)?,
        ))
    })?;
    let action = match value {
        Some(value) => format!("SET {name} = {}", quote_literal(value)),
        None => format!("RESET {name}"),
    };
    let database = || -> Result<String> {
        Ok(quote_identifier(
            db::first::<String>("SELECT current_database()::text", &[])?.unwrap_or_default(),
        ))
    };
    let login = || -> Result<String> {
        Ok(quote_identifier(
            db::first::<String>("SELECT session_user::text", &[])?.unwrap_or_default(),
        ))
    };
    Ok(match source.as_str() {
        // SET in the session calling check(): it ends with the session.
        "session" => format!("{action};"),
        "database" => format!("ALTER DATABASE {} {action};", database()?),
        "user" => format!("ALTER ROLE {} {action};", login()?),
        "database user" => format!(
            "ALTER ROLE {} IN DATABASE {} {action};",
            login()?,
            database()?
        ),
        "configuration file" if !file.ends_with("postgresql.auto.conf") => {
            let at = line.map(|line| format!(" line {line}")).unwrap_or_default();
            match value {
                Some(value) => format!(
                    "Set {name} = {} in {file}{at}, then SELECT pg_reload_conf();",
                    quote_literal(value)
                ),
                None => format!("Remove {name} from {file}{at}, then SELECT pg_reload_conf();"),
            }
        }
        _ => {
            let load = if name.starts_with("bi_access.") {
                "LOAD 'bi_access'; "
            } else {
                ""
            };
            format!("{load}ALTER SYSTEM {action}; SELECT pg_reload_conf();")
        }
    })
}
