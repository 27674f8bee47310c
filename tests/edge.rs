//! The HTTP edge against a real `vwsd` (issue 9's edge defects and issue 10's server/): one
//! operation per Body; the operation, wsa:Action and SOAPAction agree; one key header; stalled
//! request heads get a 408; plain HTTP on the HTTPS port gets a 400 naming TLS; EPRs never carry
//! the client's Host header; the open-connection cap; `/healthz`; and a kept-alive GSI connection
//! whose proxy expires is refused and closed. Every refusal leaves the store unchanged.

mod common;
use common::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const WS: &str = "WorkspaceService";

fn gp_payload() -> String {
    format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:state</wsrp:GetResourceProperty>")
}

fn destroy_payload() -> String {
    format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>")
}

fn post_raw(s: &Server, service: &str, soap_action: &str, host: &str, body: &str) -> HttpResponse {
    let req = format!(
        "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{soap_action}\"\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.raw(req.as_bytes())
}

/// A refusal: a Client fault, the store as before, the server still serving.
fn assert_refused(s: &Server, r: &HttpResponse, before: &[(String, String, Option<i64>, String)], needle: &str) {
    assert!(r.status >= 400, "expected a refusal, got {}: {}", r.status, r.body);
    assert!(r.body.contains("Client"), "not a Client fault: {}", r.body);
    assert!(r.faultstring().unwrap_or("").contains(needle), "faultstring lacks {needle:?}: {}", r.body);
    assert_eq!(s.db_dump(), before, "the store changed");
    assert!(s.log().contains(needle), "no log line with {needle:?}");
}

#[test]
fn two_operations_in_one_body_are_refused() {
    let s = Server::start();
    let key = s.create_workspace();
    let before = s.db_dump();
    let action = format!("{WSRL_ACTION}/Destroy");
    let r = s.call(WS, &Server::ws_key_header(&key), &action, &format!("{}{}", destroy_payload(), gp_payload()));
    assert_refused(&s, &r, &before, "exactly one operation");
}

#[test]
fn operation_must_agree_with_wsa_action_and_soapaction() {
    let s = Server::start();
    let key = s.create_workspace();
    let before = s.db_dump();
    let gp = format!("{WSRP_ACTION}/GetResourceProperty");
    // Both headers name GetResourceProperty, the Body is a Destroy.
    let r = s.call(WS, &Server::ws_key_header(&key), &gp, &destroy_payload());
    assert_refused(&s, &r, &before, "does not name the Body's operation");
    // No wsa:Action at all: the SOAPAction still has to match the Body.
    let body = format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAPENV}\"><soapenv:Header>{}</soapenv:Header><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>",
        Server::ws_key_header(&key),
        destroy_payload()
    );
    let r = post_raw(&s, WS, &gp, &s.addr, &body);
    assert_refused(&s, &r, &before, "does not name the Body's operation");
    // An empty SOAPAction with a matching wsa:Action is fine.
    let ok = envelope(&s.url(WS), &gp, &Server::ws_key_header(&key), &gp_payload());
    let r = post_raw(&s, WS, "", &s.addr, &ok);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn duplicate_key_headers_are_refused() {
    let s = Server::start();
    let a = s.create_workspace();
    let b = s.create_workspace();
    let before = s.db_dump();
    let headers = format!("{}{}", Server::ws_key_header(&a), Server::ws_key_header(&b));
    let r = s.call(WS, &headers, &format!("{WSRL_ACTION}/Destroy"), &destroy_payload());
    assert_refused(&s, &r, &before, "resource key headers");
}

#[test]
fn stalled_request_head_gets_408() {
    let s = Server::start_with(Conf { limits: "header_timeout_ms = 400".into(), ..Default::default() });
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(format!("POST /wsrf/services/{WS} HTTP/1.1\r\nHost: x\r\nContent-").as_bytes()).unwrap();
    let t = Instant::now();
    let r = read_response(&mut BufReader::new(&mut c)).expect("an answer, not a silent close");
    assert_eq!(r.status, 408);
    assert!(t.elapsed() >= Duration::from_millis(350), "answered before the timeout: {:?}", t.elapsed());
    assert!(s.log().contains("request headers stalled"), "{}", s.log());
    // An idle connection (nothing sent) is closed quietly, without an answer.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    assert_eq!(idle.read_to_end(&mut buf).unwrap(), 0, "idle connection got {:?}", String::from_utf8_lossy(&buf));
}

#[test]
fn eprs_never_carry_the_clients_host_header() {
    let s = Server::start();
    let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
    let body = envelope(
        &s.url("WorkspaceFactoryService"),
        &action,
        "",
        &format!("<create xmlns=\"{VWS}\">{}</create>", sample_description()),
    );
    let r = post_raw(&s, "WorkspaceFactoryService", &action, "evil.example.org:666", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("evil.example.org"), "client Host in the answer: {}", r.body);
    assert!(r.body.contains(&format!("http://{}/wsrf/services/{WS}", s.addr)), "EPR not from the listener: {}", r.body);
    // The WSDL goes back only to the client that asked: its soap:address is the address that
    // client used (tests/schema.rs), but a Host that is not a plain host[:port] is never copied.
    let w = s.raw(format!("GET /wsrf/services/{WS}?wsdl HTTP/1.1\r\nHost: evil\"/><x a=\"\r\n\r\n").as_bytes());
    assert_eq!(w.status, 200);
    assert!(!w.body.contains("evil") && w.body.contains(&s.addr), "{}", w.body);
}

#[test]
fn healthz_says_the_store_answers() {
    let s = Server::start();
    let r = s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("store answers"), "{}", r.body);
}

#[test]
fn connection_cap_makes_the_next_connection_wait_while_others_are_served() {
    let s = Server::start_with(Conf { limits: "max_connections = 2".into(), ..Default::default() });
    let key = s.create_workspace();
    let gp = format!("{WSRP_ACTION}/GetResourceProperty");
    let req = |host: &str| {
        let body = envelope(&format!("http://{host}/wsrf/services/{WS}"), &gp, &Server::ws_key_header(&key), &gp_payload());
        format!(
            "POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml\r\nSOAPAction: \"{gp}\"\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let open = || {
        let c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    };
    // Two kept-alive connections hold both slots and are served.
    let (mut a, mut b) = (open(), open());
    for c in [&mut a, &mut b] {
        c.write_all(req(&s.addr).as_bytes()).unwrap();
        assert_eq!(read_response(&mut BufReader::new(c)).unwrap().status, 200);
    }
    // The third waits: no answer while both are open ...
    let mut third = open();
    third.write_all(req(&s.addr).as_bytes()).unwrap();
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut byte = [0u8; 1];
    let waited = third.read(&mut byte);
    assert!(waited.is_err(), "third connection was served beyond the cap: {waited:?}");
    // ... while the others keep being served ...
    a.write_all(req(&s.addr).as_bytes()).unwrap();
    assert_eq!(read_response(&mut BufReader::new(&mut a)).unwrap().status, 200);
    // ... and it is served once one closes.
    drop(b);
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = read_response(&mut BufReader::new(&mut third)).expect("served after a slot freed");
    assert_eq!(r.status, 200, "{}", r.body);
}

mod gsi_edge {
    use super::*;
    use common::gsi::{self, kit};
    use openssl::pkey::PKey;
    use openssl::x509::X509;

    fn security_section() -> String {
        let k = kit();
        k.security_toml(&k.path("X509_CERT_DIR"), &format!("\n[[security.acl]]\naction = \"create\"\ndn = \"{}\"\n", k.user_dn()))
    }

    /// An RFC 3820 proxy of the kit's user that expires `secs` from now.
    fn short_proxy(secs: i64) -> std::path::PathBuf {
        let k = kit();
        let (cert, key) = k.user();
        let issuer = X509::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
        let issuer_key = PKey::private_key_from_pem(&std::fs::read(&key).unwrap()).unwrap();
        let (proxy, pkey) = gsi::rfc_proxy(&issuer, &issuer_key, None, secs, 2048);
        let cert_path = k.x.join("edge-short-cert.pem");
        let key_path = k.x.join("edge-short-key.pem");
        std::fs::write(&cert_path, proxy.to_pem().unwrap()).unwrap();
        std::fs::write(&key_path, pkey.private_key_to_pem_pkcs8().unwrap()).unwrap();
        gsi::proxy_file(k, "edge-short-proxy.pem", &cert_path, &key_path, &[&cert])
    }

    fn tls_to(s: &Server, proxy: &std::path::Path) -> openssl::ssl::SslStream<TcpStream> {
        let tcp = TcpStream::connect(&s.https_addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        gsi::proxy_connector(Some(proxy)).configure().unwrap().verify_hostname(false).connect("localhost", tcp).unwrap()
    }

    fn post(c: &mut openssl::ssl::SslStream<TcpStream>, host: &str, service: &str, action: &str, body: &str) -> HttpResponse {
        let req = format!(
            "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).unwrap();
        read_response(&mut BufReader::new(c)).unwrap()
    }

    #[test]
    fn plain_http_to_the_https_port_gets_400_naming_tls() {
        let s = Server::start_with(Conf { security: security_section(), ..Default::default() });
        let mut c = TcpStream::connect(&s.https_addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(format!("GET /wsrf/services/{WS}?wsdl HTTP/1.1\r\nHost: {}\r\n\r\n", s.https_addr).as_bytes()).unwrap();
        let r = read_response(&mut BufReader::new(&mut c)).expect("an answer, not a reset");
        assert_eq!(r.status, 400);
        assert!(r.body.contains("TLS") && r.body.contains("https://"), "{}", r.body);
        assert!(s.log().contains("plain HTTP on the HTTPS port"), "{}", s.log());
    }

    #[test]
    fn a_kept_alive_connection_is_refused_and_closed_once_its_proxy_expires() {
        let s = Server::start_with(Conf { security: security_section(), ..Default::default() });
        let proxy = short_proxy(4);
        let mut c = tls_to(&s, &proxy);
        let host = s.https_addr.clone();
        let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
        let body = envelope(
            &s.https_url("WorkspaceFactoryService"),
            &action,
            "",
            &format!("<create xmlns=\"{VWS}\">{}</create>", sample_description()),
        );
        let r = post(&mut c, &host, "WorkspaceFactoryService", &action, &body);
        assert_eq!(r.status, 200, "create with a valid proxy: {}", r.body);
        let key = between(&r.body, "WorkspaceKey xmlns:k0=\"http://vws.dev/2026/11/workspace\">", "<").unwrap().to_string();
        std::thread::sleep(Duration::from_secs(6));
        let before = s.db_dump();
        let daction = format!("{WSRL_ACTION}/Destroy");
        let dbody = envelope(&s.https_url(WS), &daction, &Server::ws_key_header(&key), &destroy_payload());
        let r = post(&mut c, &host, WS, &daction, &dbody);
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.faultstring().unwrap_or("").contains("expired"), "{}", r.body);
        assert_eq!(r.header("connection").map(str::to_ascii_lowercase).as_deref(), Some("close"));
        assert_eq!(s.db_dump(), before, "the store changed");
        assert!(s.log().contains("connection credentials expired"), "{}", s.log());
        // The server closed the connection.
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "connection still open");
    }
}

/// Axis 1.4 WSDL2Java's default (wrapped) mode sends GT 4.0's operation elements twice; the
/// answer is a Client fault that says to generate the stubs with -W, and nothing changes.
#[test]
fn doubly_wrapped_requests_of_axis_wrapped_stubs_get_a_fault_naming_wsdl2java_w() {
    let s = Server::start();
    let key = s.create_workspace();
    let counter = s.create_counter("CounterService");
    let before = s.db_dump();
    let gp = format!("{WSRP_ACTION}/GetResourceProperty");
    let body = format!(
        "<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\"><wsrp:GetResourceProperty xmlns:w=\"{VWS}\">w:state</wsrp:GetResourceProperty></wsrp:GetResourceProperty>"
    );
    let r = s.call(WS, &Server::ws_key_header(&key), &gp, &body);
    assert_refused(&s, &r, &before, "WSDL2Java -W");
    assert!(r.faultstring().unwrap().contains("doubly wrapped"), "{}", r.body);
    let add = format!("<add xmlns=\"{COUNTER}\"><add>5</add></add>");
    let r =
        s.call("CounterService", &Server::counter_key_header(&counter), "http://counter.com/CounterPortType/addRequest", &add);
    assert_refused(&s, &r, &before, "WSDL2Java -W");
    // The singly wrapped forms still work.
    let r = s.call(WS, &Server::ws_key_header(&key), &gp, &gp_payload());
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&counter),
        "http://counter.com/CounterPortType/addRequest",
        &format!("<add xmlns=\"{COUNTER}\">5</add>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}
