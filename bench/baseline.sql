-- The hand-written peers of the benchmark, NOT part of bi_access: what a
-- careful owner would write by hand to get the same result. Installed by
-- bench/run.sh in cluster A's `bench` database, after CREATE EXTENSION.
\set ON_ERROR_STOP on

-- 1. The best row-level security can do: the twins rls.orders and
-- rls.order_items (same rows, same indexes as public.*, see dataset.sql) with
-- one policy for one login role, the org key as a literal. bench.py recreates
-- the policy with each round's org key before that round's sessions open.
ALTER TABLE rls.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE rls.order_items ENABLE ROW LEVEL SECURITY;
CREATE ROLE rls_reader LOGIN PASSWORD 'rls_reader';
GRANT USAGE ON SCHEMA rls TO rls_reader;
GRANT SELECT ON rls.orders, rls.order_items TO rls_reader;
CREATE POLICY org_only ON rls.orders FOR SELECT TO rls_reader USING (org_id = 7);
CREATE POLICY org_only ON rls.order_items FOR SELECT TO rls_reader USING (org_id = 7);

-- 2. A plain login role (no bi_access), for the login comparison: the same
-- kind of password (32 random-looking alphanumerics, SCRAM-SHA-256).
CREATE ROLE plain_login LOGIN PASSWORD 'Zq8rT2mW9xK4vB7nH3pL6cF1sD5gJ0aY';

-- 2b. The application role again, as a role whose sessions preload
-- bi_access (README: where the application's sessions load the library,
-- the pass-through policy is decided before planning).
CREATE ROLE app_pre LOGIN PASSWORD 'app_pre' IN ROLE app_rw;
ALTER ROLE app_pre SET session_preload_libraries = 'bi_access';

-- 2c. The application role as a BYPASSRLS role: check()'s fix for an
-- application role under no row-level security of its own (README "What
-- exposing a table changes for your application").
CREATE ROLE app_bypass LOGIN PASSWORD 'app_bypass' BYPASSRLS IN ROLE app_rw;

-- 3. `generate` written by hand: the same catalog work bi_access.generate
-- does (sql/bootstrap.sql, src/credentials.rs, src/roles.rs): the record
-- inserted first (its unique index serializes concurrent calls), CREATE ROLE
-- ... LOGIN ... CONNECTION LIMIT ... IN ROLE two groups, the same three
-- ALTER ROLE ... SET settings, a SCRAM-SHA-256 verifier computed by the
-- caller given as the PASSWORD, the sealed secret and WAL position stored in
-- the record, one event inserted; one commit (the caller's). SECURITY DEFINER
-- with a pinned search_path, as bi_access's functions are.
CREATE SCHEMA hand;
CREATE ROLE hand_reader NOLOGIN;
CREATE ROLE hand_credential NOLOGIN;
CREATE TABLE hand.credential (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id text NOT NULL,
    org_name text,
    label text NOT NULL,
    role_name name NOT NULL UNIQUE,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,
    valid_until timestamptz,
    connection_limit integer,
    last_error text,
    secret bytea,
    created_lsn pg_lsn,
    sealed_with text,
    CHECK (org_id <> '' AND length(org_id) <= 256),
    CHECK (label <> '' AND length(label) <= 63)
);
CREATE UNIQUE INDEX hand_credential_live_org_label ON hand.credential (org_id, label)
    WHERE status NOT IN ('failed', 'deleted');
CREATE INDEX hand_credential_org_label ON hand.credential (org_id, label);
CREATE TABLE hand.event (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    action text NOT NULL,
    role_name name,
    org_id text,
    actor text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);

CREATE FUNCTION hand.generate(p_org_id text, p_label text, p_verifier text, p_secret bytea)
RETURNS name
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r name := 'hb_' || substr(md5(random()::text || clock_timestamp()::text), 1, 20);
    cid bigint;
BEGIN
    INSERT INTO hand.credential (org_id, label, role_name, status, connection_limit)
    VALUES (p_org_id, p_label, r, 'active', 5)
    ON CONFLICT (org_id, label) WHERE status NOT IN ('failed', 'deleted') DO NOTHING
    RETURNING id INTO cid;
    IF cid IS NULL THEN
        RAISE EXCEPTION 'a credential for this org and label exists' USING ERRCODE = 'unique_violation';
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
                   'INHERIT CONNECTION LIMIT 5 IN ROLE hand_reader, hand_credential PASSWORD %L',
                   r, p_verifier);
    EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = %L', r, 'on');
    EXECUTE format('ALTER ROLE %I SET search_path = %L', r, 'public');
    EXECUTE format('ALTER ROLE %I SET session_preload_libraries = %L', r, 'bi_access');
    UPDATE hand.credential
    SET secret = p_secret, sealed_with = 'bench', created_lsn = pg_current_wal_insert_lsn()
    WHERE id = cid;
    INSERT INTO hand.event (action, role_name, org_id, actor, detail)
    VALUES ('generate', r, p_org_id, session_user, jsonb_build_object('label', p_label, 'status', 'active'));
    RETURN r;
END
$$;

-- Its removal (untimed in the benchmark, to keep the counts put).
CREATE FUNCTION hand.delete(p_role name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP ROLE %I', p_role);
    DELETE FROM hand.credential WHERE role_name = p_role;
END
$$;

REVOKE ALL ON FUNCTION hand.generate(text, text, text, bytea), hand.delete(name) FROM PUBLIC;
GRANT USAGE ON SCHEMA hand TO bench_admin;
GRANT EXECUTE ON FUNCTION hand.generate(text, text, text, bytea), hand.delete(name) TO bench_admin;
