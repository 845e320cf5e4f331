//! Property tests over random histories of runs, acknowledgements, notes, revocations and
//! restarts: at most one open incident per monitor, live state equal to every way of rebuilding
//! it, the published state that takes over each batch's changes equal to the writer's that folds
//! it, and time travel (with and without projection snapshots) equal to folding a prefix of the
//! log.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::run;
use incidentd::audit;
use incidentd::domain::{
    parse_run, ApiTokenId, Digest256, Event, EventBody, EventId, IncidentId, IncidentStatus,
    IntegrationId, MonitorUid, Payload, Role, Seq, State,
};
use incidentd::engine::{Engine, EngineOptions};
use incidentd::store::{Encoded, Store, StoreOptions};
use proptest::prelude::*;
use uuid::Uuid;

/// One step of a history. Indexes pick among what exists at that point, modulo its count, so
/// every generated step means something.
#[derive(Debug, Clone)]
enum Op {
    Run {
        integration: usize,
        monitor: u8,
        failing: bool,
    },
    Acknowledge {
        incident: usize,
    },
    Note {
        incident: usize,
    },
    Revoke {
        integration: usize,
    },
    Restart,
    /// A run sent with an `Idempotency-Key` from a small set, so that keys repeat.
    KeyedRun {
        integration: usize,
        monitor: u8,
        failing: bool,
        key: u8,
    },
    Rotate {
        integration: usize,
    },
    IssueToken,
    RevokeToken {
        token: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..3usize, 0..4u8, any::<bool>()).prop_map(|(integration, monitor, failing)| Op::Run { integration, monitor, failing }),
        3 => any::<usize>().prop_map(|incident| Op::Acknowledge { incident }),
        2 => any::<usize>().prop_map(|incident| Op::Note { incident }),
        1 => (0..3usize).prop_map(|integration| Op::Revoke { integration }),
        1 => Just(Op::Restart),
        2 => (0..3usize, 0..4u8, any::<bool>(), 0..4u8).prop_map(|(integration, monitor, failing, key)| Op::KeyedRun { integration, monitor, failing, key }),
        1 => (0..3usize).prop_map(|integration| Op::Rotate { integration }),
        1 => Just(Op::IssueToken),
        1 => any::<usize>().prop_map(|token| Op::RevokeToken { token }),
    ]
}

/// The invariants every state must keep.
fn check_invariants(state: &State) {
    for monitor in state.monitors() {
        let key = monitor.key();
        let open: Vec<_> = state
            .monitor_incidents(&key)
            .filter(|i| i.status != IncidentStatus::Resolved)
            .collect();
        assert!(
            open.len() <= 1,
            "monitor {} has {} open incidents",
            monitor.monitor_uid,
            open.len()
        );
        assert_eq!(
            open.first().map(|i| i.id),
            monitor.open_incident,
            "open_incident of {}",
            monitor.monitor_uid
        );
        assert_eq!(state.runs(&monitor.key()).len() as u64, monitor.runs_seen);
    }
}

fn time(n: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + n as i64 * 60, 0).unwrap()
}

/// Builds the events a writer would append for `ops` (skipping what it would refuse), folding as
/// it goes and checking the invariants after every event.
fn pure_history(ops: &[Op]) -> (Vec<Event>, State) {
    let mut state = State::default();
    let mut events: Vec<Event> = Vec::new();
    let append = |state: &mut State, events: &mut Vec<Event>, body: EventBody| {
        let seq = Seq(events.len() as u64 + 1);
        let prev = events.last().map_or(Digest256::GENESIS, |e| e.hash);
        let event =
            Event::seal(seq, EventId(Uuid::from_u128(seq.0 as u128)), time(seq.0), body, prev);
        state.apply(&event).expect("a valid history folds");
        events.push(event);
        check_invariants(state);
    };
    let integrations: Vec<IntegrationId> =
        (0..3).map(|n| IntegrationId(Uuid::from_u128(1000 + n))).collect();
    for (n, id) in integrations.iter().enumerate() {
        let body = EventBody::IntegrationCreated {
            integration_id: *id,
            name: format!("i{n}"),
            token_hash: Digest256::of(&[n as u8]),
        };
        append(&mut state, &mut events, body);
    }
    for op in ops {
        let incidents: Vec<(IncidentId, IncidentStatus)> =
            state.incidents().map(|i| (i.id, i.status)).collect();
        let target = |pick: usize| incidents.get(pick % incidents.len().max(1)).copied();
        let body = match *op {
            Op::Run { integration, monitor, failing }
            | Op::KeyedRun { integration, monitor, failing, .. } => {
                let id = integrations[integration];
                if !state.integration(id).unwrap().is_active() {
                    continue;
                }
                // A key already used for this integration would be answered, not appended.
                let idempotency_key = match op {
                    Op::KeyedRun { key, .. } => Some(format!("key-{key}")),
                    _ => None,
                };
                if idempotency_key.as_ref().is_some_and(|k| state.idempotent_run(id, k).is_some()) {
                    continue;
                }
                let payload = run(&format!("mon-{monitor}"), u32::from(failing), 0);
                EventBody::MonitorRunReported {
                    idempotency_key,
                    integration_id: id,
                    monitor_uid: MonitorUid::parse(&format!("mon-{monitor}")).unwrap(),
                    payload: Payload::from_object(payload.as_object().unwrap()),
                }
            }
            Op::Acknowledge { incident } | Op::Note { incident } => {
                let Some((id, status)) = target(incident) else {
                    continue;
                };
                let inc = state.incident(id).unwrap();
                let (integration_id, monitor_uid) = (inc.integration_id, inc.monitor_uid.clone());
                match op {
                    Op::Acknowledge { .. } if status == IncidentStatus::Open => {
                        EventBody::IncidentAcknowledged {
                            incident_id: id,
                            integration_id,
                            monitor_uid,
                            by: "alice".into(),
                            note: None,
                        }
                    }
                    Op::Acknowledge { .. } => continue,
                    _ => EventBody::NoteAdded {
                        incident_id: id,
                        integration_id,
                        monitor_uid,
                        by: "bob".into(),
                        text: "n".into(),
                    },
                }
            }
            Op::Revoke { integration } => {
                let id = integrations[integration];
                if !state.integration(id).unwrap().is_active() {
                    continue;
                }
                EventBody::IntegrationRevoked { integration_id: id }
            }
            Op::Rotate { integration } => {
                let id = integrations[integration];
                if !state.integration(id).unwrap().is_active() {
                    continue;
                }
                let n = events.len() as u64;
                EventBody::IntegrationTokenRotated {
                    integration_id: id,
                    token_hash: Digest256::of(&n.to_be_bytes()),
                    previous_valid_until: time(n + 10),
                }
            }
            Op::IssueToken => {
                let n = events.len() as u128;
                EventBody::ApiTokenCreated {
                    token_id: ApiTokenId(Uuid::from_u128(2000 + n)),
                    name: format!("reader {n}"),
                    role: Role::Reader,
                    token_hash: Digest256::of(format!("api {n}").as_bytes()),
                }
            }
            Op::RevokeToken { token } => {
                let active: Vec<ApiTokenId> =
                    state.api_tokens().filter(|t| t.is_active()).map(|t| t.id).collect();
                let Some(token_id) = active.get(token % active.len().max(1)).copied() else {
                    continue;
                };
                EventBody::ApiTokenRevoked { token_id }
            }
            // Restarts are the engine's; the engine histories below play them.
            Op::Restart => continue,
        };
        append(&mut state, &mut events, body);
    }
    (events, state)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Thousands of histories through the pure fold: the invariants hold after every event, and
    /// folding any prefix equals the state the full fold passed through at that point.
    #[test]
    fn the_fold_keeps_its_invariants(ops in prop::collection::vec(op(), 0..60), cut in any::<prop::sample::Index>()) {
        let (events, full) = pure_history(&ops);
        let n = cut.index(events.len() + 1);
        let mut prefix = State::default();
        for event in &events[..n] {
            prefix.apply(event).unwrap();
        }
        let mut again = prefix.clone();
        for event in &events[n..] {
            again.apply(event).unwrap();
        }
        prop_assert_eq!(again.digest(), full.digest());
        prop_assert_eq!(&again, &full);
    }

    /// The engine's published state follows the writer's by taking over each batch's `Delta`
    /// instead of folding it again: after every batch, in batches of any size, it equals the
    /// writer's state, derived lookups included.
    #[test]
    fn absorbing_each_batch_equals_folding_it(
        ops in prop::collection::vec(op(), 0..60),
        sizes in prop::collection::vec(1..8usize, 1..20),
    ) {
        let (events, full) = pure_history(&ops);
        let mut writer = State::default();
        let mut published = writer.clone();
        let mut rest = &events[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, after) = rest.split_at((*size).min(rest.len()));
            rest = after;
            let changes: Vec<_> =
                batch.iter().map(|e| (e.seq, writer.apply(e).unwrap().touched)).collect();
            published.absorb(writer.delta(&changes));
            prop_assert_eq!(&published, &writer);
        }
        prop_assert_eq!(&published, &full);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Projection snapshots change no answer: with snapshots every `every` events, built
    /// incrementally in two steps, `state_at(N)` equals the fold of the first N events for every
    /// N; so it does after the snapshots are deleted, and after `rebuild` wrote them afresh.
    #[test]
    fn time_travel_through_snapshots_equals_the_fold_of_the_prefix(
        ops in prop::collection::vec(op(), 0..50),
        every in 1..9u64,
        split in any::<prop::sample::Index>(),
    ) {
        let (events, full) = pure_history(&ops);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { cache_capacity: 1 << 22 }).unwrap();
        let encoded: Vec<Encoded> = events.iter().map(|e| Encoded::new(e).unwrap()).collect();
        store.append(&encoded).unwrap();
        let head = Seq(events.len() as u64);
        let stop = std::sync::atomic::AtomicBool::new(false);
        // First up to some point of the log, then on to the head from the latest snapshot.
        let middle = Seq(split.index(events.len() + 1) as u64);
        let first = audit::build_snapshots(&store, every, middle, &stop).unwrap();
        let second = audit::build_snapshots(&store, every, head, &stop).unwrap();
        let expected: Vec<Seq> = (1..=head.0 / every).map(|k| Seq(k * every)).collect();
        prop_assert_eq!(first + second, expected.len() as u64);
        prop_assert_eq!(store.snapshot_seqs().unwrap(), expected.clone());
        let check = |store: &Store| -> Result<(), TestCaseError> {
            let mut prefix = State::default();
            prop_assert_eq!(&audit::state_at(store, Seq::ZERO).unwrap(), &prefix);
            for event in &events {
                prefix.apply(event).unwrap();
                prop_assert_eq!(&audit::state_at(store, event.seq).unwrap(), &prefix);
            }
            prop_assert_eq!(&prefix, &full);
            Ok(())
        };
        check(&store)?;
        store.clear_snapshots().unwrap();
        check(&store)?;
        let rebuilt = audit::rebuild(&store, None, every).unwrap();
        prop_assert_eq!(&rebuilt, &full);
        prop_assert_eq!(store.snapshot_seqs().unwrap(), expected);
        check(&store)?;
    }
}

/// Plays `ops` against a real engine (restarting it where asked) and returns the data dir.
async fn play(dir: &std::path::Path, ops: &[Op]) {
    // Snapshots every few events, so that time travel below goes through whichever of them the
    // snapshot thread has written by then.
    let options =
        || EngineOptions { checkpoint_every: 7, snapshot_every: 4, ..EngineOptions::default() };
    let mut engine = Engine::open(dir, options()).unwrap();
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = engine.create_integration(&format!("i{n}")).await.unwrap();
        tokens.push(created.token);
        ids.push(created.integration.id);
    }
    let mut api_tokens = Vec::new();
    for op in ops {
        let incidents: Vec<IncidentId> = engine.state().incidents().map(|i| i.id).collect();
        let target = |pick: usize| incidents.get(pick % incidents.len().max(1)).copied();
        match *op {
            Op::Run { integration, monitor, failing } => {
                let body = run(&format!("mon-{monitor}"), u32::from(failing), 0).to_string();
                // Runs on a revoked integration are refused; that is part of the history too.
                let _ = engine
                    .ingest(&tokens[integration], parse_run(body.as_bytes()).unwrap(), None)
                    .await;
            }
            Op::Acknowledge { incident } => {
                if let Some(id) = target(incident) {
                    // Conflicts (already acknowledged, resolved) are refused and append nothing.
                    let _ = engine.acknowledge(id, "alice", Some("on it")).await;
                }
            }
            Op::Note { incident } => {
                if let Some(id) = target(incident) {
                    engine.add_note(id, "bob", "note").await.unwrap();
                }
            }
            Op::Revoke { integration } => {
                let _ = engine.revoke_integration(ids[integration]).await;
            }
            Op::KeyedRun { integration, monitor, failing, key } => {
                let body = run(&format!("mon-{monitor}"), u32::from(failing), 0).to_string();
                // A repeated key with another body is refused; with the same body it appends
                // nothing. Both must survive restarts and rebuilds.
                let key = Some(format!("key-{key}"));
                let _ = engine
                    .ingest(&tokens[integration], parse_run(body.as_bytes()).unwrap(), key)
                    .await;
            }
            Op::Rotate { integration } => {
                if let Ok(rotated) = engine.rotate_integration(ids[integration], None).await {
                    tokens[integration] = rotated.token;
                }
            }
            Op::IssueToken => {
                let (token, _) = engine.create_api_token("auditor").await.unwrap();
                api_tokens.push(token.id);
            }
            Op::RevokeToken { token } => {
                if !api_tokens.is_empty() {
                    let _ = engine.revoke_api_token(api_tokens[token % api_tokens.len()]).await;
                }
            }
            Op::Restart => {
                drop(engine);
                engine = Engine::open(dir, options()).unwrap();
            }
        }
        check_invariants(&engine.state());
    }
    let live = engine.state().clone();
    let head = live.applied();
    assert_eq!(engine.state_at(head).unwrap(), live, "live state == refold of the log");
    let events = engine.events_after(Seq::ZERO, usize::MAX, |_| true).unwrap();
    let mut folded = State::default();
    for (n, event) in events.iter().enumerate() {
        folded.apply(event).unwrap();
        if n % 5 == 0 {
            assert_eq!(
                engine.state_at(event.seq).unwrap(),
                folded,
                "state at {} == fold of its prefix",
                event.seq
            );
        }
    }
    let replay = engine.replay().await.unwrap();
    assert!(replay.identical, "online replay: {replay:?}");
    drop(engine);
    let offline = audit::replay_offline(dir, &StoreOptions::default()).unwrap();
    assert!(offline.identical, "offline replay: {offline:?}");
    assert_eq!(offline.digest_after, live.digest(), "offline replay == live state");
    let reopened = Engine::open(dir, EngineOptions::default()).unwrap();
    assert_eq!(*reopened.state(), live, "a restart reads the same state");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Through the real engine and store (each case fsyncs, so there are fewer of them): live
    /// state == online replay == offline replay == restart, and `state_at(N)` == fold of N events.
    #[test]
    fn the_engine_rebuilds_what_it_serves(ops in prop::collection::vec(op(), 0..40)) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(play(dir.path(), &ops));
    }
}
