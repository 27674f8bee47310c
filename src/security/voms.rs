//! VOMS attribute certificates: the RFC 3281 ACs a VOMS server (or voms-proxy-fake) puts in a
//! proxy's extension 1.3.6.1.4.1.8005.100.100.5. An AC is trusted only when every check passes:
//! structure, signature by the VOMS server certificate (embedded in the AC's extension
//! 1.3.6.1.4.1.8005.100.100.10, or a plain certificate file in the vomsdir), that certificate
//! validated against the trusted CAs and authorised for the VO by the vomsdir
//! (`X509_VOMS_DIR`, default `/etc/grid-security/vomsdir`; `<vo>/*.lsc` files listing the server
//! DN and its CA DN, or the server certificate itself), the validity window, the holder (the
//! end-entity certificate: serial number, and issuer field equal to its subject or issuer, as the
//! VOMS API accepts), VOMS' required and critical extensions, and FQANs inside the VO.
//! An invalid AC is ignored with a logged reason — never trusted, never fatal to the identity.

use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::{X509Name, X509Ref, X509};
use std::path::{Path, PathBuf};

use super::certdir::CertDir;
use super::der::{self, Tlv};
use super::proxy::{check_end_entity, Validated};
use super::x509::{self as xu, dn_eq, extensions, find_ext, names_equal};

pub const OID_VOMS_ACSEQ: &str = "1.3.6.1.4.1.8005.100.100.5";
pub const OID_VOMS_FQANS: &str = "1.3.6.1.4.1.8005.100.100.4";
pub const OID_VOMS_CERTS: &str = "1.3.6.1.4.1.8005.100.100.10";
pub const OID_AC_TARGETS: &str = "2.5.29.55";
pub const OID_NO_REV_AVAIL: &str = "2.5.29.56";
pub const OID_AKI: &str = "2.5.29.35";
pub const DEFAULT_VOMS_DIR: &str = "/etc/grid-security/vomsdir";
/// Clock skew tolerated on an AC's notBefore (the VOMS API allows 5 minutes).
pub const CLOCK_SKEW: i64 = 300;

/// Where VOMS trust comes from.
#[derive(Clone, Debug)]
pub struct VomsConfig {
    pub vomsdir: PathBuf,
    /// Names of this service for ACs restricted to targets (VOMS compares the local FQDN). ACs
    /// with a targets extension naming none of these are ignored.
    pub target_names: Vec<String>,
}

impl VomsConfig {
    pub fn new(vomsdir: impl Into<PathBuf>) -> VomsConfig {
        VomsConfig { vomsdir: vomsdir.into(), target_names: Vec::new() }
    }
    /// `X509_VOMS_DIR`, else `/etc/grid-security/vomsdir`.
    pub fn from_env() -> VomsConfig {
        VomsConfig::new(std::env::var_os("X509_VOMS_DIR").map(PathBuf::from).unwrap_or_else(|| DEFAULT_VOMS_DIR.into()))
    }
}

/// A parsed (not yet trusted) attribute certificate.
pub struct AttributeCertificate {
    /// Holder baseCertificateID: issuer name and serial number (positive INTEGER bytes).
    pub holder: Option<(X509Name, Vec<u8>)>,
    pub issuer: X509Name,
    pub issuer_dn: String,
    pub serial: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub vo: String,
    /// `host:port` of the VOMS server.
    pub uri: String,
    /// As carried (not normalised).
    pub fqans: Vec<String>,
    /// Certificates of extension 1.3.6.1.4.1.8005.100.100.10 (the signer first).
    pub certs: Vec<X509>,
    /// (oid, critical, value)
    pub extensions: Vec<(String, bool, Vec<u8>)>,
    tbs: Vec<u8>,
    sig_alg: String,
    signature: Vec<u8>,
}

impl std::fmt::Debug for AttributeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttributeCertificate")
            .field("issuer", &self.issuer_dn)
            .field("holder", &self.holder.as_ref().map(|(n, s)| (xu::dn_string(n), s)))
            .field("vo", &self.vo)
            .field("uri", &self.uri)
            .field("fqans", &self.fqans)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

/// What a valid AC asserts.
#[derive(Clone, Debug, PartialEq)]
pub struct VomsAttributes {
    pub vo: String,
    /// Normalised FQANs, in the AC's order (the first is the primary one).
    pub fqans: Vec<String>,
    /// The VOMS server DN.
    pub issuer_dn: String,
    pub not_after: i64,
}

/// Drops `/Role=NULL` and `/Capability=NULL` components: `/vo/Role=NULL/Capability=NULL` → `/vo`.
pub fn normalize_fqan(f: &str) -> String {
    let mut out = String::new();
    for part in f.split('/').filter(|p| !p.is_empty()) {
        if part == "Role=NULL" || part == "Capability=NULL" {
            continue;
        }
        out.push('/');
        out.push_str(part);
    }
    out
}

type R<T> = Result<T, String>;

fn d<T>(r: Result<T, der::DerError>) -> R<T> {
    r.map_err(|e| e.to_string())
}

/// GeneralNames with exactly one directoryName → that name.
fn single_dirname(gns: &Tlv) -> R<X509Name> {
    let names = d(gns.children())?;
    match names.as_slice() {
        [n] if n.tag == der::ctx_cons(4) => X509Name::from_der(n.content).map_err(|e| e.to_string()),
        _ => Err("expected exactly one directoryName".into()),
    }
}

/// Parses the value of extension 1.3.6.1.4.1.8005.100.100.5: `SEQUENCE { SEQUENCE OF AC }`.
pub fn parse_ac_seq(value: &[u8]) -> R<Vec<AttributeCertificate>> {
    let outer = d(Tlv::parse(value).and_then(|t| t.expect(der::SEQUENCE, "ACSEQ")))?;
    let kids = d(outer.children())?;
    let [seq] = kids.as_slice() else { return Err("ACSEQ must hold one SEQUENCE OF AC".into()) };
    let acs = d(seq.expect(der::SEQUENCE, "SEQUENCE OF AC").and_then(|s| s.children()))?;
    acs.iter().map(|a| parse_ac(a.raw)).collect()
}

/// Parses one DER AttributeCertificate.
pub fn parse_ac(raw: &[u8]) -> R<AttributeCertificate> {
    let ac = d(Tlv::parse(raw).and_then(|t| t.expect(der::SEQUENCE, "AttributeCertificate")))?;
    let parts = d(ac.children())?;
    let [info, alg, sig] = parts.as_slice() else { return Err("AttributeCertificate needs 3 fields".into()) };
    let alg_oid = alg_oid(alg)?;
    let sig = d(sig.expect(der::BIT_STRING, "signatureValue"))?;
    if sig.content.first() != Some(&0) {
        return Err("signature BIT STRING has unused bits".into());
    }
    let f = d(info.expect(der::SEQUENCE, "AttributeCertificateInfo").and_then(|i| i.children()))?;
    if f.len() < 7 {
        return Err("AttributeCertificateInfo too short".into());
    }
    if d(f[0].small_uint())? != 1 {
        return Err("AC version is not v2".into());
    }
    // holder
    let mut holder = None;
    for h in d(f[1].expect(der::SEQUENCE, "Holder").and_then(|h| h.children()))? {
        match h.tag {
            t if t == der::ctx_cons(0) => {
                let is = d(h.children())?;
                if is.len() < 2 {
                    return Err("bad holder IssuerSerial".into());
                }
                let name = single_dirname(&d(is[0].expect(der::SEQUENCE, "holder issuer"))?)
                    .map_err(|e| format!("holder issuer: {e}"))?;
                let serial = d(is[1].expect(der::INTEGER, "holder serial"))?.content.to_vec();
                holder = Some((name, serial));
            }
            t if t == der::ctx_cons(1) => {} // entityName: VOMS never relies on it
            _ => return Err("holder objectDigestInfo is not supported".into()),
        }
    }
    // issuer: v2Form [0] { issuerName GeneralNames } only
    if f[2].tag != der::ctx_cons(0) {
        return Err("AC issuer is not in v2Form".into());
    }
    let v2 = d(f[2].children())?;
    let [names] = v2.as_slice() else { return Err("AC issuer v2Form must hold only issuerName".into()) };
    let issuer = single_dirname(&d(names.expect(der::SEQUENCE, "issuerName"))?).map_err(|e| format!("issuer: {e}"))?;
    // inner signature algorithm must equal the outer one
    if f[3].raw != alg.raw {
        return Err("the signature algorithm inside the AC differs from the outer one".into());
    }
    let serial = d(f[4].expect(der::INTEGER, "serialNumber"))?.content.to_vec();
    if serial.len() > 20 {
        return Err("AC serial number too long".into());
    }
    let validity = d(f[5].expect(der::SEQUENCE, "validity").and_then(|v| v.children()))?;
    let [nb, na] = validity.as_slice() else { return Err("bad validity".into()) };
    if nb.tag != der::GENERALIZED_TIME || na.tag != der::GENERALIZED_TIME {
        return Err("AC validity must be GeneralizedTime".into());
    }
    let (not_before, not_after) = (d(der::time_to_unix(nb))?, d(der::time_to_unix(na))?);
    // attributes
    let mut fq: Option<(String, String, Vec<String>)> = None;
    for a in d(f[6].expect(der::SEQUENCE, "attributes").and_then(|a| a.children()))? {
        let af = d(a.expect(der::SEQUENCE, "Attribute").and_then(|a| a.children()))?;
        let [ty, vals] = af.as_slice() else { return Err("bad Attribute".into()) };
        if d(ty.oid())? != OID_VOMS_FQANS {
            continue;
        }
        if fq.is_some() {
            return Err("more than one FQAN attribute".into());
        }
        fq = Some(parse_fqan_attr(vals)?);
    }
    let (vo, uri, fqans) = fq.ok_or("VOMS attributes missing from the AC")?;
    // optional issuerUniqueID, extensions
    let mut extensions = Vec::new();
    for x in &f[7..] {
        match x.tag {
            der::BIT_STRING => {}
            der::SEQUENCE => {
                for e in d(x.children())? {
                    let ef = d(e.expect(der::SEQUENCE, "Extension").and_then(|e| e.children()))?;
                    let (oid, crit, val) = match ef.as_slice() {
                        [o, v] => (d(o.oid())?, false, v),
                        [o, c, v] => (d(o.oid())?, d(c.boolean())?, v),
                        _ => return Err("bad AC extension".into()),
                    };
                    let val = d(val.expect(der::OCTET_STRING, "extnValue"))?;
                    if extensions.iter().any(|(o, _, _): &(String, bool, Vec<u8>)| *o == oid) {
                        return Err(format!("duplicate AC extension {oid}"));
                    }
                    extensions.push((oid, crit, val.content.to_vec()));
                }
            }
            _ => return Err("unexpected field after the AC attributes".into()),
        }
    }
    let mut certs = Vec::new();
    if let Some((_, _, v)) = extensions.iter().find(|(o, _, _)| o == OID_VOMS_CERTS) {
        certs = parse_ac_certs(v)?;
    }
    Ok(AttributeCertificate {
        holder,
        issuer_dn: xu::dn_string(&issuer),
        issuer,
        serial,
        not_before,
        not_after,
        vo,
        uri,
        fqans,
        certs,
        extensions,
        tbs: info.raw.to_vec(),
        sig_alg: alg_oid,
        signature: sig.content[1..].to_vec(),
    })
}

fn alg_oid(alg: &Tlv) -> R<String> {
    let a = d(alg.expect(der::SEQUENCE, "AlgorithmIdentifier").and_then(|a| a.children()))?;
    let first = a.first().ok_or("empty AlgorithmIdentifier")?;
    d(first.oid())
}

/// IetfAttrSyntax: `SET { SEQUENCE { policyAuthority [0] GeneralNames, values SEQUENCE OF
/// OCTET STRING } }` → (vo, host:port, fqans).
fn parse_fqan_attr(vals: &Tlv) -> R<(String, String, Vec<String>)> {
    let set = d(vals.expect(der::SET, "attribute values").and_then(|s| s.children()))?;
    let [ietf] = set.as_slice() else { return Err("there must be exactly one IetfAttrSyntax value".into()) };
    let parts = d(ietf.expect(der::SEQUENCE, "IetfAttrSyntax").and_then(|i| i.children()))?;
    let [auth, values] = parts.as_slice() else { return Err("IetfAttrSyntax needs policyAuthority and values".into()) };
    if auth.tag != der::ctx_cons(0) {
        return Err("VOMS server contact data missing from the AC".into());
    }
    let gns = d(auth.children())?;
    let [uri] = gns.as_slice() else { return Err("there must be exactly one policyAuthority".into()) };
    if uri.tag != der::ctx_prim(6) {
        return Err("policyAuthority is not a URI".into());
    }
    let uri = std::str::from_utf8(uri.content).map_err(|_| "policyAuthority is not ASCII")?;
    let (vo, hostport) = uri.split_once("://").ok_or("policyAuthority is not vo://host:port")?;
    let mut fqans = Vec::new();
    for v in d(values.expect(der::SEQUENCE, "values").and_then(|v| v.children()))? {
        let v = d(v.expect(der::OCTET_STRING, "FQAN"))?;
        let s = std::str::from_utf8(v.content).map_err(|_| "FQAN is not UTF-8")?;
        fqans.push(s.to_string());
    }
    if fqans.is_empty() {
        return Err("no FQANs".into());
    }
    Ok((vo.to_string(), hostport.to_string(), fqans))
}

/// Extension 1.3.6.1.4.1.8005.100.100.10: `SEQUENCE { SEQUENCE OF Certificate }`.
fn parse_ac_certs(v: &[u8]) -> R<Vec<X509>> {
    let outer = d(Tlv::parse(v).and_then(|t| t.expect(der::SEQUENCE, "AC certs")))?;
    let kids = d(outer.children())?;
    let [seq] = kids.as_slice() else { return Err("AC certs must hold one SEQUENCE OF Certificate".into()) };
    d(seq.expect(der::SEQUENCE, "SEQUENCE OF Certificate").and_then(|s| s.children()))?
        .iter()
        .map(|c| X509::from_der(c.raw).map_err(|e| format!("AC certificate: {e}")))
        .collect()
}

fn digest_for(oid: &str) -> R<MessageDigest> {
    Ok(match oid {
        "1.2.840.113549.1.1.5" => MessageDigest::sha1(),
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => MessageDigest::sha256(),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => MessageDigest::sha384(),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => MessageDigest::sha512(),
        "1.2.840.113549.1.1.14" => MessageDigest::sha224(),
        other => return Err(format!("unsupported AC signature algorithm {other}")),
    })
}

impl AttributeCertificate {
    /// Whether `cert`'s key verifies this AC's signature.
    pub fn signed_by(&self, cert: &X509Ref) -> R<bool> {
        let md = digest_for(&self.sig_alg)?;
        let key = cert.public_key().map_err(|e| e.to_string())?;
        let mut v = Verifier::new(md, &key).map_err(|e| e.to_string())?;
        v.update(&self.tbs).map_err(|e| e.to_string())?;
        Ok(v.verify(&self.signature).unwrap_or(false))
    }

    fn check_holder(&self, eec: &X509Ref) -> R<()> {
        let (name, serial) = self.holder.as_ref().ok_or("the AC holder has no baseCertificateID")?;
        let ours = eec.serial_number().to_bn().map_err(|e| e.to_string())?;
        let theirs = BigNum::from_slice(serial).map_err(|e| e.to_string())?;
        if serial.first().map(|b| b & 0x80 != 0).unwrap_or(true) || ours != theirs {
            return Err(format!(
                "the AC was granted to serial {} , not to {} (serial {})",
                theirs.to_hex_str().map(|s| s.to_string()).unwrap_or_default(),
                xu::subject(eec),
                xu::serial_hex(eec)
            ));
        }
        if !names_equal(name, eec.subject_name()) && !names_equal(name, eec.issuer_name()) {
            return Err(format!(
                "the AC holder {} names neither the subject nor the issuer of {}",
                xu::dn_string(name),
                xu::subject(eec)
            ));
        }
        Ok(())
    }

    fn check_extensions(&self, cfg: &VomsConfig) -> R<()> {
        if !self.extensions.iter().any(|(o, _, _)| o == OID_NO_REV_AVAIL) || !self.extensions.iter().any(|(o, _, _)| o == OID_AKI)
        {
            return Err("required AC extensions missing (NoRevAvail and AuthorityKeyIdentifier)".into());
        }
        for (oid, crit, val) in &self.extensions {
            if oid == OID_AC_TARGETS {
                let names = uris_in(val);
                if !names.iter().any(|n| cfg.target_names.iter().any(|t| t.eq_ignore_ascii_case(n))) {
                    return Err(format!("the AC is restricted to targets {names:?}, and this service is none of them"));
                }
            } else if *crit {
                return Err(format!("unknown critical extension {oid} inside the AC"));
            }
        }
        Ok(())
    }
}

/// Every URI GeneralName ([6]) anywhere inside `v`.
fn uris_in(v: &[u8]) -> Vec<String> {
    fn walk(t: &Tlv, out: &mut Vec<String>) {
        if t.tag == der::ctx_prim(6) {
            out.push(String::from_utf8_lossy(t.content).into_owned());
        } else if t.tag & 0x20 != 0 {
            if let Ok(k) = t.children() {
                k.iter().for_each(|c| walk(c, out));
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = Tlv::parse(v) {
        walk(&t, &mut out);
    }
    out
}

/// A VO name usable as a directory name.
fn safe_vo(vo: &str) -> bool {
    !vo.is_empty() && vo != "." && vo != ".." && vo.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// DN chains listed in the `.lsc` files of `dir` (chains separated by lines starting with `-`).
fn lsc_chains(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for f in files.into_iter().filter(|f| f.extension().map(|e| e == "lsc").unwrap_or(false)) {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let mut cur = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('-') {
                if !cur.is_empty() {
                    out.push((f.clone(), std::mem::take(&mut cur)));
                }
                continue;
            }
            cur.push(line.to_string());
        }
        if !cur.is_empty() {
            out.push((f.clone(), cur));
        }
    }
    out
}

/// Plain certificate files (not .lsc) in `dir`.
fn vomsdir_certs(dir: &Path) -> Vec<X509> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if !p.is_file() || p.extension().map(|x| x == "lsc").unwrap_or(false) {
            continue;
        }
        if let Ok(b) = std::fs::read(&p) {
            if let Ok(cs) = X509::stack_from_pem(&b) {
                out.extend(cs);
            }
        }
    }
    out
}

/// Validates `ac` for the chain's identity as of `now`; Err names why it is not trusted.
pub fn verify_ac(
    ac: &AttributeCertificate,
    v: &Validated,
    dir: &CertDir,
    cfg: &VomsConfig,
    now: i64,
    at: Option<i64>,
) -> R<VomsAttributes> {
    if !safe_vo(&ac.vo) {
        return Err(format!("unusable VO name {:?}", ac.vo));
    }
    if now + CLOCK_SKEW < ac.not_before {
        return Err(format!("the AC is not yet valid (notBefore {})", xu::unix_to_string(ac.not_before)));
    }
    if now > ac.not_after {
        return Err(format!("the AC has expired (notAfter {})", xu::unix_to_string(ac.not_after)));
    }
    ac.check_holder(v.eec())?;
    ac.check_extensions(cfg)?;
    let vo_dir = cfg.vomsdir.join(&ac.vo);
    if !vo_dir.is_dir() {
        return Err(format!("no vomsdir entry {} for VO {}", vo_dir.display(), ac.vo));
    }
    // Candidate signers: the embedded certificate, then certificates in the vomsdir.
    let lscs = lsc_chains(&vo_dir);
    let listed: Vec<X509> = vomsdir_certs(&vo_dir);
    let mut why = Vec::new();
    let embedded = ac.certs.first().cloned();
    for (cand, from_vomsdir) in embedded.into_iter().map(|c| (c, false)).chain(listed.iter().cloned().map(|c| (c, true))) {
        let subj = xu::subject(&cand);
        if !names_equal(cand.subject_name(), &ac.issuer) {
            if !from_vomsdir {
                why.push(format!("the embedded certificate {subj} is not the AC issuer {}", ac.issuer_dn));
            }
            continue;
        }
        match ac.signed_by(&cand) {
            Ok(true) => {}
            Ok(false) => {
                why.push(format!("the AC signature does not verify with the key of {subj}"));
                continue;
            }
            Err(e) => return Err(e),
        }
        let exts = extensions(&cand).map_err(|e| e.to_string())?;
        let (ca, _) = match check_end_entity(&cand, &exts, dir, now, at) {
            Ok(x) => x,
            Err(e) => {
                why.push(format!("VOMS server certificate refused: {e}"));
                continue;
            }
        };
        // Authorised for the VO: listed as a certificate, or by an .lsc DN chain.
        let der = cand.to_der().map_err(|e| e.to_string())?;
        let by_cert = listed.iter().any(|c| c.to_der().map(|x| x == der).unwrap_or(false));
        let mut path = vec![subj.clone(), xu::issuer(&cand)];
        let mut cur = ca;
        while !xu::self_issued(&cur.cert) && path.len() < 12 {
            path.push(xu::issuer(&cur.cert));
            match dir.issuers_of(&cur.cert).first() {
                Some(p) => cur = p,
                None => break,
            }
        }
        let by_lsc = lscs
            .iter()
            .any(|(_, chain)| chain.len() >= 2 && chain.len() <= path.len() && chain.iter().zip(&path).all(|(a, b)| dn_eq(a, b)));
        if !(by_cert || by_lsc) {
            why.push(format!("{subj} (issuer {}) is not authorised for VO {} by {}", xu::issuer(&cand), ac.vo, vo_dir.display()));
            continue;
        }
        let mut fqans: Vec<String> = Vec::new();
        for f in &ac.fqans {
            let n = normalize_fqan(f);
            let inside = n == format!("/{}", ac.vo) || n.starts_with(&format!("/{}/", ac.vo));
            if !inside {
                return Err(format!("FQAN {f} is outside VO {}", ac.vo));
            }
            if !fqans.contains(&n) {
                fqans.push(n);
            }
        }
        return Ok(VomsAttributes { vo: ac.vo.clone(), fqans, issuer_dn: ac.issuer_dn.clone(), not_after: ac.not_after });
    }
    if why.is_empty() {
        why.push(format!("no certificate of the AC issuer {} was found (embedded or in the vomsdir)", ac.issuer_dn));
    }
    Err(why.join("; "))
}

/// The ACs of the chain: those of the leaf-most proxy carrying extension
/// 1.3.6.1.4.1.8005.100.100.5 (the VOMS API's choice). Err: the extension is malformed.
pub fn find_acs(v: &Validated) -> R<Vec<AttributeCertificate>> {
    for cert in &v.chain[..v.proxy_depth] {
        let exts = extensions(cert).map_err(|e| e.to_string())?;
        if let Some(x) = find_ext(&exts, OID_VOMS_ACSEQ) {
            return parse_ac_seq(&x.value);
        }
    }
    Ok(Vec::new())
}

/// Every valid AC's attributes, as of `at` (None: now). Invalid ACs are logged and skipped.
pub fn attributes(v: &Validated, dir: &CertDir, cfg: &VomsConfig, at: Option<i64>) -> Vec<VomsAttributes> {
    let now = at.unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
    let acs = match find_acs(v) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(identity = %v.identity_dn, "ignoring malformed VOMS extension: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for ac in &acs {
        match verify_ac(ac, v, dir, cfg, now, at) {
            Ok(a) => out.push(a),
            Err(e) => tracing::warn!(identity = %v.identity_dn, vo = %ac.vo, issuer = %ac.issuer_dn, "ignoring VOMS AC: {e}"),
        }
    }
    out
}

/// The verified FQANs of the chain (empty when there is no valid AC).
pub fn fqans(v: &Validated, dir: &CertDir, cfg: &VomsConfig) -> Vec<String> {
    fqans_at(v, dir, cfg, None)
}

/// [`fqans`] as of `at` (Unix seconds; None: now).
pub fn fqans_at(v: &Validated, dir: &CertDir, cfg: &VomsConfig, at: Option<i64>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in attributes(v, dir, cfg, at) {
        for f in a.fqans {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_fqans() {
        assert_eq!(normalize_fqan("/testvo/Role=NULL/Capability=NULL"), "/testvo");
        assert_eq!(normalize_fqan("/testvo/Role=admin/Capability=NULL"), "/testvo/Role=admin");
        assert_eq!(normalize_fqan("/testvo/sub/Role=NULL"), "/testvo/sub");
        assert_eq!(normalize_fqan("/testvo"), "/testvo");
    }

    #[test]
    fn vo_names() {
        assert!(safe_vo("testvo") && safe_vo("vo.example.org") && safe_vo("a-b_c"));
        assert!(!safe_vo("..") && !safe_vo("a/b") && !safe_vo("") && !safe_vo("."));
    }

    #[test]
    fn refuses_malformed_acs() {
        assert!(parse_ac_seq(&[0x30, 0x00]).is_err());
        assert!(parse_ac_seq(&der::encode(der::SEQUENCE, &der::encode(der::SEQUENCE, &[0x02, 0x01, 0x01]))).is_err());
        assert!(parse_ac(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    }

    #[test]
    fn target_uris() {
        // SEQUENCE { SEQUENCE { SEQUENCE { [0] { [6] "host.example" } } } }
        let uri = der::encode(der::ctx_prim(6), b"host.example");
        let t = der::encode(
            der::SEQUENCE,
            &der::encode(der::SEQUENCE, &der::encode(der::SEQUENCE, &der::encode(der::ctx_cons(0), &uri))),
        );
        assert_eq!(uris_in(&t), vec!["host.example".to_string()]);
    }
}
