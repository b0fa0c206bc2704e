//! A throwaway certificate authority for the demo and tests.
//!
//! The CA key lives only in memory and dies with the [`DemoCa`]; every key is
//! ECDSA P-256. Leaf certificates come back as PEM with the CA certificate
//! appended (leaf first), which both PostgreSQL's `ssl_cert_file` and rustls
//! accept as a chain.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use crate::DemoError;

/// A CA whose key lives only in memory.
pub struct DemoCa {
    /// The CA certificate, PEM: what clients put in `sslrootcert`.
    pub ca_cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DemoCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoCa").finish_non_exhaustive()
    }
}

/// A leaf certificate and its private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// Leaf certificate followed by the CA certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn new_key() -> Result<KeyPair, DemoError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

impl DemoCa {
    /// A fresh CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, DemoError> {
        let key = new_key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(DemoCa {
            ca_cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `dns_names`; with `loopback_ips` it also
    /// names 127.0.0.1 and ::1, so `sslmode=verify-full` works by IP too.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        loopback_ips: bool,
    ) -> Result<IssuedCert, DemoError> {
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            dns_names.first().map(String::as_str).unwrap_or("juris"),
        );
        if loopback_ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A certificate for the node-to-node transport of a region: presented
    /// as server and as client (mutual TLS), valid for the loopback
    /// addresses and `dns_names`.
    pub fn issue_peer(&self, dns_names: &[String]) -> Result<IssuedCert, DemoError> {
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            dns_names
                .first()
                .map(String::as_str)
                .unwrap_or("juris-peer"),
        );
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params)
    }

    /// A client certificate whose subject common name is `common_name`.
    pub fn issue_client(&self, common_name: &str) -> Result<IssuedCert, DemoError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<IssuedCert, DemoError> {
        let key = new_key()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: format!("{}{}", cert.pem(), self.ca_cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_pem_is_leaf_then_ca() {
        let ca = DemoCa::new("test").unwrap();
        let leaf = ca.issue_server(&["localhost".into()], true).unwrap();
        assert!(ca.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(leaf.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(leaf.cert_pem.ends_with(&ca.ca_cert_pem));
        assert!(leaf.key_pem.contains("BEGIN PRIVATE KEY"));
        let client = ca.issue_client("alice").unwrap();
        assert!(client.cert_pem.ends_with(&ca.ca_cert_pem));
        assert!(!format!("{client:?}").contains("PRIVATE"));
    }
}
