//! History, audit and replay over real HTTP: acknowledgements and notes as events, incident
//! timelines, monitor history, the raw log and its NDJSON export, time travel, online replay and
//! verification.

mod common;

use common::{redact, run, snapshot_settings, TestServer, ADMIN_TOKEN};
use incidentd::api::dto::StateDto;
use incidentd::domain::Seq;
use reqwest::StatusCode;
use serde_json::{json, Value};

const MONITOR: &str = "24130357-1edc7a3b-2f8e-4c65-b0d9-6a4e8f21c7d3";
const OTHER: &str = "24130357-7c2b9e40-1d6f-4a83-9e05-b3c8f1d2a6e7";

async fn get_text(server: &TestServer, path: &str, accept: &str) -> (StatusCode, String) {
    let response = server
        .client
        .get(format!("{}{path}", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    if accept.contains("ndjson") && status == StatusCode::OK {
        assert_eq!(content_type.as_deref(), Some("application/x-ndjson"));
    }
    (status, response.text().await.unwrap())
}

/// Opens an incident, acknowledges it with a note, adds a note, resolves it: the timeline tells
/// who knew what, when, and what each event did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_and_notes_make_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let settings = snapshot_settings();
    let _guard = settings.bind_to_scope();
    let created = server.create_integration("timeline").await;
    let url = created["webhook_url"].as_str().unwrap();

    let opened = server.deliver_run(url, &run(MONITOR, 2, 0)).await;
    let id = opened["incident"]["id"].as_str().unwrap().to_owned();
    let ack_path = format!("/v1/incidents/{id}/acknowledge");
    let notes_path = format!("/v1/incidents/{id}/notes");

    let (status, error) = server.post_admin(&ack_path, json!({"note": "no actor"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "`by` is required: {error}");
    let (status, error) = server.post_admin(&ack_path, json!({"by": " "})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field"))
    );

    let (status, acked) =
        server.post_admin(&ack_path, json!({"by": "alice", "note": "looking"})).await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    insta::assert_json_snapshot!("history_acknowledged", redact(&acked));
    assert_eq!(acked["incident"]["status"], "acknowledged");

    let (status, again) = server.post_admin(&ack_path, json!({"by": "bob"})).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    assert!(again["error"]["message"].as_str().unwrap().contains("already acknowledged by alice"));

    // A failing run keeps the acknowledgement; the passing one resolves.
    let ongoing = server.deliver_run(url, &run(MONITOR, 1, 0)).await;
    for (filter, count) in [("open", 0), ("acknowledged", 1), ("unresolved", 1)] {
        let (_, listed) = server.get(&format!("/v1/incidents?status={filter}")).await;
        assert_eq!(listed["incidents"].as_array().unwrap().len(), count, "status={filter}");
    }
    assert_eq!(
        (ongoing["transition"].as_str(), ongoing["incident"]["status"].as_str()),
        (Some("ongoing"), Some("acknowledged"))
    );
    let (status, noted) = server
        .post_admin(&notes_path, json!({"by": "bob", "text": "DNS flapping\nupstream"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{noted}");
    server.deliver_run(url, &run(MONITOR, 0, 0)).await;

    let (_, listed) = server.get("/v1/incidents?status=unresolved").await;
    assert_eq!(listed["incidents"].as_array().unwrap().len(), 0, "resolved is not unresolved");
    let (status, late) = server.post_admin(&ack_path, json!({"by": "carol"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a resolved incident cannot be acknowledged: {late}");
    let (status, _) =
        server.post_admin(&notes_path, json!({"by": "carol", "text": "post-mortem filed"})).await;
    assert_eq!(status, StatusCode::CREATED, "notes are welcome after resolution");

    let (status, missing) = server
        .post_admin(
            "/v1/incidents/6b1f0e52-3a87-4c0d-9f41-258e70c311a4/acknowledge",
            json!({"by": "x"}),
        )
        .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let (_, detail) = server.get(&format!("/v1/incidents/{id}")).await;
    insta::assert_json_snapshot!("history_incident_timeline", redact(&detail));
    let steps: Vec<(&str, Option<&str>, &str)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["kind"].as_str().unwrap(), e["actor"].as_str(), e["status_after"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("monitor_run_reported", None, "open"),
            ("incident_acknowledged", Some("alice"), "acknowledged"),
            ("monitor_run_reported", None, "acknowledged"),
            ("note_added", Some("bob"), "acknowledged"),
            ("monitor_run_reported", None, "resolved"),
            ("note_added", Some("carol"), "resolved"),
        ]
    );
    assert!(detail["time_to_acknowledge_s"].as_f64().unwrap() >= 0.0);
    assert!(
        detail["time_to_resolve_s"].as_f64().unwrap()
            >= detail["time_to_acknowledge_s"].as_f64().unwrap()
    );
    server.stop().await;
}

/// A monitor's runs page newest first, each naming its incident, and can be cut by time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_history_pages_runs_and_their_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("history").await;
    let url = created["webhook_url"].as_str().unwrap();
    let mut receipts = Vec::new();
    for (failed, monitor) in
        [(1, MONITOR), (0, OTHER), (1, MONITOR), (0, MONITOR), (0, MONITOR), (2, MONITOR)]
    {
        receipts.push(server.deliver_run(url, &run(monitor, failed, 0)).await);
    }
    let mut seqs = Vec::new();
    let mut incidents_seen = Vec::new();
    let mut path = format!("/v1/monitors/{MONITOR}/history?limit=2");
    loop {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for run in page["runs"].as_array().unwrap() {
            seqs.push(run["seq"].as_u64().unwrap());
            incidents_seen.push(run["incident_id"].clone());
        }
        for incident in page["incidents"].as_array().unwrap() {
            assert!(
                incidents_seen.contains(&incident["id"]),
                "page incidents are those of its runs"
            );
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/monitors/{MONITOR}/history?limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seqs, [7, 6, 5, 4, 2]);
    let first = &receipts[0]["incident"]["id"];
    let second = &receipts[5]["incident"]["id"];
    assert_eq!(
        incidents_seen,
        [second.clone(), Value::Null, first.clone(), first.clone(), first.clone()]
    );

    // Times follow log order, so `from` at the fourth run's time keeps the runs from it on.
    let event = server.running.engine.event(Seq(5)).unwrap().unwrap();
    let from = event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, page) = server.get(&format!("/v1/monitors/{MONITOR}/history?from={from}")).await;
    let got: Vec<u64> =
        page["runs"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, [7, 6, 5]);
    let (_, page) = server.get(&format!("/v1/monitors/{MONITOR}/history?to={from}")).await;
    let got: Vec<u64> =
        page["runs"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, [5, 4, 2]);
    server.stop().await;
}

/// The raw log pages and filters, and streams as NDJSON for archiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_pages_filters_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let settings = snapshot_settings();
    let _guard = settings.bind_to_scope();
    let created = server.create_integration("export").await;
    let url = created["webhook_url"].as_str().unwrap();
    let opened = server.deliver_run(url, &run(MONITOR, 1, 0)).await;
    server.deliver_run(url, &run(OTHER, 0, 0)).await;
    let id = opened["incident"]["id"].as_str().unwrap();
    server.post_admin(&format!("/v1/incidents/{id}/acknowledge"), json!({"by": "alice"})).await;
    server.deliver_run(url, &run(MONITOR, 0, 0)).await;

    let (_, page) = server.get("/v1/events?limit=2").await;
    let seqs: Vec<u64> =
        page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, page["next_after"].as_u64()), (vec![1, 2], Some(2)));
    let (_, rest) = server.get("/v1/events?after=2").await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 3);
    assert!(rest["next_after"].is_null());
    let (_, exact) = server.get("/v1/events?after=3&limit=2").await;
    assert_eq!(exact["events"].as_array().unwrap().len(), 2);
    assert!(exact["next_after"].is_null(), "a page that ends the log offers no next page");
    let (status, beyond) = server.get(&format!("/v1/events?after={}", u64::MAX)).await;
    assert_eq!((status, beyond["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));

    let (_, mine) = server.get(&format!("/v1/events?monitor_uid={MONITOR}")).await;
    let kinds: Vec<&str> =
        mine["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["monitor_run_reported", "incident_acknowledged", "monitor_run_reported"]);
    let (_, acks) = server.get("/v1/events?kind=incident_acknowledged").await;
    assert_eq!(acks["events"].as_array().unwrap().len(), 1);
    let (status, bad) = server.get("/v1/events?kind=everything").await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );

    let (status, ndjson) = get_text(&server, "/v1/events", "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    let (_, json_page) = server.get("/v1/events").await;
    assert_eq!(
        Value::Array(lines.clone()),
        json_page["events"],
        "the export is the log, event for event"
    );
    let redacted: Vec<Value> = lines.iter().map(redact).collect();
    insta::assert_json_snapshot!("history_ndjson_export", redacted);

    let (_, filtered) = get_text(
        &server,
        &format!("/v1/events?after=2&monitor_uid={MONITOR}"),
        "application/x-ndjson",
    )
    .await;
    let seqs: Vec<u64> = filtered
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5]);
    server.stop().await;
}

/// `state?at_seq=N` and `state?as_of=T` show the projections as they were then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_shows_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("time travel").await;
    let url = created["webhook_url"].as_str().unwrap();
    server.deliver_run(url, &run(MONITOR, 1, 0)).await;
    server.deliver_run(url, &run(MONITOR, 0, 0)).await;

    let (status, at_two) = server.get("/v1/state?at_seq=2").await;
    assert_eq!(status, StatusCode::OK, "{at_two}");
    assert_eq!(at_two["at_seq"], 2);
    assert_eq!(at_two["incidents"][0]["status"], "open");
    assert_eq!(at_two["monitors"][0]["status"], "failing");

    let (_, now) = server.get("/v1/state?at_seq=3").await;
    assert_eq!(now["incidents"][0]["status"], "resolved");
    let (_, live) = server.get("/v1/incidents").await;
    assert_eq!(now["incidents"], live["incidents"], "same shapes as the live API");

    let second = server.running.engine.event(Seq(2)).unwrap().unwrap();
    let as_of = second.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, then) = server.get(&format!("/v1/state?as_of={as_of}")).await;
    assert_eq!(then["at_seq"], 2);
    let (_, before_all) = server.get("/v1/state?as_of=2000-01-01T00:00:00Z").await;
    assert_eq!(
        (before_all["at_seq"].as_u64(), before_all["incidents"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );

    for bad in ["", "?at_seq=99", "?at_seq=1&as_of=2000-01-01T00:00:00Z", "?as_of=yesterday"] {
        let (status, body) = server.get(&format!("/v1/state{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // The answer is streamed in chunks; its bytes are exactly the JSON of the state's DTO, also
    // when it spans many chunks.
    for n in 0..200 {
        server.deliver_run(url, &run(&format!("streamed-{n:03}"), 1, 0)).await;
    }
    for seq in [0, 2, 3, server.head() - 1, server.head()] {
        let response = server.get_response(&format!("/v1/state?at_seq={seq}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let streamed = response.bytes().await.unwrap();
        let state = server.running.engine.state_at(Seq(seq)).unwrap();
        let expected = serde_json::to_vec(&StateDto::from(&state)).unwrap();
        assert!(seq < 10 || expected.len() > 2 * 64 * 1024, "{} bytes", expected.len());
        assert!(streamed[..] == expected[..], "at_seq={seq}: the streamed answer differs");
    }
    server.stop().await;
}

/// Online replay rebuilds identical projections while deliveries keep arriving, and the online
/// verification agrees with the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_replay_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("replay").await;
    let url = created["webhook_url"].as_str().unwrap().to_owned();
    for n in 0..30 {
        server.deliver_run(&url, &run(&format!("m{}", n % 4), n % 3, 0)).await;
    }
    let (_, before) = server.get("/v1/incidents?limit=500").await;

    // Deliveries keep going while replays run.
    let senders = async {
        for n in 0..40 {
            server.deliver_run(&url, &run(&format!("m{}", n % 5), n % 2, 0)).await;
        }
    };
    let replays = async {
        let mut reports = Vec::new();
        for _ in 0..3 {
            reports.push(server.post_admin("/v1/replay", json!({})).await);
        }
        reports
    };
    let ((), reports) = tokio::join!(senders, replays);
    for (status, report) in reports {
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["identical"], true, "{report}");
        assert_eq!(report["digest_before"], report["digest_after"]);
    }
    let (_, after_all) = server.get("/v1/incidents?limit=500").await;
    assert!(
        after_all["incidents"].as_array().unwrap().len()
            >= before["incidents"].as_array().unwrap().len()
    );

    let (status, verified) = server.get("/v1/audit/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["events"], 71);
    assert_eq!(verified["head_seq"], 71);
    let head = server.running.engine.event(Seq(71)).unwrap().unwrap();
    assert_eq!(verified["head_hash"], head.hash.to_hex());
    assert_eq!(verified["projection_digest"], server.running.engine.state().digest().to_hex());
    server.stop().await;
}

/// An export longer than one read chunk (512 events) streams every event exactly once, in order,
/// and stops at the head as it was when the request came in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ndjson_export_spans_many_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let engine = &server.running.engine;
    let token = engine.create_integration("long export").await.unwrap().token;
    let runs = (0..1300).map(|n| {
        let body = run(&format!("m{}", n % 7), n % 3, 0).to_string();
        let token = &token;
        async move {
            let parsed = incidentd::domain::parse_run(body.as_bytes()).unwrap();
            engine.ingest(token, parsed, None).await.unwrap()
        }
    });
    futures_util::future::join_all(runs).await;
    let (status, ndjson) = get_text(&server, "/v1/events?after=10", "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = ndjson
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (11..=1301).collect::<Vec<_>>());
    let (_, kind) =
        get_text(&server, "/v1/events?kind=integration_created", "application/x-ndjson").await;
    assert_eq!(kind.lines().count(), 1, "filters apply across chunks");
    server.stop().await;
}
