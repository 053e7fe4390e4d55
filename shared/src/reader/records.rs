//! The records of one object, streamed: the rows of a CSV, the lines of a JSON Lines object, the elements of a
//! top-level JSON array, each as the JSON text of one item, with the line where it starts and the position
//! after it. Runs on a blocking thread over a [`BufRead`]; memory is bounded by the item size limit and the
//! read buffer whatever the object holds (a record over the limit is skipped to its end, not buffered).
//!
//! A [`RecordPosition`] is always a record boundary, so a read resumed there (the object opened from that byte)
//! yields exactly the records that followed: quoted CSV fields may hold newlines, so a boundary is what the
//! parser found, never a guess from the bytes.
//!
//! Pinned rules: a UTF-8 byte order mark at the start is skipped; CRLF and LF both end lines; blank lines are
//! not records; line numbers are 1-based physical lines where the record starts (a CSV header is line 1).

use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Where a read resumes: after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPosition {
    /// Byte offset in the object of the first byte not yet consumed.
    pub offset: u64,
    /// 1-based physical line at `offset`.
    pub line: u64,
    /// Items (good or failed) before this position: the index the next one gets.
    pub index: u64,
}

impl RecordPosition {
    pub const START: Self = Self {
        offset: 0,
        line: 1,
        index: 0,
    };
}

/// How the object's bytes are records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFormat {
    /// `header`: `None`, the first row names the columns; given names make every row data.
    Csv {
        header: Option<Vec<String>>,
        delimiter: u8,
    },
    Jsonl,
    Json,
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based physical line where it starts.
    pub line: u64,
    /// 0-based index among the object's items.
    pub index: u64,
    /// The item's JSON text, or why the record is not an item (naming its line).
    pub item: Result<String, String>,
    /// Where reading resumes after it.
    pub end: RecordPosition,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading the body failed: transient, the caller retries from its last position.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// The object cannot be read as its format from here on.
    #[error("line {line}: {message}")]
    Malformed { line: u64, message: String },
}

const BOM: &[u8] = b"\xef\xbb\xbf";

/// A record reader over `R`, positioned at a record boundary.
pub struct RecordReader<R: BufRead> {
    body: R,
    pos: RecordPosition,
    max_item_bytes: usize,
    kind: Kind,
    /// The record being read (bounded by `max_item_bytes`).
    buf: Vec<u8>,
}

/// A CSV record as read: its line, and what it holds or why it is unusable.
type Raw<T> = (u64, Result<T, String>);

enum Kind {
    Csv {
        /// Boxed: the parser's tables are large, and the other kinds hold nothing.
        core: Box<csv_core::Reader>,
        /// The header's names as JSON strings (escaped once), in order.
        names: Vec<String>,
        header: Vec<String>,
        ends: Vec<usize>,
    },
    Jsonl,
    Json {
        state: JsonState,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonState {
    /// Before the opening `[`.
    Start,
    /// After `[` or `,`: an element (or, after `[`, the closing `]`) comes next.
    Element {
        first: bool,
    },
    /// After an element: `,` or `]`.
    AfterElement,
    Done,
}

impl<R: BufRead> RecordReader<R> {
    /// A reader of `body`, which starts at `at` in the object. A first-row CSV read from the start reads its
    /// header now; resumed past it, the header must be given (see [`read_csv_header`]).
    pub fn new(
        format: RecordFormat,
        body: R,
        at: RecordPosition,
        max_item_bytes: usize,
    ) -> Result<Self, RecordError> {
        let kind = match &format {
            RecordFormat::Csv { delimiter, .. } => Kind::Csv {
                core: Box::new(csv_core::ReaderBuilder::new().delimiter(*delimiter).build()),
                names: Vec::new(),
                header: Vec::new(),
                ends: vec![0; 64],
            },
            RecordFormat::Jsonl => Kind::Jsonl,
            RecordFormat::Json => Kind::Json {
                state: if at.offset == 0 {
                    JsonState::Start
                } else {
                    JsonState::AfterElement
                },
            },
        };
        let mut reader = Self {
            body,
            pos: at,
            max_item_bytes,
            kind,
            buf: Vec::new(),
        };
        if at.offset == 0 {
            reader.skip_bom()?;
        }
        if let RecordFormat::Csv { header, .. } = format {
            let names = match header {
                Some(names) => names,
                None if at.offset == 0 => match reader.read_csv_fields(usize::MAX)? {
                    None => Vec::new(),
                    Some((line, Err(message))) => {
                        return Err(RecordError::Malformed { line, message });
                    }
                    Some((_, Ok(names))) => names,
                },
                None => {
                    return Err(RecordError::Malformed {
                        line: at.line,
                        message: "a first-row CSV read from the middle needs its header".into(),
                    });
                }
            };
            validate_header(&names, 1)?;
            if let Kind::Csv {
                names: escaped,
                header,
                ..
            } = &mut reader.kind
            {
                *escaped = names.iter().map(|n| json_string(n)).collect();
                *header = names;
            }
        }
        Ok(reader)
    }

    /// The CSV header in effect.
    pub fn header(&self) -> Option<&[String]> {
        match &self.kind {
            Kind::Csv { header, .. } => Some(header),
            _ => None,
        }
    }

    /// Where the reader stands: after the last record read.
    pub fn position(&self) -> RecordPosition {
        self.pos
    }

    /// The next record, or `None` at the end of the object.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordError> {
        match self.kind {
            Kind::Csv { .. } => self.next_csv(),
            Kind::Jsonl => self.next_line(),
            Kind::Json { .. } => self.next_element(),
        }
    }

    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn skip_bom(&mut self) -> Result<(), RecordError> {
        let head = self.body.fill_buf()?;
        if head.starts_with(BOM) {
            self.consume(3);
        }
        Ok(())
    }

    /// Consumes `n` bytes of the current buffer, counting its newlines.
    fn consume(&mut self, n: usize) {
        let head = self.body.fill_buf().expect("the bytes were just read");
        self.pos.line += bytecount::count(&head[..n], b'\n') as u64;
        self.pos.offset += n as u64;
        self.body.consume(n);
    }

    /// Skips blank lines (and the `\n` of a CRLF after a record): a record starts at its first other byte.
    fn skip_line_ends(&mut self) -> Result<bool, RecordError> {
        loop {
            let head = self.body.fill_buf()?;
            if head.is_empty() {
                return Ok(false);
            }
            let blank = head
                .iter()
                .take_while(|b| matches!(b, b'\n' | b'\r'))
                .count();
            if blank == 0 {
                return Ok(true);
            }
            self.consume(blank);
        }
    }

    fn finish(&mut self, line: u64, item: Result<String, String>) -> Record {
        let index = self.pos.index;
        self.pos.index += 1;
        Record {
            line,
            index,
            item,
            end: self.pos,
        }
    }

    // ------------------------------------------------------------------------------------------------ CSV

    /// Reads one CSV record's fields (as strings), or why they are not usable; `None` at the end. At most
    /// `limit` bytes of fields are kept: a longer record is read to its end and reported.
    fn read_csv_fields(&mut self, limit: usize) -> Result<Option<Raw<Vec<String>>>, RecordError> {
        let Some((line, fields)) = self.read_csv_raw(limit)? else {
            return Ok(None);
        };
        Ok(Some((
            line,
            fields.and_then(|count| {
                let Kind::Csv { ends, .. } = &self.kind else {
                    unreachable!("a CSV reader")
                };
                let mut start = 0;
                (0..count)
                    .map(|i| {
                        let field = &self.buf[start..ends[i]];
                        start = ends[i];
                        String::from_utf8(field.to_vec())
                            .map_err(|_| format!("line {line}: column {} is not UTF-8", i + 1))
                    })
                    .collect()
            }),
        )))
    }

    /// Reads one CSV record into `buf` and the kind's `ends`: its line and field count, or why it is too long.
    fn read_csv_raw(&mut self, limit: usize) -> Result<Option<Raw<usize>>, RecordError> {
        if !self.skip_line_ends()? {
            return Ok(None);
        }
        let line = self.pos.line;
        let Kind::Csv { core, ends, .. } = &mut self.kind else {
            unreachable!("a CSV reader")
        };
        let (mut out_len, mut ends_len, mut bytes, mut oversized) = (0usize, 0usize, 0usize, false);
        if self.buf.len() < 4096 {
            self.buf.resize(4096, 0);
        }
        loop {
            let input = self.body.fill_buf()?;
            let (result, n_in, n_out, n_ends) =
                core.read_record(input, &mut self.buf[out_len..], &mut ends[ends_len..]);
            let newlines = bytecount::count(&input[..n_in], b'\n') as u64;
            self.body.consume(n_in);
            self.pos.line += newlines;
            self.pos.offset += n_in as u64;
            bytes += n_in;
            out_len += n_out;
            ends_len += n_ends;
            use csv_core::ReadRecordResult as R;
            match result {
                R::InputEmpty => {}
                R::OutputFull => {
                    // Grows up to just past the limit; a row still longer is read to its end, its bytes
                    // discarded: it fails as too long, and memory stays bounded.
                    let cap = limit.saturating_add(1);
                    if !oversized && self.buf.len() < cap {
                        let grown = self.buf.len().saturating_mul(2).min(cap);
                        self.buf.resize(grown, 0);
                    } else {
                        oversized = true;
                        out_len = 0;
                        ends_len = 0;
                    }
                }
                R::OutputEndsFull => {
                    if oversized {
                        ends_len = 0;
                    } else {
                        ends.resize(ends.len() * 2, 0);
                    }
                }
                R::Record => {
                    let result = if oversized || bytes > limit {
                        Err(format!(
                            "line {line}: the row is more than {limit} bytes, the most one item may take"
                        ))
                    } else {
                        Ok(ends_len)
                    };
                    // Ends the record here, past its CRLF: the position after it is where the next one starts.
                    self.skip_line_ends()?;
                    return Ok(Some((line, result)));
                }
                R::End => return Ok(None),
            }
        }
    }

    fn next_csv(&mut self) -> Result<Option<Record>, RecordError> {
        let limit = self.max_item_bytes;
        let Some((line, fields)) = self.read_csv_raw(limit)? else {
            return Ok(None);
        };
        let item = fields.and_then(|count| self.csv_item(line, count));
        Ok(Some(self.finish(line, item)))
    }

    /// The row in `buf` as a JSON object of column name → string, in the header's order.
    fn csv_item(&self, line: u64, count: usize) -> Result<String, String> {
        let Kind::Csv {
            names,
            ends,
            header,
            ..
        } = &self.kind
        else {
            unreachable!("a CSV reader")
        };
        if count != header.len() {
            return Err(format!(
                "line {line}: {count} fields, the header has {}",
                header.len()
            ));
        }
        let mut json = String::with_capacity(ends[..count].last().copied().unwrap_or(0) * 2 + 64);
        json.push('{');
        let mut start = 0;
        for (i, name) in names.iter().enumerate() {
            let field = std::str::from_utf8(&self.buf[start..ends[i]])
                .map_err(|_| format!("line {line}: column \"{}\" is not UTF-8", header[i]))?;
            start = ends[i];
            if i > 0 {
                json.push(',');
            }
            json.push_str(name);
            json.push(':');
            json.push_str(&json_string(field));
        }
        json.push('}');
        Ok(json)
    }

    // ----------------------------------------------------------------------------------------- JSON Lines

    fn next_line(&mut self) -> Result<Option<Record>, RecordError> {
        loop {
            let line = self.pos.line;
            self.buf.clear();
            let (mut length, mut ended) = (0usize, false);
            while !ended {
                let head = self.body.fill_buf()?;
                if head.is_empty() {
                    break;
                }
                let (take, found) = match memchr_newline(head) {
                    Some(at) => (at + 1, true),
                    None => (head.len(), false),
                };
                let content = if found {
                    &head[..take - 1]
                } else {
                    &head[..take]
                };
                if length + content.len() <= self.max_item_bytes {
                    self.buf.extend_from_slice(content);
                }
                length += content.len();
                ended = found;
                self.consume(take);
            }
            if length == 0 && !ended {
                return Ok(None);
            }
            if length > self.max_item_bytes {
                let item = Err(format!(
                    "line {line}: the line is more than {} bytes, the most one item may take",
                    self.max_item_bytes
                ));
                return Ok(Some(self.finish(line, item)));
            }
            let text = self.buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let item = validate_json(text).map_err(|e| format!("line {line}: {e}"));
            return Ok(Some(self.finish(line, item)));
        }
    }

    // --------------------------------------------------------------------------------------- JSON array

    fn json_state(&mut self) -> &mut JsonState {
        match &mut self.kind {
            Kind::Json { state } => state,
            _ => unreachable!("a JSON reader"),
        }
    }

    /// Skips whitespace; the next byte, not consumed (`None` at the end).
    fn peek_past_whitespace(&mut self) -> Result<Option<u8>, RecordError> {
        loop {
            let head = self.body.fill_buf()?;
            if head.is_empty() {
                return Ok(None);
            }
            let blank = head
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            if blank < head.len() {
                let next = head[blank];
                self.consume(blank);
                return Ok(Some(next));
            }
            self.consume(blank);
        }
    }

    fn malformed<T>(&self, message: impl Into<String>) -> Result<T, RecordError> {
        Err(RecordError::Malformed {
            line: self.pos.line,
            message: message.into(),
        })
    }

    fn next_element(&mut self) -> Result<Option<Record>, RecordError> {
        loop {
            let state = *self.json_state();
            let next = self.peek_past_whitespace()?;
            match (state, next) {
                (JsonState::Done, None) => return Ok(None),
                (JsonState::Done, Some(_)) => {
                    return self.malformed("more after the array's closing ']'");
                }
                (JsonState::Start, Some(b'[')) => {
                    self.consume(1);
                    *self.json_state() = JsonState::Element { first: true };
                }
                (JsonState::Start, _) => {
                    return self
                        .malformed("not a JSON array: the json format reads a top-level [...]");
                }
                (JsonState::AfterElement, Some(b',')) => {
                    self.consume(1);
                    *self.json_state() = JsonState::Element { first: false };
                }
                (JsonState::AfterElement | JsonState::Element { first: true }, Some(b']')) => {
                    self.consume(1);
                    *self.json_state() = JsonState::Done;
                }
                (JsonState::Element { .. }, Some(_)) => {
                    let line = self.pos.line;
                    let index = self.pos.index;
                    let length = self.scan_element()?;
                    *self.json_state() = JsonState::AfterElement;
                    let item = if length > self.max_item_bytes {
                        Err(format!(
                            "element [{index}] (line {line}): more than {} bytes, the most one item may take",
                            self.max_item_bytes
                        ))
                    } else {
                        validate_json(&self.buf)
                            .map_err(|e| format!("element [{index}] (line {line}): {e}"))
                    };
                    return Ok(Some(self.finish(line, item)));
                }
                (_, None) => return self.malformed("the array ends before its closing ']'"),
                (_, Some(byte)) => {
                    return self.malformed(format!(
                        "expected ',' or ']' between elements, found '{}'",
                        char::from(byte).escape_default()
                    ));
                }
            }
        }
    }

    /// Reads one element's bytes (kept in `buf` up to the limit) and returns its length. It ends where its
    /// brackets close, at its closing quote, or (a number, `true`...) before the next delimiter.
    fn scan_element(&mut self) -> Result<usize, RecordError> {
        self.buf.clear();
        let (mut depth, mut in_string, mut escaped, mut length) = (0usize, false, false, 0usize);
        loop {
            let head = self.body.fill_buf()?;
            if head.is_empty() {
                if depth == 0 && !in_string && length > 0 {
                    return Ok(length);
                }
                return self.malformed("the array ends inside an element");
            }
            let mut end = None;
            for (i, &b) in head.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let take = end.unwrap_or(head.len());
            if length + take <= self.max_item_bytes {
                self.buf.extend_from_slice(&head[..take]);
            }
            length += take;
            self.consume(take);
            if end.is_some() {
                return Ok(length);
            }
        }
    }
}

/// Reads a first-row CSV's header from the object's start: its names and the position after it; `None` for an
/// object with no row.
pub fn read_csv_header<R: BufRead>(
    body: R,
    delimiter: u8,
) -> Result<Option<(Vec<String>, RecordPosition)>, RecordError> {
    let format = RecordFormat::Csv {
        header: None,
        delimiter,
    };
    let reader = RecordReader::new(format, body, RecordPosition::START, usize::MAX)?;
    let header = reader.header().unwrap_or_default().to_vec();
    Ok((!header.is_empty()).then(|| (header, reader.position())))
}

/// Every column named, none twice: they become the fields of every row's item.
fn validate_header(names: &[String], line: u64) -> Result<(), RecordError> {
    for (i, name) in names.iter().enumerate() {
        let message = if name.is_empty() {
            format!("column {} of the header has no name", i + 1)
        } else if names[..i].contains(name) {
            format!(
                "columns {} and {} of the header are both named \"{}\"",
                names[..i].iter().position(|n| n == name).unwrap_or(0) + 1,
                i + 1,
                crate::processor::echo(name)
            )
        } else {
            continue;
        };
        return Err(RecordError::Malformed { line, message });
    }
    Ok(())
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The bytes as one JSON value's text, kept as written (numbers exact).
fn validate_json(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    serde_json::from_str::<&RawValue>(text)
        .map(|raw| raw.get().to_owned())
        .map_err(|e| e.to_string())
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read};

    use super::*;

    fn csv(header: Option<Vec<String>>, delimiter: u8) -> RecordFormat {
        RecordFormat::Csv { header, delimiter }
    }

    fn all(format: RecordFormat, data: &[u8], at: RecordPosition, max: usize) -> Vec<Record> {
        let mut reader = RecordReader::new(format, &data[at.offset as usize..], at, max).unwrap();
        std::iter::from_fn(|| reader.next_record().unwrap()).collect()
    }

    fn items(records: &[Record]) -> Vec<(u64, Result<serde_json::Value, String>)> {
        records
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.item.clone().map(|t| serde_json::from_str(&t).unwrap()),
                )
            })
            .collect()
    }

    /// Reading from the start equals stopping after any record and resuming a new reader at its end.
    fn assert_resumable(
        format: impl Fn(Option<Vec<String>>) -> RecordFormat,
        data: &[u8],
        max: usize,
    ) {
        let whole = all(format(None), data, RecordPosition::START, max);
        let header = read_csv_header(data, b',')
            .ok()
            .flatten()
            .map(|(names, _)| names);
        for k in 0..whole.len() {
            let resumed = all(format(header.clone()), data, whole[k].end, max);
            assert_eq!(resumed, whole[k + 1..], "resumed after record {k}");
        }
    }

    #[test]
    fn csv_rows_are_objects_by_header_with_lines_where_they_start() {
        let data =
            "\u{feff}Ville ☀,Note,T\r\nA,\"x, \"\"y\"\"\nz\",1\r\n\r\nB,,2\r\nC,3\r\n\nD,e,4";
        let records = all(
            csv(None, b','),
            data.as_bytes(),
            RecordPosition::START,
            1000,
        );
        assert_eq!(
            items(&records),
            vec![
                (
                    2,
                    Ok(serde_json::json!({"Ville ☀": "A", "Note": "x, \"y\"\nz", "T": "1"}))
                ),
                (
                    5,
                    Ok(serde_json::json!({"Ville ☀": "B", "Note": "", "T": "2"}))
                ),
                (6, Err("line 6: 2 fields, the header has 3".into())),
                (
                    8,
                    Ok(serde_json::json!({"Ville ☀": "D", "Note": "e", "T": "4"}))
                ),
            ]
        );
        let text = &records[0].item.as_ref().unwrap();
        assert!(
            text.starts_with("{\"Ville ☀\":\"A\",\"Note\""),
            "header order: {text}"
        );
        assert_eq!(records.last().unwrap().end.offset, data.len() as u64);
        assert_eq!(
            records.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_resumable(|h| csv(h, b','), data.as_bytes(), 1000);
    }

    #[test]
    fn given_names_make_every_row_data_and_any_delimiter_quotes() {
        let data = b"1;\"a;b\"\n2;c\n";
        let names = Some(vec!["n".to_owned(), "s".to_owned()]);
        let records = all(csv(names, b';'), data, RecordPosition::START, 100);
        assert_eq!(
            items(&records),
            vec![
                (1, Ok(serde_json::json!({"n": "1", "s": "a;b"}))),
                (2, Ok(serde_json::json!({"n": "2", "s": "c"}))),
            ]
        );
        let err = |header: &[u8]| match RecordReader::new(
            csv(None, b','),
            header,
            RecordPosition::START,
            100,
        ) {
            Err(RecordError::Malformed { line, message }) => (line, message),
            _ => panic!("accepted"),
        };
        assert_eq!(err(b"a,,b\n").1, "column 2 of the header has no name");
        assert_eq!(
            err(b"a,b,a\n").1,
            "columns 1 and 3 of the header are both named \"a\""
        );
        let bad = all(
            csv(None, b','),
            b"a,b\n1,\xff\n",
            RecordPosition::START,
            100,
        );
        assert_eq!(bad[0].item, Err("line 2: column \"b\" is not UTF-8".into()));
    }

    #[test]
    fn json_lines_keep_numbers_as_written_and_fail_alone() {
        let data = b"{\"n\": 1.000000000000000000001}\r\n\n  \nnot json\n[1,2]\n\"x\"";
        let records = all(RecordFormat::Jsonl, data, RecordPosition::START, 100);
        assert_eq!(
            records[0].item,
            Ok("{\"n\": 1.000000000000000000001}".into())
        );
        assert_eq!(records[0].line, 1);
        assert!(
            records[1]
                .item
                .as_ref()
                .unwrap_err()
                .starts_with("line 4: ")
        );
        assert_eq!((records[2].line, records[3].line), (5, 6));
        assert_eq!(records.len(), 4);
        assert_resumable(|_| RecordFormat::Jsonl, data, 100);
    }

    #[test]
    fn json_array_elements_are_found_through_nesting_and_strings() {
        let data = b"\xef\xbb\xbf [\n {\"a\": [1, {\"b\": \"]}\\\"[\"}]},\n 12.50 , \"s\\\"]\",\n true, [ ], {bad}\n]\n";
        let records = all(RecordFormat::Json, data, RecordPosition::START, 100);
        let texts: Vec<_> = records.iter().map(|r| r.item.clone()).collect();
        assert_eq!(texts[0], Ok("{\"a\": [1, {\"b\": \"]}\\\"[\"}]}".into()));
        assert_eq!(texts[1], Ok("12.50".into()));
        assert_eq!(texts[2], Ok("\"s\\\"]\"".into()));
        assert_eq!(
            (texts[3].clone(), texts[4].clone()),
            (Ok("true".into()), Ok("[ ]".into()))
        );
        assert!(
            texts[5]
                .as_ref()
                .unwrap_err()
                .starts_with("element [5] (line 4): "),
            "{texts:?}"
        );
        assert_eq!(
            records.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 3, 3, 4, 4, 4]
        );
        assert_resumable(|_| RecordFormat::Json, data, 100);
        assert!(all(RecordFormat::Json, b"[]", RecordPosition::START, 10).is_empty());
    }

    #[test]
    fn a_broken_array_is_malformed_where_it_breaks() {
        let fails = |data: &[u8]| {
            let mut reader =
                RecordReader::new(RecordFormat::Json, data, RecordPosition::START, 100).unwrap();
            loop {
                match reader.next_record() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("read to the end: {:?}", String::from_utf8_lossy(data)),
                    Err(RecordError::Malformed { line, message }) => return (line, message),
                    Err(e) => panic!("{e}"),
                }
            }
        };
        assert!(fails(b"{\"a\": 1}").1.starts_with("not a JSON array"));
        assert_eq!(fails(b"[1,\n2 3]").0, 2);
        assert!(fails(b"[1] x").1.contains("after the array"));
        assert!(fails(b"[1, 2").1.contains("before its closing"));
    }

    #[test]
    fn records_over_the_limit_fail_by_line_and_the_next_is_read() {
        let csv_data = format!("h\n\"{}\"\nok\n", "x\n".repeat(100));
        let records = all(
            csv(None, b','),
            csv_data.as_bytes(),
            RecordPosition::START,
            50,
        );
        assert!(
            records[0]
                .item
                .as_ref()
                .unwrap_err()
                .starts_with("line 2: the row is more than 50 bytes")
        );
        assert_eq!(
            (records[1].line, records[1].item.clone()),
            (103, Ok("{\"h\":\"ok\"}".into()))
        );
        let lines = format!("{}\n7\n", "1".repeat(60));
        let records = all(
            RecordFormat::Jsonl,
            lines.as_bytes(),
            RecordPosition::START,
            50,
        );
        assert!(records[0].item.is_err());
        assert_eq!(records[1].item, Ok("7".into()));
        let array = format!("[\"{}\", 7]", "y".repeat(60));
        let records = all(
            RecordFormat::Json,
            array.as_bytes(),
            RecordPosition::START,
            50,
        );
        assert!(
            records[0]
                .item
                .as_ref()
                .unwrap_err()
                .starts_with("element [0] (line 1): more than 50")
        );
        assert_eq!(records[1].item, Ok("7".into()));
    }

    /// `len` bytes: `start`, then `fill` repeated, then `end`, made as they are read.
    struct Generated {
        parts: Vec<u8>,
        fill: u8,
        at: usize,
        len: usize,
        end: Vec<u8>,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let total = self.len + self.parts.len() + self.end.len();
            let n = buf.len().min(total - self.at);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let at = self.at + i;
                *b = if at < self.parts.len() {
                    self.parts[at]
                } else if at < self.parts.len() + self.len {
                    self.fill
                } else {
                    self.end[at - self.parts.len() - self.len]
                };
            }
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_huge_record_is_skipped_with_a_bounded_buffer() {
        let huge = 50 << 20;
        for (format, start, fill, end) in [
            (csv(None, b','), &b"h\n\""[..], b'x', &b"\"\nok\n"[..]),
            (RecordFormat::Jsonl, &b"\""[..], b'x', &b"\"\n\"ok\"\n"[..]),
            (RecordFormat::Json, &b"[\""[..], b'x', &b"\", \"ok\"]"[..]),
        ] {
            let body = BufReader::with_capacity(
                64 * 1024,
                Generated {
                    parts: start.to_vec(),
                    fill,
                    at: 0,
                    len: huge,
                    end: end.to_vec(),
                },
            );
            let mut reader =
                RecordReader::new(format, body, RecordPosition::START, 1 << 20).unwrap();
            let first = reader.next_record().unwrap().unwrap();
            assert!(first.item.is_err());
            assert!(
                reader.buffer_capacity() <= 4 << 20,
                "{}",
                reader.buffer_capacity()
            );
            let second = reader.next_record().unwrap().unwrap();
            assert!(second.item.unwrap().contains("ok"));
        }
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        fn field() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9é ]{0,6}",
                "[a-z,\"\n\r ]{0,8}".prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
            ]
        }

        proptest! {
            #[test]
            fn every_resume_point_gives_the_rest(
                rows in proptest::collection::vec((proptest::collection::vec(field(), 1..4), any::<bool>(), any::<bool>()), 0..25),
                max in 8usize..64,
            ) {
                let mut data = String::from("a,b,c\r\n");
                for (fields, crlf, blank) in rows {
                    data.push_str(&fields.join(","));
                    data.push_str(if crlf { "\r\n" } else { "\n" });
                    if blank {
                        data.push('\n');
                    }
                }
                assert_resumable(|h| csv(h, b','), data.as_bytes(), max);
            }
        }
    }
}
