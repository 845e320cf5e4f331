//! Newtypes for every identifier the engine hands around, so that a sequence number can never be
//! passed where an incident id is expected.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A position in the global event log. The first event is 1; 0 means "before any event".
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The position before the first event: the state of an empty log.
    pub const ZERO: Seq = Seq(0);

    /// The following position. Saturates rather than wrapping: no log reaches 2^64 events, but a
    /// client may well ask for events after `u64::MAX`.
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }

    /// Big-endian bytes, so that sled's lexicographic key order equals numeric order.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_be_slice(bytes: &[u8]) -> Option<Seq> {
        let arr: [u8; 8] = bytes.try_into().ok()?;
        Some(Seq(u64::from_be_bytes(arr)))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// Identifies one stored event. Chosen by the writer when the event is appended.
    EventId
);
uuid_id!(
    /// Identifies one integration (one webhook URL).
    IntegrationId
);
uuid_id!(
    /// Identifies one API token (a reader token for auditors).
    ApiTokenId
);
uuid_id!(
    /// Identifies one incident. Derived from the id of the event that opened it, so a rebuild of
    /// the projections from the log yields the same ids.
    IncidentId
);

/// Namespace for deriving incident ids (UUID v5) from the opening event's id.
const INCIDENT_NAMESPACE: Uuid = Uuid::from_bytes([
    0x6b, 0x1f, 0x0e, 0x52, 0x3a, 0x87, 0x4c, 0x0d, 0x9f, 0x41, 0x25, 0x8e, 0x70, 0xc3, 0x11, 0xa4,
]);

impl IncidentId {
    /// The incident opened by event `opening`. Pure: the same event always names the same incident.
    pub fn derived_from(opening: EventId) -> IncidentId {
        IncidentId(Uuid::new_v5(&INCIDENT_NAMESPACE, opening.0.as_bytes()))
    }
}

/// A Postman monitor's unique id (`<ownerId>-<uuid>`), the correlation key of runs and incidents.
/// Never empty; at most [`MonitorUid::MAX_LEN`] bytes.
///
/// Shared rather than owned: the projections name a monitor in its map key, in the monitor, in its
/// run list and in each of its incidents, and with 100,000 monitors those copies were a large part
/// of the state's memory and of the fold's allocations. Cloning one is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct MonitorUid(Arc<str>);

impl MonitorUid {
    /// Postman's uids are about 45 bytes; anything far longer is not a monitor uid.
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<MonitorUid, &'static str> {
        if s.is_empty() {
            Err("must not be empty")
        } else if s.len() > Self::MAX_LEN {
            Err("must be at most 256 bytes")
        } else if s.chars().any(char::is_control) {
            Err("must not contain control characters")
        } else {
            Ok(MonitorUid(Arc::from(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for MonitorUid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl TryFrom<String> for MonitorUid {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        MonitorUid::parse(&s)
    }
}

impl From<MonitorUid> for String {
    fn from(m: MonitorUid) -> String {
        m.0.as_ref().to_owned()
    }
}

impl fmt::Display for MonitorUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest, written as lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest256(pub [u8; 32]);

impl Digest256 {
    /// The `prev_hash` of the first event.
    pub const GENESIS: Digest256 = Digest256([0; 32]);

    pub fn of(bytes: &[u8]) -> Digest256 {
        Digest256(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest256({})", self.to_hex())
    }
}

impl fmt::Display for Digest256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::str::FromStr for Digest256 {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Digest256(out))
    }
}

impl Serialize for Digest256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 of a secret token. Only this is ever stored; the token itself is shown once.
pub type TokenHash = Digest256;
