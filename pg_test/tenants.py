"""Sample multi-tenant databases, as a SaaS would have them, and how to tell
which rows of them a session can see.

One credential carries one org key (text) that every exposed table compares
with its own org column, cast to that column's type. The key of an org must
therefore fit every org column of its database, so the numeric-keyed SaaS
database covers integer, bigint and text columns, and a second database keyed
by uuid covers uuid (and text holding a uuid). The second database also proves
that a credential of one database sees nothing in another.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExposedTable:
    name: str
    org_column: str
    # Each table is exposed with a different call form, as migrations would.
    expose_sql: str


@dataclass
class TenantDb:
    dbname: str
    ddl: str
    tables: list[ExposedTable]
    orgs: dict[str, str]  # org key -> org name
    hidden_table: str  # a table without an org column: no credential may read it
    # Every (table, org key, row count) in the database, filled in once loaded.
    all_rows: set[tuple[str, str, int]] = field(default_factory=set)

    def counts_sql(self) -> str:
        """One query a client runs to report, per exposed table, which org keys
        it sees and how many rows of each."""
        return " UNION ALL ".join(
            f"SELECT '{t.name}', {t.org_column}::text, count(*) FROM {t.name} GROUP BY 2"
            for t in self.tables)

    def rows_of(self, org: str) -> set[tuple[str, str, int]]:
        return {row for row in self.all_rows if row[1] == org}


def visible(rows) -> set[tuple[str, str, int]]:
    """Normalises counts_sql() output of any client (strings or values)."""
    return {(str(t), str(o), int(n)) for t, o, n in rows}


SAAS = TenantDb(
    dbname="saas",
    ddl="""
CREATE TABLE orgs (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO orgs VALUES (101, 'Acme'), (202, 'Globex'), (303, 'Initech');

CREATE TABLE projects (id bigserial PRIMARY KEY, org_id integer NOT NULL, name text NOT NULL);
INSERT INTO projects (org_id, name)
  SELECT o, 'project ' || g FROM (VALUES (101, 3), (202, 2), (303, 1)) v(o, n), generate_series(1, n) g;

CREATE TABLE invoices (id bigserial PRIMARY KEY, org_id bigint NOT NULL, amount numeric(12,2) NOT NULL);
INSERT INTO invoices (org_id, amount)
  SELECT o, g * 10.5 FROM (VALUES (101, 5), (202, 7), (303, 2)) v(o, n), generate_series(1, n) g;

CREATE TABLE tasks (id bigserial PRIMARY KEY, tenant_id text NOT NULL, title text NOT NULL);
INSERT INTO tasks (tenant_id, title)
  SELECT o, 'task ' || g FROM (VALUES ('101', 4), ('202', 1), ('303', 2)) v(o, n), generate_series(1, n) g;

CREATE INDEX ON projects (org_id);
CREATE INDEX ON invoices (org_id);
CREATE INDEX ON tasks (tenant_id);

CREATE TABLE app_settings (key text PRIMARY KEY, value text);
INSERT INTO app_settings VALUES ('smtp_password', 'not for BI eyes');
""",
    tables=[
        ExposedTable("orgs", "id", "SELECT bi_access.expose_table('orgs', 'id')"),
        # No column given: bi_access.org_column (default org_id) applies.
        ExposedTable("projects", "org_id", "SELECT bi_access.expose_table('projects')"),
        ExposedTable("invoices", "org_id", "SELECT bi_access.expose_table('invoices', 'org_id')"),
        ExposedTable("tasks", "tenant_id", "SELECT bi_access.expose_table('tasks', org_column => 'tenant_id')"),
    ],
    orgs={"101": "Acme", "202": "Globex", "303": "Initech"},
    hidden_table="app_settings",
)

UUID_A = "1a2b3c4d-0000-4000-8000-00000000000a"
UUID_B = "1a2b3c4d-0000-4000-8000-00000000000b"

CRM = TenantDb(
    dbname="crm",
    ddl=f"""
CREATE TABLE accounts (id uuid PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts VALUES ('{UUID_A}', 'Umbrella'), ('{UUID_B}', 'Hooli');

CREATE TABLE contacts (id bigserial PRIMARY KEY, org_id uuid NOT NULL, email text NOT NULL);
INSERT INTO contacts (org_id, email)
  SELECT o::uuid, 'c' || g || '@example.com'
  FROM (VALUES ('{UUID_A}', 2), ('{UUID_B}', 3)) v(o, n), generate_series(1, n) g;

CREATE TABLE notes (id bigserial PRIMARY KEY, account text NOT NULL, body text NOT NULL);
INSERT INTO notes (account, body)
  SELECT o, 'note ' || g FROM (VALUES ('{UUID_A}', 4), ('{UUID_B}', 1)) v(o, n), generate_series(1, n) g;

CREATE TABLE crm_secrets (key text PRIMARY KEY, value text);
""",
    tables=[
        ExposedTable("accounts", "id", "SELECT bi_access.expose_table('accounts', 'id')"),
        ExposedTable("contacts", "org_id", "SELECT bi_access.expose_table('contacts')"),
        ExposedTable("notes", "account", "SELECT bi_access.expose_table('notes', 'account')"),
    ],
    orgs={UUID_A: "Umbrella", UUID_B: "Hooli"},
    hidden_table="crm_secrets",
)


def assert_orgs_distinguishable(db: TenantDb) -> None:
    """A leak is only visible if orgs differ: every pair of orgs must have
    different row counts in at least one table."""
    per_org = {org: Counter({t: n for t, o, n in db.all_rows if o == org}) for org in db.orgs}
    signatures = [tuple(sorted(c.items())) for c in per_org.values()]
    assert len(set(signatures)) == len(signatures), f"{db.dbname}: orgs have identical row counts"
