//! Serving an immutable file with single `Range` requests (so interrupted downloads resume).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// The part of a `len`-byte file that `Range: bytes=...` asks for: `Ok(None)` for the whole
/// file (no header, or one we do not serve: several ranges, other units, a malformed one, all
/// of which RFC 9110 says to ignore), `Err(())` when it cannot be satisfied.
pub fn parse(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else { return Ok(None) };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    let well_formed = match (first.is_empty(), last.is_empty()) {
        (true, true) => false,
        (true, false) => number(last).is_some(),
        (false, true) => number(first).is_some(),
        (false, false) => number(first).zip(number(last)).is_some_and(|(a, b)| a <= b),
    };
    if !well_formed {
        return Ok(None);
    }
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| ())?;
        if suffix == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(suffix), len - 1)
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end =
            if last.is_empty() { len.saturating_sub(1) } else { last.parse().map_err(|_| ())? };
        if start >= len || end < start {
            return Err(());
        }
        (start, end.min(len - 1))
    };
    Ok(Some(range))
}

/// Answers a GET for `file` (named by `etag`), honouring `Range`; also says how many bytes of
/// the file the answer carries.
pub fn serve(headers: &HeaderMap, file: Bytes, etag: &str) -> (Response, u64) {
    let len = file.len() as u64;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // If-Range with another validator: send the whole (new) file.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let etag_value = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::ETAG, etag_value),
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable")),
    ];
    match parse(range_header.filter(|_| if_range_ok), len) {
        Ok(None) => (StatusCode::OK, common, Body::from(file)).into_response_with(len),
        Ok(Some((start, end))) => {
            let part = file.slice(start as usize..=end as usize);
            let content_range = format!("bytes {start}-{end}/{len}");
            let mut r = (StatusCode::PARTIAL_CONTENT, common, Body::from(part)).into_response();
            if let Ok(v) = HeaderValue::from_str(&content_range) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (r, end - start + 1)
        }
        Err(()) => {
            let mut r = crate::error::Failure::new(
                crate::error::FailureKind::BadRequest,
                "range_not_satisfiable",
                format!("the file has {len} bytes; the requested range starts outside it"),
            )
            .into_response();
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (r, 0)
        }
    }
}

trait WithLen {
    fn into_response_with(self, len: u64) -> (Response, u64);
}

impl<T: IntoResponse> WithLen for T {
    fn into_response_with(self, len: u64) -> (Response, u64) {
        (self.into_response(), len)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn ranges() {
        assert_eq!(parse(None, 100), Ok(None));
        assert_eq!(parse(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse(Some("bytes=90-1000"), 100), Ok(Some((90, 99))));
        assert_eq!(parse(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse(Some("bytes=-1000"), 100), Ok(Some((0, 99))));
        assert_eq!(parse(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse(Some("bytes=5-4"), 100), Ok(None));
        assert_eq!(parse(Some("bytes=x-4"), 100), Ok(None));
        assert_eq!(parse(Some("bytes=-"), 100), Ok(None));
        assert_eq!(parse(Some("bytes=4"), 100), Ok(None));
        assert_eq!(parse(Some("bytes=-0"), 100), Err(()));
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse(Some("items=0-1"), 100), Ok(None));
    }
}
