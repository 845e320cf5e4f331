//! The projection checkpoint: the folded state persisted entry by entry in the `projections` tree,
//! with the seq it covers, so that a start catches up from there instead of refolding the log.
//!
//! Keys (one sled batch per checkpoint, so a checkpoint is applied whole or not at all):
//! - `c` -> `{"format": 4, "applied_seq": N}` (JSON)
//! - `a` + API token uuid -> API token
//! - `k` + integration uuid + idempotency key -> how the first delivery with that key was answered
//! - `g` + integration uuid -> integration
//! - `m` + monitor key -> monitor
//! - `r` + monitor key + chunk number (u32 BE) -> up to [`RUN_CHUNK`] run seqs as u64 BE
//! - `i` + opening seq (u64 BE) -> incident
//!
//! Records are in the compact binary encoding of [`super::codec`] (format 4); formats up to 3
//! stored them as JSON and are discarded and refolded.
//!
//! A monitor key is the uid's bytes, a 0 byte (uids never contain control characters) and the
//! integration uuid.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::codec::{self, read_record, record};
use super::{Store, StoreError};
use crate::domain::{ApiTokenId, IntegrationId, MonitorKey, MonitorUid, Seq, State, Touched};

/// Bumped whenever the checkpoint's shape changes; an older checkpoint is then discarded and the
/// projections are refolded from the log, which is always possible.
const FORMAT: u32 = 4;
/// A key of its own first byte, so that no prefix scan of the entries below ever meets it.
const META: &[u8] = b"c";
/// Run seqs per chunk: appending a run rewrites one chunk of at most 4 KiB, never the whole list.
const RUN_CHUNK: usize = 512;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    applied_seq: Seq,
}

/// A checkpoint serialized and ready to write: one atomic sled batch.
pub struct CheckpointBatch(sled::Batch);

/// The projection entries changed since the last checkpoint.
#[derive(Debug, Default)]
pub struct Dirty {
    integrations: BTreeSet<IntegrationId>,
    api_tokens: BTreeSet<ApiTokenId>,
    idempotency: BTreeSet<(IntegrationId, String)>,
    /// For each monitor, how many of its runs the last checkpoint already holds.
    monitors: BTreeMap<MonitorKey, usize>,
    incidents: BTreeSet<Seq>,
    events: u64,
}

impl Dirty {
    /// Notes what one event (already applied to `state`) changed.
    pub fn record(&mut self, touched: &Touched, state: &State) {
        self.events += 1;
        if let Some(id) = touched.integration {
            self.integrations.insert(id);
        }
        if let Some(id) = touched.api_token {
            self.api_tokens.insert(id);
        }
        if let Some(key) = &touched.idempotency {
            self.idempotency.insert(key.clone());
        }
        if let Some(key) = &touched.monitor {
            if !self.monitors.contains_key(key) {
                // The event appended exactly one run to this monitor.
                let persisted = state.runs(key).len().saturating_sub(1);
                self.monitors.insert(key.clone(), persisted);
            }
        }
        if let Some(seq) = touched.incident {
            self.incidents.insert(seq);
        }
    }

    /// Everything in `state`, for a checkpoint written from scratch.
    pub fn everything(state: &State) -> Dirty {
        Dirty {
            integrations: state.integrations().map(|i| i.id).collect(),
            api_tokens: state.api_tokens().map(|t| t.id).collect(),
            idempotency: state.idempotency_keys().map(|(k, _)| k.clone()).collect(),
            monitors: state.monitors().map(|m| (m.key(), 0)).collect(),
            incidents: state.incidents().map(|i| i.opened_seq).collect(),
            events: state.applied().0,
        }
    }

    /// Events folded since the last checkpoint.
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
}

fn monitor_key_bytes(prefix: u8, key: &MonitorKey) -> Vec<u8> {
    let uid = key.monitor_uid.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + uid.len() + 1 + 16 + 4);
    out.push(prefix);
    out.extend_from_slice(uid);
    out.push(0);
    out.extend_from_slice(key.integration_id.0.as_bytes());
    out
}

fn bad(what: impl std::fmt::Display) -> StoreError {
    StoreError::BadCheckpoint(what.to_string())
}

impl Store {
    /// Writes the entries `dirty` names and the seq `state` covers, as one atomic batch. Needs no
    /// fsync of its own: a checkpoint lost in a crash only means a longer catch-up from the log.
    pub fn save_checkpoint(&self, state: &State, dirty: &Dirty) -> Result<(), StoreError> {
        self.apply_checkpoint(Store::prepare_checkpoint(state, dirty))
    }

    /// Writes a checkpoint prepared earlier.
    pub fn apply_checkpoint(&self, checkpoint: CheckpointBatch) -> Result<(), StoreError> {
        self.projections.apply_batch(checkpoint.0)?;
        Ok(())
    }

    /// Serializes the entries `dirty` names and the seq `state` covers into a batch that
    /// [`Store::apply_checkpoint`] writes later, so that the state need not be kept until then.
    pub fn prepare_checkpoint(state: &State, dirty: &Dirty) -> CheckpointBatch {
        let mut batch = sled::Batch::default();
        fill(&mut batch, state, dirty);
        CheckpointBatch(batch)
    }

    /// Reads the checkpoint back. `Ok(None)` when there is none or it is of another format.
    /// Reads it from a snapshot at the same seq when there is one.
    pub fn load_checkpoint(&self) -> Result<Option<State>, StoreError> {
        let Some(meta) = self.projections.get(META)? else {
            return Ok(None);
        };
        let meta: Meta = serde_json::from_slice(&meta).map_err(bad)?;
        if meta.format != FORMAT {
            return Ok(None);
        }
        // A snapshot of the very seq the checkpoint covers holds the same state (both are the fold
        // of the same events), in a few large values read in order instead of one sled entry per
        // monitor and incident: the engine leaves one at shutdown for this. An unreadable one is
        // passed over for the entries.
        if let Ok(Some(state)) = self.load_snapshot(meta.applied_seq) {
            return Ok(Some(state));
        }
        let mut integrations = Vec::new();
        for item in self.projections.scan_prefix(b"g") {
            integrations.push(read_record(&item?.1, codec::get_integration)?);
        }
        let mut monitors = Vec::new();
        for item in self.projections.scan_prefix(b"m") {
            monitors.push(read_record(&item?.1, codec::get_monitor)?);
        }
        let mut runs: BTreeMap<MonitorKey, Vec<Seq>> = BTreeMap::new();
        for item in self.projections.scan_prefix(b"r") {
            let (key, value) = item?;
            let key = parse_run_key(&key).ok_or_else(|| bad("malformed run chunk key"))?;
            if value.len() % 8 != 0 {
                return Err(bad("run chunk length is not a multiple of 8"));
            }
            let list = runs.entry(key).or_default();
            list.extend(value.chunks_exact(8).map(|c| Seq::from_be_slice(c).expect("8 bytes")));
        }
        let mut incidents = Vec::new();
        for item in self.projections.scan_prefix(b"i") {
            incidents.push(read_record(&item?.1, codec::get_incident)?);
        }
        for m in &monitors {
            if runs.get(&m.key()).map_or(0, Vec::len) as u64 != m.runs_seen {
                return Err(bad(format!("run list of monitor {} is incomplete", m.monitor_uid)));
            }
        }
        let mut idempotency = Vec::new();
        for item in self.projections.scan_prefix(b"k") {
            let (key, value) = item?;
            let (integration, idempotency_key) = key[1..]
                .split_at_checked(16)
                .and_then(|(id, k)| {
                    Some((uuid::Uuid::from_slice(id).ok()?, String::from_utf8(k.to_vec()).ok()?))
                })
                .ok_or_else(|| bad("malformed idempotency key entry"))?;
            let first = read_record(&value, codec::get_idempotent_run)?;
            idempotency.push(((IntegrationId(integration), idempotency_key), first));
        }
        let mut api_tokens = Vec::new();
        for item in self.projections.scan_prefix(b"a") {
            api_tokens.push(read_record(&item?.1, codec::get_api_token)?);
        }
        Ok(Some(
            State::from_parts(meta.applied_seq, integrations, monitors, runs, incidents)
                .with_api_tokens(api_tokens)
                .with_idempotency(idempotency),
        ))
    }

    /// Deletes the checkpoint, so that the next start refolds the whole log. The meta entry goes
    /// first: without it nothing loads, so a crash part-way through leaves no half checkpoint.
    pub fn clear_checkpoint(&self) -> Result<(), StoreError> {
        self.projections.remove(META)?;
        self.projections.clear()?;
        Ok(())
    }

    /// Replaces the whole checkpoint with `state` in one atomic batch: every old entry removed,
    /// every entry of `state` written. A crash leaves either the old checkpoint or the new one.
    pub fn rewrite_checkpoint(&self, state: &State) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.projections.iter().keys() {
            batch.remove(key?);
        }
        // A sled batch keeps the last operation per key, so the inserts override the removes.
        fill(&mut batch, state, &Dirty::everything(state));
        self.projections.apply_batch(batch)?;
        Ok(())
    }
}

/// Parses `r` + uid + 0 + uuid(16) + chunk(4); chunks arrive in key order, so oldest first.
fn parse_run_key(key: &[u8]) -> Option<MonitorKey> {
    let rest = key.strip_prefix(b"r")?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let (uid, tail) = rest.split_at(nul);
    let tail = &tail[1..];
    if tail.len() != 20 {
        return None;
    }
    let uid = MonitorUid::parse(std::str::from_utf8(uid).ok()?).ok()?;
    let id = uuid::Uuid::from_slice(&tail[..16]).ok()?;
    Some(MonitorKey { monitor_uid: uid, integration_id: IntegrationId(id) })
}

/// Adds the entries `dirty` names, as they are in `state`, and the meta entry to `batch`.
fn fill(batch: &mut sled::Batch, state: &State, dirty: &Dirty) {
    for id in &dirty.integrations {
        if let Some(i) = state.integration(*id) {
            let mut key = vec![b'g'];
            key.extend_from_slice(id.0.as_bytes());
            batch.insert(key, record(i, codec::put_integration));
        }
    }
    for id in &dirty.api_tokens {
        if let Some(t) = state.api_token(*id) {
            let mut key = vec![b'a'];
            key.extend_from_slice(id.0.as_bytes());
            batch.insert(key, record(t, codec::put_api_token));
        }
    }
    for (integration, key) in &dirty.idempotency {
        if let Some(first) = state.idempotent_run(*integration, key) {
            let mut k = vec![b'k'];
            k.extend_from_slice(integration.0.as_bytes());
            k.extend_from_slice(key.as_bytes());
            batch.insert(k, record(first, codec::put_idempotent_run));
        }
    }
    for (key, persisted) in &dirty.monitors {
        let Some(m) = state.monitor(key) else {
            continue;
        };
        batch.insert(monitor_key_bytes(b'm', key), record(m, codec::put_monitor));
        let runs = state.runs(key);
        let first_chunk = persisted / RUN_CHUNK;
        for (n, chunk) in runs.chunks(RUN_CHUNK).enumerate().skip(first_chunk) {
            let mut k = monitor_key_bytes(b'r', key);
            k.extend_from_slice(&u32::try_from(n).expect("fewer than 2^32 chunks").to_be_bytes());
            let packed: Vec<u8> = chunk.iter().flat_map(|s| s.to_be_bytes()).collect();
            batch.insert(k, packed);
        }
    }
    for seq in &dirty.incidents {
        if let Some(inc) = state.incident_opened_at(*seq) {
            let mut key = vec![b'i'];
            key.extend_from_slice(&seq.to_be_bytes());
            batch.insert(key, record(inc, codec::put_incident));
        }
    }
    let meta = Meta { format: FORMAT, applied_seq: state.applied() };
    batch.insert(META, serde_json::to_vec(&meta).expect("meta serializes"));
}
