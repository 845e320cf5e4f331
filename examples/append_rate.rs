//! Measures durable appends per second at several levels of concurrency, directly on the engine
//! and through the real HTTP server, next to the raw `fdatasync` rate of the same disk.
//!
//! Every accepted delivery in incidentd is durable before it is answered: the single writer
//! appends a batch of events to sled and `fdatasync`s sled's data file once per batch (group
//! commit). This example shows how far that batching carries the append rate beyond the number
//! of `fdatasync` calls the disk can do per second.
//!
//! ```text
//! cargo run --release --example append_rate                       # fsync, engine, http, fsync
//! cargo run --release --example append_rate -- --mode engine --seconds 10 --concurrency 1,4,64
//! ```
//!
//! It only ever talks to 127.0.0.1, writes only under temporary directories, and every
//! measurement stops by itself after `--seconds` (plus a bounded grace period for requests that
//! are still in flight).

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use incidentd::domain::parse_run;
use incidentd::engine::{Engine, EngineOptions, WriterStats};
use incidentd::server::{self, ServeConfig};

type BoxError = Box<dyn Error + Send + Sync>;

/// How long in-flight work may take after the measuring window before the run is declared hung.
/// A bound is needed so that the example always ends, even if the server stops answering.
const GRACE: Duration = Duration::from_secs(30);

/// The admin token the in-process server is started with. It never leaves this process.
const ADMIN_TOKEN: &str = "adm_append-rate-bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The raw baseline: one writer appending 500 bytes and calling `fdatasync`, in a loop.
    Fsync,
    /// Concurrent tasks calling `Engine::ingest` directly.
    Engine,
    /// Concurrent HTTP clients posting to the webhook URL of an in-process server.
    Http,
    /// `engine` and `http`.
    Both,
    /// `fsync`, `engine`, `http` and `fsync` again, so that every figure comes from the same
    /// session and a drift of the disk during the run shows as two different baselines.
    All,
}

/// Durable appends per second, with 1, 16 and 64 concurrent senders by default.
#[derive(Debug, Parser)]
struct Args {
    /// Length of each measurement, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Numbers of concurrent senders to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// Distinct monitors the synthetic Postman runs are spread over.
    #[arg(long, default_value_t = 1000)]
    monitors: u64,
    /// Share of runs, in percent, that report failed tests or errors.
    #[arg(long, default_value_t = 20)]
    failing_percent: u64,
    /// HTTP worker threads of the server; actix's default (one per core) when omitted.
    #[arg(long)]
    http_workers: Option<usize>,
}

/// One line of the result table.
struct Row {
    mode: &'static str,
    senders: usize,
    ok: u64,
    errors: u64,
    elapsed: Duration,
    /// Latency of each successful request, in microseconds, sorted ascending.
    latencies_us: Vec<u64>,
    /// The writer's counters over the measuring window; `None` for the raw fsync baseline.
    writer: Option<WriterStats>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        // Nearest-rank percentile: the smallest sample that at least `p` of all samples do not
        // exceed.
        let rank = ((p * self.latencies_us.len() as f64).ceil() as usize).max(1);
        self.latencies_us[rank - 1] as f64 / 1000.0
    }
}

/// The workload: realistic Postman "Post monitoring results" bodies, spread over many monitors
/// and mixing passing and failing runs so that incidents open, continue and resolve as they
/// would in production.
#[derive(Clone, Copy)]
struct Workload {
    monitors: u64,
    failing_percent: u64,
}

impl Workload {
    /// The body of one run. It has the fields of the samples in the Postman fixtures (about 465
    /// bytes of compact JSON), with the monitor and the verdict picked by `random`.
    fn body(&self, random: u64) -> Vec<u8> {
        let monitor = random % self.monitors;
        let failing = (random >> 32) % 100 < self.failing_percent;
        let (failed_tests, errors, passed_tests) =
            if failing { (1 + random % 3, (random >> 8) % 2, 13) } else { (0, 0, 16) };
        let body = serde_json::json!({
            "collection_name": format!("Bench API smoke {monitor}"),
            "collection_uid": "24130357-8f1d5a52-6c1e-4f1b-9a77-0c2d4b1a9e10",
            "environment_name": "production",
            "environment_uid": "24130357-3b9c2f0e-7d41-4b8e-a2c5-91e7f3d6b4a8",
            "metrics": {
                "errors": errors,
                "warnings": (random >> 16) % 2,
                "failedTests": failed_tests,
                "passedTests": passed_tests,
                "requestCount": 6,
                "totalLatency": 900 + (random >> 20) % 2000,
            },
            "monitor_name": format!("Bench monitor {monitor} every 5 min"),
            "monitor_uid": format!("24130357-{monitor:08x}-2f8e-4c65-b0d9-6a4e8f21c7d3"),
            "user_id": "24130357",
            "user_name": "bench-team",
        });
        serde_json::to_vec(&body).expect("a JSON value serializes")
    }
}

/// splitmix64: a small, deterministic generator, so that two runs send the same sequence of
/// bodies and differ only in timing.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one sender task saw.
#[derive(Default)]
struct SenderResult {
    latencies_us: Vec<u64>,
    errors: u64,
}

/// The writer counters accumulated between two snapshots.
fn stats_delta(before: WriterStats, after: WriterStats) -> WriterStats {
    WriterStats {
        events_appended: after.events_appended - before.events_appended,
        syncs: after.syncs - before.syncs,
    }
}

/// Waits for every sender, but no longer than the grace period after the window, so that a hung
/// server cannot keep the example running.
async fn join_senders(
    tasks: Vec<tokio::task::JoinHandle<SenderResult>>,
    deadline: Instant,
) -> Result<(u64, u64, Vec<u64>), BoxError> {
    let limit = tokio::time::Instant::from_std(deadline + GRACE);
    let all = join_in_order(tasks);
    let results = tokio::time::timeout_at(limit, all).await.map_err(|_| {
        format!("senders were still busy {} s after the measuring window ended", GRACE.as_secs())
    })?;
    let mut ok = 0;
    let mut errors = 0;
    let mut latencies = Vec::new();
    for result in results {
        let result = result?;
        ok += result.latencies_us.len() as u64;
        errors += result.errors;
        latencies.extend(result.latencies_us);
    }
    latencies.sort_unstable();
    Ok((ok, errors, latencies))
}

/// Awaits the handles in order; every task runs concurrently regardless of the order awaited.
async fn join_in_order(
    tasks: Vec<tokio::task::JoinHandle<SenderResult>>,
) -> Vec<Result<SenderResult, tokio::task::JoinError>> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await);
    }
    results
}

/// The baseline: how many `fdatasync`s per second one writer gets from this disk when each one
/// follows an append of 500 bytes. It is the smallest durable write, so an engine that needed one
/// per event could not beat it; a commit of the store costs more (sled's own flush comes first).
async fn run_fsync(seconds: Duration, label: &'static str) -> Result<Row, BoxError> {
    // The blocking loop runs on a blocking thread so that it does not stall the runtime.
    tokio::task::spawn_blocking(move || -> Result<Row, BoxError> {
        let dir = tempfile::tempdir()?;
        let mut file = std::fs::File::create(dir.path().join("fsync-probe"))?;
        let block = [b'x'; 500];
        let mut latencies_us = Vec::new();
        let start = Instant::now();
        let deadline = start + seconds;
        while Instant::now() < deadline {
            let t = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            latencies_us.push(t.elapsed().as_micros() as u64);
        }
        let elapsed = start.elapsed();
        latencies_us.sort_unstable();
        Ok(Row {
            mode: label,
            senders: 1,
            ok: latencies_us.len() as u64,
            errors: 0,
            elapsed,
            latencies_us,
            writer: None,
        })
    })
    .await?
}

/// Concurrent tasks each parse a body and call `Engine::ingest` until the window closes. A fresh
/// engine on a fresh directory per level keeps the levels independent of each other's log size.
async fn run_engine(
    senders: usize,
    seconds: Duration,
    workload: Workload,
) -> Result<Row, BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    // Opening the store does blocking I/O; keep it off the async workers.
    let engine = tokio::task::spawn_blocking(move || Engine::open(&path, EngineOptions::default()))
        .await??;
    let engine = Arc::new(engine);
    let token = Arc::new(engine.create_integration("append-rate bench").await?.token);

    let before = engine.stats();
    let start = Instant::now();
    let deadline = start + seconds;
    let tasks = (0..senders)
        .map(|n| {
            let engine = engine.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut random_state = n as u64;
                let mut result = SenderResult::default();
                while Instant::now() < deadline {
                    // The body is built outside the timed section, as a client would have it
                    // ready; parsing is inside, because the server has to do it per request.
                    let body = workload.body(splitmix64(&mut random_state));
                    let t = Instant::now();
                    let accepted = match parse_run(&body) {
                        Ok(run) => engine.ingest(&token, run, None).await.is_ok(),
                        Err(_) => false,
                    };
                    if accepted {
                        result.latencies_us.push(t.elapsed().as_micros() as u64);
                    } else {
                        result.errors += 1;
                    }
                }
                result
            })
        })
        .collect();
    let (ok, errors, latencies_us) = join_senders(tasks, deadline).await?;
    let elapsed = start.elapsed();
    let writer = stats_delta(before, engine.stats());

    // Joining the writer blocks; keep it off the async runtime.
    tokio::task::spawn_blocking(move || engine.shutdown()).await?;
    drop(dir);
    Ok(Row { mode: "engine", senders, ok, errors, elapsed, latencies_us, writer: Some(writer) })
}

/// The same load through the whole stack: concurrent reqwest clients post to the webhook URL of
/// the real server, started in this process on a loopback port with its own data directory.
async fn run_http(
    senders: usize,
    seconds: Duration,
    workload: Workload,
    http_workers: Option<usize>,
) -> Result<Row, BoxError> {
    let dir = tempfile::tempdir()?;
    let mut config = ServeConfig::new(dir.path(), "127.0.0.1:0");
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    // All senders share one integration, whose delivery rate limit would otherwise answer 429
    // long before the append path is loaded; this example measures the append path.
    config.rate_limit = None;
    config.workers = http_workers;
    let running = server::start(config).await?;
    let base = format!("http://{}", running.addr);

    // No proxy: a proxy configured in the environment must never see these requests, and the
    // measurement is of the server, not of a proxy. Idle connections are kept so that each
    // sender reuses its keep-alive connection, as Postman's delivery workers would.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(senders)
        .timeout(GRACE)
        .build()?;
    let created: serde_json::Value = client
        .post(format!("{base}/v1/integrations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "name": "append-rate bench" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = created["token"].as_str().ok_or("the created integration has no token")?;
    // The webhook URL is rebuilt from the bound address rather than taken from the answer, so
    // that this example can only ever send to 127.0.0.1 whatever public URL the server reports.
    let url = Arc::new(format!("{base}/v1/hooks/postman/{token}"));

    let before = running.engine.stats();
    let start = Instant::now();
    let deadline = start + seconds;
    let tasks = (0..senders)
        .map(|n| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut random_state = n as u64;
                let mut result = SenderResult::default();
                while Instant::now() < deadline {
                    let body = workload.body(splitmix64(&mut random_state));
                    let t = Instant::now();
                    let sent = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    // Only 202 Accepted means the event is durable; the body is read to the end so
                    // that the connection can be reused.
                    let accepted = match sent {
                        Ok(response) => {
                            let status = response.status();
                            response.bytes().await.is_ok()
                                && status == reqwest::StatusCode::ACCEPTED
                        }
                        Err(_) => false,
                    };
                    if accepted {
                        result.latencies_us.push(t.elapsed().as_micros() as u64);
                    } else {
                        result.errors += 1;
                    }
                }
                result
            })
        })
        .collect();
    let (ok, errors, latencies_us) = join_senders(tasks, deadline).await?;
    let elapsed = start.elapsed();
    let writer = stats_delta(before, running.engine.stats());

    drop(client);
    running.stop(true).await;
    drop(dir);
    Ok(Row { mode: "http", senders, ok, errors, elapsed, latencies_us, writer: Some(writer) })
}

/// Prints the rows as a markdown table. `fsync_rate`, when measured in this run, gives each
/// append rate as a multiple of the raw fsync rate: the gain of group commit over one fsync per
/// append.
fn print_table(rows: &[Row], fsync_rate: Option<f64>) {
    println!(
        "| mode | senders | accepted | errors | per s | p50 ms | p99 ms | max ms | \
         syncs | events/sync | x fsync/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (syncs, per_sync) = match row.writer {
            Some(w) if w.syncs > 0 => {
                (w.syncs.to_string(), format!("{:.2}", w.events_appended as f64 / w.syncs as f64))
            }
            Some(w) => (w.syncs.to_string(), "-".to_owned()),
            None => (row.ok.to_string(), "-".to_owned()),
        };
        let gain = match (row.writer, fsync_rate) {
            (Some(_), Some(base)) if base > 0.0 => format!("{:.1}", row.rate() / base),
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            row.mode,
            row.senders,
            row.ok,
            row.errors,
            row.rate(),
            row.percentile_ms(0.50),
            row.percentile_ms(0.99),
            row.percentile_ms(1.0),
            syncs,
            per_sync,
            gain,
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--seconds must be more than 0 and at most 3600".into());
    }
    if args.concurrency.iter().any(|&c| c == 0 || c > 4096) {
        return Err("each --concurrency value must be between 1 and 4096".into());
    }
    if args.monitors == 0 || args.failing_percent > 100 {
        return Err("--monitors must be at least 1 and --failing-percent at most 100".into());
    }
    let seconds = Duration::from_secs_f64(args.seconds);
    let workload = Workload { monitors: args.monitors, failing_percent: args.failing_percent };
    let (fsync, engine, http) = match args.mode {
        Mode::Fsync => (true, false, false),
        Mode::Engine => (false, true, false),
        Mode::Http => (false, false, true),
        Mode::Both => (false, true, true),
        Mode::All => (true, true, true),
    };

    let mut rows = Vec::new();
    if fsync {
        eprintln!("measuring fsync for {:.1} s", args.seconds);
        rows.push(run_fsync(seconds, "fsync").await?);
    }
    if engine {
        for &c in &args.concurrency {
            eprintln!("measuring engine with {c} senders for {:.1} s", args.seconds);
            rows.push(run_engine(c, seconds, workload).await?);
        }
    }
    if http {
        for &c in &args.concurrency {
            eprintln!("measuring http with {c} senders for {:.1} s", args.seconds);
            rows.push(run_http(c, seconds, workload, args.http_workers).await?);
        }
    }
    if args.mode == Mode::All {
        // The disk of a shared machine drifts; a second baseline after the appends shows by how
        // much, and the ratio below uses the mean of the two.
        eprintln!("measuring fsync again for {:.1} s", args.seconds);
        rows.push(run_fsync(seconds, "fsync (again)").await?);
    }
    let baselines: Vec<f64> = rows.iter().filter(|r| r.writer.is_none()).map(Row::rate).collect();
    let fsync_rate =
        (!baselines.is_empty()).then(|| baselines.iter().sum::<f64>() / baselines.len() as f64);
    print_table(&rows, fsync_rate);
    Ok(())
}
