//! The SDK's newer kinds of file (issue 19): provider connections and meta-profiles. Files the
//! real SDK 1.58.2 writes are read and written back byte for byte, and what the registry writes
//! (each secret form, for connections) loads in the SDK's own stores to the same values.
use std::path::{Path, PathBuf};
use std::process::Command;

use profile_registry::openhands::connections::{parse_file, to_file_text, FILE_NAME};
use profile_registry::openhands::meta_profiles;
use profile_registry::openhands::profile::SecretsOut;
use profile_registry::openhands::secrets::FernetKey;
use serde_json::Value;

use crate::helpers::{output_text, run_cli, sdk_python, skip_without, TestApp};

const OH_SECRET_KEY: &str = "connections-test-secret-key";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the SDK script `name`; its stdout.
fn run(python: &Path, name: &str, args: &[&str]) -> String {
    let o = Command::new(python)
        .arg(script(name))
        .args(args)
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("OH_SECRET_KEY", OH_SECRET_KEY)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn sdk(python: &Path, args: &[&str]) -> String {
    run(python, "sdk_connections.py", args)
}

/// The 1.58.2 Python (these kinds are newer than 1.43.1); `None`, said (or failed, when e2e is
/// required), without it.
fn newest_sdk() -> Option<PathBuf> {
    let found = sdk_python("1.58.2");
    if found.is_none() {
        skip_without(
            "Python 3.12 with openhands-sdk 1.58.2 ($REGISTRY_SDK_PYTHONS)",
            false,
        );
    }
    found
}

#[test]
fn sdk_connection_files_round_trip_in_every_secret_form() {
    let Some(python) = newest_sdk() else {
        return;
    };
    let key = FernetKey::from_secret_key(OH_SECRET_KEY);
    let tmp = tempfile::tempdir().unwrap();
    let (plain, enc) = (tmp.path().join("plain"), tmp.path().join("enc"));
    let target = |dir: &Path, form: &str| format!("{}:{form}", dir.display());
    sdk(
        &python,
        &[
            "write",
            &target(&plain, "plaintext"),
            &target(&enc, "encrypted"),
        ],
    );

    // Plaintext: the same bytes back.
    let text = std::fs::read_to_string(plain.join(FILE_NAME)).unwrap();
    let connections = parse_file(&text, None).unwrap();
    assert_eq!(connections.len(), 3);
    assert_eq!(to_file_text(&connections, &SecretsOut::Plaintext), text);

    // Encrypted by the SDK: read with the key, to the same values; a token without it is refused.
    let sealed = std::fs::read_to_string(enc.join(FILE_NAME)).unwrap();
    assert!(parse_file(&sealed, None)
        .unwrap_err()
        .contains("no key was given"));
    assert_eq!(parse_file(&sealed, Some(&key)).unwrap(), connections);

    // What the registry writes, each form, loads in the SDK's own store (one SDK process).
    let forms = [
        ("plaintext", SecretsOut::Plaintext, "plaintext"),
        ("encrypted", SecretsOut::Encrypted(&key), "encrypted"),
        ("redacted", SecretsOut::Redacted, "plaintext"),
    ];
    let mut args = vec!["load".to_owned(), target(&plain, "plaintext")];
    for (form, secrets, load_form) in &forms {
        let dir = tmp.path().join(format!("out-{form}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE_NAME), to_file_text(&connections, secrets)).unwrap();
        args.push(target(&dir, load_form));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let loaded: Value = serde_json::from_str(&sdk(&python, &args)).unwrap();
    let expected = &loaded[plain.to_str().unwrap()];
    assert_eq!(expected.as_array().map(Vec::len), Some(3), "{loaded}");
    for (form, _, _) in &forms {
        let dir = tmp.path().join(format!("out-{form}"));
        let mut want = expected.clone();
        if *form == "redacted" {
            for c in want.as_array_mut().unwrap() {
                c["api_key"] = Value::Null;
            }
        }
        assert_eq!(loaded[dir.to_str().unwrap()], want, "{form}");
    }
}

#[test]
fn sdk_meta_profiles_round_trip_byte_for_byte() {
    let Some(python) = newest_sdk() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (theirs, ours) = (tmp.path().join("theirs"), tmp.path().join("ours"));
    run(
        &python,
        "sdk_meta_profiles.py",
        &["write", theirs.to_str().unwrap()],
    );
    std::fs::create_dir_all(&ours).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&theirs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let meta = meta_profiles::parse_file(&text).unwrap();
            assert_eq!(
                meta_profiles::to_file_text(&meta),
                text,
                "{}",
                path.display()
            );
            std::fs::write(
                ours.join(path.file_name().unwrap()),
                meta_profiles::to_file_text(&meta),
            )
            .unwrap();
            names.push(path);
        }
    }
    assert_eq!(names.len(), 3);
    let load = |dir: &Path| -> Value {
        serde_json::from_str(&run(
            &python,
            "sdk_meta_profiles.py",
            &["load", dir.to_str().unwrap()],
        ))
        .unwrap()
    };
    let (a, b) = (load(&theirs), load(&ours));
    assert_eq!(a.as_object().map(|m| m.len()), Some(3), "{a}");
    assert_eq!(a, b);
}

/// Every file of `dir` below it (hidden ones, the SDK's locks, left out): relative path and bytes.
fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_owned(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_whole_sdk_home_goes_through_import_and_export() {
    let Some(python) = newest_sdk() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = |name: &str| tmp.path().join(name);
    let arg = |name: &str, form: &str| format!("{}:{form}", home(name).display());
    // Arrange: two homes written by the SDK's own stores, keys in plaintext and encrypted.
    run(
        &python,
        "sdk_home.py",
        &[
            "write",
            &arg("plain", "plaintext"),
            &arg("enc", "encrypted"),
        ],
    );
    let env = [("OH_SECRET_KEY", OH_SECRET_KEY)];
    let path = |name: &str| home(name).display().to_string();

    // Act: each home into its own registry (through the server), and out again in each form.
    let mut summaries = String::new();
    for (source, outs) in [
        (
            "plain",
            vec![("out-plain", "plaintext"), ("out-redacted", "redacted")],
        ),
        ("enc", vec![("out-enc", "encrypted")]),
    ] {
        let app = TestApp::spawn().await;
        let url = app.url();
        let import = ["import", "--home", &path(source), "--server", &url];
        let o = run_cli(&import, &env).await;
        assert!(o.status.success(), "{}", output_text(&o));
        summaries.push_str(&output_text(&o));
        for (out, form) in outs {
            let export = [
                "export",
                "--home",
                &path(out),
                "--server",
                &url,
                "--secrets",
                form,
            ];
            let o = run_cli(&export, &env).await;
            assert!(o.status.success(), "{}", output_text(&o));
        }
        // Imported again, every kind is unchanged.
        let o = run_cli(&import, &env).await;
        let again = output_text(&o);
        for kind in [
            "profiles",
            "provider_connections.json",
            "meta-profiles",
            "agent-profiles",
        ] {
            let line = again
                .lines()
                .find(|l| l.contains(&format!("{kind}:")))
                .unwrap_or_default();
            assert!(
                line.contains("created 0, updated 0, unchanged 3"),
                "{kind}: {again}"
            );
        }
        app.stop().await;
    }
    for kind in [
        "profiles",
        "provider_connections.json",
        "meta-profiles",
        "agent-profiles",
    ] {
        assert!(
            summaries.contains(&format!("{kind}: 3 files: created 3")),
            "{summaries}"
        );
    }

    // Assert: plaintext comes back byte for byte, every file.
    let (theirs, ours) = (files_below(&home("plain")), files_below(&home("out-plain")));
    assert_eq!(theirs.len(), 10, "{theirs:?}");
    assert_eq!(
        theirs.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        ours.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for ((path, a), (_, b)) in theirs.iter().zip(&ours) {
        assert!(
            a == b,
            "{} differs:\n{}\n---\n{}",
            path.display(),
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    // And the SDK's own stores load every export to the same values (the redacted one without keys).
    let loaded: Value = serde_json::from_str(&run(
        &python,
        "sdk_home.py",
        &[
            "load",
            &arg("plain", "plaintext"),
            &arg("out-plain", "plaintext"),
            &arg("enc", "encrypted"),
            &arg("out-enc", "encrypted"),
            &arg("out-redacted", "plaintext"),
        ],
    ))
    .unwrap();
    let of = |name: &str| loaded[path(name).as_str()].clone();
    let want = of("plain");
    assert_eq!(
        want["profiles"]["linked.v1"]["api_key"], "sk-\u{fc}-team",
        "resolved from its connection"
    );
    assert_eq!(want["agent_profiles"]["default"]["llm_profile_ref"], "gone");
    for name in ["out-plain", "enc", "out-enc"] {
        assert_eq!(of(name), want, "{name}");
    }
    let mut redacted = want.clone();
    for c in redacted["connections"].as_array_mut().unwrap() {
        c["api_key"] = Value::Null;
    }
    for p in redacted["profiles"].as_object_mut().unwrap().values_mut() {
        p["api_key"] = Value::Null;
    }
    assert_eq!(of("out-redacted"), redacted);
}
