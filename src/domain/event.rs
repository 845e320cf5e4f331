//! The immutable events of the log, their stored JSON shape (schema version 1) and the SHA-256
//! chain that links each event to the one before it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::{
    ApiTokenId, Digest256, EventId, IncidentId, IntegrationId, MonitorUid, Seq, TokenHash,
};

/// The version of the stored event shape written by this build. A stored event with another
/// version is refused rather than guessed at.
pub const SCHEMA_VERSION: u16 = 1;

/// What happened. Closed: every consumer matches on every kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// An integration (one webhook URL) was created. Only the hash of its token is recorded.
    IntegrationCreated { integration_id: IntegrationId, name: String, token_hash: TokenHash },
    /// An integration was revoked: its webhook URL is refused from this event on.
    IntegrationRevoked { integration_id: IntegrationId },
    /// An integration got a new webhook token. The token it replaces keeps working until
    /// `previous_valid_until`, so that the sender can be updated.
    IntegrationTokenRotated {
        integration_id: IntegrationId,
        token_hash: TokenHash,
        previous_valid_until: DateTime<Utc>,
    },
    /// An API token was issued. Only its hash is recorded.
    ApiTokenCreated { token_id: ApiTokenId, name: String, role: Role, token_hash: TokenHash },
    /// An API token was revoked and is refused from this event on.
    ApiTokenRevoked { token_id: ApiTokenId },
    /// Postman delivered the result of one monitor run. `payload` is the body exactly as received.
    MonitorRunReported {
        integration_id: IntegrationId,
        monitor_uid: MonitorUid,
        /// The sender's `Idempotency-Key`, when it gave one: a later delivery with the same key
        /// on the same integration is answered from this event instead of appending another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        payload: Map<String, Value>,
    },
    /// A person acknowledged an open incident. The integration and monitor are recorded too, so
    /// that the log can be filtered by monitor without the projections.
    IncidentAcknowledged {
        incident_id: IncidentId,
        integration_id: IntegrationId,
        monitor_uid: MonitorUid,
        by: String,
        note: Option<String>,
    },
    /// A person added a note to an incident (in any status, including resolved).
    NoteAdded {
        incident_id: IncidentId,
        integration_id: IntegrationId,
        monitor_uid: MonitorUid,
        by: String,
        text: String,
    },
}

impl EventBody {
    /// Every `kind` tag, for validating filters.
    pub const KINDS: &'static [&'static str] = &[
        "integration_created",
        "integration_revoked",
        "integration_token_rotated",
        "api_token_created",
        "api_token_revoked",
        "monitor_run_reported",
        "incident_acknowledged",
        "note_added",
    ];

    /// The `kind` tag as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::IntegrationCreated { .. } => "integration_created",
            EventBody::IntegrationRevoked { .. } => "integration_revoked",
            EventBody::IntegrationTokenRotated { .. } => "integration_token_rotated",
            EventBody::ApiTokenCreated { .. } => "api_token_created",
            EventBody::ApiTokenRevoked { .. } => "api_token_revoked",
            EventBody::MonitorRunReported { .. } => "monitor_run_reported",
            EventBody::IncidentAcknowledged { .. } => "incident_acknowledged",
            EventBody::NoteAdded { .. } => "note_added",
        }
    }

    /// The integration the event concerns; `None` for API token events.
    pub fn integration_id(&self) -> Option<IntegrationId> {
        match self {
            EventBody::IntegrationCreated { integration_id, .. }
            | EventBody::IntegrationRevoked { integration_id }
            | EventBody::IntegrationTokenRotated { integration_id, .. }
            | EventBody::MonitorRunReported { integration_id, .. }
            | EventBody::IncidentAcknowledged { integration_id, .. }
            | EventBody::NoteAdded { integration_id, .. } => Some(*integration_id),
            EventBody::ApiTokenCreated { .. } | EventBody::ApiTokenRevoked { .. } => None,
        }
    }
}

/// What an API token may do. The admin token is configuration, not an event, so it has no role
/// here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads incidents, monitors, history, the log, past states and verification; writes nothing.
    Reader,
}

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: u16,
    pub seq: Seq,
    pub event_id: EventId,
    /// Server time when the event was appended.
    pub recorded_at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
    /// `hash` of the event at `seq - 1`, or all zeros for the first event.
    pub prev_hash: Digest256,
    /// SHA-256 of this event's stored JSON without the `hash` field (so it covers `prev_hash`).
    pub hash: Digest256,
}

/// The part of an event that its hash covers: everything but the hash itself, in stored order.
#[derive(Serialize)]
struct Hashed<'a> {
    schema: u16,
    seq: Seq,
    event_id: EventId,
    recorded_at: &'a DateTime<Utc>,
    #[serde(flatten)]
    body: &'a EventBody,
    prev_hash: Digest256,
}

/// A stored event that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid stored event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored event has schema version {0}; this build reads version {SCHEMA_VERSION}")]
    UnsupportedSchema(u16),
}

impl Event {
    /// Builds the event at `seq` and computes its hash from its content and `prev_hash`.
    pub fn seal(
        seq: Seq,
        event_id: EventId,
        recorded_at: DateTime<Utc>,
        body: EventBody,
        prev_hash: Digest256,
    ) -> Event {
        let mut event = Event {
            schema: SCHEMA_VERSION,
            seq,
            event_id,
            recorded_at,
            body,
            prev_hash,
            hash: Digest256::GENESIS,
        };
        event.hash = event.computed_hash();
        event
    }

    /// The hash this event's content calls for; differs from `hash` when the event was altered.
    pub fn computed_hash(&self) -> Digest256 {
        let content = Hashed {
            schema: self.schema,
            seq: self.seq,
            event_id: self.event_id,
            recorded_at: &self.recorded_at,
            body: &self.body,
            prev_hash: self.prev_hash,
        };
        // Serializing plain data into a Vec cannot fail.
        Digest256::of(&serde_json::to_vec(&content).expect("event serializes"))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("event serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let event: Event = serde_json::from_slice(bytes)?;
        if event.schema != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedSchema(event.schema));
        }
        Ok(event)
    }

    /// The person behind the event, for human actions.
    pub fn actor(&self) -> Option<&str> {
        match &self.body {
            EventBody::IncidentAcknowledged { by, .. } | EventBody::NoteAdded { by, .. } => {
                Some(by)
            }
            EventBody::IntegrationCreated { .. }
            | EventBody::IntegrationRevoked { .. }
            | EventBody::IntegrationTokenRotated { .. }
            | EventBody::ApiTokenCreated { .. }
            | EventBody::ApiTokenRevoked { .. }
            | EventBody::MonitorRunReported { .. } => None,
        }
    }

    pub fn monitor_uid(&self) -> Option<&MonitorUid> {
        match &self.body {
            EventBody::MonitorRunReported { monitor_uid, .. }
            | EventBody::IncidentAcknowledged { monitor_uid, .. }
            | EventBody::NoteAdded { monitor_uid, .. } => Some(monitor_uid),
            EventBody::IntegrationCreated { .. }
            | EventBody::IntegrationRevoked { .. }
            | EventBody::IntegrationTokenRotated { .. }
            | EventBody::ApiTokenCreated { .. }
            | EventBody::ApiTokenRevoked { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `KINDS` must list exactly the tags serde writes, or event filters would refuse real kinds.
    #[test]
    fn kinds_lists_every_tag() {
        let id = IntegrationId(uuid::Uuid::nil());
        let uid = MonitorUid::parse("m").unwrap();
        let bodies = [
            EventBody::IntegrationCreated {
                integration_id: id,
                name: "n".into(),
                token_hash: Digest256::GENESIS,
            },
            EventBody::IntegrationRevoked { integration_id: id },
            EventBody::IntegrationTokenRotated {
                integration_id: id,
                token_hash: Digest256::GENESIS,
                previous_valid_until: DateTime::UNIX_EPOCH,
            },
            EventBody::ApiTokenCreated {
                token_id: ApiTokenId(uuid::Uuid::nil()),
                name: "n".into(),
                role: Role::Reader,
                token_hash: Digest256::GENESIS,
            },
            EventBody::ApiTokenRevoked { token_id: ApiTokenId(uuid::Uuid::nil()) },
            EventBody::MonitorRunReported {
                integration_id: id,
                monitor_uid: uid.clone(),
                idempotency_key: None,
                payload: Map::new(),
            },
            EventBody::IncidentAcknowledged {
                incident_id: IncidentId(uuid::Uuid::nil()),
                integration_id: id,
                monitor_uid: uid.clone(),
                by: "a".into(),
                note: None,
            },
            EventBody::NoteAdded {
                incident_id: IncidentId(uuid::Uuid::nil()),
                integration_id: id,
                monitor_uid: uid,
                by: "a".into(),
                text: "t".into(),
            },
        ];
        let tags: Vec<String> = bodies
            .iter()
            .map(|b| {
                let tag = serde_json::to_value(b).unwrap()["kind"].as_str().unwrap().to_owned();
                assert_eq!(tag, b.kind());
                tag
            })
            .collect();
        assert_eq!(tags, EventBody::KINDS);
    }
}
