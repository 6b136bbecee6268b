//! Write bodies as clients compress them: `Content-Encoding: gzip` (Telegraf, InfluxDB's
//! client libraries), decoded to at most `MAX_BODY` bytes, so a few kilobytes of gzip
//! cannot grow past what a plain body may be.

use std::io::Read;

use axum::http::{HeaderMap, StatusCode, header::CONTENT_ENCODING};
use bytes::Bytes;
use flate2::read::MultiGzDecoder;

use super::{MAX_BODY, Refusal};

/// The body as sent, decoded as its `Content-Encoding` says: none or `identity` is the
/// body itself, `gzip` (or `x-gzip`) is inflated; any other is refused with 415.
pub async fn decoded(headers: &HeaderMap, body: Bytes) -> Result<Bytes, Refusal> {
    let Some(encoding) = headers.get(CONTENT_ENCODING) else {
        return Ok(body);
    };
    let encoding = String::from_utf8_lossy(encoding.as_bytes())
        .trim()
        .to_owned();
    match encoding.to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => tokio::task::spawn_blocking(move || gunzip(&body))
            .await
            .map_err(|e| {
                Refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("decoding the gzip body failed: {e}"),
                )
            })?,
        _ => Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding: {encoding} is not supported (gzip and identity are)"),
        )),
    }
}

/// Every gzip member of `body` one after another (`cat a.gz b.gz` is one stream, as
/// Go's and Rust's gzip readers take it), stopped one byte past the cap.
fn gunzip(body: &[u8]) -> Result<Bytes, Refusal> {
    let mut decoded = Vec::new();
    let cap = u64::try_from(MAX_BODY)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    MultiGzDecoder::new(body)
        .take(cap)
        .read_to_end(&mut decoded)
        .map_err(|e| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid gzip (Content-Encoding: gzip): {e}"),
            )
        })?;
    if decoded.len() > MAX_BODY {
        return Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body decoded from gzip is larger than {MAX_BODY} bytes"),
        ));
    }
    Ok(decoded.into())
}
