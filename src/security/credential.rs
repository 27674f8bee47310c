//! Loading a GSI credential (certificate chain + private key) from the standard places, as the
//! Globus tools do: a proxy file (`X509_USER_PROXY`, `/tmp/x509up_u<uid>`: certificate, key,
//! then the issuing chain), a user certificate and key (`X509_USER_CERT`/`X509_USER_KEY`,
//! `~/.globus/usercert.pem`/`userkey.pem`) or the host credential (`/etc/grid-security/
//! hostcert.pem`/`hostkey.pem`). Keys may be PKCS#8 or PKCS#1; encrypted keys are refused (no
//! prompt), and so are key files readable by group or others or owned by another user.

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::x509::{self as xu, asn1_to_unix};
use super::GsiError;

pub const HOST_CERT: &str = "/etc/grid-security/hostcert.pem";
pub const HOST_KEY: &str = "/etc/grid-security/hostkey.pem";

/// A certificate chain (leaf first) with the leaf's private key.
#[derive(Clone)]
pub struct Credential {
    /// The leaf certificate (a proxy, a user or a host certificate).
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
    /// The issuing chain after the leaf (for a proxy: earlier proxies, then the user certificate).
    pub chain: Vec<X509>,
    /// Where the certificate came from.
    pub cert_path: PathBuf,
    /// Where the key came from (the same file for a proxy).
    pub key_path: PathBuf,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("subject", &self.subject_dn())
            .field("identity", &self.identity_dn())
            .field("chain_len", &self.chain.len())
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// The current user id.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Refuses key files that are not regular files, are owned by someone else, or are readable or
/// writable by group or others ("Maximum allowable permissions are 600", as Globus says).
pub fn check_key_file(path: &Path) -> Result<(), GsiError> {
    let md = std::fs::metadata(path).map_err(|e| GsiError::Io { path: path.into(), source: e })?;
    if !md.is_file() {
        return Err(GsiError::BadCredential { path: path.into(), reason: "not a regular file".into() });
    }
    let uid = current_uid();
    if md.uid() != uid {
        return Err(GsiError::KeyOwner { path: path.into(), owner: md.uid(), uid });
    }
    let mode = md.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(GsiError::KeyPermissions { path: path.into(), mode });
    }
    Ok(())
}

/// One PEM block: its label and its full text (BEGIN … END lines included).
pub(crate) fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        let l = line.trim_end();
        if let Some(label) = l.strip_prefix("-----BEGIN ").and_then(|r| r.strip_suffix("-----")) {
            cur = Some((label.to_string(), format!("{l}\n")));
        } else if let Some(label) = l.strip_prefix("-----END ").and_then(|r| r.strip_suffix("-----")) {
            if let Some((lab, mut body)) = cur.take() {
                if lab == label {
                    body.push_str(l);
                    body.push('\n');
                    out.push((lab, body));
                }
            }
        } else if let Some((_, body)) = cur.as_mut() {
            body.push_str(l);
            body.push('\n');
        }
    }
    out
}

fn parse_key(path: &Path, label: &str, block: &str) -> Result<PKey<Private>, GsiError> {
    let bad = |reason: String| GsiError::BadCredential { path: path.into(), reason };
    if label == "ENCRYPTED PRIVATE KEY" || block.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(bad("the private key is encrypted (pass-phrase protected keys are not supported)".into()));
    }
    // A passphrase callback that refuses, so OpenSSL never prompts on a terminal.
    PKey::private_key_from_pem_callback(block.as_bytes(), |_buf| Ok(0))
        .map_err(|e| bad(format!("cannot parse the private key: {e}")))
}

fn is_key_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

impl Credential {
    /// Loads a proxy file: the proxy certificate, its private key, then the issuing chain.
    /// (Any file with certificates and one key works: the first certificate is the leaf.)
    pub fn load_proxy(path: impl AsRef<Path>) -> Result<Credential, GsiError> {
        let path = path.as_ref();
        check_key_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| GsiError::Io { path: path.into(), source: e })?;
        let bad = |reason: String| GsiError::BadCredential { path: path.into(), reason };
        let mut certs = Vec::new();
        let mut key = None;
        for (label, block) in pem_blocks(&text) {
            if label == "CERTIFICATE" {
                certs.push(X509::from_pem(block.as_bytes()).map_err(|e| bad(format!("bad certificate: {e}")))?);
            } else if is_key_label(&label) {
                if key.is_some() {
                    return Err(bad("more than one private key".into()));
                }
                key = Some(parse_key(path, &label, &block)?);
            }
        }
        let key = key.ok_or_else(|| bad("no private key".into()))?;
        if certs.is_empty() {
            return Err(bad("no certificate".into()));
        }
        let cert = certs.remove(0);
        Credential::assemble(cert, key, certs, path.into(), path.into())
    }

    /// Loads a certificate file (leaf first, optionally followed by its chain) and a key file.
    pub fn load(cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Result<Credential, GsiError> {
        let (cp, kp) = (cert_path.as_ref(), key_path.as_ref());
        let ctext = std::fs::read(cp).map_err(|e| GsiError::Io { path: cp.into(), source: e })?;
        let mut certs = X509::stack_from_pem(&ctext)
            .map_err(|e| GsiError::BadCredential { path: cp.into(), reason: format!("bad certificate: {e}") })?;
        if certs.is_empty() {
            return Err(GsiError::BadCredential { path: cp.into(), reason: "no certificate".into() });
        }
        check_key_file(kp)?;
        let ktext = std::fs::read_to_string(kp).map_err(|e| GsiError::Io { path: kp.into(), source: e })?;
        let (label, block) = pem_blocks(&ktext)
            .into_iter()
            .find(|(l, _)| is_key_label(l))
            .ok_or_else(|| GsiError::BadCredential { path: kp.into(), reason: "no private key".into() })?;
        let key = parse_key(kp, &label, &block)?;
        let cert = certs.remove(0);
        Credential::assemble(cert, key, certs, cp.into(), kp.into())
    }

    fn assemble(
        cert: X509,
        key: PKey<Private>,
        chain: Vec<X509>,
        cert_path: PathBuf,
        key_path: PathBuf,
    ) -> Result<Credential, GsiError> {
        let matches = cert.public_key().map(|p| p.public_eq(&key)).unwrap_or(false);
        if !matches {
            return Err(GsiError::BadCredential {
                path: key_path,
                reason: format!("the private key does not match the certificate {}", xu::subject(&cert)),
            });
        }
        Ok(Credential { cert, key, chain, cert_path, key_path })
    }

    /// The user's credential, searched as Globus does: the proxy (`X509_USER_PROXY`, else
    /// `/tmp/x509up_u<uid>` if it exists), then `X509_USER_CERT`/`X509_USER_KEY`, then
    /// `~/.globus/usercert.pem`/`userkey.pem`. A proxy that is found but unusable (unreadable,
    /// expired, bad permissions) is an error, not a reason to fall back.
    pub fn find_user() -> Result<Credential, GsiError> {
        Credential::find_user_in(&|k| std::env::var_os(k))
    }

    /// [`Credential::find_user`] with the environment given as a lookup function.
    pub fn find_user_in(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Credential, GsiError> {
        let mut searched = Vec::new();
        let proxy = match env("X509_USER_PROXY") {
            Some(p) => Some(PathBuf::from(p)),
            None => {
                let p = PathBuf::from(format!("/tmp/x509up_u{}", current_uid()));
                if p.exists() {
                    Some(p)
                } else {
                    searched.push(p.display().to_string());
                    None
                }
            }
        };
        if let Some(p) = proxy {
            return Credential::load_proxy(&p).and_then(Credential::unexpired);
        }
        let (cert, key) = match (env("X509_USER_CERT"), env("X509_USER_KEY")) {
            (Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k)),
            (Some(c), None) => (PathBuf::from(&c), PathBuf::from(c)),
            _ => match env("HOME") {
                Some(h) => (Path::new(&h).join(".globus/usercert.pem"), Path::new(&h).join(".globus/userkey.pem")),
                None => {
                    searched.push("~/.globus/usercert.pem (HOME unset)".into());
                    return Err(GsiError::NoCredential { searched: searched.join(", ") });
                }
            },
        };
        if !cert.exists() {
            searched.push(cert.display().to_string());
            return Err(GsiError::NoCredential { searched: searched.join(", ") });
        }
        Credential::load(&cert, &key).and_then(Credential::unexpired)
    }

    /// The service's credential: `X509_USER_CERT`/`X509_USER_KEY` when set (as the Globus
    /// servers do), else `/etc/grid-security/hostcert.pem`/`hostkey.pem`.
    pub fn find_host() -> Result<Credential, GsiError> {
        Credential::find_host_in(&|k| std::env::var_os(k))
    }

    /// [`Credential::find_host`] with the environment given as a lookup function.
    pub fn find_host_in(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Credential, GsiError> {
        let (cert, key) = match (env("X509_USER_CERT"), env("X509_USER_KEY")) {
            (Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k)),
            _ => (PathBuf::from(HOST_CERT), PathBuf::from(HOST_KEY)),
        };
        if !cert.exists() {
            return Err(GsiError::NoCredential { searched: cert.display().to_string() });
        }
        Credential::load(&cert, &key).and_then(Credential::unexpired)
    }

    fn unexpired(self) -> Result<Credential, GsiError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for c in std::iter::once(&self.cert).chain(self.chain.iter()) {
            let na = asn1_to_unix(c.not_after());
            if na < now {
                return Err(GsiError::Expired { subject: xu::subject(c), not_after: xu::unix_to_string(na) });
            }
        }
        Ok(self)
    }

    /// The whole chain, leaf first, as a TLS peer presents it.
    pub fn certificates(&self) -> Vec<X509> {
        std::iter::once(self.cert.clone()).chain(self.chain.iter().cloned()).collect()
    }

    /// Slash-form subject of the leaf.
    pub fn subject_dn(&self) -> String {
        xu::subject(&self.cert)
    }

    /// Slash-form subject of the end-entity certificate: the first certificate of the chain that
    /// is not a proxy of the next one (for a user or host certificate: the leaf itself).
    pub fn identity_dn(&self) -> String {
        let all = self.certificates();
        let mut i = 0;
        while i + 1 < all.len() && super::proxy::looks_like_proxy_of(&all[i], &all[i + 1]) {
            i += 1;
        }
        xu::subject(&all[i])
    }

    /// The earliest notAfter of the chain, Unix seconds.
    pub fn not_after(&self) -> i64 {
        std::iter::once(&self.cert).chain(self.chain.iter()).map(|c| asn1_to_unix(c.not_after())).min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pem_blocks() {
        let t = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\nBBB\n-----END RSA PRIVATE KEY-----\n-----BEGIN X-----\nunterminated\n";
        let b = pem_blocks(t);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].0, "CERTIFICATE");
        assert!(b[1].1.contains("BBB"));
        assert!(is_key_label(&b[1].0));
    }

    #[test]
    fn refuses_group_readable_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = check_key_file(&p).unwrap_err();
        assert!(matches!(e, GsiError::KeyPermissions { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().contains("too permissive") && e.to_string().contains("k.pem"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(check_key_file(&p).is_ok());
    }

    #[test]
    fn refuses_encrypted_keys() {
        let k = openssl::rsa::Rsa::generate(1024).unwrap();
        let pem = k.private_key_to_pem_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"secret").unwrap();
        let text = String::from_utf8(pem).unwrap();
        let (label, block) = pem_blocks(&text).remove(0);
        let e = parse_key(Path::new("/x/key.pem"), &label, &block).unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
    }
}
