//! The cell's TLS identities: a cell CA that signs the fileserver's certificate
//! and client credentials, and the rustls configurations for mutual TLS.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The DNS name every fileserver certificate carries and clients verify.
pub const SERVER_NAME: &str = "cellfs-fileserver";

/// ALPN protocol id; bump on incompatible wire changes.
pub const ALPN: &[u8] = b"cellfs/1";

/// Errors building or loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be parsed.
    #[error("bad PEM ({what}): {source}")]
    Pem {
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// QUIC refused the TLS configuration.
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Credential {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

/// The cell authority: signs fileserver and client certificates.
pub struct CellAuthority {
    /// The CA credential (certificate and key).
    pub ca: Credential,
    issuer: Issuer<'static, KeyPair>,
}

impl CellAuthority {
    /// The parameters of cell `cell`'s CA certificate.
    fn ca_params(cell: &str) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("cellfs CA {cell}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(params)
    }

    /// The CA of cell `cell` from its certificate and key (as `generate`
    /// made them), to issue more credentials: a fileserver joining the cell.
    pub fn load(cell: &str, ca: Credential) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(&ca.key_pem)?;
        Ok(CellAuthority {
            ca,
            issuer: Issuer::new(Self::ca_params(cell)?, key),
        })
    }

    /// Creates a new CA for the cell `cell`.
    pub fn generate(cell: &str) -> Result<Self, TlsError> {
        let params = Self::ca_params(cell)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca = Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(CellAuthority {
            ca,
            issuer: Issuer::new(params, key),
        })
    }

    /// Issues the fileserver's certificate (valid for [`SERVER_NAME`]).
    pub fn issue_server(&self) -> Result<Credential, TlsError> {
        self.issue(
            SERVER_NAME,
            vec![SERVER_NAME.to_owned()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// Issues a client credential named `name`.
    pub fn issue_client(&self, name: &str) -> Result<Credential, TlsError> {
        self.issue(name, Vec::new(), rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<String>,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Result<Credential, TlsError> {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params.extended_key_usages.push(usage);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })
}

fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| TlsError::Pem { what, source })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(ca_pem, "cell CA")? {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

/// The fileserver's rustls config: its own credential, and client
/// certificates required and verified against the cell CA.
pub fn server_crypto(server: &Credential, ca_pem: &str) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider()).build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&server.cert_pem, "server certificate")?,
            key(&server.key_pem, "server key")?,
        )?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))
}

/// A client's rustls config: the server must present a certificate signed by
/// the cell CA; `credential` (if any) is presented as the client certificate.
pub fn client_crypto(
    ca_pem: &str,
    credential: Option<&Credential>,
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?);
    let mut cfg = match credential {
        Some(c) => builder.with_client_auth_cert(
            certs(&c.cert_pem, "client certificate")?,
            key(&c.key_pem, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))
}
