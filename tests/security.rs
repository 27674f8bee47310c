//! GSI security end to end: a real `vwsd` with security on (HTTPS listener with the kit's host
//! credential, its trust directory plus a CRL, a grid-mapfile, the vomsdir and
//! `[[security.acl]]` entries), driven over TLS with client certificates made by the real tools
//! (`tests/common/gsi.rs`). Accepted: RFC, legacy, proxy-of-proxy and VOMS proxies, each creating
//! a workspace owned by the user's DN. Refused, each with its reason in the fault and in the
//! log: no certificate, expired, untrusted CA, revoked (CRL), signed by someone else's key, path
//! length, a DN outside the grid-mapfile, a limited proxy for create, a DN or FQAN outside the
//! ACL, another user's workspace, anonymous plain HTTP, and WS-Security signed messages that
//! were tampered with or replayed. No refusal reaches a service function: the store is
//! unchanged and the log has no `workspace created` line for it.

mod common;

use common::gsi::{self, kit, m, Kit};
use common::*;
use openssl::ssl::{SslConnector, SslStream};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use vws::security::{tls, wssec, Credential};

const WS: &str = "WorkspaceService";
const FACTORY: &str = "WorkspaceFactoryService";
const USER_B_DN: &str = "/O=Grid/OU=GlobusTest/CN=User B";
const USER_C_DN: &str = "/O=Grid/OU=GlobusTest/CN=Unmapped User";
const ADMIN_FQAN: &str = "/testvo/Role=admin";

// ------------------------------------------------------------------------------ credentials

/// What these tests add to the kit: a second user B (in a copy of the grid-mapfile) with a
/// plain proxy and VOMS proxies with the admin and a non-matching FQAN, and a user C who is not
/// in the grid-mapfile.
struct Users {
    b_proxy: PathBuf,
    b_voms_admin: PathBuf,
    b_voms_user: PathBuf,
    c_proxy: PathBuf,
    gridmap: PathBuf,
}

fn users() -> &'static Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS.get_or_init(|| {
        let k = kit();
        let ca = k.ca();
        let (ca_cert, ca_key) = (ca.0.as_path(), ca.1.as_path());
        let (b, bk, _) = gsi::issue(k, "sec-user-b", (ca_cert, ca_key), USER_B_DN, gsi::USER_EXT, None);
        let (c, ck, _) = gsi::issue(k, "sec-user-c", (ca_cert, ca_key), USER_C_DN, gsi::USER_EXT, None);
        let b_proxy = gsi::gpi_user(k, &b, &bk, "sec-user-b-proxy.pem", &["-rfc"]);
        let c_proxy = gsi::gpi_user(k, &c, &ck, "sec-user-c-proxy.pem", &["-rfc"]);
        let b_voms_admin = gsi::voms_fake_for(k, (&b, &bk), "sec-user-b-voms-admin.pem", None, &["-fqan", ADMIN_FQAN]);
        let b_voms_user = gsi::voms_fake_for(k, (&b, &bk), "sec-user-b-voms-user.pem", None, &["-fqan", "/testvo/Role=user"]);
        let gridmap = k.x.join("sec-grid-mapfile");
        let mut g = std::fs::read_to_string(k.path("GRIDMAP")).unwrap();
        g.push_str(&format!("\"{USER_B_DN}\" userb\n"));
        std::fs::write(&gridmap, g).unwrap();
        Users { b_proxy, b_voms_admin, b_voms_user, c_proxy, gridmap }
    })
}

// ------------------------------------------------------------------------------ the server

/// The `[security]` section: the kit's host credential, its CAs with the CRL revoking
/// "Revoked User", the grid-mapfile with users A and B, the vomsdir; ACLs: create for user A's
/// DN or the admin FQAN, manage for the admin FQAN.
fn security_section(k: &Kit) -> String {
    k.security_toml(
        &m().crl_dir,
        &format!(
            "gridmap = \"{}\"\n\n\
[[security.acl]]\naction = \"create\"\ndn = \"{}\"\n\n\
[[security.acl]]\naction = \"create\"\nfqan = \"{ADMIN_FQAN}\"\n\n\
[[security.acl]]\naction = \"manage\"\nfqan = \"{ADMIN_FQAN}\"\n",
            users().gridmap.display(),
            k.user_dn(),
        ),
    )
}

fn secure_server() -> Server {
    let k = kit();
    let s = Server::start_with(Conf { security: security_section(k), ..Default::default() });
    assert!(!s.https_addr.is_empty());
    assert!(s.log().contains("GSI transport"), "{}", s.log());
    s
}

// ------------------------------------------------------------------------------ a GSI client

/// A TLS connection to the server's HTTPS listener presenting `proxy` (certificate, key, then
/// its chain, the Globus proxy file layout) or no certificate at all. The server must prove the
/// kit's host identity.
struct Conn {
    r: BufReader<SslStream<TcpStream>>,
    host: String,
    /// The server's log, for diagnostics.
    log: PathBuf,
}

fn connector(proxy: Option<&Path>) -> SslConnector {
    common::gsi::proxy_connector(proxy)
}

impl Conn {
    fn open(s: &Server, proxy: Option<&Path>) -> Conn {
        let tcp = TcpStream::connect(&s.https_addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let ssl = connector(proxy).configure().unwrap().verify_hostname(false).connect("localhost", tcp).unwrap();
        let v = tls::verify_peer(ssl.ssl(), &kit().certdir).expect("the server's credential");
        assert_eq!(v.identity_dn, kit().var("GSI_HOST_DN"));
        tls::check_host(v.leaf(), "127.0.0.1").unwrap();
        Conn { r: BufReader::new(ssl), host: s.https_addr.clone(), log: s.stderr_path.clone() }
    }

    fn post(&mut self, service: &str, action: &str, body: &str) -> HttpResponse {
        let req = format!(
            "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        let r = self.r.get_mut().write_all(req.as_bytes()).and_then(|_| read_response(&mut self.r));
        r.unwrap_or_else(|e| {
            std::thread::sleep(Duration::from_millis(200));
            panic!("no answer ({e}); server log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
        })
    }

    fn create(&mut self, s: &Server) -> HttpResponse {
        let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
        let body =
            envelope(&s.https_url(FACTORY), &action, "", &format!("<create xmlns=\"{VWS}\">{}</create>", sample_description()));
        self.post(FACTORY, &action, &body)
    }

    fn call(&mut self, s: &Server, key: &str, action: &str, payload: &str) -> HttpResponse {
        let body = envelope(&s.https_url(WS), action, &Server::ws_key_header(key), payload);
        self.post(WS, action, &body)
    }

    fn get_owner(&mut self, s: &Server, key: &str) -> HttpResponse {
        self.call(s, key, &format!("{WSRP_ACTION}/GetResourceProperty"), &owner_payload())
    }

    fn destroy(&mut self, s: &Server, key: &str) -> HttpResponse {
        self.call(s, key, &format!("{WSRL_ACTION}/Destroy"), &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"))
    }
}

/// An xsd:dateTime one hour from now.
fn in_one_hour() -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn owner_payload() -> String {
    format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:owner</wsrp:GetResourceProperty>")
}

fn key_of(r: &HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    between(&r.body, "WorkspaceKey xmlns:k0=\"http://vws.dev/2026/11/workspace\">", "<").expect("workspace key").to_string()
}

/// The value of the `{vws}owner` property in a GetResourceProperty answer.
fn owner_of(r: &HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("GetResourcePropertyResponse"), "{}", r.body);
    let i = r.body.find(":owner ").or_else(|| r.body.find("<owner ")).unwrap_or_else(|| panic!("no owner in {}", r.body));
    let rest = &r.body[i..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find("</").unwrap();
    unescape(&rest[start..end])
}

fn unescape(s: &str) -> String {
    s.replace("&apos;", "'").replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn faultstring(r: &HttpResponse) -> String {
    unescape(r.faultstring().unwrap_or_else(|| panic!("not a fault: {}", r.body)))
}

// ------------------------------------------------------------------------------ "nothing ran"

/// What a refusal must leave untouched.
struct Before {
    db: Vec<(String, String, Option<i64>, String)>,
    created: usize,
    denied: usize,
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

fn before(s: &Server) -> Before {
    let log = s.log();
    Before { db: s.db_dump(), created: count(&log, "workspace created"), denied: count(&log, "denied: ") }
}

/// No service function ran: the store is as it was, no workspace was created.
fn nothing_ran(s: &Server, b: &Before, what: &str) {
    assert_eq!(s.db_dump(), b.db, "{what}: the store changed");
    assert_eq!(count(&s.log(), "workspace created"), b.created, "{what}: a workspace was created:\n{}", s.log());
}

/// Refused by the transport: 403, the reason in the fault and in the log, and the request never
/// reached the authorisation hook of a service (no `denied:` line either).
fn refused_by_transport(s: &Server, r: &HttpResponse, b: &Before, reason: &str, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.body);
    let fs = faultstring(r);
    assert!(fs.starts_with("authentication failed: "), "{what}: {fs}");
    assert!(fs.contains(reason), "{what}: fault string {fs:?} lacks {reason:?}");
    let log = s.log();
    assert!(
        log.lines().any(|l| l.contains("client credentials refused: ") && l.contains(reason)),
        "{what}: no 'client credentials refused' line with {reason:?}:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("refused unauthenticated request: ") && l.contains(reason)),
        "{what}: no 'refused unauthenticated request' line with {reason:?}:\n{log}"
    );
    assert_eq!(count(&log, "denied: "), b.denied, "{what}: the request reached a service's authorisation:\n{log}");
    nothing_ran(s, b, what);
}

/// Refused by the authorisation policy: a fault naming `rule` (ErrorCode) with `reason` in the
/// fault string, a `denied:` log line with the rule, the DN and the reason.
fn refused_by_policy(s: &Server, r: &HttpResponse, b: &Before, rule: &str, reason: &str, dn: &str, what: &str) {
    assert!(r.status >= 400, "{what}: {}", r.body);
    assert_eq!(r.fault_kind().as_deref(), Some("AuthorizationFault"), "{what}: {}", r.body);
    assert!(r.body.contains(&format!(">{rule}</wsbf:ErrorCode>")), "{what}: rule {rule} not in {}", r.body);
    let fs = faultstring(r);
    assert!(fs.contains(reason), "{what}: fault string {fs:?} lacks {reason:?}");
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("denied: ")).collect();
    assert_eq!(lines.len(), b.denied + 1, "{what}: expected one more denial line:\n{log}");
    let l = lines.last().unwrap();
    assert!(l.contains(&format!("rule={rule}")) && l.contains(dn) && unescape(l).contains(reason), "{what}: {l}");
    nothing_ran(s, b, what);
}

// ------------------------------------------------------------------------------ accepted

#[test]
fn accepts_rfc_legacy_chained_and_voms_proxies_as_their_user() {
    let k = kit();
    let s = secure_server();
    let a = k.user_dn();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("RFC proxy", k.path("GSI_PROXY_RFC"), a.as_str()),
        ("legacy proxy", k.path("GSI_PROXY_LEGACY"), a.as_str()),
        ("RFC proxy of a proxy", m().rfc2.clone(), a.as_str()),
        ("legacy proxy of a proxy", m().legacy2.clone(), a.as_str()),
        ("VOMS proxy", k.path("GSI_PROXY_VOMS"), a.as_str()),
        // user B is not in the DN entry: only the FQAN /testvo/Role=admin lets B create
        ("VOMS proxy of user B with the admin FQAN", users().b_voms_admin.clone(), USER_B_DN),
    ];
    for (i, (what, proxy, dn)) in cases.iter().enumerate() {
        let mut c = Conn::open(&s, Some(proxy));
        let key = key_of(&c.create(&s));
        // the owner is the user's DN, never the proxy's subject
        assert_eq!(owner_of(&c.get_owner(&s, &key)), *dn, "{what}");
        let rows = s.db_dump();
        assert_eq!(rows.len(), i + 1, "{what}");
        let row = rows.iter().find(|r| r.1 == key).unwrap_or_else(|| panic!("{what}: {key} not stored"));
        assert!(row.3.contains(dn), "{what}: owner not stored: {}", row.3);
        let log = s.log();
        assert!(log.lines().any(|l| l.contains("workspace created") && l.contains(&key) && l.contains(dn)), "{what}: {log}");
    }
    // the VOMS proxies' FQANs are recorded with the owner
    let rows = s.db_dump();
    assert_eq!(rows.iter().filter(|r| r.3.contains(ADMIN_FQAN)).count(), 2, "{rows:?}");
}

/// vwsd secured from the command line only: no [security] section, no ACL entries (create is
/// then open to every authenticated caller; the grid-mapfile is the gate).
fn https_flags(k: &Kit) -> Vec<String> {
    [
        "--https",
        "127.0.0.1:0",
        "--host-cert",
        &k.var("GSI_HOST_CERT"),
        "--host-key",
        &k.var("GSI_HOST_KEY"),
        "--cert-dir",
        &k.var("X509_CERT_DIR"),
        "--gridmap",
        &k.var("GRIDMAP"),
        "--vomsdir",
        &k.var("X509_VOMS_DIR"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn the_vws_client_speaks_gsi_to_a_server_secured_by_flags() {
    let k = kit();
    let s = Server::start_with(Conf { args: https_flags(k), ..Default::default() });
    let vws = |proxy: &Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vws"))
            .arg("--https")
            .arg("--proxy")
            .arg(proxy)
            .args(args)
            .env("X509_CERT_DIR", k.path("X509_CERT_DIR"))
            .env_remove("X509_USER_PROXY")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let epr = s.dir.path().join("ws.epr");
    let sample = repo_dir().join("conf/samples/workspace.xml");
    let (ok, out, err) = vws(
        &m().rfc2,
        &["--service", &s.https_url(FACTORY), "create", sample.to_str().unwrap(), "--epr-out", epr.to_str().unwrap()],
    );
    assert!(ok, "create failed: {out}{err}");
    assert!(std::fs::read_to_string(&epr).unwrap().contains(&format!("https://{}/wsrf/services/{WS}", s.https_addr)));
    let (ok, out, err) = vws(&m().rfc2, &["--epr", epr.to_str().unwrap(), "get-property", "vws:owner"]);
    assert!(ok, "get-property failed: {out}{err}");
    assert!(out.contains(&k.user_dn()), "{out}");
    assert_eq!(s.db_dump().len(), 1);
    // a DN outside the grid-mapfile is refused, and the client says why
    let b = before(&s);
    let (ok, out, err) = vws(&users().c_proxy, &["--service", &s.https_url(FACTORY), "create", sample.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(format!("{out}{err}").contains("is not in the grid-mapfile"), "{out}{err}");
    nothing_ran(&s, &b, "unmapped user via vws");
    assert!(s.log().contains(&format!("client credentials refused: {USER_C_DN} is not in the grid-mapfile")), "{}", s.log());
}

/// `vws_gsi_handshakes_total{outcome}` from vwsd's `/metrics` listener at `maddr`.
fn handshakes(maddr: &str, outcome: &str) -> u64 {
    let mut c = TcpStream::connect(maddr).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nHost: {maddr}\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(c)).unwrap();
    let series = format!("vws_gsi_handshakes_total{{outcome=\"{outcome}\"}} ");
    r.body.lines().find_map(|l| l.strip_prefix(series.as_str())).map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn the_client_library_reuses_its_gsi_connection_and_checks_the_host_once_per_connection() {
    use vws::wsrf::messages::GetResourceProperty;
    let k = kit();
    let maddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let s = Server::start_with(Conf {
        args: https_flags(k),
        host: format!("[metrics]\nlisten = \"{maddr}\"\n"),
        ..Default::default()
    });
    let cred = Credential::load_proxy(&m().rfc2).unwrap();
    let client = vws::client::Client::with_credential(&cred, &k.path("X509_CERT_DIR")).unwrap();
    let description = vws::soap::xml::parse(&sample_description(), &Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let owner = vws::soap::xml::QName::new(VWS, "owner");
    rt.block_on(async {
        let create = vws::workspace::messages::Create { description };
        let epr = client.invoke_at(&s.https_url(FACTORY), None, &create).await.expect("create over GSI").epr;
        assert!(epr.address.starts_with("https://"), "{}", epr.address);
        for _ in 0..5 {
            let r = client.invoke(&epr, &GetResourceProperty { name: owner.clone() }).await.expect("GetRP over GSI");
            assert!(r.content.contains(&k.user_dn()), "{}", r.content);
        }
    });
    // Six calls, one TLS handshake: the connection was kept and reused.
    assert_eq!(handshakes(&maddr, "ok"), 1);
    // A client that does not trust the host's CA is refused by its own check, before it sends
    // anything: no request reaches vwsd (its handshake succeeds on the server's side).
    let empty = tempfile::tempdir().unwrap();
    let stranger = vws::client::Client::with_credential(&cred, empty.path()).unwrap();
    let before = s.db_dump();
    let err = rt
        .block_on(stranger.invoke_at(
            &s.https_url(FACTORY),
            None,
            &vws::workspace::messages::Create {
                description: vws::soap::xml::parse(&sample_description(), &Default::default()).unwrap(),
            },
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server credential refused"), "{err}");
    assert_eq!(s.db_dump(), before, "nothing was created");
    // A plain client is told that https needs a credential, before it connects.
    let plain = vws::client::Client::new();
    let err = rt.block_on(plain.get(&s.https_url(FACTORY))).unwrap_err().to_string();
    assert!(err.contains("https needs a GSI credential"), "{err}");
}

// ------------------------------------------------------------------------------ refused: transport

#[test]
fn refuses_bad_credentials_before_any_service_runs() {
    let k = kit();
    let s = secure_server();
    // one workspace of user A that the refused callers try to read too
    let key = key_of(&Conn::open(&s, Some(&k.path("GSI_PROXY_RFC"))).create(&s));
    let cases: Vec<(&str, Option<PathBuf>, String)> = vec![
        ("no client certificate", None, "the peer presented no certificate".into()),
        ("expired proxy", Some(m().expired.clone()), "/CN=4242 has expired (notAfter 2020-01-02".into()),
        (
            "untrusted CA",
            Some(m().ca2_proxy.clone()),
            format!("{} was issued by /O=Grid/OU=OtherCA/CN=Other CA, which is not a trusted CA", k.user_dn()),
        ),
        ("revoked certificate (CRL)", Some(m().revoked_proxy.clone()), "CN=Revoked User (serial".into()),
        ("path length 0 exceeded", Some(m().pl0_child.clone()), "allows at most 0 proxies below it, found 1".into()),
        ("path length 1 exceeded", Some(m().pl1_grandchild.clone()), "allows at most 1 proxies below it, found 2".into()),
        ("DN not in the grid-mapfile", Some(users().c_proxy.clone()), format!("{USER_C_DN} is not in the grid-mapfile")),
    ];
    for (what, proxy, reason) in &cases {
        let b = before(&s);
        let r = Conn::open(&s, proxy.as_deref()).create(&s);
        refused_by_transport(&s, &r, &b, reason, what);
        assert_eq!(r.header("connection"), Some("close"), "{what}: a refused connection stays open");
        // reading or destroying user A's workspace with them is refused the same way
        let r = Conn::open(&s, proxy.as_deref()).get_owner(&s, &key);
        refused_by_transport(&s, &r, &b, reason, what);
        assert!(!r.body.contains("GetResourcePropertyResponse"), "{what}: the property leaked: {}", r.body);
        let r = Conn::open(&s, proxy.as_deref()).destroy(&s, &key);
        refused_by_transport(&s, &r, &b, reason, what);
    }
    // the revoked user's fault names the revocation
    let r = Conn::open(&s, Some(&m().revoked_proxy)).create(&s);
    assert!(faultstring(&r).contains("has been revoked by"), "{}", r.body);
    // and user A's workspace is still there and A's
    assert_eq!(owner_of(&Conn::open(&s, Some(&k.path("GSI_PROXY_RFC"))).get_owner(&s, &key)), k.user_dn());
    assert_eq!(count(&s.log(), "workspace created"), 1);
}

#[test]
fn security_on_refuses_anonymous_plain_http() {
    let k = kit();
    let s = secure_server();
    let key = key_of(&Conn::open(&s, Some(&k.path("GSI_PROXY_RFC"))).create(&s));
    let anonymous = "security is on: anonymous callers are refused";
    let b = before(&s);
    let r = s.factory_create(&sample_description());
    refused_by_policy(&s, &r, &b, "authentication", anonymous, "anonymous", "plain HTTP create");
    let b = before(&s);
    let r = s.call(WS, &Server::ws_key_header(&key), &format!("{WSRP_ACTION}/GetResourceProperty"), &owner_payload());
    refused_by_policy(&s, &r, &b, "authentication", anonymous, "anonymous", "plain HTTP GetResourceProperty");
    assert!(!r.body.contains(&k.user_dn()) && !r.body.contains("GetResourcePropertyResponse"), "the owner leaked: {}", r.body);
    let b = before(&s);
    let r = s.call(
        WS,
        &Server::ws_key_header(&key),
        &format!("{WSRL_ACTION}/Destroy"),
        &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"),
    );
    refused_by_policy(&s, &r, &b, "authentication", anonymous, "anonymous", "plain HTTP Destroy");
    // the hosted counter sample too
    let b = before(&s);
    let body = envelope(
        &s.url("CounterService"),
        "http://counter.com/CounterPortType/createCounterRequest",
        "",
        "<createCounter xmlns=\"http://counter.com\"/>",
    );
    let r = s.post("CounterService", "http://counter.com/CounterPortType/createCounterRequest", &body);
    refused_by_policy(&s, &r, &b, "authentication", anonymous, "anonymous", "plain HTTP createCounter");
}

#[test]
fn refuses_certificates_signed_by_someone_elses_key() {
    // A proxy signed with a key that is not its issuer's, and a user certificate from an
    // impostor CA that only borrows the trusted CA's name: refused like every other bad chain,
    // with a 403 fault for the request. (Run separately from the other bad chains: a failed
    // signature check leaves errors on OpenSSL's per-thread error queue, which must not turn
    // into a dropped connection.)
    let k = kit();
    let s = secure_server();
    let key = key_of(&Conn::open(&s, Some(&k.path("GSI_PROXY_RFC"))).create(&s));
    let cases = [
        (m().foreign_key.clone(), format!("/CN=777 does not verify with the key of its issuer {}", k.user_dn())),
        (
            m().impostor_proxy.clone(),
            format!("{} does not verify with the key of its issuer {}", k.user_dn(), k.var("GSI_CA_DN")),
        ),
    ];
    for (proxy, reason) in &cases {
        let what = proxy.display().to_string();
        let b = before(&s);
        let r = Conn::open(&s, Some(proxy)).create(&s);
        refused_by_transport(&s, &r, &b, reason, &what);
        let r = Conn::open(&s, Some(proxy)).get_owner(&s, &key);
        refused_by_transport(&s, &r, &b, reason, &what);
    }
}

// ------------------------------------------------------------------------------ refused: policy

#[test]
fn a_limited_proxy_may_read_but_not_create_or_destroy() {
    let k = kit();
    let s = secure_server();
    let key = key_of(&Conn::open(&s, Some(&k.path("GSI_PROXY_RFC"))).create(&s));
    let why = "used a limited proxy, which may only read";
    for proxy in [k.path("GSI_PROXY_RFC_LIMITED"), k.path("GSI_PROXY_LEGACY_LIMITED"), m().limited_child.clone()] {
        let what = proxy.display().to_string();
        let mut c = Conn::open(&s, Some(&proxy));
        let b = before(&s);
        let r = c.create(&s);
        refused_by_policy(&s, &r, &b, "limited_proxy", why, &k.user_dn(), &what);
        let b = before(&s);
        let r = c.destroy(&s, &key);
        refused_by_policy(&s, &r, &b, "limited_proxy", why, &k.user_dn(), &what);
        // reading the user's own workspace is allowed
        assert_eq!(owner_of(&c.get_owner(&s, &key)), k.user_dn(), "{what}");
    }
}

#[test]
fn acl_refuses_a_dn_or_fqan_it_does_not_name() {
    let s = secure_server();
    // user B, a mapped and valid user, but no create entry names B's DN and B has no FQAN
    let b = before(&s);
    let r = Conn::open(&s, Some(&users().b_proxy)).create(&s);
    refused_by_policy(
        &s,
        &r,
        &b,
        "acl:create",
        &format!("{USER_B_DN} (FQANs: none) matches no 'create' ACL entry"),
        USER_B_DN,
        "DN not in ACL",
    );
    // user B with a VOMS FQAN that is not the admin role
    let b = before(&s);
    let r = Conn::open(&s, Some(&users().b_voms_user)).create(&s);
    refused_by_policy(
        &s,
        &r,
        &b,
        "acl:create",
        &format!("{USER_B_DN} (FQANs: /testvo/Role=user) matches no 'create' ACL entry"),
        USER_B_DN,
        "FQAN not matching",
    );
    // the same user with the admin FQAN may
    let key = key_of(&Conn::open(&s, Some(&users().b_voms_admin)).create(&s));
    assert_eq!(owner_of(&Conn::open(&s, Some(&users().b_voms_admin)).get_owner(&s, &key)), USER_B_DN);
}

#[test]
fn another_users_workspace_is_refused_except_to_the_admin_fqan() {
    let k = kit();
    let s = secure_server();
    let mut a = Conn::open(&s, Some(&k.path("GSI_PROXY_RFC")));
    let key = key_of(&a.create(&s));
    let owner_rule = format!("{USER_B_DN} may not read a resource owned by {}", k.user_dn());
    // user B holds the EPR (the key) of A's workspace
    let mut bc = Conn::open(&s, Some(&users().b_proxy));
    let b = before(&s);
    let r = bc.get_owner(&s, &key);
    refused_by_policy(&s, &r, &b, "owner", &owner_rule, USER_B_DN, "B reads A's workspace");
    let b = before(&s);
    let r = bc.destroy(&s, &key);
    refused_by_policy(
        &s,
        &r,
        &b,
        "owner",
        &format!("{USER_B_DN} may not manage a resource owned by {}", k.user_dn()),
        USER_B_DN,
        "B destroys A's workspace",
    );
    let b = before(&s);
    let r = bc.call(
        &s,
        &key,
        &format!("{WSRL_ACTION}/SetTerminationTime"),
        &format!(
            "<wsrl:SetTerminationTime xmlns:wsrl=\"{WSRL}\"><wsrl:RequestedTerminationTime>{}</wsrl:RequestedTerminationTime></wsrl:SetTerminationTime>",
            in_one_hour()
        ),
    );
    refused_by_policy(&s, &r, &b, "owner", "may not manage a resource owned by", USER_B_DN, "B sets A's termination time");
    // B with a FQAN that is not the admin's: still refused
    let b = before(&s);
    let r = Conn::open(&s, Some(&users().b_voms_user)).get_owner(&s, &key);
    refused_by_policy(&s, &r, &b, "owner", &owner_rule, USER_B_DN, "B (Role=user) reads A's workspace");
    // the manage entry for /testvo/Role=admin lets B in with that FQAN
    assert_eq!(owner_of(&Conn::open(&s, Some(&users().b_voms_admin)).get_owner(&s, &key)), k.user_dn());
    // and A, of course
    assert_eq!(owner_of(&a.get_owner(&s, &key)), k.user_dn());
    let r = a.destroy(&s, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(s.db_dump().is_empty());
}

// ------------------------------------------------------------------------------ signed messages

/// A request envelope with a fresh wsa:MessageID (the replay cache keys on it).
fn fresh_envelope(to: &str, action: &str, headers: &str, payload: &str) -> String {
    envelope(to, action, headers, payload)
        .replace(&format!("uuid:test-{}<", std::process::id()), &format!("uuid:{}<", uuid::Uuid::new_v4()))
}

fn signed_create(s: &Server, cred: &Credential) -> String {
    let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
    let env = fresh_envelope(&s.url(FACTORY), &action, "", &format!("<create xmlns=\"{VWS}\">{}</create>", sample_description()));
    let signed = wssec::sign(&env, cred).expect("sign");
    assert!(signed.contains("Signature") && signed.contains("BinarySecurityToken"), "{signed}");
    signed
}

/// Refused by message security: the reason in the fault and in the log, before any service.
fn refused_signed(s: &Server, r: &HttpResponse, b: &Before, reason: &str, what: &str) {
    assert!(r.status >= 400, "{what}: {}", r.body);
    let fs = faultstring(r);
    assert!(fs.contains(reason), "{what}: fault string {fs:?} lacks {reason:?}");
    let log = s.log();
    assert!(
        log.lines().any(|l| l.contains("refused signed request: ") && l.contains(reason)),
        "{what}: no 'refused signed request' line with {reason:?}:\n{log}"
    );
    assert_eq!(count(&log, "denied: "), b.denied, "{what}: the request reached a service's authorisation:\n{log}");
    nothing_ran(s, b, what);
}

#[test]
fn signed_messages_tampered_or_replayed_are_refused() {
    let k = kit();
    let s = secure_server();
    let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
    let cred = Credential::load_proxy(m().rfc2.clone()).unwrap();
    // accepted: a signed create over plain HTTP is the signer's, and the answer is signed
    let signed = signed_create(&s, &cred);
    let r = s.post(FACTORY, &action, &signed);
    let key = key_of(&r);
    assert!(r.body.contains("SignatureValue"), "unsigned answer: {}", r.body);
    assert_eq!(owner_of(&Conn::open(&s, Some(&k.path("GSI_PROXY_RFC"))).get_owner(&s, &key)), k.user_dn());
    assert_eq!(s.db_dump().len(), 1);
    // replayed: the very same bytes again, over plain HTTP and over GSI transport
    let b = before(&s);
    let r = s.post(FACTORY, &action, &signed);
    refused_signed(&s, &r, &b, "replayed message", "replay over http");
    let r = Conn::open(&s, Some(&m().rfc2)).post(FACTORY, &action, &signed);
    refused_signed(&s, &r, &b, "replayed message", "replay over https");
    // tampered: the body changed after signing (more memory than was signed for)
    let signed = signed_create(&s, &cred);
    assert!(signed.contains("<ram min=\"256\" max=\"1024\"/>"));
    let tampered = signed.replace("<ram min=\"256\" max=\"1024\"/>", "<ram min=\"256\" max=\"4096\"/>");
    let r = s.post(FACTORY, &action, &tampered);
    refused_signed(&s, &r, &b, "digest mismatch", "tampered body");
    // the untampered message was never seen, so it is still accepted once
    let r = s.post(FACTORY, &action, &signed);
    key_of(&r);
    assert_eq!(s.db_dump().len(), 2);
}

// ------------------------------------------------------------------------------ issue 9

/// Issue 9, defect 1: a signed request cannot be pointed at another resource or endpoint. The
/// signer owns two workspaces X and Y; a signed Destroy of X, captured in flight, is changed to
/// reach Y (key header swapped, a Y key header slipped in first, a key header the signature
/// does not cover) or sent to another endpoint than its wsa:To: each is refused, naming why,
/// and the store is unchanged. The untouched message then destroys X only.
#[test]
fn signed_requests_cannot_be_redirected_to_another_resource_or_endpoint() {
    let k = kit();
    let s = secure_server();
    let cred = Credential::load_proxy(k.path("GSI_PROXY_RFC")).unwrap();
    let mut a = Conn::open(&s, Some(&k.path("GSI_PROXY_RFC")));
    let x = key_of(&a.create(&s));
    let y = key_of(&a.create(&s));
    assert_eq!(s.db_dump().len(), 2);
    let action = format!("{WSRL_ACTION}/Destroy");
    let destroy = format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>");
    let signed_destroy = |to: &str, headers: &str| wssec::sign(&fresh_envelope(to, &action, headers, &destroy), &cred).unwrap();

    // X's key header replaced by Y's: the key is signed
    let b = before(&s);
    let signed = signed_destroy(&s.url(WS), &Server::ws_key_header(&x));
    let r = s.post(WS, &action, &signed.replace(&x, &y));
    refused_signed(&s, &r, &b, "digest mismatch", "key header swapped");

    // a key header for Y slipped in before the signed one
    let signed = signed_destroy(&s.url(WS), &Server::ws_key_header(&x));
    let at = signed.find("<k:WorkspaceKey").unwrap();
    let injected = format!("{}{}{}", &signed[..at], Server::ws_key_header(&y), &signed[at..]);
    let r = s.post(WS, &action, &injected);
    refused_signed(
        &s,
        &r,
        &b,
        "does not cover the required part header {http://vws.dev/2026/11/workspace}WorkspaceKey",
        "key header added",
    );

    // a signature that leaves the key header out (added after signing)
    let signed = signed_destroy(&s.url(WS), "");
    let at = signed.find("</soapenv:Header>").unwrap();
    let unsigned = format!("{}{}{}", &signed[..at], Server::ws_key_header(&y), &signed[at..]);
    let r = s.post(WS, &action, &unsigned);
    refused_signed(
        &s,
        &r,
        &b,
        "does not cover the required part header {http://vws.dev/2026/11/workspace}WorkspaceKey",
        "unsigned key header",
    );

    // signed for the HTTPS endpoint, delivered to the plain HTTP one
    let signed = signed_destroy(&s.https_url(WS), &Server::ws_key_header(&x));
    let r = s.post(WS, &action, &signed);
    refused_signed(&s, &r, &b, "misdirected message: wsa:To", "wsa:To names another endpoint");

    // the genuine message destroys X, and only X
    let signed = signed_destroy(&s.url(WS), &Server::ws_key_header(&x));
    let r = s.post(WS, &action, &signed);
    assert_eq!(r.status, 200, "{}", r.body);
    let left: Vec<String> = s.db_dump().into_iter().map(|row| row.1).collect();
    assert_eq!(left, vec![y.clone()]);
}

/// Issue 9, defect 2: a signed request is refused as a replay after a clean restart and after a
/// kill -9 that followed its answer; the store keeps only what the originals created.
#[test]
fn a_signed_request_replayed_after_a_restart_is_refused() {
    let mut s = secure_server();
    let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
    let cred = Credential::load_proxy(m().rfc2.clone()).unwrap();
    let first = signed_create(&s, &cred);
    key_of(&s.post(FACTORY, &action, &first));
    assert!(s.terminate().success());
    s.restart();
    let b = before(&s);
    let r = s.post(FACTORY, &action, &first);
    refused_signed(&s, &r, &b, "replayed message", "replay after a clean restart");
    assert_eq!(s.db_dump().len(), 1);

    let second = signed_create(&s, &cred);
    key_of(&s.post(FACTORY, &action, &second));
    s.kill9();
    s.restart();
    let b = before(&s);
    for (msg, what) in [(&second, "replay after kill -9"), (&first, "older replay after kill -9")] {
        let r = s.post(FACTORY, &action, msg);
        refused_signed(&s, &r, &b, "replayed message", what);
    }
    assert_eq!(s.db_dump().len(), 2);
}
