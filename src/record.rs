//! A user record as the API sent it: checked to be JSON, kept as compact text.
//!
//! Records are passed through as text rather than a typed struct: userfetch works with any
//! API whose records are JSON, and never parsing into a tree keeps the batch path cheap.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::value::RawValue;

/// One record: valid JSON on a single line.
#[derive(Clone, PartialEq, Eq)]
pub struct Record(Box<str>);

/// How deep arrays and objects may nest: what serde_json accepts when it builds a tree (it
/// refuses the 128th level), which showing a record field by field (`--pretty`, the UI's
/// detail pane) does.
pub const MAX_DEPTH: usize = 127;

/// Why a body is not a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the response body is empty")]
    Empty,
    #[error("the response is not valid JSON ({0})")]
    NotJson(#[from] serde_json::Error),
    #[error("the response nests arrays or objects deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error(
        "the response uses the key \"$serde_json::private::Number\", which the JSON library userfetch shows records with reads as a number"
    )]
    ReservedKey,
    #[error(
        "the response holds a lone UTF-16 surrogate escape (\\uD800 to \\uDFFF unpaired), which is no character"
    )]
    LoneSurrogate,
    /// `null`, `[]`, `"text"`: valid JSON, but no user record (some APIs answer a missing
    /// user with 200 and `null`).
    #[error("the response is a JSON {0}, not an object (a record)")]
    NotAnObject(&'static str),
}

impl Record {
    /// Checks that `body` is one JSON object, nested no deeper than [`MAX_DEPTH`], and keeps
    /// it compact. A body that spans lines (pretty-printed by the API) is re-serialised so it
    /// stays one JSONL line.
    pub fn from_body(body: &[u8]) -> Result<Record, RecordError> {
        // A UTF-8 byte-order mark, which some servers put first, is no part of the JSON
        // (RFC 8259 lets a reader ignore it).
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        // Checking a raw value does not build a tree, so it has no depth limit of its own.
        let raw: &RawValue = serde_json::from_slice(body).map_err(|e| {
            // serde_json's "EOF while parsing a value at line 1 column 0" says it less plainly.
            if body.trim_ascii().is_empty() {
                RecordError::Empty
            } else {
                RecordError::NotJson(e)
            }
        })?;
        let text = raw.get();
        let kind = match text.as_bytes().first() {
            Some(b'{') => None,
            Some(b'[') => Some("array"),
            Some(b'"') => Some("string"),
            Some(b'n') => Some("null"),
            Some(b't' | b'f') => Some("boolean"),
            _ => Some("number"),
        };
        if let Some(kind) = kind {
            return Err(RecordError::NotAnObject(kind));
        }
        if nests_deeper_than(text, MAX_DEPTH) {
            return Err(RecordError::TooDeep);
        }
        // The raw check reads `\uD800` without pairing it: a lone surrogate is no character
        // at all, so the record could never be shown or flattened into CSV. Building a tree
        // pairs them; only a body that may hold one pays for it.
        // serde_json (with arbitrary_precision, which keeps numbers exact) takes an object
        // with this first key for a number: such a record could not be shown or flattened.
        // A record almost never holds a '$', which memchr rules out a vector at a time.
        if memchr::memchr(b'$', text.as_bytes()).is_some()
            && text.contains(r#""$serde_json::private::Number""#)
        {
            return Err(RecordError::ReservedKey);
        }
        // The text passed the raw check, the depth limit and the key above, so decoding its
        // strings is all that can fail here.
        if may_hold_a_surrogate(text) && serde_json::from_str::<serde_json::Value>(text).is_err() {
            return Err(RecordError::LoneSurrogate);
        }
        // memchr scans a word at a time; a byte-by-byte `any` was half of this function's time.
        if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
            return Ok(Record(compact(text).into()));
        }
        Ok(Record(text.into()))
    }

    /// Wraps text the cache stored after [`Record::from_body`] checked it.
    pub(crate) fn from_trusted(text: String) -> Record {
        Record(text.into())
    }

    /// The compact JSON text exactly as stored. Safe for files, **not** for terminals: JSON
    /// allows raw C1 controls and bidi overrides inside strings.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The record as a JSON value, for front ends that show fields.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// Writes the record so a terminal can show it: characters that [`crate::term`] considers
    /// unsafe are written as `\uXXXX` escapes, which keeps the JSON equal in meaning while
    /// nothing raw reaches the screen.
    ///
    /// The compact form is the stored text byte for byte, escapes aside; `pretty` goes through
    /// a JSON tree, which keeps each number's value and writes an exponent with its sign
    /// (`1E2` as `1E+2`).
    pub fn write_escaped(&self, out: &mut impl Write, pretty: bool) -> io::Result<()> {
        if !pretty {
            // Unsafe characters can only stand inside strings in valid JSON, so escaping them
            // where they are keeps the document valid.
            return write_json_escaped(out, &self.0);
        }
        // A record cached before nesting was limited may be too deep for a tree: shown compact.
        let Ok(as_value) = serde_json::from_str::<serde_json::Value>(&self.0) else {
            return write_json_escaped(out, &self.0);
        };
        let mut ser = serde_json::Serializer::with_formatter(
            &mut *out,
            SafeFormatter(PrettyFormatter::new()),
        );
        // The writer's own error back (serde_json hands it over whole): its kind (BrokenPipe
        // above all) for the caller, and its message, as the compact path says it ("No space
        // left on device (os error 28)", where the kind alone said "no storage space").
        as_value.serialize(&mut ser).map_err(io::Error::from)
    }
}

/// Drops the whitespace between JSON tokens, leaving every token (numbers above all) exactly
/// as written. Hand-written because serde_json can only compact by re-serialising, which
/// rewrites numbers; the input is already known to be valid JSON.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// Whether valid JSON `json` opens more than `limit` arrays or objects inside each other.
/// Whether `json` has an escape in U+D800..=U+DFFF (`\ud83d`), or text that looks like one.
fn may_hold_a_surrogate(json: &str) -> bool {
    // Most records have no escape at all, which memchr tells a vector at a time (the
    // standard library's `contains` goes a word at a time).
    memchr::memchr(b'\\', json.as_bytes()).is_some()
        && json.as_bytes().windows(4).any(|w| {
            w[0] == b'\\'
                && w[1] == b'u'
                && matches!(w[2], b'd' | b'D')
                && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
        })
}

fn nests_deeper_than(json: &str, limit: usize) -> bool {
    // Fewer openings than the limit cannot nest past it; this count is all a typical record
    // costs. memchr2 finds the few openings a vector at a time: counting every byte took
    // ~2.6 instructions a byte.
    let openings = memchr::memchr2_iter(b'[', b'{', json.as_bytes()).count();
    if openings <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Writes `json` with each unsafe character as a `\uXXXX` escape. Used on whole documents and
/// on string fragments alike: unsafe characters can only stand inside strings.
pub(crate) fn write_json_escaped<W: ?Sized + Write>(out: &mut W, json: &str) -> io::Result<()> {
    // Nearly every record: printable ASCII and whitespace only, nothing to escape. One pass
    // that does not stop early, so it goes a word at a time. A raw control below 0x20 can
    // be in no valid JSON, but a cache row is only as good as the file.
    let escapes = json.bytes().fold(false, |any, b| {
        any | (b >= 0x7f) | (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    });
    if !escapes {
        return out.write_all(json.as_bytes());
    }
    let mut start = 0;
    for (i, c) in json.char_indices() {
        // A raw tab, CR or LF in valid JSON is whitespace between tokens (inside a string it
        // would have to be escaped): escaping it would break the document.
        if crate::term::is_unsafe(c) && !matches!(c, '\t' | '\n' | '\r') {
            out.write_all(&json.as_bytes()[start..i])?;
            write_unicode_escape(out, c)?;
            start = i + c.len_utf8();
        }
    }
    out.write_all(&json.as_bytes()[start..])
}

fn write_unicode_escape<W: ?Sized + Write>(out: &mut W, c: char) -> io::Result<()> {
    let mut units = [0u16; 2];
    for unit in c.encode_utf16(&mut units) {
        write!(out, "\\u{unit:04x}")?;
    }
    Ok(())
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A formatter that also escapes the characters serde_json leaves raw (C1, DEL, bidi).
struct SafeFormatter<F>(F);

impl<F: Formatter> Formatter for SafeFormatter<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_json_escaped(writer, fragment)
    }

    // Everything else is delegated so pretty and compact layouts stay as serde_json makes them.
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer's error comes back whole from the pretty path too, as from the compact one:
    /// its kind was kept but its message lost ("no storage space" for a full disk).
    #[test]
    fn a_write_error_keeps_its_kind_and_message_either_way() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "the disk is full",
                ))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let record = Record::from_body(br#"{"id":1,"name":"a"}"#).unwrap();
        for pretty in [false, true] {
            let e = record.write_escaped(&mut Full, pretty).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::StorageFull, "pretty {pretty}");
            assert_eq!(e.to_string(), "the disk is full", "pretty {pretty}");
        }
    }

    #[test]
    fn keeps_compact_json_as_sent() {
        let r = Record::from_body(br#"{"id":1,"name":"Leanne"}"#).unwrap();
        assert_eq!(r.as_json(), r#"{"id":1,"name":"Leanne"}"#);
    }

    fn nested(depth: usize) -> String {
        format!(
            r#"{{"a":{}"x{{[\"]"{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    #[test]
    fn nesting_is_limited_to_what_can_be_shown_field_by_field() {
        // Brackets inside strings (escaped quotes too) are text, not nesting.
        let deepest = Record::from_body(nested(MAX_DEPTH).as_bytes()).unwrap();
        let mut pretty = Vec::new();
        deepest.write_escaped(&mut pretty, true).unwrap();
        assert!(
            pretty.contains(&b'\n'),
            "indented, not the compact fallback"
        );
        assert_ne!(deepest.to_value(), serde_json::Value::Null);
        let err = Record::from_body(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(matches!(err, RecordError::TooDeep), "{err}");
        assert!(err.to_string().contains("deeper than 127 levels"), "{err}");
        // One stored before the limit existed is still written, compact.
        let old = Record::from_trusted(nested(MAX_DEPTH + 1));
        let mut out = Vec::new();
        old.write_escaped(&mut out, true).unwrap();
        assert_eq!(out, old.as_json().as_bytes());
    }

    #[test]
    fn pretty_bodies_become_one_line() {
        let r = Record::from_body(b"{\n  \"id\": 1,\n  \"name\": \"a\"\n}\n").unwrap();
        assert_eq!(r.as_json(), r#"{"id":1,"name":"a"}"#);
    }

    #[test]
    fn numbers_and_strings_survive_exactly() {
        let body = "{\n  \"big\": 123456789012345678901234567890,\n  \"e\": 1E2,\n  \"s\": \"a  b\\\" \\n c\"\n}";
        let r = Record::from_body(body.as_bytes()).unwrap();
        assert_eq!(
            r.as_json(),
            r#"{"big":123456789012345678901234567890,"e":1E2,"s":"a  b\" \n c"}"#
        );
        let mut out = Vec::new();
        r.write_escaped(&mut out, false).unwrap();
        assert_eq!(out, r.as_json().as_bytes());
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_kept() {
        for lone in [
            r#"{"a":"\ud800x"}"#,
            r#"{"a":"x\uDC00"}"#,
            r#"{"a":["\udbff\u0041"]}"#,
        ] {
            let err = Record::from_body(lone.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("surrogate"), "{lone}: {err}");
        }
        let pair = r#"{"a":"\ud83d\ude00","b":"\\ud800"}"#;
        let r = Record::from_body(pair.as_bytes()).unwrap();
        assert_eq!(r.as_json(), pair);
        assert_eq!(r.to_value()["a"], "\u{1f600}");
    }

    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_record() {
        let r = Record::from_body(b"\xEF\xBB\xBF{\"id\":1}").unwrap();
        assert_eq!(r.as_json(), r#"{"id":1}"#);
    }

    #[test]
    fn an_empty_body_is_called_empty() {
        for body in [&b""[..], b" \r\n", b"\xEF\xBB\xBF"] {
            let err = Record::from_body(body).unwrap_err();
            assert_eq!(err.to_string(), "the response body is empty");
        }
        assert!(matches!(
            Record::from_body(b"{"),
            Err(RecordError::NotJson(_))
        ));
    }

    /// `null` or a list for a user is no record: some APIs answer a missing user with 200.
    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        for (body, kind) in [
            ("null", "null"),
            (" [1,2]", "array"),
            ("\"text\"", "string"),
            ("true", "boolean"),
            ("-3", "number"),
        ] {
            let err = Record::from_body(body.as_bytes()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the response is a JSON {kind}, not an object (a record)"),
                "{body}"
            );
        }
        assert!(Record::from_body(b" {} ").is_ok());
    }

    #[test]
    fn the_key_serde_json_reads_as_a_number_is_refused() {
        for body in [
            r#"{"$serde_json::private::Number":"x"}"#,
            r#"{"a":{"$serde_json::private::Number":"123"}}"#,
        ] {
            let err = Record::from_body(body.as_bytes()).unwrap_err();
            assert!(matches!(err, RecordError::ReservedKey), "{body}: {err}");
        }
    }

    #[test]
    fn numbers_keep_their_text_when_shown_field_by_field() {
        let body = r#"{"big":123456789012345678901234567890,"h":1e5,"huge":1e400,"f":0.10}"#;
        let r = Record::from_body(body.as_bytes()).unwrap();
        let mut pretty = Vec::new();
        r.write_escaped(&mut pretty, true).unwrap();
        let pretty = String::from_utf8(pretty).unwrap();
        // Each value exactly (serde_json writes an exponent with its sign).
        for number in ["123456789012345678901234567890", "1e+5", "1e+400", "0.10"] {
            assert!(
                pretty.contains(&format!(": {number}")),
                "{number}: {pretty}"
            );
        }
        assert_eq!(r.to_value()["huge"].to_string(), "1e+400");
    }

    #[test]
    fn rejects_malformed_and_truncated_json() {
        assert!(Record::from_body(b"{\"id\":1,").is_err());
        assert!(Record::from_body(b"<html>").is_err());
        assert!(Record::from_body(b"").is_err());
        assert!(Record::from_body(b"{} {}").is_err());
    }

    #[test]
    fn a_raw_escape_in_a_cached_row_is_still_escaped() {
        // Never from `from_body` (JSON has no raw controls), but a cache row is only as good
        // as the file it was read from.
        let r = Record::from_trusted("{\"a\":\"\u{1b}[2J\"}".to_owned());
        let mut out = Vec::new();
        r.write_escaped(&mut out, false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":\"\\u001b[2J\"}");
    }

    #[test]
    fn whitespace_between_tokens_stays_whitespace_when_escaped() {
        // Tabs between tokens are kept by the check (only line breaks make it compact).
        let r = Record::from_body("{\"a\":\t1,\t\"b\":\"\u{85}\"}".as_bytes()).unwrap();
        let mut out = Vec::new();
        r.write_escaped(&mut out, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "{\"a\":\t1,\t\"b\":\"\\u0085\"}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r.to_value());
    }

    #[test]
    fn escaped_output_has_no_raw_unsafe_chars_and_means_the_same() {
        let hostile = "{\"name\":\"a\\u001b]0;PWNED\\u0007\u{9b}2J\u{202e}x\"}";
        let r = Record::from_body(hostile.as_bytes()).unwrap();
        for pretty in [false, true] {
            let mut out = Vec::new();
            r.write_escaped(&mut out, pretty).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                !text.chars().any(|c| crate::term::is_unsafe(c) && c != '\n'),
                "{text:?}"
            );
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, r.to_value());
        }
    }
}
