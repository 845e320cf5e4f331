//! Prometheus metrics: what the engine and the API count, and the text exposition of
//! `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::domain::{IncidentStatus, State};

/// Every metric of one engine, in its own registry (so that tests running several engines in one
/// process do not mix their numbers).
pub struct Metrics {
    registry: Registry,
    /// Deliveries by integration id (`unknown` for unknown tokens) and HTTP status.
    pub deliveries: IntCounterVec,
    /// Time from a delivery's arrival to its durable 202.
    pub ingest_seconds: Histogram,
    /// Events made durable by each fsync: the group-commit batch size.
    pub commit_batch_events: Histogram,
    /// Time of each flush + fdatasync.
    pub fsync_seconds: Histogram,
    pub replays: IntCounter,
    pub replay_seconds: Histogram,
    log_head: IntGauge,
    open_incidents: IntGauge,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let latency = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
        let metrics = Metrics {
            registry: Registry::new(),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "incidentd_deliveries_total",
                    "Webhook deliveries by integration and HTTP status.",
                ),
                &["integration", "status"],
            )
            .expect("valid counter"),
            ingest_seconds: histogram(
                "incidentd_ingest_seconds",
                "Time from a delivery's arrival to its durable 202.",
                latency.clone(),
            ),
            commit_batch_events: histogram(
                "incidentd_commit_batch_events",
                "Events made durable by one fsync (group-commit batch size).",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            ),
            fsync_seconds: histogram(
                "incidentd_fsync_seconds",
                "Time of one flush and fdatasync of the log.",
                latency,
            ),
            replays: IntCounter::new("incidentd_replays_total", "Projection replays run.")
                .expect("valid counter"),
            replay_seconds: histogram(
                "incidentd_replay_seconds",
                "Duration of each replay.",
                vec![0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            ),
            log_head: IntGauge::new("incidentd_log_head_seq", "Seq of the last durable event.")
                .expect("valid gauge"),
            open_incidents: IntGauge::new(
                "incidentd_open_incidents",
                "Incidents not yet resolved (open or acknowledged).",
            )
            .expect("valid gauge"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 8] = [
            Box::new(metrics.deliveries.clone()),
            Box::new(metrics.ingest_seconds.clone()),
            Box::new(metrics.commit_batch_events.clone()),
            Box::new(metrics.fsync_seconds.clone()),
            Box::new(metrics.replays.clone()),
            Box::new(metrics.replay_seconds.clone()),
            Box::new(metrics.log_head.clone()),
            Box::new(metrics.open_incidents.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        metrics
    }

    /// The text exposition, with the gauges read from `state` now.
    pub fn render(&self, state: &State) -> String {
        self.log_head.set(i64::try_from(state.applied().0).unwrap_or(i64::MAX));
        let open = state.incidents().filter(|i| i.status != IncidentStatus::Resolved).count();
        self.open_incidents.set(i64::try_from(open).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
