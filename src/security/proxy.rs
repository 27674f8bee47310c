//! Validation of a presented GSI certificate chain (leaf first, as a TLS peer sends it, with or
//! without the CA): the end-entity certificate must be issued by a trusted CA of the
//! certificates directory (signature, validity, CRL, signing policy, and OpenSSL's own path
//! validation up to a trusted root), then any number of proxies follow — RFC 3820 (critical
//! proxyCertInfo 1.3.6.1.5.5.7.1.14), the GT 3/4.0 draft (1.3.6.1.4.1.3536.1.222) and legacy
//! Globus proxies (`CN=proxy` / `CN=limited proxy`) — each named issuer + one CN, signed by the
//! previous certificate's key, within its validity, honouring path-length constraints, limited
//! and independent policies and Globus' rule that proxy types never mix.
//!
//! Everything fails closed: any doubt is a typed [`GsiError`] naming the reason. The TLS glue
//! for the listeners (acceptor/connector configuration and [`verify_peer`]) lives in
//! [`super::tls`] and is re-exported here.

use openssl::stack::Stack;
use openssl::x509::{X509Ref, X509StoreContext, X509};
use time::OffsetDateTime;

use super::certdir::{CertDir, TrustedCa};
use super::der::{self, Tlv};
use super::x509::{
    self as xu, asn1_to_unix, asn1_to_unix_checked, basic_constraints, extensions, find_ext, is_ca, key_usage_digital_signature,
    names_equal, rdns, single_cn, unix_to_string, Ext, OID_PPL_GLOBUS_LIMITED, OID_PPL_INDEPENDENT, OID_PPL_INHERIT_ALL,
    OID_PROXY_CERT_INFO, OID_PROXY_CERT_INFO_DRAFT,
};
use super::GsiError;

/// Maximum number of CA certificates between an end-entity certificate and its root.
const MAX_CA_DEPTH: usize = 10;
/// Maximum number of proxies in a chain (a sanity bound; Globus has none).
const MAX_PROXY_DEPTH: usize = 100;

/// Proxy certificate formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// RFC 3820 (proxyCertInfo 1.3.6.1.5.5.7.1.14).
    Rfc,
    /// GT 3 / GT 4.0 draft proxies (proxyCertInfo 1.3.6.1.4.1.3536.1.222).
    Draft,
    /// GT 2 "legacy" proxies, recognised by name only.
    Legacy,
}

impl ProxyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Rfc => "RFC 3820",
            ProxyKind::Draft => "GSI-3 draft",
            ProxyKind::Legacy => "legacy",
        }
    }
}

/// What a proxy delegates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyPolicy {
    /// id-ppl-inheritAll, or a legacy `CN=proxy`.
    Impersonation,
    /// Globus limited (1.3.6.1.4.1.3536.1.1.1.9), or a legacy `CN=limited proxy`.
    Limited,
    /// id-ppl-independent: the proxy carries no rights of its issuer.
    Independent,
}

/// One validated proxy certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyInfo {
    pub subject: String,
    pub kind: ProxyKind,
    pub policy: ProxyPolicy,
    /// pCPathLenConstraint: how many proxies may follow below this one (None = unlimited).
    pub path_len: Option<u64>,
}

/// A chain that passed validation.
#[derive(Clone)]
pub struct Validated {
    /// Slash-form subject of the end-entity certificate: the caller's identity.
    pub identity_dn: String,
    /// Some proxy of the chain is limited (everything below a limited proxy is limited).
    pub limited: bool,
    /// Some proxy of the chain is independent (allowed; authorisation may want to know).
    pub independent: bool,
    /// Number of proxies above the end-entity certificate (0: the peer used its own certificate).
    pub proxy_depth: usize,
    /// The earliest notAfter of the chain (proxies, end-entity certificate, CA path).
    pub not_after: OffsetDateTime,
    /// The presented chain up to and including the end-entity certificate, leaf first.
    pub chain: Vec<X509>,
    /// The proxies, leaf first (`proxies.len() == proxy_depth`).
    pub proxies: Vec<ProxyInfo>,
    /// Slash-form DN of the CA that issued the end-entity certificate.
    pub ca_dn: String,
}

impl std::fmt::Debug for Validated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validated")
            .field("identity_dn", &self.identity_dn)
            .field("limited", &self.limited)
            .field("independent", &self.independent)
            .field("proxy_depth", &self.proxy_depth)
            .field("not_after", &self.not_after)
            .field("proxies", &self.proxies)
            .field("ca_dn", &self.ca_dn)
            .finish()
    }
}

impl Validated {
    /// The end-entity certificate.
    pub fn eec(&self) -> &X509 {
        &self.chain[self.proxy_depth]
    }
    /// The leaf (the certificate whose key the peer proved it holds).
    pub fn leaf(&self) -> &X509 {
        &self.chain[0]
    }
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Validates `chain` (leaf first) against `dir` now.
pub fn validate_chain(chain: &[X509], dir: &CertDir) -> Result<Validated, GsiError> {
    cached_validate(chain, dir, None)
}

/// Validates `chain` as of `at` (Unix seconds).
pub fn validate_chain_at(chain: &[X509], dir: &CertDir, at: i64) -> Result<Validated, GsiError> {
    let _clear = xu::ClearErrorsOnDrop;
    cached_validate(chain, dir, Some(at))
}

/// Validated chains, remembered for a short time ([`set_chain_cache_ttl`], default 30 s) so a
/// peer that signs many messages (or opens many connections) with one proxy is not validated
/// again each time. Key: the SHA-256 fingerprints of the chain's certificates and the trust
/// directory's generation (a reloaded directory — new CRLs, CAs, policies — matches nothing
/// cached before). An entry serves a validation at time `at` only when `at` lies between the
/// time it was validated at and that time plus the TTL, and before the chain's earliest
/// notAfter. Only successes are cached. Revocation therefore takes effect at the latest one TTL
/// after the directory that carries the CRL is loaded.
mod chain_cache {
    use super::Validated;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    pub(super) const MAX_ENTRIES: usize = 4096;
    pub(super) static TTL_MS: AtomicU64 = AtomicU64::new(30_000);

    pub(super) struct Entry {
        pub validated_at: i64,
        pub v: Validated,
    }

    /// (trust directory generation, chain fingerprints) → entry.
    pub(super) type Map = HashMap<(u64, Vec<u8>), Entry>;
    pub(super) static CACHE: Mutex<Option<Map>> = Mutex::new(None);

    pub(super) fn ttl_secs() -> i64 {
        (TTL_MS.load(Ordering::Relaxed) / 1000) as i64
    }
}

/// How long a validated chain is remembered (0 turns the cache off and empties it).
pub fn set_chain_cache_ttl(ttl: std::time::Duration) {
    chain_cache::TTL_MS.store(ttl.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    if ttl.is_zero() {
        *chain_cache::CACHE.lock().unwrap() = None;
    }
}

fn chain_key(chain: &[X509]) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(32 * chain.len());
    for c in chain {
        key.extend_from_slice(&c.digest(openssl::hash::MessageDigest::sha256()).ok()?);
    }
    Some(key)
}

fn cached_validate(chain: &[X509], dir: &CertDir, at: Option<i64>) -> Result<Validated, GsiError> {
    let ttl = chain_cache::ttl_secs();
    if ttl <= 0 || chain.is_empty() {
        return validate(chain, dir, at);
    }
    let Some(fp) = chain_key(chain) else { return validate(chain, dir, at) };
    let now = at.unwrap_or_else(now_unix);
    let key = (dir.generation(), fp);
    if let Some(map) = chain_cache::CACHE.lock().unwrap().as_ref() {
        if let Some(e) = map.get(&key) {
            if now >= e.validated_at && now < e.validated_at + ttl && now < e.v.not_after.unix_timestamp() {
                return Ok(e.v.clone());
            }
        }
    }
    let v = validate(chain, dir, at)?;
    let mut guard = chain_cache::CACHE.lock().unwrap();
    let map = guard.get_or_insert_with(Default::default);
    if map.len() >= chain_cache::MAX_ENTRIES {
        map.retain(|_, e| now < e.validated_at + ttl);
        if map.len() >= chain_cache::MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(key, chain_cache::Entry { validated_at: now, v: v.clone() });
    Ok(v)
}

fn exts_of(cert: &X509Ref) -> Result<Vec<Ext>, GsiError> {
    extensions(cert).map_err(|e| GsiError::Rejected { subject: xu::subject(cert), reason: format!("extensions: {e}") })
}

/// Whether `cert` is, by name, a certificate issued by the non-CA certificate `issuer` — which
/// can only be legitimate for a proxy (end-entity and proxy certificates sign nothing else).
pub(crate) fn looks_like_proxy_of(cert: &X509Ref, issuer: &X509Ref) -> bool {
    let issuer_is_ca = extensions(issuer).map(|e| is_ca(&e).unwrap_or(true)).unwrap_or(true);
    !issuer_is_ca && names_equal(cert.issuer_name(), issuer.subject_name())
}

fn validate(chain: &[X509], dir: &CertDir, at: Option<i64>) -> Result<Validated, GsiError> {
    if chain.is_empty() {
        return Err(GsiError::EmptyChain);
    }
    let now = at.unwrap_or_else(now_unix);
    let exts: Vec<Vec<Ext>> = chain.iter().map(|c| exts_of(c)).collect::<Result<_, _>>()?;

    // The end-entity certificate: the first one that is not issued (by name) by the next,
    // non-CA, certificate. Everything before it must validate as a proxy.
    let mut e = 0;
    while e + 1 < chain.len() && {
        let next_ca = is_ca(&exts[e + 1]).map_err(|err| rejected(&chain[e + 1], err))?;
        !next_ca && names_equal(chain[e].issuer_name(), chain[e + 1].subject_name())
    } {
        e += 1;
    }
    if e > MAX_PROXY_DEPTH {
        return Err(GsiError::Rejected { subject: xu::subject(&chain[0]), reason: format!("{e} proxies is too many") });
    }
    // Whatever follows the end-entity certificate must be CA certificates (ignored: trust comes
    // from the certificates directory only).
    for (c, x) in chain.iter().zip(&exts).skip(e + 1) {
        if !is_ca(x).map_err(|err| rejected(c, err))? {
            return Err(GsiError::Rejected {
                subject: xu::subject(c),
                reason: "a non-CA certificate follows the end-entity certificate in the chain".into(),
            });
        }
    }

    let eec = &chain[e];
    let (ca, mut not_after) = check_end_entity(eec, &exts[e], dir, now, at)?;

    // Proxies, from the one the end-entity certificate signed down to the leaf.
    let mut proxies_rev: Vec<ProxyInfo> = Vec::new();
    let mut limited = false;
    let mut independent = false;
    let mut parent_kind: Option<ProxyKind> = None;
    for i in (0..e).rev() {
        let (cert, parent) = (&chain[i], &chain[i + 1]);
        let info = check_proxy(cert, &exts[i], parent, &exts[i + 1], now)?;
        if let Some(pk) = parent_kind {
            if pk != info.kind {
                return Err(GsiError::BadProxy {
                    subject: info.subject.clone(),
                    reason: format!(
                        "mixing proxy types: a {} proxy cannot be issued by a {} proxy (Globus refuses this too)",
                        info.kind.as_str(),
                        pk.as_str()
                    ),
                });
            }
        }
        if limited && info.policy == ProxyPolicy::Impersonation {
            return Err(GsiError::BadProxy {
                subject: info.subject.clone(),
                reason: "can't sign a non-limited, non-independent proxy with a limited proxy".into(),
            });
        }
        limited |= info.policy == ProxyPolicy::Limited;
        if info.policy == ProxyPolicy::Independent {
            independent = true;
            tracing::debug!(subject = %info.subject, "independent proxy in the chain");
        }
        // Proxies below this one: indices 0..i.
        if let Some(n) = info.path_len {
            if (i as u64) > n {
                return Err(GsiError::PathLengthExceeded { subject: info.subject.clone(), limit: n, found: i });
            }
        }
        not_after = not_after.min(asn1_to_unix(cert.not_after()));
        parent_kind = Some(info.kind);
        proxies_rev.push(info);
    }
    proxies_rev.reverse();
    Ok(Validated {
        identity_dn: xu::subject(eec),
        limited,
        independent,
        proxy_depth: e,
        not_after: OffsetDateTime::from_unix_timestamp(not_after).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        chain: chain[..=e].to_vec(),
        proxies: proxies_rev,
        ca_dn: ca.dn.clone(),
    })
}

fn rejected(cert: &X509Ref, e: der::DerError) -> GsiError {
    GsiError::Rejected { subject: xu::subject(cert), reason: e.to_string() }
}

/// Checks notBefore ≤ now ≤ notAfter; returns notAfter.
fn check_time(cert: &X509Ref, now: i64) -> Result<i64, GsiError> {
    let (Some(nb), Some(na)) = (asn1_to_unix_checked(cert.not_before()), asn1_to_unix_checked(cert.not_after())) else {
        return Err(GsiError::Rejected { subject: xu::subject(cert), reason: "unreadable validity period".into() });
    };
    if now < nb {
        return Err(GsiError::NotYetValid { subject: xu::subject(cert), not_before: unix_to_string(nb) });
    }
    if now > na {
        return Err(GsiError::Expired { subject: xu::subject(cert), not_after: unix_to_string(na) });
    }
    Ok(na)
}

/// Critical extensions Globus' callback accepts (plus subjectAltName and certificatePolicies,
/// which OpenSSL processes, for end-entity certificates).
const KNOWN_CRITICAL_PROXY: [&str; 8] = [
    "2.5.29.19",               // basicConstraints
    "2.5.29.15",               // keyUsage
    "2.5.29.37",               // extKeyUsage
    "2.16.840.1.113730.1.1",   // netscape-cert-type
    "2.5.29.14",               // subjectKeyIdentifier
    "2.5.29.35",               // authorityKeyIdentifier
    OID_PROXY_CERT_INFO,       //
    OID_PROXY_CERT_INFO_DRAFT, //
];
const KNOWN_CRITICAL_EEC_EXTRA: [&str; 2] = ["2.5.29.17", "2.5.29.32"];

fn check_critical(cert: &X509Ref, exts: &[Ext], eec: bool) -> Result<(), GsiError> {
    for x in exts.iter().filter(|x| x.critical) {
        let known = KNOWN_CRITICAL_PROXY.contains(&x.oid.as_str()) || (eec && KNOWN_CRITICAL_EEC_EXTRA.contains(&x.oid.as_str()));
        if !known {
            return Err(GsiError::UnknownCriticalExtension { subject: xu::subject(cert), oid: x.oid.clone() });
        }
    }
    Ok(())
}

/// Finds the trusted CA among `dir`'s CAs named as `cert`'s issuer whose key verifies
/// `cert`'s signature.
fn trusted_issuer<'a>(cert: &X509Ref, dir: &'a CertDir) -> Result<&'a TrustedCa, GsiError> {
    let candidates = dir.issuers_of(cert);
    if candidates.is_empty() {
        return Err(GsiError::UntrustedIssuer { subject: xu::subject(cert), issuer: xu::issuer(cert) });
    }
    for ca in &candidates {
        let key = ca.cert.public_key()?;
        if cert.verify(&key).unwrap_or(false) {
            return Ok(ca);
        }
    }
    Err(GsiError::BadSignature { subject: xu::subject(cert), issuer: xu::issuer(cert) })
}

/// Validates an end-entity certificate (a user, host or VOMS server certificate) against the
/// certificates directory as of `now`; returns its issuing CA and the earliest notAfter of the
/// path. `at` is the explicit verification time, if any (None: the current time, cached store).
pub fn check_end_entity<'a>(
    eec: &X509Ref,
    exts: &[Ext],
    dir: &'a CertDir,
    now: i64,
    at: Option<i64>,
) -> Result<(&'a TrustedCa, i64), GsiError> {
    let subject = xu::subject(eec);
    if is_ca(exts).map_err(|e| rejected(eec, e))? {
        return Err(GsiError::Rejected { subject, reason: "a CA certificate cannot authenticate a peer".into() });
    }
    if find_ext(exts, OID_PROXY_CERT_INFO).is_some() || find_ext(exts, OID_PROXY_CERT_INFO_DRAFT).is_some() {
        return Err(GsiError::BadProxy {
            subject,
            reason: "a proxy certificate was presented without the certificate that issued it".into(),
        });
    }
    if let Some(Some(cn)) = rdns(eec.subject_name()).ok().and_then(|r| r.last().map(|l| single_cn(l).ok().flatten())) {
        if (cn == b"proxy" || cn == b"limited proxy") && dir.issuers_of(eec).is_empty() {
            return Err(GsiError::BadProxy {
                subject,
                reason: "a legacy proxy was presented without the certificate that issued it".into(),
            });
        }
    }
    check_critical(eec, exts, true)?;
    let mut not_after = check_time(eec, now)?;
    let ca = trusted_issuer(eec, dir)?;
    ca.check_revocation(eec, now)?;
    ca.check_policy(dir.path(), &subject)?;

    // Up to a self-signed trusted root, every CA from the directory, each with its own
    // validity, revocation status and signing policy.
    let mut cur = ca;
    let mut depth = 0;
    loop {
        not_after = not_after.min(check_time(&cur.cert, now)?);
        let self_signed = xu::self_issued(&cur.cert)
            && cur.cert.public_key().ok().map(|k| cur.cert.verify(&k).unwrap_or(false)).unwrap_or(false);
        if self_signed {
            break;
        }
        depth += 1;
        if depth > MAX_CA_DEPTH {
            return Err(GsiError::Rejected { subject: cur.dn.clone(), reason: "CA path too long".into() });
        }
        let parent = trusted_issuer(&cur.cert, dir)?;
        parent.check_revocation(&cur.cert, now)?;
        parent.check_policy(dir.path(), &cur.dn)?;
        cur = parent;
    }

    // Defence in depth: OpenSSL's own path validation of the end-entity certificate (basic
    // constraints and path lengths of the CAs, name constraints, key usage, …).
    let fresh;
    let store = match at {
        None => dir.store(),
        Some(t) => {
            fresh = dir.openssl_store(Some(t))?;
            &fresh
        }
    };
    let mut ctx = X509StoreContext::new()?;
    let untrusted = Stack::new()?;
    let (ok, err, depth) = ctx.init(store, eec, &untrusted, |c| {
        let ok = c.verify_cert()?;
        Ok((ok, c.error(), c.error_depth()))
    })?;
    if !ok {
        return Err(GsiError::Rejected {
            subject,
            reason: format!("OpenSSL path validation failed at depth {depth}: {}", err.error_string()),
        });
    }
    Ok((ca, not_after))
}

/// The proxyCertInfo reader, for the fuzz targets in `fuzz/`.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_parse_pci(value: &[u8], draft: bool) -> Result<(Option<u64>, String, bool), der::DerError> {
    parse_pci(value, draft)
}

/// Parses a proxyCertInfo value: (pathLen, policy language OID, policy present).
fn parse_pci(value: &[u8], draft: bool) -> Result<(Option<u64>, String, bool), der::DerError> {
    let seq = Tlv::parse(value)?.expect(der::SEQUENCE, "ProxyCertInfo")?;
    let kids = seq.children()?;
    let mut path_len = None;
    let mut policy = None;
    for k in &kids {
        match k.tag {
            der::INTEGER if !draft && policy.is_none() && path_len.is_none() => path_len = Some(k.small_uint()?),
            der::SEQUENCE if policy.is_none() => policy = Some(*k),
            t if draft && t == der::ctx_cons(1) && policy.is_some() && path_len.is_none() => {
                path_len = Some(Tlv::parse(k.content)?.small_uint()?)
            }
            _ => return Err(der::DerError("unexpected field in ProxyCertInfo".into())),
        }
    }
    let policy = policy.ok_or_else(|| der::DerError("ProxyCertInfo without proxyPolicy".into()))?;
    let p = policy.children()?;
    let (lang, has_policy) = match p.as_slice() {
        [l] => (l.oid()?, false),
        [l, v] if v.tag == der::OCTET_STRING => (l.oid()?, true),
        _ => return Err(der::DerError("bad ProxyPolicy".into())),
    };
    Ok((path_len, lang, has_policy))
}

/// Checks that `cert`'s subject is its issuer's name plus exactly one single-valued CN RDN;
/// returns that CN's value.
fn proxy_cn(cert: &X509Ref) -> Result<Vec<u8>, String> {
    let r = rdns(cert.subject_name()).map_err(|e| e.to_string())?;
    let Some((last, prefix)) = r.split_last() else { return Err("empty subject".into()) };
    let cn = single_cn(last).map_err(|e| e.to_string())?.ok_or("the last RDN is not a single CN")?;
    let base = xu::name_from_rdns(prefix).map_err(|e| e.to_string())?;
    if !names_equal(&base, cert.issuer_name()) {
        return Err("the subject without its last CN differs from the issuer".into());
    }
    Ok(cn)
}

fn check_proxy(cert: &X509Ref, exts: &[Ext], parent: &X509Ref, parent_exts: &[Ext], now: i64) -> Result<ProxyInfo, GsiError> {
    let subject = xu::subject(cert);
    let bad = |reason: String| GsiError::BadProxy { subject: subject.clone(), reason };
    let rfc = find_ext(exts, OID_PROXY_CERT_INFO);
    let draft = find_ext(exts, OID_PROXY_CERT_INFO_DRAFT);
    let name_err = |reason: String| GsiError::NotAProxyName { subject: subject.clone(), issuer: xu::issuer(cert), reason };
    let (kind, policy, path_len) = match (rfc, draft) {
        (Some(_), Some(_)) => return Err(bad("both RFC and draft proxyCertInfo extensions".into())),
        (Some(x), None) | (None, Some(x)) => {
            let kind = if rfc.is_some() { ProxyKind::Rfc } else { ProxyKind::Draft };
            if !x.critical {
                return Err(bad("the proxyCertInfo extension is not critical".into()));
            }
            let (path_len, lang, has_policy) =
                parse_pci(&x.value, kind == ProxyKind::Draft).map_err(|e| bad(format!("proxyCertInfo: {e}")))?;
            let policy = match lang.as_str() {
                OID_PPL_INHERIT_ALL => ProxyPolicy::Impersonation,
                OID_PPL_INDEPENDENT => ProxyPolicy::Independent,
                OID_PPL_GLOBUS_LIMITED => ProxyPolicy::Limited,
                other => return Err(bad(format!("unsupported proxy policy language {other}"))),
            };
            if has_policy {
                return Err(bad(format!("proxy policies (language {lang}) are not supported")));
            }
            proxy_cn(cert).map_err(|r| name_err(format!("{} proxy: {r}", kind.as_str())))?;
            (kind, policy, path_len)
        }
        (None, None) => {
            let cn = proxy_cn(cert).map_err(|r| name_err(format!("legacy proxy: {r}")))?;
            let policy = match cn.as_slice() {
                b"proxy" => ProxyPolicy::Impersonation,
                b"limited proxy" => ProxyPolicy::Limited,
                _ => {
                    return Err(name_err(format!(
                        "no proxyCertInfo extension, and the last CN is {:?}, not \"proxy\" or \"limited proxy\"",
                        String::from_utf8_lossy(&cn)
                    )))
                }
            };
            (ProxyKind::Legacy, policy, None)
        }
    };
    if is_ca(exts).map_err(|e| rejected(cert, e))? {
        return Err(bad("a proxy certificate cannot be a CA".into()));
    }
    if let Ok(Some((_, Some(_)))) = basic_constraints(exts) {
        return Err(bad("basicConstraints pathLenConstraint in a proxy".into()));
    }
    if key_usage_digital_signature(parent_exts).map_err(|e| rejected(parent, e))? == Some(false) {
        return Err(bad(format!("its issuer {} may not sign (keyUsage lacks digitalSignature)", xu::subject(parent))));
    }
    check_critical(cert, exts, false)?;
    let key = parent.public_key()?;
    if !cert.verify(&key).unwrap_or(false) {
        return Err(GsiError::BadSignature { subject: subject.clone(), issuer: xu::subject(parent) });
    }
    check_time(cert, now)?;
    Ok(ProxyInfo { subject, kind, policy, path_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_cert_info() {
        // RFC, path length 1, inheritAll (the VOMS proxy of the kit)
        let v = hex("300F020101300A06082B06010505071501");
        assert_eq!(parse_pci(&v, false).unwrap(), (Some(1), OID_PPL_INHERIT_ALL.into(), false));
        // RFC limited, no path length
        let v = hex("300F300D060B2B060104019B5001010109");
        assert_eq!(parse_pci(&v, false).unwrap(), (None, OID_PPL_GLOBUS_LIMITED.into(), false));
        // draft, path length 2 as [1] EXPLICIT after the policy
        let v = hex("3011300A06082B06010505071501A103020102");
        assert_eq!(parse_pci(&v, true).unwrap(), (Some(2), OID_PPL_INHERIT_ALL.into(), false));
        assert!(parse_pci(&v, false).is_err(), "draft layout is not RFC");
        // a policy is reported
        let v = hex("3011300F06082B060105050715010403414243");
        assert!(parse_pci(&v, false).unwrap().2);
        assert!(parse_pci(&hex("3000"), false).is_err());
    }

    /// A self-contained trust directory and chains built with the openssl crate (the integration
    /// test `tests/gsi.rs` does the same with the real Globus tools).
    mod built {
        use super::super::*;
        use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
        use openssl::bn::BigNum;
        use openssl::hash::MessageDigest;
        use openssl::pkey::{PKey, Private};
        use openssl::rsa::Rsa;
        use openssl::x509::extension::{BasicConstraints, KeyUsage};
        use openssl::x509::{X509Extension, X509Name};

        fn key() -> PKey<Private> {
            PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap()
        }

        fn name(parts: &[(&str, &str)]) -> X509Name {
            let mut b = X509Name::builder().unwrap();
            for (k, v) in parts {
                b.append_entry_by_text(k, v).unwrap();
            }
            b.build()
        }

        #[allow(clippy::too_many_arguments)]
        fn cert(
            subject: &X509Name,
            issuer: &X509Name,
            pubkey: &PKey<Private>,
            signer: &PKey<Private>,
            serial: u32,
            ca: bool,
            pci: Option<&[u8]>,
            life: (i64, i64),
        ) -> X509 {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let mut b = X509::builder().unwrap();
            b.set_version(2).unwrap();
            b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap()).unwrap();
            b.set_subject_name(subject).unwrap();
            b.set_issuer_name(issuer).unwrap();
            b.set_pubkey(pubkey).unwrap();
            b.set_not_before(&Asn1Time::from_unix(now + life.0).unwrap()).unwrap();
            b.set_not_after(&Asn1Time::from_unix(now + life.1).unwrap()).unwrap();
            if ca {
                b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
                b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap()).unwrap();
            } else {
                b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build().unwrap()).unwrap();
            }
            if let Some(v) = pci {
                let o = Asn1Object::from_str(OID_PROXY_CERT_INFO).unwrap();
                let v = Asn1OctetString::new_from_bytes(v).unwrap();
                b.append_extension(X509Extension::new_from_der(&o, true, &v).unwrap()).unwrap();
            }
            b.sign(signer, MessageDigest::sha256()).unwrap();
            b.build()
        }

        #[test]
        fn validates_built_chains() {
            let dir = tempfile::tempdir().unwrap();
            let (cak, uk, p1k, p2k) = (key(), key(), key(), key());
            let ca_n = name(&[("O", "Test"), ("CN", "Built CA")]);
            let ca = cert(&ca_n, &ca_n, &cak, &cak, 1, true, None, (-60, 86400));
            std::fs::write(dir.path().join("0badcafe.0"), ca.to_pem().unwrap()).unwrap();
            std::fs::write(
                dir.path().join("0badcafe.signing_policy"),
                "access_id_CA X509 '/O=Test/CN=Built CA'\npos_rights globus CA:sign\ncond_subjects globus '\"/O=Test/*\"'\n",
            )
            .unwrap();
            let certdir = CertDir::load(dir.path()).unwrap();
            let u_n = name(&[("O", "Test"), ("CN", "Alice")]);
            let user = cert(&u_n, &ca_n, &uk, &cak, 2, false, None, (-60, 86400));
            // RFC proxy with pathlen 0, inheritAll
            let p1_n = name(&[("O", "Test"), ("CN", "Alice"), ("CN", "11")]);
            let pci0 = [0x30, 0x0F, 0x02, 0x01, 0x00, 0x30, 0x0A, 0x06, 0x08, 0x2B, 6, 1, 5, 5, 7, 0x15, 0x01];
            let p1 = cert(&p1_n, &u_n, &p1k, &uk, 11, false, Some(&pci0), (-60, 3600));
            let v = validate_chain(&[p1.clone(), user.clone()], &certdir).unwrap();
            assert_eq!((v.identity_dn.as_str(), v.proxy_depth, v.limited), ("/O=Test/CN=Alice", 1, false));
            assert_eq!(v.proxies[0].path_len, Some(0));
            assert_eq!(v.ca_dn, "/O=Test/CN=Built CA");
            // …with the CA at the end, as some peers send it
            assert!(validate_chain(&[p1.clone(), user.clone(), ca.clone()], &certdir).is_ok());
            // a proxy below a pathlen-0 proxy
            let p2_n = name(&[("O", "Test"), ("CN", "Alice"), ("CN", "11"), ("CN", "12")]);
            let pci = [0x30, 0x0C, 0x30, 0x0A, 0x06, 0x08, 0x2B, 6, 1, 5, 5, 7, 0x15, 0x01];
            let p2 = cert(&p2_n, &p1_n, &p2k, &p1k, 12, false, Some(&pci), (-60, 3600));
            let e = validate_chain(&[p2, p1.clone(), user.clone()], &certdir).unwrap_err();
            assert!(matches!(e, GsiError::PathLengthExceeded { limit: 0, found: 1, .. }), "{e}");
            // legacy limited proxy, and an impersonation legacy proxy below it
            let l_n = name(&[("O", "Test"), ("CN", "Alice"), ("CN", "limited proxy")]);
            let l = cert(&l_n, &u_n, &p1k, &uk, 13, false, None, (-60, 3600));
            let v = validate_chain(&[l.clone(), user.clone()], &certdir).unwrap();
            assert!(v.limited);
            assert_eq!(v.proxies[0].kind, ProxyKind::Legacy);
            let ll_n = name(&[("O", "Test"), ("CN", "Alice"), ("CN", "limited proxy"), ("CN", "proxy")]);
            let ll = cert(&ll_n, &l_n, &p2k, &p1k, 14, false, None, (-60, 3600));
            let e = validate_chain(&[ll, l, user.clone()], &certdir).unwrap_err();
            assert!(matches!(e, GsiError::BadProxy { .. }), "{e}");
            // expiry, at a later time and with the time in the message
            let at = OffsetDateTime::now_utc().unix_timestamp() + 7200;
            let e = validate_chain_at(&[p1.clone(), user.clone()], &certdir, at).unwrap_err();
            assert!(matches!(&e, GsiError::Expired { subject, .. } if subject.ends_with("/CN=11")), "{e}");
            // a proxy whose name is not its issuer's plus one CN
            let bad_n = name(&[("O", "Test"), ("CN", "Bob"), ("CN", "proxy")]);
            let bad = cert(&bad_n, &u_n, &p1k, &uk, 15, false, None, (-60, 3600));
            let e = validate_chain(&[bad, user.clone()], &certdir).unwrap_err();
            assert!(matches!(e, GsiError::NotAProxyName { .. }), "{e}");
            // outside the signing policy
            let m_n = name(&[("O", "Other"), ("CN", "Mallory")]);
            let mal = cert(&m_n, &ca_n, &uk, &cak, 3, false, None, (-60, 86400));
            let e = validate_chain(&[mal], &certdir).unwrap_err();
            assert!(matches!(e, GsiError::SigningPolicy { .. }), "{e}");
            // nothing presented
            assert!(validate_chain(&[], &certdir).is_err());
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
