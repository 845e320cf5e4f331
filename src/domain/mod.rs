//! The functional core: events, the Postman payload and its verdict, and the fold of events into
//! projections. Synchronous and free of I/O, clocks and randomness.

pub mod chain;
pub mod event;
pub mod fold;
pub mod ids;
pub mod payload;

pub use chain::{ChainError, ChainVerifier};
pub use event::{DecodeError, Event, EventBody, Role, SCHEMA_VERSION};
pub use fold::{
    incident_timeline, ApiToken, Applied, Delta, FoldError, IdempotentRun, Incident, IncidentRef,
    IncidentStatus, Integration, Monitor, MonitorKey, MonitorStatus, Outcome, State, TimelineStep,
    Touched, Transition,
};
pub use ids::{
    ApiTokenId, Digest256, EventId, IncidentId, IntegrationId, MonitorUid, Seq, TokenHash,
};
pub use payload::{parse_run, Metrics, ParsedRun, Payload, PayloadError, RunReport, Verdict};
