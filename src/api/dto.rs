//! The JSON shapes of the API, kept apart from the stored shapes so that either can change
//! without the other. insta snapshots in `snapshots/` pin them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{
    ApiToken, ApiTokenId, Event, EventBody, Incident, IncidentId, IncidentRef, IncidentStatus,
    Integration, IntegrationId, Metrics, Monitor, MonitorStatus, PayloadError, Role, Seq, State,
    TimelineStep, Transition, Verdict,
};
use crate::engine::{ActionReceipt, IngestReceipt};

#[derive(Serialize, utoipa::ToSchema)]
pub struct IntegrationDto {
    pub id: IntegrationId,
    pub name: String,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&Integration> for IntegrationDto {
    fn from(i: &Integration) -> Self {
        IntegrationDto {
            id: i.id,
            name: i.name.clone(),
            status: if i.is_active() { "active" } else { "revoked" },
            created_at: i.created_at,
            revoked_at: i.revoked_at,
        }
    }
}

/// Returned once, on creation: the only time the token and the URL that carries it are shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedIntegrationDto {
    pub id: IntegrationId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub token: String,
    pub webhook_url: String,
}

/// Returned once, on rotation: the new token and URL. The previous token keeps working until
/// `previous_token_valid_until`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedIntegrationDto {
    pub id: IntegrationId,
    pub name: String,
    pub token: String,
    pub webhook_url: String,
    pub rotated_at: Option<DateTime<Utc>>,
    pub previous_token_valid_until: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiTokenDto {
    pub id: ApiTokenId,
    pub name: String,
    pub role: Role,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiToken> for ApiTokenDto {
    fn from(t: &ApiToken) -> Self {
        ApiTokenDto {
            id: t.id,
            name: t.name.clone(),
            role: t.role,
            status: if t.is_active() { "active" } else { "revoked" },
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// Returned once, on creation: the only time the token is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedTokenDto {
    #[serde(flatten)]
    pub api_token: ApiTokenDto,
    pub token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<IntegrationDto>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IncidentRefDto {
    pub id: IncidentId,
    pub status: IncidentStatus,
}

impl From<IncidentRef> for IncidentRefDto {
    fn from(r: IncidentRef) -> Self {
        IncidentRefDto { id: r.id, status: r.status }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    pub seq: Seq,
    pub event_id: crate::domain::EventId,
    pub monitor_uid: String,
    pub verdict: Verdict,
    pub transition: Transition,
    pub incident: Option<IncidentRefDto>,
}

impl From<IngestReceipt> for IngestResponse {
    fn from(r: IngestReceipt) -> Self {
        IngestResponse {
            seq: r.seq,
            event_id: r.event_id,
            monitor_uid: r.monitor_uid.to_string(),
            verdict: r.verdict,
            transition: r.transition,
            incident: r.incident.map(Into::into),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IncidentDto {
    pub id: IncidentId,
    pub integration_id: IntegrationId,
    pub monitor_uid: String,
    pub monitor_name: Option<String>,
    pub status: IncidentStatus,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Seconds from opening to acknowledgement, once acknowledged.
    pub time_to_acknowledge_s: Option<f64>,
    /// Seconds from opening to resolution, once resolved.
    pub time_to_resolve_s: Option<f64>,
    pub failing_runs: u64,
    pub last_metrics: Metrics,
    /// The event that opened the incident.
    pub opened_seq: Seq,
    pub acknowledged_seq: Option<Seq>,
    /// The event that resolved it, once resolved.
    pub resolved_seq: Option<Seq>,
}

fn seconds_between(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> Option<f64> {
    to.map(|to| (to - from).num_milliseconds() as f64 / 1000.0)
}

impl From<&Incident> for IncidentDto {
    fn from(i: &Incident) -> Self {
        IncidentDto {
            id: i.id,
            integration_id: i.integration_id,
            monitor_uid: i.monitor_uid.to_string(),
            monitor_name: i.monitor_name.as_deref().map(str::to_owned),
            status: i.status,
            opened_at: i.opened_at,
            acknowledged_at: i.acknowledged_at,
            acknowledged_by: i.acknowledged_by.clone(),
            resolved_at: i.resolved_at,
            time_to_acknowledge_s: seconds_between(i.opened_at, i.acknowledged_at),
            time_to_resolve_s: seconds_between(i.opened_at, i.resolved_at),
            failing_runs: i.failing_runs,
            last_metrics: i.last_metrics.clone(),
            opened_seq: i.opened_seq,
            acknowledged_seq: i.acknowledged_seq,
            resolved_seq: i.resolved_seq,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IncidentList {
    pub incidents: Vec<IncidentDto>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One event on an incident's timeline. Fields that belong to one kind only are left out of the
/// others.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub seq: Seq,
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    /// Who did it, for human actions; null for runs, which Postman reports.
    pub actor: Option<String>,
    /// The incident's status right after this event.
    pub status_after: IncidentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl TryFrom<&TimelineStep<'_>> for TimelineEntry {
    type Error = PayloadError;
    fn try_from(step: &TimelineStep<'_>) -> Result<Self, PayloadError> {
        let event = step.event;
        let mut entry = TimelineEntry {
            seq: event.seq,
            at: event.recorded_at,
            kind: event.body.kind(),
            actor: event.actor().map(str::to_owned),
            status_after: step.status_after,
            transition: step.transition,
            verdict: None,
            metrics: None,
            note: None,
            text: None,
        };
        match &event.body {
            EventBody::MonitorRunReported { payload, .. } => {
                let metrics = payload.report()?.metrics;
                entry.verdict = Some(metrics.verdict());
                entry.metrics = Some(metrics);
            }
            EventBody::IncidentAcknowledged { note, .. } => entry.note = note.clone(),
            EventBody::NoteAdded { text, .. } => entry.text = Some(text.clone()),
            EventBody::IntegrationCreated { .. }
            | EventBody::IntegrationRevoked { .. }
            | EventBody::IntegrationTokenRotated { .. }
            | EventBody::ApiTokenCreated { .. }
            | EventBody::ApiTokenRevoked { .. } => {}
        }
        Ok(entry)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: IncidentDto,
    pub timeline: Vec<TimelineEntry>,
}

/// The answer to an acknowledgement or a note.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ActionResponse {
    pub seq: Seq,
    pub event_id: crate::domain::EventId,
    pub incident: IncidentDto,
}

impl From<ActionReceipt> for ActionResponse {
    fn from(r: ActionReceipt) -> Self {
        ActionResponse {
            seq: r.seq,
            event_id: r.event_id,
            incident: IncidentDto::from(&r.incident),
        }
    }
}

/// One run in a monitor's history.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunDto {
    pub seq: Seq,
    pub at: DateTime<Utc>,
    pub verdict: Verdict,
    pub metrics: Metrics,
    /// The incident this run belonged to, if any.
    pub incident_id: Option<IncidentId>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MonitorHistory {
    pub monitor: MonitorDto,
    /// Newest first.
    pub runs: Vec<RunDto>,
    /// The incidents the runs on this page belong to, newest first.
    pub incidents: Vec<IncidentDto>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Stored events exactly as in the log, oldest first (see docs/ARCHITECTURE.md, *Events*).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
    /// Pass as `after` for the next page; null when the log has no more events.
    pub next_after: Option<Seq>,
}

/// Projections as of one point in the log.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StateDto {
    pub at_seq: Seq,
    pub integrations: Vec<IntegrationDto>,
    pub monitors: Vec<MonitorDto>,
    /// Newest first.
    pub incidents: Vec<IncidentDto>,
}

impl From<&State> for StateDto {
    fn from(state: &State) -> Self {
        StateDto {
            at_seq: state.applied(),
            integrations: state.integrations().map(IntegrationDto::from).collect(),
            monitors: state.monitors().map(MonitorDto::from).collect(),
            incidents: state.incidents_newest_first(None).map(IncidentDto::from).collect(),
        }
    }
}

/// Serializes a state exactly as its [`StateDto`], converting one entry at a time instead of
/// building every DTO first. At a million events the answer is over 100 MB of JSON, so it is
/// written straight to the response in chunks (`GET /v1/state`).
pub struct StateBody<'a>(pub &'a State);

impl Serialize for StateBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let state = self.0;
        // Field names and order as in `StateDto`; a test checks that the bytes are the same.
        let mut s = serializer.serialize_struct("StateDto", 4)?;
        s.serialize_field("at_seq", &state.applied())?;
        s.serialize_field(
            "integrations",
            &Each(|| state.integrations().map(IntegrationDto::from)),
        )?;
        s.serialize_field("monitors", &Each(|| state.monitors().map(MonitorDto::from)))?;
        s.serialize_field(
            "incidents",
            &Each(|| state.incidents_newest_first(None).map(IncidentDto::from)),
        )?;
        s.end()
    }
}

/// A JSON array of the items an iterator yields, each serialized as soon as it is made.
struct Each<F>(F);

impl<F, I> Serialize for Each<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((self.0)())
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MonitorDto {
    pub integration_id: IntegrationId,
    pub monitor_uid: String,
    pub name: Option<String>,
    pub status: MonitorStatus,
    pub runs_seen: u64,
    pub last_run_at: DateTime<Utc>,
    pub last_run_seq: Seq,
    pub last_metrics: Metrics,
    pub open_incident_id: Option<IncidentId>,
}

impl From<&Monitor> for MonitorDto {
    fn from(m: &Monitor) -> Self {
        MonitorDto {
            integration_id: m.integration_id,
            monitor_uid: m.monitor_uid.to_string(),
            name: m.name.as_deref().map(str::to_owned),
            status: m.status,
            runs_seen: m.runs_seen,
            last_run_at: m.last_run_at,
            last_run_seq: m.last_run_seq,
            last_metrics: m.last_metrics.clone(),
            open_incident_id: m.open_incident,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MonitorList {
    pub monitors: Vec<MonitorDto>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: &'static str,
    /// The last durable event, on readiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<Seq>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<crate::api::limits::Delivery>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<ApiTokenDto>,
}

/// The Postman "Post monitoring results" payload, as far as incidentd reads it. Every other field
/// is accepted and kept verbatim.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the request body for the OpenAPI document only.
pub struct PostmanRun {
    /// The monitor's unique id, `<ownerId>-<uuid>`; required, not empty.
    monitor_uid: String,
    monitor_name: Option<String>,
    collection_name: Option<String>,
    collection_uid: Option<String>,
    environment_name: Option<String>,
    environment_uid: Option<String>,
    metrics: Metrics,
    user_id: Option<String>,
    user_name: Option<String>,
}
