//! `auditd keygen`: a new Ed25519 key pair for the log's checkpoints, written so that
//! only its owner can read the signing key.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::seal::SigningKey;

/// Writes the signing key to `out` (mode 600) and its public key to `out.pub`, refusing
/// to overwrite either, and prints the public key.
pub fn run(out: &Path, name: &str) -> Result<()> {
    let (public_path, public) = write_pair(out, name)?;
    eprintln!(
        "auditd keygen: wrote the signing key to {} (mode 600) and the public key to {}",
        out.display(),
        public_path.display()
    );
    println!("{public}");
    Ok(())
}

/// Writes a new pair: the signing key to `out`, the public key to `out.pub`; returns the
/// latter's path and text.
pub fn write_pair(out: &Path, name: &str) -> Result<(std::path::PathBuf, String)> {
    let key = SigningKey::generate(name)?;
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = std::path::PathBuf::from(public_path);
    let public = key.verifier().to_text();
    write_new(out, &key.to_text(), 0o600)?;
    if let Err(e) = write_new(&public_path, &public, 0o644) {
        // Leave no signing key whose public half nobody has.
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok((public_path, public))
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))
}
