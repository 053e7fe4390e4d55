//! Reading the items of one object streamed, never whole: the rows of a CSV (each a JSON object, column name →
//! string value), the lines of a JSONL, or the elements of a top-level JSON array. Memory is bounded by
//! `max_item_bytes` plus fixed buffers whatever the input (a 10 GB object, one 5 GB line): an item over the limit
//! is reported as a failed record and skipped while it streams past, never buffered whole.
//!
//! It runs on a blocking thread over a [`BufRead`]. Every record says where reading resumes after it
//! ([`RecordPosition`]): a later read opens the object at that byte (an HTTP Range) and gets the records a single
//! read from the start would have got, with the same lines and indexes. So a position is always a real record
//! boundary (never inside a quoted CSV field that holds a newline) and carries the line and item counters along.

use std::collections::HashMap;
use std::io::{self, BufRead};

use csv_core::ReadRecordResult;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The most bytes a CSV header row may take. The header is not an item, so `max_item_bytes` does not bound it;
/// one fixed limit means the header is accepted or refused alike by [`RecordReader::new`] and [`read_csv_header`].
pub const MAX_HEADER_BYTES: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The most bytes of the data a message echoes.
const MAX_ECHO_BYTES: usize = 64;
/// Where csv_core's output goes while a row that will not be an item (too big, too many fields) streams past.
const SCRATCH_BYTES: usize = 8 * 1024;
const SCRATCH_FIELDS: usize = 64;
/// Item buffers start this big and double, up to the limit, only when an item needs it.
const FIRST_BUFFER_BYTES: usize = 4 * 1024;

/// Where a read resumes: after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPosition {
    /// Byte offset in the object of the first byte not yet consumed.
    pub offset: u64,
    /// 1-based physical line (count of '\n' before `offset`, plus 1).
    pub line: u64,
    /// Items (records, good or failed) before this position; for JSON, the index the next element gets.
    pub index: u64,
}

impl RecordPosition {
    pub const START: Self = Self {
        offset: 0,
        line: 1,
        index: 0,
    };
}

/// How an object's bytes are cut into items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFormat {
    /// `header`: None = the object's first row is the header; Some(names) = given names, and every row is data.
    Csv {
        header: Option<Vec<String>>,
        delimiter: u8,
    },
    /// One JSON value per line; blank lines are skipped.
    Jsonl,
    /// One top-level JSON array; each element is an item.
    Json,
}

/// One item of the object, or why that stretch of the object is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based physical line where the record starts (the CSV header is line 1; blank lines before a record are
    /// not its start).
    pub line: u64,
    /// 0-based index of the item among the object's items (= RecordPosition.index before it).
    pub index: u64,
    /// The item as compact JSON text, or why this record is not an item (a message naming the line, and for
    /// JSON the element index, never echoing more than 64 bytes of the data).
    pub item: Result<String, String>,
    /// Where reading resumes after this record.
    pub end: RecordPosition,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading the body failed (transient: the caller retries from its last position).
    #[error("reading the object failed: {0}")]
    Read(#[from] io::Error),
    /// The object cannot be read as this format from here on (not a JSON array; garbage between elements;
    /// a CSV header with an empty or duplicate column name; ...). Names the line.
    #[error("line {line}: {message}")]
    Malformed { line: u64, message: String },
}

/// Reads the records of one object from a position, one [`RecordReader::next_record`] at a time.
pub struct RecordReader<R: BufRead> {
    input: Input<R>,
    items: Items,
    /// The index the next item gets.
    index: u64,
    max_item_bytes: usize,
    /// Set by the first error: the body is then at an unknown point (inside a record, or after a failed read), so
    /// every later call fails too rather than read a record's tail as a record.
    failed: Option<Failure>,
}

enum Items {
    Csv(Box<Csv>),
    Jsonl(Lines),
    Json(Array),
}

enum Failure {
    Read,
    Malformed { line: u64, message: String },
}

/// What one step of a format's reader found: the item's line and the item, or the end.
type Step = Result<Option<(u64, Result<String, String>)>, RecordError>;

impl<R: BufRead> RecordReader<R> {
    /// `at` is where `body` starts. For CSV with `header: None` and `at == START`, the header row is read now.
    /// Resuming a first_row CSV at `at.offset > 0` needs the header: the caller passes it as `Some(names)`
    /// (read with [`read_csv_header`]). A header that is unusable, a first_row CSV resumed without one, or a
    /// delimiter that is `"`, CR or LF is `Malformed`.
    ///
    /// `max_item_bytes` bounds an item's raw bytes: a CSV row from its first byte to its line terminator (quotes
    /// and delimiters count), a JSONL line from its first non-whitespace byte to its '\n' (a '\r' before it does
    /// not count), a JSON element's text. The CSV header has its own limit, [`MAX_HEADER_BYTES`].
    pub fn new(
        format: RecordFormat,
        body: R,
        at: RecordPosition,
        max_item_bytes: usize,
    ) -> Result<Self, RecordError> {
        let mut input = Input::new(body, at)?;
        let items = match format {
            RecordFormat::Csv { header, delimiter } => {
                // csv_core would take these as the delimiter and still give them their usual meaning.
                if matches!(delimiter, b'"' | b'\r' | b'\n') {
                    return Err(RecordError::Malformed {
                        line: at.line,
                        message: format!("{} cannot be a CSV delimiter", describe(delimiter)),
                    });
                }
                let mut csv = Box::new(Csv::new(delimiter));
                match header {
                    Some(names) => {
                        check_header(&names)
                            .map_err(|message| RecordError::Malformed { line: 1, message })?;
                        csv.set_header(names);
                    }
                    None if at.offset == 0 => csv.read_header(&mut input)?,
                    None => {
                        return Err(RecordError::Malformed {
                            line: at.line,
                            message: "a CSV read from past its header needs the header's names (read_csv_header)"
                                .into(),
                        });
                    }
                }
                Items::Csv(csv)
            }
            RecordFormat::Jsonl => Items::Jsonl(Lines { buf: Vec::new() }),
            RecordFormat::Json => Items::Json(Array {
                // Anywhere but the start, reading resumes just after an element.
                state: if at.offset == 0 {
                    ArrayState::Open
                } else {
                    ArrayState::Next
                },
                buf: Vec::new(),
            }),
        };
        Ok(Self {
            input,
            items,
            index: at.index,
            max_item_bytes,
            failed: None,
        })
    }

    /// The CSV header in effect (None for JSON formats, and for a CSV object with no row at all).
    pub fn header(&self) -> Option<&[String]> {
        match &self.items {
            Items::Csv(csv) => csv.header.as_deref(),
            Items::Jsonl(_) | Items::Json(_) => None,
        }
    }

    /// Where reading is now: after the last record returned (or after the CSV header, before any).
    pub fn position(&self) -> RecordPosition {
        RecordPosition {
            offset: self.input.offset,
            line: self.input.line,
            index: self.index,
        }
    }

    /// The next record, or None at the end of the object. After an error every call fails: the caller opens the
    /// object again at the last record's `end`.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordError> {
        if let Some(failure) = &self.failed {
            return Err(match failure {
                Failure::Read => RecordError::Read(io::Error::other(
                    "an earlier read of this body failed: read again from the last record's end",
                )),
                Failure::Malformed { line, message } => RecordError::Malformed {
                    line: *line,
                    message: message.clone(),
                },
            });
        }
        let max = self.max_item_bytes;
        let step = match &mut self.items {
            Items::Csv(csv) => csv.next(&mut self.input, max),
            Items::Jsonl(lines) => lines.next(&mut self.input, max),
            Items::Json(array) => array.next(&mut self.input, self.index, max),
        };
        match step {
            Ok(Some((line, item))) => {
                let index = self.index;
                self.index += 1;
                Ok(Some(Record {
                    line,
                    index,
                    item,
                    end: self.position(),
                }))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                self.failed = Some(match &error {
                    RecordError::Read(_) => Failure::Read,
                    RecordError::Malformed { line, message } => Failure::Malformed {
                        line: *line,
                        message: message.clone(),
                    },
                });
                Err(error)
            }
        }
    }

    /// Bytes held by the item buffers, to check they stay bounded.
    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        match &self.items {
            Items::Csv(csv) => {
                csv.out.capacity()
                    + csv.ends.capacity() * size_of::<usize>()
                    + csv.scratch.len()
                    + csv.scratch_ends.len() * size_of::<usize>()
                    + csv.keys.capacity()
            }
            Items::Jsonl(lines) => lines.buf.capacity(),
            Items::Json(array) => array.buf.capacity(),
        }
    }
}

/// Reads a first_row CSV's header from the object's start: its names and the position after it; None for an
/// object with no row at all.
pub fn read_csv_header<R: BufRead>(
    body: R,
    delimiter: u8,
) -> Result<Option<(Vec<String>, RecordPosition)>, RecordError> {
    let format = RecordFormat::Csv {
        header: None,
        delimiter,
    };
    let reader = RecordReader::new(format, body, RecordPosition::START, 0)?;
    let position = reader.position();
    Ok(reader.header().map(|names| (names.to_vec(), position)))
}

/// The body, with the offset and line of its next byte. Every format reads through `fill`/`consume` on whole
/// buffered slices (no per-byte calls), counting the newlines of what it consumes.
struct Input<R> {
    body: R,
    /// Bytes taken from `body` while looking for a BOM that turned out not to be one; served before `body`.
    ahead: [u8; 3],
    ahead_start: usize,
    ahead_end: usize,
    offset: u64,
    line: u64,
}

impl<R: BufRead> Input<R> {
    fn new(body: R, at: RecordPosition) -> io::Result<Self> {
        let mut input = Self {
            body,
            ahead: [0; 3],
            ahead_start: 0,
            ahead_end: 0,
            offset: at.offset,
            line: at.line,
        };
        if at.offset == 0 {
            input.skip_bom()?;
        }
        Ok(input)
    }

    /// Drops a UTF-8 byte-order mark at the object's start, even when the body hands it over a byte at a time.
    fn skip_bom(&mut self) -> io::Result<()> {
        let mut got = 0;
        while got < BOM.len() {
            let buf = fill_body(&mut self.body)?;
            let take = buf.len().min(BOM.len() - got);
            if take == 0 || buf[..take] != BOM[got..got + take] {
                break;
            }
            self.ahead[got..got + take].copy_from_slice(&buf[..take]);
            self.body.consume(take);
            got += take;
        }
        if got == BOM.len() {
            self.offset += BOM.len() as u64;
        } else {
            self.ahead_end = got;
        }
        Ok(())
    }

    /// The next bytes; empty at the end of the body.
    fn fill(&mut self) -> io::Result<&[u8]> {
        if self.ahead_start < self.ahead_end {
            return Ok(&self.ahead[self.ahead_start..self.ahead_end]);
        }
        fill_body(&mut self.body)
    }

    /// Consumes `n` bytes of the last `fill`, which held `newlines` '\n's.
    fn consume(&mut self, n: usize, newlines: u64) {
        if self.ahead_start < self.ahead_end {
            debug_assert!(n <= self.ahead_end - self.ahead_start);
            self.ahead_start += n;
        } else {
            self.body.consume(n);
        }
        self.offset += n as u64;
        self.line += newlines;
    }

    /// Consumes JSON whitespace and returns the byte after it (not consumed; None at the end), and how many of the
    /// skipped bytes follow the last '\n' among them (a JSONL item's column is counted from its line's start).
    fn skip_whitespace(&mut self) -> io::Result<(Option<u8>, u64)> {
        let mut lead = 0;
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok((None, lead));
            }
            let n = buf
                .iter()
                .position(|&b| !is_json_space(b))
                .unwrap_or(buf.len());
            let skipped = &buf[..n];
            lead = match skipped.iter().rposition(|&b| b == b'\n') {
                Some(p) => (n - p - 1) as u64,
                None => lead + n as u64,
            };
            let next = buf.get(n).copied();
            let nl = newlines(skipped);
            self.consume(n, nl);
            if next.is_some() {
                return Ok((next, lead));
            }
        }
    }
}

/// `fill_buf`, retrying when a read was interrupted (as `read_until` and friends do).
fn fill_body<R: BufRead>(body: &mut R) -> io::Result<&[u8]> {
    loop {
        match body.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
            // At the end, a second fill_buf would read again.
            Ok([]) => return Ok(&[]),
            Ok(_) => break,
        }
    }
    // A second fill_buf without a consume returns the same bytes without reading; returning the first one's from
    // inside the loop is a borrow the checker refuses.
    body.fill_buf()
}

/// CSV rows through csv_core, which unescapes quoted fields (holding delimiters, `""` and newlines) into `out`.
struct Csv {
    parser: csv_core::Reader,
    header: Option<Vec<String>>,
    /// Each column's name as a JSON string and a ':', end to end: escaped once, not for every row.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    /// The current row's fields, unescaped and end to end; `ends` has where each one ends.
    out: Vec<u8>,
    ends: Vec<usize>,
    scratch: Box<[u8]>,
    scratch_ends: Box<[usize]>,
}

/// A row read by [`Csv::read_row`]. Its fields are in `out`/`ends` unless it is too big or has more fields than
/// fit (then it is not an item, and they are not kept).
struct Row {
    line: u64,
    fields: usize,
    too_big: bool,
}

impl Csv {
    fn new(delimiter: u8) -> Self {
        let mut parser = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
        // csv_core drops a BOM at the start of the first input it is given, wherever that is in the object; the
        // object's own BOM is already gone (Input), and a reader resumed mid-object must not drop one either. With
        // no room for output it consumes nothing, but counts as started.
        let (result, consumed, _, _) = parser.read_record(b"\0", &mut [], &mut [0]);
        debug_assert!(result == ReadRecordResult::OutputFull && consumed == 0);
        Self {
            parser,
            header: None,
            keys: Vec::new(),
            key_ends: Vec::new(),
            out: Vec::new(),
            ends: Vec::new(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            scratch_ends: vec![0; SCRATCH_FIELDS].into_boxed_slice(),
        }
    }

    fn set_header(&mut self, names: Vec<String>) {
        self.keys.clear();
        self.key_ends.clear();
        for name in &names {
            serde_json::to_writer(&mut self.keys, name).expect("a string serializes");
            self.keys.push(b':');
            self.key_ends.push(self.keys.len());
        }
        // A data row has exactly the header's fields: one more is an error already, and is not kept.
        self.ends = vec![0; names.len()];
        self.header = Some(names);
    }

    fn read_header<R: BufRead>(&mut self, input: &mut Input<R>) -> Result<(), RecordError> {
        let Some(row) = self.read_row(input, MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1)? else {
            return Ok(());
        };
        let malformed = |message| RecordError::Malformed {
            line: row.line,
            message,
        };
        if row.too_big {
            return Err(malformed(format!(
                "the header row is more than {MAX_HEADER_BYTES} bytes"
            )));
        }
        let mut names = Vec::with_capacity(row.fields);
        let mut start = 0;
        for (column, &end) in self.ends[..row.fields].iter().enumerate() {
            let name = std::str::from_utf8(&self.out[start..end]).map_err(|_| {
                malformed(format!("header column {} is not valid UTF-8", column + 1))
            })?;
            names.push(name.to_owned());
            start = end;
        }
        check_header(&names).map_err(malformed)?;
        self.set_header(names);
        // The header may have grown it past what items need.
        self.out = Vec::new();
        Ok(())
    }

    fn next<R: BufRead>(&mut self, input: &mut Input<R>, max: usize) -> Step {
        let Some(width) = self.header.as_ref().map(Vec::len) else {
            // No header: the object had no row at all.
            return Ok(None);
        };
        let Some(row) = self.read_row(input, max, width)? else {
            return Ok(None);
        };
        Ok(Some((row.line, self.item(&row, max))))
    }

    /// Reads one row, keeping at most `max_bytes` + 1 bytes of it and `max_fields` field ends; a row past either
    /// streams on through the scratch buffers to its end, so that the next row is found. None at the end.
    fn read_row<R: BufRead>(
        &mut self,
        input: &mut Input<R>,
        max_bytes: usize,
        max_fields: usize,
    ) -> io::Result<Option<Row>> {
        // Blank lines are skipped here rather than by csv_core (which would skip them too), so that the row's line
        // is the line of its first byte. Skipped without csv_core, a '\n' after a row's '\r' changes nothing:
        // csv_core reads the next byte the same whether it saw that '\n' or not.
        loop {
            let buf = input.fill()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let row_start = buf.iter().position(|&b| b != b'\n' && b != b'\r');
            let n = row_start.unwrap_or(buf.len());
            let nl = newlines(&buf[..n]);
            input.consume(n, nl);
            if row_start.is_some() {
                break;
            }
        }
        let line = input.line;
        // The row's raw bytes may reach `max_bytes` plus its terminator.
        let raw_limit = (max_bytes as u64).saturating_add(1);
        let (mut raw, mut len, mut fields) = (0u64, 0usize, 0usize);
        let (mut too_big, mut too_wide) = (false, false);
        loop {
            let buf = input.fill()?;
            let at_end = buf.is_empty();
            let keep = !too_big && !too_wide;
            let (out, ends) = if keep {
                (&mut self.out[len..], &mut self.ends[fields..])
            } else {
                (&mut self.scratch[..], &mut self.scratch_ends[..])
            };
            let (result, nin, nout, nend) = self.parser.read_record(buf, out, ends);
            let last = buf[..nin].last().copied();
            let nl = newlines(&buf[..nin]);
            input.consume(nin, nl);
            raw += nin as u64;
            fields += nend;
            if keep {
                len += nout;
            }
            if raw > raw_limit {
                too_big = true;
            }
            match result {
                ReadRecordResult::InputEmpty if at_end => return Ok(None),
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    // Unescaped output is never longer than the raw row, so a full buffer of max + 1 bytes with
                    // more to come is a row over the limit.
                    if keep
                        && !grow(
                            &mut self.out,
                            max_bytes.saturating_add(1),
                            FIRST_BUFFER_BYTES,
                        )
                    {
                        too_big = true;
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if keep && !grow(&mut self.ends, max_fields, SCRATCH_FIELDS) {
                        too_wide = true;
                    }
                }
                ReadRecordResult::Record => {
                    // A row read from input ends with the terminator it consumed ('\r' or '\n'); at the end of the
                    // object it has none. A "\r\n" is one terminator: its '\n' belongs to this row's end.
                    if last == Some(b'\r') && input.fill()?.first() == Some(&b'\n') {
                        input.consume(1, 1);
                    }
                    let bytes = raw - u64::from(last.is_some());
                    return Ok(Some(Row {
                        line,
                        fields,
                        too_big: too_big || bytes > max_bytes as u64,
                    }));
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// The data row last read as a JSON object, in the header's order.
    fn item(&self, row: &Row, max: usize) -> Result<String, String> {
        let line = row.line;
        if row.too_big {
            return Err(format!(
                "line {line}: the row is more than {max} bytes, the limit for one item"
            ));
        }
        let header = self.header.as_deref().unwrap_or_default();
        if row.fields != header.len() {
            return Err(format!(
                "line {line}: {} fields, the header has {}",
                row.fields,
                header.len()
            ));
        }
        let ends = &self.ends[..row.fields];
        let data = ends.last().copied().unwrap_or(0);
        let mut json = Vec::with_capacity(2 + self.keys.len() + data + 3 * row.fields);
        json.push(b'{');
        let (mut start, mut key_start) = (0, 0);
        for (column, (&end, &key_end)) in ends.iter().zip(&self.key_ends).enumerate() {
            let value = std::str::from_utf8(&self.out[start..end]).map_err(|_| {
                format!(
                    "line {line}, column {} ({}): not valid UTF-8",
                    column + 1,
                    quote(&header[column])
                )
            })?;
            if column > 0 {
                json.push(b',');
            }
            json.extend_from_slice(&self.keys[key_start..key_end]);
            serde_json::to_writer(&mut json, value).expect("a string serializes");
            start = end;
            key_start = key_end;
        }
        json.push(b'}');
        Ok(String::from_utf8(json).expect("serde_json writes UTF-8"))
    }
}

/// Header names must name their columns: none empty, no two alike (compared as read, untrimmed).
fn check_header(names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Err("the header has no columns".into());
    }
    let mut seen = HashMap::with_capacity(names.len());
    for (column, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(format!("header column {} has an empty name", column + 1));
        }
        if let Some(first) = seen.insert(name.as_str(), column) {
            return Err(format!(
                "header columns {} and {} are both named {}",
                first + 1,
                column + 1,
                quote(name)
            ));
        }
    }
    Ok(())
}

/// JSONL: one item per non-blank line.
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn next<R: BufRead>(&mut self, input: &mut Input<R>, max: usize) -> Step {
        // Whitespace-only lines (and the indentation of this one) are skipped, so the item starts at its first
        // byte and on its own line.
        let (first, lead) = input.skip_whitespace()?;
        if first.is_none() {
            return Ok(None);
        }
        let line = input.line;
        // A '\r' before the '\n' may come on top of `max`: it is not the item's.
        let limit = max.saturating_add(1);
        self.buf.clear();
        let (mut bytes, mut too_big, mut last) = (0u64, false, 0u8);
        loop {
            let buf = input.fill()?;
            if buf.is_empty() {
                break;
            }
            let (n, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(p) => (p, true),
                None => (buf.len(), false),
            };
            if n > 0 {
                last = buf[n - 1];
            }
            bytes += n as u64;
            if !too_big {
                if bytes <= limit as u64 {
                    extend_bounded(&mut self.buf, &buf[..n], limit);
                } else {
                    too_big = true;
                    self.buf.clear();
                }
            }
            input.consume(n + usize::from(done), u64::from(done));
            if done {
                break;
            }
        }
        let bytes = bytes - u64::from(last == b'\r');
        if too_big || bytes > max as u64 {
            let message =
                format!("line {line}: the line is more than {max} bytes, the limit for one item");
            return Ok(Some((line, Err(message))));
        }
        let item = match serde_json::from_slice::<&RawValue>(trim_end(&self.buf)) {
            Ok(raw) => Ok(raw.get().to_owned()),
            Err(e) => Err(format!(
                "line {line}: {} at column {}",
                without_position(&e),
                lead as usize + e.column()
            )),
        };
        Ok(Some((line, item)))
    }
}

/// JSON: the elements of one top-level array.
struct Array {
    state: ArrayState,
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
enum ArrayState {
    /// At the object's start: whitespace, then '['.
    Open,
    /// After the '[': the first element or ']'.
    First,
    /// After an element: ',' and the next element, or ']'.
    Next,
    /// After the ']' and the whitespace that may follow.
    Done,
}

impl Array {
    fn next<R: BufRead>(&mut self, input: &mut Input<R>, index: u64, max: usize) -> Step {
        let malformed = |line, message| Err(RecordError::Malformed { line, message });
        loop {
            match self.state {
                ArrayState::Open => match input.skip_whitespace()?.0 {
                    Some(b'[') => {
                        input.consume(1, 0);
                        self.state = ArrayState::First;
                    }
                    Some(b) => {
                        let message =
                            format!("not a JSON array: the object starts with {}", describe(b));
                        return malformed(input.line, message);
                    }
                    None => {
                        return malformed(
                            input.line,
                            "not a JSON array: the object is empty".into(),
                        );
                    }
                },
                ArrayState::First => {
                    return match input.skip_whitespace()?.0 {
                        Some(b']') => self.close(input),
                        Some(b',') => malformed(
                            input.line,
                            "expected an element or `]` after `[`, found `,`".into(),
                        ),
                        Some(b) => self.element(input, b, index, max),
                        None => malformed(
                            input.line,
                            "the object ends inside the array, after its `[`".into(),
                        ),
                    };
                }
                ArrayState::Next => {
                    let previous = index.saturating_sub(1);
                    return match input.skip_whitespace()?.0 {
                        Some(b',') => {
                            input.consume(1, 0);
                            match input.skip_whitespace()?.0 {
                                Some(b @ (b',' | b']')) => malformed(
                                    input.line,
                                    format!(
                                        "expected an element after the `,` that follows element [{previous}], found {}",
                                        describe(b)
                                    ),
                                ),
                                Some(b) => self.element(input, b, index, max),
                                None => malformed(
                                    input.line,
                                    format!(
                                        "the object ends inside the array, after element [{previous}] and a `,`"
                                    ),
                                ),
                            }
                        }
                        Some(b']') => self.close(input),
                        Some(b) => malformed(
                            input.line,
                            format!(
                                "expected `,` or `]` after element [{previous}], found {}",
                                describe(b)
                            ),
                        ),
                        None => malformed(
                            input.line,
                            format!("the object ends inside the array, after element [{previous}]"),
                        ),
                    };
                }
                ArrayState::Done => return Ok(None),
            }
        }
    }

    /// Consumes the array's ']' and checks that only whitespace follows.
    fn close<R: BufRead>(&mut self, input: &mut Input<R>) -> Step {
        input.consume(1, 0);
        self.state = ArrayState::Done;
        match input.skip_whitespace()?.0 {
            None => Ok(None),
            Some(b) => Err(RecordError::Malformed {
                line: input.line,
                message: format!(
                    "{} after the array's closing `]`: only whitespace may follow it",
                    describe(b)
                ),
            }),
        }
    }

    /// Reads the element starting with `first` (not consumed yet), keeping at most `max` bytes of it.
    fn element<R: BufRead>(
        &mut self,
        input: &mut Input<R>,
        first: u8,
        index: u64,
        max: usize,
    ) -> Step {
        let line = input.line;
        let mut scan = Scan::new(first);
        self.buf.clear();
        let (mut bytes, mut too_big) = (0u64, false);
        loop {
            let buf = input.fill()?;
            if buf.is_empty() {
                if scan.scalar {
                    // `[1` and the end: the element is whole; the missing ']' is the next step's error.
                    break;
                }
                return Err(RecordError::Malformed {
                    line: input.line,
                    message: format!("the object ends inside element [{index}] (line {line})"),
                });
            }
            let (n, done) = scan.feed(buf);
            bytes += n as u64;
            if !too_big {
                if bytes <= max as u64 {
                    extend_bounded(&mut self.buf, &buf[..n], max);
                } else {
                    too_big = true;
                    self.buf.clear();
                }
            }
            let nl = newlines(&buf[..n]);
            input.consume(n, nl);
            if done {
                break;
            }
        }
        self.state = ArrayState::Next;
        let item = if too_big {
            Err(format!(
                "element [{index}] (line {line}): the element is more than {max} bytes, the limit for one item"
            ))
        } else {
            match serde_json::from_slice::<&RawValue>(&self.buf) {
                Ok(raw) => Ok(raw.get().to_owned()),
                Err(e) => Err(format!(
                    "element [{index}] (line {line}): {e} of the element"
                )),
            }
        };
        Ok(Some((line, item)))
    }
}

/// Finds where a JSON element ends without parsing it: a string at its closing quote, an array or object when
/// its brackets balance (strings and their escapes skipped), anything else (a number, `true`, garbage) before the
/// next whitespace or structural byte. What it finds is then validated as a whole; the scan only bounds it.
struct Scan {
    scalar: bool,
    started: bool,
    depth: u64,
    in_string: bool,
    escaped: bool,
}

impl Scan {
    fn new(first: u8) -> Self {
        Self {
            scalar: !matches!(first, b'"' | b'[' | b'{'),
            started: false,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// How many bytes of `buf` belong to the element, and whether it ends there.
    fn feed(&mut self, buf: &[u8]) -> (usize, bool) {
        if self.scalar {
            // The first byte is the element's whatever it is, so that every element takes at least one byte.
            let from = usize::from(!self.started);
            self.started = true;
            return match buf[from..].iter().position(|&b| ends_scalar(b)) {
                Some(p) => (from + p, true),
                None => (buf.len(), false),
            };
        }
        for (i, &b) in buf.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return (i + 1, true);
                    }
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => self.depth += 1,
                    b']' | b'}' => {
                        // Never below 1 here: only a container's bytes get here, and it ends at depth 0.
                        self.depth -= 1;
                        if self.depth == 0 {
                            return (i + 1, true);
                        }
                    }
                    _ => {}
                }
            }
        }
        (buf.len(), false)
    }
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn ends_scalar(b: u8) -> bool {
    is_json_space(b) || matches!(b, b',' | b']' | b'}' | b'[' | b'{' | b'"' | b':')
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| !is_json_space(b))
        .map_or(0, |p| p + 1);
    &bytes[..end]
}

fn newlines(bytes: &[u8]) -> u64 {
    bytecount::count(bytes, b'\n') as u64
}

/// Makes `buf` longer (doubling, from `first`) up to `cap`; false when it already is that long.
fn grow<T: Copy + Default>(buf: &mut Vec<T>, cap: usize, first: usize) -> bool {
    if buf.len() >= cap {
        return false;
    }
    let len = buf.len().saturating_mul(2).max(first).min(cap);
    buf.reserve_exact(len - buf.len());
    buf.resize(len, T::default());
    true
}

/// Appends `bytes` (the caller keeps `buf` within `limit`), growing the capacity by doubling but never past
/// `limit`: Vec's own growth could double a buffer to twice the limit.
fn extend_bounded(buf: &mut Vec<u8>, bytes: &[u8], limit: usize) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let capacity = buf
            .capacity()
            .saturating_mul(2)
            .max(FIRST_BUFFER_BYTES)
            .min(limit)
            .max(needed);
        buf.reserve_exact(capacity - buf.len());
    }
    buf.extend_from_slice(bytes);
}

/// serde_json's message without its " at line L column C", which counts from the item's start, not the object's.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(bare) => bare.to_owned(),
        None => message,
    }
}

/// A byte found where it should not be, for a message.
fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("`{}`", b as char)
    } else {
        format!("byte 0x{b:02X}")
    }
}

/// A name from the data as a JSON string, cut to [`MAX_ECHO_BYTES`] at a char boundary.
fn quote(name: &str) -> String {
    let mut end = name.len().min(MAX_ECHO_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < name.len() { "…" } else { "" };
    format!("{}{cut}", serde_json::Value::from(&name[..end]))
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Cursor, Read};

    use proptest::prelude::*;

    use super::*;

    const START: RecordPosition = RecordPosition::START;

    /// How an object is read, so that a resumed read can be set up like the first one.
    #[derive(Clone, Debug)]
    enum Mode {
        CsvFirstRow(u8),
        CsvGiven(Vec<String>, u8),
        Jsonl,
        Json,
    }

    impl Mode {
        /// The format for a read; `header` is what a first_row CSV resumed past its header is given.
        fn format(&self, header: Option<&[String]>) -> RecordFormat {
            match self {
                Mode::CsvFirstRow(delimiter) => RecordFormat::Csv {
                    header: header.map(<[String]>::to_vec),
                    delimiter: *delimiter,
                },
                Mode::CsvGiven(names, delimiter) => RecordFormat::Csv {
                    header: Some(names.clone()),
                    delimiter: *delimiter,
                },
                Mode::Jsonl => RecordFormat::Jsonl,
                Mode::Json => RecordFormat::Json,
            }
        }
    }

    type Outcome = (Vec<Record>, Result<(), String>);

    /// Every record from `at`, and how reading ended: `Ok` at the end, or the error (from `new` or a record).
    fn read_all<R: BufRead>(
        format: RecordFormat,
        body: R,
        at: RecordPosition,
        max: usize,
    ) -> Outcome {
        let mut reader = match RecordReader::new(format, body, at, max) {
            Ok(reader) => reader,
            Err(e) => return (Vec::new(), Err(e.to_string())),
        };
        let mut records = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => return (records, Ok(())),
                Err(e) => return (records, Err(e.to_string())),
            }
        }
    }

    fn read(mode: &Mode, bytes: &[u8], max: usize) -> Outcome {
        read_all(mode.format(None), bytes, START, max)
    }

    fn items(records: &[Record]) -> Vec<Result<&str, &str>> {
        records
            .iter()
            .map(|r| r.item.as_deref().map_err(String::as_str))
            .collect()
    }

    fn lines(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.line).collect()
    }

    /// Reads `bytes` from the start, then checks that every other way of reading it gives the same records: any
    /// buffer size down to a byte at a time, and a new reader resumed after each record (and, for a first_row
    /// CSV, after the header) on the bytes from its end. Also that each end's line counts the newlines before it.
    fn check_resumes(mode: &Mode, bytes: &[u8], max: usize, capacities: &[usize]) -> Outcome {
        let (all, outcome) = read(mode, bytes, max);
        for &capacity in capacities {
            let body = BufReader::with_capacity(capacity, bytes);
            let got = read_all(mode.format(None), body, START, max);
            assert_eq!(
                got,
                (all.clone(), outcome.clone()),
                "a buffer of {capacity} bytes"
            );
        }
        for (i, record) in all.iter().enumerate() {
            let end = record.end;
            assert_eq!(record.index, i as u64);
            assert_eq!(end.index, i as u64 + 1);
            assert_eq!(
                end.line,
                1 + newlines(&bytes[..end.offset as usize]),
                "{record:?}"
            );
            assert!(record.line <= end.line);
        }
        let mut header = None;
        if let Mode::CsvFirstRow(delimiter) = mode {
            match read_csv_header(bytes, *delimiter) {
                Ok(Some((names, at))) => {
                    let rest = &bytes[at.offset as usize..];
                    let got = read_all(mode.format(Some(&names)), rest, at, max);
                    assert_eq!(
                        got,
                        (all.clone(), outcome.clone()),
                        "resumed after the header"
                    );
                    header = Some(names);
                }
                Ok(None) => assert_eq!((all.is_empty(), &outcome), (true, &Ok(()))),
                Err(e) => assert_eq!((all.is_empty(), &outcome), (true, &Err(e.to_string()))),
            }
        }
        for (k, record) in all.iter().enumerate() {
            let at = record.end;
            let rest = &bytes[at.offset as usize..];
            let expected = (all[k + 1..].to_vec(), outcome.clone());
            let got = read_all(mode.format(header.as_deref()), rest, at, max);
            assert_eq!(got, expected, "resumed after record {k}");
            for &capacity in capacities {
                let body = BufReader::with_capacity(capacity, rest);
                let got = read_all(mode.format(header.as_deref()), body, at, max);
                assert_eq!(
                    got, expected,
                    "resumed after record {k}, a buffer of {capacity} bytes"
                );
            }
        }
        (all, outcome)
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn csv_rows_become_objects_in_header_order() {
        let bytes =
            "Zoë,名前,a\"b\r\n1,\"x, \"\"y\"\"\",\"two\nlines\"\r\n\r\n\n3,,\"\"\n".as_bytes();
        let mode = Mode::CsvFirstRow(b',');
        let (records, outcome) = check_resumes(&mode, bytes, 1000, &[1, 2, 3, 7]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Ok(r#"{"Zoë":"1","名前":"x, \"y\"","a\"b":"two\nlines"}"#),
                Ok(r#"{"Zoë":"3","名前":"","a\"b":""}"#),
            ]
        );
        // The header is line 1; the second row starts after two blank lines.
        assert_eq!(lines(&records), [2, 6]);
        let header_len = "Zoë,名前,a\"b\r\n".len() as u64;
        let first_end = header_len + "1,\"x, \"\"y\"\"\",\"two\nlines\"\r\n".len() as u64;
        let first = RecordPosition {
            offset: first_end,
            line: 4,
            index: 1,
        };
        assert_eq!(records[0].end, first);
        assert_eq!(records[1].end.offset, bytes.len() as u64);
        let (header, at) = read_csv_header(bytes, b',').unwrap().unwrap();
        assert_eq!(header, names(&["Zoë", "名前", "a\"b"]));
        let after_header = RecordPosition {
            offset: header_len,
            line: 2,
            index: 0,
        };
        assert_eq!(at, after_header);
        let reader = RecordReader::new(mode.format(None), bytes, START, 1000).unwrap();
        assert_eq!(reader.header(), Some(&header[..]));
        assert_eq!(reader.position(), after_header);
    }

    #[test]
    fn a_ragged_row_names_its_line_and_reading_goes_on() {
        let bytes = b"a,b,c,d\n1,2,3,4,5\n\"x\ny\",2\n1,2,3,4\n1,2,3,4,5,6,7,8,9\n";
        let (records, outcome) = check_resumes(&Mode::CsvFirstRow(b','), bytes, 1000, &[1, 4]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Err("line 2: 5 fields, the header has 4"),
                Err("line 3: 2 fields, the header has 4"),
                Ok(r#"{"a":"1","b":"2","c":"3","d":"4"}"#),
                Err("line 6: 9 fields, the header has 4"),
            ]
        );
    }

    #[test]
    fn other_delimiters_and_given_names() {
        let bytes = b"1;\"a;b\";3\n4;5;6";
        let (records, outcome) = check_resumes(&Mode::CsvFirstRow(b';'), bytes, 100, &[1]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(items(&records), [Ok(r#"{"1":"4","a;b":"5","3":"6"}"#)]);
        assert_eq!(records[0].end.offset, bytes.len() as u64);

        // Given names: the first row is data, on line 1.
        let mode = Mode::CsvGiven(names(&["x", "y"]), b'\t');
        let (records, outcome) = check_resumes(&mode, b"1\t2\n\"3\t\"\t4\n", 100, &[1]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [Ok(r#"{"x":"1","y":"2"}"#), Ok(r#"{"x":"3\t","y":"4"}"#)]
        );
        assert_eq!(lines(&records), [1, 2]);
    }

    #[test]
    fn a_header_must_name_every_column_once() {
        for (bytes, error) in [
            (
                &b"\n\na,,c\n1,2,3\n"[..],
                "line 3: header column 2 has an empty name",
            ),
            (
                b"a,b,a\n",
                "line 1: header columns 1 and 3 are both named \"a\"",
            ),
            (b"a,\xFF\n", "line 1: header column 2 is not valid UTF-8"),
        ] {
            let (records, outcome) = check_resumes(&Mode::CsvFirstRow(b','), bytes, 100, &[1]);
            assert_eq!((records, outcome), (vec![], Err(error.to_owned())));
        }
        // Names are kept as read: " a" is not "a".
        let (records, _) = read(&Mode::CsvFirstRow(b','), b"a, a\n1,2\n", 100);
        assert_eq!(items(&records), [Ok(r#"{"a":"1"," a":"2"}"#)]);
        // Given names are checked the same way.
        for (given, error) in [
            (
                names(&["x", "x"]),
                "line 1: header columns 1 and 2 are both named \"x\"",
            ),
            (names(&[""]), "line 1: header column 1 has an empty name"),
            (vec![], "line 1: the header has no columns"),
        ] {
            let outcome = read(&Mode::CsvGiven(given, b','), b"1,2\n", 100);
            assert_eq!(outcome, (vec![], Err(error.to_owned())));
        }
        // A first_row CSV resumed past its header needs it.
        let at = RecordPosition {
            offset: 4,
            line: 2,
            index: 0,
        };
        let format = Mode::CsvFirstRow(b',').format(None);
        assert!(matches!(
            RecordReader::new(format, &b"1,2\n"[..], at, 100),
            Err(RecordError::Malformed { line: 2, .. })
        ));
        // An object with no row has no header and no items.
        for bytes in [&b""[..], b"\n\r\n", b"\xEF\xBB\xBF"] {
            assert_eq!(read_csv_header(bytes, b',').unwrap(), None);
            assert_eq!(read(&Mode::CsvFirstRow(b','), bytes, 100), (vec![], Ok(())));
        }
    }

    #[test]
    fn a_field_that_is_not_utf8_names_its_line_and_column() {
        let bytes = b"a,b\n1,\xC3\x28\n2,3\n";
        let (records, outcome) = check_resumes(&Mode::CsvFirstRow(b','), bytes, 100, &[1]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Err("line 2, column 2 (\"b\"): not valid UTF-8"),
                Ok(r#"{"a":"2","b":"3"}"#)
            ]
        );
    }

    #[test]
    fn a_bom_at_the_start_is_dropped_in_every_format_and_kept_elsewhere() {
        let csv = "\u{feff}a\n\u{feff}x\n".as_bytes();
        let (records, _) = check_resumes(&Mode::CsvFirstRow(b','), csv, 100, &[1, 2]);
        assert_eq!(items(&records), [Ok("{\"a\":\"\u{feff}x\"}")]);
        assert_eq!(
            read_csv_header(csv, b',').unwrap().unwrap(),
            (
                names(&["a"]),
                RecordPosition {
                    offset: 5,
                    line: 2,
                    index: 0
                }
            )
        );
        let (records, _) = check_resumes(&Mode::Jsonl, "\u{feff}1\n".as_bytes(), 100, &[1]);
        assert_eq!(items(&records), [Ok("1")]);
        let (records, _) = check_resumes(&Mode::Json, "\u{feff} [1]".as_bytes(), 100, &[1]);
        assert_eq!(items(&records), [Ok("1")]);
        // Bytes that only begin like a BOM are data.
        let (records, _) = check_resumes(
            &Mode::CsvFirstRow(b','),
            "\u{fec0}\n1\n".as_bytes(),
            100,
            &[1, 2],
        );
        assert_eq!(items(&records), [Ok("{\"\u{fec0}\":\"1\"}")]);
    }

    #[test]
    fn jsonl_lines_are_items_as_written() {
        let bytes = b"{\"a\": [1, 2.50]}\r\n\n   \t\r\n  1.000000000000000000001 \n{\"a\":\nnull\n\"\\u00e9\"";
        let (records, outcome) = check_resumes(&Mode::Jsonl, bytes, 100, &[1, 2, 5]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Ok("{\"a\": [1, 2.50]}"),
                Ok("1.000000000000000000001"),
                Err("line 5: EOF while parsing a value at column 5"),
                Ok("null"),
                Ok("\"\\u00e9\""),
            ]
        );
        assert_eq!(lines(&records), [1, 4, 5, 6, 7]);
        assert_eq!(records[0].end.offset, 18);
    }

    #[test]
    fn json_elements_are_found_through_nesting_and_strings() {
        let bytes = br#" [ {"a": ["]", "\"[{"], "b": {"c": [[], {}]}},
            "x\\", 1.50e3 ,true,null, [ [1, [2]] ],
            {"bad": tru}, "end" ]
        "#;
        let (records, outcome) = check_resumes(&Mode::Json, bytes, 1000, &[1, 2, 3, 9]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Ok(r#"{"a": ["]", "\"[{"], "b": {"c": [[], {}]}}"#),
                Ok(r#""x\\""#),
                Ok("1.50e3"),
                Ok("true"),
                Ok("null"),
                Ok("[ [1, [2]] ]"),
                Err("element [6] (line 3): expected ident at line 1 column 12 of the element"),
                Ok(r#""end""#),
            ]
        );
        assert_eq!(lines(&records), [1, 2, 2, 2, 2, 2, 3, 3]);
        let (records, outcome) = check_resumes(&Mode::Json, b"[\n{\"a\":\n1}]", 1000, &[1]);
        assert_eq!(
            (items(&records), outcome),
            (vec![Ok("{\"a\":\n1}")], Ok(()))
        );
        assert_eq!(read(&Mode::Json, b" [ ] \n", 10), (vec![], Ok(())));
    }

    #[test]
    fn json_that_is_not_one_array_is_malformed() {
        for (bytes, good, error) in [
            (
                &b"{\"a\": 1}"[..],
                0,
                "line 1: not a JSON array: the object starts with `{`",
            ),
            (b"\n ", 0, "line 2: not a JSON array: the object is empty"),
            (
                b"[1] x",
                1,
                "line 1: `x` after the array's closing `]`: only whitespace may follow it",
            ),
            (
                b"[1]\n]",
                1,
                "line 2: `]` after the array's closing `]`: only whitespace may follow it",
            ),
            (
                b"[1 2]",
                1,
                "line 1: expected `,` or `]` after element [0], found `2`",
            ),
            (
                b"[1,]",
                1,
                "line 1: expected an element after the `,` that follows element [0], found `]`",
            ),
            (
                b"[,1]",
                0,
                "line 1: expected an element or `]` after `[`, found `,`",
            ),
            (
                b"[1,\n",
                1,
                "line 2: the object ends inside the array, after element [0] and a `,`",
            ),
            (
                b"[1",
                1,
                "line 1: the object ends inside the array, after element [0]",
            ),
            (
                b"[",
                0,
                "line 1: the object ends inside the array, after its `[`",
            ),
            (
                b"[1, {\"a\": \"]}\n",
                1,
                "line 2: the object ends inside element [1] (line 1)",
            ),
        ] {
            let (records, outcome) = check_resumes(&Mode::Json, bytes, 100, &[1]);
            assert_eq!(records.len(), good, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(outcome, Err(error.to_owned()));
        }
    }

    #[test]
    fn an_item_over_the_limit_is_skipped_and_the_next_one_read() {
        let (records, outcome) = check_resumes(
            &Mode::CsvFirstRow(b','),
            b"a,b\n1,\"0123456789\n\"\"\"\n123456789,0\r\n1234567,89\n",
            10,
            &[1, 3],
        );
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Err("line 2: the row is more than 10 bytes, the limit for one item"),
                Err("line 4: the row is more than 10 bytes, the limit for one item"),
                Ok(r#"{"a":"1234567","b":"89"}"#),
            ]
        );
        assert_eq!(lines(&records), [2, 4, 5]);

        let (records, outcome) =
            check_resumes(&Mode::Jsonl, b"[1,2,3,4]\n[1,2,3,4,5]\r\n\"x\"", 9, &[1, 3]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Ok("[1,2,3,4]"),
                Err("line 2: the line is more than 9 bytes, the limit for one item"),
                Ok("\"x\"")
            ]
        );

        let (records, outcome) = check_resumes(
            &Mode::Json,
            b"[[1,2,3,4],\n\"0123456789\",123456789, 1234567890, 0]",
            9,
            &[1, 3],
        );
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&records),
            [
                Ok("[1,2,3,4]"),
                Err(
                    "element [1] (line 2): the element is more than 9 bytes, the limit for one item"
                ),
                Ok("123456789"),
                Err(
                    "element [3] (line 2): the element is more than 9 bytes, the limit for one item"
                ),
                Ok("0"),
            ]
        );
    }

    /// A body of `prefix`, `size` copies of `byte`, then `suffix`, made as it is read.
    fn generated(prefix: &[u8], byte: u8, size: u64, suffix: &[u8]) -> BufReader<impl Read> {
        let body = Cursor::new(prefix.to_vec())
            .chain(io::repeat(byte).take(size))
            .chain(Cursor::new(suffix.to_vec()));
        BufReader::new(body)
    }

    /// Reads a body holding one 50 MB item with a 1 MB limit: the item is an error, the next one is read, and the
    /// buffers never hold more than a few MB.
    fn read_huge(
        format: RecordFormat,
        body: BufReader<impl Read>,
        length: u64,
    ) -> Vec<Result<String, String>> {
        let mut reader = RecordReader::new(format, body, START, 1 << 20).unwrap();
        let mut items = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            assert!(
                reader.buffered_bytes() < 3 << 20,
                "{}",
                reader.buffered_bytes()
            );
            items.push(record.item);
        }
        assert_eq!(reader.position().offset, length);
        items
    }

    const HUGE: u64 = 50 << 20;

    #[test]
    fn a_huge_csv_field_is_never_buffered_whole() {
        let (prefix, suffix) = (b"a,b\n1,\"", b"\"\n2,3\n");
        let body = generated(prefix, b'x', HUGE, suffix);
        let length = (prefix.len() + suffix.len()) as u64 + HUGE;
        let format = Mode::CsvFirstRow(b',').format(None);
        assert_eq!(
            read_huge(format, body, length),
            [
                Err(
                    "line 2: the row is more than 1048576 bytes, the limit for one item".to_owned()
                ),
                Ok(r#"{"a":"2","b":"3"}"#.to_owned())
            ]
        );
        // As many fields: not kept either.
        let (prefix, suffix) = (b"a,b\n", b"\n2,3\n");
        let body = generated(prefix, b',', HUGE, suffix);
        let length = (prefix.len() + suffix.len()) as u64 + HUGE;
        let format = Mode::CsvFirstRow(b',').format(None);
        assert_eq!(read_huge(format, body, length).len(), 2);
    }

    #[test]
    fn a_huge_jsonl_line_is_never_buffered_whole() {
        let (prefix, suffix) = (b"1\n\"", b"\"\n2\n");
        let body = generated(prefix, b'x', HUGE, suffix);
        let length = (prefix.len() + suffix.len()) as u64 + HUGE;
        assert_eq!(
            read_huge(RecordFormat::Jsonl, body, length),
            [
                Ok("1".to_owned()),
                Err(
                    "line 2: the line is more than 1048576 bytes, the limit for one item"
                        .to_owned()
                ),
                Ok("2".to_owned())
            ]
        );
    }

    #[test]
    fn a_huge_json_element_is_never_buffered_whole() {
        let (prefix, suffix) = (b"[1, [\"", b"\"], [2]]");
        let body = generated(prefix, b'[', HUGE, suffix);
        let length = (prefix.len() + suffix.len()) as u64 + HUGE;
        assert_eq!(
            read_huge(RecordFormat::Json, body, length),
            [
                Ok("1".to_owned()),
                Err("element [1] (line 1): the element is more than 1048576 bytes, the limit for one item".to_owned()),
                Ok("[2]".to_owned())
            ]
        );
    }

    /// Hands over `data` a few bytes at a time, failing once at `fail_at` (and returning Interrupted now and
    /// then, which is retried).
    struct Flaky {
        data: Vec<u8>,
        at: usize,
        fail_at: Option<usize>,
        calls: usize,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.fail_at.is_some_and(|at| self.at >= at) {
                self.fail_at = None;
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let n = buf.len().min(3).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_failed_read_stops_the_reader_and_reading_resumes_from_the_last_end() {
        let data = b"a,b\n1,2\n3,4\n5,6\n".to_vec();
        let format = || Mode::CsvFirstRow(b',').format(None);
        let body = BufReader::with_capacity(
            2,
            Flaky {
                data: data.clone(),
                at: 0,
                fail_at: Some(10),
                calls: 0,
            },
        );
        let mut reader = RecordReader::new(format(), body, START, 100).unwrap();
        let first = reader.next_record().unwrap().unwrap();
        assert_eq!(first.item.as_deref(), Ok(r#"{"a":"1","b":"2"}"#));
        assert!(matches!(reader.next_record(), Err(RecordError::Read(_))));
        assert!(matches!(reader.next_record(), Err(RecordError::Read(_))));
        let (header, _) = read_csv_header(&data[..], b',').unwrap().unwrap();
        let at = first.end;
        let body = Flaky {
            data: data[at.offset as usize..].to_vec(),
            at: 0,
            fail_at: None,
            calls: 0,
        };
        let format = Mode::CsvFirstRow(b',').format(Some(&header));
        let (rest, outcome) = read_all(format, BufReader::new(body), at, 100);
        assert_eq!(outcome, Ok(()));
        assert_eq!(
            items(&rest),
            [Ok(r#"{"a":"3","b":"4"}"#), Ok(r#"{"a":"5","b":"6"}"#)]
        );
        assert_eq!(lines(&rest), [3, 4]);
    }

    #[test]
    fn a_malformed_array_stays_malformed() {
        let mut reader = RecordReader::new(RecordFormat::Json, &b"[1 2]"[..], START, 10).unwrap();
        assert!(reader.next_record().unwrap().is_some());
        for _ in 0..2 {
            let error = reader.next_record().unwrap_err();
            assert!(
                matches!(error, RecordError::Malformed { line: 1, .. }),
                "{error}"
            );
        }
    }

    /// A field as the generated CSV writes it: quoted when it must be, and now and then when it need not be.
    fn render_field(field: &str, delimiter: u8, quote: bool) -> String {
        let special = field
            .bytes()
            .any(|b| matches!(b, b'"' | b'\r' | b'\n') || b == delimiter);
        if quote || special {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field.to_owned()
        }
    }

    fn csv_field() -> impl Strategy<Value = (String, bool)> {
        let text = prop_oneof![
            3 => "[a-z0-9]{0,5}",
            2 => "[a-zé字😀,;\t\" \r\n]{0,8}",
        ];
        (text, any::<bool>())
    }

    fn csv_object() -> impl Strategy<Value = (Vec<u8>, Mode, Vec<String>)> {
        let header = proptest::collection::vec("[a-zé字\" ,;]{0,3}", 1..5).prop_map(|prefixes| {
            prefixes
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{p}{i}"))
                .collect::<Vec<_>>()
        });
        let row = (
            proptest::collection::vec(csv_field(), 1..6),
            prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            0..3usize,
        );
        (
            header,
            proptest::collection::vec(row, 0..8),
            any::<bool>(),
            prop_oneof![Just(b','), Just(b';'), Just(b'\t')],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(header, rows, given, delimiter, bom, last_terminated)| {
                let separator = (delimiter as char).to_string();
                let mut text = String::new();
                if bom {
                    text.push('\u{feff}');
                }
                if !given {
                    let names: Vec<String> = header
                        .iter()
                        .map(|n| render_field(n, delimiter, false))
                        .collect();
                    text.push_str(&names.join(&separator));
                    text.push_str("\r\n");
                }
                let count = rows.len();
                for (i, (fields, terminator, blanks)) in rows.into_iter().enumerate() {
                    let fields: Vec<String> = fields
                        .iter()
                        .map(|(f, q)| render_field(f, delimiter, *q))
                        .collect();
                    text.push_str(&fields.join(&separator));
                    if i + 1 < count || last_terminated {
                        text.push_str(terminator);
                    }
                    for _ in 0..blanks {
                        text.push_str(terminator);
                    }
                }
                let mode = if given {
                    Mode::CsvGiven(header.clone(), delimiter)
                } else {
                    Mode::CsvFirstRow(delimiter)
                };
                (text.into_bytes(), mode, header)
            })
    }

    proptest! {
        #[test]
        fn csv_records_are_the_same_however_the_object_is_read(
            (bytes, mode, header) in csv_object(),
            max in prop_oneof![1..40usize, Just(10_000)],
        ) {
            let (records, outcome) = check_resumes(&mode, &bytes, max, &[1, 3]);
            prop_assert_eq!(outcome, Ok(()));
            // The csv crate, as an oracle for what the rows hold.
            let delimiter = match mode { Mode::CsvFirstRow(d) | Mode::CsvGiven(_, d) => d, _ => unreachable!() };
            let mut oracle = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .delimiter(delimiter)
                .from_reader(&bytes[..]);
            let mut rows: Vec<csv::StringRecord> = oracle.records().map(Result::unwrap).collect();
            if matches!(mode, Mode::CsvFirstRow(_)) {
                let first = rows.remove(0);
                let read: Vec<&str> = first.iter().collect();
                prop_assert_eq!(read, header.iter().map(String::as_str).collect::<Vec<_>>());
            }
            prop_assert_eq!(records.len(), rows.len());
            for (record, row) in records.iter().zip(&rows) {
                match &record.item {
                    Ok(item) => {
                        prop_assert_eq!(row.len(), header.len());
                        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(item).unwrap();
                        let expected = header.iter().cloned().zip(row.iter().map(serde_json::Value::from)).collect();
                        prop_assert_eq!(object, expected);
                        prop_assert!(item.len() <= max * 6 + 200);
                    }
                    Err(e) if e.contains("fields, the header has") => prop_assert_ne!(row.len(), header.len()),
                    Err(e) => prop_assert!(e.contains(&format!("more than {max} bytes")), "{}", e),
                }
            }
        }

        #[test]
        fn json_elements_are_the_same_however_the_object_is_read(
            values in proptest::collection::vec(json_value(), 0..6),
            pretty in proptest::collection::vec(any::<bool>(), 6),
            spaces in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n"), Just("\r\n  ")], 14),
            max in prop_oneof![1..30usize, Just(10_000)],
        ) {
            let texts: Vec<String> = values
                .iter()
                .zip(&pretty)
                .map(|(v, &p)| if p { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) }.unwrap())
                .collect();
            let mut bytes = format!("{}[{}", spaces[0], spaces[1]);
            for (i, text) in texts.iter().enumerate() {
                if i > 0 {
                    bytes.push_str(&format!("{},{}", spaces[2 * i], spaces[2 * i + 1]));
                }
                bytes.push_str(text);
            }
            bytes.push_str(&format!("{}]{}", spaces[12], spaces[13]));
            let (records, outcome) = check_resumes(&Mode::Json, bytes.as_bytes(), max, &[2]);
            prop_assert_eq!(outcome, Ok(()));
            let expected: Vec<Result<&str, bool>> =
                texts.iter().map(|t| if t.len() <= max { Ok(t.as_str()) } else { Err(true) }).collect();
            let got: Vec<Result<&str, bool>> =
                records.iter().map(|r| r.item.as_deref().map_err(|e| e.contains("more than"))).collect();
            prop_assert_eq!(got, expected);

            // The same values as JSONL, compact, among blank lines.
            let mut lines = String::new();
            for (i, value) in values.iter().enumerate() {
                lines.push_str(spaces[i].trim_start_matches('\n'));
                lines.push_str(&serde_json::to_string(value).unwrap());
                lines.push_str(if pretty[i] { "\r\n\n" } else { "\n" });
            }
            let (records, outcome) = check_resumes(&Mode::Jsonl, lines.as_bytes(), max, &[2]);
            prop_assert_eq!(outcome, Ok(()));
            prop_assert_eq!(records.len(), values.len());
            for (record, value) in records.iter().zip(&values) {
                let text = serde_json::to_string(value).unwrap();
                match &record.item {
                    Ok(item) => prop_assert_eq!(item, &text),
                    Err(e) => prop_assert!(text.len() > max && e.contains("more than"), "{}", e),
                }
            }
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[\\[\\]{}\"\\\\a-zé, :\n]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z\\]\"]{0,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
