//! Shared harness for the HTTP tests: a real server on a random loopback port over a temporary
//! data directory, a client, the shared Postman samples and snapshot redaction.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};

use incidentd::server::{self, Running, ServeConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "adm_test-admin-token";

pub struct TestServer {
    pub running: Running,
    pub base: String,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(dir: &Path) -> TestServer {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts with the test defaults changed by `adjust`.
    pub async fn start_with(dir: &Path, adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let mut config = ServeConfig::new(dir, "127.0.0.1:0");
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
        config.workers = Some(2);
        adjust(&mut config);
        let running = server::start(config).await.expect("server starts");
        let base = format!("http://{}", running.addr);
        TestServer { running, base, client: reqwest::Client::new() }
    }

    pub async fn stop(self) {
        self.running.stop(true).await;
    }

    /// The seq of the last durable event, as the engine publishes it.
    pub fn head(&self) -> u64 {
        self.running.engine.state().applied().0
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        read(self.get_response(path).await).await
    }

    /// A GET with the admin token, its answer unread.
    pub async fn get_response(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request is sent")
    }

    pub async fn post_admin(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request is sent");
        read(response).await
    }

    pub async fn delete_admin(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request is sent");
        read(response).await
    }

    /// Creates an integration and returns its creation response.
    pub async fn create_integration(&self, name: &str) -> Value {
        let (status, body) = self.post_admin("/v1/integrations", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// POSTs a raw body to a webhook URL, as Postman does.
    pub async fn deliver(
        &self,
        webhook_url: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(webhook_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request is sent");
        read(response).await
    }

    pub async fn deliver_run(&self, webhook_url: &str, run: &Value) -> Value {
        let (status, body) = self.deliver(webhook_url, run.to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body is read");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"))
    };
    (status, value)
}

/// A monitor run as Postman posts it.
pub fn run(monitor_uid: &str, failed_tests: u32, errors: u32) -> Value {
    json!({
        "collection_name": "Payments API smoke",
        "collection_uid": "24130357-8f1d5a52-6c1e-4f1b-9a77-0c2d4b1a9e10",
        "environment_name": "production",
        "environment_uid": "24130357-3b9c2f0e-7d41-4b8e-a2c5-91e7f3d6b4a8",
        "metrics": {
            "errors": errors,
            "warnings": 0,
            "failedTests": failed_tests,
            "passedTests": 10,
            "requestCount": 6,
            "totalLatency": 1843
        },
        "monitor_name": format!("monitor {monitor_uid}"),
        "monitor_uid": monitor_uid,
        "user_id": "24130357",
        "user_name": "payments-team"
    })
}

/// The shared Postman samples (`../shared/postman` beside the repository).
pub fn samples(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/postman").join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!("the shared Postman samples are missing at {}: {e}", dir.display())
        })
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no samples in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("sample is readable"))
        })
        .collect()
}

/// Replaces values that differ between runs (ids, times, secrets, hashes) with placeholders, so
/// that snapshots pin the shape and the stable values only.
pub fn redact(value: &Value) -> Value {
    const VOLATILE: &[&str] = &[
        "id",
        "event_id",
        "integration_id",
        "open_incident_id",
        "incident_id",
        "token",
        "webhook_url",
        "created_at",
        "revoked_at",
        "acknowledged_at",
        "time_to_acknowledge_s",
        "time_to_resolve_s",
        "opened_at",
        "resolved_at",
        "last_run_at",
        "recorded_at",
        "at",
        "hash",
        "prev_hash",
        "token_hash",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if VOLATILE.contains(&k.as_str()) && !v.is_null() {
                        Value::String(format!("[{k}]"))
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// insta settings that put every snapshot in the top-level `snapshots/` folder.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}
