//! Which fields are secrets.
//!
//! A secret must never reach the table. Matching a name against every pattern is not free,
//! so the layer asks once per callsite field (see `plan`), not once per event; keys of a
//! JSON `metadata` value are asked each time, as they are not known in advance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};

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

    /// Tells this redactor's decisions from another's in caches.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// Whether a field or key named `name` holds a secret.
    pub(crate) fn is_secret(&self, name: &str) -> bool {
        !self.patterns.is_empty() && self.matches(name)
    }

    /// Replaces the values of secret keys at any depth of a JSON object (a
    /// `metadata = %json` value, whose keys are not known per callsite).
    pub(crate) fn redact_json(&self, map: &mut Map<String, Value>) {
        for (key, value) in map.iter_mut() {
            if self.is_secret(key) {
                *value = Value::String(REDACTED.to_owned());
            } else {
                self.redact_value(value);
            }
        }
    }

    /// Replaces the values of secret keys in every object inside `value`.
    pub(crate) fn redact_value(&self, value: &mut Value) {
        match value {
            Value::Object(map) => self.redact_json(map),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            _ => {}
        }
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
            assert!(r.is_secret(name), "{name} should be a secret");
        }
        for name in ["username", "device", "site", "resource_id"] {
            assert!(!r.is_secret(name), "{name} is not a secret");
        }
    }

    #[test]
    fn redactors_keep_their_own_patterns() {
        let strict = Redactor::new(["cookie"]);
        let lax = Redactor::new(DEFAULT_SECRET_PATTERNS);
        assert!(strict.is_secret("session_cookie"));
        assert!(!lax.is_secret("session_cookie"));
        assert_ne!(strict.id(), lax.id());
    }
}
