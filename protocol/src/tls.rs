//! The cell's TLS identities: a cell CA that signs the fileserver's certificate
//! and client credentials, and the rustls configurations for mutual TLS.

use crate::acl::Role;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::RootCertStore;
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// The DNS name every fileserver certificate carries and clients verify.
pub const SERVER_NAME: &str = "cellfs-fileserver";

/// ALPN protocol id; bump on incompatible wire changes.
pub const ALPN: &[u8] = b"cellfs/2";

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
    /// A certificate does not say who it is for.
    #[error("certificate identity: {0}")]
    Identity(&'static str),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Credential {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

/// A calendar date: year, month, day.
pub type Date = (i32, u8, u8);

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

    /// Issues a client credential named `name` for `role`, valid from now
    /// on (for years).
    pub fn issue_client(&self, name: &str, role: Role) -> Result<Credential, TlsError> {
        self.issue_client_valid(name, role, None)
    }

    /// Issues a client credential valid only between the two dates (year,
    /// month, day) of `validity`, or from now on when `None`; tests use it
    /// to make expired credentials.
    pub fn issue_client_valid(
        &self,
        name: &str,
        role: Role,
        validity: Option<(Date, Date)>,
    ) -> Result<Credential, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.unit());
        if let Some(((y0, m0, d0), (y1, m1, d1))) = validity {
            params.not_before = rcgen::date_time_ymd(y0, m0, d0);
            params.not_after = rcgen::date_time_ymd(y1, m1, d1);
        }
        self.sign(params, name, rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<String>,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Result<Credential, TlsError> {
        self.sign(CertificateParams::new(sans)?, common_name, usage)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Result<Credential, TlsError> {
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

/// Who a verified client certificate names: the name and role it was issued
/// for, and its fingerprint (what revocation lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate's common name.
    pub name: String,
    /// The role it was issued for; certificates without one (made before
    /// roles existed) count as hosts.
    pub role: Role,
    /// SHA-256 of the certificate, in hex.
    pub fingerprint: String,
}

/// SHA-256 of `der`, in lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of the first certificate in `pem`.
pub fn pem_fingerprint(pem: &str) -> Result<String, TlsError> {
    let certs = certs(pem, "certificate")?;
    let first = certs.first().ok_or(TlsError::Identity("no certificate in the PEM"))?;
    Ok(fingerprint(first))
}

/// Reads the identity out of a client certificate the TLS layer verified.
pub fn identify(der: &[u8]) -> Result<Identity, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| TlsError::Identity("unparsable certificate"))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or(TlsError::Identity("certificate without a common name"))?
        .to_owned();
    let role = subject
        .iter_organizational_unit()
        .filter_map(|a| a.as_str().ok())
        .find_map(Role::from_unit)
        .unwrap_or(Role::Host);
    Ok(Identity {
        name,
        role,
        fingerprint: fingerprint(der),
    })
}

/// ring's provider with AES-128-GCM first (ring lists AES-256 first): it
/// protects every packet of a transfer, and its ten rounds against
/// AES-256's fourteen take a quarter off the cipher's share of a transfer's
/// CPU at both ends, with a security margin TLS 1.3 and QUIC require of
/// every implementation.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
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
