-- A read_write credential of org 42 (its custom schema bi_org_42 or as
-- named), with bi_access.custom_schema_quota at 64kB on this server.
INSERT INTO projects VALUES (3, 7, 'another org');
CREATE TABLE public.mine (id int);
CREATE TABLE notes (id int, body text);
INSERT INTO notes SELECT i, repeat('x', 1000) FROM generate_series(1, 1000) i;
INSERT INTO notes SELECT i, repeat('x', 1000) FROM generate_series(1, 1000) i;
CREATE FUNCTION notes_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM notes';
CREATE TRIGGER t BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
GRANT SELECT ON notes TO PUBLIC;
DROP SCHEMA public;
