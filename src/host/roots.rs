//! The site's `file://` policy for image sources: a local file may be staged only from below one
//! of the configured roots (`staging.file_roots`), checked lexically and again after resolving
//! symbolic links, so a caller cannot stage the service host's own files into a VM. Every other
//! scheme is left to its transfer's own authentication.

use super::PlanError;
use crate::transfer::Url;
use std::path::{Component, Path, PathBuf};

/// The rule's name, as faults and staging reports quote it.
pub const RULE: &str = "staging.file_roots";

/// The directories `file://` images may come from (canonical paths). Empty: none at all.
#[derive(Clone, Debug, Default)]
pub struct FileRoots {
    roots: Vec<PathBuf>,
}

impl FileRoots {
    /// The roots as configured; each must exist (it is resolved to its canonical path).
    pub fn new(roots: &[PathBuf]) -> Result<FileRoots, String> {
        let mut out = Vec::with_capacity(roots.len());
        for r in roots {
            out.push(r.canonicalize().map_err(|e| format!("{RULE} {}: {e}", r.display()))?);
        }
        Ok(FileRoots { roots: out })
    }

    /// May the image at `url` be staged? Non-local URLs always may (as far as this rule goes).
    pub fn check(&self, url: &str) -> Result<(), PlanError> {
        let u = Url::parse(url).map_err(|e| PlanError::Invalid { code: None, reason: e.to_string() })?;
        if !u.is_local() {
            return Ok(());
        }
        let refuse = |why: &str| PlanError::Policy { rule: RULE, reason: format!("image {url} {why}") };
        let p = Path::new(&u.path);
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(refuse("is not an absolute path without '..'"));
        }
        let under = |p: &Path| self.roots.iter().any(|r| p.starts_with(r));
        if !under(p) {
            return Err(refuse("is outside the directories file:// images may come from"));
        }
        // Resolve symbolic links: the real file must be below a root as well.
        match p.canonicalize() {
            Ok(real) if under(&real) => Ok(()),
            Ok(_) => Err(refuse("leads outside the allowed directories through a symbolic link")),
            Err(e) => Err(PlanError::Invalid { code: Some("not_found"), reason: format!("image {url}: {e}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_below_a_root_pass() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("ok.img"), b"x").unwrap();
        std::fs::write(outside.path().join("secret"), b"y").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link.img")).unwrap();
        let roots = FileRoots::new(&[root.path().to_path_buf()]).unwrap();
        let real = root.path().canonicalize().unwrap();
        assert!(roots.check(&format!("file://{}/ok.img", real.display())).is_ok());
        assert!(roots.check("http://example.org/a.img").is_ok(), "other schemes are not this rule's business");
        let policy = |url: String, why: &str| match roots.check(&url) {
            Err(PlanError::Policy { rule, reason }) => {
                assert_eq!(rule, RULE);
                assert!(reason.contains(why), "{url}: {reason}");
            }
            other => panic!("{url}: {other:?}"),
        };
        policy(format!("file://{}/secret", outside.path().display()), "outside the directories");
        policy(format!("file://{}/../x/ok.img", real.display()), "without '..'");
        policy(format!("file://{}/link.img", real.display()), "symbolic link");
        match roots.check(&format!("file://{}/missing.img", real.display())) {
            Err(PlanError::Invalid { code: Some("not_found"), .. }) => {}
            other => panic!("{other:?}"),
        }
        // No roots: no file:// sources at all.
        let none = FileRoots::new(&[]).unwrap();
        assert!(matches!(none.check(&format!("file://{}/ok.img", real.display())), Err(PlanError::Policy { .. })));
        assert!(FileRoots::new(&[outside.path().join("nope")]).unwrap_err().contains(RULE));
    }
}
