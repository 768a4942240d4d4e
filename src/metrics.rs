//! Prometheus metrics on a separate port (`--metrics-listen`): call counts and latency histograms
//! by service, method and status code, profile and conversation counts, database size and flush
//! latency. Recording goes through the `metrics` facade; rendering is metrics-exporter-prometheus.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{OnceLock, PoisonError, RwLock};

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Seconds buckets for call and flush latency.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The process-wide recorder, once installed (one per process, however many servers a test
/// starts).
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn handle() -> anyhow::Result<&'static PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let h = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| h))
}

/// The call metrics of one service, method and status code.
type CallMetrics = (metrics::Counter, metrics::Histogram);

/// Records one finished call. Without the recorder (no `--metrics-listen` in this process)
/// nothing would count it, so nothing is built; with it, the counter and histogram of each
/// service, method and code are registered once and kept, instead of their labels being made
/// and looked up on every call.
pub fn record_call(service: &'static str, method: &'static str, code: tonic::Code, seconds: f64) {
    if HANDLE.get().is_none() {
        return;
    }
    let (counter, histogram) = call_metrics(service, method, code);
    counter.increment(1);
    histogram.record(seconds);
}

fn call_metrics(service: &'static str, method: &'static str, code: tonic::Code) -> CallMetrics {
    type Known = HashMap<(&'static str, &'static str, tonic::Code), CallMetrics>;
    static KNOWN: OnceLock<RwLock<Known>> = OnceLock::new();
    let known = KNOWN.get_or_init(RwLock::default);
    let key = (service, method, code);
    if let Some(kept) = known
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return kept.clone();
    }
    known
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_insert_with(|| {
            let labels = [
                ("service", service.to_owned()),
                ("method", method.to_owned()),
                ("code", format!("{code:?}")),
            ];
            (
                metrics::counter!("grpc_server_handled_total", &labels),
                metrics::histogram!("grpc_server_handling_seconds", &labels),
            )
        })
        .clone()
}

/// Records one flush of the database to disk.
pub fn record_flush(seconds: f64) {
    metrics::histogram!("registry_flush_seconds").record(seconds);
}

/// Sets the store gauges: how many profiles and conversations, and the database's size.
pub fn record_store(profiles: usize, conversations: usize, bytes: u64) {
    metrics::gauge!("registry_profiles").set(profiles as f64);
    metrics::gauge!("registry_conversations").set(conversations as f64);
    metrics::gauge!("registry_database_bytes").set(bytes as f64);
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let handle = handle()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if request.starts_with("GET /metrics") {
                    ("200 OK", handle.render())
                } else {
                    ("404 Not Found", "metrics are at /metrics\n".to_owned())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(bound)
}
