-- The fixtures of scripts/errors.py's sessions (not pinned: every statement
-- here must succeed). A superuser in database `shop`.
CREATE EXTENSION bi_access;
CREATE TABLE projects (id bigint PRIMARY KEY, org_id bigint NOT NULL, name text);
INSERT INTO projects VALUES (1, 42, 'Roadmap'), (2, 7, 'Secret plan');
CREATE TABLE tickets (id bigint PRIMARY KEY, tenant_id text NOT NULL, title text);
CREATE TABLE measures (id int PRIMARY KEY, org_id float8);
CREATE TABLE dormant (id int PRIMARY KEY, org_id bigint);
CREATE POLICY everything ON dormant USING (true);
CREATE VIEW definer_view AS SELECT * FROM projects;
CREATE SEQUENCE counter;
CREATE TABLE others (id int PRIMARY KEY, org_id bigint);
CREATE ROLE app_admin LOGIN IN ROLE bi_access_admin;
CREATE ROLE plain LOGIN;
GRANT USAGE ON SCHEMA bi_access TO plain;
SELECT bi_access.expose_table('projects');
-- A reference table shared without its internal cost (granted to PUBLIC
-- too, by a careless DBA), and accounts exposed without their password hashes.
CREATE TABLE plans (id int PRIMARY KEY, name text, internal_cost int);
GRANT SELECT ON plans TO PUBLIC;
CREATE TABLE accounts (id int PRIMARY KEY, org_id bigint NOT NULL, email text, password_hash text);
SELECT bi_access.share_table('plans', ARRAY['id', 'name']);
SELECT bi_access.expose_table('accounts', columns => ARRAY['id', 'org_id', 'email']);
SELECT * FROM bi_access.sync_tables();
SELECT bi_access.set_target('standby', 'localhost', 5432, standby => 'bi_replica');
