//! The HTTP API: routes, thin handlers and the JSON error table. The only module that knows HTTP.

mod auth;
mod console;
pub mod dto;
mod error;
mod handlers;
pub mod limits;
pub mod openapi;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};

use limits::{Deliveries, RateLimiter};

use crate::audit::{ReplayReport, VerifyReport};
use crate::domain::TokenHash;
use crate::engine::Engine;

pub use error::ApiError;

/// Everything the handlers need, shared by all workers.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub admin_token_hash: TokenHash,
    /// Base of the webhook URLs handed out, without a trailing slash.
    pub public_url: String,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    pub rate_limiter: RateLimiter,
    pub deliveries: Deliveries,
    pub audit: AuditRecord,
}

impl AppState {
    /// The webhook URL Postman posts to for an integration with this token.
    pub fn webhook_url(&self, token: &str) -> String {
        format!("{}/v1/hooks/postman/{token}", self.public_url)
    }
}

/// The last chain verification and the last replay this server ran, with when they finished, for
/// the console's audit page. Kept in memory: a restart starts without them.
#[derive(Default)]
pub struct AuditRecord {
    last: Mutex<LastChecks>,
}

#[derive(Default, Clone)]
pub struct LastChecks {
    pub verify: Option<(DateTime<Utc>, VerifyReport)>,
    pub replay: Option<(DateTime<Utc>, ReplayReport)>,
}

impl AuditRecord {
    pub fn verified(&self, report: &VerifyReport) {
        self.lock().verify = Some((Utc::now(), report.clone()));
    }

    pub fn replayed(&self, report: &ReplayReport) {
        self.lock().replay = Some((Utc::now(), report.clone()));
    }

    pub fn last(&self) -> LastChecks {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LastChecks> {
        // The record holds plain values; one left by a panicking thread is still whole.
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request path as it may be logged: the webhook token in a hook path is a secret. The hook
/// segment is searched anywhere in the path, not only at its start, so that `//v1/hooks/...` or a
/// path behind a prefixing proxy is redacted too; anything else that looks like one of our
/// tokens is hidden whole.
pub fn loggable_path(path: &str) -> String {
    const HOOK: &str = "/hooks/postman/";
    match path.find(HOOK) {
        Some(at) => format!("{}{HOOK}[redacted]", &path[..at]),
        None if ["whk_", "adm_", "rdr_"].iter().any(|p| path.contains(p)) => {
            "[path with a token, redacted]".to_owned()
        }
        None => path.to_owned(),
    }
}

/// The access log: one line per request with method, path (token redacted), status and latency.
/// Query strings are left out: they carry nothing an operator needs and could carry secrets.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = loggable_path(req.path());
    let response = next.call(req).await?;
    tracing::info!(
        target: "incidentd::access",
        %method,
        path = %path,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(response)
}

/// Registers every route. Unknown routes and wrong methods answer with JSON errors too.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(console::configure);
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        ApiError::bad_request("invalid_query", format!("invalid query string: {e}")).into()
    }))
    .service(resource("/healthz").route(web::get().to(handlers::healthz)))
    .service(resource("/readyz").route(web::get().to(handlers::readyz)))
    .service(resource("/openapi.json").route(web::get().to(|| async {
        HttpResponse::Ok().content_type("application/json").body(openapi::document())
    })))
    .service(resource("/metrics").route(web::get().to(handlers::metrics)))
    .service(
        resource("/v1/integrations")
            .route(web::post().to(handlers::create_integration))
            .route(web::get().to(handlers::list_integrations)),
    )
    .service(
        resource("/v1/integrations/{id}").route(web::delete().to(handlers::revoke_integration)),
    )
    .service(
        resource("/v1/integrations/{id}/rotate")
            .route(web::post().to(handlers::rotate_integration)),
    )
    .service(
        resource("/v1/integrations/{id}/deliveries").route(web::get().to(handlers::deliveries)),
    )
    .service(
        resource("/v1/tokens")
            .route(web::post().to(handlers::create_token))
            .route(web::get().to(handlers::list_tokens)),
    )
    .service(resource("/v1/tokens/{id}").route(web::delete().to(handlers::revoke_token)))
    .service(resource("/v1/hooks/postman/{token}").route(web::post().to(handlers::ingest)))
    .service(resource("/v1/incidents").route(web::get().to(handlers::list_incidents)))
    .service(resource("/v1/incidents/{id}").route(web::get().to(handlers::get_incident)))
    .service(
        resource("/v1/incidents/{id}/acknowledge").route(web::post().to(handlers::acknowledge)),
    )
    .service(resource("/v1/incidents/{id}/notes").route(web::post().to(handlers::add_note)))
    .service(resource("/v1/monitors").route(web::get().to(handlers::list_monitors)))
    .service(resource("/v1/monitors/{monitor_uid}").route(web::get().to(handlers::get_monitor)))
    .service(
        resource("/v1/monitors/{monitor_uid}/history")
            .route(web::get().to(handlers::monitor_history)),
    )
    .service(resource("/v1/events").route(web::get().to(handlers::list_events)))
    .service(resource("/v1/state").route(web::get().to(handlers::state_at)))
    .service(resource("/v1/replay").route(web::post().to(handlers::replay)))
    .service(resource("/v1/audit/verify").route(web::get().to(handlers::verify)))
    .default_service(web::to(|| async { HttpResponse::from_error(ApiError::not_found("route")) }));
}

/// A resource whose unsupported methods answer 405 with a JSON error.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|req: actix_web::HttpRequest| async move {
        HttpResponse::from_error(ApiError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed on {}", req.method(), req.path()),
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn tokens_never_reach_the_log() {
        let token = "whk_0123456789abcdef";
        for path in [
            format!("/v1/hooks/postman/{token}"),
            format!("//v1/hooks/postman/{token}"),
            format!("/incidentd/v1/hooks/postman/{token}/extra"),
            format!("/v2/elsewhere/{token}"),
        ] {
            let logged = loggable_path(&path);
            assert!(!logged.contains(token), "{path} logged as {logged}");
        }
        assert_eq!(loggable_path("/v1/incidents"), "/v1/incidents");
    }
}
