//! Safe to expose, over real HTTP: every class of bad input gets a JSON error and appends
//! nothing; reader and admin scopes; webhook token rotation with a grace period; the
//! per-integration rate limit; idempotent deliveries; the recent-deliveries record.

mod common;

use common::{run, TestServer, ADMIN_TOKEN};
use incidentd::api::limits::RateLimit;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const MONITOR: &str = "24130357-1edc7a3b-2f8e-4c65-b0d9-6a4e8f21c7d3";

/// One bad request: how it is sent, and what must come back.
struct Case {
    name: &'static str,
    method: Method,
    /// Appended to the webhook URL; `None` sends to an unknown route instead.
    to_hook: bool,
    content_type: &'static str,
    headers: &'static [(&'static str, &'static [u8])],
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method: Method::POST,
        to_hook: true,
        content_type: "application/json",
        headers: &[],
        body: body.into(),
        status,
        code,
    }
}

fn nested(depth: usize) -> Vec<u8> {
    let mut body = "{\"a\":".repeat(depth);
    body.push('1');
    body.push_str(&"}".repeat(depth));
    body.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_bad_input_is_refused_and_appends_nothing() {
    let huge = format!(
        r#"{{"monitor_uid":"m","metrics":{{"errors":0,"failedTests":1}},"pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let cases = vec![
        case("not json", "hello", 400, "invalid_json"),
        case("truncated", r#"{"monitor_uid": "x", "metrics": {"errors": 0"#, 400, "invalid_json"),
        case("empty", "", 400, "empty_body"),
        case("whitespace only", " \n\t ", 400, "empty_body"),
        case("array", r#"[{"monitor_uid":"a"}]"#, 400, "not_an_object"),
        case("scalar", "42", 400, "not_an_object"),
        case("string", "\"run\"", 400, "not_an_object"),
        Case {
            content_type: "application/x-www-form-urlencoded",
            ..case("form body", "monitor_uid=abc&failedTests=1", 400, "invalid_json")
        },
        Case { content_type: "text/plain", ..case("plain text", "failed", 400, "invalid_json") },
        case("invalid utf-8", b"{\"monitor_uid\":\"\xff\xfe\"}".to_vec(), 400, "invalid_utf8"),
        case("deeply nested", nested(9_000), 400, "invalid_json"),
        case("too large", huge, 413, "payload_too_large"),
        case(
            "missing monitor_uid",
            r#"{"metrics":{"errors":0,"failedTests":1}}"#,
            422,
            "missing_field",
        ),
        case(
            "empty monitor_uid",
            r#"{"monitor_uid":"","metrics":{"errors":0,"failedTests":1}}"#,
            422,
            "invalid_field",
        ),
        case(
            "monitor_uid not a string",
            r#"{"monitor_uid":12,"metrics":{"errors":0,"failedTests":1}}"#,
            422,
            "invalid_field",
        ),
        case("missing metrics", r#"{"monitor_uid":"m"}"#, 422, "missing_field"),
        case("metrics not an object", r#"{"monitor_uid":"m","metrics":[]}"#, 422, "invalid_field"),
        case(
            "missing failedTests",
            r#"{"monitor_uid":"m","metrics":{"errors":0}}"#,
            422,
            "missing_field",
        ),
        case(
            "missing errors",
            r#"{"monitor_uid":"m","metrics":{"failedTests":0}}"#,
            422,
            "missing_field",
        ),
        case(
            "string count",
            r#"{"monitor_uid":"m","metrics":{"errors":0,"failedTests":"2"}}"#,
            422,
            "invalid_field",
        ),
        case(
            "fractional count",
            r#"{"monitor_uid":"m","metrics":{"errors":0.5,"failedTests":0}}"#,
            422,
            "invalid_field",
        ),
        case(
            "negative count",
            r#"{"monitor_uid":"m","metrics":{"errors":-1,"failedTests":0}}"#,
            422,
            "invalid_field",
        ),
        case(
            "beyond u32",
            r#"{"monitor_uid":"m","metrics":{"errors":0,"failedTests":4294967296}}"#,
            422,
            "invalid_field",
        ),
        case(
            "absurd number",
            r#"{"monitor_uid":"m","metrics":{"errors":0,"failedTests":1e400}}"#,
            400,
            "invalid_json",
        ),
        Case {
            headers: &[("idempotency-key", b"caf\xc3\xa9")],
            ..case(
                "bad idempotency key",
                run(MONITOR, 1, 0).to_string(),
                400,
                "invalid_idempotency_key",
            )
        },
        Case { method: Method::GET, ..case("wrong method", "", 405, "method_not_allowed") },
        Case {
            method: Method::PUT,
            ..case(
                "wrong method with body",
                run(MONITOR, 1, 0).to_string(),
                405,
                "method_not_allowed",
            )
        },
        Case {
            to_hook: false,
            ..case("unknown route", run(MONITOR, 1, 0).to_string(), 404, "not_found")
        },
    ];

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("bad input").await;
    let url = created["webhook_url"].as_str().unwrap();
    let head = server.head();
    for case in cases {
        let target =
            if case.to_hook { url.to_owned() } else { format!("{}/v1/hooks/other/x", server.base) };
        let mut request = server
            .client
            .request(case.method.clone(), target)
            .header("content-type", case.content_type)
            .body(case.body);
        for (name, value) in case.headers {
            request =
                request.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
        }
        let response = request.send().await.unwrap();
        let (status, body) = common::read(response).await;
        assert_eq!(status.as_u16(), case.status, "{}: {body}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        assert!(!body["error"]["message"].as_str().unwrap().is_empty(), "{}", case.name);
        assert_eq!(server.head(), head, "{} appended nothing", case.name);
    }
    let (status, healthy) = server.get("/healthz").await;
    assert_eq!((status, healthy["status"].as_str()), (StatusCode::OK, Some("ok")), "still serving");
    server.stop().await;
}

async fn with_token(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = server
        .client
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    common::read(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_tokens_read_but_never_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("scopes").await;
    let opened =
        server.deliver_run(created["webhook_url"].as_str().unwrap(), &run(MONITOR, 1, 0)).await;
    let incident = opened["incident"]["id"].as_str().unwrap().to_owned();

    let (status, issued) = server.post_admin("/v1/tokens", json!({"name": "auditor"})).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let reader = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(issued["role"], "reader");
    let (_, listed) = server.get("/v1/tokens").await;
    assert!(!listed.to_string().contains(&reader), "tokens are shown once, never listed");

    let reads = [
        "/v1/incidents".to_owned(),
        format!("/v1/incidents/{incident}"),
        "/v1/monitors".to_owned(),
        format!("/v1/monitors/{MONITOR}"),
        format!("/v1/monitors/{MONITOR}/history"),
        "/v1/events".to_owned(),
        "/v1/state?at_seq=2".to_owned(),
        "/v1/audit/verify".to_owned(),
    ];
    for path in &reads {
        let (status, body) = with_token(&server, Method::GET, path, &reader, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "reader GET {path}: {body}");
    }
    let writes = [
        (Method::POST, "/v1/integrations".to_owned(), json!({"name": "x"})),
        (Method::GET, "/v1/integrations".to_owned(), Value::Null),
        (Method::POST, format!("/v1/incidents/{incident}/acknowledge"), json!({"by": "eve"})),
        (
            Method::POST,
            format!("/v1/incidents/{incident}/notes"),
            json!({"by": "eve", "text": "x"}),
        ),
        (Method::POST, "/v1/replay".to_owned(), Value::Null),
        (Method::POST, "/v1/tokens".to_owned(), json!({"name": "more"})),
        (
            Method::POST,
            format!("/v1/integrations/{}/rotate", created["id"].as_str().unwrap()),
            Value::Null,
        ),
        (
            Method::DELETE,
            format!("/v1/integrations/{}", created["id"].as_str().unwrap()),
            Value::Null,
        ),
        (Method::GET, "/v1/tokens".to_owned(), Value::Null),
        (Method::DELETE, format!("/v1/tokens/{}", issued["id"].as_str().unwrap()), Value::Null),
        (
            Method::GET,
            format!("/v1/integrations/{}/deliveries", created["id"].as_str().unwrap()),
            Value::Null,
        ),
    ];
    let head = server.head();
    for (method, path, body) in writes {
        let (status, error) = with_token(&server, method.clone(), &path, &reader, body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "reader {method} {path}"
        );
    }
    assert_eq!(server.head(), head, "nothing a reader tried was written");

    let (status, revoked) =
        server.delete_admin(&format!("/v1/tokens/{}", issued["id"].as_str().unwrap())).await;
    assert_eq!((status, revoked["status"].as_str()), (StatusCode::OK, Some("revoked")));
    let (status, error) =
        with_token(&server, Method::GET, "/v1/incidents", &reader, Value::Null).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized")),
        "a revoked token is refused"
    );
    let (_, kinds) = server.get("/v1/events?kind=api_token_revoked").await;
    assert_eq!(
        kinds["events"].as_array().unwrap().len(),
        1,
        "issuing and revoking tokens are events"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_tokens_keep_working_for_the_grace_period_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("rotation").await;
    let id = created["id"].as_str().unwrap();
    let first = created["webhook_url"].as_str().unwrap().to_owned();

    let (status, rotated) =
        server.post_admin(&format!("/v1/integrations/{id}/rotate"), Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["webhook_url"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert!(rotated["previous_token_valid_until"].is_string());
    server.deliver_run(&second, &run(MONITOR, 1, 0)).await;
    server.deliver_run(&first, &run(MONITOR, 1, 0)).await; // within the default 24 h grace

    // A second rotation ends the first token's grace at once; the second one now has a grace.
    let (_, third) = server.post_admin(&format!("/v1/integrations/{id}/rotate"), Value::Null).await;
    let (status, _) = server.deliver(&first, run(MONITOR, 1, 0).to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.deliver_run(&second, &run(MONITOR, 1, 0)).await;
    server.deliver_run(third["webhook_url"].as_str().unwrap(), &run(MONITOR, 0, 0)).await;
    let (_, events) = server.get("/v1/events?kind=integration_token_rotated").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 2, "rotations are events");

    // A rotation may cut the previous token off at once, for a leaked URL.
    let (status, cut) =
        server.post_admin(&format!("/v1/integrations/{id}/rotate"), json!({"grace_s": 0})).await;
    assert_eq!(status, StatusCode::OK, "{cut}");
    let (status, _) = server
        .deliver(third["webhook_url"].as_str().unwrap(), run(MONITOR, 1, 0).to_string())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "grace_s 0 ends the previous token at once");
    server.deliver_run(cut["webhook_url"].as_str().unwrap(), &run(MONITOR, 1, 0)).await;
    server.stop().await;

    // With no grace configured, the old token is refused right after the rotation.
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(dir.path(), |c| c.engine.rotation_grace = chrono::Duration::zero())
            .await;
    let created = server.create_integration("no grace").await;
    let old = created["webhook_url"].as_str().unwrap().to_owned();
    let (_, rotated) = server
        .post_admin(
            &format!("/v1/integrations/{}/rotate", created["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    let head = server.head();
    let (status, _) = server.deliver(&old, run(MONITOR, 1, 0).to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "past its grace the old token is refused");
    assert_eq!(server.head(), head);
    server.deliver_run(rotated["webhook_url"].as_str().unwrap(), &run(MONITOR, 1, 0)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_integration_and_deliveries_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let limit = RateLimit { per_second: 0.01, burst: 3.0 };
    let server = TestServer::start_with(dir.path(), |c| c.rate_limit = Some(limit)).await;
    let noisy = server.create_integration("noisy").await;
    let quiet = server.create_integration("quiet").await;
    let url = noisy["webhook_url"].as_str().unwrap();
    for _ in 0..3 {
        server.deliver_run(url, &run(MONITOR, 1, 0)).await;
    }
    let head = server.head();
    let response =
        server.client.post(url).body(run(MONITOR, 1, 0).to_string()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "Retry-After says when to come back");
    let (_, body) = common::read(response).await;
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(server.head(), head);
    server.deliver_run(quiet["webhook_url"].as_str().unwrap(), &run(MONITOR, 1, 0)).await;

    let (status, recent) =
        server.get(&format!("/v1/integrations/{}/deliveries", noisy["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    let outcomes: Vec<(u64, Option<&str>)> = recent["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["status"].as_u64().unwrap(), d["error_code"].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [(429, Some("rate_limited")), (202, None), (202, None), (202, None)],
        "newest first"
    );
    assert!(recent["deliveries"][1]["body_bytes"].as_u64().unwrap() > 100);
    assert!(!recent.to_string().contains("failedTests"), "bodies are never kept");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_make_deliveries_idempotent_forever() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let a = server.create_integration("a").await;
    let b = server.create_integration("b").await;
    let (url_a, url_b) = (
        a["webhook_url"].as_str().unwrap().to_owned(),
        b["webhook_url"].as_str().unwrap().to_owned(),
    );
    let send = |url: String, key: &'static str, body: String| {
        let client = server.client.clone();
        async move {
            common::read(
                client.post(url).header("idempotency-key", key).body(body).send().await.unwrap(),
            )
            .await
        }
    };

    let body = run(MONITOR, 2, 0).to_string();
    let (status, first) = send(url_a.clone(), "run-1", body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let head = server.head();
    // The same JSON, differently spaced, is the same body.
    let respaced = serde_json::to_string_pretty(&run(MONITOR, 2, 0)).unwrap();
    let (status, again) = send(url_a.clone(), "run-1", respaced).await;
    assert_eq!((status, &again), (StatusCode::ACCEPTED, &first), "the original answer");
    assert_eq!(server.head(), head, "and nothing appended");

    let (status, error) = send(url_a.clone(), "run-1", run(MONITOR, 0, 0).to_string()).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );
    let (status, other) = send(url_b.clone(), "run-1", body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "keys are per integration");
    assert_ne!(other["seq"], first["seq"]);

    // Concurrent repeats of a new key append once.
    let head = server.head();
    let repeats =
        futures_util::future::join_all((0..8).map(|_| send(url_a.clone(), "run-2", body.clone())))
            .await;
    assert!(repeats.iter().all(|(s, r)| *s == StatusCode::ACCEPTED && *r == repeats[0].1));
    assert_eq!(server.head(), head + 1);
    server.stop().await;

    // Forever: the key survives a restart, from the checkpoint and from a refold of the log.
    for refold in [false, true] {
        if refold {
            let store = incidentd::store::Store::open(dir.path(), &Default::default()).unwrap();
            store.clear_checkpoint().unwrap();
        }
        let server = TestServer::start(dir.path()).await;
        let url = url_a.replace(&url_a[..url_a.find("/v1/").unwrap()], &server.base);
        let head = server.head();
        let (status, replayed) = send_to(&server, &url, "run-1", body.clone()).await;
        assert_eq!((status, replayed), (StatusCode::ACCEPTED, first.clone()), "refold: {refold}");
        assert_eq!(server.head(), head);
        server.stop().await;
    }
}

async fn send_to(server: &TestServer, url: &str, key: &str, body: String) -> (StatusCode, Value) {
    common::read(
        server.client.post(url).header("idempotency-key", key).body(body).send().await.unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_for_operator_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("ops").await;
    let id = created["id"].as_str().unwrap();
    for path in [format!("/v1/integrations/{id}/deliveries"), "/v1/tokens".to_owned()] {
        let (status, _) = with_token(&server, Method::GET, &path, "not-a-token", Value::Null).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _) = with_token(&server, Method::GET, &path, ADMIN_TOKEN, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (status, _) =
        server.get("/v1/integrations/00000000-0000-0000-0000-000000000000/deliveries").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}
