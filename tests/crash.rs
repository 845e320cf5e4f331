//! Crash safety of the real binary: SIGKILL in the middle of concurrent deliveries, restart, and
//! every delivery that got a 202 is in the log, the chain verifies, and a replay is identical.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::run;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_incidentd");
const ADMIN: &str = "adm_crash-test-token";

/// Starts the binary on a free port and returns it with its base URL, read from its log.
/// The server process; killed when dropped, so that a failed assertion leaves nothing running.
struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("INCIDENTD_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the binary logs before exiting").unwrap();
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
    };
    // Keep draining the log so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (Server(child), base)
}

async fn create_integration(client: &reqwest::Client, base: &str, name: &str) -> Value {
    let url = format!("{base}/v1/integrations");
    let response = client.post(url).bearer_auth(ADMIN).json(&serde_json::json!({ "name": name }));
    response.send().await.unwrap().json().await.unwrap()
}

async fn admin_json(client: &reqwest::Client, method: Method, url: &str) -> Value {
    client.request(method, url).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap()
}

/// Every acknowledged (seq, event id) is in the restarted server's log, which verifies.
async fn assert_kept(
    client: &reqwest::Client,
    base: &str,
    acknowledged: &[(u64, String)],
    when: &str,
) {
    let events = all_events(client, base).await;
    for (seq, event_id) in acknowledged {
        let stored =
            events.get(seq).unwrap_or_else(|| panic!("{when}: acknowledged event {seq} is lost"));
        assert_eq!(stored["event_id"].as_str(), Some(event_id.as_str()), "{when}: event {seq}");
    }
    let verified = admin_json(client, Method::GET, &format!("{base}/v1/audit/verify")).await;
    assert_eq!(verified["ok"], true, "{when}: {verified}");
    assert_eq!(verified["head_seq"].as_u64(), events.keys().last().copied(), "{when}");
}

async fn all_events(client: &reqwest::Client, base: &str) -> BTreeMap<u64, Value> {
    let mut events = BTreeMap::new();
    let mut after = 0;
    loop {
        let page: Value = client
            .get(format!("{base}/v1/events?after={after}&limit=1000"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for event in page["events"].as_array().unwrap() {
            events.insert(event["seq"].as_u64().unwrap(), event.clone());
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return events,
        }
    }
}

/// 16 senders deliver to `url` until the server stops answering; once 150 deliveries were
/// acknowledged, `stop` is called while the others are still in flight. Returns the (seq, event
/// id) of every acknowledged delivery.
async fn load_until_stopped(
    client: &reqwest::Client,
    url: &str,
    round: usize,
    stop: impl FnOnce(),
) -> Vec<(u64, String)> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let senders: Vec<_> = (0..16)
        .map(|sender| {
            let (client, url, accepted, enough) =
                (client.clone(), url.to_owned(), accepted.clone(), enough.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0u32.. {
                    let body = run(&format!("r{round}-s{sender}"), n % 2, 0).to_string();
                    let Ok(response) = client.post(&url).body(body).send().await else { break };
                    if response.status() != 202 {
                        break;
                    }
                    let Ok(receipt) = response.json::<Value>().await else { break };
                    let seq = receipt["seq"].as_u64().unwrap();
                    mine.push((seq, receipt["event_id"].as_str().unwrap().to_owned()));
                    if accepted.fetch_add(1, Ordering::SeqCst) + 1 == 150 {
                        enough.notify_one();
                    }
                }
                mine
            })
        })
        .collect();
    enough.notified().await;
    stop();
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    acknowledged
}

/// SIGTERM under load: the server stops accepting, finishes what is in flight, checkpoints and
/// exits 0; everything it acknowledged is in the log after a restart, and nothing is half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut child, base) = start(dir.path());
    let created = create_integration(&client, &base, "graceful").await;
    let url = created["webhook_url"].as_str().unwrap().to_owned();
    let mut status = None;
    let acknowledged = load_until_stopped(&client, &url, 0, || {
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        status = Some(child.wait().unwrap());
    })
    .await;
    assert!(status.unwrap().success(), "SIGTERM exits 0: {status:?}");

    let (mut child, base) = start(dir.path());
    assert_kept(&client, &base, &acknowledged, "after SIGTERM").await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    let mut webhook_token: Option<String> = None;

    for round in 0..3usize {
        let (mut child, base) = start(dir.path());
        if webhook_token.is_none() {
            let created = create_integration(&client, &base, "crash").await;
            webhook_token = Some(created["token"].as_str().unwrap().to_owned());
        }
        let url = format!("{base}/v1/hooks/postman/{}", webhook_token.as_ref().unwrap());

        let acked = load_until_stopped(&client, &url, round, || {
            child.kill().unwrap(); // SIGKILL: no shutdown, no checkpoint, no flush.
            child.wait().unwrap();
        })
        .await;
        acknowledged.extend(acked);

        let (mut child, base) = start(dir.path());
        assert_kept(&client, &base, &acknowledged, &format!("round {round}")).await;
        let replay = admin_json(&client, Method::POST, &format!("{base}/v1/replay")).await;
        assert_eq!(replay["identical"], true, "round {round}: {replay}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(acknowledged.len() >= 3 * 150);
}
