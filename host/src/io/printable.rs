//! Text a plugin wrote, made safe to print: its control characters written as escapes,
//! so that a line cannot forge another line of a log (a newline), nor move the cursor or
//! restyle an operator's terminal (escape sequences, carriage returns, backspaces), nor
//! reorder what is shown (bidirectional overrides).

use std::borrow::Cow;
use std::fmt::Write;

/// `text`, with every character `needs_escape` says so written as `\n`, `\r` or
/// `\u{…}`; borrowed when there is none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` quoted for an error message, as `{:?}` would, cut to `max_chars` (with `…`):
/// a caller's names are echoed back, and a name as long as a request allows would
/// otherwise make every answer that long, and longer once escaped.
pub fn quoted(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// C0 and C1 controls and DEL (but tab), and the bidirectional embeddings, overrides
/// and isolates.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_name_is_cut_short() {
        assert_eq!(quoted("echo", 64), "\"echo\"");
        assert_eq!(quoted("ab\u{1}cd", 3), "\"ab\\u{1}\"…");
        assert!(quoted(&"\u{1}".repeat(100_000), 64).len() < 600);
    }

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(
            printable("plain, tabbed\there: ü ✓"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\nFORGED\rb\u{1b}[31mred\u{7}\u{9b}\u{202e}x\u{7f}"),
            "a\\nFORGED\\rb\\u{1b}[31mred\\u{7}\\u{9b}\\u{202e}x\\u{7f}"
        );
    }
}
