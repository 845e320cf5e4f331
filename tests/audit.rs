//! Tamper evidence and offline tools: `incidentd verify` catches an altered, missing or reordered
//! event and names the first bad seq; `incidentd replay` rebuilds identical projections.

mod common;

use std::path::Path;
use std::process::Command;

use common::run;
use incidentd::audit;
use incidentd::domain::{parse_run, Seq};
use incidentd::engine::{Engine, EngineOptions};
use incidentd::store::{Store, StoreOptions};
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

/// Edits the sled tree of events directly, as an attacker with disk access would.
fn tamper(dir: &Path, edit: impl FnOnce(&sled::Tree)) {
    let config = sled::Config::new().path(dir.join("log")).segment_size(8 * 1024 * 1024);
    // sled lets go of its lock only once its background threads release the file, a moment after
    // the previous handle is dropped; Store::open waits for it the same way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::yield_now()
            }
            Err(e) => panic!("cannot open the log to tamper with it: {e}"),
        }
    };
    let events = db.open_tree("events").unwrap();
    edit(&events);
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
        let key = Seq(5).to_be_bytes();
        let mut value = events.get(key).unwrap().unwrap().to_vec();
        let middle = value.len() / 2;
        value[middle] ^= 0x01;
        events.insert(key, value).unwrap();
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
        events.remove(Seq(7).to_be_bytes()).unwrap();
    });
    let (ok, report) = cli(&["verify"], &deleted);
    assert!(!ok);
    assert_eq!(report["first_bad_seq"], 7, "{report}");
    assert!(report["error"].as_str().unwrap().contains("missing"), "{report}");

    let swapped = case("swapped");
    tamper(&swapped, |events| {
        let (a, b) = (Seq(3).to_be_bytes(), Seq(4).to_be_bytes());
        let (va, vb) = (events.get(a).unwrap().unwrap(), events.get(b).unwrap().unwrap());
        events.insert(a, vb).unwrap();
        events.insert(b, va).unwrap();
    });
    let (ok, report) = cli(&["verify"], &swapped);
    assert!(!ok);
    assert_eq!(report["first_bad_seq"], 3, "{report}");

    // The last event removed: the chain up to the new head is intact, but the projections checked
    // in the checkpoint still count it, so the offline check still fails.
    let truncated = case("truncated");
    tamper(&truncated, |events| {
        events.remove(Seq(EVENTS).to_be_bytes()).unwrap();
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
            let mut value = original.clone();
            value[position] ^= 0x01;
            events.insert(Seq(6).to_be_bytes(), value).unwrap();
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
