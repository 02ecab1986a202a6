//! Passwords and the sealed copy kept for "View Details".
//!
//! - Passwords come from the operating system's CSPRNG.
//! - Roles get a SCRAM-SHA-256 verifier computed here (postgres-protocol, the
//!   same code tokio-postgres trusts), so no plaintext reaches SQL text.
//! - The copy kept in `bi_access.credential.secret` is sealed with
//!   XChaCha20-Poly1305 (chacha20poly1305: audited, constant-time, random
//!   192-bit nonces are safe) under a 32-byte key in `bi_access.key`, a 0600
//!   file of the data directory, created on first use. The role name is the
//!   associated data, so a sealed secret cannot be moved to another record.

use std::ffi::CStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use pgrx::pg_sys;
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};

/// 32 characters of [A-Za-z0-9]: about 190 bits, and nothing a URL, a JDBC
/// property or a BI tool's form needs to escape.
const PASSWORD_LEN: usize = 32;
const KEY_FILE: &str = "bi_access.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not use the bi_access key file {path}: {source}")]
    KeyFile { path: String, source: io::Error },

    #[error("the bi_access key file {0} is damaged (it must hold 32 bytes)")]
    DamagedKey(String),

    #[error("the stored password of this credential cannot be opened with this server's key")]
    CannotOpen,
}

pub fn new_password() -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

pub fn seal(role: &str, password: &str) -> Result<Vec<u8>, SecretError> {
    let cipher = XChaCha20Poly1305::new(key()?);
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let payload = Payload {
        msg: password.as_bytes(),
        aad: role.as_bytes(),
    };
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), payload)
        .map_err(|_| SecretError::CannotOpen)?;
    Ok([nonce.as_slice(), &sealed].concat())
}

pub fn open(role: &str, sealed: &[u8]) -> Result<String, SecretError> {
    if sealed.len() <= NONCE_LEN {
        return Err(SecretError::CannotOpen);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key()?);
    let payload = Payload {
        msg: ciphertext,
        aad: role.as_bytes(),
    };
    let plain = cipher
        .decrypt(XNonce::from_slice(nonce), payload)
        .map_err(|_| SecretError::CannotOpen)?;
    String::from_utf8(plain).map_err(|_| SecretError::CannotOpen)
}

/// The key, read once per backend.
fn key() -> Result<&'static Key, SecretError> {
    static KEY: OnceLock<Key> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let loaded = load_or_create_key(&key_path())?;
    Ok(KEY.get_or_init(|| loaded))
}

fn key_path() -> PathBuf {
    // SAFETY: DataDir is set once at postmaster start and never freed.
    let data_dir = unsafe { CStr::from_ptr(pg_sys::DataDir) };
    PathBuf::from(data_dir.to_string_lossy().into_owned()).join(KEY_FILE)
}

fn load_or_create_key(path: &PathBuf) -> Result<Key, SecretError> {
    let describe = |source| SecretError::KeyFile {
        path: path.display().to_string(),
        source,
    };
    match read_key(path) {
        Ok(key) => return Ok(key),
        Err(SecretError::KeyFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(other) => return Err(other),
    }
    // Write a complete key under a temporary name, then link it into place:
    // the link fails if another backend won the race, and nobody ever reads
    // a half-written key.
    let tmp = path.with_extension(format!("key.{}", std::process::id()));
    let mut key = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut key);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(&key)?;
            file.sync_all()
        });
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(describe(source));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(*Key::from_slice(&key)),
        Err(source) if source.kind() == io::ErrorKind::AlreadyExists => read_key(path),
        Err(source) => Err(describe(source)),
    }
}

fn read_key(path: &PathBuf) -> Result<Key, SecretError> {
    let mut bytes = Vec::with_capacity(KEY_LEN);
    OpenOptions::new()
        .read(true)
        .open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|source| SecretError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
    if bytes.len() != KEY_LEN {
        return Err(SecretError::DamagedKey(path.display().to_string()));
    }
    Ok(*Key::from_slice(&bytes))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_url_safe() {
        let a = new_password();
        let b = new_password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn scram_verifier_hides_the_password() {
        let password = new_password();
        let verifier = scram_verifier(&password);
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!verifier.contains(&password));
    }
}
