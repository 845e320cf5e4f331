//! Arbitrary input against the payload parser and the ingest endpoint: nothing panics, every
//! refusal is one of the documented kinds, and every HTTP answer is a 202 or a 4xx JSON error.

mod common;

use common::TestServer;
use incidentd::domain::{parse_run, PayloadError};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Map, Value};

/// Any JSON value, nested a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects close to a Postman payload, with each field possibly missing or of the wrong type,
/// so that the schema checks themselves are exercised, not only the JSON parser.
fn almost_a_payload() -> impl Strategy<Value = Value> {
    let field = |good: BoxedStrategy<Value>| prop_oneof![3 => good, 1 => any_json(), 1 => Just(Value::Null)];
    let count =
        prop_oneof![(0u32..5).prop_map(|n| json!(n)), any::<i64>().prop_map(|n| json!(n))].boxed();
    (
        field("[a-z0-9-]{0,40}".prop_map(Value::String).boxed()),
        field(count.clone()),
        field(count),
        prop::option::of(any_json()),
    )
        .prop_map(|(uid, failed, errors, extra)| {
            let mut metrics = Map::new();
            metrics.insert("failedTests".into(), failed);
            metrics.insert("errors".into(), errors);
            let mut payload = Map::new();
            payload.insert("monitor_uid".into(), uid);
            payload.insert("metrics".into(), Value::Object(metrics));
            if let Some(extra) = extra {
                payload.insert("extra".into(), extra);
            }
            Value::Object(payload)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match parse_run(&bytes) {
            Ok(run) => prop_assert!(!run.report.monitor_uid.as_str().is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn arbitrary_json_is_accepted_only_when_it_fits_the_schema(value in prop_oneof![any_json(), almost_a_payload()]) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match parse_run(&bytes) {
            Ok(run) => {
                // Accepted: the typed view agrees with the JSON, and nothing was dropped.
                prop_assert_eq!(run.payload.to_value().unwrap(), value.clone());
                prop_assert_eq!(value["monitor_uid"].as_str(), Some(run.report.monitor_uid.as_str()));
                prop_assert_eq!(value["metrics"]["failedTests"].as_u64(), Some(u64::from(run.report.metrics.failed_tests)));
            }
            Err(PayloadError::NotObject { .. }) => prop_assert!(!value.is_object()),
            Err(e) => prop_assert!(e.is_schema_violation(), "valid JSON refused as {:?}", e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bodies_over_http_get_202_or_a_4xx_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("fuzz").await;
    let url = created["webhook_url"].as_str().unwrap();

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 150,
        ..ProptestConfig::default()
    });
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        almost_a_payload().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    let mut samples = Vec::new();
    for _ in 0..450 {
        samples.push(bodies.new_tree(&mut runner).unwrap().current());
    }
    let mut accepted = 0;
    for body in samples {
        let before = server.head();
        let (status, answer) = server.deliver(url, body.clone()).await;
        match status.as_u16() {
            202 => {
                accepted += 1;
                assert_eq!(server.head(), before + 1);
                assert!(answer["seq"].is_u64());
            }
            400 | 413 | 422 => {
                assert!(answer["error"]["code"].is_string(), "{answer}");
                assert_eq!(server.head(), before, "a refusal appends nothing");
            }
            other => panic!("{other} for {:?}: {answer}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(accepted > 0, "some generated payloads are valid, so acceptance was exercised too");
    let (_, verified) = server.get("/v1/audit/verify").await;
    assert_eq!(verified["ok"], true);
    server.stop().await;
}
