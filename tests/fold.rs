//! Table-driven and property tests of the pure fold, `State::apply`, through its public API only.

use chrono::{DateTime, Duration, TimeZone, Utc};
use incidentd::domain::{
    incident_timeline, Digest256, Event, EventBody, EventId, FoldError, IncidentId, IncidentStatus,
    IntegrationId, Metrics, MonitorKey, MonitorStatus, MonitorUid, Outcome, Payload, Seq, State,
    Transition, Verdict,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;
use MonitorStatus::{Failing as FAILING, Passing as PASSING};

// ---------------------------------------------------------------------------------------------
// Deterministic event construction. Every id and time is a function of small integers, so a
// failing case can be reproduced and two folds of "the same history" really see the same bytes.
// ---------------------------------------------------------------------------------------------

fn integration_id(n: u8) -> IntegrationId {
    // Small values leave most uuid bytes zero, which is the awkward case for any byte-level key.
    IntegrationId(Uuid::from_u128(0x1000 + u128::from(n)))
}

fn token(n: u8) -> Digest256 {
    Digest256::of(format!("token-{n}").as_bytes())
}

fn event_id(seq: u64) -> EventId {
    EventId(Uuid::from_u128(0xE000_0000_0000 + u128::from(seq)))
}

fn recorded_at(seq: u64) -> DateTime<Utc> {
    let seconds = i64::try_from(seq).expect("small seq");
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn uid(s: &str) -> MonitorUid {
    MonitorUid::parse(s).expect("valid monitor uid")
}

fn key(integ: u8, mon: &str) -> MonitorKey {
    MonitorKey { monitor_uid: uid(mon), integration_id: integration_id(integ) }
}

fn payload(mon: &str, name: Option<&str>, failed: u32, errors: u32) -> Map<String, Value> {
    let mut body = json!({
        "id": "run-id",
        "monitor_uid": mon,
        "metrics": {"failedTests": failed, "errors": errors, "passedTests": 4, "requestCount": 2},
    });
    if let Some(name) = name {
        body["monitor_name"] = json!(name);
    }
    match body {
        Value::Object(map) => map,
        _ => unreachable!("json! object literal"),
    }
}

/// One thing that happens to the engine, before it becomes an event.
#[derive(Debug, Clone, Copy)]
enum Step {
    Create(u8),
    Revoke(u8),
    Run {
        integ: u8,
        mon: &'static str,
        failed: u32,
        errors: u32,
        name: Option<&'static str>,
    },
    /// Acknowledges the incident opened at seq `opened` of monitor `mon` on `integ`.
    Ack {
        integ: u8,
        mon: &'static str,
        opened: u64,
    },
    /// Adds a note to the incident opened at seq `opened`.
    Note {
        integ: u8,
        mon: &'static str,
        opened: u64,
    },
}

/// The metrics the fold must read out of `payload(_, _, failed, errors)`.
fn metrics(failed: u32, errors: u32) -> Metrics {
    Metrics {
        failed_tests: failed,
        errors,
        passed_tests: Some(4),
        warnings: None,
        request_count: Some(2),
        total_latency: None,
    }
}

impl Step {
    fn metrics(self) -> Metrics {
        match self {
            Step::Run { failed, errors, .. } => metrics(failed, errors),
            other => panic!("{other:?} is not a run"),
        }
    }

    fn body(self) -> EventBody {
        match self {
            Step::Create(i) => EventBody::IntegrationCreated {
                integration_id: integration_id(i),
                name: format!("integration {i}"),
                token_hash: token(i),
            },
            Step::Revoke(i) => EventBody::IntegrationRevoked { integration_id: integration_id(i) },
            Step::Run { integ, mon, failed, errors, name } => EventBody::MonitorRunReported {
                idempotency_key: None,
                integration_id: integration_id(integ),
                monitor_uid: uid(mon),
                payload: Payload::from_object(&payload(mon, name, failed, errors)),
            },
            Step::Ack { integ, mon, opened } => EventBody::IncidentAcknowledged {
                incident_id: IncidentId::derived_from(event_id(opened)),
                integration_id: integration_id(integ),
                monitor_uid: uid(mon),
                by: "alice".to_owned(),
                note: Some("on it".to_owned()),
            },
            Step::Note { integ, mon, opened } => EventBody::NoteAdded {
                incident_id: IncidentId::derived_from(event_id(opened)),
                integration_id: integration_id(integ),
                monitor_uid: uid(mon),
                by: "bob".to_owned(),
                text: "still looking".to_owned(),
            },
        }
    }

    /// The opening seq of the incident a human action names.
    fn action_on(self) -> Option<u64> {
        match self {
            Step::Ack { opened, .. } | Step::Note { opened, .. } => Some(opened),
            Step::Create(_) | Step::Revoke(_) | Step::Run { .. } => None,
        }
    }
}

/// A hash-chained log under construction; the fold does not check the chain, but the events are
/// built exactly as the writer would build them so that nothing here is unrealistically easy.
#[derive(Default)]
struct Log {
    events: Vec<Event>,
}

impl Log {
    fn next_seq(&self) -> Seq {
        Seq(self.events.len() as u64 + 1)
    }

    fn prev_hash(&self) -> Digest256 {
        self.events.last().map_or(Digest256::GENESIS, |e| e.hash)
    }

    /// The event that would come next, without adding it.
    fn seal(&self, body: EventBody) -> Event {
        let seq = self.next_seq();
        Event::seal(seq, event_id(seq.0), recorded_at(seq.0), body, self.prev_hash())
    }

    fn push(&mut self, body: EventBody) -> &Event {
        let event = self.seal(body);
        self.events.push(event);
        self.events.last().expect("just pushed")
    }
}

fn fold(events: &[Event]) -> State {
    let mut state = State::default();
    for e in events {
        state.apply(e).expect("a valid history folds");
    }
    state
}

// ---------------------------------------------------------------------------------------------
// The table. Steps are numbered from seq 1, so a step's seq is its position in the list plus one.
// Incidents are named by a letter: steps with the same letter must see the same incident id and
// different letters different ids.
// ---------------------------------------------------------------------------------------------

const fn create(i: u8) -> Step {
    Step::Create(i)
}

const fn revoke(i: u8) -> Step {
    Step::Revoke(i)
}

const fn fail(integ: u8, mon: &'static str) -> Step {
    Step::Run { integ, mon, failed: 2, errors: 0, name: None }
}

const fn pass(integ: u8, mon: &'static str) -> Step {
    Step::Run { integ, mon, failed: 0, errors: 0, name: None }
}

const fn run(integ: u8, mon: &'static str, failed: u32, errors: u32) -> Step {
    Step::Run { integ, mon, failed, errors, name: None }
}

const fn ack(integ: u8, mon: &'static str, opened: u64) -> Step {
    Step::Ack { integ, mon, opened }
}

const fn note(integ: u8, mon: &'static str, opened: u64) -> Step {
    Step::Note { integ, mon, opened }
}

const fn named(step: Step, name: &'static str) -> Step {
    match step {
        Step::Run { integ, mon, failed, errors, .. } => {
            Step::Run { integ, mon, failed, errors, name: Some(name) }
        }
        other => other,
    }
}

/// What a step is expected to report.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Created,
    Revoked,
    /// The transition, and the letter of the incident it touched.
    Run(Transition, Option<char>),
    /// A human action recorded on the incident with this letter.
    Action(char),
}

const CREATED: Expect = Expect::Created;
const REVOKED: Expect = Expect::Revoked;
const NONE: Expect = Expect::Run(Transition::None, None);

const fn opened(letter: char) -> Expect {
    Expect::Run(Transition::Opened, Some(letter))
}

const fn ongoing(letter: char) -> Expect {
    Expect::Run(Transition::Ongoing, Some(letter))
}

const fn resolved(letter: char) -> Expect {
    Expect::Run(Transition::Resolved, Some(letter))
}

const fn action(letter: char) -> Expect {
    Expect::Action(letter)
}

/// An incident expected in the final state.
struct Inc {
    letter: char,
    status: IncidentStatus,
    failing_runs: u64,
    opened_seq: u64,
    resolved_seq: Option<u64>,
    /// The seqs `State::incident_runs` must return.
    runs: &'static [u64],
    monitor_name: Option<&'static str>,
}

const fn open_inc(letter: char, failing_runs: u64, opened_seq: u64, runs: &'static [u64]) -> Inc {
    Inc {
        letter,
        status: IncidentStatus::Open,
        failing_runs,
        opened_seq,
        resolved_seq: None,
        runs,
        monitor_name: None,
    }
}

const fn resolved_inc(
    letter: char,
    failing_runs: u64,
    opened_seq: u64,
    resolved_seq: u64,
    runs: &'static [u64],
) -> Inc {
    Inc {
        letter,
        status: IncidentStatus::Resolved,
        failing_runs,
        opened_seq,
        resolved_seq: Some(resolved_seq),
        runs,
        monitor_name: None,
    }
}

/// A monitor expected in the final state.
struct Mon {
    integ: u8,
    mon: &'static str,
    status: MonitorStatus,
    runs_seen: u64,
    open_incident: Option<char>,
    name: Option<&'static str>,
}

const fn mon(
    integ: u8,
    mon: &'static str,
    status: MonitorStatus,
    runs_seen: u64,
    open_incident: Option<char>,
) -> Mon {
    Mon { integ, mon, status, runs_seen, open_incident, name: None }
}

struct Case {
    name: &'static str,
    steps: &'static [(Step, Expect)],
    incidents: &'static [Inc],
    monitors: &'static [Mon],
}

const CASES: &[Case] = &[
    Case {
        name: "passing run with no incident open changes nothing but the monitor",
        steps: &[(create(1), CREATED), (pass(1, "m1"), NONE), (pass(1, "m1"), NONE)],
        incidents: &[],
        monitors: &[mon(1, "m1", PASSING, 2, None)],
    },
    Case {
        name: "failing run with none open opens an incident",
        steps: &[(create(1), CREATED), (fail(1, "m1"), opened('A'))],
        incidents: &[open_inc('A', 1, 2, &[2])],
        monitors: &[mon(1, "m1", FAILING, 1, Some('A'))],
    },
    Case {
        name: "failing runs while open join the same incident",
        steps: &[
            (create(1), CREATED),
            (pass(1, "m1"), NONE),
            (fail(1, "m1"), opened('A')),
            (fail(1, "m1"), ongoing('A')),
            (run(1, "m1", 7, 3), ongoing('A')),
        ],
        incidents: &[open_inc('A', 3, 3, &[3, 4, 5])],
        monitors: &[mon(1, "m1", FAILING, 4, Some('A'))],
    },
    Case {
        name: "passing run resolves the open incident",
        steps: &[
            (create(1), CREATED),
            (fail(1, "m1"), opened('A')),
            (fail(1, "m1"), ongoing('A')),
            (pass(1, "m1"), resolved('A')),
            (pass(1, "m1"), NONE),
        ],
        incidents: &[resolved_inc('A', 2, 2, 4, &[2, 3, 4])],
        monitors: &[mon(1, "m1", PASSING, 4, None)],
    },
    Case {
        name: "failure after a resolve opens a new incident with a new id",
        steps: &[
            (create(1), CREATED),
            (fail(1, "m1"), opened('A')),
            (pass(1, "m1"), resolved('A')),
            (pass(1, "m1"), NONE),
            (fail(1, "m1"), opened('B')),
            (fail(1, "m1"), ongoing('B')),
        ],
        incidents: &[resolved_inc('A', 1, 2, 3, &[2, 3]), open_inc('B', 2, 5, &[5, 6])],
        monitors: &[mon(1, "m1", FAILING, 5, Some('B'))],
    },
    Case {
        name: "a run with errors but no failed tests is failing",
        steps: &[
            (create(1), CREATED),
            (run(1, "m1", 0, 1), opened('A')),
            (run(1, "m1", 0, 5), ongoing('A')),
            (run(1, "m1", 0, 0), resolved('A')),
        ],
        incidents: &[resolved_inc('A', 2, 2, 4, &[2, 3, 4])],
        monitors: &[mon(1, "m1", PASSING, 3, None)],
    },
    Case {
        name: "two monitors on one integration keep separate incidents",
        steps: &[
            (create(1), CREATED),
            (fail(1, "m1"), opened('A')),
            (fail(1, "m2"), opened('B')),
            (pass(1, "m1"), resolved('A')),
            (fail(1, "m2"), ongoing('B')),
            (pass(1, "m1"), NONE),
        ],
        incidents: &[resolved_inc('A', 1, 2, 4, &[2, 4]), open_inc('B', 2, 3, &[3, 5])],
        monitors: &[mon(1, "m1", PASSING, 3, None), mon(1, "m2", FAILING, 2, Some('B'))],
    },
    Case {
        name: "the same monitor uid on two integrations keeps separate incidents",
        steps: &[
            (create(1), CREATED),
            (create(2), CREATED),
            (fail(1, "shared"), opened('A')),
            (fail(2, "shared"), opened('B')),
            (fail(1, "shared"), ongoing('A')),
            (pass(2, "shared"), resolved('B')),
            (pass(2, "shared"), NONE),
        ],
        incidents: &[open_inc('A', 2, 3, &[3, 5]), resolved_inc('B', 1, 4, 6, &[4, 6])],
        monitors: &[mon(1, "shared", FAILING, 2, Some('A')), mon(2, "shared", PASSING, 3, None)],
    },
    Case {
        name: "revoking an integration keeps its monitors and incidents as they were",
        steps: &[
            (create(1), CREATED),
            (create(2), CREATED),
            (fail(1, "m1"), opened('A')),
            (revoke(1), REVOKED),
            (fail(2, "m1"), opened('B')),
        ],
        incidents: &[open_inc('A', 1, 3, &[3]), open_inc('B', 1, 5, &[5])],
        monitors: &[mon(1, "m1", FAILING, 1, Some('A')), mon(2, "m1", FAILING, 1, Some('B'))],
    },
    Case {
        name: "monitor name follows the latest run that carries one",
        steps: &[
            (create(1), CREATED),
            (named(pass(1, "m1"), "first"), NONE),
            (named(fail(1, "m1"), "second"), opened('A')),
            (named(fail(1, "m1"), "third"), ongoing('A')),
            // A run without a name must not erase the name already known.
            (fail(1, "m1"), ongoing('A')),
        ],
        incidents: &[Inc { monitor_name: Some("third"), ..open_inc('A', 3, 3, &[3, 4, 5]) }],
        monitors: &[Mon { name: Some("third"), ..mon(1, "m1", FAILING, 4, Some('A')) }],
    },
    Case {
        name: "an incident opened by an unnamed first run takes the name of a later failing run",
        steps: &[
            (create(1), CREATED),
            (fail(1, "m1"), opened('A')),
            (named(fail(1, "m1"), "late"), ongoing('A')),
        ],
        incidents: &[Inc { monitor_name: Some("late"), ..open_inc('A', 2, 2, &[2, 3]) }],
        monitors: &[Mon { name: Some("late"), ..mon(1, "m1", FAILING, 2, Some('A')) }],
    },
    Case {
        name: "an acknowledged incident stays the monitor's open incident until a pass resolves it",
        steps: &[
            (create(1), CREATED),
            (fail(1, "m1"), opened('A')),
            (ack(1, "m1", 2), action('A')),
            (fail(1, "m1"), ongoing('A')),
            (note(1, "m1", 2), action('A')),
            (pass(1, "m1"), resolved('A')),
            // Notes are accepted on resolved incidents too.
            (note(1, "m1", 2), action('A')),
            (fail(1, "m1"), opened('B')),
        ],
        incidents: &[resolved_inc('A', 2, 2, 6, &[2, 4, 6]), open_inc('B', 1, 8, &[8])],
        monitors: &[mon(1, "m1", FAILING, 4, Some('B'))],
    },
    Case {
        name: "an acknowledged incident that is still failing is reported as acknowledged",
        steps: &[
            (create(1), CREATED),
            (create(2), CREATED),
            (fail(1, "m1"), opened('A')),
            (fail(2, "m1"), opened('B')),
            (ack(2, "m1", 4), action('B')),
            (fail(2, "m1"), ongoing('B')),
            (note(1, "m1", 3), action('A')),
        ],
        incidents: &[
            open_inc('A', 1, 3, &[3]),
            Inc { status: IncidentStatus::Acknowledged, ..open_inc('B', 2, 4, &[4, 6]) },
        ],
        monitors: &[mon(1, "m1", FAILING, 1, Some('A')), mon(2, "m1", FAILING, 2, Some('B'))],
    },
];

/// Builds the log of a case, folds it step by step and checks every outcome and the final state.
fn run_case(case: &Case) {
    let ctx = case.name;
    let mut log = Log::default();
    let mut state = State::default();
    // Letter -> (incident id, seq of the opening run).
    let mut letters: BTreeMap<char, (IncidentId, Seq)> = BTreeMap::new();
    // Letter -> the status the incident must have now, following the rules step by step.
    let mut status_of: BTreeMap<char, IncidentStatus> = BTreeMap::new();
    // Seq -> what each run reported, for checking the timeline replay against the fold.
    let mut transitions: BTreeMap<Seq, Transition> = BTreeMap::new();

    for (i, (step, expect)) in case.steps.iter().enumerate() {
        let event = log.push(step.body()).clone();
        assert_eq!(event.seq, Seq(i as u64 + 1), "{ctx}: test table numbering");
        let applied = state
            .apply(&event)
            .unwrap_or_else(|e| panic!("{ctx}: step {} refused: {e}", event.seq));
        assert_eq!(state.applied(), event.seq, "{ctx}: applied seq");

        match (*step, *expect, &applied.outcome) {
            (Step::Create(n), Expect::Created, Outcome::IntegrationCreated)
            | (Step::Revoke(n), Expect::Revoked, Outcome::IntegrationRevoked) => {
                assert_eq!(applied.touched.integration, Some(integration_id(n)), "{ctx}");
                assert_eq!(applied.touched.monitor, None, "{ctx}");
                assert_eq!(applied.touched.incident, None, "{ctx}");
            }
            (
                Step::Run { integ, mon, .. },
                Expect::Run(want_transition, want_letter),
                Outcome::Run { verdict, transition, incident },
            ) => {
                let step_no = event.seq;
                assert_eq!(*transition, want_transition, "{ctx}: step {step_no}");
                transitions.insert(event.seq, *transition);
                let want_verdict = match want_transition {
                    Transition::Opened | Transition::Ongoing => Verdict::Failing,
                    Transition::Resolved | Transition::None => Verdict::Passing,
                };
                assert_eq!(*verdict, want_verdict, "{ctx}: step {step_no} verdict");
                assert_eq!(applied.touched.integration, None, "{ctx}");
                assert_eq!(applied.touched.monitor, Some(key(integ, mon)), "{ctx}");

                match (want_letter, incident) {
                    (None, None) => assert_eq!(applied.touched.incident, None, "{ctx}"),
                    (Some(letter), Some(inc)) => {
                        // A failing run leaves an acknowledgement in place.
                        let want_status = match want_transition {
                            Transition::Resolved => IncidentStatus::Resolved,
                            Transition::Ongoing => status_of[&letter],
                            _ => IncidentStatus::Open,
                        };
                        status_of.insert(letter, want_status);
                        assert_eq!(inc.status, want_status, "{ctx}: step {step_no}");
                        if want_transition == Transition::Opened {
                            // The id is a pure function of the opening event, not a counter or
                            // a random value, so rebuilding from the log reproduces it.
                            assert_eq!(
                                inc.id,
                                IncidentId::derived_from(event.event_id),
                                "{ctx}: step {step_no}"
                            );
                            for (other, (id, _)) in &letters {
                                assert_ne!(inc.id, *id, "{ctx}: {letter} reuses the id of {other}");
                            }
                            let fresh = letters.insert(letter, (inc.id, event.seq));
                            assert!(fresh.is_none(), "{ctx}: table opens {letter} twice");
                        }
                        let (id, opened_seq) = letters
                            .get(&letter)
                            .copied()
                            .unwrap_or_else(|| panic!("{ctx}: {letter} used before opened"));
                        assert_eq!(inc.id, id, "{ctx}: step {step_no} incident {letter}");
                        // A checkpoint rewrites incidents by opening seq, so the fold must name it.
                        assert_eq!(applied.touched.incident, Some(opened_seq), "{ctx}");
                    }
                    (want, got) => {
                        panic!("{ctx}: step {step_no} expected incident {want:?}, got {got:?}")
                    }
                }
            }
            (
                step @ (Step::Ack { opened, .. } | Step::Note { opened, .. }),
                Expect::Action(letter),
                Outcome::IncidentAction { incident },
            ) => {
                let step_no = event.seq;
                let (id, opened_seq) = letters[&letter];
                assert_eq!(Seq(opened), opened_seq, "{ctx}: table names {letter} wrongly");
                if matches!(step, Step::Ack { .. }) {
                    status_of.insert(letter, IncidentStatus::Acknowledged);
                }
                assert_eq!(incident.id, id, "{ctx}: step {step_no}");
                assert_eq!(incident.status, status_of[&letter], "{ctx}: step {step_no}");
                assert_eq!(applied.touched.integration, None, "{ctx}");
                assert_eq!(applied.touched.monitor, None, "{ctx}");
                assert_eq!(applied.touched.incident, Some(opened_seq), "{ctx}");
            }
            (step, expect, got) => panic!("{ctx}: {step:?} expected {expect:?}, got {got:?}"),
        }
    }

    // Final incidents: exactly the ones in the table, no more.
    assert_eq!(state.incidents().count(), case.incidents.len(), "{ctx}: incident count");
    for want in case.incidents {
        let (id, opening) = letters[&want.letter];
        let inc =
            state.incident(id).unwrap_or_else(|| panic!("{ctx}: incident {} missing", want.letter));
        let l = want.letter;
        assert_eq!(inc.id, id, "{ctx}: {l}");
        assert_eq!(inc.status, want.status, "{ctx}: {l} status");
        assert_eq!(inc.status, status_of[&l], "{ctx}: {l} table disagrees with its steps");
        assert_eq!(inc.failing_runs, want.failing_runs, "{ctx}: {l} failing_runs");
        assert_eq!(inc.opened_seq, Seq(want.opened_seq), "{ctx}: {l} opened_seq");
        assert_eq!(inc.opened_seq, opening, "{ctx}: {l} opened by its first step");
        assert_eq!(inc.opened_at, recorded_at(want.opened_seq), "{ctx}: {l}");
        assert_eq!(inc.resolved_seq, want.resolved_seq.map(Seq), "{ctx}: {l}");
        assert_eq!(inc.resolved_at, want.resolved_seq.map(recorded_at), "{ctx}: {l}");
        assert_eq!(inc.monitor_name.as_deref(), want.monitor_name, "{ctx}: {l}");
        let want_runs: Vec<Seq> = want.runs.iter().copied().map(Seq).collect();
        assert_eq!(state.incident_runs(inc), want_runs, "{ctx}: {l} incident_runs");
        // The metrics shown on an incident are those of the last run that belongs to it: the
        // resolving run once resolved, the latest failing run while open.
        let last = *want.runs.last().expect("an incident has runs") as usize;
        assert_eq!(inc.last_metrics, case.steps[last - 1].0.metrics(), "{ctx}: {l} last_metrics");
        // Human actions: every ack and note on this incident, in log order.
        let actions: Vec<Seq> = case
            .steps
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| s.action_on() == Some(want.opened_seq))
            .map(|(i, _)| Seq(i as u64 + 1))
            .collect();
        assert_eq!(inc.actions, actions, "{ctx}: {l} actions");
        let ack = case
            .steps
            .iter()
            .position(|(s, _)| matches!(s, Step::Ack { opened, .. } if *opened == want.opened_seq))
            .map(|i| Seq(i as u64 + 1));
        assert_eq!(inc.acknowledged_seq, ack, "{ctx}: {l} acknowledged_seq");
        assert_eq!(inc.acknowledged_at, ack.map(|s| recorded_at(s.0)), "{ctx}: {l}");
        assert_eq!(inc.acknowledged_by.as_deref(), ack.map(|_| "alice"), "{ctx}: {l}");
        let mut timeline = want_runs.clone();
        timeline.extend(&actions);
        timeline.sort();
        assert_eq!(state.incident_events(inc), timeline, "{ctx}: {l} incident_events");
        // Replaying the incident's own events must tell the same story the fold told.
        let own: Vec<Event> =
            timeline.iter().map(|s| log.events[s.0 as usize - 1].clone()).collect();
        let replay = incident_timeline(inc, &own);
        assert_eq!(replay.len(), own.len(), "{ctx}: {l} timeline length");
        for step in &replay {
            let seq = step.event.seq;
            assert_eq!(step.transition, transitions.get(&seq).copied(), "{ctx}: {l} at {seq}");
        }
        assert_eq!(replay.last().map(|s| s.status_after), Some(inc.status), "{ctx}: {l}");
        assert_eq!(state.incident_opened_at(inc.opened_seq).map(|i| i.id), Some(id), "{ctx}: {l}");
        // The incident belongs to the monitor of the run that opened it.
        let Step::Run { integ, mon, .. } = case.steps[want.opened_seq as usize - 1].0 else {
            panic!("{ctx}: {l} opened by a step that is not a run");
        };
        assert_eq!(inc.monitor_key(), key(integ, mon), "{ctx}: {l} monitor");
    }

    // Final monitors: exactly the ones in the table, no more.
    assert_eq!(state.monitors().count(), case.monitors.len(), "{ctx}: monitor count");
    for want in case.monitors {
        let k = key(want.integ, want.mon);
        let m = state.monitor(&k).unwrap_or_else(|| panic!("{ctx}: monitor {k:?} missing"));
        let run_seqs: Vec<Seq> = case
            .steps
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| matches!(s, Step::Run { integ, mon, .. } if *integ == want.integ && *mon == want.mon))
            .map(|(i, _)| Seq(i as u64 + 1))
            .collect();
        assert_eq!(m.status, want.status, "{ctx}: {k:?} status");
        assert_eq!(m.runs_seen, want.runs_seen, "{ctx}: {k:?} runs_seen");
        assert_eq!(state.runs(&k), run_seqs, "{ctx}: {k:?} runs");
        assert_eq!(Some(m.last_run_seq), run_seqs.last().copied(), "{ctx}");
        assert_eq!(m.last_run_at, recorded_at(m.last_run_seq.0), "{ctx}");
        assert_eq!(
            m.last_metrics,
            case.steps[m.last_run_seq.0 as usize - 1].0.metrics(),
            "{ctx}: {k:?} last_metrics"
        );
        assert_eq!(
            m.open_incident,
            want.open_incident.map(|l| letters[&l].0),
            "{ctx}: {k:?} open_incident"
        );
        assert_eq!(m.name.as_deref(), want.name, "{ctx}: {k:?} name");
    }

    // Integrations: active ones resolve by token, revoked ones do not.
    for step in case.steps.iter().map(|(s, _)| *s) {
        if let Step::Create(n) = step {
            let revoked = case.steps.iter().any(|(s, _)| matches!(s, Step::Revoke(r) if *r == n));
            let integ = state.integration(integration_id(n)).expect("created");
            assert_eq!(integ.is_active(), !revoked, "{ctx}: integration {n}");
            assert_eq!(
                state.integration_by_token(&token(n)).map(|i| i.id),
                (!revoked).then(|| integration_id(n)),
                "{ctx}: integration {n} by token"
            );
        }
    }

    // The same log folded again from scratch gives the same state.
    assert_eq!(fold(&log.events), state, "{ctx}: refold differs");
}

#[test]
fn transition_table() {
    for case in CASES {
        run_case(case);
    }
}

#[test]
fn incident_id_depends_only_on_the_opening_event() {
    let steps = [create(1), pass(1, "m1"), fail(1, "m1"), fail(1, "m1")];
    let build = |id_offset: u128| {
        let mut events: Vec<Event> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let seq = Seq(i as u64 + 1);
            let prev = events.last().map_or(Digest256::GENESIS, |e| e.hash);
            let id = EventId(Uuid::from_u128(id_offset + u128::from(seq.0)));
            events.push(Event::seal(seq, id, recorded_at(seq.0), step.body(), prev));
        }
        events
    };
    let open_id = |events: &[Event]| fold(events).incidents().next().expect("one incident").id;

    let a = build(100);
    assert_eq!(open_id(&a), open_id(&build(100)), "same events, same id");
    assert_eq!(open_id(&a), IncidentId::derived_from(a[2].event_id));
    // Another event id for the opening run must name another incident, or ids would collide.
    assert_ne!(open_id(&a), open_id(&build(200)));
}

// ---------------------------------------------------------------------------------------------
// Refusals. A refused event must also leave the state exactly as it was: the writer relies on
// that to keep serving after it refuses a command.
// ---------------------------------------------------------------------------------------------

enum Want {
    OutOfOrder { expected: u64, got: u64 },
    Inconsistent { seq: u64, reason_contains: &'static str },
}

const fn out_of_order(expected: u64, got: u64) -> Want {
    Want::OutOfOrder { expected, got }
}

const fn inconsistent(seq: u64, reason_contains: &'static str) -> Want {
    Want::Inconsistent { seq, reason_contains }
}

#[test]
fn refusals() {
    type Bad = fn(&Log) -> Event;
    let cases: Vec<(&str, Vec<Step>, Bad, Want)> = vec![
        (
            "a gap in the seqs",
            vec![create(1)],
            |log| {
                let mut e = log.seal(pass(1, "m1").body());
                e.seq = Seq(3);
                e
            },
            out_of_order(2, 3),
        ),
        (
            "an event applied twice",
            vec![create(1), pass(1, "m1")],
            |log| log.events[1].clone(),
            out_of_order(3, 2),
        ),
        (
            "a first event that is not seq 1",
            vec![],
            |log| {
                let mut e = log.seal(create(1).body());
                e.seq = Seq::ZERO;
                e
            },
            out_of_order(1, 0),
        ),
        (
            "a run for an integration never created",
            vec![create(1)],
            |log| log.seal(fail(2, "m1").body()),
            inconsistent(2, "not active"),
        ),
        (
            "a run for a revoked integration",
            vec![create(1), fail(1, "m1"), revoke(1)],
            |log| log.seal(pass(1, "m1").body()),
            inconsistent(4, "not active"),
        ),
        (
            "an integration created twice",
            vec![create(1), pass(1, "m1")],
            |log| log.seal(create(1).body()),
            inconsistent(3, "created twice"),
        ),
        (
            "a revoked integration created again",
            vec![create(1), revoke(1)],
            |log| log.seal(create(1).body()),
            inconsistent(3, "created twice"),
        ),
        (
            "an integration revoked twice",
            vec![create(1), revoke(1)],
            |log| log.seal(revoke(1).body()),
            inconsistent(3, "not active"),
        ),
        (
            "an unknown integration revoked",
            vec![create(1)],
            |log| log.seal(revoke(9).body()),
            inconsistent(2, "not active"),
        ),
        (
            "a stored payload without metrics",
            vec![create(1)],
            |log| {
                let mut p = payload("m1", None, 0, 0);
                p.remove("metrics");
                log.seal(EventBody::MonitorRunReported {
                    idempotency_key: None,
                    integration_id: integration_id(1),
                    monitor_uid: uid("m1"),
                    payload: Payload::from_object(&p),
                })
            },
            inconsistent(2, "stored payload is invalid"),
        ),
        (
            "a stored payload with a negative count",
            vec![create(1), fail(1, "m1")],
            |log| {
                let mut p = payload("m1", None, 0, 0);
                p["metrics"]["errors"] = json!(-1);
                log.seal(EventBody::MonitorRunReported {
                    idempotency_key: None,
                    integration_id: integration_id(1),
                    monitor_uid: uid("m1"),
                    payload: Payload::from_object(&p),
                })
            },
            inconsistent(3, "stored payload is invalid"),
        ),
        (
            "a stored payload naming another monitor",
            vec![create(1), fail(1, "m1")],
            |log| {
                log.seal(EventBody::MonitorRunReported {
                    idempotency_key: None,
                    integration_id: integration_id(1),
                    monitor_uid: uid("m1"),
                    payload: Payload::from_object(&payload("m2", None, 0, 0)),
                })
            },
            inconsistent(3, "monitor_uid"),
        ),
        (
            "an acknowledgement of an incident that never opened",
            // Seq 1 is the integration's creation, which opened no incident.
            vec![create(1), fail(1, "m1")],
            |log| log.seal(ack(1, "m1", 1).body()),
            inconsistent(3, "does not exist"),
        ),
        (
            "a note on an incident that never opened",
            vec![create(1), pass(1, "m1")],
            |log| log.seal(note(1, "m1", 2).body()),
            inconsistent(3, "does not exist"),
        ),
        (
            "an acknowledgement naming another monitor",
            vec![create(1), fail(1, "m1"), fail(1, "m2")],
            |log| log.seal(ack(1, "m2", 2).body()),
            inconsistent(4, "another monitor"),
        ),
        (
            "a note naming the same monitor on another integration",
            vec![create(1), create(2), fail(1, "m1"), fail(2, "m1")],
            |log| log.seal(note(2, "m1", 3).body()),
            inconsistent(5, "another monitor"),
        ),
        (
            "an acknowledgement of a resolved incident",
            vec![create(1), fail(1, "m1"), pass(1, "m1")],
            |log| log.seal(ack(1, "m1", 2).body()),
            inconsistent(4, "not open"),
        ),
        (
            "an incident acknowledged twice",
            vec![create(1), fail(1, "m1"), ack(1, "m1", 2)],
            |log| log.seal(ack(1, "m1", 2).body()),
            inconsistent(4, "not open"),
        ),
    ];

    for (name, prefix, bad, want) in cases {
        let mut log = Log::default();
        for step in prefix {
            log.push(step.body());
        }
        let mut state = fold(&log.events);
        let before = state.clone();
        let err = state.apply(&bad(&log)).expect_err(&format!("{name}: should be refused"));
        match (want, &err) {
            (Want::OutOfOrder { expected, got }, FoldError::OutOfOrder { .. }) => assert_eq!(
                err,
                FoldError::OutOfOrder { expected: Seq(expected), got: Seq(got) },
                "{name}"
            ),
            (
                Want::Inconsistent { seq, reason_contains },
                FoldError::Inconsistent { seq: got_seq, reason },
            ) => {
                assert_eq!(*got_seq, Seq(seq), "{name}");
                assert!(
                    reason.contains(reason_contains),
                    "{name}: reason {reason:?} should mention {reason_contains:?}"
                );
            }
            (_, other) => panic!("{name}: wrong error {other:?}"),
        }
        assert_eq!(state, before, "{name}: a refused event changed the state");
        // After a refusal the next valid event is still accepted at the same seq.
        state
            .apply(&log.seal(create(7).body()))
            .unwrap_or_else(|e| panic!("{name}: state unusable after refusal: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Property: random histories against a small reference model of the rules.
// ---------------------------------------------------------------------------------------------

const MONITORS: &[&str] = &["m-a", "m-b", "m-c"];

#[derive(Debug, Clone)]
enum Op {
    Run {
        integ: u8,
        mon: usize,
        failed: u32,
        errors: u32,
    },
    Revoke(u8),
    /// Acknowledges the monitor's open incident, if it has one not yet acknowledged.
    Ack {
        integ: u8,
        mon: usize,
    },
    /// Adds a note to the monitor's latest incident, whatever its status, if it has one.
    Note {
        integ: u8,
        mon: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let metrics = prop_oneof![
        3 => Just((0u32, 0u32)),
        2 => (1u32..4).prop_map(|f| (f, 0)),
        1 => (1u32..3).prop_map(|e| (0, e)),
        1 => (1u32..4, 1u32..3),
    ];
    let monitor = (0u8..3, 0..MONITORS.len());
    prop_oneof![
        30 => (monitor.clone(), metrics).prop_map(|((integ, mon), (failed, errors))| Op::Run {
            integ,
            mon,
            failed,
            errors
        }),
        1 => (0u8..3).prop_map(Op::Revoke),
        3 => monitor.clone().prop_map(|(integ, mon)| Op::Ack { integ, mon }),
        2 => monitor.prop_map(|(integ, mon)| Op::Note { integ, mon }),
    ]
}

/// Turns random ops into a valid history: integrations are created on first mention; anything on
/// an integration already revoked is dropped, as the writer would refuse it; acknowledgements and
/// notes go to the incident they can apply to, or are dropped when there is none.
fn history(ops: &[Op]) -> Vec<Step> {
    let mut created = [false; 3];
    let mut revoked = [false; 3];
    // Per monitor: the opening seq of its open incident and whether it is acknowledged, and the
    // opening seq of its latest incident. Only what is needed to aim the human actions.
    let mut open: BTreeMap<(u8, usize), (u64, bool)> = BTreeMap::new();
    let mut latest: BTreeMap<(u8, usize), u64> = BTreeMap::new();
    let mut steps = Vec::new();
    for op in ops {
        let integ = match op {
            Op::Run { integ, .. }
            | Op::Revoke(integ)
            | Op::Ack { integ, .. }
            | Op::Note { integ, .. } => *integ,
        };
        let i = usize::from(integ);
        if revoked[i] {
            continue;
        }
        if !created[i] {
            created[i] = true;
            steps.push(create(integ));
        }
        let seq = steps.len() as u64 + 1;
        match *op {
            Op::Run { integ, mon, failed, errors } => {
                let failing = failed > 0 || errors > 0;
                if failing && !open.contains_key(&(integ, mon)) {
                    open.insert((integ, mon), (seq, false));
                    latest.insert((integ, mon), seq);
                } else if !failing {
                    open.remove(&(integ, mon));
                }
                steps.push(run(integ, MONITORS[mon], failed, errors));
            }
            Op::Revoke(integ) => {
                revoked[i] = true;
                steps.push(revoke(integ));
            }
            Op::Ack { integ, mon } => {
                if let Some((opened, acked @ false)) = open.get_mut(&(integ, mon)) {
                    *acked = true;
                    steps.push(ack(integ, MONITORS[mon], *opened));
                }
            }
            Op::Note { integ, mon } => {
                if let Some(opened) = latest.get(&(integ, mon)) {
                    steps.push(note(integ, MONITORS[mon], *opened));
                }
            }
        }
    }
    steps
}

/// The reference model's view of one monitor.
#[derive(Default)]
struct ModelMonitor {
    runs: Vec<Seq>,
    /// Opening seq of the open incident.
    open: Option<Seq>,
}

/// The reference model's view of one incident.
struct ModelIncident {
    key: MonitorKey,
    failing_runs: u64,
    acknowledged: Option<Seq>,
    resolved: Option<Seq>,
    runs: Vec<Seq>,
    actions: Vec<Seq>,
}

impl ModelIncident {
    fn status(&self) -> IncidentStatus {
        match (self.resolved, self.acknowledged) {
            (Some(_), _) => IncidentStatus::Resolved,
            (None, Some(_)) => IncidentStatus::Acknowledged,
            (None, None) => IncidentStatus::Open,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Only this file may change in the tree, so failing seeds are reported, not written to a
        // regressions file next to it.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_histories_keep_the_invariants(ops in prop::collection::vec(op(), 0..120)) {
        let steps = history(&ops);
        let mut log = Log::default();
        for step in &steps {
            log.push(step.body());
        }

        let mut state = State::default();
        let mut monitors: BTreeMap<MonitorKey, ModelMonitor> = BTreeMap::new();
        let mut incidents: BTreeMap<Seq, ModelIncident> = BTreeMap::new();
        let mut outcomes = Vec::new();
        for (event, step) in log.events.iter().zip(&steps) {
            let applied = state.apply(event).expect("valid history");
            outcomes.push(applied.clone());
            let (integ, mon, failed, errors) = match *step {
                Step::Run { integ, mon, failed, errors, .. } => (integ, mon, failed, errors),
                Step::Ack { opened, .. } | Step::Note { opened, .. } => {
                    let inc = incidents.get_mut(&Seq(opened)).expect("model incident");
                    if matches!(step, Step::Ack { .. }) {
                        inc.acknowledged = Some(event.seq);
                    }
                    inc.actions.push(event.seq);
                    let Outcome::IncidentAction { incident } = applied.outcome else {
                        panic!("a human action reported {:?}", applied.outcome);
                    };
                    prop_assert_eq!(incident.id, IncidentId::derived_from(event_id(opened)));
                    prop_assert_eq!(incident.status, inc.status());
                    continue;
                }
                Step::Create(_) | Step::Revoke(_) => continue,
            };
            let k = key(integ, mon);
            let model = monitors.entry(k.clone()).or_default();
            model.runs.push(event.seq);
            let failing = failed > 0 || errors > 0;
            let (want_transition, want_incident) = match (failing, model.open) {
                (true, None) => {
                    model.open = Some(event.seq);
                    incidents.insert(event.seq, ModelIncident {
                        key: k.clone(),
                        failing_runs: 1,
                        acknowledged: None,
                        resolved: None,
                        runs: vec![event.seq],
                        actions: Vec::new(),
                    });
                    (Transition::Opened, Some(event.seq))
                }
                (true, Some(open)) => {
                    let inc = incidents.get_mut(&open).expect("model incident");
                    inc.failing_runs += 1;
                    inc.runs.push(event.seq);
                    (Transition::Ongoing, Some(open))
                }
                (false, Some(open)) => {
                    let inc = incidents.get_mut(&open).expect("model incident");
                    inc.resolved = Some(event.seq);
                    inc.runs.push(event.seq);
                    model.open = None;
                    (Transition::Resolved, Some(open))
                }
                (false, None) => (Transition::None, None),
            };
            let Outcome::Run { transition, incident, verdict } = applied.outcome else {
                panic!("a run reported {:?}", applied.outcome);
            };
            prop_assert_eq!(transition, want_transition);
            prop_assert_eq!(verdict == Verdict::Failing, failing);
            prop_assert_eq!(
                incident.map(|i| (i.id, i.status)),
                want_incident.map(|s| (IncidentId::derived_from(event_id(s.0)), incidents[&s].status()))
            );
        }
        prop_assert_eq!(state.applied(), Seq(log.events.len() as u64));

        // Unresolved incidents (open or acknowledged), per monitor: at most one, and it is the one
        // the monitor points at.
        let mut open_per_key: BTreeMap<MonitorKey, Vec<IncidentId>> = BTreeMap::new();
        for inc in state.incidents() {
            if inc.status != IncidentStatus::Resolved {
                open_per_key.entry(inc.monitor_key()).or_default().push(inc.id);
                let m = state.monitor(&inc.monitor_key());
                prop_assert_eq!(m.and_then(|m| m.open_incident), Some(inc.id));
            }
        }
        for (k, open) in &open_per_key {
            prop_assert!(open.len() <= 1, "{:?} has {} open incidents", k, open.len());
        }
        for m in state.monitors() {
            if let Some(id) = m.open_incident {
                let inc = state.incident(id);
                prop_assert!(inc.is_some(), "open_incident points at nothing");
                let inc = inc.unwrap();
                prop_assert_ne!(inc.status, IncidentStatus::Resolved);
                prop_assert_eq!(inc.monitor_key(), m.key());
            }
            // A monitor is failing exactly while it has an open incident.
            prop_assert_eq!(m.status == MonitorStatus::Failing, m.open_incident.is_some());
            let model = &monitors[&m.key()];
            prop_assert_eq!(m.runs_seen, model.runs.len() as u64);
            prop_assert_eq!(state.runs(&m.key()), model.runs.as_slice());
            let last = *model.runs.last().expect("a monitor has runs");
            prop_assert_eq!(&m.last_metrics, &steps[last.0 as usize - 1].metrics());
            prop_assert_eq!(
                m.open_incident,
                model.open.map(|s| IncidentId::derived_from(event_id(s.0)))
            );
        }
        prop_assert_eq!(state.monitors().count(), monitors.len());

        // Every incident matches the model, including the runs and actions that belong to it.
        prop_assert_eq!(state.incidents().count(), incidents.len());
        for (opened, want) in &incidents {
            let inc = state.incident_opened_at(*opened);
            prop_assert!(inc.is_some(), "incident opened at {} missing", opened);
            let inc = inc.unwrap();
            prop_assert_eq!(inc.id, IncidentId::derived_from(event_id(opened.0)));
            prop_assert_eq!(&inc.monitor_key(), &want.key);
            prop_assert_eq!(inc.status, want.status());
            prop_assert_eq!(inc.failing_runs, want.failing_runs);
            prop_assert_eq!(inc.resolved_seq, want.resolved);
            prop_assert_eq!(inc.acknowledged_seq, want.acknowledged);
            prop_assert_eq!(&inc.actions, &want.actions);
            prop_assert_eq!(state.incident_runs(inc), want.runs.as_slice());
            let last = *want.runs.last().expect("an incident has runs");
            prop_assert_eq!(&inc.last_metrics, &steps[last.0 as usize - 1].metrics());
        }

        // Determinism: two fresh folds of the same events agree with each other and with the
        // step-by-step fold, outcome by outcome, down to the state digest.
        let mut again = State::default();
        for (event, outcome) in log.events.iter().zip(&outcomes) {
            prop_assert_eq!(&again.apply(event).expect("valid history"), outcome);
        }
        prop_assert_eq!(&again, &state);
        prop_assert_eq!(again.digest(), state.digest());
        prop_assert_eq!(&fold(&log.events), &state);
    }
}
