//! The site Repository's image route, `GET /wsrf/images/{sha256}` (issue 12): the bytes of an
//! image of the store by its digest, for Manager hosts that use this vwsd as their remote site
//! Repository. The caller comes from the connection (GSI transport when security is on; a
//! refused or expired credential gets a 403 and the connection closed) and is authorised by the
//! Repository ([`crate::services::ImageFiles`]). The file is streamed (never read into memory);
//! one `Range: bytes=…` range is honoured (206 / 416), several are answered with the whole image.
//! The digest is the strong `ETag`. The receiver verifies the bytes against the digest itself.

use super::{text_response, Edge, Peer};
use crate::services::ImageRefusal;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Bytes read from the file per body chunk.
const CHUNK: usize = 256 << 10;

/// One range of a `len`-byte file from a `Range` header value: `Some(Ok((first, last)))`,
/// `Some(Err(()))` when unsatisfiable, `None` when absent, malformed or several (whole file).
pub(crate) fn range(value: Option<&str>, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value?.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = match (a.is_empty(), b.is_empty()) {
        (true, true) => return None,
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            if n == 0 || len == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, _) => {
            let first: u64 = a.parse().ok()?;
            let last: u64 = if b.is_empty() { u64::MAX } else { b.parse().ok()? };
            if last < first {
                return None;
            }
            if first >= len {
                return Some(Err(()));
            }
            (first, last.min(len - 1))
        }
    };
    Some(Ok(r))
}

fn refused(status: StatusCode, msg: String, close: bool) -> Response {
    let mut r = text_response(status, format!("{msg}\n"));
    if close {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// `GET /wsrf/images/{sha256}` (and HEAD, which axum answers without the body).
pub async fn image_get(State(edge): State<Arc<Edge>>, Path(sha): Path<String>, req: Request) -> Response {
    let Some(peer) = req.extensions().get::<Peer>() else {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "no connection information\n".into());
    };
    let current = peer.current_caller();
    let caller = match &*current {
        Ok(c) => c.clone(),
        Err(reason) => {
            tracing::warn!(sha, "refused image request: authentication failed: {reason}");
            return refused(StatusCode::FORBIDDEN, format!("authentication failed: {reason}"), true);
        }
    };
    if caller.expired_at(crate::soap::time::now_ms() / 1000) {
        tracing::warn!(dn = caller.name(), "refused image request: connection credentials expired; closing the connection");
        return refused(
            StatusCode::FORBIDDEN,
            "authentication failed: the credentials of this connection have expired".into(),
            true,
        );
    }
    let Some(files) = &edge.images else {
        return text_response(StatusCode::NOT_FOUND, "this vwsd serves no images\n".into());
    };
    let path = match files.image_file(&caller, &sha) {
        Ok(p) => p,
        Err(ImageRefusal::BadName(m)) => return refused(StatusCode::BAD_REQUEST, m, false),
        Err(ImageRefusal::Denied(m)) => return refused(StatusCode::FORBIDDEN, m, false),
        Err(ImageRefusal::Unknown(m)) => return refused(StatusCode::NOT_FOUND, m, false),
    };
    // Opened once: a gc removing the name meanwhile does not cut the transfer short.
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return refused(StatusCode::NOT_FOUND, format!("image {sha}: {e}"), false),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            tracing::error!(sha, error = %e, "image store file unreadable");
            return text_response(StatusCode::INTERNAL_SERVER_ERROR, format!("image {sha}: {e}\n"));
        }
    };
    let wanted = range(req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()), len);
    let (status, first, last) = match wanted {
        None => (StatusCode::OK, 0, len.checked_sub(1)),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, Some(b)),
        Some(Err(())) => {
            let mut r = refused(StatusCode::RANGE_NOT_SATISFIABLE, format!("image {sha} has {len} bytes"), false);
            r.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).unwrap());
            return r;
        }
    };
    let n = last.map_or(0, |l| l + 1 - first);
    if first > 0 {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(first)).await {
            return text_response(StatusCode::INTERNAL_SERVER_ERROR, format!("image {sha}: {e}\n"));
        }
    }
    tracing::info!(sha, caller = caller.name(), first, bytes = n, "image served");
    metrics::counter!("vws_image_served_bytes_total").increment(n);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(n), CHUNK));
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        h.insert(header::ETAG, v);
    }
    if let (StatusCode::PARTIAL_CONTENT, Some(l)) = (status, last) {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{l}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges() {
        assert_eq!(range(None, 10), None);
        assert_eq!(range(Some("bytes=0-4"), 10), Some(Ok((0, 4))));
        assert_eq!(range(Some("bytes=5-"), 10), Some(Ok((5, 9))));
        assert_eq!(range(Some("bytes=-3"), 10), Some(Ok((7, 9))));
        assert_eq!(range(Some("bytes=-30"), 10), Some(Ok((0, 9))));
        assert_eq!(range(Some("bytes=8-100"), 10), Some(Ok((8, 9))));
        assert_eq!(range(Some("bytes=10-"), 10), Some(Err(())));
        assert_eq!(range(Some("bytes=-0"), 10), Some(Err(())));
        assert_eq!(range(Some("bytes=0-1,3-4"), 10), None, "several ranges: the whole image");
        assert_eq!(range(Some("bytes=4-2"), 10), None);
        assert_eq!(range(Some("items=0-1"), 10), None);
        assert_eq!(range(Some("bytes=x-"), 10), None);
    }
}
