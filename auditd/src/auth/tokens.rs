//! Bearer tokens: who may read the audit logs, and under which name their reads are audited.
//!
//! Tokens come from a file (one per line) or the environment (comma-separated), each either
//! `name:secret` or a bare `secret` (named `token-N`). They are compared in constant time,
//! against every configured token, so response timing reveals neither a prefix nor which
//! token came close.

use std::path::Path;

use anyhow::{bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::hex;
use crate::replaceable::Replaceable;

/// The configured bearer tokens: each a name (what access records show) and a secret.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
}

/// The shortest secret accepted: shorter ones are guessable.
const MIN_SECRET_BYTES: usize = 16;

impl Tokens {
    /// No tokens: every request is anonymous (only allowed on loopback).
    pub fn none() -> Self {
        Tokens::default()
    }

    /// Parses `name:secret` or `secret` entries; blank lines and `#` comments are skipped.
    /// A bare secret is named `token-N`, N counting from 1.
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
            let (name, secret) = match entry.split_once(':') {
                Some((name, secret)) => (name.trim().to_owned(), secret.trim()),
                None => (format!("{source}-{}", tokens.entries.len() + 1), entry),
            };
            if secret.len() < MIN_SECRET_BYTES {
                bail!("the token named {name:?} is shorter than {MIN_SECRET_BYTES} characters");
            }
            tokens.add(name, secret.as_bytes().to_vec())?;
        }
        Ok(tokens)
    }

    /// A name is who the access records name and whose secret signs download links, so
    /// two tokens may not share one.
    fn add(&mut self, name: String, secret: Vec<u8>) -> Result<()> {
        if self.entries.iter().any(|(n, _)| *n == name) {
            bail!("two tokens are named {name:?}: give each its own name");
        }
        self.entries.push((name, secret));
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
        for (name, secret) in other.entries {
            self.add(name, secret)?;
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

    fn mac(&self, name: &str, message: &[u8]) -> Option<Hmac<Sha256>> {
        let (_, secret) = self.entries.iter().find(|(n, _)| n == name)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        mac.update(message);
        Some(mac)
    }

    /// The name of the token in an `Authorization` header value, if it is valid.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<&str> {
        let presented = authorization.and_then(|h| {
            let prefix = b"Bearer ";
            (h.len() > prefix.len() && h[..prefix.len()].eq_ignore_ascii_case(prefix))
                .then(|| &h[prefix.len()..])
        })?;
        let mut found = None;
        for (name, secret) in &self.entries {
            if constant_time_eq(presented, secret) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
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
            Some("ops")
        );
        assert_eq!(
            tokens.check(Some(b"bearer fedcba9876543210fedc")),
            Some("token-2")
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
    fn short_tokens_are_refused() {
        assert!(Tokens::parse(["ops:short"]).is_err());
    }
}
