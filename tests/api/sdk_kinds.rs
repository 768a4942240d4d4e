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

use crate::helpers::{sdk_python, skip_without};

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
