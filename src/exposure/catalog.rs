//! What the catalogs say of a relation, and which relations may be exposed:
//! checked in DESIGN.md's order of SQLSTATEs.

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_qualified_identifier};

use crate::error::{BiError, Result};
use crate::policies::Target;

pub(super) struct Relation {
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) rls: bool,
    pub(super) security_invoker: bool,
    pub(super) column_type: Option<String>,
    pub(super) eq_schema: String,
    /// Policies on the table that are not bi_access's own.
    pub(super) foreign_policies: i64,
    /// The org column's type is one org keys are matched against (text,
    /// varchar, an integer type, uuid, citext) with its type's collation.
    pub(super) accepted_type: bool,
}

/// Schemas whose relations are never exposed or hidden: bi_access's own
/// (its records hold sealed secrets), the orgs' custom schemas (each
/// belongs to one org: src/custom_schema.rs) and the system's. Every `pg_*`
/// schema name is reserved to the system (pg_catalog, pg_toast, pg_temp_N…).
pub(super) fn refused_schema(schema: &str) -> bool {
    matches!(
        schema,
        "bi_access" | "bi_access_internal" | "information_schema"
    ) || schema.starts_with("pg_")
        || schema.starts_with(crate::names::CUSTOM_SCHEMA_PREFIX)
}

/// The types of the org columns of every exposed (not hidden) table, as
/// `format_type` names them, each once: what generate checks a new org key
/// against (org::check_canonical).
pub fn org_column_types() -> Result<Vec<String>> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT DISTINCT pg_catalog.format_type(a.atttypid, NULL) \
                 FROM bi_access.exposed_table e \
                 JOIN pg_catalog.pg_attribute a \
                   ON a.attrelid = e.tbl AND a.attname = e.org_column \
                  AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE NOT e.hidden AND NOT e.shared",
                None,
                &[],
            )?
            .map(|row| Ok(row.get::<String>(1)?.unwrap_or_default()))
            .collect()
    })
}

/// How much `vet` checks.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Vet {
    /// An existing exposure being synced: what would let a BI role past
    /// row-level security. An org column of a type refused since it was
    /// exposed is left as it is (check() reports it).
    Sync,
    /// expose_table, and a new table a sync would expose: the same, the
    /// column's type, and the caller's own rights over the table.
    Caller,
}

/// The table (or security_invoker view) as a target; refuses what would
/// let a BI role past row-level security, or what bi_access must not
/// expose, in DESIGN.md's order of SQLSTATEs.
///
/// `listed` is a column list being set (expose_table's `columns`): not
/// empty, each column once (22023), each a column of the table (42703,
/// before the org column's type).
pub(super) fn vet(
    tbl: pg_sys::Oid,
    column: &str,
    vet: Vet,
    listed: Option<&[String]>,
) -> Result<Target> {
    let (relation, name) = admissible(tbl, column, vet)?;
    let Some(column_type) = relation.column_type.clone() else {
        return Err(BiError::NoSuchColumn {
            table: name,
            column: column.into(),
        });
    };
    check_listed(tbl, &name, listed)?;
    if vet != Vet::Sync && !relation.accepted_type {
        return Err(BiError::RefusedColumnType {
            table: name,
            column: column.into(),
            column_type,
        });
    }
    if !relation.rls && relation.foreign_policies > 0 {
        // Turning RLS on would put the application's dormant policies in
        // force and change what its roles see.
        return Err(BiError::DormantPolicies(name));
    }
    Ok(relation.into_target(tbl, column, column_type))
}

/// The relation and its quoted name, past the checks every call makes first:
/// 42809 a refused kind or schema, then (as the caller) 42501.
fn admissible(tbl: pg_sys::Oid, column: &str, vet: Vet) -> Result<(Relation, String)> {
    let relation = relation(tbl, column)?;
    let name = quote_qualified_identifier(&relation.schema, &relation.name);
    refuse_kind(&relation, &name)?;
    if vet == Vet::Caller {
        caller_may(tbl, &name)?;
    }
    Ok((relation, name))
}

pub(super) fn target(tbl: pg_sys::Oid, column: &str) -> Result<Target> {
    vet(tbl, column, Vet::Sync, None)
}

/// A shared table (share_table, and its sync), checked in expose_table's
/// order, then 22023 if it carries the org column `column`: shared, every
/// credential would read every org's rows. Returns its quoted name.
pub(super) fn vet_shared(
    tbl: pg_sys::Oid,
    column: &str,
    vet: Vet,
    listed: Option<&[String]>,
) -> Result<String> {
    let (relation, name) = admissible(tbl, column, vet)?;
    check_listed(tbl, &name, listed)?;
    if relation.column_type.is_some() {
        return Err(BiError::SharedHasOrgColumn {
            table: name,
            column: column.into(),
        });
    }
    Ok(name)
}

/// A column list being set: not empty, each column once (22023), each a
/// column of the table (42703).
fn check_listed(tbl: pg_sys::Oid, name: &str, listed: Option<&[String]>) -> Result<()> {
    let Some(listed) = listed else {
        return Ok(());
    };
    if listed.is_empty() {
        return Err(BiError::BadColumnList(
            "the column list is empty: it would expose no column".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = listed.iter().find(|column| !seen.insert(column.as_str())) {
        return Err(BiError::BadColumnList(format!(
            "column {twice:?} is listed twice for table {name}"
        )));
    }
    let live = live_columns(tbl, listed)?;
    match listed.iter().find(|column| !live.contains(column)) {
        Some(missing) => Err(BiError::NoSuchColumn {
            table: name.to_string(),
            column: missing.clone(),
        }),
        None => Ok(()),
    }
}

/// The columns of `listed` the table has now, in its column order: a list
/// that names a column since dropped or renamed admits less, never more
/// (check() names it).
pub(super) fn live_columns(tbl: pg_sys::Oid, listed: &[String]) -> Result<Vec<String>> {
    crate::db::column::<String>(
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attname::text = ANY ($2) ORDER BY a.attnum",
        &[tbl.into(), listed.to_vec().into()],
    )
}

/// 42809: only tables, partitioned tables and security_invoker views, and
/// none of bi_access's own or the system's.
pub(super) fn refuse_kind(relation: &Relation, name: &str) -> Result<()> {
    if refused_schema(&relation.schema) {
        return Err(BiError::RefusedSchema {
            table: name.to_string(),
            schema: quote_identifier(&relation.schema),
        });
    }
    match relation.kind.as_str() {
        "r" | "p" => Ok(()),
        "v" if relation.security_invoker => Ok(()),
        "v" => Err(BiError::DefinerView(name.to_string())),
        _ => Err(BiError::WrongObjectType(name.to_string())),
    }
}

/// 42501 unless the caller is a member of the table's owner and has USAGE on
/// its schema and SELECT on it: the management functions are SECURITY
/// DEFINER, so without this an admin would expose, through the extension
/// owner's rights, a table it cannot read itself (the confused deputy), by
/// expose_table or by a sync that exposes new tables.
///
/// The caller is the outer user: the session's login, or the role it SET
/// ROLE to. That is the role whose rights the session acts with (an admin
/// who SET ROLEs to a smaller role is checked as that role, one who SET
/// ROLEs to the table's owner may expose its tables); current_user would be
/// the extension's owner here, and session_user would ignore SET ROLE.
pub(super) fn caller_may(tbl: pg_sys::Oid, name: &str) -> Result<()> {
    // SAFETY: a read of backend-local state.
    let caller = unsafe { pg_sys::GetOuterUserId() };
    let missing = Spi::connect(|client| {
        let table = client.select(
            "SELECT CASE WHEN NOT pg_catalog.pg_has_role($2, c.relowner, 'MEMBER') \
                         THEN format('membership in its owner %s', c.relowner::regrole) END, \
                    CASE WHEN NOT pg_catalog.has_schema_privilege($2, c.relnamespace, 'USAGE') \
                         THEN format('USAGE on schema %I', n.nspname) END, \
                    CASE WHEN NOT pg_catalog.has_table_privilege($2, c.oid, 'SELECT') \
                         THEN 'SELECT on it' END \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = $1",
            Some(1),
            &[tbl.into(), caller.into()],
        )?;
        let mut missing = Vec::new();
        if !table.is_empty() {
            let row = table.first();
            for column in 1..=3 {
                missing.extend(row.get::<String>(column)?);
            }
        }
        Ok::<_, BiError>(missing)
    })?;
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: a syscache lookup; NULL for a role that no longer exists.
    let role = unsafe {
        let role = pg_sys::GetUserNameFromId(caller, true);
        if role.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(role)
                .to_string_lossy()
                .into_owned()
        }
    };
    Err(BiError::NotPermitted {
        role: quote_identifier(&role),
        table: name.to_string(),
        missing: missing.join(", "),
    })
}

impl Relation {
    pub(super) fn into_target(self, tbl: pg_sys::Oid, column: &str, column_type: String) -> Target {
        Target {
            oid: tbl,
            name: quote_qualified_identifier(&self.schema, &self.name),
            column: column.to_string(),
            column_type,
            eq_schema: self.eq_schema,
            is_view: self.kind == "v",
            rls: self.rls,
        }
    }
}

pub(super) fn relation(tbl: pg_sys::Oid, column: &str) -> Result<Relation> {
    Spi::connect(|client| {
        let table = client.select(
            &format!("SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relrowsecurity, \
                    coalesce((SELECT o.option_value::bool \
                              FROM pg_catalog.pg_options_to_table(c.reloptions) o \
                              WHERE o.option_name = 'security_invoker'), false), \
                    pg_catalog.format_type(a.atttypid, NULL), \
                    coalesce((SELECT quote_ident(ns.nspname) \
                              FROM pg_catalog.pg_operator o \
                              JOIN pg_catalog.pg_namespace ns ON ns.oid = o.oprnamespace \
                              WHERE o.oprname = '=' AND o.oprleft = a.atttypid \
                                AND o.oprright = a.atttypid LIMIT 1), 'pg_catalog'), \
                    (SELECT count(*) FROM pg_catalog.pg_policy p \
                     WHERE p.polrelid = c.oid AND p.polname NOT LIKE 'bi\\_access\\_%'), \
                    {ACCEPTED_TYPE} \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attribute a \
                    ON a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE c.oid = $1"),
            Some(1),
            &[tbl.into(), column.into()],
        )?;
        if table.is_empty() {
            // A regclass argument given by name is checked by its input
            // function; one given by OID is checked here.
            return Err(BiError::NoSuchTable(u32::from(tbl).to_string()));
        }
        let row = table.first();
        Ok(Relation {
            schema: row.get::<String>(1)?.unwrap_or_default(),
            name: row.get::<String>(2)?.unwrap_or_default(),
            kind: row.get::<String>(3)?.unwrap_or_default(),
            rls: row.get::<bool>(4)?.unwrap_or(false),
            security_invoker: row.get::<bool>(5)?.unwrap_or(false),
            column_type: row.get::<String>(6)?,
            eq_schema: row.get::<String>(7)?.unwrap_or_else(|| "pg_catalog".into()),
            foreign_policies: row.get::<i64>(8)?.unwrap_or(0),
            accepted_type: row.get::<bool>(9)?.unwrap_or(false),
        })
    })
}

/// Whether the org column `a` (of type `t`) is of a type org keys are matched
/// against: text, varchar, smallint, integer, bigint, uuid, or the citext
/// of the citext extension, with its type's own collation (a policy compares
/// it with the lookup, whose collation is the type's: two different
/// collations would make every BI query fail). Anything else (boolean,
/// numeric, an enum, a domain, char(n)…) is refused: its cast from a key
/// could raise or match loosely.
pub const ACCEPTED_TYPE: &str = "(a.attcollation = t.typcollation \
      AND (a.atttypid IN ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype, \
                          'pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype, \
                          'pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.uuid'::pg_catalog.regtype) \
           OR (t.typname = 'citext' AND EXISTS ( \
                  SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid \
                  WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid \
                    AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
                    AND d.deptype = 'e' AND e.extname = 'citext'))))";
