//! The GridFTP client (`gsiftp://`, and plain `ftp://` with anonymous login): sessions with GSI
//! authentication and delegation, feature discovery, MODE E transfers over N parallel data
//! streams with DCAU, CKSM, and resume of a broken download with `ERET` from the last contiguous
//! offset (reconnecting when the server went away) — no external tools.

pub mod control;
pub mod data;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::security::certdir::CertDir;
use crate::security::credential::Credential;
use crate::security::gss::{self, Delegation, Initiator, Target};
use crate::transfer::{Algo, Endpoint, Options, Progress, Protection, Result, TransferError, Url};
use control::{parse_227, port_arg, Control, Reply};
use data::Dcau;

/// What the server said it supports (FEAT).
#[derive(Clone, Debug, Default)]
pub struct Features {
    pub lines: Vec<String>,
    pub cksm: Vec<Algo>,
    pub dcau: bool,
    pub eret: bool,
    pub parallel: bool,
}

impl Features {
    pub fn parse(r: &Reply) -> Features {
        let mut f = Features::default();
        for l in &r.lines {
            let l = l.trim();
            let (name, arg) = l.split_once(' ').unwrap_or((l, ""));
            match name.to_ascii_uppercase().as_str() {
                "CKSM" => {
                    f.cksm = arg.split(';').filter_map(|a| Algo::parse(a.split(':').next().unwrap_or(""))).collect();
                }
                "DCAU" => f.dcau = true,
                "ERET" => f.eret = true,
                "PARALLEL" => f.parallel = true,
                _ => {}
            }
            f.lines.push(l.to_string());
        }
        f
    }
}

/// Credentials for GSI sessions, loaded once per endpoint.
#[derive(Clone)]
pub struct GsiMaterial {
    pub cred: Credential,
    pub certdir: Arc<CertDir>,
}

impl GsiMaterial {
    pub fn load(opts: &Options, url: &str) -> Result<GsiMaterial> {
        let auth = |reason: String| TransferError::Auth { url: url.to_string(), reason };
        let cred = match &opts.credential {
            Some(p) => Credential::load_proxy(p).map_err(|e| auth(e.to_string()))?,
            None => Credential::find_user().map_err(|e| auth(e.to_string()))?,
        };
        gss::check_lifetime(&cred).map_err(|e| auth(e.to_string()))?;
        let certdir = match &opts.cert_dir {
            Some(d) => CertDir::load(d),
            None => CertDir::from_env(),
        }
        .map_err(|e| auth(e.to_string()))?;
        Ok(GsiMaterial { cred, certdir: Arc::new(certdir) })
    }
}

/// One logged-in control session.
pub struct Session {
    pub ctl: Control,
    pub features: Features,
    url: Url,
    opts: Options,
    gsi: Option<GsiMaterial>,
    mode_e: bool,
    setup_done: bool,
    dcau_ctx: Option<(openssl::ssl::SslContext, openssl::ssl::SslContext)>,
}

impl Session {
    pub fn connect(url: &Url, opts: &Options, gsi: Option<&GsiMaterial>) -> Result<Session> {
        let us = url.to_string();
        let mut ctl = Control::connect(&url.host, url.port_or_default(), &us, opts.timeout)?;
        let banner = ctl.read_reply()?;
        if banner.code != 220 {
            return Err(TransferError::Remote { url: us, command: "connect".into(), code: banner.code, text: banner.text() });
        }
        if let Some(g) = gsi {
            let target = Target::Host(url.host.clone());
            let (init, first) = Initiator::new(&g.cred, &g.certdir, &target, Some(Delegation::default()))
                .map_err(|e| TransferError::Auth { url: us.clone(), reason: e.to_string() })?;
            ctl.authenticate(init, first)?;
        }
        let (user, pass) = match (gsi, &url.user) {
            (Some(_), _) => (":globus-mapping:".to_string(), "dummy".to_string()),
            (None, Some(u)) => (u.clone(), url.password.clone().unwrap_or_default()),
            (None, None) => ("anonymous".to_string(), "vws@".to_string()),
        };
        let r = ctl.cmd(&format!("USER {user}"))?;
        let r = if r.code == 331 { ctl.cmd(&format!("PASS {pass}"))? } else { r };
        if !r.is_ok() {
            return Err(TransferError::Auth { url: us, reason: format!("login refused: {} {}", r.code, r.text()) });
        }
        let feat = ctl.cmd("FEAT")?;
        let features = if feat.is_ok() { Features::parse(&feat) } else { Features::default() };
        Ok(Session {
            ctl,
            features,
            url: url.clone(),
            opts: opts.clone(),
            gsi: gsi.cloned(),
            mode_e: false,
            setup_done: false,
            dcau_ctx: None,
        })
    }

    fn gsi_mode(&self) -> bool {
        self.gsi.is_some()
    }

    fn setup(&mut self) -> Result<()> {
        if self.setup_done {
            return Ok(());
        }
        self.ctl.expect_ok("TYPE I")?;
        if self.gsi_mode() || self.features.parallel {
            self.ctl.expect_ok("MODE E")?;
            self.mode_e = true;
        }
        if self.gsi_mode() && self.features.dcau {
            if self.opts.dcau {
                self.ctl.expect_ok("PBSZ 1048576")?;
                if self.opts.protect != Protection::Clear {
                    self.ctl.expect_ok(&format!("PROT {}", self.opts.protect.letter()))?;
                }
                let g = self.gsi.as_ref().unwrap();
                let auth = |e: gss::GssError| TransferError::Auth { url: self.url.to_string(), reason: e.to_string() };
                let server = gss::server_context(&g.cred, &g.certdir).map_err(auth)?;
                let client = gss::client_context(&g.cred, &g.certdir).map_err(auth)?;
                self.dcau_ctx = Some((server, client));
            } else {
                self.ctl.expect_ok("DCAU N")?;
            }
        }
        if self.opts.protect != Protection::Clear && self.dcau_ctx.is_none() {
            // PROT S/P wrap the data in the DCAU security context: without it there is none.
            return Err(TransferError::Unsupported(format!(
                "data-channel protection PROT {} without DCAU (or on a server without DCAU)",
                self.opts.protect.letter()
            )));
        }
        self.setup_done = true;
        Ok(())
    }

    fn dcau(&self, server_side: bool) -> Option<Dcau> {
        let (s, c) = self.dcau_ctx.as_ref()?;
        let g = self.gsi.as_ref()?;
        Some(Dcau {
            ctx: if server_side { s.clone() } else { c.clone() },
            certdir: g.certdir.clone(),
            cred: g.cred.clone(),
            protect: self.opts.protect != Protection::Clear,
        })
    }

    pub fn size(&mut self, path: &str) -> Result<u64> {
        let r = self.ctl.cmd(&format!("SIZE {path}"))?;
        if r.code != 213 {
            return Err(self.ctl.refused("SIZE", &r));
        }
        r.text().trim().parse().map_err(|_| TransferError::Protocol { url: self.url.to_string(), reason: format!("bad SIZE reply {:?}", r.text()) })
    }

    pub fn cksm(&mut self, algo: Algo, path: &str) -> Result<String> {
        let prev = self.ctl.timeout();
        // The server reads the whole file before answering.
        self.ctl.set_timeout(prev.max(Duration::from_secs(600)));
        let r = self.ctl.cmd(&format!("CKSM {} 0 -1 {path}", algo.name()));
        self.ctl.set_timeout(prev);
        let r = r?;
        if r.code != 213 {
            return Err(self.ctl.refused("CKSM", &r));
        }
        Ok(r.text().trim().to_ascii_lowercase())
    }

    /// Waits for the final reply of a transfer command (after its 1xx), skipping markers.
    fn finish_transfer(&mut self, cmd: &str, alive: &dyn Fn() -> bool, markers: Option<&Mutex<u64>>) -> Result<()> {
        let r = self.ctl.read_reply_while(alive)?;
        if !r.is_preliminary() {
            return Err(if r.is_ok() {
                TransferError::Protocol { url: self.url.to_string(), reason: format!("{cmd}: {} without a transfer", r.code) }
            } else {
                self.ctl.refused(cmd, &r)
            });
        }
        loop {
            let r = self.ctl.read_reply_while(alive)?;
            match r.code {
                111 => {
                    // "Range Marker 0-N[,a-b…]": the server has these bytes.
                    if let (Some(m), Some(last)) = (markers, r.text().split_whitespace().last()) {
                        if let Some(end) = last.split(',').next().and_then(|r| r.split_once('-')).and_then(|(a, b)| if a == "0" { b.parse::<u64>().ok() } else { None }) {
                            let mut g = m.lock().unwrap();
                            *g = (*g).max(end);
                        }
                    }
                }
                c if c < 200 => {}
                226 | 250 => return Ok(()),
                _ => return Err(self.ctl.refused(cmd, &r)),
            }
        }
    }

    /// Retrieves `path` (or, with `range`, `ERET P off len`) into `dest`.
    pub fn retr(&mut self, path: &str, range: Option<(u64, u64)>, dest: &File, progress: &Progress) -> Result<()> {
        self.setup()?;
        let n = self.opts.streams.max(1);
        let local = self.ctl.local_addr().map(|a| a.ip()).unwrap_or([127, 0, 0, 1].into());
        let us = self.url.to_string();
        let cmd = match range {
            Some((off, len)) => format!("ERET P {off} {len} {path}"),
            None => format!("RETR {path}"),
        };
        if !self.mode_e {
            return self.retr_stream(&cmd, range.map(|r| r.0).unwrap_or(0), dest, progress);
        }
        self.ctl.expect_ok(&format!("OPTS RETR Parallelism={n},{n},{n};"))?;
        let listener = TcpListener::bind(SocketAddr::new(local, 0)).map_err(|e| TransferError::io("data listener", e))?;
        let la = listener.local_addr().map_err(|e| TransferError::io("data listener", e))?;
        let pa = port_arg(la).ok_or_else(|| TransferError::Unsupported("IPv6 data channels (EPRT)".into()))?;
        self.ctl.expect_ok(&format!("PORT {pa}"))?;
        self.ctl.send(&cmd)?;
        let dcau = self.dcau(true);
        // ERET P: block offsets are relative to the requested offset.
        let base = range.map(|r| r.0).unwrap_or(0);
        let timeout = self.opts.timeout;
        data::receive(listener, dest, base, progress, dcau.as_ref(), &us, timeout, |alive| self.finish_transfer(&cmd, alive, None))
    }

    fn pasv(&mut self) -> Result<SocketAddr> {
        let r = self.ctl.expect_ok("PASV")?;
        let mut a = parse_227(&r).ok_or_else(|| TransferError::Protocol { url: self.url.to_string(), reason: format!("bad PASV reply {:?}", r.text()) })?;
        if a.ip().is_unspecified() {
            if let Some(p) = self.ctl.peer_addr() {
                a.set_ip(p.ip());
            }
        }
        Ok(a)
    }

    fn retr_stream(&mut self, cmd: &str, base: u64, dest: &File, progress: &Progress) -> Result<()> {
        let addr = self.pasv()?;
        let us = self.url.to_string();
        let s = std::net::TcpStream::connect_timeout(&addr, self.opts.timeout)
            .map_err(|e| TransferError::Connect { url: us.clone(), reason: format!("data connection to {addr}: {e}") })?;
        self.ctl.send(cmd)?;
        let timeout = self.opts.timeout;
        let mut data_result = None;
        let ctl_result = std::thread::scope(|sc| {
            let h = sc.spawn(|| data::receive_stream(s, dest, base, progress, &us, timeout));
            let last = std::sync::atomic::AtomicU64::new(0);
            let alive = || progress.bytes() != last.swap(progress.bytes(), std::sync::atomic::Ordering::Relaxed);
            let r = self.finish_transfer(cmd, &alive, None);
            data_result = Some(h.join().unwrap_or_else(|_| Err(TransferError::Protocol { url: us.clone(), reason: "data thread panicked".into() })));
            r
        });
        ctl_result?;
        data_result.unwrap().map(|_| ())
    }

    /// Stores `[start, start+len)` of `src` as `path` (`ESTO A start` when start > 0).
    pub fn stor(&mut self, path: &str, src: &File, start: u64, len: u64, progress: &Progress, marker: &Mutex<u64>) -> Result<()> {
        self.setup()?;
        let cmd = if start > 0 { format!("ESTO A {start} {path}") } else { format!("STOR {path}") };
        let addr = self.pasv()?;
        let us = self.url.to_string();
        let _ = self.ctl.expect_ok(&format!("ALLO {len}"));
        let timeout = self.opts.timeout;
        if !self.mode_e {
            let s = std::net::TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| TransferError::Connect { url: us.clone(), reason: format!("data connection to {addr}: {e}") })?;
            self.ctl.send(&cmd)?;
            let mut dr = None;
            let r = std::thread::scope(|sc| {
                let h = sc.spawn(|| data::send_stream(s, src, start, len, progress, &us));
                let last = std::sync::atomic::AtomicU64::new(0);
                let alive = || progress.bytes() != last.swap(progress.bytes(), std::sync::atomic::Ordering::Relaxed);
                let r = self.finish_transfer(&cmd, &alive, Some(marker));
                dr = Some(h.join().unwrap_or_else(|_| Err(TransferError::Protocol { url: us.clone(), reason: "data thread panicked".into() })));
                r
            });
            r?;
            return dr.unwrap();
        }
        self.ctl.send(&cmd)?;
        let dcau = self.dcau(false);
        let n = self.opts.streams.max(1);
        let block = self.opts.block_size.max(64 << 10) as u64;
        let mut dr = None;
        let r = std::thread::scope(|sc| {
            let dcau = dcau.as_ref();
            let us2 = us.clone();
            let h = sc.spawn(move || data::send(addr, n, src, start, len, block, progress, dcau, &us2, timeout));
            let last = std::sync::atomic::AtomicU64::new(0);
            let alive = || progress.bytes() != last.swap(progress.bytes(), std::sync::atomic::Ordering::Relaxed);
            let r = self.finish_transfer(&cmd, &alive, Some(marker));
            if r.is_err() {
                // Data threads notice the broken connections through their own timeouts.
            }
            dr = Some(h.join().unwrap_or_else(|_| Err(TransferError::Protocol { url: us.clone(), reason: "data thread panicked".into() })));
            r
        });
        match (r, dr.unwrap()) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    pub fn simple(&mut self, cmd: &str) -> Result<Reply> {
        self.ctl.expect_ok(cmd)
    }
}

/// A `gsiftp://` or `ftp://` resource.
pub struct GridFtp {
    url: Url,
    opts: Options,
    gsi: Mutex<Option<GsiMaterial>>,
    /// A logged-in session kept for follow-up commands (SIZE, CKSM…).
    session: Mutex<Option<Session>>,
}

impl GridFtp {
    pub fn new(url: Url, opts: Options) -> Result<GridFtp> {
        Ok(GridFtp { url, opts, gsi: Mutex::new(None), session: Mutex::new(None) })
    }

    fn is_gsi(&self) -> bool {
        self.url.scheme == "gsiftp"
    }

    fn material(&self) -> Result<Option<GsiMaterial>> {
        if !self.is_gsi() {
            return Ok(None);
        }
        let mut g = self.gsi.lock().unwrap();
        if g.is_none() {
            *g = Some(GsiMaterial::load(&self.opts, &self.url.to_string())?);
        }
        Ok(g.clone())
    }

    /// Runs `f` on a session (the cached one, or a new one).
    fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
        let mut g = self.session.lock().unwrap();
        if g.is_none() {
            let m = self.material()?;
            *g = Some(Session::connect(&self.url, &self.opts, m.as_ref())?);
        }
        let r = f(g.as_mut().unwrap());
        if let Err(e) = &r {
            if e.is_transient() || matches!(e, TransferError::Protocol { .. }) {
                *g = None;
            }
        }
        r
    }

    /// Reconnects until it works or `opts.reconnect_for` passes.
    fn reconnect(&self) -> Result<()> {
        let deadline = Instant::now() + self.opts.reconnect_for;
        let mut wait = Duration::from_millis(200);
        loop {
            *self.session.lock().unwrap() = None;
            match self.with_session(|_| Ok(())) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    tracing::info!(url = %self.url, "server unreachable, retrying: {e}");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Endpoint for GridFtp {
    fn url(&self) -> &Url {
        &self.url
    }

    fn size(&self) -> Result<Option<u64>> {
        let p = self.url.path.clone();
        self.with_session(|s| s.size(&p)).map(Some)
    }

    fn download(&self, dest: &File, progress: &Progress) -> Result<u64> {
        let path = self.url.path.clone();
        let size = match progress.total() {
            Some(t) => t,
            None => {
                let t = self.with_session(|s| s.size(&path))?;
                progress.set_total(t);
                t
            }
        };
        let mut attempt = 0u32;
        loop {
            let from = progress.prefix();
            if from >= size && attempt > 0 {
                return Ok(size);
            }
            let range = if from == 0 { None } else { Some((from, size - from)) };
            if let Some((o, l)) = range {
                tracing::info!(url = %self.url, offset = o, length = l, "resuming with ERET");
            }
            match self.with_session(|s| s.retr(&path, range, dest, progress)) {
                Ok(()) => {
                    let got = progress.prefix();
                    if got < size {
                        return Err(TransferError::Interrupted { url: self.url.to_string(), reason: format!("server finished at {got} of {size} bytes") });
                    }
                    return Ok(size);
                }
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    attempt += 1;
                    tracing::warn!(url = %self.url, at = progress.prefix(), attempt, "transfer broken, resuming: {e}");
                    *self.session.lock().unwrap() = None;
                    self.reconnect()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn upload(&self, src: &File, len: u64, progress: &Progress) -> Result<u64> {
        let path = self.url.path.clone();
        let marker = Mutex::new(0u64);
        let mut attempt = 0u32;
        loop {
            let start = *marker.lock().unwrap();
            if start > 0 {
                tracing::info!(url = %self.url, offset = start, "resuming upload with ESTO");
            }
            match self.with_session(|s| s.stor(&path, src, start, len - start, progress, &marker)) {
                Ok(()) => return Ok(len),
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    attempt += 1;
                    tracing::warn!(url = %self.url, attempt, "upload broken, resuming: {e}");
                    *self.session.lock().unwrap() = None;
                    self.reconnect()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn remote_algorithms(&self) -> Vec<Algo> {
        let mut v = self.with_session(|s| Ok(s.features.cksm.clone())).unwrap_or_default();
        // Cheapest first.
        v.sort_by_key(|a| match a {
            Algo::Adler32 => 0,
            Algo::Md5 => 1,
            Algo::Sha1 => 2,
            Algo::Sha256 => 3,
            Algo::Sha512 => 4,
        });
        v
    }

    fn remote_checksum(&self, algo: Algo) -> Result<Option<String>> {
        let p = self.url.path.clone();
        let supported = self.with_session(|s| Ok(s.features.cksm.contains(&algo)))?;
        if !supported {
            return Ok(None);
        }
        self.with_session(|s| s.cksm(algo, &p)).map(Some)
    }

    fn rename(&self, to: &Url) -> Result<()> {
        let (from, to) = (self.url.path.clone(), to.path.clone());
        self.with_session(|s| {
            let r = s.ctl.cmd(&format!("RNFR {from}"))?;
            if r.code != 350 {
                return Err(s.ctl.refused("RNFR", &r));
            }
            s.simple(&format!("RNTO {to}")).map(|_| ())
        })
    }

    fn delete(&self) -> Result<()> {
        let p = self.url.path.clone();
        self.with_session(|s| s.simple(&format!("DELE {p}")).map(|_| ()))
    }
}
