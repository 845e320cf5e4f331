//! Wires the engine and the API into a running HTTP server; also where the admin token is found
//! or made.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::api::limits::{Deliveries, RateLimit, RateLimiter};
use crate::api::{self, AppState, AuditRecord};
use crate::engine::{hash_token, new_secret, Engine, EngineError, EngineOptions};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// Address to bind, e.g. `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: String,
    /// Base of the webhook URLs handed out; derived from the bound address when `None`.
    pub public_url: Option<String>,
    /// The admin token; when `None` it is read from (or generated into) `<data-dir>/admin-token`.
    pub admin_token: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Per-integration delivery rate limit; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// Recent deliveries kept per integration for `GET /v1/integrations/{id}/deliveries`.
    pub deliveries_kept: usize,
    /// HTTP worker threads; actix's default (one per core) when `None`.
    pub workers: Option<usize>,
    pub engine: EngineOptions,
}

impl ServeConfig {
    pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

    pub fn new(data_dir: impl Into<PathBuf>, listen: impl Into<String>) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            listen: listen.into(),
            public_url: None,
            admin_token: None,
            body_limit: Self::DEFAULT_BODY_LIMIT,
            rate_limit: Some(RateLimit::default()),
            deliveries_kept: 100,
            workers: None,
            engine: EngineOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the data directory: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot read or create the admin token file {path}: {source}")]
    AdminToken { path: PathBuf, source: std::io::Error },
    #[error("invalid public URL {0:?}: it must start with http:// or https://")]
    PublicUrl(String),
}

/// Where the admin token came from, for the start-up log (which never shows the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
}

/// The admin token: the given one, else the one in `<data-dir>/admin-token`, else a new one
/// written there with mode 0600.
pub fn resolve_admin_token(
    data_dir: &Path,
    given: Option<String>,
) -> Result<(String, AdminTokenSource), StartError> {
    if let Some(token) = given.filter(|t| !t.trim().is_empty()) {
        return Ok((token.trim().to_owned(), AdminTokenSource::Environment));
    }
    let path = data_dir.join("admin-token");
    let err = |source| StartError::AdminToken { path: path.clone(), source };
    std::fs::create_dir_all(data_dir).map_err(err)?;
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            return Ok((token.trim().to_owned(), AdminTokenSource::File(path)))
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = new_secret("adm_");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(err)?;
    file.write_all(format!("{token}\n").as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    Ok((token, AdminTokenSource::Generated(path)))
}

/// A server that is accepting requests.
pub struct Running {
    pub addr: SocketAddr,
    pub public_url: String,
    pub engine: Arc<Engine>,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops the server (letting in-flight requests finish when `graceful`), then the writer,
    /// which checkpoints the projections.
    pub async fn stop(self, graceful: bool) {
        self.handle.stop(graceful).await;
        self.finish().await;
    }

    async fn finish(self) {
        if let Ok(Err(e)) = self.task.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
        let engine = self.engine;
        // Joining the writer blocks; keep it off the async runtime.
        let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    }
}

/// The base URL when none is configured: the bound address, with an unspecified address
/// (`0.0.0.0`, `::`) replaced by loopback.
pub fn default_public_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!("http://{host}:{}", addr.port())
}

/// Opens the data directory and starts serving. Must be called inside a tokio runtime.
pub async fn start(config: ServeConfig) -> Result<Running, StartError> {
    if let Some(url) = &config.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(StartError::PublicUrl(url.clone()));
        }
    }
    let (admin_token, source) = resolve_admin_token(&config.data_dir, config.admin_token.clone())?;
    match &source {
        AdminTokenSource::Environment => {
            tracing::info!("admin token taken from INCIDENTD_ADMIN_TOKEN")
        }
        AdminTokenSource::File(path) => tracing::info!("admin token read from {}", path.display()),
        AdminTokenSource::Generated(path) => {
            tracing::info!("admin token generated and stored in {} (mode 0600)", path.display())
        }
    }
    let data_dir = config.data_dir.clone();
    let options = config.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&data_dir, options))
        .await
        .expect("engine start-up does not panic")?;
    let engine = Arc::new(engine);

    let bind_err = |source| StartError::Bind { addr: config.listen.clone(), source };
    let listener = std::net::TcpListener::bind(&config.listen).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| default_public_url(addr))
        .trim_end_matches('/')
        .to_owned();
    let state = web::Data::new(AppState {
        engine: engine.clone(),
        admin_token_hash: hash_token(&admin_token),
        public_url: public_url.clone(),
        body_limit: config.body_limit,
        rate_limiter: RateLimiter::new(config.rate_limit),
        deliveries: Deliveries::new(config.deliveries_kept),
        audit: AuditRecord::default(),
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(api::access_log))
            .app_data(state.clone())
            .configure(api::configure)
    })
    // Signals are handled by the caller, which also stops the writer after the server.
    .disable_signals();
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    let server = server.listen(listener).map_err(bind_err)?.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!("listening on http://{addr}");
    tracing::info!("webhook URLs start with {public_url}/v1/hooks/postman/");
    Ok(Running { addr, public_url, engine, handle, task })
}
