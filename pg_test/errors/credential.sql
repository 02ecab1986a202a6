-- A read credential of org 42, logged in with its url: what its session
-- guard refuses.
CREATE TABLE mine (id int);
CREATE TEMP TABLE scratch (id int);
INSERT INTO projects VALUES (3, 42, 'x');
UPDATE projects SET name = 'x';
SELECT * FROM bi_access.credential;
SELECT * FROM bi_access.generate('42');
SET bi_access.statement_timeout = '1h';
SET work_mem = '10GB';
RESET bi_access.work_mem;
SET ROLE postgres;
COPY projects TO '/tmp/projects.csv';
COPY (SELECT 1) TO PROGRAM 'true';
SELECT pg_advisory_lock(1);
LISTEN anything;
NOTIFY anything;
SELECT lo_creat(-1);
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
DO 'BEGIN NULL; END';
PREPARE TRANSACTION 'x';
SELECT set_config('bi_access.statement_timeout', '1h', false);
LOAD 'bi_access';
