//! `registry-bench`: how fast SDK profile files go into and out of a running profile-registry.
//!
//! Generates N SDK-format profile files (the 1.58.2 `anthropic-full.json` fixture, with a distinct
//! `api_key` and `base_url` per file), then times the exact library steps of
//! `profile-registry import` and `profile-registry export --secrets plaintext` against a server
//! started in-process on a temporary data dir (or the one given with `--server`). The exported
//! files are checked byte for byte against the generated ones.
//!
//! When `REGISTRY_SDK_PYTHON` names a Python with `openhands-sdk` installed, the SDK's own
//! `LLMProfileStore.load` rate over the same folder is measured too, for comparison.
//! Run: `cargo run --release --bin registry-bench -- --profiles 10000 --json bench.json`.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use clap::Parser;
use profile_registry::cli::profiles::export_to_folder;
use profile_registry::cli::Target;
use profile_registry::config::{OnConflict, SecretsMode, ServeArgs, TargetArgs};
use profile_registry::openhands::folder::ProfilesDir;
use profile_registry::server::Application;
use profile_registry::service::transfer::Outcome;
use profile_registry::service::Limits;
use serde_json::json;

/// The profile every generated file is a variant of (about 1 KiB, as the SDK writes it).
const FIXTURE: &str =
    include_str!("../../tests/fixtures/profiles/1.58.2/plaintext/anthropic-full.json");
/// The targets from the issue: 10,000 files each way in under 2 s.
const TARGET_FILES: usize = 10_000;
const TARGET_SECONDS: f64 = 2.0;

/// Times importing and exporting SDK profile files through a profile-registry server.
#[derive(Parser, Debug)]
#[command(name = "registry-bench")]
struct Args {
    /// How many profile files to generate, import and export.
    #[arg(long, default_value_t = TARGET_FILES)]
    profiles: usize,

    /// Use this running server (e.g. http://127.0.0.1:50051) instead of starting one in-process.
    /// It must not already hold profiles named bench-*.
    #[arg(long)]
    server: Option<String>,

    /// Also write the figures to this file as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One timed phase.
struct Phase {
    name: &'static str,
    files: usize,
    seconds: f64,
}

impl Phase {
    fn since(name: &'static str, files: usize, started: Instant) -> Self {
        let seconds = started.elapsed().as_secs_f64();
        Self {
            name,
            files,
            seconds,
        }
    }

    fn rate(&self) -> f64 {
        self.files as f64 / self.seconds
    }

    /// The issue's target, scaled to the number of files when it is not 10,000.
    fn limit(&self) -> f64 {
        TARGET_SECONDS * self.files as f64 / TARGET_FILES as f64
    }

    fn met(&self) -> bool {
        self.seconds < self.limit()
    }
}

/// The text of generated file `i`: the fixture with its own key and endpoint.
fn profile_text(i: usize) -> String {
    FIXTURE
        .replacen("sk-test-ANTHROPIC-0001", &format!("sk-bench-{i:08}"), 1)
        .replacen(
            "https://api.example.com",
            &format!("https://api.example.com/bench/{i}"),
            1,
        )
}

fn file_name(i: usize) -> String {
    format!("bench-{i:05}.json")
}

fn generate(dir: &Path, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        std::fs::write(dir.join(file_name(i)), profile_text(i))?;
    }
    // A user's folder is already on disk: do not time the write-back of the one just generated.
    let synced = Command::new("sync").status()?;
    ensure!(synced.success(), "sync failed");
    Ok(())
}

/// `profile-registry import DIR --server URL` (on-conflict skip), minus the printing.
async fn import(dir: &Path, target: &TargetArgs, n: usize) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let folder = ProfilesDir::lock(dir, false)?;
    let (docs, refused) =
        folder.read_documents(Limits::default().max_profile_bytes as u64, false)?;
    let mut target = Target::open(target).await?;
    let reports = target
        .import(docs, None, OnConflict::Skip, false, &|_| {})
        .await?;
    drop(folder);
    let phase = Phase::since("import", n, started);
    ensure!(refused.is_empty(), "files refused: {refused:?}");
    ensure!(
        reports.len() == n,
        "{} reports for {n} files",
        reports.len()
    );
    if let Some(r) = reports.iter().find(|r| r.outcome != Outcome::Created) {
        bail!(
            "{} was {:?}, not Created (a fresh server is needed) {}",
            r.name,
            r.outcome,
            r.reason
        );
    }
    Ok(phase)
}

/// `profile-registry export OUT --server URL --secrets plaintext`, minus the printing.
async fn export(out: &Path, target: &TargetArgs) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let mut target = Target::open(target).await?;
    let (files, _) = export_to_folder(
        &mut target,
        out,
        &[],
        SecretsMode::Plaintext,
        None,
        false,
        &|_, _| {},
    )
    .await?;
    Ok(Phase::since("export", files, started))
}

/// Every generated file must come back byte for byte.
fn verify(input: &Path, out: &Path, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let name = file_name(i);
        let want = std::fs::read(input.join(&name))?;
        let got =
            std::fs::read(out.join(&name)).with_context(|| format!("{name} was not exported"))?;
        ensure!(
            got == want,
            "exported {name} differs from the imported file"
        );
    }
    Ok(())
}

/// Times the SDK's own `LLMProfileStore.load` over every profile in `dir`; returns profiles/s.
fn sdk_load_rate(python: &str, dir: &Path) -> anyhow::Result<f64> {
    const SCRIPT: &str = r#"
import logging, sys, tempfile, time
from pathlib import Path
from openhands.sdk.llm.llm_profile_store import LLMProfileStore
from openhands.sdk.llm.provider_connection_store import ProviderConnectionStore
logging.disable(logging.WARNING)
src = Path(sys.argv[1])
names = sorted(p.name.removesuffix(".json") for p in src.glob("*.json"))
with tempfile.TemporaryDirectory() as tmp:
    store = LLMProfileStore(src, provider_store=ProviderConnectionStore(Path(tmp) / "pc"))
    started = time.perf_counter()
    for name in names:
        store.load(name)
    print(len(names) / (time.perf_counter() - started))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir)
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    ensure!(
        out.status.success(),
        "the SDK load script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default().trim();
    last.parse()
        .with_context(|| format!("unexpected SDK script output {text:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.profiles > 0, "--profiles must be at least 1");
    let work = tempfile::tempdir()?;
    let (input, out) = (work.path().join("profiles"), work.path().join("exported"));
    std::fs::create_dir(&input)?;
    generate(&input, args.profiles)?;

    // The server: the one given, or a real one in-process on a fresh data dir.
    let mut local = None;
    let server = match &args.server {
        Some(url) => url.clone(),
        None => {
            let app = Application::build(ServeArgs {
                listen: "127.0.0.1:0".parse()?,
                data_dir: work.path().join("data"),
                ..ServeArgs::default()
            })
            .await?;
            let url = format!("http://{}", app.local_addr());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(app.run_until(async {
                let _ = stopped.await;
            }));
            local = Some((stop, task));
            url
        }
    };
    let target = TargetArgs {
        server: server.clone(),
        data_dir: None,
        secret_key_file: None,
    };

    let imported = import(&input, &target, args.profiles).await?;
    let exported = export(&out, &target).await?;
    verify(&input, &out, args.profiles)?;

    if let Some((stop, task)) = local {
        let _ = stop.send(());
        task.await??;
    }

    let sdk = match std::env::var("REGISTRY_SDK_PYTHON") {
        Ok(python) if !python.is_empty() => Some(sdk_load_rate(&python, &input)?),
        _ => None,
    };

    let size = FIXTURE.len();
    println!("server {server}, {} files of ~{size} bytes", args.profiles);
    println!("phase       files   seconds    files/s  target");
    for p in [&imported, &exported] {
        println!(
            "{:<8} {:>8} {:>9.3} {:>10.0}  {} {} files < {:.2} s: {}",
            p.name,
            p.files,
            p.seconds,
            p.rate(),
            p.name,
            p.files,
            p.limit(),
            if p.met() { "met" } else { "NOT MET" }
        );
    }
    println!(
        "verified: {} exported files equal the inputs",
        args.profiles
    );
    if let Some(rate) = sdk {
        println!(
            "SDK LLMProfileStore.load: {rate:.0} profiles/s; registry import is {:.1}x that, export {:.1}x",
            imported.rate() / rate,
            exported.rate() / rate
        );
    }

    if let Some(path) = &args.json {
        let phase = |p: &Phase| {
            json!({
                "files": p.files,
                "seconds": p.seconds,
                "files_per_second": p.rate(),
                "target_seconds": p.limit(),
                "met": p.met(),
            })
        };
        let doc = json!({
            "server": server,
            "profiles": args.profiles,
            "import": phase(&imported),
            "export": phase(&exported),
            "verified_files": args.profiles,
            "sdk_load_profiles_per_second": sdk,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
