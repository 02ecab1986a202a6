//! The fixed set of row-level security policies bi_access puts on an exposed
//! table, whatever the number of credentials:
//!
//! - `bi_access_read` (PERMISSIVE, SELECT, TO the reader group): the org's rows;
//! - `bi_access_guard` (RESTRICTIVE, SELECT, TO the reader group and every
//!   credential of the cluster): the same condition, so permissive policies
//!   the application already has (TO PUBLIC, say) cannot widen what a
//!   credential sees;
//! - `bi_access_passthrough` (PERMISSIVE, ALL, TO PUBLIC), only where
//!   bi_access itself turned RLS on: every role whose login is not a
//!   credential keeps seeing and writing exactly what it did before. Its
//!   condition uses built-ins only, so it outlives any cascade that drops
//!   bi_access's functions (and with them the two reader policies): what is
//!   left then lets a credential see nothing.
//!
//! The org lookup is called bare and cast to the column's type: the planner
//! turns it into the credential's org key (src/org.rs), so the column's index
//! serves and nothing is left to run per row or per query. Policy text
//! carries no org key: pg_policies is readable by every role.

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

use crate::db;
use crate::error::Result;
use crate::names::{self, CREDENTIAL_GROUP};
use crate::org;

pub const READ: &str = names::POLICY_READ;
pub const GUARD: &str = names::POLICY_GUARD;
pub const PASSTHROUGH: &str = names::POLICY_PASSTHROUGH;

/// True unless the current role is a member of the credential group: every
/// credential is, and so is every reader group, so SET ROLE to a group
/// changes nothing. Built-ins only (a cascade cannot drop it). Written for
/// the planner: the membership is an InitPlan, computed once per query, and
/// compared with `<>`, whose estimated selectivity (0.995) leaves the
/// application's row estimates, and so its plans, as they were (a bare
/// boolean would count as 0.5, `NOT pg_has_role(…)` as 0.67 and be called
/// per row). Superusers bypass row-level security; one that SET ROLEs to an
/// application role is that role here. (The role is named, not a
/// dependency: dropping bi_access_credential would make these tables
/// unreadable to everyone.)
const NOT_A_CREDENTIAL: &str =
    "(SELECT pg_catalog.pg_has_role('bi_access_credential'::pg_catalog.name, \
     'MEMBER'::pg_catalog.text)::pg_catalog.int4) OPERATOR(pg_catalog.<>) 1";

/// The same without the sub-select, for a table Citus manages: Citus copies
/// its policies to the shards and refuses one with a sub-select. The
/// estimate is the same; where bi_access is not loaded, the call runs per
/// row instead of once per query (the session guard's planner hook, loaded
/// in every credential session, decides it before planning either way).
const NOT_A_CREDENTIAL_BARE: &str =
    "pg_catalog.pg_has_role('bi_access_credential'::pg_catalog.name, \
     'MEMBER'::pg_catalog.text)::pg_catalog.int4 OPERATOR(pg_catalog.<>) 1";

/// An exposed table as the policies see it.
pub struct Target {
    pub oid: pg_sys::Oid,
    /// Schema-qualified and quoted.
    pub name: String,
    pub column: String,
    pub column_type: String,
    /// Quoted schema of the `=` operator of the column's type.
    pub eq_schema: String,
    /// A security_invoker view: a grant, no policies of its own.
    pub is_view: bool,
    /// Row level security was on when the table was read.
    pub rls: bool,
}

impl Target {
    /// The operator is schema-qualified: policies are created under a
    /// pinned search_path, where an extension type's `=` (citext's, say)
    /// would not be found and the comparison would fall back to text.
    fn org_match(&self) -> String {
        format!(
            "{} OPERATOR({}.=) {}",
            quote_identifier(&self.column),
            self.eq_schema,
            org::lookup_expression(&self.column_type)
        )
    }

    fn create(&self, policy: &str, kind: &str, roles: &[&str]) -> Result<()> {
        let roles: Vec<String> = roles.iter().map(quote_identifier).collect();
        Spi::run(&format!(
            "CREATE POLICY {policy} ON {} AS {kind} FOR SELECT TO {} USING ({})",
            self.name,
            roles.join(", "),
            self.org_match()
        ))?;
        Ok(())
    }
}

/// Whether the reader policies exist as they should: of the right kind, for
/// the right roles, on the table's current org column, and in the current
/// form (an earlier 0.2.0 one wrapped the lookup in a sub-select, which cost
/// a sub-plan per policy and query).
pub fn reader_policies_ok(target: &Target, reader: &str) -> Result<bool> {
    Ok(db::first::<i64>(
        "WITH r AS (SELECT (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2) AS reader, \
                           (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $4) AS credential) \
         SELECT count(*) FROM pg_catalog.pg_policy p CROSS JOIN r \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = p.polrelid AND a.attname = $3 \
         WHERE p.polrelid = $1 AND p.polcmd = 'r' \
           AND pg_catalog.strpos(p.polqual::pg_catalog.text, '{SUBLINK') = 0 \
           AND ((p.polname = 'bi_access_read' AND p.polpermissive AND p.polroles = ARRAY[r.reader]) \
             OR (p.polname = 'bi_access_guard' AND NOT p.polpermissive \
                 AND p.polroles @> ARRAY[r.reader, r.credential] \
                 AND pg_catalog.cardinality(p.polroles) = 2)) \
           AND EXISTS (SELECT FROM pg_catalog.pg_depend d \
                       WHERE d.classid = 'pg_catalog.pg_policy'::regclass AND d.objid = p.oid \
                         AND d.refobjid = p.polrelid AND d.refobjsubid = a.attnum)",
        &[
            target.oid.into(),
            reader.into(),
            target.column.as_str().into(),
            CREDENTIAL_GROUP.into(),
        ],
    )?
    .unwrap_or(0)
        == 2)
}

pub fn exists(target: &Target, policy: &str) -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_policy WHERE polrelid = $1 AND polname = $2)",
        &[target.oid.into(), policy.into()],
    )?
    .unwrap_or(false))
}

/// The guard also binds every credential of the cluster: a login of another
/// database that reaches this one (PUBLIC's CONNECT and SELECT) finds no org
/// of its own here, so it sees nothing.
pub fn create_reader_policies(target: &Target, reader: &str) -> Result<()> {
    drop(target, &[READ, GUARD])?;
    target.create(READ, "PERMISSIVE", &[reader])?;
    target.create(GUARD, "RESTRICTIVE", &[reader, CREDENTIAL_GROUP])
}

/// Creates the pass-through policy, replacing one of an older form.
pub fn create_passthrough(target: &Target) -> Result<()> {
    drop(target, &[PASSTHROUGH])?;
    let condition = if crate::citus::is_citus_table(target.oid)? {
        NOT_A_CREDENTIAL_BARE
    } else {
        NOT_A_CREDENTIAL
    };
    Spi::run(&format!(
        "CREATE POLICY {PASSTHROUGH} ON {} AS PERMISSIVE FOR ALL TO PUBLIC \
         USING ({condition}) WITH CHECK ({condition})",
        target.name
    ))?;
    Ok(())
}

/// Whether the pass-through policy exists in its current form (0.1.0's
/// `USING (true)` admitted credentials once the reader policies were gone;
/// an early 0.2.0 form queried pg_auth_members, which distorted the
/// application's row estimates).
pub fn passthrough_ok(target: &Target) -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT pg_catalog.pg_get_expr(polqual, polrelid) LIKE '%pg_has_role%' \
                AND pg_catalog.pg_get_expr(polwithcheck, polrelid) LIKE '%pg_has_role%' \
         FROM pg_catalog.pg_policy WHERE polrelid = $1 AND polname = $2",
        &[target.oid.into(), PASSTHROUGH.into()],
    )?
    .unwrap_or(false))
}

pub fn drop(target: &Target, policies: &[&str]) -> Result<()> {
    for policy in policies {
        if exists(target, policy)? {
            Spi::run(&format!("DROP POLICY {policy} ON {}", target.name))?;
        }
    }
    Ok(())
}
