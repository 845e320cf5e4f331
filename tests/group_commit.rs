//! Group commit as a regression guard that counts, not times: many concurrent appends must share
//! few fsyncs, get gap-free seqs, and all be durable once answered.

mod common;

use std::collections::BTreeSet;

use common::{run, TestServer};
use incidentd::domain::{parse_run, Seq};
use incidentd::engine::{Engine, EngineOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    let token = engine.create_integration("group commit").await.unwrap().token;
    let before = engine.stats();

    // join_all polls every future once before any of them waits, so all commands are queued
    // while the writer is still busy with the first batch.
    const N: usize = 1000;
    let ingests = (0..N).map(|n| {
        let body = run(&format!("monitor-{}", n % 50), (n % 3) as u32, 0).to_string();
        let engine = &engine;
        let token = &token;
        async move {
            engine
                .ingest(token, parse_run(body.as_bytes()).unwrap(), None)
                .await
                .unwrap()
        }
    });
    let receipts = futures_util::future::join_all(ingests).await;

    let seqs: BTreeSet<u64> = receipts.iter().map(|r| r.seq.0).collect();
    assert_eq!(seqs.len(), N, "every append got its own seq");
    assert_eq!(
        (*seqs.first().unwrap(), *seqs.last().unwrap()),
        (2, N as u64 + 1),
        "seqs are gap-free"
    );

    let after = engine.stats();
    let appended = after.events_appended - before.events_appended;
    let syncs = after.syncs - before.syncs;
    assert_eq!(appended, N as u64);
    assert!(
        syncs * 10 <= appended,
        "{appended} appends took {syncs} fsyncs: group commit is not batching"
    );
    drop(engine);

    // Everything answered is in the log after a reopen.
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    assert_eq!(engine.state().applied(), Seq(N as u64 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_http_senders_get_gap_free_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let created = server.create_integration("senders").await;
    let url = created["webhook_url"].as_str().unwrap().to_owned();

    let senders = (0..64).map(|sender| {
        let server = &server;
        let url = &url;
        async move {
            let mut seqs = Vec::new();
            for n in 0..10 {
                let receipt = server.deliver_run(url, &run(&format!("m-{sender}"), n % 2, 0)).await;
                seqs.push(receipt["seq"].as_u64().unwrap());
            }
            seqs
        }
    });
    let seqs: BTreeSet<u64> =
        futures_util::future::join_all(senders).await.into_iter().flatten().collect();
    assert_eq!(seqs, (2..=641).collect(), "640 deliveries, seqs 2..=641 without gaps");
    let stats = server.running.engine.stats();
    assert!(stats.syncs < stats.events_appended, "{stats:?}");
    server.stop().await;
}
