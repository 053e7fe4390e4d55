//! DynamoDB items as plain JSON, so that a processor reads a table's items the way it reads any JSON, and a
//! migration writes items back: [`to_json`] turns an item (`HashMap<String, AttributeValue>`) into JSON text,
//! [`from_json`] turns JSON text back into an item, and [`key_text`] names an item by its primary key in an
//! error report.
//!
//! | DynamoDB | JSON written by [`to_json`]               | read back by [`from_json`] as |
//! |----------|-------------------------------------------|-------------------------------|
//! | `S`      | string                                    | `S`                           |
//! | `N`      | number: DynamoDB's digits, verbatim       | `N`: the same digits          |
//! | `B`      | string: base64, standard alphabet, padded | `S` (the base64 text)         |
//! | `BOOL`   | `true` / `false`                          | `BOOL`                        |
//! | `NULL`   | `null`                                    | `NULL`                        |
//! | `L`      | array                                     | `L`                           |
//! | `M`      | object, keys sorted                       | `M`                           |
//! | `SS`     | array of strings                          | `L` of `S`                    |
//! | `NS`     | array of numbers                          | `L` of `N`                    |
//! | `BS`     | array of base64 strings                   | `L` of `S`                    |
//!
//! Numbers never pass through a float: DynamoDB's have up to 38 significant digits, more than an `f64` holds,
//! so an `N` is written as its own text (once checked to be a JSON number) and a JSON number is read back as
//! its text (`1E+2` stays `1E+2`, `-0.000001` stays `-0.000001`). Plain JSON has no sets and no binary, so a
//! round trip through it turns sets into lists and binary into base64 strings: a migration that must keep them
//! converts those attributes itself. Object keys are written in byte order, so one item is always the same
//! text. The item's attributes are written as a JSON object (no `{"S": ...}` wrappers: that is DynamoDB's own
//! JSON, which this is not).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::processor::echo;

/// The item as JSON text: an object of its attributes, compact, keys sorted. An `N` that is not a JSON number
/// (DynamoDB never returns one, but an item built by hand may hold one) is an error naming the attribute, as is
/// an attribute type newer than this SDK.
pub fn to_json(item: &HashMap<String, AttributeValue>) -> Result<String, String> {
    let mut out = String::new();
    write_map(&mut out, item).map_err(|e| e.to_string())?;
    Ok(out)
}

/// An item from JSON text, which must be an object: strings become `S`, numbers `N` (their exact text), `true`
/// and `false` `BOOL`, `null` `NULL`, arrays `L` and objects `M`. A key repeated in one object is an error (JSON
/// leaves its meaning open). The numbers' range and precision are DynamoDB's to check when the item is written.
pub fn from_json(text: &str) -> Result<HashMap<String, AttributeValue>, String> {
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match convert(raw)? {
        AttributeValue::M(item) => Ok(item),
        other => Err(format!(
            "an item is a JSON object, not {}",
            json_kind(&other)
        )),
    }
}

/// The item's primary key as compact JSON, attributes in `key_names`' order (`{"pk":"a","sk":3}`), to name the
/// item in an error report. A key attribute the item lacks is `null`; one that cannot be written as JSON is
/// written as a string of its debug form: this never fails.
pub fn key_text(item: &HashMap<String, AttributeValue>, key_names: &[String]) -> String {
    let mut out = String::from("{");
    for (i, name) in key_names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, name);
        out.push(':');
        match item.get(name) {
            None => out.push_str("null"),
            Some(value) => {
                let mut part = String::new();
                match write_value(&mut part, value) {
                    Ok(()) => out.push_str(&part),
                    Err(_) => write_string(&mut out, &format!("{value:?}")),
                }
            }
        }
    }
    out.push('}');
    out
}

/// A primary key (a Scan's `LastEvaluatedKey`) as DynamoDB's typed JSON (`{"pk":{"S":"a"},"sk":{"N":"3"}}`),
/// to be stored in a checkpoint and given back to [`key_from_typed`]: unlike plain JSON it keeps the key's
/// types, which an `ExclusiveStartKey` must match. Key attributes are strings, numbers or binary.
pub fn key_to_typed(key: &HashMap<String, AttributeValue>) -> Result<String, String> {
    let mut map = serde_json::Map::new();
    for (name, value) in key {
        let (tag, text) = match value {
            AttributeValue::S(s) => ("S", s.clone()),
            AttributeValue::N(n) => ("N", n.clone()),
            AttributeValue::B(b) => ("B", BASE64.encode(b.as_ref())),
            other => {
                return Err(format!(
                    "key attribute \"{}\" is {}, not a string, number or binary",
                    echo(name),
                    json_kind(other)
                ));
            }
        };
        map.insert(name.clone(), serde_json::json!({ tag: text }));
    }
    Ok(serde_json::Value::Object(map).to_string())
}

/// A primary key back from [`key_to_typed`]'s text.
pub fn key_from_typed(text: &str) -> Result<HashMap<String, AttributeValue>, String> {
    let bad = || format!("\"{}\" is not a typed DynamoDB key", echo(text));
    let map: HashMap<String, HashMap<String, String>> =
        serde_json::from_str(text).map_err(|_| bad())?;
    map.into_iter()
        .map(|(name, typed)| {
            let mut typed = typed.into_iter();
            let value = match (typed.next(), typed.next()) {
                (Some((tag, text)), None) => match tag.as_str() {
                    "S" => AttributeValue::S(text),
                    "N" => AttributeValue::N(text),
                    "B" => AttributeValue::B(BASE64.decode(text).map_err(|_| bad())?.into()),
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            };
            Ok((name, value))
        })
        .collect()
}

/// Why an attribute could not be written, and where it is (a document path: `a.b[2]`), built as the error
/// unwinds out of the nesting.
struct PathError {
    path: String,
    message: String,
}

impl PathError {
    fn within(mut self, segment: String) -> Self {
        self.path.insert_str(0, &segment);
        self
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attribute {}: {}",
            self.path.trim_start_matches('.'),
            self.message
        )
    }
}

fn write_map(out: &mut String, map: &HashMap<String, AttributeValue>) -> Result<(), PathError> {
    let mut names: Vec<&String> = map.keys().collect();
    names.sort_unstable();
    out.push('{');
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        write_value(out, &map[name]).map_err(|e| e.within(format!(".{name}")))?;
    }
    out.push('}');
    Ok(())
}

fn write_list<T>(
    out: &mut String,
    items: &[T],
    mut write: impl FnMut(&mut String, &T) -> Result<(), PathError>,
) -> Result<(), PathError> {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, item).map_err(|e| e.within(format!("[{i}]")))?;
    }
    out.push(']');
    Ok(())
}

fn write_value(out: &mut String, value: &AttributeValue) -> Result<(), PathError> {
    match value {
        AttributeValue::S(s) => write_string(out, s),
        AttributeValue::N(n) => write_number(out, n)?,
        AttributeValue::B(blob) => write_base64(out, blob.as_ref()),
        AttributeValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        AttributeValue::Null(_) => out.push_str("null"),
        AttributeValue::L(items) => write_list(out, items, write_value)?,
        AttributeValue::M(map) => write_map(out, map)?,
        AttributeValue::Ss(items) => write_list(out, items, |out, s| {
            write_string(out, s);
            Ok(())
        })?,
        AttributeValue::Ns(items) => write_list(out, items, |out, n| write_number(out, n))?,
        AttributeValue::Bs(items) => write_list(out, items, |out, blob| {
            write_base64(out, blob.as_ref());
            Ok(())
        })?,
        _ => {
            return Err(PathError {
                path: String::new(),
                message: "a DynamoDB type this version of the SDK does not know".to_owned(),
            });
        }
    }
    Ok(())
}

fn write_number(out: &mut String, n: &str) -> Result<(), PathError> {
    if !is_json_number(n) {
        return Err(PathError {
            path: String::new(),
            message: format!("N \"{}\" is not a JSON number", echo(n)),
        });
    }
    out.push_str(n);
    Ok(())
}

fn write_base64(out: &mut String, bytes: &[u8]) {
    out.push('"');
    BASE64.encode_string(bytes, out);
    out.push('"');
}

/// A JSON string, escaped as serde_json escapes: `"`, `\` and control characters; everything else as it is.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if c < ' ' => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == bytes.len()
}

/// One JSON value as an attribute. Arrays and objects are split into their elements' raw text and each is
/// converted in turn, so that a number's text is never parsed; each level re-scans what is below it, which
/// DynamoDB's 32 levels of nesting keep cheap.
fn convert(raw: &RawValue) -> Result<AttributeValue, String> {
    let text = raw.get();
    let json = |e: serde_json::Error| format!("not JSON: {e}");
    Ok(match text.as_bytes().first() {
        Some(b'{') => {
            let entries = serde_json::Deserializer::from_str(text)
                .deserialize_map(Entries)
                .map_err(json)?;
            let mut map = HashMap::with_capacity(entries.len());
            for (name, value) in entries {
                let value = convert(value).map_err(|e| format!("\"{}\": {e}", echo(&name)))?;
                if map.insert(name.clone(), value).is_some() {
                    return Err(format!(
                        "the key \"{}\" is repeated in an object",
                        echo(&name)
                    ));
                }
            }
            AttributeValue::M(map)
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(json)?;
            AttributeValue::L(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| convert(item).map_err(|e| format!("[{i}]: {e}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Some(b'"') => AttributeValue::S(serde_json::from_str(text).map_err(json)?),
        Some(b't') => AttributeValue::Bool(true),
        Some(b'f') => AttributeValue::Bool(false),
        Some(b'n') => AttributeValue::Null(true),
        // serde_json has checked the number's syntax in reading the raw value around it.
        _ => AttributeValue::N(text.to_owned()),
    })
}

/// The kind of JSON value an attribute came from, for an error.
fn json_kind(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::L(_) => "an array",
        AttributeValue::S(_) => "a string",
        AttributeValue::N(_) => "a number",
        AttributeValue::Bool(_) => "a boolean",
        _ => "null",
    }
}

/// An object's entries in their order, repeats kept, each value's raw text borrowed from the input.
struct Entries;

impl<'de> Visitor<'de> for Entries {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(entry) = map.next_entry::<String, &RawValue>()? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::Blob;

    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.to_owned())
    }

    fn item(attributes: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        attributes
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn writes_every_type() {
        let item = item(&[
            ("s", s("text")),
            ("n", n("42")),
            ("b", AttributeValue::B(Blob::new(vec![0u8, 255, 1]))),
            ("t", AttributeValue::Bool(true)),
            ("f", AttributeValue::Bool(false)),
            ("z", AttributeValue::Null(true)),
            (
                "l",
                AttributeValue::L(vec![s("a"), n("1"), AttributeValue::Null(true)]),
            ),
            ("m", AttributeValue::M(item(&[("k", s("v"))]))),
            ("ss", AttributeValue::Ss(vec!["x".into(), "y".into()])),
            ("ns", AttributeValue::Ns(vec!["1".into(), "2.5".into()])),
            (
                "bs",
                AttributeValue::Bs(vec![Blob::new(b"ab".to_vec()), Blob::new(Vec::new())]),
            ),
            ("empty", AttributeValue::L(Vec::new())),
        ]);
        assert_eq!(
            to_json(&item).unwrap(),
            r#"{"b":"AP8B","bs":["YWI=",""],"empty":[],"f":false,"l":["a",1,null],"m":{"k":"v"},"n":42,"ns":[1,2.5],"s":"text","ss":["x","y"],"t":true,"z":null}"#
        );
    }

    #[test]
    fn numbers_are_kept_digit_for_digit() {
        let numbers = [
            "12345678901234567890123456789012345678",
            "-0.00000000000000000000000000000000000001",
            "1E+2",
            "-0.000001",
            "9.9999999999999999999999999999999999999E+125",
            "0",
            "-0",
            "1e-130",
        ];
        for number in numbers {
            let text = to_json(&item(&[("n", n(number))])).unwrap();
            assert_eq!(text, format!("{{\"n\":{number}}}"));
            assert_eq!(
                from_json(&text).unwrap()["n"],
                n(number),
                "read back as written"
            );
        }
        let text = to_json(&item(&[(
            "ns",
            AttributeValue::Ns(numbers.map(String::from).to_vec()),
        )]))
        .unwrap();
        assert_eq!(text, format!("{{\"ns\":[{}]}}", numbers.join(",")));
    }

    #[test]
    fn a_number_that_is_not_json_is_an_error_naming_the_attribute() {
        for bad in [
            "", "abc", "NaN", "Infinity", "+1", ".5", "5.", "01", "1e", "1E+", "0x10", " 1", "1 ",
            "--1",
        ] {
            let item = item(&[(
                "m",
                AttributeValue::M(item(&[("l", AttributeValue::L(vec![s("ok"), n(bad)]))])),
            )]);
            assert_eq!(
                to_json(&item).unwrap_err(),
                format!("attribute m.l[1]: N \"{bad}\" is not a JSON number")
            );
        }
        let item = item(&[("ns", AttributeValue::Ns(vec!["1".into(), "x".into()]))]);
        assert_eq!(
            to_json(&item).unwrap_err(),
            "attribute ns[1]: N \"x\" is not a JSON number"
        );
    }

    #[test]
    fn nested_maps_and_lists_are_written_with_sorted_keys_whatever_the_insertion_order() {
        let names = ["zeta", "alpha", "Mu", "ß", "a", "", "10", "9"];
        let expected = r#"{"":{"":[],"10":[{"":[],"10":0,"9":0,"Mu":0,"a":0,"alpha":0,"zeta":0,"ß":0}],"9":0,"Mu":0,"a":0,"alpha":0,"zeta":0,"ß":0}}"#;
        for rotation in 0..names.len() {
            let mut order = names.to_vec();
            order.rotate_left(rotation);
            let build = |inner: Option<AttributeValue>| {
                let mut map = HashMap::new();
                for name in &order {
                    map.insert(name.to_string(), n("0"));
                }
                map.insert(String::new(), AttributeValue::L(Vec::new()));
                if let Some(inner) = inner {
                    map.insert("10".to_owned(), AttributeValue::L(vec![inner]));
                }
                AttributeValue::M(map)
            };
            let nested = item(&[("", build(Some(build(None))))]);
            assert_eq!(to_json(&nested).unwrap(), expected);
        }
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let text = "quote\" backslash\\ slash/ tab\t nl\n cr\r bell\u{7} nul\0 del\u{7f} é 日本 🦀 \u{2028}";
        let json = to_json(&item(&[("s", s(text)), ("ke\"y\n", s(""))])).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["s"], text);
        assert_eq!(parsed["ke\"y\n"], "");
        assert_eq!(
            json,
            serde_json::to_string(&parsed).unwrap(),
            "serde_json's escapes"
        );
    }

    #[test]
    fn reads_every_json_type() {
        let item = from_json(
            r#" {"s": "a\"b\u00e9", "n": 1.50, "t": true, "f": false, "z": null,
                 "l": [1, "x", [], {}], "m": {"inner": {"deep": [null]}}} "#,
        )
        .unwrap();
        let expected = self::item(&[
            ("s", s("a\"bé")),
            ("n", n("1.50")),
            ("t", AttributeValue::Bool(true)),
            ("f", AttributeValue::Bool(false)),
            ("z", AttributeValue::Null(true)),
            (
                "l",
                AttributeValue::L(vec![
                    n("1"),
                    s("x"),
                    AttributeValue::L(Vec::new()),
                    AttributeValue::M(HashMap::new()),
                ]),
            ),
            (
                "m",
                AttributeValue::M(self::item(&[(
                    "inner",
                    AttributeValue::M(self::item(&[(
                        "deep",
                        AttributeValue::L(vec![AttributeValue::Null(true)]),
                    )])),
                )])),
            ),
        ]);
        assert_eq!(item, expected);
    }

    #[test]
    fn reading_refuses_what_is_not_an_item() {
        assert_eq!(
            from_json("[1]").unwrap_err(),
            "an item is a JSON object, not an array"
        );
        assert_eq!(
            from_json("\"s\"").unwrap_err(),
            "an item is a JSON object, not a string"
        );
        assert_eq!(
            from_json("1E400").unwrap_err(),
            "an item is a JSON object, not a number"
        );
        assert!(
            from_json("{\"a\": 01}")
                .unwrap_err()
                .starts_with("not JSON")
        );
        assert!(
            from_json("{\"a\": 1,}")
                .unwrap_err()
                .starts_with("not JSON")
        );
        assert!(from_json("{} {}").unwrap_err().starts_with("not JSON"));
        assert_eq!(
            from_json(r#"{"a": {"b": 1, "b": 2}}"#).unwrap_err(),
            "\"a\": the key \"b\" is repeated in an object"
        );
    }

    #[test]
    fn a_round_trip_keeps_plain_json_exactly_and_turns_sets_and_binary_into_lists_and_strings() {
        let text = r#"{"a":[1E+2,-0.000001,12345678901234567890123456789012345678,0.1],"b":{"c":"d","e":[true,false,null]},"s":"\"\\\n"}"#;
        assert_eq!(to_json(&from_json(text).unwrap()).unwrap(), text);
        let original = item(&[
            ("ss", AttributeValue::Ss(vec!["x".into()])),
            ("ns", AttributeValue::Ns(vec!["1.0".into()])),
            ("b", AttributeValue::B(Blob::new(b"hi".to_vec()))),
        ]);
        let back = from_json(&to_json(&original).unwrap()).unwrap();
        assert_eq!(
            back,
            item(&[
                ("ss", AttributeValue::L(vec![s("x")])),
                ("ns", AttributeValue::L(vec![n("1.0")])),
                ("b", s("aGk=")),
            ])
        );
    }

    #[test]
    fn typed_keys_round_trip() {
        let key = item(&[
            ("pk", s("a\"b")),
            ("sk", n("-1.50")),
            ("bin", AttributeValue::B(Blob::new(vec![0u8, 255]))),
        ]);
        let text = key_to_typed(&key).unwrap();
        assert_eq!(
            text,
            r#"{"bin":{"B":"AP8="},"pk":{"S":"a\"b"},"sk":{"N":"-1.50"}}"#
        );
        assert_eq!(key_from_typed(&text).unwrap(), key);
        assert!(key_to_typed(&item(&[("pk", AttributeValue::Bool(true))])).is_err());
        for bad in [
            "",
            "[]",
            r#"{"pk":"a"}"#,
            r#"{"pk":{"X":"a"}}"#,
            r#"{"pk":{"S":"a","N":"1"}}"#,
        ] {
            assert!(key_from_typed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_text_names_an_item_by_its_key() {
        let item = item(&[
            ("pk", s("a")),
            ("sk", n("3")),
            ("data", s("not part of the key")),
            ("bin", AttributeValue::B(Blob::new(vec![1u8]))),
            ("bad", n("x")),
        ]);
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            key_text(&item, &names(&["pk", "sk"])),
            r#"{"pk":"a","sk":3}"#
        );
        assert_eq!(
            key_text(&item, &names(&["sk", "pk"])),
            r#"{"sk":3,"pk":"a"}"#
        );
        assert_eq!(key_text(&item, &names(&["bin"])), r#"{"bin":"AQ=="}"#);
        assert_eq!(
            key_text(&item, &names(&["pk", "gone"])),
            r#"{"pk":"a","gone":null}"#
        );
        assert_eq!(key_text(&item, &names(&["bad"])), r#"{"bad":"N(\"x\")"}"#);
        assert_eq!(key_text(&item, &[]), "{}");
    }
}
