//! The OpenAPI document: served at `/openapi.json`, identical to the checked-in
//! `docs/openapi.json`, and covering every route the server answers.

mod common;

use common::TestServer;
use serde_json::Value;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// Fails when the code's API description and `docs/openapi.json` differ. To accept a change, run
/// `UPDATE_OPENAPI=1 cargo test --test openapi` and review the diff.
#[test]
fn the_checked_in_document_is_current() {
    let generated = incidentd::api::openapi::document();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test --test openapi`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_it_and_it_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let response = server.client.get(format!("{}/openapi.json", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    let generated: Value = serde_json::from_str(&incidentd::api::openapi::document()).unwrap();
    assert_eq!(served, generated);

    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    let paths = served["paths"].as_object().unwrap();
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/integrations", "post"),
        ("/v1/integrations", "get"),
        ("/v1/integrations/{id}", "delete"),
        ("/v1/integrations/{id}/rotate", "post"),
        ("/v1/integrations/{id}/deliveries", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens", "get"),
        ("/v1/tokens/{id}", "delete"),
        ("/v1/hooks/postman/{token}", "post"),
        ("/v1/incidents", "get"),
        ("/v1/incidents/{id}", "get"),
        ("/v1/incidents/{id}/acknowledge", "post"),
        ("/v1/incidents/{id}/notes", "post"),
        ("/v1/monitors", "get"),
        ("/v1/monitors/{monitor_uid}", "get"),
        ("/v1/monitors/{monitor_uid}/history", "get"),
        ("/v1/events", "get"),
        ("/v1/state", "get"),
        ("/v1/replay", "post"),
        ("/v1/audit/verify", "get"),
    ];
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "no undocumented or stray operations");
    for (path, method) in expected {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} has a success");
        if path != "/healthz" && path != "/readyz" {
            assert!(
                responses.keys().any(|s| s.starts_with('4')),
                "{method} {path} documents errors"
            );
        }
        // Every route the document names is one the server routes (a 404 here would mean a
        // documented path the server does not know).
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{token}", "x")
            .replace("{monitor_uid}", "m");
        let answered = server
            .client
            .request(method.to_uppercase().parse().unwrap(), format!("{}{concrete}", server.base))
            .send()
            .await
            .unwrap();
        let body: Value = answered.json().await.unwrap_or(Value::Null);
        assert_ne!(body["error"]["message"], "route not found", "{method} {path}");
        assert_ne!(answered_status(&body), Some("method_not_allowed"), "{method} {path}");
    }
    assert!(served["components"]["schemas"]["ErrorBody"].is_object());
    let mut refs = Vec::new();
    collect_refs(&served, &mut refs);
    for reference in refs {
        let name = reference.strip_prefix("#/components/schemas/").expect("a schema reference");
        assert!(served["components"]["schemas"][name].is_object(), "{reference} resolves");
    }
    assert!(served["components"]["securitySchemes"]["bearer"].is_object());
    server.stop().await;
}

/// Every `$ref` in the document.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => collect_refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}

fn answered_status(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}
