//! GridFTP data channels in extended block mode (MODE E, GFD.20): the 17-byte block header
//! (descriptor, 64-bit count, 64-bit offset), EOD/EOF and EOD-count accounting across N parallel
//! connections, the receiving side (blocks written by position straight into the target file: on
//! a clear connection moved socket → pipe → file with `splice`, never through user space; else
//! contiguous blocks coalesced into large `pwrite`s) and the sending side (`sendfile` from the
//! source file). With DCAU each connection first runs a raw TLS handshake — the connecting side
//! is the TLS client — and then, with `PROT C`, the blocks flow in clear; with `PROT S`/`PROT P`
//! the TLS session is kept and the whole MODE E stream (headers and data) travels as TLS
//! application records (received through the session, sent from one reusable buffer per stream).

use std::fs::File;
use std::io::{IoSliceMut, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::SslContext;

use crate::security::certdir::CertDir;
use crate::security::credential::Credential;
use crate::security::gss;
use crate::transfer::{Progress, Result, TransferError};

pub const HEADER_LEN: usize = 17;

/// Descriptor bits (RFC 959 block mode + GridFTP extensions).
pub mod desc {
    pub const EOR: u8 = 0x80;
    pub const EOF: u8 = 0x40;
    pub const SUSPECT: u8 = 0x20;
    pub const RESTART: u8 = 0x10;
    pub const EOD: u8 = 0x08;
    pub const CLOSE: u8 = 0x04;
}

/// One MODE E block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub desc: u8,
    pub count: u64,
    /// The block's offset — or, when `EOF` is set, the number of EODs to expect.
    pub offset: u64,
}

impl BlockHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> BlockHeader {
        BlockHeader {
            desc: b[0],
            count: u64::from_be_bytes(b[1..9].try_into().unwrap()),
            offset: u64::from_be_bytes(b[9..17].try_into().unwrap()),
        }
    }
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.desc;
        b[1..9].copy_from_slice(&self.count.to_be_bytes());
        b[9..17].copy_from_slice(&self.offset.to_be_bytes());
        b
    }
    pub fn is_eod(&self) -> bool {
        self.desc & desc::EOD != 0
    }
    pub fn is_eof(&self) -> bool {
        self.desc & desc::EOF != 0
    }
}

/// Data-channel authentication: the TLS context, the trust directory the peer's chain is
/// validated against (vws' GSI validation decides, see `security::gss`), and the identity the
/// peer must prove (ours: DCAU A).
#[derive(Clone)]
pub struct Dcau {
    pub ctx: SslContext,
    pub certdir: Arc<CertDir>,
    pub cred: Credential,
    /// `PROT S`/`PROT P`: keep the TLS session after the handshake and carry the MODE E stream
    /// (headers and data) in TLS application records; false (`PROT C`): clear after the handshake.
    pub protect: bool,
}

/// Reads exactly `a.len() + b.len()` bytes into `a` then `b`, with `readv` (one system call for a
/// block's data and the next block's header in the common case).
fn read_two<R: Read>(s: &mut R, a: &mut [u8], b: &mut [u8]) -> std::io::Result<()> {
    let (mut ia, mut ib) = (0usize, 0usize);
    while ia < a.len() || ib < b.len() {
        let n = if ia < a.len() {
            let mut bufs = [IoSliceMut::new(&mut a[ia..]), IoSliceMut::new(&mut b[ib..])];
            s.read_vectored(&mut bufs)
        } else {
            s.read(&mut b[ib..])
        };
        let n = match n {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let ta = n.min(a.len() - ia);
        ia += ta;
        ib += n - ta;
    }
    Ok(())
}

/// Reads and drops `n` bytes (a restart marker's payload).
fn skip<R: Read>(s: &mut R, mut n: u64) -> std::io::Result<()> {
    let mut tmp = [0u8; 4096];
    while n > 0 {
        let k = (n as usize).min(tmp.len());
        s.read_exact(&mut tmp[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// What one MODE E block asks of the receiver.
enum Step {
    /// Read and drop this many payload bytes (a restart marker, or junk on an EOF block).
    Skip(u64),
    /// `count` data bytes for the target file at `off`.
    Data { off: u64, count: u64 },
    /// No payload.
    Empty,
}

/// `splice(2)` with the flags every call here uses; retries on EINTR.
fn splice(from: i32, to: i32, to_off: Option<&mut libc::loff_t>, len: usize) -> std::io::Result<usize> {
    let to_off = to_off.map_or(std::ptr::null_mut(), |o| o as *mut libc::loff_t);
    loop {
        // SAFETY: plain system call on descriptors the caller keeps open for its duration; the
        // output offset pointer is null or points to a live loff_t; no input offset (a socket or
        // a pipe has none).
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, to_off, len, libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `e` says splice cannot be used with these descriptors at all.
fn splice_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

/// The pipe a clear data connection's block data goes through on its way socket → file.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Its capacity: the most one splice into it can take.
    cap: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is the array of two ints pipe2 fills.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: two fresh descriptors that nothing else owns.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Bigger is fewer splices per block; the kernel may refuse (fs.pipe-max-size, the
        // per-user pipe quota): then try smaller, else keep the default.
        let mut cap = -1;
        for want in [1 << 20, 256 << 10] {
            // SAFETY: fcntl on a descriptor we own.
            cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want as libc::c_int) };
            if cap > 0 {
                break;
            }
        }
        if cap <= 0 {
            // SAFETY: as above.
            cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        if cap <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Pipe { r, w, cap: cap as usize })
    }

    /// Whether `file` accepts data spliced from a pipe at offset `off`: asked with the pipe still
    /// empty and non-blocking, so nothing is written — EAGAIN means yes.
    fn splices_to(&self, file: &File, off: u64) -> bool {
        let Ok(mut o) = libc::loff_t::try_from(off) else { return false };
        // SAFETY: descriptors we hold open; `o` is a live loff_t.
        let n = unsafe {
            libc::splice(self.r.as_raw_fd(), std::ptr::null_mut(), file.as_raw_fd(), &mut o, 1, libc::SPLICE_F_NONBLOCK)
        };
        n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }
}

struct Recv<'a> {
    dest: &'a File,
    progress: &'a Progress,
    /// Added to every block offset (ERET semantics, see the caller).
    base: u64,
    eods: AtomicU64,
    eodc: AtomicU64,
    accepted: AtomicUsize,
    stop: AtomicBool,
    error: Mutex<Option<TransferError>>,
    socks: Mutex<Vec<TcpStream>>,
    url: String,
    timeout: Duration,
    buf_size: usize,
}

impl<'a> Recv<'a> {
    fn new(dest: &'a File, base: u64, progress: &'a Progress, url: &str, timeout: Duration) -> Recv<'a> {
        Recv {
            dest,
            progress,
            base,
            eods: AtomicU64::new(0),
            eodc: AtomicU64::new(u64::MAX),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            socks: Mutex::new(Vec::new()),
            url: url.to_string(),
            timeout,
            buf_size: 4 << 20,
        }
    }

    /// `[off, off+len)` is in the file.
    fn report(&self, off: u64, len: u64) {
        self.progress.add(off, len);
    }

    fn fail(&self, e: TransferError) {
        let mut g = self.error.lock().unwrap();
        if g.is_none() {
            *g = Some(e);
        }
    }
    fn complete(&self) -> bool {
        let c = self.eodc.load(Ordering::Acquire);
        c != u64::MAX && self.eods.load(Ordering::Acquire) >= c
    }
    fn io(&self, e: std::io::Error) -> TransferError {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            TransferError::Timeout { url: self.url.clone(), reason: format!("data channel idle for {:?}", self.timeout) }
        } else {
            TransferError::Interrupted { url: self.url.clone(), reason: format!("data channel: {e}") }
        }
    }
    fn shutdown_all(&self) {
        for s in self.socks.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// One data connection: (TLS handshake,) then blocks until EOD — read from the socket, or
    /// with data-channel protection from the TLS session.
    fn stream(&self, s: TcpStream, dcau: Option<&Dcau>) -> Result<()> {
        s.set_read_timeout(Some(self.timeout)).ok();
        s.set_write_timeout(Some(self.timeout)).ok();
        match dcau {
            None => self.blocks_clear(s),
            Some(d) => {
                let (tls, peer, early) = gss::accept_tls_on_socket(&d.ctx, &d.certdir, s, d.protect)
                    .map_err(|e| self.auth(format!("data channel: {e}")))?;
                gss::check_same_identity(&d.cred, &peer.chain).map_err(|e| self.auth(format!("data channel: {e}")))?;
                if d.protect {
                    // Data may have started in the record where a delegation flag could be.
                    self.blocks(&mut std::io::Cursor::new(early).chain(tls), None)
                } else if let Some(b) = early.first() {
                    Err(self.auth(format!("data channel: unexpected delegation flag 0x{b:02x}")))
                } else {
                    let raw = tls.get_ref().try_clone().map_err(|e| self.io(e))?;
                    self.blocks_clear(raw)
                }
            }
        }
    }

    /// What block header `h` asks for (and the EOD count, when it carries EOF).
    fn step(&self, h: &BlockHeader) -> Result<Step> {
        if h.is_eof() {
            self.eodc.store(h.offset, Ordering::Release);
        }
        let data = h.count > 0 && !h.is_eof();
        if data && h.desc & desc::RESTART != 0 || (h.count > 0 && h.is_eof()) {
            // Restart-marker payload (or junk on an EOF block).
            Ok(Step::Skip(h.count))
        } else if data {
            // The block must end within the 64-bit file space (fuzzing: offset + count overflowed).
            let off = self.base.checked_add(h.offset).filter(|o| o.checked_add(h.count).is_some()).ok_or_else(|| {
                TransferError::Protocol {
                    url: self.url.clone(),
                    reason: format!("block at offset {} of {} bytes overflows", h.offset, h.count),
                }
            })?;
            Ok(Step::Data { off, count: h.count })
        } else {
            Ok(Step::Empty)
        }
    }

    fn aborted(&self) -> TransferError {
        TransferError::Interrupted { url: self.url.clone(), reason: "transfer aborted".into() }
    }

    /// MODE E blocks until EOD, copied through a buffer; starting with header `first` when the
    /// caller has read it already.
    fn blocks<R: Read>(&self, s: &mut R, first: Option<[u8; HEADER_LEN]>) -> Result<()> {
        let mut buf = vec![0u8; self.buf_size];
        let mut fill = 0usize;
        let mut fill_off = 0u64;
        let flush = |buf: &[u8], off: u64| -> Result<()> {
            if buf.is_empty() {
                return Ok(());
            }
            self.dest.write_all_at(buf, off).map_err(|e| TransferError::io("writing the target file", e))?;
            self.report(off, buf.len() as u64);
            Ok(())
        };
        let mut hdr = [0u8; HEADER_LEN];
        match first {
            Some(h) => hdr = h,
            None => s.read_exact(&mut hdr).map_err(|e| self.io(e))?,
        }
        let r = (|| -> Result<()> {
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(self.aborted());
                }
                self.progress.check()?;
                let h = BlockHeader::parse(&hdr);
                let last = h.is_eod();
                match self.step(&h)? {
                    Step::Skip(n) => {
                        skip(s, n).map_err(|e| self.io(e))?;
                        if !last {
                            s.read_exact(&mut hdr).map_err(|e| self.io(e))?;
                        }
                    }
                    Step::Data { off, count } => {
                        if fill > 0
                            && (fill_off.checked_add(fill as u64) != Some(off)
                                || (fill as u64).saturating_add(count) > buf.len() as u64)
                        {
                            flush(&buf[..fill], fill_off)?;
                            fill = 0;
                        }
                        if count > buf.len() as u64 {
                            // A block larger than our buffer: stream it through in pieces.
                            let mut done = 0u64;
                            while done < count {
                                let k = ((count - done) as usize).min(buf.len());
                                s.read_exact(&mut buf[..k]).map_err(|e| self.io(e))?;
                                flush(&buf[..k], off + done)?;
                                done += k as u64;
                            }
                            if !last {
                                s.read_exact(&mut hdr).map_err(|e| self.io(e))?;
                            }
                        } else {
                            if fill == 0 {
                                fill_off = off;
                            }
                            let end = fill + count as usize;
                            let res = if last {
                                read_two(s, &mut buf[fill..end], &mut [])
                            } else {
                                read_two(s, &mut buf[fill..end], &mut hdr)
                            };
                            if let Err(e) = res {
                                // Keep the complete blocks for a resume.
                                let _ = flush(&buf[..fill], fill_off);
                                fill = 0;
                                return Err(self.io(e));
                            }
                            fill = end;
                        }
                    }
                    Step::Empty => {
                        if !last {
                            s.read_exact(&mut hdr).map_err(|e| self.io(e))?;
                        }
                    }
                }
                if last {
                    flush(&buf[..fill], fill_off)?;
                    fill = 0;
                    self.eods.fetch_add(1, Ordering::AcqRel);
                    return Ok(());
                }
            }
        })();
        if r.is_err() && fill > 0 {
            let _ = flush(&buf[..fill], fill_off);
        }
        r
    }

    /// A clear data connection: block data moves socket → pipe → file with `splice(2)`, never
    /// through user space; headers and restart markers are read normally. Where splice is not
    /// available (no pipe, a file system without splice, a socket that refuses) the buffered
    /// `blocks`.
    fn blocks_clear(&self, mut s: TcpStream) -> Result<()> {
        let pipe = match Pipe::new() {
            Ok(p) if p.splices_to(self.dest, self.base) => p,
            _ => return self.blocks(&mut s, None),
        };
        match self.blocks_spliced(&s, &pipe)? {
            None => Ok(()),
            Some(hdr) => self.blocks(&mut s, Some(hdr)),
        }
    }

    /// MODE E blocks until EOD with the data spliced through `p`. `Some(header)`: the socket
    /// refused to splice before any of that header's data was read — go on with `blocks` there.
    fn blocks_spliced(&self, s: &TcpStream, p: &Pipe) -> Result<Option<[u8; HEADER_LEN]>> {
        // Complete blocks in the file, not yet reported: contiguous ones are reported together
        // (up to `buf_size`, as `blocks` coalesces them), and at the end whatever the outcome.
        let mut held = (0u64, 0u64);
        let r = (|| {
            let mut r = s;
            let mut hdr = [0u8; HEADER_LEN];
            loop {
                r.read_exact(&mut hdr).map_err(|e| self.io(e))?;
                if self.stop.load(Ordering::Relaxed) {
                    return Err(self.aborted());
                }
                self.progress.check()?;
                let h = BlockHeader::parse(&hdr);
                match self.step(&h)? {
                    Step::Skip(n) => skip(&mut r, n).map_err(|e| self.io(e))?,
                    Step::Data { off, count } => {
                        if !self.splice_block(s, p, off, count, &mut held)? {
                            return Ok(Some(hdr));
                        }
                    }
                    Step::Empty => {}
                }
                if h.is_eod() {
                    return Ok(None);
                }
            }
        })();
        self.report(held.0, held.1);
        if let Ok(None) = r {
            self.eods.fetch_add(1, Ordering::AcqRel);
        }
        r
    }

    /// Moves one block's `count` data bytes from `s` through `p` into the file at `off`. Progress
    /// hears of a range only once it is wholly in the file: a block when it is complete (added
    /// to `held`), a block larger than `buf_size` in `buf_size` pieces (as `blocks` does) — so
    /// after a failure the reported ranges are exactly what a resume may keep. `Ok(false)`: the
    /// socket cannot splice, and nothing was read.
    fn splice_block(&self, s: &TcpStream, p: &Pipe, off: u64, count: u64, held: &mut (u64, u64)) -> Result<bool> {
        let write_err = |e| TransferError::io("writing the target file", e);
        let piece = self.buf_size as u64;
        if held.1 > 0 && (held.0 + held.1 != off || held.1 + count > piece) {
            self.report(held.0, held.1);
            *held = (off, 0);
        }
        let (sock, file) = (s.as_raw_fd(), self.dest.as_raw_fd());
        let (mut landed, mut reported) = (0u64, 0u64);
        while landed < count {
            // At most a pipeful, and the pipe is empty here: the splice never waits for room.
            let want = (count - landed).min(p.cap as u64) as usize;
            let n = match splice(sock, p.w.as_raw_fd(), None, want) {
                Ok(0) => return Err(self.io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(e) if landed == 0 && splice_unsupported(&e) => return Ok(false),
                Err(e) => return Err(self.io(e)),
            };
            let mut o = off
                .checked_add(landed)
                .and_then(|o| libc::loff_t::try_from(o).ok())
                .ok_or_else(|| write_err(std::io::Error::from_raw_os_error(libc::EFBIG)))?;
            let mut left = n;
            while left > 0 {
                // The kernel advances `o` by what it wrote.
                match splice(p.r.as_raw_fd(), file, Some(&mut o), left) {
                    Ok(0) => return Err(write_err(std::io::ErrorKind::WriteZero.into())),
                    Ok(k) => left -= k,
                    Err(e) => return Err(write_err(e)),
                }
            }
            landed += n as u64;
            if count > piece && (landed == count || landed - reported >= piece) {
                self.report(off + reported, landed - reported);
                reported = landed;
            }
        }
        if count <= piece {
            if held.1 == 0 {
                held.0 = off;
            }
            held.1 += count;
        }
        Ok(true)
    }

    fn auth(&self, reason: String) -> TransferError {
        TransferError::Auth { url: self.url.clone(), reason }
    }
}

/// Waits until `fd` is readable or `ms` passed.
fn poll_in(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Receives a MODE E transfer: accepts the sender's connections on `listener` and writes blocks
/// at `base + offset` in `dest`. `control` runs meanwhile on this thread (it reads the control
/// replies up to the final one); returns when both the control side and every data connection
/// are done.
#[allow(clippy::too_many_arguments)]
pub fn receive(
    listener: TcpListener,
    dest: &File,
    base: u64,
    progress: &Progress,
    dcau: Option<&Dcau>,
    url: &str,
    timeout: Duration,
    control: impl FnOnce(&dyn Fn() -> bool) -> Result<()>,
) -> Result<()> {
    listener.set_nonblocking(true).ok();
    let st = Recv::new(dest, base, progress, url, timeout);
    let ctl_done = AtomicBool::new(false);
    let ctl_result = std::thread::scope(|scope| {
        let st = &st;
        let ctl_done = &ctl_done;
        let acceptor = scope.spawn(move || {
            let mut idle_since = Instant::now();
            loop {
                if st.stop.load(Ordering::Relaxed) || st.complete() {
                    return;
                }
                let c = st.eodc.load(Ordering::Acquire);
                if c != u64::MAX && st.accepted.load(Ordering::Relaxed) as u64 >= c {
                    return;
                }
                if ctl_done.load(Ordering::Acquire)
                    && st.accepted.load(Ordering::Relaxed) > 0
                    && idle_since.elapsed() > Duration::from_secs(2)
                {
                    return;
                }
                if !poll_in(listener.as_raw_fd(), 50) {
                    if idle_since.elapsed() > timeout && st.accepted.load(Ordering::Relaxed) == 0 {
                        st.fail(TransferError::Timeout {
                            url: st.url.clone(),
                            reason: format!("no data connection within {timeout:?}"),
                        });
                        return;
                    }
                    continue;
                }
                match listener.accept() {
                    Ok((s, peer)) => {
                        idle_since = Instant::now();
                        s.set_nonblocking(false).ok();
                        tracing::debug!(%peer, "data connection");
                        if let Ok(c) = s.try_clone() {
                            st.socks.lock().unwrap().push(c);
                        }
                        st.accepted.fetch_add(1, Ordering::Relaxed);
                        scope.spawn(move || {
                            if let Err(e) = st.stream(s, dcau) {
                                tracing::debug!("data stream failed: {e}");
                                st.fail(e);
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        st.fail(TransferError::io("accepting a data connection", e));
                        return;
                    }
                }
            }
        });
        let moving = {
            let last = AtomicU64::new(progress.bytes());
            move || {
                let now = progress.bytes();
                let before = last.swap(now, Ordering::Relaxed);
                now != before && st.error.lock().unwrap().is_none()
            }
        };
        let r = control(&moving);
        ctl_done.store(true, Ordering::Release);
        if r.is_err() {
            st.stop.store(true, Ordering::Relaxed);
            st.shutdown_all();
        } else {
            // The data may still be in flight: give the streams until they go idle.
            let mut last = progress.bytes();
            let mut since = Instant::now();
            while !st.complete() && st.error.lock().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
                let now = progress.bytes();
                if now != last {
                    last = now;
                    since = Instant::now();
                } else if since.elapsed() > timeout {
                    break;
                }
            }
            st.stop.store(true, Ordering::Relaxed);
            if !st.complete() {
                st.shutdown_all();
            }
        }
        let _ = acceptor.join();
        r
    });
    ctl_result?;
    if let Some(e) = st.error.lock().unwrap().take() {
        return Err(e);
    }
    if !st.complete() {
        return Err(TransferError::Interrupted {
            url: url.to_string(),
            reason: format!(
                "data incomplete: {} of {} streams ended",
                st.eods.load(Ordering::Relaxed),
                match st.eodc.load(Ordering::Relaxed) {
                    u64::MAX => "?".to_string(),
                    c => c.to_string(),
                }
            ),
        });
    }
    Ok(())
}

fn send_all(fd: i32, data: &[u8], more: bool) -> std::io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::send(fd, data[off..].as_ptr() as *const _, data.len() - off, flags) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
    }
    Ok(())
}

fn sendfile_all(sock: i32, file: i32, mut off: u64, len: u64) -> std::io::Result<()> {
    let end = off + len;
    while off < end {
        let mut o = off as libc::off_t;
        // SAFETY: valid fds; o is a valid offset pointer.
        let n = unsafe { libc::sendfile(sock, file, &mut o, (end - off) as usize) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "source file shrank"));
        }
        off += n as u64;
    }
    Ok(())
}

/// Sends `[start, start+len)` of `src` over `streams` connections to `addr` in MODE E; block
/// offsets are relative to `start` (as `ESTO A start` / plain STOR expect). Blocks are claimed
/// dynamically, so fast streams carry more.
#[allow(clippy::too_many_arguments)]
pub fn send(
    addr: SocketAddr,
    streams: usize,
    src: &File,
    start: u64,
    len: u64,
    block: u64,
    progress: &Progress,
    dcau: Option<&Dcau>,
    url: &str,
    timeout: Duration,
) -> Result<()> {
    let next = AtomicU64::new(0);
    let streams = streams.max(1);
    let err = Mutex::new(None::<TransferError>);
    let io = |e: std::io::Error| {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            TransferError::Timeout { url: url.to_string(), reason: format!("data channel: {e}") }
        } else {
            TransferError::Interrupted { url: url.to_string(), reason: format!("data channel: {e}") }
        }
    };
    std::thread::scope(|scope| {
        for i in 0..streams {
            let (next, err, io) = (&next, &err, &io);
            scope.spawn(move || {
                let r = (|| -> Result<()> {
                    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| TransferError::Connect {
                        url: url.to_string(),
                        reason: format!("data connection to {addr}: {e}"),
                    })?;
                    s.set_read_timeout(Some(timeout)).ok();
                    s.set_write_timeout(Some(timeout)).ok();
                    if let Some(d) = dcau {
                        let auth =
                            |e: gss::GssError| TransferError::Auth { url: url.into(), reason: format!("data channel: {e}") };
                        let (tls, peer) = gss::connect_tls_on_socket(&d.ctx, &d.certdir, s, d.protect).map_err(auth)?;
                        gss::check_same_identity(&d.cred, &peer.chain).map_err(auth)?;
                        if d.protect {
                            return send_tls(tls, i, streams, next, err, src, start, len, block, progress, io);
                        }
                        s = tls.get_ref().try_clone().map_err(io)?;
                    }
                    let fd = s.as_raw_fd();
                    loop {
                        let (rel, n) = match claim_block(next, err, block, len) {
                            Claim::Block(rel, n) => (rel, n),
                            Claim::Done => break,
                            Claim::Abort => return Ok(()),
                        };
                        let h = BlockHeader { desc: 0, count: n, offset: rel }.encode();
                        send_all(fd, &h, true).map_err(io)?;
                        sendfile_all(fd, src.as_raw_fd(), start + rel, n).map_err(io)?;
                        progress.add(start + rel, n);
                        progress.check()?;
                    }
                    send_all(fd, &eod_header(i, streams), false).map_err(io)?;
                    let _ = s.shutdown(Shutdown::Write);
                    // Drain until the receiver closes, so no unread bytes turn our close into a reset.
                    let mut sink = [0u8; 4096];
                    let deadline = Instant::now() + timeout;
                    while Instant::now() < deadline {
                        match s.read(&mut sink) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    let mut g = err.lock().unwrap();
                    if g.is_none() {
                        *g = Some(e);
                    }
                }
            });
        }
    });
    match err.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a sending stream does next.
enum Claim {
    /// Send `len` bytes at offset `rel` (relative to the transfer's start).
    Block(u64, u64),
    /// Every block is claimed: close the stream with EOD.
    Done,
    /// Another stream failed: stop at once.
    Abort,
}

/// Claims the next block of the file for one of the parallel sending streams.
fn claim_block(next: &AtomicU64, err: &Mutex<Option<TransferError>>, block: u64, len: u64) -> Claim {
    if err.lock().unwrap().is_some() {
        return Claim::Abort;
    }
    let rel = next.fetch_add(block, Ordering::Relaxed);
    if rel >= len {
        return Claim::Done;
    }
    Claim::Block(rel, block.min(len - rel))
}

/// The closing header of sending stream `i` of `streams`: EOD on every stream; stream 0 also
/// carries EOF, with the EOD count (the number of data connections) in its offset field.
fn eod_header(i: usize, streams: usize) -> [u8; HEADER_LEN] {
    let d = if i == 0 { desc::EOD | desc::EOF | desc::CLOSE } else { desc::EOD | desc::CLOSE };
    BlockHeader { desc: d, count: 0, offset: if i == 0 { streams as u64 } else { 0 } }.encode()
}

/// The sending side of one protected (`PROT S`/`PROT P`) data connection: each block's header
/// and data, read from the file into one reusable buffer, go out as TLS application records.
#[allow(clippy::too_many_arguments)]
fn send_tls(
    mut s: openssl::ssl::SslStream<TcpStream>,
    i: usize,
    streams: usize,
    next: &AtomicU64,
    err: &Mutex<Option<TransferError>>,
    src: &File,
    start: u64,
    len: u64,
    block: u64,
    progress: &Progress,
    io: &dyn Fn(std::io::Error) -> TransferError,
) -> Result<()> {
    use std::io::Write;
    let mut buf = vec![0u8; HEADER_LEN + block as usize];
    loop {
        let (rel, n) = match claim_block(next, err, block, len) {
            Claim::Block(rel, n) => (rel, n),
            Claim::Done => break,
            Claim::Abort => return Ok(()),
        };
        buf[..HEADER_LEN].copy_from_slice(&BlockHeader { desc: 0, count: n, offset: rel }.encode());
        let body = &mut buf[HEADER_LEN..HEADER_LEN + n as usize];
        src.read_exact_at(body, start + rel).map_err(|e| TransferError::io("reading the source file", e))?;
        s.write_all(&buf[..HEADER_LEN + n as usize]).map_err(io)?;
        progress.add(start + rel, n);
        progress.check()?;
    }
    s.write_all(&eod_header(i, streams)).map_err(io)?;
    s.flush().map_err(io)?;
    // close_notify, then half-close and drain raw until the receiver closes (no reset).
    let _ = s.shutdown();
    let mut raw = s.get_ref().try_clone().map_err(io)?;
    let _ = raw.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + raw.read_timeout().ok().flatten().unwrap_or(Duration::from_secs(60));
    while Instant::now() < deadline {
        match raw.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

/// One MODE E data connection's block stream, read from `input` into `dest` as the receiving
/// side reads it (with a `buf_size` buffer), for the fuzz targets in `fuzz/`. Returns the EOD
/// count announced by an EOF block, if any.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn fuzz_receive_blocks(input: &[u8], dest: &File, base: u64, buf_size: usize) -> Result<Option<u64>> {
    let progress = Progress::new("fuzz", None, None, Duration::from_secs(3600));
    let mut r = Recv::new(dest, base, &progress, "gsiftp://fuzz/", Duration::from_secs(1));
    r.buf_size = buf_size.max(1);
    r.blocks(&mut std::io::Cursor::new(input), None)?;
    let c = r.eodc.load(Ordering::Acquire);
    Ok((c != u64::MAX).then_some(c))
}

/// Receives a stream-mode transfer (plain FTP): everything until the sender closes.
pub fn receive_stream(
    mut s: TcpStream,
    dest: &File,
    base: u64,
    progress: &Progress,
    url: &str,
    timeout: Duration,
) -> Result<u64> {
    s.set_read_timeout(Some(timeout)).ok();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = base;
    loop {
        let mut fill = 0;
        while fill < buf.len() {
            match s.read(&mut buf[fill..]) {
                Ok(0) => break,
                Ok(n) => fill += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = dest.write_all_at(&buf[..fill], off).map(|_| progress.add(off, fill as u64));
                    return Err(TransferError::Interrupted { url: url.into(), reason: format!("data channel: {e}") });
                }
            }
        }
        if fill == 0 {
            return Ok(off - base);
        }
        dest.write_all_at(&buf[..fill], off).map_err(|e| TransferError::io("writing the target file", e))?;
        progress.add(off, fill as u64);
        off += fill as u64;
    }
}

/// Sends a stream-mode transfer (plain FTP).
pub fn send_stream(s: TcpStream, src: &File, start: u64, len: u64, progress: &Progress, url: &str) -> Result<()> {
    sendfile_all(s.as_raw_fd(), src.as_raw_fd(), start, len)
        .map_err(|e| TransferError::Interrupted { url: url.into(), reason: format!("data channel: {e}") })?;
    progress.add(start, len);
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Fuzzing (fuzz/, target mode_e): a block whose offset + count passes 2^64 overflowed the
    /// receiver's buffer bookkeeping (a panic); it must be a protocol error.
    #[test]
    fn a_block_ending_past_the_64_bit_file_space_is_an_error_not_a_panic() {
        let input: [u8; 83] = [
            0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42, 0x05, 0xde, 0xde, 0xde, 0xde, 0x42, 0x42, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
            0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x2d, 0xfe, 0xff, 0xff, 0xff, 0x31,
            0x30, 0x30, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x2d, 0xfe, 0xff, 0xff, 0xff, 0x31, 0x30, 0x00,
            0x00, 0x00, 0xc8, 0x74, 0x61, 0x69, 0x6c,
        ];
        let (&b, stream) = input.split_first().unwrap();
        let dest = tempfile::tempfile().unwrap();
        let r = fuzz_receive_blocks(stream, &dest, (b as u64 >> 6) * 7, 1 + (b as usize % 64));
        assert!(r.is_err(), "{r:?}");
    }

    use super::*;
    use std::io::Write;

    #[test]
    fn header_roundtrip_and_observed_values() {
        // EOF+EOD with an EOD count of 2, as seen on the wire.
        let raw: [u8; 17] = [0x48, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let h = BlockHeader::parse(&raw);
        assert!(h.is_eod() && h.is_eof());
        assert_eq!((h.count, h.offset), (0, 2));
        assert_eq!(h.encode(), raw);
        let d = BlockHeader { desc: 0, count: 262144, offset: 1 << 33 };
        assert_eq!(BlockHeader::parse(&d.encode()), d);
        assert_eq!(&d.encode()[1..9], &[0, 0, 0, 0, 0, 4, 0, 0]);
    }

    /// Two streams, out-of-order blocks, EOD count on the second stream: the file is assembled
    /// by position.
    #[test]
    fn receives_out_of_order_blocks_over_two_streams() {
        let dir = tempfile::tempdir().unwrap();
        let dest = File::options().create(true).truncate(true).read(true).write(true).open(dir.path().join("out")).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let progress = Progress::new("t", Some(data.len() as u64), None, Duration::from_secs(1));
        let d2 = data.clone();
        let sender = std::thread::spawn(move || {
            let blocks = [(60_000u64, 40_000u64), (0, 30_000), (30_000, 30_000)];
            let mut a = TcpStream::connect(addr).unwrap();
            let mut b = TcpStream::connect(addr).unwrap();
            for (k, (off, n)) in blocks.iter().enumerate() {
                let s = if k % 2 == 0 { &mut a } else { &mut b };
                s.write_all(&BlockHeader { desc: 0, count: *n, offset: *off }.encode()).unwrap();
                s.write_all(&d2[*off as usize..(*off + *n) as usize]).unwrap();
            }
            a.write_all(&BlockHeader { desc: desc::EOD, count: 0, offset: 0 }.encode()).unwrap();
            b.write_all(&BlockHeader { desc: desc::EOD | desc::EOF, count: 0, offset: 2 }.encode()).unwrap();
        });
        receive(l, &dest, 0, &progress, None, "t", Duration::from_secs(5), |_| Ok(())).unwrap();
        sender.join().unwrap();
        let mut got = vec![0u8; data.len()];
        dest.read_exact_at(&mut got, 0).unwrap();
        assert!(got == data);
        assert_eq!(progress.prefix(), data.len() as u64);
    }

    #[test]
    fn truncated_stream_is_an_error_and_keeps_complete_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let dest = File::options().create(true).truncate(true).read(true).write(true).open(dir.path().join("out")).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let progress = Progress::new("t", None, None, Duration::from_secs(1));
        let sender = std::thread::spawn(move || {
            let mut a = TcpStream::connect(addr).unwrap();
            a.write_all(&BlockHeader { desc: 0, count: 10, offset: 0 }.encode()).unwrap();
            a.write_all(&[1u8; 10]).unwrap();
            a.write_all(&BlockHeader { desc: 0, count: 1000, offset: 10 }.encode()).unwrap();
            a.write_all(&[2u8; 10]).unwrap();
        });
        let e = receive(l, &dest, 0, &progress, None, "t", Duration::from_secs(2), |_| Ok(())).unwrap_err();
        sender.join().unwrap();
        assert_eq!(e.kind(), "interrupted", "{e}");
        assert_eq!(progress.prefix(), 10);
    }

    /// The splice path: out-of-order blocks, a restart marker, an empty block, a block bigger
    /// than the pipe (and reported in `buf_size` pieces) and junk on the EOF block, over a real
    /// loopback connection into a real file at a base offset.
    #[test]
    fn splices_blocks_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = File::options().create(true).truncate(true).read(true).write(true).open(dir.path().join("out")).unwrap();
        let data: Vec<u8> = (0..(5u32 << 20) + 12_345).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let d2 = data.clone();
        let sender = std::thread::spawn(move || {
            let mut a = TcpStream::connect(addr).unwrap();
            let len = d2.len() as u64;
            let big = (3 << 20) + 1;
            let mut block = |desc: u8, off: u64, payload: &[u8]| {
                a.write_all(&BlockHeader { desc, count: payload.len() as u64, offset: off }.encode()).unwrap();
                a.write_all(payload).unwrap();
            };
            block(0, 300_000, &d2[300_000..len as usize - big]);
            block(desc::RESTART, 0, b"0-300000,junk");
            block(0, 0, &d2[..100_000]);
            block(0, 12, &[]);
            block(0, len - big as u64, &d2[len as usize - big..]);
            block(0, 100_000, &d2[100_000..300_000]);
            block(desc::EOF, 1, b"junk");
            block(desc::EOD, 0, &[]);
            // Stay open: the receiver must stop at EOD, not at the end of the connection.
            std::thread::sleep(Duration::from_millis(300));
        });
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let progress = Progress::new("t", Some(data.len() as u64), None, Duration::from_secs(1));
        let mut st = Recv::new(&dest, 7, &progress, "t", Duration::from_secs(5));
        st.buf_size = 1 << 20;
        let pipe = Pipe::new().unwrap();
        assert!(pipe.cap >= 64 << 10 && (pipe.cap as u64) < (3 << 20), "{}", pipe.cap);
        assert!(pipe.splices_to(&dest, 7));
        assert_eq!(dest.metadata().unwrap().len(), 0, "the probe writes nothing");
        assert_eq!(st.blocks_spliced(&s, &pipe).unwrap(), None, "spliced to the end");
        sender.join().unwrap();
        assert_eq!((st.eods.load(Ordering::Relaxed), st.eodc.load(Ordering::Relaxed)), (1, 1));
        let got = std::fs::read(dir.path().join("out")).unwrap();
        assert_eq!(got.len(), data.len() + 7);
        assert!(got[..7] == [0; 7] && got[7..] == data[..]);
        assert_eq!(progress.bytes(), data.len() as u64);
        assert_eq!(progress.ranges().prefix(), 0, "nothing reported below the base");
    }

    /// A clear stream that stalls mid-block: splice honours the socket's receive timeout, and
    /// only the whole block before it is reported.
    #[test]
    fn spliced_stall_times_out_and_reports_only_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let dest = File::options().create(true).truncate(true).read(true).write(true).open(dir.path().join("out")).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            let mut a = TcpStream::connect(addr).unwrap();
            a.write_all(&BlockHeader { desc: 0, count: 1000, offset: 0 }.encode()).unwrap();
            a.write_all(&[1u8; 1000]).unwrap();
            a.write_all(&BlockHeader { desc: 0, count: 1 << 20, offset: 1000 }.encode()).unwrap();
            a.write_all(&[2u8; 5000]).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
        });
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let progress = Progress::new("t", None, None, Duration::from_secs(1));
        let st = Recv::new(&dest, 0, &progress, "t", Duration::from_millis(300));
        let pipe = Pipe::new().unwrap();
        let t = Instant::now();
        let e = st.blocks_spliced(&s, &pipe).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(e.kind(), "timeout", "{e}");
        assert_eq!((progress.prefix(), progress.bytes()), (1000, 1000));
        drop(s);
        sender.join().unwrap();
    }

    /// Where the file refuses splice (here: O_APPEND) the probe says so without writing; the
    /// buffered path then takes over at a header already read.
    #[test]
    fn falls_back_to_the_buffered_path() {
        let dir = tempfile::tempdir().unwrap();
        let appending = File::options().create(true).append(true).open(dir.path().join("a")).unwrap();
        assert!(!Pipe::new().unwrap().splices_to(&appending, 0));
        assert_eq!(appending.metadata().unwrap().len(), 0);
        let dest = File::options().create(true).truncate(true).read(true).write(true).open(dir.path().join("out")).unwrap();
        let progress = Progress::new("t", None, None, Duration::from_secs(1));
        let st = Recv::new(&dest, 0, &progress, "t", Duration::from_secs(1));
        let first = BlockHeader { desc: 0, count: 3, offset: 2 }.encode();
        let mut rest = b"abc".to_vec();
        rest.extend(BlockHeader { desc: desc::EOD | desc::EOF, count: 2, offset: 1 }.encode());
        rest.extend(b"xx");
        st.blocks(&mut std::io::Cursor::new(rest), Some(first)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"\0\0abc");
        assert_eq!(st.eods.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sender_and_receiver_agree() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&src_path, &data).unwrap();
        let src = File::open(&src_path).unwrap();
        let dest = File::options().create(true).truncate(true).read(true).write(true).open(dir.path().join("out")).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let p1 = Progress::new("t", None, None, Duration::from_secs(1));
        let p2 = Progress::new("t", None, None, Duration::from_secs(1));
        std::thread::scope(|s| {
            s.spawn(|| send(addr, 3, &src, 0, data.len() as u64, 100_000, &p1, None, "t", Duration::from_secs(5)).unwrap());
            receive(l, &dest, 0, &p2, None, "t", Duration::from_secs(5), |_| Ok(())).unwrap();
        });
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), data);
    }
}
