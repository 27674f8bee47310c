//! The Manager's deploy / undeploy against a real vwsd: images staged into the pool from a slow
//! HTTP server (so progress can be watched in the `staging` property while it runs), from
//! `file://` roots, and over GSI GridFTP from a real globus-gridftp-server; checksum mismatches,
//! refused sources, destroy and kill -9 during a staging (a resumed staging is checked against
//! the policy again), concurrent deploys of one image, and
//! the `vws deploy` progress bar.

mod common;

use common::gsi::kit;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vws::soap::xml::{self, Element};

const VWS: &str = "http://vws.dev/2026/11/workspace";
const NIMBUS: &str = "http://www.globus.org/2008/06/workspace";

/// A real HTTP/1.1 server on loopback that sends one in-memory image slowly (`chunk` bytes,
/// then a pause), honours HEAD and `Range`, and counts the GETs it served.
struct SlowHttp {
    addr: String,
    gets: Arc<AtomicUsize>,
    /// Body bytes written to clients.
    sent: Arc<AtomicUsize>,
}

impl SlowHttp {
    fn start(data: Vec<u8>, chunk: usize, pause: Duration) -> SlowHttp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let gets = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let (data, g, n) = (Arc::new(data), gets.clone(), sent.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (data, g, n) = (data.clone(), g.clone(), n.clone());
                std::thread::spawn(move || {
                    let _ = serve(c, &data, chunk, pause, &g, &n);
                });
            }
        });
        SlowHttp { addr, gets, sent }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

fn serve(
    c: TcpStream,
    data: &[u8],
    chunk: usize,
    pause: Duration,
    gets: &AtomicUsize,
    sent: &AtomicUsize,
) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut w = c;
    loop {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(());
        }
        let mut from = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
            }
        }
        let head = first.starts_with("HEAD ");
        let body = &data[from.min(data.len())..];
        let status = if from > 0 { "206 Partial Content" } else { "200 OK" };
        write!(w, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n", body.len())?;
        if head {
            continue;
        }
        gets.fetch_add(1, Ordering::Relaxed);
        for piece in body.chunks(chunk) {
            w.write_all(piece)?;
            sent.fetch_add(piece.len(), Ordering::Relaxed);
            std::thread::sleep(pause);
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use vws::transfer::checksum::{Algo, MultiHasher};
    let mut h = MultiHasher::new(&[Algo::Sha256]);
    h.update(data);
    h.finish().remove(0).1
}

fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8).collect()
}

fn description(disks: &str) -> String {
    format!("<virtualWorkspace xmlns=\"{VWS}\"><category><name>vm</name><vmm>qemu</vmm></category><hardware>{disks}</hardware></virtualWorkspace>")
}

fn disk(name: &str, url: &str, digest: Option<&str>) -> String {
    let d = digest.map(|d| format!(" digest=\"{d}\"")).unwrap_or_default();
    format!("<disk name=\"{name}\"><image{d}>{}</image></disk>", xml::escape(url))
}

fn manager_op(s: &Server, key: &str, op: &str) -> HttpResponse {
    let action = format!("{VWS}/WorkspaceManagerPortType/{op}Request");
    s.call("WorkspaceService", &Server::ws_key_header(key), &action, &format!("<{op} xmlns=\"{VWS}\"/>"))
}

/// CurrentState and the `staging` element of a workspace.
fn staging(s: &Server, key: &str) -> (String, Option<Element>) {
    let action = "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties/GetMultipleResourceProperties";
    let body = format!(
        "<wsrp:GetMultipleResourceProperties xmlns:wsrp=\"http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties-1.2-draft-01.xsd\" xmlns:n=\"{NIMBUS}\" xmlns:w=\"{VWS}\"><wsrp:ResourceProperty>n:CurrentState</wsrp:ResourceProperty><wsrp:ResourceProperty>w:staging</wsrp:ResourceProperty></wsrp:GetMultipleResourceProperties>"
    );
    let r = s.call("WorkspaceService", &Server::ws_key_header(key), action, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let env = xml::parse(&r.body, &Default::default()).unwrap();
    let resp = find(&env, |e| e.name.local == "GetMultipleResourcePropertiesResponse").expect("response element");
    let state = resp.child(NIMBUS, "CurrentState").map(|e| e.text()).unwrap_or_default();
    (state, resp.child(VWS, "staging").cloned())
}

fn find(e: &Element, f: impl Fn(&Element) -> bool + Copy) -> Option<&Element> {
    if f(e) {
        return Some(e);
    }
    e.elements().find_map(|c| find(c, f))
}

fn num(e: &Element, a: &str) -> Option<u64> {
    e.attr("", a).map(|v| v.parse().unwrap_or_else(|_| panic!("{a}={v} is not a number")))
}

/// Polls until the workspace leaves Staging; returns every `staging` snapshot seen.
fn wait_staged(s: &Server, key: &str) -> (String, Vec<Element>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let (state, st) = staging(s, key);
        seen.extend(st);
        if state != "Staging" {
            return (state, seen);
        }
        assert!(start.elapsed() < Duration::from_secs(120), "still staging after 2 minutes: {}", s.log());
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// Waits until the first image's staging has moved some bytes.
fn wait_for_bytes(s: &Server, key: &str) {
    let start = Instant::now();
    loop {
        let st = staging(s, key).1;
        if st.and_then(|st| st.child(VWS, "image").and_then(|i| num(i, "bytes"))).unwrap_or(0) > 0 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no progress: {}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pool_dir(s: &Server, key: &str) -> PathBuf {
    s.data_dir().join("pool").join(key)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn staging_server(roots: &[&Path]) -> Server {
    let roots: Vec<String> = roots.iter().map(|r| format!("\"{}\"", r.display())).collect();
    Server::start_with(Conf {
        staging: format!("file_roots = [{}]\nprogress_interval_ms = 50\n", roots.join(", ")),
        ..Default::default()
    })
}

#[test]
fn deploy_reports_progress_then_staged_and_undeploy_releases() {
    let data = image(6 << 20, 7);
    let http = SlowHttp::start(data.clone(), 128 << 10, Duration::from_millis(25));
    let s = staging_server(&[]);
    let key = s.create_workspace_from(&description(&disk(
        "root",
        &http.url("root.img"),
        Some(&format!("sha256:{}", sha256_hex(&data))),
    )));
    assert!(staging(&s, &key).1.is_none(), "no staging property before deploy");

    let r = manager_op(&s, &key, "deploy");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(">Staging</"), "deploy answers at once with Staging: {}", r.body);
    // A second deploy while staging is refused with the state named.
    let again = manager_op(&s, &key, "deploy");
    assert_eq!(again.fault_kind().as_deref(), Some("InvalidStateFault"), "{}", again.body);
    assert!(again.body.contains("is Staging"), "{}", again.body);
    assert_eq!(manager_op(&s, &key, "undeploy").fault_kind().as_deref(), Some("InvalidStateFault"));

    let (state, seen) = wait_staged(&s, &key);
    assert_eq!(state, "Staged", "{}", s.log());
    // Progress was visible while the transfer ran: part of the bytes, the total, a rate, an ETA.
    let partial: Vec<&Element> = seen
        .iter()
        .filter(|st| st.attr("", "status") == Some("staging"))
        .filter_map(|st| st.child(VWS, "image"))
        .filter(|im| num(im, "bytes").is_some_and(|b| b > 0 && b < data.len() as u64))
        .collect();
    assert!(partial.len() >= 2, "expected several partial progress reports, saw {}: {seen:?}", partial.len());
    for im in &partial {
        assert_eq!(num(im, "total"), Some(data.len() as u64));
        assert!(num(im, "rate").unwrap_or(0) > 0, "rate: {}", im.to_fragment());
        assert!(im.attr("", "eta").is_some(), "eta: {}", im.to_fragment());
    }
    let bytes: Vec<u64> = partial.iter().map(|im| num(im, "bytes").unwrap()).collect();
    assert!(bytes.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {bytes:?}");
    // The final report: staged, every byte, our SHA-256.
    let (_, fin) = staging(&s, &key);
    let fin = fin.expect("staging property");
    assert_eq!(fin.attr("", "status"), Some("staged"));
    assert!(fin.attr("", "finished").is_some());
    let im = fin.child(VWS, "image").unwrap();
    assert_eq!((im.attr("", "status"), num(im, "bytes")), (Some("done"), Some(data.len() as u64)));
    assert_eq!(im.attr("", "sha256"), Some(sha256_hex(&data).as_str()));
    // The image is in the pool, whole, and nothing else is.
    let dir = pool_dir(&s, &key);
    assert_eq!(files_in(&dir), vec!["disk00-root".to_string()]);
    assert_eq!(std::fs::read(dir.join("disk00-root")).unwrap(), data);
    assert!(s.log().contains("image staged"), "{}", s.log());

    let r = manager_op(&s, &key, "undeploy");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(">Unstaged</"), "{}", r.body);
    assert!(!dir.exists(), "undeploy removes the workspace's images");
    assert_eq!(staging(&s, &key), ("Unstaged".to_string(), None));
}

#[test]
fn checksum_mismatch_discards_the_image_and_the_deploy_can_be_retried() {
    let roots = tempfile::tempdir().unwrap();
    let img = roots.path().join("root.img");
    std::fs::write(&img, image(1 << 20, 1)).unwrap();
    let s = staging_server(&[roots.path()]);
    let wrong = format!("sha256:{}", sha256_hex(b"something else"));
    let key = s.create_workspace_from(&description(&disk("root", &format!("file://{}", img.display()), Some(&wrong))));
    for attempt in 0..2 {
        assert_eq!(manager_op(&s, &key, "deploy").status, 200, "attempt {attempt}");
        let (state, _) = wait_staged(&s, &key);
        assert_eq!(state, "Unstaged", "a failed staging goes back to Unstaged");
        let st = staging(&s, &key).1.expect("staging property");
        assert_eq!(st.attr("", "status"), Some("failed"));
        let err = st.child(VWS, "error").expect("error element");
        assert_eq!(err.attr("", "kind"), Some("checksum_mismatch"), "{}", err.to_fragment());
        assert!(err.text().contains("SHA256") || err.text().to_lowercase().contains("sha256"), "{}", err.text());
        assert_eq!(st.child(VWS, "image").unwrap().attr("", "status"), Some("failed"));
        assert!(!pool_dir(&s, &key).exists(), "nothing left in the pool");
    }
    assert!(s.log().contains("checksum_mismatch"), "{}", s.log());
}

#[test]
fn file_sources_outside_the_roots_are_refused_before_anything_changes() {
    let roots = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"host secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), roots.path().join("link.img")).unwrap();
    let s = staging_server(&[roots.path()]);
    let cases = [
        (format!("file://{}", outside.path().join("secret").display()), "outside the directories"),
        (format!("file://{}/../{}", roots.path().display(), outside.path().join("secret").display()), "without '..'"),
        (format!("file://{}", roots.path().join("link.img").display()), "symbolic link"),
    ];
    for (url, why) in cases {
        let key = s.create_workspace_from(&description(&disk("root", &url, None)));
        let r = manager_op(&s, &key, "deploy");
        assert_eq!(r.fault_kind().as_deref(), Some("PolicyRejectedFault"), "{url}: {}", r.body);
        assert!(r.body.contains("staging.file_roots") && r.body.contains(why), "{url}: {}", r.body);
        assert_eq!(staging(&s, &key), ("Unstaged".to_string(), None), "{url}: nothing changed");
        assert!(!pool_dir(&s, &key).exists());
    }
    // Someone else's workspace cannot be deployed, and deploy takes no arguments.
    let key = s.create_workspace_from(&description(""));
    let action = format!("{VWS}/WorkspaceManagerPortType/deployRequest");
    let r = s.call(
        "WorkspaceService",
        &Server::ws_key_header(&key),
        &action,
        &format!("<deploy xmlns=\"{VWS}\"><streams>4</streams></deploy>"),
    );
    assert_eq!(r.fault_kind().as_deref(), Some("InvalidRequestFault"), "{}", r.body);
    let r = manager_op(&s, "no-such-key", "deploy");
    assert_eq!(r.fault_kind().as_deref(), Some("ResourceUnknownFault"), "{}", r.body);
    // A workspace without images deploys at once.
    assert_eq!(manager_op(&s, &key, "deploy").status, 200);
    assert_eq!(wait_staged(&s, &key).0, "Staged");
}

#[test]
fn destroy_during_staging_cancels_the_transfer_and_leaves_nothing_behind() {
    let data = image(16 << 20, 3);
    let http = SlowHttp::start(data.clone(), 64 << 10, Duration::from_millis(20));
    let s = staging_server(&[]);
    let key = s.create_workspace_from(&description(&disk("root", &http.url("a.img"), None)));
    assert_eq!(manager_op(&s, &key, "deploy").status, 200);
    wait_for_bytes(&s, &key);
    let r = s.call(
        "WorkspaceService",
        &Server::ws_key_header(&key),
        "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceLifetime/Destroy",
        "<wsrl:Destroy xmlns:wsrl=\"http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceLifetime-1.2-draft-01.xsd\"/>",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The transfer stops (it would take 5 s to the end) and whatever it made is removed.
    let start = Instant::now();
    while !s.log().contains("staging ended for a workspace that is gone") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.log().contains("cancelled"), "{}", s.log());
    std::thread::sleep(Duration::from_millis(300));
    let sent = http.sent.load(Ordering::Relaxed);
    assert!(sent < data.len() / 2, "the image server stopped sending early: {sent} of {} bytes", data.len());
    assert!(!pool_dir(&s, &key).exists(), "{:?}", files_in(&pool_dir(&s, &key)));
    assert!(s.db_dump().iter().all(|r| r.1 != key), "the workspace is gone from the store");
}

#[test]
fn a_staging_interrupted_by_kill9_resumes_after_restart() {
    let data = image(4 << 20, 9);
    let http = SlowHttp::start(data.clone(), 64 << 10, Duration::from_millis(20));
    let mut s = staging_server(&[]);
    let key = s.create_workspace_from(&description(&disk("root", &http.url("b.img"), None)));
    let stray = s.data_dir().join("pool").join("no-such-workspace");
    std::fs::create_dir_all(&stray).unwrap();
    assert_eq!(manager_op(&s, &key, "deploy").status, 200);
    wait_for_bytes(&s, &key);
    s.kill9();
    s.restart();
    assert!(s.log().contains("resuming a staging interrupted by a restart"), "{}", s.log());
    let (state, _) = wait_staged(&s, &key);
    assert_eq!(state, "Staged", "{}", s.log());
    let dir = pool_dir(&s, &key);
    assert_eq!(files_in(&dir), vec!["disk00-root".to_string()], "no partial files left");
    assert_eq!(std::fs::read(dir.join("disk00-root")).unwrap(), data);
    assert!(!stray.exists(), "pool directories of no workspace are removed at start");
    assert!(http.gets.load(Ordering::Relaxed) >= 2, "the image was fetched again after the restart");
}

#[test]
fn a_resumed_staging_is_checked_again_and_fails_back_when_the_policy_now_refuses_it() {
    // Issue 9 defect 6: after kill -9 mid-staging and a restart with `file_roots = []`, the
    // file:// image must not be staged; the workspace fails back to Unstaged with the reason.
    let roots = tempfile::tempdir().unwrap();
    std::fs::write(roots.path().join("local.img"), image(64 << 10, 4)).unwrap();
    let file_url = format!("file://{}", roots.path().canonicalize().unwrap().join("local.img").display());
    let http = SlowHttp::start(image(4 << 20, 11), 64 << 10, Duration::from_millis(20));
    let mut s = staging_server(&[roots.path()]);
    let disks = disk("root", &http.url("c.img"), None) + &disk("data", &file_url, None);
    let key = s.create_workspace_from(&description(&disks));
    assert_eq!(manager_op(&s, &key, "deploy").status, 200, "allowed while the root is configured");
    wait_for_bytes(&s, &key);
    s.kill9();
    let gets = http.gets.load(Ordering::Relaxed);
    s.conf.staging = "file_roots = []\nprogress_interval_ms = 50\n".into();
    s.restart();
    assert!(s.log().contains("staging interrupted by a restart not resumed"), "{}", s.log());
    let (state, report) = staging(&s, &key);
    assert_eq!(state, "Unstaged", "{}", s.log());
    let report = report.expect("the staging property keeps the reason");
    assert_eq!(report.attr("", "status"), Some("failed"));
    let error = report.child(VWS, "error").expect("an error element");
    assert_eq!(error.attr("", "kind"), Some("staging.file_roots"));
    let why = error.text();
    assert!(why.contains("local.img") && why.contains("outside the directories"), "{why}");
    let images: Vec<_> = report.elements().filter(|e| e.name.local == "image").collect();
    let status = |name: &str| images.iter().find(|i| i.attr("", "name") == Some(name)).and_then(|i| i.attr("", "status"));
    assert_eq!((status("root"), status("data")), (Some("pending"), Some("failed")), "the refused image is named");
    assert!(!pool_dir(&s, &key).exists(), "nothing of the interrupted staging stays: {:?}", files_in(&pool_dir(&s, &key)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http.gets.load(Ordering::Relaxed), gets, "no transfer started after the restart");
    // A fresh deploy of the same description is refused as well, and changes nothing.
    let r = manager_op(&s, &key, "deploy");
    assert_eq!(r.fault_kind().as_deref(), Some("PolicyRejectedFault"), "{}", r.body);
    assert_eq!(staging(&s, &key).0, "Unstaged");
}

#[test]
fn concurrent_deploys_of_one_image_share_one_transfer_and_get_their_own_copy() {
    let data = image(3 << 20, 5);
    let http = SlowHttp::start(data.clone(), 64 << 10, Duration::from_millis(10));
    let s = staging_server(&[]);
    let d = description(&disk("root", &http.url("shared.img"), None));
    let keys: Vec<String> = (0..4).map(|_| s.create_workspace_from(&d)).collect();
    for k in &keys {
        assert_eq!(manager_op(&s, k, "deploy").status, 200);
    }
    for k in &keys {
        assert_eq!(wait_staged(&s, k).0, "Staged", "{}", s.log());
        assert_eq!(std::fs::read(pool_dir(&s, k).join("disk00-root")).unwrap(), data);
    }
    assert_eq!(http.gets.load(Ordering::Relaxed), 1, "one transfer for four deploys");
    // Each workspace has its own file: writing one does not change another.
    let a = pool_dir(&s, &keys[0]).join("disk00-root");
    std::fs::write(&a, b"changed").unwrap();
    assert_eq!(std::fs::read(pool_dir(&s, &keys[1]).join("disk00-root")).unwrap(), data);
}

#[test]
fn deploy_from_a_real_gridftp_server() {
    let k = kit();
    let src = tempfile::tempdir().unwrap();
    let data = image(24 << 20, 11);
    std::fs::write(src.path().join("grid.img"), &data).unwrap();
    let port = common::gsi::port();
    let s = Server::start_with(Conf {
        staging: format!(
            "streams = 2\ncredential = \"{}\"\ncert_dir = \"{}\"\nprogress_interval_ms = 50\n",
            k.var("X509_USER_PROXY"),
            k.var("X509_CERT_DIR")
        ),
        ..Default::default()
    });
    let url = format!("gsiftp://127.0.0.1:{port}{}", src.path().join("grid.img").display());
    let key = s.create_workspace_from(&description(&disk("root", &url, Some(&format!("sha256:{}", sha256_hex(&data))))));
    assert_eq!(manager_op(&s, &key, "deploy").status, 200);
    let (state, _) = wait_staged(&s, &key);
    assert_eq!(state, "Staged", "{}", s.log());
    assert_eq!(std::fs::read(pool_dir(&s, &key).join("disk00-root")).unwrap(), data);
    let st = staging(&s, &key).1.unwrap();
    assert_eq!(st.child(VWS, "image").unwrap().attr("", "sha256"), Some(sha256_hex(&data).as_str()));
    // A source that is not there: a clean failure naming it.
    let key2 = s.create_workspace_from(&description(&disk(
        "root",
        &format!("gsiftp://127.0.0.1:{port}{}/missing.img", src.path().display()),
        None,
    )));
    assert_eq!(manager_op(&s, &key2, "deploy").status, 200);
    assert_eq!(wait_staged(&s, &key2).0, "Unstaged");
    let err = staging(&s, &key2).1.unwrap();
    let err = err.child(VWS, "error").unwrap();
    assert_eq!(err.attr("", "kind"), Some("not_found"), "{}", err.to_fragment());
    assert!(err.text().contains("missing.img"), "{}", err.text());
}

#[test]
fn vws_deploy_draws_a_progress_bar_and_exits_by_outcome() {
    let data = image(3 << 20, 2);
    let http = SlowHttp::start(data.clone(), 64 << 10, Duration::from_millis(20));
    let s = staging_server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let vws = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_vws")).args(args).output().expect("run vws");
    let desc = dir.path().join("ws.xml");
    let service = s.url("WorkspaceFactoryService");
    let epr = dir.path().join("ws.epr");
    std::fs::write(&desc, description(&disk("root", &http.url("c.img"), Some(&format!("sha256:{}", sha256_hex(&data))))))
        .unwrap();
    let out = vws(&["--service", &service, "create", desc.to_str().unwrap(), "--epr-out", epr.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vws(&["--epr", epr.to_str().unwrap(), "deploy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Staged");
    assert!(err.contains("image 1/1 root [") && err.contains("MiB/s ETA"), "progress bar: {err:?}");
    assert!(err.contains(&format!("deployed: 1 image(s), {} bytes", data.len())), "{err}");
    // A checksum mismatch: exit status 3 and the reason.
    std::fs::write(&desc, description(&disk("root", &http.url("c.img"), Some(&format!("sha256:{}", sha256_hex(b"x")))))).unwrap();
    let out = vws(&["--service", &service, "create", desc.to_str().unwrap(), "--epr-out", epr.to_str().unwrap()]);
    assert!(out.status.success());
    let out = vws(&["--epr", epr.to_str().unwrap(), "deploy", "-q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("staging failed (checksum_mismatch)"), "{err}");
    assert!(!err.contains('['), "-q draws no bar: {err}");
    let out = vws(&["--epr", epr.to_str().unwrap(), "undeploy"]);
    assert_eq!(out.status.code(), Some(2), "undeploy of an Unstaged workspace is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidStateFault"));
}
