//! Connection limits of BI sessions, checked by the login gate: an org's
//! (`bi_access.org_connection_limit`) and the server's
//! (`bi_access.max_bi_connections`), on every server, primary or standby. A
//! credential's own limit is its role's CONNECTION LIMIT, which PostgreSQL
//! checks before the gate; a credential generated without one (`-1`) is
//! still counted here. During an overlap rotation the credential has two
//! roles, each with that CONNECTION LIMIT: here the limit holds for both
//! roles' sessions together.
//!
//! Sessions are counted from the proc array, which holds a backend from the
//! moment its login is known, before it reaches the gate or sends anything:
//! a session that never sends a statement counts, and so does one logging
//! in at the same moment (two logins racing may both be refused at the last
//! free slot; they are never both admitted past it).

use pgrx::pg_sys;

use crate::db;
use crate::error::BiError;
use crate::names;
use crate::settings;

/// Refuses the login (FATAL 53300) past the server's or the org's limit.
/// The org's sessions are some of the server's: while the server has fewer
/// BI sessions than the org's limit the org cannot be over it, and its count
/// (a query on bi_access's records, as the bootstrap superuser: a credential
/// may not read them) is skipped.
pub(super) fn check() {
    credential_pair();
    let server_limit = settings::max_bi_connections();
    let org_limit = settings::org_connection_limit();
    if server_limit.is_none() && org_limit.is_none() {
        return;
    }
    let others = other_bi_sessions();
    let on_server = others.len() as i64;
    if let Some(limit) = server_limit {
        if on_server >= i64::from(limit) {
            too_many(format!(
                "too many bi_access connections on this server ({limit}, bi_access.max_bi_connections)"
            ));
        }
    }
    let Some(limit) = org_limit else { return };
    if on_server < i64::from(limit) {
        return;
    }
    // SAFETY: a read of backend-local state.
    let database = unsafe { pg_sys::MyDatabaseId };
    let here: Vec<i64> = others
        .iter()
        .filter(|(_, db)| *db == database)
        .map(|(role, _)| i64::from(role.to_u32()))
        .collect();
    let of_org = match db::as_superuser(|| crate::records::sessions_of_my_org(here)) {
        Ok(count) => count,
        Err(error) => super::login::refuse(error),
    };
    if of_org.is_some_and(|count| count >= i64::from(limit)) {
        too_many(format!(
            "too many connections for this organization's bi_access credentials ({limit}, bi_access.org_connection_limit)"
        ));
    }
}

/// During an overlap rotation: the login's sessions and its other role's
/// together within the credential's connection limit. Outside one (the
/// record has no pair) PostgreSQL's own check of the role's limit is all.
fn credential_pair() {
    let pair = super::login::with_record(|record| record.and_then(|record| record.overlap));
    let Some((other_role, limit)) = pair else {
        return;
    };
    // SAFETY: a read of backend-local state.
    let me = unsafe { pg_sys::GetSessionUserId() };
    let both = other_bi_sessions()
        .iter()
        .filter(|(login, _)| *login == me || i64::from(login.to_u32()) == other_role)
        .count() as i64;
    if both >= i64::from(limit) {
        too_many(format!(
            "too many connections for this bi_access credential's two roles during its overlap rotation \
             ({limit}, its connection_limit)"
        ));
    }
}

fn too_many(what: String) -> ! {
    super::login::refuse(BiError::TooManyConnections(what))
}

/// The login role and database of every other backend whose login
/// (PGPROC's roleId: the session user, which SET ROLE does not change) is a
/// member of the credential group. Read without the proc array's lock but
/// for each candidate's own check: a count for a limit, which a login or
/// logout racing it may move by one.
fn other_bi_sessions() -> Vec<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: ProcGlobal and its PGPROC array live in shared memory for the
    // life of the server; pid, roleId and databaseId are plain integers read
    // as they are; the membership check is a syscache lookup that raises for
    // nothing.
    unsafe {
        let group = pg_sys::get_role_oid(names::CREDENTIAL_GROUP_C.as_ptr(), true);
        let global = pg_sys::ProcGlobal;
        if group == pg_sys::InvalidOid || global.is_null() {
            return Vec::new();
        }
        let mut sessions = Vec::new();
        for i in 0..(*global).allProcCount as usize {
            let process = (*global).allProcs.add(i);
            let pid = std::ptr::read_volatile(std::ptr::addr_of!((*process).pid));
            let login = std::ptr::read_volatile(std::ptr::addr_of!((*process).roleId));
            let database = std::ptr::read_volatile(std::ptr::addr_of!((*process).databaseId));
            // A PGPROC back on the free list keeps its last pid and role:
            // only one the proc array still holds for that pid is a session.
            if pid != 0
                && pid != pg_sys::MyProcPid
                && login != pg_sys::InvalidOid
                && pg_sys::is_member_of_role_nosuper(login, group)
                && pg_sys::BackendPidGetProc(pid) == process
            {
                sessions.push((login, database));
            }
        }
        sessions
    }
}
