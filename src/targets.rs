//! Named targets: where a credential is told to connect (host, port,
//! sslmode) and the standby, by its `application_name`, whose replay makes
//! the credential usable there (none: the primary). The settings
//! `bi_access.host/port/sslmode/replica_application_name` define the target
//! named `default`; every other target is a row of `bi_access.target`.
//! A credential's record names its target, so `pending` and `deleting` wait
//! for that target's standby and no other.

use pgrx::prelude::*;
use serde_json::json;

use crate::audit::{self, NO_SUBJECT};
use crate::db;
use crate::error::{BiError, Result};
use crate::input;
use crate::names::DEFAULT_TARGET;
use crate::records::Record;
use crate::settings;
use crate::status::Status;

pub const SSLMODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

const MAX_NAME_LEN: usize = 63;
pub const MAX_HOST_LEN: usize = 255;

/// One target, resolved: what connection details and replay checks use.
pub struct Target {
    pub name: String,
    pub host: String,
    pub port: i32,
    pub sslmode: String,
    pub standby: Option<String>,
}

/// The target named `default`, from the settings (host `localhost` and this
/// server's port when they are unset).
pub fn default_target() -> Result<Target> {
    Ok(Target {
        name: DEFAULT_TARGET.into(),
        host: settings::host().unwrap_or_else(|| "localhost".into()),
        port: match settings::port() {
            0 => server_port()?,
            port => port,
        },
        sslmode: valid_sslmode(settings::sslmode(), "bi_access.sslmode")?,
        standby: settings::replica_application_name(),
    })
}

/// The target called `name`, or None when there is none.
pub fn find(name: &str) -> Result<Option<Target>> {
    if name == DEFAULT_TARGET {
        return default_target().map(Some);
    }
    let row = Spi::connect(|client| {
        let table = client.select(
            "SELECT host, port, sslmode, standby FROM bi_access.target WHERE name = $1",
            Some(1),
            &[name.into()],
        )?;
        if table.is_empty() {
            return Ok::<_, BiError>(None);
        }
        let row = table.first();
        Ok(Some((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<i32>(2)?.unwrap_or_default(),
            row.get::<String>(3)?,
            row.get::<String>(4)?,
        )))
    })?;
    let Some((host, port, sslmode, standby)) = row else {
        return Ok(None);
    };
    Ok(Some(Target {
        name: name.into(),
        host,
        port,
        // NULL: whatever bi_access.sslmode says.
        sslmode: match sslmode {
            Some(mode) => mode,
            None => valid_sslmode(settings::sslmode(), "bi_access.sslmode")?,
        },
        standby,
    }))
}

/// generate's `target` argument: NULL is `default`; an unknown name is 22023.
/// A named target's row is held (FOR SHARE) until the caller's transaction
/// ends, so a concurrent drop_target either waits and then sees the new
/// credential, or has dropped it first and generate finds no target.
pub fn for_generate(name: Option<&str>) -> Result<Target> {
    let name = name.unwrap_or(DEFAULT_TARGET);
    let unknown = || {
        BiError::InvalidParameter(format!(
            "target {} does not exist; bi_access.targets lists them",
            crate::error::shown(name)
        ))
    };
    if name != DEFAULT_TARGET {
        db::first_mut::<bool>(
            "SELECT true FROM bi_access.target WHERE name = $1 FOR SHARE",
            &[name.into()],
        )?
        .ok_or_else(unknown)?;
    }
    find(name)?.ok_or_else(unknown)
}

/// The standby whose replay a credential of target `name` waits for.
pub fn standby_of(name: &str) -> Result<Option<String>> {
    if name == DEFAULT_TARGET {
        return Ok(settings::replica_application_name());
    }
    db::first::<String>(
        "SELECT standby FROM bi_access.target WHERE name = $1",
        &[name.into()],
    )
}

/// Whether `standby` has replayed past `lsn` (true without a standby or an
/// LSN: the change is usable at commit).
pub fn replayed(standby: Option<&str>, lsn: Option<&str>) -> Result<bool> {
    let (Some(standby), Some(lsn)) = (standby, lsn) else {
        return Ok(true);
    };
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_replication \
                        WHERE application_name = $1 AND replay_lsn >= $2::pg_lsn)",
        &[standby.into(), lsn.into()],
    )?
    .unwrap_or(false))
}

/// Whether the standby of the credential's target has replayed past `lsn`
/// (true when the target has no standby: the change is usable at commit).
pub fn replayed_on_target(
    target: Option<&str>,
    lsn: Option<&str>,
    uncommitted: bool,
) -> Result<bool> {
    let Some(lsn) = lsn else {
        return Ok(true);
    };
    let standby = standby_of(target.unwrap_or(DEFAULT_TARGET))?;
    // Written by this very transaction: nothing of it is on the standby
    // before its commit is, whatever WAL the standby has replayed already.
    if standby.is_some() && uncommitted {
        return Ok(false);
    }
    replayed(standby.as_deref(), Some(lsn))
}

/// A credential's target, resolved; a named target that was removed behind
/// bi_access's back is an error, never a silent fallback.
pub fn of_credential(record: &Record) -> Result<Target> {
    find(&record.target)?.ok_or_else(|| BiError::TargetGone {
        role: record.role.clone(),
        target: record.target.clone(),
    })
}

/// What `set_target` is asked for (NULL sslmode: bi_access.sslmode's;
/// NULL standby: the primary).
pub struct Definition<'a> {
    pub name: &'a str,
    pub host: &'a str,
    pub port: i32,
    pub sslmode: Option<&'a str>,
    pub standby: Option<&'a str>,
}

/// Creates or updates a named target; the same call twice changes nothing
/// but the event log.
pub fn set_target(definition: Definition) -> Result<()> {
    let name = valid_name(definition.name)?;
    let host = definition.host;
    input::host("host", host, MAX_HOST_LEN)?;
    let port = match definition.port {
        port @ 1..=65535 => port,
        other => {
            return Err(BiError::InvalidParameter(format!(
                "port must be 1 to 65535, not {other}"
            )))
        }
    };
    let sslmode = match definition.sslmode {
        Some(mode) => Some(valid_sslmode(mode.to_string(), "sslmode")?),
        None => None,
    };
    let standby = match definition.standby {
        Some(standby)
            if standby.trim().is_empty()
                || standby.len() > MAX_NAME_LEN
                || standby.chars().any(|c| c.is_control() || !c.is_ascii()) =>
        {
            return Err(BiError::InvalidParameter(format!(
                "standby must be the application_name of a standby: 1 to {MAX_NAME_LEN} printable ASCII characters, or NULL for the primary"
            )))
        }
        standby => standby,
    };
    let change = db::first_mut::<String>(
        "WITH before AS (SELECT host, port, sslmode, standby FROM bi_access.target WHERE name = $1), \
         upsert AS ( \
             INSERT INTO bi_access.target AS t (name, host, port, sslmode, standby) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE \
                 SET host = excluded.host, port = excluded.port, sslmode = excluded.sslmode, \
                     standby = excluded.standby, updated_at = now() \
                 WHERE (t.host, t.port, t.sslmode, t.standby) \
                       IS DISTINCT FROM (excluded.host, excluded.port, excluded.sslmode, excluded.standby) \
             RETURNING 1) \
         SELECT CASE WHEN NOT EXISTS (SELECT FROM before) THEN 'created' \
                     WHEN EXISTS (SELECT FROM upsert) THEN 'updated' \
                     ELSE 'unchanged' END",
        &[
            name.into(),
            host.into(),
            port.into(),
            sslmode.as_deref().into(),
            standby.into(),
        ],
    )?
    .unwrap_or_default();
    audit::record(
        "set_target",
        &NO_SUBJECT,
        json!({
            "target": name, "host": host, "port": port, "sslmode": sslmode,
            "standby": standby, "change": change,
        }),
    )
}

/// Removes a named target no current credential uses.
pub fn drop_target(name: &str) -> Result<()> {
    let name = valid_name(name)?;
    let exists = db::first_mut::<bool>(
        "SELECT true FROM bi_access.target WHERE name = $1 FOR UPDATE",
        &[name.into()],
    )?
    .unwrap_or(false);
    if !exists {
        return Err(BiError::NoSuchTarget(name.into()));
    }
    // Lock the credentials that use it, so no generate for this target
    // commits in between (generate reads the target row FOR SHARE).
    let in_use = crate::records::lock_current_using(name)?;
    if in_use > 0 {
        return Err(BiError::TargetInUse {
            target: name.into(),
            credentials: in_use,
        });
    }
    db::exec(
        "DELETE FROM bi_access.target WHERE name = $1",
        &[name.into()],
    )?;
    audit::record("drop_target", &NO_SUBJECT, json!({ "target": name }))
}

/// A name set_target and drop_target accept: `default` is the settings'.
fn valid_name(name: &str) -> Result<&str> {
    if name.eq_ignore_ascii_case(DEFAULT_TARGET) {
        return Err(BiError::InvalidParameter(
            "the target \"default\" is defined by the settings bi_access.host, bi_access.port, \
             bi_access.sslmode and bi_access.replica_application_name"
                .into(),
        ));
    }
    input::name("a target name", name, MAX_NAME_LEN)?;
    Ok(name)
}

fn valid_sslmode(mode: String, what: &str) -> Result<String> {
    if SSLMODES.contains(&mode.as_str()) {
        Ok(mode)
    } else {
        Err(BiError::InvalidParameter(format!(
            "{what} {} is not one of {}",
            crate::error::shown(&mode),
            SSLMODES.join(", ")
        )))
    }
}

fn server_port() -> Result<i32> {
    // db::first reads without a transaction id, so the targets view works
    // on a standby too (Spi::get_one would assign one: XX000 there).
    Ok(
        db::first::<String>("SELECT pg_catalog.current_setting('port')", &[])?
            .and_then(|port| port.parse().ok())
            .unwrap_or(5432),
    )
}

/// For check(): each target whose standby is not connected (no row of
/// pg_stat_replication) while credentials wait for it (`pending` or
/// `deleting`): (target, standby, how many wait).
pub fn waiting_on_absent_standbys() -> Result<Vec<(String, String, i64)>> {
    let mut absent = Vec::new();
    for target in list()? {
        let Some(standby) = target.standby else {
            continue;
        };
        let waiting = db::first::<i64>(
            "SELECT count(*) FROM bi_access.credentials \
             WHERE target = $1 AND status::text = ANY ($3) \
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_stat_replication \
                               WHERE application_name = $2)",
            &[
                target.name.as_str().into(),
                standby.as_str().into(),
                vec![Status::Pending.as_str(), Status::Deleting.as_str()].into(),
            ],
        )?
        .unwrap_or(0);
        if waiting > 0 {
            absent.push((target.name, standby, waiting));
        }
    }
    Ok(absent)
}

/// The targets view: `default` first, then every named target, each with
/// its effective values.
pub fn list() -> Result<Vec<Target>> {
    let mut targets = vec![default_target()?];
    let names = db::column::<String>("SELECT name FROM bi_access.target ORDER BY name", &[])?;
    for name in names {
        targets.extend(find(&name)?);
    }
    Ok(targets)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn default_is_refused_in_any_case() {
        for name in ["default", "DEFAULT", "Default"] {
            assert!(matches!(
                valid_name(name),
                Err(BiError::InvalidParameter(_))
            ));
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("eu-replica").is_ok());
        for bad in ["", " ", " eu", "eu ", "a\nb", "eu\u{200B}", "\u{202E}ue"] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
        assert!(valid_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn sslmodes_are_libpq_s() {
        assert!(valid_sslmode("verify-full".into(), "sslmode").is_ok());
        assert!(valid_sslmode("on".into(), "sslmode").is_err());
    }
}
