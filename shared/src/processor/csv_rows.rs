//! Reading a CSV object for a processor: the header row first, then the data rows, each counted, and every
//! error an [`ItemError`] that names the key, the row (1-based, the header is row 1) and the column where there
//! is one. The processors that read CSV (`csv_aggregate`, `monthly_high`) share it, so that a malformed object
//! fails with the same words whichever of them reads it.

use std::fmt::Display;
use std::io::Read;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::{ItemError, echo};

/// A CSV object being read: its header, and the number of the row last read.
pub struct CsvObject<'a> {
    key: &'a str,
    reader: csv::Reader<&'a mut dyn Read>,
    header: Vec<String>,
    row: u64,
}

impl<'a> CsvObject<'a> {
    /// Reads the header row (a UTF-8 byte order mark before it is dropped). An object without one is invalid.
    pub fn open(key: &'a str, body: &'a mut dyn Read) -> Result<Self, ItemError> {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(body);
        let mut object = Self {
            key,
            reader,
            header: Vec::new(),
            row: 0,
        };
        let mut record = csv::StringRecord::new();
        if !object.read_row(&mut record)? {
            return Err(object.invalid("empty object: no header row"));
        }
        object.header = record.iter().map(str::to_owned).collect();
        if let Some(first) = object.header.first_mut() {
            *first = first.trim_start_matches('\u{feff}').to_owned();
        }
        Ok(object)
    }

    /// The header's names, as read.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Where the header has the column `name` (compared with the header's names trimmed); `field` is the
    /// config field that named it, for the error.
    pub fn column(&self, name: &str, field: &str) -> Result<usize, ItemError> {
        self.header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                self.invalid(format!(
                    "row 1: the header has no column \"{name}\" ({field})"
                ))
            })
    }

    /// Reads the next row into `record`; `false` at the end. Every row has the header's number of fields.
    pub fn read_row(&mut self, record: &mut csv::StringRecord) -> Result<bool, ItemError> {
        match self.reader.read_record(record) {
            Ok(true) => {
                self.row += 1;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(self.csv_error(e)),
        }
    }

    /// The cell of `column` in the row last read, as an exact decimal.
    pub fn number(&self, column: &str, cell: &str) -> Result<Decimal, ItemError> {
        parse_number(cell)
            .ok_or_else(|| self.invalid_cell(column, format!("\"{}\" is not a number", echo(cell))))
    }

    /// The object is unusable: `"<key>": <message>`.
    pub fn invalid(&self, message: impl Display) -> ItemError {
        ItemError::Invalid(format!("\"{}\": {message}", self.key))
    }

    /// A cell of the row last read is unusable: `"<key>": row <n>, column "<column>": <message>`.
    pub fn invalid_cell(&self, column: &str, message: impl Display) -> ItemError {
        self.invalid(format!("row {}, column \"{column}\": {message}", self.row))
    }

    fn csv_error(&self, e: csv::Error) -> ItemError {
        let at = e
            .position()
            .map(|p| format!("row {}: ", p.record() + 1))
            .unwrap_or_default();
        match e.into_kind() {
            csv::ErrorKind::Io(source) => ItemError::Read {
                key: self.key.to_owned(),
                source,
            },
            csv::ErrorKind::Utf8 { err, .. } => {
                self.invalid(format!("{at}not valid UTF-8 (field {})", err.field() + 1))
            }
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => self.invalid(format!(
                "{at}has {len} fields, the header has {expected_len}"
            )),
            other => self.invalid(format!("{at}not valid CSV: {other:?}")),
        }
    }
}

/// A cell as an exact decimal: digits with an optional sign and point (`-12.5`), or scientific notation
/// (`1.5e3`). Anything else (`M`, `12°`, an empty cell) is not a number.
pub fn parse_number(cell: &str) -> Option<Decimal> {
    if cell.bytes().any(|b| b == b'e' || b == b'E') {
        Decimal::from_scientific(cell).ok()
    } else if cell
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'))
    {
        Decimal::from_str(cell).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: &[u8]) -> Result<Vec<Vec<String>>, String> {
        let mut body = data;
        let mut object = CsvObject::open("k.csv", &mut body).map_err(|e| e.to_string())?;
        let mut all = vec![object.header().to_vec()];
        let mut record = csv::StringRecord::new();
        while object.read_row(&mut record).map_err(|e| e.to_string())? {
            all.push(record.iter().map(str::to_owned).collect());
        }
        Ok(all)
    }

    #[test]
    fn quoted_fields_keep_their_commas_and_spaces() {
        let read =
            rows(b"\xef\xbb\xbf\"A\",\"NAME\"\n\"1\",\"JAN MAYEN, NO\"\n\" 8\",\"\"\n").unwrap();
        assert_eq!(read[0], ["A", "NAME"], "the byte order mark is dropped");
        assert_eq!(read[1], ["1", "JAN MAYEN, NO"]);
        assert_eq!(read[2], [" 8", ""]);
    }

    #[test]
    fn errors_name_the_key_and_the_row() {
        assert_eq!(
            rows(b"").unwrap_err(),
            "\"k.csv\": empty object: no header row"
        );
        assert_eq!(
            rows(b"A,B\n1,2\n3\n").unwrap_err(),
            "\"k.csv\": row 3: has 1 fields, the header has 2"
        );
        assert!(
            rows(b"A,B\n1,\xff\n")
                .unwrap_err()
                .contains("row 2: not valid UTF-8 (field 2)")
        );
    }

    #[test]
    fn numbers_are_exact_decimals_or_nothing() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(parse_number("-12.5"), Some(d("-12.5")));
        assert_eq!(parse_number("1.5e3"), Some(d("1500")));
        for not in ["", "M", "12°", " 1", "1,5"] {
            assert_eq!(parse_number(not), None, "{not:?}");
        }
    }
}
