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
}

/// Characters no id is made of that show as nothing: a byte-order mark, zero-width space,
/// word joiner and the invisible math operators (U+2061–U+2064), soft hyphen, and the bidi
/// controls. Taken as part of an id they would be fetched and reported "not found" under a
/// name that looks like a real user's. The zero-width joiners and U+180E stay, invisible as
/// they are: they are part of emoji and of written Persian, Indic scripts and Mongolian.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{FEFF}' | '\u{200B}' | '\u{2060}'..='\u{2064}' | '\u{00AD}'
    ) || crate::term::is_unsafe(c)
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
        if let Some(c) = text.chars().find(|&c| is_invisible(c)) {
            return Err(IdError::Invisible(c as u32));
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

    /// `text` without the spaces, tabs, byte-order marks and zero-width spaces at its ends:
    /// no id has them there, and they come with copied text (a byte-order mark starts each
    /// file an editor on Windows saved, and so each line where `cat` joined such files; a
    /// zero-width space comes from web pages). Inside an id they are refused.
    pub fn trim(text: &str) -> &str {
        text.trim_matches([' ', '\t', '\u{FEFF}', '\u{200B}'])
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
    }
}
