-- Before the SQL surface is rebuilt: schema and data changes from 0.1.0.

-- Expiry is a status of its own. Appended, so the order matches a fresh
-- install; usable only once this transaction commits (the credentials view
-- reaches it through text).
ALTER TYPE bi_access.credential_status ADD VALUE IF NOT EXISTS 'expired';

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
