//! `http://` and `https://` staging (src/transfer/http.rs, hyper-util's client) against small
//! loopback servers written here, each answering the way a test needs: redirects (followed, too
//! many, https → http refused), a server that stalls mid-body (a timeout naming the URL, no
//! partial file), one that sends more than it announced, 4xx/5xx statuses, a refused connection,
//! streamed PUT uploads, and HTTPS verified against a GSI-style trusted certificates directory
//! (a CA made here at run time; an untrusted server is a TLS authentication error).
//! The Range resume after a killed server is tested in tests/gridftp.rs with python's http.server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use vws::transfer::{self, Options};

/// One request as the test server read it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }
}

type Handler = Arc<dyn Fn(&Req, &mut dyn Write) + Send + Sync>;

fn read_req(r: &mut impl BufRead) -> Option<Req> {
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut it = first.split_whitespace();
    let (method, path) = (it.next()?.to_string(), it.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.trim_end().split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Req { method, path, headers, body: Vec::new() };
    if let Some(n) = req.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut b = vec![0; n];
        r.read_exact(&mut b).ok()?;
        req.body = b;
    }
    Some(req)
}

/// A loopback HTTP/1.1 server (keep-alive) calling `h` per request; returns its address and the
/// requests seen.
fn server(h: Handler) -> (String, Arc<Mutex<Vec<Req>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let (h, seen) = (h.clone(), s2.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut w = c;
                while let Some(req) = read_req(&mut r) {
                    seen.lock().unwrap().push(req.clone());
                    h(&req, &mut w);
                    let _ = w.flush();
                }
            });
        }
    });
    (addr, seen)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn sha256(b: &[u8]) -> String {
    openssl::sha::sha256(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn ok(w: &mut dyn Write, req: &Req, body: &[u8]) {
    let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    if req.method != "HEAD" {
        let _ = w.write_all(body);
    }
}

fn status(w: &mut dyn Write, code: u16, text: &str) {
    let _ = write!(w, "HTTP/1.1 {code} {text}\r\nContent-Length: 0\r\n\r\n");
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vws-http-staging-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(d: &Path) -> Vec<String> {
    std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()
}

fn opts(timeout_ms: u64, retries: u32) -> Options {
    Options { timeout: Duration::from_millis(timeout_ms), retries, ..Default::default() }
}

#[test]
fn redirects_are_followed_up_to_the_limit() {
    let img = Arc::new(data(3 << 20));
    let i2 = img.clone();
    let (addr, seen) = server(Arc::new(move |req: &Req, w: &mut dyn Write| match req.path.as_str() {
        "/img" => ok(w, req, &i2),
        "/old" => {
            let _ = write!(w, "HTTP/1.1 301 Moved\r\nLocation: /mid\r\nContent-Length: 0\r\n\r\n");
        }
        "/mid" => {
            let _ = write!(w, "HTTP/1.1 307 Temporary\r\nLocation: img\r\nContent-Length: 0\r\n\r\n");
        }
        p if p.starts_with("/loop") => {
            let n: u32 = p[5..].parse().unwrap_or(0);
            let _ = write!(w, "HTTP/1.1 302 Found\r\nLocation: /loop{}\r\nContent-Length: 0\r\n\r\n", n + 1);
        }
        _ => status(w, 404, "Not Found"),
    }));
    let out = out_dir("redirect");
    let r = transfer::stage(&format!("http://{addr}/old"), out.join("a.img").to_str().unwrap(), &opts(5000, 0)).unwrap();
    assert_eq!(r.bytes, 3 << 20);
    assert_eq!(r.sha256, sha256(&img));
    assert_eq!(std::fs::read(out.join("a.img")).unwrap(), *img);
    let paths: Vec<String> = seen.lock().unwrap().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(paths.contains(&"GET /img".to_string()) && paths.contains(&"HEAD /mid".to_string()), "{paths:?}");

    // A redirect loop stops after MAX_REDIRECTS with a clear protocol error; nothing left behind.
    seen.lock().unwrap().clear();
    let e = transfer::stage(&format!("http://{addr}/loop0"), out.join("b.img").to_str().unwrap(), &opts(5000, 0)).unwrap_err();
    assert_eq!(e.kind(), "protocol", "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("http://{addr}/loop0")) && msg.contains("more than 5 redirects"), "{msg}");
    assert_eq!(seen.lock().unwrap().len(), 6, "the first request and 5 redirects");
    assert_eq!(entries(&out), vec!["a.img".to_string()]);
}

#[test]
fn a_server_stalling_mid_body_times_out_and_leaves_no_file() {
    let img = Arc::new(data(1 << 20));
    let i2 = img.clone();
    let (addr, seen) = server(Arc::new(move |req: &Req, w: &mut dyn Write| {
        let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", i2.len());
        if req.method == "GET" {
            let _ = w.write_all(&i2[..100_000]);
            let _ = w.flush();
            std::thread::sleep(Duration::from_secs(30));
        }
    }));
    let out = out_dir("stall");
    let t = Instant::now();
    let e = transfer::stage(&format!("http://{addr}/img"), out.join("s.img").to_str().unwrap(), &opts(700, 1)).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind(), "timeout", "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("http://{addr}/img")) && msg.contains("no data for"), "{msg}");
    assert!(took < Duration::from_secs(10), "gave up after one resume: {took:?}");
    let gets: Vec<Option<String>> =
        seen.lock().unwrap().iter().filter(|r| r.method == "GET").map(|r| r.header("range").map(String::from)).collect();
    assert_eq!(gets, vec![None, Some("bytes=100000-".to_string())], "one resume from where the data stopped");
    assert!(entries(&out).is_empty(), "no partial file: {:?}", entries(&out));
}

#[test]
fn more_bytes_than_announced_is_refused() {
    let (addr, _) = server(Arc::new(|req: &Req, w: &mut dyn Write| {
        if req.method == "HEAD" {
            let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        } else {
            ok(w, req, &data(5000));
        }
    }));
    let out = out_dir("more");
    let e = transfer::stage(&format!("http://{addr}/img"), out.join("m.img").to_str().unwrap(), &opts(5000, 0)).unwrap_err();
    assert_eq!(e.kind(), "protocol", "{e}");
    assert!(e.to_string().contains("more than the 1000 bytes it announced"), "{e}");
    assert!(entries(&out).is_empty());
}

#[test]
fn statuses_and_refused_connections_are_clear_errors() {
    let (addr, _) = server(Arc::new(|req: &Req, w: &mut dyn Write| match req.path.as_str() {
        "/forbidden" => status(w, 403, "Forbidden"),
        "/auth" => status(w, 401, "Unauthorized"),
        "/gone" => status(w, 410, "Gone"),
        _ => status(w, 500, "Internal Server Error"),
    }));
    let out = out_dir("status");
    let stage = |path: &str| {
        transfer::stage(&format!("http://{addr}{path}"), out.join("x.img").to_str().unwrap(), &opts(5000, 0)).unwrap_err()
    };
    assert_eq!(stage("/forbidden").kind(), "denied");
    assert_eq!(stage("/auth").kind(), "auth");
    assert_eq!(stage("/gone").kind(), "not_found");
    let e = stage("/boom");
    assert_eq!(e.kind(), "remote");
    assert!(e.to_string().contains("500 Internal Server Error"), "{e}");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = transfer::stage(&format!("http://127.0.0.1:{port}/img"), out.join("x.img").to_str().unwrap(), &opts(2000, 0))
        .unwrap_err();
    assert_eq!(e.kind(), "connect", "{e}");
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    assert!(entries(&out).is_empty());
}

#[test]
fn put_streams_the_file() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let (addr, seen) = server(Arc::new(move |req: &Req, w: &mut dyn Write| {
        if req.method == "PUT" {
            *g2.lock().unwrap() = req.body.clone();
            status(w, 201, "Created");
        } else {
            status(w, 405, "Method Not Allowed");
        }
    }));
    let dir = out_dir("put");
    let src = dir.join("src.img");
    let body = data((5 << 20) + 17);
    std::fs::write(&src, &body).unwrap();
    let url = transfer::Url::parse(&format!("http://{addr}/up%20load/a.img")).unwrap();
    let ep = transfer::open(&url, &opts(5000, 0)).unwrap();
    let progress = transfer::Progress::new(&url.to_string(), Some(body.len() as u64), None, Duration::from_millis(100));
    let n = ep.upload(&std::fs::File::open(&src).unwrap(), body.len() as u64, &progress).unwrap();
    assert_eq!(n, body.len() as u64);
    assert_eq!(progress.bytes(), body.len() as u64);
    assert!(*got.lock().unwrap() == body, "the server got the file byte for byte");
    let s = seen.lock().unwrap();
    assert_eq!(s[0].path, "/up%20load/a.img");
    assert_eq!(s[0].header("content-length"), Some(body.len().to_string().as_str()));
}

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn cert(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("O", "vws test").unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
            let san =
                SubjectAlternativeName::new().ip("127.0.0.1").dns("localhost").build(&b.x509v3_context(Some(ca), None)).unwrap();
            b.append_extension(san).unwrap();
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

/// A loopback HTTPS server presenting a certificate for 127.0.0.1 issued by a CA made here;
/// returns its address and a trusted certificates directory holding that CA as `<hash>.0`.
fn https_server(h: Handler) -> (String, PathBuf) {
    let (ca_key, host_key) = (key(), key());
    let ca = cert("vws test CA", &ca_key, None);
    let host = cert("127.0.0.1", &host_key, Some((&ca, &ca_key)));
    let dir = out_dir("trust");
    let hash = format!("{:08x}", ca.subject_name_hash());
    std::fs::write(dir.join(format!("{hash}.0")), ca.to_pem().unwrap()).unwrap();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_private_key(&host_key).unwrap();
    b.set_certificate(&host).unwrap();
    let acc = Arc::new(b.build());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let (acc, h) = (acc.clone(), h.clone());
            std::thread::spawn(move || {
                let Ok(s) = acc.accept(c) else { return };
                let mut s = BufReader::new(s);
                while let Some(req) = read_req(&mut s) {
                    h(&req, s.get_mut());
                    let _ = s.get_mut().flush();
                }
            });
        }
    });
    (addr, dir)
}

#[test]
fn https_trusts_the_gsi_certificates_directory() {
    let img = Arc::new(data(2 << 20));
    let (i2, plain) = (img.clone(), Arc::new(AtomicUsize::new(0)));
    let (plain_addr, _) = {
        let p = plain.clone();
        server(Arc::new(move |req: &Req, w: &mut dyn Write| {
            p.fetch_add(1, Ordering::SeqCst);
            ok(w, req, b"downgraded")
        }))
    };
    let (addr, trust) = https_server(Arc::new(move |req: &Req, w: &mut dyn Write| match req.path.as_str() {
        "/img" => ok(w, req, &i2),
        _ => {
            let _ = write!(w, "HTTP/1.1 302 Found\r\nLocation: http://{plain_addr}/img\r\nContent-Length: 0\r\n\r\n");
        }
    }));
    let out = out_dir("https");
    let o = Options { cert_dir: Some(trust.clone()), ..opts(5000, 0) };
    let r = transfer::stage(&format!("https://{addr}/img"), out.join("t.img").to_str().unwrap(), &o).unwrap();
    assert_eq!(r.sha256, sha256(&img));

    // https → http is refused.
    let e = transfer::stage(&format!("https://{addr}/down"), out.join("d.img").to_str().unwrap(), &o).unwrap_err();
    assert_eq!(e.kind(), "protocol", "{e}");
    assert!(e.to_string().contains("from https to http"), "{e}");
    assert_eq!(plain.load(Ordering::SeqCst), 0);

    // A server whose CA is not in the directory: a TLS authentication error saying why.
    let empty = out_dir("empty-trust");
    let o = Options { cert_dir: Some(empty), ..opts(5000, 0) };
    let e = transfer::stage(&format!("https://{addr}/img"), out.join("u.img").to_str().unwrap(), &o).unwrap_err();
    assert_eq!(e.kind(), "auth", "{e}");
    assert!(e.to_string().contains("TLS") && e.to_string().contains("certificate verify failed"), "{e}");
    assert_eq!(entries(&out), vec!["t.img".to_string()]);
}
