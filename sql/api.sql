-- bi_access: the SQL surface that SQL says better. Runs after every
-- generated object.
--
-- Most functions of schema bi_access are declared once, in Rust, with their
-- COMMENT and tier GRANT beside them (src/api.rs, src/key.rs,
-- src/restore.rs). Here: the views, and the functions that return a view's
-- row, each calling its worker in schema bi_access_internal (Rust), which
-- nobody else may call. Each is SECURITY DEFINER with a pinned search_path,
-- is not executable by PUBLIC, and is granted to its management tier
-- (bi_access_viewer, bi_access_editor, bi_access_admin: see the end).
-- No management function is STRICT: a NULL where NULL means nothing reaches
-- the worker, which refuses it (22004 naming the argument), never a silent NULL.

CREATE VIEW bi_access.credentials AS
SELECT c.id,
       c.org_id,
       c.org_name,
       c.label,
       c.scope,
       c.target,
       c.role_name,
       -- Decided once, in src/status.rs (bi_access_internal.credential_state):
       -- the first that applies of deleted, deleting, failed, deactivated,
       -- expired, pending, syncing, active. It goes through text: the
       -- upgrade from 0.1.0 adds the 'expired' enum value in the same
       -- transaction that creates this view.
       st.status::bi_access.credential_status AS status,
       c.created_at,
       c.updated_at,
       c.rotated_at,
       c.valid_until,
       c.connection_limit,
       coalesce(c.last_error, st.problem) AS last_error,
       c.allowed_networks,
       -- During an overlap rotation: the role it had, which logs in until
       -- previous_until.
       c.previous_role_name,
       c.previous_until,
       -- On this server, since it started (preloaded only: src/usage.rs).
       u.last_login_at
FROM bi_access.credential c
LEFT JOIN (SELECT r.rolname, u.last_login_at
           FROM bi_access_internal.usage() u
           JOIN pg_catalog.pg_roles r ON r.oid = u.role) u ON u.rolname = c.role_name
-- Once per query: whether CALL bi_access.sync() runs now (src/records.rs).
CROSS JOIN (SELECT bi_access_internal.sync_running() AS running) s
CROSS JOIN LATERAL bi_access_internal.credential_state(
    c.status::text, c.role_name::text, c.target, c.created_lsn::text,
    coalesce(c.valid_until <= now(), false), s.running, c.xmin::text) st;
COMMENT ON VIEW bi_access.credentials IS
    'Every credential bi_access manages, with its status; never shows a secret';

-- Each credential's counters on this server since it started
-- (src/usage.rs, src/shmem.rs): empty without the preload. A standby counts
-- its own; a credential of another database of the cluster is not shown.
-- During an overlap rotation both roles of a credential have a row.
CREATE VIEW bi_access.usage AS
SELECT r.rolname AS role_name,
       c.org_id,
       u.sessions_now,
       u.logins,
       u.refused_limits + u.refused_networks + u.refused_revocation + u.refused_other
           AS refused_logins,
       u.last_login_at,
       u.statements,
       u.rows_returned,
       u.cancelled,
       u.refused_limits,
       u.refused_networks,
       u.refused_revocation
FROM bi_access_internal.usage() u
JOIN pg_catalog.pg_roles r ON r.oid = u.role
JOIN bi_access.credential c ON r.rolname IN (c.role_name, c.previous_role_name);
COMMENT ON VIEW bi_access.usage IS
    'Each credential''s logins, statements and rows on this server since it started (needs the preload; empty otherwise)';
COMMENT ON COLUMN bi_access.usage.role_name IS 'The credential''s login role';
COMMENT ON COLUMN bi_access.usage.org_id IS 'The credential''s organization';
COMMENT ON COLUMN bi_access.usage.sessions_now IS 'Its sessions open on this server now';
COMMENT ON COLUMN bi_access.usage.logins IS 'Logins that passed the login gate';
COMMENT ON COLUMN bi_access.usage.refused_logins IS 'Logins refused after the password was accepted (limits, networks, revocation and the gate''s other checks)';
COMMENT ON COLUMN bi_access.usage.last_login_at IS 'Its last login on this server; NULL: none since the server started';
COMMENT ON COLUMN bi_access.usage.statements IS 'Top-level statements run through the executor (SELECT, COPY, FETCH''s cursor query; not SET or SHOW)';
COMMENT ON COLUMN bi_access.usage.rows_returned IS 'Rows those statements returned';
COMMENT ON COLUMN bi_access.usage.cancelled IS 'Statements cancelled (a cap''s timeout, a yield to the application, a cancel request) and sessions ended by a cap or a yield';
COMMENT ON COLUMN bi_access.usage.refused_limits IS 'Logins refused by a connection limit (the credential''s, the org''s, the server''s)';
COMMENT ON COLUMN bi_access.usage.refused_networks IS 'Logins refused by the credential''s network allowlist';
COMMENT ON COLUMN bi_access.usage.refused_revocation IS 'Logins refused because the credential was revoked, deleted, rotated or expired';

CREATE VIEW bi_access.events AS
SELECT e.id, e.at, e.action, e.role_name, e.org_id, e.actor, e.detail
FROM bi_access.event e;
COMMENT ON VIEW bi_access.events IS
    'Append-only log of every management call, reveals of a password included';

-- Named targets, and `default`, the settings' (src/targets.rs); credentials:
-- how many live credentials point at each (live as records::LIVE says it:
-- src/tests/lifecycle.rs holds the two equal to Status::is_live).
CREATE VIEW bi_access.targets AS
SELECT t.name,
       t.host,
       t.port,
       t.sslmode,
       t.standby,
       (SELECT count(*) FROM bi_access.credentials c
        WHERE c.target = t.name AND c.status IN ('pending', 'active', 'syncing')) AS credentials
FROM bi_access_internal.targets() t;
COMMENT ON VIEW bi_access.targets IS
    'Where credentials are told to connect: default (the bi_access.host/port/sslmode/replica_application_name settings) and every named target';




-- The addresses a credential may log in from (src/guard/networks.rs): a
-- login from elsewhere is refused on every server, and an open session from
-- an address the new list excludes ends at its next statement.
CREATE FUNCTION bi_access.set_networks(role name, allowed_networks cidr[]) RETURNS bi_access.credentials
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT bi_access_internal.set_networks(role::text, allowed_networks::text[]);
    SELECT * FROM bi_access.credentials c WHERE role IN (c.role_name, c.previous_role_name);
$$;
COMMENT ON FUNCTION bi_access.set_networks(name, cidr[]) IS
    'Replaces the addresses a credential may log in from (NULL: any); open sessions from outside the list end at their next statement';

CREATE FUNCTION bi_access.revoke(role name) RETURNS bi_access.credentials
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT bi_access_internal.revoke(role::text);
    SELECT * FROM bi_access.credentials c WHERE role IN (c.role_name, c.previous_role_name);
$$;
COMMENT ON FUNCTION bi_access.revoke(name) IS
    'Disables the login and ends its sessions at commit; status deactivated';

CREATE FUNCTION bi_access.activate(role name) RETURNS bi_access.credentials
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT bi_access_internal.activate(role::text);
    SELECT * FROM bi_access.credentials c WHERE role IN (c.role_name, c.previous_role_name);
$$;
COMMENT ON FUNCTION bi_access.activate(name) IS 'Enables a deactivated login again';

CREATE FUNCTION bi_access.delete(role name) RETURNS bi_access.credentials
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT bi_access_internal.delete(role::text);
    SELECT * FROM bi_access.credentials c WHERE role IN (c.role_name, c.previous_role_name);
$$;
COMMENT ON FUNCTION bi_access.delete(name) IS
    'Ends sessions and drops the role; the record stays, status deleted';


-- Offboarding an org: plpgsql, so the rows returned are read after the
-- change (a single SQL statement would see its own snapshot from before).
CREATE FUNCTION bi_access.revoke_org(org_id text) RETURNS SETOF bi_access.credentials
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    affected text[] := bi_access_internal.revoke_org(revoke_org.org_id);
BEGIN
    RETURN QUERY SELECT * FROM bi_access.credentials c
                 WHERE c.role_name::text = ANY (affected) ORDER BY c.id;
END
$$;
COMMENT ON FUNCTION bi_access.revoke_org(text) IS
    'Revokes every credential of an org that revoke accepts, atomically; returns them';

CREATE FUNCTION bi_access.delete_org(org_id text) RETURNS SETOF bi_access.credentials
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    affected text[] := bi_access_internal.delete_org(delete_org.org_id);
BEGIN
    RETURN QUERY SELECT * FROM bi_access.credentials c
                 WHERE c.role_name::text = ANY (affected) ORDER BY c.id;
END
$$;
COMMENT ON FUNCTION bi_access.delete_org(text) IS
    'Deletes every current credential of an org, atomically (its custom schema stays); returns them';








-- Every table bi_access knows (src/exposure/): exposed by its org column,
-- shared whole, or hidden; its state from what a sync would change.
CREATE VIEW bi_access.tables AS
SELECT e.tbl,
       CASE WHEN e.hidden THEN 'hidden' WHEN e.shared THEN 'shared' ELSE 'exposed' END AS kind,
       CASE WHEN e.shared THEN NULL ELSE e.org_column END AS org_column,
       e.columns,
       CASE WHEN e.hidden THEN 'withdrawn'
            WHEN e.tbl IN (SELECT u.tbl FROM bi_access.unsynced_tables() u) THEN 'weakened'
            ELSE 'in place' END AS state,
       e.exposed_at AS since
FROM bi_access.exposed_table e;
COMMENT ON VIEW bi_access.tables IS
    'Every table bi_access knows: exposed (by its org column), shared (read whole) or hidden, its column list and its state';





-- CALL bi_access.sync(): the same as sync_tables() for a live system. It
-- commits table by table, so at most one application table is locked at a
-- time, and polls each lock for at most lock_timeout (a waiting lock request
-- would queue the application's queries behind it), retrying a busy table a
-- few times before it skips it. A procedure that COMMITs can be neither
-- SECURITY DEFINER nor SET search_path, so it runs as its caller and does
-- each step through a SECURITY DEFINER function.
CREATE FUNCTION bi_access_internal.step_sync_begin() RETURNS regclass[]
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT bi_access_internal.sync_begin()::regclass[] $$;

-- Whether the table changed.
CREATE FUNCTION bi_access_internal.step_sync_table(tbl regclass) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT bi_access_internal.sync_table(tbl::oid) $$;

CREATE FUNCTION bi_access_internal.step_sync_end(synced integer, unchanged integer, skipped text[])
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT bi_access_internal.sync_end(synced, unchanged, skipped) $$;

CREATE PROCEDURE bi_access.sync(lock_timeout text DEFAULT '1s', retries integer DEFAULT 3)
LANGUAGE plpgsql AS $$
DECLARE
    tables pg_catalog.regclass[];
    t pg_catalog.regclass;
    changed boolean;
    attempt integer;
    why text;
    session_lock_timeout text := pg_catalog.current_setting('lock_timeout');
    synced integer := 0;
    unchanged integer := 0;
    skipped text[] := '{}';
BEGIN
    -- The arguments are checked before anything is locked or committed.
    IF sync.lock_timeout IS NULL OR retries IS NULL THEN
        RAISE EXCEPTION 'bi_access.sync(): % must not be NULL',
            CASE WHEN sync.lock_timeout IS NULL THEN 'lock_timeout' ELSE 'retries' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF retries < 0 THEN
        RAISE EXCEPTION 'bi_access.sync(): retries must be 0 or more, not %', retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        PERFORM pg_catalog.set_config('lock_timeout', sync.lock_timeout, true);
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'bi_access.sync(): lock_timeout % is not a duration',
            pg_catalog.quote_literal(sync.lock_timeout)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a duration such as ''1s'' or ''500ms''.';
    END;
    -- Only the table steps run under it: the first step waits as the session does.
    PERFORM pg_catalog.set_config('lock_timeout', session_lock_timeout, true);
    tables := bi_access_internal.step_sync_begin();
    COMMIT;
    FOREACH t IN ARRAY tables LOOP
        changed := NULL;
        attempt := 0;
        why := NULL;
        LOOP
            BEGIN
                PERFORM pg_catalog.set_config('lock_timeout', sync.lock_timeout, true);
                changed := bi_access_internal.step_sync_table(t);
            EXCEPTION
                WHEN lock_not_available THEN
                    attempt := attempt + 1;
                    why := pg_catalog.format('its lock stayed busy for %s tries', attempt);
                WHEN object_not_in_prerequisite_state THEN
                    -- A table bi_access cannot sync as it stands: say why, go on.
                    why := SQLERRM;
                    EXIT;
            END;
            EXIT WHEN changed IS NOT NULL OR attempt > retries;
            PERFORM pg_catalog.pg_sleep(0.1 * attempt);
        END LOOP;
        IF changed IS NULL THEN
            skipped := skipped || t::text;
            RAISE NOTICE 'bi_access.sync: skipped %: %; it is left as it was', t, why;
        ELSIF NOT changed THEN
            unchanged := unchanged + 1;
        ELSE
            synced := synced + 1;
            RAISE NOTICE 'bi_access.sync: synced %', t;
        END IF;
        COMMIT;
    END LOOP;
    PERFORM bi_access_internal.step_sync_end(synced, unchanged, skipped);
    COMMIT;
    RAISE NOTICE 'bi_access.sync: % synced, % unchanged, % skipped', synced, unchanged, pg_catalog.cardinality(skipped);
END
$$;
COMMENT ON PROCEDURE bi_access.sync(text, integer) IS
    'sync_tables() for a live system: commits table by table under a lock timeout, retries, reports';

-- Event triggers (their functions live in bi_access_internal, out of
-- \df bi_access.*). At ddl_command_end: name new tables to the DBA, and
-- withdraw the BI grant of an exposed table that a DDL statement weakened
-- (RLS disabled, a bi_access policy dropped or altered, its org column
-- dropped). At sql_drop: forget dropped tables.
CREATE FUNCTION bi_access_internal.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM bi_access_internal.after_ddl();
END
$$;
CREATE EVENT TRIGGER bi_access_after_ddl ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'CREATE VIEW',
                 'ALTER VIEW', 'DROP POLICY', 'ALTER POLICY')
    EXECUTE FUNCTION bi_access_internal.on_ddl_command_end();

CREATE FUNCTION bi_access_internal.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM bi_access_internal.forget_dropped();
END
$$;
CREATE EVENT TRIGGER bi_access_forget_dropped ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP VIEW', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION bi_access_internal.on_sql_drop();

-- The drop guard (src/uninstall.rs): a C function, because only C functions
-- receive the statement's parse tree, where every spelling of a name is the
-- same. ENABLE ALWAYS: it also fires under session_replication_role = replica.
-- The ALTER tags: renaming, moving or re-owning its schemas and their objects.
CREATE FUNCTION bi_access_internal.drop_guard() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'bi_access_drop_guard';
CREATE EVENT TRIGGER bi_access_drop_guard ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED', 'ALTER EXTENSION', 'ALTER SCHEMA',
                 'ALTER TABLE', 'ALTER VIEW', 'ALTER SEQUENCE', 'ALTER INDEX', 'ALTER FUNCTION',
                 'ALTER PROCEDURE', 'ALTER ROUTINE', 'ALTER TYPE', 'ALTER TRIGGER')
    EXECUTE FUNCTION bi_access_internal.drop_guard();
ALTER EVENT TRIGGER bi_access_drop_guard ENABLE ALWAYS;

-- The quota trigger of every table of an org's custom schema
-- (src/guard/quota.rs): a C function that counts what a read_write
-- credential writes. Tenants' tables depend on it, so an upgrade replaces
-- it in place (OR REPLACE) and never drops it.
CREATE OR REPLACE FUNCTION bi_access_internal.custom_schema_quota() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'bi_access_custom_schema_quota';

-- Privileges. Nothing of bi_access is PUBLIC's. The tiers (each a member of
-- the one below, sql/bootstrap.sql): bi_access_viewer reads the views,
-- unsynced_tables() and check(); bi_access_editor also generates and reveals;
-- bi_access_admin does everything else. The reader group gets only the org
-- lookup its policies call. A function declared in Rust is granted where it
-- is declared.
REVOKE ALL ON ALL ROUTINES IN SCHEMA bi_access FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA bi_access_internal FROM PUBLIC;
REVOKE ALL ON SCHEMA bi_access, bi_access_internal FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA bi_access FROM PUBLIC;

-- The views call these as the reader (a function's EXECUTE privilege is
-- checked against the caller, even inside a view).
GRANT USAGE ON SCHEMA bi_access TO bi_access_viewer;
GRANT SELECT ON bi_access.credentials, bi_access.events, bi_access.tables, bi_access.targets,
    bi_access.usage TO bi_access_viewer;
GRANT EXECUTE ON FUNCTION
    bi_access_internal.credential_state(text, text, text, text, boolean, boolean, text),
    bi_access_internal.sync_running(),
    bi_access_internal.targets(),
    bi_access_internal.usage()
TO bi_access_viewer;

GRANT USAGE ON SCHEMA bi_access, bi_access_internal TO bi_access_admin;
GRANT EXECUTE ON FUNCTION
    bi_access.set_networks(name, cidr[]),
    bi_access.revoke(name),
    bi_access.activate(name),
    bi_access.delete(name),
    bi_access.revoke_org(text),
    bi_access.delete_org(text),
    bi_access_internal.step_sync_begin(),
    bi_access_internal.step_sync_table(regclass),
    bi_access_internal.step_sync_end(integer, integer, text[])
TO bi_access_admin;
GRANT EXECUTE ON PROCEDURE bi_access.sync(text, integer) TO bi_access_admin;

-- PgBouncer's auth_user gets pgbouncer_auth() (granted where it is
-- declared, src/api.rs) and nothing else of bi_access.
GRANT USAGE ON SCHEMA bi_access TO bi_access_pooler;

-- The planner turns a policy's org lookup into a constant (src/org.rs), so
-- a credential's query compares its org column with a literal.
ALTER FUNCTION bi_access.current_org() SUPPORT bi_access_internal.org_lookup_support;
ALTER FUNCTION bi_access.current_org_bigint() SUPPORT bi_access_internal.org_lookup_support;
ALTER FUNCTION bi_access.current_org_uuid() SUPPORT bi_access_internal.org_lookup_support;

DO $grants$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION bi_access.current_org(), bi_access.current_org_bigint(), '
                   'bi_access.current_org_uuid() TO %I',
                   (SELECT reader_role FROM bi_access.config));
END
$grants$;

-- What \df+ and \d+ say of each object (every function of both schemas and
-- every view column has a COMMENT: src/tests/management.rs checks it).
COMMENT ON FUNCTION bi_access.event_append_only() IS
    'Trigger of bi_access.event: the event log is append-only';

COMMENT ON FUNCTION bi_access_internal.step_sync_begin() IS
    'CALL bi_access.sync(): its first step, the tables to sync';
COMMENT ON FUNCTION bi_access_internal.step_sync_table(regclass) IS
    'CALL bi_access.sync(): syncs one table; whether it changed';
COMMENT ON FUNCTION bi_access_internal.step_sync_end(integer, integer, text[]) IS
    'CALL bi_access.sync(): its last step, and its event';
COMMENT ON FUNCTION bi_access_internal.on_ddl_command_end() IS
    'Event trigger function (ddl_command_end): new tables and weakened exposed tables';
COMMENT ON FUNCTION bi_access_internal.on_sql_drop() IS
    'Event trigger function (sql_drop): forgets dropped exposed tables';
COMMENT ON FUNCTION bi_access_internal.drop_guard() IS
    'Event trigger function (ddl_command_start): refuses dropping, renaming or moving bi_access while current credentials exist';
COMMENT ON FUNCTION bi_access_internal.custom_schema_quota() IS
    'Row trigger of every custom-schema table: stops writes past bi_access.custom_schema_quota';

COMMENT ON COLUMN bi_access.credentials.id IS 'The record''s id';
COMMENT ON COLUMN bi_access.credentials.org_id IS 'The org key, as generate() was given it (text)';
COMMENT ON COLUMN bi_access.credentials.org_name IS 'The org''s display name, if given';
COMMENT ON COLUMN bi_access.credentials.label IS 'The credential''s label, unique per org among current credentials';
COMMENT ON COLUMN bi_access.credentials.scope IS 'read, or read_write (writes in the org''s custom schema)';
COMMENT ON COLUMN bi_access.credentials.target IS 'The target its details point at (default: the bi_access.host/port/sslmode settings)';
COMMENT ON COLUMN bi_access.credentials.role_name IS 'The login role (username)';
COMMENT ON COLUMN bi_access.credentials.status IS
    'pending, active, syncing, failed, deleting, deactivated, deleted or expired (README: Statuses)';
COMMENT ON COLUMN bi_access.credentials.created_at IS 'When generate() created it';
COMMENT ON COLUMN bi_access.credentials.updated_at IS 'When a call last changed it';
COMMENT ON COLUMN bi_access.credentials.rotated_at IS 'When regenerate() last gave it a new password';
COMMENT ON COLUMN bi_access.credentials.valid_until IS 'When its login expires; NULL: never';
COMMENT ON COLUMN bi_access.credentials.connection_limit IS 'Its sessions at most, per server; -1: no limit';
COMMENT ON COLUMN bi_access.credentials.last_error IS 'Why it failed, when it did';
COMMENT ON COLUMN bi_access.credentials.allowed_networks IS
    'The addresses it may log in from (set_networks); NULL: any. Through PgBouncer the server sees the pooler''s address';
COMMENT ON COLUMN bi_access.credentials.previous_role_name IS
    'During an overlap rotation (regenerate with overlap): the role it had, which logs in until previous_until';
COMMENT ON COLUMN bi_access.credentials.previous_until IS
    'When the overlap ends: no login with previous_role_name after it, on any server; the next management call drops the role';
COMMENT ON COLUMN bi_access.credentials.last_login_at IS 'Its last login on this server since the server started (needs the preload; bi_access.usage)';
COMMENT ON COLUMN bi_access.events.id IS 'The event''s id, in the order events were appended';
COMMENT ON COLUMN bi_access.events.at IS 'When the event was appended';
COMMENT ON COLUMN bi_access.events.action IS 'The call: generate, reveal, regenerate, revoke, expose_table, share_table…';
COMMENT ON COLUMN bi_access.events.role_name IS 'The credential''s role, for a call on one';
COMMENT ON COLUMN bi_access.events.org_id IS 'The org key, for a call on an org or its credential';
COMMENT ON COLUMN bi_access.events.actor IS 'Who made the call: the login (session_user), and the application''s own user when it sets bi_access.actor';
COMMENT ON COLUMN bi_access.events.detail IS 'What the call did (jsonb); never a secret';
COMMENT ON COLUMN bi_access.tables.tbl IS 'The table (or security_invoker view)';
COMMENT ON COLUMN bi_access.tables.kind IS
    'exposed (each credential reads its org''s rows), shared (every credential reads every row) or hidden (kept out of syncs)';
COMMENT ON COLUMN bi_access.tables.org_column IS 'The column its rows are matched by; NULL for a shared table';
COMMENT ON COLUMN bi_access.tables.columns IS 'The only columns credentials may read; NULL: every column';
COMMENT ON COLUMN bi_access.tables.state IS
    'in place; weakened (a sync would change it: bi_access.unsynced_tables() says why); withdrawn (hidden)';
COMMENT ON COLUMN bi_access.tables.since IS 'When it was last exposed, shared or hidden';
COMMENT ON COLUMN bi_access.targets.name IS 'The target''s name; default is the settings''';
COMMENT ON COLUMN bi_access.targets.host IS 'Host the credentials are told to connect to';
COMMENT ON COLUMN bi_access.targets.port IS 'Port the credentials are told to connect to';
COMMENT ON COLUMN bi_access.targets.sslmode IS 'libpq sslmode in the details';
COMMENT ON COLUMN bi_access.targets.standby IS
    'application_name of the standby whose replay makes a credential usable there; NULL: the primary';
COMMENT ON COLUMN bi_access.targets.credentials IS 'Live credentials (pending, active, syncing) pointing at it';
