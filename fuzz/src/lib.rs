//! Shared set-up of the vws fuzz targets (`fuzz_targets/`): a throwaway PKI made in-process once
//! per fuzzing process — a CA with its signing policy in a temporary Globus trusted-certificates
//! directory, a user certificate and an RFC 3820 proxy of it — and a helper that mints proxy
//! certificates from fuzzer-chosen fields, signed with real keys, so the chain validator is
//! fuzzed past its signature checks. Nothing here is committed key material: it is all generated
//! at run time.

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509Extension, X509Name, X509NameBuilder, X509NameRef, X509};
use std::path::PathBuf;

use vws::security::certdir::CertDir;
use vws::security::credential::Credential;
use vws::security::TrustConfig;

pub const CA_DN: &str = "/C=XX/O=vws fuzz/CN=Fuzz CA";
pub const OID_PCI_RFC: &str = "1.3.6.1.5.5.7.1.14";
pub const OID_PCI_DRAFT: &str = "1.3.6.1.4.1.3536.1.222";
pub const OID_VOMS_ACSEQ: &str = "1.3.6.1.4.1.8005.100.100.5";
/// proxyCertInfo { proxyPolicy { id-ppl-inheritAll } }
pub const PCI_INHERIT_ALL: [u8; 14] = [0x30, 0x0C, 0x30, 0x0A, 0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01];

/// The run's PKI.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: X509,
    pub ca_key: PKey<Private>,
    pub user: X509,
    pub user_key: PKey<Private>,
    pub proxy: X509,
    /// One key for every minted proxy (RSA key generation per input would dominate the run).
    pub proxy_key: PKey<Private>,
    pub trust: TrustConfig,
    pub cred: Credential,
    /// Seconds since the epoch when the PKI was made: certificates are valid ±1 day around it.
    pub now: i64,
}

fn name(parts: &[(&str, &[u8])]) -> X509Name {
    let mut b = X509NameBuilder::new().unwrap();
    for (k, v) in parts {
        b.append_entry_by_text(k, std::str::from_utf8(v).unwrap()).unwrap();
    }
    b.build()
}

pub fn ext(oid: &str, critical: bool, value: &[u8]) -> Option<X509Extension> {
    let oid = Asn1Object::from_str(oid).ok()?;
    let value = Asn1OctetString::new_from_bytes(value).ok()?;
    X509Extension::new_from_der(&oid, critical, &value).ok()
}

/// A certificate named `subject`, issued by `issuer` with `issuer_key`, for `key`.
#[allow(clippy::too_many_arguments)]
pub fn cert(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    issuer_key: &PKey<Private>,
    key: &PKey<Private>,
    serial: u32,
    not_before: i64,
    not_after: i64,
    exts: Vec<X509Extension>,
) -> Option<X509> {
    let mut b = X509::builder().ok()?;
    b.set_version(2).ok()?;
    let sn: Asn1Integer = BigNum::from_u32(serial).ok()?.to_asn1_integer().ok()?;
    b.set_serial_number(&sn).ok()?;
    b.set_subject_name(subject).ok()?;
    b.set_issuer_name(issuer).ok()?;
    b.set_pubkey(key).ok()?;
    let (nb, na) = (Asn1Time::from_unix(not_before).ok()?, Asn1Time::from_unix(not_after).ok()?);
    b.set_not_before(&nb).ok()?;
    b.set_not_after(&na).ok()?;
    for e in exts {
        b.append_extension(e).ok()?;
    }
    b.sign(issuer_key, MessageDigest::sha256()).ok()?;
    Some(b.build())
}

/// `base` plus one more RDN `CN=cn`.
pub fn name_plus_cn(base: &X509NameRef, cn: &str) -> Option<X509Name> {
    let mut b = X509NameBuilder::new().ok()?;
    for e in base.entries() {
        b.append_entry_by_nid(e.object().nid(), &e.data().to_string().ok()?).ok()?;
    }
    b.append_entry_by_text("CN", cn).ok()?;
    Some(b.build())
}

/// RSA-1024: generated in milliseconds (libFuzzer's fork mode makes the PKI once per job) and
/// still accepted by the verifiers (OpenSSL's security level applies to TLS, not to these).
fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap()
}

fn make() -> Pki {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let dir = std::env::temp_dir().join(format!("vws-fuzz-pki-{}", std::process::id()));
    let certs = dir.join("certificates");
    std::fs::create_dir_all(&certs).unwrap();

    let ca_key = key();
    let ca_name = name(&[("C", b"XX"), ("O", b"vws fuzz"), ("CN", b"Fuzz CA")]);
    let ca_exts = vec![
        ext("2.5.29.19", true, &[0x30, 0x03, 0x01, 0x01, 0xFF]).unwrap(), // basicConstraints CA:TRUE
        ext("2.5.29.15", true, &[0x03, 0x02, 0x01, 0x06]).unwrap(),       // keyUsage keyCertSign, cRLSign
    ];
    let ca = cert(&ca_name, &ca_name, &ca_key, &ca_key, 1, now - 86400, now + 86400, ca_exts).unwrap();
    let hash = format!("{:08x}", ca.subject_name_hash());
    std::fs::write(certs.join(format!("{hash}.0")), ca.to_pem().unwrap()).unwrap();
    std::fs::write(
        certs.join(format!("{hash}.signing_policy")),
        format!(
            "access_id_CA   X509    '{CA_DN}'\npos_rights     globus  CA:sign\ncond_subjects  globus  '\"/C=XX/O=vws fuzz/*\"'\n"
        ),
    )
    .unwrap();

    let user_key = key();
    let user_name = name(&[("C", b"XX"), ("O", b"vws fuzz"), ("CN", b"Fuzz User")]);
    let user_exts = vec![
        ext("2.5.29.19", true, &[0x30, 0x00]).unwrap(), // basicConstraints CA:FALSE
        ext("2.5.29.15", true, &[0x03, 0x02, 0x05, 0xA0]).unwrap(), // digitalSignature, keyEncipherment
    ];
    let user = cert(&user_name, &ca_name, &ca_key, &user_key, 2, now - 86400, now + 86400, user_exts).unwrap();

    let proxy_key = key();
    let proxy_name = name_plus_cn(&user_name, "1234").unwrap();
    let proxy_exts =
        vec![ext(OID_PCI_RFC, true, &PCI_INHERIT_ALL).unwrap(), ext("2.5.29.15", true, &[0x03, 0x02, 0x05, 0xA0]).unwrap()];
    let proxy = cert(&proxy_name, &user_name, &user_key, &proxy_key, 1234, now - 86400, now + 86400, proxy_exts).unwrap();

    let proxy_file = dir.join("proxy.pem");
    let mut pem = proxy.to_pem().unwrap();
    pem.extend(proxy_key.private_key_to_pem_pkcs8().unwrap());
    pem.extend(user.to_pem().unwrap());
    std::fs::write(&proxy_file, pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&proxy_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cred = Credential::load_proxy(&proxy_file).expect("the fuzz PKI's proxy loads");
    let mut trust = TrustConfig::new(CertDir::load(&certs).expect("the fuzz PKI's certificates directory loads"));
    // VOMS on (an empty vomsdir): ACs in fuzzed proxies are parsed and checked, never trusted.
    std::fs::create_dir_all(dir.join("vomsdir")).unwrap();
    trust.voms = Some(vws::security::VomsConfig::new(dir.join("vomsdir")));
    Pki { dir, ca, ca_key, user, user_key, proxy, proxy_key, trust, cred, now }
}

/// The PKI of this process (made on first use).
pub fn pki() -> &'static Pki {
    thread_local! {
        static PKI: &'static Pki = Box::leak(Box::new(make()));
    }
    PKI.with(|p| *p)
}

/// A little cursor over fuzzer bytes: each read takes what is left, or zeros when exhausted.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    /// A length-prefixed (one byte) slice.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = (self.u8() as usize).min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}
