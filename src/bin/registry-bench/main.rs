//! `registry-bench`: how fast profile-registry is where it matters, against the targets of issue 8.
//!
//! Starts the real `profile-registry` server as a child process on a temporary data dir (or uses
//! `--server URL`), loads the data set through the API (the profiles by importing SDK files, which
//! is itself timed, then conversations and their events), restarts the server to time start to
//! SERVING on that data, and measures each row at concurrency 1 and 64 over several connections.
//! Health/Check is the baseline: the cost of one unary call in this stack on this machine. When
//! present, the OpenHands SDK (`REGISTRY_SDK_PYTHON`/`REGISTRY_SDK_PYTHONS`) and an `etcd` binary
//! are measured in the same run for comparison. Prints a table and each target with whether it
//! is met; `--json FILE` writes every figure.
//! Run: `cargo run --release --bin registry-bench -- --json bench.json`.
mod etcd;
mod load;
mod procs;
mod report;
mod sdk;
mod transfer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use clap::Parser;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use profile_registry::config::{parse_duration, ClientArgs, TargetArgs};
use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use serde_json::json;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use load::{measure, pick, Sample};
use procs::{channels, Etcd, Server};
use report::Report;
use transfer::{profile_name, FIXTURE};

/// Measures profile-registry's calls against Health/Check, the OpenHands SDK and etcd.
#[derive(Parser, Debug)]
#[command(name = "registry-bench")]
struct Args {
    /// Profiles in the data set (SDK files of about 1 KiB, imported and exported).
    #[arg(long, default_value_t = 10_000)]
    profiles: usize,

    /// Conversations in the data set, each bound to a profile.
    #[arg(long, default_value_t = 1_000)]
    conversations: usize,

    /// Events per conversation in the data set.
    #[arg(long, default_value_t = 100)]
    events: usize,

    /// How long each row is measured (after a warm-up of a tenth of it).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,

    /// Client connections the concurrent rows are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,

    /// The small store of the GetProfile scaling row.
    #[arg(long, default_value_t = 1_000)]
    small_profiles: usize,

    /// The large store of the GetProfile scaling row.
    #[arg(long, default_value_t = 100_000)]
    large_profiles: usize,

    /// Use this running server instead of starting one (it must not hold profiles named bench-*);
    /// RSS, start to SERVING and the scaling row are then skipped.
    #[arg(long)]
    server: Option<String>,

    /// The profile-registry binary to start (default: the one beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,

    /// Measure only the rows whose name contains one of these (repeatable; e.g. to profile one).
    #[arg(long)]
    only: Vec<String>,

    /// Also measure GetProfile and durable UpdateProfile on PostgreSQL, next to sled's: a server on a
    /// fresh database created through this URL (`postgres://user@host:port/db`, a role that may
    /// CREATE DATABASE) and dropped afterwards.
    #[arg(long, env = "REGISTRY_BENCH_STORE", hide_env_values = true)]
    store: Option<String>,

    /// Also write every figure to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The concurrencies every row is measured at.
const CONCURRENCY: [usize; 2] = [1, 64];

/// Clients of one server, one per connection.
#[derive(Clone)]
struct Clients {
    health: Vec<HealthClient<Channel>>,
    profiles: Vec<ProfileServiceClient<Channel>>,
    conversations: Vec<ConversationServiceClient<Channel>>,
}

impl Clients {
    async fn connect(url: &str, n: usize) -> anyhow::Result<Self> {
        let chans = channels(url, n).await?;
        Ok(Self {
            health: chans.iter().cloned().map(HealthClient::new).collect(),
            profiles: chans
                .iter()
                .cloned()
                .map(|c| ProfileServiceClient::new(c).max_decoding_message_size(usize::MAX))
                .collect(),
            conversations: chans
                .iter()
                .cloned()
                .map(ConversationServiceClient::new)
                .collect(),
        })
    }

    fn health(&self, w: usize) -> HealthClient<Channel> {
        self.health[w % self.health.len()].clone()
    }

    fn profiles(&self, w: usize) -> ProfileServiceClient<Channel> {
        self.profiles[w % self.profiles.len()].clone()
    }

    fn conversations(&self, w: usize) -> ConversationServiceClient<Channel> {
        self.conversations[w % self.conversations.len()].clone()
    }
}

fn server_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &args.server_bin {
        return Ok(bin.clone());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("profile-registry");
    ensure!(
        bin.is_file(),
        "no profile-registry binary beside {} (build it, or give --server-bin)",
        me.display()
    );
    Ok(bin)
}

fn target_args(url: &str) -> TargetArgs {
    TargetArgs {
        client: ClientArgs::plain(url),
        data_dir: None,
        secret_key_file: None,
    }
}

/// An event body as the SDK writes a MessageEvent (about 400 bytes).
fn event(conversation: usize, n: usize) -> pb::Event {
    let body = json!({
        "kind": "MessageEvent",
        "source": if n % 2 == 0 { "user" } else { "agent" },
        "timestamp": "2025-10-01T12:00:00.000001",
        "llm_message": {
            "role": if n % 2 == 0 { "user" } else { "assistant" },
            "content": [{"type": "text", "text": format!(
                "Message {n} of conversation {conversation}: please look at the failing test in \
                 src/lib.rs and explain why the assertion on line 42 does not hold any more.")}],
        },
        "activated_skills": [],
        "extended_content": [],
    });
    let serde_json::Value::Object(map) = body else {
        unreachable!("a JSON object literal")
    };
    pb::Event {
        body: Some(profile_registry::grpc::convert::map_to_struct(&map)),
        ..Default::default()
    }
}

/// Creates `args.conversations` conversations bound to profiles, each with `args.events` events.
async fn load_conversations(clients: &Clients, args: &Args) -> anyhow::Result<Vec<String>> {
    let (n, profiles, events) = (args.conversations.max(1), args.profiles, args.events);
    futures::stream::iter(0..n)
        .map(|i| {
            let mut client = clients.conversations(i);
            async move {
                let conversation = pb::Conversation {
                    llms: [(
                        "agent".to_owned(),
                        pb::LlmBinding {
                            source: Some(pb::llm_binding::Source::Profile(profile_name(
                                i % profiles,
                            ))),
                            resolved: None,
                        },
                    )]
                    .into(),
                    title: format!("bench conversation {i}"),
                    ..Default::default()
                };
                let id = client
                    .create_conversation(pb::CreateConversationRequest {
                        conversation: Some(conversation),
                    })
                    .await?
                    .into_inner()
                    .id;
                let all: Vec<usize> = (0..events).collect();
                for chunk in all.chunks(100) {
                    client
                        .append_events(pb::AppendEventsRequest {
                            conversation_id: id.clone(),
                            events: chunk.iter().map(|&e| event(i, e)).collect(),
                            expected_next_seq: None,
                        })
                        .await?;
                }
                Ok::<_, anyhow::Error>(id)
            }
        })
        .buffered(16)
        .try_collect()
        .await
}

/// The LLM configurations of the profiles UpdateProfile rewrites (one per worker), as stored.
async fn update_bases(clients: &Clients, args: &Args) -> anyhow::Result<Vec<pb::LlmConfig>> {
    let mut out = Vec::new();
    for w in 0..CONCURRENCY[1].min(args.profiles) {
        let p = clients
            .profiles(0)
            .get_profile(pb::GetProfileRequest {
                name: profile_name(w),
                reveal_secrets: false,
            })
            .await?
            .into_inner();
        out.push(p.llm.context("a profile without llm")?);
    }
    Ok(out)
}

/// One row's call: `(worker, n)` to a future of one call.
type Call = Arc<dyn Fn(usize, u64) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

fn call<F, Fut>(f: F) -> Call
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Arc::new(move |w, n| f(w, n).boxed())
}

/// The rows measured on the main server, in order.
fn server_calls(
    clients: &Clients,
    args: &Args,
    ids: Arc<Vec<String>>,
    bases: Arc<Vec<pb::LlmConfig>>,
    pages: Arc<Vec<String>>,
) -> Vec<(&'static str, Call)> {
    let profiles = args.profiles;
    let mut rows = Vec::new();
    let cl = clients.clone();
    rows.push((
        report::HEALTH,
        call(move |w, _| {
            let mut h = cl.health(w);
            async move {
                h.check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
                Ok(())
            }
        }),
    ));
    let cl = clients.clone();
    rows.push((
        report::GET_PROFILE,
        call(move |w, n| {
            let mut p = cl.profiles(w);
            async move {
                p.get_profile(pb::GetProfileRequest {
                    name: profile_name(pick(w, n, profiles)),
                    reveal_secrets: false,
                })
                .await?;
                Ok(())
            }
        }),
    ));
    let cl = clients.clone();
    rows.push((
        report::LIST_PROFILES,
        call(move |w, n| {
            let mut p = cl.profiles(w);
            // A page from a random place: the tokens are the server's (keyed, so not made here).
            let page = pick(w, n, pages.len());
            let (start, page_token) = (page * 100, pages[page].clone());
            async move {
                let page = p
                    .list_profiles(pb::ListProfilesRequest {
                        page_size: 100,
                        page_token,
                    })
                    .await?
                    .into_inner();
                ensure!(
                    page.profiles.len() == 100.min(profiles - start),
                    "a short page"
                );
                Ok(())
            }
        }),
    ));
    let cl = clients.clone();
    rows.push((
        report::UPDATE_PROFILE,
        call(move |w, n| {
            let mut p = cl.profiles(w);
            let i = w % bases.len();
            // A new temperature every call, so every call writes (an unchanged profile is not).
            let llm = pb::LlmConfig {
                temperature: Some(0.5 + (n % 1_000_000) as f64 * 1e-7 + w as f64 * 1e-1),
                ..bases[i].clone()
            };
            async move {
                p.update_profile(pb::UpdateProfileRequest {
                    profile: Some(pb::Profile {
                        name: profile_name(i),
                        llm: Some(llm),
                        ..Default::default()
                    }),
                    allow_missing: true,
                    expected_revision: None,
                })
                .await?;
                Ok(())
            }
        }),
    ));
    let (cl, ids2) = (clients.clone(), Arc::clone(&ids));
    rows.push((
        report::GET_CONVERSATION,
        call(move |w, n| {
            let mut cv = cl.conversations(w);
            let id = ids2[pick(w, n, ids2.len())].clone();
            async move {
                let conv = cv
                    .get_conversation(pb::GetConversationRequest {
                        id,
                        resolve_llms: true,
                        reveal_secrets: false,
                    })
                    .await?
                    .into_inner();
                ensure!(
                    conv.llms.values().all(|b| b.resolved.is_some()),
                    "an LLM was not resolved"
                );
                Ok(())
            }
        }),
    ));
    for (row, batch) in [(report::APPEND_1, 1), (report::APPEND_100, 100)] {
        let (cl, ids2) = (clients.clone(), Arc::clone(&ids));
        rows.push((
            row,
            call(move |w, n| {
                let mut cv = cl.conversations(w);
                // Worker w appends to conversation w: 64 workers over 64 conversations.
                let conversation_id = ids2[w % ids2.len()].clone();
                let events = (0..batch).map(|e| event(w, n as usize + e)).collect();
                async move {
                    cv.append_events(pb::AppendEventsRequest {
                        conversation_id,
                        events,
                        expected_next_seq: None,
                    })
                    .await?;
                    Ok(())
                }
            }),
        ));
    }
    let (cl, events) = (clients.clone(), args.events);
    rows.push((
        report::LIST_EVENTS,
        call(move |w, n| {
            let mut cv = cl.conversations(w);
            // Conversations past the first 64 keep their loaded events (the appends go to those).
            let i = ids.len().min(64) + pick(w, n, ids.len().saturating_sub(64));
            let conversation_id = ids[i.min(ids.len() - 1)].clone();
            async move {
                let page = cv
                    .list_events(pb::ListEventsRequest {
                        conversation_id,
                        page_size: 100,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                ensure!(!page.events.is_empty() || events == 0, "an empty page");
                Ok(())
            }
        }),
    ));
    rows
}

/// Reads every profile once before the rows, as a server in steady use has: the same for both stores
/// (sled's page cache, the PostgreSQL store's profile cache).
async fn warm_up(clients: &Clients, profiles: usize) -> anyhow::Result<()> {
    futures::stream::iter(0..profiles)
        .map(|i| {
            let mut p = clients.profiles(i);
            async move {
                p.get_profile(pb::GetProfileRequest {
                    name: profile_name(i),
                    reveal_secrets: false,
                })
                .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await
}

/// The page token of each full page of 100 profiles, the first one empty.
async fn page_tokens(clients: &Clients) -> anyhow::Result<Vec<String>> {
    let mut p = clients.profiles(0);
    let mut tokens = vec![String::new()];
    loop {
        let page = p
            .list_profiles(pb::ListProfilesRequest {
                page_size: 100,
                page_token: tokens.last().cloned().unwrap_or_default(),
            })
            .await?
            .into_inner();
        if page.next_page_token.is_empty() || page.profiles.len() < 100 {
            break;
        }
        tokens.push(page.next_page_token);
    }
    // The last token may lead to a short or empty page: keep only tokens of full pages.
    if tokens.len() > 1 {
        tokens.pop();
    }
    Ok(tokens)
}

/// Measures every row of the main server at each concurrency.
async fn server_rows(
    report: &mut Report,
    clients: &Clients,
    args: &Args,
    conversations: &[String],
    server: Option<u32>,
) -> anyhow::Result<()> {
    let ids = Arc::new(conversations.to_vec());
    warm_up(clients, args.profiles).await?;
    let bases = Arc::new(update_bases(clients, args).await?);
    let pages = Arc::new(page_tokens(clients).await?);
    let rows = server_calls(clients, args, ids, bases, pages);
    for c in CONCURRENCY {
        for (name, row) in &rows {
            if report.wants(name) {
                let row = Arc::clone(row);
                let before = (load::cpu_us(server)?, load::cpu_us(None)?);
                let s = measure(c, args.duration, move |w, n| row(w, n)).await?;
                let per_call = |b: u64, a: u64| (a - b) as f64 / s.all_calls.max(1) as f64;
                match server {
                    Some(pid) => {
                        let cpu = (
                            per_call(before.0, load::cpu_us(server)?),
                            per_call(before.1, load::cpu_us(None)?),
                        );
                        let rss_kib = procs::rss_kib(pid)?;
                        report.row_probed(name, c, s, report::Probe { cpu, rss_kib });
                    }
                    None => report.row(name, c, s),
                }
            }
        }
    }
    Ok(())
}

/// GetProfile and UpdateProfile on a server running on PostgreSQL (`--store`), with the same data
/// set of profiles as the main server.
async fn postgres_rows(
    report: &mut Report,
    args: &Args,
    bin: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if !report.wants(report::PG_GET_PROFILE) && !report.wants(report::PG_UPDATE_PROFILE) {
        return Ok(());
    }
    let (Some(admin), Some(bin)) = (&args.store, bin) else {
        let why = "needs --store postgres://... (and a server started by the benchmark)";
        report.skip(report::PG_GET_PROFILE, why);
        report.skip(report::PG_UPDATE_PROFILE, why);
        return Ok(());
    };
    let pool = sqlx::PgPool::connect(admin)
        .await
        .context("--store: cannot connect")?;
    let db = format!("registry_bench_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .context("--store: cannot CREATE DATABASE")?;
    // The same server and options (e.g. ?sslmode=require), another database.
    let (path, query) = admin.split_once('?').unwrap_or((admin, ""));
    let (base, _) = path
        .rsplit_once('/')
        .context("--store: a URL ending in /database")?;
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let url = format!("{base}/{db}{query}");
    let work = tempfile::tempdir()?;
    let key = work.path().join("keys");
    std::fs::write(&key, "bench:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")?;
    let extra = [
        "--store".to_owned(),
        url,
        "--secret-key-file".to_owned(),
        key.display().to_string(),
    ];
    let result = async {
        let server = Server::start_with(bin, &work.path().join("data"), &extra).await?;
        transfer::import_documents(
            &target_args(&server.url),
            transfer::documents(args.profiles),
        )
        .await?;
        let clients = Clients::connect(&server.url, args.connections).await?;
        warm_up(&clients, args.profiles).await?;
        let bases = Arc::new(update_bases(&clients, args).await?);
        let pages = Arc::new(page_tokens(&clients).await?);
        let rows = server_calls(&clients, args, Arc::new(Vec::new()), bases, pages);
        for c in CONCURRENCY {
            for (name, pg_name) in [
                (report::GET_PROFILE, report::PG_GET_PROFILE),
                (report::UPDATE_PROFILE, report::PG_UPDATE_PROFILE),
            ] {
                let Some((_, row)) = rows.iter().find(|(n, _)| *n == name) else {
                    continue;
                };
                let row = Arc::clone(row);
                let s = measure(c, args.duration, move |w, n| row(w, n)).await?;
                report.row(pg_name, c, s);
            }
        }
        drop(clients);
        server.stop()
    }
    .await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&pool)
        .await;
    result?;
    dropped?;
    Ok(())
}

/// GetProfile at concurrency 64 on a fresh server holding `n` profiles.
async fn get_profile_at(bin: &std::path::Path, n: usize, args: &Args) -> anyhow::Result<Sample> {
    let work = tempfile::tempdir()?;
    let server = Server::start(bin, &work.path().join("data")).await?;
    transfer::import_documents(&target_args(&server.url), transfer::documents(n)).await?;
    let clients = Clients::connect(&server.url, args.connections).await?;
    let s = measure(CONCURRENCY[1], args.duration, move |w, k| {
        let mut p = clients.profiles(w);
        async move {
            p.get_profile(pb::GetProfileRequest {
                name: profile_name(pick(w, k, n)),
                reveal_secrets: false,
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    server.stop()?;
    Ok(s)
}

/// Range and Put of the profile values against a local etcd, at each concurrency.
async fn etcd_rows(report: &mut Report, args: &Args) -> anyhow::Result<()> {
    if !report.wants(report::ETCD_RANGE) {
        return Ok(());
    }
    let Some(bin) = Etcd::binary() else {
        report.skip(report::ETCD_RANGE, "no etcd binary on PATH");
        report.skip(report::ETCD_PUT, "no etcd binary on PATH");
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let etcd = Etcd::start(&bin, &work.path().join("etcd"))?;
    let chans = channels(&etcd.url, args.connections).await?;
    let kvs: Vec<etcd::Kv> = chans.into_iter().map(etcd::Kv::new).collect();
    kvs[0].clone().wait_ready(Duration::from_secs(30)).await?;
    let n = args.profiles;
    futures::stream::iter(0..n)
        .map(|i| {
            let mut kv = kvs[i % kvs.len()].clone();
            async move {
                kv.put(&profile_name(i), transfer::profile_text(i).as_bytes())
                    .await
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await?;
    kvs[0].clone().expect(&profile_name(n - 1)).await?;
    let kvs = Arc::new(kvs);
    let value = Arc::new(FIXTURE.as_bytes().to_vec());
    for c in CONCURRENCY {
        let k = Arc::clone(&kvs);
        let s = measure(c, args.duration, move |w, i| {
            let mut kv = k[w % k.len()].clone();
            async move {
                ensure!(kv.get(&profile_name(pick(w, i, n))).await? == 1, "no value");
                Ok(())
            }
        })
        .await?;
        report.row(report::ETCD_RANGE, c, s);
        let (k, v) = (Arc::clone(&kvs), Arc::clone(&value));
        let s = measure(c, args.duration, move |w, _| {
            let (mut kv, v) = (k[w % k.len()].clone(), Arc::clone(&v));
            async move { kv.put(&profile_name(w % n), &v).await }
        })
        .await?;
        report.row(report::ETCD_PUT, c, s);
    }
    report.figure("etcd_rss_kib", json!(etcd.rss_kib()?));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.profiles >= 100, "--profiles must be at least 100");
    let work = tempfile::tempdir()?;
    let (input, out) = (work.path().join("profiles"), work.path().join("exported"));
    std::fs::create_dir(&input)?;
    transfer::generate(&input, args.profiles)?;
    let mut report = Report::new(&args);

    // The server: the one given, or the real binary on a fresh data dir.
    let bin = match &args.server {
        Some(_) => None,
        None => Some(server_bin(&args)?),
    };
    let data = work.path().join("data");
    let mut server = match &bin {
        Some(bin) => Some(Server::start(bin, &data).await?),
        None => None,
    };
    let url = match (&server, &args.server) {
        (Some(s), _) => s.url.clone(),
        (None, Some(url)) => url.clone(),
        (None, None) => unreachable!("a server is started when none is given"),
    };
    println!(
        "data set: {} profiles of ~{} bytes, {} conversations x {} events; {} per row, {} connections",
        args.profiles,
        FIXTURE.len(),
        args.conversations,
        args.events,
        humantime(args.duration),
        args.connections
    );

    let target = target_args(&url);
    let imported = transfer::import(&input, &target).await?;
    let created = transfer::create_files(&work.path().join("created"), args.profiles)?;
    let exported = transfer::export(&out, &target).await?;
    transfer::verify(&input, &out, args.profiles)?;
    report.transfer(imported, exported, created);

    let clients = Clients::connect(&url, args.connections).await?;
    let conversations = load_conversations(&clients, &args).await?;
    drop(clients);

    // Start to SERVING on the loaded data: restart the server.
    if let (Some(bin), Some(s)) = (&bin, server.take()) {
        s.stop()?;
        let restarted = Server::start(bin, &data).await?;
        report.start_to_serving(Some(restarted.start_to_serving));
        server = Some(restarted);
    } else {
        report.start_to_serving(None);
    }
    let url = server.as_ref().map_or(url, |s| s.url.clone());
    let clients = Clients::connect(&url, args.connections).await?;
    let pid = server.as_ref().map(Server::pid);
    server_rows(&mut report, &clients, &args, &conversations, pid).await?;
    drop(clients);
    match &server {
        Some(s) => report.rss(Some(s.rss_kib()?)),
        None => report.rss(None),
    }
    if let Some(s) = server.take() {
        s.stop()?;
    }

    match sdk::python().filter(|_| report.wants(report::SDK_LOAD)) {
        Some(python) => {
            let (load, save) = sdk::rates(&python, &input, args.duration)?;
            report.sdk(Some((load, save)));
        }
        None => report.sdk(None),
    }

    etcd_rows(&mut report, &args).await?;
    postgres_rows(&mut report, &args, bin.as_deref()).await?;

    match bin.as_ref().filter(|_| report.wants(report::GET_LARGE)) {
        Some(bin) => {
            let small = get_profile_at(bin, args.small_profiles, &args).await?;
            let large = get_profile_at(bin, args.large_profiles, &args).await?;
            report.scaling(Some((small, large)));
        }
        None => report.scaling(None),
    }

    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `3s`, `250ms`.
fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
