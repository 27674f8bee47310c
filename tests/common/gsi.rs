//! The GSI test kit, shared by `tests/gsi.rs`, `tests/security.rs` and `benches/security.rs`:
//! `gsi-gridftp-up.sh DIR PORT` (from the shared peers, `common::shared_dir()`) makes a throwaway
//! CA, user, host and VOMS credentials and proxies with the real Globus/VOMS tools; the helpers
//! here craft more with the real tools (grid-proxy-init, voms-proxy-fake, `openssl ca`) under
//! `DIR/extra-<pid>/` (removed at exit), and [`m`] makes the hostile material of the tests:
//! proxies of proxies, an expired proxy, a second CA, an impostor CA, a CRL revoking a user, a
//! user outside the signing policy, badly named legacy proxies, mixed proxy types, path-length
//! violations, VOMS proxies with expired/badly signed/foreign ACs.
#![allow(dead_code)]

use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::KeyUsage;
use openssl::x509::{X509Extension, X509NameBuilder, X509};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use vws::security::certdir::CertDir;
use vws::security::credential::Credential;
use vws::security::voms::{self, VomsConfig};
use vws::security::{self, TrustConfig};

/// GridFTP port of the tests' kit (`target/gsikit-test`).
/// The kit's GridFTP port: a free one picked once per process (the credential tests do not use
/// the server; a fixed port could collide with a server something else left running).
pub fn port() -> String {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()).clone()
}
pub const USER_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment,dataEncipherment\nextendedKeyUsage=clientAuth\n";
pub const PCI_EXT: &str =
    "proxyCertInfo=critical,language:id-ppl-inheritAll\nkeyUsage=critical,digitalSignature,keyEncipherment\n";
pub const NO_PCI_EXT: &str = "keyUsage=critical,digitalSignature,keyEncipherment\n";

// ------------------------------------------------------------------------------ the kit

pub struct Kit {
    /// e.g. `target/gsikit-test`
    pub dir: PathBuf,
    /// Extra material of this process (`DIR/extra-<pid>`).
    pub x: PathBuf,
    /// The `export` lines of the kit script.
    pub vars: HashMap<String, String>,
    pub certdir: CertDir,
}

impl Kit {
    pub fn var(&self, k: &str) -> String {
        self.vars.get(k).unwrap_or_else(|| panic!("kit variable {k} missing")).clone()
    }
    pub fn path(&self, k: &str) -> PathBuf {
        PathBuf::from(self.var(k))
    }
    pub fn user_dn(&self) -> String {
        self.var("GSI_USER_DN")
    }
    pub fn voms(&self) -> VomsConfig {
        VomsConfig::new(self.path("X509_VOMS_DIR"))
    }
    pub fn trust(&self) -> TrustConfig {
        TrustConfig { cert_dir: CertDir::load(self.path("X509_CERT_DIR")).unwrap(), voms: Some(self.voms()), gridmap: None }
    }
    /// The kit CA's certificate and key (for issuing more users).
    pub fn ca(&self) -> (PathBuf, PathBuf) {
        (self.path("GSI_CA_CERT"), self.dir.join("ca/ca.key"))
    }
    /// A proxy credential of the kit, by its variable name (e.g. `GSI_PROXY_RFC`).
    pub fn proxy(&self, k: &str) -> Credential {
        Credential::load_proxy(self.var(k)).unwrap_or_else(|e| panic!("{k}: {e}"))
    }
    /// The user's certificate and key.
    pub fn user(&self) -> (PathBuf, PathBuf) {
        (self.path("X509_USER_CERT"), self.path("X509_USER_KEY"))
    }
    /// The body of a vwsd `[security]` section: the kit's host credential and vomsdir, `cert_dir`
    /// as the trust directory, then `extra` (more keys, then `[[security.acl]]` tables).
    pub fn security_toml(&self, cert_dir: &Path, extra: &str) -> String {
        format!(
            "host_cert = \"{}\"\nhost_key = \"{}\"\ncert_dir = \"{}\"\nvomsdir = \"{}\"\n{extra}",
            self.var("GSI_HOST_CERT"),
            self.var("GSI_HOST_KEY"),
            cert_dir.display(),
            self.var("X509_VOMS_DIR"),
        )
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn peers_script(name: &str) -> PathBuf {
    super::shared_dir().join("peers").join(name)
}

/// The tests' kit: `target/gsikit-test` with its GridFTP server on [`port()`].
pub fn kit_dir() -> PathBuf {
    repo().join("target/gsikit-test")
}

fn extra_dir_of(dir: &Path) -> PathBuf {
    dir.join(format!("extra-{}", std::process::id()))
}

/// The tests' kit with the hostile [`Material`], made once per process.
pub fn kit() -> &'static Kit {
    // A failed set-up fails every test at once instead of being retried by each.
    static KIT: OnceLock<Result<Kit, String>> = OnceLock::new();
    let r = KIT.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let (kit, lock) = bring_up_locked(&kit_dir(), &port());
            make_material(&kit);
            drop(lock);
            kit
        })
        .map_err(|e| {
            e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
        })
    });
    match r {
        Ok(k) => k,
        Err(e) => panic!("GSI kit set-up failed: {e}"),
    }
}

/// Kit directories this process brought up (stopped and cleaned at exit).
static KITS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn teardown() {
    let dirs = KITS.lock().map(|d| d.clone()).unwrap_or_default();
    for dir in dirs {
        let _ = Command::new("bash")
            .arg(peers_script("gsi-gridftp-down.sh"))
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(extra_dir_of(&dir));
    }
}

/// Undoes bash's `printf %q` quoting (backslash escapes; `$'…'` is not expected here).
fn unquote(v: &str) -> String {
    assert!(!v.starts_with("$'"), "unexpected $'' quoting: {v}");
    let mut out = String::new();
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else if c != '\'' {
            out.push(c);
        }
    }
    out
}

/// Brings up a kit in `dir` (GridFTP server on `port`), without the hostile material; it is
/// stopped, and this process' extra directory removed, at exit.
pub fn bring_up(dir: &Path, port: &str) -> Kit {
    bring_up_locked(dir, port).0
}

/// [`bring_up`], returning the held cross-process lock of the kit directory.
fn bring_up_locked(dir: &Path, port: &str) -> (Kit, std::fs::File) {
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    // One set-up at a time across processes (the script is idempotent, not concurrent).
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.with_extension("lock")).unwrap();
    // SAFETY: flock on a file descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let out = Command::new("bash")
        .arg(peers_script("gsi-gridftp-up.sh"))
        .arg(&dir)
        .arg(port)
        .stdin(Stdio::null())
        .output()
        .expect("run gsi-gridftp-up.sh");
    assert!(out.status.success(), "gsi-gridftp-up.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut vars = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            vars.insert(k.to_string(), unquote(v));
        }
    }
    for k in ["GSI_PROXY_LEGACY", "GSI_PROXY_VOMS", "GSI_PROXY_RFC_LIMITED", "GSI_PROXY_LEGACY_LIMITED"] {
        assert!(vars.contains_key(k), "the kit did not make {k}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    // Leftovers of earlier runs that died.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = n.strip_prefix("extra-").and_then(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill with signal 0 only checks existence.
            if unsafe { libc::kill(pid, 0) } != 0 {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let x = extra_dir_of(&dir);
    let _ = std::fs::remove_dir_all(&x);
    std::fs::create_dir_all(&x).unwrap();
    {
        let mut kits = KITS.lock().unwrap();
        if kits.is_empty() {
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(teardown) };
        }
        kits.push(dir.clone());
    }
    let certdir = CertDir::load(&vars["X509_CERT_DIR"]).unwrap();
    (Kit { dir, x, vars, certdir }, lock)
}

// ------------------------------------------------------------------------------ tools

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn openssl(args: &[&str]) -> String {
    run(Command::new("openssl").args(args))
}

pub fn p(s: &Path) -> &str {
    s.to_str().unwrap()
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// grid-proxy-init with the kit's trust directory.
pub fn gpi(k: &Kit, args: &[&str]) {
    run(Command::new("grid-proxy-init").arg("-q").args(args).env("X509_CERT_DIR", k.path("X509_CERT_DIR")));
}

pub fn gpi_from(k: &Kit, from: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let o = k.x.join(out);
    let mut a = vec!["-cert", p(from), "-key", p(from), "-out", p(&o)];
    a.extend_from_slice(extra);
    gpi(k, &a);
    o
}

pub fn gpi_user(k: &Kit, cert: &Path, key: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let o = k.x.join(out);
    let mut a = vec!["-cert", p(cert), "-key", p(key), "-out", p(&o)];
    a.extend_from_slice(extra);
    gpi(k, &a);
    o
}

/// A self-signed CA.
pub fn make_ca(k: &Kit, name: &str, dn: &str) -> (PathBuf, PathBuf) {
    let (c, key) = (k.x.join(format!("{name}.pem")), k.x.join(format!("{name}.key")));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        dn,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        p(&key),
        "-out",
        p(&c),
    ]);
    chmod(&key, 0o600);
    (c, key)
}

/// Issues a certificate with `openssl ca` from `issuer` (which may be a user or a proxy file):
/// returns (certificate, key, the `openssl ca` config for later -revoke/-gencrl).
pub fn issue(
    k: &Kit,
    name: &str,
    issuer: (&Path, &Path),
    subject: &str,
    ext: &str,
    dates: Option<(&str, &str)>,
) -> (PathBuf, PathBuf, PathBuf) {
    let d = k.x.join(format!("ca-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(63, MsbOption::MAYBE_ZERO, false).unwrap();
    std::fs::write(d.join("serial"), format!("{}\n", serial.to_hex_str().unwrap())).unwrap();
    let cnf = d.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = signer\n[signer]\ndir = {dir}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\nserial = $dir/serial\ndefault_md = sha256\npolicy = anything\nunique_subject = no\ncopy_extensions = none\nemail_in_dn = no\ndefault_crl_days = 30\n[anything]\norganizationName = optional\norganizationalUnitName = optional\ncommonName = optional\n[ext]\n{ext}",
            dir = p(&d)
        ),
    )
    .unwrap();
    let (cert, key, csr) = (k.x.join(format!("{name}.pem")), k.x.join(format!("{name}.key")), d.join("req.csr"));
    openssl(&["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", p(&key), "-subj", "/CN=unused", "-out", p(&csr)]);
    chmod(&key, 0o600);
    let mut a = vec![
        "ca",
        "-batch",
        "-config",
        p(&cnf),
        "-cert",
        p(issuer.0),
        "-keyfile",
        p(issuer.1),
        "-in",
        p(&csr),
        "-out",
        p(&cert),
        "-extensions",
        "ext",
        "-subj",
        subject,
        "-preserveDN",
        "-notext",
    ];
    match dates {
        Some((s, e)) => a.extend_from_slice(&["-startdate", s, "-enddate", e]),
        None => a.extend_from_slice(&["-days", "30"]),
    }
    openssl(&a);
    (cert, key, cnf)
}

/// The PEM certificate blocks of a file.
pub fn cert_blocks(path: &Path) -> String {
    let t = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut inside = false;
    for l in t.lines() {
        if l == "-----BEGIN CERTIFICATE-----" {
            inside = true;
        }
        if inside {
            out.push_str(l);
            out.push('\n');
        }
        if l == "-----END CERTIFICATE-----" {
            inside = false;
        }
    }
    out
}

/// A proxy file in the Globus layout: certificate, key, then the issuing chain.
pub fn proxy_file(k: &Kit, out: &str, cert: &Path, key: &Path, chain: &[&Path]) -> PathBuf {
    let o = k.x.join(out);
    let mut t = cert_blocks(cert);
    t.push_str(&std::fs::read_to_string(key).unwrap());
    for c in chain {
        t.push_str(&cert_blocks(c));
    }
    std::fs::write(&o, t).unwrap();
    chmod(&o, 0o600);
    o
}

pub fn subject_of(path: &Path) -> String {
    let c = X509::from_pem(&std::fs::read(path).unwrap()).unwrap();
    security::x509::subject(&c)
}

pub fn certdir_copy(k: &Kit, name: &str, with_policy: bool) -> (PathBuf, Vec<String>) {
    let d = k.x.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let mut hashes = Vec::new();
    for e in std::fs::read_dir(k.path("X509_CERT_DIR")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if n.ends_with(".0") {
            hashes.push(n.trim_end_matches(".0").to_string());
        }
        if with_policy || !n.ends_with(".signing_policy") {
            std::fs::copy(e.path(), d.join(&n)).unwrap();
        }
    }
    (d, hashes)
}

pub fn add_crl(dir: &Path, hashes: &[String], crl: &Path) {
    for h in hashes {
        std::fs::copy(crl, dir.join(format!("{h}.r0"))).unwrap();
    }
}

/// voms-proxy-fake for the kit's user: an RFC proxy with an AC of VO testvo signed by the
/// kit's VOMS server (or by `hostkey`).
pub fn voms_fake(k: &Kit, out: &str, hostkey: Option<&Path>, extra: &[&str]) -> PathBuf {
    let (cert, key) = k.user();
    voms_fake_for(k, (&cert, &key), out, hostkey, extra)
}

/// voms-proxy-fake for the holder `user` (certificate, key).
pub fn voms_fake_for(k: &Kit, user: (&Path, &Path), out: &str, hostkey: Option<&Path>, extra: &[&str]) -> PathBuf {
    let o = k.x.join(out);
    let d = &k.dir;
    let vc = d.join("voms/vomscert.pem");
    let vk = hostkey.map(Path::to_path_buf).unwrap_or_else(|| d.join("voms/vomskey.pem"));
    let rnd = k.x.join(".rnd");
    if !rnd.exists() {
        std::fs::write(&rnd, b"").unwrap();
    }
    let mut a: Vec<String> = vec![
        "-q",
        "-rfc",
        "-cert",
        p(user.0),
        "-key",
        p(user.1),
        "-certdir",
        &k.var("X509_CERT_DIR"),
        "-hostcert",
        p(&vc),
        "-hostkey",
        p(&vk),
        "-voms",
        "testvo",
        "-uri",
        "localhost:15000",
        "-hours",
        "12",
        "-out",
        p(&o),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    run(Command::new("voms-proxy-fake")
        .args(&a)
        .env("X509_CERT_DIR", k.path("X509_CERT_DIR"))
        .env("X509_VOMS_DIR", k.path("X509_VOMS_DIR"))
        .env("RANDFILE", &rnd));
    o
}

/// An RFC proxy of `issuer` built with the openssl crate, carrying `ac` (a VOMS ACSEQ value).
pub fn rust_proxy(issuer: &X509, issuer_key: &PKey<Private>, ac: Option<&[u8]>) -> X509 {
    rfc_proxy(issuer, issuer_key, ac, 43200, 1024).0
}

/// An RFC 3820 proxy of `issuer` (critical proxyCertInfo, inherit-all, no path length) with a
/// fresh `bits`-bit RSA key, valid from 5 minutes ago until `secs` from now, carrying `ac` (a
/// VOMS ACSEQ value) when given; returns the certificate and its key.
pub fn rfc_proxy(issuer: &X509, issuer_key: &PKey<Private>, ac: Option<&[u8]>, secs: i64, bits: u32) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
    let mut sn = BigNum::new().unwrap();
    sn.rand(31, MsbOption::MAYBE_ZERO, false).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    for e in issuer.subject_name().entries() {
        name.append_entry_by_nid(e.object().nid(), &e.data().to_string().unwrap()).unwrap();
    }
    name.append_entry_by_text("CN", &sn.to_dec_str().unwrap()).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&sn.to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    b.set_not_before(&Asn1Time::from_unix(now - 300).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + secs).unwrap()).unwrap();
    b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build().unwrap()).unwrap();
    let pci = [0x30, 0x0C, 0x30, 0x0A, 0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01];
    let ext = |oid: &str, crit: bool, v: &[u8]| {
        X509Extension::new_from_der(&Asn1Object::from_str(oid).unwrap(), crit, &Asn1OctetString::new_from_bytes(v).unwrap())
            .unwrap()
    };
    b.append_extension(ext("1.3.6.1.5.5.7.1.14", true, &pci)).unwrap();
    if let Some(ac) = ac {
        b.append_extension(ext(voms::OID_VOMS_ACSEQ, false, ac)).unwrap();
    }
    b.sign(issuer_key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

// ------------------------------------------------------------------------------ material

pub struct Material {
    pub rfc2: PathBuf,
    pub legacy2: PathBuf,
    pub draft: PathBuf,
    pub independent: PathBuf,
    pub limited_child: PathBuf,
    pub pl0: PathBuf,
    pub pl0_child: PathBuf,
    pub pl1_child: PathBuf,
    pub pl1_grandchild: PathBuf,
    pub voms_child: PathBuf,
    pub voms_grandchild: PathBuf,
    pub short: PathBuf,
    pub expired: PathBuf,
    pub ca2_proxy: PathBuf,
    pub ca2_dn: String,
    pub impostor_proxy: PathBuf,
    pub mallory_proxy: PathBuf,
    pub revoked_proxy: PathBuf,
    pub revoked_cert: PathBuf,
    pub revoked_key: PathBuf,
    pub revoked_serial: String,
    pub foreign_key: PathBuf,
    pub bad_name: PathBuf,
    pub bad_name2: PathBuf,
    pub mixed: PathBuf,
    pub unlimited_under_limited: PathBuf,
    pub crl_dir: PathBuf,
    pub bad_crl_dir: PathBuf,
    pub old_crl_dir: PathBuf,
    pub no_policy_dir: PathBuf,
    pub voms_expired_ac: PathBuf,
    pub voms_bad_key: PathBuf,
    pub voms_null: PathBuf,
    pub voms_other_vo: PathBuf,
    pub vomsdir_wrong: PathBuf,
    pub vomsdir_empty: PathBuf,
    pub vomsdir_cert: PathBuf,
}

static MATERIAL: OnceLock<Material> = OnceLock::new();

pub fn m() -> &'static Material {
    kit();
    MATERIAL.get().expect("material")
}

fn make_material(k: &Kit) {
    let t0 = std::time::Instant::now();
    let user = (k.path("X509_USER_CERT"), k.path("X509_USER_KEY"));
    let ca = (k.path("GSI_CA_CERT"), k.dir.join("ca/ca.key"));
    let rfc = k.path("GSI_PROXY_RFC");
    let legacy = k.path("GSI_PROXY_LEGACY");
    let rfc_lim = k.path("GSI_PROXY_RFC_LIMITED");
    let vp = k.path("GSI_PROXY_VOMS");
    let udn = k.user_dn();

    // Two independent halves, one per core.
    fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
        h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
    let (g1, g2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| {
            // Proxies made by grid-proxy-init.
            let rfc2 = gpi_from(k, &rfc, "rfc2.pem", &["-rfc"]);
            let legacy2 = gpi_from(k, &legacy, "legacy2.pem", &["-old"]);
            let draft = gpi_user(k, &user.0, &user.1, "draft.pem", &["-draft"]);
            let independent = gpi_user(k, &user.0, &user.1, "independent.pem", &["-rfc", "-independent"]);
            let limited_child = gpi_from(k, &rfc_lim, "limited-child.pem", &["-rfc"]);
            // (grid-proxy-init -path-length 0 means "no constraint": pathlen 0 is made with openssl)
            let pl1 = gpi_user(k, &user.0, &user.1, "pl1.pem", &["-rfc", "-path-length", "1"]);
            let pl1_child = gpi_from(k, &pl1, "pl1-child.pem", &["-rfc"]);
            let pl1_grandchild = gpi_from(k, &pl1_child, "pl1-grandchild.pem", &["-rfc"]);
            let (c, key, _) = issue(
                k,
                "pl0",
                (&user.0, &user.1),
                &format!("{udn}/CN=4343"),
                "proxyCertInfo=critical,language:id-ppl-inheritAll,pathlen:0\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
                None,
            );
            let pl0 = proxy_file(k, "pl0.pem", &c, &key, &[&user.0]);
            let pl0_child = gpi_from(k, &pl0, "pl0-child.pem", &["-rfc"]);
            let voms_child = gpi_from(k, &vp, "voms-child.pem", &["-rfc"]);
            let voms_grandchild = gpi_from(k, &voms_child, "voms-grandchild.pem", &["-rfc"]);
            let short = gpi_user(k, &user.0, &user.1, "short.pem", &["-rfc", "-valid", "0:1"]);

            // VOMS.
            let voms_expired_ac = voms_fake(k, "voms-expired-ac.pem", None, &["-fqan", "/testvo", "-vomslife", "1", "-pastac", "2:00"]);
            let voms_bad_key =
                voms_fake(k, "voms-badkey.pem", Some(&k.path("GSI_HOST_KEY")), &["-fqan", "/testvo"]);
            let voms_null = voms_fake(k, "voms-null.pem", None, &["-fqan", "/testvo/Role=NULL/Capability=NULL", "-fqan", "/testvo/sub/Role=admin/Capability=NULL"]);
            let voms_other_vo = voms_fake(k, "voms-othervo.pem", None, &["-fqan", "/othervo/Role=admin"]);
            let vomsdir_wrong = k.x.join("vomsdir-wrong");
            std::fs::create_dir_all(vomsdir_wrong.join("testvo")).unwrap();
            std::fs::write(
                vomsdir_wrong.join("testvo/voms.localhost.lsc"),
                format!("/O=Grid/OU=GlobusTest/CN=not the voms server\n{}\n", k.var("GSI_CA_DN")),
            )
            .unwrap();
            let vomsdir_empty = k.x.join("vomsdir-empty");
            std::fs::create_dir_all(&vomsdir_empty).unwrap();
            let vomsdir_cert = k.x.join("vomsdir-cert");
            std::fs::create_dir_all(vomsdir_cert.join("testvo")).unwrap();
            std::fs::copy(k.dir.join("voms/vomscert.pem"), vomsdir_cert.join("testvo/voms.pem")).unwrap();

            (rfc2, legacy2, draft, independent, limited_child, pl0, pl0_child, pl1_child, pl1_grandchild, voms_child, voms_grandchild, short, voms_expired_ac, voms_bad_key, voms_null, voms_other_vo, vomsdir_wrong, vomsdir_empty, vomsdir_cert)
        });
        let h2 = s.spawn(|| {
            // Crafted with openssl.
            let (c, key, _) = issue(
                k,
                "expired",
                (&user.0, &user.1),
                &format!("{udn}/CN=4242"),
                PCI_EXT,
                Some(("20200101000000Z", "20200102000000Z")),
            );
            let expired = proxy_file(k, "expired-proxy.pem", &c, &key, &[&user.0]);

            let ca2_dn = "/O=Grid/OU=OtherCA/CN=Other CA".to_string();
            let ca2 = make_ca(k, "ca2", &ca2_dn);
            let (u2, u2k, _) = issue(k, "ca2-user", (&ca2.0, &ca2.1), &udn, USER_EXT, None);
            let ca2_proxy = gpi_user(k, &u2, &u2k, "ca2-proxy.pem", &["-rfc"]);

            let imp = make_ca(k, "impostor-ca", &k.var("GSI_CA_DN"));
            let (iu, iuk, imp_cnf) = issue(k, "impostor-user", (&imp.0, &imp.1), &udn, USER_EXT, None);
            let impostor_proxy = gpi_user(k, &iu, &iuk, "impostor-proxy.pem", &["-rfc"]);

            let (mal, malk, _) = issue(k, "mallory", (&ca.0, &ca.1), "/O=Evil/CN=Mallory", USER_EXT, None);
            let mallory_proxy = gpi_user(k, &mal, &malk, "mallory-proxy.pem", &["-rfc"]);

            let (rev, revk, kit_cnf) =
                issue(k, "revoked", (&ca.0, &ca.1), "/O=Grid/OU=GlobusTest/CN=Revoked User", USER_EXT, None);
            let revoked_proxy = gpi_user(k, &rev, &revk, "revoked-proxy.pem", &["-rfc"]);
            let revoked_serial =
                openssl(&["x509", "-in", p(&rev), "-noout", "-serial"]).trim().trim_start_matches("serial=").to_string();
            let cnf_ca = |cnf: &Path, ca: &(PathBuf, PathBuf), extra: &[&str]| {
                let mut a = vec!["ca", "-batch", "-config", p(cnf), "-cert", p(&ca.0), "-keyfile", p(&ca.1)];
                a.extend_from_slice(extra);
                openssl(&a);
            };
            cnf_ca(&kit_cnf, &ca, &["-revoke", p(&rev)]);
            let crl = k.x.join("kit.crl");
            cnf_ca(&kit_cnf, &ca, &["-gencrl", "-crldays", "30", "-out", p(&crl)]);
            let old_crl = k.x.join("old.crl");
            cnf_ca(
                &kit_cnf,
                &ca,
                &["-gencrl", "-crl_lastupdate", "20200101000000Z", "-crl_nextupdate", "20200102000000Z", "-out", p(&old_crl)],
            );
            let bad_crl = k.x.join("impostor.crl");
            cnf_ca(&imp_cnf, &imp, &["-gencrl", "-crldays", "30", "-out", p(&bad_crl)]);
            let (crl_dir, hashes) = certdir_copy(k, "certs-crl", true);
            add_crl(&crl_dir, &hashes, &crl);
            let (bad_crl_dir, _) = certdir_copy(k, "certs-badcrl", true);
            add_crl(&bad_crl_dir, &hashes, &bad_crl);
            let (old_crl_dir, _) = certdir_copy(k, "certs-oldcrl", true);
            add_crl(&old_crl_dir, &hashes, &old_crl);
            let (no_policy_dir, _) = certdir_copy(k, "certs-nopolicy", false);

            // Signed with someone else's key: a self-signed certificate with the user's name.
            let (fake, fakek) = make_ca(k, "fake-user", &udn);
            let (c, key, _) = issue(k, "foreign", (&fake, &fakek), &format!("{udn}/CN=777"), PCI_EXT, None);
            let foreign_key = proxy_file(k, "foreign-proxy.pem", &c, &key, &[&user.0]);

            let (c, key, _) = issue(k, "badname", (&user.0, &user.1), &format!("{udn}/CN=evil"), NO_PCI_EXT, None);
            let bad_name = proxy_file(k, "badname-proxy.pem", &c, &key, &[&user.0]);
            let (c, key, _) =
                issue(k, "badname2", (&user.0, &user.1), "/O=Grid/OU=GlobusTest/CN=Someone Else/CN=proxy", NO_PCI_EXT, None);
            let bad_name2 = proxy_file(k, "badname2-proxy.pem", &c, &key, &[&user.0]);

            let lsub = subject_of(&legacy);
            let (c, key, _) = issue(k, "mixed", (&legacy, &legacy), &format!("{lsub}/CN=555"), PCI_EXT, None);
            let mixed = proxy_file(k, "mixed-proxy.pem", &c, &key, &[&legacy]);
            let lsub = subject_of(&rfc_lim);
            let (c, key, _) = issue(k, "unlim", (&rfc_lim, &rfc_lim), &format!("{lsub}/CN=556"), PCI_EXT, None);
            let unlimited_under_limited = proxy_file(k, "unlim-proxy.pem", &c, &key, &[&rfc_lim]);

            (
                expired,
                ca2_proxy,
                ca2_dn,
                impostor_proxy,
                mallory_proxy,
                revoked_proxy,
                rev,
                revk,
                revoked_serial,
                crl_dir,
                bad_crl_dir,
                old_crl_dir,
                no_policy_dir,
                foreign_key,
                bad_name,
                bad_name2,
                mixed,
                unlimited_under_limited,
            )
        });
        (join(h1), join(h2))
    });
    let (
        rfc2,
        legacy2,
        draft,
        independent,
        limited_child,
        pl0,
        pl0_child,
        pl1_child,
        pl1_grandchild,
        voms_child,
        voms_grandchild,
        short,
        voms_expired_ac,
        voms_bad_key,
        voms_null,
        voms_other_vo,
        vomsdir_wrong,
        vomsdir_empty,
        vomsdir_cert,
    ) = g1;
    let (
        expired,
        ca2_proxy,
        ca2_dn,
        impostor_proxy,
        mallory_proxy,
        revoked_proxy,
        rev,
        revk,
        revoked_serial,
        crl_dir,
        bad_crl_dir,
        old_crl_dir,
        no_policy_dir,
        foreign_key,
        bad_name,
        bad_name2,
        mixed,
        unlimited_under_limited,
    ) = g2;

    let _ = MATERIAL.set(Material {
        rfc2,
        legacy2,
        draft,
        independent,
        limited_child,
        pl0,
        pl0_child,
        pl1_child,
        pl1_grandchild,
        voms_child,
        voms_grandchild,
        short,
        expired,
        ca2_proxy,
        ca2_dn,
        impostor_proxy,
        mallory_proxy,
        revoked_proxy,
        revoked_cert: rev,
        revoked_key: revk,
        revoked_serial,
        foreign_key,
        bad_name,
        bad_name2,
        mixed,
        unlimited_under_limited,
        crl_dir,
        bad_crl_dir,
        old_crl_dir,
        no_policy_dir,
        voms_expired_ac,
        voms_bad_key,
        voms_null,
        voms_other_vo,
        vomsdir_wrong,
        vomsdir_empty,
        vomsdir_cert,
    });
    eprintln!("gsi test material made in {:?}", t0.elapsed());
}

// ------------------------------------------------------------------------------ helpers

pub fn chain(path: &Path) -> Vec<X509> {
    Credential::load_proxy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).certificates()
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A TLS client presenting the proxy file `proxy` (certificate, key, chain) when given. The
/// server's chain is not judged by OpenSSL: callers validate it with GSI rules after the
/// handshake, as vws does.
pub fn proxy_connector(proxy: Option<&Path>) -> openssl::ssl::SslConnector {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    if let Some(p) = proxy {
        let pem = std::fs::read(p).unwrap();
        let certs = X509::stack_from_pem(&pem).unwrap();
        let key = PKey::private_key_from_pem(&pem).unwrap();
        b.set_certificate(&certs[0]).unwrap();
        b.set_private_key(&key).unwrap();
        for c in &certs[1..] {
            b.add_extra_chain_cert(c.clone()).unwrap();
        }
    }
    b.set_verify(SslVerifyMode::NONE);
    b.build()
}
