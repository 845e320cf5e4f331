//! The single writer. Commands from any number of request handlers are queued to one thread that
//! validates them against the current state, assigns the next seqs, appends a whole batch with one
//! fsync (group commit), folds it, and only then publishes the new state and answers.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use rand::RngCore;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::audit::{self, ReplayReport, VerifyReport};
use crate::domain::{
    ApiToken, ApiTokenId, Delta, Digest256, Event, EventBody, EventId, FoldError, IdempotentRun,
    Incident, IncidentId, IncidentRef, IncidentStatus, Integration, IntegrationId, MonitorUid,
    Outcome, ParsedRun, Role, Seq, State, TokenHash, Touched, Transition, Verdict,
};
use crate::metrics::Metrics;
use crate::store::{CheckpointBatch, Dirty, Encoded, Store, StoreError, StoreOptions};

/// Why a command was not carried out. Each kind maps to one HTTP status in `api`.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("field `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the event would be {bytes} bytes; at most {max} bytes can be stored")]
    TooLarge { bytes: usize, max: usize },
    #[error("storage failed: {0}")]
    Storage(StoreError),
    #[error("the stored log is corrupt: {0}")]
    Corrupt(String),
    #[error("this Idempotency-Key was first used with a different body (event {0})")]
    IdempotencyKeyReused(Seq),
    #[error("the engine stopped accepting writes after a storage failure")]
    Unavailable,
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { .. } => EngineError::Corrupt(e.to_string()),
            StoreError::TooLarge { bytes, max } => EngineError::TooLarge { bytes, max },
            other => EngineError::Storage(other),
        }
    }
}

impl From<FoldError> for EngineError {
    fn from(e: FoldError) -> Self {
        EngineError::Corrupt(e.to_string())
    }
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub store: StoreOptions,
    /// Most commands folded into one append and one fsync.
    pub max_batch: usize,
    /// Write a projection checkpoint after this many events (and whenever the writer is idle).
    pub checkpoint_every: u64,
    /// How long a rotated-out webhook token keeps working.
    pub rotation_grace: chrono::Duration,
    /// Events between two projection snapshots (see `store::snapshot`); 0 writes none.
    pub snapshot_every: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            store: StoreOptions::default(),
            max_batch: 1024,
            checkpoint_every: 10_000,
            rotation_grace: chrono::Duration::hours(24),
            snapshot_every: audit::SNAPSHOT_EVERY,
        }
    }
}

/// How long the writer waits for work before it checkpoints what it has folded.
const IDLE_CHECKPOINT: Duration = Duration::from_millis(500);

/// The answer to an accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReceipt {
    pub seq: Seq,
    pub event_id: EventId,
    pub monitor_uid: MonitorUid,
    pub verdict: Verdict,
    pub transition: Transition,
    pub incident: Option<IncidentRef>,
}

/// The answer to an acknowledgement or a note: the event and the incident after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionReceipt {
    pub seq: Seq,
    pub event_id: EventId,
    pub incident: Incident,
}

/// A newly created integration and its webhook token, which exists nowhere else.
#[derive(Debug, Clone)]
pub struct CreatedIntegration {
    pub integration: Integration,
    pub token: String,
}

/// Counters of the writer, for group-commit checks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub events_appended: u64,
    pub syncs: u64,
}

/// A secret with 256 bits of randomness, with a prefix that says what it is for (so it can be
/// recognised if it leaks, e.g. by secret scanners).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The only form in which a token is stored or compared.
pub fn hash_token(token: &str) -> TokenHash {
    Digest256::of(token.as_bytes())
}

/// A command that appends one event when valid.
enum WriteCommand {
    CreateIntegration { id: IntegrationId, name: String, token_hash: TokenHash },
    RevokeIntegration { id: IntegrationId },
    Ingest { token_hash: TokenHash, run: ParsedRun, idempotency_key: Option<String> },
    Acknowledge { incident_id: IncidentId, by: String, note: Option<String> },
    AddNote { incident_id: IncidentId, by: String, text: String },
    RotateIntegration { id: IntegrationId, token_hash: TokenHash, grace: Option<chrono::Duration> },
    CreateApiToken { id: ApiTokenId, name: String, token_hash: TokenHash },
    RevokeApiToken { id: ApiTokenId },
}

enum CommandKind {
    Write(WriteCommand),
    /// Replace the projections with ones rebuilt from the log up to some seq, after catching them
    /// up to the head.
    Swap {
        rebuilt: Box<State>,
        started: Instant,
    },
}

enum Receipt {
    Integration(Integration),
    Run(IngestReceipt),
    Replay(ReplayReport),
    Action(ActionReceipt),
    ApiToken(ApiToken),
}

struct Command {
    kind: CommandKind,
    reply: oneshot::Sender<Result<Receipt, EngineError>>,
}

struct Shared {
    store: Store,
    /// The published state: only events that are durable have been folded into it.
    state: RwLock<State>,
    events_appended: AtomicU64,
    syncs: AtomicU64,
    failed: AtomicBool,
    startup: Startup,
    metrics: Metrics,
    snapshot_every: u64,
    /// The snapshot thread's jobs; taken (closed) at shutdown.
    snapshot_jobs: Mutex<Option<mpsc::Sender<SnapshotJob>>>,
    /// Tells a snapshotter in the middle of a fold to stop, at shutdown.
    snapshot_stop: AtomicBool,
}

/// How the projections were brought up to date when the engine opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startup {
    /// The seq of the checkpoint the engine started from; `None` when it refolded the whole log.
    pub checkpoint: Option<Seq>,
    /// Events folded at start on top of the checkpoint.
    pub events_folded: u64,
}

pub struct Engine {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    snapshotter: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Opens the data directory, loads the projection checkpoint, catches it up from the log and
    /// starts the writer.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Engine, EngineError> {
        let store = Store::open(dir, &options.store)?;
        let head = store.head()?;
        let head_seq = head.as_ref().map_or(Seq::ZERO, |e| e.seq);
        let checkpoint = match store.load_checkpoint() {
            Ok(Some(state)) if state.applied() > head_seq => {
                tracing::warn!(
                    checkpoint = %state.applied(), head = %head_seq,
                    "projection checkpoint is ahead of the log; refolding the log"
                );
                None
            }
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "projection checkpoint unreadable; refolding the log");
                None
            }
        };
        let caught_up = checkpoint.and_then(|mut state| {
            let from = state.applied();
            let mut dirty = Dirty::default();
            match audit::catch_up(&store, &mut state, Some(&mut dirty)) {
                Ok(folded) => {
                    Some((state, dirty, Startup { checkpoint: Some(from), events_folded: folded }))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "projection checkpoint does not fit the log; refolding the log");
                    None
                }
            }
        });
        let (state, startup) = match caught_up {
            Some((state, dirty, startup)) => {
                if !dirty.is_empty() {
                    store.save_checkpoint(&state, &dirty)?;
                }
                (state, startup)
            }
            // The log is the source of truth: fold it from the first event and checkpoint that.
            None => {
                let mut state = State::default();
                let folded = audit::catch_up(&store, &mut state, None)?;
                store.rewrite_checkpoint(&state)?;
                (state, Startup { checkpoint: None, events_folded: folded })
            }
        };
        // The writer and the readers each get a copy. The copies share every monitor and
        // incident until the writer changes one (see `publish`).
        let writer_state = state.clone();
        tracing::info!(
            head = %head_seq, checkpoint = ?startup.checkpoint, events_folded = startup.events_folded,
            "projections ready"
        );
        // Decoding the checkpoint left much freed memory behind.
        crate::memory::release_free_memory();

        let shared = Arc::new(Shared {
            store,
            state: RwLock::new(state),
            events_appended: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            startup,
            metrics: Metrics::new(),
            snapshot_every: options.snapshot_every,
            snapshot_jobs: Mutex::new(None),
            snapshot_stop: AtomicBool::new(false),
        });
        let (jobs, queued) = mpsc::channel();
        // A first job at start builds the snapshots missing up to the head.
        let _ = jobs.send(SnapshotJob::CatchUp);
        *shared.snapshot_jobs.lock().expect("snapshot lock") = Some(jobs);
        let snapshot_shared = shared.clone();
        let snapshotter = std::thread::Builder::new()
            .name("incidentd-snapshot".into())
            .spawn(move || run_snapshotter(&snapshot_shared, queued))
            .map_err(|e| EngineError::Storage(StoreError::Io(e)))?;
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            state: writer_state,
            head_hash: head.as_ref().map_or(Digest256::GENESIS, |e| e.hash),
            last_recorded_at: head.map(|e| e.recorded_at),
            dirty: Dirty::default(),
            options,
        };
        let handle = std::thread::Builder::new()
            .name("incidentd-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| EngineError::Storage(StoreError::Io(e)))?;
        Ok(Engine {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            snapshotter: Mutex::new(Some(snapshotter)),
        })
    }

    async fn submit(&self, kind: CommandKind) -> Result<Receipt, EngineError> {
        let (reply, answer) = oneshot::channel();
        let sent = match &*self.tx.lock().expect("sender lock") {
            Some(tx) => tx.send(Command { kind, reply }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(EngineError::Unavailable);
        }
        answer.await.map_err(|_| EngineError::Unavailable)?
    }

    /// Creates an integration with a fresh webhook token.
    pub async fn create_integration(&self, name: &str) -> Result<CreatedIntegration, EngineError> {
        let name = validate_text("name", name, 200, true)?;
        let token = new_secret("whk_");
        let command = WriteCommand::CreateIntegration {
            id: IntegrationId(Uuid::new_v4()),
            name,
            token_hash: hash_token(&token),
        };
        match self.submit(CommandKind::Write(command)).await? {
            Receipt::Integration(integration) => Ok(CreatedIntegration { integration, token }),
            _ => unreachable!("a create command is answered with an integration"),
        }
    }

    /// Revokes an integration: its webhook URL is refused from now on.
    pub async fn revoke_integration(&self, id: IntegrationId) -> Result<Integration, EngineError> {
        match self.submit(CommandKind::Write(WriteCommand::RevokeIntegration { id })).await? {
            Receipt::Integration(integration) => Ok(integration),
            _ => unreachable!("a revoke command is answered with an integration"),
        }
    }

    /// Gives an integration a new webhook token. The old one keeps working for `grace`, or the
    /// configured grace period when `None` (zero cuts a leaked token off at once).
    pub async fn rotate_integration(
        &self,
        id: IntegrationId,
        grace: Option<chrono::Duration>,
    ) -> Result<CreatedIntegration, EngineError> {
        if grace.is_some_and(|g| g < chrono::Duration::zero()) {
            return Err(EngineError::Invalid {
                field: "grace_s",
                reason: "must not be negative".to_owned(),
            });
        }
        let token = new_secret("whk_");
        let command = WriteCommand::RotateIntegration { id, token_hash: hash_token(&token), grace };
        match self.submit(CommandKind::Write(command)).await? {
            Receipt::Integration(integration) => Ok(CreatedIntegration { integration, token }),
            _ => unreachable!("a rotate command is answered with an integration"),
        }
    }

    /// Issues a reader token; the token itself is returned here and stored nowhere.
    pub async fn create_api_token(&self, name: &str) -> Result<(ApiToken, String), EngineError> {
        let name = validate_text("name", name, 200, true)?;
        let token = new_secret("rdr_");
        let command = WriteCommand::CreateApiToken {
            id: ApiTokenId(Uuid::new_v4()),
            name,
            token_hash: hash_token(&token),
        };
        match self.submit(CommandKind::Write(command)).await? {
            Receipt::ApiToken(api_token) => Ok((api_token, token)),
            _ => unreachable!("a token command is answered with a token"),
        }
    }

    pub async fn revoke_api_token(&self, id: ApiTokenId) -> Result<ApiToken, EngineError> {
        match self.submit(CommandKind::Write(WriteCommand::RevokeApiToken { id })).await? {
            Receipt::ApiToken(api_token) => Ok(api_token),
            _ => unreachable!("a token command is answered with a token"),
        }
    }

    /// Appends one delivered run for the integration whose webhook token is `token`. Returns once
    /// the event is durable. With an idempotency key already used on this integration, answers
    /// as the first delivery was answered and appends nothing (or refuses a different body).
    pub async fn ingest(
        &self,
        token: &str,
        run: ParsedRun,
        idempotency_key: Option<String>,
    ) -> Result<IngestReceipt, EngineError> {
        let command = WriteCommand::Ingest { token_hash: hash_token(token), run, idempotency_key };
        match self.submit(CommandKind::Write(command)).await? {
            Receipt::Run(receipt) => Ok(receipt),
            _ => unreachable!("an ingest command is answered with a run"),
        }
    }

    /// Records that `by` acknowledged an open incident.
    pub async fn acknowledge(
        &self,
        incident_id: IncidentId,
        by: &str,
        note: Option<&str>,
    ) -> Result<ActionReceipt, EngineError> {
        let by = validate_text("by", by, 200, true)?;
        let note = note.map(|n| validate_text("note", n, MAX_TEXT, false)).transpose()?;
        self.action(WriteCommand::Acknowledge { incident_id, by, note }).await
    }

    /// Records a note by `by` on an incident, in any status.
    pub async fn add_note(
        &self,
        incident_id: IncidentId,
        by: &str,
        text: &str,
    ) -> Result<ActionReceipt, EngineError> {
        let by = validate_text("by", by, 200, true)?;
        let text = validate_text("text", text, MAX_TEXT, false)?;
        self.action(WriteCommand::AddNote { incident_id, by, text }).await
    }

    async fn action(&self, command: WriteCommand) -> Result<ActionReceipt, EngineError> {
        match self.submit(CommandKind::Write(command)).await? {
            Receipt::Action(receipt) => Ok(receipt),
            _ => unreachable!("an incident action is answered with an action receipt"),
        }
    }

    /// An incident and every durable event on its timeline, in log order. Blocking: reads them.
    pub fn incident_with_events(
        &self,
        id: IncidentId,
    ) -> Result<Option<(Incident, Vec<Event>)>, EngineError> {
        let (incident, seqs) = {
            let state = self.state();
            let Some(incident) = state.incident(id) else {
                return Ok(None);
            };
            (incident.clone(), state.incident_events(incident))
        };
        let events = seqs
            .into_iter()
            .map(|seq| self.shared.store.event_required(seq))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((incident, events)))
    }

    /// Rebuilds every projection from the first event while ingest goes on: folds the durable log
    /// into a fresh state off the writer, rebuilding the snapshots on the way, then has the writer
    /// catch it up to the head, compare digests, and swap it in (and checkpoint it) in one step.
    pub async fn replay(&self) -> Result<ReplayReport, EngineError> {
        let started = Instant::now();
        let head = self.state().applied();
        let shared = self.shared.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            audit::rebuild(&shared.store, Some(head), shared.snapshot_every)
        })
        .await
        .map_err(|_| EngineError::Unavailable)??;
        let command = CommandKind::Swap { rebuilt: Box::new(rebuilt), started };
        match self.submit(command).await? {
            Receipt::Replay(report) => Ok(report),
            _ => unreachable!("a swap command is answered with a replay report"),
        }
    }

    /// Verifies the hash chain and the fold of every durable event. Blocking: reads the whole log.
    pub fn verify(&self) -> VerifyReport {
        let head = self.state().applied();
        audit::verify(&self.shared.store, Some(head))
    }

    /// The projections as they were right after event `seq` (clamped to the durable head).
    /// Blocking: loads the nearest snapshot at or before `seq` and folds the log from there. At
    /// the head it copies the published state instead, which shares its monitors and incidents.
    pub fn state_at(&self, seq: Seq) -> Result<State, EngineError> {
        let published = self.state();
        if seq >= published.applied() {
            return Ok(published.clone());
        }
        drop(published);
        audit::state_at(&self.shared.store, seq)
    }

    /// The last durable event recorded at or before `at`, found by bisection: the writer keeps
    /// `recorded_at` in log order. `Seq::ZERO` when every event is later.
    pub fn seq_as_of(&self, at: DateTime<Utc>) -> Result<Seq, EngineError> {
        let (mut low, mut high) = (0u64, self.state().applied().0);
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            let event = self.shared.store.event_required(Seq(mid))?;
            if event.recorded_at <= at {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        Ok(Seq(low))
    }

    /// Durable events after `after`, oldest first: at most `limit` of those `keep` accepts.
    /// Blocking: reads the log.
    pub fn events_after(
        &self,
        after: Seq,
        limit: usize,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<Vec<Event>, EngineError> {
        let head = self.state().applied();
        let mut out = Vec::new();
        if after >= head {
            return Ok(out);
        }
        for event in self.shared.store.events_from(after.next()) {
            let event = event?;
            if event.seq > head || out.len() == limit {
                break;
            }
            if keep(&event) {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// The active integration that owns a webhook token, from the published state. The writer
    /// checks again when it appends, so a revocation racing this check still wins.
    pub fn hook_integration(&self, token: &str) -> Option<IntegrationId> {
        self.state().integration_for_token(&hash_token(token), Utc::now()).map(|i| i.id)
    }

    /// The published state: every event in it is durable. Hold the guard briefly; the writer
    /// waits for it to publish the next batch.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.shared.state.read().expect("state lock poisoned")
    }

    /// One durable event from the log.
    pub fn event(&self, seq: Seq) -> Result<Option<Event>, EngineError> {
        if seq > self.state().applied() {
            return Ok(None);
        }
        Ok(self.shared.store.event(seq)?)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn startup(&self) -> Startup {
        self.shared.startup
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            events_appended: self.shared.events_appended.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }

    /// False once a storage failure has stopped writes, or the writer thread is gone.
    pub fn is_healthy(&self) -> bool {
        let writer_alive =
            self.writer.lock().expect("writer lock").as_ref().is_some_and(|w| !w.is_finished());
        writer_alive && !self.shared.failed.load(Ordering::Relaxed)
    }

    /// Stops accepting commands, lets the writer finish what is queued, checkpoints the
    /// projections and waits for the writer to exit. Idempotent.
    pub fn shutdown(&self) {
        drop(self.tx.lock().expect("sender lock").take());
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            if handle.join().is_err() {
                tracing::error!("the writer thread panicked");
            }
        }
        self.shared.snapshot_stop.store(true, Ordering::Relaxed);
        drop(self.shared.snapshot_jobs.lock().expect("snapshot lock").take());
        if let Some(handle) = self.snapshotter.lock().expect("snapshotter lock").take() {
            if handle.join().is_err() {
                tracing::error!("the snapshot thread panicked");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The syncer thread: makes inserted batches durable with one fsync for everything queued, then
/// publishes their events to readers and answers their commands, in log order.
fn run_syncer(shared: &Shared, rx: mpsc::Receiver<ToSyncer>) {
    while let Ok(first) = rx.recv() {
        let mut items = vec![first];
        while let Ok(item) = rx.try_recv() {
            items.push(item);
        }
        let events: usize = items
            .iter()
            .map(|item| match item {
                ToSyncer::Batch { events, .. } => events.len(),
                ToSyncer::Checkpoint(_) | ToSyncer::Barrier(_) => 0,
            })
            .sum();
        let synced = events == 0 || shared.failed.load(Ordering::Relaxed) || {
            let started = Instant::now();
            match shared.store.sync() {
                Ok(()) => {
                    shared.metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
                    shared.metrics.commit_batch_events.observe(events as f64);
                    shared.syncs.fetch_add(1, Ordering::Relaxed);
                    shared.events_appended.fetch_add(events as u64, Ordering::Relaxed);
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "fsync failed; refusing further writes");
                    shared.failed.store(true, Ordering::Relaxed);
                    false
                }
            }
        };
        let durable = synced && !shared.failed.load(Ordering::Relaxed);
        let mut checkpointed = false;
        // Logged once every answer of the round is sent: the log line is written synchronously
        // and would otherwise delay the answers behind it.
        let mut transitions = Vec::new();
        for item in items {
            match item {
                ToSyncer::Batch { events, delta, snapshots, answers } => {
                    if durable {
                        publish(shared, delta);
                        if !snapshots.is_empty() {
                            if let Some(jobs) =
                                &*shared.snapshot_jobs.lock().expect("snapshot lock")
                            {
                                for state in snapshots {
                                    let _ = jobs.send(SnapshotJob::Save(Box::new(state)));
                                }
                            }
                        }
                    } else {
                        // Never acknowledged and perhaps never on disk: take them back so that no
                        // later flush (sled flushes when it closes) makes them durable after all.
                        shared.store.discard(&events);
                    }
                    for (reply, answer) in answers {
                        let answer = if durable { answer } else { Err(EngineError::Unavailable) };
                        if let Ok(Receipt::Run(r)) = &answer {
                            if matches!(r.transition, Transition::Opened | Transition::Resolved) {
                                transitions.push(r.clone());
                            }
                        }
                        // A requester that went away (client disconnected) needs no answer.
                        let _ = reply.send(answer);
                    }
                }
                ToSyncer::Checkpoint(batch) if durable => {
                    match shared.store.apply_checkpoint(batch) {
                        Ok(()) => checkpointed = true,
                        // The log still holds everything; the next checkpoint (or start) retries.
                        Err(e) => tracing::warn!(error = %e, "projection checkpoint failed"),
                    }
                }
                ToSyncer::Checkpoint(_) => {}
                ToSyncer::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
        for r in &transitions {
            log_transition(r);
        }
        // sled persists nothing on its own (see `Store::open`), so a checkpoint written while the
        // log is idle is flushed here; losing it would only mean a longer catch-up.
        if checkpointed {
            if let Err(e) = shared.store.sync() {
                tracing::warn!(error = %e, "flushing the projection checkpoint failed");
            }
        }
    }
}

/// Work for the snapshot thread.
enum SnapshotJob {
    /// Save the snapshots missing between the latest one and the published head, folding the
    /// log from the latest one (at start, when snapshots were lost or the interval changed).
    CatchUp,
    /// Delete every snapshot and save them again from the log, up to the published head.
    Rebuild,
    /// Save this copy of the writer's state, taken right after it folded a multiple of
    /// `snapshot_every`, now that the events it covers are durable.
    Save(Box<State>),
}

/// The snapshot thread: writes projection snapshots off the writer and the syncer, reading only
/// durable events (up to the published head).
fn run_snapshotter(shared: &Shared, jobs: mpsc::Receiver<SnapshotJob>) {
    let build_missing = || {
        let head = shared.state.read().expect("state lock poisoned").applied();
        audit::build_snapshots(&shared.store, shared.snapshot_every, head, &shared.snapshot_stop)
    };
    while let Ok(job) = jobs.recv() {
        let result = match job {
            SnapshotJob::CatchUp => build_missing(),
            SnapshotJob::Rebuild => shared
                .store
                .clear_snapshots()
                .map_err(EngineError::from)
                .and_then(|()| build_missing()),
            // Saved even while shutting down: a snapshot skipped now would stay missing, as a
            // start only fills in those after the latest one.
            SnapshotJob::Save(state) => {
                shared.store.save_snapshot(&state).map(|()| 1).map_err(EngineError::from)
            }
        };
        match result {
            Ok(0) => {}
            Ok(saved) => tracing::debug!(saved, "projection snapshots saved"),
            // Snapshots only speed up time travel; the next one is taken as usual.
            Err(e) => tracing::warn!(error = %e, "projection snapshot failed"),
        }
    }
}

/// Makes a durable batch visible to readers: the published state takes over the entries the batch
/// left in the writer's state, sharing them rather than folding the same events a second time.
fn publish(shared: &Shared, delta: Delta) {
    shared.state.write().expect("state lock poisoned").absorb(delta);
}

/// One log line per incident opened or resolved, written once the event is durable.
fn log_transition(r: &IngestReceipt) {
    if let (Transition::Opened | Transition::Resolved, Some(incident)) = (r.transition, &r.incident)
    {
        tracing::info!(
            monitor_uid = %r.monitor_uid, incident_id = %incident.id,
            transition = ?r.transition, seq = %r.seq, "incident transition"
        );
    }
}

/// Longest note or acknowledgement text, in characters.
const MAX_TEXT: usize = 10_000;

/// Checks free text from a person: trimmed, not empty, not too long; line breaks only where
/// `single_line` is false.
fn validate_text(
    field: &'static str,
    text: &str,
    max_chars: usize,
    single_line: bool,
) -> Result<String, EngineError> {
    let text = text.trim();
    let invalid = |reason: String| EngineError::Invalid { field, reason };
    if text.is_empty() {
        Err(invalid("must not be empty".to_owned()))
    } else if text.chars().count() > max_chars {
        Err(invalid(format!("must be at most {max_chars} characters")))
    } else if text.chars().any(|c| c.is_control() && (single_line || !matches!(c, '\n' | '\t'))) {
        Err(invalid("must not contain control characters".to_owned()))
    } else {
        Ok(text.to_owned())
    }
}

/// The writer thread's own state: one batch ahead of the published state while a batch is being
/// made durable.
struct Writer {
    shared: Arc<Shared>,
    state: State,
    head_hash: Digest256,
    last_recorded_at: Option<DateTime<Utc>>,
    dirty: Dirty,
    options: EngineOptions,
}

type Reply = oneshot::Sender<Result<Receipt, EngineError>>;

/// What the writer hands the syncer, in log order.
enum ToSyncer {
    /// Events inserted into the store, not yet durable, what they changed in the writer's state,
    /// and the answers to the commands of their batch (refusals included, so that every answer
    /// keeps its order).
    Batch {
        events: Vec<Event>,
        delta: Delta,
        /// Copies of the writer's state at the snapshot seqs within the batch.
        snapshots: Vec<State>,
        answers: Vec<(Reply, Result<Receipt, EngineError>)>,
    },
    /// A checkpoint, to be written once the events it covers are durable.
    Checkpoint(CheckpointBatch),
    /// Answered once everything sent before it is durable and published.
    Barrier(mpsc::SyncSender<()>),
}

/// The events of the batch being staged: as folded, as encoded for the store, and what each one
/// touched in the writer's state.
struct Staging {
    events: Vec<Event>,
    encoded: Vec<Encoded>,
    changes: Vec<(Seq, Touched)>,
    /// The writer's state right after each event whose seq is a multiple of `snapshot_every`.
    snapshots: Vec<State>,
}

impl Staging {
    fn with_capacity(n: usize) -> Staging {
        Staging {
            events: Vec::with_capacity(n),
            encoded: Vec::with_capacity(n),
            changes: Vec::with_capacity(n),
            snapshots: Vec::new(),
        }
    }
}

/// Batches the writer may hand on while the syncer is still busy: one being synced, one waiting.
/// Beyond that the writer waits, and commands queue up into larger batches instead.
const SYNC_QUEUE: usize = 1;

impl Writer {
    /// The writer pipeline: while the syncer makes one batch durable, the writer already validates,
    /// folds and inserts the next, so the CPU work of a batch overlaps the previous fsync.
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let (to_syncer, syncer_rx) = mpsc::sync_channel(SYNC_QUEUE);
        let shared = self.shared.clone();
        let syncer = std::thread::Builder::new()
            .name("incidentd-syncer".into())
            .spawn(move || run_syncer(&shared, syncer_rx))
            .expect("the syncer thread starts");
        loop {
            let first = match rx.recv_timeout(IDLE_CHECKPOINT) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint(&to_syncer);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.process(batch, &to_syncer);
            if self.dirty.events() >= self.options.checkpoint_every {
                self.checkpoint(&to_syncer);
            }
        }
        self.checkpoint(&to_syncer);
        drop(to_syncer);
        if syncer.join().is_err() {
            tracing::error!("the syncer thread panicked");
        }
        // A snapshot at the head, which the last checkpoint covers too, lets the next start read
        // the state in a few large values (`Store::load_checkpoint`). It is only a faster way to
        // the same state: when it is missing, the start reads the checkpoint entry by entry.
        if !self.shared.failed.load(Ordering::Relaxed) && self.state.applied() > Seq::ZERO {
            let saved = self
                .shared
                .store
                .save_head_snapshot(&self.state, self.options.snapshot_every)
                .and_then(|()| self.shared.store.sync());
            if let Err(e) = saved {
                tracing::warn!(error = %e, "snapshot at shutdown failed");
            }
        }
    }

    /// Serializes the changed projection entries as of the writer's state and hands them to the
    /// syncer, which writes them after the events they cover are durable.
    fn checkpoint(&mut self, to_syncer: &mpsc::SyncSender<ToSyncer>) {
        if self.dirty.is_empty() || self.shared.failed.load(Ordering::Relaxed) {
            return;
        }
        let batch = Store::prepare_checkpoint(&self.state, &self.dirty);
        if to_syncer.send(ToSyncer::Checkpoint(batch)).is_ok() {
            self.dirty = Dirty::default();
        }
    }

    /// Waits until everything handed to the syncer is durable and published.
    fn drain(to_syncer: &mpsc::SyncSender<ToSyncer>) {
        let (done, wait) = mpsc::sync_channel(1);
        if to_syncer.send(ToSyncer::Barrier(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Server time for the next event, never earlier than the event before it, so that the log's
    /// times are in log order even if the system clock steps back.
    fn next_time(&mut self) -> DateTime<Utc> {
        let now = Utc::now().trunc_subsecs(6);
        let at = match self.last_recorded_at {
            Some(last) if last > now => last,
            _ => now,
        };
        self.last_recorded_at = Some(at);
        at
    }

    fn process(&mut self, batch: Vec<Command>, to_syncer: &mpsc::SyncSender<ToSyncer>) {
        if self.shared.failed.load(Ordering::Relaxed) {
            for command in batch {
                let _ = command.reply.send(Err(EngineError::Unavailable));
            }
            return;
        }
        let mut staging = Staging::with_capacity(batch.len());
        let mut answers: Vec<(Reply, Result<Receipt, EngineError>)> =
            Vec::with_capacity(batch.len());
        let mut swaps = Vec::new();
        for Command { kind, reply } in batch {
            let command = match kind {
                CommandKind::Write(command) => command,
                // Swaps run once this batch is durable, so that catching up reads it from the log.
                CommandKind::Swap { rebuilt, started } => {
                    swaps.push((reply, rebuilt, started));
                    continue;
                }
            };
            let answer = self.stage(command, &mut staging);
            if let Err(EngineError::Corrupt(reason)) = &answer {
                // The writer's own state refused an event it built: stop before writing anything
                // that contradicts the log.
                tracing::error!(%reason, "writer state is inconsistent; refusing further writes");
                self.shared.failed.store(true, Ordering::Relaxed);
            }
            answers.push((reply, answer));
        }
        let inserted = !self.shared.failed.load(Ordering::Relaxed)
            && (staging.events.is_empty() || {
                let result = self.shared.store.insert(&staging.encoded);
                if let Err(e) = &result {
                    // Whether the batch reached the disk is unknown, and the writer's state is
                    // ahead of the log: stop accepting writes until an operator restarts the
                    // service, which refolds from what the log really holds.
                    tracing::error!(error = %e, "append failed; refusing further writes");
                    self.shared.failed.store(true, Ordering::Relaxed);
                }
                result.is_ok()
            });
        if !inserted {
            for (reply, _) in answers {
                let _ = reply.send(Err(EngineError::Unavailable));
            }
            for (reply, ..) in swaps {
                let _ = reply.send(Err(EngineError::Unavailable));
            }
            return;
        }
        // The syncer answers once the batch is durable; it only stops when the writer does.
        // What the batch changed, for the published state to take over once it is durable.
        let delta = self.state.delta(&staging.changes);
        let _ = to_syncer.send(ToSyncer::Batch {
            events: staging.events,
            delta,
            snapshots: staging.snapshots,
            answers,
        });
        if !swaps.is_empty() {
            Writer::drain(to_syncer);
        }
        for (reply, rebuilt, started) in swaps {
            let _ = reply.send(self.swap(*rebuilt, started).map(Receipt::Replay));
        }
    }

    /// Catches a rebuilt state up to the head, compares it with the live one, and makes it the
    /// live, published and checkpointed state.
    fn swap(&mut self, mut rebuilt: State, started: Instant) -> Result<ReplayReport, EngineError> {
        audit::catch_up(&self.shared.store, &mut rebuilt, None)?;
        let report = ReplayReport::new(&self.state, &rebuilt, started);
        if !report.identical {
            tracing::warn!(
                before = %report.digest_before, after = %report.digest_after,
                "replay rebuilt projections that differ from the live ones; the rebuilt ones win"
            );
            // Snapshots taken from the live state while the replay ran came from the projections
            // just replaced; they are rebuilt from the log, after every such one is written.
            if let Some(jobs) = &*self.shared.snapshot_jobs.lock().expect("snapshot lock") {
                let _ = jobs.send(SnapshotJob::Rebuild);
            }
        }
        *self.shared.state.write().expect("state lock poisoned") = rebuilt.clone();
        self.state = rebuilt;
        self.dirty = Dirty::default();
        if let Err(e) = self.shared.store.rewrite_checkpoint(&self.state) {
            // The old checkpoint is still whole (the rewrite is one batch); the next checkpoint
            // writes every entry, so that it matches the swapped-in state.
            tracing::warn!(error = %e, "checkpoint after replay failed");
            self.dirty = Dirty::everything(&self.state);
        }
        // The replaced state is gone; give its memory back rather than keep the peak.
        crate::memory::release_free_memory();
        self.shared.metrics.replays.inc();
        self.shared.metrics.replay_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            events = report.events_replayed,
            duration_ms = report.duration_ms,
            identical = report.identical,
            "replay finished"
        );
        Ok(report)
    }

    /// The answer to a delivery whose idempotency key was used before: the first answer when the
    /// body is the same JSON, a refusal when it is not. The first delivery may still be in this
    /// batch, not yet in the store; its answer goes out after the batch is durable, like this one.
    fn repeat(
        &self,
        first: IdempotentRun,
        run: &ParsedRun,
        staged: &[Event],
    ) -> Result<IngestReceipt, EngineError> {
        let original = match staged.iter().find(|e| e.seq == first.seq) {
            Some(event) => event.clone(),
            None => self.shared.store.event_required(first.seq)?,
        };
        let EventBody::MonitorRunReported { monitor_uid, payload, .. } = &original.body else {
            return Err(EngineError::Corrupt(format!("event {} is not a run", first.seq)));
        };
        if !payload.same_json(&run.payload) {
            return Err(EngineError::IdempotencyKeyReused(first.seq));
        }
        Ok(IngestReceipt {
            seq: first.seq,
            event_id: original.event_id,
            monitor_uid: monitor_uid.clone(),
            verdict: first.verdict,
            transition: first.transition,
            incident: first.incident,
        })
    }

    fn action_target(&self, id: IncidentId) -> Result<&Incident, EngineError> {
        self.state.incident(id).ok_or_else(|| EngineError::NotFound(format!("incident {id}")))
    }

    /// Validates one command against the writer's state and, when valid, builds its event, folds
    /// it and queues it for the batch.
    fn stage(
        &mut self,
        command: WriteCommand,
        staging: &mut Staging,
    ) -> Result<Receipt, EngineError> {
        // Taken first, so that times derived from it (a rotation's grace) match the event's.
        let at = self.next_time();
        // A delivery's payload was parsed at the edge; the fold takes that report as it is.
        let mut parsed = None;
        let body = match command {
            WriteCommand::CreateIntegration { id, name, token_hash } => {
                EventBody::IntegrationCreated { integration_id: id, name, token_hash }
            }
            WriteCommand::RevokeIntegration { id } => {
                let integration = self
                    .state
                    .integration(id)
                    .ok_or_else(|| EngineError::NotFound(format!("integration {id}")))?;
                if !integration.is_active() {
                    return Err(EngineError::Conflict(format!(
                        "integration {id} is already revoked"
                    )));
                }
                EventBody::IntegrationRevoked { integration_id: id }
            }
            WriteCommand::Acknowledge { incident_id, by, note } => {
                let incident = self.action_target(incident_id)?;
                match incident.status {
                    IncidentStatus::Open => {}
                    IncidentStatus::Acknowledged => {
                        return Err(EngineError::Conflict(format!(
                            "incident {incident_id} was already acknowledged by {} at {}",
                            incident.acknowledged_by.as_deref().unwrap_or("?"),
                            incident.acknowledged_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        )))
                    }
                    IncidentStatus::Resolved => {
                        return Err(EngineError::Conflict(format!(
                            "incident {incident_id} is resolved; only open incidents can be acknowledged"
                        )))
                    }
                }
                EventBody::IncidentAcknowledged {
                    incident_id,
                    integration_id: incident.integration_id,
                    monitor_uid: incident.monitor_uid.clone(),
                    by,
                    note,
                }
            }
            WriteCommand::AddNote { incident_id, by, text } => {
                let incident = self.action_target(incident_id)?;
                EventBody::NoteAdded {
                    incident_id,
                    integration_id: incident.integration_id,
                    monitor_uid: incident.monitor_uid.clone(),
                    by,
                    text,
                }
            }
            WriteCommand::RotateIntegration { id, token_hash, grace } => {
                let integration = self
                    .state
                    .integration(id)
                    .ok_or_else(|| EngineError::NotFound(format!("integration {id}")))?;
                if !integration.is_active() {
                    return Err(EngineError::Conflict(format!("integration {id} is revoked")));
                }
                EventBody::IntegrationTokenRotated {
                    integration_id: id,
                    token_hash,
                    previous_valid_until: at + grace.unwrap_or(self.options.rotation_grace),
                }
            }
            WriteCommand::CreateApiToken { id, name, token_hash } => {
                EventBody::ApiTokenCreated { token_id: id, name, role: Role::Reader, token_hash }
            }
            WriteCommand::RevokeApiToken { id } => {
                let token = self
                    .state
                    .api_token(id)
                    .ok_or_else(|| EngineError::NotFound(format!("API token {id}")))?;
                if !token.is_active() {
                    return Err(EngineError::Conflict(format!(
                        "API token {id} is already revoked"
                    )));
                }
                EventBody::ApiTokenRevoked { token_id: id }
            }
            WriteCommand::Ingest { token_hash, run, idempotency_key } => {
                let integration = self
                    .state
                    .integration_for_token(&token_hash, Utc::now())
                    .ok_or_else(|| EngineError::NotFound("webhook".to_owned()))?;
                if let Some(key) = &idempotency_key {
                    if let Some(first) = self.state.idempotent_run(integration.id, key) {
                        return self.repeat(first.clone(), &run, &staging.events).map(Receipt::Run);
                    }
                }
                let ParsedRun { report, payload } = run;
                let body = EventBody::MonitorRunReported {
                    integration_id: integration.id,
                    monitor_uid: report.monitor_uid.clone(),
                    idempotency_key,
                    payload,
                };
                parsed = Some(report);
                body
            }
        };
        let (event, bytes) = Event::seal_encoded(
            self.state.applied().next(),
            EventId(Uuid::new_v4()),
            at,
            body,
            self.head_hash,
        );
        let bytes = Encoded::from_sealed(event.seq, bytes)?;
        let applied = match parsed {
            Some(report) => self.state.apply_parsed(&event, report)?,
            None => self.state.apply(&event)?,
        };
        self.dirty.record(&applied.touched, &self.state);
        staging.changes.push((event.seq, applied.touched));
        let every = self.options.snapshot_every;
        if every > 0 && event.seq.0 % every == 0 {
            // A clone shares every monitor and incident, so it costs the maps' nodes and the run
            // lists; folding the log again on another thread to reach this seq would cost far
            // more CPU.
            staging.snapshots.push(self.state.clone());
        }
        self.head_hash = event.hash;
        let receipt = match applied.outcome {
            Outcome::IntegrationCreated
            | Outcome::IntegrationRevoked
            | Outcome::IntegrationTokenRotated => Receipt::Integration(
                event
                    .body
                    .integration_id()
                    .and_then(|id| self.state.integration(id))
                    .expect("the event just applied names it")
                    .clone(),
            ),
            Outcome::ApiTokenCreated | Outcome::ApiTokenRevoked => {
                let (EventBody::ApiTokenCreated { token_id, .. }
                | EventBody::ApiTokenRevoked { token_id }) = &event.body
                else {
                    unreachable!("a token outcome comes from a token event")
                };
                Receipt::ApiToken(self.state.api_token(*token_id).expect("just applied").clone())
            }
            Outcome::Run { verdict, transition, incident } => Receipt::Run(IngestReceipt {
                seq: event.seq,
                event_id: event.event_id,
                monitor_uid: event.monitor_uid().expect("a run names its monitor").clone(),
                verdict,
                transition,
                incident,
            }),
            Outcome::IncidentAction { incident } => Receipt::Action(ActionReceipt {
                seq: event.seq,
                event_id: event.event_id,
                incident: self
                    .state
                    .incident(incident.id)
                    .expect("the event just applied names it")
                    .clone(),
            }),
        };
        staging.events.push(event);
        staging.encoded.push(bytes);
        Ok(receipt)
    }
}
