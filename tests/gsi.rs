//! The GSI library (`vws::security`) against real credentials. Once per test binary the kit
//! of `tests/common/gsi.rs` (`gsi-gridftp-up.sh target/gsikit-test PORT` from the shared peers, on a free port)
//! makes a throwaway CA, user, host and VOMS credentials and proxies with the real Globus/VOMS
//! tools; on top of it the set-up makes, under `target/gsikit-test/extra-<pid>/` (removed at
//! exit, never committed), the hostile material: proxies of proxies (grid-proxy-init), an expired
//! proxy, a second CA, an impostor CA with the trusted CA's name, a CRL revoking a user, a user
//! outside the signing policy, badly named legacy proxies, mixed proxy types, path-length
//! violations (`openssl ca`), VOMS proxies with expired/targeted/badly signed ACs
//! (voms-proxy-fake); the tests here add a re-signed proxy whose AC signature was tampered with.
//! Then: accepted chains, refused chains each with its reason, VOMS FQANs, the grid-mapfile, and
//! the TLS glue end to end on loopback.

mod common;

use common::gsi::*;
use openssl::pkey::PKey;
use openssl::x509::X509;
use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use vws::security::certdir::CertDir;
use vws::security::credential::Credential;
use vws::security::proxy::{validate_chain, validate_chain_at, ProxyKind, ProxyPolicy, Validated};
use vws::security::voms::{self, VomsConfig};
use vws::security::{self, tls, GridMap, GsiError, TrustConfig};

// ------------------------------------------------------------------------------ helpers

fn accept(path: &Path) -> Validated {
    validate_chain(&chain(path), &kit().certdir).unwrap_or_else(|e| panic!("{} refused: {e}", path.display()))
}

fn refuse(path: &Path) -> GsiError {
    refuse_in(path, &kit().certdir)
}

fn refuse_in(path: &Path, dir: &CertDir) -> GsiError {
    match validate_chain(&chain(path), dir) {
        Ok(v) => panic!("{} was accepted: {v:?}", path.display()),
        Err(e) => e,
    }
}

fn trust_with_vomsdir(vomsdir: &Path) -> TrustConfig {
    TrustConfig { voms: Some(VomsConfig::new(vomsdir)), ..kit().trust() }
}

// ------------------------------------------------------------------------------ credentials

#[test]
fn loads_credentials_from_the_kit() {
    let k = kit();
    // PKCS#8 proxy, chain = proxy + user certificate
    let c = Credential::load_proxy(k.path("GSI_PROXY_RFC")).unwrap();
    assert_eq!(c.chain.len(), 1);
    assert_eq!(c.identity_dn(), k.user_dn());
    assert!(c.subject_dn().starts_with(&format!("{}/CN=", k.user_dn())));
    assert_eq!(c.certificates().len(), 2);
    assert_eq!(security::x509::subject(&c.certificates()[1]), k.user_dn());
    // PKCS#1 key (voms-proxy-fake)
    assert!(std::fs::read_to_string(k.path("GSI_PROXY_VOMS")).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    let v = Credential::load_proxy(k.path("GSI_PROXY_VOMS")).unwrap();
    assert_eq!(v.identity_dn(), k.user_dn());
    // legacy proxy of a legacy proxy: identity is still the user
    assert_eq!(Credential::load_proxy(&m().legacy2).unwrap().identity_dn(), k.user_dn());
    // user certificate + 0400 key; host credential
    let u = Credential::load(k.path("X509_USER_CERT"), k.path("X509_USER_KEY")).unwrap();
    assert_eq!(u.identity_dn(), k.user_dn());
    assert!(u.chain.is_empty());
    let h = Credential::load(k.path("GSI_HOST_CERT"), k.path("GSI_HOST_KEY")).unwrap();
    assert_eq!(h.subject_dn(), k.var("GSI_HOST_DN"));
    // a key that does not match
    let e = Credential::load(k.path("X509_USER_CERT"), k.path("GSI_HOST_KEY")).unwrap_err();
    assert!(matches!(e, GsiError::BadCredential { .. }) && e.to_string().contains("does not match"), "{e}");
    // permissions wider than 0600, on a proxy file and on a key file
    let loose = k.x.join("loose-proxy.pem");
    std::fs::copy(k.path("GSI_PROXY_RFC"), &loose).unwrap();
    chmod(&loose, 0o644);
    let e = Credential::load_proxy(&loose).unwrap_err();
    assert!(matches!(e, GsiError::KeyPermissions { mode: 0o644, .. }), "{e}");
    assert!(e.to_string().contains("loose-proxy.pem") && e.to_string().contains("too permissive"), "{e}");
    let loose_key = k.x.join("loose-key.pem");
    std::fs::copy(k.path("X509_USER_KEY"), &loose_key).unwrap();
    chmod(&loose_key, 0o640);
    let e = Credential::load(k.path("X509_USER_CERT"), &loose_key).unwrap_err();
    assert!(matches!(e, GsiError::KeyPermissions { .. }) && e.to_string().contains("loose-key.pem"), "{e}");
}

#[test]
fn searches_the_standard_places() {
    let k = kit();
    let env = |pairs: Vec<(&'static str, OsString)>| {
        let map: HashMap<&str, OsString> = pairs.into_iter().collect();
        move |key: &str| map.get(key).cloned()
    };
    let e = env(vec![("X509_USER_PROXY", k.path("GSI_PROXY_LEGACY").into())]);
    let c = Credential::find_user_in(&e).unwrap();
    assert_eq!(c.cert_path, k.path("GSI_PROXY_LEGACY"));
    assert_eq!(c.identity_dn(), k.user_dn());
    // a named proxy that is missing is an error (no fall-back)
    let e = env(vec![
        ("X509_USER_PROXY", k.x.join("nope.pem").into()),
        ("X509_USER_CERT", k.path("X509_USER_CERT").into()),
        ("X509_USER_KEY", k.path("X509_USER_KEY").into()),
    ]);
    assert!(matches!(Credential::find_user_in(&e).unwrap_err(), GsiError::Io { .. }));
    // an expired proxy is refused
    let e = env(vec![("X509_USER_PROXY", m().expired.clone().into())]);
    assert!(matches!(Credential::find_user_in(&e).unwrap_err(), GsiError::Expired { .. }));
    // X509_USER_CERT/KEY (the user's own certificate)
    let e = env(vec![("X509_USER_CERT", k.path("X509_USER_CERT").into()), ("X509_USER_KEY", k.path("X509_USER_KEY").into())]);
    if !Path::new(&format!("/tmp/x509up_u{}", security::credential::current_uid())).exists() {
        assert_eq!(Credential::find_user_in(&e).unwrap().subject_dn(), k.user_dn());
        // ~/.globus/usercert.pem
        let home = k.x.join("home");
        std::fs::create_dir_all(home.join(".globus")).unwrap();
        std::fs::copy(k.path("X509_USER_CERT"), home.join(".globus/usercert.pem")).unwrap();
        std::fs::copy(k.path("X509_USER_KEY"), home.join(".globus/userkey.pem")).unwrap();
        let e = env(vec![("HOME", home.clone().into())]);
        assert_eq!(Credential::find_user_in(&e).unwrap().subject_dn(), k.user_dn());
        let e = env(vec![("HOME", k.x.join("nohome").into())]);
        assert!(matches!(Credential::find_user_in(&e).unwrap_err(), GsiError::NoCredential { .. }));
    }
    // the service credential from X509_USER_CERT/KEY
    let e = env(vec![("X509_USER_CERT", k.path("GSI_HOST_CERT").into()), ("X509_USER_KEY", k.path("GSI_HOST_KEY").into())]);
    assert_eq!(Credential::find_host_in(&e).unwrap().subject_dn(), k.var("GSI_HOST_DN"));
}

#[test]
fn reads_the_trust_directory() {
    let k = kit();
    // both hash names hold the same CA: one trusted CA, known under two hashes, with its policy
    assert_eq!(k.certdir.cas().len(), 1);
    let ca = &k.certdir.cas()[0];
    assert_eq!(ca.dn, k.var("GSI_CA_DN"));
    assert_eq!(ca.hashes.len(), 2);
    assert!(ca.policies.iter().all(|(_, p)| p.is_ok()));
    let d = CertDir::load(&m().crl_dir).unwrap();
    assert_eq!(d.cas()[0].crls.len(), 2);
    assert!(matches!(CertDir::load(k.x.join("no-such-dir")).unwrap_err(), GsiError::Io { .. }));
}

// ------------------------------------------------------------------------------ accepted

#[test]
fn accepts_an_rfc_proxy() {
    let k = kit();
    let v = accept(&k.path("GSI_PROXY_RFC"));
    assert_eq!(v.identity_dn, k.user_dn());
    assert_eq!(v.proxy_depth, 1);
    assert!(!v.limited && !v.independent);
    assert_eq!(v.proxies[0].kind, ProxyKind::Rfc);
    assert_eq!(v.proxies[0].policy, ProxyPolicy::Impersonation);
    assert_eq!(v.ca_dn, k.var("GSI_CA_DN"));
    let leaf_end = security::x509::asn1_to_unix(v.leaf().not_after());
    assert_eq!(v.not_after.unix_timestamp(), leaf_end);
    assert_eq!(security::x509::subject(v.eec()), k.user_dn());
}

#[test]
fn accepts_a_legacy_proxy() {
    let k = kit();
    let v = accept(&k.path("GSI_PROXY_LEGACY"));
    assert_eq!(v.identity_dn, k.user_dn());
    assert_eq!(v.proxy_depth, 1);
    assert_eq!(v.proxies[0].kind, ProxyKind::Legacy);
    assert!(v.proxies[0].subject.ends_with("/CN=proxy"));
    assert!(!v.limited);
}

#[test]
fn accepts_proxies_of_proxies() {
    let k = kit();
    let v = accept(&m().rfc2);
    assert_eq!((v.identity_dn.as_str(), v.proxy_depth), (k.user_dn().as_str(), 2));
    assert!(v.proxies.iter().all(|p| p.kind == ProxyKind::Rfc));
    let v = accept(&m().legacy2);
    assert_eq!((v.identity_dn.as_str(), v.proxy_depth), (k.user_dn().as_str(), 2));
    assert!(v.proxies.iter().all(|p| p.kind == ProxyKind::Legacy));
    assert!(v.proxies[0].subject.ends_with("/CN=proxy/CN=proxy"));
    // a proxy of the VOMS proxy (its path length 1 allows exactly one more)
    let v = accept(&m().voms_child);
    assert_eq!(v.proxy_depth, 2);
    assert_eq!(v.proxies[1].path_len, Some(1));
}

#[test]
fn accepts_draft_and_independent_proxies() {
    let k = kit();
    let v = accept(&m().draft);
    assert_eq!(v.identity_dn, k.user_dn());
    assert_eq!(v.proxies[0].kind, ProxyKind::Draft);
    let v = accept(&m().independent);
    assert_eq!(v.identity_dn, k.user_dn());
    assert!(v.independent && !v.limited);
    assert_eq!(v.proxies[0].policy, ProxyPolicy::Independent);
}

#[test]
fn accepts_limited_proxies_flagged_limited() {
    let k = kit();
    for path in [k.path("GSI_PROXY_RFC_LIMITED"), k.path("GSI_PROXY_LEGACY_LIMITED"), m().limited_child.clone()] {
        let v = accept(&path);
        assert_eq!(v.identity_dn, k.user_dn(), "{}", path.display());
        assert!(v.limited, "{} not limited", path.display());
        assert!(v.proxies.iter().all(|p| p.policy == ProxyPolicy::Limited), "{:?}", v.proxies);
        let c = security::authenticate(&chain(&path), &k.trust()).unwrap();
        assert!(c.limited);
        assert_eq!(c.dn.as_deref(), Some(k.user_dn().as_str()));
    }
    assert!(accept(&k.path("GSI_PROXY_LEGACY_LIMITED")).proxies[0].subject.ends_with("/CN=limited proxy"));
}

#[test]
fn accepts_end_entity_certificates_alone() {
    let k = kit();
    let user = X509::from_pem(&std::fs::read(k.path("X509_USER_CERT")).unwrap()).unwrap();
    let v = validate_chain(&[user], &k.certdir).unwrap();
    assert_eq!((v.identity_dn.clone(), v.proxy_depth, v.limited), (k.user_dn(), 0, false));
    let host = X509::from_pem(&std::fs::read(k.path("GSI_HOST_CERT")).unwrap()).unwrap();
    let v = validate_chain(std::slice::from_ref(&host), &k.certdir).unwrap();
    assert_eq!(v.identity_dn, k.var("GSI_HOST_DN"));
    tls::check_host(&host, "localhost").unwrap();
    tls::check_host(&host, "127.0.0.1").unwrap();
    assert!(tls::check_host(&host, "example.org").is_err());
    // the CA certificate at the end of a presented chain is allowed (and ignored)
    let ca = X509::from_pem(&std::fs::read(k.path("GSI_CA_CERT")).unwrap()).unwrap();
    let mut c = chain(&k.path("GSI_PROXY_RFC"));
    c.push(ca);
    assert_eq!(validate_chain(&c, &k.certdir).unwrap().proxy_depth, 1);
}

// ------------------------------------------------------------------------------ refused

#[test]
fn refuses_an_empty_chain() {
    assert!(matches!(validate_chain(&[], &kit().certdir), Err(GsiError::EmptyChain)));
    assert!(matches!(security::authenticate(&[], &kit().trust()), Err(GsiError::EmptyChain)));
}

#[test]
fn refuses_an_expired_proxy() {
    let e = refuse(&m().expired);
    match &e {
        GsiError::Expired { subject, not_after } => {
            assert!(subject.ends_with("/CN=4242"), "{e}");
            assert_eq!(not_after, "2020-01-02T00:00:00Z");
        }
        _ => panic!("wrong reason: {e}"),
    }
    assert!(e.to_string().contains("expired") && e.to_string().contains("2020-01-02"), "{e}");
    // a one-minute proxy (grid-proxy-init -valid 0:1), two minutes later
    let c = chain(&m().short);
    assert!(validate_chain_at(&c, &kit().certdir, now()).is_ok());
    let e = validate_chain_at(&c, &kit().certdir, now() + 120).unwrap_err();
    assert!(matches!(e, GsiError::Expired { .. }), "{e}");
}

#[test]
fn refuses_an_untrusted_ca() {
    let e = refuse(&m().ca2_proxy);
    match &e {
        GsiError::UntrustedIssuer { subject, issuer } => {
            assert_eq!(subject, &kit().user_dn());
            assert_eq!(issuer, &m().ca2_dn);
        }
        _ => panic!("wrong reason: {e}"),
    }
    assert!(e.to_string().contains("/O=Grid/OU=OtherCA/CN=Other CA"), "{e}");
    // a CA that only borrows the trusted CA's name
    let e = refuse(&m().impostor_proxy);
    assert!(matches!(&e, GsiError::BadSignature { subject, .. } if *subject == kit().user_dn()), "{e}");
}

#[test]
fn refuses_a_revoked_user_certificate() {
    let dir = CertDir::load(&m().crl_dir).unwrap();
    // the revoked user's proxy is fine without the CRL…
    assert_eq!(accept(&m().revoked_proxy).identity_dn, "/O=Grid/OU=GlobusTest/CN=Revoked User");
    // …and refused with it, naming the serial
    let e = refuse_in(&m().revoked_proxy, &dir);
    match &e {
        GsiError::Revoked { subject, serial, issuer } => {
            assert_eq!(subject, "/O=Grid/OU=GlobusTest/CN=Revoked User");
            assert_eq!(serial.trim_start_matches('0'), m().revoked_serial.trim_start_matches('0'));
            assert_eq!(issuer, &kit().var("GSI_CA_DN"));
        }
        _ => panic!("wrong reason: {e}"),
    }
    // others still pass the valid CRL
    assert!(validate_chain(&chain(&kit().path("GSI_PROXY_RFC")), &dir).is_ok());
    // a CRL that is not signed by the CA, or expired, refuses everything from that CA
    for d in [&m().bad_crl_dir, &m().old_crl_dir] {
        let e = refuse_in(&kit().path("GSI_PROXY_RFC"), &CertDir::load(d).unwrap());
        assert!(matches!(e, GsiError::InvalidCrl { .. }), "{e}");
    }
    let e = refuse_in(&kit().path("GSI_PROXY_RFC"), &CertDir::load(&m().old_crl_dir).unwrap());
    assert!(e.to_string().contains("expired"), "{e}");
}

#[test]
fn refuses_a_proxy_signed_by_someone_elses_key() {
    let e = refuse(&m().foreign_key);
    match &e {
        GsiError::BadSignature { subject, issuer } => {
            assert!(subject.ends_with("/CN=777"), "{e}");
            assert_eq!(issuer, &kit().user_dn());
        }
        _ => panic!("wrong reason: {e}"),
    }
}

#[test]
fn refuses_path_length_violations() {
    let e = refuse(&m().pl0_child);
    match &e {
        GsiError::PathLengthExceeded { limit, found, .. } => assert_eq!((*limit, *found), (0, 1)),
        _ => panic!("wrong reason: {e}"),
    }
    // pathlen 0 itself is fine; pathlen 1 allows one proxy below, not two
    assert_eq!(accept(&m().pl0).proxies[0].path_len, Some(0));
    assert_eq!(accept(&m().pl1_child).proxy_depth, 2);
    let e = refuse(&m().pl1_grandchild);
    assert!(matches!(e, GsiError::PathLengthExceeded { limit: 1, found: 2, .. }), "{e}");
    assert!(e.to_string().contains("path length"), "{e}");
    // the VOMS proxy allows one proxy below it, not two
    let e = refuse(&m().voms_grandchild);
    assert!(matches!(e, GsiError::PathLengthExceeded { limit: 1, found: 2, .. }), "{e}");
}

#[test]
fn refuses_signing_policy_violations() {
    let e = refuse(&m().mallory_proxy);
    match &e {
        GsiError::SigningPolicy { ca, subject, .. } => {
            assert_eq!(ca, &kit().var("GSI_CA_DN"));
            assert_eq!(subject, "/O=Evil/CN=Mallory");
        }
        _ => panic!("wrong reason: {e}"),
    }
    // no signing policy file at all: the CA signs nothing
    let e = refuse_in(&kit().path("GSI_PROXY_RFC"), &CertDir::load(&m().no_policy_dir).unwrap());
    assert!(matches!(e, GsiError::SigningPolicy { .. }) && e.to_string().contains("signing_policy"), "{e}");
}

#[test]
fn refuses_badly_named_proxies() {
    for path in [&m().bad_name, &m().bad_name2] {
        let e = refuse(path);
        assert!(matches!(e, GsiError::NotAProxyName { .. }), "{}: {e}", path.display());
    }
    assert!(refuse(&m().bad_name).to_string().contains("\"evil\""));
}

#[test]
fn refuses_mixed_and_escalating_proxies() {
    let e = refuse(&m().mixed);
    assert!(matches!(e, GsiError::BadProxy { .. }) && e.to_string().contains("mixing"), "{e}");
    let e = refuse(&m().unlimited_under_limited);
    assert!(matches!(e, GsiError::BadProxy { .. }) && e.to_string().contains("limited"), "{e}");
}

#[test]
fn refuses_incomplete_or_padded_chains() {
    let k = kit();
    // a proxy without the user certificate
    let c = chain(&k.path("GSI_PROXY_RFC"));
    let e = validate_chain(&c[..1], &k.certdir).unwrap_err();
    assert!(matches!(e, GsiError::BadProxy { .. }), "{e}");
    let c = chain(&k.path("GSI_PROXY_LEGACY"));
    let e = validate_chain(&c[..1], &k.certdir).unwrap_err();
    assert!(matches!(e, GsiError::BadProxy { .. }) && e.to_string().contains("without the certificate"), "{e}");
    // a non-CA certificate after the end-entity certificate
    let mut c = chain(&k.path("GSI_PROXY_RFC"));
    c.push(X509::from_pem(&std::fs::read(k.path("GSI_HOST_CERT")).unwrap()).unwrap());
    let e = validate_chain(&c, &k.certdir).unwrap_err();
    assert!(matches!(&e, GsiError::Rejected { subject, .. } if *subject == k.var("GSI_HOST_DN")), "{e}");
    // the order matters: user certificate first is not a proxy chain
    let mut c = chain(&k.path("GSI_PROXY_RFC"));
    c.reverse();
    let e = validate_chain(&c, &k.certdir).unwrap_err();
    assert!(matches!(e, GsiError::Rejected { .. }) && e.to_string().contains("follows the end-entity"), "{e}");
}

// ------------------------------------------------------------------------------ VOMS

#[test]
fn voms_proxy_yields_its_fqans() {
    let k = kit();
    let c = security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &k.trust()).unwrap();
    assert_eq!(c.dn.as_deref(), Some(k.user_dn().as_str()));
    assert_eq!(c.fqans, vec![k.var("GSI_VOMS_FQAN"), "/testvo".to_string()]);
    assert_eq!(c.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
    assert!(!c.limited);
    // the details
    let v = accept(&k.path("GSI_PROXY_VOMS"));
    let acs = voms::find_acs(&v).unwrap();
    assert_eq!(acs.len(), 1);
    assert_eq!((acs[0].vo.as_str(), acs[0].uri.as_str()), ("testvo", "localhost:15000"));
    assert_eq!(acs[0].issuer_dn, "/O=Grid/OU=GlobusTest/CN=voms.localhost");
    assert_eq!(acs[0].certs.len(), 1);
    let attrs = voms::attributes(&v, &k.certdir, &k.voms(), None);
    assert_eq!(attrs[0].vo, "testvo");
    // a proxy of the VOMS proxy keeps them
    let c = security::authenticate(&chain(&m().voms_child), &k.trust()).unwrap();
    assert_eq!(c.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
    // with the server certificate itself in the vomsdir instead of an .lsc file
    let c = security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &trust_with_vomsdir(&m().vomsdir_cert)).unwrap();
    assert_eq!(c.fqans.len(), 2);
    // NULL roles and capabilities are normalised away
    let c = security::authenticate(&chain(&m().voms_null), &k.trust()).unwrap();
    assert_eq!(c.fqans, vec!["/testvo".to_string(), "/testvo/sub/Role=admin".to_string()]);
    // without VOMS configured there are no FQANs
    let t = TrustConfig { voms: None, ..k.trust() };
    assert!(security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &t).unwrap().fqans.is_empty());
}

/// Accepted as the user, but without FQANs.
fn identity_without_fqans(c: &[X509], t: &TrustConfig, dn: &str) {
    let caller = security::authenticate(c, t).unwrap_or_else(|e| panic!("identity refused: {e}"));
    assert_eq!(caller.dn.as_deref(), Some(dn));
    assert!(caller.fqans.is_empty(), "untrusted AC yielded {:?}", caller.fqans);
}

#[test]
fn a_tampered_ac_is_ignored() {
    let k = kit();
    let vc = chain(&k.path("GSI_PROXY_VOMS"));
    let exts = security::x509::extensions(&vc[0]).unwrap();
    let ac = security::x509::find_ext(&exts, voms::OID_VOMS_ACSEQ).unwrap().value.clone();
    let user = X509::from_pem(&std::fs::read(k.path("X509_USER_CERT")).unwrap()).unwrap();
    let key = PKey::private_key_from_pem(&std::fs::read(k.path("X509_USER_KEY")).unwrap()).unwrap();
    // control: the same AC in a proxy re-made by this test is trusted
    let control = rust_proxy(&user, &key, Some(&ac));
    let c = security::authenticate(&[control, user.clone()], &k.trust()).unwrap();
    assert_eq!(c.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
    // the AC's signature is the last bytes of the value: flip one
    let mut bad = ac.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    let tampered = rust_proxy(&user, &key, Some(&bad));
    identity_without_fqans(&[tampered.clone(), user.clone()], &k.trust(), &k.user_dn());
    let v = validate_chain(&[tampered, user], &k.certdir).unwrap();
    let why = voms::verify_ac(&voms::find_acs(&v).unwrap()[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("signature"), "{why}");
    // signed with a key that is not the VOMS server's
    identity_without_fqans(&chain(&m().voms_bad_key), &k.trust(), &k.user_dn());
}

#[test]
fn an_ac_for_someone_else_is_ignored() {
    let k = kit();
    let vc = chain(&k.path("GSI_PROXY_VOMS"));
    let exts = security::x509::extensions(&vc[0]).unwrap();
    let ac = security::x509::find_ext(&exts, voms::OID_VOMS_ACSEQ).unwrap().value.clone();
    let rev = X509::from_pem(&std::fs::read(&m().revoked_cert).unwrap()).unwrap();
    let key = PKey::private_key_from_pem(&std::fs::read(&m().revoked_key).unwrap()).unwrap();
    let p = rust_proxy(&rev, &key, Some(&ac));
    identity_without_fqans(&[p.clone(), rev.clone()], &k.trust(), "/O=Grid/OU=GlobusTest/CN=Revoked User");
    let v = validate_chain(&[p, rev], &k.certdir).unwrap();
    let why = voms::verify_ac(&voms::find_acs(&v).unwrap()[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("granted to serial"), "{why}");
}

#[test]
fn an_ac_without_vomsdir_trust_is_ignored() {
    let k = kit();
    let c = chain(&k.path("GSI_PROXY_VOMS"));
    identity_without_fqans(&c, &trust_with_vomsdir(&m().vomsdir_wrong), &k.user_dn());
    identity_without_fqans(&c, &trust_with_vomsdir(&m().vomsdir_empty), &k.user_dn());
    // the VOMS server certificate must also chain to a trusted CA with a signing policy
    let t = TrustConfig { cert_dir: CertDir::load(&m().no_policy_dir).unwrap(), ..k.trust() };
    assert!(security::authenticate(&c, &t).is_err(), "the user is not trusted there either");
}

#[test]
fn expired_and_foreign_vo_acs_are_ignored() {
    let k = kit();
    // voms-proxy-fake -vomslife 1 -pastac 2:00: the AC ended an hour ago, the proxy is fresh
    identity_without_fqans(&chain(&m().voms_expired_ac), &k.trust(), &k.user_dn());
    let v = accept(&m().voms_expired_ac);
    let acs = voms::find_acs(&v).unwrap();
    let why = voms::verify_ac(&acs[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("expired"), "{why}");
    assert_eq!(acs[0].not_after - acs[0].not_before, 3600);
    assert!(acs[0].not_after < now() - 3000);
    // (targeted ACs are not exercised: voms-proxy-fake 2.1.0~rc3 crashes with -target)
    // FQANs outside the AC's VO
    identity_without_fqans(&chain(&m().voms_other_vo), &k.trust(), &k.user_dn());
    let v = accept(&m().voms_other_vo);
    let why = voms::verify_ac(&voms::find_acs(&v).unwrap()[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("outside VO testvo"), "{why}");
    // the proxy's own lifetime still bounds everything
    let c = chain(&k.path("GSI_PROXY_VOMS"));
    assert_eq!(security::authenticate_at(&c, &k.trust(), now()).unwrap().fqans.len(), 2);
    let e = security::authenticate_at(&c, &k.trust(), now() + 8 * 86400).unwrap_err();
    assert!(matches!(e, GsiError::Expired { .. }), "{e}");
}

// ------------------------------------------------------------------------------ grid-mapfile

#[test]
fn maps_through_the_grid_mapfile() {
    let k = kit();
    let t = TrustConfig { gridmap: Some(GridMap::load(k.path("GRIDMAP")).unwrap()), ..k.trust() };
    let c = security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &t).unwrap();
    assert_eq!(c.account.as_deref(), Some(k.var("GSI_LOCAL_USER").as_str()));
    assert_eq!(c.as_owner().account, c.account);
    let e = security::authenticate(&chain(&m().revoked_proxy), &t).unwrap_err();
    assert!(matches!(&e, GsiError::NotInGridmap { dn, .. } if dn == "/O=Grid/OU=GlobusTest/CN=Revoked User"), "{e}");
}

// ------------------------------------------------------------------------------ TLS

struct Handshake {
    /// What the server concluded about the client.
    server_view: Result<Validated, GsiError>,
    /// The server as seen by the client.
    client_view: Result<Validated, GsiError>,
    caller: Result<security::Caller, GsiError>,
}

fn handshake(client: Option<&Credential>) -> Handshake {
    let k = kit();
    let host = Credential::load(k.path("GSI_HOST_CERT"), k.path("GSI_HOST_KEY")).unwrap();
    let acceptor = tls::acceptor(&host).unwrap().build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let stream = acceptor.accept(s).unwrap_or_else(|e| panic!("server handshake: {e}"));
        let trust = kit().trust();
        (tls::verify_peer(stream.ssl(), &kit().certdir), security::authenticate_peer(stream.ssl(), &trust), stream)
    });
    let connector = tls::connector(client).unwrap().build();
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let stream = connector.configure().unwrap().verify_hostname(false).connect("localhost", s).unwrap();
    let client_view = tls::verify_peer(stream.ssl(), &k.certdir);
    let (server_view, caller, _server_stream) = server.join().unwrap();
    drop(stream);
    Handshake { server_view, client_view, caller }
}

#[test]
fn tls_peers_are_validated_end_to_end() {
    let k = kit();
    let cases: Vec<(PathBuf, usize, bool)> = vec![
        (k.path("GSI_PROXY_RFC"), 1, false),
        (k.path("GSI_PROXY_LEGACY"), 1, false),
        (k.path("GSI_PROXY_RFC_LIMITED"), 1, true),
        (k.path("GSI_PROXY_LEGACY_LIMITED"), 1, true),
        (k.path("GSI_PROXY_VOMS"), 1, false),
        (m().rfc2.clone(), 2, false),
        (m().legacy2.clone(), 2, false),
        (m().draft.clone(), 1, false),
    ];
    for (path, depth, limited) in cases {
        let cred = Credential::load_proxy(&path).unwrap();
        let h = handshake(Some(&cred));
        let v = h.server_view.unwrap_or_else(|e| panic!("{}: refused over TLS: {e}", path.display()));
        assert_eq!(v.identity_dn, k.user_dn(), "{}", path.display());
        assert_eq!((v.proxy_depth, v.limited), (depth, limited), "{}", path.display());
        let caller = h.caller.unwrap();
        assert_eq!(caller.dn.as_deref(), Some(k.user_dn().as_str()));
        if path == k.path("GSI_PROXY_VOMS") {
            assert_eq!(caller.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
        }
        // and the client sees the host
        let sv = h.client_view.unwrap();
        assert_eq!((sv.identity_dn.as_str(), sv.proxy_depth), (k.var("GSI_HOST_DN").as_str(), 0));
        tls::check_host(sv.eec(), "localhost").unwrap();
    }
    // the user's own certificate, no proxy
    let user = Credential::load(k.path("X509_USER_CERT"), k.path("X509_USER_KEY")).unwrap();
    assert_eq!(handshake(Some(&user)).server_view.unwrap().proxy_depth, 0);
}

#[test]
fn tls_refuses_anonymous_and_untrusted_clients() {
    let h = handshake(None);
    assert!(matches!(h.server_view, Err(GsiError::NoPeerCertificate)), "{:?}", h.server_view.map(|v| v.identity_dn));
    assert!(matches!(h.caller, Err(GsiError::NoPeerCertificate)));
    for (path, kind) in [
        (&m().ca2_proxy, "untrusted_issuer"),
        (&m().foreign_key, "bad_signature"),
        (&m().mallory_proxy, "signing_policy"),
        (&m().pl0_child, "path_length"),
    ] {
        let cred = Credential::load_proxy(path).unwrap();
        let h = handshake(Some(&cred));
        let e = h.server_view.err().unwrap_or_else(|| panic!("{} accepted over TLS", path.display()));
        assert_eq!(e.kind(), kind, "{}: {e}", path.display());
        assert!(h.caller.is_err());
    }
}
