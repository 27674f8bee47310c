//! `file://` endpoints: local files, copied with large positional reads/writes (and
//! `copy_file_range` where the kernel offers it).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use super::{Endpoint, Progress, Result, TransferError, Url};

pub struct FileEndpoint {
    url: Url,
}

impl FileEndpoint {
    pub fn new(url: Url) -> FileEndpoint {
        FileEndpoint { url }
    }
    fn open(&self) -> Result<File> {
        File::open(&self.url.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TransferError::NotFound { url: self.url.to_string(), reason: e.to_string() }
            } else {
                TransferError::io(&self.url.path, e)
            }
        })
    }
}

/// Copies `len` bytes from `src` to `dst` (both from offset 0).
pub fn copy_range(src: &File, dst: &File, len: u64, progress: &Progress, what: &str) -> Result<u64> {
    let mut off = 0u64;
    // copy_file_range: no user-space copy at all.
    while off < len {
        let mut si = off as i64;
        let mut di = off as i64;
        let want = (len - off).min(64 << 20) as usize;
        // SAFETY: valid fds and offset pointers for the duration of the call.
        let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut si, dst.as_raw_fd(), &mut di, want, 0) };
        if n <= 0 {
            break;
        }
        progress.add(off, n as u64);
        off += n as u64;
        progress.check()?;
    }
    let mut buf = vec![0u8; 4 << 20];
    while off < len {
        let want = ((len - off) as usize).min(buf.len());
        let n = src.read_at(&mut buf[..want], off).map_err(|e| TransferError::io(what, e))?;
        if n == 0 {
            return Err(TransferError::Interrupted { url: what.into(), reason: format!("file shrank to {off} bytes") });
        }
        dst.write_all_at(&buf[..n], off).map_err(|e| TransferError::io(what, e))?;
        progress.add(off, n as u64);
        off += n as u64;
        progress.check()?;
    }
    Ok(off)
}

impl Endpoint for FileEndpoint {
    fn url(&self) -> &Url {
        &self.url
    }
    fn size(&self) -> Result<Option<u64>> {
        let md = self.open()?.metadata().map_err(|e| TransferError::io(&self.url.path, e))?;
        if md.is_dir() {
            return Err(TransferError::NotFound { url: self.url.to_string(), reason: "is a directory".into() });
        }
        Ok(Some(md.len()))
    }
    fn download(&self, dest: &File, progress: &Progress) -> Result<u64> {
        let f = self.open()?;
        let len = f.metadata().map_err(|e| TransferError::io(&self.url.path, e))?.len();
        copy_range(&f, dest, len, progress, &self.url.path)
    }
    fn upload(&self, src: &File, len: u64, progress: &Progress) -> Result<u64> {
        let dst = File::create(&self.url.path).map_err(|e| TransferError::io(&self.url.path, e))?;
        copy_range(src, &dst, len, progress, &self.url.path)
    }
    fn rename(&self, to: &Url) -> Result<()> {
        std::fs::rename(&self.url.path, &to.path).map_err(|e| TransferError::io(&self.url.path, e))
    }
    fn delete(&self) -> Result<()> {
        std::fs::remove_file(&self.url.path).map_err(|e| TransferError::io(&self.url.path, e))
    }
}
