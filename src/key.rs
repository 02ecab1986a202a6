//! The key that seals the passwords kept for "View Details".
//!
//! It lives in `bi_access.sealing_key`, a one-row table of the extension that
//! is not marked for pg_dump: physical replication carries it to every
//! standby (one cloned before the extension existed included) and physical
//! backups and WAL archives hold it, but no logical dump does. Row-level
//! security with no permissive policy hides it from every role that does not
//! bypass RLS (pg_read_all_data included); superusers read it.
//!
//! Each sealed secret records the fingerprint of the key that sealed it, so
//! a missing or different key is a clear error naming the fix, never a new
//! key made behind the DBA's back. Superusers move a key between clusters
//! (`export_key`/`import_key`), re-seal every secret under a new one
//! (`rotate_key`), or give up secrets whose key is lost (`reset_key`).
//!
//! The key row is the lock that keeps sealing and replacing apart: every
//! call that seals (generate, regenerate) holds it FOR SHARE from the moment
//! it reads the key to its commit, before it locks anything else; every call
//! that replaces the key (rotate_key, import_key, reset_key) first locks the
//! table (EXCLUSIVE: fair to sealers that queue behind it) and the row FOR
//! UPDATE, so it waits for the sealers in flight, and only then reads the
//! sealed secrets, in READ COMMITTED, with theirs among them. A sealer that
//! comes later waits for the replacement and seals with the new key (under
//! REPEATABLE READ it gets a serialization failure, 40001, and seals
//! nothing). So each secret opens with the key in force once both have
//! committed.

use std::ffi::CStr;
use std::fs;
use std::path::PathBuf;

use base64::Engine;
use chacha20poly1305::Key;
use pgrx::prelude::*;
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{self, Subject, NO_SUBJECT};
use crate::compat;
use crate::db;
use crate::entry::Call;
use crate::error::{or_raise, BiError, Result};
use crate::records::{self, Sealed};
use crate::secrets::{self, SecretError};

pub const KEY_LEN: usize = 32;
/// Where 0.1.0 kept the key: a file of the data directory.
const LEGACY_KEY_FILE: &str = "bi_access.key";
const EXPORT_PREFIX: &str = "bi_access-key-v1:";

/// A key and its fingerprint (the first 16 bytes of its SHA-256, in hex:
/// names the key, tells nothing of it).
pub struct SealingKey {
    pub key: Key,
    pub fingerprint: String,
}

impl SealingKey {
    fn new(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        SealingKey {
            key: *Key::from_slice(bytes),
            fingerprint: digest[..16].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        SealingKey::new(&bytes)
    }
}

/// The key as stored, if there is one.
fn stored() -> Result<Option<SealingKey>> {
    Ok(
        db::first::<Vec<u8>>("SELECT key FROM bi_access.sealing_key", &[])?
            .map(|bytes| SealingKey::new(&bytes)),
    )
}

/// How a call holds the key row until its transaction ends.
#[derive(Clone, Copy)]
enum Hold {
    /// It seals with the key: replacing it must wait.
    ToSeal,
    /// It replaces the key: sealing with it must wait.
    ToReplace,
}

/// The key as stored, its row locked as `hold` says until the transaction
/// ends (the latest committed version, in any isolation level).
fn stored_held(hold: Hold) -> Result<Option<SealingKey>> {
    let sql = match hold {
        Hold::ToSeal => "SELECT key FROM bi_access.sealing_key FOR SHARE",
        Hold::ToReplace => {
            // Row locks queue unfairly: a FOR UPDATE waits while sealers that
            // come later keep joining the FOR SHARE holders, so under steady
            // generates a rotation would wait for ever. The table lock queues
            // in order: sealers that come after it wait for it (their FOR
            // SHARE takes ROW SHARE, which EXCLUSIVE conflicts with), and
            // plain reads of the key (reveals) go on.
            db::exec("LOCK TABLE bi_access.sealing_key IN EXCLUSIVE MODE", &[])?;
            "SELECT key FROM bi_access.sealing_key FOR UPDATE"
        }
    };
    Ok(db::first_mut::<Vec<u8>>(sql, &[])?.map(|bytes| SealingKey::new(&bytes)))
}

/// A call that re-seals or forgets every secret must see every secret
/// committed once it holds the key; a transaction snapshot (REPEATABLE READ,
/// SERIALIZABLE) taken before it waited would miss them.
fn require_read_committed(what: &'static str) -> Result<()> {
    // SAFETY: a read of this backend's transaction isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as std::ffi::c_int {
        return Err(BiError::NeedsReadCommitted(what));
    }
    Ok(())
}

/// The first key of a database. Concurrent first generates wait here on
/// the one that got in first and then use its key: a key is never replaced
/// behind a secret sealed with it.
fn store_first(key: &SealingKey) -> Result<()> {
    db::exec(
        "INSERT INTO bi_access.sealing_key (key, fingerprint) VALUES ($1, $2) \
         ON CONFLICT (singleton) DO NOTHING",
        &[
            key.key.as_slice().to_vec().into(),
            key.fingerprint.as_str().into(),
        ],
    )
}

fn store(key: &SealingKey) -> Result<()> {
    db::exec(
        "INSERT INTO bi_access.sealing_key (key, fingerprint) VALUES ($1, $2) \
         ON CONFLICT (singleton) DO UPDATE SET key = EXCLUDED.key, \
             fingerprint = EXCLUDED.fingerprint, created_at = now()",
        &[
            key.key.as_slice().to_vec().into(),
            key.fingerprint.as_str().into(),
        ],
    )
}

/// Fingerprints of keys that sealed secrets but are not the current one
/// (NULL: sealed by 0.1.0's key file, never adopted).
fn sealed_with_other_keys(current: Option<&str>) -> Result<i64> {
    records::count_sealed(Sealed::NotWith(current))
}

/// The key a new secret is sealed with: the stored one, or a new one if no
/// secret was ever sealed (the first generate of a database), held FOR
/// SHARE until the caller's transaction ends. Called before the caller
/// locks anything else, so that sealers queue on the key row and on nothing
/// else (rotate_key holds the key, then locks the sealed records).
pub fn for_sealing() -> Result<SealingKey> {
    if let Some(key) = stored_held(Hold::ToSeal)? {
        return Ok(key);
    }
    if sealed_with_any()? {
        return Err(SecretError::KeyMissing.into());
    }
    store_first(&SealingKey::generate())?;
    stored_held(Hold::ToSeal)?.ok_or_else(|| SecretError::KeyMissing.into())
}

fn sealed_with_any() -> Result<bool> {
    Ok(records::count_sealed(Sealed::All)? > 0)
}

/// The key that sealed a secret, or why it is not here.
pub fn for_opening(sealed_with: Option<&str>) -> Result<SealingKey> {
    let Some(key) = stored()? else {
        return Err(SecretError::KeyMissing.into());
    };
    if sealed_with != Some(key.fingerprint.as_str()) {
        return Err(SecretError::KeyDifferent {
            sealed_with: sealed_with.unwrap_or("of 0.1.0's key file").to_string(),
            current: key.fingerprint,
        }
        .into());
    }
    Ok(key)
}

pub fn require_superuser(what: &str) -> Result<()> {
    // SAFETY: a read of the current user's cached superuser flag.
    if unsafe { pg_sys::superuser() } {
        Ok(())
    } else {
        Err(SecretError::SuperuserOnly(what.to_string()).into())
    }
}

/// The key as text, for `import_key` on another cluster (after a logical
/// restore). Audited; the event holds only the fingerprint.
pub fn export() -> Result<String> {
    require_superuser("export_key")?;
    let key = stored()?.ok_or(SecretError::KeyMissing)?;
    audit::record(
        "export_key",
        &NO_SUBJECT,
        json!({ "fingerprint": key.fingerprint }),
    )?;
    Ok(format!(
        "{EXPORT_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key.key.as_slice())
    ))
}

/// Installs an exported key. Idempotent for the same key. When it replaces
/// a present key that sealed secrets (a restored database where a generate
/// or regenerate came before import_key: the restore's CREATE EXTENSION made
/// a key of its own), those secrets are re-sealed with the imported key in
/// the same transaction, so the restored secrets and the new ones all open
/// with it; unless no secret is sealed with the imported key, which then is
/// not a key this database needs: refused (55000), the key in use stays.
pub fn import(text: &str) -> Result<bool> {
    require_superuser("import_key")?;
    require_read_committed("import_key")?;
    let bytes = text
        .strip_prefix(EXPORT_PREFIX)
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|bytes| bytes.len() == KEY_LEN)
        .ok_or_else(|| {
            SecretError::BadKey(format!(
                "not a bi_access key: expected the text bi_access.export_key() returns ({EXPORT_PREFIX}…)"
            ))
        })?;
    let key = SealingKey::new(&bytes);
    let mut re_sealed = 0;
    let current = stored_held(Hold::ToReplace)?;
    if let Some(current) = &current {
        if current.fingerprint == key.fingerprint {
            return Ok(false);
        }
        if sealed_by(&current.fingerprint)? > 0 {
            if sealed_by(&key.fingerprint)? == 0 {
                return Err(SecretError::KeyInUse(current.fingerprint.clone()).into());
            }
            re_sealed = re_seal(Sealed::With(&current.fingerprint), current, &key)?;
        }
    }
    store(&key)?;
    let adopted = adopt_legacy_secrets(&key)?;
    audit::record(
        "import_key",
        &NO_SUBJECT,
        json!({
            "fingerprint": key.fingerprint,
            "replaced": current.map(|current| current.fingerprint),
            "re_sealed": re_sealed,
            "legacy_secrets_adopted": adopted,
        }),
    )?;
    Ok(true)
}

/// Every secret of `which` (locked for the rest of the transaction) opened
/// with `from` and sealed again with `to`; how many.
fn re_seal(which: Sealed, from: &SealingKey, to: &SealingKey) -> Result<i64> {
    let sealed = records::lock_sealed_secrets(which)?;
    let count = sealed.len() as i64;
    for (id, role, secret) in sealed {
        let password = secrets::open_with(&from.key, &role, &secret)?;
        let resealed = secrets::seal_with(&to.key, &role, &password)?;
        records::reseal(id, resealed, &to.fingerprint)?;
    }
    Ok(count)
}

fn sealed_by(fingerprint: &str) -> Result<i64> {
    records::count_sealed(Sealed::With(fingerprint))
}

/// Secrets sealed by 0.1.0 (no fingerprint) that this key opens are marked
/// as sealed with it.
fn adopt_legacy_secrets(key: &SealingKey) -> Result<i64> {
    let legacy = records::sealed_secrets(Sealed::Legacy)?;
    let mut adopted = 0;
    for (id, role, sealed) in legacy {
        if secrets::open_with(&key.key, &role, &sealed).is_ok() {
            records::set_sealed_with(id, &key.fingerprint)?;
            adopted += 1;
        }
    }
    Ok(adopted)
}

/// Every secret re-sealed under a new key, in one transaction.
pub fn rotate() -> Result<i64> {
    require_superuser("rotate_key")?;
    require_read_committed("rotate_key")?;
    let old = stored_held(Hold::ToReplace)?.ok_or(SecretError::KeyMissing)?;
    let strays = sealed_with_other_keys(Some(&old.fingerprint))?;
    if strays > 0 {
        return Err(SecretError::KeyDifferent {
            sealed_with: format!("of {strays} other password(s)"),
            current: old.fingerprint,
        }
        .into());
    }
    let new = SealingKey::generate();
    let count = re_seal(Sealed::All, &old, &new)?;
    store(&new)?;
    audit::record(
        "rotate_key",
        &NO_SUBJECT,
        json!({ "from": old.fingerprint, "to": new.fingerprint, "re_sealed": count }),
    )?;
    Ok(count)
}

/// When the key that sealed the secrets is lost for good: a new key, and
/// every secret it cannot open forgotten (regenerate gives each credential a
/// new password). Returns how many were forgotten.
pub fn reset() -> Result<i64> {
    require_superuser("reset_key")?;
    require_read_committed("reset_key")?;
    stored_held(Hold::ToReplace)?;
    let new = SealingKey::generate();
    let forgotten =
        records::forget_secrets("its password was sealed with a key that is lost; regenerate it")?;
    store(&new)?;
    for role in &forgotten {
        let subject = Subject {
            role_name: Some(role),
            org_id: None,
        };
        audit::record("forget_secret", &subject, json!({}))?;
    }
    audit::record(
        "reset_key",
        &NO_SUBJECT,
        json!({ "fingerprint": new.fingerprint, "forgotten": forgotten.len() }),
    )?;
    Ok(forgotten.len() as i64)
}

/// 0.1.0's key file: one per cluster, shared by every database that had
/// bi_access 0.1.0.
fn legacy_file() -> PathBuf {
    // SAFETY: DataDir is set once at postmaster start and never freed.
    let data_dir = unsafe { CStr::from_ptr(pg_sys::DataDir) };
    PathBuf::from(data_dir.to_string_lossy().into_owned()).join(LEGACY_KEY_FILE)
}

/// From the upgrade from 0.1.0: the key file of the data directory is copied
/// into the table, if it opens the secrets 0.1.0 sealed. The file stays:
/// every database of the cluster that had 0.1.0 sealed with it and adopts it
/// at its own update, which may come later; check() asks the DBA to remove
/// it once they are all updated (roles with pg_read_server_files could read
/// it). A missing or different file changes nothing: check() reports it, and
/// import_key or reset_key is the fix.
pub fn adopt_legacy_file() -> Result<()> {
    let path = legacy_file();
    let Ok(bytes) = fs::read(&path) else {
        if sealed_with_any()? {
            pgrx::warning!(
                "bi_access: 0.1.0's key file {} is missing; reveals fail until bi_access.import_key() \
                 (or bi_access.reset_key()) runs",
                path.display()
            );
        }
        return Ok(());
    };
    if bytes.len() != KEY_LEN || stored()?.is_some() {
        pgrx::warning!("bi_access: {} was not adopted as the key", path.display());
        return Ok(());
    }
    let key = SealingKey::new(&bytes);
    let legacy = records::count_sealed(Sealed::Legacy)?;
    let adopted = adopt_legacy_secrets(&key)?;
    if adopted < legacy {
        pgrx::warning!(
            "bi_access: {} does not open the sealed secrets ({adopted} of {legacy}); it was not adopted",
            path.display()
        );
        records::unmark_sealed_with(&key.fingerprint)?;
        return Ok(());
    }
    store(&key)?;
    audit::record(
        "import_key",
        &NO_SUBJECT,
        json!({ "fingerprint": key.fingerprint, "from": "0.1.0 key file", "legacy_secrets_adopted": adopted }),
    )?;
    Ok(())
}

/// What check() reports about the key.
pub fn findings() -> Result<Vec<(&'static str, String, String, String)>> {
    let mut found = Vec::new();
    let current = stored()?;
    if current.is_none() && sealed_with_any()? {
        found.push((
            "error",
            "bi_access key".to_string(),
            "the key is missing while passwords sealed with it are kept: reveals fail".to_string(),
            "SELECT bi_access.import_key('…'); -- or SELECT bi_access.reset_key(); then regenerate"
                .to_string(),
        ));
    }
    if let Some(key) = &current {
        let strays = sealed_with_other_keys(Some(&key.fingerprint))?;
        if strays > 0 {
            found.push((
                "error",
                "bi_access key".to_string(),
                format!("{strays} password(s) were sealed with another key than this database's ({})", key.fingerprint),
                "SELECT bi_access.import_key('…'); -- the key that sealed them, or bi_access.reset_key()".to_string(),
            ));
        }
    }
    let file = legacy_file();
    if file.exists() {
        found.push((
            "warning",
            "bi_access key".to_string(),
            format!(
                "0.1.0's key file {} is still in the data directory, where members of \
                 pg_read_server_files could read it",
                file.display()
            ),
            format!(
                "once every database of this cluster that had bi_access 0.1.0 is updated \
                 (ALTER EXTENSION bi_access UPDATE), remove the file: rm {}",
                file.display()
            ),
        ));
    }
    // Roles that could read the key: the table's files on disk, or the
    // table past row-level security. Before 16, CREATEROLE may grant itself
    // any of these.
    Spi::connect(|client| {
        for row in client.select(
            &format!(
                "SELECT 'role ' || quote_ident(r.rolname), \
                    CASE WHEN r.rolcreaterole AND NOT (pg_catalog.pg_has_role(r.oid, 'pg_read_server_files', 'USAGE') \
                                                      OR pg_catalog.pg_has_role(r.oid, 'pg_execute_server_program', 'USAGE') \
                                                      OR r.rolbypassrls) \
                         THEN format('ALTER ROLE %I NOCREATEROLE;', r.rolname) \
                         ELSE format('REVOKE pg_read_server_files, pg_execute_server_program FROM %I; ALTER ROLE %I NOBYPASSRLS;', \
                                     r.rolname, r.rolname) END \
             FROM pg_catalog.pg_roles r \
             WHERE NOT r.rolsuper AND NOT starts_with(r.rolname, 'pg_') \
               AND (pg_catalog.pg_has_role(r.oid, 'pg_read_server_files', 'USAGE') \
                    OR pg_catalog.pg_has_role(r.oid, 'pg_execute_server_program', 'USAGE') \
                    OR (r.rolbypassrls AND (pg_catalog.pg_has_role(r.oid, 'pg_read_all_data', 'USAGE') \
                        OR pg_catalog.has_table_privilege(r.oid, 'bi_access.sealing_key', 'SELECT'))) \
                    OR (r.rolcreaterole AND {createrole_grants_any_role})) \
             ORDER BY 1",
                createrole_grants_any_role = compat::CREATEROLE_GRANTS_ANY_ROLE
            ),
            None,
            &[],
        )? {
            found.push((
                "error",
                row.get::<String>(1)?.unwrap_or_default(),
                "this role could read bi_access's key (the data files, or the table past row-level security)".to_string(),
                row.get::<String>(2)?.unwrap_or_default(),
            ));
        }
        Ok::<_, BiError>(())
    })?;
    Ok(found)
}

// The key calls are superusers' (no tier is granted them). Declared in
// Rust, they raise with `or_raise`: no SQL wrapper's frame is on top of the
// error context stack, the caller's is (see error::wrapped).

#[pg_extern(volatile, parallel_unsafe)]
fn export_key() -> String {
    or_raise(Call::management("export_key").and_then(|_| export()))
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.export_key() IS \
     'Superusers: the key that seals the stored passwords, as text to import elsewhere (a restore into another cluster)';",
    name = "export_key_surface",
    requires = [export_key]
);

#[pg_extern(volatile, parallel_unsafe)]
fn import_key(key: Option<&str>) {
    or_raise(
        Call::management("import_key")
            .and_then(|call| import(call.required("key", key)?).map(|_| ())),
    )
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.import_key(text) IS \
     'Superusers: installs an exported key; refuses a different key than the one that sealed this database''s passwords';",
    name = "import_key_surface",
    requires = [import_key]
);

#[pg_extern(volatile, parallel_unsafe)]
fn rotate_key() -> i64 {
    or_raise(Call::management("rotate_key").and_then(|_| rotate()))
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.rotate_key() IS \
     'Superusers: a new sealing key, every stored password sealed again under it';",
    name = "rotate_key_surface",
    requires = [rotate_key]
);

#[pg_extern(volatile, parallel_unsafe)]
fn reset_key() -> i64 {
    or_raise(Call::management("reset_key").and_then(|_| reset()))
}

extension_sql!(
    "COMMENT ON FUNCTION bi_access.reset_key() IS \
     'Superusers: a new key for a database whose key is lost; stored passwords become unreadable (regenerate them)';",
    name = "reset_key_surface",
    requires = [reset_key]
);

/// At CREATE EXTENSION: the database's key, made once, so that the first
/// generates never race to make it. (Not on an update from 0.1.0: that one
/// adopts 0.1.0's key file, or makes a key at the first generate if nothing
/// was ever sealed.)
fn init() -> Result<()> {
    if stored()?.is_none() && !sealed_with_any()? {
        store_first(&SealingKey::generate())?;
    }
    Ok(())
}

#[pg_schema]
mod bi_access_internal {
    use pgrx::prelude::*;

    use crate::entry::Call;

    #[pg_extern(volatile, parallel_unsafe)]
    fn init_key() {
        crate::error::or_raise(Call::management("init_key").and_then(|_| super::init()))
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.init_key() IS 'Creates or finds the key that seals stored passwords';",
        name = "init_key_comment",
        requires = [init_key]
    );

    /// Called once by the upgrade from 0.1.0.
    #[pg_extern(volatile, parallel_unsafe)]
    fn adopt_key_file() {
        crate::error::or_raise(
            Call::management("adopt_key_file").and_then(|_| super::adopt_legacy_file()),
        )
    }

    extension_sql!(
        "COMMENT ON FUNCTION bi_access_internal.adopt_key_file() IS 'Takes the key from its file into the database (upgrades from a version that kept it in a file)';",
        name = "adopt_key_file_comment",
        requires = [adopt_key_file]
    );
}

extension_sql!(
    "SELECT bi_access_internal.init_key();\nREVOKE ALL ON FUNCTION bi_access_internal.init_key() FROM PUBLIC;",
    name = "init_key",
    requires = ["api", bi_access_internal::init_key]
);
