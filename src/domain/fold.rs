//! The projections: a pure fold of the event log into integrations, monitors and incidents.
//! No I/O, no clock, no randomness: every time and id comes from the events themselves, so the
//! same log always folds to the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{Event, EventBody, Role};
use sha2::{Digest, Sha256};

use super::ids::{ApiTokenId, Digest256, IncidentId, IntegrationId, MonitorUid, Seq, TokenHash};
use super::payload::{Metrics, RunReport, Verdict};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integration {
    pub id: IntegrationId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_seq: Seq,
    pub token_hash: TokenHash,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_seq: Option<Seq>,
    /// When the webhook token was last rotated.
    #[serde(default)]
    pub rotated_at: Option<DateTime<Utc>>,
    /// The token replaced by the last rotation, accepted until `previous_valid_until`.
    #[serde(default)]
    pub previous_token_hash: Option<TokenHash>,
    #[serde(default)]
    pub previous_valid_until: Option<DateTime<Utc>>,
}

impl Integration {
    pub fn is_active(&self) -> bool {
        self.revoked_seq.is_none()
    }

    /// Whether `hash` opens this integration's webhook at time `now`: the current token, or the
    /// previous one while its grace period lasts.
    pub fn accepts(&self, hash: &TokenHash, now: DateTime<Utc>) -> bool {
        self.is_active()
            && (self.token_hash == *hash
                || (self.previous_token_hash == Some(*hash)
                    && self.previous_valid_until.is_some_and(|until| now <= until)))
    }
}

/// How the first delivery with an `Idempotency-Key` was answered, so that a repeat gets the same
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentRun {
    pub seq: Seq,
    pub verdict: Verdict,
    pub transition: Transition,
    pub incident: Option<IncidentRef>,
}

/// An API token for reading (auditors). Only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: ApiTokenId,
    pub name: String,
    pub role: Role,
    pub token_hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub created_seq: Seq,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_seq: Option<Seq>,
}

impl ApiToken {
    pub fn is_active(&self) -> bool {
        self.revoked_seq.is_none()
    }
}

/// Monitors are told apart by integration as well as uid: two integrations may both receive runs
/// of a monitor with the same uid, and their incidents must stay apart. Ordered by uid first so
/// that all integrations of one uid are adjacent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MonitorKey {
    pub monitor_uid: MonitorUid,
    pub integration_id: IntegrationId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonitorStatus {
    Passing,
    Failing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitor {
    pub integration_id: IntegrationId,
    pub monitor_uid: MonitorUid,
    /// The name from the most recent run that carried one; shared with the monitor's incidents.
    pub name: Option<Arc<str>>,
    pub status: MonitorStatus,
    pub runs_seen: u64,
    pub last_run_at: DateTime<Utc>,
    pub last_run_seq: Seq,
    pub last_metrics: Metrics,
    pub open_incident: Option<IncidentId>,
}

impl Monitor {
    pub fn key(&self) -> MonitorKey {
        MonitorKey { monitor_uid: self.monitor_uid.clone(), integration_id: self.integration_id }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    /// Open, and a person has said they are on it.
    Acknowledged,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub integration_id: IntegrationId,
    pub monitor_uid: MonitorUid,
    pub monitor_name: Option<Arc<str>>,
    pub status: IncidentStatus,
    pub opened_at: DateTime<Utc>,
    pub opened_seq: Seq,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_seq: Option<Seq>,
    pub failing_runs: u64,
    /// Metrics of the most recent run that touched the incident (the resolving run once resolved).
    pub last_metrics: Metrics,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_seq: Option<Seq>,
    /// The seqs of the human actions on the incident (acknowledgement, notes), oldest first.
    pub actions: Vec<Seq>,
}

impl Incident {
    pub fn monitor_key(&self) -> MonitorKey {
        MonitorKey { monitor_uid: self.monitor_uid.clone(), integration_id: self.integration_id }
    }
}

/// What one run did to its monitor's incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A failing run with no open incident opened one.
    Opened,
    /// A failing run joined the incident already open.
    Ongoing,
    /// A passing run resolved the open incident.
    Resolved,
    /// A passing run with no open incident.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRef {
    pub id: IncidentId,
    pub status: IncidentStatus,
}

/// The result of applying one event, for the writer's answer to the command that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    IntegrationCreated,
    IntegrationRevoked,
    IntegrationTokenRotated,
    ApiTokenCreated,
    ApiTokenRevoked,
    /// An acknowledgement or a note was recorded on the incident.
    IncidentAction {
        incident: IncidentRef,
    },
    Run {
        verdict: Verdict,
        transition: Transition,
        incident: Option<IncidentRef>,
    },
}

/// The projection entries one event changed, so that a checkpoint writes only those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub integration: Option<IntegrationId>,
    pub api_token: Option<ApiTokenId>,
    /// An `Idempotency-Key` recorded for an integration.
    pub idempotency: Option<(IntegrationId, String)>,
    /// Set by a run only: the run's seq was appended to this monitor's runs.
    pub monitor: Option<MonitorKey>,
    /// Keyed by the incident's opening seq.
    pub incident: Option<Seq>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    pub touched: Touched,
}

/// A log that cannot be folded: the events are out of order or contradict each other. The writer
/// never appends such events, so this means the stored log was damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("expected event {expected}, got event {got}")]
    OutOfOrder { expected: Seq, got: Seq },
    #[error("event {seq} contradicts the log before it: {reason}")]
    Inconsistent { seq: Seq, reason: String },
}

/// The entries a batch of events left behind in a state, for a second copy of that state to take
/// over instead of folding the same events again (see [`State::delta`] and [`State::absorb`]).
/// Monitors and incidents are shared with the state they come from, not copied.
#[derive(Debug, Default)]
pub struct Delta {
    applied: Seq,
    integrations: Vec<Integration>,
    api_tokens: Vec<ApiToken>,
    idempotency: Vec<((IntegrationId, String), IdempotentRun)>,
    monitors: Vec<Arc<Monitor>>,
    incidents: Vec<Arc<Incident>>,
    /// Runs appended, in log order.
    runs: Vec<(MonitorKey, Seq)>,
}

/// All projections after the events up to `applied`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    applied: Seq,
    integrations: BTreeMap<IntegrationId, Integration>,
    /// Monitors and incidents are behind an `Arc` so that two copies of the state (the writer's
    /// and the published one) share every entry the last batch did not change: see [`Delta`].
    monitors: BTreeMap<MonitorKey, Arc<Monitor>>,
    /// The seqs of each monitor's runs, oldest first.
    runs: BTreeMap<MonitorKey, Vec<Seq>>,
    /// Keyed by opening seq, so iteration order is the order incidents were opened.
    incidents: BTreeMap<Seq, Arc<Incident>>,
    api_tokens: BTreeMap<ApiTokenId, ApiToken>,
    /// The first run delivered with each (integration, `Idempotency-Key`), as it was answered.
    idempotency: BTreeMap<(IntegrationId, String), IdempotentRun>,
    // Derived lookups, rebuilt by `from_parts`; never persisted.
    incident_index: HashMap<IncidentId, Seq>,
    /// Current and in-grace previous webhook tokens of active integrations.
    token_index: HashMap<TokenHash, IntegrationId>,
    /// Active API tokens.
    api_token_index: HashMap<TokenHash, ApiTokenId>,
}

impl State {
    /// Rebuilds a state from its persisted parts (a checkpoint).
    pub fn from_parts(
        applied: Seq,
        integrations: impl IntoIterator<Item = Integration>,
        monitors: impl IntoIterator<Item = Monitor>,
        runs: impl IntoIterator<Item = (MonitorKey, Vec<Seq>)>,
        incidents: impl IntoIterator<Item = Incident>,
    ) -> State {
        let mut state = State { applied, ..State::default() };
        for i in integrations {
            if i.is_active() {
                state.token_index.insert(i.token_hash, i.id);
                if let Some(previous) = i.previous_token_hash {
                    state.token_index.insert(previous, i.id);
                }
            }
            state.integrations.insert(i.id, i);
        }
        state.monitors = monitors.into_iter().map(|m| (m.key(), Arc::new(m))).collect();
        state.runs = runs.into_iter().collect();
        // Collected rather than inserted one by one: a BTreeMap built from sorted entries (a
        // checkpoint or snapshot lists them in key order) is built in bulk.
        let monitors = &state.monitors;
        state.incidents = incidents
            .into_iter()
            .map(|mut inc| {
                // Persisted records carry their own copies of the uid and name; sharing the
                // monitor's, as the fold does, keeps a loaded state as small as a folded one.
                if let Some(m) = monitors.get(&inc.monitor_key()) {
                    inc.monitor_uid = m.monitor_uid.clone();
                    if inc.monitor_name == m.name {
                        inc.monitor_name.clone_from(&m.name);
                    }
                }
                (inc.opened_seq, Arc::new(inc))
            })
            .collect();
        state.incident_index = state.incidents.values().map(|i| (i.id, i.opened_seq)).collect();
        state
    }

    /// Adds the persisted idempotency keys to a state rebuilt by `from_parts`.
    pub fn with_idempotency(
        mut self,
        keys: impl IntoIterator<Item = ((IntegrationId, String), IdempotentRun)>,
    ) -> State {
        self.idempotency.extend(keys);
        self
    }

    pub fn idempotency_keys(
        &self,
    ) -> impl Iterator<Item = (&(IntegrationId, String), &IdempotentRun)> {
        self.idempotency.iter()
    }

    /// The first run delivered to `integration` with `Idempotency-Key: key`.
    pub fn idempotent_run(&self, integration: IntegrationId, key: &str) -> Option<&IdempotentRun> {
        self.idempotency.get(&(integration, key.to_owned()))
    }

    /// Adds the persisted API tokens to a state rebuilt by `from_parts`.
    pub fn with_api_tokens(mut self, tokens: impl IntoIterator<Item = ApiToken>) -> State {
        for t in tokens {
            if t.is_active() {
                self.api_token_index.insert(t.token_hash, t.id);
            }
            self.api_tokens.insert(t.id, t);
        }
        self
    }

    /// The seq of the last event folded in; `Seq::ZERO` for an empty log.
    pub fn applied(&self) -> Seq {
        self.applied
    }

    /// Folds one event in. Events must come in log order, each exactly once.
    pub fn apply(&mut self, event: &Event) -> Result<Applied, FoldError> {
        self.apply_inner(event, None)
    }

    /// [`State::apply`] for a run whose payload the caller has already parsed (the writer parses
    /// every delivery at the edge): the same fold, without parsing the payload a second time. The
    /// report must be the one parsed from this event's payload.
    pub fn apply_parsed(&mut self, event: &Event, report: RunReport) -> Result<Applied, FoldError> {
        self.apply_inner(event, Some(report))
    }

    fn apply_inner(
        &mut self,
        event: &Event,
        report: Option<RunReport>,
    ) -> Result<Applied, FoldError> {
        let expected = self.applied.next();
        if event.seq != expected {
            return Err(FoldError::OutOfOrder { expected, got: event.seq });
        }
        let inconsistent = |reason: String| FoldError::Inconsistent { seq: event.seq, reason };
        let applied = match &event.body {
            EventBody::IntegrationCreated { integration_id, name, token_hash } => {
                if self.integrations.contains_key(integration_id) {
                    return Err(inconsistent(format!(
                        "integration {integration_id} created twice"
                    )));
                }
                self.integrations.insert(
                    *integration_id,
                    Integration {
                        id: *integration_id,
                        name: name.clone(),
                        created_at: event.recorded_at,
                        created_seq: event.seq,
                        token_hash: *token_hash,
                        revoked_at: None,
                        revoked_seq: None,
                        rotated_at: None,
                        previous_token_hash: None,
                        previous_valid_until: None,
                    },
                );
                self.token_index.insert(*token_hash, *integration_id);
                Applied {
                    outcome: Outcome::IntegrationCreated,
                    touched: Touched { integration: Some(*integration_id), ..Touched::default() },
                }
            }
            EventBody::IntegrationRevoked { integration_id } => {
                let integration = self
                    .integrations
                    .get_mut(integration_id)
                    .filter(|i| i.is_active())
                    .ok_or_else(|| {
                        inconsistent(format!("integration {integration_id} is not active"))
                    })?;
                integration.revoked_at = Some(event.recorded_at);
                integration.revoked_seq = Some(event.seq);
                // Only this integration's own entries go, even if another shared a token hash.
                let own = [Some(integration.token_hash), integration.previous_token_hash];
                self.token_index
                    .retain(|hash, id| id != integration_id || !own.contains(&Some(*hash)));
                Applied {
                    outcome: Outcome::IntegrationRevoked,
                    touched: Touched { integration: Some(*integration_id), ..Touched::default() },
                }
            }
            EventBody::IntegrationTokenRotated {
                integration_id,
                token_hash,
                previous_valid_until,
            } => {
                let integration = self
                    .integrations
                    .get_mut(integration_id)
                    .filter(|i| i.is_active())
                    .ok_or_else(|| {
                        inconsistent(format!("integration {integration_id} is not active"))
                    })?;
                // Only the token just replaced keeps a grace period; an older one ends now.
                if let Some(older) = integration.previous_token_hash {
                    self.token_index.remove(&older);
                }
                integration.previous_token_hash = Some(integration.token_hash);
                integration.previous_valid_until = Some(*previous_valid_until);
                integration.token_hash = *token_hash;
                integration.rotated_at = Some(event.recorded_at);
                self.token_index.insert(*token_hash, *integration_id);
                Applied {
                    outcome: Outcome::IntegrationTokenRotated,
                    touched: Touched { integration: Some(*integration_id), ..Touched::default() },
                }
            }
            EventBody::ApiTokenCreated { token_id, name, role, token_hash } => {
                if self.api_tokens.contains_key(token_id) {
                    return Err(inconsistent(format!("API token {token_id} created twice")));
                }
                self.api_tokens.insert(
                    *token_id,
                    ApiToken {
                        id: *token_id,
                        name: name.clone(),
                        role: *role,
                        token_hash: *token_hash,
                        created_at: event.recorded_at,
                        created_seq: event.seq,
                        revoked_at: None,
                        revoked_seq: None,
                    },
                );
                self.api_token_index.insert(*token_hash, *token_id);
                Applied {
                    outcome: Outcome::ApiTokenCreated,
                    touched: Touched { api_token: Some(*token_id), ..Touched::default() },
                }
            }
            EventBody::ApiTokenRevoked { token_id } => {
                let token =
                    self.api_tokens.get_mut(token_id).filter(|t| t.is_active()).ok_or_else(
                        || inconsistent(format!("API token {token_id} is not active")),
                    )?;
                token.revoked_at = Some(event.recorded_at);
                token.revoked_seq = Some(event.seq);
                self.api_token_index.remove(&token.token_hash);
                Applied {
                    outcome: Outcome::ApiTokenRevoked,
                    touched: Touched { api_token: Some(*token_id), ..Touched::default() },
                }
            }
            EventBody::MonitorRunReported {
                integration_id,
                monitor_uid,
                idempotency_key,
                payload,
            } => {
                if !self.integrations.get(integration_id).is_some_and(Integration::is_active) {
                    return Err(inconsistent(format!(
                        "integration {integration_id} is not active"
                    )));
                }
                let report = match report {
                    Some(report) => report,
                    None => payload
                        .report()
                        .map_err(|e| inconsistent(format!("stored payload is invalid: {e}")))?,
                };
                if &report.monitor_uid != monitor_uid {
                    return Err(inconsistent("monitor_uid differs from the payload's".to_owned()));
                }
                let idempotency = idempotency_key.as_ref().map(|k| (*integration_id, k.clone()));
                if idempotency.as_ref().is_some_and(|k| self.idempotency.contains_key(k)) {
                    return Err(inconsistent("idempotency key used twice".to_owned()));
                }
                let mut applied = self.apply_run(event, *integration_id, report);
                if let (Some(key), Outcome::Run { verdict, transition, incident }) =
                    (idempotency, &applied.outcome)
                {
                    let first = IdempotentRun {
                        seq: event.seq,
                        verdict: *verdict,
                        transition: *transition,
                        incident: *incident,
                    };
                    self.idempotency.insert(key.clone(), first);
                    applied.touched.idempotency = Some(key);
                }
                applied
            }
            EventBody::IncidentAcknowledged {
                incident_id,
                integration_id,
                monitor_uid,
                by,
                ..
            } => {
                let incident = self
                    .action_target(*incident_id, *integration_id, monitor_uid)
                    .map_err(inconsistent)?;
                if incident.status != IncidentStatus::Open {
                    return Err(inconsistent(format!("incident {incident_id} is not open")));
                }
                incident.status = IncidentStatus::Acknowledged;
                incident.acknowledged_at = Some(event.recorded_at);
                incident.acknowledged_by = Some(by.clone());
                incident.acknowledged_seq = Some(event.seq);
                incident.actions.push(event.seq);
                Applied {
                    outcome: Outcome::IncidentAction {
                        incident: IncidentRef { id: incident.id, status: incident.status },
                    },
                    touched: Touched { incident: Some(incident.opened_seq), ..Touched::default() },
                }
            }
            EventBody::NoteAdded { incident_id, integration_id, monitor_uid, .. } => {
                let incident = self
                    .action_target(*incident_id, *integration_id, monitor_uid)
                    .map_err(inconsistent)?;
                incident.actions.push(event.seq);
                Applied {
                    outcome: Outcome::IncidentAction {
                        incident: IncidentRef { id: incident.id, status: incident.status },
                    },
                    touched: Touched { incident: Some(incident.opened_seq), ..Touched::default() },
                }
            }
        };
        self.applied = event.seq;
        Ok(applied)
    }

    /// The incident a human action names, checked against the integration and monitor the event
    /// records.
    fn action_target(
        &mut self,
        id: IncidentId,
        integration_id: IntegrationId,
        monitor_uid: &MonitorUid,
    ) -> Result<&mut Incident, String> {
        let seq =
            self.incident_index.get(&id).ok_or_else(|| format!("incident {id} does not exist"))?;
        let incident =
            Arc::make_mut(self.incidents.get_mut(seq).expect("index points at an incident"));
        if incident.integration_id != integration_id || &incident.monitor_uid != monitor_uid {
            return Err(format!("incident {id} belongs to another monitor"));
        }
        Ok(incident)
    }

    fn apply_run(
        &mut self,
        event: &Event,
        integration_id: IntegrationId,
        run: RunReport,
    ) -> Applied {
        let key = MonitorKey { monitor_uid: run.monitor_uid, integration_id };
        let verdict = run.metrics.verdict();
        let monitor = Arc::make_mut(self.monitors.entry(key.clone()).or_insert_with(|| {
            Arc::new(Monitor {
                integration_id,
                monitor_uid: key.monitor_uid.clone(),
                name: None,
                status: MonitorStatus::Passing,
                runs_seen: 0,
                last_run_at: event.recorded_at,
                last_run_seq: event.seq,
                last_metrics: run.metrics.clone(),
                open_incident: None,
            })
        }));
        // Most runs repeat the name the monitor already has; keeping the shared copy then saves an
        // allocation per run and keeps the incidents' copies shared with the monitor's.
        if let Some(name) = run.monitor_name {
            if monitor.name.as_deref() != Some(name.as_str()) {
                monitor.name = Some(Arc::from(name));
            }
        }
        monitor.runs_seen += 1;
        monitor.last_run_at = event.recorded_at;
        monitor.last_run_seq = event.seq;
        monitor.last_metrics = run.metrics.clone();
        self.runs.entry(key.clone()).or_default().push(event.seq);

        let open = monitor.open_incident.and_then(|id| self.incident_index.get(&id).copied());
        let (transition, incident_seq) = match (verdict, open) {
            (Verdict::Failing, None) => {
                let id = IncidentId::derived_from(event.event_id);
                monitor.status = MonitorStatus::Failing;
                monitor.open_incident = Some(id);
                self.incident_index.insert(id, event.seq);
                self.incidents.insert(
                    event.seq,
                    Arc::new(Incident {
                        id,
                        integration_id,
                        monitor_uid: monitor.monitor_uid.clone(),
                        monitor_name: monitor.name.clone(),
                        status: IncidentStatus::Open,
                        opened_at: event.recorded_at,
                        opened_seq: event.seq,
                        resolved_at: None,
                        resolved_seq: None,
                        failing_runs: 1,
                        last_metrics: run.metrics,
                        acknowledged_at: None,
                        acknowledged_by: None,
                        acknowledged_seq: None,
                        actions: Vec::new(),
                    }),
                );
                (Transition::Opened, Some(event.seq))
            }
            (Verdict::Failing, Some(seq)) => {
                monitor.status = MonitorStatus::Failing;
                let incident = Arc::make_mut(
                    self.incidents.get_mut(&seq).expect("index points at an incident"),
                );
                incident.failing_runs += 1;
                incident.last_metrics = run.metrics;
                if monitor.name.is_some() {
                    incident.monitor_name = monitor.name.clone();
                }
                (Transition::Ongoing, Some(seq))
            }
            (Verdict::Passing, Some(seq)) => {
                monitor.status = MonitorStatus::Passing;
                monitor.open_incident = None;
                let incident = Arc::make_mut(
                    self.incidents.get_mut(&seq).expect("index points at an incident"),
                );
                incident.status = IncidentStatus::Resolved;
                incident.resolved_at = Some(event.recorded_at);
                incident.resolved_seq = Some(event.seq);
                incident.last_metrics = run.metrics;
                if monitor.name.is_some() {
                    incident.monitor_name = monitor.name.clone();
                }
                (Transition::Resolved, Some(seq))
            }
            (Verdict::Passing, None) => {
                monitor.status = MonitorStatus::Passing;
                (Transition::None, None)
            }
        };
        let incident = incident_seq.map(|seq| {
            let inc = &self.incidents[&seq];
            IncidentRef { id: inc.id, status: inc.status }
        });
        Applied {
            outcome: Outcome::Run { verdict, transition, incident },
            touched: Touched {
                integration: None,
                monitor: Some(key),
                incident: incident_seq,
                ..Touched::default()
            },
        }
    }

    pub fn integrations(&self) -> impl DoubleEndedIterator<Item = &Integration> {
        self.integrations.values()
    }

    pub fn integration(&self, id: IntegrationId) -> Option<&Integration> {
        self.integrations.get(&id)
    }

    /// The integration whose webhook `hash` opens at time `now` (the current token, or the
    /// previous one within its grace period).
    pub fn integration_for_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> Option<&Integration> {
        self.token_index
            .get(hash)
            .and_then(|id| self.integrations.get(id))
            .filter(|i| i.accepts(hash, now))
    }

    pub fn api_tokens(&self) -> impl DoubleEndedIterator<Item = &ApiToken> {
        self.api_tokens.values()
    }

    pub fn api_token(&self, id: ApiTokenId) -> Option<&ApiToken> {
        self.api_tokens.get(&id)
    }

    /// The active API token that hashes to `hash`.
    pub fn api_token_by_hash(&self, hash: &TokenHash) -> Option<&ApiToken> {
        self.api_token_index.get(hash).and_then(|id| self.api_tokens.get(id))
    }

    /// The active integration whose current webhook token hashes to `hash`.
    pub fn integration_by_token(&self, hash: &TokenHash) -> Option<&Integration> {
        self.token_index.get(hash).and_then(|id| self.integrations.get(id))
    }

    pub fn monitors(&self) -> impl DoubleEndedIterator<Item = &Monitor> {
        self.monitors.values().map(Arc::as_ref)
    }

    pub fn monitor(&self, key: &MonitorKey) -> Option<&Monitor> {
        self.monitors.get(key).map(Arc::as_ref)
    }

    /// Every monitor with this uid, one per integration that received its runs.
    pub fn monitors_with_uid<'a>(
        &'a self,
        uid: &MonitorUid,
    ) -> impl Iterator<Item = &'a Monitor> + 'a {
        let uid = uid.clone();
        let first = MonitorKey {
            monitor_uid: uid.clone(),
            integration_id: IntegrationId(uuid::Uuid::nil()),
        };
        self.monitors
            .range(first..)
            .take_while(move |(k, _)| k.monitor_uid == uid)
            .map(|(_, m)| &**m)
    }

    /// The seqs of a monitor's runs, oldest first.
    pub fn runs(&self, key: &MonitorKey) -> &[Seq] {
        self.runs.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn incident(&self, id: IncidentId) -> Option<&Incident> {
        self.incident_index.get(&id).and_then(|seq| self.incident_opened_at(*seq))
    }

    pub fn incident_opened_at(&self, opened_seq: Seq) -> Option<&Incident> {
        self.incidents.get(&opened_seq).map(Arc::as_ref)
    }

    /// Incidents opened strictly before `before` (all when `None`), newest first.
    pub fn incidents_newest_first(&self, before: Option<Seq>) -> impl Iterator<Item = &Incident> {
        let upper = before.unwrap_or(Seq(u64::MAX));
        self.incidents.range(..upper).rev().map(|(_, i)| &**i)
    }

    pub fn incidents(&self) -> impl DoubleEndedIterator<Item = &Incident> {
        self.incidents.values().map(Arc::as_ref)
    }

    /// A monitor's incidents, oldest first.
    pub fn monitor_incidents<'a>(
        &'a self,
        key: &'a MonitorKey,
    ) -> impl Iterator<Item = &'a Incident> {
        self.incidents().filter(move |i| {
            i.integration_id == key.integration_id && i.monitor_uid == key.monitor_uid
        })
    }

    /// The seqs of every event on an incident's timeline: its runs and its human actions, in log
    /// order.
    pub fn incident_events(&self, incident: &Incident) -> Vec<Seq> {
        let mut seqs: Vec<Seq> = self.incident_runs(incident).to_vec();
        seqs.extend_from_slice(&incident.actions);
        seqs.sort_unstable();
        seqs
    }

    /// SHA-256 over a canonical serialization of the whole state: every projection entry, in key
    /// order, as JSON. Equal digests mean equal projections; the derived lookups are left out
    /// because they follow from the rest.
    pub fn digest(&self) -> Digest256 {
        struct Lazy<I>(std::cell::Cell<Option<I>>);
        impl<I: Iterator<Item = T>, T: Serialize> Serialize for Lazy<I> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.take().expect("serialized once"))
            }
        }
        fn seq<I: Iterator>(iter: I) -> Lazy<I> {
            Lazy(std::cell::Cell::new(Some(iter)))
        }
        #[derive(Serialize)]
        struct Canonical<A, B, C, D, E, F> {
            applied: Seq,
            idempotency: F,
            integrations: A,
            monitors: B,
            runs: C,
            incidents: D,
            api_tokens: E,
        }
        let canonical = Canonical {
            applied: self.applied,
            integrations: seq(self.integrations.values()),
            monitors: seq(self.monitors.values()),
            runs: seq(self.runs.iter()),
            incidents: seq(self.incidents.values()),
            api_tokens: seq(self.api_tokens.values()),
            idempotency: seq(self.idempotency.iter()),
        };
        let mut hasher = HashWriter(Sha256::new());
        serde_json::to_writer(&mut hasher, &canonical).expect("state serializes");
        Digest256(hasher.0.finalize().into())
    }

    /// What the events `changes` names (each event's seq and what it touched, as [`State::apply`]
    /// returned them, in log order) left behind in this state, which must have just folded them.
    pub fn delta(&self, changes: &[(Seq, Touched)]) -> Delta {
        let mut integrations = BTreeSet::new();
        let mut api_tokens = BTreeSet::new();
        let mut monitors = BTreeSet::new();
        let mut incidents = BTreeSet::new();
        let mut delta = Delta { applied: self.applied, ..Delta::default() };
        for (seq, touched) in changes {
            integrations.extend(touched.integration);
            api_tokens.extend(touched.api_token);
            incidents.extend(touched.incident);
            if let Some(key) = &touched.monitor {
                delta.runs.push((key.clone(), *seq));
                monitors.insert(key);
            }
            if let Some(key) = &touched.idempotency {
                let run = self.idempotency.get(key).expect("a touched key is in the state");
                delta.idempotency.push((key.clone(), run.clone()));
            }
        }
        let touched = "a touched entry is in the state";
        delta.integrations = integrations.iter().map(|id| self.integrations[id].clone()).collect();
        delta.api_tokens = api_tokens.iter().map(|id| self.api_tokens[id].clone()).collect();
        delta.monitors =
            monitors.into_iter().map(|k| self.monitors.get(k).expect(touched).clone()).collect();
        delta.incidents =
            incidents.iter().map(|s| self.incidents.get(s).expect(touched).clone()).collect();
        delta
    }

    /// Takes over the entries of `delta`, taken from a state one batch ahead of this one: this
    /// state then equals that one, derived lookups included, as if it had folded the batch.
    pub fn absorb(&mut self, delta: Delta) {
        for integration in delta.integrations {
            // An active integration's webhook opens with its current token and, while it has one,
            // the token its last rotation replaced; a revoked one opens with none.
            self.token_index.retain(|_, id| *id != integration.id);
            if integration.is_active() {
                self.token_index.insert(integration.token_hash, integration.id);
                if let Some(previous) = integration.previous_token_hash {
                    self.token_index.insert(previous, integration.id);
                }
            }
            self.integrations.insert(integration.id, integration);
        }
        for token in delta.api_tokens {
            self.api_token_index.retain(|_, id| *id != token.id);
            if token.is_active() {
                self.api_token_index.insert(token.token_hash, token.id);
            }
            self.api_tokens.insert(token.id, token);
        }
        self.idempotency.extend(delta.idempotency);
        for monitor in delta.monitors {
            self.monitors.insert(monitor.key(), monitor);
        }
        for incident in delta.incidents {
            self.incident_index.insert(incident.id, incident.opened_seq);
            self.incidents.insert(incident.opened_seq, incident);
        }
        for (key, seq) in delta.runs {
            self.runs.entry(key).or_default().push(seq);
        }
        self.applied = delta.applied;
    }

    /// The seqs of the runs that belong to an incident: its monitor's runs from the opening run to
    /// the resolving one (or the latest, while it is open).
    pub fn incident_runs(&self, incident: &Incident) -> &[Seq] {
        let runs = self.runs(&incident.monitor_key());
        let start = runs.partition_point(|s| *s < incident.opened_seq);
        let end = match incident.resolved_seq {
            Some(r) => runs.partition_point(|s| *s <= r),
            None => runs.len(),
        };
        &runs[start..end]
    }
}

/// Feeds serialized bytes straight into the hash, so a digest needs no buffer the size of the
/// state.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One step of an incident's timeline: an event that touched it and the status it left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineStep<'a> {
    pub event: &'a Event,
    /// For runs: what the run did to the incident.
    pub transition: Option<Transition>,
    pub status_after: IncidentStatus,
}

/// Replays an incident's own events (runs and actions, in log order, as `State::incident_events`
/// lists them) to tell what each one did. Pure, like the fold it mirrors.
pub fn incident_timeline<'a>(incident: &Incident, events: &'a [Event]) -> Vec<TimelineStep<'a>> {
    let mut status = IncidentStatus::Open;
    events
        .iter()
        .map(|event| {
            let transition = match &event.body {
                EventBody::MonitorRunReported { .. } if event.seq == incident.opened_seq => {
                    status = IncidentStatus::Open;
                    Some(Transition::Opened)
                }
                EventBody::MonitorRunReported { .. }
                    if Some(event.seq) == incident.resolved_seq =>
                {
                    status = IncidentStatus::Resolved;
                    Some(Transition::Resolved)
                }
                EventBody::MonitorRunReported { .. } => Some(Transition::Ongoing),
                EventBody::IncidentAcknowledged { .. } => {
                    status = IncidentStatus::Acknowledged;
                    None
                }
                EventBody::NoteAdded { .. }
                | EventBody::IntegrationCreated { .. }
                | EventBody::IntegrationRevoked { .. }
                | EventBody::IntegrationTokenRotated { .. }
                | EventBody::ApiTokenCreated { .. }
                | EventBody::ApiTokenRevoked { .. } => None,
            };
            TimelineStep { event, transition, status_after: status }
        })
        .collect()
}
