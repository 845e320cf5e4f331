//! The `incidentd` command line: `serve` (the default) runs the service; `replay` and `verify`
//! work on a stopped service's data directory.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use incidentd::api::limits::RateLimit;
use incidentd::audit;
use incidentd::engine::EngineOptions;
use incidentd::server::{self, ServeConfig};
use incidentd::store::StoreOptions;

#[derive(Parser)]
#[command(version, about = "Event-sourced incident engine for Postman monitor webhooks")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Rebuild every projection from the first event, offline, and say whether the rebuilt
    /// projections equal the stored ones. The service must be stopped.
    Replay(OfflineArgs),
    /// Check the whole log: every event present, unaltered and linked to the one before, and the
    /// projections equal to a refold. Exits 1, naming the first bad seq, if not. The service must
    /// be stopped.
    Verify(OfflineArgs),
}

#[derive(Args)]
struct OfflineArgs {
    /// Directory holding the event log.
    #[arg(long, env = "INCIDENTD_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Upper bound of the storage page cache, in MiB.
    #[arg(long, env = "INCIDENTD_CACHE_MB", default_value_t = 64)]
    cache_mb: u64,
    #[command(flatten)]
    logging: LogArgs,
}

impl OfflineArgs {
    fn store_options(&self) -> StoreOptions {
        StoreOptions { cache_capacity: self.cache_mb * 1024 * 1024 }
    }
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Directory holding the event log, the projections and the admin token.
    #[arg(long, env = "INCIDENTD_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Address and port to listen on; port 0 picks a free one.
    #[arg(long, env = "INCIDENTD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Base URL under which Postman reaches this server, used in the webhook URLs handed out.
    /// Defaults to http://<listen address>.
    #[arg(long, env = "INCIDENTD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "INCIDENTD_BODY_LIMIT", default_value_t = ServeConfig::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Upper bound of the storage page cache, in MiB.
    #[arg(long, env = "INCIDENTD_CACHE_MB", default_value_t = 64)]
    cache_mb: u64,
    /// Deliveries per second sustained per integration before 429; 0 turns the limit off.
    #[arg(long, env = "INCIDENTD_RATE_LIMIT", default_value_t = RateLimit::default().per_second)]
    rate_limit: f64,
    /// Deliveries an integration may send in one burst.
    #[arg(long, env = "INCIDENTD_RATE_BURST", default_value_t = RateLimit::default().burst)]
    rate_burst: f64,
    /// Recent deliveries kept in memory per integration for /v1/integrations/{id}/deliveries.
    #[arg(long, env = "INCIDENTD_DELIVERIES_KEPT", default_value_t = 100)]
    deliveries_kept: usize,
    /// Seconds a rotated-out webhook token keeps working.
    #[arg(long, env = "INCIDENTD_ROTATION_GRACE_S", default_value_t = 86_400)]
    rotation_grace_s: u32,
    #[command(flatten)]
    logging: LogArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Args, Clone)]
struct LogArgs {
    /// Log lines for people (`human`) or for log collectors (`json`, one object per line).
    #[arg(long, env = "INCIDENTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Some(Command::Serve(args)) => args.logging.log_format,
        Some(Command::Replay(args) | Command::Verify(args)) => args.logging.log_format,
        None => cli.serve.logging.log_format,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Human => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Replay(args)) => replay(&args),
        Some(Command::Verify(args)) => verify(&args),
        None => serve(cli.serve),
    }
}

fn replay(args: &OfflineArgs) -> anyhow::Result<ExitCode> {
    let report = audit::replay_offline(&args.data_dir, &args.store_options())
        .with_context(|| format!("replaying {}", args.data_dir.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &OfflineArgs) -> anyhow::Result<ExitCode> {
    let report = audit::verify_offline(&args.data_dir, &args.store_options())
        .with_context(|| format!("verifying {}", args.data_dir.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.log.ok && report.checkpoint_matches != Some(false) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = ServeConfig {
        public_url: args.public_url,
        // Read from the environment only: a token on the command line would show in `ps`.
        admin_token: std::env::var("INCIDENTD_ADMIN_TOKEN").ok(),
        body_limit: args.body_limit,
        rate_limit: (args.rate_limit > 0.0)
            .then_some(RateLimit { per_second: args.rate_limit, burst: args.rate_burst.max(1.0) }),
        deliveries_kept: args.deliveries_kept,
        engine: EngineOptions {
            store: StoreOptions { cache_capacity: args.cache_mb * 1024 * 1024 },
            rotation_grace: chrono::Duration::seconds(i64::from(args.rotation_grace_s)),
            ..EngineOptions::default()
        },
        ..ServeConfig::new(args.data_dir, args.listen)
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let running = server::start(config).await?;
        wait_for_signal().await?;
        tracing::info!("shutting down: finishing in-flight requests");
        running.stop(true).await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
