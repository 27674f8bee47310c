//! The URLs transfers are addressed with: `scheme://[user[:pass]@]host[:port]/path`
//! (`file:///path` and bare absolute paths too). Parsing is the `url` crate's (WHATWG URL
//! rules: IPv6 literals, ports, percent-encoding, dot segments of special schemes); this module
//! keeps what transfers need of it as plain fields with the path percent-decoded, and the
//! checks of its own: no control characters (the `url` crate silently drops tabs and newlines),
//! a host for every scheme but `file`, `file` URLs local only, well-formed %-escapes, UTF-8 paths,
//! and the path as written (not dot-segment-resolved, so `..` reaches the `file://` roots check).

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
    // `url` leaves a malformed escape as is; a transfer refuses it rather than guess.
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        if !(b.len() >= i + 3 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
            return Err(bad(url, if b.len() < i + 3 { "truncated %-escape" } else { "bad %-escape" }));
        }
    }
    percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| bad(url, "path is not UTF-8"))
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, TransferError> {
        if s.starts_with('/') {
            return Ok(Url::file(s));
        }
        if !s.contains("://") {
            return Err(bad(s, "expected scheme://"));
        }
        if s.bytes().any(|c| c.is_ascii_control()) {
            return Err(bad(s, "control characters"));
        }
        let u = url::Url::parse(s).map_err(|e| match e {
            url::ParseError::InvalidPort => bad(s, "bad port"),
            url::ParseError::RelativeUrlWithoutBase => bad(s, "bad scheme"),
            e => bad(s, &e.to_string()),
        })?;
        let scheme = u.scheme().to_string();
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Domain(d)) => d.to_string(),
            None => String::new(),
        };
        let user = (!u.username().is_empty()).then(|| pct_decode(u.username(), s)).transpose()?;
        let password = u.password().map(|p| pct_decode(p, s)).transpose()?;
        // The path as written: the `url` crate resolves `.` and `..` segments (and their
        // %2e forms), which would hide a `..` from the `file://` roots check (host/roots.rs
        // refuses any) and change what a server is asked for.
        let after_scheme = &s[s.find("://").map_or(0, |i| i + 3)..];
        let raw_path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let raw_path = raw_path.split(['?', '#']).next().unwrap_or("/");
        let path = match pct_decode(raw_path, s)? {
            p if p.is_empty() => "/".to_string(),
            p => p,
        };
        if scheme != "file" && host.is_empty() {
            return Err(bad(s, "missing host"));
        }
        if scheme == "file" && !(host.is_empty() || host == "localhost") {
            return Err(bad(s, "file URLs must be local (file:///path)"));
        }
        Ok(Url { scheme, user, password, host, port: u.port(), path })
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
        assert_eq!(Url::parse("gsiftp://h").unwrap().path, "/");
        assert!(Url::parse("http://h/a\tb").is_err(), "control characters are refused, not dropped");
        assert!(Url::parse("http://h/a%2").is_err());
        assert!(Url::parse("http://h/%ff").is_err(), "path is not UTF-8");
        let e = Url::parse("gsiftp://h:99999/x").unwrap_err().to_string();
        assert!(e.contains("bad port") && e.contains("gsiftp://h:99999/x"), "{e}");
        let u = Url::parse("gsiftp://User%40x:p%3Aw@Host.Example/%C3%BC?q#f").unwrap();
        assert_eq!((u.user.as_deref(), u.password.as_deref(), u.path.as_str()), (Some("User@x"), Some("p:w"), "/ü"));
        assert_eq!(Url::parse("HTTP://H/x").unwrap().scheme, "http");
        assert_eq!(Url::parse("file:///a/../b").unwrap().path, "/a/../b", "dot segments stay for the roots check");
        assert_eq!(Url::parse("http://h/a/%2e%2e/b").unwrap().path, "/a/../b");
    }
}
