//! Request handlers: parse at the edge, call the engine, render a DTO.

use std::sync::Arc;

use actix_web::http::header::ContentType;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::{Admin, Reader};
use super::dto::*;
use super::error::{ApiError, ErrorBody};
use super::limits::Delivery;
use super::AppState;
use crate::audit::{ReplayReport, VerifyReport};
use crate::domain::{
    incident_timeline, parse_run, ApiTokenId, Event, EventBody, Incident, IncidentId,
    IncidentStatus, IntegrationId, Metrics, Monitor, MonitorKey, MonitorUid, Seq, State,
};
use crate::engine::{Engine, EngineError};

type Data = web::Data<AppState>;

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn healthz(state: Data) -> HttpResponse {
    if state.engine.is_healthy() {
        HttpResponse::Ok().json(Health { status: "ok", head_seq: None })
    } else {
        HttpResponse::from_error(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is not accepting writes; see its log",
        ))
    }
}

/// Ready for traffic: the store is open and the projections caught up (the engine opens before the
/// server binds), and writes are being accepted.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn readyz(state: Data) -> HttpResponse {
    if state.engine.is_healthy() {
        let head = state.engine.state().applied();
        HttpResponse::Ok().json(Health { status: "ready", head_seq: Some(head) })
    } else {
        HttpResponse::from_error(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is not accepting writes; see its log",
        ))
    }
}

/// Prometheus text exposition. Needs a reader or admin token, like every other read.
#[utoipa::path(get, path = "/metrics", tag = "health", security(("bearer" = [])), responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn metrics(_: Reader, state: Data) -> HttpResponse {
    let text = state.engine.metrics().render(&state.engine.state());
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text)
}

/// Reads the whole body, refusing it as soon as it exceeds the limit.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => ApiError::payload_too_large(limit),
            other => ApiError::bad_request("bad_body", format!("could not read the body: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads and parses a JSON request body (see `read_body` and `json_body`).
async fn read_json<T: DeserializeOwned>(
    payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    json_body(&read_body(payload, limit).await?)
}

/// Parses an admin request body: 400 when it is not JSON, 422 when it does not fit `T`.
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::unprocessable("invalid_field", e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "invalid_json",
                format!("the request body is not valid JSON: {e}"),
            ),
        }
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateIntegration {
    name: String,
}

#[utoipa::path(post, path = "/v1/integrations", tag = "integrations", security(("bearer" = [])), request_body = CreateIntegration, responses((status = 201, body = CreatedIntegrationDto), (status = 400, description = "Body not a JSON object", body = ErrorBody), (status = 422, description = "Body breaks the schema", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn create_integration(
    _: Admin,
    state: Data,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: CreateIntegration = read_json(payload, state.body_limit).await?;
    let created = state.engine.create_integration(&request.name).await?;
    Ok(HttpResponse::Created().json(CreatedIntegrationDto {
        id: created.integration.id,
        name: created.integration.name,
        created_at: created.integration.created_at,
        webhook_url: state.webhook_url(&created.token),
        token: created.token,
    }))
}

#[utoipa::path(get, path = "/v1/integrations", tag = "integrations", security(("bearer" = [])), responses((status = 200, body = IntegrationList), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody)))]
pub async fn list_integrations(_: Admin, state: Data) -> HttpResponse {
    let integrations = state.engine.state().integrations().map(IntegrationDto::from).collect();
    HttpResponse::Ok().json(IntegrationList { integrations })
}

fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(format!("{what} {raw}")))
}

#[utoipa::path(delete, path = "/v1/integrations/{id}", tag = "integrations", security(("bearer" = [])), params(("id" = String, Path, description = "The id")), responses((status = 200, body = IntegrationDto), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn revoke_integration(
    _: Admin,
    state: Data,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: IntegrationId = parse_id(&path, "integration")?;
    let integration = state.engine.revoke_integration(id).await?;
    Ok(HttpResponse::Ok().json(IntegrationDto::from(&integration)))
}

#[utoipa::path(post, path = "/v1/hooks/postman/{token}", tag = "webhook", params(("token" = String, Path, description = "The integration's webhook token"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters")), request_body = PostmanRun, responses((status = 202, description = "Durable", body = IngestResponse), (status = 400, description = "Body not a JSON object", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 413, description = "Body above the limit", body = ErrorBody), (status = 422, description = "Body breaks the schema", body = ErrorBody), (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn ingest(
    state: Data,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let token = path.into_inner();
    let metrics = state.engine.metrics();
    // Refuse unknown tokens before reading the body, so that nobody learns anything about
    // validation without a live URL. The writer checks the token again when it appends.
    let Some(integration_id) = state.engine.hook_integration(&token) else {
        metrics.deliveries.with_label_values(&["unknown", "404"]).inc();
        return Err(ApiError::unknown_webhook());
    };
    let mut body_bytes = 0;
    let result =
        accept_delivery(&state, &request, &token, integration_id, payload, &mut body_bytes).await;
    let (status, error_code, seq) = match &result {
        Ok(receipt) => (StatusCode::ACCEPTED.as_u16(), None, Some(receipt.seq)),
        Err(e) => (e.status.as_u16(), Some(e.code), None),
    };
    state
        .deliveries
        .record(integration_id, Delivery { at: Utc::now(), status, error_code, body_bytes, seq });
    metrics
        .deliveries
        .with_label_values(&[integration_id.to_string().as_str(), status.to_string().as_str()])
        .inc();
    if seq.is_some() {
        metrics.ingest_seconds.observe(started.elapsed().as_secs_f64());
    }
    Ok(HttpResponse::Accepted().json(IngestResponse::from(result?)))
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
        )),
    }
}

async fn accept_delivery(
    state: &AppState,
    request: &HttpRequest,
    token: &str,
    integration_id: IntegrationId,
    payload: web::Payload,
    body_bytes: &mut usize,
) -> Result<crate::engine::IngestReceipt, ApiError> {
    state
        .rate_limiter
        .check(integration_id, std::time::Instant::now())
        .map_err(ApiError::too_many_requests)?;
    let key = idempotency_key(request)?;
    let body = read_body(payload, state.body_limit).await?;
    *body_bytes = body.len();
    let run = parse_run(&body)?;
    state.engine.ingest(token, run, key).await.map_err(|e| match e {
        EngineError::NotFound(_) => ApiError::unknown_webhook(),
        other => other.into(),
    })
}

#[utoipa::path(get, path = "/v1/integrations/{id}/deliveries", tag = "integrations", security(("bearer" = [])), params(("id" = String, Path, description = "The id")), responses((status = 200, body = DeliveryList), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody)))]
pub async fn deliveries(
    _: Admin,
    state: Data,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: IntegrationId = parse_id(&path, "integration")?;
    if state.engine.state().integration(id).is_none() {
        return Err(ApiError::not_found(format!("integration {id}")));
    }
    Ok(HttpResponse::Ok().json(DeliveryList { deliveries: state.deliveries.recent(id) }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct Rotate {
    /// Seconds the previous token keeps working; the configured grace when absent.
    grace_s: Option<u32>,
}

#[utoipa::path(post, path = "/v1/integrations/{id}/rotate", tag = "integrations", security(("bearer" = [])), params(("id" = String, Path, description = "The id")), request_body(content = Option<Rotate>, description = "Optional"), responses((status = 200, body = RotatedIntegrationDto), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn rotate_integration(
    _: Admin,
    state: Data,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id: IntegrationId = parse_id(&path, "integration")?;
    let body = read_body(payload, state.body_limit).await?;
    // The body is optional: none (or `null`) rotates with the configured grace.
    let request: Rotate = if body.iter().all(u8::is_ascii_whitespace) {
        Rotate::default()
    } else {
        json_body::<Option<Rotate>>(&body)?.unwrap_or_default()
    };
    let grace = request.grace_s.map(|s| chrono::Duration::seconds(i64::from(s)));
    let rotated = state.engine.rotate_integration(id, grace).await?;
    Ok(HttpResponse::Ok().json(RotatedIntegrationDto {
        id: rotated.integration.id,
        name: rotated.integration.name,
        webhook_url: state.webhook_url(&rotated.token),
        token: rotated.token,
        rotated_at: rotated.integration.rotated_at,
        previous_token_valid_until: rotated.integration.previous_valid_until,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    name: String,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreateToken, responses((status = 201, body = CreatedTokenDto), (status = 400, description = "Body not a JSON object", body = ErrorBody), (status = 422, description = "Body breaks the schema", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn create_token(
    _: Admin,
    state: Data,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: CreateToken = read_json(payload, state.body_limit).await?;
    let (api_token, token) = state.engine.create_api_token(&request.name).await?;
    Ok(HttpResponse::Created()
        .json(CreatedTokenDto { token, api_token: ApiTokenDto::from(&api_token) }))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])), responses((status = 200, body = TokenList), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody)))]
pub async fn list_tokens(_: Admin, state: Data) -> HttpResponse {
    let tokens = state.engine.state().api_tokens().map(ApiTokenDto::from).collect();
    HttpResponse::Ok().json(TokenList { tokens })
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])), params(("id" = String, Path, description = "The id")), responses((status = 200, body = ApiTokenDto), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn revoke_token(
    _: Admin,
    state: Data,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: ApiTokenId = parse_id(&path, "API token")?;
    let revoked = state.engine.revoke_api_token(id).await?;
    Ok(HttpResponse::Ok().json(ApiTokenDto::from(&revoked)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// `open`, `acknowledged`, `resolved`, or `unresolved` (open or acknowledged).
    status: Option<StatusFilter>,
    monitor_uid: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The incident statuses a list can ask for: one status, or every one that still needs attention.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    Open,
    Acknowledged,
    Resolved,
    Unresolved,
}

impl StatusFilter {
    pub(super) fn admits(self, status: IncidentStatus) -> bool {
        match self {
            StatusFilter::Open => status == IncidentStatus::Open,
            StatusFilter::Acknowledged => status == IncidentStatus::Acknowledged,
            StatusFilter::Resolved => status == IncidentStatus::Resolved,
            StatusFilter::Unresolved => status != IncidentStatus::Resolved,
        }
    }
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// Cursors are opaque to clients; inside, one names the opening seq of the last incident shown.
fn encode_cursor(seq: Seq) -> String {
    format!("i{:x}", seq.0)
}

fn decode_cursor(cursor: &str) -> Result<Seq, ApiError> {
    cursor.strip_prefix('i').and_then(|hex| u64::from_str_radix(hex, 16).ok()).map(Seq).ok_or_else(
        || ApiError::bad_request("invalid_cursor", "`cursor` is not a cursor this API returned"),
    )
}

/// The page size asked for, 50 by default, refused outside `1..=max`.
pub(super) fn page_limit(limit: Option<usize>, max: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {max}, got {n}"),
        )),
    }
}

#[utoipa::path(get, path = "/v1/incidents", tag = "incidents", security(("bearer" = [])), params(IncidentQuery), responses((status = 200, body = IncidentList), (status = 400, description = "Invalid query parameter or cursor", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn list_incidents(
    _: Reader,
    state: Data,
    query: web::Query<IncidentQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit, MAX_LIMIT)?;
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let projection = state.engine.state();
    let mut matching = projection.incidents_newest_first(before).filter(|i| {
        query.status.is_none_or(|s| s.admits(i.status))
            && query.monitor_uid.as_deref().is_none_or(|u| u == i.monitor_uid.as_str())
    });
    let incidents: Vec<IncidentDto> =
        matching.by_ref().take(limit).map(IncidentDto::from).collect();
    let next_cursor = match (incidents.last(), matching.next()) {
        (Some(last), Some(_)) => Some(encode_cursor(last.opened_seq)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(IncidentList { incidents, next_cursor }))
}

#[utoipa::path(get, path = "/v1/incidents/{id}", tag = "incidents", security(("bearer" = [])), params(("id" = String, Path, description = "The id")), responses((status = 200, body = IncidentDetail), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn get_incident(
    _: Reader,
    state: Data,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: IncidentId = parse_id(&path, "incident")?;
    let engine = state.engine.clone();
    // Reading a long timeline from the log is blocking I/O: keep it off the async workers.
    let found = web::block(move || engine.incident_with_events(id)).await.map_err(blocking)??;
    let (incident, events) = found.ok_or_else(|| ApiError::not_found(format!("incident {id}")))?;
    let timeline = timeline_entries(&incident, &events)?;
    Ok(HttpResponse::Ok().json(IncidentDetail { incident: IncidentDto::from(&incident), timeline }))
}

/// An incident's events as timeline entries. A stored run whose payload no longer parses is a
/// corrupt log, not bad input.
pub(super) fn timeline_entries(
    incident: &Incident,
    events: &[Event],
) -> Result<Vec<TimelineEntry>, ApiError> {
    incident_timeline(incident, events)
        .iter()
        .map(TimelineEntry::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::from(EngineError::Corrupt(format!("stored payload: {e}"))))
}

/// A blocking task that could not finish (the runtime is shutting down).
pub(super) fn blocking(_: actix_web::error::BlockingError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server could not complete the request; see its log",
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Acknowledge {
    by: String,
    note: Option<String>,
}

#[utoipa::path(post, path = "/v1/incidents/{id}/acknowledge", tag = "incidents", security(("bearer" = [])), params(("id" = String, Path, description = "The id")), request_body = Acknowledge, responses((status = 200, body = ActionResponse), (status = 400, description = "Body not a JSON object", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Conflicts with the current state", body = ErrorBody), (status = 422, description = "Body breaks the schema", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn acknowledge(
    _: Admin,
    state: Data,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id: IncidentId = parse_id(&path, "incident")?;
    let request: Acknowledge = read_json(payload, state.body_limit).await?;
    let receipt = state.engine.acknowledge(id, &request.by, request.note.as_deref()).await?;
    Ok(HttpResponse::Ok().json(ActionResponse::from(receipt)))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct AddNote {
    by: String,
    text: String,
}

#[utoipa::path(post, path = "/v1/incidents/{id}/notes", tag = "incidents", security(("bearer" = [])), params(("id" = String, Path, description = "The id")), request_body = AddNote, responses((status = 201, body = ActionResponse), (status = 400, description = "Body not a JSON object", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Body breaks the schema", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn add_note(
    _: Admin,
    state: Data,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id: IncidentId = parse_id(&path, "incident")?;
    let request: AddNote = read_json(payload, state.body_limit).await?;
    let receipt = state.engine.add_note(id, &request.by, &request.text).await?;
    Ok(HttpResponse::Created().json(ActionResponse::from(receipt)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MonitorQuery {
    integration_id: Option<IntegrationId>,
}

#[utoipa::path(get, path = "/v1/monitors", tag = "monitors", security(("bearer" = [])), params(MonitorQuery), responses((status = 200, body = MonitorList), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn list_monitors(
    _: Reader,
    state: Data,
    query: web::Query<MonitorQuery>,
) -> HttpResponse {
    let monitors = state
        .engine
        .state()
        .monitors()
        .filter(|m| query.integration_id.is_none_or(|id| id == m.integration_id))
        .map(MonitorDto::from)
        .collect();
    HttpResponse::Ok().json(MonitorList { monitors })
}

/// The monitor a path names: by uid, disambiguated by `integration_id` when the uid reports to
/// several integrations.
fn find_monitor<'a>(
    projection: &'a State,
    uid: &str,
    integration_id: Option<IntegrationId>,
) -> Result<&'a Monitor, ApiError> {
    let not_found = || ApiError::not_found(format!("monitor {uid}"));
    let uid = MonitorUid::parse(uid).map_err(|_| not_found())?;
    if let Some(integration_id) = integration_id {
        let key = MonitorKey { monitor_uid: uid, integration_id };
        return projection.monitor(&key).ok_or_else(not_found);
    }
    let mut all = projection.monitors_with_uid(&uid);
    let first = all.next().ok_or_else(not_found)?;
    let others: Vec<String> = all.map(|m| m.integration_id.to_string()).collect();
    if others.is_empty() {
        Ok(first)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous_monitor",
            format!(
                "monitor {uid} reports to several integrations ({}, {}); add ?integration_id=",
                first.integration_id,
                others.join(", ")
            ),
        ))
    }
}

#[utoipa::path(get, path = "/v1/monitors/{monitor_uid}", tag = "monitors", security(("bearer" = [])), params(("monitor_uid" = String, Path), MonitorQuery), responses((status = 200, body = MonitorDto), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "The uid reports to several integrations; name one", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn get_monitor(
    _: Reader,
    state: Data,
    path: web::Path<String>,
    query: web::Query<MonitorQuery>,
) -> Result<HttpResponse, ApiError> {
    let projection = state.engine.state();
    let monitor = find_monitor(&projection, &path, query.integration_id)?;
    Ok(HttpResponse::Ok().json(MonitorDto::from(monitor)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    integration_id: Option<IntegrationId>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/monitors/{monitor_uid}/history", tag = "monitors", security(("bearer" = [])), params(("monitor_uid" = String, Path), HistoryQuery), responses((status = 200, body = MonitorHistory), (status = 400, description = "Invalid query parameter or cursor", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn monitor_history(
    _: Reader,
    state: Data,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit, MAX_LIMIT)?;
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let (monitor, runs, incidents) = {
        let projection = state.engine.state();
        let monitor = find_monitor(&projection, &path, query.integration_id)?;
        let runs = projection.runs(&monitor.key()).to_vec();
        let incidents: Vec<Incident> =
            projection.monitor_incidents(&monitor.key()).cloned().collect();
        (MonitorDto::from(monitor), runs, incidents)
    };
    let engine = state.engine.clone();
    let (from, to) = (query.from, query.to);
    // Newest first: skip runs at or after the cursor and those later than `to`; stop at the first
    // run earlier than `from`, since the log's times follow its order.
    let page = web::block(move || -> Result<(Vec<RunDto>, bool), EngineError> {
        let mut page = Vec::new();
        let mut older = runs.iter().rev().filter(|s| before.is_none_or(|b| **s < b));
        for seq in older.by_ref() {
            let (at, metrics) = stored_run(&engine, *seq)?;
            if to.is_some_and(|to| at > to) {
                continue;
            }
            if from.is_some_and(|from| at < from) {
                return Ok((page, false));
            }
            page.push(RunDto {
                seq: *seq,
                at,
                verdict: metrics.verdict(),
                metrics,
                incident_id: None,
            });
            if page.len() == limit {
                break;
            }
        }
        // Another page exists when an older run is still within `from`.
        let more = match older.next() {
            None => false,
            Some(seq) => match from {
                None => true,
                Some(from) => stored_run(&engine, *seq)?.0 >= from,
            },
        };
        Ok((page, more))
    })
    .await
    .map_err(blocking)??;
    let (mut runs, more) = page;
    let mut shown: Vec<IncidentDto> = Vec::new();
    for run in &mut runs {
        let incident = incidents
            .iter()
            .find(|i| i.opened_seq <= run.seq && i.resolved_seq.is_none_or(|r| run.seq <= r));
        if let Some(incident) = incident {
            run.incident_id = Some(incident.id);
            if !shown.iter().any(|i| i.id == incident.id) {
                shown.push(IncidentDto::from(incident));
            }
        }
    }
    let next_cursor = match (runs.last(), more) {
        (Some(last), true) => Some(encode_cursor(last.seq)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(MonitorHistory { monitor, runs, incidents: shown, next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    after: Option<u64>,
    limit: Option<usize>,
    monitor_uid: Option<String>,
    kind: Option<String>,
}

const MAX_EVENT_PAGE: usize = 1000;
/// Events read per step of an NDJSON export: enough to amortise the blocking hop, small enough
/// that the export runs in constant memory.
const EXPORT_CHUNK: usize = 512;

/// The durable events after `after` that `keep` accepts, one JSON object per line. The export ends
/// at the head as it is when it starts; it reads the log in chunks, so memory stays constant
/// however long the log is.
pub(super) fn ndjson_export(
    engine: Arc<Engine>,
    after: Seq,
    keep: impl Fn(&Event) -> bool + Send + Sync + 'static,
) -> HttpResponse {
    let head = engine.state().applied();
    let keep = Arc::new(keep);
    let chunks = futures_util::stream::try_unfold(after, move |after| {
        let engine = engine.clone();
        let keep = keep.clone();
        async move {
            if after >= head {
                return Ok(None);
            }
            let (lines, last) = web::block(move || -> Result<_, EngineError> {
                let events = engine.events_after(after, EXPORT_CHUNK, |_| true)?;
                let last = events.last().map_or(head, |e| e.seq).min(head);
                let mut lines = Vec::new();
                for event in events.iter().filter(|e| e.seq <= head && keep(e)) {
                    serde_json::to_writer(&mut lines, event).expect("event serializes");
                    lines.push(b'\n');
                }
                Ok((lines, last))
            })
            .await
            .map_err(blocking)?
            .map_err(ApiError::from)?;
            Ok::<_, ApiError>(Some((web::Bytes::from(lines), last)))
        }
    });
    HttpResponse::Ok().content_type("application/x-ndjson").streaming(chunks)
}

/// The time and metrics of the run stored at `seq`, which the projection lists among a monitor's
/// runs. Blocking: reads the log.
pub(super) fn stored_run(
    engine: &Engine,
    seq: Seq,
) -> Result<(DateTime<Utc>, Metrics), EngineError> {
    let event = engine
        .event(seq)?
        .ok_or_else(|| EngineError::Corrupt(format!("event {seq} is missing")))?;
    let EventBody::MonitorRunReported { payload, .. } = &event.body else {
        return Err(EngineError::Corrupt(format!("event {seq} is not a run")));
    };
    let report = payload.report().map_err(|e| EngineError::Corrupt(format!("event {seq}: {e}")))?;
    Ok((event.recorded_at, report.metrics))
}

#[utoipa::path(get, path = "/v1/events", tag = "audit", security(("bearer" = [])), params(EventQuery), responses((status = 200, body = EventPage, description = "A page; with Accept: application/x-ndjson, every event as one JSON object per line"), (status = 400, description = "Invalid query parameter or cursor", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn list_events(
    _: Reader,
    state: Data,
    request: HttpRequest,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let EventQuery { after, limit, monitor_uid, kind } = query.into_inner();
    if let Some(kind) = &kind {
        if !EventBody::KINDS.contains(&kind.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`kind` must be one of {}, got {kind:?}", EventBody::KINDS.join(", ")),
            ));
        }
    }
    let after = Seq(after.unwrap_or(0));
    let keep = move |e: &Event| {
        kind.as_deref().is_none_or(|k| k == e.body.kind())
            && monitor_uid
                .as_deref()
                .is_none_or(|u| e.monitor_uid().is_some_and(|m| m.as_str() == u))
    };
    let wants_ndjson = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let engine = state.engine.clone();
    if wants_ndjson {
        return Ok(ndjson_export(engine, after, keep));
    }
    let limit = match limit.unwrap_or(100) {
        n @ 1..=MAX_EVENT_PAGE => n,
        n => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`limit` must be between 1 and {MAX_EVENT_PAGE}, got {n}"),
            ))
        }
    };
    // One more than asked, so that `next_after` is only given when another page really exists.
    let mut events = web::block(move || engine.events_after(after, limit + 1, keep))
        .await
        .map_err(blocking)??;
    let next_after = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(EventPage { events, next_after }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    at_seq: Option<u64>,
    as_of: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/v1/state", tag = "audit", security(("bearer" = [])), params(StateQuery), responses((status = 200, body = StateDto), (status = 400, description = "Invalid query parameter or cursor", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn state_at(
    _: Reader,
    state: Data,
    query: web::Query<StateQuery>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let head = engine.state().applied();
    let at = match (query.at_seq, query.as_of) {
        (Some(seq), None) if Seq(seq) <= head => Target::Seq(Seq(seq)),
        (Some(seq), None) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`at_seq` {seq} is beyond the head of the log ({head})"),
            ))
        }
        (None, Some(time)) => Target::Time(time),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give exactly one of `at_seq` (a seq) or `as_of` (an RFC 3339 time)",
            ))
        }
    };
    let folded = web::block(move || {
        let seq = match at {
            Target::Seq(seq) => seq,
            Target::Time(time) => engine.seq_as_of(time)?,
        };
        engine.state_at(seq)
    })
    .await
    .map_err(blocking)??;
    // At a million events the answer is over 100 MB of JSON. It is written on the blocking pool,
    // not on an HTTP worker, whose other connections would stall meanwhile, and sent in chunks as
    // it is written, so that neither the whole answer nor a DTO per entry is ever held at once.
    let (chunks, body) = tokio::sync::mpsc::channel(STATE_CHUNKS_IN_FLIGHT);
    let runtime = tokio::runtime::Handle::current();
    actix_web::rt::task::spawn_blocking(move || {
        let mut out = ChunkSender { chunks, runtime, buffer: Vec::with_capacity(STATE_CHUNK) };
        let written = serde_json::to_writer(&mut out, &StateBody(&folded))
            .map_err(std::io::Error::from)
            .and_then(|()| out.send())
            .and_then(|()| out.put(StatePart::End));
        if let Err(e) = written {
            // A client that hung up or stopped reading. Without the end marker the body stream
            // fails, and the connection is closed rather than the answer ended as if complete.
            tracing::debug!(error = %e, "state answer not sent in full");
        }
        // A state from the past was built for this answer alone, and even a copy of the head,
        // which shares its entries with the live state, leaves about 30 MB of map nodes and
        // buffers behind at 100,000 monitors.
        drop(folded);
        crate::memory::release_free_memory();
    });
    let body = futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.recv().await {
            Some(StatePart::Chunk(chunk)) => Some((Ok(chunk), Some(body))),
            Some(StatePart::End) => None,
            // The writer stopped before the end (it failed or panicked): fail the body, so that
            // the client sees a broken answer, not a short one.
            None => Some((Err(std::io::Error::other("the state answer was cut short")), None)),
        }
    });
    Ok(HttpResponse::Ok().content_type(ContentType::json()).streaming(body))
}

/// Bytes of a streamed state answer per chunk, and chunks queued ahead of the client.
const STATE_CHUNK: usize = 64 * 1024;
const STATE_CHUNKS_IN_FLIGHT: usize = 4;
/// How long a streamed state answer waits for a client that does not read: the answer holds a
/// thread of the blocking pool (shared with every blocking read of this worker) and a whole state.
const STATE_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the writer of a streamed state answer hands the response.
enum StatePart {
    Chunk(web::Bytes),
    /// The answer is complete.
    End,
}

/// Collects written bytes into chunks of [`STATE_CHUNK`] for a streamed answer. Writing fails once
/// the answer's receiver is gone (the client hung up) or the client has not taken a chunk for
/// [`STATE_SEND_TIMEOUT`], which stops the serializer.
struct ChunkSender {
    chunks: tokio::sync::mpsc::Sender<StatePart>,
    runtime: tokio::runtime::Handle,
    buffer: Vec<u8>,
}

impl ChunkSender {
    /// Sends what is buffered, waiting while the client is [`STATE_CHUNKS_IN_FLIGHT`] behind.
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(STATE_CHUNK));
        self.put(StatePart::Chunk(web::Bytes::from(chunk)))
    }

    fn put(&self, part: StatePart) -> std::io::Result<()> {
        let send = tokio::time::timeout(STATE_SEND_TIMEOUT, self.chunks.send(part));
        match self.runtime.block_on(send) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone")),
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client not reading")),
        }
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= STATE_CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Target {
    Seq(Seq),
    Time(DateTime<Utc>),
}

#[utoipa::path(post, path = "/v1/replay", tag = "audit", security(("bearer" = [])), responses((status = 200, body = ReplayReport), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "A reader token on an admin route", body = ErrorBody), (status = 503, description = "Writes stopped after a storage failure", body = ErrorBody)))]
pub async fn replay(_: Admin, state: Data) -> Result<HttpResponse, ApiError> {
    let report = state.engine.replay().await?;
    state.audit.replayed(&report);
    Ok(HttpResponse::Ok().json(report))
}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])), responses((status = 200, body = VerifyReport), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn verify(_: Reader, state: Data) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let report = web::block(move || engine.verify()).await.map_err(blocking)?;
    state.audit.verified(&report);
    Ok(HttpResponse::Ok().json(report))
}
