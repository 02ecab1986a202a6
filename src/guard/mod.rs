//! The session guard: what a credential's own session may do, whatever it
//! does to its settings and roles.
//!
//! Every credential role has `session_preload_libraries = 'bi_access,
//! bi_access_gate'` (a role setting, which outlives any DROP … CASCADE of the
//! extension), so this library is loaded before its first statement (or
//! preloaded by the server for every session) and installs its hooks:
//!
//! - `session`: whether this session is a credential's and guarded, and the
//!   refusal every part raises;
//! - `gate`: the login gate, every check that must hold at login, run by the
//!   small `bi_access_gate` library in each credential session;
//! - `connections`: the org's and the server's limits of BI sessions;
//! - `statements`: a utility statement is refused (42501) unless it only
//!   reads or manages the session;
//! - `reads`: a relation is readable only if it is a system catalog, an
//!   exposed table whose row-level security and bi_access policies are in
//!   place (a stray grant to PUBLIC, a view, a partition admit nothing), or
//!   in its org's custom schema;
//! - `custom`: the session's custom schema; a read_write credential writes
//!   there and nowhere else, within its quota;
//! - `quota`: the quota counted inside a statement (a row trigger, a counting
//!   DestReceiver for CREATE TABLE AS), index builds and rewrites checked
//!   before and after, and the caps on what a custom schema holds;
//! - `calls`: creating or altering any catalog object is refused, and so are
//!   the built-in functions that write without a table privilege (large
//!   objects, NOTIFY, advisory locks, sequences);
//! - `definers`: no SECURITY DEFINER function but bi_access's own (and those
//!   an exposed table's policies call), however the call is reached;
//! - `oracles`: EXPLAIN, the statistics of tables and statements, and
//!   messages below NOTICE, which would tell about other orgs' rows;
//! - `plans`: the pass-through policy's condition is decided before
//!   planning (false for a credential, true for anyone else), so it costs
//!   nothing;
//! - `caps`: the guardrails, settings a session may lower but never raise;
//! - `transaction`: the cap on a transaction's length (a timer before 17);
//! - `search`: the planner's search settings, movable only toward less work;
//! - `memory`: cursors, held cursors and prepared statements per session,
//!   and the memory the session keeps, checked at each executor start and end;
//! - `standing`: at every statement, the login must still be what it was
//!   (not revoked, deleted, rotated or expired), or the session ends;
//! - `networks`: the credential's network allowlist, at login and again
//!   after a change.
//!
//! The guard is keyed on the session's login (`session_user`), never on the
//! current user, so `SET ROLE` to a group changes nothing it refuses. Inside a
//! SECURITY DEFINER function owned by a superuser (bi_access's own org lookup)
//! the guard stands aside: that code is the extension's, not the tenant's
//! (`definers` lets a credential call no other definer function).

mod analysis;
mod calls;
pub mod caps;
mod connections;
mod custom;
mod definers;
pub mod gate;
mod home;
mod login;
mod memory;
mod networks;
mod oracles;
mod plans;
mod quota;
mod reads;
mod search;
pub(crate) mod session;
mod shapes;
mod standing;
pub(crate) mod statements;
mod transaction;

use pgrx::pg_sys;

pub fn install() {
    session::loaded();
    statements::install();
    analysis::install();
    reads::install();
    calls::install();
    plans::install();
    custom::install();
    quota::install();
    caps::install();
    transaction::install();
    search::install();
    memory::install();
    standing::install();
    definers::install();
    oracles::install();
    crate::invalidation::on_catalog_change(
        &[
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
        ],
        session::forget_identity,
    );
}
