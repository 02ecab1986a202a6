-- The per-credential baseline of the benchmark (item 4), NOT part of
-- bi_access: the way many home-grown setups provision a BI login — one role,
-- one GRANT on each table and one RLS policy per table for each credential.
-- Installed in the baseline cluster's `bench` database, which has the same
-- 502 tables as the main data set (empty: the cost of GRANT and CREATE POLICY
-- does not depend on rows) and no bi_access.
\set ON_ERROR_STOP on

-- RLS on every table, as the baseline needs it, with a pass-through policy
-- for the application (as bi_access does), so only the per-credential
-- policies grow.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_class c
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY app_passthrough ON %s TO PUBLIC USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

CREATE TABLE public.baseline_credential (
    role_name name PRIMARY KEY,
    org_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One credential: a LOGIN role (password hashed by the server to SCRAM, as
-- bi_access does in the extension), a GRANT on each table, a policy per
-- table keyed on the org id literal, and its record.
CREATE OR REPLACE FUNCTION public.baseline_generate(org bigint) RETURNS name
LANGUAGE plpgsql AS $$
DECLARE
    r name := 'pc_' || substr(md5(random()::text || clock_timestamp()::text), 1, 16);
    t regclass;
BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', r, md5(random()::text));
    EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', r);
    FOR t IN SELECT c.oid::regclass FROM pg_class c
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
               AND c.relname <> 'baseline_credential'
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO %I', t, r);
        EXECUTE format('CREATE POLICY %I ON %s AS RESTRICTIVE FOR SELECT TO %I USING (org_id = %s)',
                       r, t, r, org);
    END LOOP;
    INSERT INTO public.baseline_credential (role_name, org_id) VALUES (r, org);
    RETURN r;
END
$$;

-- Its removal (untimed in the benchmark): DROP OWNED drops its grants and
-- policies.
CREATE OR REPLACE FUNCTION public.baseline_delete(r name) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP OWNED BY %I', r);
    EXECUTE format('DROP ROLE %I', r);
    DELETE FROM public.baseline_credential WHERE role_name = r;
END
$$;

-- How many roles one table's ACL takes before GRANT fails: grants SELECT on
-- a scratch table to up to `n` fresh NOLOGIN roles, one statement each, and
-- returns how many succeeded and the first error (NULL if all did).
CREATE OR REPLACE FUNCTION public.baseline_acl_probe(n int, OUT granted int, OUT error text)
LANGUAGE plpgsql AS $$
BEGIN
    DROP TABLE IF EXISTS public.acl_probe;
    CREATE TABLE public.acl_probe (id int);
    granted := 0;
    FOR i IN 1..n LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'acl_probe_' || i) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', 'acl_probe_' || i);
        END IF;
        BEGIN
            EXECUTE format('GRANT SELECT ON public.acl_probe TO %I', 'acl_probe_' || i);
        EXCEPTION WHEN OTHERS THEN
            error := SQLSTATE || ': ' || SQLERRM;
            RETURN;
        END;
        granted := i;
    END LOOP;
END
$$;
