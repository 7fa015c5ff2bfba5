//! Showing text that came from outside (feed comments, block reasons, bad input echoed in an
//! error) to a terminal or a log: control characters escaped so a comment cannot clear the
//! screen or forge table rows, and long input cut so one bad 10 MB line is not a 10 MB error.
use std::{borrow::Cow, fmt::Write as _};

/// How much of an offending input an error message quotes.
pub const EXCERPT_CHARS: usize = 80;

/// `s` with every control character (ANSI escapes, NUL, newlines, DEL, C1) written as a Rust
/// escape (`\u{1b}`, `\u{0}`, `\n`); other text, non-ASCII included, is left alone.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// At most [`EXCERPT_CHARS`] characters of `s`, control characters escaped, with the total
/// size said when it was cut.
pub fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        None => escape_controls(s).into_owned(),
        Some((cut, _)) => format!(
            "{}... ({} bytes in all)",
            escape_controls(&s[..cut]),
            s.len()
        ),
    }
}

/// How long a line of an error message may get before it is cut.
pub const LINE_CHARS: usize = 400;

/// `line` with control characters escaped, cut at [`LINE_CHARS`].
pub fn excerpt_line(line: &str) -> String {
    let mut out = escape_controls(line).into_owned();
    if let Some((i, _)) = out.char_indices().nth(LINE_CHARS) {
        out.truncate(i);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape_controls("plain ünïcode"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\u{1b}[2Jb\0c\nd\u{7f}e\u{9b}"),
            "a\\u{1b}[2Jb\\u{0}c\\nd\\u{7f}e\\u{9b}"
        );
    }

    #[test]
    fn long_input_is_cut_with_its_size() {
        assert_eq!(excerpt("short"), "short");
        let long = "x".repeat(10 * 1024 * 1024);
        let e = excerpt(&long);
        assert!(e.len() < 200, "{}", e.len());
        assert!(e.ends_with("... (10485760 bytes in all)"), "{e}");
        // Cut on a character boundary.
        let wide = "é".repeat(200);
        assert!(excerpt(&wide).starts_with(&"é".repeat(EXCERPT_CHARS)));
    }
}
