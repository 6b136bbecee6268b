//! A status's text as it leaves a server, in `grpc-message`: held to a size every client
//! takes. It travels in an HTTP/2 header, and clients refuse a header block past their
//! own limit (hyper's 16 KiB, grpcio's 8 KiB) with a bare protocol error, so a long
//! reason (a config's 125 errors, a plugin's text) reached nobody. Past the bound the
//! first whole lines are kept and the rest counted.

use std::borrow::Cow;

use tonic::codegen::http::{HeaderMap, HeaderValue};

/// The most bytes of `grpc-message` a server sends, percent-encoded as on the wire:
/// under grpcio's 8 KiB with room for the other headers.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 6 << 10;

/// Room kept for the note that says what was left out.
const NOTE_BYTES: usize = 96;

/// Cuts the `grpc-message` in `headers` (trailers, or a trailers-only answer's headers)
/// to [`MAX_STATUS_MESSAGE_BYTES`]; any other header map is left alone.
pub(crate) fn bound(headers: &mut HeaderMap) {
    let Some(value) = headers.get("grpc-message") else {
        return;
    };
    if value.len() <= MAX_STATUS_MESSAGE_BYTES {
        return;
    }
    let text = decode(value.as_bytes());
    let cut = bounded(&text, MAX_STATUS_MESSAGE_BYTES);
    if let Ok(value) = HeaderValue::from_str(&encode(&cut)) {
        headers.insert("grpc-message", value);
    }
}

/// `text`, as it is if its encoding fits in `max` bytes; otherwise its first whole
/// lines that fit (or the start of its first line, if that alone does not), and a note
/// of what was left out.
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if encoded_len(text) <= max {
        return Cow::Borrowed(text);
    }
    let budget = max.saturating_sub(NOTE_BYTES);
    let mut kept = 0; // bytes of `text`
    let mut used = 0; // bytes once encoded
    let mut lines = 0;
    for line in text.split_inclusive('\n') {
        let cost = encoded_len(line);
        if used + cost > budget {
            break;
        }
        used += cost;
        kept += line.len();
        lines += 1;
    }
    if lines == 0 {
        // One line longer than the bound: its start, cut at a character.
        for c in text.chars() {
            let cost = encoded_len(c.encode_utf8(&mut [0; 4]));
            if used + cost > budget {
                break;
            }
            used += cost;
            kept += c.len_utf8();
        }
        let rest = text.len() - kept;
        return Cow::Owned(format!(
            "{}… and {rest} more bytes not shown",
            &text[..kept]
        ));
    }
    let rest = &text[kept..];
    let more = rest.split_inclusive('\n').count();
    Cow::Owned(format!(
        "{}… and {more} more lines not shown ({} bytes)",
        &text[..kept],
        rest.len()
    ))
}

/// Whether gRPC's percent-encoding writes `b` as `%XX`: anything but printable ASCII,
/// and `%` itself.
fn escaped(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) || b == b'%'
}

fn encoded_len(text: &str) -> usize {
    text.bytes().map(|b| if escaped(b) { 3 } else { 1 }).sum()
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(encoded_len(text));
    for b in text.bytes() {
        if escaped(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The text of a percent-encoded value; a `%` not followed by two hex digits is kept.
fn decode(value: &[u8]) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut bytes = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                value.get(i + 1).copied().and_then(hex),
                value.get(i + 2).copied().and_then(hex),
            )
        {
            bytes.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        bytes.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_message_is_left_as_it_is() {
        assert!(matches!(bounded("plugin f: gone", 64), Cow::Borrowed(_)));
        let mut headers = HeaderMap::new();
        headers.insert("grpc-message", HeaderValue::from_static("a%20b"));
        bound(&mut headers);
        assert_eq!(headers["grpc-message"], "a%20b");
    }

    #[test]
    fn many_lines_keep_the_first_whole_ones_and_count_the_rest() {
        let text: String = (0..125)
            .map(|i| format!("baton.toml:{i}: field `plugins.bad{i}`: wrong\n"))
            .collect();
        let cut = bounded(&text, 1024);
        assert!(cut.starts_with("baton.toml:0: field"), "{cut}");
        assert!(encoded_len(&cut) <= 1024, "{}", encoded_len(&cut));
        let shown = cut.lines().count() - 1;
        assert!(
            cut.contains(&format!("… and {} more lines not shown (", 125 - shown)),
            "{cut}"
        );
    }

    #[test]
    fn one_long_line_is_cut_at_a_character_and_fits_once_encoded() {
        let text = "é".repeat(10_000);
        let cut = bounded(&text, 2048);
        assert!(encoded_len(&cut) <= 2048, "{}", encoded_len(&cut));
        assert!(cut.ends_with("more bytes not shown"), "{cut}");
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn a_long_header_is_rewritten_within_the_bound_and_decodes_to_the_same_start() {
        let text = format!("first line\n{}", "x y\n".repeat(10_000));
        let mut headers = HeaderMap::new();
        headers.insert(
            "grpc-message",
            HeaderValue::from_str(&encode(&text)).expect("a header value"),
        );
        bound(&mut headers);
        let value = &headers["grpc-message"];
        assert!(value.len() <= MAX_STATUS_MESSAGE_BYTES, "{}", value.len());
        let shown = decode(value.as_bytes());
        assert!(shown.starts_with("first line\nx y\n"), "{shown}");
        assert!(shown.contains("more lines not shown"), "{shown}");
        // Malformed escapes are kept as they came.
        assert_eq!(decode(b"100%% %zz %4"), "100%% %zz %4");
    }
}
