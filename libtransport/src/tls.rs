//! rustls configuration for the QUIC handshake.
//!
//! TLS 1.3 only, aws-lc-rs provider, key exchange groups `X25519MLKEM768`
//! first (post-quantum hybrid) then `X25519`. Each endpoint presents an
//! ephemeral Ed25519 self-signed certificate made at start-up; the client
//! accepts any certificate but still checks the handshake signature against
//! it. Who the peer *is* is established afterwards by the ML-DSA-65 proof over
//! the TLS exporter (`identity`, ADR 0030), which a man in the middle cannot
//! produce: its two TLS sessions have different exporters.

use std::sync::Arc;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// ALPN protocol id.
pub const ALPN: &[u8] = b"tern/1";
/// SNI the client sends (the certificate is not checked against it).
pub const SERVER_NAME: &str = "tern";

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("ephemeral certificate generation failed")]
    Cert(#[source] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("rustls rejected the TLS configuration")]
    Config(#[source] rustls::Error),
    /// The rustls configuration offers no cipher suite QUIC can protect its
    /// Initial packets with.
    #[error("TLS configuration unusable for QUIC")]
    NoInitialCipherSuite(#[source] quinn_proto::crypto::rustls::NoInitialCipherSuite),
}

/// The provider: aws-lc-rs with the hybrid PQ group preferred.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![
        rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
        rustls::crypto::aws_lc_rs::kx_group::X25519,
    ];
    Arc::new(p)
}

/// Server and client crypto configs for one endpoint: TLS 1.3 only, this
/// crate's [`provider`], a fresh self-signed certificate for [`SERVER_NAME`],
/// ALPN [`ALPN`], and a client that accepts any certificate — the peer's
/// identity is proven above TLS by the exporter-bound ML-DSA-65 proof
/// (`identity`), so a caller that drives `quinn-proto` itself must run that
/// proof too.
pub fn configs() -> Result<(Arc<QuicServerConfig>, Arc<QuicClientConfig>), TlsError> {
    let provider = provider();
    let ck =
        rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).map_err(TlsError::Cert)?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(TlsError::Config)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    server.max_early_data_size = 0;

    let verifier = Arc::new(AnyCert {
        algs: provider.signature_verification_algorithms,
    });
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];

    let server = QuicServerConfig::try_from(server).map_err(TlsError::NoInitialCipherSuite)?;
    let client = QuicClientConfig::try_from(client).map_err(TlsError::NoInitialCipherSuite)?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// Accepts any certificate (identity is proven above TLS) but verifies the
/// TLS 1.3 CertificateVerify signature so the handshake itself is sound.
#[derive(Debug)]
struct AnyCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCert {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
