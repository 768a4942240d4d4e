//! The Python adapter (`tests/clients/python`, distribution `profile-registry-client`): pip-installed
//! into the real openhands-sdk 1.58.2 environment, it must act as the SDK's own `LLMProfileStore`
//! against a real server; and its checked-in gRPC stubs must match `proto/`.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use profile_registry::auth::token_hash_hex;

use crate::helpers::{output_text, sdk_python, skip_without, TestApp};

/// writer + secrets: may load keys. writer alone: keys stay masked.
const KEY_TOKEN: &str = "tok-adapter-keys-0001";
const MASKED_TOKEN: &str = "tok-adapter-masked-0001";

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python")
}

/// Copies the package's sources (not caches or build leftovers) so pip builds outside the tree:
/// an in-tree build would leave `build/` and `*.egg-info` in the checkout and race other runs.
fn copy_package(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "__pycache__" || name == "build" || name.ends_with(".egg-info") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_package(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// `pip install --target` of the package with the SDK's Python; returns the folder for PYTHONPATH.
fn install_adapter(python: &Path, work: &Path) -> PathBuf {
    let source = work.join("src");
    copy_package(
        &python_dir().join("profile_registry_client"),
        &source.join("profile_registry_client"),
    );
    std::fs::copy(
        python_dir().join("pyproject.toml"),
        source.join("pyproject.toml"),
    )
    .unwrap();
    let target = work.join("site");
    // --no-deps: grpcio and protobuf come with the SDK; the plain install is checked by hand.
    let o = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
        ])
        .arg("--target")
        .arg(&target)
        .arg(&source)
        .output()
        .expect("pip runs");
    assert!(
        o.status.success(),
        "pip install of the adapter failed:\n{}",
        output_text(&o)
    );
    target
}

fn run_checks(python: &Path, site: &Path, server: &str, tokens: &[&str]) -> Output {
    Command::new(python)
        .arg(python_dir().join("test_adapter.py"))
        .args(["--server", server])
        .args(tokens)
        .env("PYTHONPATH", site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env_remove("REGISTRY_TOKEN")
        .env_remove("OH_SECRET_KEY")
        .output()
        .expect("python runs")
}

fn assert_passed(o: &Output, what: &str) {
    let out = output_text(o);
    assert!(o.status.success(), "{what}:\n{out}");
    for step in [
        "ok: isinstance LLMProfileLoader and LLMProfileMutator",
        "ok: save(include_secrets=True) then load round trip is equal",
        "ok: load equals LLMProfileStore.load of the SDK's own file",
        "ok: list gives file names",
        "ok: resolve_agent_profile(llm_store=adapter)",
        "ok: profile_refs.delete_llm_profile and rename_llm_profile",
        "ok: masked:",
        "ok: errors callers catch",
        "ok: provider_connection_id resolved",
        "all adapter checks passed",
    ] {
        assert!(out.contains(step), "{what}: no {step:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_adapter_acts_as_the_sdk_profile_store() {
    // The adapter targets 1.58.2's API.
    let python = sdk_python("1.58.2");
    if skip_without(
        "Python 3.12 with openhands-sdk 1.58.2 ($REGISTRY_SDK_PYTHONS)",
        python.is_some(),
    ) {
        return;
    }
    let python = python.unwrap();
    let work = tempfile::tempdir().unwrap();
    let site = {
        let (python, work) = (python.clone(), work.path().to_owned());
        tokio::task::spawn_blocking(move || install_adapter(&python, &work))
            .await
            .unwrap()
    };

    // A server with tokens: one that may read keys, one that may not (keys must stay masked).
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "adapter-keys:writer,secrets:sha256:{}\nadapter-masked:writer:sha256:{}\n",
            token_hash_hex(KEY_TOKEN),
            token_hash_hex(MASKED_TOKEN)
        ),
    )
    .unwrap();
    let secured = TestApp::spawn_in_with(dir, |a| a.auth_tokens_file = Some(tokens)).await;
    // And one without tokens (everyone may read keys; masking is then the store's reveal_secrets=False).
    let open = TestApp::spawn().await;

    let runs = [
        (
            "with tokens",
            secured.addr.to_string(),
            vec!["--token", KEY_TOKEN, "--masked-token", MASKED_TOKEN],
        ),
        ("without tokens", open.url(), vec![]),
    ]
    .map(|(what, server, args)| {
        let (python, site) = (python.clone(), site.clone());
        tokio::task::spawn_blocking(move || (what, run_checks(&python, &site, &server, &args)))
    });
    for run in runs {
        let (what, o) = run.await.unwrap();
        assert_passed(&o, what);
    }
    secured.stop().await;
    open.stop().await;
}

#[test]
fn python_stubs_match_proto() {
    let python = std::env::var("REGISTRY_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", "import grpc_tools.protoc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if skip_without("python3 with grpcio-tools", found) {
        return;
    }
    let o = Command::new(&python)
        .arg(python_dir().join("generate_stubs.py"))
        .arg("--check")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "the adapter's stubs drifted from proto/:\n{}",
        output_text(&o)
    );
}
