//! The GSI library (`vws::security`) against real credentials. Once per test binary the kit
//! script `../shared/peers/gsi-gridftp-up.sh target/gsikit-test 2812` makes a throwaway CA, user,
//! host and VOMS credentials and proxies with the real Globus/VOMS tools; on top of it the
//! set-up makes, under `target/gsikit-test/extra-<pid>/` (removed at exit, never committed),
//! the hostile material: proxies of proxies (grid-proxy-init), an expired proxy, a second CA, an
//! impostor CA with the trusted CA's name, a CRL revoking a user, a user outside the signing
//! policy, badly named legacy proxies, mixed proxy types, path-length violations (`openssl ca`),
//! VOMS proxies with expired/targeted/badly signed ACs (voms-proxy-fake) and a re-signed proxy
//! whose AC signature was tampered with. Then: accepted chains, refused chains each with its
//! reason, VOMS FQANs, the grid-mapfile, and the TLS glue end to end on loopback.

use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::KeyUsage;
use openssl::x509::{X509Extension, X509NameBuilder, X509};
use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use vws::security::certdir::CertDir;
use vws::security::credential::Credential;
use vws::security::proxy::{validate_chain, validate_chain_at, ProxyKind, ProxyPolicy, Validated};
use vws::security::voms::{self, VomsConfig};
use vws::security::{self, tls, GridMap, GsiError, TrustConfig};

const PORT: &str = "2812";
const USER_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment,dataEncipherment\nextendedKeyUsage=clientAuth\n";
const PCI_EXT: &str = "proxyCertInfo=critical,language:id-ppl-inheritAll\nkeyUsage=critical,digitalSignature,keyEncipherment\n";
const NO_PCI_EXT: &str = "keyUsage=critical,digitalSignature,keyEncipherment\n";

// ------------------------------------------------------------------------------ the kit

struct Kit {
    /// `target/gsikit-test`
    dir: PathBuf,
    /// Extra material of this process.
    x: PathBuf,
    vars: HashMap<String, String>,
    certdir: CertDir,
}

impl Kit {
    fn var(&self, k: &str) -> String {
        self.vars.get(k).unwrap_or_else(|| panic!("kit variable {k} missing")).clone()
    }
    fn path(&self, k: &str) -> PathBuf {
        PathBuf::from(self.var(k))
    }
    fn user_dn(&self) -> String {
        self.var("GSI_USER_DN")
    }
    fn voms(&self) -> VomsConfig {
        VomsConfig::new(self.path("X509_VOMS_DIR"))
    }
    fn trust(&self) -> TrustConfig {
        TrustConfig {
            cert_dir: CertDir::load(self.path("X509_CERT_DIR")).unwrap(),
            voms: Some(self.voms()),
            gridmap: None,
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kit_dir() -> PathBuf {
    repo().join("target/gsikit-test")
}

fn extra_dir() -> PathBuf {
    kit_dir().join(format!("extra-{}", std::process::id()))
}

fn kit() -> &'static Kit {
    // A failed set-up fails every test at once instead of being retried by each.
    static KIT: OnceLock<Result<Kit, String>> = OnceLock::new();
    let r = KIT.get_or_init(|| {
        std::panic::catch_unwind(setup).map_err(|e| {
            e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
        })
    });
    match r {
        Ok(k) => k,
        Err(e) => panic!("GSI kit set-up failed: {e}"),
    }
}

extern "C" fn teardown() {
    let _ = Command::new("bash")
        .arg(repo().join("../shared/peers/gsi-gridftp-down.sh"))
        .arg(kit_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(extra_dir());
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

fn setup() -> Kit {
    let dir = kit_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // One set-up at a time across processes (the script is idempotent, not concurrent).
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(repo().join("target/gsikit-test.lock"))
        .unwrap();
    // SAFETY: flock on a file descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let out = Command::new("bash")
        .arg(repo().join("../shared/peers/gsi-gridftp-up.sh"))
        .arg(&dir)
        .arg(PORT)
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
    let x = extra_dir();
    let _ = std::fs::remove_dir_all(&x);
    std::fs::create_dir_all(&x).unwrap();
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(teardown) };
    let certdir = CertDir::load(&vars["X509_CERT_DIR"]).unwrap();
    let kit = Kit { dir, x, vars, certdir };
    make_material(&kit);
    drop(lock);
    kit
}

// ------------------------------------------------------------------------------ tools

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(args: &[&str]) -> String {
    run(Command::new("openssl").args(args))
}

fn p(s: &Path) -> &str {
    s.to_str().unwrap()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// grid-proxy-init with the kit's trust directory.
fn gpi(k: &Kit, args: &[&str]) {
    run(Command::new("grid-proxy-init").arg("-q").args(args).env("X509_CERT_DIR", k.path("X509_CERT_DIR")));
}

fn gpi_from(k: &Kit, from: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let o = k.x.join(out);
    let mut a = vec!["-cert", p(from), "-key", p(from), "-out", p(&o)];
    a.extend_from_slice(extra);
    gpi(k, &a);
    o
}

fn gpi_user(k: &Kit, cert: &Path, key: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let o = k.x.join(out);
    let mut a = vec!["-cert", p(cert), "-key", p(key), "-out", p(&o)];
    a.extend_from_slice(extra);
    gpi(k, &a);
    o
}

/// A self-signed CA.
fn make_ca(k: &Kit, name: &str, dn: &str) -> (PathBuf, PathBuf) {
    let (c, key) = (k.x.join(format!("{name}.pem")), k.x.join(format!("{name}.key")));
    openssl(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", dn,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", p(&key), "-out", p(&c),
    ]);
    chmod(&key, 0o600);
    (c, key)
}

/// Issues a certificate with `openssl ca` from `issuer` (which may be a user or a proxy file):
/// returns (certificate, key, the `openssl ca` config for later -revoke/-gencrl).
fn issue(
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
        "ca", "-batch", "-config", p(&cnf), "-cert", p(issuer.0), "-keyfile", p(issuer.1), "-in", p(&csr),
        "-out", p(&cert), "-extensions", "ext", "-subj", subject, "-preserveDN", "-notext",
    ];
    match dates {
        Some((s, e)) => a.extend_from_slice(&["-startdate", s, "-enddate", e]),
        None => a.extend_from_slice(&["-days", "30"]),
    }
    openssl(&a);
    (cert, key, cnf)
}

/// The PEM certificate blocks of a file.
fn cert_blocks(path: &Path) -> String {
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
fn proxy_file(k: &Kit, out: &str, cert: &Path, key: &Path, chain: &[&Path]) -> PathBuf {
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

fn subject_of(path: &Path) -> String {
    let c = X509::from_pem(&std::fs::read(path).unwrap()).unwrap();
    security::x509::subject(&c)
}

fn certdir_copy(k: &Kit, name: &str, with_policy: bool) -> (PathBuf, Vec<String>) {
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

fn add_crl(dir: &Path, hashes: &[String], crl: &Path) {
    for h in hashes {
        std::fs::copy(crl, dir.join(format!("{h}.r0"))).unwrap();
    }
}

fn voms_fake(k: &Kit, out: &str, hostkey: Option<&Path>, extra: &[&str]) -> PathBuf {
    let o = k.x.join(out);
    let d = &k.dir;
    let (cert, key) = (k.var("X509_USER_CERT"), k.var("X509_USER_KEY"));
    let vc = d.join("voms/vomscert.pem");
    let vk = hostkey.map(Path::to_path_buf).unwrap_or_else(|| d.join("voms/vomskey.pem"));
    let rnd = k.x.join(".rnd");
    if !rnd.exists() {
        std::fs::write(&rnd, b"").unwrap();
    }
    let mut a: Vec<String> = vec![
        "-q", "-rfc", "-cert", &cert, "-key", &key, "-certdir", &k.var("X509_CERT_DIR"), "-hostcert", p(&vc),
        "-hostkey", p(&vk), "-voms", "testvo", "-uri", "localhost:15000", "-hours", "12", "-out", p(&o),
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
fn rust_proxy(issuer: &X509, issuer_key: &PKey<Private>, ac: Option<&[u8]>) -> X509 {
    let key = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
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
    b.set_not_after(&Asn1Time::from_unix(now + 43200).unwrap()).unwrap();
    b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build().unwrap()).unwrap();
    let pci = [0x30, 0x0C, 0x30, 0x0A, 0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01];
    let ext = |oid: &str, crit: bool, v: &[u8]| {
        X509Extension::new_from_der(
            &Asn1Object::from_str(oid).unwrap(),
            crit,
            &Asn1OctetString::new_from_bytes(v).unwrap(),
        )
        .unwrap()
    };
    b.append_extension(ext("1.3.6.1.5.5.7.1.14", true, &pci)).unwrap();
    if let Some(ac) = ac {
        b.append_extension(ext(voms::OID_VOMS_ACSEQ, false, ac)).unwrap();
    }
    b.sign(issuer_key, MessageDigest::sha256()).unwrap();
    b.build()
}

// ------------------------------------------------------------------------------ material

struct Material {
    rfc2: PathBuf,
    legacy2: PathBuf,
    draft: PathBuf,
    independent: PathBuf,
    limited_child: PathBuf,
    pl0: PathBuf,
    pl0_child: PathBuf,
    pl1_child: PathBuf,
    pl1_grandchild: PathBuf,
    voms_child: PathBuf,
    voms_grandchild: PathBuf,
    short: PathBuf,
    expired: PathBuf,
    ca2_proxy: PathBuf,
    ca2_dn: String,
    impostor_proxy: PathBuf,
    mallory_proxy: PathBuf,
    revoked_proxy: PathBuf,
    revoked_cert: PathBuf,
    revoked_key: PathBuf,
    revoked_serial: String,
    foreign_key: PathBuf,
    bad_name: PathBuf,
    bad_name2: PathBuf,
    mixed: PathBuf,
    unlimited_under_limited: PathBuf,
    crl_dir: PathBuf,
    bad_crl_dir: PathBuf,
    old_crl_dir: PathBuf,
    no_policy_dir: PathBuf,
    voms_expired_ac: PathBuf,
    voms_bad_key: PathBuf,
    voms_null: PathBuf,
    voms_other_vo: PathBuf,
    vomsdir_wrong: PathBuf,
    vomsdir_empty: PathBuf,
    vomsdir_cert: PathBuf,
}

static MATERIAL: OnceLock<Material> = OnceLock::new();

fn m() -> &'static Material {
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
            let (c, key, _) =
                issue(k, "expired", (&user.0, &user.1), &format!("{udn}/CN=4242"), PCI_EXT, Some(("20200101000000Z", "20200102000000Z")));
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

            let (rev, revk, kit_cnf) = issue(k, "revoked", (&ca.0, &ca.1), "/O=Grid/OU=GlobusTest/CN=Revoked User", USER_EXT, None);
            let revoked_proxy = gpi_user(k, &rev, &revk, "revoked-proxy.pem", &["-rfc"]);
            let revoked_serial = openssl(&["x509", "-in", p(&rev), "-noout", "-serial"]).trim().trim_start_matches("serial=").to_string();
            let cnf_ca = |cnf: &Path, ca: &(PathBuf, PathBuf), extra: &[&str]| {
                let mut a = vec!["ca", "-batch", "-config", p(cnf), "-cert", p(&ca.0), "-keyfile", p(&ca.1)];
                a.extend_from_slice(extra);
                openssl(&a);
            };
            cnf_ca(&kit_cnf, &ca, &["-revoke", p(&rev)]);
            let crl = k.x.join("kit.crl");
            cnf_ca(&kit_cnf, &ca, &["-gencrl", "-crldays", "30", "-out", p(&crl)]);
            let old_crl = k.x.join("old.crl");
            cnf_ca(&kit_cnf, &ca, &["-gencrl", "-crl_lastupdate", "20200101000000Z", "-crl_nextupdate", "20200102000000Z", "-out", p(&old_crl)]);
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

            (expired, ca2_proxy, ca2_dn, impostor_proxy, mallory_proxy, revoked_proxy, rev, revk, revoked_serial, crl_dir, bad_crl_dir, old_crl_dir, no_policy_dir, foreign_key, bad_name, bad_name2, mixed, unlimited_under_limited)
        });
        (join(h1), join(h2))
    });
    let (rfc2, legacy2, draft, independent, limited_child, pl0, pl0_child, pl1_child, pl1_grandchild, voms_child, voms_grandchild, short, voms_expired_ac, voms_bad_key, voms_null, voms_other_vo, vomsdir_wrong, vomsdir_empty, vomsdir_cert) = g1;
    let (expired, ca2_proxy, ca2_dn, impostor_proxy, mallory_proxy, revoked_proxy, rev, revk, revoked_serial, crl_dir, bad_crl_dir, old_crl_dir, no_policy_dir, foreign_key, bad_name, bad_name2, mixed, unlimited_under_limited) = g2;

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

fn chain(path: &Path) -> Vec<X509> {
    Credential::load_proxy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).certificates()
}

fn accept(path: &Path) -> Validated {
    validate_chain(&chain(path), &kit().certdir).unwrap_or_else(|e| panic!("{} refused: {e}", path.display()))
}

fn refuse(path: &Path) -> GsiError {
    refuse_in(path, &kit().certdir)
}

fn refuse_in(path: &Path, dir: &CertDir) -> GsiError {
    match validate_chain(&chain(path), dir) {
        Ok(v) => panic!("{} was accepted: {v:?}", path.display()),
        Err(e) => e,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn trust_with_vomsdir(vomsdir: &Path) -> TrustConfig {
    TrustConfig { voms: Some(VomsConfig::new(vomsdir)), ..kit().trust() }
}

// ------------------------------------------------------------------------------ credentials

#[test]
fn loads_credentials_from_the_kit() {
    let k = kit();
    // PKCS#8 proxy, chain = proxy + user certificate
    let c = Credential::load_proxy(k.path("GSI_PROXY_RFC")).unwrap();
    assert_eq!(c.chain.len(), 1);
    assert_eq!(c.identity_dn(), k.user_dn());
    assert!(c.subject_dn().starts_with(&format!("{}/CN=", k.user_dn())));
    assert_eq!(c.certificates().len(), 2);
    assert_eq!(security::x509::subject(&c.certificates()[1]), k.user_dn());
    // PKCS#1 key (voms-proxy-fake)
    assert!(std::fs::read_to_string(k.path("GSI_PROXY_VOMS")).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    let v = Credential::load_proxy(k.path("GSI_PROXY_VOMS")).unwrap();
    assert_eq!(v.identity_dn(), k.user_dn());
    // legacy proxy of a legacy proxy: identity is still the user
    assert_eq!(Credential::load_proxy(&m().legacy2).unwrap().identity_dn(), k.user_dn());
    // user certificate + 0400 key; host credential
    let u = Credential::load(k.path("X509_USER_CERT"), k.path("X509_USER_KEY")).unwrap();
    assert_eq!(u.identity_dn(), k.user_dn());
    assert!(u.chain.is_empty());
    let h = Credential::load(k.path("GSI_HOST_CERT"), k.path("GSI_HOST_KEY")).unwrap();
    assert_eq!(h.subject_dn(), k.var("GSI_HOST_DN"));
    // a key that does not match
    let e = Credential::load(k.path("X509_USER_CERT"), k.path("GSI_HOST_KEY")).unwrap_err();
    assert!(matches!(e, GsiError::BadCredential { .. }) && e.to_string().contains("does not match"), "{e}");
    // permissions wider than 0600, on a proxy file and on a key file
    let loose = k.x.join("loose-proxy.pem");
    std::fs::copy(k.path("GSI_PROXY_RFC"), &loose).unwrap();
    chmod(&loose, 0o644);
    let e = Credential::load_proxy(&loose).unwrap_err();
    assert!(matches!(e, GsiError::KeyPermissions { mode: 0o644, .. }), "{e}");
    assert!(e.to_string().contains("loose-proxy.pem") && e.to_string().contains("too permissive"), "{e}");
    let loose_key = k.x.join("loose-key.pem");
    std::fs::copy(k.path("X509_USER_KEY"), &loose_key).unwrap();
    chmod(&loose_key, 0o640);
    let e = Credential::load(k.path("X509_USER_CERT"), &loose_key).unwrap_err();
    assert!(matches!(e, GsiError::KeyPermissions { .. }) && e.to_string().contains("loose-key.pem"), "{e}");
}

#[test]
fn searches_the_standard_places() {
    let k = kit();
    let env = |pairs: Vec<(&'static str, OsString)>| {
        let map: HashMap<&str, OsString> = pairs.into_iter().collect();
        move |key: &str| map.get(key).cloned()
    };
    let e = env(vec![("X509_USER_PROXY", k.path("GSI_PROXY_LEGACY").into())]);
    let c = Credential::find_user_in(&e).unwrap();
    assert_eq!(c.cert_path, k.path("GSI_PROXY_LEGACY"));
    assert_eq!(c.identity_dn(), k.user_dn());
    // a named proxy that is missing is an error (no fall-back)
    let e = env(vec![
        ("X509_USER_PROXY", k.x.join("nope.pem").into()),
        ("X509_USER_CERT", k.path("X509_USER_CERT").into()),
        ("X509_USER_KEY", k.path("X509_USER_KEY").into()),
    ]);
    assert!(matches!(Credential::find_user_in(&e).unwrap_err(), GsiError::Io { .. }));
    // an expired proxy is refused
    let e = env(vec![("X509_USER_PROXY", m().expired.clone().into())]);
    assert!(matches!(Credential::find_user_in(&e).unwrap_err(), GsiError::Expired { .. }));
    // X509_USER_CERT/KEY (the user's own certificate)
    let e = env(vec![
        ("X509_USER_CERT", k.path("X509_USER_CERT").into()),
        ("X509_USER_KEY", k.path("X509_USER_KEY").into()),
    ]);
    if !Path::new(&format!("/tmp/x509up_u{}", security::credential::current_uid())).exists() {
        assert_eq!(Credential::find_user_in(&e).unwrap().subject_dn(), k.user_dn());
        // ~/.globus/usercert.pem
        let home = k.x.join("home");
        std::fs::create_dir_all(home.join(".globus")).unwrap();
        std::fs::copy(k.path("X509_USER_CERT"), home.join(".globus/usercert.pem")).unwrap();
        std::fs::copy(k.path("X509_USER_KEY"), home.join(".globus/userkey.pem")).unwrap();
        let e = env(vec![("HOME", home.clone().into())]);
        assert_eq!(Credential::find_user_in(&e).unwrap().subject_dn(), k.user_dn());
        let e = env(vec![("HOME", k.x.join("nohome").into())]);
        assert!(matches!(Credential::find_user_in(&e).unwrap_err(), GsiError::NoCredential { .. }));
    }
    // the service credential from X509_USER_CERT/KEY
    let e = env(vec![
        ("X509_USER_CERT", k.path("GSI_HOST_CERT").into()),
        ("X509_USER_KEY", k.path("GSI_HOST_KEY").into()),
    ]);
    assert_eq!(Credential::find_host_in(&e).unwrap().subject_dn(), k.var("GSI_HOST_DN"));
}

#[test]
fn reads_the_trust_directory() {
    let k = kit();
    // both hash names hold the same CA: one trusted CA, known under two hashes, with its policy
    assert_eq!(k.certdir.cas().len(), 1);
    let ca = &k.certdir.cas()[0];
    assert_eq!(ca.dn, k.var("GSI_CA_DN"));
    assert_eq!(ca.hashes.len(), 2);
    assert!(ca.policies.iter().all(|(_, p)| p.is_ok()));
    let d = CertDir::load(&m().crl_dir).unwrap();
    assert_eq!(d.cas()[0].crls.len(), 2);
    assert!(matches!(CertDir::load(k.x.join("no-such-dir")).unwrap_err(), GsiError::Io { .. }));
}

// ------------------------------------------------------------------------------ accepted

#[test]
fn accepts_an_rfc_proxy() {
    let k = kit();
    let v = accept(&k.path("GSI_PROXY_RFC"));
    assert_eq!(v.identity_dn, k.user_dn());
    assert_eq!(v.proxy_depth, 1);
    assert!(!v.limited && !v.independent);
    assert_eq!(v.proxies[0].kind, ProxyKind::Rfc);
    assert_eq!(v.proxies[0].policy, ProxyPolicy::Impersonation);
    assert_eq!(v.ca_dn, k.var("GSI_CA_DN"));
    let leaf_end = security::x509::asn1_to_unix(v.leaf().not_after());
    assert_eq!(v.not_after.unix_timestamp(), leaf_end);
    assert_eq!(security::x509::subject(v.eec()), k.user_dn());
}

#[test]
fn accepts_a_legacy_proxy() {
    let k = kit();
    let v = accept(&k.path("GSI_PROXY_LEGACY"));
    assert_eq!(v.identity_dn, k.user_dn());
    assert_eq!(v.proxy_depth, 1);
    assert_eq!(v.proxies[0].kind, ProxyKind::Legacy);
    assert!(v.proxies[0].subject.ends_with("/CN=proxy"));
    assert!(!v.limited);
}

#[test]
fn accepts_proxies_of_proxies() {
    let k = kit();
    let v = accept(&m().rfc2);
    assert_eq!((v.identity_dn.as_str(), v.proxy_depth), (k.user_dn().as_str(), 2));
    assert!(v.proxies.iter().all(|p| p.kind == ProxyKind::Rfc));
    let v = accept(&m().legacy2);
    assert_eq!((v.identity_dn.as_str(), v.proxy_depth), (k.user_dn().as_str(), 2));
    assert!(v.proxies.iter().all(|p| p.kind == ProxyKind::Legacy));
    assert!(v.proxies[0].subject.ends_with("/CN=proxy/CN=proxy"));
    // a proxy of the VOMS proxy (its path length 1 allows exactly one more)
    let v = accept(&m().voms_child);
    assert_eq!(v.proxy_depth, 2);
    assert_eq!(v.proxies[1].path_len, Some(1));
}

#[test]
fn accepts_draft_and_independent_proxies() {
    let k = kit();
    let v = accept(&m().draft);
    assert_eq!(v.identity_dn, k.user_dn());
    assert_eq!(v.proxies[0].kind, ProxyKind::Draft);
    let v = accept(&m().independent);
    assert_eq!(v.identity_dn, k.user_dn());
    assert!(v.independent && !v.limited);
    assert_eq!(v.proxies[0].policy, ProxyPolicy::Independent);
}

#[test]
fn accepts_limited_proxies_flagged_limited() {
    let k = kit();
    for path in [k.path("GSI_PROXY_RFC_LIMITED"), k.path("GSI_PROXY_LEGACY_LIMITED"), m().limited_child.clone()] {
        let v = accept(&path);
        assert_eq!(v.identity_dn, k.user_dn(), "{}", path.display());
        assert!(v.limited, "{} not limited", path.display());
        assert!(v.proxies.iter().all(|p| p.policy == ProxyPolicy::Limited), "{:?}", v.proxies);
        let c = security::authenticate(&chain(&path), &k.trust()).unwrap();
        assert!(c.limited);
        assert_eq!(c.dn.as_deref(), Some(k.user_dn().as_str()));
    }
    assert!(accept(&k.path("GSI_PROXY_LEGACY_LIMITED")).proxies[0].subject.ends_with("/CN=limited proxy"));
}

#[test]
fn accepts_end_entity_certificates_alone() {
    let k = kit();
    let user = X509::from_pem(&std::fs::read(k.path("X509_USER_CERT")).unwrap()).unwrap();
    let v = validate_chain(&[user], &k.certdir).unwrap();
    assert_eq!((v.identity_dn.clone(), v.proxy_depth, v.limited), (k.user_dn(), 0, false));
    let host = X509::from_pem(&std::fs::read(k.path("GSI_HOST_CERT")).unwrap()).unwrap();
    let v = validate_chain(std::slice::from_ref(&host), &k.certdir).unwrap();
    assert_eq!(v.identity_dn, k.var("GSI_HOST_DN"));
    tls::check_host(&host, "localhost").unwrap();
    tls::check_host(&host, "127.0.0.1").unwrap();
    assert!(tls::check_host(&host, "example.org").is_err());
    // the CA certificate at the end of a presented chain is allowed (and ignored)
    let ca = X509::from_pem(&std::fs::read(k.path("GSI_CA_CERT")).unwrap()).unwrap();
    let mut c = chain(&k.path("GSI_PROXY_RFC"));
    c.push(ca);
    assert_eq!(validate_chain(&c, &k.certdir).unwrap().proxy_depth, 1);
}

// ------------------------------------------------------------------------------ refused

#[test]
fn refuses_an_empty_chain() {
    assert!(matches!(validate_chain(&[], &kit().certdir), Err(GsiError::EmptyChain)));
    assert!(matches!(security::authenticate(&[], &kit().trust()), Err(GsiError::EmptyChain)));
}

#[test]
fn refuses_an_expired_proxy() {
    let e = refuse(&m().expired);
    match &e {
        GsiError::Expired { subject, not_after } => {
            assert!(subject.ends_with("/CN=4242"), "{e}");
            assert_eq!(not_after, "2020-01-02T00:00:00Z");
        }
        _ => panic!("wrong reason: {e}"),
    }
    assert!(e.to_string().contains("expired") && e.to_string().contains("2020-01-02"), "{e}");
    // a one-minute proxy (grid-proxy-init -valid 0:1), two minutes later
    let c = chain(&m().short);
    assert!(validate_chain_at(&c, &kit().certdir, now()).is_ok());
    let e = validate_chain_at(&c, &kit().certdir, now() + 120).unwrap_err();
    assert!(matches!(e, GsiError::Expired { .. }), "{e}");
}

#[test]
fn refuses_an_untrusted_ca() {
    let e = refuse(&m().ca2_proxy);
    match &e {
        GsiError::UntrustedIssuer { subject, issuer } => {
            assert_eq!(subject, &kit().user_dn());
            assert_eq!(issuer, &m().ca2_dn);
        }
        _ => panic!("wrong reason: {e}"),
    }
    assert!(e.to_string().contains("/O=Grid/OU=OtherCA/CN=Other CA"), "{e}");
    // a CA that only borrows the trusted CA's name
    let e = refuse(&m().impostor_proxy);
    assert!(matches!(&e, GsiError::BadSignature { subject, .. } if *subject == kit().user_dn()), "{e}");
}

#[test]
fn refuses_a_revoked_user_certificate() {
    let dir = CertDir::load(&m().crl_dir).unwrap();
    // the revoked user's proxy is fine without the CRL…
    assert_eq!(accept(&m().revoked_proxy).identity_dn, "/O=Grid/OU=GlobusTest/CN=Revoked User");
    // …and refused with it, naming the serial
    let e = refuse_in(&m().revoked_proxy, &dir);
    match &e {
        GsiError::Revoked { subject, serial, issuer } => {
            assert_eq!(subject, "/O=Grid/OU=GlobusTest/CN=Revoked User");
            assert_eq!(serial.trim_start_matches('0'), m().revoked_serial.trim_start_matches('0'));
            assert_eq!(issuer, &kit().var("GSI_CA_DN"));
        }
        _ => panic!("wrong reason: {e}"),
    }
    // others still pass the valid CRL
    assert!(validate_chain(&chain(&kit().path("GSI_PROXY_RFC")), &dir).is_ok());
    // a CRL that is not signed by the CA, or expired, refuses everything from that CA
    for d in [&m().bad_crl_dir, &m().old_crl_dir] {
        let e = refuse_in(&kit().path("GSI_PROXY_RFC"), &CertDir::load(d).unwrap());
        assert!(matches!(e, GsiError::InvalidCrl { .. }), "{e}");
    }
    let e = refuse_in(&kit().path("GSI_PROXY_RFC"), &CertDir::load(&m().old_crl_dir).unwrap());
    assert!(e.to_string().contains("expired"), "{e}");
}

#[test]
fn refuses_a_proxy_signed_by_someone_elses_key() {
    let e = refuse(&m().foreign_key);
    match &e {
        GsiError::BadSignature { subject, issuer } => {
            assert!(subject.ends_with("/CN=777"), "{e}");
            assert_eq!(issuer, &kit().user_dn());
        }
        _ => panic!("wrong reason: {e}"),
    }
}

#[test]
fn refuses_path_length_violations() {
    let e = refuse(&m().pl0_child);
    match &e {
        GsiError::PathLengthExceeded { limit, found, .. } => assert_eq!((*limit, *found), (0, 1)),
        _ => panic!("wrong reason: {e}"),
    }
    // pathlen 0 itself is fine; pathlen 1 allows one proxy below, not two
    assert_eq!(accept(&m().pl0).proxies[0].path_len, Some(0));
    assert_eq!(accept(&m().pl1_child).proxy_depth, 2);
    let e = refuse(&m().pl1_grandchild);
    assert!(matches!(e, GsiError::PathLengthExceeded { limit: 1, found: 2, .. }), "{e}");
    assert!(e.to_string().contains("path length"), "{e}");
    // the VOMS proxy allows one proxy below it, not two
    let e = refuse(&m().voms_grandchild);
    assert!(matches!(e, GsiError::PathLengthExceeded { limit: 1, found: 2, .. }), "{e}");
}

#[test]
fn refuses_signing_policy_violations() {
    let e = refuse(&m().mallory_proxy);
    match &e {
        GsiError::SigningPolicy { ca, subject, .. } => {
            assert_eq!(ca, &kit().var("GSI_CA_DN"));
            assert_eq!(subject, "/O=Evil/CN=Mallory");
        }
        _ => panic!("wrong reason: {e}"),
    }
    // no signing policy file at all: the CA signs nothing
    let e = refuse_in(&kit().path("GSI_PROXY_RFC"), &CertDir::load(&m().no_policy_dir).unwrap());
    assert!(matches!(e, GsiError::SigningPolicy { .. }) && e.to_string().contains("signing_policy"), "{e}");
}

#[test]
fn refuses_badly_named_proxies() {
    for path in [&m().bad_name, &m().bad_name2] {
        let e = refuse(path);
        assert!(matches!(e, GsiError::NotAProxyName { .. }), "{}: {e}", path.display());
    }
    assert!(refuse(&m().bad_name).to_string().contains("\"evil\""));
}

#[test]
fn refuses_mixed_and_escalating_proxies() {
    let e = refuse(&m().mixed);
    assert!(matches!(e, GsiError::BadProxy { .. }) && e.to_string().contains("mixing"), "{e}");
    let e = refuse(&m().unlimited_under_limited);
    assert!(matches!(e, GsiError::BadProxy { .. }) && e.to_string().contains("limited"), "{e}");
}

#[test]
fn refuses_incomplete_or_padded_chains() {
    let k = kit();
    // a proxy without the user certificate
    let c = chain(&k.path("GSI_PROXY_RFC"));
    let e = validate_chain(&c[..1], &k.certdir).unwrap_err();
    assert!(matches!(e, GsiError::BadProxy { .. }), "{e}");
    let c = chain(&k.path("GSI_PROXY_LEGACY"));
    let e = validate_chain(&c[..1], &k.certdir).unwrap_err();
    assert!(matches!(e, GsiError::BadProxy { .. }) && e.to_string().contains("without the certificate"), "{e}");
    // a non-CA certificate after the end-entity certificate
    let mut c = chain(&k.path("GSI_PROXY_RFC"));
    c.push(X509::from_pem(&std::fs::read(k.path("GSI_HOST_CERT")).unwrap()).unwrap());
    let e = validate_chain(&c, &k.certdir).unwrap_err();
    assert!(matches!(&e, GsiError::Rejected { subject, .. } if *subject == k.var("GSI_HOST_DN")), "{e}");
    // the order matters: user certificate first is not a proxy chain
    let mut c = chain(&k.path("GSI_PROXY_RFC"));
    c.reverse();
    let e = validate_chain(&c, &k.certdir).unwrap_err();
    assert!(matches!(e, GsiError::Rejected { .. }) && e.to_string().contains("follows the end-entity"), "{e}");
}

// ------------------------------------------------------------------------------ VOMS

#[test]
fn voms_proxy_yields_its_fqans() {
    let k = kit();
    let c = security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &k.trust()).unwrap();
    assert_eq!(c.dn.as_deref(), Some(k.user_dn().as_str()));
    assert_eq!(c.fqans, vec![k.var("GSI_VOMS_FQAN"), "/testvo".to_string()]);
    assert_eq!(c.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
    assert!(!c.limited);
    // the details
    let v = accept(&k.path("GSI_PROXY_VOMS"));
    let acs = voms::find_acs(&v).unwrap();
    assert_eq!(acs.len(), 1);
    assert_eq!((acs[0].vo.as_str(), acs[0].uri.as_str()), ("testvo", "localhost:15000"));
    assert_eq!(acs[0].issuer_dn, "/O=Grid/OU=GlobusTest/CN=voms.localhost");
    assert_eq!(acs[0].certs.len(), 1);
    let attrs = voms::attributes(&v, &k.certdir, &k.voms(), None);
    assert_eq!(attrs[0].vo, "testvo");
    // a proxy of the VOMS proxy keeps them
    let c = security::authenticate(&chain(&m().voms_child), &k.trust()).unwrap();
    assert_eq!(c.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
    // with the server certificate itself in the vomsdir instead of an .lsc file
    let c = security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &trust_with_vomsdir(&m().vomsdir_cert)).unwrap();
    assert_eq!(c.fqans.len(), 2);
    // NULL roles and capabilities are normalised away
    let c = security::authenticate(&chain(&m().voms_null), &k.trust()).unwrap();
    assert_eq!(c.fqans, vec!["/testvo".to_string(), "/testvo/sub/Role=admin".to_string()]);
    // without VOMS configured there are no FQANs
    let t = TrustConfig { voms: None, ..k.trust() };
    assert!(security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &t).unwrap().fqans.is_empty());
}

/// Accepted as the user, but without FQANs.
fn identity_without_fqans(c: &[X509], t: &TrustConfig, dn: &str) {
    let caller = security::authenticate(c, t).unwrap_or_else(|e| panic!("identity refused: {e}"));
    assert_eq!(caller.dn.as_deref(), Some(dn));
    assert!(caller.fqans.is_empty(), "untrusted AC yielded {:?}", caller.fqans);
}

#[test]
fn a_tampered_ac_is_ignored() {
    let k = kit();
    let vc = chain(&k.path("GSI_PROXY_VOMS"));
    let exts = security::x509::extensions(&vc[0]).unwrap();
    let ac = security::x509::find_ext(&exts, voms::OID_VOMS_ACSEQ).unwrap().value.clone();
    let user = X509::from_pem(&std::fs::read(k.path("X509_USER_CERT")).unwrap()).unwrap();
    let key = PKey::private_key_from_pem(&std::fs::read(k.path("X509_USER_KEY")).unwrap()).unwrap();
    // control: the same AC in a proxy re-made by this test is trusted
    let control = rust_proxy(&user, &key, Some(&ac));
    let c = security::authenticate(&[control, user.clone()], &k.trust()).unwrap();
    assert_eq!(c.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
    // the AC's signature is the last bytes of the value: flip one
    let mut bad = ac.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    let tampered = rust_proxy(&user, &key, Some(&bad));
    identity_without_fqans(&[tampered.clone(), user.clone()], &k.trust(), &k.user_dn());
    let v = validate_chain(&[tampered, user], &k.certdir).unwrap();
    let why = voms::verify_ac(&voms::find_acs(&v).unwrap()[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("signature"), "{why}");
    // signed with a key that is not the VOMS server's
    identity_without_fqans(&chain(&m().voms_bad_key), &k.trust(), &k.user_dn());
}

#[test]
fn an_ac_for_someone_else_is_ignored() {
    let k = kit();
    let vc = chain(&k.path("GSI_PROXY_VOMS"));
    let exts = security::x509::extensions(&vc[0]).unwrap();
    let ac = security::x509::find_ext(&exts, voms::OID_VOMS_ACSEQ).unwrap().value.clone();
    let rev = X509::from_pem(&std::fs::read(&m().revoked_cert).unwrap()).unwrap();
    let key = PKey::private_key_from_pem(&std::fs::read(&m().revoked_key).unwrap()).unwrap();
    let p = rust_proxy(&rev, &key, Some(&ac));
    identity_without_fqans(&[p.clone(), rev.clone()], &k.trust(), "/O=Grid/OU=GlobusTest/CN=Revoked User");
    let v = validate_chain(&[p, rev], &k.certdir).unwrap();
    let why = voms::verify_ac(&voms::find_acs(&v).unwrap()[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("granted to serial"), "{why}");
}

#[test]
fn an_ac_without_vomsdir_trust_is_ignored() {
    let k = kit();
    let c = chain(&k.path("GSI_PROXY_VOMS"));
    identity_without_fqans(&c, &trust_with_vomsdir(&m().vomsdir_wrong), &k.user_dn());
    identity_without_fqans(&c, &trust_with_vomsdir(&m().vomsdir_empty), &k.user_dn());
    // the VOMS server certificate must also chain to a trusted CA with a signing policy
    let t = TrustConfig { cert_dir: CertDir::load(&m().no_policy_dir).unwrap(), ..k.trust() };
    assert!(security::authenticate(&c, &t).is_err(), "the user is not trusted there either");
}

#[test]
fn expired_and_foreign_vo_acs_are_ignored() {
    let k = kit();
    // voms-proxy-fake -vomslife 1 -pastac 2:00: the AC ended an hour ago, the proxy is fresh
    identity_without_fqans(&chain(&m().voms_expired_ac), &k.trust(), &k.user_dn());
    let v = accept(&m().voms_expired_ac);
    let acs = voms::find_acs(&v).unwrap();
    let why = voms::verify_ac(&acs[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("expired"), "{why}");
    assert_eq!(acs[0].not_after - acs[0].not_before, 3600);
    assert!(acs[0].not_after < now() - 3000);
    // (targeted ACs are not exercised: voms-proxy-fake 2.1.0~rc3 crashes with -target)
    // FQANs outside the AC's VO
    identity_without_fqans(&chain(&m().voms_other_vo), &k.trust(), &k.user_dn());
    let v = accept(&m().voms_other_vo);
    let why = voms::verify_ac(&voms::find_acs(&v).unwrap()[0], &v, &k.certdir, &k.voms(), now(), None).unwrap_err();
    assert!(why.contains("outside VO testvo"), "{why}");
    // the proxy's own lifetime still bounds everything
    let c = chain(&k.path("GSI_PROXY_VOMS"));
    assert_eq!(security::authenticate_at(&c, &k.trust(), now()).unwrap().fqans.len(), 2);
    let e = security::authenticate_at(&c, &k.trust(), now() + 8 * 86400).unwrap_err();
    assert!(matches!(e, GsiError::Expired { .. }), "{e}");
}

// ------------------------------------------------------------------------------ grid-mapfile

#[test]
fn maps_through_the_grid_mapfile() {
    let k = kit();
    let t = TrustConfig { gridmap: Some(GridMap::load(k.path("GRIDMAP")).unwrap()), ..k.trust() };
    let c = security::authenticate(&chain(&k.path("GSI_PROXY_VOMS")), &t).unwrap();
    assert_eq!(c.account.as_deref(), Some(k.var("GSI_LOCAL_USER").as_str()));
    assert_eq!(c.as_owner().account, c.account);
    let e = security::authenticate(&chain(&m().revoked_proxy), &t).unwrap_err();
    assert!(matches!(&e, GsiError::NotInGridmap { dn, .. } if dn == "/O=Grid/OU=GlobusTest/CN=Revoked User"), "{e}");
}

// ------------------------------------------------------------------------------ TLS

struct Handshake {
    /// What the server concluded about the client.
    server_view: Result<Validated, GsiError>,
    /// The server as seen by the client.
    client_view: Result<Validated, GsiError>,
    caller: Result<security::Caller, GsiError>,
}

fn handshake(client: Option<&Credential>) -> Handshake {
    let k = kit();
    let host = Credential::load(k.path("GSI_HOST_CERT"), k.path("GSI_HOST_KEY")).unwrap();
    let acceptor = tls::acceptor(&host).unwrap().build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let stream = acceptor.accept(s).unwrap_or_else(|e| panic!("server handshake: {e}"));
        let trust = kit().trust();
        (tls::verify_peer(stream.ssl(), &kit().certdir), security::authenticate_peer(stream.ssl(), &trust), stream)
    });
    let connector = tls::connector(client).unwrap().build();
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let stream = connector.configure().unwrap().verify_hostname(false).connect("localhost", s).unwrap();
    let client_view = tls::verify_peer(stream.ssl(), &k.certdir);
    let (server_view, caller, _server_stream) = server.join().unwrap();
    drop(stream);
    Handshake { server_view, client_view, caller }
}

#[test]
fn tls_peers_are_validated_end_to_end() {
    let k = kit();
    let cases: Vec<(PathBuf, usize, bool)> = vec![
        (k.path("GSI_PROXY_RFC"), 1, false),
        (k.path("GSI_PROXY_LEGACY"), 1, false),
        (k.path("GSI_PROXY_RFC_LIMITED"), 1, true),
        (k.path("GSI_PROXY_LEGACY_LIMITED"), 1, true),
        (k.path("GSI_PROXY_VOMS"), 1, false),
        (m().rfc2.clone(), 2, false),
        (m().legacy2.clone(), 2, false),
        (m().draft.clone(), 1, false),
    ];
    for (path, depth, limited) in cases {
        let cred = Credential::load_proxy(&path).unwrap();
        let h = handshake(Some(&cred));
        let v = h.server_view.unwrap_or_else(|e| panic!("{}: refused over TLS: {e}", path.display()));
        assert_eq!(v.identity_dn, k.user_dn(), "{}", path.display());
        assert_eq!((v.proxy_depth, v.limited), (depth, limited), "{}", path.display());
        let caller = h.caller.unwrap();
        assert_eq!(caller.dn.as_deref(), Some(k.user_dn().as_str()));
        if path == k.path("GSI_PROXY_VOMS") {
            assert_eq!(caller.fqans, vec!["/testvo/Role=admin".to_string(), "/testvo".to_string()]);
        }
        // and the client sees the host
        let sv = h.client_view.unwrap();
        assert_eq!((sv.identity_dn.as_str(), sv.proxy_depth), (k.var("GSI_HOST_DN").as_str(), 0));
        tls::check_host(sv.eec(), "localhost").unwrap();
    }
    // the user's own certificate, no proxy
    let user = Credential::load(k.path("X509_USER_CERT"), k.path("X509_USER_KEY")).unwrap();
    assert_eq!(handshake(Some(&user)).server_view.unwrap().proxy_depth, 0);
}

#[test]
fn tls_refuses_anonymous_and_untrusted_clients() {
    let h = handshake(None);
    assert!(matches!(h.server_view, Err(GsiError::NoPeerCertificate)), "{:?}", h.server_view.map(|v| v.identity_dn));
    assert!(matches!(h.caller, Err(GsiError::NoPeerCertificate)));
    for (path, kind) in [
        (&m().ca2_proxy, "untrusted_issuer"),
        (&m().foreign_key, "bad_signature"),
        (&m().mallory_proxy, "signing_policy"),
        (&m().pl0_child, "path_length"),
    ] {
        let cred = Credential::load_proxy(path).unwrap();
        let h = handshake(Some(&cred));
        let e = h.server_view.err().unwrap_or_else(|| panic!("{} accepted over TLS", path.display()));
        assert_eq!(e.kind(), kind, "{}: {e}", path.display());
        assert!(h.caller.is_err());
    }
}
