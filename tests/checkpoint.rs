//! Tests that the projection checkpoint, written incrementally through the public `Store` API,
//! always loads back equal to the live fold, including run lists that span several chunks.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use incidentd::domain::{
    Digest256, Event, EventBody, EventId, IncidentStatus, IntegrationId, MonitorKey, MonitorUid,
    Payload, Seq, State,
};
use incidentd::store::{Dirty, Encoded, Store, StoreOptions};
use proptest::prelude::*;
use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;

/// Run seqs per stored chunk (`RUN_CHUNK` in src/store/checkpoint.rs, which is private). The
/// histories below are sized around it so that first, middle and boundary chunks all get written.
const RUN_CHUNK: usize = 512;

// ---------------------------------------------------------------------------------------------
// Deterministic events.
// ---------------------------------------------------------------------------------------------

fn integration_id(n: u8) -> IntegrationId {
    // Mostly zero bytes: the checkpoint's run keys use a 0 byte as separator before this uuid,
    // so zero bytes inside the uuid are the case that key parsing must get right.
    IntegrationId(Uuid::from_u128(1 + u128::from(n)))
}

fn uid(s: &str) -> MonitorUid {
    MonitorUid::parse(s).expect("valid monitor uid")
}

fn key(integ: u8, mon: &str) -> MonitorKey {
    MonitorKey { monitor_uid: uid(mon), integration_id: integration_id(integ) }
}

fn recorded_at(seq: Seq) -> DateTime<Utc> {
    let seconds = i64::try_from(seq.0).expect("small seq");
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn create_body(n: u8) -> EventBody {
    EventBody::IntegrationCreated {
        integration_id: integration_id(n),
        name: format!("integration {n}"),
        token_hash: Digest256::of(format!("token-{n}").as_bytes()),
    }
}

fn revoke_body(n: u8) -> EventBody {
    EventBody::IntegrationRevoked { integration_id: integration_id(n) }
}

fn run_body(integ: u8, mon: &str, failing: bool, seq_hint: usize) -> EventBody {
    let mut payload = json!({
        "monitor_uid": mon,
        "metrics": {"failedTests": u32::from(failing), "errors": 0, "totalLatency": seq_hint},
    });
    // Only some runs carry a name, so that names persist across runs that do not.
    if seq_hint % 3 == 0 {
        payload["monitor_name"] = json!(format!("{mon} #{seq_hint}"));
    }
    let Value::Object(payload) = payload else { unreachable!("json! object literal") };
    EventBody::MonitorRunReported {
        idempotency_key: None,
        integration_id: integration_id(integ),
        monitor_uid: uid(mon),
        payload: Payload::from_object(&payload),
    }
}

/// An acknowledgement of the monitor's open incident, if it has one not yet acknowledged. Aimed
/// with the live state: these tests are about persistence, the fold's own rules are tested in
/// tests/fold.rs.
fn ack_body(state: &State, integ: u8, mon: &str) -> Option<EventBody> {
    let key = key(integ, mon);
    let incident = state.incident(state.monitor(&key)?.open_incident?)?;
    (incident.status == IncidentStatus::Open).then(|| EventBody::IncidentAcknowledged {
        incident_id: incident.id,
        integration_id: key.integration_id,
        monitor_uid: key.monitor_uid.clone(),
        by: "alice".to_owned(),
        note: None,
    })
}

/// A note on the monitor's latest incident, whatever its status, if it has one.
fn note_body(state: &State, integ: u8, mon: &str) -> Option<EventBody> {
    let key = key(integ, mon);
    let incident = state.monitor_incidents(&key).last()?;
    Some(EventBody::NoteAdded {
        incident_id: incident.id,
        integration_id: key.integration_id,
        monitor_uid: key.monitor_uid.clone(),
        by: "bob".to_owned(),
        text: format!("note {}", state.applied()),
    })
}

// ---------------------------------------------------------------------------------------------
// The harness plays the writer: it folds each event, records what it touched, appends in
// batches and checkpoints when told to, exactly as the engine does.
// ---------------------------------------------------------------------------------------------

struct Harness {
    dir: TempDir,
    store: Option<Store>,
    state: State,
    dirty: Dirty,
    events: Vec<Event>,
    /// Events folded but not yet appended; appended as one batch before the next checkpoint.
    pending: Vec<Encoded>,
    checkpoints: usize,
}

fn open(dir: &Path) -> Store {
    let options = StoreOptions { cache_capacity: 4 * 1024 * 1024 };
    Store::open(dir, &options).expect("store opens")
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        Harness {
            dir,
            store: Some(store),
            state: State::default(),
            dirty: Dirty::default(),
            events: Vec::new(),
            pending: Vec::new(),
            checkpoints: 0,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn push(&mut self, body: EventBody) {
        let seq = Seq(self.events.len() as u64 + 1);
        let prev = self.events.last().map_or(Digest256::GENESIS, |e| e.hash);
        let id = EventId(Uuid::from_u128(0xE000_0000 + u128::from(seq.0)));
        let event = Event::seal(seq, id, recorded_at(seq), body, prev);
        let applied = self.state.apply(&event).expect("valid history");
        self.dirty.record(&applied.touched, &self.state);
        self.pending.push(Encoded::new(&event).expect("event fits the store"));
        self.events.push(event);
    }

    fn append_pending(&mut self) {
        if !self.pending.is_empty() {
            self.store().append(&self.pending).expect("append");
            self.pending.clear();
        }
    }

    /// Saves what is dirty, starts a new dirty set and checks that the checkpoint loads back as
    /// the live state.
    fn checkpoint(&mut self, ctx: &str) {
        self.append_pending();
        self.store().save_checkpoint(&self.state, &self.dirty).expect("save_checkpoint");
        self.dirty = Dirty::default();
        self.checkpoints += 1;
        let loaded = self
            .store()
            .load_checkpoint()
            .unwrap_or_else(|e| panic!("{ctx}: load_checkpoint failed: {e}"));
        assert_same(loaded.as_ref(), &self.state, ctx);
    }

    fn reopen(&mut self) {
        self.append_pending();
        // sled refuses a second open of a directory still held, so the old handle goes first.
        self.store = None;
        self.store = Some(open(self.dir.path()));
    }
}

/// Equality of a loaded checkpoint and the live state. On a mismatch it names the first part
/// that differs instead of printing two states with thousands of run seqs.
fn assert_same(loaded: Option<&State>, live: &State, ctx: &str) {
    let Some(loaded) = loaded else {
        panic!("{ctx}: no checkpoint loaded, live state is at {}", live.applied());
    };
    if loaded == live {
        return;
    }
    assert_eq!(loaded.applied(), live.applied(), "{ctx}: applied seq");
    assert_eq!(
        loaded.integrations().collect::<Vec<_>>(),
        live.integrations().collect::<Vec<_>>(),
        "{ctx}: integrations"
    );
    assert_eq!(
        loaded.incidents().collect::<Vec<_>>(),
        live.incidents().collect::<Vec<_>>(),
        "{ctx}: incidents"
    );
    assert_eq!(
        loaded.monitors().collect::<Vec<_>>(),
        live.monitors().collect::<Vec<_>>(),
        "{ctx}: monitors"
    );
    for m in live.monitors() {
        let (got, want) = (loaded.runs(&m.key()), live.runs(&m.key()));
        if got != want {
            let first = got.iter().zip(want).position(|(a, b)| a != b);
            panic!(
                "{ctx}: runs of {:?} differ: {} loaded, {} live, first difference at {first:?}",
                m.key(),
                got.len(),
                want.len()
            );
        }
    }
    panic!("{ctx}: states differ outside the parts compared above (derived indexes?)");
}

/// Folds the events after `state.applied()` from the store, recording them as the engine does on
/// start, and returns what they dirtied.
fn catch_up(store: &Store, state: &mut State) -> Dirty {
    let mut dirty = Dirty::default();
    for event in store.events_from(state.applied().next()) {
        let event = event.expect("stored event reads back");
        let applied = state.apply(&event).expect("stored log folds");
        dirty.record(&applied.touched, state);
    }
    dirty
}

// ---------------------------------------------------------------------------------------------
// Deterministic behaviour.
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoint_of_the_empty_log_loads_back() {
    let mut h = Harness::new();
    assert!(h.store().load_checkpoint().expect("load").is_none());
    // The engine saves a checkpoint right after its first start, before any event exists.
    h.checkpoint("empty log");
}

#[test]
fn a_few_events_load_back() {
    let mut h = Harness::new();
    h.push(create_body(0));
    h.checkpoint("after create");
    h.push(run_body(0, "m", true, 0));
    h.checkpoint("after opening run");
    // Human actions dirty only the incident, not its monitor.
    let ack = ack_body(&h.state, 0, "m").expect("an open incident");
    h.push(ack);
    h.checkpoint("after acknowledgement");
    h.push(run_body(0, "m", false, 1));
    h.checkpoint("after resolve");
    // A note alone, so that nothing else in the same checkpoint rewrites its incident.
    let note = note_body(&h.state, 0, "m").expect("an incident");
    h.push(note);
    h.checkpoint("after a note on the resolved incident");
    h.push(revoke_body(0));
    h.checkpoint("after revoke");
}

#[test]
fn run_lists_across_chunk_boundaries() {
    let mut h = Harness::new();
    h.push(create_body(0));
    h.push(create_body(1));
    let boundaries = [
        1,
        2,
        RUN_CHUNK - 1,
        RUN_CHUNK,
        RUN_CHUNK + 1,
        RUN_CHUNK + 200,
        2 * RUN_CHUNK,
        2 * RUN_CHUNK + 1,
        2 * RUN_CHUNK + 2,
        // One save covering more than a whole chunk of new runs.
        3 * RUN_CHUNK + 300,
    ];
    let big = key(0, "big");
    let mut runs = 0;
    for target in boundaries {
        while runs < target {
            // Incidents open and resolve throughout, so incident entries are dirtied as well.
            h.push(run_body(0, "big", runs % 7 < 3, runs));
            runs += 1;
            // A second monitor, and the same uid on another integration, interleave now and
            // then; their run lists must not be mixed with the big one.
            if runs % 97 == 0 {
                h.push(run_body(0, "small", runs % 2 == 0, runs));
                h.push(run_body(1, "big", runs % 3 == 0, runs));
            }
        }
        assert_eq!(h.state.runs(&big).len(), target);
        h.checkpoint(&format!("after {target} runs of one monitor"));
    }
    assert!(h.state.runs(&big).len() > 3 * RUN_CHUNK);
}

#[test]
fn checkpoint_every_event_across_a_chunk_boundary() {
    // Saving after every single run walks the "persisted" count through each position of a
    // chunk, including the exact boundary where the next save must start a new chunk.
    let mut h = Harness::new();
    h.push(create_body(0));
    for n in 0..RUN_CHUNK - 3 {
        h.push(run_body(0, "m", n % 5 == 0, n));
    }
    h.checkpoint("before the boundary");
    for n in RUN_CHUNK - 3..RUN_CHUNK + 4 {
        h.push(run_body(0, "m", n % 2 == 0, n));
        h.checkpoint(&format!("after run {}", n + 1));
    }
}

#[test]
fn everything_rewrites_a_cleared_checkpoint() {
    let mut h = Harness::new();
    h.push(create_body(0));
    h.push(create_body(1));
    for n in 0..RUN_CHUNK + 150 {
        h.push(run_body(0, "m", n % 4 == 0, n));
        if n % 10 == 0 {
            h.push(run_body(1, "m", n % 20 == 0, n));
        }
        if n == 300 {
            h.checkpoint("incremental, before clearing");
        }
    }
    h.push(revoke_body(1));
    h.checkpoint("incremental, before clearing");

    h.store().clear_checkpoint().expect("clear");
    assert!(
        h.store().load_checkpoint().expect("load").is_none(),
        "a cleared checkpoint must not load"
    );

    let everything = Dirty::everything(&h.state);
    assert_eq!(everything.events(), h.state.applied().0);
    assert!(!everything.is_empty());
    h.store().save_checkpoint(&h.state, &everything).expect("save everything");
    let loaded = h.store().load_checkpoint().expect("load");
    assert_same(loaded.as_ref(), &h.state, "everything after clear");

    // The same from a store that never held a checkpoint at all.
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = open(fresh_dir.path());
    fresh.save_checkpoint(&h.state, &everything).expect("save");
    let loaded = fresh.load_checkpoint().expect("load");
    assert_same(loaded.as_ref(), &h.state, "everything into a fresh store");
}

#[test]
fn clear_checkpoint_then_load_gives_none() {
    let mut h = Harness::new();
    assert!(h.store().load_checkpoint().expect("load").is_none());
    h.push(create_body(0));
    h.push(run_body(0, "m", true, 0));
    h.append_pending();
    h.store().save_checkpoint(&h.state, &h.dirty).expect("save_checkpoint");
    h.store().clear_checkpoint().expect("clear");
    assert!(h.store().load_checkpoint().expect("load").is_none());
    // Clearing the checkpoint must leave the log alone: it is what the projections refold from.
    assert_eq!(h.store().event_count().unwrap(), 2);
}

#[test]
fn reopening_keeps_events_and_checkpoint() {
    let mut h = Harness::new();
    h.push(create_body(0));
    for n in 0..RUN_CHUNK + 20 {
        h.push(run_body(0, "m", n % 6 < 2, n));
    }
    h.checkpoint("before reopen");
    let saved = h.state.clone();
    // Events after the checkpoint are in the log but not in the checkpoint, as after a crash.
    for n in 0..30 {
        h.push(run_body(0, "m", n % 4 == 0, n));
    }
    h.push(create_body(1));
    h.push(run_body(1, "m", true, 1));
    h.reopen();

    let store = h.store();
    assert_eq!(store.event_count().unwrap(), h.events.len());
    assert_eq!(store.head().expect("head").as_ref(), h.events.last());
    let stored: Vec<Event> =
        store.events_from(Seq(1)).collect::<Result<_, _>>().expect("events read back");
    assert_eq!(stored, h.events);
    let raw = store.raw_event(Seq(2)).expect("raw").expect("event 2");
    assert_eq!(Event::decode(&raw).expect("decodes"), h.events[1]);

    let mut resumed = store.load_checkpoint().expect("load");
    assert_same(resumed.as_ref(), &saved, "checkpoint after reopen");

    // The engine's start: catch up from the checkpoint, then save only what the catch-up dirtied.
    let resumed = resumed.as_mut().expect("checkpoint present");
    let dirty = catch_up(store, resumed);
    assert_eq!(dirty.events(), h.events.len() as u64 - saved.applied().0);
    assert_same(Some(resumed), &h.state, "caught up after reopen");
    store.save_checkpoint(resumed, &dirty).expect("save");
    let loaded = store.load_checkpoint().expect("load");
    assert_same(loaded.as_ref(), &h.state, "checkpoint after catch-up");
}

#[test]
fn dirty_counts_the_events_it_records() {
    let mut h = Harness::new();
    assert!(h.dirty.is_empty());
    h.push(create_body(0));
    h.push(run_body(0, "m", true, 0));
    h.push(run_body(0, "m", true, 1));
    assert_eq!(h.dirty.events(), 3);
    assert!(!h.dirty.is_empty());
    h.append_pending();
    h.store().save_checkpoint(&h.state, &h.dirty).expect("save_checkpoint");
    h.dirty = Dirty::default();
    assert!(h.dirty.is_empty());
    assert_eq!(Dirty::everything(&h.state).events(), 3);
}

// ---------------------------------------------------------------------------------------------
// Property: random histories with checkpoints at random points.
// ---------------------------------------------------------------------------------------------

/// Monitor uids chosen to stress the byte layout of checkpoint keys: one uid a prefix of another,
/// a uid whose key spells `meta` after the `m` prefix, multi-byte UTF-8 and a long uid.
fn monitor_uids() -> Vec<String> {
    vec![
        "a".to_owned(),
        "ab".to_owned(),
        "eta".to_owned(),
        "ü-monitor".to_owned(),
        format!("1234-{}", "x".repeat(200)),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Run {
        integ: u8,
        mon: usize,
        failing: bool,
    },
    /// Many runs of one monitor, so that run lists grow past a chunk within a modest op count;
    /// `checkpoint_at` puts a checkpoint inside the burst, usually mid-chunk.
    Burst {
        integ: u8,
        mon: usize,
        len: usize,
        fail_every: usize,
        checkpoint_at: Option<usize>,
    },
    Revoke(u8),
    Ack {
        integ: u8,
        mon: usize,
    },
    Note {
        integ: u8,
        mon: usize,
    },
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    let mons = monitor_uids().len();
    prop_oneof![
        20 => (0u8..3, 0..mons, any::<bool>())
            .prop_map(|(integ, mon, failing)| Op::Run { integ, mon, failing }),
        2 => (0u8..3, 0..mons, 1..RUN_CHUNK + 200, 1usize..6, prop::option::of(0..RUN_CHUNK + 200))
            .prop_map(|(integ, mon, len, fail_every, checkpoint_at)| Op::Burst {
                integ,
                mon,
                len,
                fail_every,
                checkpoint_at,
            }),
        1 => (0u8..3).prop_map(Op::Revoke),
        3 => (0u8..3, 0..mons).prop_map(|(integ, mon)| Op::Ack { integ, mon }),
        3 => (0u8..3, 0..mons).prop_map(|(integ, mon)| Op::Note { integ, mon }),
        4 => Just(Op::Checkpoint),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        // Every case opens a sled database; bound shrinking so a failure reports in seconds.
        max_shrink_iters: 64,
        // Only this file may change in the tree, so failing seeds are reported, not written to a
        // regressions file next to it.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn checkpoints_at_random_points_load_back_as_the_live_state(
        ops in prop::collection::vec(op(), 0..40)
    ) {
        let uids = monitor_uids();
        let mut h = Harness::new();
        let mut created = [false; 3];
        let mut revoked = [false; 3];
        // Integrations are created on first mention; nothing happens on a revoked integration
        // after its revocation, as the writer refuses it.
        fn usable(h: &mut Harness, created: &mut [bool; 3], revoked: &[bool; 3], integ: u8) -> bool {
            let i = usize::from(integ);
            if revoked[i] {
                return false;
            }
            if !created[i] {
                created[i] = true;
                h.push(create_body(integ));
            }
            true
        }
        let mut seen_runs: BTreeMap<MonitorKey, usize> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Run { integ, mon, failing } => {
                    if usable(&mut h, &mut created, &revoked, integ) {
                        h.push(run_body(integ, &uids[mon], failing, n));
                        *seen_runs.entry(key(integ, &uids[mon])).or_default() += 1;
                    }
                }
                Op::Burst { integ, mon, len, fail_every, checkpoint_at } => {
                    if usable(&mut h, &mut created, &revoked, integ) {
                        for r in 0..len {
                            if checkpoint_at == Some(r) {
                                h.checkpoint(&format!("op {n}: inside a burst at run {r}"));
                            }
                            h.push(run_body(integ, &uids[mon], r % fail_every == 0, r));
                        }
                        *seen_runs.entry(key(integ, &uids[mon])).or_default() += len;
                    }
                }
                Op::Revoke(integ) => {
                    if usable(&mut h, &mut created, &revoked, integ) {
                        revoked[usize::from(integ)] = true;
                        h.push(revoke_body(integ));
                    }
                }
                Op::Ack { integ, mon } | Op::Note { integ, mon } => {
                    if usable(&mut h, &mut created, &revoked, integ) {
                        let body = match op {
                            Op::Ack { .. } => ack_body(&h.state, integ, &uids[mon]),
                            _ => note_body(&h.state, integ, &uids[mon]),
                        };
                        if let Some(body) = body {
                            h.push(body);
                        }
                    }
                }
                Op::Checkpoint => h.checkpoint(&format!("op {n}")),
            }
        }
        for (k, runs) in &seen_runs {
            prop_assert_eq!(h.state.runs(k).len(), *runs);
        }

        // The engine's start after a crash: whatever checkpoint is stored, caught up from the
        // log, must equal the live state, and saving what the catch-up dirtied must too.
        h.append_pending();
        let mut resumed = if h.checkpoints == 0 {
            State::default()
        } else {
            h.store().load_checkpoint().expect("load").expect("a checkpoint was saved")
        };
        let from_scratch = resumed.applied() == Seq::ZERO;
        let mut dirty = catch_up(h.store(), &mut resumed);
        if from_scratch {
            dirty = Dirty::everything(&resumed);
        }
        assert_same(Some(&resumed), &h.state, "resumed from the stored checkpoint");
        h.store().save_checkpoint(&resumed, &dirty).expect("save");
        let loaded = h.store().load_checkpoint().expect("load");
        assert_same(loaded.as_ref(), &h.state, "checkpoint after catch-up");
        prop_assert_eq!(loaded.map(|s| s.digest()), Some(h.state.digest()));
    }
}
