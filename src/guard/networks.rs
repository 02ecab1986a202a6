//! Per-credential network allowlists (`generate(…, allowed_networks)`,
//! `set_networks`): a credential logs in only from an address its record's
//! list includes, on every server, preloaded or not.
//!
//! - At login (the gate, gate.rs): the client's address, libpq's as
//!   PostgreSQL took it from the connection (MyProcPort, through
//!   `inet_client_addr()`; IPv4 and IPv6), against the list; a login over a
//!   Unix socket has no address and is outside every list. Refused: FATAL
//!   28000, naming no address of the list.
//! - After a change: `set_networks` rewrites the role's pg_authid row
//!   (roles::touch), so each of its sessions is told of it as of a revoke,
//!   on a standby once replayed. At its next statement the session reads
//!   the list again and ends (FATAL 57P01, as standing.rs ends a revoked
//!   one) if its address is outside it. Statements between changes cost a
//!   flag test: the list is read again only after such a message.
//!
//! The list lives in bi_access's records, which only bi_access's own calls
//! write: the credential cannot change it by SET, startup options or role
//! settings (none of them reach the records, and the gate refuses
//! bi_access.* settings from the client).

use std::cell::Cell;

use pgrx::pg_sys;

use crate::db;
use crate::error::BiError;

thread_local! {
    /// A change to the login's role arrived since the list was last read.
    static STALE: Cell<bool> = const { Cell::new(false) };
    /// The syscache hash of the login's pg_authid row, as invalidation
    /// messages name it (0 before the gate ran: every message counts).
    static LOGIN_HASH: Cell<u32> = const { Cell::new(0) };
}

/// Told by standing.rs's callback of each change to a role (pg_authid),
/// during invalidation processing: no catalog access, no error. A message
/// about another role leaves the session alone (hash 0: all).
pub(super) fn role_changed(hash: u32) {
    let login = LOGIN_HASH.with(Cell::get);
    if hash == 0 || login == 0 || hash == login {
        STALE.with(|stale| stale.set(true));
    }
}

/// At login (the gate): refuses an address outside the list.
pub(super) fn check() {
    // SAFETY: a hash of the login's oid, computed as the syscache does; no
    // catalog access.
    let hash = unsafe {
        pg_sys::GetSysCacheHashValue(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            pg_sys::Datum::from(pg_sys::GetSessionUserId()),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    };
    LOGIN_HASH.with(|login| login.set(hash));
    STALE.with(|stale| stale.set(false));
    if super::login::with_record(|record| record.is_some_and(|record| record.address_refused)) {
        super::login::refuse(BiError::NetworkRefused);
    }
}

/// At the start of every statement of a credential session: after a change
/// to its role, the list again; outside it, the session ends.
pub(super) fn check_again() {
    if !STALE.with(Cell::get) {
        return;
    }
    // SAFETY: reads of backend-local transaction state.
    let usable =
        unsafe { pg_sys::IsTransactionState() && !pg_sys::IsAbortedTransactionBlockState() };
    if !usable {
        // ROLLBACK of a failed block: the next statement reads it.
        return;
    }
    // The latest snapshot, not the transaction's: a REPEATABLE READ block
    // begun before the change would not see it, and the message that asked
    // for this read is spent.
    // SAFETY: pushes a copy of a fresh snapshot (no parallel mode at the
    // start of a statement), popped below; an error unwinds the snapshot
    // stack with the transaction.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let refused = refused();
    // SAFETY: the snapshot pushed above is still the active one.
    unsafe { pg_sys::PopActiveSnapshot() };
    // Read: until the next change (an error above leaves it to the next
    // statement).
    STALE.with(|stale| stale.set(false));
    if refused {
        super::login::refuse(BiError::Ended("may no longer be used from this address"));
    }
}

/// Whether the session's address is outside its credential's list (read as
/// the bootstrap superuser: a credential may not read the records).
fn refused() -> bool {
    match db::as_superuser(crate::records::session_address_refused) {
        Ok(refused) => refused,
        Err(error) => super::login::refuse(error),
    }
}
