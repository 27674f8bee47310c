//! Running vwsd as a production service: the Prometheus `/metrics` listener (its counters move
//! for a known sequence of requests), JSON logs carrying the request span's fields, and
//! `vwsd --check`.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    (r.status, r.body)
}

/// The value of the series `name` whose labels are exactly `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else { continue };
        let (lab, v) = match rest.strip_prefix('{') {
            Some(r) => {
                let end = r.find('}')?;
                (&r[..end], r[end + 1..].trim())
            }
            None if rest.starts_with(' ') => ("", rest.trim()),
            None => continue,
        };
        let got: Vec<&str> = if lab.is_empty() { vec![] } else { lab.split(',').collect() };
        if got.len() == labels.len() && labels.iter().all(|(k, v)| got.contains(&format!("{k}=\"{v}\"").as_str())) {
            return v.parse().ok();
        }
    }
    None
}

fn get_rp(s: &Server, key: &str) -> HttpResponse {
    s.call(
        "CounterService",
        &Server::counter_key_header(key),
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!("<GetResourceProperty xmlns=\"{WSRP}\" xmlns:c=\"{COUNTER}\">c:Value</GetResourceProperty>"),
    )
}

#[test]
fn metrics_move_for_a_known_sequence_of_requests() {
    let port = free_port();
    let maddr = format!("127.0.0.1:{port}");
    let s = Server::start_with(Conf { host: format!("[metrics]\nlisten = \"{maddr}\"\n"), ..Default::default() });
    // /metrics is on its own listener only.
    assert_eq!(get(&s.addr, "/metrics").0, 404);
    let (st, before) = get(&maddr, "/metrics");
    assert_eq!(st, 200);
    assert_eq!(value(&before, "vws_resources", &[("type", "CounterService"), ("state", "live")]), Some(0.0), "{before}");

    let key = s.create_counter("CounterService");
    for _ in 0..3 {
        assert_eq!(get_rp(&s, &key).status, 200);
    }
    let r = get_rp(&s, "no-such-counter");
    assert_ne!(r.status, 200);
    let ws = s.create_workspace();
    assert!(!ws.is_empty());

    let (_, m) = get(&maddr, "/metrics");
    let ok = [("service", "CounterService"), ("operation", "GetResourceProperty"), ("outcome", "ok")];
    let fault = [("service", "CounterService"), ("operation", "GetResourceProperty"), ("outcome", "fault")];
    assert_eq!(value(&m, "vws_requests_total", &ok), Some(3.0), "{m}");
    assert_eq!(value(&m, "vws_requests_total", &fault), Some(1.0), "{m}");
    assert_eq!(
        value(&m, "vws_requests_total", &[("service", "CounterService"), ("operation", "createCounter"), ("outcome", "ok")]),
        Some(1.0),
        "{m}"
    );
    let dur = [("service", "CounterService"), ("operation", "GetResourceProperty")];
    assert_eq!(value(&m, "vws_request_duration_seconds_count", &dur), Some(4.0), "{m}");
    assert!(m.contains("vws_request_duration_seconds_bucket{"), "latency histograms: {m}");
    assert_eq!(value(&m, "vws_resources", &[("type", "CounterService"), ("state", "live")]), Some(1.0), "{m}");
    assert_eq!(value(&m, "vws_resources", &[("type", "WorkspaceService"), ("state", "Unstaged")]), Some(1.0), "{m}");
    assert_eq!(value(&m, "vws_resources", &[("type", "WorkspaceService"), ("state", "Running")]), Some(0.0), "{m}");
    let commits = value(&m, "vws_store_commit_seconds_count", &[]).expect("store commits");
    assert!(commits >= 2.0, "{m}");

    // Two more reads: the counter moves by two; a lifetime that ends: the sweeper's work shows.
    get_rp(&s, &key);
    get_rp(&s, &key);
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&key),
        &format!("{WSRL_ACTION}/SetTerminationTime"),
        &format!("<wsrl:SetTerminationTime xmlns:wsrl=\"{WSRL}\"><wsrl:RequestedTerminationTime>{soon}</wsrl:RequestedTerminationTime></wsrl:SetTerminationTime>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t0 = Instant::now();
    let m = loop {
        let (_, m) = get(&maddr, "/metrics");
        if value(&m, "vws_sweeper_expired_total", &[]) == Some(1.0) || t0.elapsed() > Duration::from_secs(10) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(value(&m, "vws_requests_total", &ok), Some(5.0), "{m}");
    assert_eq!(value(&m, "vws_sweeper_expired_total", &[]), Some(1.0), "{m}");
    assert_eq!(value(&m, "vws_resources", &[("type", "CounterService"), ("state", "live")]), Some(0.0), "{m}");
    assert!(value(&m, "vws_store_commit_seconds_count", &[]).unwrap() > commits, "{m}");
}

#[test]
fn json_logs_carry_the_request_fields() {
    // An empty VWS_LOG (the harness passes VWS_TEST_LOG) leaves the levels to [log].
    std::env::set_var("VWS_TEST_LOG", "");
    let s = Server::start_with(Conf {
        args: vec!["--log-format".into(), "json".into()],
        host: "[log]\nlevel = \"warn\"\nmodules = { \"vws::server\" = \"debug\", \"vws::request\" = \"debug\" }\n".into(),
        ..Default::default()
    });
    let key = s.create_counter("CounterService");
    assert_eq!(get_rp(&s, &key).status, 200);
    // The access line is at debug under vws::request, switched on by [log] modules.
    let t0 = Instant::now();
    let line = loop {
        let log = s.log();
        if let Some(l) = log.lines().find(|l| l.contains("request done") && l.contains("GetResourceProperty")) {
            break l.to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no JSON access line for GetResourceProperty:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let span = &v["span"];
    assert_eq!(span["service"], "CounterService", "{line}");
    assert_eq!(span["operation"], "GetResourceProperty", "{line}");
    assert_eq!(span["key"], key.as_str(), "{line}");
    assert_eq!(span["outcome"], "ok", "{line}");
    assert_eq!(span["dn"], "anonymous", "{line}");
    assert!(span["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
    assert!(span["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert_eq!(v["level"], "DEBUG", "{line}");
    assert_eq!(v["target"], "vws::request", "{line}");
    // level = "warn": the info line "vwsd listening" of vws::app is filtered out.
    assert!(!s.log().contains("vwsd listening"), "{}", s.log());
    // Every line of the log is one JSON object.
    for l in s.log().lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
}

fn check(cfg: &str) -> (i32, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("vwsd.toml");
    std::fs::write(&p, cfg).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vwsd")).arg("--config").arg(&p).arg("--check").output().unwrap();
    (o.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn check_validates_a_config_and_exits() {
    let shipped = std::fs::read_to_string(repo_dir().join("conf/vwsd.toml")).unwrap();
    let (rc, out) = check(&shipped);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("is valid"), "{out}");
    let (rc, out) = check(&format!("{shipped}\n[bogus]\nx = 1\n"));
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("unknown field"), "{out}");
    let (rc, out) = check(&shipped.replace("crl_policy = \"refuse\"", "crl_policy = \"ignore\""));
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("security.crl_policy 'ignore'"), "{out}");
    let (rc, out) = check(&shipped.replace("level = \"info\"", "level = \"info,vws=loud\""));
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("log.level"), "{out}");
    // Security on with a host credential that does not exist: named.
    let (rc, out) = check(&shipped.replace("# https = \"0.0.0.0:8443\"", "https = \"127.0.0.1:8443\""));
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("host credential"), "{out}");
}
