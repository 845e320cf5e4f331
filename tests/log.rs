//! The log's storage through the public `Store` API: events appended in batches of any size (many
//! events per block, several blocks per batch) read back byte for byte by seq, from any seq and
//! over any range, and a failed batch taken back without touching the batches before it.

use chrono::{Duration, TimeZone, Utc};
use incidentd::domain::{
    Digest256, Event, EventBody, EventId, IntegrationId, MonitorUid, Payload, Seq,
};
use incidentd::store::{Encoded, Store, StoreOptions};
use uuid::Uuid;

/// Seals `n` events after `log`, each with a payload of about `payload_bytes`, so that tests
/// choose how many fit in one block.
fn extend(log: &mut Vec<Event>, n: usize, payload_bytes: usize) -> Vec<Encoded> {
    (0..n).map(|_| Encoded::new(seal_next(log, payload_bytes)).unwrap()).collect()
}

/// Seals the event after `log` (the integration first, then runs) and appends it to `log`.
fn seal_next(log: &mut Vec<Event>, payload_bytes: usize) -> &Event {
    let integration_id = IntegrationId(Uuid::from_u128(7));
    let start = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap();
    {
        let seq = Seq(log.len() as u64 + 1);
        let prev = log.last().map_or(Digest256::GENESIS, |e| e.hash);
        let body = if seq == Seq(1) {
            EventBody::IntegrationCreated {
                integration_id,
                name: "stored".to_owned(),
                token_hash: Digest256::of(b"token"),
            }
        } else {
            let payload = serde_json::json!({
                "monitor_uid": format!("m-{}", seq.0 % 5),
                "metrics": {"failedTests": seq.0 % 2, "errors": 0},
                "padding": "p".repeat(payload_bytes),
            });
            EventBody::MonitorRunReported {
                integration_id,
                monitor_uid: MonitorUid::parse(&format!("m-{}", seq.0 % 5)).unwrap(),
                idempotency_key: None,
                payload: Payload::from_object(payload.as_object().unwrap()),
            }
        };
        let at = start + Duration::seconds(seq.0 as i64);
        let event = Event::seal(seq, EventId(Uuid::from_u128(u128::from(seq.0))), at, body, prev);
        log.push(event);
    }
    log.last().expect("just pushed")
}

/// An event larger than `MAX_EVENT_BYTES` is refused before it is staged: a leaf of sled holding
/// such values could grow past the size sled keeps in its fsynced data file.
#[test]
fn an_event_too_large_to_store_is_refused() {
    let mut log = Vec::new();
    seal_next(&mut log, 0);
    match Encoded::new(seal_next(&mut log, incidentd::store::MAX_EVENT_BYTES)) {
        Err(incidentd::store::StoreError::TooLarge { bytes, max }) => {
            assert!(bytes > max);
            assert_eq!(max, incidentd::store::MAX_EVENT_BYTES);
        }
        other => panic!("an oversized event was not refused: {other:?}"),
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, &StoreOptions { cache_capacity: 4 * 1024 * 1024 }).unwrap()
}

fn seqs(events: impl Iterator<Item = Result<Event, incidentd::store::StoreError>>) -> Vec<u64> {
    events.map(|e| e.unwrap().seq.0).collect()
}

#[test]
fn batches_of_every_size_read_back_by_seq_and_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Vec::new();
    {
        let store = open(dir.path());
        // One event; a batch that fills several blocks (300 events of about 1 KiB against blocks
        // of 64 KiB); a single event larger than a block; small batches after it.
        for (n, payload) in [(1, 0), (300, 1000), (1, 90_000), (7, 10), (1, 10), (40, 3000)] {
            let batch = extend(&mut log, n, payload);
            store.append(&batch).unwrap();
        }
    }
    // Read back after a reopen, so that everything comes from disk.
    let store = open(dir.path());
    let last = log.len() as u64;
    assert_eq!(store.event_count().unwrap(), log.len());
    assert_eq!(store.head().unwrap().unwrap().seq, Seq(last));
    for event in &log {
        let raw = store.raw_event(event.seq).unwrap().expect("every seq is stored");
        assert_eq!(raw, event.encode(), "event {} differs", event.seq);
        assert_eq!(store.event(event.seq).unwrap().unwrap().hash, event.hash);
    }
    assert!(store.event(Seq(last + 1)).unwrap().is_none());
    assert!(store.event(Seq(u64::MAX)).unwrap().is_none());
    assert!(store.raw_event(Seq::ZERO).unwrap().is_none());

    // From every seq (block starts, middles and ends alike) to the head, and bounded ranges.
    for first in 1..=last + 1 {
        assert_eq!(seqs(store.events_from(Seq(first))), (first..=last).collect::<Vec<_>>());
    }
    for (first, end) in [(1, 1), (2, 301), (150, 303), (301, 302), (302, 302), (5, 4), (300, last)]
    {
        let mut seen = Vec::new();
        store
            .scan(Seq(first), Some(Seq(end)), |e| {
                seen.push(e.seq.0);
                Ok::<_, incidentd::store::StoreError>(())
            })
            .unwrap();
        assert_eq!(seen, (first..=end).collect::<Vec<_>>(), "scan {first}..={end}");
    }
    let mut all = 0;
    store
        .scan(Seq(1), None, |_| {
            all += 1;
            Ok::<_, incidentd::store::StoreError>(())
        })
        .unwrap();
    assert_eq!(all, log.len());

    // A visit that fails stops the scan there with its error, however far decoding got ahead.
    let mut visited = 0;
    let stopped = store.scan(Seq(1), None, |e| {
        visited += 1;
        if e.seq == Seq(150) {
            return Err(incidentd::store::StoreError::Corrupt {
                seq: e.seq,
                reason: "stop here".to_owned(),
            });
        }
        Ok(())
    });
    assert!(matches!(stopped, Err(incidentd::store::StoreError::Corrupt { seq: Seq(150), .. })));
    assert_eq!(visited, 150);
}

#[test]
fn a_discarded_batch_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut log = Vec::new();
    store.append(&extend(&mut log, 5, 10)).unwrap();
    let kept = log.len();
    // A batch spanning several blocks whose sync is taken to have failed.
    let failed = extend(&mut log, 200, 1000);
    store.insert(&failed).unwrap();
    assert_eq!(store.event_count().unwrap(), 205);
    store.discard(&log[kept..]);
    assert_eq!(store.event_count().unwrap(), kept);
    assert_eq!(store.head().unwrap().unwrap().seq, Seq(kept as u64));
    assert_eq!(seqs(store.events_from(Seq(1))), (1..=kept as u64).collect::<Vec<_>>());
    // The same seqs are appended again, as the writer does after a restart.
    log.truncate(kept);
    store.append(&extend(&mut log, 3, 10)).unwrap();
    assert_eq!(seqs(store.events_from(Seq(4))), vec![4, 5, 6, 7, 8]);
}
