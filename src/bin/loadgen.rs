//! Load generator and data-directory seeder for incidentd's benchmarks (run by `bench/run.sh`).
//!
//! Subcommands:
//! - `http`: sends realistic Postman "Post monitoring results" deliveries (failing and passing runs
//!   over N monitors) to a webhook URL, or the same runs as one-alert POSTs to Alertmanager's
//!   `/api/v2/alerts`, from C keep-alive connections for D seconds or K requests, and reports
//!   requests/s, p50/p90/p99/max latency and errors.
//! - `seed`: writes K events into a fresh data directory through the library's engine (the same
//!   validation, hash chain, group commit and checkpoints as the server), for the replay and
//!   start-up benchmarks, and prints what it wrote and how many bytes that takes on disk.
//! - `get`, `wait`, `integration`, `free-port`: the small HTTP steps the benchmark script needs
//!   (timed GETs, waiting for `/healthz`, creating an integration, picking a free port), so that the
//!   script needs nothing beyond bash, coreutils, sed and awk.
//!
//! The HTTP client is a minimal HTTP/1.1 client over `tokio::net::TcpStream`: one request in flight
//! per connection, connections kept alive. It does far less work per request than a general client,
//! which matters on a 2-core machine where client and server share the CPU.
//!
//! Every network subcommand refuses any target that is not on the loopback interface, and every
//! run is bounded in time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};
use incidentd::domain::{parse_run, IncidentStatus, Seq};
use incidentd::engine::{Engine, EngineOptions};
use incidentd::store::StoreOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
// tokio's `net` and `io-util` features are not named in Cargo.toml; actix-web's dependencies turn
// them on for the whole build. Naming them there would make this binary independent of that.
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest a single request may take before it counts as an I/O error and its connection is
/// dropped. It keeps a stalled server from holding a sender forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long senders may still be busy after the measuring window before the run is declared hung.
/// Requests in flight when the window closes are normally answered within milliseconds; this only
/// bounds the run when the server stops answering altogether.
const GRACE: Duration = Duration::from_secs(35);

/// The longest status line or header line accepted from a server. A longer one means the peer is
/// not the HTTP server we think it is, and reading on would only use memory.
const MAX_LINE: usize = 64 * 1024;

#[derive(Parser)]
#[command(about = "Load generator and data-directory seeder for incidentd's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send Postman monitor runs (or Alertmanager alerts) to a loopback URL and report the rate,
    /// latency percentiles and errors.
    Http(HttpArgs),
    /// Write events into a fresh data directory through the engine, for replay and start-up
    /// benchmarks.
    Seed(SeedArgs),
    /// Time GET requests to a loopback URL (e.g. `/v1/state?at_seq=N`).
    Get(GetArgs),
    /// Poll a loopback URL until it answers 200 (e.g. `/healthz`) and report when it did.
    Wait(WaitArgs),
    /// Create an integration on a loopback incidentd and print its webhook URL.
    Integration(IntegrationArgs),
    /// Print a TCP port that is free on 127.0.0.1 right now.
    FreePort,
}

#[derive(Args)]
struct HttpArgs {
    /// Webhook URL (or any URL) that takes Postman "Post monitoring results" bodies.
    #[arg(long, conflicts_with = "alertmanager", required_unless_present = "alertmanager")]
    url: Option<String>,
    /// Alertmanager's alerts endpoint (e.g. http://127.0.0.1:9093/api/v2/alerts): each request
    /// POSTs one alert whose labels name one of the monitors.
    #[arg(long)]
    alertmanager: Option<String>,
    /// Concurrent senders, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the measuring window in seconds (10 when neither this nor --count is given; with
    /// --count it is the time limit, 600 by default).
    #[arg(long)]
    seconds: Option<f64>,
    /// Stop after this many measured requests.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds of load before the measuring window, not counted, so that connections, caches and
    /// the server's threads are warm when measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Distinct monitors the runs are spread over.
    #[arg(long, default_value_t = 1000)]
    monitors: u64,
    /// Share of runs, in percent, that report failed tests or errors.
    #[arg(long, default_value_t = 20)]
    failing_percent: u32,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Name of the target in the report.
    #[arg(long)]
    label: Option<String>,
    /// Print the report as one JSON object on stdout (and the table on stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SeedArgs {
    /// The data directory to write; it must not exist yet or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// Events in the log when done: one `integration_created` and then monitor runs.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct monitors the runs are spread over.
    #[arg(long, default_value_t = 1000)]
    monitors: u64,
    /// Share of runs, in percent, that report failed tests or errors.
    #[arg(long, default_value_t = 20)]
    failing_percent: u32,
    /// Deliveries handed to the engine at once; more than the engine's batch limit keeps every
    /// batch full.
    #[arg(long, default_value_t = 2048)]
    in_flight: usize,
    /// Storage page cache bound, MiB (as `incidentd --cache-mb`).
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
    /// Threads of the runtime that parses bodies and submits them (the engine's writer has its
    /// own thread).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the summary as one JSON object on stdout (and the table on stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GetArgs {
    /// Loopback URL to GET.
    #[arg(long)]
    url: String,
    /// Requests to time, one after another on one connection.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Environment variable holding a bearer token to send (nothing is sent when it is unset).
    /// Tokens are taken from the environment, never the command line, so that `ps` cannot show
    /// them.
    #[arg(long, default_value = "INCIDENTD_ADMIN_TOKEN")]
    bearer_env: String,
    /// Longest one request may take, in seconds: a time-travel query folds the log up to its seq,
    /// which takes far longer than an ingest request on a large log.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Print the last answer's body on stdout instead of the timings (e.g. to read `/metrics`).
    #[arg(long, conflicts_with = "json")]
    body: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct WaitArgs {
    /// Loopback URL to poll until it answers 200.
    #[arg(long)]
    url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Milliseconds between two attempts.
    #[arg(long, default_value_t = 2)]
    interval_ms: u64,
    /// Stop waiting (and fail) as soon as this process has exited.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Args)]
struct IntegrationArgs {
    /// Base URL of a loopback incidentd, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    server: String,
    /// Name of the integration.
    #[arg(long, default_value = "loadgen")]
    name: String,
    /// Environment variable holding the admin token.
    #[arg(long, default_value = "INCIDENTD_ADMIN_TOKEN")]
    admin_token_env: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Http(args) => runtime(args.threads).and_then(|rt| rt.block_on(http(args))),
        Command::Seed(args) => runtime(args.threads).and_then(|rt| rt.block_on(seed(args))),
        Command::Get(args) => runtime(1).and_then(|rt| rt.block_on(get(args))),
        Command::Wait(args) => runtime(1).and_then(|rt| rt.block_on(wait(args))),
        Command::Integration(args) => runtime(1).and_then(|rt| rt.block_on(integration(args))),
        Command::FreePort => free_port(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, BoxError> {
    if !(1..=64).contains(&threads) {
        return Err("--threads must be between 1 and 64".into());
    }
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?)
}

// ---------------------------------------------------------------------------------------------
// Targets: loopback only.
// ---------------------------------------------------------------------------------------------

/// Where requests go. Only ever a loopback address: the benchmarks measure servers on this
/// machine, and a load generator must not be pointed at anyone else's.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    /// The `Host` header: the authority exactly as the URL gave it.
    host: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            "only http:// URLs on 127.0.0.1, [::1] or localhost are supported".to_owned()
        })?;
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err("URLs with user info are not supported".to_owned());
        }
        let path = match path.split_once('#') {
            Some((before, _)) => before,
            None => path,
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let (host, port) = split_host_port(authority)?;
        let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else if host.eq_ignore_ascii_case("localhost") {
            (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve localhost: {e}"))?
                .collect()
        } else {
            return Err(format!(
                "refusing {host:?}: only 127.0.0.0/8, [::1] and localhost may be targeted"
            ));
        };
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "refusing {host:?}: it is not (only) a loopback address; only 127.0.0.0/8, \
                 [::1] and localhost may be targeted"
            ));
        }
        // IPv4 first: servers here listen on 127.0.0.1 unless told otherwise.
        let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
        Ok(Target { addr, host: authority.to_owned(), path })
    }

    /// The URL for reports and logs, with the secret part of a webhook path hidden: a webhook
    /// token in a benchmark log is still a live credential.
    fn redacted(&self) -> String {
        let path = match self.path.find("/hooks/") {
            Some(i) => {
                let rest = &self.path[i + "/hooks/".len()..];
                let keep = rest.find('/').map_or(0, |j| j + 1);
                format!("{}/hooks/{}[redacted]", &self.path[..i], &rest[..keep])
            }
            None => self.path.clone(),
        };
        format!("http://{}{}", self.host, path)
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
    let bad_port = |p: &str| format!("invalid port {p:?}");
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or("unterminated [ in the URL's host")?;
        let (host, after) = (&rest[..end], &rest[end + 1..]);
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port(p))?,
            None if after.is_empty() => 80,
            None => return Err(format!("unexpected {after:?} after the host")),
        };
        Ok((host, port))
    } else {
        match authority.rsplit_once(':') {
            Some((host, p)) => Ok((host, p.parse().map_err(|_| bad_port(p))?)),
            None => Ok((authority, 80)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client.
// ---------------------------------------------------------------------------------------------

struct Connection {
    io: BufReader<TcpStream>,
}

struct Response {
    status: u16,
    /// Bytes of body received (after de-chunking).
    body_bytes: u64,
    /// The body itself, when asked for.
    body: Option<Vec<u8>>,
    /// The server will close the connection after this response.
    close: bool,
}

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

impl Connection {
    async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        // Each request is written whole in one call and its answer awaited before the next, so
        // Nagle's algorithm could only delay requests.
        stream.set_nodelay(true)?;
        Ok(Connection { io: BufReader::with_capacity(16 * 1024, stream) })
    }

    async fn exchange(&mut self, request: &[u8], keep_body: bool) -> std::io::Result<Response> {
        self.io.get_mut().write_all(request).await?;
        self.read_response(keep_body).await
    }

    async fn read_line(&mut self, line: &mut Vec<u8>) -> std::io::Result<()> {
        line.clear();
        let n = (&mut self.io).take(MAX_LINE as u64 + 1).read_until(b'\n', line).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if n > MAX_LINE || line.last() != Some(&b'\n') {
            return Err(invalid("header line too long or cut off"));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(())
    }

    async fn read_response(&mut self, keep_body: bool) -> std::io::Result<Response> {
        let mut line = Vec::with_capacity(128);
        self.read_line(&mut line).await?;
        // "HTTP/1.1 202 Accepted": the status is the second word.
        let status = line
            .split(|b| *b == b' ')
            .nth(1)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| line.starts_with(b"HTTP/1."))
            .ok_or_else(|| invalid("not an HTTP/1.x status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, line.starts_with(b"HTTP/1.0"));
        loop {
            self.read_line(&mut line).await?;
            if line.is_empty() {
                break;
            }
            let colon =
                line.iter().position(|b| *b == b':').ok_or_else(|| invalid("bad header"))?;
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                let text = std::str::from_utf8(value).map_err(|_| invalid("bad length"))?;
                length = Some(text.parse::<u64>().map_err(|_| invalid("bad length"))?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.to_ascii_lowercase().ends_with(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                if value.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if value.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
        let mut body = keep_body.then(Vec::new);
        let body_bytes = if (100..200).contains(&status) || status == 204 || status == 304 {
            0
        } else if chunked {
            let mut total = 0;
            loop {
                self.read_line(&mut line).await?;
                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                    .ok_or_else(|| invalid("bad chunk size"))?;
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    loop {
                        self.read_line(&mut line).await?;
                        if line.is_empty() {
                            break;
                        }
                    }
                    break total;
                }
                total += self.read_body(size, body.as_mut()).await?;
                self.read_line(&mut line).await?;
            }
        } else if let Some(n) = length {
            self.read_body(n, body.as_mut()).await?
        } else {
            // Neither a length nor chunks: the body runs to the end of the connection.
            close = true;
            self.read_body(u64::MAX, body.as_mut()).await?
        };
        Ok(Response { status, body_bytes, body, close })
    }

    /// Reads `n` bytes of body (or up to the end of the stream when `n` is `u64::MAX`), keeping
    /// them only when `keep` is given, so that large answers cost no memory when only timed.
    async fn read_body(&mut self, n: u64, keep: Option<&mut Vec<u8>>) -> std::io::Result<u64> {
        let mut limited = (&mut self.io).take(n);
        let got = match keep {
            Some(buf) => limited.read_to_end(buf).await? as u64,
            None => tokio::io::copy_buf(&mut limited, &mut tokio::io::sink()).await?,
        };
        if n != u64::MAX && got != n {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(got)
    }
}

fn post_request(target: &Target, body: &[u8], extra_headers: &str, out: &mut Vec<u8>) {
    out.clear();
    write!(
        out,
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: incidentd-loadgen\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        target.path,
        target.host,
        body.len()
    )
    .expect("writing to a Vec cannot fail");
    out.extend_from_slice(body);
}

fn get_request(target: &Target, bearer: Option<&str>) -> Vec<u8> {
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: incidentd-loadgen\r\n\
         Accept: application/json\r\n{auth}\r\n",
        target.path, target.host
    )
    .into_bytes()
}

/// One request on the connection in `slot`, opening one first when there is none. The connection
/// is dropped after an error or when the server said it would close it.
async fn exchange(
    slot: &mut Option<Connection>,
    addr: SocketAddr,
    request: &[u8],
    keep_body: bool,
) -> std::io::Result<Response> {
    if slot.is_none() {
        *slot = Some(Connection::open(addr).await?);
    }
    let conn = slot.as_mut().expect("a connection was just opened");
    let response = conn.exchange(request, keep_body).await;
    if !matches!(&response, Ok(r) if !r.close) {
        *slot = None;
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The workload.
// ---------------------------------------------------------------------------------------------

/// Services the synthetic monitors belong to, so that names vary like a real workspace's.
const SERVICES: [&str; 8] =
    ["Payments", "Checkout", "Search", "Accounts", "Inventory", "Shipping", "Billing", "Auth"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Postman's "Post monitoring results" webhook body.
    Postman,
    /// One alert for Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    monitors: u64,
    failing_percent: u32,
    format: Format,
}

/// One monitor run: which monitor, and what it reported.
struct Run {
    monitor: u64,
    failed_tests: u32,
    errors: u32,
    passed_tests: u32,
    warnings: u32,
    requests: u32,
    total_latency: u64,
}

impl Workload {
    fn validate(&self) -> Result<(), BoxError> {
        if self.monitors == 0 || self.monitors > 100_000_000 {
            return Err("--monitors must be between 1 and 100,000,000".into());
        }
        if self.failing_percent > 100 {
            return Err("--failing-percent must be at most 100".into());
        }
        Ok(())
    }

    /// Draws a run: a monitor uniformly among all of them, failing with the configured chance.
    /// Each run is independent, so an open incident is resolved by the monitor's next passing
    /// run, as with a real monitor that recovers.
    fn draw(&self, rng: &mut impl Rng) -> Run {
        let monitor = rng.gen_range(0..self.monitors);
        let requests = 4 + (monitor % 9) as u32;
        let failing = rng.gen_range(0..100) < self.failing_percent;
        let (failed_tests, errors) = if failing {
            // Mostly failed assertions, sometimes request errors (timeouts, refused connections).
            match rng.gen_range(0..10) {
                0..=5 => (rng.gen_range(1..4), 0),
                6..=8 => (0, rng.gen_range(1..3)),
                _ => (rng.gen_range(1..4), 1),
            }
        } else {
            (0, 0)
        };
        Run {
            monitor,
            failed_tests,
            errors,
            passed_tests: (requests * 2).saturating_sub(failed_tests),
            warnings: u32::from(rng.gen_range(0..10) == 0),
            requests,
            total_latency: rng.gen_range(300..4000) * u64::from(requests) / 4,
        }
    }

    fn write_body(&self, rng: &mut impl Rng, out: &mut Vec<u8>) {
        let run = self.draw(rng);
        match self.format {
            Format::Postman => write_postman(&run, out),
            Format::Alertmanager => write_alert(&run, out),
        }
    }
}

fn monitor_uid(monitor: u64) -> String {
    // Postman's uids are "<user id>-<uuid>"; the monitor number fills the first uuid group.
    format!("24130357-{monitor:08x}-2f8e-4c65-b0d9-6a4e8f21c7d3")
}

/// A Postman "Post monitoring results" body with the fields of the shared samples, compact as
/// Postman sends it (about 470 bytes).
fn write_postman(run: &Run, out: &mut Vec<u8>) {
    let service = SERVICES[(run.monitor % SERVICES.len() as u64) as usize];
    write!(
        out,
        r#"{{"collection_name":"{service} API smoke","collection_uid":"24130357-8f1d5a52-6c1e-4f1b-9a77-{collection:012x}","environment_name":"production","environment_uid":"24130357-3b9c2f0e-7d41-4b8e-a2c5-91e7f3d6b4a8","metrics":{{"errors":{errors},"warnings":{warnings},"failedTests":{failed},"passedTests":{passed},"requestCount":{requests},"totalLatency":{latency}}},"monitor_name":"{service} API {monitor} every 5 min","monitor_uid":"{uid}","user_id":"24130357","user_name":"{team}-team"}}"#,
        collection = run.monitor / 4,
        errors = run.errors,
        warnings = run.warnings,
        failed = run.failed_tests,
        passed = run.passed_tests,
        requests = run.requests,
        latency = run.total_latency,
        monitor = run.monitor,
        uid = monitor_uid(run.monitor),
        team = service.to_ascii_lowercase(),
    )
    .expect("writing to a Vec cannot fail");
}

/// The same run as one Alertmanager alert. The labels identify the monitor only, so that all runs
/// of one monitor are one alert, as a Prometheus rule over Postman's results would produce; a
/// failing run (re)fires it, a passing run resolves it by setting `endsAt` to now.
fn write_alert(run: &Run, out: &mut Vec<u8>) {
    let service = SERVICES[(run.monitor % SERVICES.len() as u64) as usize];
    let now = Utc::now();
    let failing = run.failed_tests > 0 || run.errors > 0;
    let starts = if failing { now } else { now - chrono::Duration::minutes(5) };
    let ends = if failing {
        String::new()
    } else {
        format!(r#","endsAt":"{}""#, now.to_rfc3339_opts(SecondsFormat::Millis, true))
    };
    write!(
        out,
        r#"[{{"labels":{{"alertname":"PostmanMonitorFailing","monitor_uid":"{uid}","monitor_name":"{service} API {monitor} every 5 min","collection_name":"{service} API smoke","environment":"production","team":"{team}-team","severity":"page"}},"annotations":{{"summary":"{failed} failed tests and {errors} errors in {requests} requests","total_latency_ms":"{latency}"}},"startsAt":"{starts}"{ends}}}]"#,
        uid = monitor_uid(run.monitor),
        monitor = run.monitor,
        team = service.to_ascii_lowercase(),
        failed = run.failed_tests,
        errors = run.errors,
        requests = run.requests,
        latency = run.total_latency,
        starts = starts.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
    .expect("writing to a Vec cannot fail");
}

// ---------------------------------------------------------------------------------------------
// `http`
// ---------------------------------------------------------------------------------------------

/// When senders start and stop measuring.
struct Plan {
    warmup_end: Instant,
    deadline: Instant,
    count: Option<u64>,
    /// Measured requests started so far (for `--count`).
    issued: AtomicU64,
}

/// What one sender saw in the measuring window.
#[derive(Default)]
struct Tally {
    /// Latency of every 2xx answer, in microseconds.
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    io_errors: u64,
    /// 2xx answers during the warm-up, so that CPU time over the whole run can be divided by
    /// every request it served.
    warmup_ok: u64,
}

async fn sender(id: u64, target: Arc<Target>, workload: Workload, plan: Arc<Plan>) -> Tally {
    // A fixed seed per sender: two runs send the same bodies and differ only in timing.
    let mut rng = StdRng::seed_from_u64(0x1d_c1de_7000 + id);
    let mut conn = None;
    let (mut body, mut request) = (Vec::with_capacity(1024), Vec::with_capacity(1536));
    let mut tally = Tally::default();
    loop {
        let now = Instant::now();
        if now >= plan.deadline {
            break;
        }
        let measured = now >= plan.warmup_end;
        if measured {
            if let Some(count) = plan.count {
                if plan.issued.fetch_add(1, Ordering::Relaxed) >= count {
                    break;
                }
            }
        }
        // The body is built before the clock starts, as a real sender has it ready.
        body.clear();
        workload.write_body(&mut rng, &mut body);
        post_request(&target, &body, "", &mut request);
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            REQUEST_TIMEOUT,
            exchange(&mut conn, target.addr, &request, false),
        )
        .await;
        let elapsed_us = started.elapsed().as_micros() as u64;
        match outcome {
            Ok(Ok(response)) => {
                if measured {
                    *tally.statuses.entry(response.status).or_default() += 1;
                    if (200..300).contains(&response.status) {
                        tally.latencies_us.push(elapsed_us);
                    }
                } else if (200..300).contains(&response.status) {
                    tally.warmup_ok += 1;
                }
            }
            Ok(Err(_)) | Err(_) => {
                // A timed-out exchange may have left the connection mid-response.
                conn = None;
                if measured {
                    tally.io_errors += 1;
                }
                // A server that refuses connections must not turn the sender into a busy loop.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    tally
}

/// Nearest-rank percentile of sorted samples, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

fn json_number(x: f64) -> serde_json::Value {
    // NaN (no samples) has no JSON form; null says "not measured".
    serde_json::Number::from_f64((x * 1000.0).round() / 1000.0)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

async fn http(args: HttpArgs) -> Result<(), BoxError> {
    let (url, format) = match (&args.url, &args.alertmanager) {
        (Some(url), None) => (url, Format::Postman),
        (None, Some(url)) => (url, Format::Alertmanager),
        _ => return Err("give exactly one of --url and --alertmanager".into()),
    };
    let workload =
        Workload { monitors: args.monitors, failing_percent: args.failing_percent, format };
    workload.validate()?;
    if !(1..=4096).contains(&args.concurrency) {
        return Err("--concurrency must be between 1 and 4096".into());
    }
    let seconds = match (args.seconds, args.count) {
        (Some(s), _) => s,
        (None, Some(_)) => 600.0,
        (None, None) => 10.0,
    };
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err("--seconds must be more than 0 and at most 3600".into());
    }
    if !(0.0..=600.0).contains(&args.warmup) {
        return Err("--warmup must be between 0 and 600 seconds".into());
    }
    if args.count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    let target = Arc::new(Target::parse(url)?);
    // Fail fast, with a clear message, when nothing listens there.
    Connection::open(target.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.redacted()))?;

    let cpu_before = process_cpu_seconds();
    let start = Instant::now();
    let warmup_end = start + Duration::from_secs_f64(args.warmup);
    let plan = Arc::new(Plan {
        warmup_end,
        deadline: warmup_end + Duration::from_secs_f64(seconds),
        count: args.count,
        issued: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..args.concurrency as u64)
        .map(|id| tokio::spawn(sender(id, target.clone(), workload, plan.clone())))
        .collect();
    let all = async {
        let mut tallies = Vec::with_capacity(tasks.len());
        for task in tasks {
            tallies.push(task.await);
        }
        tallies
    };
    let limit = tokio::time::Instant::from_std(plan.deadline + GRACE);
    let tallies = tokio::time::timeout_at(limit, all).await.map_err(|_| {
        format!("senders were still busy {} s after the measuring window", GRACE.as_secs())
    })?;
    let measured = Instant::now().saturating_duration_since(warmup_end);
    let client_cpu = match (cpu_before, process_cpu_seconds()) {
        (Some(before), Some(after)) => after - before,
        _ => f64::NAN,
    };

    let mut total = Tally::default();
    for tally in tallies {
        let tally = tally?;
        total.latencies_us.extend(tally.latencies_us);
        total.io_errors += tally.io_errors;
        total.warmup_ok += tally.warmup_ok;
        for (status, n) in tally.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
    }
    total.latencies_us.sort_unstable();
    let ok = total.latencies_us.len() as u64;
    let responses: u64 = total.statuses.values().sum();
    let non_2xx = responses - ok;
    let rate = ok as f64 / measured.as_secs_f64();
    let label = args.label.clone().unwrap_or_else(|| match format {
        Format::Postman => "webhook".to_owned(),
        Format::Alertmanager => "alertmanager".to_owned(),
    });
    let p = |q| percentile_ms(&total.latencies_us, q);
    // The load generator's own CPU per request: on a small machine it competes with the server
    // for the same cores, so it is reported next to the figures it may have lowered.
    let client_us = client_cpu * 1e6 / (ok + total.warmup_ok).max(1) as f64;

    let mut table = String::new();
    let statuses: Vec<String> = total.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    table += &format!(
        "{label}: {} ({}), {} senders, {} monitors, {}% failing, warm-up {:.1} s, measured {:.2} s\n",
        target.redacted(),
        match format {
            Format::Postman => "Postman runs",
            Format::Alertmanager => "one alert per request",
        },
        args.concurrency,
        args.monitors,
        args.failing_percent,
        args.warmup,
        measured.as_secs_f64(),
    );
    table += "| target | requests | 2xx | non-2xx | I/O errors | 2xx per s | p50 ms | p90 ms | p99 ms | max ms |\n";
    table += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    table += &format!(
        "| {label} | {} | {ok} | {non_2xx} | {} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        responses + total.io_errors,
        total.io_errors,
        p(0.50),
        p(0.90),
        p(0.99),
        p(1.0),
    );
    table += &format!(
        "statuses: {}; load generator CPU {client_cpu:.2} s ({client_us:.0} us per 2xx)\n",
        if statuses.is_empty() { "none".into() } else { statuses.join(", ") }
    );

    if args.json {
        eprint!("{table}");
        let report = serde_json::json!({
            "label": label,
            "target": target.redacted(),
            "format": match format { Format::Postman => "postman", Format::Alertmanager => "alertmanager" },
            "concurrency": args.concurrency,
            "monitors": args.monitors,
            "failing_percent": args.failing_percent,
            "warmup_s": args.warmup,
            "measured_s": json_number(measured.as_secs_f64()),
            "requests": responses + total.io_errors,
            "ok": ok,
            "non_2xx": non_2xx,
            "io_errors": total.io_errors,
            "errors": non_2xx + total.io_errors,
            "requests_per_s": json_number(rate),
            "p50_ms": json_number(p(0.50)),
            "p90_ms": json_number(p(0.90)),
            "p99_ms": json_number(p(0.99)),
            "max_ms": json_number(p(1.0)),
            "warmup_ok": total.warmup_ok,
            "client_cpu_s": json_number(client_cpu),
            "client_cpu_us_per_request": json_number(client_us),
            "statuses": total.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        });
        println!("{report}");
    } else {
        print!("{table}");
    }
    Ok(())
}

/// CPU time (user and system, all threads) this process has used so far, from
/// `/proc/self/stat`; `None` where that file cannot be read.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    // utime and stime are fields 14 and 15 of the file, the 12th and 13th after the name.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // Linux reports these in USER_HZ ticks: 100 per second on x86-64 and arm64.
    Some((utime + stime) / 100.0)
}

// ---------------------------------------------------------------------------------------------
// `seed`
// ---------------------------------------------------------------------------------------------

/// Bytes the files under `dir` take: their apparent length and the blocks allocated to them.
fn disk_usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, b) = disk_usage(&entry.path())?;
            apparent += a;
            allocated += b;
        } else {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((apparent, allocated))
}

async fn seed(args: SeedArgs) -> Result<(), BoxError> {
    let workload = Workload {
        monitors: args.monitors,
        failing_percent: args.failing_percent,
        format: Format::Postman,
    };
    workload.validate()?;
    if !(2..=100_000_000).contains(&args.events) {
        return Err("--events must be between 2 and 100,000,000".into());
    }
    if !(1..=65_536).contains(&args.in_flight) {
        return Err("--in-flight must be between 1 and 65,536".into());
    }
    // Seeding into a directory that holds anything could mix benchmark events into real data.
    if args.data_dir.exists() && std::fs::read_dir(&args.data_dir)?.next().is_some() {
        return Err(format!(
            "{} is not empty; seed needs a fresh directory",
            args.data_dir.display()
        )
        .into());
    }
    let options = EngineOptions {
        store: StoreOptions { cache_capacity: args.cache_mb * 1024 * 1024 },
        ..EngineOptions::default()
    };
    let dir = args.data_dir.clone();
    // Opening the store does blocking I/O; keep it off the async workers.
    let engine = Arc::new(tokio::task::spawn_blocking(move || Engine::open(&dir, options)).await??);
    let token: Arc<str> = engine.create_integration("loadgen seed").await?.token.into();

    let runs = args.events - 1;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.in_flight as u64)
        .map(|id| {
            let (engine, token, next) = (engine.clone(), token.clone(), next.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(0x5eed_0000 + id);
                let mut body = Vec::with_capacity(1024);
                while next.fetch_add(1, Ordering::Relaxed) < runs {
                    body.clear();
                    workload.write_body(&mut rng, &mut body);
                    // The same edge validation as the webhook handler, then the same write path.
                    let run = parse_run(&body).map_err(|e| e.to_string())?;
                    engine.ingest(&token, run, None).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let progress = {
        let (engine, done) = (engine.clone(), done.clone());
        tokio::spawn(async move {
            // Progress on stderr, so that a long seed visibly moves.
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let n = engine.stats().events_appended;
                eprintln!(
                    "seed: {n} of {runs} runs after {:.0} s ({:.0}/s)",
                    started.elapsed().as_secs_f64(),
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    for task in tasks {
        task.await?.map_err(|e| format!("ingest failed: {e}"))?;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    progress.abort();
    let _ = progress.await;

    let stats = engine.stats();
    let (head, monitors, incidents, unresolved) = {
        let state = engine.state();
        (
            state.applied().0,
            state.monitors().count(),
            state.incidents().count(),
            state.incidents().filter(|i| i.status != IncidentStatus::Resolved).count(),
        )
    };
    // The mean stored size of an event, from about 1,000 events spread over the log, so that the
    // disk's bytes per event can be read against the bytes each event really holds.
    let sampler = engine.clone();
    let event_bytes = tokio::task::spawn_blocking(move || -> Result<f64, String> {
        let step = (head / 1000).max(1) as usize;
        let (mut n, mut bytes) = (0u64, 0u64);
        for seq in (1..=head).step_by(step) {
            let event = sampler.event(Seq(seq)).map_err(|e| e.to_string())?;
            if let Some(event) = event {
                bytes += event.encode().len() as u64;
                n += 1;
            }
        }
        Ok(bytes as f64 / n.max(1) as f64)
    })
    .await??;
    // Shutting down checkpoints the projections, as a stopped server leaves them; dropping the
    // engine closes sled, which writes out its buffers, before the files are measured.
    let engine = Arc::try_unwrap(engine).map_err(|_| "the engine is still shared")?;
    tokio::task::spawn_blocking(move || {
        engine.shutdown();
        drop(engine);
    })
    .await?;
    let (apparent, allocated) = disk_usage(&args.data_dir)?;

    let rate = stats.events_appended as f64 / elapsed.as_secs_f64();
    let per_sync = stats.events_appended as f64 / stats.syncs.max(1) as f64;
    let table = format!(
        "| events | runs | monitors | incidents | unresolved | seconds | runs/s | events/sync | \
         bytes on disk | allocated | bytes/event | stored bytes of an event |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {head} | {runs} | {monitors} | {incidents} | {unresolved} | {:.1} | {rate:.0} | \
         {per_sync:.1} | {apparent} | {allocated} | {:.0} | {event_bytes:.0} |\n",
        elapsed.as_secs_f64(),
        apparent as f64 / head as f64,
    );
    if args.json {
        eprint!("{table}");
        let report = serde_json::json!({
            "events": head,
            "runs": runs,
            "monitors": monitors,
            "incidents": incidents,
            "unresolved_incidents": unresolved,
            "seconds": json_number(elapsed.as_secs_f64()),
            "runs_per_s": json_number(rate),
            "syncs": stats.syncs,
            "events_per_sync": json_number(per_sync),
            "bytes_on_disk": apparent,
            "bytes_allocated": allocated,
            "bytes_per_event": json_number(apparent as f64 / head as f64),
            "event_bytes": json_number(event_bytes),
        });
        println!("{report}");
    } else {
        print!("{table}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers for the benchmark script.
// ---------------------------------------------------------------------------------------------

fn bearer_from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

async fn get(args: GetArgs) -> Result<(), BoxError> {
    if !(1..=1000).contains(&args.repeat) {
        return Err("--repeat must be between 1 and 1000".into());
    }
    if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
        return Err("--timeout must be more than 0 and at most 3600 seconds".into());
    }
    let limit = Duration::from_secs_f64(args.timeout);
    let target = Target::parse(&args.url)?;
    let request = get_request(&target, bearer_from_env(&args.bearer_env).as_deref());
    let mut conn = None;
    let (mut times_ms, mut last, mut body) = (Vec::new(), (0, 0), None);
    for _ in 0..args.repeat {
        let started = Instant::now();
        let response =
            tokio::time::timeout(limit, exchange(&mut conn, target.addr, &request, args.body))
                .await
                .map_err(|_| format!("no answer within {} s", args.timeout))??;
        times_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if !(200..300).contains(&response.status) {
            return Err(format!("{} answered {}", target.redacted(), response.status).into());
        }
        last = (response.status, response.body_bytes);
        body = response.body;
    }
    if args.body {
        std::io::stdout().write_all(&body.unwrap_or_default())?;
        return Ok(());
    }
    let mut sorted = times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[(sorted.len() - 1) / 2];
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    if args.json {
        let report = serde_json::json!({
            "target": target.redacted(),
            "status": last.0,
            "bytes": last.1,
            "ms": times_ms.iter().map(|t| json_number(*t)).collect::<Vec<_>>(),
            "min_ms": json_number(min),
            "median_ms": json_number(median),
            "max_ms": json_number(max),
        });
        println!("{report}");
    } else {
        let all: Vec<String> = times_ms.iter().map(|t| format!("{t:.1}")).collect();
        println!(
            "GET {}: {} ({} bytes); ms: {} (min {min:.1}, median {median:.1}, max {max:.1})",
            target.redacted(),
            last.0,
            last.1,
            all.join(", ")
        );
    }
    Ok(())
}

async fn wait(args: WaitArgs) -> Result<(), BoxError> {
    if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
        return Err("--timeout must be more than 0 and at most 3600 seconds".into());
    }
    let target = Target::parse(&args.url)?;
    let request = get_request(&target, None);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let interval = Duration::from_millis(args.interval_ms.clamp(1, 1000));
    loop {
        // A fresh connection per attempt: the server may not be listening yet.
        let mut conn = None;
        let attempt =
            tokio::time::timeout(interval * 50, exchange(&mut conn, target.addr, &request, false))
                .await;
        if let Ok(Ok(response)) = attempt {
            if response.status == 200 {
                let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
                println!(
                    "{}",
                    serde_json::json!({
                        "healthy_after_ms": json_number(started.elapsed().as_secs_f64() * 1000.0),
                        "healthy_at_unix_ns": at.to_string(),
                    })
                );
                return Ok(());
            }
        }
        if let Some(pid) = args.pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(format!(
                    "process {pid} exited before {} answered 200",
                    target.redacted()
                )
                .into());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not answer 200 within {} s",
                target.redacted(),
                args.timeout
            )
            .into());
        }
        tokio::time::sleep(interval).await;
    }
}

async fn integration(args: IntegrationArgs) -> Result<(), BoxError> {
    let base = Target::parse(args.server.trim_end_matches('/'))?;
    let target =
        Target { path: format!("{}/v1/integrations", base.path.trim_end_matches('/')), ..base };
    let token = bearer_from_env(&args.admin_token_env)
        .ok_or_else(|| format!("{} is not set", args.admin_token_env))?;
    let body = serde_json::to_vec(&serde_json::json!({ "name": args.name }))?;
    let mut request = Vec::new();
    post_request(&target, &body, &format!("Authorization: Bearer {token}\r\n"), &mut request);
    let mut conn = None;
    let response =
        tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, target.addr, &request, true))
            .await
            .map_err(|_| "no answer to the integration request")??;
    let body = response.body.unwrap_or_default();
    if response.status != 201 {
        return Err(format!(
            "creating the integration answered {}: {}",
            response.status,
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let url = created["webhook_url"].as_str().ok_or("the answer has no webhook_url")?;
    // The URL comes from the server's public URL setting; check it before anyone sends load to it.
    Target::parse(url)?;
    println!("{url}");
    Ok(())
}

fn free_port() -> Result<(), BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in [
            "http://127.0.0.1:8080/v1/hooks/postman/whk_x",
            "http://127.1.2.3/",
            "http://[::1]:9093/api/v2/alerts",
            "http://localhost:1",
        ] {
            assert!(Target::parse(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.1:8080/",
            "http://192.168.1.1/",
            "http://example.com/",
            "http://0.0.0.0:8080/",
            "https://127.0.0.1/",
            "http://user@127.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(Target::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn webhook_tokens_are_redacted() {
        let t = Target::parse("http://127.0.0.1:8080/v1/hooks/postman/whk_secret").unwrap();
        assert_eq!(t.redacted(), "http://127.0.0.1:8080/v1/hooks/postman/[redacted]");
        assert!(!t.redacted().contains("secret"));
    }

    #[test]
    fn postman_bodies_parse_and_mix_verdicts() {
        let workload = Workload { monitors: 1000, failing_percent: 20, format: Format::Postman };
        let mut rng = StdRng::seed_from_u64(1);
        let mut failing = 0;
        for _ in 0..1000 {
            let mut body = Vec::new();
            workload.write_body(&mut rng, &mut body);
            let run = parse_run(&body).expect("a generated body is a valid Postman payload");
            if run.report.metrics.failed_tests > 0 || run.report.metrics.errors > 0 {
                failing += 1;
            }
        }
        assert!((120..280).contains(&failing), "{failing} of 1000 failing");
    }

    #[test]
    fn alerts_are_json_arrays_of_one_alert() {
        let workload = Workload { monitors: 10, failing_percent: 50, format: Format::Alertmanager };
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..100 {
            let mut body = Vec::new();
            workload.write_body(&mut rng, &mut body);
            let alerts: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(alerts.as_array().unwrap().len(), 1);
            assert!(alerts[0]["labels"]["monitor_uid"].is_string());
        }
    }
}
