//! Custom schemas: scope `read_write`. Each org gets one schema, created with
//! its first read_write credential, where its read_write credentials create
//! tables, views, indexes and sequences and write them; every credential of
//! the org reads it. The session guard (src/guard/custom.rs) keeps a
//! read_write credential's writes inside it.
//!
//! Names carry no org key: the schema is `bi_custom_` plus random characters,
//! owned by a NOLOGIN group `bi_access_cs_owner_<suffix>` whose members are
//! the org's read_write credentials; `bi_access_cs_reader_<suffix>` (the same
//! suffix) has USAGE on it and SELECT on its tables, and every credential of
//! the org is its member. Before PostgreSQL 16 every membership allows SET
//! ROLE, so read credentials are never members of the owner group.
//!
//! Objects a read_write credential creates are its own; default privileges
//! give the owner group all rights on them (the org's other read_write
//! credentials write them too) and the reader group SELECT. Deleting the
//! credential reassigns them to the owner group (`heir_of`): never lost,
//! never another org's. `drop_custom_schema` removes the schema, its groups
//! and everything in it.

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use rand::rngs::OsRng;
use rand::Rng;
use serde_json::json;

use crate::audit;
use crate::compat;
use crate::db;
use crate::error::{BiError, Result};
use crate::names::{CUSTOM_OWNER_PREFIX, CUSTOM_READER_PREFIX, CUSTOM_SCHEMA_PREFIX};
use crate::records::{self, Subject};
use crate::targets::Target;

pub const READ: &str = "read";
pub const READ_WRITE: &str = "read_write";

const SUFFIX_LEN: usize = 16;
const SUFFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// An org's custom schema and its two groups.
pub struct CustomSchema {
    pub name: String,
    pub owner: String,
    pub reader: String,
}

/// The scope asked for, checked: 22023 for anything but read and read_write.
pub fn scope(asked: Option<&str>) -> Result<&'static str> {
    match asked.unwrap_or(READ) {
        READ => Ok(READ),
        READ_WRITE => Ok(READ_WRITE),
        other => Err(BiError::InvalidParameter(format!(
            "scope {} is not one of: read, read_write",
            crate::error::shown(other)
        ))),
    }
}

/// A read_write credential writes on the primary: its target must name no
/// standby (22023, with a hint to name a primary target).
pub fn check_target(scope: &str, target: &Target) -> Result<()> {
    if scope == READ_WRITE && target.standby.is_some() {
        return Err(BiError::ReadWriteOnStandby(target.name.clone()));
    }
    Ok(())
}

fn suffix() -> String {
    (0..SUFFIX_LEN)
        .map(|_| SUFFIX_ALPHABET[OsRng.gen_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

fn read_row(sql: &str, org_id: &str) -> Result<Option<CustomSchema>> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, Some(1), &[org_id.into()])?;
        if table.is_empty() {
            return Ok(None);
        }
        let row = table.first();
        Ok(Some(CustomSchema {
            name: row.get::<String>(1)?.unwrap_or_default(),
            owner: row.get::<String>(2)?.unwrap_or_default(),
            reader: row.get::<String>(3)?.unwrap_or_default(),
        }))
    })
}

/// The org's custom schema, if it has one.
pub fn find(org_id: &str) -> Result<Option<CustomSchema>> {
    read_row(
        "SELECT schema_name::text, owner_role::text, reader_role::text \
         FROM bi_access.custom_schema WHERE org_id = $1",
        org_id,
    )
}

/// The org's custom schema with its groups, if it has one: a restore
/// without roles brings back its row, the schema and its data, but not its
/// groups, which are then created again (`restore_groups`).
fn find_whole(org_id: &str) -> Result<Option<CustomSchema>> {
    let Some(schema) = find(org_id)? else {
        return Ok(None);
    };
    restore_groups(org_id, &schema)?;
    Ok(Some(schema))
}

/// The org's custom schema, created if it has none yet. Concurrent calls
/// for one org serialize on the row's primary key: one creates it.
fn ensure(org_id: &str, new_role: &str) -> Result<CustomSchema> {
    if let Some(existing) = find_whole(org_id)? {
        return Ok(existing);
    }
    let suffix = suffix();
    let schema = CustomSchema {
        name: format!("{CUSTOM_SCHEMA_PREFIX}{}", &suffix[..12]),
        owner: format!("{CUSTOM_OWNER_PREFIX}{suffix}"),
        reader: format!("{CUSTOM_READER_PREFIX}{suffix}"),
    };
    let inserted = db::first_mut::<bool>(
        "INSERT INTO bi_access.custom_schema (org_id, schema_name, owner_role, reader_role) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (org_id) DO NOTHING RETURNING true",
        &[
            org_id.into(),
            schema.name.as_str().into(),
            schema.owner.as_str().into(),
            schema.reader.as_str().into(),
        ],
    )?;
    if inserted.is_none() {
        return find(org_id)?.ok_or_else(|| BiError::NoCustomSchema(org_id.into()));
    }
    for group in [&schema.owner, &schema.reader] {
        create_group(group)?;
    }
    Spi::run(&format!(
        "CREATE SCHEMA {} AUTHORIZATION {}",
        quote_identifier(&schema.name),
        quote_identifier(&schema.owner)
    ))?;
    grant_schema(&schema)?;
    // Every other current credential of the org reads it from now on.
    let reader = quote_identifier(&schema.reader);
    for role in records::current_roles_of_org(org_id, new_role)? {
        Spi::run(&compat::grant_membership_sql(
            std::slice::from_ref(&reader),
            &quote_identifier(&role),
        ))?;
    }
    Ok(schema)
}

fn create_group(group: &str) -> Result<()> {
    Spi::run(&format!(
        "CREATE ROLE {} NOLOGIN NOINHERIT",
        quote_identifier(group)
    ))?;
    Ok(())
}

/// The schema's own privileges: no PUBLIC, USAGE for the reader group, and
/// SELECT for it on what the owner group comes to own (a deleted
/// credential's objects, or objects made under SET ROLE before 16).
fn grant_schema(schema: &CustomSchema) -> Result<()> {
    let (name, owner, reader) = (
        quote_identifier(&schema.name),
        quote_identifier(&schema.owner),
        quote_identifier(&schema.reader),
    );
    for statement in [
        format!("REVOKE ALL ON SCHEMA {name} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {name} TO {reader}"),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {name} GRANT SELECT ON TABLES TO {reader}"
        ),
    ] {
        Spi::run(&statement)?;
    }
    Ok(())
}

/// After a restore without roles: the org's custom schema groups are
/// created again, and the schema and every relation in it that a role of
/// the org no longer owns (the restore left them to whoever ran it) go to
/// the owner group, readable by the reader group. Nothing in the schema is
/// dropped; a schema that is gone is created again, empty.
fn restore_groups(org_id: &str, schema: &CustomSchema) -> Result<()> {
    let mut missing = Vec::new();
    for group in [&schema.owner, &schema.reader] {
        if !crate::roles::exists(group)? {
            missing.push(group.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    for group in &missing {
        create_group(group)?;
    }
    let (name, owner) = (
        quote_identifier(&schema.name),
        quote_identifier(&schema.owner),
    );
    let schema_exists = db::first::<bool>(
        "SELECT true FROM pg_catalog.pg_namespace WHERE nspname = $1",
        &[schema.name.as_str().into()],
    )?
    .is_some();
    if schema_exists {
        Spi::run(&format!("ALTER SCHEMA {name} OWNER TO {owner}"))?;
    } else {
        Spi::run(&format!("CREATE SCHEMA {name} AUTHORIZATION {owner}"))?;
    }
    grant_schema(schema)?;
    let strays = records::custom_schema_relations_to_reown(&schema.name, &schema.owner, org_id)?;
    for (kind, relation) in &strays {
        Spi::run(&format!("ALTER {kind} {relation} OWNER TO {owner}"))?;
    }
    Spi::run(&format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA {name} TO {}",
        quote_identifier(&schema.reader)
    ))?;
    audit::record(
        "restore_custom_schema",
        &Subject {
            role_name: None,
            org_id: Some(org_id),
        },
        json!({
            "schema": schema.name,
            "groups_created": missing,
            "schema_created": !schema_exists,
            "relations_given_to_owner_group": strays.len(),
        }),
    )
}

/// Gives a new credential role what its scope needs of its org's custom
/// schema; returns the schema's name for a read_write credential. A read
/// credential joins the reader group if the org has a schema already.
pub fn join(role: &str, org_id: &str, scope: &str) -> Result<Option<String>> {
    let quoted = quote_identifier(role);
    if scope != READ_WRITE {
        if let Some(schema) = find_whole(org_id)? {
            Spi::run(&compat::grant_membership_sql(
                &[quote_identifier(&schema.reader)],
                &quoted,
            ))?;
        }
        return Ok(None);
    }
    let schema = ensure(org_id, role)?;
    let (name, owner, reader) = (
        quote_identifier(&schema.name),
        quote_identifier(&schema.owner),
        quote_identifier(&schema.reader),
    );
    Spi::run(&compat::grant_membership_sql(
        &[owner.clone(), reader.clone()],
        &quoted,
    ))?;
    for statement in [
        // It writes: its sessions start read-write, in its schema first.
        format!("ALTER ROLE {quoted} SET default_transaction_read_only = 'off'"),
        // A list of identifiers: one quoted string would be one schema.
        format!("ALTER ROLE {quoted} SET search_path = {name}, public"),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {quoted} IN SCHEMA {name} GRANT ALL ON TABLES TO {owner}"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {quoted} IN SCHEMA {name} GRANT SELECT ON TABLES TO {reader}"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {quoted} IN SCHEMA {name} GRANT ALL ON SEQUENCES TO {owner}"
        ),
    ] {
        Spi::run(&statement)?;
    }
    Ok(Some(schema.name))
}

/// At a sync: every current credential of an org with a custom schema is a
/// member of its reader group, and a read_write one of its owner group too
/// (a membership revoked by hand, a role restored without it). Roles another
/// database manages (a copy) are left alone. Returns how many memberships
/// were granted.
pub fn sync_memberships() -> Result<i64> {
    let missing = records::missing_custom_schema_memberships()?;
    let mut granted = 0;
    for (role, group) in missing {
        if crate::custody::manages(&role)? {
            Spi::run(&compat::grant_membership_sql(
                &[quote_identifier(&group)],
                &quote_identifier(&role),
            ))?;
            granted += 1;
        }
    }
    Ok(granted)
}

/// Who inherits what a credential role owns when it is dropped: the owner
/// group of its org's custom schema for a read_write credential (None: the
/// extension's owner, as before).
pub fn heir_of(role: &str) -> Result<Option<String>> {
    records::custom_schema_owner_of(role)
}

/// Drops the org's custom schema with everything in it, and its groups.
/// 42704 when the org has none; 55000 while a current read_write credential
/// of the org exists.
pub fn drop(org_id: &str) -> Result<()> {
    let Some(schema) = read_row(
        "SELECT schema_name::text, owner_role::text, reader_role::text \
         FROM bi_access.custom_schema WHERE org_id = $1 FOR UPDATE",
        org_id,
    )?
    else {
        return Err(BiError::NoCustomSchema(org_id.into()));
    };
    let writers = records::lock_current_writers(org_id)?;
    if writers > 0 {
        return Err(BiError::CustomSchemaInUse {
            org_id: org_id.into(),
            credentials: writers,
        });
    }
    let objects = relation_count(&schema.name)?;
    Spi::run(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_identifier(&schema.name)
    ))?;
    for group in [&schema.owner, &schema.reader] {
        if crate::roles::exists(group)? {
            let quoted = quote_identifier(group);
            Spi::run(&format!("DROP OWNED BY {quoted}"))?;
            Spi::run(&format!("DROP ROLE {quoted}"))?;
        }
    }
    db::exec(
        "DELETE FROM bi_access.custom_schema WHERE org_id = $1",
        &[org_id.into()],
    )?;
    audit::record(
        "drop_custom_schema",
        &Subject {
            role_name: None,
            org_id: Some(org_id),
        },
        json!({ "schema": schema.name, "relations": objects }),
    )
}

/// A schema's size in bytes as its quota counts it (tables with their
/// indexes and TOAST, materialized views, sequences): the SQL of a bigint,
/// for the schema whose oid is the SQL `namespace`. The session guard's
/// quota check and check()'s finding use this one definition.
pub fn size_sql(namespace: &str) -> String {
    format!(
        "(SELECT coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint \
          FROM pg_catalog.pg_class c \
          WHERE c.relnamespace = {namespace} AND c.relkind IN ('r', 'm', 'S'))"
    )
}

/// How many relations the schema holds.
fn relation_count(schema: &str) -> Result<i64> {
    Ok(db::first::<i64>(
        "SELECT count(*) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
        &[schema.into()],
    )?
    .unwrap_or(0))
}

/// The quota trigger's SQL name, schema-qualified.
fn quota_function() -> String {
    format!(
        "{}.{}()",
        quote_identifier(crate::names::SCHEMAS[1]),
        quote_identifier(crate::names::QUOTA_FUNCTION)
    )
}

/// Whether the quota trigger's function exists: not between a package
/// upgrade from 0.2.0 and `ALTER EXTENSION bi_access UPDATE`, whose SQL has
/// none (the schema is then counted before each statement only, as 0.2.0
/// did, and the update puts the triggers on).
pub fn quota_function_exists() -> Result<bool> {
    Ok(db::first::<bool>(
        "SELECT pg_catalog.to_regprocedure($1) IS NOT NULL",
        &[quota_function().as_str().into()],
    )?
    .unwrap_or(false))
}

/// The tables of a custom schema (the schema `namespace`, or with None every
/// org's) whose quota trigger (src/guard/quota.rs) is missing (''),
/// disabled ('disabled') or calls another function ('elsewhere'); parents
/// before their partitions. None before the update that brings the
/// function.
pub fn unguarded_tables(namespace: Option<pg_sys::Oid>) -> Result<Vec<(String, String)>> {
    db::text_pairs(
        "WITH f AS (SELECT pg_catalog.to_regprocedure($3) AS oid) \
         SELECT c.oid::regclass::text, \
                CASE WHEN t.oid IS NULL THEN '' \
                     WHEN t.tgfoid <> f.oid THEN 'elsewhere' \
                     ELSE 'disabled' END \
         FROM f CROSS JOIN pg_catalog.pg_class c \
         LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.oid AND t.tgname = $2 \
         WHERE f.oid IS NOT NULL AND c.relkind IN ('r', 'p') \
           AND CASE WHEN $1::oid IS NULL \
                    THEN c.relnamespace IN (SELECT n.oid FROM bi_access.custom_schema cs \
                                            JOIN pg_catalog.pg_namespace n ON n.nspname = cs.schema_name) \
                    ELSE c.relnamespace = $1::oid END \
           AND (t.oid IS NULL OR t.tgenabled NOT IN ('O', 'A') OR t.tgfoid <> f.oid) \
         ORDER BY (SELECT count(*) FROM pg_catalog.pg_partition_ancestors(c.oid)), c.oid",
        &[
            namespace.into(),
            crate::names::QUOTA_TRIGGER.into(),
            quota_function().as_str().into(),
        ],
    )
}

/// Puts the quota trigger on every table `unguarded_tables` names, or
/// enables it again. A partition gets it from its parent, as PostgreSQL
/// clones row triggers. Returns how many tables changed.
pub fn add_quota_triggers(namespace: Option<pg_sys::Oid>) -> Result<i64> {
    let tables = unguarded_tables(namespace)?;
    let trigger = quote_identifier(crate::names::QUOTA_TRIGGER);
    let mut changed = 0;
    for (table, state) in tables {
        match state.as_str() {
            // Disabled by a superuser (a partition's clone included).
            "disabled" => {
                Spi::run(&format!("ALTER TABLE {table} ENABLE TRIGGER {trigger}"))?;
                changed += 1;
                continue;
            }
            // Someone else's trigger by that name: made again as bi_access makes it.
            "elsewhere" => Spi::run(&format!("DROP TRIGGER {trigger} ON {table}"))?,
            _ => {}
        }
        // Parents come before their partitions, which may then have it
        // already, as a clone.
        let has = db::first::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger \
                            WHERE tgrelid = $1::regclass AND tgname = $2)",
            &[table.as_str().into(), crate::names::QUOTA_TRIGGER.into()],
        )?
        .unwrap_or(false);
        if !has {
            Spi::run(&format!(
                "CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {}",
                quota_function()
            ))?;
        }
        changed += 1;
    }
    Ok(changed)
}

/// Before the extension goes: its quota triggers go from every table (they
/// depend on its function). A partition's clone goes with its parent's.
pub fn drop_quota_triggers() -> Result<()> {
    let tables = db::text_pairs(
        "SELECT t.tgrelid::regclass::text, '' FROM pg_catalog.pg_trigger t \
         WHERE t.tgfoid = pg_catalog.to_regprocedure($1) AND t.tgparentid = 0 ORDER BY t.oid",
        &[quota_function().as_str().into()],
    )?;
    for (table, _) in tables {
        Spi::run(&format!(
            "DROP TRIGGER {} ON {table}",
            quote_identifier(crate::names::QUOTA_TRIGGER)
        ))?;
    }
    Ok(())
}

/// What a custom schema holds that its caps count:
/// - relations: its rows of pg_class (tables, partitioned tables, indexes,
///   sequences, views, materialized views; a table's TOAST table and index
///   live in pg_toast and are not counted);
/// - columns: the pg_attribute rows numbered above 0 of those relations
///   (index columns and dropped columns included);
/// - expressions: every stored expression or constraint of them (a column
///   default or generation expression, any constraint, an index's
///   expressions and its predicate, a view's or materialized view's
///   definition, a trigger PostgreSQL adds for a foreign key), each counting
///   once per 8 kB started of its stored tree;
/// - stored generated columns, which the quota cannot count (refused).
pub struct Usage {
    pub relations: i64,
    pub columns: i64,
    pub expressions: i64,
    pub stored_generated: i64,
}

pub fn usage(namespace: pg_sys::Oid) -> Result<Usage> {
    Spi::connect(|client| {
        let row = client
            .select(
                "SELECT (SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace = $1), \
                        (SELECT count(*) FROM pg_catalog.pg_attribute a \
                         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                         WHERE c.relnamespace = $1 AND a.attnum > 0), \
                        (SELECT coalesce(sum(greatest(1, (coalesce(e.bytes, 0) + 8191) / 8192)), 0)::bigint \
                         FROM (SELECT pg_catalog.pg_column_size(d.adbin) AS bytes \
                               FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_class c ON c.oid = d.adrelid \
                               WHERE c.relnamespace = $1 \
                               UNION ALL SELECT pg_catalog.pg_column_size(k.conbin) \
                               FROM pg_catalog.pg_constraint k WHERE k.connamespace = $1 \
                               UNION ALL SELECT pg_catalog.pg_column_size(i.indexprs) \
                               FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
                               WHERE c.relnamespace = $1 AND i.indexprs IS NOT NULL \
                               UNION ALL SELECT pg_catalog.pg_column_size(i.indpred) \
                               FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
                               WHERE c.relnamespace = $1 AND i.indpred IS NOT NULL \
                               UNION ALL SELECT pg_catalog.pg_column_size(r.ev_action) \
                               FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
                               WHERE c.relnamespace = $1 \
                               UNION ALL SELECT NULL::integer \
                               FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
                               WHERE c.relnamespace = $1 AND t.tgname <> $2) e), \
                        (SELECT count(*) FROM pg_catalog.pg_attribute a \
                         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                         WHERE c.relnamespace = $1 AND a.attnum > 0 AND a.attgenerated = 's')",
                Some(1),
                &[namespace.into(), crate::names::QUOTA_TRIGGER.into()],
            )?
            .first();
        let number = |n: usize| -> Result<i64> { Ok(row.get::<i64>(n)?.unwrap_or_default()) };
        Ok(Usage {
            relations: number(1)?,
            columns: number(2)?,
            expressions: number(3)?,
            stored_generated: number(4)?,
        })
    })
}

/// The locks `drop_custom_schema` takes to drop a schema holding
/// `relations` relations and `expressions` stored expressions and
/// constraints, at most: each relation with its TOAST table and TOAST index,
/// its row type and array type and its quota trigger (6; an index or a
/// sequence takes 1), each expression or constraint its catalog row, and a
/// few for the schema, its two groups and bi_access's own rows.
pub fn drop_locks(relations: i64, expressions: i64) -> i64 {
    6 * relations + expressions + DROP_LOCKS_BESIDES
}

pub const DROP_LOCKS_BESIDES: i64 = 64;
