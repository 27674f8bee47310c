//! Test harness shared by the integration tests: start a real `vwsd` on a free loopback port
//! with its own store, talk raw HTTP/1.1 to it, read its SQLite store. With `Conf::security`
//! set it also listens with GSI transport (`https_addr`); `gsi` holds the GSI credential kit.
#![allow(dead_code)]

pub mod gsi;
pub mod guest;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use vws::soap::ns::{COUNTER, NIMBUS, SOAPENV, VWS, WSA, WSBF, WSNT, WSRL, WSRL_ACTION, WSRP, WSRP_ACTION};

/// Path of the shared inputs: `$VWS_SHARED`, else `../shared` from the repository root, else
/// `/work/shared` (for clones made elsewhere, e.g. by CI).
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VWS_SHARED") {
        return PathBuf::from(d);
    }
    let sibling = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if sibling.join("interop-recorded").is_dir() {
        return sibling;
    }
    PathBuf::from("/work/shared")
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Sections added to the test configuration (`[policy]` / `[limits]` bodies).
#[derive(Clone, Default)]
pub struct Conf {
    pub limits: String,
    pub policy: String,
    /// Body of a `[security]` section (keys, then any `[[security.acl]]` tables). When set, the
    /// configuration also gets `https = "127.0.0.1:0"` (security on) and the server's HTTPS
    /// address is read into `Server::https_addr`.
    pub security: String,
    /// Extra `vwsd` command-line arguments (e.g. `--https ADDR --host-cert F …`).
    pub args: Vec<String>,
    /// Body of a `[staging]` section (image pool, file roots, credentials).
    pub staging: String,
    /// Whole `[vmm]`, `[network]`, `[credentials]`, `[host]` sections (TOML, with headers).
    /// Without a `[vmm]` section the server runs with `driver = "none"` (deploy only stages).
    pub host: String,
    /// Extra environment variables for the vwsd process.
    pub env: Vec<(String, String)>,
}

impl Conf {
    /// Does this configuration make vwsd listen with GSI transport too?
    fn https(&self) -> bool {
        !self.security.is_empty() || self.args.iter().any(|a| a == "--https")
    }
}

const DEFAULT_POLICY: &str = "allowed_categories = [\"vm\"]\nallowed_vmms = [\"xen\", \"kvm\", \"qemu\"]\nmax_ram_mib = 16384\nmax_disk_mib = 204800\nmax_lifetime_secs = 1209600\ndefault_lifetime_secs = 86400\n";

/// A running vwsd.
pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    /// `HOST:PORT` of the GSI (HTTPS) listener; empty without security.
    pub https_addr: String,
    pub dir: tempfile::TempDir,
    pub conf: Conf,
    pub stderr_path: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Conf::default())
    }

    pub fn start_with(conf: Conf) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Server {
            child: None,
            addr: String::new(),
            https_addr: String::new(),
            stderr_path: dir.path().join("vwsd.log"),
            dir,
            conf,
        };
        s.spawn("127.0.0.1:0", "127.0.0.1:0");
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self, listen: &str, https_listen: &str) {
        let policy = if self.conf.policy.is_empty() { DEFAULT_POLICY } else { &self.conf.policy };
        let mut cfg = format!(
            "[server]\nhttp = \"{listen}\"\ndata = \"{}\"\nshutdown_grace_secs = 5\n\n[limits]\n{}\n\n[policy]\n{}\n",
            self.data_dir().display(),
            self.conf.limits,
            policy
        );
        if !self.conf.staging.is_empty() {
            cfg.push_str(&format!("\n[staging]\n{}\n", self.conf.staging));
        }
        if self.conf.host.contains("[vmm]") {
            cfg.push_str(&format!("\n{}\n", self.conf.host));
        } else {
            cfg.push_str(&format!("\n[vmm]\ndriver = \"none\"\n{}\n", self.conf.host));
        }
        if !self.conf.security.is_empty() {
            cfg.push_str(&format!("\n[security]\nhttps = \"{https_listen}\"\n{}\n", self.conf.security));
        }
        let cfg_path = self.dir.path().join("vwsd.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vwsd"))
            .arg("--config")
            .arg(&cfg_path)
            .args(&self.conf.args)
            .envs(self.conf.env.iter().map(|(k, v)| (k, v)))
            .env("VWS_LOG", std::env::var("VWS_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn vwsd");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read vwsd stdout");
        let addr = line
            .trim()
            .strip_prefix("vwsd listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line from vwsd: {line:?}; log: {}", self.log()))
            .to_string();
        if self.conf.https() {
            // One line per listener: http first, then https.
            let mut line = String::new();
            out.read_line(&mut line).expect("read vwsd stdout");
            self.https_addr = line
                .trim()
                .strip_prefix("vwsd listening on https://")
                .unwrap_or_else(|| panic!("unexpected second line from vwsd: {line:?}; log: {}", self.log()))
                .to_string();
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        self.addr = addr;
        self.child = Some(child);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn url(&self, service: &str) -> String {
        format!("http://{}/wsrf/services/{service}", self.addr)
    }

    /// The URL of `service` on the GSI (HTTPS) listener.
    pub fn https_url(&self, service: &str) -> String {
        format!("https://{}/wsrf/services/{service}", self.https_addr)
    }

    /// SIGKILL: no clean shutdown at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe_kill(c.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "vwsd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start again on the same address and store.
    pub fn restart(&mut self) {
        self.kill9();
        let addr = self.addr.clone();
        let https = if self.https_addr.is_empty() { "127.0.0.1:0".to_string() } else { self.https_addr.clone() };
        self.spawn(&addr, &https);
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// POST a SOAP body with Content-Length.
    pub fn post(&self, service: &str, action: &str, body: &str) -> HttpResponse {
        let req = format!(
            "POST /wsrf/services/{service} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.raw(req.as_bytes())
    }

    /// Send raw bytes and read one response.
    pub fn raw(&self, bytes: &[u8]) -> HttpResponse {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).expect("write request");
        read_response(&mut BufReader::new(s)).expect("read response")
    }

    /// Every stored row of the resources requests make: (service, key, termination_ms, record).
    /// The site's Repository resource (`RepositoryService`, made at start-up, never by a
    /// request) is left out, so "the store is unchanged / empty" means what a caller did.
    pub fn db_dump(&self) -> Vec<(String, String, Option<i64>, String)> {
        let conn = rusqlite::Connection::open(self.data_dir().join("vws.db")).unwrap();
        let mut st = conn
            .prepare(
                "SELECT service, key, termination_ms, record FROM resources \
                 WHERE service <> 'RepositoryService' ORDER BY service, key",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
    }

    /// Create a counter in `service` (CounterService / CounterServiceRW); returns its key.
    pub fn create_counter(&self, service: &str) -> String {
        let body = envelope(
            &self.url(service),
            "http://counter.com/CounterPortType/createCounterRequest",
            "",
            "<createCounter xmlns=\"http://counter.com\"/>",
        );
        let r = self.post(service, "http://counter.com/CounterPortType/createCounterRequest", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        between(&r.body, "CounterKey xmlns:k0=\"http://counter.com\">", "<").expect("counter key").to_string()
    }

    /// Create a workspace from `conf/samples/workspace.xml`; returns its key.
    pub fn create_workspace(&self) -> String {
        self.create_workspace_from(&sample_description())
    }

    pub fn create_workspace_from(&self, description: &str) -> String {
        let r = self.factory_create(description);
        assert_eq!(r.status, 200, "{}", r.body);
        between(&r.body, "WorkspaceKey xmlns:k0=\"http://vws.dev/2026/11/workspace\">", "<").expect("workspace key").to_string()
    }

    pub fn factory_create(&self, description: &str) -> HttpResponse {
        let action = format!("{VWS}/WorkspaceFactoryPortType/createRequest");
        let body = envelope(
            &self.url("WorkspaceFactoryService"),
            &action,
            "",
            &format!("<create xmlns=\"{VWS}\">{description}</create>"),
        );
        self.post("WorkspaceFactoryService", &action, &body)
    }

    /// Call an operation on a resource: `header` is the key header element.
    pub fn call(&self, service: &str, key_header: &str, action: &str, payload: &str) -> HttpResponse {
        let body = envelope(&self.url(service), action, key_header, payload);
        self.post(service, action, &body)
    }

    pub fn ws_key_header(key: &str) -> String {
        format!("<k:WorkspaceKey xmlns:k=\"{VWS}\">{key}</k:WorkspaceKey>")
    }

    pub fn counter_key_header(key: &str) -> String {
        format!("<k:CounterKey xmlns:k=\"{COUNTER}\">{key}</k:CounterKey>")
    }
}

impl Drop for Server {
    /// Kills vwsd, then every process whose command line names this server's directory: the
    /// guests it started (QEMU outlives vwsd by design, so a VM survives a vwsd restart), which a
    /// failed test or a benchmark would otherwise leave running.
    fn drop(&mut self) {
        self.kill9();
        let run = self.data_dir().join("run");
        // The run root may be a link to a short path (unix socket names are limited).
        let dirs = [self.dir.path().to_path_buf(), run.canonicalize().unwrap_or(run)].map(|d| d.to_string_lossy().into_owned());
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else { continue };
            let named = |arg: &[u8]| dirs.iter().any(|d| String::from_utf8_lossy(arg).contains(d.as_str()));
            if cmd.split(|b| *b == 0).any(named) {
                unsafe_kill(pid, 9);
            }
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// The sample description, without its XML declaration and comments.
pub fn sample_description() -> String {
    let text = std::fs::read_to_string(repo_dir().join("conf/samples/workspace.xml")).unwrap();
    let start = text.find("<virtualWorkspace").unwrap();
    text[start..].to_string()
}

/// A GT4-style request envelope.
pub fn envelope(to: &str, action: &str, headers: &str, payload: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAPENV}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:wsa=\"{WSA}\"><soapenv:Header>\
<wsa:MessageID soapenv:mustUnderstand=\"0\">uuid:test-{}</wsa:MessageID><wsa:To soapenv:mustUnderstand=\"0\">{to}</wsa:To>\
<wsa:Action soapenv:mustUnderstand=\"0\">{action}</wsa:Action>{headers}</soapenv:Header><soapenv:Body>{payload}</soapenv:Body></soapenv:Envelope>",
        std::process::id()
    )
}

pub fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The local name of the fault element in `detail`, if this is a fault.
    pub fn fault_kind(&self) -> Option<String> {
        let d = between(&self.body, "<detail>", "</detail>")?;
        let d = d.strip_prefix('<')?;
        let name: String = d.chars().take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/').collect();
        Some(name.split(':').next_back().unwrap_or(&name).to_string())
    }
    pub fn faultstring(&self) -> Option<&str> {
        between(&self.body, "<faultstring>", "</faultstring>")
    }
}

/// Read one HTTP/1.1 response (Content-Length, chunked, or until close).
pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<HttpResponse> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}
