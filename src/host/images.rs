//! The site's image store by content: every image once, named by its SHA-256, under
//! `<data>/repository/images/<sha256>`, with its row in `repo_images` (size, owner, source). A
//! registration copies (or stages) into `tmp/` while hashing, fsyncs, and only then renames
//! into place and records the row; bytes already present are not kept twice. On open, temp
//! files, files without a row and rows without a file are removed, so a crash at any point
//! leaves no orphan file and no dangling row. An image handed to a deployment is hashed again
//! (a file changed on disk is refused) and hard-linked into the workspace's pool directory.
//! A Manager host using a remote site Repository keeps this store as a verified cache: an
//! image it lacks is fetched from the site by digest ([`ImageSource`]) and written by
//! [`ImageStore::receive`] (temp name, hashed while written, fsync, rename; a digest mismatch
//! leaves no file).

use crate::store::repo::{ImageRow, Quotas, RepoError, RepoTables};
use crate::transfer::Stager;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0} is not in the repository's image store")]
    Unknown(String),
    #[error("digest mismatch for {what}: expected sha256 {expected}, found {found}")]
    DigestMismatch { what: String, expected: String, found: String },
    #[error(
        "unsupported URL scheme '{0}': register from a local path, file:// (within staging.file_roots), http(s):// or gsiftp://"
    )]
    UnsupportedScheme(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Repo(#[from] RepoError),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("transfer: {0}")]
    Transfer(String),
}

impl ImageError {
    fn io(what: impl std::fmt::Display, err: std::io::Error) -> ImageError {
        ImageError::Io { what: what.to_string(), err }
    }
}

/// Where a Manager host fetches, by SHA-256 digest, images its store lacks: the site
/// Repository's image route (`GET /wsrf/images/<sha256>`), implemented above `host/`.
pub trait ImageSource: Send + Sync {
    /// Where images come from (for logs and faults).
    fn origin(&self) -> String;
    /// Starts fetching image `sha256`: its size when known and its bytes as chunks, in order
    /// (an `Err` chunk ends the transfer). `Ok(None)`: the site has no such image.
    fn fetch<'a>(&'a self, sha256: &'a str) -> FetchFuture<'a>;
}

/// A fetch of one image: its size when known and its chunks.
pub type ImageChunks = (Option<u64>, tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>);
pub type FetchFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<ImageChunks>, String>> + Send + 'a>>;

/// The outcome of a registration.
#[derive(Clone, Debug)]
pub struct Registered {
    pub image: ImageRow,
    /// False: the bytes were already in the store (nothing new kept).
    pub new: bool,
}

/// The content-addressed image store.
pub struct ImageStore {
    root: PathBuf,
    pub tables: Arc<RepoTables>,
    pub quotas: Quotas,
    /// Files whose digest was checked, by (inode, size, mtime, ctime) then: a file whose
    /// metadata still match is not hashed again (any write changes mtime and ctime, and ctime
    /// cannot be set back); after a restart, every image is hashed on its first hand-off.
    verified: std::sync::Mutex<std::collections::HashMap<String, Fingerprint>>,
}

type Fingerprint = (u64, u64, i64, i64, i64, i64);

fn fingerprint(p: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// Is `s` 64 lowercase hex digits?
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Copies `src` to `dst` while hashing it; fsyncs `dst`. Returns (sha256 hex, bytes).
pub fn copy_hashing(src: &mut impl Read, dst: &mut std::fs::File) -> std::io::Result<(String, u64)> {
    // Two buffers: one is hashed and written by a helper thread while the next is read.
    const BUF: usize = 4 << 20;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut out = dst.try_clone()?;
    let hasher = std::thread::spawn(move || -> std::io::Result<(String, u64)> {
        let mut h = openssl::sha::Sha256::new();
        let mut n = 0u64;
        for buf in rx {
            h.update(&buf);
            out.write_all(&buf)?;
            n += buf.len() as u64;
            let _ = back_tx.send(buf);
        }
        Ok((hex(&h.finish()), n))
    });
    let mut read_err = None;
    loop {
        let mut buf = back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(BUF));
        buf.resize(BUF, 0);
        let mut filled = 0;
        while filled < BUF {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            }
        }
        buf.truncate(filled);
        if filled == 0 || read_err.is_some() || tx.send(buf).is_err() {
            break;
        }
        if filled < BUF {
            break;
        }
    }
    drop(tx);
    let r = hasher.join().map_err(|_| std::io::Error::other("hashing thread panicked"))??;
    if let Some(e) = read_err {
        return Err(e);
    }
    dst.sync_all()?;
    Ok(r)
}

/// SHA-256 of a file (hex).
pub fn hash_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finish()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn fsync_dir(d: &Path) {
    if let Ok(f) = std::fs::File::open(d) {
        let _ = f.sync_all();
    }
}

impl ImageStore {
    /// The store under `root` (`images/`, `tmp/`), cleaned of what a crash may have left.
    pub fn open(root: &Path, tables: Arc<RepoTables>, quotas: Quotas) -> Result<ImageStore, String> {
        for d in ["images", "tmp"] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| format!("image store {}: {e}", root.join(d).display()))?;
        }
        let s = ImageStore { root: root.to_path_buf(), tables, quotas, verified: Default::default() };
        s.recover().map_err(|e| format!("image store {}: {e}", root.display()))?;
        Ok(s)
    }

    /// Removes temp files, files without a row and rows without a file.
    fn recover(&self) -> Result<(), ImageError> {
        let (mut tmp, mut orphans, mut dangling) = (0, 0, 0);
        for e in std::fs::read_dir(self.root.join("tmp")).map_err(|e| ImageError::io("tmp", e))?.flatten() {
            let _ = std::fs::remove_file(e.path());
            tmp += 1;
        }
        let rows: HashSet<String> = self.tables.images()?.into_iter().map(|r| r.sha256).collect();
        let mut files = HashSet::new();
        for e in std::fs::read_dir(self.root.join("images")).map_err(|e| ImageError::io("images", e))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if rows.contains(&name) {
                files.insert(name);
            } else {
                let _ = std::fs::remove_file(e.path());
                orphans += 1;
            }
        }
        for r in rows.difference(&files) {
            self.tables.remove_image(r)?;
            dangling += 1;
        }
        tracing::info!(images = files.len(), tmp, orphans, dangling, "image store opened");
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of an image.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join("images").join(sha256)
    }

    fn temp(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    /// Is the image recorded (and its file there)?
    pub fn has(&self, sha256: &str) -> bool {
        is_sha256(sha256) && matches!(self.tables.image(sha256), Ok(Some(_))) && self.path(sha256).is_file()
    }

    /// Registers a local file, hashing while copying. With `expect`, an image already present
    /// under that digest costs nothing, and other bytes are refused.
    pub fn register_file(&self, src: &Path, owner: &str, source: &str, expect: Option<&str>) -> Result<Registered, ImageError> {
        if let Some(d) = expect {
            if self.has(d) {
                let image = self.tables.image(d)?.ok_or_else(|| ImageError::Unknown(d.into()))?;
                return Ok(Registered { image, new: false });
            }
        }
        let mut f = std::fs::File::open(src).map_err(|e| ImageError::io(src.display(), e))?;
        let meta = f.metadata().map_err(|e| ImageError::io(src.display(), e))?;
        if !meta.is_file() {
            return Err(ImageError::Refused(format!("{} is not a regular file", src.display())));
        }
        // A registration that cannot fit is refused before any byte is copied.
        self.tables.check_quota(owner, meta.len(), self.quotas)?;
        let tmp = self.temp();
        let r = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| ImageError::io(tmp.display(), e))?;
            let (sha, size) = copy_hashing(&mut f, &mut out).map_err(|e| ImageError::io(src.display(), e))?;
            self.adopt_temp(&tmp, &sha, size, owner, source, expect)
        })();
        let _ = std::fs::remove_file(&tmp);
        r
    }

    /// Registers what a URL the stager reads holds (`file://` must be checked against the
    /// roots by the caller): staged into `tmp/` with the stager's checks, hashed, adopted.
    pub fn register_url(&self, stager: &Stager, url: &str, owner: &str, expect: Option<&str>) -> Result<Registered, ImageError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        if !matches!(scheme.as_str(), "file" | "http" | "https" | "gsiftp" | "ftp") {
            return Err(ImageError::UnsupportedScheme(if scheme.is_empty() { url.to_string() } else { scheme }));
        }
        if scheme == "file" {
            let p = url.trim_start_matches("file://");
            return self.register_file(Path::new(p), owner, url, expect);
        }
        if let Some(d) = expect {
            if self.has(d) {
                let image = self.tables.image(d)?.ok_or_else(|| ImageError::Unknown(d.into()))?;
                return Ok(Registered { image, new: false });
            }
        }
        let tmp = self.temp();
        let r = (|| {
            let dst = format!("file://{}", tmp.display());
            let o = stager.stage(url, &dst).map_err(|e| ImageError::Transfer(e.to_string()))?;
            let sha = if is_sha256(&o.sha256) {
                o.sha256.clone()
            } else {
                hash_file(&tmp).map_err(|e| ImageError::io(tmp.display(), e))?
            };
            self.adopt_temp(&tmp, &sha, o.bytes, owner, url, expect)
        })();
        let _ = std::fs::remove_file(&tmp);
        r
    }

    /// A complete, fsynced temp file with digest `sha` becomes the image `sha` (unless present).
    fn adopt_temp(
        &self,
        tmp: &Path,
        sha: &str,
        size: u64,
        owner: &str,
        source: &str,
        expect: Option<&str>,
    ) -> Result<Registered, ImageError> {
        if let Some(e) = expect {
            if e != sha {
                return Err(ImageError::DigestMismatch { what: source.into(), expected: e.into(), found: sha.into() });
            }
        }
        if let Some(image) = self.tables.image(sha)? {
            if self.path(sha).is_file() {
                return Ok(Registered { image, new: false });
            }
        }
        let row =
            ImageRow { sha256: sha.into(), size, owner: owner.into(), source: source.into(), created_ms: crate::host::now_ms() };
        self.tables.check_quota(owner, size, self.quotas)?;
        let dst = self.path(sha);
        std::fs::rename(tmp, &dst).map_err(|e| ImageError::io(dst.display(), e))?;
        fsync_dir(&self.root.join("images"));
        match self.tables.add_image(&row, self.quotas) {
            Ok(new) => Ok(Registered { image: row, new }),
            Err(e) => {
                let _ = std::fs::remove_file(&dst);
                Err(e.into())
            }
        }
    }

    /// Writes image `sha` from `chunks` (a fetch from the site): to a temp name, hashed while
    /// written, fsynced, then renamed into place with its row. Other bytes → `DigestMismatch`
    /// and no file; `cancel` true between chunks stops it (no file either). Called on a
    /// blocking thread; `progress` gets the bytes written so far.
    pub fn receive(
        &self,
        sha: &str,
        origin: &str,
        mut chunks: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
        cancel: &dyn Fn() -> bool,
        progress: &dyn Fn(u64),
    ) -> Result<Registered, ImageError> {
        if !is_sha256(sha) {
            return Err(ImageError::Refused(format!("'{sha}' is not a sha256 digest")));
        }
        let tmp = self.temp();
        let r = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| ImageError::io(tmp.display(), e))?;
            let mut h = openssl::sha::Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) = chunks.blocking_recv() {
                if cancel() {
                    return Err(ImageError::Transfer(format!("{origin}: cancelled")));
                }
                let chunk = chunk.map_err(|e| ImageError::Transfer(format!("{origin}: {e}")))?;
                h.update(&chunk);
                out.write_all(&chunk).map_err(|e| ImageError::io(tmp.display(), e))?;
                n += chunk.len() as u64;
                progress(n);
            }
            out.sync_all().map_err(|e| ImageError::io(tmp.display(), e))?;
            let found = hex(&h.finish());
            if found != sha {
                tracing::error!(sha, found, origin, bytes = n, "image fetched from the site has other bytes: refused");
            }
            let r = self.adopt_temp(&tmp, &found, n, "site", origin, Some(sha))?;
            // Just hashed: its hand-off to the deployment need not hash it again.
            if let Some(f) = fingerprint(&self.path(sha)) {
                self.verified.lock().unwrap().insert(sha.to_string(), f);
            }
            Ok(r)
        })();
        let _ = std::fs::remove_file(&tmp);
        r
    }

    /// Takes a staged pool file into the store by hard link (after a transfer), so the next
    /// deploy of the same bytes makes none. Best effort: quota or errors only skip it.
    pub fn adopt_file(&self, file: &Path, sha: &str, owner: &str, source: &str) -> bool {
        if !is_sha256(sha) || self.has(sha) {
            return false;
        }
        let Ok(meta) = std::fs::metadata(file) else { return false };
        let tmp = self.temp();
        if std::fs::hard_link(file, &tmp).is_err() {
            return false;
        }
        let r = self.adopt_temp(&tmp, sha, meta.len(), owner, source, Some(sha));
        let _ = std::fs::remove_file(&tmp);
        match r {
            Ok(reg) => reg.new,
            Err(e) => {
                tracing::info!(sha, error = %e, "staged image not kept in the image store");
                false
            }
        }
    }

    /// Hands image `sha` to a deployment: hashed again (a changed file is refused), then
    /// hard-linked (copied across file systems) to `dst`.
    pub fn link_into(&self, sha: &str, dst: &Path) -> Result<u64, ImageError> {
        let src = self.path(sha);
        if !self.has(sha) {
            return Err(ImageError::Unknown(sha.into()));
        }
        let known = self.verified.lock().unwrap().get(sha).copied();
        if known.is_none() || known != fingerprint(&src) {
            let found = hash_file(&src).map_err(|e| ImageError::io(src.display(), e))?;
            if found != sha {
                self.verified.lock().unwrap().remove(sha);
                tracing::error!(sha, found, file = %src.display(), "image store file changed on disk: refused");
                return Err(ImageError::DigestMismatch {
                    what: format!("store file {}", src.display()),
                    expected: sha.into(),
                    found,
                });
            }
        }
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d).map_err(|e| ImageError::io(d.display(), e))?;
        }
        let _ = std::fs::remove_file(dst);
        if std::fs::hard_link(&src, dst).is_err() {
            std::fs::copy(&src, dst).map_err(|e| ImageError::io(dst.display(), e))?;
        }
        // Linking changed the ctime: remember the file as it is now.
        if let Some(f) = fingerprint(&src) {
            self.verified.lock().unwrap().insert(sha.to_string(), f);
        }
        Ok(std::fs::metadata(dst).map(|m| m.len()).unwrap_or(0))
    }

    /// Removes images not in `referenced` and older than `grace_ms`: row first, then file.
    pub fn gc(&self, referenced: &HashSet<String>, now_ms: i64, grace_ms: i64) -> Result<Vec<ImageRow>, ImageError> {
        let mut removed = Vec::new();
        for img in self.tables.images()? {
            if referenced.contains(&img.sha256) || img.created_ms > now_ms - grace_ms {
                continue;
            }
            if self.tables.remove_image(&img.sha256)? {
                let _ = std::fs::remove_file(self.path(&img.sha256));
                tracing::info!(sha = img.sha256, size = img.size, "image store: unreferenced image removed");
                removed.push(img);
            }
        }
        if !removed.is_empty() {
            fsync_dir(&self.root.join("images"));
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_dedupes_verifies_and_gc_keeps_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let tables = Arc::new(RepoTables::open(dir.path()).unwrap());
        let s = ImageStore::open(&dir.path().join("repository"), tables.clone(), Quotas::default()).unwrap();
        let src = dir.path().join("a.img");
        let data: Vec<u8> = (0..(9 << 20)).map(|i: u32| ((i * 7) >> 3) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let r = s.register_file(&src, "o", "file:///a.img", None).unwrap();
        assert!(r.new);
        assert_eq!(r.image.sha256, hash_file(&src).unwrap());
        assert_eq!(std::fs::read(s.path(&r.image.sha256)).unwrap(), data);
        let again = s.register_file(&src, "o2", "x", None).unwrap();
        assert!(!again.new);
        assert_eq!(std::fs::read_dir(dir.path().join("repository/images")).unwrap().count(), 1);
        assert!(matches!(s.register_file(&src, "o", "x", Some(&"0".repeat(64))), Err(ImageError::DigestMismatch { .. })));
        assert_eq!(std::fs::read_dir(dir.path().join("repository/tmp")).unwrap().count(), 0);
        let dst = dir.path().join("pool/w/disk00");
        s.link_into(&r.image.sha256, &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        // Tampered: refused.
        let mut f = std::fs::OpenOptions::new().write(true).open(s.path(&r.image.sha256)).unwrap();
        f.write_all(b"X").unwrap();
        drop(f);
        assert!(matches!(s.link_into(&r.image.sha256, &dst), Err(ImageError::DigestMismatch { .. })));
        let keep: HashSet<String> = [r.image.sha256.clone()].into();
        assert!(s.gc(&keep, i64::MAX / 2, 0).unwrap().is_empty());
        assert_eq!(s.gc(&HashSet::new(), i64::MAX / 2, 0).unwrap().len(), 1);
        assert!(!s.path(&r.image.sha256).exists());
        // A crash leftover: orphan file and temp file are removed on open.
        std::fs::write(dir.path().join("repository/images").join("f".repeat(64)), b"x").unwrap();
        std::fs::write(dir.path().join("repository/tmp/partial"), b"x").unwrap();
        drop(s);
        let _s = ImageStore::open(&dir.path().join("repository"), tables, Quotas::default()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("repository/images")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.path().join("repository/tmp")).unwrap().count(), 0);
    }
}
