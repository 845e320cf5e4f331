//! Request handlers: parse at the edge, call the engine, render a DTO.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::Admin;
use super::dto::*;
use super::error::ApiError;
use super::AppState;
use crate::domain::{
    parse_run, IncidentId, IncidentStatus, IntegrationId, MonitorKey, MonitorUid, RunReport, Seq,
    Transition,
};

type Data = web::Data<AppState>;

pub async fn healthz(state: Data) -> HttpResponse {
    if state.engine.is_healthy() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
    } else {
        HttpResponse::from_error(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is not accepting writes; see its log",
        ))
    }
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

#[derive(Deserialize)]
pub struct CreateIntegration {
    name: String,
}

pub async fn create_integration(
    _: Admin,
    state: Data,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, state.body_limit).await?;
    let request: CreateIntegration = json_body(&body)?;
    let created = state.engine.create_integration(&request.name).await?;
    Ok(HttpResponse::Created().json(CreatedIntegrationDto {
        id: created.integration.id,
        name: created.integration.name,
        created_at: created.integration.created_at,
        webhook_url: format!("{}/v1/hooks/postman/{}", state.public_url, created.token),
        token: created.token,
    }))
}

pub async fn list_integrations(_: Admin, state: Data) -> HttpResponse {
    let integrations = state
        .engine
        .state()
        .integrations()
        .map(IntegrationDto::from)
        .collect();
    HttpResponse::Ok().json(IntegrationList { integrations })
}

fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("{what} {raw}")))
}

pub async fn revoke_integration(
    _: Admin,
    state: Data,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: IntegrationId = parse_id(&path, "integration")?;
    let integration = state.engine.revoke_integration(id).await?;
    Ok(HttpResponse::Ok().json(IntegrationDto::from(&integration)))
}

pub async fn ingest(
    state: Data,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    // Refuse unknown tokens before reading the body, so that nobody learns anything about
    // validation without a live URL. The writer checks the token again when it appends.
    if state.engine.hook_integration(&token).is_none() {
        return Err(ApiError::unknown_webhook());
    }
    let body = read_body(payload, state.body_limit).await?;
    let run = parse_run(&body)?;
    let receipt = state
        .engine
        .ingest(&token, run)
        .await
        .map_err(|e| match e {
            crate::engine::EngineError::NotFound(_) => ApiError::unknown_webhook(),
            other => other.into(),
        })?;
    Ok(HttpResponse::Accepted().json(IngestResponse::from(receipt)))
}

#[derive(Deserialize)]
pub struct IncidentQuery {
    status: Option<IncidentStatus>,
    monitor_uid: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// Cursors are opaque to clients; inside, one names the opening seq of the last incident shown.
fn encode_cursor(seq: Seq) -> String {
    format!("i{:x}", seq.0)
}

fn decode_cursor(cursor: &str) -> Result<Seq, ApiError> {
    cursor
        .strip_prefix('i')
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .map(Seq)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "`cursor` is not a cursor this API returned",
            )
        })
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_LIMIT}, got {n}"),
        )),
    }
}

pub async fn list_incidents(
    _: Admin,
    state: Data,
    query: web::Query<IncidentQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let projection = state.engine.state();
    let mut matching = projection.incidents_newest_first(before).filter(|i| {
        query.status.is_none_or(|s| s == i.status)
            && query
                .monitor_uid
                .as_deref()
                .is_none_or(|u| u == i.monitor_uid.as_str())
    });
    let incidents: Vec<IncidentDto> = matching
        .by_ref()
        .take(limit)
        .map(IncidentDto::from)
        .collect();
    let next_cursor = match (incidents.last(), matching.next()) {
        (Some(last), Some(_)) => Some(encode_cursor(last.opened_seq)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(IncidentList {
        incidents,
        next_cursor,
    }))
}

pub async fn get_incident(
    _: Admin,
    state: Data,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: IncidentId = parse_id(&path, "incident")?;
    let (incident, runs) = {
        let projection = state.engine.state();
        let incident = projection
            .incident(id)
            .ok_or_else(|| ApiError::not_found(format!("incident {id}")))?;
        (
            IncidentDto::from(incident),
            projection.incident_runs(incident).to_vec(),
        )
    };
    let engine = state.engine.clone();
    let resolved_seq = incident.resolved_seq;
    // Reading a long timeline from the log is blocking I/O: keep it off the async workers.
    let timeline = web::block(move || {
        runs.iter()
            .enumerate()
            .map(|(n, seq)| {
                let event = engine.event(*seq)?.ok_or_else(|| {
                    crate::engine::EngineError::Corrupt(format!("event {seq} is missing"))
                })?;
                let crate::domain::EventBody::MonitorRunReported { payload, .. } = &event.body
                else {
                    return Err(crate::engine::EngineError::Corrupt(format!(
                        "event {seq} is not a run"
                    )));
                };
                let report = RunReport::from_payload(payload).map_err(|e| {
                    crate::engine::EngineError::Corrupt(format!("event {seq}: {e}"))
                })?;
                let transition = if n == 0 {
                    Transition::Opened
                } else if Some(*seq) == resolved_seq {
                    Transition::Resolved
                } else {
                    Transition::Ongoing
                };
                Ok(TimelineEntry {
                    seq: *seq,
                    at: event.recorded_at,
                    kind: event.body.kind(),
                    verdict: report.metrics.verdict(),
                    transition,
                    metrics: report.metrics,
                })
            })
            .collect::<Result<Vec<_>, crate::engine::EngineError>>()
    })
    .await
    .map_err(|_| ApiError::from(crate::engine::EngineError::Unavailable))??;
    Ok(HttpResponse::Ok().json(IncidentDetail { incident, timeline }))
}

#[derive(Deserialize)]
pub struct MonitorQuery {
    integration_id: Option<IntegrationId>,
}

pub async fn list_monitors(_: Admin, state: Data, query: web::Query<MonitorQuery>) -> HttpResponse {
    let monitors = state
        .engine
        .state()
        .monitors()
        .filter(|m| query.integration_id.is_none_or(|id| id == m.integration_id))
        .map(MonitorDto::from)
        .collect();
    HttpResponse::Ok().json(MonitorList { monitors })
}

pub async fn get_monitor(
    _: Admin,
    state: Data,
    path: web::Path<String>,
    query: web::Query<MonitorQuery>,
) -> Result<HttpResponse, ApiError> {
    let uid = MonitorUid::parse(&path)
        .map_err(|_| ApiError::not_found(format!("monitor {}", path.as_str())))?;
    let projection = state.engine.state();
    let monitor = match query.integration_id {
        Some(integration_id) => projection.monitor(&MonitorKey {
            monitor_uid: uid.clone(),
            integration_id,
        }),
        None => {
            let mut all = projection.monitors_with_uid(&uid);
            let first = all.next();
            let others: Vec<String> = all.map(|m| m.integration_id.to_string()).collect();
            if let (Some(first), false) = (first, others.is_empty()) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "ambiguous_monitor",
                    format!(
                        "monitor {uid} reports to several integrations ({}, {}); add ?integration_id=",
                        first.integration_id,
                        others.join(", ")
                    ),
                ));
            }
            first
        }
    };
    let monitor = monitor.ok_or_else(|| ApiError::not_found(format!("monitor {uid}")))?;
    Ok(HttpResponse::Ok().json(MonitorDto::from(monitor)))
}
