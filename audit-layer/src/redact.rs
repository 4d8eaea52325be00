//! Which fields are secrets, decided once per field name.
//!
//! A secret must never reach the table, yet matching every field name against every pattern
//! on every event would cost more than the rest of the record. Field names are `&'static str`
//! from callsite metadata, so the answer is cached per thread by the name's address.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The value stored in place of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// The field-name patterns redacted by default.
pub const DEFAULT_SECRET_PATTERNS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "authorization",
];

/// Decides whether a field name names a secret.
///
/// A name matches a pattern when, ignoring ASCII case, `_` and `-`, the pattern occurs in it:
/// `db_password`, `X-Api-Key` and `accessToken` are all secrets under the default patterns.
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    id: usize,
    patterns: Arc<[String]>,
}

static NEXT_REDACTOR_ID: AtomicUsize = AtomicUsize::new(0);

/// (redactor id, name address, name length) → is a secret.
type VerdictCache = HashMap<(usize, usize, usize), bool, BuildHasherDefault<AddressHasher>>;

thread_local! {
    static CACHE: RefCell<VerdictCache> = RefCell::new(HashMap::default());
}

impl Redactor {
    pub(crate) fn new<I, P>(patterns: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        Redactor {
            id: NEXT_REDACTOR_ID.fetch_add(1, Ordering::Relaxed),
            patterns: patterns
                .into_iter()
                .map(|p| normalize(p.as_ref()))
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether the field named `name` holds a secret.
    pub(crate) fn is_secret(&self, name: &'static str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let key = (self.id, name.as_ptr() as usize, name.len());
        CACHE.with(|cache| {
            if let Some(&hit) = cache.borrow().get(&key) {
                return hit;
            }
            let verdict = self.matches(name);
            cache.borrow_mut().insert(key, verdict);
            verdict
        })
    }

    /// Whether `name`, a key not known at compile time (from a JSON `metadata` field), is a
    /// secret. Not cached: such keys are not `'static`.
    pub(crate) fn is_secret_dynamic(&self, name: &str) -> bool {
        !self.patterns.is_empty() && self.matches(name)
    }

    fn matches(&self, name: &str) -> bool {
        let name = normalize(name);
        self.patterns.iter().any(|p| name.contains(p.as_str()))
    }
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The key is already made of addresses and ids; mixing them is all the hashing needed.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_match_common_spellings() {
        let r = Redactor::new(DEFAULT_SECRET_PATTERNS);
        for name in [
            "password",
            "db_password",
            "Passwd",
            "client_secret",
            "accessToken",
            "X-Api-Key",
            "apikey",
            "authorization",
        ] {
            assert!(r.is_secret(leak(name)), "{name} should be a secret");
        }
        for name in ["username", "device", "site", "resource_id"] {
            assert!(!r.is_secret(leak(name)), "{name} is not a secret");
        }
    }

    #[test]
    fn cached_verdicts_do_not_leak_between_redactors() {
        let name: &'static str = "session_cookie";
        let strict = Redactor::new(["cookie"]);
        let lax = Redactor::new(DEFAULT_SECRET_PATTERNS);
        assert!(strict.is_secret(name));
        assert!(!lax.is_secret(name));
        assert!(strict.is_secret(name));
    }

    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_owned().into_boxed_str())
    }
}
