//! The `bi_access.*` settings (GUCs). Registered in `_PG_init`; every other
//! module reads them through the accessors here, never through SQL, so a
//! session cannot substitute a placeholder of its own.

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

type Text = GucSetting<Option<CString>>;

static HOST: Text = Text::new(None);
static PORT: GucSetting<i32> = GucSetting::<i32>::new(0);
static SSLMODE: Text = Text::new(Some(c"require"));
static REPLICA_APPLICATION_NAME: Text = Text::new(None);
static ROLE_PREFIX: Text = Text::new(Some(c"bi_"));
static ORG_COLUMN: Text = Text::new(Some(c"org_id"));
static EXPOSED_SCHEMAS: Text = Text::new(Some(c"public"));
static AUTO_EXPOSE: GucSetting<bool> = GucSetting::<bool>::new(true);
static DISPLAY_NAME_FORMAT: Text = Text::new(Some(c"BI - {org_name}"));
static STATEMENT_TIMEOUT: Text = Text::new(Some(c"5min"));
static IDLE_IN_TRANSACTION_TIMEOUT: Text = Text::new(Some(c"1min"));
static DEFAULT_VALID_FOR: Text = Text::new(None);
static ACTOR: Text = Text::new(None);

pub fn init() {
    text(
        c"bi_access.host",
        c"Host name BI clients are told to connect to (usually a read replica).",
        &HOST,
    );
    GucRegistry::define_int_guc(
        c"bi_access.port",
        c"Port BI clients are told to connect to; 0 means this server's port.",
        c"",
        &PORT,
        0,
        65535,
        GucContext::Suset,
        GucFlags::default(),
    );
    text(
        c"bi_access.sslmode",
        c"libpq sslmode put in connection details (disable, allow, prefer, require, verify-ca, verify-full).",
        &SSLMODE,
    );
    text(
        c"bi_access.replica_application_name",
        c"application_name of the standby whose replay makes a new credential active.",
        &REPLICA_APPLICATION_NAME,
    );
    text(
        c"bi_access.role_prefix",
        c"Prefix of generated role names; a random suffix follows.",
        &ROLE_PREFIX,
    );
    text(
        c"bi_access.org_column",
        c"Default name of the org column of exposed tables.",
        &ORG_COLUMN,
    );
    text(
        c"bi_access.exposed_schemas",
        c"Comma-separated schemas whose tables with the org column are candidates for exposure.",
        &EXPOSED_SCHEMAS,
    );
    GucRegistry::define_bool_guc(
        c"bi_access.auto_expose",
        c"Whether a sync exposes new tables that carry the org column in an exposed schema.",
        c"",
        &AUTO_EXPOSE,
        GucContext::Suset,
        GucFlags::default(),
    );
    text(
        c"bi_access.display_name_format",
        c"Display name of a connection; {org_name}, {org_id} and {label} are replaced.",
        &DISPLAY_NAME_FORMAT,
    );
    text(
        c"bi_access.statement_timeout",
        c"statement_timeout applied to every credential role.",
        &STATEMENT_TIMEOUT,
    );
    text(
        c"bi_access.idle_in_transaction_session_timeout",
        c"idle_in_transaction_session_timeout applied to every credential role.",
        &IDLE_IN_TRANSACTION_TIMEOUT,
    );
    text(
        c"bi_access.default_valid_for",
        c"Interval after which a new credential expires (VALID UNTIL); empty means never.",
        &DEFAULT_VALID_FOR,
    );
    // The application sets this per transaction to name its own user in the
    // event log, so it is the one setting any role may change.
    GucRegistry::define_string_guc(
        c"bi_access.actor",
        c"The application's own user, recorded beside session_user in bi_access.events.",
        c"",
        &ACTOR,
        GucContext::Userset,
        GucFlags::default(),
    );
    // From now on a session cannot invent bi_access.* placeholders (on 15
    // and later; see compat).
    crate::compat::reserve_guc_prefix(crate::names::EXTENSION_C);
}

fn text(
    name: &'static std::ffi::CStr,
    description: &'static std::ffi::CStr,
    setting: &'static Text,
) {
    GucRegistry::define_string_guc(
        name,
        description,
        c"",
        setting,
        GucContext::Suset,
        GucFlags::default(),
    );
}

fn get(setting: &Text) -> Option<String> {
    setting
        .get()
        .map(|value| value.to_string_lossy().trim().to_string())
        .filter(|value| !value.is_empty())
}

pub fn host() -> Option<String> {
    get(&HOST)
}

/// 0 when unset: the caller substitutes this server's port.
pub fn port() -> i32 {
    PORT.get()
}

pub fn sslmode() -> String {
    get(&SSLMODE).unwrap_or_else(|| "require".into())
}

pub fn replica_application_name() -> Option<String> {
    get(&REPLICA_APPLICATION_NAME)
}

pub fn role_prefix() -> String {
    get(&ROLE_PREFIX).unwrap_or_default()
}

pub fn org_column() -> String {
    get(&ORG_COLUMN).unwrap_or_else(|| "org_id".into())
}

pub fn exposed_schemas() -> Vec<String> {
    get(&EXPOSED_SCHEMAS)
        .unwrap_or_default()
        .split(',')
        .map(|schema| schema.trim().to_string())
        .filter(|schema| !schema.is_empty())
        .collect()
}

pub fn auto_expose() -> bool {
    AUTO_EXPOSE.get()
}

pub fn display_name_format() -> String {
    get(&DISPLAY_NAME_FORMAT).unwrap_or_else(|| "BI - {org_name}".into())
}

pub fn statement_timeout() -> Option<String> {
    get(&STATEMENT_TIMEOUT)
}

pub fn idle_in_transaction_session_timeout() -> Option<String> {
    get(&IDLE_IN_TRANSACTION_TIMEOUT)
}

pub fn default_valid_for() -> Option<String> {
    get(&DEFAULT_VALID_FOR)
}

pub fn actor() -> Option<String> {
    get(&ACTOR)
}
