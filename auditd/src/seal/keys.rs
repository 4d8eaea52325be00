//! The log's Ed25519 keys, in the formats transparency-log tooling reads (Go's
//! `golang.org/x/mod/sumdb/note`, the C2SP signed-note key format):
//!
//! - a signer key, kept in a file of mode 600 that the database never sees:
//!   `PRIVATE+KEY+<name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte seed)>`;
//! - a verifier key, given to anyone who checks:
//!   `<name>+<key id>+<base64(0x01 || 32-byte public key)>`.
//!
//! The key id is the first 4 bytes of `SHA-256(name || "\n" || 0x01 || public key)`, so a
//! signature line names the key that made it, and a verifier given several keys (one per
//! rotation) picks the right one.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// The signature type byte of Ed25519 in signed notes.
const ED25519_TYPE: u8 = 0x01;

/// Why a key could not be made, read or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

fn error(message: impl Into<String>) -> KeyError {
    KeyError(message.into())
}

/// A 4-byte key id.
pub type KeyId = [u8; 4];

fn key_id(name: &str, public: &[u8]) -> KeyId {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519_TYPE]);
    hasher.update(public);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Whether `name` may name a key: non-empty, no white space, no `+` (the separator).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// `<name>+<hex id>+<base64(type || key)>`, the form both kinds of key share.
fn key_text(name: &str, id: KeyId, key: &[u8; 32]) -> String {
    let mut typed = vec![ED25519_TYPE];
    typed.extend_from_slice(key);
    format!(
        "{name}+{}+{}",
        crate::hex::encode(&id),
        BASE64.encode(typed)
    )
}

/// Splits `<name>+<hex id>+<base64(type || key)>` and checks each part.
fn parse_parts<'a>(text: &'a str, what: &str) -> Result<(&'a str, KeyId, [u8; 32]), KeyError> {
    // The name has no '+', base64 may: split at the first two.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(error(format!(
            "not a {what}: expected <name>+<key id>+<base64 key>"
        )));
    };
    if !valid_name(name) {
        return Err(error(format!(
            "{what}: the name {name:?} is not a valid key name"
        )));
    }
    let id = crate::hex::decode(id)
        .and_then(|bytes| KeyId::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| error(format!("{what}: the key id is not 8 hex digits")))?;
    let bytes = BASE64
        .decode(key)
        .map_err(|_| error(format!("{what}: the key is not base64")))?;
    match bytes.split_first() {
        Some((&ED25519_TYPE, key)) if key.len() == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(key);
            Ok((name, id, out))
        }
        Some((&ED25519_TYPE, _)) => Err(error(format!("{what}: the key is not 32 bytes"))),
        _ => Err(error(format!("{what}: not an Ed25519 key"))),
    }
}

/// The key that signs checkpoints.
pub struct SigningKey {
    name: String,
    id: KeyId,
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the seed.
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("id", &crate::hex::encode(&self.id))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key named `name`, from the operating system's random numbers.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        if !valid_name(name) {
            return Err(error(format!(
                "{name:?} is not a valid key name: no spaces, no '+', at most 256 bytes"
            )));
        }
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| error("the system's random number generator failed"))?;
        Self::from_seed(name, seed)
    }

    fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| error("not a valid Ed25519 seed"))?;
        let id = key_id(name, pair.public_key().as_ref());
        Ok(SigningKey {
            name: name.to_owned(),
            id,
            seed,
            pair,
        })
    }

    /// Reads a signer key (`PRIVATE+KEY+...`), checking that its id is its own.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| error("not a signing key: it does not start with PRIVATE+KEY+"))?;
        let (name, id, seed) = parse_parts(rest, "signing key")?;
        let key = Self::from_seed(name, seed)?;
        if key.id != id {
            return Err(error("signing key: its key id does not match the key"));
        }
        Ok(key)
    }

    /// Reads the signer key in `path`, refusing a file others may read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let metadata = std::fs::metadata(path)
                .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(error(format!(
                    "{} may be read by others (mode {:o}): chmod 600 it",
                    path.display(),
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| error(format!("{}: {e}", path.display())))
    }

    /// The key in signer-key form, for its file.
    pub fn to_text(&self) -> String {
        format!("PRIVATE+KEY+{}", key_text(&self.name, self.id, &self.seed))
    }

    /// Its name, which is also the log's origin line.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Its verifier key.
    pub fn verifier(&self) -> VerifierKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            public,
        }
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.pair.sign(message).as_ref());
        signature
    }
}

/// A key that checks checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: KeyId,
    public: [u8; 32],
}

impl VerifierKey {
    /// Reads a verifier key, checking that its id is its own.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, id, public) = parse_parts(text, "public key")?;
        if key_id(name, &public) != id {
            return Err(error("public key: its key id does not match the key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            public,
        })
    }

    /// Reads every verifier key in `path`, one per line (blank lines and `#` comments
    /// skipped): the keys of every rotation, so old checkpoints keep verifying.
    pub fn load_all(path: &Path) -> Result<Vec<Self>, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| Self::parse(line).map_err(|e| error(format!("{}: {e}", path.display()))))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(error(format!("{}: no public key in it", path.display())));
        }
        Ok(keys)
    }

    /// The key in verifier-key form.
    pub fn to_text(&self) -> String {
        key_text(&self.name, self.id, &self.public)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(message, signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_text_forms() {
        let key = SigningKey::generate("audit.example/log").unwrap();
        let again = SigningKey::parse(&key.to_text()).unwrap();
        assert_eq!(again.verifier(), key.verifier());
        let verifier = VerifierKey::parse(&key.verifier().to_text()).unwrap();
        let signature = key.sign(b"hello");
        assert!(verifier.verify(b"hello", &signature));
        assert!(!verifier.verify(b"hellO", &signature));
        assert!(!format!("{key:?}").contains(&key.to_text()[40..]));
    }

    #[test]
    fn the_go_note_example_key_reads_with_its_id() {
        // The verifier key of golang.org/x/mod/sumdb/note's documentation.
        let key = VerifierKey::parse(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .unwrap();
        assert_eq!(key.name(), "PeterNeumann");
        assert_eq!(crate::hex::encode(&key.id()), "c74f20a3");
    }

    #[test]
    fn a_key_whose_id_or_name_is_wrong_is_refused() {
        let key = SigningKey::generate("log").unwrap().verifier().to_text();
        let public = key.splitn(3, '+').nth(2).unwrap();
        assert!(VerifierKey::parse(&format!("log+00000000+{public}")).is_err());
        assert!(VerifierKey::parse(&key.replacen("log", "lag", 1)).is_err());
        assert!(SigningKey::generate("two words").is_err());
        assert!(SigningKey::generate("a+b").is_err());
        assert!(SigningKey::parse(&key).is_err());
    }
}
