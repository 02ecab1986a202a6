//! `bi_access.check()`: the security posture around the credentials, each
//! finding with the statement that fixes it. A clean setup reports nothing
//! but what bounds a credential's locks on this server (object `lock waits`).

use pgrx::prelude::*;

use crate::compat;
use crate::db;
use crate::error::{BiError, Result};
use crate::exposure;
use crate::finding::Finding;
use crate::names;
use crate::org;
use crate::records;
use crate::roles;
use crate::setting_origin;
use crate::settings;
use crate::targets;

type Probe = fn(&Context) -> Result<Vec<Finding>>;

struct Context {
    reader: String,
    schemas: Vec<String>,
}

pub fn check() -> Result<Vec<Finding>> {
    // Every other probe names the credential group: without it they cannot
    // run, and nothing else matters until it is back.
    if let Some(missing) = missing_credential_group()? {
        return Ok(vec![missing]);
    }
    let context = Context {
        reader: roles::reader_group()?,
        schemas: settings::exposed_schemas(),
    };
    let probes: [Probe; 28] = [
        public_connect,
        public_create,
        public_security_definer,
        policy_security_definer,
        owners,
        public_select,
        unsynced,
        definer_views,
        refused_org_columns,
        shared_with_org_column,
        stale_column_lists,
        keys_matching_no_table,
        replication_targets,
        application_roles,
        credential_attributes,
        orphaned_credentials,
        orphaned_reader_groups,
        networks_behind_the_pooler,
        ssl,
        password_encryption,
        sealing_key,
        absent_standbys,
        audit_reads,
        custom_schemas,
        lock_waits,
        capacity,
        stale_credentials,
        preload,
    ];
    let mut findings = Vec::new();
    for probe in probes {
        findings.extend(probe(&context)?);
    }
    Ok(findings)
}

/// bi_access_credential renamed or dropped: the login gate refuses every
/// credential, and every exposed table's policies (which name the group)
/// fail for every role under them, the application's included. The fix
/// renames back the role the guard policies still hold (they keep its oid),
/// or else makes the group again for the logins of this database's reader
/// group.
fn missing_credential_group() -> Result<Option<Finding>> {
    let fix = db::first::<String>(
        MISSING_CREDENTIAL_GROUP,
        &[names::CREDENTIAL_GROUP.into(), names::POLICY_GUARD.into()],
    )?;
    Ok(fix.map(|fix| Finding {
        severity: "error",
        object: format!("role {}", names::CREDENTIAL_GROUP),
        finding: "bi_access's credential group is missing (renamed or dropped): every credential's login \
                  is refused, and every read of an exposed table by a role under its policies, the \
                  application's included, fails (42704: the policies name the group) until it is back"
            .into(),
        fix,
    }))
}

const MISSING_CREDENTIAL_GROUP: &str = "\
    SELECT coalesce( \
             (SELECT format('ALTER ROLE %I RENAME TO %I;', r.rolname, $1) \
                FROM pg_catalog.pg_policy p \
                CROSS JOIN LATERAL pg_catalog.unnest(p.polroles) AS g(oid) \
                JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) g.oid \
               WHERE p.polname OPERATOR(pg_catalog.=) $2 \
                 AND r.rolname OPERATOR(pg_catalog.<>) (SELECT reader_role FROM bi_access.config) \
               LIMIT 1), \
             format('CREATE ROLE %I NOLOGIN;', $1) || coalesce(' ' || \
               (SELECT pg_catalog.string_agg(format('GRANT %I TO %I;', $1, m.rolname), ' ' ORDER BY m.rolname) \
                  FROM pg_catalog.pg_auth_members a \
                  JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.roleid \
                  JOIN pg_catalog.pg_roles m ON m.oid OPERATOR(pg_catalog.=) a.member \
                 WHERE g.rolname OPERATOR(pg_catalog.=) (SELECT reader_role FROM bi_access.config) \
                   AND m.rolcanlogin), '')) \
     WHERE pg_catalog.to_regrole(pg_catalog.quote_ident($1)) IS NULL";

/// Runs a query whose rows are (object, fix) and words each as a finding.
fn rows(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
    severity: &'static str,
    finding: &str,
) -> Result<Vec<Finding>> {
    Ok(words(db::text_pairs(sql, args)?, severity, finding))
}

/// Each (object, fix) as a finding.
fn words(pairs: Vec<(String, String)>, severity: &'static str, finding: &str) -> Vec<Finding> {
    pairs
        .into_iter()
        .map(|(object, fix)| Finding {
            severity,
            object,
            finding: finding.to_string(),
            fix,
        })
        .collect()
}

/// Custom schemas (scope read_write) past bi_access.custom_schema_quota:
/// their read_write credentials' writes that grow them are refused; and
/// records whose schema or groups are gone (dropped by hand).
fn custom_schemas(_: &Context) -> Result<Vec<Finding>> {
    let mut findings = rows(
        "SELECT 'schema ' || quote_ident(cs.schema_name), \
                format('SELECT bi_access.drop_custom_schema(%L); once its read_write credentials are deleted \
                        (or recreate schema %I owned by %I, with USAGE for %I)', \
                       cs.org_id, cs.schema_name, cs.owner_role, cs.reader_role) \
         FROM bi_access.custom_schema cs \
         WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.nspname = cs.schema_name) \
            OR NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = cs.owner_role) \
            OR NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = cs.reader_role) \
         ORDER BY 1",
        &[],
        "error",
        "an org's custom schema or one of its groups is missing: its read_write credentials cannot write there",
    )?;
    if let Some(quota) = settings::custom_schema_quota_bytes() {
        findings.extend(rows(
            &format!(
                "SELECT 'schema ' || quote_ident(s.nspname), \
                    format('Free space in it (DELETE, TRUNCATE, DROP), or raise bi_access.custom_schema_quota \
                            (now %s bytes; the schema holds %s)', $1::bigint, s.size) \
             FROM (SELECT n.nspname, {} AS size \
                   FROM bi_access.custom_schema cs \
                   JOIN pg_catalog.pg_namespace n ON n.nspname = cs.schema_name) s \
             WHERE s.size > $1::bigint ORDER BY 1",
                crate::custom_schema::size_sql("n.oid")
            ),
            &[quota.into()],
            "warning",
            "an org's custom schema is past bi_access.custom_schema_quota: writes that grow it are refused",
        )?);
    }
    Ok(findings)
}

/// What credentials take of what the server shares (src/capacity.rs).
fn capacity(_: &Context) -> Result<Vec<Finding>> {
    crate::capacity::findings()
}

/// A target's standby that is not connected while credentials wait for it:
/// they stay pending (or deleting) until it replays.
fn absent_standbys(_: &Context) -> Result<Vec<Finding>> {
    Ok(targets::waiting_on_absent_standbys()?
        .into_iter()
        .map(|(target, standby, waiting)| Finding {
            severity: "warning",
            object: format!("target {target}"),
            finding: format!(
                "{waiting} credential(s) wait for standby {standby:?}, which is not connected to this primary"
            ),
            fix: if target == crate::names::DEFAULT_TARGET {
                format!("Start or reconnect the standby with application_name {standby:?}, or ALTER SYSTEM SET bi_access.replica_application_name to the standby clients use.")
            } else {
                format!("Start or reconnect the standby with application_name {standby:?}, or SELECT bi_access.set_target({}, host, port, sslmode, standby => <its application_name>);", pgrx::spi::quote_literal(&target))
            },
        })
        .collect())
}

/// New LOGIN roles may connect wherever PUBLIC may, template1 included
/// (a template that allows connections). Advice: the credential logs in
/// there and reads nothing of it but the system catalogs.
fn public_connect(_: &Context) -> Result<Vec<Finding>> {
    rows(
        "SELECT 'database ' || quote_ident(d.datname), \
                format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC;', d.datname) \
         FROM pg_catalog.pg_database d \
         WHERE d.datallowconn AND d.datname <> current_database() \
           AND (d.datacl IS NULL OR EXISTS (SELECT FROM pg_catalog.aclexplode(d.datacl) a \
                                            WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')) \
         ORDER BY 1",
        &[],
        "warning",
        "PUBLIC may connect to this other database: only bi_access's login gate keeps BI credentials out of it (advice: revoking CONNECT keeps them out before any library loads)",
    )
}

fn public_create(context: &Context) -> Result<Vec<Finding>> {
    rows(
        "SELECT 'schema ' || quote_ident(n.nspname), \
                format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC;', n.nspname) \
         FROM pg_catalog.pg_namespace n \
         WHERE n.nspname = ANY ($1) \
           AND EXISTS (SELECT FROM pg_catalog.aclexplode(n.nspacl) a \
                       WHERE a.grantee = 0 AND a.privilege_type = 'CREATE') \
         ORDER BY 1",
        &[context.schemas.clone().into()],
        "error",
        "PUBLIC may create objects in an exposed schema: a BI role could plant functions or views",
    )
}

/// The grantee `a.grantee` of an ACL entry reaches credentials: PUBLIC, a
/// group a credential inherits from (the reader group, bi_access_credential,
/// a custom schema's group), or a credential itself. $1 is the reader group.
/// A superuser is a member of every role to pg_has_role, and never a
/// credential.
const REACHES_CREDENTIALS: &str = "CASE WHEN a.grantee = 0 THEN true ELSE EXISTS ( \
      SELECT FROM pg_catalog.pg_roles g WHERE g.oid = a.grantee AND NOT g.rolsuper AND ( \
        pg_catalog.pg_has_role($1::text, g.oid, 'MEMBER') \
        OR pg_catalog.pg_has_role('bi_access_credential', g.oid, 'MEMBER') \
        OR pg_catalog.pg_has_role(g.oid, 'bi_access_credential', 'MEMBER') \
        OR EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
                   JOIN pg_catalog.pg_roles c ON c.oid = m.member \
                   WHERE m.roleid = g.oid AND NOT c.rolsuper \
                     AND pg_catalog.pg_has_role(c.oid, 'bi_access_credential', 'MEMBER')))) END";

/// SECURITY DEFINER functions in a bi_access schema (its own) or called by
/// an exposed table's policies ($2: bi_access's schemas); the session guard
/// admits those, and refuses every other definer function to credentials.
const ADMITTED_DEFINERS: &str = "(n.nspname = ANY ($2) OR EXISTS ( \
      SELECT FROM pg_catalog.pg_depend d \
      JOIN pg_catalog.pg_policy pol ON pol.oid = d.objid \
      JOIN bi_access.exposed_table e ON e.tbl = pol.polrelid AND NOT e.hidden \
      WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass \
        AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = p.oid))";

/// SECURITY DEFINER functions, in every schema, that PUBLIC or a credential
/// may execute: the session guard refuses them to credentials (all but
/// bi_access's own and those an exposed table's policies call), but each is
/// one missing guard away from running with its owner's rights. An error
/// when a credential could reach it (USAGE on its schema), a warning
/// otherwise.
fn public_security_definer(context: &Context) -> Result<Vec<Finding>> {
    Spi::connect(|client| {
        let mut findings = Vec::new();
        for row in client.select(
            &format!(
                "SELECT 'function ' || p.oid::regprocedure::text, \
                        (SELECT string_agg(format('REVOKE EXECUTE ON FUNCTION %s FROM %s;', p.oid::regprocedure, \
                                                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                                                       ELSE a.grantee::regrole::text END), \
                                           ' ' ORDER BY a.grantee) \
                         FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a \
                         WHERE a.privilege_type = 'EXECUTE' AND {REACHES_CREDENTIALS}), \
                        pg_catalog.has_schema_privilege($1::text, n.oid, 'USAGE') \
                        OR pg_catalog.has_schema_privilege('bi_access_credential', n.oid, 'USAGE') \
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.prosecdef AND NOT {ADMITTED_DEFINERS} \
                   AND EXISTS (SELECT FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a \
                               WHERE a.privilege_type = 'EXECUTE' AND {REACHES_CREDENTIALS}) \
                 ORDER BY 1"
            ),
            None,
            &[
                context.reader.as_str().into(),
                names::SCHEMAS.to_vec().into(),
            ],
        )? {
            let reachable = row.get::<bool>(3)?.unwrap_or(false);
            findings.push(Finding {
                severity: if reachable { "error" } else { "warning" },
                object: row.get::<String>(1)?.unwrap_or_default(),
                finding: if reachable {
                    "a SECURITY DEFINER function that BI roles could run with its owner's rights, \
                     were it not for the session guard (which refuses it to them)"
                } else {
                    "a SECURITY DEFINER function executable by PUBLIC or a BI role, in a schema \
                     BI roles may not use: one grant away from running with its owner's rights"
                }
                .to_string(),
                fix: row.get::<String>(2)?.unwrap_or_default(),
            });
        }
        Ok(findings)
    })
}

/// SECURITY DEFINER functions that an exposed table's own policies call:
/// the session guard lets credentials call them (a query on the table needs
/// them), directly too.
fn policy_security_definer(_: &Context) -> Result<Vec<Finding>> {
    rows(
        "SELECT 'function ' || p.oid::regprocedure::text, \
                format('ALTER FUNCTION %s SECURITY INVOKER; -- if the policies of %s still work so; \
                        else make sure it tells a caller nothing of other organizations', \
                       p.oid::regprocedure, string_agg(DISTINCT pol.polrelid::regclass::text, ', ')) \
         FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_policy pol ON pol.oid = d.objid \
         JOIN bi_access.exposed_table e ON e.tbl = pol.polrelid AND NOT e.hidden \
         JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass \
           AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
           AND p.prosecdef AND n.nspname <> ALL ($1) \
         GROUP BY p.oid ORDER BY 1",
        &[names::SCHEMAS.to_vec().into()],
        "warning",
        "a SECURITY DEFINER function that an exposed table's policies call: the session guard lets \
         BI roles call it (directly too), with its owner's rights",
    )
}

/// The owner of the extension member `m` (classid, objid), for the kinds
/// that have one of their own. A table's row type, an array type, an index
/// and a sequence a column owns follow their table's or element's owner (on
/// 17 and later the types are members too) and answer NULL, as do kinds
/// without an owner.
const OWNER: &str = "CASE m.classid \
      WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN \
        (SELECT c.relowner FROM pg_catalog.pg_class c \
         WHERE c.oid = m.objid AND c.relkind NOT IN ('c', 'i', 'I') \
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend sd \
                           WHERE sd.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                             AND sd.objid = c.oid AND sd.deptype IN ('a', 'i') \
                             AND sd.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass)) \
      WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN \
        (SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.oid = m.objid) \
      WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN \
        (SELECT t.typowner FROM pg_catalog.pg_type t \
         WHERE t.oid = m.objid AND t.typcategory <> 'A' \
           AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c \
                                   WHERE c.oid = t.typrelid) = 'c')) \
      WHEN 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN \
        (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid = m.objid) \
      WHEN 'pg_catalog.pg_event_trigger'::pg_catalog.regclass THEN \
        (SELECT e.evtowner FROM pg_catalog.pg_event_trigger e WHERE e.oid = m.objid) END";

/// bi_access's objects (its schemas and every member of the extension) owned
/// by another role than the extension's owner: what an `ALTER … OWNER TO`
/// past the drop guard left (`REASSIGN OWNED`, which fires no event trigger,
/// moves the extension with them, and only to a superuser: bi_access's event
/// triggers may have no other owner). Their new owner may read the sealed
/// secrets, or drop what the drop guard protects. And an extension's owner
/// that is no longer a superuser (`ALTER ROLE … NOSUPERUSER`): bi_access's
/// SECURITY DEFINER functions run as that role.
fn owners(_: &Context) -> Result<Vec<Finding>> {
    let mut findings = rows(
        "SELECT 'extension ' || e.extname || ' (owned by ' || e.extowner::regrole::text || ')', \
                format('ALTER ROLE %s SUPERUSER;', e.extowner::regrole) \
         FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_roles r ON r.oid = e.extowner \
         WHERE e.extname = $1 AND NOT r.rolsuper",
        &[names::EXTENSION.into()],
        "error",
        "bi_access's owner is not a superuser: its SECURITY DEFINER functions run with that role's \
         rights, which cannot manage roles or read what they must",
    )?;
    findings.extend(rows(
        &format!(
            "WITH ext AS (SELECT oid, extowner FROM pg_catalog.pg_extension WHERE extname = $1), \
              members AS ( \
                SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ext \
                WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
                  AND d.refobjid = ext.oid AND d.deptype = 'e' \
                UNION SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, n.oid \
                FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY ($2)), \
              owned AS (SELECT m.classid, m.objid, {OWNER} AS owner FROM members m) \
         SELECT pg_catalog.pg_describe_object(o.classid, o.objid, 0) \
                    || ' (owned by ' || o.owner::regrole::text || ')', \
                format('ALTER %s %s OWNER TO %s;', \
                       upper(replace(i.type, 'composite type', 'type')), i.identity, ext.extowner::regrole) \
         FROM owned o CROSS JOIN ext \
         CROSS JOIN LATERAL pg_catalog.pg_identify_object(o.classid, o.objid, 0) i \
         WHERE o.owner <> ext.extowner \
         ORDER BY 1"
        ),
        &[names::EXTENSION.into(), names::SCHEMAS.to_vec().into()],
        "error",
        "an object of bi_access owned by another role than the extension's owner (ALTER … OWNER TO \
         past the drop guard): that role may read the sealed secrets and drop what the drop guard \
         protects",
    )?);
    Ok(findings)
}

/// PUBLIC's SELECT reaches every login of the cluster: all rows of a table
/// without RLS, or of one where bi_access's pass-through policy lets every
/// role but its own credentials through.
fn public_select(context: &Context) -> Result<Vec<Finding>> {
    rows(
        "SELECT c.oid::regclass::text, format('REVOKE SELECT ON %s FROM PUBLIC;', c.oid::regclass) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = ANY ($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
           AND (NOT (c.relrowsecurity AND c.relkind IN ('r', 'p')) \
                OR EXISTS (SELECT FROM pg_catalog.pg_policy p \
                           WHERE p.polrelid = c.oid AND p.polname = 'bi_access_passthrough')) \
           AND EXISTS (SELECT FROM pg_catalog.aclexplode(c.relacl) a \
                       WHERE a.grantee = 0 AND a.privilege_type = 'SELECT') \
         ORDER BY 1",
        &[context.schemas.clone().into()],
        "error",
        "PUBLIC may read every row of this relation: every login of the cluster may",
    )
}

fn unsynced(_: &Context) -> Result<Vec<Finding>> {
    Ok(exposure::unsynced_tables()?
        .into_iter()
        // A sync cannot mend it: shared_with_org_column names the fix.
        .filter(|pending| {
            !matches!(
                pending.reason,
                exposure::Unsynced::CannotSync(BiError::SharedHasOrgColumn { .. })
            )
        })
        .map(|pending| Finding {
            severity: if pending.reason.is_new_table() {
                "info"
            } else {
                "error"
            },
            object: db::first::<String>("SELECT $1::regclass::text", &[pending.tbl.into()])
                .ok()
                .flatten()
                .unwrap_or_default(),
            finding: pending.reason.to_string(),
            fix: "SELECT * FROM bi_access.sync_tables();".into(),
        })
        .collect())
}

/// A view without security_invoker runs as its owner, past RLS: an error
/// when BI roles may read it now, a warning otherwise (one GRANT away from
/// it: a migration's `GRANT SELECT ON ALL TABLES`, say).
///
/// On 14 no view can be security_invoker: the fix takes the BI roles' access
/// away instead, and a view they cannot read is not reported (every view is
/// one, and the session guard refuses them all to credentials).
fn definer_views(context: &Context) -> Result<Vec<Finding>> {
    let (fix, only_readable) = if compat::VIEWS_HAVE_SECURITY_INVOKER {
        (
            "format('ALTER VIEW %s SET (security_invoker = true);', c.oid::regclass)",
            "",
        )
    } else {
        (
            "format('REVOKE SELECT ON %s FROM PUBLIC, %I;', c.oid::regclass, $2::text)",
            "AND pg_catalog.has_table_privilege($2, c.oid, 'SELECT')",
        )
    };
    Spi::connect(|client| {
        let mut findings = Vec::new();
        for row in client.select(
            &format!(
                "SELECT c.oid::regclass::text, {fix}, \
                        pg_catalog.has_table_privilege($2, c.oid, 'SELECT') \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = ANY ($1) AND c.relkind = 'v' \
                   AND NOT coalesce((SELECT o.option_value::bool \
                                     FROM pg_catalog.pg_options_to_table(c.reloptions) o \
                                     WHERE o.option_name = 'security_invoker'), false) \
                   {only_readable} \
                 ORDER BY 1"
            ),
            None,
            &[
                context.schemas.clone().into(),
                context.reader.as_str().into(),
            ],
        )? {
            let readable = row.get::<bool>(3)?.unwrap_or(false);
            findings.push(Finding {
                severity: if readable { "error" } else { "warning" },
                object: row.get::<String>(1)?.unwrap_or_default(),
                finding: if readable {
                    "BI roles may read this view, which is not security_invoker and so bypasses \
                     row-level security"
                } else {
                    "a view in an exposed schema that is not security_invoker: it would bypass \
                     row-level security for any BI role granted it"
                }
                .to_string(),
                fix: row.get::<String>(2)?.unwrap_or_default(),
            });
        }
        Ok(findings)
    })
}

/// Exposures made before an org column's type was checked: a key is cast to
/// that type, which may raise (numeric, an enum, a domain) or match loosely.
/// The upgrade leaves them as they are; this names them.
fn refused_org_columns(_: &Context) -> Result<Vec<Finding>> {
    rows(
        &format!(
            "SELECT e.tbl::regclass::text, \
                    format('SELECT bi_access.hide_table(%L); -- or ALTER TABLE %s ALTER COLUMN %I TYPE text, then expose it again', \
                           e.tbl::regclass::text, e.tbl::regclass, e.org_column) \
             FROM bi_access.exposed_table e \
             JOIN pg_catalog.pg_attribute a \
               ON a.attrelid = e.tbl AND a.attname = e.org_column AND a.attnum > 0 AND NOT a.attisdropped \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE NOT e.hidden AND NOT {} \
             ORDER BY 1",
            exposure::ACCEPTED_TYPE
        ),
        &[],
        "error",
        "an exposed table whose org column is of a type bi_access no longer accepts (text, varchar, \
         an integer type, uuid, citext): org keys are cast to it, which may fail or match loosely",
    )
}

/// A shared table that has gained the org column since it was shared: the
/// session guard refuses it to every credential (shared, each would read
/// every org's rows) and a sync withdraws its grant.
fn shared_with_org_column(_: &Context) -> Result<Vec<Finding>> {
    rows(
        "SELECT e.tbl::regclass::text, \
                format('SELECT bi_access.expose_table(%L, %L); -- or drop the column, or SELECT bi_access.hide_table(%L);', \
                       e.tbl::regclass::text, e.org_column, e.tbl::regclass::text) \
         FROM bi_access.exposed_table e \
         JOIN pg_catalog.pg_attribute a \
           ON a.attrelid = e.tbl AND a.attname = e.org_column AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE e.shared AND NOT e.hidden \
         ORDER BY 1",
        &[],
        "error",
        "a shared table that carries the org column: BI roles may not read it (every credential \
         would read every org's rows) until it is exposed by that column instead",
    )
}

/// A column list naming a column the table no longer has (dropped, or
/// renamed): BI roles read only the listed columns that remain. The fix
/// sets the list to those (or hides the table when none remains).
fn stale_column_lists(_: &Context) -> Result<Vec<Finding>> {
    rows(
        "SELECT e.tbl::regclass::text, \
                CASE WHEN l.live IS NULL THEN format('SELECT bi_access.hide_table(%L);', e.tbl::regclass::text) \
                     WHEN e.shared THEN format('SELECT bi_access.share_table(%L, %L);', e.tbl::regclass::text, l.live) \
                     ELSE format('SELECT bi_access.expose_table(%L, %L, %L);', \
                                 e.tbl::regclass::text, e.org_column, l.live) END \
         FROM bi_access.exposed_table e \
         JOIN pg_catalog.pg_class c ON c.oid = e.tbl, \
         LATERAL (SELECT pg_catalog.array_agg(a.attname ORDER BY a.attnum) AS live \
                  FROM pg_catalog.pg_attribute a \
                  WHERE a.attrelid = e.tbl AND a.attname = ANY (e.columns) \
                    AND a.attnum > 0 AND NOT a.attisdropped) l \
         WHERE NOT e.hidden AND e.columns IS NOT NULL \
           AND pg_catalog.cardinality(l.live) IS DISTINCT FROM pg_catalog.cardinality(e.columns) \
         ORDER BY 1",
        &[],
        "warning",
        "its column list names a column the table no longer has (dropped or renamed): \
         BI roles read only the listed columns that remain",
    )
}

/// Row-level security on a table that a subscription of this database
/// applies changes to: the apply worker runs as the subscription's owner,
/// and fails on such a table unless that owner bypasses RLS (a superuser or
/// BYPASSRLS). An error when it does not, a warning otherwise (a change of
/// owner would break replication).
/// Current credentials whose org key no exposed org column prints (made
/// before those tables were exposed, or a column's type changed since):
/// generate refuses such a key now (22023), but these logins already see
/// no row. The fix makes one with the key's canonical form.
fn keys_matching_no_table(_: &Context) -> Result<Vec<Finding>> {
    let types = exposure::org_column_types()?;
    let mut found = Vec::new();
    for (role, key) in records::current_keys()? {
        if let Err(BiError::NonCanonicalOrgKey { kinds, hint, .. }) =
            org::check_canonical(&key, &types)
        {
            found.push(Finding {
                severity: "warning",
                object: format!("role {role}"),
                finding: format!(
                    "its org key {key:?} is not {kinds} as the exposed org columns print it: \
                     the credential logs in and sees no row"
                ),
                fix: format!(
                    "{hint} Generate the org's credential with that key, then SELECT bi_access.delete({});",
                    pgrx::spi::quote_literal(&role)
                ),
            });
        }
    }
    Ok(found)
}

/// Property 4: an application role (not a superuser, not BYPASSRLS, not the
/// owner nor a member of it, not bi_access's) with privileges on exposed
/// tables whose RLS bi_access turned on. PostgreSQL refuses its `COPY …
/// FROM` them, and plans the pass-through policy in its every statement on
/// them unless its session loaded bi_access. The fix suits the role: one
/// with no RLS of its own in this database may bypass RLS; one with some
/// keeps it, and is served by the preload and by writing as the owner.
fn application_roles(_: &Context) -> Result<Vec<Finding>> {
    let preloaded = crate::guard::session::preloaded();
    Spi::connect(|client| {
        let mut findings = Vec::new();
        for row in client.select(
            "WITH affected AS ( \
               SELECT r.oid AS role, r.rolname, c.oid AS tbl \
               FROM bi_access.exposed_table e \
               JOIN pg_catalog.pg_class c ON c.oid = e.tbl \
               CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a \
               JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
               WHERE NOT e.hidden AND NOT e.shared AND e.rls_enabled_by_bi_access AND c.relkind IN ('r', 'p') \
                 AND NOT r.rolsuper AND NOT r.rolbypassrls \
                 AND NOT pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE') \
                 AND NOT pg_catalog.starts_with(r.rolname, 'bi_access') \
                 AND NOT pg_catalog.pg_has_role(r.oid, 'bi_access_credential', 'MEMBER') \
               GROUP BY r.oid, r.rolname, c.oid) \
             SELECT 'role ' || quote_ident(f.rolname), \
                    string_agg(f.tbl::regclass::text, ', ' ORDER BY f.tbl::regclass::text), \
                    EXISTS (SELECT FROM pg_catalog.pg_policy p \
                            JOIN pg_catalog.pg_class pc ON pc.oid = p.polrelid AND pc.relrowsecurity \
                            WHERE p.polname NOT LIKE 'bi\\_access\\_%' \
                              AND (0 = ANY (p.polroles) OR EXISTS ( \
                                     SELECT FROM unnest(p.polroles) pr WHERE pg_catalog.pg_has_role(f.role, pr, 'USAGE')))), \
                    quote_ident(f.rolname) \
             FROM affected f GROUP BY f.role, f.rolname ORDER BY 1",
            None,
            &[],
        )? {
            let object = row.get::<String>(1)?.unwrap_or_default();
            let tables = row.get::<String>(2)?.unwrap_or_default();
            let own_rls = row.get::<bool>(3)?.unwrap_or(true);
            let role = row.get::<String>(4)?.unwrap_or_default();
            let planning = if preloaded {
                ""
            } else {
                ", and each of its statements on them plans bi_access's pass-through policy \
                 (about 1.1x on a point lookup) unless its session loads bi_access"
            };
            findings.push(Finding {
                severity: "warning",
                object,
                finding: format!(
                    "an application role under the row-level security bi_access turned on for \
                     {tables}: PostgreSQL refuses its COPY ... FROM them{planning}"
                ),
                fix: if own_rls {
                    let preload = if preloaded {
                        ""
                    } else {
                        "preload bi_access (see the shared_preload_libraries finding); "
                    };
                    format!(
                        "It is under row-level security of the application's own here, so keep it: \
                         {preload}run COPY ... FROM as the tables' owner (GRANT the owner role to a \
                         loader role)."
                    )
                } else {
                    format!("ALTER ROLE {role} BYPASSRLS; -- it is under no row-level security of the application's own here")
                },
            });
        }
        Ok(findings)
    })
}

fn replication_targets(_: &Context) -> Result<Vec<Finding>> {
    Spi::connect(|client| {
        let mut findings = Vec::new();
        for row in client.select(
            "SELECT e.tbl::regclass::text || ' (subscription ' || quote_ident(s.subname) || ')', \
                    format('SELECT bi_access.hide_table(%L); -- or ALTER ROLE %I BYPASSRLS', \
                           e.tbl::regclass::text, r.rolname), \
                    r.rolsuper OR r.rolbypassrls \
             FROM bi_access.exposed_table e \
             JOIN pg_catalog.pg_subscription_rel sr ON sr.srrelid = e.tbl \
             JOIN pg_catalog.pg_subscription s ON s.oid = sr.srsubid \
             JOIN pg_catalog.pg_roles r ON r.oid = s.subowner \
             WHERE NOT e.hidden \
             ORDER BY 1",
            None,
            &[],
        )? {
            let bypasses = row.get::<bool>(3)?.unwrap_or(false);
            findings.push(Finding {
                severity: if bypasses { "warning" } else { "error" },
                object: row.get::<String>(1)?.unwrap_or_default(),
                finding: if bypasses {
                    "an exposed table is a logical-replication target: its row-level security \
                     stops the apply worker as soon as the subscription's owner no longer bypasses it"
                } else {
                    "an exposed table is a logical-replication target and the subscription's owner \
                     does not bypass row-level security: its apply worker fails on this table"
                }
                .to_string(),
                fix: row.get::<String>(2)?.unwrap_or_default(),
            });
        }
        Ok(findings)
    })
}

/// From 16 on, a membership that allows SET ROLE is one bi_access never
/// gives either (compat says how to spot it).
fn credential_attributes(context: &Context) -> Result<Vec<Finding>> {
    let settable = if compat::MEMBERSHIP_WITHOUT_SET_ROLE {
        compat::MEMBERSHIP_ALLOWS_SET_ROLE_SQL
    } else {
        "false"
    };
    Ok(words(
        records::overgranted_roles(&context.reader, settable)?,
        "error",
        "a credential role has an attribute or a membership bi_access never gives",
    ))
}

/// A reader group is alive while the org lookups of its database are granted
/// to it: pg_shdepend, a shared catalog, records that grant with the
/// database's OID, and loses it when the extension or the database goes,
/// by whatever path (single-user mode, event triggers off, DROP DATABASE).
const READER_GROUPS: &str = "WITH readers AS ( \
       SELECT r.oid, r.rolname, \
              EXISTS (SELECT FROM pg_catalog.pg_shdepend s \
                      WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
                        AND s.refobjid = r.oid AND s.deptype = 'a' \
                        AND s.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass) AS alive \
       FROM pg_catalog.pg_roles r WHERE starts_with(r.rolname, $1))";

/// Credential roles of the cluster that no database manages any more: they
/// can still log in wherever PUBLIC may connect, and read nothing there.
fn orphaned_credentials(_: &Context) -> Result<Vec<Finding>> {
    Ok(words(
        records::unmanaged_credential_roles(READER_GROUPS)?,
        "error",
        "a bi_access credential role that no database manages any more (its database was dropped, \
         or bi_access was removed there past its drop guard); it can still log in",
    ))
}

/// Credentials with a network allowlist while PgBouncer logs in through
/// bi_access_pooler (a role is a member of it: its auth_user): a client
/// reaching the server through PgBouncer arrives from PgBouncer's address,
/// so the list sees PgBouncer, never the BI tool.
fn networks_behind_the_pooler(_: &Context) -> Result<Vec<Finding>> {
    rows(
        &format!(
            "SELECT 'credential ' || quote_ident(c.role_name), \
                    format('if its target (%s) is PgBouncer: allow PgBouncer''s address and filter the BI \
                            tool''s in PgBouncer''s own host rules, or point the credential at the server \
                            (a target without PgBouncer); else SELECT bi_access.set_networks(%L, NULL)', \
                           c.target, c.role_name) \
             FROM bi_access.credential c \
             WHERE c.allowed_networks IS NOT NULL AND c.{} \
               AND EXISTS (SELECT FROM pg_catalog.pg_auth_members m \
                           JOIN pg_catalog.pg_roles p ON p.oid = m.roleid \
                           WHERE p.rolname = $1) \
             ORDER BY c.id",
            records::CURRENT
        ),
        &[names::POOLER_GROUP.into()],
        "warning",
        "a credential with a network allowlist, while bi_access_pooler has a member (PgBouncer's \
         auth_user): through PgBouncer the server sees PgBouncer's address, not the BI tool's, so \
         its allowlist refuses every login through PgBouncer unless it includes PgBouncer's \
         address, which admits every client of PgBouncer",
    )
}

/// Reader groups whose database lost bi_access: the statements that finish
/// the removal there, then the role. A database that has bi_access (a
/// restore's, whose roles brought the source cluster's group along) keeps
/// its policies and RLS: the fix only takes the old group's grants there.
fn orphaned_reader_groups(_: &Context) -> Result<Vec<Finding>> {
    // A psql script, run as a superuser: \connect to each database where
    // the group still holds something, finish there, then drop the role.
    rows(
        &format!(
            "{READER_GROUPS} \
             SELECT 'role ' || quote_ident(rd.rolname), \
                    coalesce((SELECT string_agg( \
                        format('\\connect %I', d.datname) || chr(10) \
                        || format('SELECT format(''DROP POLICY %I ON %%s; ALTER TABLE %%s DISABLE ROW LEVEL SECURITY;'', \
polrelid::regclass, polrelid::regclass) FROM pg_policy WHERE polname = %L \
AND NOT EXISTS (SELECT FROM pg_extension WHERE extname = ''bi_access'') \\gexec', $2::text, $2::text) \
                        || chr(10) || format('DROP OWNED BY %I;', rd.rolname) || chr(10), \
                        '' ORDER BY d.datname) \
                              FROM pg_catalog.pg_database d \
                              WHERE d.oid IN (SELECT s.dbid FROM pg_catalog.pg_shdepend s \
                                              WHERE s.refobjid = rd.oid AND s.dbid <> 0)), '') \
                    || format('DROP ROLE %I;', rd.rolname) \
             FROM readers rd WHERE NOT rd.alive ORDER BY 1"
        ),
        &[names::READER_GROUP_PREFIX.into(), names::POLICY_PASSTHROUGH.into()],
        "error",
        "a reader group no database uses: bi_access is gone from its database (dropped past its \
         drop guard, or the database was dropped), or it came with roles restored from another \
         cluster; tables keep its grants (and, where bi_access is gone, its pass-through policy). \
         The fix is a psql script for a superuser",
    )
}

/// A key missing or different from the one that sealed the passwords, and
/// roles that could read it (src/key.rs).
fn sealing_key(_: &Context) -> Result<Vec<Finding>> {
    Ok(crate::key::findings()?
        .into_iter()
        .map(|(severity, object, finding, fix)| Finding {
            severity,
            object,
            finding,
            fix,
        })
        .collect())
}

fn ssl(_: &Context) -> Result<Vec<Finding>> {
    let sslmode = settings::sslmode();
    let promised = matches!(sslmode.as_str(), "require" | "verify-ca" | "verify-full");
    let on = db::first::<String>("SELECT pg_catalog.current_setting('ssl')", &[])?;
    if !promised || on.as_deref() == Some("on") {
        return Ok(vec![]);
    }
    Ok(vec![Finding {
        severity: "error",
        object: "setting ssl".into(),
        finding: format!("bi_access.sslmode is {sslmode} but this server has ssl = off"),
        fix: format!(
            "Configure ssl = on with a certificate (on the replica BI tools use too), or hand out \
             URLs that do not promise SSL (unset, bi_access.sslmode follows the server's ssl): {}",
            setting_origin::change("bi_access.sslmode", None)?
        ),
    }])
}

fn password_encryption(_: &Context) -> Result<Vec<Finding>> {
    let method = db::first::<String>(
        "SELECT pg_catalog.current_setting('password_encryption')",
        &[],
    )?;
    if method.as_deref() == Some("scram-sha-256") {
        return Ok(vec![]);
    }
    Ok(vec![Finding {
        severity: "warning",
        object: "setting password_encryption".into(),
        finding: format!(
            "password_encryption is {}; passwords set outside bi_access would not be SCRAM",
            method.unwrap_or_default()
        ),
        fix: setting_origin::change("password_encryption", Some("scram-sha-256"))?,
    }])
}

/// bi_access.audit_reads promises every BI statement in the server log, but
/// without pgaudit loaded no role setting can deliver it.
fn audit_reads(_: &Context) -> Result<Vec<Finding>> {
    if !settings::audit_reads() || roles::pgaudit_loaded() {
        return Ok(vec![]);
    }
    Ok(vec![Finding {
        severity: "warning",
        object: "setting bi_access.audit_reads".into(),
        finding: "bi_access.audit_reads is on but pgaudit is not in shared_preload_libraries: \
                  credentials' reads are not logged"
            .into(),
        fix: format!(
            "Install pgaudit, add it to shared_preload_libraries and restart the server, then \
             CALL bi_access.sync(); or {}",
            setting_origin::change("bi_access.audit_reads", None)?
        ),
    }])
}

/// Which regime bounds the application's wait on a credential's lock on
/// this server: the yield worker (preloaded) with bi_access.yield_after, or
/// only bi_access.transaction_timeout; and anything that leaves either
/// without effect.
fn lock_waits(_: &Context) -> Result<Vec<Finding>> {
    let cap = settings::transaction_timeout_ms().map(settings::duration);
    let capped = match &cap {
        Some(cap) => format!("bi_access.transaction_timeout ({cap}) ends any credential transaction that lasts longer"),
        None => "bi_access.transaction_timeout is 0: no credential transaction is ever ended for its length".into(),
    };
    let object = "lock waits".to_string();
    if crate::shmem::segment().is_none() {
        let preloaded = settings::shared_preload_libraries();
        let libraries = preloaded
            .split(',')
            .map(str::trim)
            .filter(|library| !library.is_empty())
            .chain(std::iter::once(names::EXTENSION))
            .collect::<Vec<_>>()
            .join(",");
        let (severity, bound) = match &cap {
            Some(cap) => (
                "info",
                format!("at most bi_access.transaction_timeout ({cap})"),
            ),
            None => ("error", "without any bound".into()),
        };
        return Ok(vec![Finding {
            severity,
            object,
            finding: format!(
                "bi_access is not preloaded on this server: the application (and a standby's replay) may wait \
                 on a credential's lock {bound}; no credential yields its locks"
            ),
            fix: format!(
                "ALTER SYSTEM SET shared_preload_libraries = {}; then restart the server (and each standby, \
                 where the same goes into its postgresql.conf): the yield worker then bounds the wait at \
                 bi_access.yield_after.",
                pgrx::spi::quote_literal(&libraries)
            ),
        }]);
    }
    let workers = db::first::<i64>(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = $1",
        &[crate::yielding::WORKER_TYPE.into()],
    )?
    .unwrap_or(0);
    let finding = |severity, finding: String, fix: &str| {
        Ok(vec![Finding {
            severity,
            object: object.clone(),
            finding,
            fix: fix.into(),
        }])
    };
    if workers == 0 {
        return finding(
            "error",
            format!("bi_access is preloaded but its yield worker is not running on this server: credentials' locks are bounded only as if it were not ({capped})"),
            "Read the server log for \"bi_access yield worker\"; raise max_worker_processes if it could not start, and restart the server.",
        );
    }
    match settings::yield_after_ms() {
        None => finding(
            "warning",
            format!("bi_access.yield_after is 0: the yield worker never makes a credential yield a lock ({capped})"),
            &setting_origin::change("bi_access.yield_after", None)?,
        ),
        Some(after) => finding(
            "info",
            format!(
                "the yield worker runs: a credential's statement is cancelled when the application or replay has \
                 waited bi_access.yield_after ({}) on a lock it holds, and its session ends if it still holds it; {capped}",
                settings::duration(after)
            ),
            "Nothing to do.",
        ),
    }
}

/// Preloaded: current credentials without a login on this server for
/// bi_access.stale_after, saying since when the counters count (they start
/// with the server), and the logins the usage entries had no room for.
/// Without the preload `preload` says why there is nothing to go by.
fn stale_credentials(_: &Context) -> Result<Vec<Finding>> {
    let Some(overflow) = crate::usage::overflow() else {
        return Ok(vec![]);
    };
    let mut findings = Vec::new();
    if overflow > 0 {
        let capacity = settings::usage_max_credentials();
        findings.push(Finding {
            severity: "warning",
            object: "setting bi_access.usage_max_credentials".into(),
            finding: format!(
                "{overflow} logins on this server were not counted in bi_access.usage: its {capacity} entries are all taken"
            ),
            fix: format!(
                "ALTER SYSTEM SET bi_access.usage_max_credentials = {}; then restart the server (and each standby).",
                capacity.saturating_mul(2)
            ),
        });
    }
    let Some(after) = settings::stale_after_s() else {
        return Ok(findings);
    };
    let started: String =
        db::first("SELECT pg_catalog.pg_postmaster_start_time()::text", &[])?.unwrap_or_default();
    findings.extend(words(
        records::stale_credentials(after)?,
        "warning",
        &format!(
            "a current credential without a login on this server for bi_access.stale_after ({}); \
             the usage counters started with the server at {started}",
            seconds(after)
        ),
    ));
    Ok(findings)
}

/// A number of seconds in the largest unit that divides it.
fn seconds(s: i32) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}min", s / 60),
        s => format!("{s}s"),
    }
}

/// What only `shared_preload_libraries = 'bi_access'` gives, each named when
/// the server lacks it. Everything else holds either way: every credential
/// session loads bi_access and its login gate itself.
const NEEDS_THE_PRELOAD: [&str; 3] = [
    "the application's sessions lack bi_access's planner hook, so each of their queries on an \
     exposed table plans the pass-through policy's sub-select (README: The application is unchanged)",
    "no yield worker makes a credential give up a lock the application or replay waits for, \
     so the wait lasts up to bi_access.transaction_timeout (object lock waits)",
    "no usage counters: the bi_access.usage view is empty, credentials.last_login_at is NULL \
     and no credential is found stale (bi_access.stale_after)",
];

fn preload(_: &Context) -> Result<Vec<Finding>> {
    if crate::guard::session::preloaded() {
        return Ok(vec![]);
    }
    let libraries = settings::shared_preload_libraries();
    let wanted = if libraries.trim().is_empty() {
        names::EXTENSION.to_string()
    } else {
        format!("{}, {}", libraries.trim(), names::EXTENSION)
    };
    Ok(vec![Finding {
        severity: "warning",
        object: "setting shared_preload_libraries".into(),
        finding: format!(
            "bi_access is not in shared_preload_libraries: {}",
            NEEDS_THE_PRELOAD.join("; ")
        ),
        fix: format!(
            "ALTER SYSTEM SET shared_preload_libraries = {}; then restart the server (and each standby).",
            pgrx::spi::quote_literal(&wanted)
        ),
    }])
}
