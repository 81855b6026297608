//! User ids: the one piece of user input that ends up inside a URL.
//!
//! A [`UserId`] is validated once, where it enters the program, so every later stage (URL
//! building, cache keys, terminal output) can rely on it being short, printable and never a
//! path trick.

use std::fmt;

use thiserror::Error;

/// Longest id accepted, in bytes. Real APIs use short ids; a bound keeps URLs and cache keys
/// small and turns an accidental paste of a whole file into a clear error.
pub const MAX_ID_BYTES: usize = 256;

/// A validated user id: non-empty, at most [`MAX_ID_BYTES`], no control characters, no
/// invisible characters (see `is_invisible`), no surrounding whitespace, and not a dot
/// segment (`.` or `..`, which URL normalisation would
/// collapse even when percent-encoded).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Box<str>);

/// Why a piece of text is not a valid user id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("the id is empty")]
    Empty,
    #[error("the id is {0} bytes long; the limit is {MAX_ID_BYTES}")]
    TooLong(usize),
    #[error("the id contains a control character (U+{0:04X})")]
    ControlChar(u32),
    #[error("the id starts or ends with whitespace")]
    Whitespace,
    #[error("'.' and '..' are not ids")]
    DotSegment,
    #[error("the id contains an invisible character (U+{0:04X}){hint}", hint = invisible_hint(*.0))]
    Invisible(u32),
    #[error(
        "the id holds an invisible joiner or selector (U+{0:04X}) at an end or beside a plain character, where it joins or changes nothing that shows"
    )]
    StrayJoiner(u32),
}

/// Characters no id is made of that show as nothing: a byte-order mark, zero-width space,
/// word joiner and the invisible math operators (U+2061–U+2064), soft hyphen, the bidi
/// controls, and the rest of Unicode's default-ignorable characters that no writing needs
/// (the combining grapheme joiner, the Hangul fillers, the Khmer inherent vowels, the
/// shorthand and musical format controls; the tag characters, which can spell hidden text,
/// are among the terminal's unsafe ones). Taken as part of an id they would be fetched and
/// reported "not found" under a name that looks like a real user's. The zero-width joiners,
/// variation selectors and Mongolian selectors stay inside an id, invisible as they are:
/// they are part of emoji and of written Persian, Indic scripts and Mongolian (see
/// [`stray_joiner`] for where they are refused).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{FEFF}'
            | '\u{200B}'
            | '\u{2060}'..='\u{2064}'
            | '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{3164}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{2065}'
            | '\u{206A}'..='\u{206F}'
            | '\u{E0080}'..='\u{E00FF}'
            | '\u{E01F0}'..='\u{E0FFF}'
    ) || crate::term::is_unsafe(c)
}

/// Invisible characters that join their neighbours or pick a form of the character before
/// them: the zero-width (non-)joiners, variation selectors and Mongolian selectors.
fn is_joiner(c: char) -> bool {
    matches!(
        c,
        '\u{200C}' | '\u{200D}' | '\u{180B}'..='\u{180F}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'
    )
}

/// The first joiner or selector with nothing to act on: at either end, or beside a plain
/// ASCII character, none of which they join or change (emoji, Persian, Indic scripts and
/// Mongolian are where they belong). `5` followed by one looks like user 5 and is not. The
/// one ASCII form they make is a keycap, a digit, `#` or `*` with U+FE0F and U+20E3.
fn stray_joiner(text: &str) -> Option<char> {
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().find_map(|(i, &c)| {
        if !is_joiner(c) {
            return None;
        }
        let before = i.checked_sub(1).map(|b| chars[b]);
        let after = chars.get(i + 1).copied();
        let plain = |n: Option<char>| n.is_none_or(|n| n.is_ascii());
        let stray = if c == '\u{FE0F}' && after == Some('\u{20E3}') {
            false
        } else if matches!(c, '\u{200C}' | '\u{200D}') {
            plain(before) || plain(after)
        } else {
            // A selector acts on the character before it.
            plain(before)
        };
        stray.then_some(c)
    })
}

fn invisible_hint(code: u32) -> &'static str {
    if code == 0xFEFF {
        ", a byte-order mark"
    } else {
        ""
    }
}

impl UserId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if text.is_empty() {
            return Err(IdError::Empty);
        }
        if text.len() > MAX_ID_BYTES {
            return Err(IdError::TooLong(text.len()));
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(IdError::ControlChar(c as u32));
        }
        if text.trim() != text {
            return Err(IdError::Whitespace);
        }
        // Every invisible character and joiner lies outside ASCII (its controls were refused
        // above): nearly every id, ASCII, skips both scans, which run for each id twice
        // (counting the input, then reading it).
        if !text.is_ascii() {
            if let Some(c) = text.chars().find(|&c| is_invisible(c)) {
                return Err(IdError::Invisible(c as u32));
            }
            if let Some(c) = stray_joiner(text) {
                return Err(IdError::StrayJoiner(c as u32));
            }
        }
        if text == "." || text == ".." {
            return Err(IdError::DotSegment);
        }
        Ok(UserId(text.into()))
    }

    /// An id as a person gives it (an argument, a line of a file, the screen's prompt): what
    /// a copied id often brings along at its ends is dropped first (see [`UserId::trim`]).
    pub fn parse_trimmed(text: &str) -> Result<Self, IdError> {
        UserId::parse(UserId::trim(text))
    }

    /// `text` without the spaces, tabs, line ends, byte-order marks and zero-width spaces at
    /// its ends: no id has them there, and they come with copied text (a byte-order mark
    /// starts each file an editor on Windows saved, and so each line where `cat` joined such
    /// files; `xargs` over such a file passes each id with its CR; a zero-width space comes
    /// from web pages). Inside an id they are refused.
    pub fn trim(text: &str) -> &str {
        text.trim_matches([' ', '\t', '\r', '\n', '\u{FEFF}', '\u{200B}'])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::parse(s)
    }
}

impl fmt::Display for UserId {
    // Ids carry no control characters or bidi controls today; displaying through the
    // sanitizer anyway keeps messages safe if the rules for ids ever loosen.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::term::sanitize(&self.0))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_unicode_ids() {
        for ok in [
            "1",
            "42",
            "alice",
            "a b",
            "ünïcødé",
            "%2e%2e",
            "a/b",
            "1?x=y",
            "#",
        ] {
            assert_eq!(
                UserId::parse(ok).map(|id| id.as_str().to_owned()),
                Ok(ok.to_owned())
            );
        }
    }

    #[test]
    fn rejects_each_bad_shape_with_its_reason() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty));
        assert_eq!(UserId::parse(".."), Err(IdError::DotSegment));
        assert_eq!(UserId::parse("."), Err(IdError::DotSegment));
        assert_eq!(UserId::parse(" 1"), Err(IdError::Whitespace));
        assert_eq!(UserId::parse_trimmed(" 1\t ").unwrap().as_str(), "1");
        // A CRLF file's line end, as `xargs` passes it.
        assert_eq!(UserId::parse_trimmed("1\r").unwrap().as_str(), "1");
        assert_eq!(UserId::parse_trimmed("1\r\n").unwrap().as_str(), "1");
        assert_eq!(
            UserId::parse_trimmed("1\r2"),
            Err(IdError::ControlChar(0x0d))
        );
        assert_eq!(UserId::parse_trimmed(" \t"), Err(IdError::Empty));
        // Only spaces and tabs: other whitespace is not what a copy brings along.
        assert_eq!(UserId::parse_trimmed("1\u{a0}"), Err(IdError::Whitespace));
        assert_eq!(UserId::parse("1\n"), Err(IdError::ControlChar(0x0a)));
        assert_eq!(UserId::parse("a\u{1b}[2J"), Err(IdError::ControlChar(0x1b)));
        assert_eq!(UserId::parse("a\u{85}"), Err(IdError::ControlChar(0x85)));
        let long = "x".repeat(10 * 1024);
        assert_eq!(UserId::parse(&long), Err(IdError::TooLong(10 * 1024)));
        assert!(UserId::parse(&"x".repeat(MAX_ID_BYTES)).is_ok());
    }

    #[test]
    fn invisible_characters_are_refused_but_joiners_kept() {
        assert_eq!(UserId::parse("\u{feff}6"), Err(IdError::Invisible(0xfeff)));
        assert_eq!(UserId::parse("6\u{feff}7"), Err(IdError::Invisible(0xfeff)));
        assert_eq!(
            UserId::parse_trimmed("\u{feff}6\u{200b} ")
                .unwrap()
                .as_str(),
            "6",
            "at the ends they are what copying brought along"
        );
        assert!(
            IdError::Invisible(0xfeff)
                .to_string()
                .contains("byte-order mark"),
        );
        assert_eq!(UserId::parse("1\u{200b}2"), Err(IdError::Invisible(0x200b)));
        assert_eq!(UserId::parse("a\u{202e}b"), Err(IdError::Invisible(0x202e)));
        assert_eq!(UserId::parse("1\u{2061}"), Err(IdError::Invisible(0x2061)));
        assert_eq!(UserId::parse("a\u{ad}b"), Err(IdError::Invisible(0xad)));
        // A family emoji: three people joined by U+200D.
        assert!(UserId::parse("\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}").is_ok());
        // A heart drawn as an emoji ends in a variation selector; Persian joins with U+200C.
        assert!(UserId::parse("\u{2764}\u{fe0f}").is_ok());
        assert!(UserId::parse("\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}").is_ok());
    }

    /// Each of these made `5` plus something invisible, shown as `5` and answered "not found".
    #[test]
    fn ids_that_look_like_another_are_refused() {
        for (id, code) in [
            ("5\u{34f}", 0x34f),
            ("5\u{3164}", 0x3164),
            ("\u{115f}5", 0x115f),
            ("5\u{e0041}\u{e0042}", 0xe0041),
            ("5\u{ffa0}", 0xffa0),
        ] {
            assert_eq!(UserId::parse(id), Err(IdError::Invisible(code)), "{id:?}");
        }
        for (id, code) in [
            ("5\u{200d}", 0x200d),
            ("\u{200d}5", 0x200d),
            ("5\u{200c}", 0x200c),
            ("1\u{200d}2", 0x200d),
            ("5\u{180e}", 0x180e),
            ("\u{fe0f}5", 0xfe0f),
            ("5\u{fe0f}", 0xfe0f),
            ("5\u{fe0e}", 0xfe0e),
            ("5\u{e0100}", 0xe0100),
        ] {
            assert_eq!(UserId::parse(id), Err(IdError::StrayJoiner(code)), "{id:?}");
        }
        assert_eq!(UserId::parse("5\u{206a}"), Err(IdError::Invisible(0x206a)));
        assert_eq!(
            UserId::parse("5\u{e0080}"),
            Err(IdError::Invisible(0xe0080))
        );
        // A keycap is the one form a selector gives a plain character.
        assert!(UserId::parse("5\u{fe0f}\u{20e3}").is_ok());
        assert!(IdError::StrayJoiner(0x200d).to_string().contains("U+200D"));
    }
}
