//! Tamper evidence and offline tools: `incidentd verify` catches an altered, missing or reordered
//! event and names the first bad seq; `incidentd replay` rebuilds identical projections.

mod common;

use std::path::Path;
use std::process::Command;

use common::run;
use incidentd::audit;
use incidentd::domain::{parse_run, Seq};
use incidentd::engine::{Engine, EngineOptions};
use incidentd::store::{block, Store, StoreOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_incidentd");
const EVENTS: u64 = 12;

/// A data directory holding a small, valid log of `EVENTS` events.
async fn make_log(dir: &Path) {
    let engine = Engine::open(dir, EngineOptions::default()).unwrap();
    let token = engine.create_integration("audited").await.unwrap().token;
    let mut incident = None;
    for n in 1..EVENTS - 1 {
        let body = run(&format!("m{}", n % 3), (n % 2) as u32, 0).to_string();
        let receipt =
            engine.ingest(&token, parse_run(body.as_bytes()).unwrap(), None).await.unwrap();
        incident = incident.or(receipt.incident.map(|i| i.id));
    }
    engine.add_note(incident.unwrap(), "auditor", "checked").await.unwrap();
    assert_eq!(engine.state().applied(), Seq(EVENTS));
}

/// Runs `incidentd <args> --data-dir <dir>` and returns its exit success and JSON report.
fn cli(args: &[&str], dir: &Path) -> (bool, Value) {
    let output = Command::new(BIN).args(args).arg("--data-dir").arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON report ({e}): {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

/// Opens the data directory's sled database directly, as an attacker with disk access would.
fn raw_db(dir: &Path) -> sled::Db {
    let config = sled::Config::new().path(dir.join("log")).segment_size(8 * 1024 * 1024);
    // sled lets go of its lock only once its background threads release the file, a moment after
    // the previous handle is dropped; Store::open waits for it the same way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            Ok(db) => return db,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::yield_now()
            }
            Err(e) => panic!("cannot open the log to tamper with it: {e}"),
        }
    }
}

/// Takes every stored event out of the log's blocks, oldest first.
fn take_events(db: &sled::Db) -> Vec<Vec<u8>> {
    let blocks = db.open_tree("blocks").unwrap();
    let mut events = Vec::new();
    for item in blocks.iter() {
        let (_, value) = item.unwrap();
        events.extend(block::decode(&value).unwrap().into_iter().map(<[u8]>::to_vec));
    }
    blocks.clear().unwrap();
    events
}

/// Edits the stored events (index 0 is seq 1) and writes them back as one well-framed block, so
/// that only the edit itself is there to be caught.
fn tamper(dir: &Path, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let db = raw_db(dir);
    let mut events = take_events(&db);
    edit(&mut events);
    if !events.is_empty() {
        let value = block::encode(events.iter().map(Vec::as_slice));
        db.open_tree("blocks").unwrap().insert(Seq(1).to_be_bytes(), value).unwrap();
    }
    db.flush().unwrap();
}

/// Rewrites the log in the layout of directories created before blocks: one stored event per key
/// of the tree `events`.
fn to_one_event_per_key(dir: &Path) {
    let db = raw_db(dir);
    let legacy = db.open_tree("events").unwrap();
    for (i, event) in take_events(&db).into_iter().enumerate() {
        legacy.insert(Seq(i as u64 + 1).to_be_bytes(), event).unwrap();
    }
    db.flush().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_log_verifies_and_replays_identically() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path()).await;
    let (ok, report) = cli(&["verify"], dir.path());
    assert!(ok, "{report}");
    assert_eq!((report["ok"].as_bool(), report["events"].as_u64()), (Some(true), Some(EVENTS)));
    assert_eq!(report["checkpoint_matches"], true, "{report}");

    let (ok, report) = cli(&["replay"], dir.path());
    assert!(ok, "{report}");
    assert_eq!(
        (report["identical"].as_bool(), report["events_replayed"].as_u64()),
        (Some(true), Some(EVENTS))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_altered_missing_or_reordered_event() {
    let pristine = tempfile::tempdir().unwrap();
    make_log(pristine.path()).await;
    let scratch = tempfile::tempdir().unwrap();
    let case = |name: &str| {
        let dir = scratch.path().join(name);
        copy_dir(pristine.path(), &dir);
        dir
    };

    let flipped = case("flipped");
    tamper(&flipped, |events| {
        let middle = events[4].len() / 2;
        events[4][middle] ^= 0x01;
    });
    let (ok, report) = cli(&["verify"], &flipped);
    assert!(!ok, "a flipped byte fails verification");
    assert_eq!(
        (report["ok"].as_bool(), report["first_bad_seq"].as_u64()),
        (Some(false), Some(5)),
        "{report}"
    );

    let deleted = case("deleted");
    tamper(&deleted, |events| {
        events.remove(6);
    });
    let (ok, report) = cli(&["verify"], &deleted);
    assert!(!ok);
    assert_eq!(report["first_bad_seq"], 7, "{report}");
    assert!(report["error"].as_str().unwrap().contains("missing"), "{report}");

    let swapped = case("swapped");
    tamper(&swapped, |events| events.swap(2, 3));
    let (ok, report) = cli(&["verify"], &swapped);
    assert!(!ok);
    assert_eq!(report["first_bad_seq"], 3, "{report}");

    // The last event removed: the chain up to the new head is intact, but the projections checked
    // in the checkpoint still count it, so the offline check still fails.
    let truncated = case("truncated");
    tamper(&truncated, |events| {
        events.pop();
    });
    let (ok, report) = cli(&["verify"], &truncated);
    assert!(!ok, "{report}");
    assert_eq!(report["checkpoint_matches"], false, "{report}");
}

/// Every single-byte flip anywhere in a stored event is caught, at that event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_of_an_event_is_covered() {
    let pristine = tempfile::tempdir().unwrap();
    make_log(pristine.path()).await;
    let original = {
        let store = Store::open(pristine.path(), &StoreOptions::default()).unwrap();
        store.raw_event(Seq(6)).unwrap().unwrap()
    };
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("log-copy");
    copy_dir(pristine.path(), &dir);
    let store = Store::open(&dir, &StoreOptions::default()).unwrap();
    drop(store);
    for position in (0..original.len()).step_by(7) {
        tamper(&dir, |events| {
            events[5].clone_from(&original);
            events[5][position] ^= 0x01;
        });
        let store = Store::open(&dir, &StoreOptions::default()).unwrap();
        let report = audit::verify(&store, None);
        let shown = String::from_utf8_lossy(
            &original[position.saturating_sub(10)..(position + 10).min(original.len())],
        )
        .into_owned();
        assert_eq!(
            report.first_bad_seq,
            Some(Seq(6)),
            "flip at byte {position} (near {shown:?}) went unnoticed"
        );
    }
}

/// A directory written before the log was kept in blocks (one stored event per key) is read as it
/// is: it verifies, replays, serves its events and takes new ones after its own, and stays tamper
/// evident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_one_event_per_key_is_read_and_extended() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path()).await;
    to_one_event_per_key(dir.path());
    let (ok, report) = cli(&["verify"], dir.path());
    assert!(ok, "{report}");
    assert_eq!(report["events"], EVENTS, "{report}");
    assert_eq!(report["checkpoint_matches"], true, "{report}");

    {
        let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        assert_eq!(engine.state().applied(), Seq(EVENTS));
        let token = engine.create_integration("later").await.unwrap().token;
        let body = run("m-later", 1, 0).to_string();
        let receipt =
            engine.ingest(&token, parse_run(body.as_bytes()).unwrap(), None).await.unwrap();
        assert!(receipt.incident.is_some());
        let around: Vec<u64> = engine
            .events_after(Seq(EVENTS - 2), 10, |_| true)
            .unwrap()
            .iter()
            .map(|e| e.seq.0)
            .collect();
        assert_eq!(around, vec![EVENTS - 1, EVENTS, EVENTS + 1, EVENTS + 2]);
        engine.shutdown();
    }

    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    assert_eq!(store.event_count().unwrap(), EVENTS as usize + 2);
    assert_eq!(store.head().unwrap().unwrap().seq, Seq(EVENTS + 2));
    for seq in [1, EVENTS, EVENTS + 1, EVENTS + 2] {
        assert_eq!(store.event(Seq(seq)).unwrap().unwrap().seq, Seq(seq));
    }
    assert!(store.event(Seq(EVENTS + 3)).unwrap().is_none());
    let mut seen = Vec::new();
    store
        .scan(Seq(EVENTS - 1), Some(Seq(EVENTS + 1)), |e| {
            seen.push(e.seq.0);
            Ok::<_, incidentd::store::StoreError>(())
        })
        .unwrap();
    assert_eq!(seen, vec![EVENTS - 1, EVENTS, EVENTS + 1]);
    drop(store);

    let (ok, report) = cli(&["verify"], dir.path());
    assert!(ok, "{report}");
    assert_eq!(report["events"], EVENTS + 2, "{report}");
    let (ok, report) = cli(&["replay"], dir.path());
    assert!(ok, "{report}");
    assert_eq!(report["identical"], true, "{report}");

    {
        let db = raw_db(dir.path());
        let legacy = db.open_tree("events").unwrap();
        let mut value = legacy.get(Seq(5).to_be_bytes()).unwrap().unwrap().to_vec();
        let middle = value.len() / 2;
        value[middle] ^= 0x01;
        legacy.insert(Seq(5).to_be_bytes(), value).unwrap();
        db.flush().unwrap();
    }
    let (ok, report) = cli(&["verify"], dir.path());
    assert!(!ok, "{report}");
    assert_eq!(report["first_bad_seq"], 5, "{report}");
}

/// A fold from the log sees every event before a damaged one, even when both share a block, and
/// stops at the damaged one with its seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_stops_at_the_damaged_event_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path()).await;
    tamper(dir.path(), |events| events[7] = b"{\"not\": \"an event\"}".to_vec());
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let mut seen = Vec::new();
    let result = store.scan(Seq(1), None, |event| {
        seen.push(event.seq.0);
        Ok::<_, incidentd::store::StoreError>(())
    });
    assert!(
        matches!(result, Err(incidentd::store::StoreError::Corrupt { seq: Seq(8), .. })),
        "{result:?}"
    );
    assert_eq!(seen, (1..=7).collect::<Vec<u64>>());
}
