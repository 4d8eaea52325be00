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
            // Durable before it counts: the sealer trusts this file as its anchor, and a
            // crash must leave the old checkpoint or the new one, never an empty file.
            let mut file = std::fs::File::create(&temporary)
                .with_context(|| format!("cannot write {}", temporary.display()))?;
            file.write_all(note.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", temporary.display()))?;
            std::fs::rename(&temporary, path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
            let directory = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            std::fs::File::open(directory)
                .and_then(|dir| dir.sync_all())
                .with_context(|| format!("cannot sync {}", directory.display()))
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

    /// A one-request HTTP server answering `status`; returns its address and the request
    /// it received.
    async fn one_request_server(status: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length || n == 0 {
                        break;
                    }
                }
            }
            stream
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (addr, served)
    }

    #[tokio::test]
    async fn a_checkpoint_is_posted_as_text_and_a_refusal_is_an_error() {
        let note = "log\n1\nAAAA\n\n\u{2014} log AAAA\n";
        let (addr, served) = one_request_server("204 No Content").await;
        let destination: Destination = format!("http://{addr}/checkpoints").parse().unwrap();
        publish(&destination, note).await.unwrap();
        let request = served.await.unwrap();
        assert!(
            request.starts_with("POST /checkpoints HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{request}"
        );
        assert!(request.ends_with(note), "{request}");

        let (addr, _served) = one_request_server("500 Internal Server Error").await;
        let destination: Destination = format!("http://{addr}/").parse().unwrap();
        let refused = publish(&destination, note).await.unwrap_err();
        assert!(format!("{refused:#}").contains("500"), "{refused:#}");
    }

    #[tokio::test]
    async fn a_checkpoint_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("auditd-publish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint");
        let destination = Destination::File(path.clone());
        publish(&destination, "first\n").await.unwrap();
        publish(&destination, "second\n").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        assert!(!dir.join("checkpoint.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
