//! The `incidentd` command line: `serve` (the default) runs the service; `replay` and `verify`
//! work on a stopped service's data directory.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use incidentd::api::limits::RateLimit;
use incidentd::audit;
use incidentd::engine::{Engine, EngineError, EngineOptions};
use incidentd::server::{self, ServeConfig};
use incidentd::store::{StoreError, StoreOptions};
use serde::Deserialize;

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
    /// Manage integrations from the command line.
    Integration {
        #[command(subcommand)]
        action: IntegrationAction,
    },
}

#[derive(Subcommand)]
enum IntegrationAction {
    /// Create an integration and print its webhook URL (shown only this once). Works on a
    /// stopped service's data directory; while the service runs, prints the request to send it.
    Create(CreateIntegrationArgs),
}

#[derive(Args)]
struct CreateIntegrationArgs {
    /// A name for people, e.g. the team or the Postman workspace.
    #[arg(long)]
    name: String,
    /// The service's public URL, for the webhook URL printed.
    #[arg(long, env = "INCIDENTD_PUBLIC_URL")]
    public_url: Option<String>,
    /// The service's listen address, for the webhook URL when no public URL is set.
    #[arg(long, env = "INCIDENTD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    offline: OfflineArgs,
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
    /// A TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    /// Flags win over environment variables, which win over the file, which wins over defaults.
    #[arg(long, env = "INCIDENTD_CONFIG")]
    config: Option<PathBuf>,
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

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match &mut cli.command {
        Some(Command::Serve(args)) => {
            let sub = matches.subcommand_matches("serve").expect("serve was given");
            apply_config_file(args, sub)?;
        }
        None => apply_config_file(&mut cli.serve, &matches)?,
        Some(Command::Replay(_) | Command::Verify(_) | Command::Integration { .. }) => {}
    }
    let log_format = match &cli.command {
        Some(Command::Serve(args)) => args.logging.log_format,
        Some(Command::Replay(args) | Command::Verify(args)) => args.logging.log_format,
        Some(Command::Integration { action: IntegrationAction::Create(args) }) => {
            args.offline.logging.log_format
        }
        None => cli.serve.logging.log_format,
    };
    // Log lines are written to stderr by a background thread, so that writing them never holds
    // up an HTTP worker (the access log) or the commit path (incident transitions). Not lossy: a
    // full buffer makes the logging thread wait rather than drop lines. The guard flushes what
    // is buffered when `main` returns. The thread writes every line waiting for it and then
    // flushes, so under load many lines share one write to stderr instead of one write each.
    let (writer, _flush_logs) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer);
    match log_format {
        LogFormat::Human => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Replay(args)) => replay(&args),
        Some(Command::Verify(args)) => verify(&args),
        Some(Command::Integration { action: IntegrationAction::Create(args) }) => {
            create_integration(&args)
        }
        None => serve(cli.serve),
    }
}

fn replay(args: &OfflineArgs) -> anyhow::Result<ExitCode> {
    let report = audit::replay_offline(&args.data_dir, &args.store_options())
        .with_context(|| format!("replaying {}", args.data_dir.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn create_integration(args: &CreateIntegrationArgs) -> anyhow::Result<ExitCode> {
    let base = args.public_url.clone().unwrap_or_else(|| match args.listen.parse() {
        Ok(addr) => server::default_public_url(addr),
        Err(_) => format!("http://{}", args.listen),
    });
    let base = base.trim_end_matches('/');
    let options = EngineOptions { store: args.offline.store_options(), ..EngineOptions::default() };
    let engine = match Engine::open(&args.offline.data_dir, options) {
        Ok(engine) => engine,
        Err(EngineError::Storage(StoreError::Locked(_))) => {
            let token_file = args.offline.data_dir.join("admin-token");
            let body = serde_json::json!({ "name": args.name });
            println!("The service is running on this data directory; ask it instead:\n");
            println!(
                "curl -s -X POST {base}/v1/integrations \\\n  -H \"Authorization: Bearer $(cat {})\" \\\n  -H 'Content-Type: application/json' -d '{body}'",
                token_file.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("opening {}", args.offline.data_dir.display()))
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let created = runtime.block_on(engine.create_integration(&args.name))?;
    let output = serde_json::json!({
        "id": created.integration.id,
        "name": created.integration.name,
        "created_at": created.integration.created_at,
        "token": created.token,
        "webhook_url": format!("{base}/v1/hooks/postman/{}", created.token),
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
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

/// The settings a config file may hold. Unknown keys are refused, so a typo fails at start,
/// naming the key, instead of being silently ignored. The admin token is not among them: it is a
/// secret, read from `INCIDENTD_ADMIN_TOKEN` or `<data-dir>/admin-token` only.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    public_url: Option<String>,
    body_limit: Option<usize>,
    cache_mb: Option<u64>,
    rate_limit: Option<f64>,
    rate_burst: Option<f64>,
    deliveries_kept: Option<usize>,
    rotation_grace_s: Option<u32>,
    log_format: Option<LogFormat>,
}

/// Fills in, from `--config`, every setting that neither a flag nor an environment variable gave.
fn apply_config_file(args: &mut ServeArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let Some(path) = &args.config else { return Ok(()) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    let unset =
        |id: &str| matches!(matches.value_source(id), None | Some(ValueSource::DefaultValue));
    macro_rules! fill {
        ($($field:ident),*) => {$(
            if let Some(value) = file.$field {
                if unset(stringify!($field)) {
                    args.$field = value.into();
                }
            }
        )*};
    }
    fill!(data_dir, listen, public_url, body_limit, cache_mb, rate_limit, rate_burst);
    fill!(deliveries_kept, rotation_grace_s);
    if let Some(format) = file.log_format {
        if unset("log_format") {
            args.logging.log_format = format;
        }
    }
    Ok(())
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
        // Installed before the server says it is listening: a SIGTERM sent as soon as it does
        // would otherwise meet the default action and kill the process.
        let signal = shutdown_signal()?;
        let running = server::start(config).await?;
        signal.await;
        tracing::info!("shutting down: finishing in-flight requests");
        running.stop(true).await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Installs the SIGINT and SIGTERM handlers at once and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
