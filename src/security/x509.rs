//! Certificate helpers shared by the GSI modules: Globus slash-form DNs (as OpenSSL's
//! `X509_NAME_oneline` prints them, which is what grid-mapfiles, signing policies and .lsc files
//! contain), extension access by OID through the DER reader, name comparison, and time conversions.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509Ref};
use std::cmp::Ordering;

use super::der::{self, DerError, Tlv};

pub const OID_PROXY_CERT_INFO: &str = "1.3.6.1.5.5.7.1.14";
pub const OID_PROXY_CERT_INFO_DRAFT: &str = "1.3.6.1.4.1.3536.1.222";
pub const OID_PPL_INHERIT_ALL: &str = "1.3.6.1.5.5.7.21.1";
pub const OID_PPL_INDEPENDENT: &str = "1.3.6.1.5.5.7.21.2";
pub const OID_PPL_GLOBUS_LIMITED: &str = "1.3.6.1.4.1.3536.1.1.1.9";
pub const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
pub const OID_KEY_USAGE: &str = "2.5.29.15";
pub const OID_CN: &str = "2.5.4.3";

/// The Globus/OpenSSL one-line form of a name: `/O=Grid/OU=GlobusTest/CN=Test User`.
/// Bytes outside printable ASCII are written `\xHH`, as `X509_NAME_oneline` does (non-ASCII
/// values are first converted to UTF-8, so BMP/T61 strings may differ from oneline's output).
pub fn dn_string(name: &X509NameRef) -> String {
    let mut s = String::new();
    for e in name.entries() {
        let obj = e.object();
        let key = match obj.nid() {
            Nid::UNDEF => obj.to_string(),
            nid => nid.short_name().map(str::to_string).unwrap_or_else(|_| obj.to_string()),
        };
        s.push('/');
        s.push_str(&key);
        s.push('=');
        // Strings are converted to UTF-8 (a no-op for the usual Printable/IA5/UTF8 strings).
        let data = e.data();
        let bytes: Vec<u8> = data.to_string().map(String::into_bytes).unwrap_or_else(|_| data.as_slice().to_vec());
        for b in bytes {
            if (0x20..=0x7e).contains(&b) {
                s.push(b as char);
            } else {
                s.push_str(&format!("\\x{b:02X}"));
            }
        }
    }
    s
}

/// Normalises the spellings of the e-mail attribute that Globus treats as equal.
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut rest = dn;
    while let Some(i) = rest.find('/') {
        out.push_str(&rest[..i]);
        out.push('/');
        rest = &rest[i + 1..];
        for alias in ["Email=", "E=", "emailAddress="] {
            if rest.starts_with(alias) {
                out.push_str("emailAddress=");
                rest = &rest[alias.len()..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// String DN equality as Globus does it (exact, modulo the e-mail attribute spelling).
pub fn dn_eq(a: &str, b: &str) -> bool {
    a == b || normalize_dn(a) == normalize_dn(b)
}

/// Canonical (OpenSSL `X509_NAME_cmp`) equality of two names; false on any error.
pub fn names_equal(a: &X509NameRef, b: &X509NameRef) -> bool {
    matches!(a.try_cmp(b), Ok(Ordering::Equal))
}

/// One certificate extension.
#[derive(Clone, Debug)]
pub struct Ext {
    pub oid: String,
    pub critical: bool,
    pub value: Vec<u8>,
}

/// All extensions of a certificate, in order.
pub fn extensions(cert: &X509Ref) -> Result<Vec<Ext>, DerError> {
    let der_bytes = cert.to_der().map_err(|e| DerError(e.to_string()))?;
    let top = Tlv::parse(&der_bytes)?.expect(der::SEQUENCE, "Certificate")?;
    let parts = top.children()?;
    let tbs = parts.first().ok_or_else(|| DerError("no TBSCertificate".into()))?.expect(der::SEQUENCE, "TBS")?;
    let mut out = Vec::new();
    for field in tbs.children()? {
        if field.tag != der::ctx_cons(3) {
            continue;
        }
        let seq = Tlv::parse(field.content)?.expect(der::SEQUENCE, "Extensions")?;
        for ext in seq.children()? {
            let f = ext.expect(der::SEQUENCE, "Extension")?.children()?;
            let (oid, critical, value) = match f.as_slice() {
                [o, v] => (o.oid()?, false, v),
                [o, c, v] => (o.oid()?, c.boolean()?, v),
                _ => return Err(DerError("Extension has a wrong number of fields".into())),
            };
            let value = value.expect(der::OCTET_STRING, "extnValue")?;
            if out.iter().any(|e: &Ext| e.oid == oid) {
                return Err(DerError(format!("duplicate extension {oid}")));
            }
            out.push(Ext { oid, critical, value: value.content.to_vec() });
        }
    }
    Ok(out)
}

pub fn find_ext<'a>(exts: &'a [Ext], oid: &str) -> Option<&'a Ext> {
    exts.iter().find(|e| e.oid == oid)
}

/// basicConstraints: (cA, pathLenConstraint); None when absent.
pub fn basic_constraints(exts: &[Ext]) -> Result<Option<(bool, Option<u64>)>, DerError> {
    let Some(e) = find_ext(exts, OID_BASIC_CONSTRAINTS) else { return Ok(None) };
    let seq = Tlv::parse(&e.value)?.expect(der::SEQUENCE, "BasicConstraints")?;
    let mut ca = false;
    let mut pl = None;
    for k in seq.children()? {
        match k.tag {
            der::BOOLEAN => ca = k.boolean()?,
            der::INTEGER => pl = Some(k.small_uint()?),
            _ => return Err(DerError("BasicConstraints: unexpected field".into())),
        }
    }
    Ok(Some((ca, pl)))
}

/// keyUsage digitalSignature bit; None when the extension is absent.
pub fn key_usage_digital_signature(exts: &[Ext]) -> Result<Option<bool>, DerError> {
    let Some(e) = find_ext(exts, OID_KEY_USAGE) else { return Ok(None) };
    let bits = Tlv::parse(&e.value)?.expect(der::BIT_STRING, "KeyUsage")?;
    Ok(Some(bits.content.len() >= 2 && bits.content[1] & 0x80 != 0))
}

/// Whether the certificate is a CA certificate (basicConstraints cA=TRUE).
pub fn is_ca(exts: &[Ext]) -> Result<bool, DerError> {
    Ok(matches!(basic_constraints(exts)?, Some((true, _))))
}

/// The RDNs (each a DER SET) of a name, in order.
pub fn rdns(name: &X509NameRef) -> Result<Vec<Vec<u8>>, DerError> {
    let d = name.to_der().map_err(|e| DerError(e.to_string()))?;
    let seq = Tlv::parse(&d)?.expect(der::SEQUENCE, "Name")?;
    seq.children()?.into_iter().map(|r| r.expect(der::SET, "RelativeDistinguishedName").map(|r| r.raw.to_vec())).collect()
}

/// If `rdn` (a DER SET) is a single CN attribute, its value bytes.
pub fn single_cn(rdn: &[u8]) -> Result<Option<Vec<u8>>, DerError> {
    let set = Tlv::parse(rdn)?;
    let atvs = set.children()?;
    if atvs.len() != 1 {
        return Ok(None);
    }
    let f = atvs[0].expect(der::SEQUENCE, "AttributeTypeAndValue")?.children()?;
    if f.len() != 2 || f[0].oid()? != OID_CN {
        return Ok(None);
    }
    Ok(Some(f[1].content.to_vec()))
}

/// Builds a Name from RDN SETs.
pub fn name_from_rdns(rdns: &[Vec<u8>]) -> Result<openssl::x509::X509Name, DerError> {
    let content: Vec<u8> = rdns.concat();
    let d = der::encode(der::SEQUENCE, &content);
    openssl::x509::X509Name::from_der(&d).map_err(|e| DerError(e.to_string()))
}

/// Unix seconds of an ASN.1 time; None if OpenSSL cannot interpret it.
pub fn asn1_to_unix_checked(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    epoch.diff(t).ok().map(|d| d.days as i64 * 86400 + d.secs as i64)
}

/// Unix seconds of an ASN.1 time (0 if uninterpretable; decisions use the checked form).
pub fn asn1_to_unix(t: &Asn1TimeRef) -> i64 {
    asn1_to_unix_checked(t).unwrap_or(0)
}

/// RFC 3339 text of Unix seconds (for messages).
pub fn unix_to_string(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Upper-case hex of a certificate's serial number.
pub fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number().to_bn().and_then(|b| b.to_hex_str().map(|s| s.to_string())).unwrap_or_else(|_| "?".into())
}

pub fn subject(cert: &X509Ref) -> String {
    dn_string(cert.subject_name())
}

pub fn issuer(cert: &X509Ref) -> String {
    dn_string(cert.issuer_name())
}

/// Whether the certificate's issuer name equals its subject name (a self-issued certificate).
pub fn self_issued(cert: &X509Ref) -> bool {
    names_equal(cert.subject_name(), cert.issuer_name())
}

/// Empties OpenSSL's per-thread error queue when dropped. A failed `X509Ref::verify` (or other
/// refused check) leaves errors there, and a later unrelated TLS read on the same worker thread
/// would take them for its own failure and drop that connection. Every GSI check that may fail
/// holds one of these for its duration.
pub struct ClearErrorsOnDrop;

impl Drop for ClearErrorsOnDrop {
    fn drop(&mut self) {
        let _ = openssl::error::ErrorStack::get();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_spellings() {
        assert!(dn_eq("/O=Grid/Email=a@b", "/O=Grid/emailAddress=a@b"));
        assert!(dn_eq("/O=Grid/E=a@b/CN=x", "/O=Grid/emailAddress=a@b/CN=x"));
        assert!(!dn_eq("/O=Grid/CN=a", "/O=Grid/CN=A"));
    }

    #[test]
    fn slash_form() {
        let mut b = openssl::x509::X509Name::builder().unwrap();
        b.append_entry_by_text("O", "Grid").unwrap();
        b.append_entry_by_text("OU", "GlobusTest").unwrap();
        b.append_entry_by_text("CN", "Test User").unwrap();
        b.append_entry_by_text("emailAddress", "t@x").unwrap();
        let n = b.build();
        assert_eq!(dn_string(&n), "/O=Grid/OU=GlobusTest/CN=Test User/emailAddress=t@x");
        let r = rdns(&n).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(single_cn(&r[2]).unwrap().unwrap(), b"Test User");
        assert!(single_cn(&r[1]).unwrap().is_none());
        let back = name_from_rdns(&r[..3]).unwrap();
        assert_eq!(dn_string(&back), "/O=Grid/OU=GlobusTest/CN=Test User");
    }
}
