//! Parsing the URLs transfers are addressed with: `scheme://[user[:pass]@]host[:port]/path`
//! (`file:///path` and bare absolute paths too), percent-decoding the path.

use super::TransferError;

/// A parsed transfer URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Url {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Decoded path, starting with '/'.
    pub path: String,
}

fn bad(url: &str, reason: &str) -> TransferError {
    TransferError::BadUrl { url: url.to_string(), reason: reason.to_string() }
}

fn pct_decode(s: &str, url: &str) -> Result<String, TransferError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3).ok_or_else(|| bad(url, "truncated %-escape"))?;
            out.push(u8::from_str_radix(h, 16).map_err(|_| bad(url, "bad %-escape"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(url, "path is not UTF-8"))
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, TransferError> {
        if s.starts_with('/') {
            return Ok(Url::file(s));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad(s, "expected scheme://"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty() || !scheme.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'-') {
            return Err(bad(s, "bad scheme"));
        }
        if s.bytes().any(|c| c.is_ascii_control()) {
            return Err(bad(s, "control characters"));
        }
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let path = pct_decode(path, s)?;
        let (userinfo, hostport) = match auth.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, auth),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (Some(pct_decode(a, s)?), Some(pct_decode(b, s)?)),
                None => (Some(pct_decode(u, s)?), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| bad(s, "unterminated [IPv6]"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().map_err(|_| bad(s, "bad port"))?),
                None if after.is_empty() => None,
                None => return Err(bad(s, "junk after [IPv6]")),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().map_err(|_| bad(s, "bad port"))?)),
                None => (hostport.to_string(), None),
            }
        };
        if scheme != "file" && host.is_empty() {
            return Err(bad(s, "missing host"));
        }
        if scheme == "file" && !(host.is_empty() || host == "localhost") {
            return Err(bad(s, "file URLs must be local (file:///path)"));
        }
        Ok(Url { scheme, user, password, host, port, path })
    }

    pub fn file(path: &str) -> Url {
        Url { scheme: "file".into(), user: None, password: None, host: String::new(), port: None, path: path.into() }
    }

    pub fn default_port(&self) -> u16 {
        match self.scheme.as_str() {
            "gsiftp" => 2811,
            "ftp" => 21,
            "https" => 443,
            _ => 80,
        }
    }

    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or_else(|| self.default_port())
    }

    pub fn is_local(&self) -> bool {
        self.scheme == "file"
    }

    /// The same server, another path.
    pub fn with_path(&self, path: &str) -> Url {
        Url { path: path.to_string(), ..self.clone() }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = Url::parse("gsiftp://127.0.0.1:2811/tmp/a%20b.img").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("gsiftp", "127.0.0.1", Some(2811), "/tmp/a b.img")
        );
        let u = Url::parse("file:///var/x").unwrap();
        assert_eq!(u.path, "/var/x");
        assert_eq!(Url::parse("/abs").unwrap().scheme, "file");
        let u = Url::parse("ftp://anonymous:me@[::1]:21/p").unwrap();
        assert_eq!((u.host.as_str(), u.user.as_deref(), u.password.as_deref()), ("::1", Some("anonymous"), Some("me")));
        assert!(Url::parse("nope").is_err());
        assert!(Url::parse("gsiftp://h:99999/x").is_err());
        assert!(Url::parse("gsiftp:///x").is_err());
        assert!(Url::parse("file://remote/x").is_err());
        assert!(Url::parse("http://h/%zz").is_err());
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
    }
}
