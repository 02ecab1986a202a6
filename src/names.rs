//! Names bi_access gives to things, each spelled once. SQL written in `sql/`
//! repeats some of them; a `#[pg_test]` checks the two agree.

use std::ffi::CStr;

/// The version this library is, and whose SQL objects it expects
/// (src/entry.rs).
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The extension, its schema, and the library every credential session loads.
pub const EXTENSION: &str = "bi_access";
pub const EXTENSION_C: &CStr = c"bi_access";
/// The login gate (gate/bi_access_gate.c): a second library every credential
/// role loads at login beside bi_access, which runs bi_access's checks at
/// login whether or not the server preloads bi_access (src/guard/gate.rs).
pub const GATE_LIBRARY: &str = "bi_access_gate";
/// Every credential role's session_preload_libraries, in order.
pub const SESSION_LIBRARIES: [&str; 2] = [EXTENSION, GATE_LIBRARY];
/// bi_access's own schemas: the SQL surface, and the workers behind it.
pub const SCHEMAS: [&str; 2] = ["bi_access", "bi_access_internal"];

/// The target every credential has unless generate names another: the
/// server's own host and port settings (src/targets.rs).
pub const DEFAULT_TARGET: &str = "default";

/// Every credential of every database of the cluster is a member: it marks a
/// BI login wherever it connects.
pub const CREDENTIAL_GROUP: &str = "bi_access_credential";
pub const CREDENTIAL_GROUP_C: &CStr = c"bi_access_credential";
/// PgBouncer's auth_user is a member: it may call pgbouncer_auth() and
/// nothing else of bi_access (src/pooler.rs).
pub const POOLER_GROUP: &str = "bi_access_pooler";
/// Prefix of each database's reader group (a random suffix follows).
pub const READER_GROUP_PREFIX: &str = "bi_access_reader_";

/// The policies bi_access puts on an exposed table.
pub const POLICY_READ: &str = "bi_access_read";
pub const POLICY_GUARD: &str = "bi_access_guard";
pub const POLICY_PASSTHROUGH: &str = "bi_access_passthrough";

/// The functions the reader policies call (schema `bi_access`): the session
/// guard recognises a genuine policy by them.
pub const ORG_LOOKUPS: [&str; 3] = ["current_org", "current_org_bigint", "current_org_uuid"];

/// Custom schemas (scope read_write, src/custom_schema.rs): the schema's name
/// prefix, and the prefixes of its two per-org groups, which share one random
/// suffix (the session guard finds the reader group from the owner's name).
/// None carries an org key.
pub const CUSTOM_SCHEMA_PREFIX: &str = "bi_custom_";
pub const CUSTOM_OWNER_PREFIX: &str = "bi_access_cs_owner_";
pub const CUSTOM_READER_PREFIX: &str = "bi_access_cs_reader_";

/// The row trigger bi_access puts on every table of a custom schema, and
/// its function (schema `bi_access_internal`): the quota counted inside a
/// statement (src/guard/quota.rs).
pub const QUOTA_TRIGGER: &str = "bi_access_quota";
pub const QUOTA_FUNCTION: &str = "custom_schema_quota";
