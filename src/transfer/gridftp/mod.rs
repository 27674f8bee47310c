//! The GridFTP client (`gsiftp://`, and plain `ftp://` with anonymous login): sessions with GSI
//! authentication and delegation, feature discovery, MODE E transfers over N parallel data
//! streams with DCAU, CKSM, and resume (reconnecting when the server went away) — no external
//! tools. A broken download resumes with `ERET` from the contiguous prefix on our disk; a broken
//! upload with `ESTO A` from the contiguous prefix the server confirmed in its `111 Range Marker`
//! replies, which it is asked to send every second (`TREV RESTART 1`).

pub mod control;
pub mod data;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::security::certdir::CertDir;
use crate::security::credential::Credential;
use crate::security::gss::{self, Delegation, Initiator, Target};
use crate::transfer::progress::RangeSet;
use crate::transfer::{Algo, Endpoint, Options, Progress, Protection, Result, TransferError, Url};
use control::{parse_227, parse_range_marker, port_arg, Control, Reply};
use data::Dcau;

/// What the server said it supports (FEAT).
#[derive(Clone, Debug, Default)]
pub struct Features {
    pub lines: Vec<String>,
    pub cksm: Vec<Algo>,
    pub dcau: bool,
    pub eret: bool,
    pub esto: bool,
    pub parallel: bool,
}

/// How often (seconds) the server is asked to send restart markers while it receives
/// (`TREV RESTART n`): what an upload resumes from after a break. One second is the shortest the
/// command can ask for (`TREV RESTART 0` turns the markers off altogether on
/// globus-gridftp-server 13, whose default is every 5 s).
const RESTART_MARKER_SECS: u32 = 1;

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
                "ESTO" => f.esto = true,
                "PARALLEL" => f.parallel = true,
                _ => {}
            }
            f.lines.push(l.to_string());
        }
        f
    }
}

/// Adds the ranges of one restart marker, counted from `base`, to `set`; returns the contiguous
/// prefix from 0 now confirmed — the only part an upload may resume after (ranges beyond a hole
/// are not).
fn confirm(set: &mut RangeSet, base: u64, ranges: &[(u64, u64)]) -> u64 {
    for &(a, b) in ranges {
        if let (Some(a), Some(b)) = (a.checked_add(base), b.checked_add(base)) {
            set.insert(a, b);
        }
    }
    set.prefix()
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
    /// `TREV RESTART` asked for on this session (`Some(accepted)`), for uploads only.
    restart_markers: Option<bool>,
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
            // The server needs a delegated proxy only to present our identity on DCAU data
            // channels; without DCAU nothing is delegated (less handed out, and no wait for
            // the server to generate the delegation key pair, ~0.1-0.3 s).
            let delegation = opts.dcau.then(Delegation::default);
            let (init, first) = Initiator::new(&g.cred, &g.certdir, &target, delegation)
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
            restart_markers: None,
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
        r.text()
            .trim()
            .parse()
            .map_err(|_| TransferError::Protocol { url: self.url.to_string(), reason: format!("bad SIZE reply {:?}", r.text()) })
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

    /// Waits for the final reply of a transfer command (after its 1xx), skipping perf markers.
    /// With `markers = Some((set, base))` the ranges of every `111 Range Marker` are added to
    /// `set`, shifted by `base`: the server counts them from the start of this transfer (0 for
    /// STOR, the offset for `ESTO A offset`), and sends each range once (every marker carries the
    /// ranges written since the previous one, in pieces when parallel streams leave holes).
    fn finish_transfer(&mut self, cmd: &str, alive: &dyn Fn() -> bool, markers: Option<(&Mutex<RangeSet>, u64)>) -> Result<()> {
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
                    // "Range Marker a-b[,c-d…]": the server has written these bytes.
                    let Some((set, base)) = markers else { continue };
                    let Some(ranges) = parse_range_marker(&r) else {
                        tracing::debug!(url = %self.url, text = %r.text(), "ignoring a malformed restart marker");
                        continue;
                    };
                    let confirmed = confirm(&mut set.lock().unwrap(), base, &ranges);
                    tracing::debug!(url = %self.url, confirmed, "restart marker");
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
        data::receive(listener, dest, base, progress, dcau.as_ref(), &us, timeout, |alive| {
            self.finish_transfer(&cmd, alive, None)
        })
    }

    fn pasv(&mut self) -> Result<SocketAddr> {
        let r = self.ctl.expect_ok("PASV")?;
        let mut a = parse_227(&r).ok_or_else(|| TransferError::Protocol {
            url: self.url.to_string(),
            reason: format!("bad PASV reply {:?}", r.text()),
        })?;
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
            data_result = Some(
                h.join()
                    .unwrap_or_else(|_| Err(TransferError::Protocol { url: us.clone(), reason: "data thread panicked".into() })),
            );
            r
        });
        ctl_result?;
        data_result.unwrap().map(|_| ())
    }

    /// Asks the server, once per session, for restart markers every [`RESTART_MARKER_SECS`]
    /// while it receives — if it does `ESTO`, the only use of them. A refusal is no error: the
    /// server then sends them at its own pace (or never), and a resume starts from what it did.
    fn request_restart_markers(&mut self) -> Result<()> {
        if self.restart_markers.is_some() {
            return Ok(());
        }
        let accepted = self.features.esto && {
            let r = self.ctl.cmd(&format!("TREV RESTART {RESTART_MARKER_SECS}"))?;
            if !r.is_ok() {
                tracing::debug!(url = %self.url, code = r.code, text = %r.text(), "server declined TREV RESTART");
            }
            r.is_ok()
        };
        self.restart_markers = Some(accepted);
        Ok(())
    }

    /// Stores `[start, start+len)` of `src` as `path` (`ESTO A start` when start > 0; block
    /// offsets on the data channel are relative to `start`, see [`data::send`]), adding the
    /// ranges the server's restart markers confirm to `confirmed` (absolute file offsets).
    pub fn stor(
        &mut self,
        path: &str,
        src: &File,
        start: u64,
        len: u64,
        progress: &Progress,
        confirmed: &Mutex<RangeSet>,
    ) -> Result<()> {
        self.setup()?;
        self.request_restart_markers()?;
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
                let r = self.finish_transfer(&cmd, &alive, Some((confirmed, start)));
                dr =
                    Some(h.join().unwrap_or_else(|_| {
                        Err(TransferError::Protocol { url: us.clone(), reason: "data thread panicked".into() })
                    }));
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
            let r = self.finish_transfer(&cmd, &alive, Some((confirmed, start)));
            if r.is_err() {
                // Data threads notice the broken connections through their own timeouts.
            }
            dr = Some(
                h.join()
                    .unwrap_or_else(|_| Err(TransferError::Protocol { url: us.clone(), reason: "data thread panicked".into() })),
            );
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
    /// Where each resume of the last download or upload restarted (see `Endpoint::resumed_from`).
    resumed: Mutex<Vec<u64>>,
}

impl GridFtp {
    pub fn new(url: Url, opts: Options) -> Result<GridFtp> {
        Ok(GridFtp { url, opts, gsi: Mutex::new(None), session: Mutex::new(None), resumed: Mutex::new(Vec::new()) })
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
        // Exponential backoff with jitter (200 ms .. 2 s), waits adding up to `reconnect_for`.
        use backon::{BlockingRetryable, ExponentialBuilder};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .with_max_times(usize::MAX)
            .with_total_delay(Some(self.opts.reconnect_for));
        (|| {
            *self.session.lock().unwrap() = None;
            self.with_session(|_| Ok(()))
        })
        .retry(backoff)
        .sleep(std::thread::sleep)
        .when(|e: &TransferError| e.is_transient())
        .notify(|e, wait| tracing::info!(url = %self.url, ?wait, "server unreachable, retrying: {e}"))
        .call()
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
        self.resumed.lock().unwrap().clear();
        let mut attempt = 0u32;
        loop {
            let from = progress.prefix();
            if from >= size && attempt > 0 {
                return Ok(size);
            }
            let range = if from == 0 { None } else { Some((from, size - from)) };
            if attempt > 0 {
                self.resumed.lock().unwrap().push(from);
            }
            if let Some((o, l)) = range {
                tracing::info!(url = %self.url, offset = o, length = l, "resuming with ERET");
            }
            match self.with_session(|s| s.retr(&path, range, dest, progress)) {
                Ok(()) => {
                    let got = progress.prefix();
                    if got < size {
                        return Err(TransferError::Interrupted {
                            url: self.url.to_string(),
                            reason: format!("server finished at {got} of {size} bytes"),
                        });
                    }
                    return Ok(size);
                }
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    progress.check()?;
                    attempt += 1;
                    tracing::warn!(url = %self.url, at = progress.prefix(), attempt, "transfer broken, resuming: {e}");
                    *self.session.lock().unwrap() = None;
                    self.reconnect()?;
                }
                Err(e) => {
                    // A broken transfer after a cancel is the cancel.
                    progress.check()?;
                    return Err(e);
                }
            }
        }
    }

    fn upload(&self, src: &File, len: u64, progress: &Progress) -> Result<u64> {
        let path = self.url.path.clone();
        // What the server's restart markers confirmed it holds, by absolute offset.
        let confirmed = Mutex::new(RangeSet::default());
        self.resumed.lock().unwrap().clear();
        let mut attempt = 0u32;
        loop {
            // Only the contiguous prefix from 0 is safe to keep: everything after it is sent again
            // (a STOR from 0 truncates, an ESTO rewrites), so older ranges beyond it are dropped.
            // At least the last byte goes again, so a resume is never an empty ESTO.
            let start = {
                let mut c = confirmed.lock().unwrap();
                let p = c.prefix().min(len.saturating_sub(1));
                *c = RangeSet::default();
                c.insert(0, p);
                p
            };
            if attempt > 0 {
                self.resumed.lock().unwrap().push(start);
                if start > 0 {
                    tracing::info!(url = %self.url, offset = start, length = len - start, "resuming upload with ESTO");
                } else {
                    tracing::info!(url = %self.url, "no restart marker confirmed any data: uploading again from the start");
                }
            }
            match self.with_session(|s| s.stor(&path, src, start, len - start, progress, &confirmed)) {
                Ok(()) => return Ok(len),
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    progress.check()?;
                    attempt += 1;
                    let at = confirmed.lock().unwrap().prefix();
                    tracing::warn!(url = %self.url, confirmed = at, attempt, "upload broken, resuming: {e}");
                    *self.session.lock().unwrap() = None;
                    self.reconnect()?;
                }
                Err(e) => {
                    // A broken transfer after a cancel is the cancel.
                    progress.check()?;
                    return Err(e);
                }
            }
        }
    }

    fn resumed_from(&self) -> Vec<u64> {
        self.resumed.lock().unwrap().clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_markers_confirm_only_the_prefix_without_holes() {
        const M: u64 = 1 << 20;
        let mut set = RangeSet::default();
        // STOR over parallel streams: a hole at [4M, 8M) until a later marker fills it.
        assert_eq!(confirm(&mut set, 0, &[(4 * M, 8 * M)]), 0, "nothing from 0 yet");
        assert_eq!(confirm(&mut set, 0, &[(0, 2 * M), (8 * M, 12 * M)]), 2 * M);
        assert_eq!(confirm(&mut set, 0, &[(2 * M, 4 * M)]), 12 * M, "the hole filled");
        // ESTO A 12M: the server counts from the ESTO offset.
        assert_eq!(confirm(&mut set, 12 * M, &[(0, 4 * M)]), 16 * M);
        assert_eq!(confirm(&mut set, 12 * M, &[(8 * M, 9 * M)]), 16 * M);
        assert_eq!(confirm(&mut set, u64::MAX, &[(1, 2)]), 16 * M, "overflowing ranges are dropped");
    }

    #[test]
    fn features_of_globus_gridftp_server_13() {
        let feat = Reply {
            code: 211,
            lines: [
                "Extensions supported",
                " CKSM MD5:10;ADLER32:10;SHA1:10;SHA256:11;SHA512:12;",
                " DCAU",
                " PARALLEL",
                " ERET",
                " ESTO",
                "End.",
            ]
            .map(String::from)
            .to_vec(),
        };
        let f = Features::parse(&feat);
        assert!(f.dcau && f.parallel && f.eret && f.esto);
        assert_eq!(f.cksm.len(), 5);
        assert!(!Features::parse(&Reply { code: 211, lines: vec![" ERET".into()] }).esto);
    }
}
