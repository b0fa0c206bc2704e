//! A throwaway certificate authority for the demo and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

use crate::DemoError;

/// A CA whose key lives only in memory.
pub struct DemoCa {
    pub ca_cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate (PEM) and its private key (PKCS#8 PEM).
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DemoCa {
    /// A fresh CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, DemoError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        Ok(DemoCa {
            ca_cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `dns_names` (and loopback IPs when `loopback`).
    pub fn issue_server(&self, dns_names: &[String], loopback: bool) -> Result<IssuedCert, DemoError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, dns_names.first().map(String::as_str).unwrap_or("juris"));
        if loopback {
            params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params.subject_alt_names.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_certificates() {
        let ca = DemoCa::new("test").unwrap();
        let leaf = ca.issue_server(&["localhost".into()], true).unwrap();
        assert!(ca.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.cert_pem.contains("BEGIN CERTIFICATE") && leaf.key_pem.contains("PRIVATE KEY"));
    }
}
