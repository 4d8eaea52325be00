//! Publishing checkpoints outside the database's reach, so that a copy survives whoever
//! can rewrite the tables: to standard output (for a pipeline), to a file (replaced
//! atomically with each new checkpoint, for a backup job or a witness to pick up), or by
//! HTTP POST (to a collector, a witness, a ticket system).
//!
//! The latest checkpoint is enough: a later checkpoint proves every earlier leaf, and
//! `auditd verify --checkpoint FILE` checks the database against any copy.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Longest a POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where checkpoints go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output, each followed by a blank line.
    Stdout,
    /// A file, replaced with each.
    File(PathBuf),
    /// An `http://` URL, POSTed as `text/plain`.
    Post {
        /// `host:port`.
        authority: String,
        /// The path and query.
        path: String,
    },
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "-" {
            return Ok(Destination::Stdout);
        }
        if let Some(rest) = text.strip_prefix("http://") {
            let (authority, path) = match rest.find('/') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, "/"),
            };
            if authority.is_empty() || authority.contains('@') {
                return Err(format!("{text}: expected http://host[:port]/path"));
            }
            let authority = if authority.contains(':') && !authority.ends_with(']') {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            };
            return Ok(Destination::Post {
                authority,
                path: path.to_owned(),
            });
        }
        if text.starts_with("https://") {
            return Err(
                "https:// is not supported yet: POST to a local relay over http://, or publish to a file"
                    .to_owned(),
            );
        }
        if text.is_empty() {
            return Err("an empty destination".to_owned());
        }
        Ok(Destination::File(PathBuf::from(text)))
    }
}

/// Sends `note` to `destination`.
pub async fn publish(destination: &Destination, note: &str) -> Result<()> {
    match destination {
        Destination::Stdout => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{note}").context("cannot write the checkpoint to standard output")?;
            out.flush()?;
            Ok(())
        }
        Destination::File(path) => {
            // Write beside it, then rename: a reader never sees half a checkpoint.
            let mut temporary = path.clone().into_os_string();
            temporary.push(".tmp");
            let temporary = PathBuf::from(temporary);
            std::fs::write(&temporary, note)
                .with_context(|| format!("cannot write {}", temporary.display()))?;
            std::fs::rename(&temporary, path)
                .with_context(|| format!("cannot replace {}", path.display()))
        }
        Destination::Post { authority, path } => {
            tokio::time::timeout(POST_TIMEOUT, post(authority, path, note))
                .await
                .with_context(|| format!("POST to {authority}{path} timed out"))?
                .with_context(|| format!("cannot POST the checkpoint to {authority}{path}"))
        }
    }
}

async fn post(authority: &str, path: &str, note: &str) -> Result<()> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(note.to_owned())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Read the answer so the connection ends cleanly; its content does not matter.
    let _ = response.into_body().collect().await;
    connection.abort();
    if !status.is_success() {
        bail!("the server answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_read_as_expected() {
        assert_eq!("-".parse(), Ok(Destination::Stdout));
        assert_eq!(
            "/var/lib/auditd/checkpoint".parse(),
            Ok(Destination::File("/var/lib/auditd/checkpoint".into()))
        );
        assert_eq!(
            "http://witness.local/add".parse(),
            Ok(Destination::Post {
                authority: "witness.local:80".into(),
                path: "/add".into()
            })
        );
        assert_eq!(
            "http://127.0.0.1:9000".parse(),
            Ok(Destination::Post {
                authority: "127.0.0.1:9000".into(),
                path: "/".into()
            })
        );
        assert!("https://x".parse::<Destination>().is_err());
        assert!("http://user@x/".parse::<Destination>().is_err());
    }
}
