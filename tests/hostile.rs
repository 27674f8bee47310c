//! Hostile-input corpus against a real `vwsd`: entity bombs, external entities, absurd nesting,
//! element and attribute floods, huge and never-ending bodies, wrong envelopes, malformed XML,
//! garbage and absurd headers. Every case must be refused (SOAP fault or 4xx) within 1 s, leave
//! the server serving and the store unchanged, and be logged.

mod common;
use common::*;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vws::soap::xml::{parse, Element, Limits};

const WS: &str = "WorkspaceService";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
const XPATH: &str = "http://www.w3.org/TR/1999/REC-xpath-19991116";
const MIB: usize = 1024 * 1024;

// ------------------------------------------------------------------------------------------
// What a refusal must look like

/// How a case must be answered.
enum Expect {
    /// A SOAP fault with this HTTP status and faultcode (`{soapenv}code` or a dotted sub-code),
    /// and for WSRF faults the detail element's namespace and local name.
    Fault { status: u16, code: &'static str, detail: Option<(&'static str, &'static str)> },
    /// An HTTP-level refusal with this status (body not required to be SOAP).
    Status(u16),
}

fn client_fault(status: u16) -> Expect {
    Expect::Fault { status, code: "Client", detail: None }
}

fn wsrf(ns: &'static str, local: &'static str) -> Expect {
    Expect::Fault { status: 500, code: "Server", detail: Some((ns, local)) }
}

/// Problems with an answer (empty when it is the refusal expected).
fn check_answer(r: &HttpResponse, expect: &Expect) -> Vec<String> {
    let mut bad = Vec::new();
    let is_xml = r.header("content-type").is_some_and(|c| c.starts_with("text/xml"));
    let fault = if is_xml && !r.body.is_empty() { soap_fault_parts(&r.body) } else { Err("no SOAP body".into()) };
    if !(400..500).contains(&r.status) && r.status != 500 {
        bad.push(format!("answered HTTP {} — neither a 4xx nor a SOAP fault: {}", r.status, short(&r.body)));
    }
    if r.status == 500 || (is_xml && !r.body.is_empty()) {
        if let Err(e) = &fault {
            bad.push(format!("HTTP {} answer is not a SOAP fault ({e}): {}", r.status, short(&r.body)));
        }
    }
    match expect {
        Expect::Status(st) => {
            if r.status != *st {
                bad.push(format!("expected HTTP {st}, got {}", r.status));
            }
        }
        Expect::Fault { status, code, detail } => {
            if r.status != *status {
                bad.push(format!("expected HTTP {status}, got {}: {}", r.status, short(&r.body)));
            }
            match &fault {
                Err(e) => bad.push(format!("expected a SOAP fault, got none ({e}): {}", short(&r.body))),
                Ok((fc, fs, det)) => {
                    let okc = fc.ns == SOAPENV && (fc.local == *code || fc.local.starts_with(&format!("{code}.")));
                    if !okc {
                        bad.push(format!("expected faultcode {code}, got {}", fc.clark()));
                    }
                    if fs.trim().is_empty() {
                        bad.push("empty faultstring".into());
                    }
                    if let Some((ns, local)) = detail {
                        match det {
                            Some(d) if d.is(ns, local) => {
                                if d.child(WSBF, "Timestamp").is_none() || d.child(WSBF, "Description").is_none() {
                                    bad.push(format!("fault detail {} lacks wsbf:Timestamp / wsbf:Description", d.name));
                                }
                            }
                            Some(d) => bad.push(format!("expected fault {{{ns}}}{local}, got {}", d.name)),
                            None => bad.push(format!("expected fault {{{ns}}}{local}, got no detail")),
                        }
                    }
                }
            }
        }
    }
    bad
}

/// (faultcode, faultstring, detail's first element) of a SOAP fault answer.
fn soap_fault_parts(body: &str) -> Result<(vws::soap::xml::QName, String, Option<Element>), String> {
    let env = parse(body, &Limits { max_depth: 256, max_elements: 100_000, max_attributes: 256 }).map_err(|e| e.to_string())?;
    if !env.is(SOAPENV, "Envelope") {
        return Err(format!("root is {}", env.name));
    }
    let f = env
        .child(SOAPENV, "Body")
        .and_then(|b| b.first_element())
        .filter(|f| f.is(SOAPENV, "Fault"))
        .ok_or("no soapenv:Fault in Body")?;
    let fc = f.child("", "faultcode").ok_or("no faultcode")?;
    let code = fc.resolve_qname(&fc.text())?;
    let fs = f.child("", "faultstring").map(|e| e.text()).ok_or("no faultstring")?;
    let det = f.child("", "detail").and_then(|d| d.first_element()).cloned();
    Ok((code, fs, det))
}

fn short(s: &str) -> String {
    let mut t: String = s.chars().take(600).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// The log with ANSI colour codes removed.
fn plain_log(s: &Server) -> String {
    let raw = s.log();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

// ------------------------------------------------------------------------------------------
// Sending

/// The outcome of one hostile exchange.
struct Outcome {
    answer: Result<HttpResponse, String>,
    /// From the first byte sent (or from the moment stated by the sender) to the full answer.
    elapsed: Duration,
    /// Request bytes the kernel accepted from us.
    sent: u64,
}

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(&s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_nodelay(true).unwrap();
    c
}

/// Send `bytes` from a writer thread (ignoring write errors: the server may close early) while
/// reading the answer on this one.
fn exchange(s: &Server, bytes: Vec<u8>) -> Outcome {
    let c = connect(s);
    let mut w = c.try_clone().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        for piece in bytes.chunks(64 * 1024) {
            if w.write_all(piece).is_err() {
                return;
            }
            sent2.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
    });
    let answer = read_response(&mut BufReader::new(&c)).map_err(|e| e.to_string());
    let elapsed = start.elapsed();
    let _ = c.shutdown(Shutdown::Both);
    let _ = writer.join();
    Outcome { answer, elapsed, sent: sent.load(Ordering::Relaxed) }
}

/// Send `head`, then stream `chunk` repeatedly (up to `total` bytes) until the server answers
/// or closes; returns when the answer has been read.
fn stream_until_answer(s: &Server, head: Vec<u8>, chunk: Vec<u8>, total: usize) -> Outcome {
    let c = connect(s);
    let mut w = c.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        if w.write_all(&head).is_err() {
            return;
        }
        sent2.fetch_add(head.len() as u64, Ordering::Relaxed);
        let mut n = 0;
        while n < total && !stop2.load(Ordering::Relaxed) {
            if w.write_all(&chunk).is_err() {
                return;
            }
            n += chunk.len();
            sent2.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let answer = read_response(&mut BufReader::new(&c)).map_err(|e| e.to_string());
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = c.shutdown(Shutdown::Both);
    let _ = writer.join();
    Outcome { answer, elapsed, sent: sent.load(Ordering::Relaxed) }
}

/// A POST with Content-Length around `body`.
fn post_bytes(s: &Server, service: &str, action: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn gp_action() -> String {
    format!("{WSRP_ACTION}/GetResourceProperty")
}

/// A GetResourceProperty envelope for `key` whose QName text is `qname_text` (raw XML).
fn get_rp_envelope(s: &Server, key: &str, qname_text: &str) -> String {
    envelope(
        &s.url(WS),
        &gp_action(),
        &Server::ws_key_header(key),
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">{qname_text}</wsrp:GetResourceProperty>"),
    )
}

/// A GetResourceProperty request around arbitrary payload bytes placed in the Body.
fn body_with(s: &Server, key: &str, payload: &str) -> Vec<u8> {
    post_bytes(s, WS, &gp_action(), envelope(&s.url(WS), &gp_action(), &Server::ws_key_header(key), payload).as_bytes())
}

// ------------------------------------------------------------------------------------------
// The harness for one case

/// Start a server with one workspace, run `send`, and check everything a refusal must satisfy.
fn case(conf: Conf, expect: Expect, log_needle: &str, send: impl FnOnce(&Server, &str) -> Outcome) -> (Server, Outcome) {
    let mut s = Server::start_with(conf);
    let key = s.create_workspace();
    let before = s.db_dump();
    let log_before = plain_log(&s).len();

    let out = send(&s, &key);
    let mut bad = Vec::new();
    match &out.answer {
        Err(e) => bad.push(format!("no answer after {:?}: {e}", out.elapsed)),
        Ok(r) => bad.extend(check_answer(r, &expect)),
    }
    if out.elapsed > Duration::from_secs(1) {
        bad.push(format!("answer took {:?} (limit 1 s)", out.elapsed));
    }

    // Logged: the new part of the log mentions the refusal.
    let deadline = Instant::now() + Duration::from_millis(500);
    let new_log = loop {
        let l = plain_log(&s);
        let new = l.get(log_before..).unwrap_or("").to_string();
        if new.to_lowercase().contains(&log_needle.to_lowercase()) || Instant::now() > deadline {
            break new;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !new_log.to_lowercase().contains(&log_needle.to_lowercase()) {
        bad.push(format!("log does not mention the refusal ('{log_needle}'); new log lines: {:?}", new_log.trim()));
    }

    // Still serving, store untouched.
    if !s.is_alive() {
        bad.push("vwsd died".into());
    } else {
        let r = s.post(WS, &gp_action(), &get_rp_envelope(&s, &key, "w:hardware"));
        if r.status != 200 || !r.body.contains("hardware") {
            bad.push(format!("GetResourceProperty after the case failed: HTTP {} {}", r.status, short(&r.body)));
        }
        let after = s.db_dump();
        if after != before {
            bad.push(format!("store changed: before {before:?}, after {after:?}"));
        }
    }
    assert!(bad.is_empty(), "hostile case failed:\n  - {}", bad.join("\n  - "));
    (s, out)
}

fn default_conf() -> Conf {
    Conf::default()
}

// ------------------------------------------------------------------------------------------
// Entities

#[test]
fn billion_laughs() {
    let mut dtd = String::from("<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
        dtd.push_str(&format!(" <!ENTITY lol{i} \"{}\">\n", format!("&{prev};").repeat(10)));
    }
    dtd.push_str("]>\n");
    case(default_conf(), client_fault(500), "DOCTYPE", |s, key| {
        let body = format!("<?xml version=\"1.0\"?>\n{dtd}{}", get_rp_envelope(s, key, "&lol9;"));
        exchange(s, post_bytes(s, WS, &gp_action(), body.as_bytes()))
    });
}

#[test]
fn external_entity_to_a_local_file() {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (_s, out) = case(default_conf(), client_fault(500), "DOCTYPE", |s, key| {
        let body = format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE foo [ <!ENTITY xxe SYSTEM \"file:///etc/passwd\"> ]>\n{}",
            get_rp_envelope(s, key, "&xxe;")
        );
        exchange(s, post_bytes(s, WS, &gp_action(), body.as_bytes()))
    });
    let body = out.answer.unwrap().body;
    assert!(!body.contains("root:"), "answer leaks /etc/passwd: {body}");
    for line in passwd.lines().filter(|l| l.len() >= 8) {
        assert!(!body.contains(line), "answer leaks /etc/passwd line {line:?}");
    }
}

#[test]
fn parameter_entity_and_external_dtd() {
    case(default_conf(), client_fault(500), "DOCTYPE", |s, key| {
        let body = format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE foo SYSTEM \"http://127.0.0.1:1/evil.dtd\" [ <!ENTITY % p SYSTEM \"file:///etc/shadow\"> %p; ]>\n{}",
            get_rp_envelope(s, key, "w:hardware")
        );
        exchange(s, post_bytes(s, WS, &gp_action(), body.as_bytes()))
    });
}

// ------------------------------------------------------------------------------------------
// Structure floods

#[test]
fn nesting_100000_deep() {
    case(default_conf(), client_fault(500), "nesting deeper", |s, key| {
        let payload = "<a>".repeat(100_000) + &"</a>".repeat(100_000);
        exchange(s, body_with(s, key, &payload))
    });
}

#[test]
fn too_many_attributes() {
    case(default_conf(), client_fault(500), "attributes", |s, key| {
        let attrs: String = (0..1000).map(|i| format!(" a{i}=\"{i}\"")).collect();
        exchange(s, body_with(s, key, &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\"{attrs}>w:hardware</wsrp:GetResourceProperty>")))
    });
}

#[test]
fn too_many_namespace_declarations() {
    // Namespace declarations are attributes too: 10,000 of them on one element.
    case(default_conf(), client_fault(500), "attributes", |s, key| {
        let decls: String = (0..10_000).map(|i| format!(" xmlns:p{i}=\"urn:p{i}\"")).collect();
        exchange(s, body_with(s, key, &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\"{decls}>w:hardware</wsrp:GetResourceProperty>")))
    });
}

#[test]
fn too_many_elements() {
    case(default_conf(), client_fault(500), "elements", |s, key| {
        let payload = format!(
            "<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:hardware{}</wsrp:GetResourceProperty>",
            "<b/>".repeat(60_000)
        );
        exchange(s, body_with(s, key, &payload))
    });
}

// ------------------------------------------------------------------------------------------
// Size and time

#[test]
fn body_of_100_mib_announced_by_content_length() {
    let (_s, out) = case(default_conf(), client_fault(413), "exceeds the limit", |s, _key| {
        let mut head = format!(
            "POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml\r\nSOAPAction: \"{}\"\r\nContent-Length: {}\r\n\r\n",
            s.addr,
            gp_action(),
            100 * MIB
        )
        .into_bytes();
        head.extend_from_slice(format!("<soapenv:Envelope xmlns:soapenv=\"{SOAPENV}\"><soapenv:Body>").as_bytes());
        head.extend(std::iter::repeat_n(b'x', 4096));
        exchange(s, head)
    });
    assert!(out.sent < 10_000, "sent {} bytes", out.sent);
}

#[test]
fn chunked_body_of_100_mib_streamed() {
    let (_s, out) = case(default_conf(), client_fault(413), "exceeds the limit", |s, _key| {
        let head = format!(
            "POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml\r\nSOAPAction: \"{}\"\r\nTransfer-Encoding: chunked\r\n\r\n",
            s.addr,
            gp_action()
        )
        .into_bytes();
        let data = vec![b'<'; 64 * 1024];
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(&data);
        chunk.extend_from_slice(b"\r\n");
        stream_until_answer(s, head, chunk, 100 * MIB)
    });
    // Refused near the 4 MiB limit, not after reading 100 MiB.
    assert!(out.sent < 40 * MIB as u64, "server let {} bytes in before answering", out.sent);
}

#[test]
fn body_that_never_ends_slowloris() {
    let conf = Conf { limits: "body_idle_timeout_ms = 300".into(), ..Default::default() };
    let (_s, out) = case(conf, client_fault(408), "stalled", |s, _key| {
        let mut c = connect(s);
        let head = format!(
            "POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml\r\nSOAPAction: \"{}\"\r\nContent-Length: 1000\r\n\r\n<soapenv:E",
            s.addr,
            gp_action()
        );
        c.write_all(head.as_bytes()).unwrap();
        // Then nothing: the clock runs from the stall.
        let start = Instant::now();
        let answer = read_response(&mut BufReader::new(&c)).map_err(|e| e.to_string());
        Outcome { answer, elapsed: start.elapsed(), sent: head.len() as u64 }
    });
    assert!(out.elapsed >= Duration::from_millis(250), "answered before the idle timeout: {:?}", out.elapsed);
}

#[test]
fn body_trickled_slower_than_the_total_timeout() {
    // A byte every 100 ms never trips the idle timeout; the total body timeout must.
    let conf = Conf { limits: "body_idle_timeout_ms = 300\nbody_total_timeout_ms = 600".into(), ..Default::default() };
    case(conf, client_fault(408), "took longer", |s, _key| {
        let c = connect(s);
        let mut w = c.try_clone().unwrap();
        let head = format!(
            "POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n",
            s.addr
        );
        w.write_all(head.as_bytes()).unwrap();
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let writer = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if w.write_all(b"<").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let answer = read_response(&mut BufReader::new(&c)).map_err(|e| e.to_string());
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        Outcome { answer, elapsed, sent: head.len() as u64 }
    });
}

// ------------------------------------------------------------------------------------------
// Envelopes

#[test]
fn soap_1_2_envelope_is_version_mismatch() {
    case(default_conf(), Expect::Fault { status: 500, code: "VersionMismatch", detail: None }, "SOAP 1.2", |s, key| {
        let body = format!(
            "<env:Envelope xmlns:env=\"{SOAP12}\"><env:Header>{}</env:Header><env:Body><wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:hardware</wsrp:GetResourceProperty></env:Body></env:Envelope>",
            Server::ws_key_header(key)
        );
        exchange(s, post_bytes(s, WS, &gp_action(), body.as_bytes()))
    });
}

#[test]
fn random_envelope_namespace_is_version_mismatch() {
    case(
        default_conf(),
        Expect::Fault { status: 500, code: "VersionMismatch", detail: None },
        "not a SOAP 1.1 Envelope",
        |s, key| {
            let body = format!(
            "<x:Envelope xmlns:x=\"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66\"><x:Header>{}</x:Header><x:Body><wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:hardware</wsrp:GetResourceProperty></x:Body></x:Envelope>",
            Server::ws_key_header(key)
        );
            exchange(s, post_bytes(s, WS, &gp_action(), body.as_bytes()))
        },
    );
}

#[test]
fn envelope_without_body() {
    case(default_conf(), client_fault(500), "no Body", |s, key| {
        let body = format!(
            "<soapenv:Envelope xmlns:soapenv=\"{SOAPENV}\"><soapenv:Header>{}</soapenv:Header></soapenv:Envelope>",
            Server::ws_key_header(key)
        );
        exchange(s, post_bytes(s, WS, &gp_action(), body.as_bytes()))
    });
}

#[test]
fn envelope_with_empty_body() {
    case(default_conf(), client_fault(500), "Body is empty", |s, key| {
        let body = format!(
            "<soapenv:Envelope xmlns:soapenv=\"{SOAPENV}\"><soapenv:Header>{}</soapenv:Header><soapenv:Body>  </soapenv:Body></soapenv:Envelope>",
            Server::ws_key_header(key)
        );
        exchange(s, post_bytes(s, WS, &gp_action(), body.as_bytes()))
    });
}

// ------------------------------------------------------------------------------------------
// Operations

#[test]
fn unknown_operation() {
    case(default_conf(), wsrf(VWS, "UnknownOperationFault"), "UnknownOperationFault", |s, key| {
        exchange(
            s,
            post_bytes(
                s,
                WS,
                "urn:evil/DropTables",
                envelope(
                    &s.url(WS),
                    "urn:evil/DropTables",
                    &Server::ws_key_header(key),
                    "<evil:DropTables xmlns:evil=\"urn:evil\">resources</evil:DropTables>",
                )
                .as_bytes(),
            ),
        )
    });
}

#[test]
fn unknown_key_that_looks_like_an_injection() {
    case(default_conf(), wsrf(WSRP, "ResourceUnknownFault"), "ResourceUnknownFault", |s, _key| {
        let evil = "x' OR '1'='1'; DELETE FROM resources; -- ../../../../etc/passwd";
        exchange(s, post_bytes(s, WS, &gp_action(), get_rp_envelope(s, evil, "w:hardware").as_bytes()))
    });
}

#[test]
fn malformed_qname() {
    case(default_conf(), wsrf(WSRP, "InvalidResourcePropertyQNameFault"), "InvalidResourcePropertyQNameFault", |s, key| {
        exchange(s, post_bytes(s, WS, &gp_action(), get_rp_envelope(s, key, "w:a:b:c &lt;x&gt;").as_bytes()))
    });
}

#[test]
fn xpath_that_errors() {
    case(default_conf(), wsrf(WSRP, "InvalidQueryExpressionFault"), "InvalidQueryExpressionFault", |s, key| {
        let action = format!("{WSRP_ACTION}/QueryResourceProperties");
        let payload = format!(
            "<wsrp:QueryResourceProperties xmlns:wsrp=\"{WSRP}\"><wsrp:QueryExpression Dialect=\"{XPATH}\">//*[{}</wsrp:QueryExpression></wsrp:QueryResourceProperties>",
            "(".repeat(500)
        );
        exchange(s, post_bytes(s, WS, &action, envelope(&s.url(WS), &action, &Server::ws_key_header(key), &payload).as_bytes()))
    });
}

// ------------------------------------------------------------------------------------------
// Malformed input

#[test]
fn unclosed_tag() {
    case(default_conf(), client_fault(500), "malformed XML", |s, key| {
        let env = get_rp_envelope(s, key, "w:hardware");
        let cut = env.find("</soapenv:Body>").unwrap();
        exchange(s, post_bytes(s, WS, &gp_action(), &env.as_bytes()[..cut]))
    });
}

#[test]
fn bad_utf8() {
    case(default_conf(), client_fault(500), "UTF-8", |s, key| {
        let env = get_rp_envelope(s, key, "w:hard\u{fffd}ware");
        let bytes = env.replace('\u{fffd}', "\u{1}").into_bytes();
        let bytes: Vec<u8> = bytes.into_iter().map(|b| if b == 1 { 0xff } else { b }).collect();
        assert!(std::str::from_utf8(&bytes).is_err());
        exchange(s, post_bytes(s, WS, &gp_action(), &bytes))
    });
}

#[test]
fn non_xml_garbage() {
    case(default_conf(), client_fault(500), "refused request", |s, _key| {
        // Deterministic pseudo-random bytes.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let garbage: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        exchange(s, post_bytes(s, WS, &gp_action(), &garbage))
    });
}

#[test]
fn plain_text_garbage() {
    case(default_conf(), client_fault(500), "refused request", |s, _key| {
        exchange(s, post_bytes(s, WS, &gp_action(), b"hello, this is not XML at all < & >"))
    });
}

// ------------------------------------------------------------------------------------------
// HTTP

#[test]
fn absurd_header_of_one_mebibyte() {
    case(default_conf(), Expect::Status(431), "header", |s, _key| {
        let mut req = format!("POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {}\r\nX-Absurd: ", s.addr).into_bytes();
        req.extend(std::iter::repeat_n(b'a', MIB));
        req.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        exchange(s, req)
    });
}

#[test]
fn absurd_content_length_header() {
    case(default_conf(), Expect::Status(400), "content-length", |s, _key| {
        let req = format!(
            "POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml\r\nContent-Length: 99999999999999999999999999999\r\n\r\n<x/>",
            s.addr
        );
        exchange(s, req.into_bytes())
    });
}

// ------------------------------------------------------------------------------------------
// Issue 9, defect 4: XPath denial of service

/// `count(//*)` nested `depth` levels: each level multiplies the work by the element count.
fn nested_count(depth: usize) -> String {
    let mut e = "count(//*)".to_string();
    for _ in 1..depth {
        e = format!("count(//*[{e} > 0])");
    }
    e
}

fn query_request(s: &Server, key: &str, expr: &str) -> Vec<u8> {
    let action = format!("{WSRP_ACTION}/QueryResourceProperties");
    let payload = format!(
        "<wsrp:QueryResourceProperties xmlns:wsrp=\"{WSRP}\"><wsrp:QueryExpression Dialect=\"{XPATH}\">{}</wsrp:QueryExpression></wsrp:QueryResourceProperties>",
        vws::soap::xml::escape(expr)
    );
    post_bytes(s, WS, &action, envelope(&s.url(WS), &action, &Server::ws_key_header(key), &payload).as_bytes())
}

/// A query past its operation budget (default limits) is stopped and answered with a
/// QueryEvaluationErrorFault that says which limit it hit (today: it never finishes).
#[test]
fn xpath_over_its_operation_budget() {
    let s = Server::start();
    let key = s.create_workspace();
    let before = s.db_dump();
    let out = exchange(&s, query_request(&s, &key, &nested_count(8)));
    let r = out.answer.unwrap_or_else(|e| panic!("no answer after {:?}: {e}", out.elapsed));
    assert!(out.elapsed < Duration::from_secs(4), "took {:?}", out.elapsed);
    let bad = check_answer(&r, &wsrf(WSRP, "QueryEvaluationErrorFault"));
    assert!(bad.is_empty(), "{bad:?}");
    assert!(
        r.body.contains("exceeded its budget of 10000000 XPath operations")
            || r.body.contains("longer than the time limit of 2000 ms"),
        "{}",
        r.body
    );
    assert!(plain_log(&s).contains("XPath query stopped"), "{}", plain_log(&s));
    assert_eq!(s.db_dump(), before);
    let r = s.post(WS, &gp_action(), &get_rp_envelope(&s, &key, "w:hardware"));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / 100)
}

/// Endless queries (a budget and time limit too large to matter): one caller gets at most
/// `xpath_max_per_caller` running, further ones are refused at once with a clear fault; when
/// their clients disconnect the work stops (the process goes idle); everything else is served
/// throughout, and SIGTERM still stops vwsd promptly. Today the queries run on for minutes.
#[test]
fn xpath_queries_are_bounded_per_caller_and_stop_when_their_clients_leave() {
    let conf = Conf {
        limits: "xpath_op_limit = 100000000000\nxpath_timeout_ms = 600000\nxpath_max_per_caller = 2\nxpath_max_concurrent = 4\n"
            .into(),
        ..Default::default()
    };
    let mut s = Server::start_with(conf);
    let key = s.create_workspace();
    let before = s.db_dump();
    let pid = s.child.as_ref().unwrap().id();
    let hostile = query_request(&s, &key, &nested_count(8));
    let mut running = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&s);
        c.write_all(&hostile).unwrap();
        running.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    // A third one from the same (anonymous) caller: refused at once.
    let out = exchange(&s, hostile.clone());
    let r = out.answer.expect("an answer to the third query");
    assert!(out.elapsed < Duration::from_secs(1), "took {:?}", out.elapsed);
    assert!(check_answer(&r, &wsrf(WSRP, "QueryEvaluationErrorFault")).is_empty(), "{}", r.body);
    assert!(r.body.contains("too many concurrent queries from anonymous"), "{}", r.body);
    // The hostile ones keep the CPU busy while their clients wait…
    let busy0 = cpu_time(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let busy = cpu_time(pid) - busy0;
    // (The machine may be shared: compare with what the queries got, not with a fixed share.)
    assert!(busy > Duration::from_millis(100), "the queries are not running? {busy:?} CPU in 1 s");
    // …other requests are served meanwhile…
    let r = s.post(WS, &gp_action(), &get_rp_envelope(&s, &key, "w:hardware"));
    assert_eq!(r.status, 200, "{}", r.body);
    // …and once the clients give up, the work stops.
    for c in &running {
        c.shutdown(Shutdown::Both).unwrap();
    }
    drop(running);
    std::thread::sleep(Duration::from_millis(700));
    let idle0 = cpu_time(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let idle = cpu_time(pid) - idle0;
    assert!(idle * 4 < busy, "vwsd still uses {idle:?} CPU per second after the clients left (busy: {busy:?})");
    // The caller's slots are free again: a harmless query is answered.
    let out = exchange(&s, query_request(&s, &key, "count(//*)"));
    let r = out.answer.expect("answer");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.db_dump(), before);
    let log = plain_log(&s);
    assert!(log.contains("XPath query refused: too many from this caller"), "{log}");
    let t = Instant::now();
    assert!(s.terminate().success());
    assert!(t.elapsed() < Duration::from_secs(10), "SIGTERM took {:?}", t.elapsed());
}
