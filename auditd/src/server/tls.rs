//! TLS for the API, so that bearer tokens and audit records never cross a network in
//! clear text when there is no TLS-terminating proxy in front of auditd.
//!
//! The certificate chain and private key are PEM files (`--tls-cert`, `--tls-key`), read
//! at start-up and again by [`Certificate::reload`] (auditd calls it on SIGHUP), so a
//! renewed certificate is taken up without a restart; connections already open keep the
//! one they began with. rustls with the ring provider speaks TLS 1.2 and 1.3 and offers
//! HTTP/1.1 by ALPN.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::connection::serve_connection;
use crate::admission::{ConnectionSlot, Connections};
use crate::replaceable::Replaceable;
use crate::state::App;

/// The server's certificate and key as last read from their files.
#[derive(Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Replaceable<CertifiedKey>,
}

impl Certificate {
    /// Reads `cert` (the server's certificate first, then its chain) and `key` (PKCS#8,
    /// PKCS#1 or SEC1), with errors that name the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificate>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read(cert, key, &provider)?;
        Ok(Arc::new(Certificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: Replaceable::new(current),
        }))
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> Result<()> {
        self.current
            .replace(read(&self.cert, &self.key, &self.provider)?);
        Ok(())
    }

    /// The acceptor for new connections: each handshake uses the certificate of the
    /// moment.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.current())
    }
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "no certificate in {} (PEM, BEGIN CERTIFICATE)",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a private key (PEM: PKCS#8, PKCS#1 or SEC1) from {}",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .context("the TLS certificate and private key do not go together")
}

/// The longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once; a connection beyond them is closed at once, so
/// that clients which connect and stall cannot pile up work.
pub(super) const MAX_HANDSHAKES: usize = 256;

/// TLS handshakes in progress at once from one client address, so that one client
/// stalling its handshakes cannot take every handshake slot.
pub(super) const MAX_HANDSHAKES_PER_IP: usize = 16;

/// The handshakes in progress, bounded in all and per address.
pub(super) fn handshake_slots() -> Arc<Connections> {
    // At the bound, the oldest handshake gives way: a client that stalls many handshakes
    // from many addresses delays new ones by their timeout at most, never locks them out.
    Connections::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_IP, true)
}

/// Serves `stream` once its TLS handshake is done, on a task of its own; closes it at once
/// when [`MAX_HANDSHAKES`] are in progress.
pub(super) fn serve_tls_connection(
    app: &Arc<App>,
    tls: &TlsAcceptor,
    handshakes: &Arc<Connections>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    connection: ConnectionSlot,
) {
    let Some(slot) = handshakes.admit(peer.ip()) else {
        tracing::debug!(%peer, "too many TLS handshakes in progress; connection closed");
        return;
    };
    let app = app.clone();
    let mut stopping = app.stopping.clone();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream));
    let handshake_liveness = slot.liveness();
    let connection_liveness = connection.liveness();
    tokio::spawn(async move {
        let finished = tokio::select! {
            finished = handshake => finished,
            // Shutting down: a connection not yet set up is not waited for.
            _ = stopping.wait_for(|stop| *stop) => return,
            // The oldest handshake in progress, or a connection still in its handshake,
            // giving way to a new one.
            () = handshake_liveness.asked_to_close() => return,
            () = connection_liveness.asked_to_close() => return,
        };
        drop(slot);
        match finished {
            Ok(Ok(stream)) => serve_connection(&app, stream, peer, connection),
            // A scanner, a client that does not trust the certificate, plain HTTP sent
            // to the TLS port: the client's problem, worth a line at debug level only.
            Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    });
}
