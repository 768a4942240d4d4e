//! Real outside clients: grpcurl (the README's examples, as printed), Python grpcio and TypeScript
//! on Node.js (@grpc/grpc-js).
pub mod tools;

use std::process::Command;

use crate::helpers::{skip_without, TestApp};
use tools::{grpcurl, node_client, python_with_grpc};

/// Runs every grpcurl command in README.md, in order, against a fresh server; each must succeed
/// unless the block is marked as showing an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_grpcurl_examples_work_as_printed() {
    let Some(grpcurl) = grpcurl() else {
        skip_without("grpcurl", false);
        return;
    };
    let app = TestApp::spawn().await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let examples = tools::grpcurl_examples(&readme);
    assert!(
        examples.len() >= 10,
        "README should show grpcurl examples for every rpc"
    );
    let addr = app.addr.to_string();
    for ex in examples {
        let script = ex.command.replace("localhost:50051", &addr).replacen(
            "grpcurl",
            &grpcurl.display().to_string(),
            1,
        );
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match &ex.expect_error {
            None => assert!(
                out.status.success(),
                "README example failed:\n{}\n{stdout}{stderr}",
                ex.command
            ),
            Some(code) => {
                assert!(
                    !out.status.success(),
                    "README example should fail:\n{}",
                    ex.command
                );
                assert!(
                    stderr.contains(code.as_str()),
                    "expected {code} from:\n{}\ngot {stderr}",
                    ex.command
                );
            }
        }
    }
}

/// Runs every `profile-registry` command of the README's ```sh blocks that needs no more than a
/// running server (the everyday commands), in order, in a fresh folder, against a fresh server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_cli_examples_work_as_printed() {
    let app = TestApp::spawn().await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let examples = tools::readme_commands(&readme, "profile-registry");
    assert!(
        examples.len() >= 8,
        "README should show the everyday commands"
    );
    let cwd = tempfile::tempdir().unwrap();
    let bin = crate::helpers::binary().display().to_string();
    for ex in examples {
        let script = ex.command.replace("profile-registry ", &format!("{bin} "));
        let (server, dir) = (app.addr.to_string(), cwd.path().to_owned());
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new("bash");
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
                cmd.env_remove(k);
            }
            cmd.arg("-c")
                .arg(&script)
                .current_dir(dir)
                .env("REGISTRY_SERVER", server)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "README example failed:\n{}\n{}{}",
            ex.command,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What the examples did: claude was put, written as a file, put back, renamed, deleted.
    let written = std::fs::read_to_string(cwd.path().join("claude.json")).unwrap();
    assert!(written.contains("\"api_key\": \"**********\""), "{written}");
    let mut profiles = app.profiles().await;
    assert!(crate::helpers::full_listing(&mut profiles).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_every_rpc_and_field() {
    let Some(grpcurl) = grpcurl() else {
        skip_without("grpcurl", false);
        return;
    };
    let app = TestApp::spawn().await;
    let addr = app.addr.to_string();
    let run = |args: Vec<String>| {
        let out = Command::new(&grpcurl).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let list = run(vec!["-plaintext".into(), addr.clone(), "list".into()]);
    for s in [
        "profileregistry.v1.ProfileService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(list.contains(s), "{s} missing from:\n{list}");
    }
    // Every rpc and every field carries a comment: grpcurl describe is the user's manual.
    let mut todo = Vec::new();
    for name in [
        "profileregistry.v1.ProfileService",
        "profileregistry.v1.AdminService",
        "profileregistry.v1.ProviderConnectionService",
        "profileregistry.v1.MetaProfileService",
        "profileregistry.v1.AgentProfileService",
    ] {
        let service = run(vec![
            "-plaintext".into(),
            addr.clone(),
            "describe".into(),
            name.into(),
        ]);
        tools::assert_every_line_commented(&service, "rpc ");
        todo.extend(tools::message_names(&service));
    }
    let mut done = std::collections::BTreeSet::new();
    while let Some(m) = todo.pop() {
        if !done.insert(m.clone()) {
            continue;
        }
        let text = run(vec![
            "-plaintext".into(),
            addr.clone(),
            "describe".into(),
            m.clone(),
        ]);
        tools::assert_every_line_commented(&text, "");
        todo.extend(tools::message_names(&text));
    }
    assert!(done.len() >= 20, "described only {done:?}");
    for service in [
        "",
        "profileregistry.v1.ProfileService",
        "profileregistry.v1.AdminService",
    ] {
        let out = run(vec![
            "-plaintext".into(),
            "-d".into(),
            format!("{{\"service\":\"{service}\"}}"),
            addr.clone(),
            "grpc.health.v1.Health/Check".into(),
        ]);
        assert!(out.contains("\"SERVING\""), "{service:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_round_trip() {
    let Some(python) = python_with_grpc() else {
        skip_without(
            "python3 with grpcio, grpcio-tools and grpcio-health-checking",
            false,
        );
        return;
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let example = move |addr: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(format!("{root}/tests/clients/python/profile_client.py"))
            .args(["--server", addr, "--proto-dir", &format!("{root}/proto")])
            .env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    };
    run_example_twice(
        example,
        &[
            "health SERVING",
            "created revision 1",
            "masked api_key",
            "revealed api_key",
            "NOT_FOUND mapped",
            "list has py-profile (1 profiles)",
            "watch initial PUT py-profile",
            "watch PUT py-watched",
            "watch cancelled",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_client_round_trip() {
    let client = node_client();
    if skip_without(
        "node with tests/clients/node/node_modules (npm ci)",
        client.is_some(),
    ) {
        return;
    }
    let client = client.unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let example = move |addr: &str| {
        let mut cmd = Command::new(&client.node);
        cmd.arg(&client.tsx)
            .arg("profile_client.ts")
            .args(["--server", addr, "--proto-dir", &format!("{root}/proto")])
            .current_dir(&client.dir);
        cmd
    };
    run_example_twice(
        example,
        &[
            "health SERVING",
            "created revision 1",
            "masked api_key",
            "revealed api_key",
            "list has ts-profile (1 profiles)",
            "watch initial PUT ts-profile",
            "watch PUT ts-watched",
            "watch cancelled",
            "NOT_FOUND mapped to grpc.status.NOT_FOUND",
        ],
    )
    .await;
}

/// Runs a client example twice against one fresh server (it must clean up after earlier runs) and
/// checks that each run succeeds and prints every step.
async fn run_example_twice(
    example: impl Fn(&str) -> Command + Send + Sync + 'static,
    steps: &[&str],
) {
    let app = TestApp::spawn().await;
    let example = std::sync::Arc::new(example);
    for run in 1..=2 {
        let (example, addr) = (std::sync::Arc::clone(&example), app.addr.to_string());
        let out = tokio::task::spawn_blocking(move || {
            example(&addr)
                .env_remove("REGISTRY_TOKEN")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the example failed in run {run}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for step in steps {
            assert!(
                stdout.contains(step),
                "run {run}: missing step {step:?} in:\n{stdout}"
            );
        }
    }
}
