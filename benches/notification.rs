//! WS-BaseNotification benchmarks against a real vwsd, printed as a table: (a) Notify latency
//! from the commit of a change (the moment its `add` answer arrives, an upper bound of the
//! commit) to the consumer's receipt, with 1 and with 1,000 subscriptions on the counter;
//! (b) GetResourceProperty throughput on one resource with 0 and with 1,000 subscriptions on it
//! (and their Notify traffic going on); (c) `add` (a change) latency with 0 and 1,000;
//! (d) the same, alternating between a counter without and one with 1,000 subscriptions so
//! both see the same disk (fsync latency here varies from run to run); vwsd's CPU per change.
//! Run: `cargo bench --bench notification`.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WSNT_ACTION: &str = "http://docs.oasis-open.org/wsn/2004/06/wsn-WS-BaseNotification";
const SIMPLE: &str = "http://docs.oasis-open.org/wsn/2004/06/TopicExpression/Simple";

/// Pause before each measured change.
const PAUSE: Duration = Duration::from_millis(20);

/// A consumer that records the receipt time of every Notify carrying each NewValue.
type Received = Arc<Mutex<Vec<(Instant, String)>>>;

fn consumer() -> (String, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut w = c;
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let now = Instant::now();
                    let b = String::from_utf8_lossy(&body);
                    let v =
                        between(&b, "<ns4:NewValue><ns1:Value xmlns:ns1=\"http://counter.com\">", "<").unwrap_or("").to_string();
                    g.lock().unwrap().push((now, v));
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/consumer"), got)
}

fn subscribe(s: &Server, counter: &str, consumer: &str) {
    let body = format!(
        "<wsnt:Subscribe xmlns:wsnt=\"{WSNT}\"><wsnt:ConsumerReference><wsa:Address>{consumer}</wsa:Address></wsnt:ConsumerReference><wsnt:TopicExpression Dialect=\"{SIMPLE}\" xmlns:c=\"http://counter.com\">c:Value</wsnt:TopicExpression></wsnt:Subscribe>"
    );
    let r = s.call("CounterService", &Server::counter_key_header(counter), &format!("{WSNT_ACTION}/Subscribe"), &body);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Keep-alive connection to vwsd.
struct Conn(BufReader<TcpStream>, String);

impl Conn {
    fn new(s: &Server) -> Conn {
        let t = TcpStream::connect(&s.addr).unwrap();
        t.set_nodelay(true).unwrap();
        Conn(BufReader::new(t), s.addr.clone())
    }
    fn post(&mut self, s: &Server, service: &str, action: &str, header: &str, payload: &str) -> HttpResponse {
        let body = envelope(&s.url(service), action, header, payload);
        let req = format!(
            "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\n\r\n{body}",
            self.1,
            body.len()
        );
        self.0.get_mut().write_all(req.as_bytes()).unwrap();
        let r = read_response(&mut self.0).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
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

/// vwsd's CPU ms per change (the change and all its deliveries) over the last `latency` run.
static CPU_PER_CHANGE: Mutex<f64> = Mutex::new(0.0);

/// (latency median, p99 in ms over `n` changes with `subs` subscriptions; add median ms)
fn latency(s: &Server, counter: &str, got: &Received, subs: usize, n: usize) -> (f64, f64, f64) {
    let pid = s.child.as_ref().map_or(0, |c| c.id());
    let cpu0 = process_cpu_ms(pid);
    let mut c = Conn::new(s);
    let hdr = Server::counter_key_header(counter);
    let mut lat = Vec::new();
    let mut adds = Vec::new();
    for _ in 0..n {
        got.lock().unwrap().clear();
        // The same pause before every change whatever the number of subscribers (with none, the
        // loop would otherwise send back to back, which measures something else), long enough
        // for vwsd to finish the previous change's deliveries (answers, cursor write).
        std::thread::sleep(PAUSE);
        let t = Instant::now();
        let r = c.post(
            s,
            "CounterService",
            "http://counter.com/CounterPortType/addRequest",
            &hdr,
            &format!("<add xmlns=\"{COUNTER}\">1</add>"),
        );
        let committed = Instant::now();
        adds.push(t.elapsed().as_secs_f64() * 1000.0);
        let v = between(&r.body, ">", "</addResponse>").unwrap_or("").rsplit('>').next().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done: Vec<Instant> = got.lock().unwrap().iter().filter(|(_, x)| *x == v).map(|(t, _)| *t).collect();
            if done.len() >= subs {
                for d in done {
                    lat.push(d.saturating_duration_since(committed).as_secs_f64() * 1000.0);
                }
                break;
            }
            assert!(Instant::now() < deadline, "only {} of {subs} notifications for {v}", done.len());
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    *CPU_PER_CHANGE.lock().unwrap() = (process_cpu_ms(pid) - cpu0) / n as f64;
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut adds, 0.5))
}

/// `add` round trips (median, p90 ms) on counter `quiet` (no subscriptions) and on `watched`
/// (`subs` subscriptions), alternated over the same connection so both see the same machine
/// and disk (an fsync here costs 3–6 ms and varies with the other users of the disk); after
/// each change of `watched` every Notify is received before the next change.
fn interleaved(s: &Server, quiet: &str, watched: &str, got: &Received, subs: usize, n: usize) -> [(f64, f64); 2] {
    let mut c = Conn::new(s);
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..n {
        for (i, counter) in [quiet, watched].into_iter().enumerate() {
            got.lock().unwrap().clear();
            std::thread::sleep(PAUSE);
            let t = Instant::now();
            let r = c.post(
                s,
                "CounterService",
                "http://counter.com/CounterPortType/addRequest",
                &Server::counter_key_header(counter),
                &format!("<add xmlns=\"{COUNTER}\">1</add>"),
            );
            times[i].push(t.elapsed().as_secs_f64() * 1000.0);
            if i == 1 {
                let v = between(&r.body, ">", "</addResponse>").unwrap_or("").rsplit('>').next().unwrap().to_string();
                let deadline = Instant::now() + Duration::from_secs(60);
                while got.lock().unwrap().iter().filter(|(_, x)| *x == v).count() < subs {
                    assert!(Instant::now() < deadline, "notifications missing");
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    let [mut a, mut b] = times;
    [(pct(&mut a, 0.5), pct(&mut a, 0.9)), (pct(&mut b, 0.5), pct(&mut b, 0.9))]
}

/// GetResourceProperty requests per second over one keep-alive connection for `dur`.
fn getrp_rate(s: &Server, counter: &str, dur: Duration) -> f64 {
    let mut c = Conn::new(s);
    let hdr = Server::counter_key_header(counter);
    let body =
        format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:c=\"{COUNTER}\">c:Value</wsrp:GetResourceProperty>");
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < dur {
        c.post(s, "CounterService", &format!("{WSRP_ACTION}/GetResourceProperty"), &hdr, &body);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let s = Server::start();
    let (url, got) = consumer();
    let counter = s.create_counter("CounterService");
    // Warm-up: grow SQLite's WAL to its working size first (appending to a growing WAL file
    // costs a metadata sync per commit on ext4, reusing it after a checkpoint does not), so the
    // first measurement is not penalised for it.
    latency(&s, &counter, &got, 0, 1500);
    let base_rate = getrp_rate(&s, &counter, Duration::from_secs(3));
    let (_, _, base_add) = latency(&s, &counter, &got, 0, 200);
    let cpu0 = *CPU_PER_CHANGE.lock().unwrap();
    subscribe(&s, &counter, &url);
    let (m1, p1, add1) = latency(&s, &counter, &got, 1, 300);
    let cpu1 = *CPU_PER_CHANGE.lock().unwrap();
    for _ in 1..1000 {
        subscribe(&s, &counter, &url);
    }
    let (m1000, p1000, add1000) = latency(&s, &counter, &got, 1000, 100);
    let cpu1000 = *CPU_PER_CHANGE.lock().unwrap();
    let rate1000 = getrp_rate(&s, &counter, Duration::from_secs(3));
    let quiet = s.create_counter("CounterService");
    let [(q50, q90), (w50, w90)] = interleaved(&s, &quiet, &counter, &got, 1000, 100);
    println!();
    println!("vws WS-BaseNotification benchmarks (vwsd on loopback, one counter; times in ms)");
    println!("| {:<58} | {:>10} | {:>10} |", "measurement", "median", "p99");
    println!("|{:-<60}|{:->12}|{:->12}|", "", "", "");
    println!("| {:<58} | {:>10.3} | {:>10.3} |", "(a) commit → consumer receipt, 1 subscriber (300 changes)", m1, p1);
    println!("| {:<58} | {:>10.3} | {:>10.3} |", "(a) commit → consumer receipt, 1,000 subscribers (100 changes)", m1000, p1000);
    println!("| {:<58} | {:>10.3} | {:>10} |", "(c) add (one change) round trip, 0 subscribers", base_add, "");
    println!("| {:<58} | {:>10.3} | {:>10} |", "(c) add round trip, 1 subscriber", add1, "");
    println!("| {:<58} | {:>10.3} | {:>10} |", "(c) add round trip, 1,000 subscribers", add1000, "");
    println!("(c) add with 1,000 subscribers / add with 0 (measured apart): {:.2}×", add1000 / base_add);
    println!(
        "(d) add alternated on two counters, 100 each: no subscriptions median {q50:.3} p90 {q90:.3}; 1,000 subscriptions median {w50:.3} p90 {w90:.3} → {:.2}× (goal ≤ 1.10×)",
        w50 / q50
    );
    println!(
        "vwsd CPU per change (the add and all its Notify deliveries): {cpu0:.3} ms with 0, {cpu1:.3} ms with 1, {cpu1000:.3} ms with 1,000 subscribers ({:.1} µs per delivered Notify)",
        (cpu1000 - cpu0) / 1000.0 * 1000.0
    );
    println!(
        "(b) GetResourceProperty on the counter: {base_rate:.0}/s with no subscriptions, {rate1000:.0}/s with 1,000 ({:+.1} %)",
        (rate1000 / base_rate - 1.0) * 100.0
    );
}
