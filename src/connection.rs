//! Connection details as BI tools take them: libpq URI, JDBC URL and the
//! separate fields, built from the credential's target (src/targets.rs).

use pgrx::prelude::*;

use crate::error::{internal, Result};
use crate::records::Org;
use crate::settings;
use crate::targets::Target;

pub struct Details {
    pub host: String,
    pub port: i32,
    pub database: String,
    pub username: String,
    pub password: String,
    pub schema: String,
    pub sslmode: String,
    pub display_name: String,
    pub scope: String,
    pub custom_schema: Option<String>,
    pub target: String,
}

impl Details {
    /// `scope` and `custom_schema` as the record says (a read_write
    /// credential's schema).
    pub fn new(
        username: &str,
        password: String,
        org: &Org,
        target: &Target,
        scope: &str,
        custom_schema: Option<String>,
    ) -> Result<Self> {
        // Named targets are checked by set_target; `default`'s host is a
        // setting, which a URL must not carry as `[h:5432]` either.
        if target.name == crate::names::DEFAULT_TARGET {
            crate::input::host("bi_access.host", &target.host, crate::targets::MAX_HOST_LEN)?;
        }
        Ok(Details {
            host: target.host.clone(),
            port: target.port,
            database: Spi::get_one::<String>("SELECT current_database()::text")?
                .unwrap_or_default(),
            username: username.to_string(),
            password,
            schema: "public".into(),
            sslmode: target.sslmode.clone(),
            display_name: display_name(&settings::display_name_format(), org),
            scope: scope.into(),
            custom_schema,
            target: target.name.clone(),
        })
    }

    /// `postgresql://user:password@host:port/database?sslmode=...`, every
    /// part percent-encoded: usable as is by psql, libpq, psycopg and
    /// SQLAlchemy (as `postgresql+psycopg2://...`).
    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}?sslmode={}",
            encode(&self.username),
            encode(&self.password),
            url_host(&self.host),
            self.port,
            encode(&self.database),
            encode(&self.sslmode),
        )
    }

    /// What pgjdbc (Metabase, DBeaver, Tableau) takes.
    pub fn jdbc_url(&self) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}?user={}&password={}&sslmode={}",
            url_host(&self.host),
            self.port,
            encode(&self.database),
            encode(&self.username),
            encode(&self.password),
            encode(&self.sslmode),
        )
    }

    pub fn into_tuple(self) -> Result<pgrx::composite_type!('static, "bi_access.connection")> {
        let mut tuple =
            PgHeapTuple::new_composite_type("bi_access.connection").map_err(internal)?;
        let url = self.url();
        let jdbc_url = self.jdbc_url();
        tuple
            .set_by_name("database_type", "postgresql")
            .map_err(internal)?;
        tuple.set_by_name("host", self.host).map_err(internal)?;
        tuple.set_by_name("port", self.port).map_err(internal)?;
        tuple
            .set_by_name("database", self.database)
            .map_err(internal)?;
        tuple
            .set_by_name("username", self.username)
            .map_err(internal)?;
        tuple
            .set_by_name("password", self.password)
            .map_err(internal)?;
        tuple.set_by_name("schema", self.schema).map_err(internal)?;
        tuple
            .set_by_name("sslmode", self.sslmode)
            .map_err(internal)?;
        tuple.set_by_name("url", url).map_err(internal)?;
        tuple.set_by_name("jdbc_url", jdbc_url).map_err(internal)?;
        tuple
            .set_by_name("display_name", self.display_name)
            .map_err(internal)?;
        tuple.set_by_name("scope", self.scope).map_err(internal)?;
        if let Some(schema) = self.custom_schema {
            tuple
                .set_by_name("custom_schema", schema)
                .map_err(internal)?;
        }
        tuple.set_by_name("target", self.target).map_err(internal)?;
        Ok(tuple)
    }
}

/// `bi_access.display_name_format` with its placeholders expanded in one
/// pass: a value that itself contains `{org_id}` or `{label}` (an org name
/// is the caller's text) is inserted as it is, never expanded again.
pub fn display_name(format: &str, org: &Org) -> String {
    let org_name = org
        .org_name
        .filter(|name| !name.is_empty())
        .unwrap_or(org.org_id);
    let placeholders = [
        ("{org_name}", org_name),
        ("{org_id}", org.org_id),
        ("{label}", org.label),
    ];
    let mut out = String::with_capacity(format.len());
    let mut rest = format;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let at = &rest[start..];
        let (value, consumed) = placeholders
            .iter()
            .find(|(placeholder, _)| at.starts_with(placeholder))
            .map_or(("{", 1), |(placeholder, value)| (*value, placeholder.len()));
        out.push_str(value);
        rest = &at[consumed..];
    }
    out.push_str(rest);
    out
}

/// RFC 3986: everything but the unreserved characters is percent-encoded.
fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An IPv6 literal goes in brackets; a host name or IPv4 address is encoded.
fn url_host(host: &str) -> String {
    match (host.contains(':'), host.starts_with('[')) {
        (true, true) => host.to_string(),
        (true, false) => format!("[{host}]"),
        (false, _) => encode(host),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn details(password: &str, database: &str, host: &str) -> Details {
        Details {
            host: host.into(),
            port: 6543,
            database: database.into(),
            username: "bi_abc".into(),
            password: password.into(),
            schema: "public".into(),
            sslmode: "require".into(),
            display_name: "BI - Acme".into(),
            scope: "read".into(),
            custom_schema: None,
            target: "default".into(),
        }
    }

    #[test]
    fn url_percent_encodes_every_part() {
        let d = details("p@ss:/?#&w rd", "my db/ü", "replica.example.com");
        assert_eq!(
            d.url(),
            "postgresql://bi_abc:p%40ss%3A%2F%3F%23%26w%20rd@replica.example.com:6543/my%20db%2F%C3%BC?sslmode=require"
        );
        assert_eq!(
            d.jdbc_url(),
            "jdbc:postgresql://replica.example.com:6543/my%20db%2F%C3%BC?user=bi_abc&password=p%40ss%3A%2F%3F%23%26w%20rd&sslmode=require"
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert!(details("x", "db", "::1").url().contains("@[::1]:6543/"));
    }

    #[test]
    fn display_name_falls_back_to_the_org_id() {
        let org = Org {
            org_id: "42",
            org_name: None,
            label: "default",
        };
        assert_eq!(display_name("BI - {org_name}", &org), "BI - 42");
        let named = Org {
            org_name: Some("Acme"),
            ..org
        };
        assert_eq!(
            display_name("{org_name} ({label})", &named),
            "Acme (default)"
        );
    }

    #[test]
    fn placeholders_are_expanded_once() {
        let org = Org {
            org_id: "42",
            org_name: Some("{org_id}{label}{org_name}"),
            label: "{org_id}",
        };
        assert_eq!(
            display_name("BI - {org_name} [{label}] {", &org),
            "BI - {org_id}{label}{org_name} [{org_id}] {"
        );
    }
}
