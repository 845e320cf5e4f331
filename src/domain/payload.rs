//! The Postman "Post monitoring results" payload: parsing at the edge and the run's verdict.

use serde::{Deserialize, Serialize};
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

/// A run accepted at the edge: its typed view plus the payload exactly as Postman sent it (every
/// field, known or not, in its original order).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRun {
    pub report: RunReport,
    pub payload: Map<String, Value>,
}

/// Parses a webhook body. Accepts every payload documented for Postman's webhook and keeps
/// unknown fields; refuses anything that is not a JSON object with a usable `monitor_uid` and
/// `metrics.failedTests` / `metrics.errors`.
pub fn parse_run(body: &[u8]) -> Result<ParsedRun, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    if let Err(e) = std::str::from_utf8(body) {
        return Err(PayloadError::NotUtf8 { offset: e.valid_up_to() });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError::NotJson {
        reason: json_reason(&e),
        line: e.line(),
        column: e.column(),
    })?;
    match value {
        Value::Object(payload) => {
            let report = RunReport::from_payload(&payload)?;
            Ok(ParsedRun { report, payload })
        }
        other => Err(PayloadError::NotObject { found: json_kind(&other) }),
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

impl RunReport {
    /// Reads the typed view out of a payload object. Also used by the fold on stored payloads,
    /// which were validated by this same function before they were appended.
    pub fn from_payload(payload: &Map<String, Value>) -> Result<RunReport, PayloadError> {
        let monitor_uid = match payload.get("monitor_uid") {
            None | Some(Value::Null) => return Err(PayloadError::Missing { field: "monitor_uid" }),
            Some(Value::String(s)) => MonitorUid::parse(s).map_err(|reason| {
                PayloadError::Invalid { field: "monitor_uid", reason: reason.to_owned() }
            })?,
            Some(other) => return Err(wrong_type("monitor_uid", "a string", other)),
        };
        let monitor_name = match payload.get("monitor_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(wrong_type("monitor_name", "a string", other)),
        };
        let metrics = match payload.get("metrics") {
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

    #[test]
    fn unknown_fields_are_kept_in_order() {
        let run = parse_run(
            br#"{"z":1,"monitor_uid":"m","metrics":{"errors":0,"failedTests":0,"x":[1]},"a":null}"#,
        )
        .unwrap();
        let keys: Vec<&str> = run.payload.keys().map(String::as_str).collect();
        assert_eq!(keys, ["z", "monitor_uid", "metrics", "a"]);
        assert_eq!(run.payload["metrics"]["x"], serde_json::json!([1]));
    }
}
