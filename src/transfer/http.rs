//! `http://` and `https://` endpoints: HTTP/1.1 GET (downloads, with `Range` to resume) and PUT
//! (uploads) over a plain or OpenSSL-protected socket, every read under a timeout. HTTPS trusts
//! the system roots plus `X509_CERT_DIR`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;

use openssl::ssl::{SslConnector, SslMethod};

use super::{Endpoint, Options, Progress, Result, TransferError, Url};

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct HttpEndpoint {
    url: Url,
    opts: Options,
}

struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: BufReader<Box<dyn Stream>>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl HttpEndpoint {
    pub fn new(url: Url, opts: Options) -> HttpEndpoint {
        HttpEndpoint { url, opts }
    }

    fn err_connect(&self, reason: impl std::fmt::Display) -> TransferError {
        TransferError::Connect { url: self.url.to_string(), reason: reason.to_string() }
    }

    fn connect(&self) -> Result<Box<dyn Stream>> {
        let port = self.url.port_or_default();
        let addrs: Vec<_> = (self.url.host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| self.err_connect(format!("cannot resolve {}: {e}", self.url.host)))?
            .collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.opts.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.opts.timeout)).ok();
                    s.set_write_timeout(Some(self.opts.timeout)).ok();
                    s.set_nodelay(true).ok();
                    if self.url.scheme == "https" {
                        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| self.err_connect(e))?;
                        if let Some(d) = std::env::var_os("X509_CERT_DIR") {
                            if let Ok(rd) = std::fs::read_dir(d) {
                                for ent in rd.flatten() {
                                    if let Ok(pem) = std::fs::read(ent.path()) {
                                        if let Ok(c) = openssl::x509::X509::from_pem(&pem) {
                                            let _ = b.cert_store_mut().add_cert(c);
                                        }
                                    }
                                }
                            }
                        }
                        let c = b.build();
                        let tls = c
                            .connect(&self.url.host, s)
                            .map_err(|e| TransferError::Auth { url: self.url.to_string(), reason: format!("TLS: {e}") })?;
                        return Ok(Box::new(tls));
                    }
                    return Ok(Box::new(s));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(self.err_connect(last.map(|e| e.to_string()).unwrap_or_else(|| "no address".into())))
    }

    fn request(&self, method: &str, extra: &[(&str, String)], body: Option<(&File, u64)>) -> Result<Response> {
        let mut s = self.connect()?;
        let host = match self.url.port {
            Some(p) => format!("{}:{p}", self.url.host),
            None => self.url.host.clone(),
        };
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vws\r\nConnection: close\r\n",
            self.url.path.replace(' ', "%20")
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some((_, len)) = body {
            req.push_str(&format!("Content-Length: {len}\r\n"));
        }
        req.push_str("\r\n");
        let io = |e: std::io::Error| self.io_err(e);
        s.write_all(req.as_bytes()).map_err(io)?;
        if let Some((f, len)) = body {
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < len {
                let n = f.read_at(&mut buf[..((len - off) as usize).min(1 << 20)], off).map_err(io)?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).map_err(io)?;
                off += n as u64;
            }
        }
        s.flush().map_err(io)?;
        let mut r = BufReader::with_capacity(1 << 20, s);
        let mut line = String::new();
        r.read_line(&mut line).map_err(io)?;
        let mut parts = line.trim_end().splitn(3, ' ');
        let proto = parts.next().unwrap_or("");
        if !proto.starts_with("HTTP/") {
            return Err(TransferError::Protocol { url: self.url.to_string(), reason: format!("not an HTTP response: {line:?}") });
        }
        let status: u16 = parts
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| TransferError::Protocol { url: self.url.to_string(), reason: format!("bad status line {line:?}") })?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(io)? == 0 || line.trim_end().is_empty() {
                break;
            }
            if headers.len() > 200 {
                return Err(TransferError::Protocol { url: self.url.to_string(), reason: "too many headers".into() });
            }
            if let Some((k, v)) = line.trim_end().split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Response { status, reason, headers, body: r })
    }

    fn io_err(&self, e: std::io::Error) -> TransferError {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            TransferError::Timeout { url: self.url.to_string(), reason: e.to_string() }
        } else {
            TransferError::Interrupted { url: self.url.to_string(), reason: e.to_string() }
        }
    }

    fn status_error(&self, method: &str, r: &Response) -> TransferError {
        let url = self.url.to_string();
        match r.status {
            404 | 410 => TransferError::NotFound { url, reason: format!("{} {}", r.status, r.reason) },
            401 | 407 => TransferError::Auth { url, reason: format!("{} {}", r.status, r.reason) },
            403 => TransferError::Denied { url, reason: format!("{} {}", r.status, r.reason) },
            c => TransferError::Remote { url, command: method.into(), code: c, text: r.reason.clone() },
        }
    }

    fn fetch_from(&self, dest: &File, from: u64, progress: &Progress) -> Result<u64> {
        let extra = if from > 0 { vec![("Range", format!("bytes={from}-"))] } else { vec![] };
        let mut r = self.request("GET", &extra, None)?;
        let start = match r.status {
            200 => 0,
            206 => from,
            _ => return Err(self.status_error("GET", &r)),
        };
        let chunked = r.header("Transfer-Encoding").map(|v| v.eq_ignore_ascii_case("chunked")).unwrap_or(false);
        let len: Option<u64> = r.header("Content-Length").and_then(|v| v.parse().ok());
        let mut off = start;
        let mut buf = vec![0u8; 1 << 20];
        let io = |e: std::io::Error| self.io_err(e);
        if chunked {
            loop {
                let mut line = String::new();
                r.body.read_line(&mut line).map_err(io)?;
                let n = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|_| {
                    TransferError::Protocol { url: self.url.to_string(), reason: format!("bad chunk size {line:?}") }
                })?;
                if n == 0 {
                    break;
                }
                let mut left = n;
                while left > 0 {
                    let k = (left as usize).min(buf.len());
                    r.body.read_exact(&mut buf[..k]).map_err(io)?;
                    dest.write_all_at(&buf[..k], off).map_err(|e| TransferError::io("target file", e))?;
                    progress.add(off, k as u64);
                    off += k as u64;
                    left -= k as u64;
                    progress.check()?;
                }
                line.clear();
                r.body.read_line(&mut line).map_err(io)?;
            }
        } else {
            let end = len.map(|l| start + l);
            loop {
                let want = match end {
                    Some(e) if off >= e => break,
                    Some(e) => ((e - off) as usize).min(buf.len()),
                    None => buf.len(),
                };
                let n = r.body.read(&mut buf[..want]).map_err(io)?;
                if n == 0 {
                    if let Some(e) = end {
                        return Err(TransferError::Interrupted {
                            url: self.url.to_string(),
                            reason: format!("connection closed at {off} of {e} bytes"),
                        });
                    }
                    break;
                }
                dest.write_all_at(&buf[..n], off).map_err(|e| TransferError::io("target file", e))?;
                progress.add(off, n as u64);
                off += n as u64;
                progress.check()?;
            }
        }
        Ok(off)
    }
}

impl Endpoint for HttpEndpoint {
    fn url(&self) -> &Url {
        &self.url
    }
    fn size(&self) -> Result<Option<u64>> {
        let r = self.request("HEAD", &[], None)?;
        if r.status >= 300 {
            return Err(self.status_error("HEAD", &r));
        }
        Ok(r.header("Content-Length").and_then(|v| v.parse().ok()))
    }
    fn download(&self, dest: &File, progress: &Progress) -> Result<u64> {
        // Up to `retries` resumptions from the verified prefix, 500 ms apart plus jitter; a
        // cancelled staging stops before the next one.
        use backon::{BlockingRetryable, ConstantBuilder};
        let backoff = ConstantBuilder::default()
            .with_delay(std::time::Duration::from_millis(500))
            .with_max_times(self.opts.retries as usize)
            .with_jitter();
        let mut first = true;
        (|| {
            if !std::mem::take(&mut first) {
                progress.check()?;
            }
            self.fetch_from(dest, progress.prefix(), progress)
        })
        .retry(backoff)
        .sleep(std::thread::sleep)
        .when(|e: &TransferError| e.is_transient())
        .notify(|e, _| tracing::warn!(url = %self.url, at = progress.prefix(), "resuming after: {e}"))
        .call()
    }
    fn upload(&self, src: &File, len: u64, progress: &Progress) -> Result<u64> {
        let r = self.request("PUT", &[], Some((src, len)))?;
        if r.status >= 300 {
            return Err(self.status_error("PUT", &r));
        }
        progress.add(0, len);
        Ok(len)
    }
}
