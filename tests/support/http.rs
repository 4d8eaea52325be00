//! An auditd server running in-process on a test database, and a plain HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use auditd::Limits;
use auditd::ServerOptions;
use auditd::{TokenStore, Tokens};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::{builder, TestDb};

pub const TOKEN: &str = "ops-token-0123456789abcdef";

fn ops_token() -> Tokens {
    Tokens::parse([format!("ops:{TOKEN}").as_str()]).unwrap()
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub audit: Arc<audit_layer::AuditHandle>,
    /// The tokens in force, which a test may replace (as SIGHUP does).
    pub tokens: Arc<TokenStore>,
}

impl TestServer {
    /// Serves `db` with the token `ops:TOKEN`; access records go to the same database.
    pub async fn start(db: &TestDb) -> TestServer {
        TestServer::start_with(db, ops_token(), Limits::default()).await
    }

    /// Serves `db`, with its access records kept elsewhere, so that they never show up in
    /// what the test reads.
    pub async fn start_quiet(db: &TestDb) -> TestServer {
        let elsewhere = TestDb::migrated("access_records").await;
        TestServer::start_full(db, &elsewhere.url, ops_token(), Limits::default(), None).await
    }

    /// Serves `db` over HTTPS with `tls`, with the token `ops:TOKEN`.
    pub async fn start_tls(db: &TestDb, tls: tokio_rustls::TlsAcceptor) -> TestServer {
        TestServer::start_full(db, &db.url, ops_token(), Limits::default(), Some(tls)).await
    }

    pub async fn start_with(db: &TestDb, tokens: Tokens, limits: Limits) -> TestServer {
        TestServer::start_full(db, &db.url, tokens, limits, None).await
    }

    /// Serves `db`, writing access records to the database at `access_url`.
    pub async fn start_full(
        db: &TestDb,
        access_url: &str,
        tokens: Tokens,
        limits: Limits,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestServer {
        TestServer::serving(&db.url, access_url, None, tokens, limits, tls).await
    }

    /// Serves queries from the hot standby at `standby_url`, writing (access records,
    /// ingest, commit notices) to the primary at `primary_url`, as `auditd serve
    /// --database-url STANDBY --audit-database-url PRIMARY` does.
    pub async fn start_on_standby(standby_url: &str, primary_url: &str) -> TestServer {
        let limits = Limits {
            replication_sample_interval: Duration::from_millis(200),
            ..Limits::default()
        };
        let write_pool = Some(pool_of(primary_url));
        TestServer::serving(
            standby_url,
            primary_url,
            write_pool,
            ops_token(),
            limits,
            None,
        )
        .await
    }

    async fn serving(
        read_url: &str,
        write_url: &str,
        write_pool: Option<deadpool_postgres::Pool>,
        tokens: Tokens,
        limits: Limits,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestServer {
        let tokens = Arc::new(TokenStore::new(tokens));
        let (layer, handle) = builder(write_url).build().expect("access audit layer");
        use tracing_subscriber::prelude::*;
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        let pool = pool_of(read_url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let audit = Arc::new(handle);
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServerOptions {
            tokens: tokens.clone(),
            limits,
            shutdown_grace: Duration::from_secs(5),
            access_audit: Some(dispatch),
            audit_handle: Some(audit.clone()),
            commit_notices: Some(auditd::commit_notices(write_url)),
            write_pool,
            tls,
        };
        let done = tokio::spawn(auditd::serve(listener, pool, options, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            done: Some(done),
            audit,
            tokens,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.request(path, Some(TOKEN), &[]).await
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = self.get(path).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).expect("JSON body")
    }

    pub async fn request(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        whole(self.send(path, token, headers).await).await
    }

    /// Sends a request and returns the response with its body unread (for streams).
    pub async fn send(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        self.send_with(hyper::Method::GET, path, token, headers, Bytes::new())
            .await
    }

    /// POSTs `body` to `path` and returns the status, headers and body of the answer.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        whole(
            self.send_with(hyper::Method::POST, path, token, headers, body.into())
                .await,
        )
        .await
    }

    /// One request on a connection of its own, with the token and headers given.
    async fn send_with(
        &self,
        method: hyper::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Response<Incoming> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        sender
            .send_request(request.body(Full::new(body)).unwrap())
            .await
            .expect("response")
    }

    /// Stops the server gracefully and commits the access records.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap().unwrap();
        }
        self.audit.flush().await.unwrap();
    }
}

/// A response's status, headers and whole body.
async fn whole(response: Response<Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, body)
}

/// Reads from a streaming body until `predicate` holds for what was read, or `timeout`.
fn pool_of(url: &str) -> deadpool_postgres::Pool {
    audit_layer::pool::connect_pool(
        url,
        &audit_layer::pool::PoolOptions {
            max_size: 8,
            statement_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    )
    .unwrap()
}

pub async fn read_until(
    body: &mut Incoming,
    timeout: Duration,
    predicate: impl Fn(&str) -> bool,
) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !predicate(&text) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("timed out; read so far: {text}"));
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            _ => break,
        }
    }
    text
}
