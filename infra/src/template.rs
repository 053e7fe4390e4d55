//! The SAM template, read as CloudFormation reads it: YAML short-form intrinsics (`!Ref`, `!Sub`, `!GetAtt`...)
//! become their long forms, and [`Context::eval`] resolves them for one stack (its name, account, region,
//! parameter values and conditions, and the values of the resources it knows).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The template that ships with dmap (the repository's `template.yaml`).
pub const BUNDLED: &str = include_str!("../../template.yaml");

/// The template could not be read, or a value in it could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{0}")]
    Invalid(String),
    /// A reference to a resource whose value is not known (yet).
    #[error("{0} is not known here")]
    Unresolved(String),
}

fn invalid(message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(message.into())
}

/// A parsed template, with intrinsics in their long form (`{"Ref": ...}`, `{"Fn::Sub": ...}`).
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

impl Template {
    pub fn parse(yaml: &str) -> Result<Self, TemplateError> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml)?;
        let root = long_form(value)?;
        if !root.get("Resources").is_some_and(Value::is_object) {
            return Err(invalid("the template has no Resources"));
        }
        Ok(Self { root })
    }

    /// The bundled `template.yaml`.
    pub fn bundled() -> Self {
        Self::parse(BUNDLED).expect("the bundled template.yaml parses")
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Every resource as (logical id, definition), in the template's order.
    pub fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root["Resources"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(id, r)| (id.as_str(), r))
    }

    /// The resources of one type.
    pub fn resources_of_type<'a>(
        &'a self,
        resource_type: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.resources()
            .filter(move |(_, r)| r["Type"].as_str() == Some(resource_type))
    }

    pub fn resource(&self, id: &str) -> Option<&Value> {
        self.root["Resources"].get(id)
    }

    /// `Globals.Function`: properties every function inherits.
    pub fn function_globals(&self) -> &Value {
        &self.root["Globals"]["Function"]
    }

    /// The parameters' definitions.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root["Parameters"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, p)| (name.as_str(), p))
    }
}

/// YAML to JSON, short-form intrinsic tags to their long form.
fn long_form(value: serde_yaml_ng::Value) -> Result<Value, TemplateError> {
    use serde_yaml_ng::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| invalid(e.to_string()))?,
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(long_form).collect::<Result<_, _>>()?)
        }
        Y::Mapping(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                let key = match key {
                    Y::String(s) => s,
                    other => serde_yaml_ng::to_string(&other)?.trim().to_owned(),
                };
                object.insert(key, long_form(value)?);
            }
            Value::Object(object)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = long_form(tagged.value)?;
            let (key, inner) = match name {
                "Ref" | "Condition" => (name.to_owned(), inner),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (id, attribute) = s.split_once('.').ok_or_else(|| {
                            invalid(format!("!GetAtt {s}: expected Resource.Attribute"))
                        })?;
                        ("Fn::GetAtt".to_owned(), serde_json::json!([id, attribute]))
                    }
                    other => ("Fn::GetAtt".to_owned(), other),
                },
                other => (format!("Fn::{other}"), inner),
            };
            Value::Object(Map::from_iter([(key, inner)]))
        }
    })
}

/// One stack's values: what `Ref`, `Fn::GetAtt`, `Fn::Sub` and conditions resolve to.
#[derive(Debug, Clone)]
pub struct Context {
    pub stack_name: String,
    pub account_id: String,
    pub region: String,
    /// Parameter values: a string, or an array of strings for a `CommaDelimitedList`.
    pub parameters: BTreeMap<String, Value>,
    pub conditions: BTreeMap<String, bool>,
    /// What `Ref <logical id>` gives, for the resources known.
    pub refs: BTreeMap<String, Value>,
    /// What `Fn::GetAtt <logical id>.<attribute>` gives, keyed `"<logical id>.<attribute>"`.
    pub attributes: BTreeMap<String, Value>,
}

impl Context {
    /// The stack's context before any resource is known: parameters (defaults, then `overrides`, each checked
    /// against its definition) and conditions.
    pub fn new(
        template: &Template,
        stack_name: &str,
        account_id: &str,
        region: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, TemplateError> {
        let declared: Vec<&str> = template.parameters().map(|(name, _)| name).collect();
        if let Some(unknown) = overrides.keys().find(|k| !declared.contains(&k.as_str())) {
            return Err(invalid(format!(
                "parameter {unknown} is not declared (the template's are {})",
                declared.join(", ")
            )));
        }
        let mut parameters = BTreeMap::new();
        for (name, definition) in template.parameters() {
            let raw = match overrides.get(name) {
                Some(value) => value.clone(),
                None => scalar_string(&definition["Default"]).ok_or_else(|| {
                    invalid(format!("parameter {name} has no value and no default"))
                })?,
            };
            check_parameter(name, definition, &raw)?;
            let value = if definition["Type"].as_str() == Some("CommaDelimitedList") {
                Value::Array(
                    raw.split(',')
                        .map(|s| Value::String(s.trim().to_owned()))
                        .collect(),
                )
            } else {
                Value::String(raw)
            };
            parameters.insert(name.to_owned(), value);
        }
        let mut context = Self {
            stack_name: stack_name.to_owned(),
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            parameters,
            conditions: BTreeMap::new(),
            refs: BTreeMap::new(),
            attributes: BTreeMap::new(),
        };
        let conditions: Vec<(String, Value)> = template.root["Conditions"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, c)| (name.clone(), c.clone()))
            .collect();
        // Conditions may name conditions declared later: resolve until nothing changes.
        let mut pending = conditions;
        while !pending.is_empty() {
            let before = pending.len();
            let mut next = Vec::new();
            for (name, condition) in pending {
                match context.eval(&condition) {
                    Ok(Some(Value::Bool(b))) => {
                        context.conditions.insert(name, b);
                    }
                    Ok(other) => {
                        return Err(invalid(format!(
                            "condition {name} is not a boolean: {other:?}"
                        )));
                    }
                    Err(TemplateError::Unresolved(_)) => next.push((name, condition)),
                    Err(e) => return Err(invalid(format!("condition {name}: {e}"))),
                }
            }
            if next.len() == before {
                let names: Vec<&str> = next.iter().map(|(n, _)| n.as_str()).collect();
                return Err(invalid(format!(
                    "conditions {} cannot be resolved",
                    names.join(", ")
                )));
            }
            pending = next;
        }
        Ok(context)
    }

    pub fn partition(&self) -> &'static str {
        "aws"
    }

    /// A parameter's value as a string (a list's items joined with commas).
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.parameters.get(name).map(|v| match v {
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            other => other.as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Resolves every intrinsic in `value`. `None` is `AWS::NoValue` (the property is left out).
    pub fn eval(&self, value: &Value) -> Result<Option<Value>, TemplateError> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(v) = self.eval(item)? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(object) if object.len() == 1 => {
                let (key, argument) = object.iter().next().expect("one entry");
                if key == "Ref" || key == "Condition" || key.starts_with("Fn::") {
                    self.intrinsic(key, argument)
                } else {
                    self.eval_object(object)
                }
            }
            Value::Object(object) => self.eval_object(object),
            other => Ok(Some(other.clone())),
        }
    }

    /// Like [`Context::eval`], for a value that must be present.
    pub fn value(&self, value: &Value) -> Result<Value, TemplateError> {
        self.eval(value)?
            .ok_or_else(|| invalid("AWS::NoValue where a value is required"))
    }

    /// Like [`Context::eval`], for a value that must be a string (numbers and booleans are written out).
    pub fn string(&self, value: &Value) -> Result<String, TemplateError> {
        let resolved = self.value(value)?;
        scalar_string(&resolved)
            .ok_or_else(|| invalid(format!("expected a string, not {resolved}")))
    }

    fn eval_object(&self, object: &Map<String, Value>) -> Result<Option<Value>, TemplateError> {
        let mut out = Map::new();
        for (key, value) in object {
            if let Some(v) = self.eval(value)? {
                out.insert(key.clone(), v);
            }
        }
        Ok(Some(Value::Object(out)))
    }

    fn intrinsic(&self, key: &str, argument: &Value) -> Result<Option<Value>, TemplateError> {
        let args = |n: usize| -> Result<&Vec<Value>, TemplateError> {
            argument
                .as_array()
                .filter(|a| a.len() == n)
                .ok_or_else(|| invalid(format!("{key} takes a list of {n}, not {argument}")))
        };
        let boolean = |v: &Value| -> Result<bool, TemplateError> {
            self.value(v)?
                .as_bool()
                .ok_or_else(|| invalid(format!("{key}: {v} is not a condition")))
        };
        Ok(Some(match key {
            "Ref" => {
                let name = argument
                    .as_str()
                    .ok_or_else(|| invalid(format!("Ref takes a name, not {argument}")))?;
                return self.reference(name);
            }
            "Condition" => {
                let name = argument.as_str().unwrap_or_default();
                Value::Bool(
                    *self
                        .conditions
                        .get(name)
                        .ok_or_else(|| TemplateError::Unresolved(format!("condition {name}")))?,
                )
            }
            "Fn::GetAtt" => {
                let parts = args(2)?;
                let id = parts[0].as_str().unwrap_or_default();
                let attribute = self.string(&parts[1])?;
                self.attribute(id, &attribute)?
            }
            "Fn::Sub" => Value::String(self.sub(argument)?),
            "Fn::Join" => {
                let parts = args(2)?;
                let separator = parts[0]
                    .as_str()
                    .ok_or_else(|| invalid("Fn::Join's separator must be a literal string"))?;
                let items = self.value(&parts[1])?;
                let items = items
                    .as_array()
                    .ok_or_else(|| invalid(format!("Fn::Join joins a list, not {items}")))?;
                let strings: Vec<String> = items
                    .iter()
                    .map(|i| {
                        scalar_string(i)
                            .ok_or_else(|| invalid(format!("Fn::Join: {i} is not a string")))
                    })
                    .collect::<Result<_, _>>()?;
                Value::String(strings.join(separator))
            }
            "Fn::Split" => {
                let parts = args(2)?;
                let separator = self.string(&parts[0])?;
                let text = self.string(&parts[1])?;
                Value::Array(
                    text.split(separator.as_str())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                )
            }
            "Fn::Select" => {
                let parts = args(2)?;
                let index: usize = self
                    .string(&parts[0])?
                    .parse()
                    .map_err(|_| invalid("Fn::Select's index is not a number"))?;
                let list = self.value(&parts[1])?;
                list.as_array()
                    .and_then(|l| l.get(index))
                    .cloned()
                    .ok_or_else(|| invalid(format!("Fn::Select: no item {index} in {list}")))?
            }
            "Fn::If" => {
                let parts = args(3)?;
                let name = parts[0].as_str().unwrap_or_default();
                let holds = *self
                    .conditions
                    .get(name)
                    .ok_or_else(|| TemplateError::Unresolved(format!("condition {name}")))?;
                return self.eval(&parts[if holds { 1 } else { 2 }]);
            }
            "Fn::Equals" => {
                let parts = args(2)?;
                let (a, b) = (self.value(&parts[0])?, self.value(&parts[1])?);
                Value::Bool(scalar_string(&a).is_some() && scalar_string(&a) == scalar_string(&b))
            }
            "Fn::Not" => Value::Bool(!boolean(&args(1)?[0])?),
            "Fn::And" | "Fn::Or" => {
                let values: Vec<bool> = argument
                    .as_array()
                    .ok_or_else(|| invalid(format!("{key} takes a list")))?
                    .iter()
                    .map(boolean)
                    .collect::<Result<_, _>>()?;
                Value::Bool(if key == "Fn::And" {
                    values.iter().all(|b| *b)
                } else {
                    values.iter().any(|b| *b)
                })
            }
            other => {
                return Err(invalid(format!(
                    "{other} is not supported by the local set-up"
                )));
            }
        }))
    }

    fn reference(&self, name: &str) -> Result<Option<Value>, TemplateError> {
        let pseudo = match name {
            "AWS::NoValue" => return Ok(None),
            "AWS::StackName" => Some(self.stack_name.clone()),
            "AWS::AccountId" => Some(self.account_id.clone()),
            "AWS::Region" => Some(self.region.clone()),
            "AWS::Partition" => Some(self.partition().to_owned()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
            _ => None,
        };
        if let Some(value) = pseudo {
            return Ok(Some(Value::String(value)));
        }
        if let Some(value) = self.parameters.get(name).or_else(|| self.refs.get(name)) {
            return Ok(Some(value.clone()));
        }
        Err(TemplateError::Unresolved(format!("Ref {name}")))
    }

    fn attribute(&self, id: &str, attribute: &str) -> Result<Value, TemplateError> {
        self.attributes
            .get(&format!("{id}.{attribute}"))
            .cloned()
            .ok_or_else(|| TemplateError::Unresolved(format!("Fn::GetAtt {id}.{attribute}")))
    }

    /// `Fn::Sub`: a string, or `[string, {name: value}]`; `${!x}` is the literal `${x}`.
    fn sub(&self, argument: &Value) -> Result<String, TemplateError> {
        let (text, variables) = match argument {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Array(parts) if parts.len() == 2 => {
                let text = parts[0]
                    .as_str()
                    .ok_or_else(|| invalid("Fn::Sub's first item must be a string"))?;
                let variables = parts[1]
                    .as_object()
                    .ok_or_else(|| invalid("Fn::Sub's second item must be a map"))?
                    .clone();
                (text, variables)
            }
            other => {
                return Err(invalid(format!(
                    "Fn::Sub takes a string or a list of two, not {other}"
                )));
            }
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| invalid(format!("Fn::Sub: unclosed ${{ in {text:?}")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else {
                let value = match variables.get(name) {
                    Some(v) => self.value(v)?,
                    None => match name.split_once('.') {
                        Some((id, attribute)) if !name.starts_with("AWS::") => {
                            self.attribute(id, attribute)?
                        }
                        _ => self
                            .reference(name)?
                            .ok_or_else(|| invalid("Fn::Sub: AWS::NoValue in a string"))?,
                    },
                };
                out.push_str(
                    &scalar_string(&value)
                        .ok_or_else(|| invalid(format!("Fn::Sub: ${{{name}}} is not a string")))?,
                );
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A string, number or boolean written as CloudFormation passes it on.
pub fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn check_parameter(name: &str, definition: &Value, value: &str) -> Result<(), TemplateError> {
    if let Some(pattern) = definition["AllowedPattern"].as_str() {
        // As CloudFormation: the whole value must match, or for a list each of its items.
        let anchored = regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            invalid(format!(
                "parameter {name}: AllowedPattern {pattern:?} is not a regex: {e}"
            ))
        })?;
        let items: Vec<&str> = if definition["Type"].as_str() == Some("CommaDelimitedList") {
            value.split(',').collect()
        } else {
            vec![value]
        };
        if let Some(bad) = items.iter().find(|item| !anchored.is_match(item)) {
            return Err(invalid(format!(
                "parameter {name}: {bad:?} does not match its AllowedPattern {pattern:?}{}",
                definition["ConstraintDescription"]
                    .as_str()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )));
        }
    }
    if let Some(allowed) = definition["AllowedValues"].as_array()
        && !allowed
            .iter()
            .any(|a| scalar_string(a).as_deref() == Some(value))
    {
        return Err(invalid(format!(
            "parameter {name}: {value:?} is not one of its AllowedValues"
        )));
    }
    if definition["Type"].as_str() == Some("Number") {
        let number: f64 = value
            .parse()
            .map_err(|_| invalid(format!("parameter {name}: {value:?} is not a number")))?;
        let bound = |key: &str| definition[key].as_f64();
        if bound("MinValue").is_some_and(|min| number < min)
            || bound("MaxValue").is_some_and(|max| number > max)
        {
            return Err(invalid(format!(
                "parameter {name}: {value} is outside [{}, {}]",
                definition["MinValue"], definition["MaxValue"]
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(template: &Template, overrides: &[(&str, &str)]) -> Result<Context, TemplateError> {
        let overrides = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Context::new(template, "st", "123456789012", "eu-west-1", &overrides)
    }

    #[test]
    fn short_forms_become_long_forms() {
        let template = Template::parse(
            "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      A: !Ref X\n      B: !GetAtt Q.Arn\n      C: !Sub '${AWS::StackName}-q'\n      D: !If [C1, 1, !Ref AWS::NoValue]\n",
        )
        .unwrap();
        let properties = &template.resource("Q").unwrap()["Properties"];
        assert_eq!(properties["A"], json!({"Ref": "X"}));
        assert_eq!(properties["B"], json!({"Fn::GetAtt": ["Q", "Arn"]}));
        assert_eq!(properties["C"], json!({"Fn::Sub": "${AWS::StackName}-q"}));
        assert_eq!(
            properties["D"],
            json!({"Fn::If": ["C1", 1, {"Ref": "AWS::NoValue"}]})
        );
    }

    #[test]
    fn the_bundled_template_resolves_parameters_and_conditions() {
        let template = Template::bundled();
        let defaults = context(&template, &[]).unwrap();
        assert!(!defaults.conditions["HasInputBuckets"]);
        assert_eq!(defaults.parameter("JobsPrefix").as_deref(), Some("jobs/"));
        let with = context(
            &template,
            &[("InputBuckets", "in-a, in-b"), ("WorkerBatchSize", "5")],
        )
        .unwrap();
        assert!(with.conditions["HasInputBuckets"]);
        assert_eq!(with.parameters["InputBuckets"], json!(["in-a", "in-b"]));
        let sub = json!({"Fn::Sub": ["arn:${AWS::Partition}:s3:::${B}", {"B": {"Fn::Join": [",", {"Ref": "InputBuckets"}]}}]});
        assert_eq!(with.string(&sub).unwrap(), "arn:aws:s3:::in-a,in-b");
        let split = json!({"Fn::Split": [",", "x,y"]});
        assert_eq!(with.value(&split).unwrap(), json!(["x", "y"]));
        assert_eq!(
            with.eval(&json!([1, {"Ref": "AWS::NoValue"}, {"Fn::Sub": "${!Literal}"}]))
                .unwrap(),
            Some(json!([1, "${Literal}"]))
        );
    }

    #[test]
    fn bad_parameters_and_unknown_references_are_named() {
        let template = Template::bundled();
        let err = context(&template, &[("WorkerBatchSize", "11")]).unwrap_err();
        assert!(
            err.to_string().contains("WorkerBatchSize: 11 is outside"),
            "{err}"
        );
        let err = context(&template, &[("LogLevel", "LOUD")]).unwrap_err();
        assert!(err.to_string().contains("LogLevel"), "{err}");
        let err = context(&template, &[("Nope", "1")]).unwrap_err();
        assert!(
            err.to_string().contains("parameter Nope is not declared"),
            "{err}"
        );
        let defaults = context(&template, &[]).unwrap();
        let err = defaults
            .value(&json!({"Fn::GetAtt": ["WorkQueue", "Arn"]}))
            .unwrap_err();
        assert!(
            matches!(err, TemplateError::Unresolved(ref what) if what.contains("WorkQueue.Arn")),
            "{err}"
        );
    }
}
