//! An HTTP/1.1 client on one keep-alive connection, for the benches that use auditd's API:
//! a request answered whole, a streamed body counted and thrown away, or records posted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// One connection to auditd.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    /// GETs `path`: the time to the whole body, and the body.
    pub async fn get(&mut self, path: &str) -> (Duration, Bytes) {
        let request = hyper::Request::get(path)
            .header("host", "bench")
            .body(Full::new(Bytes::new()))
            .expect("request");
        // One request at a time on the connection: wait until it can take the next.
        self.sender.ready().await.expect("connection ready");
        let started = Instant::now();
        let response = self.sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200, "{path}");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (started.elapsed(), body)
    }
}

impl Client {
    /// POSTs an NDJSON `body` to `path` under an `Idempotency-Key`, with `token`: the
    /// time to the whole answer, its status and its body.
    pub async fn post_ndjson(
        &mut self,
        path: &str,
        token: &str,
        key: &str,
        body: Bytes,
    ) -> (Duration, u16, Bytes) {
        let request = hyper::Request::post(path)
            .header("host", "bench")
            .header("content-type", "application/x-ndjson")
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", key)
            .body(Full::new(body))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let started = Instant::now();
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (started.elapsed(), status, body)
    }

    /// Reads a streamed body frame by frame, counting lines, keeping nothing: the time,
    /// the lines and the bytes.
    pub async fn stream_count(&mut self, path: &str) -> (Duration, u64, u64) {
        let request = hyper::Request::get(path)
            .header("host", "bench")
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        // One request at a time on the connection: wait until it can take the next.
        self.sender.ready().await.expect("connection ready");
        let started = Instant::now();
        let response = self.sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200, "{path}");
        let mut body = response.into_body();
        let (mut lines, mut bytes) = (0u64, 0u64);
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.expect("frame").data_ref() {
                bytes += data.len() as u64;
                lines += data.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        (started.elapsed(), lines, bytes)
    }
}
