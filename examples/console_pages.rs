//! Measures how long the web console takes to answer its heaviest pages: an incident list of
//! 1,000 incidents on one page, and the monitor page of a monitor with a 10,000-run history.
//!
//! ```text
//! cargo run --release --example console_pages
//! cargo run --release --example console_pages -- --incidents 1000 --runs 10000 --repeat 20
//! ```
//!
//! It starts the real server in-process on 127.0.0.1 over a temporary data directory, seeds it
//! through the engine's own write path (validation, hash chain, group commit), signs in like a
//! browser, and times each page: the server's own time (its `Server-Timing` header), and the time
//! from sending the request to reading the last byte of the answer.

use std::error::Error;
use std::time::{Duration, Instant};

use clap::Parser;
use incidentd::domain::parse_run;
use incidentd::server::{self, ServeConfig};
use serde_json::json;

const ADMIN_TOKEN: &str = "adm_console-pages-bench";

#[derive(Debug, Parser)]
struct Args {
    /// Incidents to open and resolve, one monitor each.
    #[arg(long, default_value_t = 1_000)]
    incidents: usize,
    /// Runs in the long history of one monitor (every tenth fails).
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Requests per page; the table shows their median and maximum.
    #[arg(long, default_value_t = 20)]
    repeat: usize,
}

fn body(uid: &str, failed: u32) -> Vec<u8> {
    json!({
        "collection_name": "Checkout smoke",
        "monitor_name": format!("Monitor {uid}"),
        "monitor_uid": uid,
        "metrics": { "errors": 0, "warnings": 0, "failedTests": failed, "passedTests": 9, "requestCount": 4, "totalLatency": 812 }
    })
    .to_string()
    .into_bytes()
}

/// The console's own time for a page, from its `Server-Timing: page;dur=<ms>` header.
fn server_time(response: &reqwest::Response) -> Option<f64> {
    let value = response.headers().get("server-timing")?.to_str().ok()?;
    value.split(";dur=").nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut config = ServeConfig::new(dir.path(), "127.0.0.1:0");
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    let running = server::start(config).await?;
    let engine = running.engine.clone();
    let token = engine.create_integration("bench").await?.token;

    let started = Instant::now();
    // Each short-lived monitor fails once and recovers: one resolved incident each. They are
    // seeded by 32 concurrent senders, so that group commit batches them as it would live.
    let mut senders = Vec::new();
    for sender in 0..32 {
        let (engine, token) = (engine.clone(), token.clone());
        let count = args.incidents;
        senders.push(tokio::spawn(async move {
            for i in (sender..count).step_by(32) {
                let uid = format!("short-{i:05}");
                for failed in [1, 0] {
                    let run = parse_run(&body(&uid, failed)).expect("the seed body is valid");
                    engine.ingest(&token, run, None).await.expect("the seed run is accepted");
                }
            }
        }));
    }
    // The long history is one monitor's runs in order, from one sender.
    let (long_engine, long_token) = (engine.clone(), token.clone());
    let runs = args.runs;
    senders.push(tokio::spawn(async move {
        for i in 0..runs {
            let run = parse_run(&body("long-history", u32::from(i % 10 == 9))).expect("valid");
            long_engine.ingest(&long_token, run, None).await.expect("the seed run is accepted");
        }
    }));
    for sender in senders {
        sender.await?;
    }
    let events = engine.state().applied().0;
    println!("seeded {events} events in {:.1} s", started.elapsed().as_secs_f64());

    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let signed_in = client
        .post(format!("{base}/console/sign-in"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await?;
    let cookie =
        signed_in.headers()["set-cookie"].to_str()?.split(';').next().unwrap_or("").to_owned();
    let integration = engine.state().integrations().next().map(|i| i.id).ok_or("no integration")?;
    let total_incidents = engine.state().incidents().count();

    let pages = [
        (
            format!("incident list, default page of 50 (of {total_incidents})"),
            "/console/incidents".to_owned(),
        ),
        (
            format!("incident list, one page of 1,000 (of {total_incidents})"),
            "/console/incidents?limit=1000".to_owned(),
        ),
        (
            "incident list, status=resolved, monitor search".to_owned(),
            "/console/incidents?status=resolved&monitor=short-009".to_owned(),
        ),
        (
            format!("monitor page, {runs} runs, range all"),
            format!("/console/monitors/{integration}/long-history?range=all"),
        ),
        (
            format!("monitor page, {runs} runs, last 24 hours"),
            format!("/console/monitors/{integration}/long-history?range=24h"),
        ),
        ("monitors list, first page".to_owned(), "/console/monitors".to_owned()),
        ("audit page".to_owned(), "/console/audit".to_owned()),
    ];
    println!();
    println!("| page | answer bytes | server median ms | median ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (label, path) in pages {
        let mut times = Vec::with_capacity(args.repeat);
        let mut server_ms = Vec::with_capacity(args.repeat);
        let mut bytes = 0;
        for _ in 0..args.repeat {
            let sent = Instant::now();
            let response =
                client.get(format!("{base}{path}")).header("cookie", &cookie).send().await?;
            let status = response.status();
            server_ms
                .push(server_time(&response).ok_or_else(|| format!("{path}: no Server-Timing"))?);
            let body = response.bytes().await?;
            times.push(sent.elapsed());
            if !status.is_success() {
                return Err(format!("{path} answered {status}").into());
            }
            bytes = body.len();
        }
        times.sort();
        server_ms.sort_by(f64::total_cmp);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {label} | {bytes} | {:.1} | {:.1} | {:.1} |",
            server_ms[server_ms.len() / 2],
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    running.stop(true).await;
    Ok(())
}
