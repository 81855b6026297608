//! Reading id lists: a file or stdin, one id per line, streamed in chunks with line numbers.
//!
//! Memory stays bounded whatever the input size: lines are read one at a time with a length
//! cap, and ids travel to the pipeline in small chunks over a bounded channel. A regular file
//! is read twice: a first pass counts the ids (the progress bar's total) and finds unreadable
//! lines before anything is fetched, so a wrong file fails at once with nothing written. Any
//! other file (a named pipe, `<(…)`) can be read only once, and is streamed like stdin.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::sync::mpsc;

use crate::id::UserId;

/// Longest line accepted. Ids are at most a few hundred bytes; a megabyte-long line means the
/// file is not a list of ids at all (a JSON dump, a binary), which is worth stopping for.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Ids per chunk sent to the pipeline: big enough that one store round trip serves many ids,
/// small enough that the first requests leave at once.
pub const CHUNK: usize = 512;

/// Where ids come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    pub fn from_arg(arg: Option<&Path>) -> Source {
        match arg {
            None => Source::Stdin,
            Some(p) if p.as_os_str() == "-" => Source::Stdin,
            Some(p) => Source::File(p.to_owned()),
        }
    }

    /// Whether the input can be read twice: a regular file (or one whose kind cannot be
    /// told, which opening it will report).
    pub fn rereadable(&self) -> bool {
        match self {
            Source::File(path) => std::fs::metadata(path).map_or(true, |m| m.is_file()),
            Source::Stdin => false,
        }
    }

    /// How messages name the input: the path as given, or `stdin`.
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => crate::term::path(p),
            Source::Stdin => "stdin".to_owned(),
        }
    }

    fn open(&self) -> Result<Box<dyn Read + Send>, InputError> {
        match self {
            Source::Stdin => Ok(Box::new(io::stdin())),
            Source::File(path) => {
                let io_error = |source| InputError::Open {
                    name: self.name(),
                    source,
                };
                let meta = std::fs::metadata(path).map_err(io_error)?;
                if meta.is_dir() {
                    return Err(InputError::Directory(self.name()));
                }
                Ok(Box::new(File::open(path).map_err(io_error)?))
            }
        }
    }
}

/// Input that cannot be used as given; every variant names the input and, where there is
/// one, the line.
#[derive(Debug, Error)]
pub enum InputError {
    #[error("cannot open the ids file {name}: {source}")]
    Open { name: String, source: io::Error },
    #[error("{0} is a directory, not a file of ids")]
    Directory(String),
    #[error("cannot read ids from {name} (after line {line}): {source}")]
    Read {
        name: String,
        line: u64,
        source: io::Error,
    },
    #[error(
        "{name}:{line}: the line is not valid UTF-8; is this a text file with one id per line?"
    )]
    NotUtf8 { name: String, line: u64 },
    #[error("{0} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")]
    Utf16(String),
    #[error(
        "{name}:{line}: the line is longer than 1 MiB; is this a text file with one id per line?"
    )]
    TooLong { name: String, line: u64 },
    #[error("{name}:{line}: {problem} (without --strict, invalid lines are reported and skipped)")]
    Invalid {
        name: String,
        line: u64,
        problem: String,
    },
    #[error("{0} holds no ids (only blank lines, comments or invalid lines)")]
    Empty(String),
    /// Checked ahead (a file): no line was reported yet, so the first bad one says what is
    /// wrong (a file with CR line ends is one long line with control characters in it).
    #[error(
        "{name} holds no ids, only invalid lines, blank lines or comments; line {line}: {problem}"
    )]
    NoValid {
        name: String,
        line: u64,
        problem: String,
    },
}

/// One line of input, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Id(UserId),
    /// Blank or a `#` comment.
    Nothing,
    /// Not a valid id; the text says why, quoting the line.
    Invalid(String),
}

/// Reads lines with numbers and a length cap, without ever buffering more than one line.
pub struct Lines<R> {
    reader: BufReader<R>,
    name: String,
    line: u64,
    buf: Vec<u8>,
}

impl<R: Read> Lines<R> {
    pub fn new(inner: R, name: String) -> Self {
        Lines {
            reader: BufReader::with_capacity(64 * 1024, inner),
            name,
            line: 0,
            buf: Vec::with_capacity(256),
        }
    }

    /// The next line's number and what it holds; `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<(u64, Line)>, InputError> {
        self.buf.clear();
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(InputError::Read {
                        name: self.name.clone(),
                        line: self.line,
                        source,
                    });
                }
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match memchr(available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take > MAX_LINE_BYTES + 2 {
                return Err(InputError::TooLong {
                    name: self.name.clone(),
                    line: self.line + 1,
                });
            }
            self.buf.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            if done {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line += 1;
        let mut bytes = &self.buf[..];
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.len() > MAX_LINE_BYTES {
            return Err(InputError::TooLong {
                name: self.name.clone(),
                line: self.line,
            });
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            // Windows tools ("Unicode" in Notepad, PowerShell's redirection) write UTF-16.
            if self.line == 1 && (bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF"))
            {
                return Err(InputError::Utf16(self.name.clone()));
            }
            return Err(InputError::NotUtf8 {
                name: self.name.clone(),
                line: self.line,
            });
        };
        Ok(Some((self.line, classify(text))))
    }

    /// Whether the next line can be read without waiting on the source: a pipe that has gone
    /// quiet should not hold back ids already read.
    fn buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// What surrounds an id on its line is trimmed (see [`UserId::trim`]: a byte-order mark
/// included, at the start of the file or where files were joined); blank lines and `#`
/// comments carry nothing.
pub fn classify(raw: &str) -> Line {
    let text = UserId::trim(raw);
    if text.is_empty() || text.starts_with('#') {
        return Line::Nothing;
    }
    match UserId::parse(text) {
        Ok(id) => Line::Id(id),
        Err(e) => Line::Invalid(format!("invalid id {}: {e}", crate::term::quote(text))),
    }
}

/// What the first pass over a file found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Valid ids, duplicates included.
    pub ids: u64,
    pub invalid: u64,
}

/// Reads the whole input once, checking every line. Blocking.
pub fn scan(source: &Source, strict: bool) -> Result<Scan, InputError> {
    let mut lines = Lines::new(source.open()?, source.name());
    let mut scan = Scan::default();
    let mut first_invalid = None;
    while let Some((line, kind)) = lines.next_line()? {
        match kind {
            Line::Id(_) => scan.ids += 1,
            Line::Nothing => {}
            Line::Invalid(problem) if strict => {
                return Err(InputError::Invalid {
                    name: source.name(),
                    line,
                    problem,
                });
            }
            Line::Invalid(problem) => {
                scan.invalid += 1;
                first_invalid.get_or_insert((line, problem));
            }
        }
    }
    match first_invalid {
        _ if scan.ids > 0 => Ok(scan),
        Some((line, problem)) => Err(InputError::NoValid {
            name: source.name(),
            line,
            problem,
        }),
        None => Err(InputError::Empty(source.name())),
    }
}

/// What the reader sends the pipeline.
#[derive(Debug)]
pub enum Chunk {
    /// Valid ids with their line numbers, in input order.
    Ids(Vec<(u64, UserId)>),
    /// A line that was skipped, and why.
    Invalid { line: u64, problem: String },
    /// The input cannot be read further.
    Fatal(InputError),
    /// Every line has been read; holds the number of valid ids seen.
    End(u64),
}

/// Opens the input (so an unopenable file fails before anything starts).
pub fn open(source: &Source) -> Result<Lines<Box<dyn Read + Send>>, InputError> {
    Ok(Lines::new(source.open()?, source.name()))
}

/// Reads the input on a thread of its own and sends it on in chunks. The channel's bound is
/// what keeps memory flat: the reader waits while the pipeline is busy.
pub fn spawn_reader(
    mut lines: Lines<Box<dyn Read + Send>>,
    strict: bool,
    tx: mpsc::Sender<Chunk>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("userfetch-input".into())
        .spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut ids = 0u64;
            loop {
                let item = match lines.next_line() {
                    Ok(Some((_, Line::Nothing))) => None,
                    Ok(Some((line, Line::Id(id)))) => {
                        ids += 1;
                        chunk.push((line, id));
                        None
                    }
                    Ok(Some((line, Line::Invalid(problem)))) if strict => {
                        Some(Chunk::Fatal(InputError::Invalid {
                            name: lines.name.clone(),
                            line,
                            problem,
                        }))
                    }
                    Ok(Some((line, Line::Invalid(problem)))) => {
                        Some(Chunk::Invalid { line, problem })
                    }
                    Ok(None) if ids == 0 => {
                        Some(Chunk::Fatal(InputError::Empty(lines.name.clone())))
                    }
                    Ok(None) => Some(Chunk::End(ids)),
                    Err(e) => Some(Chunk::Fatal(e)),
                };
                let last = matches!(item, Some(Chunk::Fatal(_) | Chunk::End(_)));
                let flush = chunk.len() >= CHUNK || item.is_some() || !lines.buffered();
                if flush && !chunk.is_empty() {
                    let ids = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if tx.blocking_send(Chunk::Ids(ids)).is_err() {
                        return;
                    }
                }
                if let Some(item) = item
                    && tx.blocking_send(item).is_err()
                {
                    return;
                }
                if last {
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Result<Vec<(u64, Line)>, InputError> {
        let mut lines = Lines::new(input, "ids.txt".to_owned());
        let mut out = Vec::new();
        while let Some(l) = lines.next_line()? {
            out.push(l);
        }
        Ok(out)
    }

    fn id(s: &str) -> Line {
        Line::Id(UserId::parse(s).unwrap())
    }

    #[test]
    fn skips_blanks_and_comments_and_accepts_crlf() {
        let got = read_all(b"1\r\n\r\n# a comment\n  2  \n\t\n3").unwrap();
        assert_eq!(
            got,
            vec![
                (1, id("1")),
                (2, Line::Nothing),
                (3, Line::Nothing),
                (4, id("2")),
                (5, Line::Nothing),
                (6, id("3")),
            ]
        );
    }

    #[test]
    fn invalid_ids_are_classified_with_a_reason() {
        let got = read_all(b"1\n..\nok\n").unwrap();
        assert_eq!(got[1].0, 2);
        match &got[1].1 {
            Line::Invalid(why) => assert!(why.contains("\"..\""), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_utf8_names_the_line() {
        let err = read_all(b"1\n2\n\xff\xfe\n4\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ids.txt:3: the line is not valid UTF-8; is this a text file with one id per line?"
        );
    }

    #[test]
    fn utf16_is_named_as_such() {
        // "1\n2\n" as PowerShell's `>` writes it: UTF-16LE with a byte-order mark.
        let err = read_all(b"\xFF\xFE1\x00\n\x002\x00\n\x00").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ids.txt is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"
        );
        let err = read_all(b"\xFE\xFF\x001\x00\n").unwrap_err();
        assert!(matches!(err, InputError::Utf16(_)), "{err}");
    }

    #[test]
    fn an_overlong_line_is_refused_without_reading_it_whole() {
        let mut input = b"1\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE_BYTES));
        let err = read_all(&input).unwrap_err();
        assert!(matches!(err, InputError::TooLong { line: 2, .. }), "{err}");
        // Exactly at the limit is still a line (and then an invalid id, which is skipped).
        let mut input = vec![b'y'; MAX_LINE_BYTES];
        input.extend_from_slice(b"\r\n2\n");
        let got = read_all(&input).unwrap();
        assert!(matches!(got[0].1, Line::Invalid(_)));
        assert_eq!(got[1], (2, id("2")));
    }
}
