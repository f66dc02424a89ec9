//! TLS for both listeners with rustls (TLS 1.2 and up): certificate and key from PEM files,
//! optional client authentication against a CA (mTLS, for agents), and reloading when the
//! files change on disk (cert-manager rotation) without dropping existing sessions.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }

    fn stamp(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// A rustls server config from the files.
    pub fn load(&self) -> Result<ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| format!("cannot read certificate {}: {e}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad certificate PEM in {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in {}", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("cannot read private key {}: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("cannot read client CA {}: {e}", ca.display()))?
                {
                    let cert =
                        cert.map_err(|e| format!("bad client CA PEM in {}: {e}", ca.display()))?;
                    roots.add(cert).map_err(|e| {
                        format!("bad client CA certificate in {}: {e}", ca.display())
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate and key do not match or are unusable: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The acceptor new connections use; swapped when the files change.
#[derive(Clone)]
pub struct ReloadingAcceptor {
    current: Arc<RwLock<TlsAcceptor>>,
}

impl ReloadingAcceptor {
    pub fn new(files: &TlsFiles) -> Result<ReloadingAcceptor, String> {
        let config = files.load()?;
        Ok(ReloadingAcceptor {
            current: Arc::new(RwLock::new(TlsAcceptor::from(Arc::new(config)))),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Watches the files until `shutdown`, loading them again when they change. A broken
    /// rotation keeps the previous certificate and says why.
    pub async fn watch(self, files: TlsFiles, shutdown: CancellationToken) {
        let mut seen = files.stamp();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_CHECK) => {}
                _ = shutdown.cancelled() => return,
            }
            let now = files.stamp();
            if now == seen {
                continue;
            }
            seen = now;
            match files.load() {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                        TlsAcceptor::from(Arc::new(config));
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed: keeping the previous one")
                }
            }
        }
    }
}
