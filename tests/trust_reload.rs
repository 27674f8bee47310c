//! Trust that follows the files: a real `vwsd` with security on, its own copy of the kit's trust
//! directory (with a CRL made by `openssl ca` with the kit's CA key) and grid-mapfile. A user is
//! revoked and the CRL file replaced (by rename, as fetch-crl does): the next request on that
//! user's already open, kept-alive connection is refused while another user's connection keeps
//! working; a broken CRL file keeps the last good trust (logged); a CRL past its nextUpdate
//! refuses (or only warns, per `security.crl_policy`); SIGHUP reloads; IGTF `.namespaces` files
//! are enforced.

mod common;

use common::gsi::{self, kit, Kit};
use common::*;
use openssl::ssl::SslStream;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vws::security::certdir::CrlPolicy;
use vws::security::reload::{LiveTrust, TrustFiles};

const WS: &str = "WorkspaceService";
const FACTORY: &str = "WorkspaceFactoryService";
const REVOKED_DN: &str = "/O=Grid/OU=GlobusTest/CN=Reload User";

struct Conn {
    r: BufReader<SslStream<TcpStream>>,
    host: String,
}

impl Conn {
    fn open(s: &Server, proxy: &Path) -> Conn {
        let tcp = TcpStream::connect(&s.https_addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let ssl =
            gsi::proxy_connector(Some(proxy)).configure().unwrap().verify_hostname(false).connect("localhost", tcp).unwrap();
        Conn { r: BufReader::new(ssl), host: s.https_addr.clone() }
    }

    fn post(&mut self, service: &str, action: &str, body: &str) -> HttpResponse {
        let req = format!(
            "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        read_response(&mut self.r).expect("an answer")
    }

    fn create(&mut self, s: &Server) -> String {
        let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
        let body =
            envelope(&s.https_url(FACTORY), &action, "", &format!("<create xmlns=\"{VWS}\">{}</create>", sample_description()));
        let r = self.post(FACTORY, &action, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        between(&r.body, &format!("WorkspaceKey xmlns:k0=\"{VWS}\">"), "<").expect("a key").to_string()
    }

    fn get_owner(&mut self, s: &Server, key: &str) -> HttpResponse {
        let action = format!("{WSRP_ACTION}/GetResourceProperty");
        let payload =
            format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:owner</wsrp:GetResourceProperty>");
        let body = envelope(&s.https_url(WS), &action, &Server::ws_key_header(key), &payload);
        self.post(WS, &action, &body)
    }
}

/// A user of the kit's CA made for these tests, its proxy and its `openssl ca` configuration
/// (for -revoke and -gencrl with the kit's CA key).
struct Material {
    proxy: PathBuf,
    cert: PathBuf,
    cnf: PathBuf,
    certs: PathBuf,
    hashes: Vec<String>,
    gridmap: PathBuf,
}

fn material(k: &Kit, name: &str) -> Material {
    let ca = k.ca();
    let (cert, key, cnf) = gsi::issue(k, &format!("{name}-user"), (&ca.0, &ca.1), REVOKED_DN, gsi::USER_EXT, None);
    let proxy = gsi::gpi_user(k, &cert, &key, &format!("{name}-proxy.pem"), &["-rfc"]);
    let (certs, hashes) = gsi::certdir_copy(k, &format!("{name}-certs"), true);
    let m = Material { proxy, cert, cnf, certs, hashes, gridmap: k.x.join(format!("{name}-grid-mapfile")) };
    let mut g = std::fs::read_to_string(k.path("GRIDMAP")).unwrap();
    g.push_str(&format!("\"{REVOKED_DN}\" reload\n"));
    std::fs::write(&m.gridmap, g).unwrap();
    // A first CRL that revokes nobody.
    install_crl(k, &m, &gencrl(k, &m, "first.crl", &[]));
    m
}

fn ca_cmd(k: &Kit, m: &Material, extra: &[&str]) {
    let ca = k.ca();
    let mut a = vec!["ca", "-batch", "-config", gsi::p(&m.cnf), "-cert", gsi::p(&ca.0), "-keyfile", gsi::p(&ca.1)];
    a.extend_from_slice(extra);
    gsi::openssl(&a);
}

fn gencrl(k: &Kit, m: &Material, name: &str, dates: &[&str]) -> PathBuf {
    let out = m.cnf.parent().unwrap().join(name);
    let mut a = vec!["-gencrl", "-out", gsi::p(&out)];
    if dates.is_empty() {
        a.extend_from_slice(&["-crldays", "30"]);
    }
    a.extend_from_slice(dates);
    ca_cmd(k, m, &a);
    out
}

/// Replaces `<hash>.r0` by rename (as fetch-crl does).
fn install_crl(_k: &Kit, m: &Material, crl: &Path) {
    for h in &m.hashes {
        let tmp = m.certs.join(format!(".{h}.r0.tmp"));
        std::fs::copy(crl, &tmp).unwrap();
        std::fs::rename(&tmp, m.certs.join(format!("{h}.r0"))).unwrap();
    }
}

fn server(k: &Kit, m: &Material, extra: &str) -> Server {
    let sec = k.security_toml(&m.certs, &format!("gridmap = \"{}\"\nreload_check_secs = 1\n{extra}\n", m.gridmap.display()));
    Server::start_with(Conf { security: sec, ..Default::default() })
}

fn count(s: &Server, what: &str) -> usize {
    s.log().matches(what).count()
}

/// Waits until the log has `n` lines containing `what`.
fn wait_log(s: &Server, what: &str, n: usize) {
    let t0 = Instant::now();
    while s.log().matches(what).count() < n {
        assert!(t0.elapsed() < Duration::from_secs(15), "no {n}× {what:?} in the log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_revoked_user_is_refused_on_its_open_connection_and_a_broken_crl_keeps_the_last_good_trust() {
    let k = kit();
    let m = material(k, "reload");
    let s = server(k, &m, "");
    let mut victim = Conn::open(&s, &m.proxy);
    let mut other = Conn::open(&s, &k.path("GSI_PROXY_RFC"));
    let vk = victim.create(&s);
    let ok = other.create(&s);
    assert_eq!(victim.get_owner(&s, &vk).status, 200);
    assert_eq!(other.get_owner(&s, &ok).status, 200);

    // Revoke the user; fetch-crl drops the new CRL in.
    ca_cmd(k, &m, &["-revoke", gsi::p(&m.cert)]);
    let n = count(&s, "trust reloaded");
    install_crl(k, &m, &gencrl(k, &m, "revoking.crl", &[]));
    wait_log(&s, "trust reloaded", n + 1);
    let r = victim.get_owner(&s, &vk);
    assert_eq!(r.status, 403, "the revoked user's open connection: {}", r.body);
    assert!(r.faultstring().unwrap_or("").contains("revoked"), "{}", r.body);
    assert!(s.log().contains("open connection's credentials refused after a trust change"), "{}", s.log());
    // The other user's connection is untouched, and a new connection of the revoked user is refused.
    assert_eq!(other.get_owner(&s, &ok).status, 200);
    let r = Conn::open(&s, &m.proxy).get_owner(&s, &vk);
    assert_eq!(r.status, 403, "{}", r.body);

    // A CRL file that does not parse: the reload fails, the last good trust stays.
    for h in &m.hashes {
        std::fs::write(m.certs.join(format!("{h}.r0")), "-----BEGIN X509 CRL-----\nnot a CRL\n-----END X509 CRL-----\n").unwrap();
    }
    wait_log(&s, "trust reload failed, keeping the last good trust", 1);
    assert!(s.log().contains("unreadable CRL"), "{}", s.log());
    assert_eq!(other.get_owner(&s, &ok).status, 200, "the kept trust still accepts the other user");
    assert_eq!(Conn::open(&s, &k.path("GSI_PROXY_RFC")).get_owner(&s, &ok).status, 200);
    assert_eq!(Conn::open(&s, &m.proxy).get_owner(&s, &vk).status, 403, "the kept trust still revokes");

    // Good CRLs again; SIGHUP reloads too.
    let n = count(&s, "trust reloaded");
    install_crl(k, &m, &gencrl(k, &m, "again.crl", &[]));
    wait_log(&s, "trust reloaded", n + 1);
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(s.child.as_ref().unwrap().id() as i32, libc::SIGHUP) };
    wait_log(&s, "SIGHUP", 1);
    assert!(s.log().lines().any(|l| l.contains("trust reloaded") && l.contains("SIGHUP")), "{}", s.log());
    assert_eq!(other.get_owner(&s, &ok).status, 200);
    assert!(s.child.as_ref().is_some(), "vwsd survives SIGHUP");

    // A CRL past its nextUpdate refuses its CA's certificates (crl_policy = "refuse"), on the
    // open connection too.
    let stale = gencrl(k, &m, "stale.crl", &["-crl_lastupdate", "20200101000000Z", "-crl_nextupdate", "20200102000000Z"]);
    let n = count(&s, "trust reloaded");
    install_crl(k, &m, &stale);
    wait_log(&s, "CRL past its nextUpdate", 1);
    wait_log(&s, "trust reloaded", n + 1);
    let r = other.get_owner(&s, &ok);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.faultstring().unwrap_or("").contains("expired (nextUpdate"), "{}", r.body);
}

#[test]
fn crl_policy_warn_keeps_using_a_stale_crl() {
    let k = kit();
    let m = material(k, "stale");
    ca_cmd(k, &m, &["-revoke", gsi::p(&m.cert)]);
    install_crl(
        k,
        &m,
        &gencrl(k, &m, "stale.crl", &["-crl_lastupdate", "20200101000000Z", "-crl_nextupdate", "20200102000000Z"]),
    );
    let load = |crl_policy| {
        let files = TrustFiles { cert_dir: m.certs.clone(), gridmap: None, vomsdir: PathBuf::from("/nonexistent"), crl_policy };
        LiveTrust::load(files).unwrap()
    };
    let user = gsi::chain(&k.path("GSI_PROXY_RFC"));
    let revoked = gsi::chain(&m.proxy);
    let refuse = load(CrlPolicy::Refuse);
    let e = vws::security::authenticate(&user, &refuse.current().config).unwrap_err();
    assert!(e.to_string().contains("expired (nextUpdate"), "{e}");
    let warn = load(CrlPolicy::Warn);
    let c = vws::security::authenticate(&user, &warn.current().config).expect("a stale CRL only warns");
    assert_eq!(c.dn.as_deref(), Some(k.user_dn().as_str()));
    let e = vws::security::authenticate(&revoked, &warn.current().config).unwrap_err();
    assert!(e.to_string().contains("revoked"), "the stale CRL still revokes: {e}");
}

#[test]
fn igtf_namespaces_are_enforced_and_reloaded() {
    let k = kit();
    let m = material(k, "ns");
    let files = TrustFiles {
        cert_dir: m.certs.clone(),
        gridmap: None,
        vomsdir: PathBuf::from("/nonexistent"),
        crl_policy: CrlPolicy::Refuse,
    };
    let t = LiveTrust::load(files).unwrap();
    let user = gsi::chain(&k.path("GSI_PROXY_RFC"));
    let other = gsi::chain(&m.proxy);
    let ca = k.var("GSI_CA_DN");
    // Namespaces that permit the kit's user only (the signing policy permits both).
    for h in &m.hashes {
        std::fs::write(
            m.certs.join(format!("{h}.namespaces")),
            format!("#NAMESPACES-VERSION: 1.0\nTO Issuer \"{ca}\" \\\n  PERMIT Subject \"/O=Grid/OU=GlobusTest/CN=Test User\"\n"),
        )
        .unwrap();
    }
    assert_eq!(t.check("test"), Some(Ok(2)));
    let g = t.current();
    assert!(vws::security::authenticate(&user, &g.config).is_ok());
    let e = vws::security::authenticate(&other, &g.config).unwrap_err();
    assert!(e.to_string().contains("none of the permitted namespaces"), "{e}");
    // A namespaces file with a bad pattern keeps the last good trust.
    for h in &m.hashes {
        std::fs::write(m.certs.join(format!("{h}.namespaces")), format!("TO Issuer \"{ca}\" PERMIT Subject \"(\"\n")).unwrap();
    }
    let e = t.check("test").expect("a change").unwrap_err();
    assert!(e.contains("unparsable namespaces"), "{e}");
    assert_eq!(t.generation(), 2);
    assert!(vws::security::authenticate(&other, &t.current().config).is_err());
    assert_eq!(t.check("test"), None, "nothing changed since the failed attempt");
}
