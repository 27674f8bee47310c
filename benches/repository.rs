//! `cargo bench --bench repository`: numbers (never pass/fail tests) for the Repository
//! (issue 12), printed as one table with the goals next to them:
//!   * select over 10,000 catalogued workspaces (in-process: the catalogue's summaries and the
//!     constraint match, as the `select` operation runs them; median of 50), and the same after
//!     100 of them changed (the index re-reads only those; median of 20);
//!   * clone throughput against a real `vwsd` over HTTP (16 clients, durable creates);
//!   * registering a large local image (hash while copying, fsync, rename) vs `cp` + `sha256sum`
//!     of the same file, side by side;
//!   * handing an image already in the store to a deployment (digest check + hard link), with
//!     the file unchanged since its last check, and cold (hashed again).
//!
//! Knobs: VWS_BENCH_REGISTER_MIB (default 1024), VWS_BENCH_SELECT_N (default 10000),
//! VWS_BENCH_CLONE_SECS (default 3), VWS_BENCH_VWSD (vwsd binary).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vws::host::images::ImageStore;
use vws::services::repository::{Catalogue, Constraints};
use vws::services::workspace;
use vws::soap::ns::{SOAPENV, VWS, WSA};
use vws::store::repo::{Quotas, RepoTables};
use vws::store::Store;
use vws::workspace::description::Range;
use vws::workspace::Description;
use vws::wsrf::{Home, Owner, Sweeper};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn description(i: usize) -> Description {
    let vmm = ["xen", "kvm", "qemu"][i % 3];
    let dist = ["debian", "centos", "ubuntu", "alpine"][i % 4];
    let ram = 128 * (1 + (i % 16) as u64);
    let xml = format!(
        "<virtualWorkspace xmlns=\"{VWS}\"><category><name>vm</name><vmm>{vmm}</vmm></category><hardware><ram min=\"{ram}\" max=\"{}\"/><disk name=\"root\" type=\"blank\" access=\"rw\" min=\"{}\" max=\"{}\"/></hardware><software><os kernel=\"6.{}.0\" distribution=\"{dist}\"/><program name=\"p{}\" version=\"1.{}\"/></software></virtualWorkspace>",
        ram * 2,
        512 + i % 100,
        4096 + i % 100,
        i % 8,
        i % 50,
        i % 7
    );
    Description::from_element(&vws::soap::xml::parse(&xml, &Default::default()).unwrap()).unwrap()
}

#[allow(clippy::result_large_err)] // the home's update closure returns its BaseFault
fn bench_select(rows: &mut Vec<(String, String, String)>) {
    let n = env_num("VWS_BENCH_SELECT_N", 10_000) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (median_all, median_sel, matched, median_churn) = rt.block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let home = Home::open(workspace::NAME, workspace::key_name(), workspace::resource_type(), store, Sweeper::new()).unwrap();
        let mut pending = Vec::new();
        for i in 0..n {
            let st =
                workspace::new_resource(&home.rtype, Home::new_key(), String::new(), Owner::default(), description(i), 86400);
            let h = home.clone();
            pending.push(tokio::spawn(async move { h.create(st).await.unwrap() }));
            if pending.len() == 512 {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            }
        }
        for p in pending {
            p.await.unwrap();
        }
        let cat = Catalogue::new(home.clone());
        let _ = cat.summaries().await; // first pass fills the cache
        let c = Constraints {
            vmm: Some("kvm".into()),
            ram: Some(Range { min: 1000, max: 1500 }),
            distribution: Some("ubuntu".into()),
            kernel: Some("6.2".into()),
            ..Default::default()
        };
        let (mut all, mut sel) = (Vec::new(), Vec::new());
        let mut matched = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let s = cat.summaries().await;
            all.push(t.elapsed());
            let t = Instant::now();
            let s2 = cat.summaries().await;
            matched = s2.iter().filter(|x| c.matches(x)).count();
            sel.push(t.elapsed());
            drop(s);
        }
        // With churn: 100 workspaces changed (committed updates) before each select.
        let keys = home.keys();
        let mut churn = Vec::new();
        for round in 0..20 {
            for k in keys.iter().skip(round * 100).take(100) {
                let rt = home.rtype.clone();
                home.update(k, vws::wsrf::FaultType::RpResourceUnknown, |st| {
                    // Stored again (as a state change stores it): new data text, re-summarised.
                    workspace::WorkspaceData::of(st)?.store(&rt, st);
                    let v = format!("<w:lastModified xmlns:w=\"{VWS}\">2026-12-02T00:00:{:02}Z</w:lastModified>", round % 60);
                    st.set(&rt, VWS, "lastModified", vec![v]);
                    Ok(())
                })
                .await
                .unwrap();
            }
            let t = Instant::now();
            let s = cat.summaries().await;
            let m = s.iter().filter(|x| c.matches(x)).count();
            churn.push(t.elapsed());
            assert_eq!(m, matched, "the same results after changes that keep the descriptions");
        }
        (median(all), median(sel), matched, median(churn))
    });
    rows.push((
        format!("select over {n} workspaces (4 constraints, {matched} match)"),
        format!("{:.2} ms median", median_sel.as_secs_f64() * 1e3),
        "<= 5 ms".into(),
    ));
    rows.push((
        format!("select over {n} after 100 of them changed"),
        format!("{:.2} ms median", median_churn.as_secs_f64() * 1e3),
        "<= 5 ms".into(),
    ));
    rows.push((
        format!("  of which: catalogue snapshot of {n}"),
        format!("{:.2} ms median", median_all.as_secs_f64() * 1e3),
        "-".into(),
    ));
}

fn vwsd_binary() -> PathBuf {
    if let Ok(p) = std::env::var("VWS_BENCH_VWSD") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/vwsd");
    if p.exists() {
        p
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_vwsd"))
    }
}

fn post(addr: &str, action: &str, body: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    let req = format!(
        "POST /wsrf/services/RepositoryService HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    (status.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), rest)
}

fn envelope(addr: &str, action: &str, payload: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAPENV}\" xmlns:wsa=\"{WSA}\"><soapenv:Header><wsa:To>http://{addr}/wsrf/services/RepositoryService</wsa:To><wsa:Action>{action}</wsa:Action><wsa:MessageID>uuid:{}</wsa:MessageID><k:RepositoryKey xmlns:k=\"{VWS}\">site</k:RepositoryKey></soapenv:Header><soapenv:Body>{payload}</soapenv:Body></soapenv:Envelope>",
        uuid::Uuid::new_v4()
    )
}

fn bench_clone(rows: &mut Vec<(String, String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        format!("[server]\nhttp = \"127.0.0.1:0\"\ndata = \"{}\"\n[vmm]\ndriver = \"none\"\n", dir.path().join("data").display());
    std::fs::write(dir.path().join("vwsd.toml"), cfg).unwrap();
    let log = std::fs::File::create(dir.path().join("vwsd.log")).unwrap();
    let mut child = Command::new(vwsd_binary())
        .arg("--config")
        .arg(dir.path().join("vwsd.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn vwsd (cargo build --release first)");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.trim().trim_start_matches("vwsd listening on http://").to_string();
    // One workspace to clone, made through the Factory.
    let create = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
    let body = format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAPENV}\" xmlns:wsa=\"{WSA}\"><soapenv:Header><wsa:To>http://{addr}/wsrf/services/WorkspaceFactoryService</wsa:To><wsa:Action>{create}</wsa:Action></soapenv:Header><soapenv:Body><create xmlns=\"{VWS}\"><virtualWorkspace><category><name>vm</name><vmm>kvm</vmm></category><hardware><ram min=\"128\" max=\"512\"/></hardware></virtualWorkspace></create></soapenv:Body></soapenv:Envelope>"
    );
    let mut c = TcpStream::connect(&addr).unwrap();
    write!(c, "POST /wsrf/services/WorkspaceFactoryService HTTP/1.1\r\nHost: {addr}\r\nSOAPAction: \"{create}\"\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let key = resp
        .split("WorkspaceKey xmlns:k0=\"http://vws.dev/2026/11/workspace\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let secs = env_num("VWS_BENCH_CLONE_SECS", 3);
    let (done, stop, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let clients = 16;
    let t = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, key, done, stop, failed) = (addr.clone(), key.clone(), done.clone(), stop.clone(), failed.clone());
            std::thread::spawn(move || {
                let action = format!("{VWS}/RepositoryPortType/cloneRequest");
                while !stop.load(Ordering::Relaxed) {
                    let (st, _) = post(
                        &addr,
                        &action,
                        &envelope(&addr, &action, &format!("<clone xmlns=\"{VWS}\"><workspace>{key}</workspace></clone>")),
                    );
                    if st == 200 {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    let _ = Command::new("kill").arg("-15").arg(child.id().to_string()).status();
    let _ = child.wait();
    rows.push((
        format!("clone throughput, {clients} HTTP clients, durable ({} failed)", failed.load(Ordering::Relaxed)),
        format!("{rate:.0} clones/s"),
        ">= 500/s".into(),
    ));
}

fn bench_register(rows: &mut Vec<(String, String, String)>) {
    let mib = env_num("VWS_BENCH_REGISTER_MIB", 1024);
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR").to_string() + "/target").unwrap();
    let src = dir.path().join("image.raw");
    {
        let mut f = std::fs::File::create(&src).unwrap();
        let mut block = vec![0u8; 1 << 20];
        for i in 0..mib {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (j as u64 ^ i.wrapping_mul(2654435761)) as u8;
            }
            f.write_all(&block).unwrap();
        }
        f.sync_all().unwrap();
    }
    let bytes = (mib << 20) as f64;
    // Warm the page cache equally for both sides.
    let _ = std::fs::read(&src).map(|v| v.len());
    let t = Instant::now();
    let cp_dst = dir.path().join("copy.raw");
    assert!(Command::new("cp").arg(&src).arg(&cp_dst).status().unwrap().success());
    assert!(Command::new("sync").arg(&cp_dst).status().map(|s| s.success()).unwrap_or(true));
    let cp = t.elapsed();
    let t = Instant::now();
    assert!(Command::new("sha256sum").arg(&src).stdout(Stdio::null()).status().unwrap().success());
    let sum = t.elapsed();
    std::fs::remove_file(&cp_dst).unwrap();
    let tables = Arc::new(RepoTables::open(dir.path()).unwrap());
    let store = ImageStore::open(&dir.path().join("repository"), tables, Quotas::default()).unwrap();
    let t = Instant::now();
    let r = store.register_file(&src, "bench", "file:///image.raw", None).unwrap();
    let reg = t.elapsed();
    let both = cp + sum;
    let ratio = both.as_secs_f64() / reg.as_secs_f64();
    rows.push((
        format!("register {mib} MiB local image (hash while copying, fsync)"),
        format!("{:.2} s = {:.0} MB/s", reg.as_secs_f64(), bytes / reg.as_secs_f64() / 1e6),
        "-".into(),
    ));
    rows.push((
        format!("  cp + sync {:.2} s, sha256sum {:.2} s: together", cp.as_secs_f64(), sum.as_secs_f64()),
        format!("{:.2} s = {:.0} MB/s", both.as_secs_f64(), bytes / both.as_secs_f64() / 1e6),
        "-".into(),
    ));
    rows.push(("  register speed / (cp + sha256sum) speed".into(), format!("{ratio:.2}x"), ">= 0.8x".into()));
    // Registering the same bytes again: no second copy (hashed while reading only).
    let t = Instant::now();
    let again = store.register_file(&src, "bench", "x", Some(&r.image.sha256)).unwrap();
    assert!(!again.new);
    rows.push((
        "  register again with its digest (already present)".into(),
        format!("{:.2} ms", t.elapsed().as_secs_f64() * 1e3),
        "-".into(),
    ));
    // Deploy hand-off: cold (hashed again), then with the file unchanged since.
    let pool = dir.path().join("pool");
    let t = Instant::now();
    store.link_into(&r.image.sha256, &pool.join("a/disk00-root")).unwrap();
    let cold = t.elapsed();
    let mut warm = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        store.link_into(&r.image.sha256, &pool.join(format!("w{i}/disk00-root"))).unwrap();
        warm.push(t.elapsed());
    }
    rows.push((
        format!("deploy hand-off of a {mib} MiB stored image (check + hard link)"),
        format!("{:.2} ms median", median(warm).as_secs_f64() * 1e3),
        "<= 50 ms".into(),
    ));
    rows.push((
        "  the same, first hand-off after a restart (hashed again)".into(),
        format!("{:.0} ms", cold.as_secs_f64() * 1e3),
        "-".into(),
    ));
    drop(dir);
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let mut rows = Vec::new();
    bench_select(&mut rows);
    bench_clone(&mut rows);
    bench_register(&mut rows);
    println!("\n{:<72} {:>24} {:>10}", "Repository benchmark", "measured", "goal");
    for (w, v, g) in &rows {
        println!("{w:<72} {v:>24} {g:>10}");
    }
}
