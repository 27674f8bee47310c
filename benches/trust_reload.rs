//! Trust reload under load (`make bench-ops`): a real vwsd with security on and its own copy of
//! the kit's trust directory; CLIENTS (16) GSI clients run GetResourceProperty on kept-alive
//! connections — one of them as a user who gets revoked — for a BASELINE_SECS phase without
//! CRL changes, then a CHURN_SECS phase in which the CRL file is replaced (by rename, as
//! fetch-crl does) every second; halfway through the churn the user is revoked. Prints: errors of
//! the unrevoked users (goal 0), the revoked user's answers after the first refusal (goal: all
//! refused), how long after the revoking CRL landed the first refusal came, and the latency
//! percentiles of the unrevoked users without vs with the churn.
//! env: CLIENTS, BASELINE_SECS (default 15), CHURN_SECS (default 60).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::gsi::{self, kit, Kit};
use common::*;
use openssl::ssl::SslStream;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WS: &str = "WorkspaceService";
const FACTORY: &str = "WorkspaceFactoryService";
const VICTIM_DN: &str = "/O=Grid/OU=GlobusTest/CN=Bench Revoked User";

fn env_or(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

struct Conn {
    r: BufReader<SslStream<TcpStream>>,
    host: String,
}

impl Conn {
    fn open(addr: &str, proxy: &Path) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let ssl = gsi::proxy_connector(Some(proxy))
            .configure()
            .unwrap()
            .verify_hostname(false)
            .connect("localhost", tcp)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Conn { r: BufReader::new(ssl), host: addr.to_string() })
    }
    fn post(&mut self, service: &str, action: &str, body: &str) -> std::io::Result<HttpResponse> {
        let req = format!(
            "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.r.get_mut().write_all(req.as_bytes())?;
        read_response(&mut self.r)
    }
}

fn create(s: &Server, proxy: &Path) -> String {
    let mut c = Conn::open(&s.https_addr, proxy).unwrap();
    let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
    let body =
        envelope(&s.https_url(FACTORY), &action, "", &format!("<create xmlns=\"{VWS}\">{}</create>", sample_description()));
    let r = c.post(FACTORY, &action, &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    between(&r.body, &format!("WorkspaceKey xmlns:k0=\"{VWS}\">"), "<").unwrap().to_string()
}

fn ca_cmd(k: &Kit, cnf: &Path, extra: &[&str]) {
    let ca = k.ca();
    let mut a = vec!["ca", "-batch", "-config", gsi::p(cnf), "-cert", gsi::p(&ca.0), "-keyfile", gsi::p(&ca.1)];
    a.extend_from_slice(extra);
    gsi::openssl(&a);
}

fn install_crl(k: &Kit, cnf: &Path, certs: &Path, hashes: &[String], n: u64) {
    let out = cnf.parent().unwrap().join(format!("bench-{n}.crl"));
    ca_cmd(k, cnf, &["-gencrl", "-crldays", "30", "-out", gsi::p(&out)]);
    for h in hashes {
        let tmp = certs.join(format!(".{h}.r0.tmp"));
        std::fs::copy(&out, &tmp).unwrap();
        std::fs::rename(&tmp, certs.join(format!("{h}.r0"))).unwrap();
    }
    let _ = std::fs::remove_file(out);
}

#[derive(Default)]
struct Stats {
    /// (time since start, latency) of the unrevoked users' successful requests.
    ok: Vec<(Duration, Duration)>,
    errors: Vec<String>,
    /// The revoked user: (time since start, status).
    victim: Vec<(Duration, u16)>,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

fn main() {
    let clients = env_or("CLIENTS", 16) as usize;
    let baseline = Duration::from_secs(env_or("BASELINE_SECS", 15));
    let churn = Duration::from_secs(env_or("CHURN_SECS", 60));
    let k = kit();
    let ca = k.ca();
    let (cert, key, cnf) = gsi::issue(k, "bench-victim", (&ca.0, &ca.1), VICTIM_DN, gsi::USER_EXT, None);
    let victim_proxy = gsi::gpi_user(k, &cert, &key, "bench-victim-proxy.pem", &["-rfc"]);
    let (certs, hashes) = gsi::certdir_copy(k, "bench-certs", true);
    let gridmap: PathBuf = k.x.join("bench-grid-mapfile");
    let mut g = std::fs::read_to_string(k.path("GRIDMAP")).unwrap();
    g.push_str(&format!("\"{VICTIM_DN}\" victim\n"));
    std::fs::write(&gridmap, g).unwrap();
    install_crl(k, &cnf, &certs, &hashes, 0);
    let sec = format!(
        "host_cert = \"{}\"\nhost_key = \"{}\"\ncert_dir = \"{}\"\ngridmap = \"{}\"\nvomsdir = \"{}\"\nreload_check_secs = 5\n",
        k.var("GSI_HOST_CERT"),
        k.var("GSI_HOST_KEY"),
        certs.display(),
        gridmap.display(),
        k.var("X509_VOMS_DIR"),
    );
    let s = Server::start_with(Conf { security: sec, limits: "max_concurrent_requests = 1024".into(), ..Default::default() });
    let user_proxy = k.path("GSI_PROXY_RFC");
    let user_key = create(&s, &user_proxy);
    let victim_key = create(&s, &victim_proxy);

    let stats = Arc::new(Mutex::new(Stats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut threads = Vec::new();
    for i in 0..clients {
        let victim = i == 0;
        let (proxy, key) =
            if victim { (victim_proxy.clone(), victim_key.clone()) } else { (user_proxy.clone(), user_key.clone()) };
        let (addr, url) = (s.https_addr.clone(), s.https_url(WS));
        let (stats, stop) = (stats.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let action = format!("{WSRP_ACTION}/GetResourceProperty");
            let payload =
                format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:owner</wsrp:GetResourceProperty>");
            let body = envelope(&url, &action, &Server::ws_key_header(&key), &payload);
            let mut conn: Option<Conn> = None;
            let mut local = Stats::default();
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match Conn::open(&addr, &proxy) {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            local.errors.push(format!("connect: {e}"));
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    }
                }
                let t = Instant::now();
                let r = conn.as_mut().unwrap().post(WS, &action, &body);
                let lat = t.elapsed();
                let at = t0.elapsed();
                match r {
                    Ok(r) if victim => {
                        local.victim.push((at, r.status));
                        if r.status != 200 || r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                            conn = None;
                        }
                    }
                    Ok(r) if r.status == 200 => local.ok.push((at, lat)),
                    Ok(r) => {
                        local.errors.push(format!("HTTP {}: {}", r.status, r.faultstring().unwrap_or("")));
                        conn = None;
                    }
                    Err(e) if victim => {
                        local.victim.push((at, 0));
                        let _ = e;
                        conn = None;
                    }
                    Err(e) => {
                        local.errors.push(format!("io: {e}"));
                        conn = None;
                    }
                }
            }
            let mut st = stats.lock().unwrap();
            st.ok.extend(local.ok);
            st.errors.extend(local.errors);
            st.victim.extend(local.victim);
        }));
    }
    // Baseline, then a new CRL every second; the revocation halfway through the churn.
    std::thread::sleep(baseline);
    let churn_start = t0.elapsed();
    let mut revoked_at = None;
    let mut n = 1;
    while t0.elapsed() < churn_start + churn {
        if revoked_at.is_none() && t0.elapsed() >= churn_start + churn / 2 {
            ca_cmd(k, &cnf, &["-revoke", gsi::p(&cert)]);
            install_crl(k, &cnf, &certs, &hashes, n);
            revoked_at = Some(t0.elapsed());
        } else {
            install_crl(k, &cnf, &certs, &hashes, n);
        }
        n += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let revoked_at = revoked_at.expect("revoked during the churn");
    let st = stats.lock().unwrap();
    let mut base: Vec<Duration> = st.ok.iter().filter(|(at, _)| *at < churn_start).map(|(_, l)| *l).collect();
    let mut during: Vec<Duration> = st.ok.iter().filter(|(at, _)| *at >= churn_start).map(|(_, l)| *l).collect();
    let first_refusal = st.victim.iter().filter(|(at, s)| *at >= revoked_at && *s != 200).map(|(at, _)| *at).min();
    let after: Vec<&(Duration, u16)> =
        first_refusal.map(|f| st.victim.iter().filter(|(at, _)| *at >= f).collect()).unwrap_or_default();
    let refused_after = after.iter().filter(|(_, s)| *s != 200).count();
    let victim_ok_before = st.victim.iter().filter(|(at, s)| *at < revoked_at && *s == 200).count();
    let log = s.log();
    let reloads = log.matches("trust reloaded").count();
    let failed = log.matches("trust reload failed").count();
    println!(
        "\nTrust reload under load: {clients} GSI clients (1 revoked halfway), GetResourceProperty on kept-alive connections"
    );
    println!("baseline {} s without CRL changes, then {} s with the CRL replaced every second ({} replacements, {reloads} reloads, {failed} failed)", baseline.as_secs(), churn.as_secs(), n - 1);
    println!("{:<34} {:>10} {:>10} {:>10} {:>10}", "unrevoked users", "requests", "p50 ms", "p99 ms", "req/s");
    let bs = churn_start.as_secs_f64();
    let ds = churn.as_secs_f64();
    let (bn, dn) = (base.len(), during.len());
    println!(
        "{:<34} {:>10} {:>10.3} {:>10.3} {:>10.0}",
        "  baseline",
        bn,
        pct(&mut base, 0.5),
        pct(&mut base, 0.99),
        bn as f64 / bs
    );
    println!(
        "{:<34} {:>10} {:>10.3} {:>10.3} {:>10.0}",
        "  CRL replaced every second",
        dn,
        pct(&mut during, 0.5),
        pct(&mut during, 0.99),
        dn as f64 / ds
    );
    println!(
        "unrevoked users' errors: {} (goal 0){}",
        st.errors.len(),
        st.errors.first().map(|e| format!(", first: {e}")).unwrap_or_default()
    );
    println!("revoked user: {victim_ok_before} requests accepted before the revoking CRL landed");
    match first_refusal {
        Some(f) => println!(
            "revoked user: first refusal {:.0} ms after the revoking CRL landed; after it {refused_after}/{} answers refused (goal 100 %)",
            (f - revoked_at).as_secs_f64() * 1000.0,
            after.len()
        ),
        None => println!("revoked user: NEVER refused after the revocation (FAIL)"),
    }
    let pass = st.errors.is_empty() && first_refusal.is_some() && refused_after == after.len();
    println!("verdict: {}", if pass { "PASS" } else { "FAIL" });
}
