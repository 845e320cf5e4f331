//! The immutable events of the log, their stored JSON shape (schema version 1) and the SHA-256
//! chain that links each event to the one before it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{
    ApiTokenId, Digest256, EventId, IncidentId, IntegrationId, MonitorUid, Seq, TokenHash,
};
use super::payload::{Payload, RunReport};

/// The version of the stored event shape written by this build. A stored event with another
/// version is refused rather than guessed at.
pub const SCHEMA_VERSION: u16 = 1;

/// What happened. Closed: every consumer matches on every kind. Read back only as part of an
/// [`Event`], by its decoder.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        payload: Payload,
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

/// One event as stored in the log. Decoded by a hand-written visitor (see `impl Deserialize for
/// Event` below) that reads the same stored JSON in one pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

    /// [`Event::seal`] and [`Event::encode`] with one serialization instead of two. The stored
    /// JSON is the hashed JSON with `"hash"` added as its last field, so the hashed bytes are
    /// serialized once, hashed, and then completed in place; the result is byte for byte what
    /// `encode` writes (a unit test checks it for every kind).
    pub fn seal_encoded(
        seq: Seq,
        event_id: EventId,
        recorded_at: DateTime<Utc>,
        body: EventBody,
        prev_hash: Digest256,
    ) -> (Event, Vec<u8>) {
        let content = Hashed {
            schema: SCHEMA_VERSION,
            seq,
            event_id,
            recorded_at: &recorded_at,
            body: &body,
            prev_hash,
        };
        // 64 hex digits plus `,"hash":""` replace the closing brace, which comes back after them.
        let mut bytes = Vec::with_capacity(512);
        serde_json::to_writer(&mut bytes, &content).expect("event serializes");
        let hash = Digest256::of(&bytes);
        debug_assert_eq!(bytes.last(), Some(&b'}'));
        bytes.pop();
        bytes.extend_from_slice(b",\"hash\":\"");
        bytes.extend_from_slice(hash.to_hex().as_bytes());
        bytes.extend_from_slice(b"\"}");
        let event =
            Event { schema: SCHEMA_VERSION, seq, event_id, recorded_at, body, prev_hash, hash };
        (event, bytes)
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

    /// The typed view of a run's payload, for [`crate::domain::State::apply_parsed`]; `None` for
    /// other kinds and for a payload that does not parse (which [`crate::domain::State::apply`]
    /// then reports).
    pub fn run_report(&self) -> Option<RunReport> {
        match &self.body {
            EventBody::MonitorRunReported { payload, .. } => payload.report().ok(),
            _ => None,
        }
    }
}

/// Reads a stored event in one pass over its JSON object.
///
/// A derived `Deserialize` would have to go through `#[serde(flatten)]` over the internally
/// tagged [`EventBody`]: serde then buffers every field, the payload included, in an intermediate
/// tree before it knows the kind and builds the body from it, which was about half of the cost of
/// a replay. This visitor reads each field straight into its final type, remembers the ones that
/// belong to the body, and builds the body once `kind` and every field are known. It accepts
/// exactly what the derived code accepted: fields in any order, unknown fields ignored, optional
/// fields (`idempotency_key`, `note`) missing or null, and it refuses a missing required field,
/// a duplicate field or an unknown kind.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

/// A key of the stored event object, matched against the known field names without allocating;
/// any other key becomes `""`, which matches no field and is skipped.
struct Field(&'static str);

const FIELDS: &[&str] = &[
    "schema",
    "seq",
    "event_id",
    "recorded_at",
    "kind",
    "prev_hash",
    "hash",
    "integration_id",
    "name",
    "token_hash",
    "previous_valid_until",
    "token_id",
    "role",
    "monitor_uid",
    "idempotency_key",
    "payload",
    "incident_id",
    "by",
    "note",
    "text",
];

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct FieldVisitor;
        impl serde::de::Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field(FIELDS.iter().find(|f| **f == v).copied().unwrap_or("")))
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// The body fields of every kind, as read before the kind is known to be the one that has them.
#[derive(Default)]
struct BodyFields {
    integration_id: Option<IntegrationId>,
    name: Option<String>,
    token_hash: Option<TokenHash>,
    previous_valid_until: Option<DateTime<Utc>>,
    token_id: Option<ApiTokenId>,
    role: Option<Role>,
    monitor_uid: Option<MonitorUid>,
    idempotency_key: Option<Option<String>>,
    payload: Option<Payload>,
    incident_id: Option<IncidentId>,
    by: Option<String>,
    note: Option<Option<String>>,
    text: Option<String>,
}

/// Stores `value` in `slot`, refusing a second occurrence of the same field.
fn once<T, E: serde::de::Error>(
    slot: &mut Option<T>,
    field: &'static str,
    value: T,
) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

fn required<T, E: serde::de::Error>(slot: Option<T>, field: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(field))
}

impl<'de> serde::de::Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a stored event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        use serde::de::Error;
        let mut schema = None;
        let mut seq = None;
        let mut event_id = None;
        let mut recorded_at = None;
        let mut kind: Option<String> = None;
        let mut prev_hash = None;
        let mut hash = None;
        let mut b = BodyFields::default();
        while let Some(key) = map.next_key::<Field>()? {
            match key.0 {
                "schema" => once(&mut schema, "schema", map.next_value()?)?,
                "seq" => once(&mut seq, "seq", map.next_value()?)?,
                "event_id" => once(&mut event_id, "event_id", map.next_value()?)?,
                "recorded_at" => once(&mut recorded_at, "recorded_at", map.next_value()?)?,
                "kind" => once(&mut kind, "kind", map.next_value()?)?,
                "prev_hash" => once(&mut prev_hash, "prev_hash", map.next_value()?)?,
                "hash" => once(&mut hash, "hash", map.next_value()?)?,
                "integration_id" => {
                    once(&mut b.integration_id, "integration_id", map.next_value()?)?
                }
                "name" => once(&mut b.name, "name", map.next_value()?)?,
                "token_hash" => once(&mut b.token_hash, "token_hash", map.next_value()?)?,
                "previous_valid_until" => {
                    once(&mut b.previous_valid_until, "previous_valid_until", map.next_value()?)?
                }
                "token_id" => once(&mut b.token_id, "token_id", map.next_value()?)?,
                "role" => once(&mut b.role, "role", map.next_value()?)?,
                "monitor_uid" => once(&mut b.monitor_uid, "monitor_uid", map.next_value()?)?,
                "idempotency_key" => {
                    once(&mut b.idempotency_key, "idempotency_key", map.next_value()?)?
                }
                "payload" => once(&mut b.payload, "payload", map.next_value()?)?,
                "incident_id" => once(&mut b.incident_id, "incident_id", map.next_value()?)?,
                "by" => once(&mut b.by, "by", map.next_value()?)?,
                "note" => once(&mut b.note, "note", map.next_value()?)?,
                "text" => once(&mut b.text, "text", map.next_value()?)?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let kind = required(kind, "kind")?;
        let body = match kind.as_str() {
            "integration_created" => EventBody::IntegrationCreated {
                integration_id: required(b.integration_id, "integration_id")?,
                name: required(b.name, "name")?,
                token_hash: required(b.token_hash, "token_hash")?,
            },
            "integration_revoked" => EventBody::IntegrationRevoked {
                integration_id: required(b.integration_id, "integration_id")?,
            },
            "integration_token_rotated" => EventBody::IntegrationTokenRotated {
                integration_id: required(b.integration_id, "integration_id")?,
                token_hash: required(b.token_hash, "token_hash")?,
                previous_valid_until: required(b.previous_valid_until, "previous_valid_until")?,
            },
            "api_token_created" => EventBody::ApiTokenCreated {
                token_id: required(b.token_id, "token_id")?,
                name: required(b.name, "name")?,
                role: required(b.role, "role")?,
                token_hash: required(b.token_hash, "token_hash")?,
            },
            "api_token_revoked" => {
                EventBody::ApiTokenRevoked { token_id: required(b.token_id, "token_id")? }
            }
            "monitor_run_reported" => EventBody::MonitorRunReported {
                integration_id: required(b.integration_id, "integration_id")?,
                monitor_uid: required(b.monitor_uid, "monitor_uid")?,
                idempotency_key: b.idempotency_key.flatten(),
                payload: required(b.payload, "payload")?,
            },
            "incident_acknowledged" => EventBody::IncidentAcknowledged {
                incident_id: required(b.incident_id, "incident_id")?,
                integration_id: required(b.integration_id, "integration_id")?,
                monitor_uid: required(b.monitor_uid, "monitor_uid")?,
                by: required(b.by, "by")?,
                note: b.note.flatten(),
            },
            "note_added" => EventBody::NoteAdded {
                incident_id: required(b.incident_id, "incident_id")?,
                integration_id: required(b.integration_id, "integration_id")?,
                monitor_uid: required(b.monitor_uid, "monitor_uid")?,
                by: required(b.by, "by")?,
                text: required(b.text, "text")?,
            },
            other => return Err(A::Error::unknown_variant(other, EventBody::KINDS)),
        };
        Ok(Event {
            schema: required(schema, "schema")?,
            seq: required(seq, "seq")?,
            event_id: required(event_id, "event_id")?,
            recorded_at: required(recorded_at, "recorded_at")?,
            body,
            prev_hash: required(prev_hash, "prev_hash")?,
            hash: required(hash, "hash")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// One body of every kind, with the optional fields set.
    fn every_kind() -> Vec<EventBody> {
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
                idempotency_key: Some("k".into()),
                payload: Payload::from_object(
                    serde_json::json!({"monitor_uid": "m", "z": [1, {"a": null}]})
                        .as_object()
                        .unwrap(),
                ),
            },
            EventBody::IncidentAcknowledged {
                incident_id: IncidentId(uuid::Uuid::nil()),
                integration_id: id,
                monitor_uid: uid.clone(),
                by: "a".into(),
                note: Some("n".into()),
            },
            EventBody::NoteAdded {
                incident_id: IncidentId(uuid::Uuid::nil()),
                integration_id: id,
                monitor_uid: uid,
                by: "a".into(),
                text: "t".into(),
            },
        ];
        bodies.into()
    }

    /// `KINDS` must list exactly the tags serde writes, or event filters would refuse real kinds.
    #[test]
    fn kinds_lists_every_tag() {
        let bodies = every_kind();
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

    fn sealed(seq: u64, body: EventBody) -> (Event, Vec<u8>) {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        let event_id = EventId(uuid::Uuid::from_u128(u128::from(seq)));
        Event::seal_encoded(Seq(seq), event_id, at, body, Digest256::of(b"before"))
    }

    /// Sealing with one serialization must store exactly the bytes and hash that sealing and
    /// encoding separately give, or the hash chain of new events would differ from the old ones.
    #[test]
    fn seal_encoded_equals_seal_then_encode() {
        for (n, body) in every_kind().into_iter().enumerate() {
            let seq = n as u64 + 1;
            let (event, bytes) = sealed(seq, body.clone());
            let separate =
                Event::seal(event.seq, event.event_id, event.recorded_at, body, event.prev_hash);
            assert_eq!(event, separate);
            assert_eq!(bytes, separate.encode(), "{}", event.body.kind());
        }
    }

    /// The hand-written decoder reads back every kind, including optional fields set or absent.
    #[test]
    fn decode_reads_back_every_kind() {
        let mut bodies = every_kind();
        bodies.push(EventBody::MonitorRunReported {
            integration_id: IntegrationId(uuid::Uuid::nil()),
            monitor_uid: MonitorUid::parse("m").unwrap(),
            idempotency_key: None,
            payload: Payload::from_object(&Map::new()),
        });
        bodies.push(EventBody::IncidentAcknowledged {
            incident_id: IncidentId(uuid::Uuid::nil()),
            integration_id: IntegrationId(uuid::Uuid::nil()),
            monitor_uid: MonitorUid::parse("m").unwrap(),
            by: "a".into(),
            note: None,
        });
        for (n, body) in bodies.into_iter().enumerate() {
            let (event, bytes) = sealed(n as u64 + 1, body);
            assert_eq!(Event::decode(&bytes).unwrap(), event);
            assert_eq!(event.computed_hash(), event.hash);
        }
    }

    /// Field order, unknown fields and an absent optional field are accepted, as the derived
    /// decoder accepted them; a missing or repeated field and an unknown kind are refused.
    #[test]
    fn decode_accepts_what_the_stored_shape_allows_and_nothing_else() {
        let (event, bytes) = sealed(1, every_kind().remove(0));
        let mut value: serde_json::Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
        value.insert("later_field".into(), serde_json::json!({"x": [1, 2]}));
        let reversed: serde_json::Map<String, Value> = value.into_iter().rev().collect();
        let text = serde_json::to_string(&reversed).unwrap();
        assert_eq!(Event::decode(text.as_bytes()).unwrap(), event);

        let mut missing = reversed.clone();
        missing.remove("name");
        let err = Event::decode(serde_json::to_string(&missing).unwrap().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");

        let mut unknown = reversed.clone();
        unknown.insert("kind".into(), "integration_exploded".into());
        let err = Event::decode(serde_json::to_string(&unknown).unwrap().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("integration_exploded"), "{err}");

        let text = String::from_utf8(bytes).unwrap();
        let repeated = text.replacen("{", "{\"seq\":9,", 1);
        let err = Event::decode(repeated.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("duplicate field `seq`"), "{err}");

        let mut other_schema = reversed;
        other_schema.insert("schema".into(), 2.into());
        let err =
            Event::decode(serde_json::to_string(&other_schema).unwrap().as_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedSchema(2)), "{err}");
    }
}
