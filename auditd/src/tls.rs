//! TLS for the API, so that bearer tokens and audit records never cross a network in
//! clear text when there is no TLS-terminating proxy in front of auditd.
//!
//! The certificate chain and private key are PEM files (`--tls-cert`, `--tls-key`), read
//! once at start-up: a certificate renewed on disk takes effect at the next restart.
//! rustls with the ring provider speaks TLS 1.2 and 1.3 and offers HTTP/1.1 by ALPN.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The acceptor for `cert` (the server's certificate first, then its chain) and `key`
/// (PKCS#8, PKCS#1 or SEC1), with errors that name the file at fault.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and private key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
