//! Signed download links: a link to an export that stands in for the token that asked
//! for it, so that a browser saves the export straight to disk.
//!
//! A browser follows a link without an `Authorization` header, so the viewer used to fetch
//! an export itself and hand the browser the whole file from memory: hundreds of MiB for a
//! million rows. A link is instead the export's URL with three more parameters: the name
//! of the token that asked for it (`link_by`), when it stops working (`link_expires`,
//! seconds since the epoch, [`LIFETIME`] later), and an HMAC-SHA-256 of everything before
//! it keyed with that token's secret (`link_signature`, last). So a link grants exactly
//! that export, for a short while, under the name of the token that asked (the access
//! record names it), and it needs no state: any auditd configured with the same token
//! accepts it, and none accepts it once the token is removed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;

use super::tokens::Tokens;
use crate::http::ApiError;
use crate::query_string;

/// The route links lead to.
pub const EXPORT_PATH: &str = "/api/v1/logs/export";

/// How long a link works: long enough to follow at once, short enough that one copied
/// from a browser's history or a proxy's log is of no use.
pub const LIFETIME: Duration = Duration::from_secs(60);

const BY: &str = "link_by";
const EXPIRES: &str = "link_expires";
const SIGNATURE: &str = "link_signature";

/// The parameters a link adds to an export's own.
pub const PARAMETERS: [&str; 3] = [BY, EXPIRES, SIGNATURE];

/// A link made for an export: its URL, and when it stops working (`None` when no tokens
/// are configured, and the export needs none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The export's path and query, with the link's parameters last.
    pub url: String,
    /// Seconds since the epoch after which the link is refused.
    pub expires: Option<u64>,
}

/// The link to the export `query` asks for, signed with the secret of the token named
/// `signer`. The caller checks the export's parameters first.
pub fn sign(tokens: &Tokens, signer: &str, query: &str) -> Result<Link, ApiError> {
    // Re-encoded with every byte but the unreserved ones escaped: a browser following the
    // link sends it byte for byte (it would escape a raw `'` or UTF-8 itself, and so
    // break the signature), and the export reads the same values.
    let query = canonical(query)?;
    let query = query.as_str();
    if tokens.is_empty() {
        // Nothing to prove: the export needs no token.
        return Ok(Link {
            url: join(EXPORT_PATH, query),
            expires: None,
        });
    }
    let expires = now_secs() + LIFETIME.as_secs();
    let unsigned = join(
        EXPORT_PATH,
        &join_params(
            query,
            &format!("{BY}={}&{EXPIRES}={expires}", query_string::encode(signer)),
        ),
    );
    let signature = tokens.sign(signer, unsigned.as_bytes()).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "no_token",
            "links are signed with the caller's token; this caller has none",
        )
    })?;
    Ok(Link {
        url: format!("{unsigned}&{SIGNATURE}={signature}"),
        expires: Some(expires),
    })
}

/// Whether a query carries any of a link's parameters: then it is a link, to be let in by
/// its signature or not at all (never by a bearer token that happens to come with it).
pub fn is_link(query: Option<&str>) -> bool {
    query
        .and_then(|q| query_string::parse(q).ok())
        .is_some_and(|pairs| {
            pairs
                .iter()
                .any(|(name, _)| PARAMETERS.contains(&name.as_str()))
        })
}

/// The name of the token that signed the link in `path_and_query`, if it is a link to
/// an export, signed by a configured token, and not expired.
pub fn signer(tokens: &Tokens, path_and_query: &str) -> Option<String> {
    let marker = format!("&{SIGNATURE}=");
    let at = path_and_query.rfind(&marker)?;
    let (unsigned, signature) = (&path_and_query[..at], &path_and_query[at + marker.len()..]);
    let query = unsigned.strip_prefix(EXPORT_PATH)?.strip_prefix('?')?;
    let pairs = query_string::parse(query).ok()?;
    let value = |name: &str| {
        let mut values = pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        // Exactly once: a second value could mean something else to the export.
        match (values.next(), values.next()) {
            (Some(v), None) => Some(v.as_str()),
            _ => None,
        }
    };
    let expires: u64 = value(EXPIRES)?.parse().ok()?;
    if expires < now_secs() {
        return None;
    }
    let name = value(BY)?;
    // A link stands in for a reading token: one signed with a write-only token's secret
    // (which its holder could compute offline) grants nothing.
    if !tokens.scopes(name)?.read {
        return None;
    }
    tokens
        .verify(name, unsigned.as_bytes(), signature)
        .then(|| name.to_owned())
}

fn canonical(query: &str) -> Result<String, ApiError> {
    let pairs =
        query_string::parse(query).map_err(|e| ApiError::bad_parameter(&e.parameter, e.message))?;
    Ok(pairs
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                query_string::encode(name),
                query_string::encode(value)
            )
        })
        .collect::<Vec<_>>()
        .join("&"))
}

fn join(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

fn join_params(query: &str, more: &str) -> String {
    if query.is_empty() {
        more.to_owned()
    } else {
        format!("{query}&{more}")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse(["ops:0123456789abcdef0123"]).unwrap()
    }

    fn link(tokens: &Tokens, query: &str, expires: u64) -> String {
        let unsigned = format!("{EXPORT_PATH}?{query}&{BY}=ops&{EXPIRES}={expires}");
        let signature = tokens.sign("ops", unsigned.as_bytes()).unwrap();
        format!("{unsigned}&{SIGNATURE}={signature}")
    }

    #[test]
    fn a_link_is_good_for_its_export_until_it_expires() {
        let tokens = tokens();
        let soon = now_secs() + 30;
        let good = link(&tokens, "q=backup&format=csv", soon);
        assert_eq!(signer(&tokens, &good).as_deref(), Some("ops"));

        let other_query = good.replace("q=backup", "q=login");
        assert_eq!(signer(&tokens, &other_query), None);
        let added = good.replace("format=csv", "format=csv&username=root");
        assert_eq!(signer(&tokens, &added), None);
        let elsewhere = good.replace(EXPORT_PATH, "/api/v1/logs");
        assert_eq!(signer(&tokens, &elsewhere), None);
        let expired = link(&tokens, "q=backup", now_secs() - 1);
        assert_eq!(signer(&tokens, &expired), None);
        let other_tokens = Tokens::parse(["ops:fedcba9876543210fedc"]).unwrap();
        assert_eq!(signer(&other_tokens, &good), None);
        // A write-only token's holder can compute a link's signature; it reads nothing.
        let writer = Tokens::parse(["ops:0123456789abcdef0123:write"]).unwrap();
        assert_eq!(signer(&writer, &link(&writer, "q=backup", soon)), None);
        assert_eq!(signer(&tokens, "/api/v1/logs/export?q=backup"), None);
    }
}
