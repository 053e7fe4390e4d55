//! The `monthly_high` processor: per month, the row with the highest value. Over NOAA's Global Surface Summary
//! of the Day (one CSV per station and year, with the columns `STATION`, `DATE` and the mean temperature
//! `TEMP`), that is the hottest station-day of each month.
//!
//! It is also the worked example of the README's "Write your own processor", which quotes this file: a change
//! here that the README does not follow fails `cli/tests/readme.rs`.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::csv_rows::CsvObject;
use super::{ConfigError, Item, ItemError, MergeError, Processed, Processor, echo};

/// `{"kind": "monthly_high", "date_column": "DATE", "value_column": "TEMP", "missing": "9999.9",
/// "station_column": "STATION"}`. Every field is optional: these are the defaults, GSOD's names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonthlyHighProcessor {
    /// The row's date, `YYYY-MM-DD` (see [`month_of`]): the row competes in its month, `YYYY-MM`.
    pub date_column: String,
    /// The value compared: an exact decimal.
    pub value_column: String,
    /// A value cell that is this, once trimmed, has no value: its row does not compete. `""`: empty cells.
    pub missing: String,
    /// Equal values go to the smallest station, then to the earliest date.
    pub station_column: String,
}

impl Default for MonthlyHighProcessor {
    fn default() -> Self {
        Self {
            date_column: "DATE".into(),
            value_column: "TEMP".into(),
            missing: "9999.9".into(),
            station_column: "STATION".into(),
        }
    }
}

impl Processor for MonthlyHighProcessor {
    type Aggregate = MonthlyHighAggregate;

    fn validate(&self) -> Result<(), ConfigError> {
        let columns = [
            ("date_column", &self.date_column),
            ("value_column", &self.value_column),
            ("station_column", &self.station_column),
        ];
        for (field, name) in columns {
            if name.is_empty() {
                return Err(ConfigError::new(field, "must name a header column"));
            }
        }
        if self.missing.trim() != self.missing {
            let message = "must not start or end with a space: cells are compared trimmed";
            return Err(ConfigError::new("missing", message));
        }
        Ok(())
    }

    fn process(&self, item: Item<'_>) -> Result<Processed<Self::Aggregate>, ItemError> {
        let Item::Object { key, body, .. } = item else {
            return Err(item.not_taken("monthly_high"));
        };
        let mut csv = CsvObject::open(key, body)?;
        let header = csv.header().to_vec();
        // The winning row is a JSON object keyed by the header: a repeated name would lose a cell.
        let repeated = (1..header.len()).find(|&i| header[..i].contains(&header[i]));
        if let Some(i) = repeated {
            let message = format!("column {} (\"{}\") repeats a name", i + 1, echo(&header[i]));
            return Err(csv.invalid(format!("row 1: {message}")));
        }
        let date_at = csv.column(&self.date_column, "processor.date_column")?;
        let value_at = csv.column(&self.value_column, "processor.value_column")?;
        let station_at = csv.column(&self.station_column, "processor.station_column")?;

        let mut result = MonthlyHighAggregate::default();
        let mut record = csv::StringRecord::new();
        while csv.read_row(&mut record)? {
            let date = record[date_at].trim();
            let month = month_of(date).ok_or_else(|| {
                let message = format!("\"{}\" is not a date (YYYY-MM-DD)", echo(date));
                csv.invalid_cell(&self.date_column, message)
            })?;
            let cell = record[value_at].trim();
            if cell == self.missing {
                continue;
            }
            let value = csv.number(&self.value_column, cell)?;
            let station = record[station_at].trim();
            // Most rows lose to their month's winner so far: skip those before building their row.
            let score = score(value, station, date);
            let best = result.months.get(month);
            if best.is_none_or(|best| score >= best.score()) {
                let row = header.iter().cloned().zip(record.iter().map(str::to_owned));
                let winner = Winner {
                    value,
                    station: station.to_owned(),
                    date: date.to_owned(),
                    row: row.collect(),
                };
                result.offer(month, winner);
            }
        }
        Ok(result.into())
    }

    fn merge(into: &mut Self::Aggregate, other: Self::Aggregate) -> Result<(), MergeError> {
        for (month, winner) in other.months {
            into.offer(&month, winner);
        }
        Ok(())
    }

    fn result_json(aggregate: &Self::Aggregate) -> serde_json::Value {
        let months = aggregate.months.iter();
        let rows = months.map(|(month, winner)| (month.clone(), json!(winner.row)));
        serde_json::Value::Object(rows.collect())
    }
}

/// Per month (`YYYY-MM`), the winning row so far. A month with no value has no entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyHighAggregate {
    pub months: BTreeMap<String, Winner>,
}

impl MonthlyHighAggregate {
    /// Makes `candidate` the month's winner if it ranks above the one so far.
    fn offer(&mut self, month: &str, candidate: Winner) {
        match self.months.get_mut(month) {
            Some(best) if best.rank() >= candidate.rank() => {}
            Some(best) => *best = candidate,
            None => {
                self.months.insert(month.to_owned(), candidate);
            }
        }
    }
}

/// A month's winning row: every column, as read, and what ranks it, kept beside the row because merging has
/// no config to find them in it. In batch parts the value is a decimal string, so it round-trips exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Winner {
    pub value: Decimal,
    pub station: String,
    pub date: String,
    pub row: BTreeMap<String, String>,
}

impl Winner {
    /// The greatest wins: the highest value, then the smallest station, then the earliest date, then (for rows
    /// equal in all three: the same row in two files) the smallest row. A total order, so the winner does not
    /// depend on which rows meet first: batch sizes and merge order cannot change the result.
    fn rank(&self) -> (Score<'_>, Reverse<&BTreeMap<String, String>>) {
        (self.score(), Reverse(&self.row))
    }

    fn score(&self) -> Score<'_> {
        score(self.value, &self.station, &self.date)
    }
}

/// The first three keys of [`Winner::rank`], greater is better. Dates compare as text: their order as
/// `YYYY-MM-DD`.
type Score<'a> = (Decimal, Reverse<&'a str>, Reverse<&'a str>);

fn score<'a>(value: Decimal, station: &'a str, date: &'a str) -> Score<'a> {
    (value, Reverse(station), Reverse(date))
}

/// The month of a date: its first seven characters when they are `YYYY-MM` (a month from 01 to 12) and end
/// the date or are followed by `-`. `2024-07-15` and `2024-07` are in `2024-07`; `2024-7-15`, `15/07/2024`
/// and `2024-13-01` are not dates. The day is not checked: only the month counts.
fn month_of(date: &str) -> Option<&str> {
    let b = date.as_bytes();
    let year = b.get(..4).is_some_and(|y| y.iter().all(u8::is_ascii_digit));
    let month = matches!(
        b.get(4..7),
        Some([b'-', b'0', b'1'..=b'9'] | [b'-', b'1', b'0'..=b'2'])
    );
    let end = matches!(b.get(7), None | Some(b'-'));
    (year && month && end).then(|| &date[..7])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::ProcessorSpec;

    fn run(data: &str) -> Result<MonthlyHighAggregate, String> {
        let item = Item::Object {
            key: "2024/X.csv",
            size: None,
            body: &mut data.as_bytes(),
        };
        MonthlyHighProcessor::default()
            .process(item)
            .map(|processed| processed.result)
            .map_err(|e| e.to_string())
    }

    fn winners(agg: &MonthlyHighAggregate) -> Vec<(&str, &str, &str)> {
        agg.months
            .iter()
            .map(|(m, w)| {
                (
                    m.as_str(),
                    w.row["STATION"].as_str(),
                    w.row["DATE"].as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn the_config_has_gsod_defaults_and_refuses_unknown_fields() {
        let spec: ProcessorSpec = serde_json::from_str(r#"{"kind":"monthly_high"}"#).unwrap();
        assert_eq!(
            spec,
            ProcessorSpec::MonthlyHigh(MonthlyHighProcessor::default())
        );
        let custom: ProcessorSpec =
            serde_json::from_str(r#"{"kind":"monthly_high","value_column":"MAX"}"#).unwrap();
        let ProcessorSpec::MonthlyHigh(custom) = custom else {
            panic!("{custom:?}")
        };
        assert_eq!(
            (custom.value_column.as_str(), custom.missing.as_str()),
            ("MAX", "9999.9")
        );
        let err = serde_json::from_str::<ProcessorSpec>(r#"{"kind":"monthly_high","colum":"X"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colum`"), "{err}");
    }

    #[test]
    fn validate_refuses_empty_names_and_a_padded_marker() {
        let with = |f: fn(&mut MonthlyHighProcessor)| {
            let mut p = MonthlyHighProcessor::default();
            f(&mut p);
            p.validate().map_err(|e| e.field)
        };
        assert_eq!(with(|_| {}), Ok(()));
        assert_eq!(with(|p| p.missing.clear()), Ok(()));
        assert_eq!(with(|p| p.date_column.clear()), Err("date_column".into()));
        assert_eq!(with(|p| p.value_column.clear()), Err("value_column".into()));
        assert_eq!(
            with(|p| p.station_column.clear()),
            Err("station_column".into())
        );
        assert_eq!(
            with(|p| p.missing = " 9999.9".into()),
            Err("missing".into())
        );
    }

    #[test]
    fn months_are_the_first_seven_characters_of_an_iso_date() {
        let dates = [
            ("2024-07-15", "2024-07"),
            ("2024-07", "2024-07"),
            ("1999-12-31T23:59", "1999-12"),
        ];
        for (date, month) in dates {
            assert_eq!(month_of(date), Some(month), "{date}");
        }
        let not_dates = [
            "2024-7-15",
            "15/07/2024",
            "2024-13-01",
            "2024-00-01",
            "2024-07x",
            "202a-07-01",
            "",
        ];
        for not in not_dates {
            assert_eq!(month_of(not), None, "{not}");
        }
    }

    #[test]
    fn the_highest_value_wins_then_the_smallest_station_then_the_earliest_date() {
        let agg = run(concat!(
            "\"STATION\",\"DATE\",\"NAME\",\"TEMP\"\n",
            "\"B\",\"2024-01-09\",\"X, NO\",\"20.5\"\n",
            // An equal value and a smaller station: wins January, until an earlier date of it.
            "\"A\",\"2024-01-10\",\"X, NO\",\"20.50\"\n",
            "\"A\",\"2024-01-03\",\"X, NO\",\"20.5\"\n",
            "\"C\",\"2024-02-01\",\"X, NO\",\"9999.9\"\n", // missing: February has no value
            "\"C\",\"2024-03-01\",\"X, NO\",\"-3\"\n",
            "\"C\",\"2024-03-02\",\"X, NO\",\" 9999.9 \"\n",
        ))
        .unwrap();
        assert_eq!(
            winners(&agg),
            [
                ("2024-01", "A", "2024-01-03"),
                ("2024-03", "C", "2024-03-01")
            ]
        );
        assert_eq!(agg.months["2024-01"].row["NAME"], "X, NO", "cells as read");
        let json = MonthlyHighProcessor::result_json(&agg);
        assert_eq!(json["2024-03"]["TEMP"], "-3");
    }

    #[test]
    fn merging_in_any_order_gives_the_same_winner() {
        let a = run("STATION,DATE,TEMP,X\nS,2024-05-01,30,a\n").unwrap();
        // Equal to `a` but for X: the smaller row, `a`'s, wins.
        let b = run("STATION,DATE,TEMP,X\nS,2024-05-01,30,b\n").unwrap();
        let c = run("STATION,DATE,TEMP,X\nR,2024-05-02,29.9,c\n").unwrap();
        let merged = |parts: [&MonthlyHighAggregate; 3]| {
            let mut all = MonthlyHighAggregate::default();
            for part in parts {
                MonthlyHighProcessor::merge(&mut all, part.clone()).unwrap();
            }
            all
        };
        let one = merged([&a, &b, &c]);
        assert_eq!(one.months["2024-05"].row["X"], "a");
        assert_eq!(merged([&c, &b, &a]), one);
        assert_eq!(merged([&b, &c, &a]), one);
    }

    #[test]
    fn the_aggregate_round_trips_exactly() {
        let agg = run("STATION,DATE,TEMP\nS,2024-05-01,30.10\n").unwrap();
        let json = serde_json::to_string(&agg).unwrap();
        assert!(json.contains(r#""value":"30.10""#), "{json}");
        assert_eq!(
            serde_json::from_str::<MonthlyHighAggregate>(&json).unwrap(),
            agg
        );
    }

    #[test]
    fn a_malformed_object_names_key_row_and_column() {
        let cases = [
            (
                "STATION,TEMP\nS,1\n",
                r#"row 1: the header has no column "DATE" (processor.date_column)"#,
            ),
            (
                "STATION,DATE,TEMP,DATE\n",
                r#"row 1: column 4 ("DATE") repeats a name"#,
            ),
            (
                "STATION,DATE,TEMP\nS,2024-01-01,1\nS,2024/01/02,2\n",
                r#"row 3, column "DATE": "2024/01/02" is not a date (YYYY-MM-DD)"#,
            ),
            (
                "STATION,DATE,TEMP\nS,2024-01-01,M\n",
                r#"row 2, column "TEMP": "M" is not a number"#,
            ),
            (
                "STATION,DATE,TEMP\nS,2024-01-01,\n",
                r#"row 2, column "TEMP": "" is not a number"#,
            ),
            (
                "STATION,DATE,TEMP\nS,2024-01-01,1\nS,2024-01-02\n",
                "row 3: has 2 fields, the header has 3",
            ),
        ];
        for (data, expected) in cases {
            assert_eq!(
                run(data).unwrap_err(),
                format!("\"2024/X.csv\": {expected}")
            );
        }
    }
}
