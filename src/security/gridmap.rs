//! The grid-mapfile (`GRIDMAP`, default `/etc/grid-security/grid-mapfile`): one line per
//! identity DN, `"<DN in slash form>" user[,user2…]`, the first user being the default mapping.
//! Comments (`#`) and blank lines are skipped; inside the quoted DN a backslash takes the next
//! character literally (`\"`, `\\`), as Globus' parser does. The first line for a DN wins.

use std::path::{Path, PathBuf};

use super::x509::normalize_dn;
use super::GsiError;

pub const DEFAULT_GRIDMAP: &str = "/etc/grid-security/grid-mapfile";

/// One mapping line.
#[derive(Clone, Debug, PartialEq)]
pub struct GridMapEntry {
    pub dn: String,
    /// Local accounts, the default first (never empty).
    pub accounts: Vec<String>,
    pub line: usize,
}

/// A parsed grid-mapfile.
#[derive(Clone, Debug, Default)]
pub struct GridMap {
    pub path: PathBuf,
    pub entries: Vec<GridMapEntry>,
}

impl GridMap {
    /// `GRIDMAP`, else `/etc/grid-security/grid-mapfile`.
    pub fn from_env() -> Result<GridMap, GsiError> {
        let p = std::env::var_os("GRIDMAP").map(PathBuf::from).unwrap_or_else(|| DEFAULT_GRIDMAP.into());
        GridMap::load(p)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<GridMap, GsiError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| GsiError::Io { path: path.into(), source: e })?;
        GridMap::parse(&text, path)
    }

    /// Parses the text of a grid-mapfile; a malformed line is an error naming its number.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<GridMap, GsiError> {
        let path = path.as_ref().to_path_buf();
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| GsiError::Gridmap { path: path.clone(), line: i + 1, reason: reason.into() };
            let (dn, rest) = if let Some(q) = line.strip_prefix('"') {
                let mut dn = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, n)) => dn.push(n),
                            None => return Err(err("backslash at end of line")),
                        },
                        '"' => {
                            end = Some(j + 1);
                            break;
                        }
                        c => dn.push(c),
                    }
                }
                let end = end.ok_or_else(|| err("unterminated quoted DN"))?;
                (dn, &q[end..])
            } else {
                // An unquoted DN cannot contain whitespace.
                match line.find(char::is_whitespace) {
                    Some(i) => (line[..i].to_string(), &line[i..]),
                    None => return Err(err("no local account after the DN")),
                }
            };
            if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
                return Err(err("no space between the DN and the accounts"));
            }
            let rest = rest.split('#').next().unwrap_or("").trim();
            if dn.is_empty() {
                return Err(err("empty DN"));
            }
            let accounts: Vec<String> = rest.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
            if accounts.is_empty() {
                return Err(err("no local account after the DN"));
            }
            if accounts.iter().any(|a| a.contains(char::is_whitespace)) {
                return Err(err("accounts must be separated by commas"));
            }
            entries.push(GridMapEntry { dn, accounts, line: i + 1 });
        }
        Ok(GridMap { path, entries })
    }

    /// The entry for `dn` (the first line that names it; e-mail attribute spellings are equal).
    pub fn entry(&self, dn: &str) -> Option<&GridMapEntry> {
        if let Some(e) = self.entries.iter().find(|e| e.dn == dn) {
            return Some(e);
        }
        let n = normalize_dn(dn);
        self.entries.iter().find(|e| normalize_dn(&e.dn) == n)
    }

    /// The default account of `dn`.
    pub fn lookup(&self, dn: &str) -> Option<&str> {
        self.entry(dn).map(|e| e.accounts[0].as_str())
    }

    /// The default account of `dn`, or a typed refusal.
    pub fn map(&self, dn: &str) -> Result<String, GsiError> {
        self.lookup(dn).map(str::to_string).ok_or_else(|| GsiError::NotInGridmap { dn: dn.to_string(), path: self.path.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let t = r#"
# comment
"/O=Grid/OU=GlobusTest/CN=Test User" root
"/O=Grid/CN=Two Users" alice,bob
  "/O=Grid/CN=Spaced" carol , dave   # trailing comment
"/O=Grid/CN=Quote \"Q\" and \\ back" eve
/O=Grid/CN=Unquoted frank
"/O=Grid/CN=Test User" second-line-ignored
"/O=Grid/Email=x@y/CN=Mail" gina
"#;
        let m = GridMap::parse(t, "gm").unwrap();
        assert_eq!(m.entries.len(), 7);
        assert_eq!(m.lookup("/O=Grid/OU=GlobusTest/CN=Test User"), Some("root"));
        assert_eq!(m.entry("/O=Grid/CN=Two Users").unwrap().accounts, vec!["alice", "bob"]);
        assert_eq!(m.lookup("/O=Grid/CN=Two Users"), Some("alice"));
        assert_eq!(m.entry("/O=Grid/CN=Spaced").unwrap().accounts, vec!["carol", "dave"]);
        assert_eq!(m.lookup(r#"/O=Grid/CN=Quote "Q" and \ back"#), Some("eve"));
        assert_eq!(m.lookup("/O=Grid/CN=Unquoted"), Some("frank"));
        assert_eq!(m.lookup("/O=Grid/emailAddress=x@y/CN=Mail"), Some("gina"));
        assert_eq!(m.lookup("/O=Grid/CN=test user"), None, "case-sensitive");
        let e = m.map("/O=Nobody").unwrap_err();
        assert!(matches!(e, GsiError::NotInGridmap { .. }), "{e}");
        assert!(e.to_string().contains("/O=Nobody"));
    }

    #[test]
    fn refuses_malformed_lines() {
        for (t, why) in [
            ("\"/O=Grid/CN=x root", "unterminated"),
            ("\"/O=Grid/CN=x\"", "no local account"),
            ("\"/O=Grid/CN=x\"root", "no space"),
            ("\"\" root", "empty DN"),
            ("\"/O=Grid/CN=x\" a b", "commas"),
        ] {
            let e = GridMap::parse(&format!("# c\n{t}\n"), "gm").unwrap_err();
            assert!(e.to_string().contains(why) && e.to_string().contains("line 2"), "{t}: {e}");
        }
    }
}
