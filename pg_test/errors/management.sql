-- Management calls a superuser or an application's bi_access_admin gets
-- wrong. :'role' is a live read credential of org 42 (label 'read'); one
-- more of org 42 has target `standby`, and one is read_write.
-- generate
SELECT * FROM bi_access.generate('');
SELECT * FROM bi_access.generate(repeat('x', 10000));
SELECT * FROM bi_access.generate(' 42 ');
SELECT * FROM bi_access.generate('042');
SELECT * FROM bi_access.generate(NULL::bigint);
SELECT * FROM bi_access.generate(42.5);
SELECT * FROM bi_access.generate(42, 'read');
SELECT * FROM bi_access.generate(42, 'x', scope => 'nope');
SELECT * FROM bi_access.generate(42, 'x', valid_until => '2000-01-01T00:00:00Z');
SELECT * FROM bi_access.generate(42, 'x', connection_limit => -5);
SELECT * FROM bi_access.generate(42, 'x', target => 'nowhere');
SELECT * FROM bi_access.generate(42, 'x', scope => 'read_write', target => 'standby');
SELECT * FROM bi_access.generate(42, 'x', allowed_networks => '{}');
-- one credential
SELECT bi_access.revoke('no_such_role');
SELECT bi_access.revoke(NULL);
SELECT * FROM bi_access.activate(:'role');
SELECT * FROM bi_access.purge(:'role');
SELECT * FROM bi_access.regenerate(:'role', overlap => '-1 second');
SELECT * FROM bi_access.regenerate(:'role', valid_until => '2000-01-01T00:00:00Z');
SELECT * FROM bi_access.connection_details('no_such_role');
SELECT bi_access.set_networks('no_such_role', NULL);
-- an org
SELECT * FROM bi_access.revoke_org(NULL);
SELECT * FROM bi_access.revoke_org('999');
SELECT * FROM bi_access.delete_org('999');
SELECT bi_access.drop_custom_schema('42');
-- targets
SELECT bi_access.set_target('t', 'localhost', 0);
SELECT bi_access.set_target('t', '', 5432);
SELECT bi_access.set_target('t', 'localhost', 5432, sslmode => 'sometimes');
SELECT bi_access.drop_target('nowhere');
SELECT bi_access.drop_target('standby');
-- tables
SELECT bi_access.expose_table('no_such_table');
SELECT bi_access.expose_table('pg_catalog.pg_class');
SELECT bi_access.expose_table('bi_access.credential');
SELECT bi_access.expose_table('counter');
SELECT bi_access.expose_table('definer_view');
SELECT bi_access.expose_table('tickets');
SELECT bi_access.expose_table('tickets', org_column => 'no_such_column');
SELECT bi_access.expose_table('measures');
SELECT bi_access.expose_table('dormant');
SELECT bi_access.expose_table('accounts', columns => '{}');
SELECT bi_access.expose_table('accounts', columns => ARRAY['email', 'email']);
SELECT bi_access.expose_table('accounts', columns => ARRAY['email', 'no_such_column']);
SELECT bi_access.share_table('others');
SELECT bi_access.share_table('counter');
SELECT bi_access.hide_table('counter');
SELECT bi_access.hide_table('tickets');
CALL bi_access.sync(lock_timeout => 'soon');
CALL bi_access.sync(retries => -1);
CALL bi_access.sync(lock_timeout => NULL);
-- an application's admin role: a member of bi_access_admin, not the owner
SET ROLE app_admin;
SELECT bi_access.expose_table('others');
SELECT bi_access.rotate_key();
SELECT bi_access.export_key();
RESET ROLE;
-- a role without bi_access_admin
SET ROLE plain;
SELECT * FROM bi_access.generate('42');
SELECT * FROM bi_access.credentials;
RESET ROLE;
-- the key
SELECT bi_access.import_key('not a key');
SELECT bi_access.adopt('not a key');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT bi_access.rotate_key();
ROLLBACK;
-- from the caller's own code: its CONTEXT line stays, whether the function
-- is declared in Rust or in SQL
DO $$ BEGIN PERFORM bi_access.import_key('not a key'); END $$;
DO $$ BEGIN PERFORM bi_access.purge(NULL); END $$;
DO $$ BEGIN PERFORM bi_access.revoke(NULL); END $$;
-- the event log and bi_access's own objects
UPDATE bi_access.event SET detail = NULL;
DELETE FROM bi_access.event;
SELECT bi_access.event_append_only();
ALTER SCHEMA bi_access RENAME TO bi_other;
DROP EXTENSION bi_access;
-- a call that ends sessions, then PREPARE TRANSACTION
BEGIN;
SELECT status FROM bi_access.revoke(:'role');
PREPARE TRANSACTION 'revoked';
