//! Certificates for the `rediss://` tests, made with rcgen: a CA, and server certificates
//! it signs for the names a test chooses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::redis_server::ServerTls;

/// A certificate authority.
pub struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl TestCa {
    /// A new CA named `name`.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes the CA certificate (what a client trusts) to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, path: &Path) -> anyhow::Result<PathBuf> {
        std::fs::write(path, &self.pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_path_buf())
    }

    /// A server certificate for `dns` names and `ips`, signed by this CA, written to
    /// `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
    ///
    /// # Errors
    /// Signing or writing failed.
    pub fn server(
        &self,
        dns: &[&str],
        ips: &[IpAddr],
        dir: &Path,
        stem: &str,
    ) -> anyhow::Result<ServerTls> {
        let names: Vec<String> = dns.iter().map(|s| (*s).to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, dns.first().copied().unwrap_or("server"));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let tls = ServerTls {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&tls.cert, cert.pem()).context("writing the server certificate")?;
        std::fs::write(&tls.key, key.serialize_pem()).context("writing the server key")?;
        Ok(tls)
    }
}
