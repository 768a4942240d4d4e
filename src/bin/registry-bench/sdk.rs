//! The SDK's own `LLMProfileStore.load` and `.save` over the same profiles, in one Python process.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context};

/// The Python to use: `REGISTRY_SDK_PYTHON`, else the last of `REGISTRY_SDK_PYTHONS` (the newest SDK).
pub fn python() -> Option<String> {
    let one = std::env::var("REGISTRY_SDK_PYTHON").unwrap_or_default();
    if !one.is_empty() {
        return Some(one);
    }
    std::env::var("REGISTRY_SDK_PYTHONS")
        .ok()?
        .split(':')
        .rfind(|p| !p.is_empty())
        .map(str::to_owned)
}

/// Loads and saves per second, each measured for `duration` over the profiles in `dir`
/// (saves change the temperature, so every one writes a new file, as the SDK does: no fsync).
pub fn rates(python: &str, dir: &Path, duration: Duration) -> anyhow::Result<(f64, f64)> {
    const SCRIPT: &str = r#"
import logging, sys, tempfile, time
from pathlib import Path
from openhands.sdk.llm.llm_profile_store import LLMProfileStore
from openhands.sdk.llm.provider_connection_store import ProviderConnectionStore
logging.disable(logging.WARNING)
src, seconds = Path(sys.argv[1]), float(sys.argv[2])
names = sorted(p.name.removesuffix(".json") for p in src.glob("*.json"))
with tempfile.TemporaryDirectory() as tmp:
    store = LLMProfileStore(src, provider_store=ProviderConnectionStore(Path(tmp) / "pc"))
    def rate(op):
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            op(n)
            n += 1
        return n / (time.perf_counter() - started)
    print(rate(lambda n: store.load(names[n * 7919 % len(names)])))
    llms = [store.load(name) for name in names[:64]]
    def save(n):
        i = n % len(llms)
        llm = llms[i].model_copy(update={"temperature": 0.5 + n * 1e-6})
        store.save(names[i], llm, include_secrets=True)
    print(rate(save))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir)
        .arg(duration.as_secs_f64().to_string())
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    ensure!(
        out.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let figures: Vec<f64> = text
        .lines()
        .rev()
        .take(2)
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected SDK script output {text:?}"))?;
    match figures[..] {
        [save, load] => Ok((load, save)),
        _ => anyhow::bail!("unexpected SDK script output {text:?}"),
    }
}
