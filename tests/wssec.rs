//! WS-Security signed messages (`vws::security::wssec`, GT 4.0's GSI Secure Message) with real
//! credentials: once per test binary the kit script `gsi-gridftp-up.sh target/gsikit-wssec 2815`
//! makes a throwaway CA, user/host/VOMS credentials and RFC/legacy proxies with the real Globus
//! tools (its GridFTP server is stopped again right away with `gsi-gridftp-down.sh`: only the
//! credentials are needed). A second, untrusted CA is made with the openssl command under
//! `target/gsikit-wssec/untrusted-<pid>/`. Then: sign + verify round trips (RFC, legacy, VOMS
//! proxies, host credential, SHA-256), and refusals each with its reason — tampered Body,
//! tampered wsa:To, a signature not covering the Body, replays, expired and future timestamps,
//! an untrusted token, signature wrapping.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use vws::security::credential::Credential;

use vws::security::wssec::{self, Algorithm, ReplayCache, SignOptions, WsSecError};
use vws::security::GridMap;
use vws::soap::envelope::{self, Addressing};
use vws::soap::ns;

mod common;
use common::gsi::{self, Kit};

/// The kit (credentials only; its GridFTP server is stopped at exit), made once per process.
fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| gsi::bring_up(&gsi::repo().join("target/gsikit-wssec"), &gsi::port()))
}

const TO: &str = "https://127.0.0.1:8443/wsrf/services/WorkspaceService";
const ACTION: &str = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties/GetResourceProperty";

/// A request as GT 4.0 clients send it (addressing headers, a reference property, a payload).
fn request(message_id: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"{}\" xmlns:wsa=\"{}\"><soapenv:Header>\
         <wsa:MessageID soapenv:mustUnderstand=\"0\">{message_id}</wsa:MessageID>\
         <wsa:To soapenv:mustUnderstand=\"0\">{TO}</wsa:To>\
         <wsa:Action soapenv:mustUnderstand=\"0\">{ACTION}</wsa:Action>\
         <wsa:From soapenv:mustUnderstand=\"0\"><wsa:Address>{}</wsa:Address></wsa:From>\
         <k:WorkspaceKey xmlns:k=\"{}\" soapenv:mustUnderstand=\"0\">7</k:WorkspaceKey></soapenv:Header>\
         <soapenv:Body><wsrp:GetResourceProperty xmlns:wsrp=\"{}\" xmlns:vws=\"{}\">vws:State</wsrp:GetResourceProperty>\
         </soapenv:Body></soapenv:Envelope>",
        ns::SOAPENV,
        ns::WSA,
        ns::WSA_ANONYMOUS,
        ns::VWS,
        ns::WSRP,
        ns::VWS
    )
}

fn mid() -> String {
    format!("uuid:{}", uuid::Uuid::new_v4())
}

fn verify(msg: &str, replay: &ReplayCache) -> Result<Option<wssec::Signed>, WsSecError> {
    wssec::verify(msg.as_bytes(), &kit().trust(), replay, wssec::now_ms())
}

fn refused(msg: &str) -> WsSecError {
    match verify(msg, &ReplayCache::new()) {
        Ok(s) => panic!("accepted: {s:?}\n{msg}"),
        Err(e) => e,
    }
}

/// The wsu:Id value on the first element whose start tag begins with `tag_start`.
fn id_of(msg: &str, tag_start: &str) -> String {
    let at = msg.find(tag_start).unwrap_or_else(|| panic!("{tag_start} not in {msg}"));
    let tag = &msg[at..at + msg[at..].find('>').unwrap()];
    let i = tag.find(":Id=\"").unwrap_or_else(|| panic!("no Id in {tag}")) + 5;
    tag[i..i + tag[i..].find('"').unwrap()].to_string()
}

// ------------------------------------------------------------------------------ accepted

#[test]
fn rfc_proxy_round_trip() {
    let k = kit();
    let id = mid();
    let signed = wssec::sign(&request(&id), &k.proxy("GSI_PROXY_RFC")).unwrap();
    assert!(signed.contains(wssec::X509_PKIPATH) && signed.contains("mustUnderstand=\"1\""), "{signed}");
    let s = verify(&signed, &ReplayCache::new()).unwrap().expect("signed");
    assert_eq!(s.caller.dn.as_deref(), Some(k.user_dn().as_str()));
    assert!(!s.caller.limited);
    assert_eq!(s.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(s.signature_method, wssec::RSA_SHA1, "GT 4.0 default");
    assert!(s.chain.len() >= 2, "the proxy chain travels in the token");
    for (n, l) in [
        (ns::SOAPENV, "Body"),
        (wssec::WSU, "Timestamp"),
        (ns::WSA, "To"),
        (ns::WSA, "Action"),
        (ns::WSA, "MessageID"),
        (ns::WSA, "From"),
    ] {
        assert!(s.signed_parts.iter().any(|q| q.is(n, l)), "{l} not in {:?}", s.signed_parts);
    }
    let now = wssec::now_ms();
    assert!((now - s.created_ms).abs() < 60_000 && s.expires_ms.unwrap() > now);
    // The signed message is still what the hardened parser and the SOAP layer accept.
    let env = envelope::parse(signed.as_bytes(), &Default::default()).unwrap();
    assert_eq!(env.addressing.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(env.payload().text().trim(), "vws:State");
}

#[test]
fn legacy_proxy_round_trip() {
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_LEGACY")).unwrap();
    let s = verify(&signed, &ReplayCache::new()).unwrap().unwrap();
    assert_eq!(s.caller.dn.as_deref(), Some(k.user_dn().as_str()));
}

#[test]
fn limited_proxy_is_reported_limited() {
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC_LIMITED")).unwrap();
    let s = verify(&signed, &ReplayCache::new()).unwrap().unwrap();
    assert_eq!(s.caller.dn.as_deref(), Some(k.user_dn().as_str()));
    assert!(s.caller.limited);
}

#[test]
fn voms_proxy_sha256_round_trip() {
    let k = kit();
    let opts = SignOptions { algorithm: Algorithm::RsaSha256, ..Default::default() };
    let signed = wssec::sign_with(&request(&mid()), &k.proxy("GSI_PROXY_VOMS"), &opts).unwrap();
    assert!(signed.contains(wssec::SHA256));
    let s = verify(&signed, &ReplayCache::new()).unwrap().unwrap();
    assert_eq!(s.signature_method, wssec::RSA_SHA256);
    assert_eq!(s.caller.dn.as_deref(), Some(k.user_dn().as_str()));
    assert!(s.caller.fqans.contains(&k.var("GSI_VOMS_FQAN")), "{:?}", s.caller.fqans);
}

#[test]
fn gridmap_gives_the_account() {
    let k = kit();
    let mut trust = k.trust();
    trust.gridmap = Some(GridMap::load(k.var("GRIDMAP")).unwrap());
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    let s = wssec::verify(signed.as_bytes(), &trust, &ReplayCache::new(), wssec::now_ms()).unwrap().unwrap();
    assert_eq!(s.caller.account.as_deref(), Some(k.var("GSI_LOCAL_USER").as_str()));
}

#[test]
fn signed_response_with_the_host_credential() {
    let k = kit();
    let host = Credential::load(k.var("GSI_HOST_CERT"), k.var("GSI_HOST_KEY")).unwrap();
    let req = Addressing { message_id: Some(mid()), action: Some(ACTION.into()), to: Some(TO.into()), ..Default::default() };
    let resp = envelope::response(&req, TO, &format!("{ACTION}Response"), "<wsrp:GetResourcePropertyResponse xmlns:wsrp=\"http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties-1.2-draft-01.xsd\"/>");
    let signed = wssec::sign(&resp, &host).unwrap();
    let s = verify(&signed, &ReplayCache::new()).unwrap().unwrap();
    assert_eq!(s.caller.dn.as_deref(), Some(k.var("GSI_HOST_DN").as_str()));
    assert!(s.signed_parts.iter().any(|q| q.is(ns::WSA, "RelatesTo")), "{:?}", s.signed_parts);
}

#[test]
fn envelope_without_header_gets_one() {
    let k = kit();
    let env = format!("<s:Envelope xmlns:s=\"{}\"><s:Body><x:Ping xmlns:x=\"urn:x\"/></s:Body></s:Envelope>", ns::SOAPENV);
    let signed = wssec::sign(&env, &k.proxy("GSI_PROXY_RFC")).unwrap();
    let s = verify(&signed, &ReplayCache::new()).unwrap().unwrap();
    assert_eq!(s.message_id, None);
    assert_eq!(s.caller.dn.as_deref(), Some(k.user_dn().as_str()));
}

#[test]
fn unsigned_message_is_none() {
    assert!(verify(&request(&mid()), &ReplayCache::new()).unwrap().is_none());
}

// ------------------------------------------------------------------------------ refused

#[test]
fn tampered_body_is_a_digest_mismatch() {
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    let body_id = id_of(&signed, "<soapenv:Body");
    let bad = signed.replace(">vws:State<", ">vws:Owner<");
    assert_ne!(bad, signed);
    match refused(&bad) {
        WsSecError::DigestMismatch { uri } => assert_eq!(uri, format!("#{body_id}")),
        e => panic!("wrong refusal: {e}"),
    }
}

#[test]
fn tampered_to_header_is_a_digest_mismatch() {
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    let to_id = id_of(&signed, "<wsa:To");
    let bad = signed.replace(TO, "https://evil.example.org:8443/wsrf/services/WorkspaceService");
    match refused(&bad) {
        WsSecError::DigestMismatch { uri } => assert_eq!(uri, format!("#{to_id}")),
        e => panic!("wrong refusal: {e}"),
    }
}

#[test]
fn signature_not_covering_the_body_is_refused() {
    let k = kit();
    let opts = SignOptions { sign_body: false, ..Default::default() };
    let signed = wssec::sign_with(&request(&mid()), &k.proxy("GSI_PROXY_RFC"), &opts).unwrap();
    let e = refused(&signed);
    assert!(matches!(&e, WsSecError::UnsignedPart { part } if part.contains("Body")), "{e}");
    assert_eq!(e.wsse_code(), "wsse:FailedCheck");
}

#[test]
fn removing_the_body_reference_breaks_the_signature() {
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    let body_id = id_of(&signed, "<soapenv:Body");
    let start = signed.find(&format!("<ds:Reference URI=\"#{body_id}\"")).unwrap();
    let end = start + signed[start..].find("</ds:Reference>").unwrap() + "</ds:Reference>".len();
    let bad = format!("{}{}", &signed[..start], &signed[end..]);
    assert_eq!(refused(&bad).kind(), "bad_signature");
}

#[test]
fn replay_is_refused_the_second_time() {
    let k = kit();
    let replay = ReplayCache::new();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    assert!(verify(&signed, &replay).unwrap().is_some());
    let e = verify(&signed, &replay).unwrap_err();
    assert!(matches!(e, WsSecError::Replay(_)), "{e}");
    // Without a MessageID the signature value identifies the message (whitespace does not help).
    let env = format!("<s:Envelope xmlns:s=\"{}\"><s:Body><x:Ping xmlns:x=\"urn:x\"/></s:Body></s:Envelope>", ns::SOAPENV);
    let signed = wssec::sign(&env, &k.proxy("GSI_PROXY_RFC")).unwrap();
    assert!(verify(&signed, &replay).unwrap().is_some());
    let respaced = signed.replacen("<ds:SignatureValue>", "<ds:SignatureValue>\n ", 1);
    assert_eq!(verify(&respaced, &replay).unwrap_err().kind(), "replay");
    // A different message is fine.
    let other = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    assert!(verify(&other, &replay).unwrap().is_some());
}

#[test]
fn expired_and_future_timestamps_are_refused() {
    let k = kit();
    let cred = k.proxy("GSI_PROXY_RFC");
    let hour_ago = SignOptions { created_ms: Some(wssec::now_ms() - 3_600_000), ..Default::default() };
    let old = wssec::sign_with(&request(&mid()), &cred, &hour_ago).unwrap();
    let e = refused(&old);
    assert!(matches!(e, WsSecError::Expired(_)), "{e}");
    assert_eq!(e.wsse_code(), "wsse:MessageExpired");
    // A fresh message, checked by a clock 11 minutes ahead (5 min TTL + 5 min skew) / 6 behind.
    let fresh = wssec::sign(&request(&mid()), &cred).unwrap();
    let trust = k.trust();
    let later = wssec::verify(fresh.as_bytes(), &trust, &ReplayCache::new(), wssec::now_ms() + 11 * 60_000);
    assert_eq!(later.unwrap_err().kind(), "expired");
    let earlier = wssec::verify(fresh.as_bytes(), &trust, &ReplayCache::new(), wssec::now_ms() - 6 * 60_000);
    assert_eq!(earlier.unwrap_err().kind(), "not_yet_valid");
    // Inside the skew both ways: accepted.
    assert!(wssec::verify(fresh.as_bytes(), &trust, &ReplayCache::new(), wssec::now_ms() + 4 * 60_000).is_ok());
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn token_from_an_untrusted_ca_is_refused() {
    let k = kit();
    let dir = k.dir.join(format!("untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/O=Grid/OU=GlobusTest/CN=Rogue CA",
        ],
    );
    // The rogue certificate claims the real user's name.
    let subj = k.user_dn();
    openssl(&dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "user.key", "-out", "user.csr", "-subj", &subj]);
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "user.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "user.pem",
            "-days",
            "1",
        ],
    );
    std::fs::set_permissions(dir.join("user.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let rogue = Credential::load(dir.join("user.pem"), dir.join("user.key")).unwrap();
    let signed = wssec::sign(&request(&mid()), &rogue).unwrap();
    let e = refused(&signed);
    let _ = std::fs::remove_dir_all(&dir);
    match &e {
        WsSecError::UntrustedToken(g) => assert_eq!(g.kind(), "untrusted_issuer", "{g}"),
        e => panic!("wrong refusal: {e}"),
    }
    assert_eq!(e.wsse_code(), "wsse:InvalidSecurityToken");
}

#[test]
fn signature_wrapping_is_refused() {
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    let b0 = signed.find("<soapenv:Body").unwrap();
    let b1 = signed.find("</soapenv:Body>").unwrap() + "</soapenv:Body>".len();
    let body = &signed[b0..b1];
    let body_id = id_of(&signed, "<soapenv:Body");
    let evil = format!("<soapenv:Body><wsrl:Destroy xmlns:wsrl=\"{}\"/></soapenv:Body>", ns::WSRL);
    let wrapped_body = format!("<w:Wrapper xmlns:w=\"urn:wrap\">{body}</w:Wrapper>");
    // 1. the signed Body moved into a header, a different (unsigned) Body in its place
    let moved = format!("{}{}", &signed[..b0], &signed[b1..]).replacen(
        "</soapenv:Header>",
        &format!("{wrapped_body}</soapenv:Header>"),
        1,
    );
    let moved = moved.replacen("</soapenv:Header>", &format!("</soapenv:Header>{evil}"), 1);
    let e = refused(&moved);
    assert!(matches!(&e, WsSecError::UnsignedPart { part } if part.contains("Body")), "{e}");
    // 2. the same, the new Body borrowing the signed Body's Id
    let evil_with_id =
        evil.replacen("<soapenv:Body>", &format!("<soapenv:Body xmlns:wsu=\"{}\" wsu:Id=\"{body_id}\">", wssec::WSU), 1);
    let stolen = moved.replacen(&evil, &evil_with_id, 1);
    assert_eq!(refused(&stolen).kind(), "wrapping");
    // 3. a second Body after the signed one
    let two = signed.replacen("</soapenv:Body>", &format!("</soapenv:Body>{evil}"), 1);
    assert_eq!(refused(&two).kind(), "wrapping");
    // 4. a second, unsigned wsa:To before the signed one
    let to2 = signed.replacen("<wsa:MessageID", "<wsa:To>https://evil.example.org/</wsa:To><wsa:MessageID", 1);
    assert_eq!(refused(&to2).kind(), "wrapping");
}

#[test]
fn doctype_never_reaches_libxml() {
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    let bad = format!("<!DOCTYPE x [<!ENTITY e \"boom\">]>{signed}");
    assert_eq!(refused(&bad).kind(), "malformed");
}

#[test]
fn token_of_another_key_is_a_bad_signature() {
    // Signed with the RFC proxy's key, presenting the legacy proxy's chain (same user): the
    // signature does not verify with the presented leaf's key.
    let k = kit();
    let signed = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_RFC")).unwrap();
    let other = wssec::sign(&request(&mid()), &k.proxy("GSI_PROXY_LEGACY")).unwrap();
    let token = |m: &str| {
        let a = m.find("<wsse:BinarySecurityToken").unwrap();
        let a = a + m[a..].find('>').unwrap() + 1;
        let b = a + m[a..].find("</wsse:BinarySecurityToken>").unwrap();
        m[a..b].to_string()
    };
    let swapped = signed.replacen(&token(&signed), &token(&other), 1);
    let e = refused(&swapped);
    assert!(matches!(&e, WsSecError::BadSignature { subject } if subject.contains("CN=proxy")), "{e}");
}

#[test]
fn signer_is_reusable_across_threads() {
    let k = kit();
    let signer = std::sync::Arc::new(wssec::Signer::new(&k.proxy("GSI_PROXY_RFC")).unwrap());
    assert_eq!(signer.identity(), k.user_dn());
    let replay = std::sync::Arc::new(ReplayCache::new());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (signer, replay) = (signer.clone(), replay.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let m = signer.sign(&request(&mid())).unwrap();
                    assert!(verify(&m, &replay).unwrap().is_some());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(replay.len(), 40);
}
