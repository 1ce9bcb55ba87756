//! TLS between fleet processes, through ractor_cluster's encrypted listener and connect.
//!
//! Both directions are authenticated: a node presents its certificate (`--tls-cert`,
//! `--tls-key`) and accepts only peers whose certificate the CA (`--tls-ca`) signed, so a
//! process without a certificate from the cluster's CA cannot even reach the cookie challenge.
//! The cookie still applies on top.

use fleet_actors::FleetError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs every node's certificate.
    pub ca: PathBuf,
}

/// A loaded TLS configuration: the acceptor for the listener and the connector for joins.
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

fn bad(path: &Path, what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::bad_request(format!("loading the TLS {what} from {}", path.display()), e)
}

impl TlsConfig {
    /// Loads the certificate, key and CA.
    pub fn load(files: &TlsFiles) -> Result<TlsConfig, FleetError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| bad(&files.cert, "certificate", e))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&files.cert, "certificate", e))?;
        if certs.is_empty() {
            return Err(bad(
                &files.cert,
                "certificate",
                "no certificate in the file",
            ));
        }
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, "key", e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| bad(&files.ca, "CA", e))? {
            let ca = ca.map_err(|e| bad(&files.ca, "CA", e))?;
            roots.add(ca).map_err(|e| bad(&files.ca, "CA", e))?;
        }
        if roots.is_empty() {
            return Err(bad(&files.ca, "CA", "no certificate in the file"));
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| bad(&files.ca, "CA", e))?;
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| bad(&files.key, "key", e))?;
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad(&files.key, "key", e))?;
        Ok(TlsConfig {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// The name to check the peer's certificate against: the host part of `addr`.
    pub(crate) fn server_name(&self, addr: &str) -> ServerName<'static> {
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(addr)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"))
    }
}
