-- Before the SQL surface is rebuilt: schema and data changes from 0.2.0.

-- The SQL surface of 0.2.0 (its sql/api.sql) goes: every view, wrapper,
-- procedure and event trigger is recreated below exactly as a fresh install
-- creates it. The event triggers go first: they would fire on the DDL below.
-- Functions returning bi_access.credentials depend on the view.
DROP EVENT TRIGGER IF EXISTS bi_access_after_ddl;
DROP EVENT TRIGGER IF EXISTS bi_access_forget_dropped;
DROP EVENT TRIGGER IF EXISTS bi_access_drop_guard;
DROP FUNCTION bi_access_internal.on_ddl_command_end();
DROP FUNCTION bi_access_internal.on_sql_drop();
DROP FUNCTION bi_access_internal.drop_guard();
DROP PROCEDURE bi_access.sync(text, integer);
DROP FUNCTION bi_access_internal.step_sync_begin();
DROP FUNCTION bi_access_internal.step_sync_table(regclass);
DROP FUNCTION bi_access_internal.step_sync_end(integer, integer, text[]);
DROP FUNCTION bi_access.generate(text, text, text, timestamptz, integer, text, text);
DROP FUNCTION bi_access.connection_details(name);
DROP FUNCTION bi_access.regenerate(name, timestamptz);
DROP FUNCTION bi_access.revoke(name);
DROP FUNCTION bi_access.activate(name);
DROP FUNCTION bi_access.delete(name);
DROP FUNCTION bi_access.purge(name);
DROP FUNCTION bi_access.revoke_org(text);
DROP FUNCTION bi_access.delete_org(text);
DROP FUNCTION bi_access.set_target(text, text, integer, text, text);
DROP FUNCTION bi_access.drop_target(text);
DROP FUNCTION bi_access.drop_custom_schema(text);
DROP FUNCTION bi_access.expose_table(regclass, name);
DROP FUNCTION bi_access.hide_table(regclass);
DROP FUNCTION bi_access.unsynced_tables();
DROP FUNCTION bi_access.sync_tables();
DROP FUNCTION bi_access."check"();
DROP FUNCTION bi_access.pgbouncer_auth(text);
DROP VIEW bi_access.targets;
DROP VIEW bi_access.events;
DROP VIEW bi_access.credentials;

-- New in 0.3.0: per-credential network allowlists (src/guard/networks.rs).
ALTER TABLE bi_access.credential ADD COLUMN allowed_networks cidr[] CONSTRAINT credential_allowed_networks_check
    CHECK (cardinality(allowed_networks) > 0 AND array_position(allowed_networks, NULL) IS NULL);

-- New in 0.3.0: overlap rotation (src/credentials.rs).
ALTER TABLE bi_access.credential
    ADD COLUMN previous_role_name name CONSTRAINT credential_previous_role_name_key UNIQUE,
    ADD COLUMN previous_until timestamptz,
    ADD CONSTRAINT credential_previous_check CHECK ((previous_role_name IS NULL) = (previous_until IS NULL));
CREATE INDEX credential_previous_until ON bi_access.credential (previous_until)
    WHERE previous_until IS NOT NULL AND status <> 'deleted';

-- New in 0.3.0: shared tables and column lists (src/exposure/tables.rs).
ALTER TABLE bi_access.exposed_table
    ADD COLUMN shared boolean NOT NULL DEFAULT false,
    ADD COLUMN columns name[] CONSTRAINT exposed_table_columns_check
        CHECK (cardinality(columns) > 0 AND array_position(columns, NULL) IS NULL);
