//! `check()`'s findings on what credentials take of what the server shares
//! with the application (DESIGN property 13): custom-schema tables whose
//! quota is not counted, caps that `drop_custom_schema` could not drop in
//! one transaction, parallel workers, temporary files, and a standby whose
//! `hot_standby_feedback` lets BI queries hold back the primary's vacuum.
//! Each fix sets a value where it is set now (ALTER DATABASE or ALTER
//! SYSTEM), or names the standby to change.

use pgrx::prelude::*;

use crate::custom_schema;
use crate::db;
use crate::error::Result;
use crate::finding::Finding;
use crate::settings;

pub fn findings() -> Result<Vec<Finding>> {
    let mut findings = unguarded_tables()?;
    findings.extend(drop_locks()?);
    findings.extend(parallel_workers()?);
    findings.extend(temporary_files()?);
    findings.extend(standby_feedback()?);
    Ok(findings)
}

fn warning(object: String, finding: String, fix: String) -> Finding {
    Finding {
        severity: "warning",
        object,
        finding,
        fix,
    }
}

/// The statement that sets `name` to `value` where its value comes from.
fn set_where_made(name: &str, value: &str) -> Result<String> {
    crate::setting_origin::change(name, Some(value))
}

fn setting_int(name: &str) -> Result<i64> {
    Ok(db::first::<i64>(
        "SELECT pg_catalog.current_setting($1)::bigint",
        &[name.into()],
    )?
    .unwrap_or(0))
}

fn pretty(bytes: i64) -> Result<String> {
    Ok(db::first::<String>(
        "SELECT pg_catalog.pg_size_pretty($1::bigint)",
        &[bytes.into()],
    )?
    .unwrap_or_default())
}

/// A table of a custom schema without its quota trigger: its credentials'
/// writes are refused (55000) until a sync puts it back.
fn unguarded_tables() -> Result<Vec<Finding>> {
    Ok(custom_schema::unguarded_tables(None)?
        .into_iter()
        .map(|(table, _)| Finding {
            severity: "error",
            object: table,
            finding: "a table of an org's custom schema lacks bi_access's quota trigger (or it is \
                      disabled): its read_write credentials cannot write it"
                .into(),
            fix: "SELECT * FROM bi_access.sync_tables();".into(),
        })
        .collect())
}

/// The caps on what a custom schema holds against the shared lock table:
/// `drop_custom_schema` drops a schema at its caps in one transaction only
/// while the locks that takes fit in max_locks_per_transaction ×
/// (max_connections + max_prepared_transactions).
fn drop_locks() -> Result<Vec<Finding>> {
    let per_transaction = setting_int("max_locks_per_transaction")?;
    let slots = setting_int("max_connections")? + setting_int("max_prepared_transactions")?;
    let table = per_transaction * slots;
    let arithmetic = format!(
        "the lock table holds max_locks_per_transaction × (max_connections + \
         max_prepared_transactions) = {per_transaction} × {slots} = {table} locks"
    );
    let (Some(relations), Some(expressions)) = (
        settings::custom_schema_max_relations(),
        settings::custom_schema_max_expressions(),
    ) else {
        let (name, value) = if settings::custom_schema_max_relations().is_none() {
            (
                "bi_access.custom_schema_max_relations",
                settings::DEFAULT_CUSTOM_SCHEMA_MAX_RELATIONS,
            )
        } else {
            (
                "bi_access.custom_schema_max_expressions",
                settings::DEFAULT_CUSTOM_SCHEMA_MAX_EXPRESSIONS,
            )
        };
        return Ok(vec![warning(
            format!("setting {name}"),
            format!(
                "{name} is 0 (no cap): an org's custom schema may grow past what \
                 drop_custom_schema can drop in one transaction ({arithmetic})"
            ),
            set_where_made(name, &value.to_string())?,
        )]);
    };
    let (relations, expressions) = (i64::from(relations), i64::from(expressions));
    let needed = custom_schema::drop_locks(relations, expressions);
    if needed <= table {
        return Ok(vec![]);
    }
    let room = table - custom_schema::DROP_LOCKS_BESIDES;
    let more_locks = format!(
        "ALTER SYSTEM SET max_locks_per_transaction = {}; -- then restart the server",
        (needed + slots - 1) / slots.max(1)
    );
    let (name, fix) = if 6 * relations >= expressions && room - expressions >= 6 {
        let name = "bi_access.custom_schema_max_relations";
        (
            name,
            set_where_made(name, &((room - expressions) / 6).to_string())?,
        )
    } else if room - 6 * relations >= 1 {
        let name = "bi_access.custom_schema_max_expressions";
        (
            name,
            set_where_made(name, &(room - 6 * relations).to_string())?,
        )
    } else {
        ("max_locks_per_transaction", more_locks.clone())
    };
    let fix = if name == "max_locks_per_transaction" {
        fix
    } else {
        format!("{fix} Or: {more_locks}")
    };
    Ok(vec![warning(
        format!("setting {name}"),
        format!(
            "drop_custom_schema of a custom schema at its caps ({relations} relations, \
             {expressions} expressions) takes up to 6 × {relations} + {expressions} + {} = \
             {needed} locks in one transaction, but {arithmetic}: it could fail with \
             \"out of shared memory\"",
            custom_schema::DROP_LOCKS_BESIDES
        ),
        fix,
    )])
}

/// Credentials' share of the server's parallel workers: a credential
/// session's max_parallel_workers is capped by bi_access.max_parallel_workers
/// (a backend launches a worker only while fewer than its own
/// max_parallel_workers run on the server), which should leave the
/// application at least half of them.
fn parallel_workers() -> Result<Vec<Finding>> {
    let server = setting_int("max_parallel_workers")?;
    let half = server / 2;
    let share = settings::max_parallel_workers().map(i64::from);
    if share.is_some_and(|share| share <= half) {
        return Ok(vec![]);
    }
    let taken = share.map_or("every one".to_string(), |share| {
        share.min(server).to_string()
    });
    Ok(vec![warning(
        "setting bi_access.max_parallel_workers".into(),
        format!(
            "credentials' queries may take {taken} of the server's {server} parallel workers \
             (max_parallel_workers), more than half: the application's parallel queries then \
             get fewer or none"
        ),
        set_where_made("bi_access.max_parallel_workers", &half.to_string())?,
    )])
}

/// Free bytes of the filesystem holding the data directory (where
/// temporary files go unless temp_tablespaces says otherwise).
fn free_bytes() -> Option<i64> {
    // SAFETY: DataDir is this server's data directory, a NUL-terminated
    // path set at startup; statvfs only reads it.
    unsafe {
        let directory = pg_sys::DataDir;
        if directory.is_null() {
            return None;
        }
        let mut stats: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(directory, &mut stats) != 0 {
            return None;
        }
        Some((stats.f_bavail as i64).saturating_mul(stats.f_frsize as i64))
    }
}

/// Credentials' temporary files: each session may write
/// bi_access.temp_file_limit, one org's sessions that times
/// bi_access.org_connection_limit, all of them that times
/// max_bi_connections. Reported when one org's sessions could fill the free
/// space of the data directory's filesystem (or when there is no limit).
fn temporary_files() -> Result<Vec<Finding>> {
    let Some(free) = free_bytes() else {
        return Ok(vec![]);
    };
    // SAFETY: a read of a GUC variable of this backend.
    let connections = i64::from(unsafe { pg_sys::MaxConnections });
    let sessions = settings::max_bi_connections().map_or(connections, i64::from);
    let org_sessions = settings::org_connection_limit()
        .map_or(sessions, i64::from)
        .min(sessions);
    // Half the free space for an org: room for everything else the server writes.
    let fitting_kb = (free / 2 / org_sessions.max(1) / 1024).min(i64::from(i32::MAX));
    let fix = set_where_made("bi_access.temp_file_limit", &format!("{fitting_kb}kB"))?;
    let object = "setting bi_access.temp_file_limit".to_string();
    let Some(limit_kb) = settings::temp_file_limit_kb().map(i64::from) else {
        return Ok(vec![warning(
            object,
            format!(
                "credentials' temporary files are unbounded (bi_access.temp_file_limit = -1): \
                 one org's sessions may fill the {} free where the data directory is",
                pretty(free)?
            ),
            fix,
        )]);
    };
    let per_session = limit_kb * 1024;
    let org = per_session.saturating_mul(org_sessions);
    if org <= free {
        return Ok(vec![]);
    }
    Ok(vec![warning(
        object,
        format!(
            "one org's temporary files may take {} ({org_sessions} sessions × {}; all \
             credentials' {sessions} sessions {}), more than the {} free where the data \
             directory is",
            pretty(org)?,
            pretty(per_session)?,
            pretty(per_session.saturating_mul(sessions))?,
            pretty(free)?
        ),
        format!("{fix} Or lower bi_access.org_connection_limit."),
    )])
}

/// A standby whose hot_standby_feedback holds back this primary's vacuum
/// (pg_stat_replication.backend_xmin, or a physical slot's xmin): BI
/// queries there keep old row versions here, each for as long as its
/// transaction lasts.
fn standby_feedback() -> Result<Vec<Finding>> {
    let standbys = db::text_pairs(
        "SELECT 'standby ' || coalesce(nullif(application_name, ''), client_addr::text, pid::text), \
                pg_catalog.age(backend_xmin)::text \
         FROM pg_catalog.pg_stat_replication WHERE backend_xmin IS NOT NULL \
         UNION ALL \
         SELECT 'replication slot ' || slot_name, pg_catalog.age(xmin)::text \
         FROM pg_catalog.pg_replication_slots WHERE slot_type = 'physical' AND xmin IS NOT NULL \
         ORDER BY 1",
        &[],
    )?;
    if standbys.is_empty() {
        return Ok(vec![]);
    }
    let cap = |value: Option<i32>, name: &str| match value {
        Some(ms) => format!("at most bi_access.{name} ({ms} ms)"),
        None => format!("without limit (bi_access.{name} = 0)"),
    };
    let bounds = format!(
        "a statement {}, idle in its transaction {} at a time",
        cap(settings::statement_timeout_ms(), "statement_timeout"),
        cap(
            settings::idle_in_transaction_session_timeout_ms(),
            "idle_in_transaction_session_timeout"
        ),
    );
    Ok(standbys
        .into_iter()
        .map(|(object, age)| {
            warning(
                object,
                format!(
                    "hot_standby_feedback is on there: BI queries on that standby hold back \
                     vacuum on this primary (its horizon is {age} transactions old now), each for \
                     as long as its transaction lasts: {bounds}"
                ),
                "On that standby: ALTER SYSTEM SET hot_standby_feedback = off; SELECT \
                 pg_reload_conf(); (its long queries may then be cancelled by replay, after \
                 max_standby_streaming_delay), or keep it and lower bi_access.statement_timeout \
                 and bi_access.idle_in_transaction_session_timeout there."
                    .into(),
            )
        })
        .collect())
}
