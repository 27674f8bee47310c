//! GridFTP staging against a real GSI globus-gridftp-server started by
//! ../shared/peers/gsi-gridftp-up.sh (its own kit under target/, on a free port): 1 GiB downloads and
//! uploads with 1 and 4 streams, with and without DCAU; wrong and expired proxies; a missing file;
//! the server killed mid-transfer and restarted (resume of downloads with ERET, of uploads with
//! ESTO from the server's restart markers); a checksum mismatch; concurrent stagings sharing
//! transfers; a server whose host certificate a CRL revokes, or whose CA has no signing policy,
//! refused by vws' own GSI validation; `http://` (a real python http.server with Range, killed
//! mid-transfer) and `file://` sources; the `vws stage` command. Heavy tests run one at a time.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vws::transfer::{self, Algo, Digest, Options, ProgressInfo, Stager};

/// The test server's port: a free one picked once per run, so the kit never collides with a
/// GridFTP server that something else (another checkout, a developer) left running.
fn port() -> u16 {
    static P: OnceLock<u16> = OnceLock::new();
    *P.get_or_init(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
/// `$VWS_SHARED/peers`, else `../shared/peers` beside the clone, else /work/shared/peers.
fn peers() -> PathBuf {
    if let Some(d) = std::env::var_os("VWS_SHARED") {
        return PathBuf::from(d).join("peers");
    }
    let sibling = root().join("../shared/peers");
    if sibling.is_dir() {
        return sibling;
    }
    PathBuf::from("/work/shared/peers")
}
fn kit_dir() -> PathBuf {
    root().join("target/gridftp-kit")
}

struct Kit {
    env: HashMap<String, String>,
    data: PathBuf,
}

fn up() -> HashMap<String, String> {
    let out = Command::new("bash")
        .arg(peers().join("gsi-gridftp-up.sh"))
        .arg(kit_dir())
        .arg(port().to_string())
        .output()
        .expect("run gsi-gridftp-up.sh");
    assert!(out.status.success(), "gsi-gridftp-up.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut env = HashMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = l.strip_prefix("export ").and_then(|r| r.split_once('=')) {
            let v = v.trim_matches('\'').trim_matches('"').replace("\\ ", " ");
            env.insert(k.to_string(), v);
        }
    }
    env
}

fn kit() -> &'static Kit {
    static K: OnceLock<Kit> = OnceLock::new();
    K.get_or_init(|| {
        let env = up();
        let data = root().join("target/gridftp-data");
        std::fs::create_dir_all(&data).unwrap();
        Kit { env, data }
    })
}

fn opts(streams: usize, dcau: bool) -> Options {
    let k = kit();
    Options {
        streams,
        dcau,
        credential: Some(k.env["X509_USER_PROXY"].clone().into()),
        cert_dir: Some(k.env["X509_CERT_DIR"].clone().into()),
        timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

fn url(p: &Path) -> String {
    format!("gsiftp://127.0.0.1:{}{}", port(), p.display())
}

fn big() -> PathBuf {
    let p = kit().data.join("big.bin");
    if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) != 1 << 30 {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("head -c 1G /dev/urandom > {}.tmp && mv {0}.tmp {0}", p.display()))
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

fn sha256(p: &Path) -> String {
    transfer::checksum::file_digests(p, &[Algo::Sha256]).unwrap().remove(0).1
}

fn small(name: &str, len: usize, seed: u8) -> PathBuf {
    let p = kit().data.join(name);
    let d: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect();
    std::fs::write(&p, d).unwrap();
    p
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = kit().data.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn one_gib_download_and_upload_1_and_4_streams_with_and_without_dcau() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = big();
    let want = sha256(&src);
    let out = fresh_dir("big-out");
    for (streams, dcau) in [(1, true), (4, true), (1, false), (4, false)] {
        let dst = out.join(format!("down-{streams}-{dcau}.bin"));
        let t = Instant::now();
        let o = transfer::stage(&url(&src), dst.to_str().unwrap(), &opts(streams, dcau)).unwrap();
        eprintln!("download p={streams} dcau={dcau}: {:.2}s", t.elapsed().as_secs_f64());
        assert_eq!(o.bytes, 1 << 30);
        assert_eq!(o.sha256, want, "our digest of the received data");
        assert!(o.remote_checksum.is_some(), "server checksum compared");
        assert_eq!(sha256(&dst), want, "bytes on disk identical");
        std::fs::remove_file(&dst).unwrap();

        let up = out.join(format!("up-{streams}-{dcau}.bin"));
        let t = Instant::now();
        let o = transfer::stage(src.to_str().unwrap(), &url(&up), &opts(streams, dcau)).unwrap();
        eprintln!("upload p={streams} dcau={dcau}: {:.2}s", t.elapsed().as_secs_f64());
        assert_eq!(o.bytes, 1 << 30);
        assert!(o.remote_checksum.is_some());
        assert_eq!(sha256(&up), want, "server-side file identical");
        std::fs::remove_file(&up).unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "no temporary files left: {left:?}");
}

/// Makes a CA, a user certificate and an RFC 3820 proxy with OpenSSL, none trusted by the server.
fn foreign_proxy(dir: &Path, lifetime: i64, same_ca: bool) -> PathBuf {
    use openssl::asn1::{Asn1Integer, Asn1Time};
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder, X509ReqBuilder, X509};
    let key = || PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let name = |cn: &str| {
        let mut b = X509NameBuilder::new().unwrap();
        b.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Grid").unwrap();
        b.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, "GlobusTest").unwrap();
        b.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        b.build()
    };
    let user_cred = if same_ca {
        let k = kit();
        vws::security::credential::Credential::load(&k.env["X509_USER_CERT"], &k.env["X509_USER_KEY"]).unwrap()
    } else {
        let cak = key();
        let uk = key();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let mut sn = BigNum::new().unwrap();
        sn.rand(60, MsbOption::ONE, false).unwrap();
        b.set_serial_number(&Asn1Integer::from_bn(&sn).unwrap()).unwrap();
        b.set_subject_name(&name("Test User")).unwrap();
        b.set_issuer_name(&name("Evil CA")).unwrap();
        b.set_pubkey(&uk).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        b.sign(&cak, MessageDigest::sha256()).unwrap();
        let user: X509 = b.build();
        vws::security::credential::Credential { cert: user, key: uk, chain: vec![], cert_path: "u".into(), key_path: "u".into() }
    };
    let pk = key();
    let mut rb = X509ReqBuilder::new().unwrap();
    rb.set_pubkey(&pk).unwrap();
    rb.sign(&pk, MessageDigest::sha256()).unwrap();
    let proxy = vws::security::gss::sign_proxy_request(&user_cred, &rb.build(), lifetime, false).unwrap();
    let mut pem = proxy.to_pem().unwrap();
    pem.extend(pk.private_key_to_pem_pkcs8().unwrap());
    pem.extend(user_cred.cert.to_pem().unwrap());
    let p = dir.join(if same_ca { "expired-proxy.pem" } else { "foreign-proxy.pem" });
    std::fs::write(&p, pem).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn wrong_and_expired_proxies_fail_authentication_with_the_reason() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = small("auth.bin", 4096, 1);
    let out = fresh_dir("auth-out");
    let mut o = opts(1, true);
    o.credential = Some(foreign_proxy(&out, 3600, false));
    let e = transfer::stage(&url(&src), out.join("x").to_str().unwrap(), &o).unwrap_err();
    eprintln!("foreign CA: {e}");
    assert_eq!(e.kind(), "auth", "{e}");
    let m = e.to_string().to_lowercase();
    assert!(
        m.contains("authentication") && (m.contains("certificate") || m.contains("verify") || m.contains("credential")),
        "{e}"
    );

    o.credential = Some(foreign_proxy(&out, 0, true));
    std::thread::sleep(Duration::from_millis(1100));
    let e = transfer::stage(&url(&src), out.join("x").to_str().unwrap(), &o).unwrap_err();
    eprintln!("expired: {e}");
    assert_eq!(e.kind(), "auth", "{e}");
    assert!(e.to_string().contains("expired"), "{e}");
    let left: Vec<_> =
        std::fs::read_dir(&out).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn missing_file_is_a_clean_not_found() {
    let out = fresh_dir("missing-out");
    let e = transfer::stage(&url(&kit().data.join("no-such-image.img")), out.join("x").to_str().unwrap(), &opts(2, true))
        .unwrap_err();
    assert_eq!(e.kind(), "not_found", "{e}");
    assert!(e.to_string().contains("no-such-image.img"), "{e}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn checksum_mismatch_is_rejected_and_leaves_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = small("corrupt.bin", 8 << 20, 7);
    let out = fresh_dir("corrupt-out");
    let mut o = opts(2, true);
    o.expected = Some(Digest::parse(&format!("sha256:{}", "00".repeat(32))).unwrap());
    let e = transfer::stage(&url(&src), out.join("img").to_str().unwrap(), &o).unwrap_err();
    assert_eq!(e.kind(), "checksum_mismatch", "{e}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in the target directory");
    // The right digest passes.
    o.expected = Some(Digest { algo: Algo::Sha256, hex: sha256(&src) });
    transfer::stage(&url(&src), out.join("img").to_str().unwrap(), &o).unwrap();
    assert_eq!(std::fs::read(out.join("img")).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn cancelled_download_and_upload_stop_early_and_leave_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = big();
    let out = fresh_dir("cancel-out");
    let (mut o, seen) = resume_opts(Duration::from_millis(10));
    o.streams = 2;
    let s2 = seen.clone();
    o.cancel = Some(Arc::new(move || s2.load(Ordering::Relaxed) > 64 << 20));
    let t = std::time::Instant::now();
    let e = transfer::stage(&url(&src), out.join("img").to_str().unwrap(), &o).unwrap_err();
    assert_eq!(e.kind(), "cancelled", "{e}");
    assert!(seen.load(Ordering::Relaxed) < 1 << 30, "stopped before the end");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in the target directory");
    // Upload: the temporary remote file goes too.
    let remote = fresh_dir("cancel-remote");
    seen.store(0, Ordering::Relaxed);
    let e = transfer::stage(&format!("file://{}", src.display()), &url(&remote.join("up.img")), &o).unwrap_err();
    assert_eq!(e.kind(), "cancelled", "{e}");
    assert_eq!(std::fs::read_dir(&remote).unwrap().count(), 0, "no remote leftovers");
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[test]
fn concurrent_stagings_share_transfers() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = fresh_dir("pool");
    let images: Vec<PathBuf> = (0..4).map(|i| small(&format!("img{i}.bin"), 48 << 20, i as u8)).collect();
    let stager = Arc::new(Stager::new(opts(2, true)));
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let hs: Vec<_> = (0..8)
        .map(|j| {
            let (stager, barrier) = (stager.clone(), barrier.clone());
            let src = url(&images[j % 4]);
            let dst = out.join(format!("img{}.bin", j % 4));
            std::thread::spawn(move || {
                barrier.wait();
                stager.stage(&src, dst.to_str().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    assert_eq!(stager.transfers(), 4, "each image transferred once");
    assert_eq!(results.iter().filter(|r| r.shared).count(), 4);
    for (i, img) in images.iter().enumerate() {
        assert_eq!(std::fs::read(out.join(format!("img{i}.bin"))).unwrap(), std::fs::read(img).unwrap());
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let ppid: u32 = after.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
            if ppid == pid {
                v.push(p);
            }
        }
    }
    v
}

/// Options for the kill-and-resume tests: 1 stream with DCAU, frequent progress reports (the
/// returned counter holds the bytes moved so far, to kill the server mid-transfer), and 30 s to
/// reconnect once the server is back. A non-zero `throttle` is slept in every progress report,
/// on the thread moving the data: it slows the transfer down (at most one report per 5 ms).
fn resume_opts(throttle: Duration) -> (Options, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let mut o = opts(1, true);
    let s2 = seen.clone();
    o.progress = Some(Arc::new(move |p: &ProgressInfo| {
        s2.store(p.bytes, Ordering::Relaxed);
        if !throttle.is_zero() {
            std::thread::sleep(throttle);
        }
    }));
    o.progress_interval = Duration::from_millis(5);
    o.reconnect_for = Duration::from_secs(30);
    (o, seen)
}

#[test]
fn server_killed_mid_transfer_resumes_byte_identical() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = big();
    let want = sha256(&src);
    let out = fresh_dir("resume-out");
    let dst = out.join("resumed.bin");
    let (o, seen) = resume_opts(Duration::ZERO);
    // Slow the transfer enough to kill it in the middle: many small runs would be flaky.
    let (su, du) = (url(&src), dst.to_str().unwrap().to_string());
    let h = std::thread::spawn(move || transfer::stage(&su, &du, &o));
    let t = Instant::now();
    while seen.load(Ordering::Relaxed) < 150 << 20 {
        assert!(t.elapsed() < Duration::from_secs(60), "transfer never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Kill the server (the daemon and its per-connection children, by pid), then restart it.
    let pidf = kit_dir().join("gridftp.pid");
    let pid: u32 = std::fs::read_to_string(&pidf).unwrap().trim().parse().unwrap();
    for k in children_of(pid) {
        // SAFETY: plain kill(2) of a server process this test started.
        unsafe { libc::kill(k as i32, libc::SIGKILL) };
    }
    let at_kill = seen.load(Ordering::Relaxed);
    let st = Command::new("bash").arg(peers().join("gsi-gridftp-down.sh")).arg(kit_dir()).status().unwrap();
    assert!(st.success());
    eprintln!("server killed at {at_kill} bytes");
    std::thread::sleep(Duration::from_millis(500));
    up();
    let o = h.join().unwrap().expect("the transfer resumes and completes");
    assert!(at_kill < 1 << 30, "killed before the end");
    assert_eq!(o.sha256, want);
    assert_eq!(sha256(&dst), want, "byte-identical after resume");
    let from = o.resumed_from.first().copied();
    assert!(
        from.is_some_and(|f| f > 0 && f < 1 << 30),
        "resumed with ERET from the data on disk, not from 0: {:?}",
        o.resumed_from
    );
}

// ------------------------------------------------------------------------------------------------
// vws' own GSI validation decides on the server's chain.

fn openssl_cli(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Copies of the kit's trust directory: one with a CRL (made by `openssl ca` with the kit's CA)
/// revoking the server's host certificate, one without the signing policies.
fn hostile_trust_dirs() -> (PathBuf, PathBuf) {
    let kd = kit_dir();
    let base = fresh_dir("trust");
    let (crl_dir, nopol_dir) = (base.join("certs-crl"), base.join("certs-nopolicy"));
    std::fs::create_dir_all(&crl_dir).unwrap();
    std::fs::create_dir_all(&nopol_dir).unwrap();
    let mut hashes = Vec::new();
    for e in std::fs::read_dir(&kit().env["X509_CERT_DIR"]).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if let Some(h) = n.strip_suffix(".0") {
            hashes.push(h.to_string());
        }
        std::fs::copy(e.path(), crl_dir.join(&n)).unwrap();
        if !n.ends_with(".signing_policy") {
            std::fs::copy(e.path(), nopol_dir.join(&n)).unwrap();
        }
    }
    let db = base.join("ca-db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("index.txt"), "").unwrap();
    std::fs::write(db.join("serial"), "01\n").unwrap();
    std::fs::write(db.join("crlnumber"), "01\n").unwrap();
    let cnf = db.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = kit\n[kit]\ndir = {}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\nserial = $dir/serial\ncrlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\npolicy = any\n[any]\ncommonName = optional\n",
            db.display()
        ),
    )
    .unwrap();
    let (ca, cakey, host) = (kd.join("ca/ca.pem"), kd.join("ca/ca.key"), kd.join("host/hostcert.pem"));
    let common =
        ["ca", "-batch", "-config", cnf.to_str().unwrap(), "-cert", ca.to_str().unwrap(), "-keyfile", cakey.to_str().unwrap()];
    let mut a = common.to_vec();
    a.extend(["-revoke", host.to_str().unwrap()]);
    openssl_cli(&a);
    let crl = db.join("kit.crl");
    let mut a = common.to_vec();
    a.extend(["-gencrl", "-out", crl.to_str().unwrap()]);
    openssl_cli(&a);
    for h in &hashes {
        std::fs::copy(&crl, crl_dir.join(format!("{h}.r0"))).unwrap();
    }
    (crl_dir, nopol_dir)
}

#[test]
fn server_with_revoked_host_certificate_or_unpoliced_ca_is_refused_with_the_reason() {
    let src = small("trust.bin", 64 << 10, 3);
    let (crl_dir, nopol_dir) = hostile_trust_dirs();
    let out = fresh_dir("trust-out");
    // The same material passes with the kit's own directory (the refusals below are ours).
    let ok = transfer::stage(&url(&src), out.join("ok").to_str().unwrap(), &opts(1, true)).unwrap();
    assert_eq!(ok.bytes, 64 << 10);
    std::fs::remove_file(out.join("ok")).unwrap();

    let mut o = opts(1, true);
    o.cert_dir = Some(crl_dir);
    let e = transfer::stage(&url(&src), out.join("x").to_str().unwrap(), &o).unwrap_err();
    eprintln!("revoked host: {e}");
    assert_eq!(e.kind(), "auth", "{e}");
    let m = e.to_string();
    assert!(m.contains("revoked") && m.contains("CN=localhost"), "{e}");

    o.cert_dir = Some(nopol_dir);
    let e = transfer::stage(&url(&src), out.join("x").to_str().unwrap(), &o).unwrap_err();
    eprintln!("no signing policy: {e}");
    assert_eq!(e.kind(), "auth", "{e}");
    assert!(e.to_string().contains("signing policy"), "{e}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left behind");
}

// ------------------------------------------------------------------------------------------------
// Upload resume, http:// and file:// sources, the `vws stage` command.

/// SIGKILLs the server's processes at once, then `after_kill()`, then stops the daemon cleanly.
fn kill_server(after_kill: impl FnOnce()) {
    let pid: u32 = std::fs::read_to_string(kit_dir().join("gridftp.pid")).unwrap().trim().parse().unwrap();
    for k in children_of(pid) {
        // SAFETY: plain kill(2) of a server process this test started.
        unsafe { libc::kill(k as i32, libc::SIGKILL) };
    }
    after_kill();
    let st = Command::new("bash").arg(peers().join("gsi-gridftp-down.sh")).arg(kit_dir()).status().unwrap();
    assert!(st.success());
}

/// The largest `confirmed` field of the client's tracing events: the contiguous prefix the
/// server's restart markers confirmed ("restart marker" debug events of the GridFTP client).
#[derive(Clone, Default)]
struct Confirmed(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Confirmed {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct V<'a>(&'a AtomicU64);
        impl tracing::field::Visit for V<'_> {
            fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
                if f.name() == "confirmed" {
                    self.0.fetch_max(v, Ordering::Relaxed);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        e.record(&mut V(&self.0));
    }
}

/// The upload is killed only after a restart marker confirmed data (vws asks for one every
/// second with `TREV RESTART 1`; the throttle makes the 1 GiB upload last several seconds), so the
/// resume must be an `ESTO A <offset>` with offset > 0 that sends only the rest — checked in the
/// staging's outcome and in the server's own transfer log — and the result byte-identical.
#[test]
fn upload_server_killed_mid_stor_resumes_byte_identical() {
    use tracing_subscriber::layer::SubscriberExt;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = big();
    let want = sha256(&src);
    let out = fresh_dir("upresume-out");
    let dst = out.join("uploaded.bin");
    let (o, seen) = resume_opts(Duration::from_millis(20));
    let log = kit_dir().join("gridftp-transfer.log");
    let log_before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let confirmed = Confirmed::default();
    let (su, du, c2) = (src.to_str().unwrap().to_string(), url(&dst), confirmed.clone());
    let h = std::thread::spawn(move || {
        // The GridFTP client reads the control replies on the staging thread.
        tracing::subscriber::with_default(tracing_subscriber::registry().with(c2), || transfer::stage(&su, &du, &o))
    });
    let t = Instant::now();
    while confirmed.0.load(Ordering::Relaxed) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no restart marker confirmed any data (sent {})",
            seen.load(Ordering::Relaxed)
        );
        assert!(!h.is_finished(), "the upload ended before a restart marker came");
        std::thread::sleep(Duration::from_millis(1));
    }
    let marked = confirmed.0.load(Ordering::Relaxed);
    let mut at_kill = 0;
    kill_server(|| at_kill = seen.load(Ordering::Relaxed));
    eprintln!("server killed at {at_kill} bytes sent, {marked} confirmed by a restart marker");
    assert!(at_kill < 1 << 30, "killed before the end");
    std::thread::sleep(Duration::from_millis(300));
    up();
    let o = h.join().unwrap().expect("the upload resumes and completes");
    assert_eq!(o.bytes, 1 << 30);
    assert!(o.remote_checksum.is_some(), "server checksum compared after the resume");
    eprintln!("resumed from {:?}", o.resumed_from);
    let first = *o.resumed_from.first().expect("the upload was resumed");
    assert!(
        first >= marked && first > 0 && first < 1 << 30,
        "ESTO from the confirmed prefix {marked}, not from 0: {:?}",
        o.resumed_from
    );
    // The remote file, fetched back over GridFTP, is byte-identical.
    let back = out.join("back.bin");
    let d = transfer::stage(&url(&dst), back.to_str().unwrap(), &opts(4, false)).unwrap();
    assert_eq!(d.sha256, want);
    assert_eq!(sha256(&back), want);
    // The server's view: the transfer that completed the file was an ESTO of only the rest.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail = &text[log_before.min(text.len())..];
    let last = *o.resumed_from.last().unwrap();
    let esto: Vec<&str> = tail.lines().filter(|l| l.contains("TYPE=ESTO") && l.contains("CODE=226")).collect();
    eprintln!("server transfer log after the restart: {esto:?}");
    let nbytes = |l: &str| -> u64 { l.split_whitespace().find_map(|f| f.strip_prefix("NBYTES=")).unwrap().parse().unwrap() };
    assert!(
        esto.iter().any(|l| nbytes(l) == (1 << 30) - last),
        "an ESTO of the last {} bytes in the server's log: {esto:?}",
        (1u64 << 30) - last
    );
}

/// A real HTTP/1.1 file server (python's http.server) with `Range` support and an optional
/// throttle, on a free port; returns the child and its port.
fn http_server(dir: &Path, port: u16, throttle: bool, log: &Path) -> std::process::Child {
    const PY: &str = r#"
import http.server, os, sys, time, functools
port, root, throttle, log = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404, "Not Found"); return
        size = os.path.getsize(path)
        rng = self.headers.get("Range")
        with open(log, "a") as l: l.write("GET %s %s\n" % (self.path, rng or "-"))
        start = 0
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            while True:
                b = f.read(256 << 10)
                if not b: break
                self.wfile.write(b)
                if throttle: time.sleep(0.01)
http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(H, directory=root)).serve_forever()
"#;
    let child = Command::new("python3")
        .args(["-c", PY, &port.to_string(), dir.to_str().unwrap(), if throttle { "1" } else { "0" }, log.to_str().unwrap()])
        .spawn()
        .expect("python3");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "http server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn http_source_stages_and_resumes_with_range_after_the_server_is_killed() {
    let web = fresh_dir("web");
    let img = web.join("image.img");
    std::fs::copy(small("web-src.bin", 64 << 20, 9), &img).unwrap();
    let want = sha256(&img);
    let out = fresh_dir("web-out");
    let log = kit().data.join("web-requests.log");
    let _ = std::fs::remove_file(&log);
    let port = free_port();
    let mut srv = http_server(&web, port, true, &log);
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    let o = Options {
        timeout: Duration::from_secs(10),
        progress: Some(Arc::new(move |p: &ProgressInfo| s2.store(p.bytes, Ordering::Relaxed))),
        progress_interval: Duration::from_millis(5),
        ..Default::default()
    };
    let (su, du) = (format!("http://127.0.0.1:{port}/image.img"), out.join("image.img"));
    let du2 = du.clone();
    let o2 = o.clone();
    let h = std::thread::spawn(move || transfer::stage(&su, du2.to_str().unwrap(), &o2));
    let t = Instant::now();
    while seen.load(Ordering::Relaxed) < 16 << 20 {
        assert!(t.elapsed() < Duration::from_secs(30), "download never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    srv.kill().unwrap();
    srv.wait().unwrap();
    let at_kill = seen.load(Ordering::Relaxed);
    let mut srv = http_server(&web, port, false, &log);
    let r = h.join().unwrap().expect("the download resumes");
    srv.kill().unwrap();
    srv.wait().unwrap();
    assert!(at_kill < 64 << 20);
    assert_eq!(r.bytes, 64 << 20);
    assert_eq!(r.sha256, want);
    assert_eq!(sha256(&du), want, "byte-identical after the resume");
    let reqs = std::fs::read_to_string(&log).unwrap();
    eprintln!("requests:\n{reqs}");
    let resumed: Vec<u64> = reqs
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .collect();
    assert!(resumed.iter().any(|&from| from > 0 && from <= at_kill + (8 << 20)), "a Range request from where it broke: {reqs}");

    // A missing file over http is a clean not_found; nothing is left behind.
    let mut srv = http_server(&web, port, false, &log);
    let e = transfer::stage(&format!("http://127.0.0.1:{port}/nope.img"), out.join("nope").to_str().unwrap(), &o).unwrap_err();
    srv.kill().unwrap();
    srv.wait().unwrap();
    assert_eq!(e.kind(), "not_found", "{e}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn file_to_file_staging_is_verified_and_atomic() {
    let src = small("local-src.bin", 24 << 20, 5);
    let out = fresh_dir("local-out");
    let dst = out.join("copy.img");
    let r =
        transfer::stage(&format!("file://{}", src.display()), &format!("file://{}", dst.display()), &Options::default()).unwrap();
    assert_eq!(r.bytes, 24 << 20);
    assert_eq!(r.sha256, sha256(&src));
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
    // A wrong expected digest leaves the old copy alone and no temporary file.
    let o = Options { expected: Some(Digest::parse(&format!("sha256:{}", "11".repeat(32))).unwrap()), ..Default::default() };
    std::fs::write(&dst, b"old").unwrap();
    let e = transfer::stage(&format!("file://{}", src.display()), &format!("file://{}", dst.display()), &o).unwrap_err();
    assert_eq!(e.kind(), "checksum_mismatch", "{e}");
    assert_eq!(std::fs::read(&dst).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    let e = transfer::stage(
        &format!("file://{}", out.join("missing").display()),
        &format!("file://{}", dst.display()),
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), "not_found", "{e}");
}

#[test]
fn vws_stage_cli_shows_progress_and_fails_cleanly() {
    let src = small("cli.bin", 32 << 20, 11);
    let out = fresh_dir("cli-out");
    let dst = out.join("cli.img");
    let k = kit();
    let run = |src: String| {
        Command::new(env!("CARGO_BIN_EXE_vws"))
            .args(["--proxy", &k.env["X509_USER_PROXY"], "stage", "--streams", "2", &src, &format!("file://{}", dst.display())])
            .env("X509_CERT_DIR", &k.env["X509_CERT_DIR"])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = run(url(&src));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("100.0%") && err.contains("MiB/s"), "a progress bar on stderr: {err}");
    assert!(err.contains(&format!("staged {} bytes", 32 << 20)) && err.contains(&sha256(&src)), "{err}");
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());

    let o = run(url(&k.data.join("no-such-file.img")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert_ne!(o.status.code(), Some(0));
    assert!(err.contains("Error:") && err.contains("no-such-file.img"), "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "only the first copy");
}

fn prot_opts(streams: usize, protect: transfer::Protection) -> Options {
    Options { protect, ..opts(streams, true) }
}

/// `PROT P` with 2 streams: a 64 MiB download and upload are byte-identical (SHA-256, and the
/// server's checksum), and the data channel really is protected — on a `PROT P` RETR the bytes
/// after the DCAU handshake are TLS application-data records (0x17 0x03 0x03 …) carrying the MODE E
/// header, while the same exchange with `PROT C` shows the clear 17-byte block header.
#[test]
fn prot_p_download_and_upload_2_streams_are_encrypted_and_identical() {
    use std::net::TcpListener;
    use transfer::gridftp::{control::port_arg, GsiMaterial, Session};
    use transfer::Protection;
    use vws::security::gss;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = small("prot-src.bin", 64 << 20, 7);
    let want = sha256(&src);
    let out = fresh_dir("prot-out");
    let down = out.join("down.bin");
    let o = transfer::stage(&url(&src), down.to_str().unwrap(), &prot_opts(2, Protection::Private)).unwrap();
    assert_eq!((o.bytes, o.sha256.as_str()), (64 << 20, want.as_str()));
    assert!(o.remote_checksum.is_some(), "server checksum compared");
    assert_eq!(sha256(&down), want);
    let up = out.join("up.bin");
    let o = transfer::stage(down.to_str().unwrap(), &url(&up), &prot_opts(2, Protection::Private)).unwrap();
    assert_eq!(o.bytes, 64 << 20);
    assert_eq!(sha256(&up), want, "uploaded bytes identical");

    // What is on the wire after the DCAU handshake, with PROT P and (control) PROT C.
    let first_bytes = |protect: Protection| -> ([u8; 17], Vec<u8>) {
        let o = prot_opts(1, protect);
        let u = transfer::Url::parse(&url(&src)).unwrap();
        let gsi = GsiMaterial::load(&o, &u.to_string()).unwrap();
        let mut s = Session::connect(&u, &o, Some(&gsi)).unwrap();
        for c in ["TYPE I", "MODE E", "PBSZ 1048576", &format!("PROT {}", protect.letter()), "OPTS RETR Parallelism=1,1,1;"] {
            s.simple(c).unwrap();
        }
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        s.simple(&format!("PORT {}", port_arg(l.local_addr().unwrap()).unwrap())).unwrap();
        s.ctl.send(&format!("RETR {}", src.display())).unwrap();
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let ctx = gss::server_context(&gsi.cred, &gsi.certdir).unwrap();
        let (tls, _peer, early) = gss::accept_tls_on_socket(&ctx, &gsi.certdir, sock, protect != Protection::Clear).unwrap();
        // The raw socket now holds the next bytes exactly as they crossed the wire.
        let mut raw = [0u8; 17];
        let n = tls.get_ref().peek(&mut raw).unwrap();
        assert!(n >= 5, "{n} raw bytes");
        drop(tls);
        drop(s);
        (raw, early)
    };
    let (raw_p, early_p) = first_bytes(Protection::Private);
    assert_eq!(&raw_p[..3], &[0x17, 0x03, 0x03], "PROT P: TLS application data on the wire, got {raw_p:02x?}");
    assert!(early_p.len() >= 17, "PROT P: the first decrypted record is the MODE E header");
    let h = &early_p[..17];
    assert_eq!(h[0], 0, "a data block descriptor");
    assert!(u64::from_be_bytes(h[1..9].try_into().unwrap()) > 0, "a data block count");
    let data = std::fs::read(&src).unwrap();
    assert!(!early_p[17..].is_empty() && data.starts_with(&early_p[17..]) || early_p.len() == 17);
    let (raw_c, early_c) = first_bytes(Protection::Clear);
    assert!(early_c.is_empty(), "PROT C: the delegation flag, then clear data");
    assert_eq!(raw_c[0], 0, "PROT C: the clear MODE E header is on the wire, got {raw_c:02x?}");
    assert!(u64::from_be_bytes(raw_c[1..9].try_into().unwrap()) > 0);
}
