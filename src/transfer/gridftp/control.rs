//! The GridFTP control channel: RFC 959 replies (single and multi-line), RFC 2228 security
//! (`AUTH GSSAPI`, the `ADAT` token exchange, then every command sent as `ENC <base64>` and every
//! reply received as `631`/`632`/`633 <base64>` wrapped lines), with a timeout on every read;
//! and the arguments of `PORT`/`PASV` and `111 Range Marker` (restart marker) replies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use openssl::base64;

use crate::security::gss::{self, Context, Initiator};
use crate::transfer::{Result, TransferError};

/// One complete reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub code: u16,
    /// The text of every line, without the code prefix on the first and last line.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
    pub fn class(&self) -> u16 {
        self.code / 100
    }
    pub fn is_preliminary(&self) -> bool {
        self.class() == 1
    }
    pub fn is_ok(&self) -> bool {
        self.class() == 2
    }
}

/// Assembles lines into replies (RFC 959 §4.2: `ddd-` opens a multi-line reply that the first
/// line starting with `ddd ` closes).
#[derive(Default, Debug)]
pub struct ReplyParser {
    open: Option<(u16, Vec<String>)>,
}

fn code_of(line: &str) -> Option<u16> {
    let b = line.as_bytes();
    if b.len() >= 3 && b[..3].iter().all(|c| c.is_ascii_digit()) && (b.len() == 3 || b[3] == b' ' || b[3] == b'-') {
        line[..3].parse().ok()
    } else {
        None
    }
}

impl ReplyParser {
    pub fn push(&mut self, line: &str) -> std::result::Result<Option<Reply>, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        match &mut self.open {
            None => {
                let code = code_of(line).ok_or_else(|| format!("malformed reply line {line:?}"))?;
                if !(100..600).contains(&code) {
                    return Err(format!("reply code {code} out of range"));
                }
                let text = line.get(4..).unwrap_or("").to_string();
                if line.as_bytes().get(3) == Some(&b'-') {
                    self.open = Some((code, vec![text]));
                    Ok(None)
                } else {
                    Ok(Some(Reply { code, lines: vec![text] }))
                }
            }
            Some((code, lines)) => {
                if code_of(line) == Some(*code) && line.as_bytes().get(3) != Some(&b'-') {
                    lines.push(line.get(4..).unwrap_or("").to_string());
                    let (code, lines) = self.open.take().unwrap();
                    Ok(Some(Reply { code, lines }))
                } else {
                    if lines.len() > 10_000 {
                        return Err("multi-line reply too long".into());
                    }
                    lines.push(line.to_string());
                    Ok(None)
                }
            }
        }
    }
}

/// A protected reply line (RFC 2228 631 = MIC, 632 = ENC, 633 = CONF): its base64 token.
pub fn protected_token(line: &str) -> Option<&str> {
    let l = line.trim_end_matches(['\r', '\n']);
    let code = code_of(l)?;
    if (631..=633).contains(&code) {
        Some(l.get(4..).unwrap_or("").trim())
    } else {
        None
    }
}

/// The token of an `ADAT=` reply (335/235), if any.
pub fn adat_token(r: &Reply) -> Option<&str> {
    let t = r.lines.first()?;
    let i = t.find("ADAT=")?;
    let tok = t[i + 5..].split_whitespace().next().unwrap_or("");
    if tok.is_empty() {
        None
    } else {
        Some(tok)
    }
}

pub fn b64_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    base64::decode_block(s).map_err(|e| format!("bad base64 token: {e}"))
}

/// The control connection.
pub struct Control {
    sock: TcpStream,
    url: String,
    timeout: Duration,
    rbuf: Vec<u8>,
    rpos: usize,
    line: Vec<u8>,
    gss: Option<Context>,
    plain: Vec<u8>,
    parser: ReplyParser,
    /// Protected replies are also logged at debug level (cleartext).
    pub trace: bool,
}

const MAX_LINE: usize = 1 << 20;

impl Control {
    pub fn connect(host: &str, port: u16, url: &str, timeout: Duration) -> Result<Control> {
        let err = |r: String| TransferError::Connect { url: url.to_string(), reason: r };
        let addrs: Vec<SocketAddr> =
            (host, port).to_socket_addrs().map_err(|e| err(format!("cannot resolve {host}: {e}")))?.collect();
        let mut last = String::from("no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(sock) => {
                    sock.set_read_timeout(Some(timeout)).ok();
                    sock.set_write_timeout(Some(timeout)).ok();
                    sock.set_nodelay(true).ok();
                    return Ok(Control {
                        sock,
                        url: url.to_string(),
                        timeout,
                        rbuf: vec![0; 64 << 10],
                        rpos: 0,
                        line: Vec::new(),
                        gss: None,
                        plain: Vec::new(),
                        parser: ReplyParser::default(),
                        trace: false,
                    })
                    .map(|mut c: Control| {
                        c.rbuf.truncate(0);
                        c
                    });
                }
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(err(last))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
    }
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.sock.peer_addr().ok()
    }
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn is_protected(&self) -> bool {
        self.gss.is_some()
    }

    fn io_error(&self, e: std::io::Error, doing: &str) -> TransferError {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            TransferError::Timeout { url: self.url.clone(), reason: format!("no reply within {:?} ({doing})", self.timeout) }
        } else {
            TransferError::Interrupted { url: self.url.clone(), reason: format!("control connection: {e} ({doing})") }
        }
    }

    /// Reads one raw line from the socket (a partial line survives a timeout).
    fn raw_line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.rbuf[self.rpos..].iter().position(|&b| b == b'\n') {
                self.line.extend_from_slice(&self.rbuf[self.rpos..self.rpos + i + 1]);
                self.rpos += i + 1;
                let l = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                return Ok(l);
            }
            self.line.extend_from_slice(&self.rbuf[self.rpos..]);
            self.rbuf.clear();
            self.rpos = 0;
            if self.line.len() > MAX_LINE {
                return Err(TransferError::Protocol { url: self.url.clone(), reason: "reply line too long".into() });
            }
            self.rbuf.resize(64 << 10, 0);
            let n = match self.sock.read(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf.clear();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(self.io_error(e, "reading a reply"));
                }
            };
            self.rbuf.truncate(n);
            if n == 0 {
                return Err(TransferError::Interrupted {
                    url: self.url.clone(),
                    reason: "the server closed the control connection".into(),
                });
            }
        }
    }

    /// The next cleartext line (unwrapping protected replies).
    fn next_line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.plain.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.plain.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&l).into_owned());
            }
            let raw = self.raw_line()?;
            match (protected_token(&raw), self.gss.as_mut()) {
                (Some(tok), Some(ctx)) => {
                    let bytes = b64_decode(tok).map_err(|r| TransferError::Protocol { url: self.url.clone(), reason: r })?;
                    let p = ctx
                        .unwrap(&bytes)
                        .map_err(|e| TransferError::Protocol { url: self.url.clone(), reason: e.to_string() })?;
                    self.plain.extend_from_slice(&p);
                    if self.plain.len() > MAX_LINE {
                        return Err(TransferError::Protocol { url: self.url.clone(), reason: "protected reply too long".into() });
                    }
                }
                _ => return Ok(raw),
            }
        }
    }

    /// Reads one complete reply.
    pub fn read_reply(&mut self) -> Result<Reply> {
        loop {
            let line = self.next_line()?;
            match self.parser.push(&line) {
                Ok(Some(r)) => {
                    tracing::debug!(url = %self.url, code = r.code, text = %r.text(), "reply");
                    return Ok(r);
                }
                Ok(None) => {}
                Err(reason) => return Err(TransferError::Protocol { url: self.url.clone(), reason }),
            }
        }
    }

    /// Reads a reply, waiting beyond the timeout for as long as `alive()` says the transfer is
    /// still moving.
    pub fn read_reply_while(&mut self, mut alive: impl FnMut() -> bool) -> Result<Reply> {
        loop {
            match self.read_reply() {
                Err(TransferError::Timeout { .. }) if alive() => continue,
                other => return other,
            }
        }
    }

    /// Sends one command (wrapped when the channel is protected).
    pub fn send(&mut self, cmd: &str) -> Result<()> {
        if cmd.contains(['\r', '\n']) {
            return Err(TransferError::Protocol { url: self.url.clone(), reason: format!("command with a line break: {cmd:?}") });
        }
        let shown = if cmd.starts_with("PASS") { "PASS ****" } else { cmd };
        tracing::debug!(url = %self.url, cmd = %shown, "command");
        let wire = match self.gss.as_mut() {
            Some(ctx) => {
                let w = ctx
                    .wrap(format!("{cmd}\r\n").as_bytes())
                    .map_err(|e| TransferError::Protocol { url: self.url.clone(), reason: e.to_string() })?;
                format!("ENC {}\r\n", base64::encode_block(&w))
            }
            None => format!("{cmd}\r\n"),
        };
        self.sock.write_all(wire.as_bytes()).map_err(|e| self.io_error(e, "sending a command"))
    }

    /// Sends a command and reads its (first) reply.
    pub fn cmd(&mut self, cmd: &str) -> Result<Reply> {
        self.send(cmd)?;
        self.read_reply()
    }

    /// Sends a command and requires a 2xx reply (3xx too when `intermediate`).
    pub fn expect_ok(&mut self, cmd: &str) -> Result<Reply> {
        let r = self.cmd(cmd)?;
        if r.is_ok() {
            Ok(r)
        } else {
            Err(self.refused(cmd, &r))
        }
    }

    /// The typed error for a refusal.
    pub fn refused(&self, cmd: &str, r: &Reply) -> TransferError {
        let url = self.url.clone();
        let text = r.text();
        let verb = cmd.split_whitespace().next().unwrap_or("").to_string();
        let lower = text.to_ascii_lowercase();
        match r.code {
            550 | 553 if lower.contains("no such file") || lower.contains("not found") || lower.contains("does not exist") => {
                TransferError::NotFound { url, reason: format!("{} {text}", r.code) }
            }
            530 | 535 => TransferError::Auth { url, reason: format!("{} {text}", r.code) },
            550 if lower.contains("permission denied") => TransferError::Denied { url, reason: format!("{} {text}", r.code) },
            _ => TransferError::Remote { url, command: verb, code: r.code, text },
        }
    }

    /// RFC 2228 GSSAPI authentication with the GSI mechanism. Returns the server's identity.
    pub fn authenticate(&mut self, mut init: Initiator<'_>, first: Vec<u8>) -> Result<()> {
        let url = self.url.clone();
        let auth_err = move |reason: String| TransferError::Auth { url: url.clone(), reason };
        let r = self.cmd("AUTH GSSAPI")?;
        if r.code != 334 {
            return Err(auth_err(format!("AUTH GSSAPI refused: {} {}", r.code, r.text())));
        }
        let mut tok = first;
        for _round in 0..16 {
            if tok.is_empty() {
                return Err(auth_err("the security context needs a token the server did not send".into()));
            }
            let r = self.cmd(&format!("ADAT {}", base64::encode_block(&tok)))?;
            let input = match adat_token(&r) {
                Some(t) => b64_decode(t).map_err(&auth_err)?,
                None => Vec::new(),
            };
            match r.code {
                335 => {
                    tok = init.step(&input).map_err(|e| auth_err(e.to_string()))?;
                }
                235 => {
                    if !input.is_empty() {
                        init.step(&input).map_err(|e| auth_err(e.to_string()))?;
                    }
                    let ctx = init.into_context().map_err(|e| auth_err(e.to_string()))?;
                    tracing::debug!(url = %self.url, peer = ?ctx.peer_identity(), tls = ctx.protocol(), "GSI authenticated");
                    self.gss = Some(ctx);
                    return Ok(());
                }
                _ => {
                    // The server's reason, plus ours when the token it sent explains more.
                    let mut reason = format!("{} {}", r.code, r.text());
                    if !input.is_empty() {
                        if let Err(e) = init.step(&input) {
                            reason.push_str(&format!(" ({e})"));
                        }
                    }
                    return Err(auth_err(reason));
                }
            }
        }
        Err(auth_err("too many ADAT round trips".into()))
    }

    /// Wraps a command as it would go on the wire (for tests and tracing).
    pub fn gss_context(&mut self) -> Option<&mut Context> {
        self.gss.as_mut()
    }

    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
        self.sock.set_read_timeout(Some(t)).ok();
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// `h1,h2,h3,h4,p1,p2` for PORT.
pub fn port_arg(a: SocketAddr) -> Option<String> {
    match a {
        SocketAddr::V4(v4) => {
            let o = v4.ip().octets();
            let p = v4.port();
            Some(format!("{},{},{},{},{},{}", o[0], o[1], o[2], o[3], p >> 8, p & 0xff))
        }
        SocketAddr::V6(_) => None,
    }
}

/// Parses the address of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply.
pub fn parse_pasv(text: &str) -> Option<SocketAddr> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let inner = &text[start..];
    let nums: Vec<u16> = inner
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(6)
        .map(|s| s.parse::<u16>())
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    if nums.len() != 6 || nums.iter().any(|&n| n > 255) {
        return None;
    }
    let ip = std::net::Ipv4Addr::new(nums[0] as u8, nums[1] as u8, nums[2] as u8, nums[3] as u8);
    Some(SocketAddr::from((ip, nums[4] * 256 + nums[5])))
}

/// Parses the `227` reply text: the tuple after "(" when present (the code's own digits are
/// already stripped).
pub fn parse_227(r: &Reply) -> Option<SocketAddr> {
    let t = r.text();
    match t.find('(') {
        Some(i) => parse_pasv(&t[i..]),
        None => parse_pasv(&t),
    }
}

/// The byte ranges `[a, b)` of a `111 Range Marker a-b[,c-d…]` reply (GFD.20 restart markers),
/// as the server wrote them: relative to the start of the transfer (globus-gridftp-server counts
/// from the offset of an `ESTO A offset`), and only those written since its previous marker.
/// `None` for another reply or a malformed list.
pub fn parse_range_marker(r: &Reply) -> Option<Vec<(u64, u64)>> {
    const PREFIX: &str = "range marker";
    let text = r.text();
    let t = text.trim();
    if r.code != 111 || !t.get(..PREFIX.len())?.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    t[PREFIX.len()..]
        .split(',')
        .map(|range| {
            let (a, b) = range.trim().split_once('-')?;
            let (a, b) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
            (a <= b).then_some((a, b))
        })
        .collect()
}

/// Measures time since `start` (kept here for the transfer loop's liveness checks).
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}

#[allow(unused)]
fn _assert_send(_: &gss::Context) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &[&str]) -> Vec<Reply> {
        let mut p = ReplyParser::default();
        lines.iter().filter_map(|l| p.push(l).unwrap()).collect()
    }

    #[test]
    fn single_and_multiline_replies() {
        let r = feed(&["220 vm GridFTP Server 13.24 ready.\r\n"]);
        assert_eq!(r, vec![Reply { code: 220, lines: vec!["vm GridFTP Server 13.24 ready.".into()] }]);
        let r = feed(&[
            "211-Extensions supported\r\n",
            " CKSM MD5:10;ADLER32:10;\r\n",
            "211-not the end\r\n",
            " DCAU\r\n",
            "211 End.\r\n",
            "200 next\r\n",
        ]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, 211);
        assert_eq!(r[0].lines.len(), 5);
        assert_eq!(r[0].lines[1], " CKSM MD5:10;ADLER32:10;");
        assert_eq!(r[0].lines[4], "End.");
        assert_eq!(r[1].code, 200);
        // Perf markers: 112- … "112 End." with leading spaces inside.
        let r = feed(&["112-Perf Marker\r\n", " Timestamp:  1795694729.1\r\n", "112 End.\r\n"]);
        assert_eq!(r[0].code, 112);
        let mut p = ReplyParser::default();
        assert!(p.push("hello\r\n").is_err());
        assert!(p.push("99 x").is_err());
        assert_eq!(feed(&["226"])[0].code, 226);
    }

    #[test]
    fn adat_and_protected_framing() {
        let r = Reply { code: 335, lines: vec!["ADAT=FgMDAHoC".into()] };
        assert_eq!(adat_token(&r), Some("FgMDAHoC"));
        assert_eq!(adat_token(&Reply { code: 235, lines: vec!["GSSAPI Authentication successful.".into()] }), None);
        assert_eq!(protected_token("632 FwMDACjj\r\n"), Some("FwMDACjj"));
        assert_eq!(protected_token("632-FwMDAD1k\r\n"), Some("FwMDAD1k"));
        assert_eq!(protected_token("631 AAAA"), Some("AAAA"));
        assert_eq!(protected_token("230 User root logged in."), None);
        assert_eq!(b64_decode("FwMDABI=").unwrap(), vec![0x17, 3, 3, 0, 0x12]);
        assert!(b64_decode("!!!").is_err());
    }

    #[test]
    fn range_markers() {
        let m = |code: u16, t: &str| parse_range_marker(&Reply { code, lines: vec![t.into()] });
        // As globus-gridftp-server 13 sends them: each marker carries the ranges since the last.
        assert_eq!(m(111, "Range Marker 0-52428800"), Some(vec![(0, 52428800)]));
        assert_eq!(m(111, "Range Marker 52428800-67108864"), Some(vec![(52428800, 67108864)]));
        assert_eq!(m(111, "Range Marker 0-4194304,8388608-12582912"), Some(vec![(0, 4194304), (8388608, 12582912)]));
        assert_eq!(m(111, "range marker 5-7, 9-10"), Some(vec![(5, 7), (9, 10)]));
        assert_eq!(m(111, "Range Marker 0-18446744073709551615"), Some(vec![(0, u64::MAX)]));
        for bad in [
            "Range Marker",
            "Range Marker 7-5",
            "Range Marker 0-1,x",
            "Range Marker -5",
            "Range Marker 1,2",
            "Restart Marker 0-5",
            "Range Marker 0-99999999999999999999",
        ] {
            assert_eq!(m(111, bad), None, "{bad}");
        }
        assert_eq!(m(112, "Range Marker 0-5"), None);
    }

    #[test]
    fn port_and_pasv() {
        let a: SocketAddr = "127.0.0.1:48855".parse().unwrap();
        assert_eq!(port_arg(a).unwrap(), "127,0,0,1,190,215");
        let r = Reply { code: 227, lines: vec!["Entering Passive Mode (127,0,0,1,159,39)".into()] };
        assert_eq!(parse_227(&r).unwrap(), "127.0.0.1:40743".parse().unwrap());
        assert!(parse_pasv("(1,2,3)").is_none());
        assert!(parse_pasv("(300,2,3,4,5,6)").is_none());
    }

    #[test]
    fn wrapped_commands_over_a_gss_context() {
        // ENC framing end to end with a real in-memory GSI context.
        let (_d, certdir, proxy, host) = crate::security::gss::tests_support::kit();
        let (mut init, mut tok) = Initiator::new(&proxy, &certdir, &gss::Target::Any, None).unwrap();
        let mut acc = gss::Acceptor::new(&host, &certdir).unwrap();
        loop {
            let back = acc.step(&tok).unwrap();
            if acc.is_complete() && back.is_empty() {
                break;
            }
            tok = init.step(&back).unwrap();
            if init.is_complete() && tok.is_empty() {
                break;
            }
        }
        let mut c = init.into_context().unwrap();
        let mut s = acc.into_context().unwrap();
        let w = c.wrap(b"TYPE I\r\n").unwrap();
        let line = format!("ENC {}", base64::encode_block(&w));
        let tok = line.strip_prefix("ENC ").unwrap();
        assert_eq!(s.unwrap(&b64_decode(tok).unwrap()).unwrap(), b"TYPE I\r\n");
        let reply = s.wrap(b"200 Type set to I.\r\n").unwrap();
        let wire = format!("632 {}\r\n", base64::encode_block(&reply));
        let got = c.unwrap(&b64_decode(protected_token(&wire).unwrap()).unwrap()).unwrap();
        let mut p = ReplyParser::default();
        assert_eq!(p.push(std::str::from_utf8(&got).unwrap()).unwrap().unwrap().code, 200);
    }
}
