-- bi_access bootstrap: roles, types and tables. Runs before every generated
-- object of the extension script, in schema bi_access.

-- The management tiers (and bi_access_pooler) are cluster-wide roles and
-- may already exist from another database of the cluster that has the
-- extension; the extension never drops them. Each is a member of the one below (viewer < editor < admin), so
-- a member of bi_access_admin holds every tier; sql/api.sql grants each tier
-- its functions. A member of a tier manages every database of the cluster
-- where it may connect and bi_access is installed.
-- So is bi_access_credential, the group every credential of every database
-- joins: it holds no privilege, but marks a BI login wherever it connects
-- (the restrictive guard policies and the session guard key on it).
DO $bootstrap$
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
    -- PgBouncer's auth_user is granted this role: it may call
    -- bi_access.pgbouncer_auth() and nothing else of bi_access.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bi_access_pooler') THEN
        CREATE ROLE bi_access_pooler NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bi_access_credential') THEN
        CREATE ROLE bi_access_credential NOLOGIN NOINHERIT;
    END IF;
END
$bootstrap$;

CREATE TYPE bi_access.credential_status AS ENUM (
    'pending', 'active', 'syncing', 'failed', 'deleting', 'deactivated', 'deleted', 'expired'
);
COMMENT ON TYPE bi_access.credential_status IS
    'Lifecycle of a credential; pending means committed but not yet replayed by the configured replica';

CREATE TYPE bi_access.connection AS (
    database_type text,
    host text,
    port integer,
    database text,
    username text,
    password text,
    schema text,
    sslmode text,
    url text,
    jdbc_url text,
    display_name text,
    -- 'read' or 'read_write'
    scope text,
    -- the org's custom schema, for a read_write credential (NULL for read)
    custom_schema text,
    -- the bi_access.targets row the details come from
    target text
);
COMMENT ON TYPE bi_access.connection IS
    'What a BI tool needs to connect; returned once by generate, regenerate and connection_details';

-- One row: this database's reader group. Role names are cluster-wide, so the
-- group gets a random suffix: two databases with the extension never share it,
-- and its name says nothing about the database or its tenants.
CREATE TABLE bi_access.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    reader_role name NOT NULL UNIQUE,
    -- The backend that began the last CALL bi_access.sync(): credentials read
    -- `syncing` while it runs that procedure, and at no other time.
    sync_pid integer
);

DO $bootstrap$
DECLARE
    reader name := 'bi_access_reader_' || substr(md5(random()::text || clock_timestamp()::text), 1, 12);
BEGIN
    EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', reader);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), reader);
    -- A credential that SET ROLEs to its reader group is still a member of
    -- bi_access_credential: the pass-through policy never admits it.
    EXECUTE format('GRANT bi_access_credential TO %I', reader);
    INSERT INTO bi_access.config (reader_role) VALUES (reader);
END
$bootstrap$;

CREATE TABLE bi_access.credential (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id text NOT NULL,
    org_name text,
    label text NOT NULL,
    role_name name NOT NULL UNIQUE,
    status bi_access.credential_status NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,
    valid_until timestamptz,
    connection_limit integer,
    last_error text,
    -- nonce || XChaCha20-Poly1305 ciphertext of the password, bound to role_name,
    -- under the key of bi_access.sealing_key.
    secret bytea,
    -- WAL insert position once the latest change of its role (creation, a
    -- new password, its drop) was written: the target's standby has it once
    -- its replay position has passed it (pending, deleting until then).
    created_lsn pg_lsn,
    -- Fingerprint of the key that sealed `secret` (src/key.rs).
    sealed_with text,
    -- the target the credential's details point at: 'default' (the
    -- bi_access.host/port/sslmode/replica_application_name settings) or a
    -- row of bi_access.target.
    target text NOT NULL DEFAULT 'default',
    -- read: SELECT on exposed tables; read_write: also writes in the org's
    -- custom schema (src/custom_schema.rs).
    scope text NOT NULL DEFAULT 'read' CONSTRAINT credential_scope_check CHECK (scope IN ('read', 'read_write')),
    -- The addresses it may log in from (src/guard/networks.rs); NULL: any.
    allowed_networks cidr[] CONSTRAINT credential_allowed_networks_check
        CHECK (cardinality(allowed_networks) > 0 AND array_position(allowed_networks, NULL) IS NULL),
    -- During an overlap rotation (src/credentials.rs): the role it had, which
    -- logs in until previous_until (its VALID UNTIL).
    previous_role_name name CONSTRAINT credential_previous_role_name_key UNIQUE,
    previous_until timestamptz,
    CONSTRAINT credential_previous_check CHECK ((previous_role_name IS NULL) = (previous_until IS NULL)),
    CONSTRAINT credential_org_id_check CHECK (org_id <> '' AND length(org_id) <= 256),
    CONSTRAINT credential_label_check CHECK (label <> '' AND length(label) <= 63)
);
-- At most one live credential per (org, label); concurrent generate calls
-- serialize on this index.
CREATE UNIQUE INDEX credential_live_org_label
    ON bi_access.credential (org_id, label)
    WHERE status NOT IN ('failed', 'deleted');
-- Every record of an org and label, whatever its status (generate looks for
-- failed ones to replace): keeps generate O(1) at any number of credentials.
CREATE INDEX credential_org_label ON bi_access.credential (org_id, label);
-- The overlaps to retire (src/credentials.rs), found by each management call.
CREATE INDEX credential_previous_until ON bi_access.credential (previous_until)
    WHERE previous_until IS NOT NULL AND status <> 'deleted';

CREATE TABLE bi_access.event (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    action text NOT NULL,
    role_name name,
    org_id text,
    actor text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);

-- The log is append-only: no role, the table owner included, may rewrite it.
CREATE FUNCTION bi_access.event_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'bi_access.event is append-only'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Events are kept for audit; bi_access.purge() removes a credential, not its history.';
END
$$;
CREATE TRIGGER event_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON bi_access.event
    FOR EACH STATEMENT EXECUTE FUNCTION bi_access.event_append_only();

CREATE TABLE bi_access.exposed_table (
    tbl regclass PRIMARY KEY,
    org_column name NOT NULL,
    -- hidden: withdrawn by hide_table; no later sync exposes it again.
    hidden boolean NOT NULL DEFAULT false,
    -- bi_access turned RLS on (and added the pass-through policy), so hiding
    -- the table turns it off again.
    rls_enabled_by_bi_access boolean NOT NULL DEFAULT false,
    exposed_at timestamptz NOT NULL DEFAULT now(),
    synced_at timestamptz,
    -- shared: a reference table without an org column (share_table): every
    -- credential reads all its rows, no RLS is added; org_column is then the
    -- column it must not carry (the guard refuses it if it does).
    shared boolean NOT NULL DEFAULT false,
    -- columns: the only columns credentials may read (NULL: all of them).
    columns name[] CONSTRAINT exposed_table_columns_check
        CHECK (cardinality(columns) > 0 AND array_position(columns, NULL) IS NULL)
);

-- The key that seals the passwords kept for "View Details" (src/key.rs).
-- Not marked for pg_dump: physical replication and backups carry it, no
-- logical dump does. Row-level security without a permissive policy hides it
-- from every role that does not bypass RLS (pg_read_all_data included).
CREATE TABLE bi_access.sealing_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key bytea NOT NULL CHECK (length(key) = 32),
    fingerprint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE bi_access.sealing_key ENABLE ROW LEVEL SECURITY;

-- Named targets (src/targets.rs): where credentials are told to connect, and
-- the standby (by application_name; NULL: the primary) whose replay makes a
-- credential usable there. 'default' is the settings' and never a row.
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

-- One custom schema per org (src/custom_schema.rs), created with its first
-- read_write credential. Its name and its two NOLOGIN groups carry no org
-- key: the owner group (its read_write credentials are members; what a
-- deleted one created is reassigned to it) and the reader group (every
-- credential of the org is a member: USAGE and SELECT).
CREATE TABLE bi_access.custom_schema (
    org_id text PRIMARY KEY,
    schema_name name NOT NULL UNIQUE,
    owner_role name NOT NULL UNIQUE,
    reader_role name NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- pg_dump keeps the records, the log and the exposure list.
SELECT pg_catalog.pg_extension_config_dump('bi_access.credential', '');
SELECT pg_catalog.pg_extension_config_dump('bi_access.credential_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('bi_access.event', '');
SELECT pg_catalog.pg_extension_config_dump('bi_access.event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('bi_access.exposed_table', '');
SELECT pg_catalog.pg_extension_config_dump('bi_access.target', '');
SELECT pg_catalog.pg_extension_config_dump('bi_access.custom_schema', '');

REVOKE ALL ON ALL TABLES IN SCHEMA bi_access FROM PUBLIC;
