//! GSI security benchmarks against a real `vwsd --https`, printed as a table: (a) a new TLS
//! connection presenting a 2-level proxy chain (a proxy of a proxy) plus one
//! GetResourceProperty, (b) GetResourceProperty over one reused GSI connection, (c) a
//! WS-Security signed-message round trip (client signs, vwsd verifies and signs the answer,
//! the client verifies it), (d) GetResourceProperty through the client library
//! (`client::Client` over its pooled GSI connection). The bench brings up its own throwaway credential kit
//! (`target/gsikit-bench`, the helpers of `tests/common/gsi.rs`) and its own vwsd.
//! Run: `cargo bench --bench security` (`VWS_SHARED` names the shared peers directory);
//! `VWS_BENCH_CHAIN_CACHE_SECS=0` turns the validated-chain cache off on both sides (default 30);
//! `VWS_BENCH_ONLY=signed` measures (c) only (e.g. under `perf record`).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::gsi::{self, Kit};
use common::*;
use openssl::ssl::{SslConnector, SslStream};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use vws::security::wssec::{self, ReplayCache, Signer};
use vws::security::{tls, CertDir, Credential, TrustConfig};

const CONNECT_N: usize = 200;
const REUSE_N: usize = 5000;
const SIGNED_N: usize = 1000;

fn connector(proxy: &Path) -> SslConnector {
    // The server's chain is checked with GSI validation after the handshake, as vws does.
    common::gsi::proxy_connector(Some(proxy))
}

/// A new TCP connection and TLS handshake, the host's chain validated and its name checked.
fn open(c: &SslConnector, addr: &str, certdir: &CertDir) -> BufReader<SslStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ssl = c.configure().unwrap().verify_hostname(false).connect("localhost", tcp).unwrap();
    let v = tls::verify_peer(ssl.ssl(), certdir).expect("host credential");
    tls::check_host(v.leaf(), "127.0.0.1").unwrap();
    BufReader::new(ssl)
}

fn http_request(host: &str, service: &str, action: &str, body: &str, close: bool) -> Vec<u8> {
    format!(
        "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

fn exchange<S: std::io::Read + Write>(r: &mut BufReader<S>, req: &[u8]) -> HttpResponse {
    r.get_mut().write_all(req).unwrap();
    let resp = read_response(r).expect("response");
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp
}

fn get_rp_body(to: &str, key: &str) -> String {
    envelope(
        to,
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &Server::ws_key_header(key),
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:owner</wsrp:GetResourceProperty>"),
    )
}

struct Stats {
    n: usize,
    median: f64,
    p90: f64,
    min: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = ms.len();
    Stats { n, median: ms[n / 2], p90: ms[n * 9 / 10], min: ms[0] }
}

fn row(name: &str, s: Option<&Stats>, goal_ms: f64, gt4: &str) {
    match s {
        Some(s) => println!(
            "| {name:<52} | {:>5} | {:>9.3} | {:>9.3} | {:>9.3} | <= {goal_ms:<5} | {:<4} | {gt4:<12} |",
            s.n,
            s.median,
            s.p90,
            s.min,
            if s.median <= goal_ms { "met" } else { "MISS" }
        ),
        None => println!(
            "| {name:<52} | {:>5} | {:>9} | {:>9} | {:>9} | <= {goal_ms:<5} | {:<4} | {gt4:<12} |",
            "-", "not measured", "", "", "-"
        ),
    }
}

/// This thread's CPU time, ms.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// A process's CPU time (user + system), ms, from /proc.
fn process_cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// `VWS_BENCH_ONLY=inproc`: the four WS-Security steps of (c) in this process, without HTTP or
/// vwsd (for profiling with perf or callgrind): the client signs a request, the host verifies it,
/// the host signs an answer, the client verifies that. Prints thread CPU µs per step (median).
fn in_process(kit: &Kit, chain2: &Path) {
    let n: usize = std::env::var("VWS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(SIGNED_N);
    let user = Signer::new(&Credential::load_proxy(chain2).unwrap()).unwrap();
    let host = Signer::new(&Credential::load(kit.var("GSI_HOST_CERT"), kit.var("GSI_HOST_KEY")).unwrap()).unwrap();
    let trust = kit.trust();
    let (server_replay, client_replay) = (ReplayCache::new(), ReplayCache::new());
    let to = "http://127.0.0.1:8080/wsrf/services/WorkspaceService";
    let req = get_rp_body(to, "7");
    let answer = envelope(
        to,
        &format!("{WSRP_ACTION}/GetResourcePropertyResponse"),
        "",
        &format!("<wsrp:GetResourcePropertyResponse xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\"><w:owner>/O=Grid/CN=someone</w:owner></wsrp:GetResourcePropertyResponse>"),
    );
    let pid_id = format!("uuid:test-{}<", std::process::id());
    let mut t: [Vec<f64>; 4] = Default::default();
    for i in 0..n + 50 {
        let id = format!("uuid:{}<", uuid::Uuid::new_v4());
        let (r, a) = (req.replace(&pid_id, &id), answer.replace(&pid_id, &id));
        let c0 = thread_cpu_ms();
        let signed = user.sign(&r).unwrap();
        let c1 = thread_cpu_ms();
        let v = wssec::verify(signed.as_bytes(), &trust, &server_replay, wssec::now_ms()).unwrap();
        assert!(v.is_some());
        let c2 = thread_cpu_ms();
        let out = host.sign(&a).unwrap();
        let c3 = thread_cpu_ms();
        let v = wssec::verify(out.as_bytes(), &trust, &client_replay, wssec::now_ms()).unwrap();
        assert!(v.is_some());
        let c4 = thread_cpu_ms();
        if i >= 50 {
            for (k, d) in [c1 - c0, c2 - c1, c3 - c2, c4 - c3].into_iter().enumerate() {
                t[k].push(d * 1000.0);
            }
        }
    }
    let [a, b, c, d] = t.map(|v| stats(v).median);
    println!(
        "in-process WS-Security, thread CPU medians over {n}: client signs {a:.0} µs, host verifies {b:.0} µs, host signs {c:.0} µs, client verifies {d:.0} µs, total {:.0} µs",
        a + b + c + d
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let kit: Kit = gsi::bring_up(&gsi::repo().join("target/gsikit-bench"), &gsi::port());
    // A proxy of a proxy (2-level chain): grid-proxy-init from the kit's RFC proxy.
    let chain2 = gsi::gpi_from(&kit, &kit.path("GSI_PROXY_RFC"), "bench-rfc2.pem", &["-rfc"]);
    if std::env::var("VWS_BENCH_ONLY").is_ok_and(|v| v == "inproc") {
        in_process(&kit, &chain2);
        return;
    }
    // `VWS_BENCH_CHAIN_CACHE_SECS=0` measures without the validated-chain cache (client and vwsd).
    let cache_secs: u64 = std::env::var("VWS_BENCH_CHAIN_CACHE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    vws::security::proxy::set_chain_cache_ttl(Duration::from_secs(cache_secs));
    let security = format!(
        "host_cert = \"{}\"\nhost_key = \"{}\"\ncert_dir = \"{}\"\ngridmap = \"{}\"\nvomsdir = \"{}\"\nchain_cache_secs = {cache_secs}\n",
        kit.var("GSI_HOST_CERT"),
        kit.var("GSI_HOST_KEY"),
        kit.var("X509_CERT_DIR"),
        kit.var("GRIDMAP"),
        kit.var("X509_VOMS_DIR"),
    );
    let s = Server::start_with(Conf { security, ..Default::default() });
    let certdir = CertDir::load(kit.path("X509_CERT_DIR")).unwrap();
    let c = connector(&chain2);
    let host = s.https_addr.clone();

    // One workspace, created over GSI with the 2-level chain.
    let mut conn = open(&c, &host, &certdir);
    let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
    let body = envelope(
        &s.https_url("WorkspaceFactoryService"),
        &action,
        "",
        &format!("<create xmlns=\"{VWS}\">{}</create>", sample_description()),
    );
    let r = exchange(&mut conn, &http_request(&host, "WorkspaceFactoryService", &action, &body, false));
    let key = between(&r.body, "WorkspaceKey xmlns:k0=\"http://vws.dev/2026/11/workspace\">", "<").expect("key").to_string();
    let gp_action = format!("{WSRP_ACTION}/GetResourceProperty");
    let gp_keepalive =
        http_request(&host, "WorkspaceService", &gp_action, &get_rp_body(&s.https_url("WorkspaceService"), &key), false);
    let gp_close =
        http_request(&host, "WorkspaceService", &gp_action, &get_rp_body(&s.https_url("WorkspaceService"), &key), true);
    let r = exchange(&mut conn, &gp_keepalive);
    assert!(r.body.contains(&kit.user_dn()), "{}", r.body);

    let only_signed = std::env::var("VWS_BENCH_ONLY").is_ok_and(|v| v == "signed");
    let (connect_n, reuse_n) = if only_signed { (1, 1) } else { (CONNECT_N, REUSE_N) };
    // (a) new connection + one GetResourceProperty
    for _ in 0..20.min(connect_n) {
        let mut c1 = open(&c, &host, &certdir);
        exchange(&mut c1, &gp_close);
    }
    let mut a = Vec::with_capacity(connect_n);
    for _ in 0..connect_n {
        let t = Instant::now();
        let mut c1 = open(&c, &host, &certdir);
        let r = exchange(&mut c1, &gp_close);
        a.push(ms(t));
        assert!(r.body.contains("GetResourcePropertyResponse"));
    }
    let a = stats(a);

    // (b) reused connection
    for _ in 0..200.min(reuse_n) {
        exchange(&mut conn, &gp_keepalive);
    }
    let mut b = Vec::with_capacity(reuse_n);
    for _ in 0..reuse_n {
        let t = Instant::now();
        exchange(&mut conn, &gp_keepalive);
        b.push(ms(t));
    }
    let b = stats(b);

    // (d) the client library (`client::Client`, what `vws --https` and a Manager host calling
    // the site Repository use): GetResourceProperty over its pooled GSI connection.
    let d = {
        let cred = Credential::load_proxy(&chain2).unwrap();
        let client = vws::client::Client::with_credential(&cred, &kit.path("X509_CERT_DIR")).unwrap();
        let mut epr = vws::soap::epr::Epr::new(s.https_url("WorkspaceService"));
        epr.properties.push((vws::soap::xml::QName::new(VWS, "WorkspaceKey"), key.clone()));
        let get = vws::wsrf::messages::GetResourceProperty { name: vws::soap::xml::QName::new(VWS, "owner") };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let n = if only_signed { 1 } else { 500 };
        let mut v = Vec::with_capacity(n);
        for i in 0..n + 20.min(n) {
            let t = Instant::now();
            let r = rt.block_on(client.invoke(&epr, &get)).expect("GetRP through client::Client");
            if i >= 20.min(n) {
                v.push(ms(t));
            }
            assert!(r.content.contains(&kit.user_dn()));
        }
        stats(v)
    };

    // (c) signed-message round trip over a reused plain-HTTP connection: sign, send, the server
    // verifies (chain, replay) and signs its answer, the client verifies that answer.
    let cred = Credential::load_proxy(&chain2).unwrap();
    let signer = Signer::new(&cred).expect("signer");
    let client_trust = TrustConfig::new(CertDir::load(kit.path("X509_CERT_DIR")).unwrap());
    let client_replay = ReplayCache::new();
    let plain_to = s.url("WorkspaceService");
    let mut plain = BufReader::new(TcpStream::connect(&s.addr).unwrap());
    plain.get_ref().set_nodelay(true).unwrap();
    let pid_id = format!("uuid:test-{}<", std::process::id());
    // Returns the times of (client signing, network + server, client verification).
    // CPU times (ms) of the client's signing and verification, summed over the measured loop.
    let mut cpu = [0.0f64; 2];
    let mut signed_rt = |check: bool, cpu: &mut [f64; 2]| -> Result<[f64; 3], String> {
        let env = get_rp_body(&plain_to, &key).replace(&pid_id, &format!("uuid:{}<", uuid::Uuid::new_v4()));
        let t0 = Instant::now();
        let c0 = thread_cpu_ms();
        let signed = signer.sign(&env).map_err(|e| format!("signing: {e}"))?;
        cpu[0] += thread_cpu_ms() - c0;
        let t_sign = ms(t0);
        let t1 = Instant::now();
        let req = http_request(&s.addr, "WorkspaceService", &gp_action, &signed, false);
        plain.get_mut().write_all(&req).map_err(|e| e.to_string())?;
        let r = read_response(&mut plain).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("HTTP {}: {}", r.status, r.faultstring().unwrap_or(&r.body)));
        }
        let t_server = ms(t1);
        let t2 = Instant::now();
        let c2 = thread_cpu_ms();
        let verified = wssec::verify(r.body.as_bytes(), &client_trust, &client_replay, wssec::now_ms());
        cpu[1] += thread_cpu_ms() - c2;
        match verified {
            Ok(Some(sig)) => {
                if check && sig.caller.dn.as_deref() != Some(kit.var("GSI_HOST_DN").as_str()) {
                    return Err(format!("answer signed by {}", sig.caller.name()));
                }
            }
            Ok(None) => return Err("the answer is not signed (message security not wired?)".into()),
            Err(e) => return Err(format!("the answer's signature: {e}")),
        }
        let t_verify = ms(t2);
        if check && !r.body.contains(&kit.user_dn()) {
            return Err(format!("unexpected answer: {}", r.body));
        }
        Ok([t_sign, t_server, t_verify])
    };
    let mut parts: [Vec<f64>; 3] = Default::default();
    let mut warm = [0.0; 2];
    let mut server_cpu = 0.0;
    let signed = match signed_rt(true, &mut warm) {
        Ok(_) => {
            for _ in 0..50 {
                signed_rt(false, &mut warm).unwrap();
            }
            let mut v = Vec::with_capacity(SIGNED_N);
            let pid = s.child.as_ref().map(|c| c.id()).unwrap_or(0);
            let s0 = process_cpu_ms(pid);
            for _ in 0..SIGNED_N {
                let t = Instant::now();
                let p = signed_rt(false, &mut cpu).unwrap();
                v.push(ms(t));
                for i in 0..3 {
                    parts[i].push(p[i]);
                }
            }
            server_cpu = process_cpu_ms(pid) - s0;
            Some(stats(v))
        }
        Err(e) => {
            eprintln!("signed-message round trip not measured: {e}");
            None
        }
    };

    println!();
    println!("vws GSI security benchmarks (vwsd --https on loopback; times in ms; chain cache {cache_secs} s)");
    println!(
        "| {:<52} | {:>5} | {:>9} | {:>9} | {:>9} | {:<8} | {:<4} | {:<12} |",
        "measurement", "n", "median", "p90", "min", "goal", "", "GT4"
    );
    println!("|{:-<54}|{:->7}|{:->11}|{:->11}|{:->11}|{:-<10}|{:-<6}|{:-<14}|", "", "", "", "", "", "", "", "");
    row("(a) new TLS conn, 2-level proxy chain + 1 GetRP", Some(&a), 5.0, "114 ms");
    row("(b) GetResourceProperty over a reused GSI connection", Some(&b), 0.2, "-");
    row("(c) WS-Security signed GetRP round trip", signed.as_ref(), 2.0, "182 ms");
    println!(
        "(d) GetRP through the client library (client::Client, pooled GSI connection): n {}, median {:.3} ms, p90 {:.3} ms, min {:.3} ms",
        d.n, d.median, d.p90, d.min
    );
    if signed.is_none() {
        println!("(c) not measured: WS-Security signed messages are not wired into vwsd");
    } else {
        let [sign, server, verify] = parts.map(|p| stats(p).median);
        println!(
            "(c) medians of its parts: client signs {sign:.3} ms, HTTP + vwsd (verify, GetRP, sign answer) {server:.3} ms, client verifies the answer {verify:.3} ms"
        );
        let n = SIGNED_N as f64;
        println!(
            "(c) CPU time per round trip (less sensitive to load): client signs {:.3} ms, vwsd (all threads) {:.3} ms, client verifies {:.3} ms, total {:.3} ms",
            cpu[0] / n,
            server_cpu / n,
            cpu[1] / n,
            (cpu[0] + cpu[1] + server_cpu) / n
        );
    }
    drop(s);
}
