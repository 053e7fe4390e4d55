//! The `csv_aggregate` processor: per group, the row count and count/sum/min/max of numeric columns.
//!
//! Over CSV objects, the first row of each object is its header. Over records (the rows of an `s3_object` CSV,
//! DynamoDB items, JSON objects), `group_by` and `columns` name the record's fields: each record is one row.
//! Numbers are parsed as exact decimals, so sums do not depend on the order in which items and batches are
//! merged.

use std::collections::BTreeMap;
use std::io::Read;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use serde_json::value::RawValue;

use super::csv_rows::{CsvObject, parse_number};
use std::borrow::Cow;

use super::{
    ConfigError, FoldError, Item, ItemError, ItemKind, MergeError, Processed, Processor, echo,
    shard_of,
};

/// `{"kind": "csv_aggregate", "group_by": "<header column>", "columns": ["<numeric header column>", ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvAggregateProcessor {
    pub group_by: String,
    pub columns: Vec<String>,
}

impl Processor for CsvAggregateProcessor {
    type Aggregate = CsvAggregate;

    fn validate(&self) -> Result<(), ConfigError> {
        if self.group_by.is_empty() {
            return Err(ConfigError::new("group_by", "must name a header column"));
        }
        for (i, column) in self.columns.iter().enumerate() {
            if column.is_empty() {
                return Err(ConfigError::new(
                    format!("columns[{i}]"),
                    "must name a header column",
                ));
            }
            if self.columns[..i].contains(column) {
                return Err(ConfigError::new(
                    format!("columns[{i}]"),
                    format!("column \"{column}\" is listed twice"),
                ));
            }
        }
        Ok(())
    }

    const TAKES: &'static [ItemKind] = &[ItemKind::Object, ItemKind::Record, ItemKind::Value];

    fn process(&self, item: Item<'_>) -> Result<Processed<CsvAggregate>, ItemError> {
        match item {
            Item::Object { key, body, .. } => {
                aggregate(key, body, &self.group_by, &self.columns).map(Processed::from)
            }
            Item::Value { id, json } => {
                aggregate_record(id, json, &self.group_by, &self.columns).map(Processed::from)
            }
        }
    }

    fn fold(
        &self,
        into: &mut CsvAggregate,
        item: Item<'_>,
    ) -> Result<Option<serde_json::Value>, FoldError> {
        match item {
            Item::Value { id, json } => {
                fold_record(into, id, json, &self.group_by, &self.columns).map(|()| None)
            }
            item => {
                let processed = self.process(item)?;
                into.merge(processed.result)?;
                Ok(None)
            }
        }
    }

    fn merge(into: &mut CsvAggregate, other: CsvAggregate) -> Result<(), MergeError> {
        into.merge(other)
    }

    fn result_json(aggregate: &CsvAggregate) -> serde_json::Value {
        aggregate.to_result_json()
    }

    fn result_bytes(aggregate: &CsvAggregate) -> Vec<u8> {
        super::pretty_json(&ResultView(aggregate))
    }

    fn groups(aggregate: &CsvAggregate) -> usize {
        aggregate.groups.len()
    }

    fn shard(aggregate: CsvAggregate, shards: usize) -> Vec<CsvAggregate> {
        let mut split = vec![CsvAggregate::default(); shards.max(1)];
        for (name, group) in aggregate.groups {
            split[shard_of(&name, shards)].groups.insert(name, group);
        }
        split
    }
}

/// Statistics of one column within one group. `count` counts the non-empty cells used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnStats {
    pub count: u64,
    pub sum: Decimal,
    pub min: Option<Decimal>,
    pub max: Option<Decimal>,
}

impl ColumnStats {
    fn add(&mut self, value: Decimal) -> Option<()> {
        self.count += 1;
        self.sum = self.sum.checked_add(value)?;
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        Some(())
    }

    fn merge(&mut self, other: &Self) -> Option<()> {
        self.count += other.count;
        self.sum = self.sum.checked_add(other.sum)?;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Some(())
    }
}

/// Statistics of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStats {
    pub rows: u64,
    pub columns: Columns,
}

/// A group's columns, by name, in name order: a sorted vector, serialized as a JSON object. A map of its own
/// in every group (a B-tree's node has room for 11 entries) took about 1 KB a group; a result of a million
/// groups is held in a fifth of that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns(Vec<(String, ColumnStats)>);

impl Columns {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&ColumnStats> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    /// The column's statistics, empty ones added if it has none.
    pub fn entry(&mut self, name: &str) -> &mut ColumnStats {
        let i = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (name.to_owned(), ColumnStats::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// The columns in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ColumnStats)> {
        self.0.iter().map(|(n, s)| (n, s))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Index<&str> for Columns {
    type Output = ColumnStats;

    fn index(&self, name: &str) -> &ColumnStats {
        self.get(name)
            .unwrap_or_else(|| panic!("no column \"{name}\""))
    }
}

impl FromIterator<(String, ColumnStats)> for Columns {
    /// The last of a name counts, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, ColumnStats)>>(iter: I) -> Self {
        let map: BTreeMap<String, ColumnStats> = iter.into_iter().collect();
        Self(map.into_iter().collect())
    }
}

impl IntoIterator for Columns {
    type Item = (String, ColumnStats);
    type IntoIter = std::vec::IntoIter<(String, ColumnStats)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Columns {
    type Item = (&'a String, &'a ColumnStats);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, ColumnStats)>,
        fn(&'a (String, ColumnStats)) -> (&'a String, &'a ColumnStats),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, s)| (n, s))
    }
}

impl Serialize for Columns {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, ColumnStats>::deserialize(deserializer)
            .map(|map| Self(map.into_iter().collect()))
    }
}

impl GroupStats {
    /// A group with no row yet and every column present (so that a column with no value still shows).
    fn with_columns(columns: &[String]) -> Self {
        Self {
            rows: 0,
            columns: columns
                .iter()
                .map(|c| (c.clone(), ColumnStats::default()))
                .collect(),
        }
    }
}

/// `{"groups": {"<value>": {"rows": N, "columns": {"<col>": {"count", "sum", "min", "max"}}}}}`.
/// Serialized with exact decimal strings in batch parts; [`CsvAggregate::to_result_json`] gives numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvAggregate {
    pub groups: BTreeMap<String, GroupStats>,
}

impl CsvAggregate {
    /// Folds `other` in. All or nothing: an overflow leaves `self` as it was, so the caller can fail just
    /// the item (or part) that overflowed.
    pub fn merge(&mut self, other: CsvAggregate) -> Result<(), MergeError> {
        for (name, group) in &other.groups {
            let mine = self.groups.get(name);
            for (column, stats) in &group.columns {
                let sum = mine
                    .and_then(|g| g.columns.get(column))
                    .map_or(Some(stats.sum), |m| m.sum.checked_add(stats.sum));
                if sum.is_none() {
                    return Err(MergeError::Overflow {
                        group: name.clone(),
                        column: column.clone(),
                    });
                }
            }
        }
        for (name, group) in other.groups {
            let mine = self.groups.entry(name.clone()).or_default();
            mine.rows += group.rows;
            for (column, stats) in group.columns {
                mine.columns
                    .entry(&column)
                    .merge(&stats)
                    .ok_or_else(|| MergeError::Overflow {
                        group: name.clone(),
                        column,
                    })?;
            }
        }
        Ok(())
    }

    pub fn to_result_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let groups: Map<String, Value> = self
            .groups
            .iter()
            .map(|(name, group)| {
                let columns: Map<String, Value> = group
                    .columns
                    .iter()
                    .map(|(column, s)| {
                        let stats = json!({
                            "count": s.count,
                            "sum": number(s.sum),
                            "min": s.min.map_or(Value::Null, number),
                            "max": s.max.map_or(Value::Null, number),
                        });
                        (column.clone(), stats)
                    })
                    .collect();
                let group = json!({ "rows": group.rows, "columns": columns });
                (name.clone(), group)
            })
            .collect();
        json!({ "groups": groups })
    }
}

/// [`CsvAggregate::to_result_json`] as it serializes, written straight from the groups: the keys of each
/// object in the order a JSON map sorts them, so the bytes are the same.
struct ResultView<'a>(&'a CsvAggregate);

impl Serialize for ResultView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Groups<'a>(&'a BTreeMap<String, GroupStats>);
        struct Group<'a>(&'a GroupStats);
        struct Columns<'a>(&'a super::csv_aggregate::Columns);
        struct Stats<'a>(&'a ColumnStats);
        impl Serialize for Columns<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(name, stats)| (name, Stats(stats))))
            }
        }
        impl Serialize for Groups<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(name, group)| (name, Group(group))))
            }
        }
        impl Serialize for Group<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("columns", &Columns(&self.0.columns))?;
                map.serialize_entry("rows", &self.0.rows)?;
                map.end()
            }
        }
        impl Serialize for Stats<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let stats = self.0;
                let or_null = |d: Option<Decimal>| d.map_or(serde_json::Value::Null, number);
                let mut map = s.serialize_map(Some(4))?;
                map.serialize_entry("count", &stats.count)?;
                map.serialize_entry("max", &or_null(stats.max))?;
                map.serialize_entry("min", &or_null(stats.min))?;
                map.serialize_entry("sum", &number(stats.sum))?;
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("groups", &Groups(&self.0.groups))?;
        map.end()
    }
}

/// An exact decimal as a JSON number: an integer when it is one, otherwise the nearest double (parsed from
/// the decimal's digits: `Decimal::to_f64` is not correctly rounded and would print `3052.4000000000003`).
fn number(d: Decimal) -> serde_json::Value {
    if d.fract().is_zero()
        && let Some(i) = d.to_i64()
    {
        return i.into();
    }
    d.normalize()
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn aggregate(
    key: &str,
    body: &mut dyn Read,
    group_by: &str,
    columns: &[String],
) -> Result<CsvAggregate, ItemError> {
    let mut csv = CsvObject::open(key, body)?;
    let group_index = csv.column(group_by, "processor.group_by")?;
    let column_indexes = columns
        .iter()
        .map(|c| csv.column(c, "processor.columns"))
        .collect::<Result<Vec<_>, _>>()?;

    let mut result = CsvAggregate::default();
    let mut record = csv::StringRecord::new();
    while csv.read_row(&mut record)? {
        let cells = column_indexes.iter().map(|&index| record[index].trim());
        add_row(
            &mut result,
            &record[group_index],
            columns,
            cells,
            |column, message| csv.invalid_cell(column, message),
        )?;
    }
    Ok(result)
}

/// Adds one row: its group, and its cells in `columns`' order (an empty cell is skipped). `invalid` makes the
/// error for a cell, naming where it is.
fn add_row<'c>(
    result: &mut CsvAggregate,
    group: &str,
    columns: &[String],
    cells: impl Iterator<Item = &'c str>,
    invalid: impl Fn(&str, String) -> ItemError,
) -> Result<(), ItemError> {
    let group = result
        .groups
        .entry(group.to_owned())
        .or_insert_with(|| GroupStats::with_columns(columns));
    group.rows += 1;
    for (column, cell) in columns.iter().zip(cells) {
        if cell.is_empty() {
            continue;
        }
        let value = parse_number(cell)
            .ok_or_else(|| invalid(column, format!("\"{}\" is not a number", echo(cell))))?;
        let stats = group.columns.entry(column);
        stats
            .add(value)
            .ok_or_else(|| invalid(column, "the sum overflows".to_owned()))?;
    }
    Ok(())
}

/// One record as one row: its fields are strings or numbers (a number is used as written, so it stays exact);
/// a null or missing column is an empty cell; the `group_by` field must be there.
fn aggregate_record(
    id: &str,
    json: &RawValue,
    group_by: &str,
    columns: &[String],
) -> Result<CsvAggregate, ItemError> {
    let (group, cells) = record_cells(id, json, group_by, columns)?;
    let mut result = CsvAggregate::default();
    let cells = cells.iter().map(|c| c.as_deref().unwrap_or("").trim());
    add_row(&mut result, &group, columns, cells, |column, message| {
        ItemError::Invalid(format!("\"{id}\": field \"{column}\": {message}"))
    })?;
    Ok(result)
}

/// A record's group and its cells in `columns`' order, each borrowed from the JSON text where it can be: the
/// fields are scanned once, the others skipped unread.
#[allow(clippy::type_complexity)]
fn record_cells<'j>(
    id: &str,
    json: &'j RawValue,
    group_by: &str,
    columns: &[String],
) -> Result<(Cow<'j, str>, Vec<Option<Cow<'j, str>>>), ItemError> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    let invalid = |message: String| ItemError::Invalid(format!("\"{id}\": {message}"));

    /// Finds the wanted fields' raw values.
    struct Fields<'w> {
        wanted: &'w [&'w str],
    }
    impl<'de> Visitor<'de> for Fields<'_> {
        type Value = Vec<Option<&'de RawValue>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = vec![None; self.wanted.len()];
            while let Some(key) = map.next_key::<Key<'de>>()? {
                match self.wanted.iter().position(|w| *w == key.0.as_ref()) {
                    Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                    None => drop(map.next_value::<IgnoredAny>()?),
                }
            }
            Ok(found)
        }
    }
    /// A key, borrowed when it has no escapes.
    struct Key<'de>(Cow<'de, str>);
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }
    impl<'de> DeserializeSeed<'de> for Fields<'_> {
        type Value = Vec<Option<&'de RawValue>>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    let mut wanted: Vec<&str> = Vec::with_capacity(columns.len() + 1);
    wanted.push(group_by);
    wanted.extend(columns.iter().map(String::as_str));
    let mut de = serde_json::Deserializer::from_str(json.get());
    let found = Fields { wanted: &wanted }
        .deserialize(&mut de)
        .map_err(|_| invalid("not a record of named fields (a JSON object)".to_owned()))?;
    let cell = |i: usize| -> Result<Option<Cow<'j, str>>, ItemError> {
        let Some(raw) = found[i] else {
            return Ok(None);
        };
        let text = raw.get();
        match text.as_bytes().first() {
            // A string without escapes is its text between the quotes.
            Some(b'"') if !text.contains('\\') => Ok(Some(Cow::Borrowed(&text[1..text.len() - 1]))),
            Some(b'"') => serde_json::from_str::<String>(text)
                .map(|s| Some(Cow::Owned(s)))
                .map_err(|e| invalid(format!("field \"{}\": {e}", wanted[i]))),
            Some(b'n') => Ok(None),
            Some(b'-' | b'0'..=b'9') => Ok(Some(Cow::Borrowed(text))),
            _ => Err(invalid(format!(
                "field \"{}\" is not a string or a number",
                wanted[i]
            ))),
        }
    };
    let group = cell(0)?.ok_or_else(|| {
        invalid(format!(
            "no field \"{}\" (processor.group_by)",
            echo(group_by)
        ))
    })?;
    let cells = (1..wanted.len()).map(cell).collect::<Result<Vec<_>, _>>()?;
    Ok((group, cells))
}

/// Adds one record to `into` directly: the cells parsed and the sums checked first, so that an unusable cell or
/// an overflow leaves `into` as it was.
fn fold_record(
    into: &mut CsvAggregate,
    id: &str,
    json: &RawValue,
    group_by: &str,
    columns: &[String],
) -> Result<(), FoldError> {
    let (group, cells) = record_cells(id, json, group_by, columns)?;
    let mut values = Vec::with_capacity(columns.len());
    for (column, cell) in columns.iter().zip(&cells) {
        let cell = cell.as_deref().unwrap_or("").trim();
        if cell.is_empty() {
            values.push(None);
            continue;
        }
        let value = parse_number(cell).ok_or_else(|| {
            ItemError::Invalid(format!(
                "\"{id}\": field \"{column}\": \"{}\" is not a number",
                echo(cell)
            ))
        })?;
        values.push(Some(value));
    }
    let existing = into.groups.get(group.as_ref());
    for (column, value) in columns.iter().zip(&values) {
        let sum = existing
            .and_then(|g| g.columns.get(column))
            .map_or(Some(Decimal::ZERO), |s| Some(s.sum));
        if let Some(value) = value
            && sum.and_then(|s| s.checked_add(*value)).is_none()
        {
            return Err(MergeError::Overflow {
                group: group.into_owned(),
                column: column.clone(),
            }
            .into());
        }
    }
    let stats = match into.groups.get_mut(group.as_ref()) {
        Some(stats) => stats,
        None => into
            .groups
            .entry(group.into_owned())
            .or_insert_with(|| GroupStats::with_columns(columns)),
    };
    stats.rows += 1;
    for (column, value) in columns.iter().zip(values) {
        if let Some(value) = value {
            let column = stats.columns.entry(column);
            column.add(value).expect("the sum was checked");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn run(data: &str) -> Result<CsvAggregate, ItemError> {
        aggregate(
            "w/s1.csv",
            &mut data.as_bytes(),
            "STATION",
            &["TMAX".to_owned(), "TMIN".to_owned()],
        )
    }

    fn error_of(data: &str) -> String {
        run(data).unwrap_err().to_string()
    }

    #[test]
    fn aggregates_rows_and_skips_empty_cells() {
        let agg = run("STATION,DATE,TMAX,TMIN\nA,1,10.5,2\nA,2,,3\nB,1,-4,\n").expect("valid");
        let a = &agg.groups["A"];
        assert_eq!(a.rows, 2);
        assert_eq!(a.columns["TMAX"].count, 1);
        assert_eq!(a.columns["TMAX"].sum, Decimal::from_str("10.5").unwrap());
        assert_eq!(a.columns["TMIN"].count, 2);
        let b = &agg.groups["B"];
        assert_eq!(b.columns["TMIN"].count, 0);
        assert_eq!(b.columns["TMIN"].min, None);
        let json = agg.to_result_json();
        assert_eq!(json["groups"]["A"]["columns"]["TMAX"]["max"], 10.5);
        assert_eq!(json["groups"]["A"]["columns"]["TMIN"]["sum"], 5);
        assert!(json["groups"]["B"]["columns"]["TMIN"]["min"].is_null());
    }

    #[test]
    fn a_header_without_the_group_column_names_the_key_and_column() {
        let msg = error_of("ID,TMAX,TMIN\n1,2,3\n");
        assert!(msg.contains("w/s1.csv") && msg.contains("STATION"), "{msg}");
    }

    #[test]
    fn a_non_numeric_cell_names_key_row_and_column() {
        let msg = error_of("STATION,TMAX,TMIN\nA,1,2\nA,hot,3\n");
        assert!(
            msg.contains("w/s1.csv")
                && msg.contains("row 3")
                && msg.contains("TMAX")
                && msg.contains("hot"),
            "{msg}"
        );
    }

    #[test]
    fn a_huge_non_numeric_cell_is_echoed_truncated() {
        let cell = "é".repeat(5 * 1024); // 10 KB, two bytes a character
        let msg = error_of(&format!("STATION,TMAX,TMIN\nA,1,2\nA,{cell},3\n"));
        assert!(
            msg.contains("w/s1.csv") && msg.contains("row 3") && msg.contains("TMAX"),
            "{msg}"
        );
        let start: String = msg.chars().take(120).collect();
        assert!(msg.len() < 200, "{} bytes: {start}...", msg.len());
        assert!(msg.contains("ééé"), "the cell's start is shown: {msg}");
        assert!(
            msg.contains("(+10176 bytes)"),
            "and how much was cut: {msg}"
        );
    }

    #[test]
    fn ragged_rows_invalid_utf8_and_empty_objects_fail() {
        assert!(error_of("STATION,TMAX,TMIN\nA,1\n").contains("row 2"));
        let bad = aggregate(
            "k",
            &mut &b"STATION,TMAX,TMIN\nA,\xff,1\n"[..],
            "STATION",
            &["TMAX".to_owned()],
        );
        assert!(bad.unwrap_err().to_string().contains("UTF-8"));
        assert!(error_of("").contains("no header"));
    }

    #[test]
    fn result_numbers_print_as_their_decimals() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(number(d("3052.4")).to_string(), "3052.4");
        assert_eq!(number(d("0.30")).to_string(), "0.3");
        assert_eq!(number(d("-12.0")).to_string(), "-12");
        let sum = (0..1000).fold(Decimal::ZERO, |acc, _| acc + d("0.1"));
        assert_eq!(number(sum).to_string(), "100", "exact: no 99.9999999");
    }

    fn record(json: &str) -> Result<CsvAggregate, ItemError> {
        let raw = RawValue::from_string(json.to_owned()).unwrap();
        aggregate_record(
            "t#L3",
            &raw,
            "STATION",
            &["TMAX".to_owned(), "TMIN".to_owned()],
        )
    }

    #[test]
    fn a_record_is_one_row_of_its_fields_with_numbers_kept_exact() {
        let mut whole = record(r#"{"STATION":"A","TMAX":"1.1","TMIN":null}"#).unwrap();
        whole
            .merge(record(r#"{"STATION":"A","TMAX":0.30000000000000000001,"X":[1]}"#).unwrap())
            .unwrap();
        let a = &whole.groups["A"];
        assert_eq!(a.rows, 2);
        assert_eq!(
            a.columns["TMAX"].sum,
            Decimal::from_str("1.40000000000000000001").unwrap()
        );
        assert_eq!(
            a.columns["TMIN"].count, 0,
            "null and missing are empty cells"
        );
        assert_eq!(
            whole,
            run("STATION,TMAX,TMIN\nA,1.1,\nA,0.30000000000000000001,\n").unwrap()
        );
        let err = |json: &str| record(json).unwrap_err().to_string();
        assert!(err(r#"{"TMAX":1}"#).contains("no field \"STATION\""));
        assert!(
            err(r#"{"STATION":"A","TMAX":"hot"}"#)
                .contains("field \"TMAX\": \"hot\" is not a number")
        );
        assert!(err(r#"{"STATION":true}"#).contains("not a string or a number"));
        assert!(err("[1,2]").starts_with("\"t#L3\": not a record"));
    }

    #[test]
    fn merge_equals_one_pass() {
        let whole = run("STATION,TMAX,TMIN\nA,1.1,2\nB,3,4\nA,0.2,\n").unwrap();
        let mut parts = run("STATION,TMAX,TMIN\nA,0.2,\n").unwrap();
        parts
            .merge(run("STATION,TMAX,TMIN\nA,1.1,2\nB,3,4\n").unwrap())
            .unwrap();
        assert_eq!(parts, whole);
        assert_eq!(
            whole.groups["A"].columns["TMAX"].sum,
            Decimal::from_str("1.3").unwrap()
        );
    }

    #[test]
    fn result_bytes_are_the_json_trees_bytes_and_parts_round_trip() {
        let mut agg =
            run("STATION,DATE,TMAX,TMIN\nA,1,10.5,2\nA,2,,3\nB,1,-4,\nC é,1,3052.4,1e2\n")
                .expect("valid");
        agg.groups.insert("empty".into(), GroupStats::default());
        let mut tree = serde_json::to_vec_pretty(&agg.to_result_json()).unwrap();
        tree.push(b'\n');
        assert_eq!(
            String::from_utf8(CsvAggregateProcessor::result_bytes(&agg)).unwrap(),
            String::from_utf8(tree).unwrap()
        );
        let part = serde_json::to_string(&agg).unwrap();
        assert!(part.contains(r#""columns":{"TMAX":"#), "{part}");
        assert_eq!(serde_json::from_str::<CsvAggregate>(&part).unwrap(), agg);
        let columns: Columns = [("b", 1), ("a", 2), ("b", 3)]
            .into_iter()
            .map(|(n, count)| {
                (
                    n.to_owned(),
                    ColumnStats {
                        count,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let names: Vec<(&str, u64)> = columns.iter().map(|(n, s)| (n.as_str(), s.count)).collect();
        assert_eq!(
            names,
            [("a", 2), ("b", 3)],
            "in name order, the last of a name"
        );
    }
}
