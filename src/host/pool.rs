//! This host's image pool: one directory per workspace, `<pool>/<workspace key>/`, holding the
//! images staged for it under safe file names. Releasing a workspace removes its directory; after
//! a restart, directories that belong to no workspace holding images are swept away. Removal runs
//! off the async threads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The image pool (its root is canonical).
#[derive(Clone, Debug)]
pub struct Pool {
    root: PathBuf,
}

impl Pool {
    /// The pool at `root`, created if missing.
    pub fn open(root: &Path) -> Result<Pool, String> {
        std::fs::create_dir_all(root).map_err(|e| format!("image pool {}: {e}", root.display()))?;
        let root = root.canonicalize().map_err(|e| format!("image pool {}: {e}", root.display()))?;
        Ok(Pool { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A workspace's directory (which may not exist).
    pub fn dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// A file name for an image in the pool: its kind, position and name, reduced to safe
    /// characters (`disk00-root`, `cdrom01-tools.iso`).
    pub fn file_name(kind: &str, i: usize, name: &str) -> String {
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        format!("{kind}{i:02}-{}", safe.trim_start_matches('.'))
    }

    /// Removes a workspace's directory and waits for it.
    pub async fn release(&self, key: &str) {
        let dir = self.dir(key);
        let _ = tokio::task::spawn_blocking(move || remove_dir(&dir)).await;
    }

    /// Removes every directory whose name is not in `keep`; returns how many went.
    pub async fn sweep(&self, keep: HashSet<String>) -> usize {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    tracing::warn!(dir = %e.path().display(), "removing pool directory of no staged workspace");
                    remove_dir(&e.path());
                    n += 1;
                }
            }
            n
        })
        .await
        .unwrap_or(0)
    }
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "pool directory removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot remove pool directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(Pool::file_name("disk", 0, "root"), "disk00-root");
        assert_eq!(Pool::file_name("disk", 3, "../../etc/passwd"), "disk03-_.._etc_passwd");
        assert_eq!(Pool::file_name("cdrom", 1, ".hidden dir/x"), "cdrom01-hidden_dir_x");
    }

    #[tokio::test]
    async fn release_and_sweep_remove_only_what_they_should() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = Pool::open(&tmp.path().join("pool")).unwrap();
        for k in ["a", "b", "c"] {
            std::fs::create_dir_all(pool.dir(k)).unwrap();
            std::fs::write(pool.dir(k).join("disk00-root"), k).unwrap();
        }
        pool.release("a").await;
        assert!(!pool.dir("a").exists());
        pool.release("a").await; // already gone: nothing to do, no error
        let removed = pool.sweep(["b".to_string()].into_iter().collect()).await;
        assert_eq!(removed, 1);
        assert!(pool.dir("b").join("disk00-root").exists());
        assert!(!pool.dir("c").exists());
    }
}
