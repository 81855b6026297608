//! Making untrusted text safe to print on a terminal.
//!
//! Text from an API can carry escape sequences that retitle the window, clear the screen, or
//! (with OSC 52) write to the clipboard, and bidi overrides that make text read differently
//! from what it is (CVE-2021-42574). Everything the API sends passes through [`sanitize`]
//! before any terminal sees it. Written by hand because the job is a few lines over `char`
//! classes, and the crates that strip ANSI keep other controls or parse sequences we'd rather
//! just neutralise.

use std::borrow::Cow;

/// Longest piece of a rejected input quoted back in an error message.
const QUOTE_LIMIT: usize = 40;

/// An input (an id, a line) as it can be shown in an error: escaped (it may hold control characters) and cut short
/// (it may be 10 KB).
pub fn quote(text: &str) -> String {
    let cut: String = text.chars().take(QUOTE_LIMIT).collect();
    // Rust writes NUL as `\0`, which reads as the start of an octal escape (`"4\05"`):
    // written as every other control is, `\u{0}`.
    let mut quoted = cut
        .split('\0')
        .map(|piece| {
            let piece = format!("{piece:?}");
            let inside = piece.strip_prefix('"').and_then(|p| p.strip_suffix('"'));
            inside.unwrap_or(&piece).to_owned()
        })
        .collect::<Vec<_>>()
        .join("\\u{0}");
    quoted.insert(0, '"');
    quoted.push('"');
    if cut.len() < text.len() {
        quoted.push('…');
    }
    quoted
}

/// What replaces each unsafe character: visible, so the user sees that something was there.
pub const REPLACEMENT: char = '\u{FFFD}';

/// True for characters that must never reach a terminal raw: C0 controls (ESC, BEL, CR, …),
/// DEL, C1 controls (including the 8-bit CSI U+009B), the bidi embedding, override and
/// isolate controls, and the line and paragraph separators (U+2028/9), which the screen's
/// layout counts as no width while terminals draw them, leaving an earlier record's
/// characters on screen, and the tag characters (U+E0000–U+E007F): they can spell text no
/// one sees ("ASCII smuggling"), and terminals disagree on their width. (Their one use in
/// writing, the flags of England, Scotland and Wales, is lost to that.)
///
/// Zero-width characters (U+200B–U+200D, U+2060, U+FEFF) are kept: they drive no terminal
/// and move no text, and the joiners are part of ordinary writing (emoji sequences, Persian
/// and Indic scripts), which replacing them would garble. What they can do is make two
/// strings look alike; the JSON on stdout escapes nothing of them either, as it is the
/// API's text.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{2028}' | '\u{2029}'
        )
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
        || ('\u{E0000}'..='\u{E007F}').contains(&c)
}

/// Replaces every unsafe character with [`REPLACEMENT`]. Borrowed when nothing needed to change,
/// which is the common case.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    replace_where(text, is_unsafe)
}

fn replace_where(text: &str, replace: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&replace) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if replace(c) { REPLACEMENT } else { c })
            .collect(),
    )
}

/// [`sanitize`] for whole messages: line breaks and tabs are kept, as the message's own layout.
/// Every line userfetch itself prints goes through it, since a message may quote a file name
/// or a URL, which can hold an escape sequence as well as any API's text can.
pub fn sanitize_message(text: &str) -> Cow<'_, str> {
    replace_where(text, |c| c != '\n' && c != '\t' && is_unsafe(c))
}

/// A file name as a line of a message shows it: a message keeps its own line breaks and
/// tabs ([`sanitize_message`]), but one in a file name would forge a line of its own.
pub fn path(path: &std::path::Path) -> String {
    sanitize(&path.display().to_string()).into_owned()
}

/// `text` in at most `columns` terminal columns, ending in `…` when cut.
pub fn fit(text: &str, columns: usize) -> String {
    if unicode_width::UnicodeWidthStr::width(text) <= columns {
        return text.to_owned();
    }
    cut(text, columns)
}

/// `text` cut to what fits in one column less than `columns`, then `…`: for a text that
/// fits but has more after it (a part of a longer line).
pub fn cut(text: &str, columns: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w + 1 > columns {
            break;
        }
        out.push(c);
        used += w;
    }
    if columns > 0 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_escaped_and_short() {
        assert_eq!(quote("a\u{1b}b"), "\"a\\u{1b}b\"");
        // NUL as every other control, not as `\0` (which read as an octal escape before a digit).
        assert_eq!(quote("4\u{0}5"), "\"4\\u{0}5\"");
        assert_eq!(quote("\u{0}"), "\"\\u{0}\"");
        assert_eq!(quote("a\\0\""), "\"a\\\\0\\\"\"");
        let long = "x".repeat(10_000);
        let q = quote(&long);
        assert!(q.len() < 60 && q.ends_with('…'), "{q}");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            sanitize("Leanne Graham, Gwenborough"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn messages_keep_their_line_breaks_and_tabs_only() {
        let text = "in\u{1b}[31mX\u{1b}]0;T\u{7}.txt:2:\tskipped\r\nnext line\n";
        assert_eq!(
            sanitize_message(text),
            "in\u{fffd}[31mX\u{fffd}]0;T\u{fffd}.txt:2:\tskipped\u{fffd}\nnext line\n"
        );
        assert!(matches!(sanitize_message("a\tb\nc"), Cow::Borrowed(_)));
    }

    /// Tags spell hidden text: "5" followed by the tags for "hi" showed as a plain name.
    #[test]
    fn tag_characters_are_replaced() {
        assert_eq!(sanitize("Ann\u{e0068}\u{e0069}"), "Ann\u{fffd}\u{fffd}");
        assert_eq!(sanitize("\u{e007f}x"), "\u{fffd}x");
        assert!(
            matches!(sanitize("\u{e0100}"), Cow::Borrowed(_)),
            "a variation selector stays"
        );
    }

    #[test]
    fn escape_sequences_c1_and_bidi_are_replaced() {
        let hostile =
            "a\u{1b}]0;PWNED\u{7}\u{1b}[2Jb\u{9b}31mc\u{202e}d\u{2066}e\u{7f}f\r\n\u{2028}\u{2029}";
        let clean = sanitize(hostile);
        assert!(!clean.chars().any(is_unsafe), "{clean:?}");
        assert_eq!(
            clean,
            "a\u{fffd}]0;PWNED\u{fffd}\u{fffd}[2Jb\u{fffd}31mc\u{fffd}d\u{fffd}e\u{fffd}f\u{fffd}\u{fffd}\u{fffd}\u{fffd}"
        );
    }
}
