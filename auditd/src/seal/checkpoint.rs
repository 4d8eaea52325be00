//! Checkpoints: the signed statement "the log named `origin` has `size` leaves and this
//! root, as of this time", as a C2SP `tlog-checkpoint` in a C2SP signed note, so that
//! transparency-log tooling (witnesses, Go's `sumdb/note`) reads ours:
//!
//! ```text
//! audit.example.com/log
//! 1042
//! 9L2Ngnhe3p4v+6ixTsBrOFX1PlPA/oFiJjEaE3GxDTs=
//! time 2026-12-01T11:38:00.123456Z
//!
//! — audit.example.com/log Az3grlgq0Bu0d3HjTbmIYs5BjpQ/Fw1N8UFI4UB4CUAnAHZ2DyoqzlYsWrpBfCSxYVwkGLyOo3iI25LDdFoT/C1FGg0=
//! ```
//!
//! The body is the origin, the tree size, the base64 root and one extension line, the
//! signing time; each signature line is `— <key name> base64(key id || signature)` over
//! the body. Parsing follows the specification strictly (and Go's reference where it is
//! silent), since a checkpoint may come from anyone.

use std::fmt;

use audit_layer::integrity::merkle::Hash;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};

use super::keys::{SigningKey, VerifierKey};

/// The start of a signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Longest note accepted, and most signature lines (Go's limit).
const MAX_NOTE_BYTES: usize = 1 << 20;
const MAX_SIGNATURES: usize = 100;

/// A checkpoint's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// How many leaves the tree has.
    pub size: u64,
    /// The tree's head.
    pub root: Hash,
    /// When it was signed, from the `time` extension line.
    pub time: Option<DateTime<Utc>>,
    /// The snapshot horizon of the seal that signed it, from the `horizon` extension line:
    /// every batch committed by a transaction below it is in the tree. Signed, so that
    /// neither a sealer nor a verifier takes it from a row anyone could edit.
    pub horizon: Option<i64>,
}

/// Why a note is not a checkpoint signed by a known key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteError {
    /// It is not a well-formed signed note or checkpoint.
    Malformed(&'static str),
    /// None of its signatures is by a key given.
    UnknownKey,
    /// A signature by a key given does not verify.
    BadSignature,
}

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoteError::Malformed(why) => write!(f, "not a checkpoint: {why}"),
            NoteError::UnknownKey => f.write_str("signed by none of the public keys given"),
            NoteError::BadSignature => f.write_str("its signature does not verify"),
        }
    }
}

impl std::error::Error for NoteError {}

impl Checkpoint {
    /// The body the signature covers.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        if let Some(time) = self.time {
            body.push_str("time ");
            body.push_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true));
            body.push('\n');
        }
        if let Some(horizon) = self.horizon {
            body.push_str(&format!("horizon {horizon}\n"));
        }
        body
    }

    /// The signed note of this checkpoint.
    pub fn sign(&self, key: &SigningKey) -> String {
        sign_note(&self.body(), key)
    }

    /// Reads a checkpoint's body without checking any signature (to compare a stored
    /// checkpoint's claims with the tree before deciding whether it can be trusted).
    pub fn parse_unverified(note: &str) -> Result<Self, NoteError> {
        let (body, _) = split(note)?;
        Self::parse_body(body)
    }

    /// Reads a signed checkpoint, accepting it only when a signature by one of `keys`
    /// verifies, and says which key that was. A signature by a given key that fails
    /// refuses the note, whatever other signatures say.
    pub fn open<'k>(
        note: &str,
        keys: &'k [VerifierKey],
    ) -> Result<(Self, &'k VerifierKey), NoteError> {
        let (body, key) = open_note(note, keys)?;
        let checkpoint = Self::parse_body(body)?;
        // A log's checkpoints are signed under its own name: a key shared by two logs
        // must not make one's checkpoints pass for the other's.
        if checkpoint.origin != key.name() {
            return Err(NoteError::Malformed(
                "its origin is not the name of the key that signed it",
            ));
        }
        Ok((checkpoint, key))
    }

    fn parse_body(body: &str) -> Result<Self, NoteError> {
        let mut lines = body.strip_suffix('\n').unwrap_or(body).split('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let origin = origin.ok_or(NoteError::Malformed("no origin line"))?;
        let size = lines
            .next()
            .filter(|s| {
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (*s == "0" || !s.starts_with('0'))
            })
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(NoteError::Malformed(
                "the tree size is not a decimal number",
            ))?;
        let root = lines
            .next()
            .and_then(|r| BASE64.decode(r).ok())
            .and_then(|r| Hash::try_from(r.as_slice()).ok())
            .ok_or(NoteError::Malformed(
                "the root is not a base64 SHA-256 hash",
            ))?;
        let (mut time, mut horizon) = (None, None);
        for extension in lines {
            if extension.is_empty() {
                return Err(NoteError::Malformed("an empty extension line"));
            }
            if let Some(text) = extension.strip_prefix("time ") {
                if time.is_some() {
                    return Err(NoteError::Malformed("two time lines"));
                }
                let parsed = DateTime::parse_from_rfc3339(text)
                    .map_err(|_| NoteError::Malformed("the time line is not RFC 3339"))?;
                time = Some(parsed.with_timezone(&Utc));
            } else if let Some(text) = extension.strip_prefix("horizon ") {
                if horizon.is_some() {
                    return Err(NoteError::Malformed("two horizon lines"));
                }
                horizon = Some(
                    text.parse::<i64>()
                        .map_err(|_| NoteError::Malformed("the horizon line is not a number"))?,
                );
            }
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            time,
            horizon,
        })
    }
}

/// A C2SP signed note of `body` (lines, each ending in a newline), signed by `key`: how
/// checkpoints are signed, and any other statement of the log (an archive's manifest),
/// each told apart by its first line.
pub fn sign_note(body: &str, key: &SigningKey) -> String {
    let mut signed = Vec::with_capacity(68);
    signed.extend_from_slice(&key.id());
    signed.extend_from_slice(&key.sign(body.as_bytes()));
    format!(
        "{body}\n{SIGNATURE_PREFIX}{} {}\n",
        key.name(),
        BASE64.encode(signed)
    )
}

/// The body of a signed note, accepted only when a signature by one of `keys` verifies,
/// and the key that signed it. A signature by a given key that fails refuses the note,
/// whatever other signatures say.
pub fn open_note<'n, 'k>(
    note: &'n str,
    keys: &'k [VerifierKey],
) -> Result<(&'n str, &'k VerifierKey), NoteError> {
    let (body, signatures) = split(note)?;
    let mut verified = None;
    for line in signatures {
        let (name, signature) = parse_signature(line)?;
        let Some(key) = keys
            .iter()
            .find(|k| k.name() == name && k.id()[..] == signature[..4])
        else {
            continue;
        };
        if !key.verify(body.as_bytes(), &signature[4..]) {
            return Err(NoteError::BadSignature);
        }
        verified.get_or_insert(key);
    }
    Ok((body, verified.ok_or(NoteError::UnknownKey)?))
}

/// The body (with its final newline) and the signature lines of a signed note.
fn split(note: &str) -> Result<(&str, std::str::Lines<'_>), NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::Malformed("longer than 1 MiB"));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("a control character"));
    }
    let at = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (body, signatures) = (&note[..=at], &note[at + 2..]);
    if !signatures.ends_with('\n') || signatures.lines().count() > MAX_SIGNATURES {
        return Err(NoteError::Malformed("the signature lines"));
    }
    Ok((body, signatures.lines()))
}

/// `— <name> <base64(key id || signature)>`, at least 5 bytes decoded.
fn parse_signature(line: &str) -> Result<(&str, Vec<u8>), NoteError> {
    let malformed = NoteError::Malformed("a signature line is not `— <name> <base64>`");
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(malformed.clone())?;
    let (name, signature) = rest.split_once(' ').ok_or(malformed.clone())?;
    if !super::keys::valid_name(name) {
        return Err(malformed);
    }
    let bytes = BASE64.decode(signature).map_err(|_| malformed.clone())?;
    if bytes.len() < 5 {
        return Err(malformed);
    }
    Ok((name, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "audit.example/log".to_owned(),
            size: 1042,
            root: [7; 32],
            time: Some(DateTime::from_timestamp_micros(1_764_588_000_123_456).unwrap()),
            horizon: Some(4242),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_no_other() {
        let key = SigningKey::generate("audit.example/log").unwrap();
        let note = checkpoint().sign(&key);
        let keys = [key.verifier()];
        let (opened, by) = Checkpoint::open(&note, &keys).unwrap();
        assert_eq!(opened, checkpoint());
        assert_eq!(by, &keys[0]);
        let other = [SigningKey::generate("audit.example/log")
            .unwrap()
            .verifier()];
        assert_eq!(Checkpoint::open(&note, &other), Err(NoteError::UnknownKey));
    }

    #[test]
    fn a_changed_size_root_or_time_does_not_verify() {
        let key = SigningKey::generate("audit.example/log").unwrap();
        let keys = [key.verifier()];
        let note = checkpoint().sign(&key);
        for (from, to) in [("1042", "1043"), (":00.123456Z", ":01.123456Z")] {
            let forged = note.replacen(from, to, 1);
            assert_eq!(
                Checkpoint::open(&forged, &keys),
                Err(NoteError::BadSignature),
                "{from}"
            );
        }
        let root_line = BASE64.encode([7u8; 32]);
        let forged = note.replacen(&root_line, &BASE64.encode([8u8; 32]), 1);
        assert_eq!(
            Checkpoint::open(&forged, &keys),
            Err(NoteError::BadSignature)
        );
    }

    #[test]
    fn the_go_note_example_verifies() {
        // The signed note of golang.org/x/mod/sumdb/note's documentation.
        let key = VerifierKey::parse(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .unwrap();
        let note = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let (body, mut signatures) = split(note).unwrap();
        let (name, signature) = parse_signature(signatures.next().unwrap()).unwrap();
        assert_eq!(name, "PeterNeumann");
        assert_eq!(signature[..4], key.id());
        assert!(key.verify(body.as_bytes(), &signature[4..]));
    }

    #[test]
    fn malformed_notes_are_refused_not_misread() {
        let key = SigningKey::generate("audit.example/log").unwrap();
        let keys = [key.verifier()];
        let note = checkpoint().sign(&key);
        for bad in [
            "",
            "log\n5\n",
            &note.replacen("1042", "01042", 1),
            &note.replacen("1042", "-1", 1),
            &note.replacen('\u{2014}', "-", 1),
            &note.replacen("\n\n", "\n\r\n", 1),
            note.trim_end(),
        ] {
            assert!(Checkpoint::open(bad, &keys).is_err(), "{bad:?}");
        }
    }
}
