//! The JSON shapes of the API, kept apart from the stored shapes so that either can change
//! without the other. insta snapshots in `snapshots/` pin them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{
    Incident, IncidentId, IncidentRef, IncidentStatus, Integration, IntegrationId, Metrics,
    Monitor, MonitorStatus, Seq, Transition, Verdict,
};
use crate::engine::IngestReceipt;

#[derive(Serialize)]
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
#[derive(Serialize)]
pub struct CreatedIntegrationDto {
    pub id: IntegrationId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub token: String,
    pub webhook_url: String,
}

#[derive(Serialize)]
pub struct IntegrationList {
    pub integrations: Vec<IntegrationDto>,
}

#[derive(Serialize)]
pub struct IncidentRefDto {
    pub id: IncidentId,
    pub status: IncidentStatus,
}

impl From<IncidentRef> for IncidentRefDto {
    fn from(r: IncidentRef) -> Self {
        IncidentRefDto {
            id: r.id,
            status: r.status,
        }
    }
}

#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct IncidentDto {
    pub id: IncidentId,
    pub integration_id: IntegrationId,
    pub monitor_uid: String,
    pub monitor_name: Option<String>,
    pub status: IncidentStatus,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub failing_runs: u64,
    pub last_metrics: Metrics,
    /// The event that opened the incident.
    pub opened_seq: Seq,
    /// The event that resolved it, once resolved.
    pub resolved_seq: Option<Seq>,
}

impl From<&Incident> for IncidentDto {
    fn from(i: &Incident) -> Self {
        IncidentDto {
            id: i.id,
            integration_id: i.integration_id,
            monitor_uid: i.monitor_uid.to_string(),
            monitor_name: i.monitor_name.clone(),
            status: i.status,
            opened_at: i.opened_at,
            resolved_at: i.resolved_at,
            failing_runs: i.failing_runs,
            last_metrics: i.last_metrics.clone(),
            opened_seq: i.opened_seq,
            resolved_seq: i.resolved_seq,
        }
    }
}

#[derive(Serialize)]
pub struct IncidentList {
    pub incidents: Vec<IncidentDto>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One event on an incident's timeline.
#[derive(Serialize)]
pub struct TimelineEntry {
    pub seq: Seq,
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    pub verdict: Verdict,
    /// What this run did to the incident.
    pub transition: Transition,
    pub metrics: Metrics,
}

#[derive(Serialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: IncidentDto,
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Serialize)]
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
            name: m.name.clone(),
            status: m.status,
            runs_seen: m.runs_seen,
            last_run_at: m.last_run_at,
            last_run_seq: m.last_run_seq,
            last_metrics: m.last_metrics.clone(),
            open_incident_id: m.open_incident,
        }
    }
}

#[derive(Serialize)]
pub struct MonitorList {
    pub monitors: Vec<MonitorDto>,
}
