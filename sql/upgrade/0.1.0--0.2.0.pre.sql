-- Before the SQL surface is rebuilt: schema and data changes from 0.1.0.

-- Expiry is a status of its own. Appended, so the order matches a fresh
-- install; usable only once this transaction commits (the credentials view
-- reaches it through text).
ALTER TYPE bi_access.credential_status ADD VALUE IF NOT EXISTS 'expired';

-- The key moves from a file of the data directory into a table that
-- physical replication carries (see bootstrap.sql); post.sql adopts the file.
ALTER TABLE bi_access.credential ADD COLUMN sealed_with text;
CREATE TABLE bi_access.sealing_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key bytea NOT NULL CHECK (length(key) = 32),
    fingerprint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE bi_access.sealing_key ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON bi_access.sealing_key FROM PUBLIC;

-- `syncing` is derived from the running sync, never stored: 0.1.0 left it
-- on every credential when a CALL bi_access.sync() was cancelled or killed.
ALTER TABLE bi_access.config ADD COLUMN sync_pid integer;
UPDATE bi_access.credential SET status = 'active' WHERE status = 'syncing';

-- A credential that SET ROLEs to its reader group is still a member of
-- bi_access_credential: the pass-through policy never admits it.
DO $upgrade$
BEGIN
    EXECUTE format('GRANT bi_access_credential TO %I', (SELECT reader_role FROM bi_access.config));
END
$upgrade$;

-- PgBouncer's auth_user role (bootstrap.sql creates it on a fresh install);
-- cluster-wide, so another database may have created it already.
DO $upgrade$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bi_access_pooler') THEN
        CREATE ROLE bi_access_pooler NOLOGIN;
    END IF;
END
$upgrade$;

-- The SQL surface of 0.1.0 (sql/api.sql) goes: every view, wrapper,
-- procedure and event trigger is recreated below exactly as a fresh install
-- creates it. Functions returning bi_access.credentials depend on the view.
DROP EVENT TRIGGER IF EXISTS bi_access_new_tables;
DROP EVENT TRIGGER IF EXISTS bi_access_forget_dropped;
DROP EVENT TRIGGER IF EXISTS bi_access_drop_extension;
DROP FUNCTION bi_access.on_ddl_command_end();
DROP FUNCTION bi_access.on_sql_drop();
DROP FUNCTION bi_access.on_drop_extension();
DROP PROCEDURE bi_access.sync(text, integer);
DROP FUNCTION bi_access_internal.step_sync_begin();
DROP FUNCTION bi_access_internal.step_sync_table(regclass);
DROP FUNCTION bi_access_internal.step_sync_end(integer, integer, text[]);
DROP FUNCTION bi_access.generate(text, text, text, timestamptz, integer);
DROP FUNCTION bi_access.connection_details(name);
DROP FUNCTION bi_access.regenerate(name);
DROP FUNCTION bi_access.revoke(name);
DROP FUNCTION bi_access.activate(name);
DROP FUNCTION bi_access.delete(name);
DROP FUNCTION bi_access.purge(name);
DROP FUNCTION bi_access.expose_table(regclass, name);
DROP FUNCTION bi_access.hide_table(regclass);
DROP FUNCTION bi_access.unsynced_tables();
DROP FUNCTION bi_access.sync_tables();
DROP FUNCTION bi_access."check"();
DROP VIEW bi_access.credentials;
DROP VIEW bi_access.events;

-- After the event triggers of 0.1.0 are gone: they would fire on the DDL
-- below and call 0.1.0 workers that the new library no longer has.
-- Management tiers (cluster-wide, as sql/bootstrap.sql creates them): each
-- a member of the one below; bi_access_admin exists since 0.1.0 and gains
-- the other two through its membership in bi_access_editor.
DO $upgrade$
DECLARE
    tier record;
BEGIN
    FOR tier IN SELECT * FROM (VALUES ('bi_access_viewer', NULL),
                                      ('bi_access_editor', 'bi_access_viewer'),
                                      ('bi_access_admin', 'bi_access_editor')) AS t(role, below)
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = tier.role) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', tier.role);
        END IF;
        IF tier.below IS NOT NULL AND NOT EXISTS (
            SELECT FROM pg_catalog.pg_auth_members m
            WHERE m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = tier.below)
              AND m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = tier.role))
        THEN
            EXECUTE pg_catalog.format('GRANT %I TO %I', tier.below, tier.role);
        END IF;
    END LOOP;
END
$upgrade$;

-- Named targets (src/targets.rs): every 0.1.0 credential points at
-- 'default', the settings' target, as before.
-- Scopes (read, read_write) come with the targets: the connection type
-- gains scope, custom_schema and target in that order, as a fresh install's.
ALTER TYPE bi_access.connection ADD ATTRIBUTE scope text, ADD ATTRIBUTE custom_schema text,
    ADD ATTRIBUTE target text;
ALTER TABLE bi_access.credential ADD COLUMN target text NOT NULL DEFAULT 'default';
ALTER TABLE bi_access.credential ADD COLUMN scope text NOT NULL DEFAULT 'read'
    CONSTRAINT credential_scope_check CHECK (scope IN ('read', 'read_write'));
CREATE TABLE bi_access.target (
    name text PRIMARY KEY,
    host text NOT NULL,
    port integer NOT NULL,
    sslmode text,
    standby text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT target_name_check CHECK (name <> '' AND lower(name) <> 'default' AND length(name) <= 63),
    CONSTRAINT target_port_check CHECK (port BETWEEN 1 AND 65535)
);
CREATE INDEX credential_target ON bi_access.credential (target);
SELECT pg_catalog.pg_extension_config_dump('bi_access.target', '');
REVOKE ALL ON bi_access.target FROM PUBLIC;

-- Custom schemas of read_write credentials (src/custom_schema.rs).
CREATE TABLE bi_access.custom_schema (
    org_id text PRIMARY KEY,
    schema_name name NOT NULL UNIQUE,
    owner_role name NOT NULL UNIQUE,
    reader_role name NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('bi_access.custom_schema', '');
REVOKE ALL ON bi_access.custom_schema FROM PUBLIC;
