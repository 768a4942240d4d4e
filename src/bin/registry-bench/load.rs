//! The load loop: N workers call for a fixed time after a short warm-up; calls/s, p50 and p99.
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// The figures of one row at one concurrency.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Calls completed in the measured window.
    pub calls: u64,
    /// Calls per second.
    pub rate: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Calls including the warm-up (to divide CPU time measured around the whole row).
    #[serde(skip)]
    pub all_calls: u64,
}

/// Runs `call(worker, n)` in `concurrency` workers (n counts each worker's calls from 0) for a
/// warm-up of a tenth of `duration`, then measures for `duration`. Any failed call fails the row.
pub async fn measure<F, Fut>(
    concurrency: usize,
    duration: Duration,
    call: F,
) -> anyhow::Result<Sample>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now() + duration / 10;
    let end = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut last = start;
                let mut n = 0u64;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    call(w, n).await?;
                    n += 1;
                    if began >= start {
                        last = Instant::now();
                        latencies.push((last - began).as_nanos() as u64);
                    }
                }
                Ok::<_, anyhow::Error>((latencies, last, n))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut finished = end;
    let mut all_calls = 0;
    for w in workers {
        let (latencies, last, n) = w.await.context("a load worker panicked")??;
        all.extend(latencies);
        all_calls += n;
        finished = finished.max(last);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    Ok(Sample {
        calls: all.len() as u64,
        rate: all.len() as f64 / (finished - start).as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        all_calls,
    })
}

/// A cheap deterministic spread of (worker, n) over `0..len`, so workers do not walk in step.
pub fn pick(worker: usize, n: u64, len: usize) -> usize {
    let mut x = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % len.max(1) as u64) as usize
}

/// CPU time (user + system) of a process so far, microseconds; `None` for this process.
pub fn cpu_us(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path)?;
    // Fields 14 and 15 (utime, stime) in clock ticks, counted after the ")" that ends the name.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .context("a short /proc/<pid>/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<_, _>>()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000 / hz)
}
