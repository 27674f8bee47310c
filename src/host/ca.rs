//! The host CA that signs a certificate per workspace (`[credentials]`): loaded from the
//! configured certificate and key, or made once (self-signed, kept in the data directory) when
//! none is configured. A workspace's certificate names its key in the subject (under the CA's
//! own name, so a Globus signing policy for that CA admits it) and carries a fresh EC P-256 key.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509Name, X509NameBuilder, X509};
use std::path::Path;

pub struct HostCa {
    cert: X509,
    key: PKey<Private>,
    days: u32,
}

/// A workspace's credential.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// `/O=…/CN=…` (Globus order).
    pub subject: String,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// `/A=b/C=d` of a name.
pub fn slash_name(n: &openssl::x509::X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?");
            format!("/{k}={}", String::from_utf8_lossy(e.data().as_slice()))
        })
        .collect()
}

impl HostCa {
    /// The CA from PEM files.
    pub fn load(cert: &Path, key: &Path, days: u32) -> Result<HostCa, String> {
        let c = std::fs::read(cert).map_err(|e| err(&cert.display().to_string(), e))?;
        let k = std::fs::read(key).map_err(|e| err(&key.display().to_string(), e))?;
        let cert = X509::from_pem(&c).map_err(|e| err(&format!("CA certificate {}", cert.display()), e))?;
        let key = PKey::private_key_from_pem(&k).map_err(|e| err(&format!("CA key {}", key.display()), e))?;
        Ok(HostCa { cert, key, days })
    }

    /// The CA in `dir` (ca.pem, ca.key), made there on first use.
    pub fn load_or_make(dir: &Path, days: u32) -> Result<HostCa, String> {
        let (c, k) = (dir.join("ca.pem"), dir.join("ca.key"));
        if c.exists() && k.exists() {
            return HostCa::load(&c, &k, days);
        }
        std::fs::create_dir_all(dir).map_err(|e| err(&dir.display().to_string(), e))?;
        let key = ec_key()?;
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
        let cn = format!("vws host CA {}", if host.is_empty() { "local" } else { &host });
        let cert = make_ca_cert(&key, &cn).map_err(|e| err("making the host CA", e))?;
        write_private(&k, &key.private_key_to_pem_pkcs8().map_err(|e| err("CA key", e))?)?;
        std::fs::write(&c, cert.to_pem().map_err(|e| err("CA", e))?).map_err(|e| err(&c.display().to_string(), e))?;
        tracing::info!(ca = %slash_name(cert.subject_name()), dir = %dir.display(), "host CA made");
        Ok(HostCa { cert, key, days })
    }

    pub fn subject(&self) -> String {
        slash_name(self.cert.subject_name())
    }

    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().unwrap_or_default()).unwrap_or_default()
    }

    /// The subject of a workspace's certificate: the CA's name without its CN, then
    /// `OU=workspaces`, `CN=<key>`.
    fn subject_for(&self, key: &str) -> Result<X509Name, String> {
        let mut b = X509NameBuilder::new().map_err(|e| err("name", e))?;
        for e in self.cert.subject_name().entries() {
            if e.object().nid() == Nid::COMMONNAME {
                continue;
            }
            b.append_entry_by_nid(e.object().nid(), &String::from_utf8_lossy(e.data().as_slice())).map_err(|e| err("name", e))?;
        }
        b.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, "workspaces").map_err(|e| err("name", e))?;
        b.append_entry_by_nid(Nid::COMMONNAME, key).map_err(|e| err("name", e))?;
        Ok(b.build())
    }

    /// Issues a certificate and key for workspace `key`.
    pub fn issue(&self, key: &str) -> Result<Issued, String> {
        let pkey = ec_key()?;
        let name = self.subject_for(key)?;
        let cert = self.sign(&pkey, &name).map_err(|e| err("signing the workspace certificate", e))?;
        let der = cert.to_der().map_err(|e| err("certificate", e))?;
        let sha256 = openssl::sha::sha256(&der).iter().map(|b| format!("{b:02x}")).collect();
        Ok(Issued {
            cert_pem: String::from_utf8(cert.to_pem().map_err(|e| err("certificate", e))?).unwrap_or_default(),
            key_pem: String::from_utf8(pkey.private_key_to_pem_pkcs8().map_err(|e| err("key", e))?).unwrap_or_default(),
            subject: slash_name(cert.subject_name()),
            sha256,
        })
    }

    fn sign(&self, pkey: &PKey<Private>, name: &X509Name) -> Result<X509, ErrorStack> {
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial()?.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(name)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(pkey)?;
        let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(self.days)?);
        b.set_not_before(&nb)?;
        b.set_not_after(&na)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().key_agreement().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().client_auth().build()?)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    /// Does `cert_pem` verify against this CA?
    pub fn verifies(&self, cert_pem: &str) -> bool {
        X509::from_pem(cert_pem.as_bytes())
            .ok()
            .and_then(|c| self.cert.public_key().ok().map(|k| c.verify(&k).unwrap_or(false)))
            .unwrap_or(false)
    }
}

fn make_ca_cert(key: &PKey<Private>, cn: &str) -> Result<X509, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "vws")?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = serial()?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(3650)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn ec_key() -> Result<PKey<Private>, String> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| err("EC group", e))?;
    let ec = EcKey::generate(&group).map_err(|e| err("EC key", e))?;
    PKey::from_ec_key(ec).map_err(|e| err("EC key", e))
}

fn serial() -> Result<BigNum, ErrorStack> {
    let mut n = BigNum::new()?;
    n.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(n)
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(&path.display().to_string(), e))?;
    f.write_all(data).map_err(|e| err(&path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_ca_issues_verifiable_workspace_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HostCa::load_or_make(dir.path(), 30).unwrap();
        let again = HostCa::load_or_make(dir.path(), 30).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem(), "made once, then loaded");
        let i = ca.issue("0f3c-key").unwrap();
        assert!(i.subject.ends_with("/OU=workspaces/CN=0f3c-key"), "{}", i.subject);
        assert!(i.subject.starts_with("/O=vws"), "{}", i.subject);
        assert!(ca.verifies(&i.cert_pem));
        assert_eq!(i.sha256.len(), 64);
        let other = HostCa::load_or_make(&dir.path().join("other"), 30).unwrap();
        assert!(!other.verifies(&i.cert_pem));
    }
}
