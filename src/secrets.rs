//! Passwords and the sealed copy kept for "View Details".
//!
//! - Passwords come from the operating system's CSPRNG.
//! - Roles get a SCRAM-SHA-256 verifier computed here (postgres-protocol, the
//!   same code tokio-postgres trusts), so no plaintext reaches SQL text.
//! - The copy kept in `bi_access.credential.secret` is sealed with
//!   XChaCha20-Poly1305 (chacha20poly1305: audited, constant-time, random
//!   192-bit nonces are safe) under the key of `crate::key`. The role name is
//!   the associated data, so a sealed secret cannot be moved to another record.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use pgrx::PgSqlErrorCode;
use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};

/// 32 characters of [A-Za-z0-9]: about 190 bits, and nothing a URL, a JDBC
/// property or a BI tool's form needs to escape.
const PASSWORD_LEN: usize = 32;
const NONCE_LEN: usize = 24;

const KEY_FIX: &str = "Import the key that sealed them with bi_access.import_key(…) (bi_access.export_key() \
    on the cluster that has it; on an upgrade from 0.1.0, the 0.1.0 key file's contents), or, if it is lost \
    for good, run bi_access.reset_key() and regenerate each credential.";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the stored password of this credential cannot be opened with this server's key")]
    CannotOpen,

    #[error("bi_access's key is missing, and passwords sealed with it are kept")]
    KeyMissing,

    #[error("this password was sealed with the key {sealed_with}, not with this database's key {current}")]
    KeyDifferent {
        sealed_with: String,
        current: String,
    },

    #[error("passwords are sealed with the current key {0}; another key cannot replace it")]
    KeyInUse(String),

    #[error("only a superuser may call bi_access.{0}()")]
    SuperuserOnly(String),

    #[error("{0}")]
    BadKey(String),
}

impl SecretError {
    pub fn code(&self) -> PgSqlErrorCode {
        match self {
            SecretError::SuperuserOnly(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            SecretError::BadKey(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            _ => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            SecretError::CannotOpen => Some("bi_access.regenerate() issues a new password.".into()),
            SecretError::KeyMissing | SecretError::KeyDifferent { .. } => Some(KEY_FIX.into()),
            SecretError::KeyInUse(_) => Some(
                "bi_access.rotate_key() replaces the key and re-seals every password with it."
                    .into(),
            ),
            _ => None,
        }
    }
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

pub fn seal_with(key: &Key, role: &str, password: &str) -> Result<Vec<u8>, SecretError> {
    let cipher = XChaCha20Poly1305::new(key);
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

pub fn open_with(key: &Key, role: &str, sealed: &[u8]) -> Result<String, SecretError> {
    if sealed.len() <= NONCE_LEN {
        return Err(SecretError::CannotOpen);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key);
    let payload = Payload {
        msg: ciphertext,
        aad: role.as_bytes(),
    };
    let plain = cipher
        .decrypt(XNonce::from_slice(nonce), payload)
        .map_err(|_| SecretError::CannotOpen)?;
    String::from_utf8(plain).map_err(|_| SecretError::CannotOpen)
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
    fn a_sealed_password_opens_only_with_its_key_and_role() {
        let key = Key::from_slice(&[7u8; 32]).to_owned();
        let other = Key::from_slice(&[8u8; 32]).to_owned();
        let sealed = seal_with(&key, "bi_a", "secret").unwrap();
        assert_eq!(open_with(&key, "bi_a", &sealed).unwrap(), "secret");
        assert!(open_with(&other, "bi_a", &sealed).is_err());
        assert!(open_with(&key, "bi_b", &sealed).is_err());
    }

    #[test]
    fn scram_verifier_hides_the_password() {
        let password = new_password();
        let verifier = scram_verifier(&password);
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!verifier.contains(&password));
    }
}
