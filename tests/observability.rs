//! Health, readiness and Prometheus metrics over real HTTP.

mod common;

use common::{run, TestServer, ADMIN_TOKEN};
use reqwest::StatusCode;

const MONITOR: &str = "24130357-1edc7a3b-2f8e-4c65-b0d9-6a4e8f21c7d3";

/// The value of one sample in a Prometheus text exposition, by its full name with labels.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("metrics").await;
    let id = created["id"].as_str().unwrap();
    let url = created["webhook_url"].as_str().unwrap();
    server.deliver_run(url, &run(MONITOR, 1, 0)).await;
    server.deliver_run(url, &run(MONITOR, 1, 0)).await;
    server.deliver_run(url, &run("other", 0, 0)).await;
    let (status, _) = server.deliver(url, "{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        server.deliver(&format!("{}/v1/hooks/postman/whk_nope", server.base), "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let response = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "metrics need a token");
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();

    let delivered = |status: &str| {
        sample(
            &text,
            &format!("incidentd_deliveries_total{{integration=\"{id}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(delivered("202"), Some(3.0), "{text}");
    assert_eq!(delivered("400"), Some(1.0));
    assert_eq!(
        sample(&text, "incidentd_deliveries_total{integration=\"unknown\",status=\"404\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "incidentd_ingest_seconds_count"), Some(3.0));
    assert_eq!(sample(&text, "incidentd_log_head_seq"), Some(4.0));
    assert_eq!(sample(&text, "incidentd_open_incidents"), Some(1.0));
    let batches = sample(&text, "incidentd_commit_batch_events_count").unwrap();
    let events = sample(&text, "incidentd_commit_batch_events_sum").unwrap();
    assert!(batches >= 1.0 && events == 4.0, "every event went through a counted fsync: {text}");
    assert_eq!(sample(&text, "incidentd_fsync_seconds_count"), Some(batches));

    server.post_admin("/v1/replay", serde_json::Value::Null).await;
    let text = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&text, "incidentd_replays_total"), Some(1.0));
    assert_eq!(sample(&text, "incidentd_replay_seconds_count"), Some(1.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let (status, health) = server.get("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));
    let response = server.client.get(format!("{}/readyz", server.base)).send().await.unwrap();
    let (status, ready) = common::read(response).await;
    assert_eq!(
        (status, ready["status"].as_str(), ready["head_seq"].as_u64()),
        (StatusCode::OK, Some("ready"), Some(0))
    );
    server.stop().await;
}
