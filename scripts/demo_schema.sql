-- Sample multi-tenant SaaS schema for the bi_access demo (scripts/demo.sh).
--
-- Every organization is identified by ONE org key, here a number (101, 202,
-- 303). bi_access gives each credential exactly one org key, passed as text
-- and cast to each table's org column type, so every table must store the same
-- key -- but not necessarily with the same type. The tables below show three
-- types a real schema accumulates over the years:
--   organizations.id   bigint   the tenant table itself
--   projects.org_id    bigint   the core product
--   invoices.org_id    integer  a billing module written with a narrower type
--   tickets.tenant_id  text     a support module that names the column
--                               differently and stores the key as text ('101')
--   api_keys.org_id    bigint   secrets: the DBA hides this table from BI
--
-- Run as a superuser in the database "saas". Tables are owned by the superuser;
-- the application role "app" only gets SELECT/INSERT, like a typical
-- application account that does not own its schema.

\set ON_ERROR_STOP on

CREATE TABLE organizations (
    id      bigint PRIMARY KEY,
    name    text NOT NULL,
    plan    text NOT NULL
);

CREATE TABLE projects (
    id      bigserial PRIMARY KEY,
    org_id  bigint NOT NULL REFERENCES organizations (id),
    name    text NOT NULL,
    status  text NOT NULL DEFAULT 'active'
);
CREATE INDEX ON projects (org_id);

CREATE TABLE invoices (
    id         bigserial PRIMARY KEY,
    org_id     integer NOT NULL,
    number     text NOT NULL,
    amount     numeric(12, 2) NOT NULL,
    issued_on  date NOT NULL
);
CREATE INDEX ON invoices (org_id);

CREATE TABLE tickets (
    id         bigserial PRIMARY KEY,
    tenant_id  text NOT NULL,
    subject    text NOT NULL,
    priority   text NOT NULL DEFAULT 'normal'
);
CREATE INDEX ON tickets (tenant_id);

CREATE TABLE api_keys (
    id      bigserial PRIMARY KEY,
    org_id  bigint NOT NULL REFERENCES organizations (id),
    token   text NOT NULL
);

INSERT INTO organizations (id, name, plan) VALUES
    (101, 'Acme',    'pro'),
    (202, 'Globex',  'enterprise'),
    (303, 'Initech', 'free');   -- gets no BI login: its rows must stay invisible

INSERT INTO projects (org_id, name, status) VALUES
    (101, 'Roadrunner trap v2',   'active'),
    (101, 'Rocket skates',        'active'),
    (101, 'Giant magnet',         'archived'),
    (202, 'Doomsday device',      'active'),
    (202, 'Hammock district',     'active'),
    (202, 'Cypress Creek HQ',     'active'),
    (202, 'Employee happiness',   'archived'),
    (202, 'Volcano lair',         'active'),
    (303, 'TPS report cover',     'active');

INSERT INTO invoices (org_id, number, amount, issued_on) VALUES
    (101, 'A-0001',   49.00, '2024-01-31'),
    (101, 'A-0002',   49.00, '2024-02-29'),
    (101, 'A-0003',   99.00, '2024-03-31'),
    (101, 'A-0004',   99.00, '2024-04-30'),
    (202, 'G-0001', 1200.00, '2024-01-31'),
    (202, 'G-0002', 1200.00, '2024-02-29'),
    (202, 'G-0003', 1200.00, '2024-03-31'),
    (202, 'G-0004', 1500.00, '2024-04-30'),
    (202, 'G-0005', 1500.00, '2024-05-31'),
    (202, 'G-0006', 1500.00, '2024-06-30'),
    (202, 'G-0007', 1500.00, '2024-07-31'),
    (303, 'I-0001',    0.00, '2024-01-31'),
    (303, 'I-0002',    0.00, '2024-02-29');

INSERT INTO tickets (tenant_id, subject, priority) VALUES
    ('101', 'Anvil delivered to wrong address', 'high'),
    ('101', 'Invoice A-0003 amount?',           'normal'),
    ('202', 'SSO login loop',                   'high'),
    ('202', 'Export to CSV is slow',            'normal'),
    ('202', 'Add a second admin',               'low'),
    ('303', 'Where is my stapler',              'low');

INSERT INTO api_keys (org_id, token) VALUES
    (101, 'sk_live_acme_0f1e2d3c'),
    (202, 'sk_live_globex_4b5a6978'),
    (303, 'sk_live_initech_c0ffee00');

-- The application's own login: not the owner, no BYPASSRLS, just the
-- privileges it needs. The demo shows it keeps seeing every row after
-- bi_access enables row-level security on its tables.
CREATE ROLE app LOGIN PASSWORD 'app-demo-password';
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;
