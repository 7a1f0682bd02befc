//! The HTTPS check's TLS side: the client config built once per checker,
//! and the handshake.
//!
//! Without `tls_ca` the backend's certificate is not verified (the check
//! asks whether the server answers, as HAProxy's `check-ssl verify none`
//! does); the handshake's signatures still are. With `tls_ca`, the chain
//! must lead to that CA and name `tls_server_name` (or the backend's
//! address).

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject as _, CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

/// What an HTTPS check expects of the backend's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The name sent as SNI and verified (default: the backend's address).
    pub server_name: Option<String>,
    /// The CA bundle the backend's chain must lead to (default: not verified).
    pub ca: Option<PathBuf>,
}

/// A ready TLS client for one checker (or why it could not be made).
#[derive(Clone)]
pub struct TlsProbe {
    settings: TlsSettings,
    config: Result<Arc<ClientConfig>, String>,
}

impl std::fmt::Debug for TlsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings.fmt(f)
    }
}

impl PartialEq for TlsProbe {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for TlsProbe {}

impl TlsProbe {
    /// Builds the client for `settings` (reading the CA file now).
    pub fn new(settings: TlsSettings) -> Self {
        let config = client_config(&settings).map(Arc::new);
        Self { settings, config }
    }

    /// The TLS handshake with `target` over `tcp`. `Err(Ok(..))`: this host
    /// could not set TLS up (no verdict on the backend); `Err(Err(..))`:
    /// the backend's handshake failed.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        target: SocketAddr,
    ) -> Result<TlsStream<TcpStream>, Result<String, std::io::Error>> {
        let config = self.config.clone().map_err(Ok)?;
        let name = match &self.settings.server_name {
            Some(n) => ServerName::try_from(n.clone()).map_err(|e| Ok(format!("tls_server_name {n:?}: {e}")))?,
            None => ServerName::IpAddress(target.ip().into()),
        };
        TlsConnector::from(config).connect(name, tcp).await.map_err(Err)
    }
}

fn client_config(s: &TlsSettings) -> Result<ClientConfig, String> {
    // ring, as the etcd client's TLS: aws-lc-rs (post-quantum key exchange)
    // would add cmake and a C toolchain to the build; a health check
    // carries no secret worth a harvest-now attack.
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match &s.ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls_ca {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("tls_ca {}: no certificate", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.signature_verification_algorithms)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts any certificate, but still checks that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
