//! `#[pg_test]`s of scope read_write (issue 17): custom schemas, the session
//! guard's write rules, the quota and drop_custom_schema. Each runs inside a
//! transaction that is rolled back; a credential's session is a SET SESSION
//! AUTHORIZATION (the guard keys on session_user). What needs real logins
//! (psql, COPY FROM STDIN, the replica) is in pg_test/test_read_write.py.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode::*;

    use crate::tests::helpers::{as_login, fails_with, one, run};

    /// Setup as a role (SET ROLE: not a login).
    fn as_role(role: &str, sql: &[String]) {
        crate::tests::helpers::as_role(role, || {
            for statement in sql {
                run(statement);
            }
        });
    }

    /// An exposed application table with rows of orgs 'a' (3) and 'b' (2).
    fn app() {
        run("CREATE TABLE public.deals (id int PRIMARY KEY, org_id text NOT NULL, amount int)");
        run("INSERT INTO public.deals VALUES (1, 'a', 10), (2, 'a', 20), (3, 'a', 30), (4, 'b', 40), (5, 'b', 50)");
        run("SELECT bi_access.expose_table('public.deals')");
    }

    /// (username, scope, custom_schema) of a new credential.
    fn generate(org: &str, label: &str, scope: &str) -> (String, String, Option<String>) {
        Spi::connect(|client| {
            let row = client
                .select(
                    &format!(
                        "SELECT username, scope, custom_schema FROM bi_access.generate('{org}', '{label}', scope => '{scope}')"
                    ),
                    None,
                    &[],
                )
                .unwrap()
                .first();
            (
                row.get::<String>(1).unwrap().unwrap(),
                row.get::<String>(2).unwrap().unwrap(),
                row.get::<String>(3).unwrap(),
            )
        })
    }

    #[pg_test]
    fn read_write_gets_a_custom_schema_without_the_org_key() {
        let (writer, scope, schema) = generate("acme-42", "analyst", "read_write");
        assert_eq!(scope, "read_write");
        let schema = schema.expect("a read_write credential has a custom schema");
        // Prefix and random [a-z0-9] only: no room for the org key (whose
        // '-' is outside that alphabet).
        assert!(
            one::<bool>(&format!("SELECT '{schema}' ~ '^bi_custom_[a-z0-9]{{12}}$'")),
            "{schema}"
        );
        let owner: String = one(&format!(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = '{schema}'"
        ));
        assert!(
            one::<bool>(&format!(
                "SELECT '{owner}' ~ '^bi_access_cs_owner_[a-z0-9]{{16}}$'"
            )),
            "{owner}"
        );
        // Its writer is a member of the owner group, and only it.
        let (reader, read_scope, read_schema) = generate("acme-42", "default", "read");
        assert_eq!(read_scope, "read");
        assert_eq!(read_schema, None);
        assert!(one::<bool>(&format!(
            "SELECT pg_has_role('{writer}', '{owner}', 'MEMBER')"
        )));
        assert!(!one::<bool>(&format!(
            "SELECT pg_has_role('{reader}', '{owner}', 'MEMBER')"
        )));
        assert!(one::<bool>(&format!(
            "SELECT has_schema_privilege('{reader}', '{schema}', 'USAGE')"
        )));
        assert!(!one::<bool>(&format!(
            "SELECT has_schema_privilege('{reader}', '{schema}', 'CREATE')"
        )));
        let config: String = one(&format!(
            "SELECT array_to_string(rolconfig, ' ') FROM pg_roles WHERE rolname = '{writer}'"
        ));
        assert!(
            config.contains(&format!("search_path={schema}, public"))
                && config.contains("default_transaction_read_only=off"),
            "{config}"
        );
        // A second read_write credential of the org shares the schema.
        let (_, _, again) = generate("acme-42", "second", "read_write");
        assert_eq!(again.as_deref(), Some(schema.as_str()));
        // The credentials view shows each scope; check() finds nothing wrong
        // with the memberships.
        assert_eq!(
            one::<String>(&format!(
                "SELECT scope FROM bi_access.credentials WHERE role_name = '{writer}'"
            )),
            "read_write"
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM bi_access.check() \
                 WHERE finding LIKE 'a credential role has an attribute or a membership%'"
            ),
            0
        );
    }

    #[pg_test]
    fn a_sync_restores_the_custom_schema_memberships_and_delete_org_keeps_the_schema() {
        let (writer, _, schema) = generate("a", "analyst", "read_write");
        let schema = schema.unwrap();
        let (reader, _, _) = generate("a", "default", "read");
        let (owner, reader_group): (String, String) = Spi::get_two::<String, String>(
            "SELECT owner_role::text, reader_role::text FROM bi_access.custom_schema WHERE org_id = 'a'",
        )
        .map(|(o, r)| (o.unwrap(), r.unwrap()))
        .unwrap();
        run(&format!("REVOKE {reader_group} FROM {reader}"));
        run(&format!("REVOKE {owner} FROM {writer}"));
        run("SELECT * FROM bi_access.sync_tables()");
        assert!(one::<bool>(&format!(
            "SELECT pg_has_role('{reader}', '{reader_group}', 'MEMBER')"
        )));
        assert!(one::<bool>(&format!(
            "SELECT pg_has_role('{writer}', '{owner}', 'MEMBER')"
        )));
        assert!(!one::<bool>(&format!(
            "SELECT pg_has_role('{reader}', '{owner}', 'MEMBER')"
        )));
        run("SELECT count(*) FROM bi_access.delete_org('a')");
        assert!(one::<bool>(&format!(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = '{schema}')"
        )));
        run("SELECT bi_access.drop_custom_schema('a')");
    }

    #[pg_test]
    fn unknown_scope_and_a_standby_target_are_refused() {
        fails_with(
            "SELECT bi_access.generate('acme', scope => 'write')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        run("SELECT bi_access.set_target('east', 'replica.example.com', 5432, standby => 'east')");
        fails_with(
            "SELECT bi_access.generate('acme', scope => 'read_write', target => 'east')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
        run("SELECT bi_access.set_target('primary', 'primary.example.com', 5432)");
        let scope_and_target: String = one(
            "SELECT scope || ' ' || target FROM bi_access.generate('acme', scope => 'read_write', target => 'primary')",
        );
        assert_eq!(scope_and_target, "read_write primary");
        // The default target with a standby: a read_write credential needs a
        // named primary target.
        run("SET bi_access.replica_application_name = 'bi_replica'");
        fails_with(
            "SELECT bi_access.generate('globex', scope => 'read_write')",
            ERRCODE_INVALID_PARAMETER_VALUE,
        );
    }

    #[pg_test]
    fn a_writer_writes_in_its_custom_schema_and_nowhere_else() {
        app();
        let (writer, schema, other_writer, other_schema) = two_writers();
        as_role(
            &other_writer,
            &[
                format!("CREATE TABLE {other_schema}.secret (x int)"),
                format!("INSERT INTO {other_schema}.secret VALUES (1)"),
            ],
        );
        as_login(&writer, || {
            run(&format!(
                "CREATE TABLE {schema}.budgets (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, deal int, budget numeric)"
            ));
            run(&format!("CREATE INDEX ON {schema}.budgets (deal)"));
            run(&format!(
                "INSERT INTO {schema}.budgets (deal, budget) VALUES (1, 100), (2, 200), (4, 400)"
            ));
            run(&format!("UPDATE {schema}.budgets SET budget = budget + 1"));
            run(&format!(
                "CREATE VIEW {schema}.joined AS SELECT d.id, d.amount, b.budget \
                 FROM public.deals d JOIN {schema}.budgets b ON b.deal = d.id"
            ));
            // Its org's rows only, joined with its own table.
            assert_eq!(
                one::<i64>(&format!("SELECT count(*) FROM {schema}.joined")),
                2
            );
            // Sequences, for identity columns; nextval() is refused (the
            // guard cannot tell whose sequence it advances).
            run(&format!("CREATE SEQUENCE {schema}.seq"));
            fails_with(
                &format!("SELECT nextval('{schema}.seq')"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            run(&format!(
                "CREATE TABLE {schema}.copy AS SELECT * FROM {schema}.budgets"
            ));
            run(&format!("ALTER TABLE {schema}.copy ADD COLUMN note text"));
            run(&format!("DELETE FROM {schema}.copy WHERE deal = 1"));
            run(&format!("TRUNCATE {schema}.copy"));
            run(&format!("DROP TABLE {schema}.copy"));
            for sql in [
                "INSERT INTO public.deals VALUES (9, 'a', 1)".to_string(),
                "UPDATE public.deals SET amount = 0".to_string(),
                "DELETE FROM public.deals".to_string(),
                "TRUNCATE public.deals".to_string(),
                "CREATE TABLE public.mine (x int)".to_string(),
                "CREATE TEMP TABLE scratch (x int)".to_string(),
                format!("CREATE TABLE {other_schema}.mine (x int)"),
                format!("SELECT * FROM {other_schema}.secret"),
                format!("INSERT INTO {other_schema}.secret VALUES (2)"),
                format!("CREATE FUNCTION {schema}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
                format!(
                    "CREATE TRIGGER t BEFORE INSERT ON {schema}.budgets \
                     FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()"
                ),
                format!("CREATE TABLE {schema}.linked (deal int REFERENCES public.deals (id))"),
                format!(
                    "ALTER TABLE {schema}.budgets ADD FOREIGN KEY (deal) REFERENCES public.deals (id)"
                ),
                format!("DROP SCHEMA {schema} CASCADE"),
                format!("ALTER TABLE {schema}.budgets SET SCHEMA public"),
                format!("GRANT SELECT ON {schema}.budgets TO PUBLIC"),
                "CREATE SCHEMA mine".to_string(),
                "SELECT lo_create(0)".to_string(),
                "SELECT pg_advisory_lock(1)".to_string(),
            ] {
                fails_with(&sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
        });
    }

    /// The read_write credentials of orgs a and b, with their custom schemas.
    fn two_writers() -> (String, String, String, String) {
        let (writer, _, schema) = generate("a", "analyst", "read_write");
        let (other_writer, _, other_schema) = generate("b", "analyst", "read_write");
        (writer, schema.unwrap(), other_writer, other_schema.unwrap())
    }

    /// Org a's tables, made by its writer (as SET ROLE: setup, not a login).
    fn org_a_tables() -> (String, String) {
        app();
        let (writer, schema, other_writer, other_schema) = two_writers();
        as_role(
            &writer,
            &[
                format!("CREATE TABLE {schema}.budgets (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, deal int, budget numeric)"),
                format!("INSERT INTO {schema}.budgets (deal, budget) VALUES (1, 100), (2, 200), (4, 400)"),
                format!(
                    "CREATE VIEW {schema}.joined AS SELECT d.id, d.amount, b.budget \
                     FROM public.deals d JOIN {schema}.budgets b ON b.deal = d.id"
                ),
            ],
        );
        as_role(
            &other_writer,
            &[
                format!("CREATE TABLE {other_schema}.secret (x int)"),
                format!("INSERT INTO {other_schema}.secret VALUES (1)"),
            ],
        );
        (schema, other_schema)
    }

    #[pg_test]
    fn every_credential_of_the_org_reads_its_custom_schema() {
        let (schema, _) = org_a_tables();
        let (reader, _, _) = generate("a", "default", "read");
        as_login(&reader, || {
            assert_eq!(
                one::<i64>(&format!("SELECT count(*) FROM {schema}.budgets")),
                3
            );
            // The view reads the application's rows as the org's.
            assert_eq!(
                one::<i64>(&format!("SELECT count(*) FROM {schema}.joined")),
                2
            );
            for sql in [
                format!("INSERT INTO {schema}.budgets (deal) VALUES (3)"),
                format!("DELETE FROM {schema}.budgets"),
                format!("TRUNCATE {schema}.budgets"),
                format!("CREATE TABLE {schema}.mine (x int)"),
                format!("DROP TABLE {schema}.budgets"),
            ] {
                fails_with(&sql, ERRCODE_INSUFFICIENT_PRIVILEGE);
            }
        });
    }

    #[pg_test]
    fn another_org_cannot_use_the_custom_schema() {
        let (schema, other_schema) = org_a_tables();
        let (other_reader, _, _) = generate("b", "default", "read");
        as_login(&other_reader, || {
            fails_with(
                &format!("SELECT count(*) FROM {schema}.budgets"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            fails_with(
                &format!("SELECT count(*) FROM {schema}.joined"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
            assert_eq!(
                one::<i64>(&format!("SELECT count(*) FROM {other_schema}.secret")),
                1
            );
            // Its own org's rows only, through the stray grant too.
            run("RESET SESSION AUTHORIZATION");
            run(&format!("GRANT USAGE ON SCHEMA {schema} TO PUBLIC"));
            run(&format!("GRANT SELECT ON {schema}.budgets TO PUBLIC"));
            run(&format!("SET SESSION AUTHORIZATION {other_reader}"));
            fails_with(
                &format!("SELECT count(*) FROM {schema}.budgets"),
                ERRCODE_INSUFFICIENT_PRIVILEGE,
            );
        });
    }

    #[pg_test]
    fn past_the_quota_writes_that_grow_are_refused() {
        let (writer, _, schema) = generate("a", "analyst", "read_write");
        let schema = schema.unwrap();
        run("SET bi_access.custom_schema_quota = '64kB'");
        as_login(&writer, || {
            run(&format!("CREATE TABLE {schema}.big (x text)"));
            // One statement may overshoot: the check comes before it.
            run(&format!(
                "INSERT INTO {schema}.big SELECT repeat('x', 100) FROM generate_series(1, 2000)"
            ));
            fails_with(
                &format!("INSERT INTO {schema}.big VALUES ('more')"),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            fails_with(
                &format!("UPDATE {schema}.big SET x = 'y'"),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            fails_with(
                &format!("CREATE TABLE {schema}.more (x int)"),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            fails_with(
                &format!("CREATE INDEX ON {schema}.big (x)"),
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            );
            // Reads, DELETE, TRUNCATE and DROP still work.
            assert_eq!(
                one::<i64>(&format!("SELECT count(*) FROM {schema}.big")),
                2000
            );
            run(&format!("DELETE FROM {schema}.big WHERE x = 'nothing'"));
            run(&format!("TRUNCATE {schema}.big"));
            run(&format!("INSERT INTO {schema}.big VALUES ('fits again')"));
            run(&format!("DROP TABLE {schema}.big"));
            run(&format!(
                "CREATE TABLE {schema}.big AS SELECT repeat('x', 100) AS x FROM generate_series(1, 2000)"
            ));
        });
        // check() names the schema past its quota, and says nothing once it fits.
        let finding = format!(
            "SELECT count(*) FROM bi_access.check() WHERE object = 'schema {schema}' \
             AND finding LIKE '%past bi_access.custom_schema_quota%'"
        );
        assert_eq!(one::<i64>(&finding), 1);
        run(&format!("DROP TABLE {schema}.big"));
        assert_eq!(one::<i64>(&finding), 0);
        // An org's custom schema is never exposed.
        run(&format!("CREATE TABLE {schema}.t (org_id text)"));
        fails_with(
            &format!("SELECT bi_access.expose_table('{schema}.t')"),
            ERRCODE_WRONG_OBJECT_TYPE,
        );
    }

    #[pg_test]
    fn deleting_a_writer_keeps_its_tables_and_drop_custom_schema_waits_for_it() {
        fails_with(
            "SELECT bi_access.drop_custom_schema('nobody')",
            ERRCODE_UNDEFINED_OBJECT,
        );
        let (writer, _, schema) = generate("a", "analyst", "read_write");
        let schema = schema.unwrap();
        let (reader, _, _) = generate("a", "default", "read");
        as_role(
            &writer,
            &[
                format!("CREATE TABLE {schema}.kept (x int)"),
                format!("INSERT INTO {schema}.kept VALUES (1), (2)"),
            ],
        );
        fails_with(
            "SELECT bi_access.drop_custom_schema('a')",
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        );
        run(&format!("SELECT bi_access.delete('{writer}')"));
        let owner: String = one(&format!(
            "SELECT '{schema}.kept'::regclass::oid::regclass::text"
        ));
        assert_eq!(owner, format!("{schema}.kept"));
        let table_owner: String = one(&format!(
            "SELECT relowner::regrole::text FROM pg_class WHERE oid = '{schema}.kept'::regclass"
        ));
        assert!(
            table_owner.starts_with("bi_access_cs_owner_"),
            "{table_owner}"
        );
        as_login(&reader, || {
            assert_eq!(
                one::<i64>(&format!("SELECT count(*) FROM {schema}.kept")),
                2
            );
        });
        // A new read_write credential of the org writes the kept table.
        let (again, _, same) = generate("a", "analyst", "read_write");
        assert_eq!(same.as_deref(), Some(schema.as_str()));
        as_role(&again, &[format!("INSERT INTO {schema}.kept VALUES (3)")]);
        run(&format!("SELECT bi_access.delete('{again}')"));
        run("SELECT bi_access.drop_custom_schema('a')");
        assert!(!one::<bool>(&format!(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = '{schema}')"
        )));
        assert!(!one::<bool>(&format!(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = '{table_owner}')"
        )));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM bi_access.events WHERE action = 'drop_custom_schema'"),
            1
        );
        fails_with(
            "SELECT bi_access.drop_custom_schema('a')",
            ERRCODE_UNDEFINED_OBJECT,
        );
    }
}
