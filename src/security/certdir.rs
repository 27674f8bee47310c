//! Trust anchors from a Globus-layout trusted certificates directory (`X509_CERT_DIR`, default
//! `/etc/grid-security/certificates`): `<hash>.N` CA certificates, `<hash>.rN` CRLs and
//! `<hash>.signing_policy` EACL files and IGTF `<hash>.namespaces` files. Both are honoured: a
//! CA may only sign subjects its `cond_subjects` patterns allow and its namespaces `PERMIT` (and
//! no `DENY` forbids); when a CA has both files both must agree, and a CA with neither signs
//! nothing (as Globus refuses with "The signing policy file doesn't exist or can't be read").
//! A CRL past its nextUpdate refuses its CA's certificates or only warns, per [`CrlPolicy`].
//! [`CertDir::problems`] lists what could not be read, so a reload can refuse a broken directory
//! and keep the last good one.

use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{CrlStatus, X509Crl, X509Ref, X509};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::x509::{self as xu, asn1_to_unix_checked, dn_eq, names_equal, unix_to_string};
use super::GsiError;

pub const DEFAULT_CERT_DIR: &str = "/etc/grid-security/certificates";

/// One `access_id_CA` block of a signing policy file.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyEntry {
    /// The CA DN the block is about (slash form).
    pub ca_dn: String,
    /// `pos_rights globus CA:sign` is present.
    pub can_sign: bool,
    /// `neg_rights globus CA:sign` is present (denies everything).
    pub denied: bool,
    /// `cond_subjects globus '"pattern" …'`.
    pub patterns: Vec<String>,
}

/// A parsed `<hash>.signing_policy` file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SigningPolicy {
    pub entries: Vec<PolicyEntry>,
}

impl SigningPolicy {
    /// Parses the EACL format:
    /// ```text
    /// access_id_CA   X509    '/O=Grid/OU=GlobusTest/CN=GridTest CA'
    /// pos_rights     globus  CA:sign
    /// cond_subjects  globus  '"/O=Grid/OU=GlobusTest/*"'
    /// ```
    pub fn parse(text: &str) -> Result<SigningPolicy, String> {
        let toks = tokenize(text)?;
        let mut entries: Vec<PolicyEntry> = Vec::new();
        let mut i = 0;
        // Every keyword takes two arguments.
        let need = |i: usize, what: &str| -> Result<(), String> {
            if i + 2 >= toks.len() {
                Err(format!("{what}: missing arguments"))
            } else {
                Ok(())
            }
        };
        while i < toks.len() {
            let t = toks[i].as_str();
            match t {
                "access_id_CA" => {
                    need(i, t)?;
                    if toks[i + 1] != "X509" {
                        return Err(format!("access_id_CA: unsupported type {:?}", toks[i + 1]));
                    }
                    entries.push(PolicyEntry {
                        ca_dn: toks[i + 2].clone(),
                        can_sign: false,
                        denied: false,
                        patterns: Vec::new(),
                    });
                    i += 3;
                }
                "pos_rights" | "neg_rights" => {
                    need(i, t)?;
                    let e = entries.last_mut().ok_or_else(|| format!("{t} before access_id_CA"))?;
                    if toks[i + 1] == "globus" && toks[i + 2] == "CA:sign" {
                        if t == "pos_rights" {
                            e.can_sign = true;
                        } else {
                            e.denied = true;
                        }
                    }
                    i += 3;
                }
                "cond_subjects" => {
                    need(i, t)?;
                    let e = entries.last_mut().ok_or_else(|| "cond_subjects before access_id_CA".to_string())?;
                    if toks[i + 1] != "globus" {
                        return Err(format!("cond_subjects: unsupported authority {:?}", toks[i + 1]));
                    }
                    e.patterns.extend(parse_patterns(&toks[i + 2])?);
                    i += 3;
                }
                // Other principals (access_id_ANYBODY, …) grant nothing here: skip their line.
                other if other.starts_with("access_id_") => {
                    entries.push(PolicyEntry { ca_dn: String::new(), can_sign: false, denied: true, patterns: vec![] });
                    i += 1;
                    while i < toks.len() && !toks[i].starts_with("access_id_") && !KEYWORDS.contains(&toks[i].as_str()) {
                        i += 1;
                    }
                }
                other => return Err(format!("unexpected token {other:?}")),
            }
        }
        Ok(SigningPolicy { entries })
    }

    /// Whether the policy lets `ca_dn` sign `subject`; Err names why not.
    pub fn allows(&self, ca_dn: &str, subject: &str) -> Result<(), String> {
        let mine: Vec<&PolicyEntry> = self.entries.iter().filter(|e| dn_eq(&e.ca_dn, ca_dn)).collect();
        if mine.is_empty() {
            return Err(format!("no policy for CA {ca_dn}"));
        }
        if mine.iter().any(|e| e.denied) {
            return Err("the policy denies CA:sign".into());
        }
        for e in &mine {
            if e.can_sign && e.patterns.iter().any(|p| glob_match(p, subject)) {
                return Ok(());
            }
        }
        let pats: Vec<&str> = mine.iter().flat_map(|e| e.patterns.iter().map(String::as_str)).collect();
        Err(format!("subject matches none of the permitted patterns {pats:?}"))
    }
}

const KEYWORDS: [&str; 3] = ["pos_rights", "neg_rights", "cond_subjects"];

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut toks = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => s.push(c),
                    None => return Err("unterminated quoted string".into()),
                }
            }
            toks.push(s);
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '\'' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            toks.push(s);
        }
    }
    Ok(toks)
}

/// `"pat1" "pat2"` (or a single unquoted pattern) → patterns.
fn parse_patterns(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    if !s.contains('"') {
        return if s.is_empty() { Err("empty cond_subjects".into()) } else { Ok(vec![s.to_string()]) };
    }
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let Some(r) = rest.strip_prefix('"') else {
            return Err(format!("cond_subjects: expected a quoted pattern at {rest:?}"));
        };
        let end = r.find('"').ok_or("cond_subjects: unterminated pattern")?;
        out.push(r[..end].to_string());
        rest = &r[end + 1..];
    }
    if out.is_empty() {
        return Err("empty cond_subjects".into());
    }
    Ok(out)
}

/// Shell-style match where `*` matches any run of characters and everything else is literal
/// (Globus has no other wildcard). Globus itself only honours a trailing `*` (prefix match up to
/// the last star); for such patterns — all that IGTF policies use — the result is identical, and
/// for others this is stricter.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p = pattern.as_bytes();
    let t = s.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// What a CRL past its nextUpdate does (`security.crl_policy`): refuse every certificate of its
/// CA (the default, as Globus does), or log a warning and keep checking serials against it (as
/// fetch-crl users who tolerate a late refresh expect).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrlPolicy {
    #[default]
    Refuse,
    Warn,
}

impl CrlPolicy {
    pub fn parse(s: &str) -> Option<CrlPolicy> {
        match s {
            "refuse" => Some(CrlPolicy::Refuse),
            "warn" => Some(CrlPolicy::Warn),
            _ => None,
        }
    }
}

/// One statement of an IGTF namespaces file: `TO Issuer "<dn>"|SELF PERMIT|DENY Subject "<re>"`.
#[derive(Clone, Debug)]
pub struct NamespaceRule {
    /// The issuer DN (slash form); None for `SELF` (the CA the file belongs to).
    pub issuer: Option<String>,
    pub permit: bool,
    /// The subject pattern as written (a POSIX extended regular expression, matched whole).
    pub pattern: String,
    re: regex::Regex,
}

/// A parsed `<hash>.namespaces` file (IGTF "namespaces" policy language, version 1.0).
#[derive(Clone, Debug, Default)]
pub struct Namespaces {
    pub rules: Vec<NamespaceRule>,
}

impl Namespaces {
    /// Parses:
    /// ```text
    /// #NAMESPACES-VERSION: 1.0
    /// TO Issuer "/O=Grid/OU=GlobusTest/CN=GridTest CA" \
    ///   PERMIT Subject "/O=Grid/OU=GlobusTest/.*"
    /// ```
    /// Keywords are case-insensitive; a backslash at the end of a line continues it; `#` starts
    /// a comment outside quotes.
    pub fn parse(text: &str) -> Result<Namespaces, String> {
        let mut toks: Vec<(bool, String)> = Vec::new(); // (quoted, text)
        for (n, line) in text.lines().enumerate() {
            let mut chars = line.chars().peekable();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '\\' && chars.clone().skip(1).all(char::is_whitespace) {
                    chars.next();
                } else if c == '#' {
                    break;
                } else if c == '"' {
                    chars.next();
                    let mut s = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(c) => s.push(c),
                            None => return Err(format!("line {}: unterminated quoted string", n + 1)),
                        }
                    }
                    toks.push((true, s));
                } else {
                    let mut s = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_whitespace() || c == '"' {
                            break;
                        }
                        s.push(c);
                        chars.next();
                    }
                    toks.push((false, s));
                }
            }
        }
        let kw = |i: usize, want: &str| toks.get(i).is_some_and(|(q, t)| !q && t.eq_ignore_ascii_case(want));
        let mut rules = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            if !kw(i, "TO") || !kw(i + 1, "Issuer") {
                return Err(format!("expected TO Issuer, found {:?}", toks[i].1));
            }
            let issuer = match toks.get(i + 2) {
                Some((true, dn)) => Some(dn.clone()),
                Some((false, s)) if s.eq_ignore_ascii_case("SELF") => None,
                _ => return Err("TO Issuer: expected a quoted DN or SELF".into()),
            };
            let permit = if kw(i + 3, "PERMIT") {
                true
            } else if kw(i + 3, "DENY") {
                false
            } else {
                return Err("expected PERMIT or DENY after the issuer".into());
            };
            if !kw(i + 4, "Subject") {
                return Err("expected Subject after PERMIT/DENY".into());
            }
            let pattern = match toks.get(i + 5) {
                Some((true, p)) => p.clone(),
                _ => return Err("Subject: expected a quoted pattern".into()),
            };
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("Subject {pattern:?}: {e}"))?;
            rules.push(NamespaceRule { issuer, permit, pattern, re });
            i += 6;
        }
        Ok(Namespaces { rules })
    }

    /// Whether the namespaces let `ca_dn` issue `subject`: a PERMIT of this issuer matches and
    /// no DENY of it does. Err names why not.
    pub fn allows(&self, ca_dn: &str, subject: &str) -> Result<(), String> {
        let mine: Vec<&NamespaceRule> =
            self.rules.iter().filter(|r| r.issuer.as_deref().is_none_or(|i| dn_eq(i, ca_dn))).collect();
        if mine.is_empty() {
            return Err(format!("no namespace for CA {ca_dn}"));
        }
        if let Some(d) = mine.iter().find(|r| !r.permit && r.re.is_match(subject)) {
            return Err(format!("subject is denied by the namespace {:?}", d.pattern));
        }
        if mine.iter().any(|r| r.permit && r.re.is_match(subject)) {
            return Ok(());
        }
        let pats: Vec<&str> = mine.iter().filter(|r| r.permit).map(|r| r.pattern.as_str()).collect();
        Err(format!("subject matches none of the permitted namespaces {pats:?}"))
    }
}

/// A CRL file found in the directory.
pub enum CrlFile {
    Parsed {
        crl: X509Crl,
        path: PathBuf,
    },
    /// Present but unreadable: every certificate of the CA with this hash is refused.
    Unreadable {
        path: PathBuf,
        reason: String,
    },
}

/// One trusted CA.
pub struct TrustedCa {
    pub cert: X509,
    pub dn: String,
    /// The file basenames (hashes) it was found under.
    pub hashes: Vec<String>,
    /// Signing policies from `<hash>.signing_policy` (Err: present but unparsable).
    pub policies: Vec<(PathBuf, Result<SigningPolicy, String>)>,
    /// IGTF namespaces from `<hash>.namespaces` (Err: present but unparsable).
    pub namespaces: Vec<(PathBuf, Result<Namespaces, String>)>,
    pub crls: Vec<CrlFile>,
    /// What a CRL past its nextUpdate does.
    pub crl_policy: CrlPolicy,
}

impl TrustedCa {
    /// Checks the CA's signing policy for `subject`.
    pub fn check_policy(&self, dir: &Path, subject: &str) -> Result<(), GsiError> {
        let fail = |reason: String| GsiError::SigningPolicy { ca: self.dn.clone(), subject: subject.into(), reason };
        if self.policies.is_empty() && self.namespaces.is_empty() {
            let h = self.hashes.first().cloned().unwrap_or_default();
            return Err(fail(format!(
                "the signing policy file {} doesn't exist or can't be read (nor a .namespaces file)",
                dir.join(format!("{h}.signing_policy")).display()
            )));
        }
        // Each kind of file present must allow the subject (one of its files suffices).
        fn any_allows<T>(
            files: &[(PathBuf, Result<T, String>)],
            allows: impl Fn(&T) -> Result<(), String>,
        ) -> Result<(), String> {
            let mut reasons = Vec::new();
            for (path, p) in files {
                match p {
                    Ok(p) => match allows(p) {
                        Ok(()) => return Ok(()),
                        Err(r) => reasons.push(format!("{}: {r}", path.display())),
                    },
                    Err(e) => reasons.push(format!("{}: unparsable: {e}", path.display())),
                }
            }
            if reasons.is_empty() {
                Ok(())
            } else {
                Err(reasons.join("; "))
            }
        }
        any_allows(&self.policies, |p| p.allows(&self.dn, subject)).map_err(fail)?;
        any_allows(&self.namespaces, |n| n.allows(&self.dn, subject)).map_err(fail)?;
        Ok(())
    }

    /// The earliest nextUpdate of this CA's CRLs (Unix seconds).
    pub fn next_crl_update(&self) -> Option<i64> {
        self.crls
            .iter()
            .filter_map(|c| match c {
                CrlFile::Parsed { crl, .. } => crl.next_update().and_then(asn1_to_unix_checked),
                CrlFile::Unreadable { .. } => None,
            })
            .min()
    }

    /// Checks `cert` (issued by this CA) against the CA's CRLs at `now`: every CRL must be
    /// readable, signed by the CA and current; the certificate's serial must not be listed.
    pub fn check_revocation(&self, cert: &X509Ref, now: i64) -> Result<(), GsiError> {
        let invalid = |reason: String| GsiError::InvalidCrl { ca: self.dn.clone(), reason };
        let key = self.cert.public_key()?;
        for c in &self.crls {
            let (crl, path) = match c {
                CrlFile::Parsed { crl, path } => (crl, path),
                CrlFile::Unreadable { path, reason } => {
                    return Err(invalid(format!("{}: {reason}", path.display())));
                }
            };
            if !names_equal(crl.issuer_name(), self.cert.subject_name()) {
                continue;
            }
            if !crl.verify(&key).unwrap_or(false) {
                return Err(invalid(format!("{}: signature does not verify with the CA key", path.display())));
            }
            let Some(last) = asn1_to_unix_checked(crl.last_update()) else {
                return Err(invalid(format!("{}: unreadable thisUpdate", path.display())));
            };
            if last > now {
                return Err(invalid(format!("{}: not yet valid (thisUpdate {})", path.display(), unix_to_string(last))));
            }
            if let Some(next) = crl.next_update() {
                let Some(next) = asn1_to_unix_checked(next) else {
                    return Err(invalid(format!("{}: unreadable nextUpdate", path.display())));
                };
                if next < now {
                    let why = format!("{}: expired (nextUpdate {})", path.display(), unix_to_string(next));
                    if self.crl_policy == CrlPolicy::Refuse {
                        return Err(invalid(why));
                    }
                    // crl_policy = "warn": the stale CRL still revokes what it lists.
                    tracing::debug!(ca = %self.dn, "using a stale CRL: {why}");
                }
            }
            if let CrlStatus::Revoked(_) = crl.get_by_cert(&cert.to_owned()) {
                return Err(GsiError::Revoked {
                    subject: xu::subject(cert),
                    serial: xu::serial_hex(cert),
                    issuer: self.dn.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The loaded trusted certificates directory.
pub struct CertDir {
    path: PathBuf,
    cas: Vec<TrustedCa>,
    store: X509Store,
    /// Unique per load: a reloaded directory (new CAs, CRLs, policies) never matches what was
    /// validated against an earlier one (the validated-chain cache is keyed by it).
    generation: u64,
    /// Files that could not be read or parsed (see [`CertDir::problems`]).
    problems: Vec<String>,
}

impl std::fmt::Debug for CertDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertDir")
            .field("path", &self.path)
            .field("cas", &self.cas.iter().map(|c| c.dn.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl CertDir {
    /// `X509_CERT_DIR`, else `/etc/grid-security/certificates`.
    pub fn from_env() -> Result<CertDir, GsiError> {
        let p = std::env::var_os("X509_CERT_DIR").map(PathBuf::from).unwrap_or_else(|| DEFAULT_CERT_DIR.into());
        CertDir::load(p)
    }

    /// Reads the directory. Unreadable CA files are skipped with a warning (as OpenSSL's hash-dir
    /// lookup does); an unreadable CRL or signing policy makes its CA refuse everything.
    pub fn load(path: impl AsRef<Path>) -> Result<CertDir, GsiError> {
        let path = path.as_ref().to_path_buf();
        let rd = std::fs::read_dir(&path).map_err(|e| GsiError::Io { path: path.clone(), source: e })?;
        let mut ca_files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let mut crl_files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let mut policy_files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut ns_files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut problems: Vec<String> = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| GsiError::Io { path: path.clone(), source: e })?;
            let name = ent.file_name().to_string_lossy().to_string();
            let Some((base, ext)) = name.rsplit_once('.') else { continue };
            let p = ent.path();
            if !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_digit()) {
                ca_files.entry(base.to_string()).or_default().push(p);
            } else if ext.len() > 1 && ext.starts_with('r') && ext[1..].bytes().all(|b| b.is_ascii_digit()) {
                crl_files.entry(base.to_string()).or_default().push(p);
            } else if ext == "signing_policy" {
                policy_files.insert(base.to_string(), p);
            } else if ext == "namespaces" {
                ns_files.insert(base.to_string(), p);
            }
        }
        let mut cas: Vec<TrustedCa> = Vec::new();
        for (base, files) in &ca_files {
            for f in files {
                let certs = match std::fs::read(f).map_err(|e| e.to_string()).and_then(|b| {
                    X509::stack_from_pem(&b).or_else(|_| X509::from_der(&b).map(|c| vec![c])).map_err(|e| e.to_string())
                }) {
                    Ok(c) if !c.is_empty() => c,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(file = %f.display(), "skipping unreadable CA file: {e}");
                        problems.push(format!("{}: unreadable CA file: {e}", f.display()));
                        continue;
                    }
                };
                for cert in certs {
                    let der = cert.to_der()?;
                    let idx = match cas.iter().position(|c| c.cert.to_der().map(|d| d == der).unwrap_or(false)) {
                        Some(i) => i,
                        None => {
                            cas.push(TrustedCa {
                                dn: xu::subject(&cert),
                                cert,
                                hashes: vec![],
                                policies: vec![],
                                namespaces: vec![],
                                crls: vec![],
                                crl_policy: CrlPolicy::default(),
                            });
                            cas.len() - 1
                        }
                    };
                    let ca = &mut cas[idx];
                    if !ca.hashes.contains(base) {
                        ca.hashes.push(base.clone());
                        if let Some(pf) = policy_files.get(base) {
                            let parsed =
                                std::fs::read_to_string(pf).map_err(|e| e.to_string()).and_then(|t| SigningPolicy::parse(&t));
                            if let Err(e) = &parsed {
                                tracing::warn!(file = %pf.display(), "unparsable signing policy: {e}");
                                problems.push(format!("{}: unparsable signing policy: {e}", pf.display()));
                            }
                            ca.policies.push((pf.clone(), parsed));
                        }
                        if let Some(nf) = ns_files.get(base) {
                            let parsed =
                                std::fs::read_to_string(nf).map_err(|e| e.to_string()).and_then(|t| Namespaces::parse(&t));
                            if let Err(e) = &parsed {
                                tracing::warn!(file = %nf.display(), "unparsable namespaces file: {e}");
                                problems.push(format!("{}: unparsable namespaces: {e}", nf.display()));
                            }
                            ca.namespaces.push((nf.clone(), parsed));
                        }
                        for cf in crl_files.get(base).into_iter().flatten() {
                            let parsed = std::fs::read(cf).map_err(|e| e.to_string()).and_then(|b| {
                                X509Crl::from_pem(&b).or_else(|_| X509Crl::from_der(&b)).map_err(|e| e.to_string())
                            });
                            ca.crls.push(match parsed {
                                Ok(crl) => CrlFile::Parsed { crl, path: cf.clone() },
                                Err(reason) => {
                                    tracing::warn!(file = %cf.display(), "unreadable CRL: {reason}");
                                    problems.push(format!("{}: unreadable CRL: {reason}", cf.display()));
                                    CrlFile::Unreadable { path: cf.clone(), reason }
                                }
                            });
                        }
                    }
                }
            }
        }
        if cas.is_empty() {
            tracing::warn!(dir = %path.display(), "no trusted CA certificates found");
        }
        let store = build_store(&cas, None)?;
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(CertDir { path, cas, store, generation, problems })
    }

    /// This load's generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets what CRLs past their nextUpdate do, for every CA.
    pub fn set_crl_policy(&mut self, policy: CrlPolicy) {
        for c in &mut self.cas {
            c.crl_policy = policy;
        }
    }

    /// Files of the directory that could not be read or parsed (CA files skipped; CRLs, signing
    /// policies and namespaces that make their CA refuse everything). Empty for a clean directory.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// CRLs past their nextUpdate at `now`: (CA DN, file, nextUpdate).
    pub fn stale_crls(&self, now: i64) -> Vec<(String, PathBuf, i64)> {
        let mut out = Vec::new();
        for ca in &self.cas {
            for c in &ca.crls {
                if let CrlFile::Parsed { crl, path } = c {
                    if let Some(n) = crl.next_update().and_then(asn1_to_unix_checked) {
                        if n < now {
                            out.push((ca.dn.clone(), path.clone(), n));
                        }
                    }
                }
            }
        }
        out
    }

    /// The earliest nextUpdate of any CRL in the directory (Unix seconds).
    pub fn next_crl_update(&self) -> Option<i64> {
        self.cas.iter().filter_map(TrustedCa::next_crl_update).min()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cas(&self) -> &[TrustedCa] {
        &self.cas
    }

    /// The trusted CAs whose subject is the issuer name of `cert`.
    pub fn issuers_of(&self, cert: &X509Ref) -> Vec<&TrustedCa> {
        self.cas.iter().filter(|c| names_equal(c.cert.subject_name(), cert.issuer_name())).collect()
    }

    /// Whether `cert` is one of the trusted CA certificates (byte for byte).
    pub fn contains(&self, cert: &X509Ref) -> bool {
        let Ok(d) = cert.to_der() else { return false };
        self.cas.iter().any(|c| c.cert.to_der().map(|x| x == d).unwrap_or(false))
    }

    /// An OpenSSL store of the CA certificates (CRLs and policies are checked by this library),
    /// verifying at `at` (Unix seconds) when given.
    pub fn openssl_store(&self, at: Option<i64>) -> Result<X509Store, GsiError> {
        build_store(&self.cas, at)
    }

    /// The cached store at the current time.
    pub fn store(&self) -> &X509Store {
        &self.store
    }
}

fn build_store(cas: &[TrustedCa], at: Option<i64>) -> Result<X509Store, GsiError> {
    let mut b = X509StoreBuilder::new()?;
    for c in cas {
        b.add_cert(c.cert.clone())?;
    }
    if let Some(t) = at {
        let mut p = openssl::x509::verify::X509VerifyParam::new()?;
        p.set_time(t as _);
        b.set_param(&p)?;
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kit_policy() {
        let t = "# EACL for the throw-away test CA\naccess_id_CA   X509    '/O=Grid/OU=GlobusTest/CN=GridTest CA'\npos_rights     globus  CA:sign\ncond_subjects  globus  '\"/O=Grid/OU=GlobusTest/*\"'\n";
        let p = SigningPolicy::parse(t).unwrap();
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].patterns, vec!["/O=Grid/OU=GlobusTest/*"]);
        let ca = "/O=Grid/OU=GlobusTest/CN=GridTest CA";
        assert!(p.allows(ca, "/O=Grid/OU=GlobusTest/CN=Test User").is_ok());
        assert!(p.allows(ca, "/O=Evil/CN=Test User").unwrap_err().contains("none of the permitted"));
        assert!(p.allows("/O=Other/CN=CA", "/O=Grid/OU=GlobusTest/CN=x").unwrap_err().contains("no policy"));
    }

    #[test]
    fn several_cas_and_patterns() {
        let t = "access_id_CA X509 '/C=US/O=Globus/CN=Globus CA'\n pos_rights globus CA:sign\n cond_subjects globus '\"/C=us/O=Globus/*\"  \"/C=US/O=Globus/*\" \"/C=US/O=Exact\"'\n\naccess_id_CA X509 '/C=DE/CN=Other'\nneg_rights globus CA:sign\ncond_subjects globus '\"*\"'\n";
        let p = SigningPolicy::parse(t).unwrap();
        assert_eq!(p.entries.len(), 2);
        assert!(p.allows("/C=US/O=Globus/CN=Globus CA", "/C=us/O=Globus/CN=x").is_ok());
        assert!(p.allows("/C=US/O=Globus/CN=Globus CA", "/C=US/O=Exact").is_ok());
        assert!(p.allows("/C=US/O=Globus/CN=Globus CA", "/C=US/O=Exact/CN=more").is_err());
        assert!(p.allows("/C=DE/CN=Other", "/C=DE/CN=x").unwrap_err().contains("denies"));
        assert!(SigningPolicy::parse("pos_rights globus CA:sign").is_err());
        assert!(SigningPolicy::parse("access_id_CA X509 '/O=x").is_err());
        assert!(SigningPolicy::parse("bogus").is_err());
    }

    #[test]
    fn namespaces() {
        let t = "##\n#NAMESPACES-VERSION: 1.0\n# comment\nTO Issuer \"/O=Grid/OU=GlobusTest/CN=GridTest CA\" \\\n  PERMIT Subject \"/O=Grid/OU=GlobusTest/.*\"\n\nto issuer \"/O=Grid/OU=GlobusTest/CN=GridTest CA\" deny subject \"/O=Grid/OU=GlobusTest/CN=Banned.*\"\nTO Issuer SELF PERMIT Subject \"/O=Self/.*\"\n";
        let n = Namespaces::parse(t).unwrap();
        assert_eq!(n.rules.len(), 3);
        let ca = "/O=Grid/OU=GlobusTest/CN=GridTest CA";
        assert!(n.allows(ca, "/O=Grid/OU=GlobusTest/CN=Test User").is_ok());
        assert!(n.allows(ca, "/O=Self/CN=x").is_ok(), "SELF is the CA of the file");
        assert!(n.allows(ca, "/O=Grid/OU=GlobusTest/CN=Banned One").unwrap_err().contains("denied"));
        assert!(n.allows(ca, "/O=Evil/CN=x").unwrap_err().contains("none of the permitted"));
        assert!(n.allows(ca, "x/O=Grid/OU=GlobusTest/CN=a").is_err(), "patterns match the whole DN");
        let other = Namespaces::parse("TO Issuer \"/O=Other/CN=CA\" PERMIT Subject \".*\"").unwrap();
        assert!(other.allows(ca, "/O=Grid/OU=GlobusTest/CN=a").unwrap_err().contains("no namespace"));
        assert!(Namespaces::parse("TO Issuer \"/O=x\" PERMIT Subject \"(\"").is_err());
        assert!(Namespaces::parse("TO Issuer \"/O=x\" ALLOW Subject \".*\"").is_err());
        assert!(Namespaces::parse("TO Issuer \"/O=x").is_err());
        assert!(Namespaces::parse("PERMIT").is_err());
        assert!(Namespaces::parse("# only comments\n").unwrap().rules.is_empty());
    }

    #[test]
    fn globbing() {
        assert!(glob_match("/O=Grid/*", "/O=Grid/CN=a"));
        assert!(!glob_match("/O=Grid/*", "/O=Gridx/CN=a"));
        assert!(glob_match("*", ""));
        assert!(glob_match("/O=*/CN=a", "/O=x/y/CN=a"));
        assert!(!glob_match("/O=*/CN=a", "/O=x/CN=b"));
        assert!(glob_match("a?c", "a?c"));
        assert!(!glob_match("a?c", "abc"), "? is literal, as in Globus");
    }
}
