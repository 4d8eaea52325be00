//! An HTTP/1.1 client on one keep-alive connection, for the benches that read auditd's
//! API: a request answered whole, or a streamed body counted and thrown away.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// One connection to auditd.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
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
            .body(Empty::new())
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
    /// Reads a streamed body frame by frame, counting lines, keeping nothing: the time,
    /// the lines and the bytes.
    pub async fn stream_count(&mut self, path: &str) -> (Duration, u64, u64) {
        let request = hyper::Request::get(path)
            .header("host", "bench")
            .body(Empty::new())
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
