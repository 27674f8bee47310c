//! The Repository port type against a real vwsd (issue 12): select / clone / refine semantics
//! and XPath over the Repository's property document; 50 concurrent checkouts with one winner,
//! locks that survive kill -9, deploy checking out and undeploy releasing, break-lock; the image
//! store: registration by content (no second copy), a tampered store file refused at deploy,
//! two deploys of one image making one transfer, gc never removing a referenced image under
//! concurrent clone and destroy, quotas, unsupported schemes, and kill -9 during registration
//! and clone leaving no orphan file and no dangling row.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPO: &str = "RepositoryService";

fn repo_header() -> String {
    format!("<k:RepositoryKey xmlns:k=\"{VWS}\">site</k:RepositoryKey>")
}

fn repo(s: &Server, op: &str, body: &str) -> HttpResponse {
    let action = format!("{VWS}/RepositoryPortType/{op}Request");
    s.call(REPO, &repo_header(), &action, &format!("<{op} xmlns=\"{VWS}\">{body}</{op}>"))
}

fn ok(r: HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn keys_of(body: &str) -> Vec<String> {
    body.split("<match key=\"").skip(1).map(|s| s.split('"').next().unwrap().to_string()).collect()
}

fn describe(vmm: &str, ram: (u64, u64), os: &str, programs: &str, disks: &str) -> String {
    format!(
        "<virtualWorkspace xmlns=\"{VWS}\"><category><name>vm</name><vmm>{vmm}</vmm></category><hardware><ram min=\"{}\" max=\"{}\"/><cpu min=\"1\" max=\"4\"/>{disks}</hardware><software>{os}{programs}</software></virtualWorkspace>",
        ram.0, ram.1
    )
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

fn manager_op(s: &Server, key: &str, op: &str) -> HttpResponse {
    let action = format!("{VWS}/WorkspaceManagerPortType/{op}Request");
    s.call("WorkspaceService", &Server::ws_key_header(key), &action, &format!("<{op} xmlns=\"{VWS}\"/>"))
}

fn state_of(s: &Server, key: &str) -> String {
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    let r = s.call(
        "WorkspaceService",
        &Server::ws_key_header(key),
        &action,
        &format!(
            "<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:n=\"{NIMBUS}\">n:CurrentState</wsrp:GetResourceProperty>"
        ),
    );
    between(&r.body, "CurrentState xmlns:n=\"http://www.globus.org/2008/06/workspace\">", "<").unwrap_or("").to_string()
}

fn wait_state(s: &Server, key: &str, want: &str) {
    let t = Instant::now();
    loop {
        let st = state_of(s, key);
        if st == want {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{key} stuck in {st}, wanted {want}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn destroy(s: &Server, key: &str) -> HttpResponse {
    let action = format!("{WSRL_ACTION}/Destroy");
    s.call("WorkspaceService", &Server::ws_key_header(key), &action, &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"))
}

fn error_code(body: &str) -> String {
    between(body, "<wsbf:ErrorCode dialect=\"http://vws.dev/2026/11/fault/rule\">", "<").unwrap_or("").to_string()
}

/// A server with `roots` as its file:// roots and extra `[repository]` keys.
fn server_with(roots: &Path, repository: &str) -> Server {
    Server::start_with(Conf {
        staging: format!("file_roots = [\"{}\"]\nprogress_interval_ms = 50", roots.display()),
        host: format!("[repository]\n{repository}\n"),
        ..Default::default()
    })
}

#[test]
fn select_clone_refine_and_xpath_semantics() {
    let s = Server::start();
    let debian = describe(
        "qemu",
        (256, 1024),
        "<os kernel=\"6.1.0-18\" distribution=\"debian\" version=\"12\"/>",
        "<program name=\"emboss\" version=\"6.6.0\"/>",
        "<disk name=\"root\" type=\"blank\" access=\"rw\" min=\"512\" max=\"2048\"/>",
    );
    let centos = describe("xen", (2048, 4096), "<os kernel=\"5.14\" distribution=\"centos\"/>", "", "");
    let a = s.create_workspace_from(&debian);
    let b = s.create_workspace_from(&centos);
    let all = ok(repo(&s, "list", ""));
    let mut listed = keys_of(&all);
    listed.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(listed, want);
    assert!(all.contains("vm/qemu ram 256-1024 MiB disk 512-2048 MiB debian kernel 6.1.0-18 [emboss-6.6.0] Unstaged"), "{all}");
    assert!(all.contains(&format!("WorkspaceKey xmlns:k0=\"{VWS}\">{a}<")), "EPRs in the answer: {all}");
    let sel = |body: &str| keys_of(&ok(repo(&s, "select", body)));
    assert_eq!(sel("<vmm>qemu</vmm>"), vec![a.clone()]);
    assert_eq!(sel("<ram min=\"1000\" max=\"3000\"/>").len(), 2, "both RAM ranges intersect 1000-3000");
    assert_eq!(sel("<ram min=\"1025\" max=\"2047\"/>"), Vec::<String>::new(), "neither intersects");
    assert_eq!(sel("<ram max=\"300\"/>"), vec![a.clone()]);
    assert_eq!(sel("<disk min=\"2000\"/>"), vec![a.clone()]);
    assert_eq!(sel("<kernel>6.1</kernel>"), vec![a.clone()], "a kernel version prefix matches");
    assert_eq!(sel("<kernel>6.10</kernel>"), Vec::<String>::new(), "at component boundaries only");
    assert_eq!(sel("<distribution>CentOS</distribution>"), vec![b.clone()]);
    assert_eq!(sel("<software name=\"emboss\" version=\"6.6\"/>"), vec![a.clone()]);
    assert_eq!(sel("<software name=\"emboss\" version=\"7\"/>"), Vec::<String>::new());
    assert_eq!(sel("<category>vm</category><vmm>xen</vmm><state>Unstaged</state>"), vec![b.clone()]);
    let bad = repo(&s, "select", "<colour>red</colour>");
    assert_eq!(bad.fault_kind().as_deref(), Some("InvalidRequestFault"), "{}", bad.body);
    let bad = repo(&s, "select", "<ram min=\"9\" max=\"1\"/>");
    assert_eq!(bad.fault_kind().as_deref(), Some("InvalidRequestFault"), "{}", bad.body);

    // XPath over the Repository's property document.
    let action = format!("{WSRP_ACTION}/QueryResourceProperties");
    let q = |xpath: &str| {
        ok(s.call(
            REPO,
            &repo_header(),
            &action,
            &format!("<wsrp:QueryResourceProperties xmlns:wsrp=\"{WSRP}\"><wsrp:QueryExpression Dialect=\"http://www.w3.org/TR/1999/REC-xpath-19991116\">{xpath}</wsrp:QueryExpression></wsrp:QueryResourceProperties>"),
        ))
    };
    let r = q("count(/*/*[local-name()='entry'][@vmm='xen' and @ramMax &gt;= 4096])");
    assert!(r.contains(">1<"), "{r}");
    let r = q("/*/*[local-name()='workspaces']/@total");
    assert!(r.contains('2'), "{r}");

    // Clone: new key, same description.
    let c = ok(repo(&s, "clone", &format!("<workspace>{a}</workspace>")));
    let ck = between(&c, &format!("WorkspaceKey xmlns:k0=\"{VWS}\">"), "<").unwrap().to_string();
    assert_ne!(ck, a);
    let hw = |k: &str| {
        let action = format!("{WSRP_ACTION}/GetResourceProperty");
        let r = s.call(
            "WorkspaceService",
            &Server::ws_key_header(k),
            &action,
            &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:hardware</wsrp:GetResourceProperty>"),
        );
        between(&r.body, "<w:hardware", "</w:hardware>").unwrap().to_string()
    };
    assert_eq!(hw(&ck), hw(&a));
    assert_eq!(sel("<vmm>qemu</vmm>").len(), 2, "the clone is catalogued");

    // Refine: inside the ranges → a new workspace with them; outside → a fault naming the field.
    let r = ok(repo(&s, "refine", &format!("<workspace>{a}</workspace><ram min=\"512\" max=\"768\"/><disk name=\"root\" min=\"1024\" max=\"2048\"/><software xmlns=\"{VWS}\"><os kernel=\"6.1.0-18\" distribution=\"debian\"/><program name=\"blast\"/></software>")));
    let rk = between(&r, &format!("WorkspaceKey xmlns:k0=\"{VWS}\">"), "<").unwrap().to_string();
    assert!(hw(&rk).contains("<w:ram min=\"512\" max=\"768\"/>"), "{}", hw(&rk));
    assert_eq!(sel("<software name=\"blast\"/>"), vec![rk.clone()]);
    assert!(hw(&a).contains("<w:ram min=\"256\" max=\"1024\"/>"), "the original is unchanged");
    for (body, field) in [
        ("<ram min=\"128\" max=\"768\"/>", "hardware/ram"),
        ("<cpu min=\"1\" max=\"8\"/>", "hardware/cpu"),
        ("<disk name=\"root\" min=\"100\" max=\"200\"/>", "hardware/disk[@name='root']"),
        ("<disk name=\"nope\" min=\"100\" max=\"200\"/>", "hardware/disk[@name='nope']"),
    ] {
        let f = repo(&s, "refine", &format!("<workspace>{a}</workspace>{body}"));
        assert_eq!(f.fault_kind().as_deref(), Some("RefineOutOfRangeFault"), "{}", f.body);
        assert_eq!(error_code(&f.body), field, "{}", f.body);
    }
    let f = repo(&s, "refine", &format!("<workspace>{a}</workspace><software xmlns=\"{VWS}\"><program/></software>"));
    assert_eq!(f.fault_kind().as_deref(), Some("InvalidDescriptionFault"), "{}", f.body);
    assert_eq!(keys_of(&ok(repo(&s, "list", ""))).len(), 4, "refused refinements created nothing");

    // Unknown workspace → ResourceUnknownFault.
    for op in ["clone", "refine", "checkout"] {
        let f = repo(&s, op, "<workspace>no-such-key</workspace>");
        assert_eq!(f.fault_kind().as_deref(), Some("ResourceUnknownFault"), "{op}: {}", f.body);
    }
    // The Repository resource itself: unknown key.
    let f = s.call(
        REPO,
        &format!("<k:RepositoryKey xmlns:k=\"{VWS}\">other</k:RepositoryKey>"),
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:workspaces</wsrp:GetResourceProperty>"),
    );
    assert_eq!(f.fault_kind().as_deref(), Some("ResourceUnknownFault"), "{}", f.body);
}

#[test]
fn fifty_concurrent_checkouts_one_winner_and_locks_survive_kill9() {
    let s = Server::start();
    let w = s.create_workspace();
    let s = Arc::new(std::sync::Mutex::new(s));
    let addr = s.lock().unwrap().addr.clone();
    let url = s.lock().unwrap().url(REPO);
    let (wins, locked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let (w, addr, url, wins, locked) = (w.clone(), addr.clone(), url.clone(), wins.clone(), locked.clone());
            std::thread::spawn(move || {
                let action = format!("{VWS}/RepositoryPortType/checkoutRequest");
                let body = envelope(
                    &url,
                    &action,
                    &repo_header(),
                    &format!("<checkout xmlns=\"{VWS}\"><workspace>{w}</workspace><manager>http://host{i}/m</manager></checkout>"),
                );
                let req = format!(
                    "POST /wsrf/services/{REPO} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut c = TcpStream::connect(&addr).unwrap();
                c.write_all(req.as_bytes()).unwrap();
                let r = read_response(&mut BufReader::new(c)).unwrap();
                if r.status == 200 {
                    wins.fetch_add(1, Ordering::SeqCst);
                } else if r.fault_kind().as_deref() == Some("WorkspaceLockedFault") {
                    assert!(r.body.contains("is checked out by anonymous to Manager http://host"), "{}", r.body);
                    locked.fetch_add(1, Ordering::SeqCst);
                } else {
                    panic!("unexpected answer: {}", r.body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!((wins.load(Ordering::SeqCst), locked.load(Ordering::SeqCst)), (1, 49));
    let mut s = Arc::try_unwrap(s).ok().unwrap().into_inner().unwrap();
    // The lock survives kill -9 and is visible in the property document.
    s.restart();
    let f = repo(&s, "checkout", &format!("<workspace>{w}</workspace>"));
    assert_eq!(f.fault_kind().as_deref(), Some("WorkspaceLockedFault"), "{}", f.body);
    let f = manager_op(&s, &w, "deploy");
    assert_eq!(f.fault_kind().as_deref(), Some("WorkspaceLockedFault"), "deploy needs the lock: {}", f.body);
    assert_eq!(state_of(&s, &w), "Unstaged");
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    let rp = ok(s.call(
        REPO,
        &repo_header(),
        &action,
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:lock</wsrp:GetResourceProperty>"),
    ));
    assert!(rp.contains(&format!("workspace=\"{w}\"")), "{rp}");
    // Only the holding Manager releases; an administrator may break it (logged).
    let f = repo(&s, "release", &format!("<workspace>{w}</workspace><manager>http://elsewhere/m</manager>"));
    assert_eq!(f.fault_kind().as_deref(), Some("InvalidStateFault"), "{}", f.body);
    ok(repo(&s, "breakLock", &format!("<workspace>{w}</workspace>")));
    assert!(s.log().contains("checkout lock broken by an administrator"), "{}", s.log());
    // A lapsed lease is broken by the next checkout.
    ok(repo(&s, "checkout", &format!("<workspace>{w}</workspace><manager>http://a/m</manager><leaseSeconds>1</leaseSeconds>")));
    std::thread::sleep(Duration::from_millis(1100));
    ok(repo(&s, "checkout", &format!("<workspace>{w}</workspace><manager>http://b/m</manager>")));
    assert!(s.log().contains("lapsed checkout lease broken"), "{}", s.log());
    ok(repo(&s, "release", &format!("<workspace>{w}</workspace><manager>http://b/m</manager>")));
}

#[test]
fn deploy_checks_out_undeploy_releases_and_destroy_forgets() {
    let roots = tempfile::tempdir().unwrap();
    let data = image(64 << 10, 3);
    std::fs::write(roots.path().join("a.img"), &data).unwrap();
    let s = server_with(roots.path(), "");
    let desc = describe(
        "qemu",
        (64, 128),
        "",
        "",
        &format!("<disk name=\"root\"><image>file://{}</image></disk>", roots.path().join("a.img").display()),
    );
    let w = s.create_workspace_from(&desc);
    ok(manager_op(&s, &w, "deploy"));
    wait_state(&s, &w, "Staged");
    let f = repo(&s, "checkout", &format!("<workspace>{w}</workspace>"));
    assert_eq!(f.fault_kind().as_deref(), Some("WorkspaceLockedFault"), "{}", f.body);
    ok(manager_op(&s, &w, "undeploy"));
    ok(repo(&s, "checkout", &format!("<workspace>{w}</workspace><manager>http://x/m</manager>")));
    ok(destroy(&s, &w));
    std::thread::sleep(Duration::from_millis(300));
    let conn = rusqlite::Connection::open(s.data_dir().join("vws.db")).unwrap();
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM repo_locks", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "a destroyed workspace's lock goes with it");
}

/// A loopback HTTP server of one image that counts the GETs it served.
fn http_image(data: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let gets = Arc::new(AtomicUsize::new(0));
    let (data, g) = (Arc::new(data), gets.clone());
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let (data, g) = (data.clone(), g.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut w = c;
                loop {
                    let mut first = String::new();
                    if r.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                    }
                    let head = first.starts_with("HEAD ");
                    let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len());
                    if !head {
                        g.fetch_add(1, Ordering::SeqCst);
                        let _ = w.write_all(&data);
                    }
                }
            });
        }
    });
    (format!("http://{addr}/img"), gets)
}

#[test]
fn image_store_dedupes_links_refuses_tampering_and_transfers_once() {
    let roots = tempfile::tempdir().unwrap();
    let data = image(3 << 20, 7);
    let sha = sha256_hex(&data);
    let src = roots.path().join("base.img");
    std::fs::write(&src, &data).unwrap();
    let s = server_with(roots.path(), "");
    let r = ok(repo(&s, "register", &format!("<source>{}</source>", src.display())));
    assert!(r.contains(&format!("sha256=\"{sha}\"")) && r.contains("new=\"true\""), "{r}");
    let r = ok(repo(&s, "register", &format!("<source>file://{}</source><digest>sha256:{sha}</digest>", src.display())));
    assert!(r.contains("new=\"false\""), "bytes already present: {r}");
    let store = s.data_dir().join("repository/images");
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 1, "no second copy");
    // Refusals: outside the roots, an unsupported scheme, a wrong digest.
    let f = repo(&s, "register", "<source>/etc/passwd</source>");
    assert_eq!(f.fault_kind().as_deref(), Some("PolicyRejectedFault"), "{}", f.body);
    let f = repo(&s, "register", "<source>nfs://server/img</source>");
    assert_eq!(f.fault_kind().as_deref(), Some("UnsupportedSchemeFault"), "{}", f.body);
    assert_eq!(error_code(&f.body), "nfs");
    std::fs::write(roots.path().join("other.img"), b"other bytes").unwrap();
    let absent = sha256_hex(b"bytes nobody registered");
    let f = repo(
        &s,
        "register",
        &format!("<source>{}</source><digest>sha256:{absent}</digest>", roots.path().join("other.img").display()),
    );
    assert_eq!(f.fault_kind().as_deref(), Some("DigestMismatchFault"), "{}", f.body);
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(s.data_dir().join("repository/tmp")).unwrap().count(), 0, "no temp file left");

    // Deploy takes the image from the store by hard link, not from its URL.
    let (url, gets) = http_image(data.clone());
    let disk = format!("<disk name=\"root\"><image digest=\"sha256:{sha}\">{url}</image></disk>");
    let w1 = s.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk));
    ok(manager_op(&s, &w1, "deploy"));
    wait_state(&s, &w1, "Staged");
    assert_eq!(gets.load(Ordering::SeqCst), 0, "served from the store");
    use std::os::unix::fs::MetadataExt;
    let pool_file = std::fs::read_dir(s.data_dir().join("pool").join(&w1))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("disk"))
        .unwrap()
        .path();
    assert_eq!(std::fs::metadata(&pool_file).unwrap().ino(), std::fs::metadata(store.join(&sha)).unwrap().ino(), "hard link");
    let imgs = ok(repo(&s, "images", ""));
    assert!(imgs.contains("refs=\"1\""), "{imgs}");

    // A store file changed on disk is refused when handed to the next deployment.
    ok(manager_op(&s, &w1, "undeploy"));
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(store.join(&sha)).unwrap();
        f.write_all(b"tampered").unwrap();
    }
    let w2 = s.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk));
    ok(manager_op(&s, &w2, "deploy"));
    wait_state(&s, &w2, "Unstaged");
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    let st = s.call(
        "WorkspaceService",
        &Server::ws_key_header(&w2),
        &action,
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:staging</wsrp:GetResourceProperty>"),
    );
    assert!(st.body.contains("checksum_mismatch") || st.body.contains("checksum mismatch"), "{}", st.body);
    assert!(s.log().contains("image store file changed on disk"), "logged");
    assert!(!s.data_dir().join("pool").join(&w2).join("disk00-root").exists());

    // Two deploys of one (new) image: one transfer; the second links from the store.
    let data2 = image(2 << 20, 9);
    let sha2 = sha256_hex(&data2);
    let (url2, gets2) = http_image(data2);
    let disk2 = format!("<disk name=\"root\"><image digest=\"sha256:{sha2}\">{url2}</image></disk>");
    let a = s.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk2));
    let b = s.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk2));
    ok(manager_op(&s, &a, "deploy"));
    wait_state(&s, &a, "Staged");
    ok(manager_op(&s, &b, "deploy"));
    wait_state(&s, &b, "Staged");
    assert_eq!(gets2.load(Ordering::SeqCst), 1, "one transfer for two deploys");
    assert!(store.join(&sha2).is_file(), "the transferred image was kept in the store");

    // gc: referenced images stay; once nothing references them they go.
    let r = ok(repo(&s, "gc", ""));
    assert!(!r.contains(&format!("sha256=\"{sha2}\"")), "referenced: {r}");
    assert!(!r.contains(&format!("sha256=\"{sha}\"")), "still referenced by w1 and w2: {r}");
    for k in [&w1, &w2, &a, &b] {
        let _ = destroy(&s, k);
    }
    std::thread::sleep(Duration::from_millis(200));
    let r = ok(repo(&s, "gc", ""));
    assert!(r.contains(&sha2), "{r}");
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0, "{r}");
}

#[test]
fn quota_exceeded_is_a_clear_fault() {
    let roots = tempfile::tempdir().unwrap();
    std::fs::write(roots.path().join("a"), image(6000, 1)).unwrap();
    std::fs::write(roots.path().join("b"), image(6000, 2)).unwrap();
    let s = server_with(roots.path(), "quota_bytes = 10000\n");
    ok(repo(&s, "register", &format!("<source>{}</source>", roots.path().join("a").display())));
    let f = repo(&s, "register", &format!("<source>{}</source>", roots.path().join("b").display()));
    assert_eq!(f.fault_kind().as_deref(), Some("QuotaExceededFault"), "{}", f.body);
    assert_eq!(error_code(&f.body), "site");
    assert!(f.body.contains("vws repo gc"), "actionable: {}", f.body);
    assert_eq!(std::fs::read_dir(s.data_dir().join("repository/images")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(s.data_dir().join("repository/tmp")).unwrap().count(), 0);
}

#[test]
fn gc_never_removes_a_referenced_image_under_concurrent_clone_and_destroy() {
    let roots = tempfile::tempdir().unwrap();
    let data = image(256 << 10, 5);
    let sha = sha256_hex(&data);
    std::fs::write(roots.path().join("i"), &data).unwrap();
    let s = Arc::new(server_with(roots.path(), ""));
    ok(repo(&s, "register", &format!("<source>{}</source>", roots.path().join("i").display())));
    let disk = format!("<disk name=\"root\"><image digest=\"sha256:{sha}\">http://127.0.0.1:1/i</image></disk>");
    let w = s.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cloner = {
        let (s, w, stop) = (s.clone(), w.clone(), stop.clone());
        std::thread::spawn(move || {
            // Each round: clone the newest, destroy the previous one (the original stays).
            let mut prev: Option<String> = None;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let src = prev.clone().unwrap_or_else(|| w.clone());
                let c = ok(repo(&s, "clone", &format!("<workspace>{src}</workspace>")));
                let k = between(&c, &format!("WorkspaceKey xmlns:k0=\"{VWS}\">"), "<").unwrap().to_string();
                if let Some(p) = prev.replace(k) {
                    assert_eq!(destroy(&s, &p).status, 200);
                }
                n += 1;
            }
            n
        })
    };
    let store = s.data_dir().join("repository/images").join(&sha);
    for _ in 0..40 {
        ok(repo(&s, "gc", ""));
        assert!(store.is_file(), "gc removed a referenced image");
    }
    stop.store(true, Ordering::SeqCst);
    assert!(cloner.join().unwrap() > 0);
    // Once nothing references it, it goes.
    let all = keys_of(&ok(repo(&s, "list", "")));
    for k in all {
        ok(destroy(&s, &k));
    }
    std::thread::sleep(Duration::from_millis(200));
    ok(repo(&s, "gc", ""));
    assert!(!store.exists());
}

#[test]
fn kill9_during_registration_and_clone_leaves_no_orphan_and_no_dangling_row() {
    let roots = tempfile::tempdir().unwrap();
    let big = roots.path().join("big.img");
    {
        let mut f = std::fs::File::create(&big).unwrap();
        let chunk = image(1 << 20, 11);
        for i in 0..192u32 {
            let mut c = chunk.clone();
            c[..4].copy_from_slice(&i.to_le_bytes());
            f.write_all(&c).unwrap();
        }
    }
    let mut s = server_with(roots.path(), "");
    let w = s.create_workspace();
    for delay_ms in [5u64, 40, 150] {
        // Registration and clones in flight when vwsd is killed.
        let (addr, url, src) = (s.addr.clone(), s.url(REPO), big.display().to_string());
        let sender = |payload: String, op: &'static str| {
            let (addr, url) = (addr.clone(), url.clone());
            std::thread::spawn(move || {
                let action = format!("{VWS}/RepositoryPortType/{op}Request");
                let body = envelope(&url, &action, &repo_header(), &payload);
                let req = format!(
                    "POST /wsrf/services/{REPO} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Ok(mut c) = TcpStream::connect(&addr) {
                    let _ = c.write_all(req.as_bytes());
                    let _ = read_response(&mut BufReader::new(c));
                }
            })
        };
        let reg = sender(format!("<register xmlns=\"{VWS}\"><source>{src}</source></register>"), "register");
        let clones: Vec<_> =
            (0..8).map(|_| sender(format!("<clone xmlns=\"{VWS}\"><workspace>{w}</workspace></clone>"), "clone")).collect();
        std::thread::sleep(Duration::from_millis(delay_ms));
        s.restart();
        let _ = reg.join();
        for c in clones {
            let _ = c.join();
        }
        // After the restart: no temp file, every image file has its row and every row its file,
        // and every workspace row is a whole, readable workspace.
        let dir = s.data_dir().join("repository");
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        let files: std::collections::BTreeSet<String> = std::fs::read_dir(dir.join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let conn = rusqlite::Connection::open(s.data_dir().join("vws.db")).unwrap();
        let rows: std::collections::BTreeSet<String> = conn
            .prepare("SELECT sha256 FROM repo_images")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(files, rows, "delay {delay_ms} ms");
        for f in &files {
            let bytes = std::fs::read(dir.join("images").join(f)).unwrap();
            assert_eq!(&sha256_hex(&bytes), f, "a stored image is whole");
        }
        let listed = keys_of(&ok(repo(&s, "list", "")));
        let stored: usize = s.db_dump().iter().filter(|r| r.0 == "WorkspaceService").count();
        assert_eq!(listed.len(), stored, "every stored workspace is whole and catalogued");
    }
}

#[test]
fn two_hosts_share_one_site_repository_catalogue_and_locks() {
    let roots = tempfile::tempdir().unwrap();
    std::fs::write(roots.path().join("a.img"), image(64 << 10, 5)).unwrap();
    let mut a = server_with(roots.path(), "");
    let b = server_with(roots.path(), &format!("url = \"{}\"\ntimeout_secs = 3", a.url(REPO)));
    let desc = describe(
        "qemu",
        (64, 128),
        "<os kernel=\"6.1.0\" distribution=\"debian\"/>",
        "",
        &format!("<disk name=\"root\"><image>file://{}</image></disk>", roots.path().join("a.img").display()),
    );
    // Created on B: in A's catalogue before the create answered, with B's EPR.
    let w = b.create_workspace_from(&desc);
    let listed = ok(repo(&a, "list", ""));
    assert_eq!(keys_of(&listed), vec![w.clone()], "{listed}");
    assert!(listed.contains(&format!("http://{}/wsrf/services/WorkspaceService", b.addr)), "B's EPR: {listed}");
    assert_eq!(keys_of(&ok(repo(&a, "select", "<distribution>debian</distribution>"))), vec![w.clone()]);
    assert!(keys_of(&ok(repo(&a, "select", "<distribution>centos</distribution>"))).is_empty());
    // B deploys: the lock is taken at A, in B's name.
    ok(manager_op(&b, &w, "deploy"));
    wait_state(&b, &w, "Staged");
    let b_manager = format!("Manager http://{}/wsrf/services/WorkspaceService", b.addr);
    let a_manager = format!("Manager http://{}/wsrf/services/WorkspaceService", a.addr);
    // A's catalogue follows B's state.
    let t = Instant::now();
    while !ok(repo(&a, "list", "")).contains(" Staged\"") {
        assert!(t.elapsed() < Duration::from_secs(10), "A's catalogue never showed Staged: {}", ok(repo(&a, "list", "")));
        std::thread::sleep(Duration::from_millis(50));
    }
    // A cannot deploy it meanwhile: the fault names B.
    let f = manager_op(&a, &w, "deploy");
    assert_eq!(f.fault_kind().as_deref(), Some("WorkspaceLockedFault"), "{}", f.body);
    assert!(f.body.contains(&b_manager), "names the holder: {}", f.body);
    assert_eq!(state_of(&a, &w), "Unstaged");
    // B's undeploy releases at A; then A deploys, and B is the one refused.
    ok(manager_op(&b, &w, "undeploy"));
    ok(manager_op(&a, &w, "deploy"));
    wait_state(&a, &w, "Staged");
    let f = manager_op(&b, &w, "deploy");
    assert_eq!(f.fault_kind().as_deref(), Some("WorkspaceLockedFault"), "{}", f.body);
    assert!(f.body.contains(&a_manager), "names the holder: {}", f.body);
    assert_eq!(state_of(&b, &w), "Unstaged");
    ok(manager_op(&a, &w, "undeploy"));
    // A workspace B destroys leaves A's catalogue.
    let gone = b.create_workspace_from(&desc);
    assert!(keys_of(&ok(repo(&a, "list", ""))).contains(&gone));
    ok(destroy(&b, &gone));
    let t = Instant::now();
    while keys_of(&ok(repo(&a, "list", ""))).contains(&gone) {
        assert!(t.elapsed() < Duration::from_secs(10), "destroyed on B, still listed at A");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A down: B's deploy and create get a clear fault at once, and nothing changes on B.
    a.kill9();
    let t = Instant::now();
    let f = manager_op(&b, &w, "deploy");
    assert!(t.elapsed() < Duration::from_secs(10), "no hang");
    assert_eq!(f.status, 500, "{}", f.body);
    let text = f.faultstring().unwrap_or_default().to_string();
    assert!(text.contains("site Repository at") && text.contains("cannot be reached"), "{}", f.body);
    assert_eq!(f.fault_kind().as_deref(), Some("RepositoryUnavailableFault"), "its own fault type: {}", f.body);
    let site = a.url(REPO);
    assert!(text.contains(&site), "the Description names the site's URL: {}", f.body);
    assert!(text.contains("Connection refused") || text.contains("connection refused"), "and the cause: {}", f.body);
    assert_eq!(state_of(&b, &w), "Unstaged");
    let f = b.factory_create(&desc);
    assert_eq!(f.status, 500, "{}", f.body);
    assert_eq!(f.fault_kind().as_deref(), Some("RepositoryUnavailableFault"), "{}", f.body);
    assert!(f.faultstring().unwrap_or_default().contains("cannot be reached"), "{}", f.body);
    let f = repo(&b, "register", &format!("<source>{}</source>", roots.path().join("a.img").display()));
    assert_eq!(f.fault_kind().as_deref(), Some("RepositoryUnavailableFault"), "{}", f.body);
    assert!(f.body.contains(&site), "{}", f.body);
}

/// `GET path` on `addr` with extra header lines: (status, headers text, body bytes).
fn get_bytes(addr: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, all[split + 4..].to_vec())
}

fn staging_of(s: &Server, key: &str) -> String {
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    s.call(
        "WorkspaceService",
        &Server::ws_key_header(key),
        &action,
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:staging</wsrp:GetResourceProperty>"),
    )
    .body
}

#[test]
fn two_hosts_share_one_image_store_by_digest() {
    let roots = tempfile::tempdir().unwrap();
    let data = image(3 << 20, 11);
    let sha = sha256_hex(&data);
    let src = roots.path().join("base.img");
    std::fs::write(&src, &data).unwrap();
    let a = server_with(roots.path(), "");
    let b = server_with(roots.path(), &format!("url = \"{}\"\ntimeout_secs = 5", a.url(REPO)));
    let (a_store, b_store) = (a.data_dir().join("repository/images"), b.data_dir().join("repository/images"));
    // Registration through B stores at the site: one store.
    let r = ok(repo(&b, "register", &format!("<source>{}</source>", src.display())));
    assert!(r.contains(&format!("sha256=\"{sha}\"")) && r.contains("new=\"true\""), "{r}");
    assert!(a_store.join(&sha).is_file(), "stored at the site");
    assert_eq!(std::fs::read_dir(&b_store).unwrap().count(), 0, "nothing stored on B");
    assert!(ok(repo(&b, "images", "")).contains(&sha), "B lists the site's images");

    // The site's image route: whole, ranges, unknown, not a digest.
    let (st, head, body) = get_bytes(&a.addr, &format!("/wsrf/images/{sha}"), "");
    assert_eq!(st, 200, "{head}");
    assert!(body == data, "the image's bytes");
    assert!(head.to_ascii_lowercase().contains(&format!("etag: \"{sha}\"")), "{head}");
    let (st, head, body) = get_bytes(&a.addr, &format!("/wsrf/images/{sha}"), "Range: bytes=1000-1999\r\n");
    assert_eq!(st, 206, "{head}");
    assert!(head.contains(&format!("bytes 1000-1999/{}", data.len())), "{head}");
    assert!(body == data[1000..2000], "the range's bytes");
    let (st, head, _) = get_bytes(&a.addr, &format!("/wsrf/images/{sha}"), &format!("Range: bytes={}-\r\n", data.len()));
    assert_eq!(st, 416, "{head}");
    assert_eq!(get_bytes(&a.addr, &format!("/wsrf/images/{}", sha256_hex(b"absent")), "").0, 404);
    assert_eq!(get_bytes(&a.addr, "/wsrf/images/..%2Fvws.db", "").0, 400);
    let served = |s: &Server| s.log().matches("image served").count();
    let before = served(&a);

    // Deploy on B: the image comes from the site's store (its URL is never read), once.
    let (url, gets) = http_image(data.clone());
    let disk = format!("<disk name=\"root\"><image digest=\"sha256:{sha}\">{url}</image></disk>");
    let w1 = b.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk));
    ok(manager_op(&b, &w1, "deploy"));
    wait_state(&b, &w1, "Staged");
    assert_eq!(gets.load(Ordering::SeqCst), 0, "not staged from its URL");
    assert_eq!(served(&a), before + 1, "one transfer from the site");
    assert_eq!(std::fs::read(b_store.join(&sha)).unwrap(), data, "in B's cache");
    assert!(b.log().contains("image fetched from the site Repository"), "{}", b.log());
    let w2 = b.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk));
    ok(manager_op(&b, &w2, "deploy"));
    wait_state(&b, &w2, "Staged");
    assert_eq!(served(&a), before + 1, "the second deploy on B makes no second transfer");
    assert_eq!(gets.load(Ordering::SeqCst), 0);

    // A tampered byte at the site is refused at B: no file kept, the deploy back to Unstaged.
    let data3 = image(1 << 20, 13);
    let sha3 = sha256_hex(&data3);
    std::fs::write(roots.path().join("three.img"), &data3).unwrap();
    ok(repo(&a, "register", &format!("<source>{}</source>", roots.path().join("three.img").display())));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(a_store.join(&sha3)).unwrap();
        f.write_all_at(&[data3[4096] ^ 0xff], 4096).unwrap();
    }
    let disk3 = format!("<disk name=\"root\"><image digest=\"sha256:{sha3}\">{url}</image></disk>");
    let w3 = b.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk3));
    ok(manager_op(&b, &w3, "deploy"));
    wait_state(&b, &w3, "Unstaged");
    let st = staging_of(&b, &w3);
    assert!(st.contains("checksum_mismatch") && st.contains(&sha3), "{st}");
    assert!(b.log().contains("image fetched from the site has other bytes"), "logged");
    assert!(!b_store.join(&sha3).exists(), "no file under the digest");
    assert_eq!(std::fs::read_dir(b.data_dir().join("repository/tmp")).unwrap().count(), 0, "no temp file left");
    assert!(!b.data_dir().join("pool").join(&w3).join("disk00-root").exists());
    assert_eq!(gets.load(Ordering::SeqCst), 0, "a refused site image is not fetched from elsewhere");
}

#[test]
fn host_b_adopts_a_workspace_the_site_host_keeps() {
    let roots = tempfile::tempdir().unwrap();
    std::fs::write(roots.path().join("a.img"), image(64 << 10, 6)).unwrap();
    let a = server_with(roots.path(), "");
    let b = server_with(roots.path(), &format!("url = \"{}\"\ntimeout_secs = 3", a.url(REPO)));
    let desc = describe(
        "qemu",
        (64, 128),
        "<os kernel=\"6.1.0\" distribution=\"debian\"/>",
        "",
        &format!("<disk name=\"root\"><image>file://{}</image></disk>", roots.path().join("a.img").display()),
    );
    let w = a.create_workspace_from(&desc);
    let b_manager = format!("Manager http://{}/wsrf/services/WorkspaceService", b.addr);
    let a_manager = format!("Manager http://{}/wsrf/services/WorkspaceService", a.addr);
    // B deploys A's workspace (its key sent to B): adopted from the site's record, locked at A in B's name.
    ok(manager_op(&b, &w, "deploy"));
    wait_state(&b, &w, "Staged");
    assert!(b.log().contains("adopted for a deploy here"), "{}", b.log());
    let f = manager_op(&a, &w, "deploy");
    assert_eq!(f.fault_kind().as_deref(), Some("WorkspaceLockedFault"), "{}", f.body);
    assert!(f.body.contains(&b_manager), "names B: {}", f.body);
    assert_eq!(state_of(&a, &w), "Unstaged");
    // One entry in the site's catalogue (A's own, with A's EPR): B's copy is not enrolled.
    std::thread::sleep(Duration::from_millis(300));
    let listed = ok(repo(&a, "list", ""));
    assert_eq!(keys_of(&listed), vec![w.clone()], "{listed}");
    assert!(!listed.contains(&format!("http://{}/", b.addr)), "{listed}");
    // B undeploys: released at A; A deploys, and B is the one refused.
    ok(manager_op(&b, &w, "undeploy"));
    ok(manager_op(&a, &w, "deploy"));
    wait_state(&a, &w, "Staged");
    let f = manager_op(&b, &w, "deploy");
    assert_eq!(f.fault_kind().as_deref(), Some("WorkspaceLockedFault"), "{}", f.body);
    assert!(f.body.contains(&a_manager), "{}", f.body);
    assert_eq!(state_of(&b, &w), "Unstaged");
    // A key nobody catalogues is unknown on B too.
    let f = manager_op(&b, "no-such-workspace", "deploy");
    assert_eq!(f.fault_kind().as_deref(), Some("ResourceUnknownFault"), "{}", f.body);
    // B destroying its adopted copy leaves A's workspace in the catalogue.
    ok(destroy(&b, &w));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(keys_of(&ok(repo(&a, "list", ""))), vec![w.clone()]);
}

#[test]
fn an_adopted_workspace_stays_kept_by_its_host_after_the_adopter_restarts() {
    let roots = tempfile::tempdir().unwrap();
    std::fs::write(roots.path().join("c.img"), image(64 << 10, 7)).unwrap();
    let a = server_with(roots.path(), "");
    let remote = format!("url = \"{}\"\ntimeout_secs = 3", a.url(REPO));
    let c = server_with(roots.path(), &remote);
    let mut b = server_with(roots.path(), &remote);
    let desc = describe(
        "qemu",
        (64, 128),
        "",
        "",
        &format!("<disk name=\"root\"><image>file://{}</image></disk>", roots.path().join("c.img").display()),
    );
    // C keeps the workspace (enrolled at the site A); B adopts it for a deploy, then restarts.
    let w = c.create_workspace_from(&desc);
    std::thread::sleep(Duration::from_millis(300));
    ok(manager_op(&b, &w, "deploy"));
    wait_state(&b, &w, "Staged");
    b.restart();
    // B's state changes and its destroy of the copy are not B's to send to the site: C's
    // entry stays as C enrolled it, and B sends neither an enrol nor a withdraw.
    ok(manager_op(&b, &w, "undeploy"));
    wait_state(&b, &w, "Unstaged");
    ok(destroy(&b, &w));
    std::thread::sleep(Duration::from_millis(500));
    let listed = ok(repo(&a, "list", ""));
    assert_eq!(keys_of(&listed), vec![w.clone()], "{listed}");
    assert!(listed.contains(&format!("http://{}/", c.addr)), "C's entry: {listed}");
    let log = b.log();
    assert!(!log.contains("not withdrawn from the site Repository"), "{log}");
    assert!(!log.contains("site Repository entry not updated"), "{log}");
}

#[test]
fn two_hosts_over_gsi_use_the_host_credential_and_refuse_an_untrusted_host() {
    let k = common::gsi::kit();
    let host_dn = k.var("GSI_HOST_DN");
    let certs = k.path("X509_CERT_DIR");
    let roots = tempfile::tempdir().unwrap();
    let data = image(1 << 20, 21);
    let sha = sha256_hex(&data);
    let src = roots.path().join("g.img");
    std::fs::write(&src, &data).unwrap();
    // The site: security on; its ACL lets the Manager hosts' DN (the kit's host) create.
    let a = Server::start_with(Conf {
        security: k.security_toml(&certs, &format!("[[security.acl]]\naction = \"create\"\ndn = \"{host_dn}\"\n")),
        staging: format!("file_roots = [\"{}\"]\nprogress_interval_ms = 50", roots.path().display()),
        host: "[repository]\n".into(),
        ..Default::default()
    });
    let manager_host = |cert: &str, key: &str| {
        server_with(
            roots.path(),
            &format!(
                "url = \"{}\"\ntimeout_secs = 5\n\n[security]\nhost_cert = \"{cert}\"\nhost_key = \"{key}\"\ncert_dir = \"{}\"\n",
                a.https_url(REPO),
                certs.display()
            ),
        )
    };
    let b = manager_host(&k.var("GSI_HOST_CERT"), &k.var("GSI_HOST_KEY"));
    // Registration through B: at the site, as B's host credential.
    let r = ok(repo(&b, "register", &format!("<source>{}</source>", src.display())));
    assert!(r.contains(&sha) && r.contains(&format!("owner=\"{host_dn}\"")), "registered by the host DN: {r}");
    // A workspace made on B is enrolled at the site by B's host DN; its deploy fetches the image over GSI.
    let disk = format!("<disk name=\"root\"><image digest=\"sha256:{sha}\">http://127.0.0.1:9/never</image></disk>");
    let w = b.create_workspace_from(&describe("qemu", (64, 128), "", "", &disk));
    ok(manager_op(&b, &w, "deploy"));
    wait_state(&b, &w, "Staged");
    let log = a.log();
    let served = log.lines().find(|l| l.contains("image served")).unwrap_or_else(|| panic!("no image served: {log}"));
    assert!(served.contains(&host_dn), "served to the host credential: {served}");
    assert!(log.lines().any(|l| l.contains("workspace checked out") && l.contains(&host_dn)), "{log}");
    assert_eq!(std::fs::read(b.data_dir().join("repository/images").join(&sha)).unwrap(), data);

    // A host whose credential the site does not trust (self-signed) is refused: nothing is made.
    let (rogue_cert, rogue_key) = common::gsi::make_ca(k, "rogue-manager-host", "/O=Grid/OU=GlobusTest/CN=rogue-host");
    let c = manager_host(&rogue_cert.display().to_string(), &rogue_key.display().to_string());
    let f = c.factory_create(&describe("qemu", (64, 128), "", "", &disk));
    assert_eq!(f.status, 500, "{}", f.body);
    let text = f.faultstring().unwrap_or_default().to_string();
    assert!(text.contains(&a.https_url(REPO)), "names the site: {}", f.body);
    assert!(text.to_ascii_lowercase().contains("authentication") || text.contains("refused"), "{}", f.body);
    assert!(c.db_dump().iter().all(|(s, ..)| s != "WorkspaceService"), "no workspace left on the refused host");
    let f = repo(&c, "register", &format!("<source>{}</source>", src.display()));
    assert_ne!(f.status, 200, "{}", f.body);
    assert!(a.log().contains("rogue-host"), "the site logged the refused host: {}", a.log());
}
