//! The Postman "Post monitoring results" payload: parsing at the edge and the run's verdict.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ids::MonitorUid;

/// Why a webhook body was refused. The first three kinds mean the body is not a JSON object at all
/// (HTTP 400); the others mean it is one but breaks the documented schema (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the request body is empty; expected a JSON object")]
    Empty,
    #[error("the request body is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("the request body is not valid JSON: {reason} at line {line}, column {column}")]
    NotJson { reason: String, line: usize, column: usize },
    #[error("the request body is a JSON {found}; expected a JSON object")]
    NotObject { found: &'static str },
    #[error("field `{field}` is required")]
    Missing { field: &'static str },
    #[error("field `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl PayloadError {
    /// True when the body is JSON-shaped but breaks the schema (as opposed to not being a JSON
    /// object at all).
    pub fn is_schema_violation(&self) -> bool {
        matches!(self, PayloadError::Missing { .. } | PayloadError::Invalid { .. })
    }

    /// A stable, machine-readable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::Empty => "empty_body",
            PayloadError::NotUtf8 { .. } => "invalid_utf8",
            PayloadError::NotJson { .. } => "invalid_json",
            PayloadError::NotObject { .. } => "not_an_object",
            PayloadError::Missing { .. } => "missing_field",
            PayloadError::Invalid { .. } => "invalid_field",
        }
    }
}

/// The run metrics the engine reads. Postman's own field names are kept so that an auditor sees
/// exactly what Postman reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub failed_tests: u32,
    pub errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_tests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_count: Option<u32>,
    /// Milliseconds summed over the run's requests; a long run can exceed `u32` milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_latency: Option<u64>,
}

/// What a run says about its monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Failing,
    Passing,
}

impl Metrics {
    /// The rule: any failed test or any error makes the run failing; otherwise it is passing.
    pub fn verdict(&self) -> Verdict {
        if self.failed_tests > 0 || self.errors > 0 {
            Verdict::Failing
        } else {
            Verdict::Passing
        }
    }
}

/// The typed view of one monitor run, read out of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub monitor_uid: MonitorUid,
    pub monitor_name: Option<String>,
    pub metrics: Metrics,
}

/// A run's payload as Postman sent it: a JSON object kept as its text, every field, known or not,
/// in its original order and spelling, without the whitespace between tokens.
///
/// Keeping the text rather than a parsed map means an event is sealed and stored without
/// serializing the payload again, and read back (in a replay, a time-travel fold or a timeline)
/// without building a map of every field: [`Payload::report`] reads just the fields incidentd
/// uses and skips the rest.
#[derive(Debug, Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The JSON text of the object.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The typed view of the run. The payload of a stored event was read by this same function
    /// before it was appended, so for the log's own events it fails only if the log was altered.
    pub fn report(&self) -> Result<RunReport, PayloadError> {
        read_report(self.get())
    }

    /// The payload as a JSON value, for display and comparison. Fails only for a payload that
    /// never passed [`parse_run`] (an altered log).
    pub fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(self.get())
    }

    /// A payload holding `object`, serialized compactly (for events built in code and tests).
    pub fn from_object(object: &Map<String, Value>) -> Payload {
        let text = serde_json::to_string(object).expect("a JSON map serializes");
        Payload(RawValue::from_string(text).expect("serialized JSON is valid"))
    }

    /// Whether two payloads hold the same JSON, whatever the order of their keys.
    pub fn same_json(&self, other: &Payload) -> bool {
        self.get() == other.get()
            || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

/// Two payloads are equal when their text is: the log holds the text, so that is what an event
/// is.
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Reads a payload as stored: any JSON object, taken as its text.
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if !raw.get().starts_with('{') {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Other("a JSON value that is not an object"),
                &"a JSON object",
            ));
        }
        Ok(Payload(raw))
    }
}

/// A run accepted at the edge: its typed view plus the payload as Postman sent it.
#[derive(Debug, Clone)]
pub struct ParsedRun {
    pub report: RunReport,
    pub payload: Payload,
}

/// Parses a webhook body. Accepts every payload documented for Postman's webhook and keeps
/// unknown fields; refuses anything that is not a JSON object with a usable `monitor_uid` and
/// `metrics.failedTests` / `metrics.errors`, and a body that gives one of the fields incidentd
/// reads twice (which one counts would depend on the reader).
pub fn parse_run(body: &[u8]) -> Result<ParsedRun, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return Err(PayloadError::NotUtf8 { offset: e.valid_up_to() }),
    };
    let report = read_report(text)?;
    // Without the whitespace between tokens, a stored event is one line of JSON (the NDJSON
    // export relies on it). The body was just read as one JSON value, so this cannot fail.
    let raw = RawValue::from_string(without_whitespace(text)).expect("the body is one JSON value");
    Ok(ParsedRun { report, payload: Payload(raw) })
}

/// `text` without the whitespace outside its strings. JSON strings cannot hold raw whitespace
/// other than spaces, and those inside strings are kept.
fn without_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

/// Reads the typed view out of a payload's text in one pass: the fields incidentd uses are read
/// as JSON values and every other field is read without being built.
fn read_report(text: &str) -> Result<RunReport, PayloadError> {
    let top = serde_json::from_str::<ObjectOr<TopFields>>(text).map_err(|e| {
        PayloadError::NotJson { reason: json_reason(&e), line: e.line(), column: e.column() }
    })?;
    match top {
        ObjectOr::Object(fields) => fields.report(),
        ObjectOr::Not(found) => Err(PayloadError::NotObject { found }),
    }
}

/// serde_json's message ends with its own " at line X column Y"; the position is reported
/// separately, so only the reason is kept.
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The metrics incidentd reads: (key in `metrics`, the field's name in errors).
const METRICS: [(&str, &str); 6] = [
    ("failedTests", "metrics.failedTests"),
    ("errors", "metrics.errors"),
    ("passedTests", "metrics.passedTests"),
    ("warnings", "metrics.warnings"),
    ("requestCount", "metrics.requestCount"),
    ("totalLatency", "metrics.totalLatency"),
];

/// An object read for the fields `T` takes from it, or the kind of a JSON value that is not an
/// object (which the schema checks name).
// Lives on the stack for one read and is never stored; boxing the large variant would add an
// allocation to every run read.
#[allow(clippy::large_enum_variant)]
enum ObjectOr<T> {
    Object(T),
    Not(&'static str),
}

/// The top-level fields incidentd reads, each as given (`None` when absent).
struct TopFields {
    monitor_uid: Option<Value>,
    monitor_name: Option<Value>,
    metrics: Option<ObjectOr<MetricFields>>,
    /// The first of these fields given more than once, if any.
    duplicate: Option<&'static str>,
}

/// The metrics incidentd reads, in the order of [`METRICS`], each as given.
struct MetricFields {
    values: [Option<Value>; 6],
    duplicate: Option<&'static str>,
}

/// How the fields of one kind of object are read out of it.
trait ReadObject: Sized {
    fn read<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Any JSON value, read and thrown away. Unlike `serde::de::IgnoredAny`, it goes through
/// serde_json's full parser, which refuses what building a value would refuse: numbers out of
/// range, invalid escapes and nesting beyond 128 levels.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        struct SkipVisitor;
        impl<'de> serde::de::Visitor<'de> for SkipVisitor {
            type Value = Skip;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_key::<Skip>()?.is_some() {
                    map.next_value::<Skip>()?;
                }
                Ok(Skip)
            }
        }
        d.deserialize_any(SkipVisitor)
    }
}

/// A key of an object, matched against `names` without allocating: its position, or `None`.
struct KeyIn<const N: usize>(Option<usize>);

/// The keys matched by [`KeyIn`] for the top level and for `metrics`.
trait KeyNames<const N: usize> {
    const NAMES: [&'static str; N];
}

impl KeyNames<3> for KeyIn<3> {
    const NAMES: [&'static str; 3] = ["monitor_uid", "monitor_name", "metrics"];
}

impl KeyNames<6> for KeyIn<6> {
    const NAMES: [&'static str; 6] =
        [METRICS[0].0, METRICS[1].0, METRICS[2].0, METRICS[3].0, METRICS[4].0, METRICS[5].0];
}

impl<'de, const N: usize> Deserialize<'de> for KeyIn<N>
where
    KeyIn<N>: KeyNames<N>,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyIn<N>, D::Error> {
        struct KeyVisitor<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for KeyVisitor<N>
        where
            KeyIn<N>: KeyNames<N>,
        {
            type Value = KeyIn<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyIn<N>, E> {
                Ok(KeyIn(<KeyIn<N> as KeyNames<N>>::NAMES.iter().position(|name| *name == v)))
            }
        }
        d.deserialize_identifier(KeyVisitor::<N>)
    }
}

/// Stores a field's value, remembering the first field given twice.
fn set<T>(
    slot: &mut Option<T>,
    value: T,
    name: &'static str,
    duplicate: &mut Option<&'static str>,
) {
    if slot.is_some() && duplicate.is_none() {
        *duplicate = Some(name);
    }
    *slot = Some(value);
}

impl ReadObject for TopFields {
    fn read<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<TopFields, A::Error> {
        let (mut monitor_uid, mut monitor_name, mut metrics) = (None, None, None);
        let mut duplicate = None;
        while let Some(KeyIn(key)) = map.next_key::<KeyIn<3>>()? {
            match key {
                Some(0) => set(&mut monitor_uid, map.next_value()?, "monitor_uid", &mut duplicate),
                Some(1) => {
                    set(&mut monitor_name, map.next_value()?, "monitor_name", &mut duplicate)
                }
                Some(_) => set(&mut metrics, map.next_value()?, "metrics", &mut duplicate),
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(TopFields { monitor_uid, monitor_name, metrics, duplicate })
    }
}

impl ReadObject for MetricFields {
    fn read<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<MetricFields, A::Error> {
        let mut values: [Option<Value>; 6] = Default::default();
        let mut duplicate = None;
        while let Some(KeyIn(key)) = map.next_key::<KeyIn<6>>()? {
            match key {
                Some(i) => set(&mut values[i], map.next_value()?, METRICS[i].1, &mut duplicate),
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(MetricFields { values, duplicate })
    }
}

impl<'de, T: ReadObject> Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ObjectOr<T>, D::Error> {
        struct ObjectOrVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: ReadObject> serde::de::Visitor<'de> for ObjectOrVisitor<T> {
            type Value = ObjectOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ObjectOr<T>, A::Error> {
                T::read(map).map(ObjectOr::Object)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ObjectOr<T>, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(ObjectOr::Not("array"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ObjectOr<T>, E> {
                Ok(ObjectOr::Not("boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ObjectOr<T>, E> {
                Ok(ObjectOr::Not("number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ObjectOr<T>, E> {
                Ok(ObjectOr::Not("number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ObjectOr<T>, E> {
                Ok(ObjectOr::Not("number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<ObjectOr<T>, E> {
                Ok(ObjectOr::Not("string"))
            }
            fn visit_unit<E>(self) -> Result<ObjectOr<T>, E> {
                Ok(ObjectOr::Not("null"))
            }
        }
        d.deserialize_any(ObjectOrVisitor(std::marker::PhantomData))
    }
}

fn given_twice(field: &'static str) -> PayloadError {
    PayloadError::Invalid { field, reason: "is given more than once".to_owned() }
}

impl TopFields {
    /// Checks the fields against the schema and builds the typed view.
    fn report(self) -> Result<RunReport, PayloadError> {
        if let Some(field) = self.duplicate {
            return Err(given_twice(field));
        }
        let monitor_uid = match &self.monitor_uid {
            None | Some(Value::Null) => return Err(PayloadError::Missing { field: "monitor_uid" }),
            Some(Value::String(s)) => MonitorUid::parse(s).map_err(|reason| {
                PayloadError::Invalid { field: "monitor_uid", reason: reason.to_owned() }
            })?,
            Some(other) => return Err(wrong_type("monitor_uid", "a string", json_kind(other))),
        };
        let monitor_name = match self.monitor_name {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => return Err(wrong_type("monitor_name", "a string", json_kind(&other))),
        };
        let metrics = match self.metrics {
            None | Some(ObjectOr::Not("null")) => {
                return Err(PayloadError::Missing { field: "metrics" })
            }
            Some(ObjectOr::Not(kind)) => return Err(wrong_type("metrics", "an object", kind)),
            Some(ObjectOr::Object(MetricFields { duplicate: Some(field), .. })) => {
                return Err(given_twice(field))
            }
            Some(ObjectOr::Object(MetricFields { values, duplicate: None })) => {
                let [failed, errors, passed, warnings, requests, latency] = values;
                Metrics {
                    failed_tests: required_count(failed.as_ref(), METRICS[0].1)?,
                    errors: required_count(errors.as_ref(), METRICS[1].1)?,
                    passed_tests: optional_count(passed.as_ref(), METRICS[2].1)?,
                    warnings: optional_count(warnings.as_ref(), METRICS[3].1)?,
                    request_count: optional_count(requests.as_ref(), METRICS[4].1)?,
                    total_latency: optional_u64(latency.as_ref(), METRICS[5].1)?,
                }
            }
        };
        Ok(RunReport { monitor_uid, monitor_name, metrics })
    }
}

fn wrong_type(field: &'static str, expected: &str, found: &str) -> PayloadError {
    PayloadError::Invalid { field, reason: format!("must be {expected}, got {found}") }
}

fn required_count(value: Option<&Value>, field: &'static str) -> Result<u32, PayloadError> {
    optional_count(value, field)?.ok_or(PayloadError::Missing { field })
}

fn optional_count(value: Option<&Value>, field: &'static str) -> Result<Option<u32>, PayloadError> {
    match optional_u64(value, field)? {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| PayloadError::Invalid {
            field,
            reason: format!("must be at most {}, got {n}", u32::MAX),
        }),
    }
}

fn optional_u64(value: Option<&Value>, field: &'static str) -> Result<Option<u64>, PayloadError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else if n.as_i64().is_some() {
                Err(PayloadError::Invalid { field, reason: format!("must be >= 0, got {n}") })
            } else if n.is_f64() {
                Err(PayloadError::Invalid { field, reason: format!("must be an integer, got {n}") })
            } else {
                Err(PayloadError::Invalid { field, reason: format!("is out of range: {n}") })
            }
        }
        Some(other) => Err(wrong_type(field, "a non-negative integer", json_kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_follows_failed_tests_and_errors() {
        let m = |failed_tests, errors| Metrics {
            failed_tests,
            errors,
            passed_tests: None,
            warnings: None,
            request_count: None,
            total_latency: None,
        };
        assert_eq!(m(0, 0).verdict(), Verdict::Passing);
        assert_eq!(m(1, 0).verdict(), Verdict::Failing);
        assert_eq!(m(0, 1).verdict(), Verdict::Failing);
    }

    #[test]
    fn refusals_name_the_field_or_position() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"", "empty_body", "empty"),
            (b"{\"a\":", "invalid_json", "line 1, column 5"),
            (b"\xff{}", "invalid_utf8", "offset 0"),
            (b"[1]", "not_an_object", "array"),
            (b"{\"metrics\":{\"errors\":0,\"failedTests\":1}}", "missing_field", "monitor_uid"),
            (
                b"{\"monitor_uid\":\"m\",\"metrics\":{\"errors\":1.5,\"failedTests\":1}}",
                "invalid_field",
                "metrics.errors",
            ),
            (
                b"{\"monitor_uid\":\"m\",\"metrics\":{\"errors\":0,\"failedTests\":4294967296}}",
                "invalid_field",
                "at most",
            ),
            (
                b"{\"monitor_uid\":\"m\",\"metrics\":{\"errors\":0}}",
                "missing_field",
                "metrics.failedTests",
            ),
            (
                b"{\"monitor_uid\":7,\"metrics\":{\"errors\":0,\"failedTests\":0}}",
                "invalid_field",
                "got number",
            ),
        ];
        for (body, code, needle) in cases {
            let err = parse_run(body).unwrap_err();
            assert_eq!(err.code(), *code, "{}", String::from_utf8_lossy(body));
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
    }

    /// A payload is its text as sent, less the whitespace between tokens (so a stored event
    /// stays one line): equal only to the same text, the same JSON whatever its key order. A
    /// stored payload must be an object.
    #[test]
    fn a_payload_is_kept_as_text() {
        let sent = parse_run(
            b" {\"monitor_uid\" :\t\"m\",\r\n \"monitor_name\": \"a \\\" b\",\n \"metrics\":{\"errors\":0,\"failedTests\":1,\"x\":1.50}}\n",
        )
        .unwrap()
        .payload;
        assert_eq!(
            sent.get(),
            r#"{"monitor_uid":"m","monitor_name":"a \" b","metrics":{"errors":0,"failedTests":1,"x":1.50}}"#
        );
        let reordered = parse_run(
            br#"{"metrics":{"x":1.50,"errors":0,"failedTests":1},"monitor_name":"a \" b","monitor_uid":"m"}"#,
        )
        .unwrap()
        .payload;
        assert_ne!(sent, reordered);
        assert!(sent.same_json(&reordered));
        assert_eq!(sent.report().unwrap(), reordered.report().unwrap());
        assert_eq!(serde_json::to_string(&sent).unwrap(), sent.get());
        assert!(serde_json::from_str::<Payload>("[1]").is_err());
        assert_eq!(serde_json::from_str::<Payload>(" {\"a\": 1}").unwrap().get(), "{\"a\": 1}");
    }

    /// Fields incidentd does not read are still checked as strictly as a JSON value is built:
    /// what could not be read back as JSON later is refused now.
    #[test]
    fn unread_fields_are_checked_too() {
        let run = |extra: &str| {
            let body = format!(
                r#"{{"monitor_uid":"m","metrics":{{"errors":0,"failedTests":0,"y":{extra}}},"x":{extra}}}"#
            );
            parse_run(body.as_bytes())
        };
        assert!(run("[1, {\"a\": \"\\u00e9\"}]").is_ok());
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for bad in ["1e400", r#""\ud800""#, r#""\q""#, &deep] {
            let err = run(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_json", "{bad}: {err}");
        }
    }

    /// A field incidentd reads may appear once: which of two would count depends on the reader.
    #[test]
    fn fields_read_twice_are_refused() {
        for (body, field) in [
            (
                r#"{"monitor_uid":"a","metrics":{"errors":0,"failedTests":0},"monitor_uid":"b"}"#,
                "monitor_uid",
            ),
            (
                r#"{"monitor_uid":"a","metrics":{"errors":0,"failedTests":0,"errors":1}}"#,
                "metrics.errors",
            ),
            (
                r#"{"monitor_uid":"a","metrics":null,"metrics":{"errors":0,"failedTests":0}}"#,
                "metrics",
            ),
        ] {
            let err = parse_run(body.as_bytes()).unwrap_err();
            assert_eq!(err, given_twice(field), "{body}");
        }
        // Fields it does not read may repeat, as JSON allows.
        assert!(parse_run(
            br#"{"x":1,"monitor_uid":"a","x":2,"metrics":{"errors":0,"failedTests":0}}"#
        )
        .is_ok());
    }

    #[test]
    fn unknown_fields_are_kept_in_order() {
        let run = parse_run(
            br#"{"z":1,"monitor_uid":"m","metrics":{"errors":0,"failedTests":0,"x":[1]},"a":null}"#,
        )
        .unwrap();
        assert_eq!(
            run.payload.get(),
            r#"{"z":1,"monitor_uid":"m","metrics":{"errors":0,"failedTests":0,"x":[1]},"a":null}"#
        );
    }
}
