//! The HTTP API over real HTTP: the whole Postman story, validation of every shared sample,
//! authentication, paging, and what survives a restart.

mod common;

use common::{redact, run, samples, snapshot_settings, TestServer, ADMIN_TOKEN};
use incidentd::domain::Seq;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PAYMENTS: &str = "24130357-1edc7a3b-2f8e-4c65-b0d9-6a4e8f21c7d3";
const STATUS_PAGE: &str = "24130357-7c2b9e40-1d6f-4a83-9e05-b3c8f1d2a6e7";

/// The seed's story: failures open one incident, more failures join it, a pass resolves it, a new
/// failure opens a new one, and two monitors posting to one URL stay apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let settings = snapshot_settings();
    let _guard = settings.bind_to_scope();

    let created = server.create_integration("Payments team").await;
    insta::assert_json_snapshot!("api_integration_created", redact(&created));
    let token = created["token"].as_str().unwrap();
    assert!(token.len() >= 4 + 32, "a token carries at least 128 bits");
    let url = created["webhook_url"].as_str().unwrap();
    assert_eq!(url, format!("{}/v1/hooks/postman/{token}", server.base));

    let opened = server.deliver_run(url, &run(PAYMENTS, 2, 0)).await;
    insta::assert_json_snapshot!("api_ingest_opened", redact(&opened));
    assert_eq!(opened["seq"], 2, "the integration is event 1");
    let first_incident = opened["incident"]["id"].clone();

    let ongoing = server.deliver_run(url, &run(PAYMENTS, 0, 1)).await;
    assert_eq!(
        (ongoing["transition"].as_str(), &ongoing["incident"]["id"]),
        (Some("ongoing"), &first_incident)
    );

    // A second monitor on the same URL gets its own incident.
    let other = server.deliver_run(url, &run(STATUS_PAGE, 1, 0)).await;
    assert_eq!(other["transition"], "opened");
    assert_ne!(other["incident"]["id"], first_incident);

    let resolved = server.deliver_run(url, &run(PAYMENTS, 0, 0)).await;
    insta::assert_json_snapshot!("api_ingest_resolved", redact(&resolved));
    assert_eq!(resolved["incident"]["id"], first_incident);

    let quiet = server.deliver_run(url, &run(PAYMENTS, 0, 0)).await;
    insta::assert_json_snapshot!("api_ingest_none", redact(&quiet));

    let reopened = server.deliver_run(url, &run(PAYMENTS, 3, 0)).await;
    assert_eq!(reopened["transition"], "opened");
    assert_ne!(
        reopened["incident"]["id"], first_incident,
        "a failure after a resolve is a new incident"
    );

    // The status page monitor is still failing, untouched by the payments monitor's recovery.
    let (_, list) = server.get("/v1/incidents").await;
    insta::assert_json_snapshot!("api_incident_list", redact(&list));
    let statuses: Vec<(&str, &str)> = list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["monitor_uid"].as_str().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [(PAYMENTS, "open"), (STATUS_PAGE, "open"), (PAYMENTS, "resolved")]);

    let (status, detail) =
        server.get(&format!("/v1/incidents/{}", first_incident.as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    insta::assert_json_snapshot!("api_incident_detail", redact(&detail));
    let timeline: Vec<(u64, &str)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["transition"].as_str().unwrap()))
        .collect();
    assert_eq!(timeline, [(2, "opened"), (3, "ongoing"), (5, "resolved")]);

    let (_, open_only) =
        server.get(&format!("/v1/incidents?status=open&monitor_uid={STATUS_PAGE}")).await;
    assert_eq!(open_only["incidents"].as_array().unwrap().len(), 1);

    let (_, monitors) = server.get("/v1/monitors").await;
    insta::assert_json_snapshot!("api_monitor_list", redact(&monitors));
    let (status, monitor) = server.get(&format!("/v1/monitors/{PAYMENTS}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (monitor["status"].as_str(), monitor["runs_seen"].as_u64()),
        (Some("failing"), Some(5))
    );
    assert_eq!(monitor["open_incident_id"], reopened["incident"]["id"]);

    let (_, integrations) = server.get("/v1/integrations").await;
    insta::assert_json_snapshot!("api_integration_list", redact(&integrations));
    assert!(!integrations.to_string().contains(token), "listing never shows the token");

    let id = created["id"].as_str().unwrap();
    let (status, revoked) = server.delete_admin(&format!("/v1/integrations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    insta::assert_json_snapshot!("api_integration_revoked", redact(&revoked));
    let (status, again) = server.delete_admin(&format!("/v1/integrations/{id}")).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    server.stop().await;
}

/// Every stored event carries its seq, id, schema version, kind, server time, integration,
/// monitor, verbatim payload and its place in the hash chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_keep_the_payload_verbatim_and_chain_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let settings = snapshot_settings();
    let _guard = settings.bind_to_scope();
    let created = server.create_integration("samples").await;
    let url = created["webhook_url"].as_str().unwrap();

    for (name, body) in samples("valid") {
        let (status, receipt) = server.deliver(url, body.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {receipt}");
        let event =
            server.running.engine.event(Seq(receipt["seq"].as_u64().unwrap())).unwrap().unwrap();
        let stored = serde_json::to_value(&event).unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        // Equal as JSON and with the keys in the order Postman sent them, unknown ones included.
        assert_eq!(stored["payload"], sent, "{name}");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&stored["payload"]), keys(&sent), "{name}");
        if name == "extra-fields.json" {
            insta::assert_json_snapshot!("stored_event_monitor_run_reported", redact(&stored));
        }
    }
    let first = server.running.engine.event(Seq(1)).unwrap().unwrap();
    insta::assert_json_snapshot!(
        "stored_event_integration_created",
        redact(&serde_json::to_value(&first).unwrap())
    );

    let mut prev = incidentd::domain::Digest256::GENESIS;
    for seq in 1..=server.head() {
        let event = server.running.engine.event(Seq(seq)).unwrap().unwrap();
        assert_eq!(event.prev_hash, prev, "event {seq} links to the one before");
        assert_eq!(event.computed_hash(), event.hash, "event {seq} hash covers its content");
        prev = event.hash;
    }
    server.stop().await;
}

/// Each shared invalid sample is refused with the documented status and a code naming the
/// problem, and the log does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_sample_is_refused_and_appends_nothing() {
    let expected: &[(&str, u16, &str, &str)] = &[
        ("array.json", 400, "not_an_object", "array"),
        ("empty-monitor-uid.json", 422, "invalid_field", "monitor_uid"),
        ("empty.txt", 400, "empty_body", "empty"),
        ("form-encoded.txt", 400, "invalid_json", "line 1, column 1"),
        ("missing-metrics.json", 422, "missing_field", "metrics"),
        ("missing-monitor-uid.json", 422, "missing_field", "monitor_uid"),
        ("negative-errors.json", 422, "invalid_field", "metrics.errors"),
        ("string-count.json", 422, "invalid_field", "metrics.failedTests"),
        ("truncated.json", 400, "invalid_json", "EOF"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("refusals").await;
    let url = created["webhook_url"].as_str().unwrap();
    let head = server.head();

    let invalid = samples("invalid");
    let names: Vec<&str> = invalid.iter().map(|(n, _)| n.as_str()).collect();
    let covered: Vec<&str> = expected.iter().map(|e| e.0).collect();
    assert_eq!(names, covered, "every shared invalid sample has an expectation");

    for ((name, body), (_, status, code, needle)) in invalid.into_iter().zip(expected) {
        let (got, error) = server.deliver(url, body).await;
        assert_eq!(got.as_u16(), *status, "{name}: {error}");
        assert_eq!(error["error"]["code"], *code, "{name}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{name}: {message:?} should name {needle:?}");
        assert_eq!(server.head(), head, "{name} appended nothing");
    }
    server.stop().await;
}

/// Unknown and revoked webhook tokens look the same from outside; admin routes need the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_admin_auth() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("to revoke").await;
    let url = created["webhook_url"].as_str().unwrap();
    server.deliver_run(url, &run(PAYMENTS, 1, 0)).await;

    let unknown = format!("{}/v1/hooks/postman/whk_{}", server.base, "0".repeat(64));
    let (status, unknown_body) = server.deliver(&unknown, run(PAYMENTS, 1, 0).to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    server.delete_admin(&format!("/v1/integrations/{}", created["id"].as_str().unwrap())).await;
    let head = server.head();
    let (status, revoked_body) = server.deliver(url, run(PAYMENTS, 1, 0).to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(revoked_body, unknown_body, "revoked and unknown tokens get the same body");
    assert_eq!(server.head(), head, "a refused delivery appends nothing");

    for (method, path) in
        [("GET", "/v1/integrations"), ("POST", "/v1/integrations"), ("GET", "/v1/incidents")]
    {
        for auth in [None, Some("Bearer wrong"), Some(ADMIN_TOKEN)] {
            let mut request = server
                .client
                .request(method.parse().unwrap(), format!("{}{path}", server.base))
                .body("{\"name\":\"x\"}");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let (status, body) = common::read(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {auth:?}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }

    let (status, body) = server.post_admin("/v1/integrations", json!({"name": "  "})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field"))
    );
    let (status, body) = server.post_admin("/v1/integrations", json!({"nom": "x"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("name"));
    server.stop().await;
}

/// Errors outside the handlers are JSON too: unknown routes, wrong methods, bad queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let settings = snapshot_settings();
    let _guard = settings.bind_to_scope();

    let (status, body) = server.get("/v1/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("api_error_unknown_route", body);

    let response = server.client.put(format!("{}/v1/incidents", server.base)).send().await.unwrap();
    let (status, body) = common::read(response).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    for query in ["limit=0", "limit=abc", "status=sleeping", "cursor=zzz"] {
        let (status, body) = server.get(&format!("/v1/incidents?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (status, body) = server.get("/v1/incidents/not-a-uuid").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    server.stop().await;
}

/// Incidents page newest first with an opaque cursor, and a uid shared by two integrations must
/// be disambiguated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_and_ambiguous_monitors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let a = server.create_integration("a").await;
    let b = server.create_integration("b").await;
    let url_a = a["webhook_url"].as_str().unwrap();
    for n in 0..5 {
        server.deliver_run(url_a, &run(&format!("mon-{n}"), 1, 0)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/incidents?limit=2&cursor={c}"),
            None => "/v1/incidents?limit=2".to_owned(),
        };
        let (status, page) = server.get(&query).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(
            page["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["monitor_uid"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["mon-4", "mon-3", "mon-2", "mon-1", "mon-0"]);

    server.deliver_run(b["webhook_url"].as_str().unwrap(), &run("mon-0", 0, 0)).await;
    let (status, body) = server.get("/v1/monitors/mon-0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ambiguous_monitor"))
    );
    let (status, body) = server
        .get(&format!("/v1/monitors/mon-0?integration_id={}", b["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("passing")));
    let (_, only_b) =
        server.get(&format!("/v1/monitors?integration_id={}", b["id"].as_str().unwrap())).await;
    assert_eq!(only_b["monitors"].as_array().unwrap().len(), 1);
    let (status, _) = server.get("/v1/monitors/unknown-monitor").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Everything a client can read, as one JSON value, to compare across restarts.
async fn everything(server: &TestServer) -> Value {
    let (_, incidents) = server.get("/v1/incidents?limit=500").await;
    let mut details = Vec::new();
    for incident in incidents["incidents"].as_array().unwrap() {
        details.push(
            server.get(&format!("/v1/incidents/{}", incident["id"].as_str().unwrap())).await.1,
        );
    }
    json!({
        "integrations": server.get("/v1/integrations").await.1,
        "monitors": server.get("/v1/monitors").await.1,
        "incidents": incidents,
        "details": details,
    })
}

/// A restart reads the same from the checkpoint plus the log; with the checkpoint deleted it
/// refolds the log to exactly the same state, incident ids included; ingest continues the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_state_and_projections_rebuild_identically() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("restart").await;
    let token = created["token"].as_str().unwrap().to_owned();
    let url = created["webhook_url"].as_str().unwrap().to_owned();
    for (uid, failed) in
        [(PAYMENTS, 1), (STATUS_PAGE, 2), (PAYMENTS, 1), (PAYMENTS, 0), (STATUS_PAGE, 1)]
    {
        server.deliver_run(&url, &run(uid, failed, 0)).await;
    }
    let before = everything(&server).await;
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let startup = server.running.engine.startup();
    assert_eq!(
        (startup.checkpoint, startup.events_folded),
        (Some(Seq(6)), 0),
        "a clean restart starts from the checkpoint, not from zero"
    );
    assert_eq!(everything(&server).await, before, "a restart reads the same");
    server.stop().await;

    {
        let store = incidentd::store::Store::open(dir.path(), &Default::default()).unwrap();
        store.clear_checkpoint().unwrap();
        assert!(store.load_checkpoint().unwrap().is_none());
    }
    let server = TestServer::start(dir.path()).await;
    assert_eq!(server.running.engine.startup().checkpoint, None, "the projections were refolded");
    assert_eq!(everything(&server).await, before, "a rebuild from the log reads the same");

    // The token handed out before the restarts still works (the port changed, the token did not),
    // and the chain goes on from the head.
    let url = format!("{}/v1/hooks/postman/{token}", server.base);
    let next = server.deliver_run(&url, &run(PAYMENTS, 1, 0)).await;
    assert_eq!(next["seq"], 7);
    let event = server.running.engine.event(Seq(7)).unwrap().unwrap();
    let previous = server.running.engine.event(Seq(6)).unwrap().unwrap();
    assert_eq!(event.prev_hash, previous.hash);
    server.stop().await;
}
