//! The reliability campaign: real traffic from several clients against the real server (a child
//! process on a real data dir), which is killed with SIGKILL or stopped with SIGTERM at random
//! moments and restarted on the same data dir. Each client checks that every acknowledged write is
//! stored, that nothing is half-applied, that revisions never go backwards and that its event log
//! stays contiguous; a watcher checks that its streams show each change once and in order.
//!
//! Before the campaign proper, a short run against a deliberately broken server (writes
//! acknowledged before they are flushed; `REGISTRY_FAULT_ACK_BEFORE_FLUSH=1`, honoured by debug
//! builds) must be caught, which proves the checks can fail.
//!
//! `cargo test --test campaign` runs the short campaign (30 cycles); arguments after `--`:
//! `--soak SECONDS` keeps killing for that long, `--cycles N`, `--seed N` replays a run (the seed
//! is printed, and the history of a failed run is written to a file whose path is printed).
// The api suite's helpers, of which the campaign uses a few.
#[path = "../api/helpers/mod.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

mod client;
mod watcher;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use helpers::ChildServer;

/// What the clients, the watcher and the conductor share.
pub struct Shared {
    pub addr: Mutex<SocketAddr>,
    /// Bumped at every restart: each client then checks everything it owns.
    pub generation: AtomicU64,
    /// Clients stop writing.
    pub stop: AtomicBool,
    /// The last server is up for good: the watcher compares its picture with the store.
    pub finished: AtomicBool,
    finished_at: Mutex<Option<Instant>>,
    started: Instant,
    history: Mutex<Vec<String>>,
    counts: Mutex<BTreeMap<(String, String), u64>>,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr: Mutex::new(addr),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            finished_at: Mutex::new(None),
            started: Instant::now(),
            history: Mutex::default(),
            counts: Mutex::default(),
            violations: Mutex::default(),
        }
    }

    /// Adds a line to the history (every request and its outcome).
    pub fn record(&self, line: String) {
        let ms = self.started.elapsed().as_millis();
        self.history.lock().unwrap().push(format!("{ms:>7} {line}"));
    }

    pub fn count(&self, op: &str, outcome: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry((op.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    pub fn violation(&self, what: String) {
        self.record(format!("VIOLATION {what}"));
        self.violations.lock().unwrap().push(what);
    }

    /// Whether the final comparison has had long enough to settle.
    pub fn deadline_passed(&self) -> bool {
        self.finished_at
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(5))
    }
}

struct Plan {
    seed: u64,
    cycles: usize,
    soak: Option<Duration>,
    clients: usize,
    broken: bool,
}

struct Outcome {
    cycles: usize,
    kills: usize,
    terms: usize,
    counts: BTreeMap<(String, String), u64>,
    watched: u64,
    violations: Vec<String>,
    history: Vec<String>,
    elapsed: Duration,
}

fn server_env(broken: bool) -> Vec<(&'static str, &'static str)> {
    if broken {
        vec![("REGISTRY_FAULT_ACK_BEFORE_FLUSH", "1")]
    } else {
        Vec::new()
    }
}

const SERVER_ARGS: &[&str] = &["--shutdown-grace", "2s", "--log-level", "info"];

async fn campaign(plan: &Plan) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let env = server_env(plan.broken);
    let mut server = ChildServer::start_with_env(dir.path(), SERVER_ARGS, &env);
    let shared = Arc::new(Shared::new(server.addr));
    shared.record(format!("seed {} server {}", plan.seed, server.addr));
    let clients: Vec<_> = (0..plan.clients)
        .map(|i| tokio::spawn(client::Client::new(i, plan.seed, Arc::clone(&shared)).run()))
        .collect();
    let watcher = tokio::spawn(watcher::run(Arc::clone(&shared)));

    let mut rng = StdRng::seed_from_u64(plan.seed);
    let started = Instant::now();
    let (mut cycles, mut kills, mut terms) = (0, 0, 0);
    loop {
        let enough = match plan.soak {
            Some(d) => started.elapsed() >= d,
            None => cycles >= plan.cycles,
        };
        // The broken run stops at the first violation: it has proved its point.
        if enough || (plan.broken && !shared.violations.lock().unwrap().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..900))).await;
        cycles += 1;
        let sigkill = rng.random_bool(0.7);
        shared.record(format!(
            "cycle {cycles}: {}",
            if sigkill { "SIGKILL" } else { "SIGTERM" }
        ));
        server.signal(if sigkill { "KILL" } else { "TERM" });
        let (code, took) =
            tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(15)));
        if sigkill {
            kills += 1;
        } else {
            terms += 1;
            if code != Some(0) {
                shared.violation(format!(
                    "SIGTERM: exit code {code:?} after {took:?}; log:\n{}",
                    server.log()
                ));
            }
        }
        // Down for a moment, as in a real restart; then a new server on the same data dir.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
        server = ChildServer::start_with_env(dir.path(), SERVER_ARGS, &env);
        *shared.addr.lock().unwrap() = server.addr;
        shared.generation.fetch_add(1, Ordering::SeqCst);
        shared.record(format!("cycle {cycles}: restarted on {}", server.addr));
    }
    // Let the clients see the last restart, then stop them and check everything once more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    *shared.finished_at.lock().unwrap() = Some(Instant::now());
    shared.finished.store(true, Ordering::SeqCst);
    let watched = watcher.await.unwrap();
    drop(server);
    let violations = shared.violations.lock().unwrap().clone();
    let history = shared.history.lock().unwrap().clone();
    let counts = shared.counts.lock().unwrap().clone();
    Outcome {
        cycles,
        kills,
        terms,
        counts,
        watched,
        violations,
        history,
        elapsed: started.elapsed(),
    }
}

fn summary(o: &Outcome) -> String {
    let total: u64 = o.counts.values().sum();
    let mut by_op: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((op, outcome), n) in &o.counts {
        by_op.entry(op).or_default().push(format!("{outcome} {n}"));
    }
    let ops: Vec<String> = by_op
        .iter()
        .map(|(op, v)| format!("{op}: {}", v.join(", ")))
        .collect();
    format!(
        "{} cycles ({} SIGKILL, {} SIGTERM) in {:.1} s; {total} writes ({}); {} watch events checked; {} violations",
        o.cycles,
        o.kills,
        o.terms,
        o.elapsed.as_secs_f64(),
        ops.join("; "),
        o.watched,
        o.violations.len()
    )
}

fn save_history(o: &Outcome, seed: u64, what: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("registry-campaign-{what}-{seed}.log"));
    std::fs::write(&path, o.history.join("\n")).unwrap();
    path
}

struct Args {
    seed: u64,
    cycles: usize,
    soak: Option<Duration>,
    run: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        seed: rand::random(),
        cycles: 30,
        soak: None,
        run: true,
    };
    let mut filters = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value =
            |name: &str| -> String { it.next().unwrap_or_else(|| panic!("{name} needs a value")) };
        match a.as_str() {
            "--seed" => args.seed = value("--seed").parse().expect("--seed takes a number"),
            "--cycles" => args.cycles = value("--cycles").parse().expect("--cycles takes a number"),
            "--soak" => {
                let secs: u64 = value("--soak").parse().expect("--soak takes seconds");
                args.soak = Some(Duration::from_secs(secs));
            }
            // Flags cargo passes to every test binary.
            s if s.starts_with("--") => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    // `cargo test some_filter` passes the filter to every test binary: run only when it matches.
    args.run = filters.is_empty() || filters.iter().any(|f| "campaign".contains(f.as_str()));
    if let Ok(seed) = std::env::var("REGISTRY_CAMPAIGN_SEED") {
        args.seed = seed.parse().expect("REGISTRY_CAMPAIGN_SEED takes a number");
    }
    args
}

fn main() {
    let args = parse_args();
    if !args.run {
        println!("campaign: not selected by the filter");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // 1. The checks must catch a server that acknowledges before flushing.
        if cfg!(debug_assertions) {
            let broken = campaign(&Plan {
                seed: args.seed,
                cycles: 30,
                soak: None,
                clients: 4,
                broken: true,
            })
            .await;
            println!("broken build: {}", summary(&broken));
            if broken.violations.is_empty() {
                let path = save_history(&broken, args.seed, "broken");
                panic!(
                    "the campaign did not notice a server that acknowledges writes before flushing (seed {}, history in {})",
                    args.seed,
                    path.display()
                );
            }
            println!("broken build caught: {}", broken.violations[0].lines().next().unwrap_or(""));
        } else {
            println!("broken build: not checked (the fault switch exists only in debug builds)");
        }

        // 2. The campaign proper.
        let outcome = campaign(&Plan {
            seed: args.seed,
            cycles: args.cycles,
            soak: args.soak,
            clients: 4,
            broken: false,
        })
        .await;
        println!("campaign (seed {}): {}", args.seed, summary(&outcome));
        if !outcome.violations.is_empty() {
            let path = save_history(&outcome, args.seed, "failed");
            for v in outcome.violations.iter().take(10) {
                eprintln!("VIOLATION {v}");
            }
            panic!(
                "the campaign found {} violations; replay with `cargo test --test campaign -- --seed {}`; history in {}",
                outcome.violations.len(),
                args.seed,
                path.display()
            );
        }
        assert!(
            outcome.cycles >= 30 || args.soak.is_some() || args.cycles < 30,
            "too few cycles"
        );
    });
}
