//! A status's text as it leaves a server, in `grpc-message`: held to a size every client
//! takes. It travels in an HTTP/2 header, and clients refuse a header block past their
//! own limit (hyper's 16 KiB, grpcio's 8 KiB) with a bare protocol error, so a long
//! reason (a config's 125 errors, a plugin's text) reached nobody. Past the bound the
//! first whole lines are kept and the rest counted.

use std::borrow::Cow;

use tonic::codegen::http::HeaderValue;

/// The most bytes of `grpc-message` a server sends, percent-encoded as on the wire:
/// under grpcio's 8 KiB with room for the other headers.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 6 << 10;

/// Room kept for the note that says what was left out: its longest form, two 20-digit
/// counts, percent-encoded, is 88 bytes.
const NOTE_BYTES: usize = 96;

/// Cuts `value`, a `grpc-message` as sent (percent-encoded), to
/// [`MAX_STATUS_MESSAGE_BYTES`]; `None` when it fits as it is.
pub(crate) fn bound_value(value: &HeaderValue) -> Option<HeaderValue> {
    if value.len() <= MAX_STATUS_MESSAGE_BYTES {
        return None;
    }
    let text = decode(value.as_bytes());
    let cut = bounded(&text, MAX_STATUS_MESSAGE_BYTES);
    HeaderValue::from_str(&encode(&cut)).ok()
}

/// What an earlier cut left out, as its note at the end of a text says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct LeftOut {
    /// Whole lines left out (none when the cut was inside a line).
    lines: u64,
    bytes: u64,
}

/// `text` without the note an earlier cut ended it with, and what that note counted:
/// a status cut by a plugin's server and then wrapped by the host ("plugin f (generation
/// 2, pid 7) exited during the call to …: <the plugin's text>") is cut again, and the
/// counts must add up rather than name the second cut alone.
fn earlier_note(text: &str) -> (&str, LeftOut) {
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let Some(at) = text.rfind("… and ") else {
        return (text, LeftOut::default());
    };
    let note = &text[at + "… and ".len()..];
    if let Some(n) = note.strip_suffix(" more bytes not shown").and_then(number) {
        return (&text[..at], LeftOut { lines: 0, bytes: n });
    }
    let lines_and_bytes = note
        .strip_suffix(" bytes)")
        .and_then(|n| n.split_once(" more lines not shown ("))
        .and_then(|(lines, bytes)| Some((number(lines)?, number(bytes)?)));
    match lines_and_bytes {
        Some((lines, bytes)) => (&text[..at], LeftOut { lines, bytes }),
        None => (text, LeftOut::default()),
    }
}

/// `text`, as it is if its encoding fits in `max` bytes; otherwise its first whole
/// lines that fit (or the start of its first line, if that alone does not), and a note
/// of what was left out, counting what an earlier cut left out too. A `max` too small
/// for any note gets the bare start of `text`: the bound holds for every `max`.
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if encoded_len(text) <= max {
        return Cow::Borrowed(text);
    }
    let (text, earlier) = earlier_note(text);
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
    let cut = if lines == 0 {
        // One line longer than the bound: its start, cut at a character.
        let kept = start_within(text, budget).len();
        let rest = (text.len() - kept) as u64 + earlier.bytes;
        format!("{}… and {rest} more bytes not shown", &text[..kept])
    } else {
        let rest = &text[kept..];
        let more = rest.split_inclusive('\n').count() as u64 + earlier.lines;
        format!(
            "{}… and {more} more lines not shown ({} bytes)",
            &text[..kept],
            rest.len() as u64 + earlier.bytes
        )
    };
    if encoded_len(&cut) <= max {
        Cow::Owned(cut)
    } else {
        Cow::Borrowed(start_within(text, max))
    }
}

/// The longest start of `text`, cut at a character, whose encoding fits in `max` bytes.
fn start_within(text: &str, max: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += encoded_len(c.encode_utf8(&mut [0; 4]));
        if used > max {
            return &text[..at];
        }
    }
    text
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
        assert_eq!(bound_value(&HeaderValue::from_static("a%20b")), None);
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
        let value = HeaderValue::from_str(&encode(&text)).expect("a header value");
        let value = bound_value(&value).expect("cut");
        assert!(value.len() <= MAX_STATUS_MESSAGE_BYTES, "{}", value.len());
        let shown = decode(value.as_bytes());
        assert!(shown.starts_with("first line\nx y\n"), "{shown}");
        assert!(shown.contains("more lines not shown"), "{shown}");
        // Malformed escapes are kept as they came.
        assert_eq!(decode(b"100%% %zz %4"), "100%% %zz %4");
    }

    /// The last 200 characters of `text`, for a failure's message.
    fn tail(text: &str) -> String {
        let n = text.chars().count();
        text.chars().skip(n.saturating_sub(200)).collect()
    }

    #[test]
    fn a_text_cut_twice_counts_what_both_cuts_left_out() {
        // A plugin's server cuts its 20,000-byte text; the host wraps it and cuts again.
        let text = "z".repeat(20_000);
        let by_plugin = bounded(&text, MAX_STATUS_MESSAGE_BYTES);
        let wrapped =
            format!("plugin f (generation 2, pid 77) exited during the call to \"m\": {by_plugin}");
        let by_host = bounded(&wrapped, MAX_STATUS_MESSAGE_BYTES);
        assert!(encoded_len(&by_host) <= MAX_STATUS_MESSAGE_BYTES);
        let shown = by_host.matches('z').count();
        let said = format!("… and {} more bytes not shown", 20_000 - shown);
        assert!(
            by_host.ends_with(&said),
            "{said:?} not at the end of {}",
            tail(&by_host)
        );

        // Lines: the counts of both cuts add up too.
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let by_plugin = bounded(&text, 2048);
        let wrapped = format!("plugin f:\n{by_plugin}");
        let by_host = bounded(&wrapped, 1024);
        let shown = by_host.matches("line ").count();
        let left: usize = text.lines().skip(shown).map(|l| l.len() + 1).sum();
        let said = format!("… and {} more lines not shown ({left} bytes)", 1000 - shown);
        assert!(
            by_host.ends_with(&said),
            "{said:?} not at the end of {}",
            tail(&by_host)
        );

        // A note that is no note is text like any other.
        assert_eq!(
            earlier_note("… and 1x more bytes not shown").1,
            LeftOut::default()
        );
    }

    #[test]
    fn the_bound_holds_for_any_max_even_one_too_small_for_the_note() {
        for text in ["x".repeat(500), "é".repeat(500), "a\nb\n".repeat(200)] {
            for max in 0..200 {
                let cut = bounded(&text, max);
                assert!(encoded_len(&cut) <= max, "max {max}: {cut:?}");
                assert!(
                    text.starts_with(&*cut) || cut.contains("not shown"),
                    "{cut:?}"
                );
            }
        }
    }
}
