//! Checks and rebuilds over the whole log: hash-chain verification, refolding the projections
//! from the first event, and the offline `replay`. Shared by the engine (online) and the CLI.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::domain::{ChainVerifier, Digest256, Event, Seq, State};
use crate::engine::EngineError;
use crate::store::{Dirty, SnapshotBatch, Store, StoreError, StoreOptions};

/// The result of walking the log: whether it is the unbroken chain the writer wrote and folds
/// without contradiction, and where it first is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    /// Events checked and found good.
    pub events: u64,
    pub head_seq: Seq,
    /// SHA-256 (hex) of the last good event.
    #[schema(value_type = String)]
    pub head_hash: Digest256,
    /// Digest of the projections folded from the verified events (null when the log is bad).
    #[schema(value_type = Option<String>)]
    pub projection_digest: Option<Digest256>,
    /// The first seq that is altered, missing, out of place or contradicts the log before it.
    pub first_bad_seq: Option<Seq>,
    pub error: Option<String>,
}

/// Verifies events `1..=up_to` (all when `None`): decodable, gap-free, each hash covering its
/// content and linking to the one before, and each folding without contradiction.
pub fn verify(store: &Store, up_to: Option<Seq>) -> VerifyReport {
    let mut chain = ChainVerifier::default();
    let mut state = State::default();
    let failure = (|| {
        for event in store.events_from(Seq(1)) {
            let event = event.map_err(|e| match &e {
                StoreError::Corrupt { seq, .. } => (*seq, e.to_string()),
                _ => (chain.head().0.next(), e.to_string()),
            })?;
            if up_to.is_some_and(|last| event.seq > last) {
                break;
            }
            chain.check(&event).map_err(|e| (e.seq(), e.to_string()))?;
            state.apply(&event).map_err(|e| (event.seq, e.to_string()))?;
        }
        if let Some(last) = up_to {
            if chain.head().0 < last {
                let expected = chain.head().0.next();
                return Err((
                    expected,
                    format!("event {expected} is missing (the log ends before it)"),
                ));
            }
        }
        Ok(())
    })()
    .err();
    let (head_seq, head_hash) = chain.head();
    VerifyReport {
        ok: failure.is_none(),
        events: head_seq.0,
        head_seq,
        head_hash,
        projection_digest: failure.is_none().then(|| state.digest()),
        first_bad_seq: failure.as_ref().map(|f| f.0),
        error: failure.map(|f| f.1),
    }
}

/// Events between two projection snapshots, unless configured otherwise: time travel then folds
/// at most this many events on top of the nearest snapshot.
pub const SNAPSHOT_EVERY: u64 = 50_000;

/// Folds every event after `state.applied()` into `state`, checking that each links to the one
/// before, and records what changed in `dirty` when given one (a rebuild that is checkpointed
/// whole afterwards needs none). Returns how many events were folded.
///
/// Only the links are checked here, not each event's own hash: recomputing SHA-256 over every
/// event would cost as much as decoding it. Start-up and replay trust the store's content the way
/// every reader does; `verify` is the check that recomputes every hash.
pub fn catch_up(
    store: &Store,
    state: &mut State,
    dirty: Option<&mut Dirty>,
) -> Result<u64, EngineError> {
    fold_on(store, state, None, dirty, None)
}

/// The fold behind [`catch_up`], [`fold_prefix`] and [`rebuild`]: events after `state.applied()`
/// up to `up_to` (the head when `None`), each linked to the one before; a snapshot is saved at
/// every multiple of `snapshot_every` when given.
fn fold_on(
    store: &Store,
    state: &mut State,
    up_to: Option<Seq>,
    mut dirty: Option<&mut Dirty>,
    snapshot_every: Option<u64>,
) -> Result<u64, EngineError> {
    let mut prev_hash = match state.applied() {
        Seq::ZERO => Digest256::GENESIS,
        seq => store.event_required(seq)?.hash,
    };
    let every = snapshot_every.filter(|every| *every > 0);
    let mut count = 0;
    // Snapshots are encoded here, where the state is, and written to sled by a second thread
    // while the fold goes on: writing one of a large state takes about as long as encoding it.
    // At most one waits while another is written, to bound the memory they take.
    let (to_writer, snapshots) = std::sync::mpsc::sync_channel::<SnapshotBatch>(1);
    std::thread::scope(|scope| {
        let writer = every.map(|_| {
            scope.spawn(move || {
                snapshots.into_iter().try_for_each(|snapshot| store.apply_snapshot(snapshot))
            })
        });
        // Runs' payloads are parsed on the decoding thread, beside the fold.
        let folded = store.scan_prepared(
            state.applied().next(),
            up_to,
            Event::run_report,
            |event, report| {
                if event.prev_hash != prev_hash {
                    return Err(EngineError::Corrupt(format!(
                        "event {} does not link to the event before it",
                        event.seq
                    )));
                }
                prev_hash = event.hash;
                let applied = match report {
                    Some(report) => state.apply_parsed(event, report)?,
                    None => state.apply(event)?,
                };
                if let Some(dirty) = dirty.as_deref_mut() {
                    dirty.record(&applied.touched, state);
                }
                if every.is_some_and(|every| event.seq.0 % every == 0)
                    && to_writer.send(Store::prepare_snapshot(state)).is_err()
                {
                    // The writer stopped on an error, which its join below returns.
                    return Err(EngineError::Unavailable);
                }
                count += 1;
                Ok(())
            },
        );
        drop(to_writer);
        let written =
            writer.map_or(Ok(()), |w| w.join().expect("the snapshot writer does not panic"));
        written?;
        folded
    })?;
    Ok(count)
}

/// The projections folded from events `1..=up_to` only.
pub fn fold_prefix(store: &Store, up_to: Seq) -> Result<State, EngineError> {
    let mut state = State::default();
    fold_on(store, &mut state, Some(up_to), None, None)?;
    Ok(state)
}

/// Rebuilds the projections from the first event up to `up_to` (the head when `None`), and the
/// snapshots with them: the old snapshots are deleted first and a new one is saved at every
/// multiple of `snapshot_every` on the way.
pub fn rebuild(
    store: &Store,
    up_to: Option<Seq>,
    snapshot_every: u64,
) -> Result<State, EngineError> {
    store.clear_snapshots()?;
    let mut state = State::default();
    fold_on(store, &mut state, up_to, None, Some(snapshot_every))?;
    Ok(state)
}

/// The projections as they were right after event `seq`: the nearest readable snapshot at or
/// before it, plus a fold of the events after the snapshot. Equal to [`fold_prefix`] (a
/// property test checks it); only faster.
pub fn state_at(store: &Store, seq: Seq) -> Result<State, EngineError> {
    let mut state = match store.snapshot_seq_at_or_before(seq)? {
        None => State::default(),
        Some(at) => match store.load_snapshot(at) {
            Ok(Some(state)) => state,
            Ok(None) => State::default(),
            Err(e) => {
                tracing::warn!(error = %e, snapshot = %at, "snapshot unreadable; folding from the first event");
                State::default()
            }
        },
    };
    fold_on(store, &mut state, Some(seq), None, None)?;
    Ok(state)
}

/// Saves the missing snapshots at every multiple of `every` up to `up_to`, folding on from the
/// latest readable snapshot (from the first event when there is none or it is unreadable, after
/// deleting them all). Stops early, without error, once `stop` is set. Returns how many it saved.
pub fn build_snapshots(
    store: &Store,
    every: u64,
    up_to: Seq,
    stop: &AtomicBool,
) -> Result<u64, EngineError> {
    if every == 0 {
        return Ok(0);
    }
    let target = Seq(up_to.0 / every * every);
    let mut state = match store.snapshot_seq_at_or_before(up_to)? {
        Some(latest) if latest >= target => return Ok(0),
        Some(latest) => match store.load_snapshot(latest) {
            Ok(Some(state)) => state,
            Ok(None) | Err(_) => {
                store.clear_snapshots()?;
                State::default()
            }
        },
        None => State::default(),
    };
    if state.applied() >= target {
        return Ok(0);
    }
    let mut saved = 0;
    let result = store.scan(state.applied().next(), Some(target), |event| {
        if stop.load(Ordering::Relaxed) {
            return Err(EngineError::Unavailable);
        }
        state.apply(event)?;
        if event.seq.0 % every == 0 {
            store.save_snapshot(&state)?;
            saved += 1;
        }
        Ok(())
    });
    match result {
        Err(EngineError::Unavailable) if stop.load(Ordering::Relaxed) => Ok(saved),
        other => other.map(|()| saved),
    }
}

/// What a replay did: how many events it folded, how long it took, and whether the rebuilt
/// projections equal the ones they replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub events_replayed: u64,
    pub duration_ms: u64,
    /// SHA-256 (hex) over a canonical serialization of the projections replaced.
    #[schema(value_type = String)]
    pub digest_before: Digest256,
    /// The same over the rebuilt projections.
    #[schema(value_type = String)]
    pub digest_after: Digest256,
    pub identical: bool,
}

impl ReplayReport {
    pub fn new(before: &State, after: &State, started: Instant) -> ReplayReport {
        // The two digests serialize two whole states; each takes one core.
        let (digest_before, digest_after) = std::thread::scope(|scope| {
            let before = scope.spawn(|| before.digest());
            let after = after.digest();
            (before.join().expect("a digest does not panic"), after)
        });
        ReplayReport {
            events_replayed: after.applied().0,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            digest_before,
            digest_after,
            identical: digest_before == digest_after,
        }
    }
}

/// Offline replay of a data directory (the service must not be running): rebuilds the projections
/// and their snapshots from the first event, compares them with the checkpointed ones caught up
/// to the head, and writes the rebuilt ones as the new checkpoint.
pub fn replay_offline(dir: &Path, options: &StoreOptions) -> Result<ReplayReport, EngineError> {
    let store = Store::open(dir, options)?;
    let mut before = match store.load_checkpoint() {
        Ok(Some(state)) => state,
        Ok(None) | Err(_) => State::default(),
    };
    if catch_up(&store, &mut before, None).is_err() {
        // A checkpoint that cannot be caught up is simply not equal to the rebuild.
        before = State::default();
    }
    let started = Instant::now();
    let after = rebuild(&store, None, SNAPSHOT_EVERY)?;
    let report = ReplayReport::new(&before, &after, started);
    store.rewrite_checkpoint(&after)?;
    // The next start then reads the checkpoint from this snapshot (see `Store::load_checkpoint`).
    store.save_head_snapshot(&after, SNAPSHOT_EVERY)?;
    store.sync()?;
    Ok(report)
}

/// The offline check of a data directory: the log's own verification, plus whether the
/// checkpointed projections (caught up to the head) equal a refold of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineVerifyReport {
    #[serde(flatten)]
    pub log: VerifyReport,
    /// Digest of the checkpointed projections caught up to the head; null without a checkpoint.
    pub checkpoint_digest: Option<Digest256>,
    /// Whether the checkpoint equals the refold; null when either is missing. `false` calls for
    /// `incidentd replay`.
    pub checkpoint_matches: Option<bool>,
}

/// Verifies a stopped service's data directory.
pub fn verify_offline(
    dir: &Path,
    options: &StoreOptions,
) -> Result<OfflineVerifyReport, EngineError> {
    let store = Store::open(dir, options)?;
    let log = verify(&store, None);
    let checkpoint_digest = match store.load_checkpoint() {
        Ok(Some(mut state)) => {
            // A checkpoint that cannot be caught up cannot match; its digest as far as it got
            // says so.
            let _ = catch_up(&store, &mut state, None);
            Some(state.digest())
        }
        Ok(None) | Err(_) => None,
    };
    let checkpoint_matches = match (checkpoint_digest, log.projection_digest) {
        (Some(a), Some(b)) => Some(a == b),
        _ => None,
    };
    Ok(OfflineVerifyReport { log, checkpoint_digest, checkpoint_matches })
}
