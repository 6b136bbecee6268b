//! A status's header block as it leaves a server (trailers, or a trailers-only answer's
//! headers), held to a total every client takes: a plugin's trailers pass through the
//! daemon's forwarding as they came, and a client refuses a block past its own limit
//! (hyper's 16 KiB, grpcio's 8 KiB) with a bare protocol error, the status lost.

use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};

use crate::status_text;

/// The most bytes of headers a server sends in one block, counted as HTTP/2 counts a
/// header list (name, value and 32 bytes per entry): under grpcio's 8 KiB with room for
/// the pseudo-header `:status`.
pub const MAX_HEADER_BLOCK_BYTES: usize = 7 << 10;

/// Says what was dropped to keep a block within [`MAX_HEADER_BLOCK_BYTES`]: a trailer
/// of its own, rather than words in `grpc-message`, so that the status's text stays
/// the one its server wrote.
pub const DROPPED_HEADER: &str = "x-baton-dropped-metadata";

/// Names listed in [`DROPPED_HEADER`]; past this many, a count.
const MAX_NAMED: usize = 8;

/// Characters of each name listed in [`DROPPED_HEADER`].
const MAX_NAME_CHARS: usize = 64;

/// Room kept for [`DROPPED_HEADER`] when entries are dropped: its longest form is
/// under 700 bytes (eight names of 64 characters and the counts).
const NOTE_ROOM: usize = 768;

/// A `grpc-status` longer than this is no status code, and is dropped like any other
/// entry when the block is too large.
const MAX_STATUS_CODE_BYTES: usize = 16;

/// Holds `headers` within [`MAX_HEADER_BLOCK_BYTES`]: one `grpc-message` (the first,
/// cut to [`status_text::MAX_STATUS_MESSAGE_BYTES`]) and one `grpc-status` are kept;
/// if the block is still too large, the largest of its other entries (custom metadata,
/// `grpc-status-details-bin`) are dropped until it fits, and [`DROPPED_HEADER`] says
/// which. Entries are kept whole or not at all: half a `-bin` value is garbage.
pub(crate) fn bound(headers: &mut HeaderMap) {
    keep_first(headers, "grpc-status", |_| None);
    keep_first(headers, "grpc-message", status_text::bound_value);
    let total: usize = headers.iter().map(|(n, v)| size(n, v)).sum();
    if total <= MAX_HEADER_BLOCK_BYTES {
        return;
    }
    let protected = |name: &HeaderName, value: &HeaderValue| {
        name == "grpc-message" || (name == "grpc-status" && value.len() <= MAX_STATUS_CODE_BYTES)
    };
    let mut entries: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut by_size: Vec<usize> = (0..entries.len())
        .filter(|&i| !protected(&entries[i].0, &entries[i].1))
        .collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(size(&entries[i].0, &entries[i].1)));
    let mut kept = total;
    let mut dropped = Vec::new();
    for i in by_size {
        if kept + NOTE_ROOM <= MAX_HEADER_BLOCK_BYTES {
            break;
        }
        kept -= size(&entries[i].0, &entries[i].1);
        dropped.push(i);
    }
    let bytes: usize = dropped
        .iter()
        .map(|&i| entries[i].0.as_str().len() + entries[i].1.len())
        .sum();
    let mut names: Vec<&str> = Vec::new();
    for &i in &dropped {
        let name = entries[i].0.as_str();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut note = format!(
        "{} entries ({bytes} bytes) dropped to keep the header block within \
         {MAX_HEADER_BLOCK_BYTES} bytes: {}",
        dropped.len(),
        names
            .iter()
            .take(MAX_NAMED)
            .map(|n| n.chars().take(MAX_NAME_CHARS).collect::<String>())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if names.len() > MAX_NAMED {
        note.push_str(&format!(" and {} more", names.len() - MAX_NAMED));
    }
    dropped.sort_unstable();
    for i in dropped.into_iter().rev() {
        entries.swap_remove(i);
    }
    headers.clear();
    for (name, value) in entries {
        headers.append(name, value);
    }
    if let Ok(note) = HeaderValue::from_str(&note) {
        headers.insert(DROPPED_HEADER, note);
    }
}

/// Keeps the first value of `name` alone (a second one is a peer's trick, and clients
/// differ on which they read), replaced by `cut` of it when that gives one.
fn keep_first(
    headers: &mut HeaderMap,
    name: &'static str,
    cut: impl Fn(&HeaderValue) -> Option<HeaderValue>,
) {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return;
    };
    let several = values.next().is_some();
    let replaced = cut(first);
    if !several && replaced.is_none() {
        return;
    }
    let value = replaced.unwrap_or_else(|| first.clone());
    headers.insert(name, value);
}

/// What one entry counts for in an HTTP/2 header list (RFC 7540 §6.5.2).
fn size(name: &HeaderName, value: &HeaderValue) -> usize {
    name.as_str().len() + value.len() + 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_size(headers: &HeaderMap) -> usize {
        headers.iter().map(|(n, v)| size(n, v)).sum()
    }

    #[test]
    fn a_small_block_is_left_as_it_is() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        headers.insert("grpc-message", HeaderValue::from_static("no%20such"));
        headers.insert("x-small", HeaderValue::from_static("1"));
        let before = headers.clone();
        bound(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn duplicates_go_and_the_largest_entries_are_dropped_and_named() {
        let mut headers = HeaderMap::new();
        let long = HeaderValue::from_str(&"m".repeat(20_000)).expect("a value");
        headers.insert("grpc-status", HeaderValue::from_static("13"));
        headers.append("grpc-status", HeaderValue::from_static("0"));
        headers.insert("grpc-message", HeaderValue::from_static("first"));
        headers.append("grpc-message", long.clone());
        headers.insert("grpc-status-details-bin", long.clone());
        headers.insert("x-big", long);
        headers.insert("x-small", HeaderValue::from_static("kept"));
        bound(&mut headers);
        assert!(block_size(&headers) <= MAX_HEADER_BLOCK_BYTES);
        assert_eq!(headers.get_all("grpc-status").iter().count(), 1);
        assert_eq!(headers["grpc-status"], "13");
        assert_eq!(headers.get_all("grpc-message").iter().count(), 1);
        assert_eq!(headers["grpc-message"], "first");
        assert_eq!(headers["x-small"], "kept");
        assert!(headers.get("x-big").is_none() && headers.get("grpc-status-details-bin").is_none());
        let note = headers[DROPPED_HEADER].to_str().expect("ASCII");
        assert!(
            note.starts_with("2 entries (")
                && note.contains("grpc-status-details-bin")
                && note.contains("x-big"),
            "{note}"
        );
    }

    #[test]
    fn many_entries_each_small_are_held_to_the_total_with_a_bounded_note() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("2"));
        let message = HeaderValue::from_str(&"x".repeat(20_000)).expect("a value");
        headers.insert("grpc-message", message);
        for i in 0..2000 {
            let name: HeaderName = format!("x-{i}-{}", "n".repeat(80)).parse().expect("a name");
            headers.insert(name, HeaderValue::from_static("v"));
        }
        bound(&mut headers);
        assert!(
            block_size(&headers) <= MAX_HEADER_BLOCK_BYTES,
            "{}",
            block_size(&headers)
        );
        assert!(headers["grpc-message"].len() <= status_text::MAX_STATUS_MESSAGE_BYTES);
        let note = headers[DROPPED_HEADER].to_str().expect("ASCII");
        assert!(note.contains(" more"), "{note}");
    }

    /// An answer's body: one message, then `trailers`.
    struct MessageThenTrailers(Option<bytes::Bytes>, Option<HeaderMap>);

    impl http_body::Body for MessageThenTrailers {
        type Data = bytes::Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>>
        {
            let frame = match self.0.take() {
                Some(data) => Some(Ok(http_body::Frame::data(data))),
                None => self.1.take().map(|t| Ok(http_body::Frame::trailers(t))),
            };
            std::task::Poll::Ready(frame)
        }
    }

    /// A header block a hostile plugin might end its answer with: two messages, the
    /// second long, large details and large custom metadata (40 KB in all).
    fn hostile_block() -> HeaderMap {
        let long = |n: usize| HeaderValue::from_str(&"w".repeat(n)).expect("a value");
        let mut block = HeaderMap::new();
        block.insert("grpc-status", HeaderValue::from_static("9"));
        block.insert("grpc-message", HeaderValue::from_static("the%20reason"));
        block.append("grpc-message", long(20_000));
        block.insert("grpc-status-details-bin", long(10_000));
        block.insert("x-trace", long(10_000));
        block
    }

    #[tokio::test]
    async fn a_servers_trailers_reach_a_client_within_the_total_whatever_the_service_wrote() {
        use http_body::Body as _;
        use tonic::body::Body;
        use tonic::codegen::http;
        use tower::Service;

        let service = tower::service_fn(|request: http::Request<Body>| async move {
            let mut response = if request.uri().path() == "/t.T/TrailersOnly" {
                let mut only = http::Response::new(Body::empty());
                *only.headers_mut() = hostile_block();
                only
            } else {
                let body = MessageThenTrailers(
                    Some(bytes::Bytes::from_static(b"\0\0\0\0\0")),
                    Some(hostile_block()),
                );
                http::Response::new(Body::new(body))
            };
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            Ok::<_, std::convert::Infallible>(response)
        });
        let (_dir, mut client) =
            crate::test_socket::serve_on_a_socket(crate::ServerConfig::new("test"), service);
        for path in ["/t.T/TrailersOnly", "/t.T/Stream"] {
            let request = http::Request::post(format!("http://t{path}"))
                .header("content-type", "application/grpc")
                .body(Body::empty())
                .expect("a request");
            let response = client.call(request).await.expect("an answer");
            let (head, mut body) = response.into_parts();
            let mut block = head.headers;
            while let Some(frame) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                if let Ok(trailers) = frame.expect("a frame").into_trailers() {
                    block = trailers;
                }
            }
            let size = block_size(&block);
            assert!(size <= MAX_HEADER_BLOCK_BYTES, "{path}: {size} bytes");
            assert_eq!(
                (&block["grpc-status"], &block["grpc-message"]),
                (
                    &HeaderValue::from_static("9"),
                    &HeaderValue::from_static("the%20reason")
                ),
                "{path}"
            );
            let note = block[DROPPED_HEADER].to_str().expect("ASCII");
            assert!(
                note.contains("x-trace") && note.contains("grpc-status-details-bin"),
                "{note}"
            );
        }
    }
}
