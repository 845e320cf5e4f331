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

/// A run's payload exactly as Postman sent it: a JSON object kept as its text, every field, known
/// or not, in its original order and spelling.
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

    /// The payload as a JSON value, for display and comparison.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).expect("a payload is valid JSON")
    }

    /// A payload holding `object`, serialized compactly (for events built in code and tests).
    pub fn from_object(object: &Map<String, Value>) -> Payload {
        let text = serde_json::to_string(object).expect("a JSON map serializes");
        Payload(RawValue::from_string(text).expect("serialized JSON is valid"))
    }

    /// Whether two payloads hold the same JSON, however each is spaced.
    pub fn same_json(&self, other: &Payload) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
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

/// A run accepted at the edge: its typed view plus the payload exactly as Postman sent it.
#[derive(Debug, Clone)]
pub struct ParsedRun {
    pub report: RunReport,
    pub payload: Payload,
}

/// Parses a webhook body. Accepts every payload documented for Postman's webhook and keeps
/// unknown fields; refuses anything that is not a JSON object with a usable `monitor_uid` and
/// `metrics.failedTests` / `metrics.errors`.
pub fn parse_run(body: &[u8]) -> Result<ParsedRun, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return Err(PayloadError::NotUtf8 { offset: e.valid_up_to() }),
    };
    check_depth(text)?;
    let report = read_report(text)?;
    // The whole body was just read as one JSON object, so this cannot fail; it drops the
    // whitespace around the object.
    let raw = serde_json::from_str::<Box<RawValue>>(text).expect("the body is one JSON value");
    Ok(ParsedRun { report, payload: Payload(raw) })
}

/// Reads the typed view out of a payload's text in one pass: the fields incidentd uses are read
/// as JSON values and every other field is skipped without being built. A field given twice
/// counts with its last value, as when the object is read into a map.
fn read_report(text: &str) -> Result<RunReport, PayloadError> {
    let top = serde_json::from_str::<TopLevel>(text).map_err(|e| PayloadError::NotJson {
        reason: json_reason(&e),
        line: e.line(),
        column: e.column(),
    })?;
    match top {
        TopLevel::Fields([monitor_uid, monitor_name, metrics]) => {
            RunReport::from_fields(monitor_uid.as_ref(), monitor_name.as_ref(), metrics.as_ref())
        }
        TopLevel::Not(found) => Err(PayloadError::NotObject { found }),
    }
}

/// How deeply arrays and objects may nest in a body: as deeply as serde_json builds a value
/// (its limit is 128 levels, exclusive), which [`Payload::to_value`] relies on.
const MAX_DEPTH: usize = 127;

/// Refuses a body nested deeper than [`MAX_DEPTH`]. [`read_report`] skips the fields it does not
/// use without building them, and serde_json sets no depth limit on skipping, so the limit that
/// reading a body into a value used to enforce is checked here, at the edge, in one pass.
fn check_depth(text: &str) -> Result<(), PayloadError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, byte) in text.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let before = &text[..offset];
                    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
                    let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    let reason = format!("nested deeper than {MAX_DEPTH} levels");
                    return Err(PayloadError::NotJson { reason, line, column });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
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

/// A payload's top level as [`read_report`] reads it: the values of the fields incidentd uses
/// (in the order of [`USED`]), or the kind of a value that is not an object at all.
enum TopLevel {
    Fields([Option<Value>; 3]),
    Not(&'static str),
}

/// The top-level fields incidentd reads; `metrics` is small and read whole.
const USED: [&str; 3] = ["monitor_uid", "monitor_name", "metrics"];

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TopLevel, D::Error> {
        d.deserialize_any(TopLevelVisitor)
    }
}

/// The position of a key in [`USED`], matched without allocating.
struct UsedKey(Option<usize>);

impl<'de> Deserialize<'de> for UsedKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UsedKey, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = UsedKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UsedKey, E> {
                Ok(UsedKey(USED.iter().position(|name| *name == v)))
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> serde::de::Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut fields: [Option<Value>; 3] = Default::default();
        while let Some(UsedKey(position)) = map.next_key()? {
            match position {
                Some(i) => fields[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(TopLevel::Fields(fields))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Not("array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Not("boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Not("number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Not("number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Not("number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Not("string"))
    }

    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Not("null"))
    }
}

impl RunReport {
    /// Checks the fields read out of a payload against the schema and builds the typed view.
    fn from_fields(
        monitor_uid: Option<&Value>,
        monitor_name: Option<&Value>,
        metrics: Option<&Value>,
    ) -> Result<RunReport, PayloadError> {
        let monitor_uid = match monitor_uid {
            None | Some(Value::Null) => return Err(PayloadError::Missing { field: "monitor_uid" }),
            Some(Value::String(s)) => MonitorUid::parse(s).map_err(|reason| {
                PayloadError::Invalid { field: "monitor_uid", reason: reason.to_owned() }
            })?,
            Some(other) => return Err(wrong_type("monitor_uid", "a string", other)),
        };
        let monitor_name = match monitor_name {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(wrong_type("monitor_name", "a string", other)),
        };
        let metrics = match metrics {
            None | Some(Value::Null) => return Err(PayloadError::Missing { field: "metrics" }),
            Some(Value::Object(m)) => Metrics {
                failed_tests: required_count(m, "failedTests", "metrics.failedTests")?,
                errors: required_count(m, "errors", "metrics.errors")?,
                passed_tests: optional_count(m, "passedTests", "metrics.passedTests")?,
                warnings: optional_count(m, "warnings", "metrics.warnings")?,
                request_count: optional_count(m, "requestCount", "metrics.requestCount")?,
                total_latency: optional_u64(m, "totalLatency", "metrics.totalLatency")?,
            },
            Some(other) => return Err(wrong_type("metrics", "an object", other)),
        };
        Ok(RunReport { monitor_uid, monitor_name, metrics })
    }
}

fn wrong_type(field: &'static str, expected: &str, found: &Value) -> PayloadError {
    PayloadError::Invalid { field, reason: format!("must be {expected}, got {}", json_kind(found)) }
}

fn required_count(
    m: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<u32, PayloadError> {
    optional_count(m, key, field)?.ok_or(PayloadError::Missing { field })
}

fn optional_count(
    m: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<u32>, PayloadError> {
    match optional_u64(m, key, field)? {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| PayloadError::Invalid {
            field,
            reason: format!("must be at most {}, got {n}", u32::MAX),
        }),
    }
}

fn optional_u64(
    m: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<u64>, PayloadError> {
    match m.get(key) {
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
        Some(other) => Err(wrong_type(field, "a non-negative integer", other)),
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

    /// The depth check refuses exactly the bodies that serde_json refuses to build as a value.
    #[test]
    fn nesting_is_limited_as_serde_json_limits_it() {
        for depth in [1, 2, 100, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000] {
            for (open, close) in [("{\"a\":", "}"), ("[", "]")] {
                let mut text = open.repeat(depth);
                text.push_str("\"[{\\\"\"");
                text.push_str(&close.repeat(depth));
                let built = serde_json::from_str::<Value>(&text).is_ok();
                assert_eq!(check_depth(&text).is_ok(), built, "{open} x {depth}");
            }
        }
        let err = parse_run(format!("{}1{}", "[".repeat(200), "]".repeat(200)).as_bytes());
        assert!(matches!(err, Err(PayloadError::NotJson { line: 1, column: 128, .. })), "{err:?}");
    }

    /// A payload is its text: kept with its spacing, equal only to the same text, and read as
    /// the same JSON however it is spaced. A stored payload must be an object.
    #[test]
    fn a_payload_is_kept_as_text() {
        let spaced = parse_run(
            b" {\"monitor_uid\" : \"m\",\n \"metrics\":{\"errors\":0,\"failedTests\":1}}\n",
        )
        .unwrap()
        .payload;
        assert_eq!(
            spaced.get(),
            "{\"monitor_uid\" : \"m\",\n \"metrics\":{\"errors\":0,\"failedTests\":1}}"
        );
        let compact = Payload::from_object(spaced.to_value().as_object().unwrap());
        assert_ne!(spaced, compact);
        assert!(spaced.same_json(&compact));
        assert_eq!(spaced.report().unwrap(), compact.report().unwrap());
        assert_eq!(serde_json::to_string(&spaced).unwrap(), spaced.get());
        assert!(serde_json::from_str::<Payload>("[1]").is_err());
        assert_eq!(serde_json::from_str::<Payload>(" {\"a\": 1}").unwrap().get(), "{\"a\": 1}");
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
