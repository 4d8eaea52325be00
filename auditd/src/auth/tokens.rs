//! Bearer tokens: who may read the audit logs or write to them, and under which name their
//! requests are audited.
//!
//! Tokens come from a file (one per line) or the environment (comma-separated), each
//! `name:secret`, `name:secret:scopes` or a bare `secret` (named `token-N`). Scopes are
//! `read` (the default, what a token always meant), `write` (sends records to
//! `POST /api/v1/events`, and nothing else), or `read,write`. A service that writes its
//! audit records should not be able to read everyone else's, so a writer cannot read.
//! Tokens are compared in constant time, against every configured token, so response
//! timing reveals neither a prefix nor which token came close.

use std::path::Path;

use anyhow::{bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::hex;
use crate::replaceable::Replaceable;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    /// Read the audit log: every route but ingest.
    pub read: bool,
    /// Write records to it: `POST /api/v1/events`.
    pub write: bool,
}

impl Scopes {
    /// Read only: a token without scopes, and a signed download link.
    pub const READ: Scopes = Scopes {
        read: true,
        write: false,
    };
    /// Read and write: the anonymous caller when no tokens are configured (loopback only).
    pub const ALL: Scopes = Scopes {
        read: true,
        write: true,
    };

    /// Parses `read`, `write` or `read,write` (in any order); `None` when a word is not a
    /// scope.
    fn parse(list: &str) -> Option<Scopes> {
        let mut scopes = Scopes {
            read: false,
            write: false,
        };
        for word in list.split(',').map(str::trim) {
            match word {
                "read" => scopes.read = true,
                "write" => scopes.write = true,
                _ => return None,
            }
        }
        Some(scopes)
    }

    /// Whether these include `needed`.
    pub fn allow(self, needed: Scope) -> bool {
        match needed {
            Scope::Read => self.read,
            Scope::Write => self.write,
        }
    }
}

/// What a route needs of its caller's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reads the audit log.
    Read,
    /// Writes to it.
    Write,
}

impl Scope {
    /// Its name in token files and access records.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// A configured token.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    secret: Vec<u8>,
    scopes: Scopes,
}

/// The configured bearer tokens: each a name (what access records show), a secret and
/// its scopes.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

/// The longest token name: it goes into every record and key it sends (with a 255-byte
/// Idempotency-Key, a scoped key stays within `audit_layer::IdempotencyKey::MAX_BYTES`).
const MAX_NAME_BYTES: usize = 128;

/// The shortest secret accepted: shorter ones are guessable.
const MIN_SECRET_BYTES: usize = 16;

impl Tokens {
    /// No tokens: every request is anonymous (only allowed on loopback).
    pub fn none() -> Self {
        Tokens::default()
    }

    /// Parses `name:secret`, `name:secret:scopes` or `secret` entries; blank lines and `#`
    /// comments are skipped. A bare secret is named `token-N`, N counting from 1, and may
    /// read.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        Tokens::parse_named(entries, "token")
    }

    /// As [`parse`](Self::parse), naming bare secrets `<source>-N`, so that tokens from
    /// different places never share a name.
    pub fn parse_named<'a>(
        entries: impl IntoIterator<Item = &'a str>,
        source: &str,
    ) -> Result<Self> {
        let mut tokens = Tokens::default();
        for entry in entries.into_iter().map(str::trim) {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let (name, rest) = match entry.split_once(':') {
                Some((name, rest)) => (name.trim().to_owned(), rest.trim()),
                None => (format!("{source}-{}", tokens.entries.len() + 1), entry),
            };
            let (secret, scopes) =
                split_scopes(rest).with_context(|| format!("in the token named {name:?}"))?;
            if secret.len() < MIN_SECRET_BYTES {
                bail!("the token named {name:?} is shorter than {MIN_SECRET_BYTES} characters");
            }
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                bail!("a token's name must be 1 to {MAX_NAME_BYTES} bytes: {name:?}");
            }
            tokens.add(Entry {
                name,
                secret: secret.as_bytes().to_vec(),
                scopes,
            })?;
        }
        Ok(tokens)
    }

    /// A name is who the access records name and whose secret signs download links, so
    /// two tokens may not share one.
    fn add(&mut self, entry: Entry) -> Result<()> {
        if self.entries.iter().any(|e| e.name == entry.name) {
            bail!(
                "two tokens are named {:?}: give each its own name",
                entry.name
            );
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Reads a token file, one entry per line; bare secrets are named `file-token-N`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        Tokens::parse_named(text.lines(), "file-token")
            .with_context(|| format!("in the token file {}", path.display()))
    }

    /// Parses comma-separated entries (`AUDITD_TOKENS`); bare secrets are named `env-token-N`.
    pub fn from_list(list: &str) -> Result<Self> {
        Tokens::parse_named(list.split(','), "env-token").context("in AUDITD_TOKENS")
    }

    /// These tokens and `other`'s; an error when a name is in both.
    pub fn merge(mut self, other: Tokens) -> Result<Self> {
        for entry in other.entries {
            self.add(entry)?;
        }
        Ok(self)
    }

    /// Whether there are none, which leaves protected routes open (allowed on loopback only).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `message` signed with the secret of the token named `name` (HMAC-SHA-256, as hex),
    /// so that a link can carry that token's authority without carrying the token.
    pub fn sign(&self, name: &str, message: &[u8]) -> Option<String> {
        let mac = self.mac(name, message)?;
        Some(hex::encode(&mac.finalize().into_bytes()))
    }

    /// Whether `signature` is [`sign`](Self::sign)'s for `name` and `message`, compared
    /// in constant time.
    pub fn verify(&self, name: &str, message: &[u8], signature: &str) -> bool {
        let Some(tag) = hex::decode(signature) else {
            return false;
        };
        self.mac(name, message)
            .is_some_and(|mac| mac.verify_slice(&tag).is_ok())
    }

    /// The scopes of the token named `name`.
    pub fn scopes(&self, name: &str) -> Option<Scopes> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.scopes)
    }

    fn mac(&self, name: &str, message: &[u8]) -> Option<Hmac<Sha256>> {
        let entry = self.entries.iter().find(|e| e.name == name)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&entry.secret).ok()?;
        mac.update(message);
        Some(mac)
    }

    /// The name and scopes of the token in an `Authorization` header value, if it is
    /// valid.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<(&str, Scopes)> {
        let presented = authorization.and_then(|h| {
            let prefix = b"Bearer ";
            (h.len() > prefix.len() && h[..prefix.len()].eq_ignore_ascii_case(prefix))
                .then(|| &h[prefix.len()..])
        })?;
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(presented, &entry.secret) && found.is_none() {
                found = Some((entry.name.as_str(), entry.scopes));
            }
        }
        found
    }
}

/// A token's secret and scopes from what follows its name: a last `:`-separated part that
/// is exactly a scope list (`read`, `write`, `read,write`) is one; anything else is all
/// secret, so that a token file written before scopes existed reads as it did.
fn split_scopes(rest: &str) -> Result<(&str, Scopes)> {
    match rest.rsplit_once(':') {
        Some((secret, list)) => match Scopes::parse(list) {
            Some(scopes) => Ok((secret.trim(), scopes)),
            // Not a scope list: part of the secret, as before scopes existed.
            None => Ok((rest, Scopes::READ)),
        },
        None => Ok((rest, Scopes::READ)),
    }
}

/// The tokens in force, replaced while serving when auditd reloads them (SIGHUP).
pub type TokenStore = Replaceable<Tokens>;

/// Compares without an early exit; only the length (not a secret's content) shows in timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_named_and_checked() {
        let tokens = Tokens::parse([
            "# ops team",
            "ops:0123456789abcdef0123",
            "",
            "fedcba9876543210fedc",
        ])
        .unwrap();
        assert_eq!(
            tokens.check(Some(b"Bearer 0123456789abcdef0123")),
            Some(("ops", Scopes::READ))
        );
        assert_eq!(
            tokens.check(Some(b"bearer fedcba9876543210fedc")),
            Some(("token-2", Scopes::READ))
        );
        assert_eq!(tokens.check(Some(b"Bearer 0123456789abcdef012")), None);
        assert_eq!(tokens.check(Some(b"Bearer 0123456789abcdef01234")), None);
        assert_eq!(tokens.check(Some(b"Basic 0123456789abcdef0123")), None);
        assert_eq!(tokens.check(None), None);
    }

    #[test]
    fn signatures_hold_for_their_token_and_message_only() {
        let tokens =
            Tokens::parse(["ops:0123456789abcdef0123", "dev:fedcba9876543210fedc"]).unwrap();
        let signature = tokens.sign("ops", b"/export?q=x").unwrap();
        assert_eq!(signature.len(), 64);
        assert!(tokens.verify("ops", b"/export?q=x", &signature));
        assert!(!tokens.verify("ops", b"/export?q=y", &signature));
        assert!(!tokens.verify("dev", b"/export?q=x", &signature));
        assert!(!tokens.verify("ops", b"/export?q=x", &signature[..62]));
        assert!(!tokens.verify("ops", b"/export?q=x", "not hex"));
        assert_eq!(tokens.sign("nobody", b"/export?q=x"), None);
    }

    #[test]
    fn two_tokens_may_not_share_a_name() {
        let err =
            Tokens::parse(["ops:0123456789abcdef0123", "ops:fedcba9876543210fedc"]).unwrap_err();
        assert!(err.to_string().contains("\"ops\""), "{err}");
        let file = Tokens::parse(["ops:0123456789abcdef0123"]).unwrap();
        let env = Tokens::parse(["ops:fedcba9876543210fedc"]).unwrap();
        assert!(file.merge(env).is_err());
    }

    #[test]
    fn scopes_follow_the_secret_and_a_token_without_them_reads() {
        let tokens = Tokens::parse([
            "reader:0123456789abcdef0123",
            "billing:1123456789abcdef0123:write",
            "both:2123456789abcdef0123:read,write",
            "colon:31234567:89abcdef0123",
        ])
        .unwrap();
        let scopes = |secret: &str| {
            tokens
                .check(Some(format!("Bearer {secret}").as_bytes()))
                .map(|(_, s)| s)
        };
        assert_eq!(scopes("0123456789abcdef0123"), Some(Scopes::READ));
        assert_eq!(
            scopes("1123456789abcdef0123"),
            Some(Scopes {
                read: false,
                write: true
            })
        );
        assert_eq!(scopes("2123456789abcdef0123"), Some(Scopes::ALL));
        // A colon inside a secret stays part of it.
        assert_eq!(scopes("31234567:89abcdef0123"), Some(Scopes::READ));
        // The scope list is not part of the secret.
        assert_eq!(scopes("1123456789abcdef0123:write"), None);
        // What is not exactly a scope list stays part of the secret (a typo included:
        // the token then fails to authenticate, rather than gaining a scope).
        let typo = Tokens::parse(["billing:1123456789abcdef0123:wrte"]).unwrap();
        assert_eq!(
            typo.check(Some(b"Bearer 1123456789abcdef0123:wrte")),
            Some(("billing", Scopes::READ))
        );
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(Tokens::parse(["ops:short"]).is_err());
    }
}
