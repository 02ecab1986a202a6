-- bi_access benchmark data set. Run by bench/run.sh as the superuser in the
-- scratch database `bench`, with psql variables:
--   orders_rows   rows of public.orders (1,000 orgs, interleaved: org_id = id % 1000 + 1)
--   items_rows    rows of public.order_items (two per order)
--   small_tables  how many more small tables with an org column (small_001 ...)
--   small_rows    rows in each small table
-- Tables belong to app_owner (the application's owner role); app_rw is a
-- non-owner application role that reads and writes them.
-- The database must be called bench. Passwords are fixed:
-- this is a throw-away cluster that listens on 127.0.0.1 only.
\set ON_ERROR_STOP on

CREATE ROLE app_owner LOGIN PASSWORD 'app_owner';
CREATE ROLE app_rw LOGIN PASSWORD 'app_rw';
CREATE ROLE bench_admin LOGIN PASSWORD 'bench_admin';
GRANT CREATE, USAGE ON SCHEMA public TO app_owner;
GRANT CREATE ON DATABASE bench TO app_owner;

SET ROLE app_owner;

CREATE TABLE public.orders (
    id bigint NOT NULL,
    org_id bigint NOT NULL,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO public.orders
SELECT g,
       g % 1000 + 1,
       (g * 7919) % 50000,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'returned'])[g % 5 + 1],
       ((g * 37) % 100000) / 100.0,
       timestamptz '2024-01-01' + (g % 525600) * interval '1 minute'
FROM generate_series(1::bigint, :orders_rows) g;
ALTER TABLE public.orders ADD PRIMARY KEY (id);
CREATE INDEX orders_org_id_idx ON public.orders (org_id);

CREATE TABLE public.order_items (
    id bigint NOT NULL,
    org_id bigint NOT NULL,
    order_id bigint NOT NULL,
    product_id integer NOT NULL,
    quantity integer NOT NULL,
    unit_price numeric(10, 2) NOT NULL
);
INSERT INTO public.order_items
SELECT g,
       (g + 1) / 2 % 1000 + 1,
       (g + 1) / 2,
       (g * 31) % 5000,
       g % 7 + 1,
       ((g * 13) % 20000) / 100.0
FROM generate_series(1::bigint, :items_rows) g;
ALTER TABLE public.order_items ADD PRIMARY KEY (id);
CREATE INDEX order_items_org_id_idx ON public.order_items (org_id);
CREATE INDEX order_items_order_id_idx ON public.order_items (order_id);

SET bench.small_tables = :small_tables;
SET bench.small_rows = :small_rows;
DO $$
DECLARE
    n int := current_setting('bench.small_tables')::int;
    r int := current_setting('bench.small_rows')::int;
BEGIN
    FOR i IN 1..n LOOP
        EXECUTE format('CREATE TABLE public.%I (id bigint PRIMARY KEY, org_id bigint NOT NULL, '
                       'name text NOT NULL, value numeric NOT NULL)', 'small_' || lpad(i::text, 3, '0'));
        EXECUTE format('INSERT INTO public.%I SELECT g, g %% 1000 + 1, ''item '' || g, g * 1.5 '
                       'FROM generate_series(1, %s) g', 'small_' || lpad(i::text, 3, '0'), r);
        EXECUTE format('CREATE INDEX ON public.%I (org_id)', 'small_' || lpad(i::text, 3, '0'));
    END LOOP;
END
$$;

-- Twins of the two big tables in schema plain, which is not an exposed schema:
-- built the same way (rows in the same order, indexes built after the load),
-- they are never exposed, so the application role's queries can alternate,
-- query by query, between tables bi_access exposed and tables it never touched.
CREATE SCHEMA plain;
CREATE TABLE plain.orders (LIKE public.orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO plain.orders SELECT * FROM public.orders;
ALTER TABLE plain.orders ADD PRIMARY KEY (id);
CREATE INDEX orders_org_id_idx ON plain.orders (org_id);
CREATE TABLE plain.order_items (LIKE public.order_items INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO plain.order_items SELECT * FROM public.order_items;
ALTER TABLE plain.order_items ADD PRIMARY KEY (id);
CREATE INDEX order_items_org_id_idx ON plain.order_items (org_id);
CREATE INDEX order_items_order_id_idx ON plain.order_items (order_id);

-- Twins in schema rls, built the same way, for the best row-level security
-- can do by hand: one policy with the org key as a literal
-- (bench/baseline.sql), same rows, same indexes.
CREATE SCHEMA rls;
CREATE TABLE rls.orders (LIKE public.orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO rls.orders SELECT * FROM public.orders;
ALTER TABLE rls.orders ADD PRIMARY KEY (id);
CREATE INDEX orders_org_id_idx ON rls.orders (org_id);
CREATE TABLE rls.order_items (LIKE public.order_items INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO rls.order_items SELECT * FROM public.order_items;
ALTER TABLE rls.order_items ADD PRIMARY KEY (id);
CREATE INDEX order_items_org_id_idx ON rls.order_items (org_id);
CREATE INDEX order_items_order_id_idx ON rls.order_items (order_id);

RESET ROLE;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, plain TO app_rw;
GRANT USAGE ON SCHEMA plain TO app_rw;
-- used by the 8-client generate throughput run for unique org keys
CREATE SEQUENCE public.bench_org_seq;
GRANT USAGE ON SEQUENCE public.bench_org_seq TO bench_admin;
