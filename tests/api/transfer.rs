//! Import and export of SDK profile folders: the CLI as a real process, the rpcs, and the real SDK.
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use profile_registry::openhands::secrets::FernetKey;
use profile_registry::pb;
use profile_registry::pb::import_result::Outcome;
use tonic::Code;

use crate::helpers::output_text as text;
use crate::helpers::sled_only;
use crate::helpers::{
    binary, create, full_listing, profile, sdk_pythons, skip_without, ChildServer, TestApp,
};

const VERSIONS: [&str; 2] = ["1.43.1", "1.58.2"];
const OH_SECRET_KEY: &str = "test-secret-key-0001";
const SECRET_FIELDS: [&str; 4] = [
    "api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles")
}

/// Runs the CLI binary with `args` (and `env`), off the async workers.
async fn cli(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(&args)
            .env_remove("OH_SECRET_KEY")
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// The `*.json` files of a folder, by name.
fn json_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Imports `dir` into a fresh server with the CLI, exports it with `--secrets mode`, returns the output folder.
async fn round_trip(app: &TestApp, dir: &Path, mode: &str, out: &Path) {
    let env = vec![("OH_SECRET_KEY", OH_SECRET_KEY.to_owned())];
    let url = app.url();
    let imported = cli(
        args(&["import", dir.to_str().unwrap(), "--server", &url]),
        env.clone(),
    )
    .await;
    assert!(
        imported.status.success(),
        "import failed: {}",
        text(&imported)
    );
    let exported = cli(
        args(&[
            "export",
            out.to_str().unwrap(),
            "--server",
            &url,
            "--secrets",
            mode,
        ]),
        env,
    )
    .await;
    assert!(
        exported.status.success(),
        "export failed: {}",
        text(&exported)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_folders_round_trip_byte_for_byte() {
    for version in VERSIONS {
        for kind in ["redacted", "plaintext"] {
            let app = TestApp::spawn().await;
            let source = fixtures().join(version).join(kind);
            let out = app.dir.path().join("export");
            round_trip(&app, &source, kind, &out).await;
            let (want, got) = (json_files(&source), json_files(&out));
            assert_eq!(
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>(),
                "{version}/{kind}"
            );
            for (name, bytes) in &want {
                assert!(
                    got[name] == *bytes,
                    "{version}/{kind}/{name} differs:\n{}",
                    String::from_utf8_lossy(&got[name])
                );
                let mode = std::fs::metadata(out.join(name))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777;
                assert_eq!(mode, 0o600, "{name}");
            }
            assert!(out.join(".profiles.lock").exists());
            let leftovers: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_folders_decrypt_to_the_same_values() {
    let key = FernetKey::from_secret_key(OH_SECRET_KEY);
    for version in VERSIONS {
        let app = TestApp::spawn().await;
        let source = fixtures().join(version).join("encrypted");
        let out = app.dir.path().join("export");
        round_trip(&app, &source, "encrypted", &out).await;
        let (want, got) = (json_files(&source), json_files(&out));
        assert_eq!(want.len(), got.len());
        for (name, bytes) in &want {
            let a: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(bytes).unwrap();
            let b: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&got[name]).unwrap();
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{name}: key order"
            );
            for (k, va) in &a {
                let vb = &b[k];
                if SECRET_FIELDS.contains(&k.as_str()) {
                    let (sa, sb) = (va.as_str().unwrap(), vb.as_str().unwrap());
                    assert_ne!(sa, sb, "{name}.{k}: a fresh token is expected");
                    assert_eq!(
                        key.decrypt(sa),
                        key.decrypt(sb),
                        "{name}.{k}: decrypts to another value"
                    );
                    assert!(
                        key.decrypt(sb).is_some(),
                        "{name}.{k}: not decryptable with the key"
                    );
                } else {
                    assert_eq!(va.to_string(), vb.to_string(), "{name}.{k}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_reported_and_never_written() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    // Names that exist already must keep their stored profile when the file of that name is bad.
    create(
        &mut c,
        profile("schema-v2", "stored-model", Some("sk-stored")),
    )
    .await;
    create(&mut c, profile("encrypted-no-key", "stored-model", None)).await;
    let before = full_listing(&mut c).await;

    let dir = fixtures().join("broken");
    let out = cli(
        args(&[
            "import",
            dir.to_str().unwrap(),
            "--server",
            &app.url(),
            "--on-conflict",
            "overwrite",
        ]),
        vec![],
    )
    .await;
    let report = text(&out);
    assert!(
        !out.status.success(),
        "an invalid file makes the exit code non-zero:\n{report}"
    );
    let expected = [
        ("invalid-json.json", "invalid JSON"),
        ("not-an-object.json", "not a JSON object"),
        ("schema-v2.json", "newer than supported"),
        ("missing-model.json", "model is missing"),
        ("empty-model.json", "model is empty"),
        ("blank-model.json", "model is empty"),
        ("bad name!.json", "must match"),
        (".hidden.json", "must match"),
        ("link-to-valid.json", "symbolic link"),
        ("too-big.json", "over the limit"),
        ("encrypted-no-key.json", "no key was given"),
    ];
    for (file, reason) in expected {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("INVALID {file}:")))
            .unwrap_or_else(|| panic!("{file} not reported in:\n{report}"));
        assert!(line.contains(reason), "{file}: {line}");
    }
    assert!(
        !report.contains("tmpabcd") && !report.contains(".profiles.lock"),
        "ignored files are not reported:\n{report}"
    );
    assert!(!report.contains("gAAAAA"), "a token leaked into the report");
    assert!(
        report.contains("created 1,") && report.contains("invalid 11"),
        "{report}"
    );

    let after = full_listing(&mut c).await;
    let mut want = before.clone();
    want.push(
        after
            .iter()
            .find(|(n, _, _)| n == "valid")
            .cloned()
            .expect("the valid file is imported"),
    );
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(after, want, "only the valid file changed the store");
}

fn doc(name: &str, json: &str) -> pb::ProfileDocument {
    pb::ProfileDocument {
        name: name.into(),
        json: json.into(),
    }
}

fn outcomes(r: &pb::ImportProfilesResponse) -> Vec<Outcome> {
    r.results.iter().map(pb::ImportResult::outcome).collect()
}

#[tokio::test]
async fn import_rpc_conflict_policies_and_dry_run() {
    use pb::import_profiles_request::OnConflict;
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("a", "gpt-4o", None)).await;
    let import = |docs: Vec<pb::ProfileDocument>, on_conflict: OnConflict, dry_run: bool| {
        pb::ImportProfilesRequest {
            documents: docs,
            on_conflict: on_conflict as i32,
            fernet_key: String::new(),
            dry_run,
        }
    };
    let same_a = doc("a.json", r#"{"model": "gpt-4o"}"#);
    let new_a = doc("a", r#"{"model": "gpt-5"}"#);
    let b = doc("b", r#"{"model": "gpt-4o", "num_retries": 5}"#);

    let dry = c
        .import_profiles(import(
            vec![new_a.clone(), b.clone()],
            OnConflict::Overwrite,
            true,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&dry), [Outcome::Updated, Outcome::Created]);
    assert_eq!(
        full_listing(&mut c).await.len(),
        1,
        "dry run writes nothing"
    );

    let failed = c
        .import_profiles(import(
            vec![new_a.clone(), b.clone()],
            OnConflict::Fail,
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&failed), [Outcome::Skipped, Outcome::Skipped]);
    assert_eq!(
        full_listing(&mut c).await.len(),
        1,
        "FAIL with a conflict writes nothing"
    );

    let skipped = c
        .import_profiles(import(
            vec![same_a, new_a.clone(), b.clone()],
            OnConflict::Unspecified,
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        outcomes(&skipped),
        [Outcome::Unchanged, Outcome::Skipped, Outcome::Created]
    );

    let over = c
        .import_profiles(import(vec![new_a], OnConflict::Overwrite, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcomes(&over), [Outcome::Updated]);
    assert_eq!(over.results[0].revision, 2);

    let bad_key = c
        .import_profiles(pb::ImportProfilesRequest {
            fernet_key: "not-a-key".into(),
            ..import(vec![b], OnConflict::Skip, false)
        })
        .await
        .unwrap_err();
    assert_eq!(bad_key.code(), Code::InvalidArgument);
    assert!(bad_key.message().contains("fernet_key"));
    let summary: Vec<_> = full_listing(&mut c)
        .await
        .into_iter()
        .map(|(n, r, l)| (n, r, l.model))
        .collect();
    assert_eq!(
        summary,
        [
            ("a".to_owned(), 2, "gpt-5".to_owned()),
            ("b".to_owned(), 1, "gpt-4o".to_owned())
        ]
    );
}

#[tokio::test]
async fn export_rpc_pages_names_and_key_rules() {
    use pb::export_profiles_request::Secrets;
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    for n in ["a", "b", "c", "d", "e"] {
        create(&mut c, profile(n, "gpt-4o", Some("sk-x"))).await;
    }
    let req = |names: &[&str], secrets: Secrets, page_size: i32, page_token: String| {
        pb::ExportProfilesRequest {
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            secrets: secrets as i32,
            fernet_key: String::new(),
            page_size,
            page_token,
        }
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .export_profiles(req(&[], Secrets::Redacted, 2, token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.documents.len() <= 2);
        for d in &page.documents {
            assert_eq!(d.json, "{\n  \"model\": \"gpt-4o\",\n  \"api_key\": \"**********\",\n  \"schema_version\": 1\n}");
        }
        seen.extend(page.documents.into_iter().map(|d| d.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);

    let plain = c
        .export_profiles(req(&["b"], Secrets::Plaintext, 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.documents.len(), 1);
    assert!(plain.documents[0].json.contains("\"api_key\": \"sk-x\""));

    let missing = c
        .export_profiles(req(&["zz"], Secrets::Redacted, 0, String::new()))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let no_key = c
        .export_profiles(req(&[], Secrets::Encrypted, 0, String::new()))
        .await
        .unwrap_err();
    assert_eq!(no_key.code(), Code::InvalidArgument);
    assert!(no_key.message().contains("fernet_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_keeps_other_files_unless_prune() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    create(&mut c, profile("mine", "gpt-4o", None)).await;
    let out = app.dir.path().join("profiles");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("other.json"), "{\"model\": \"x\"}").unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();

    let plain = cli(
        args(&["export", out.to_str().unwrap(), "--server", &app.url()]),
        vec![],
    )
    .await;
    assert!(plain.status.success(), "{}", text(&plain));
    assert!(out.join("other.json").exists() && out.join("mine.json").exists());

    let pruned = cli(
        args(&[
            "export",
            out.to_str().unwrap(),
            "--server",
            &app.url(),
            "--prune",
        ]),
        vec![],
    )
    .await;
    assert!(pruned.status.success(), "{}", text(&pruned));
    assert!(
        !out.join("other.json").exists(),
        "--prune deletes profiles the registry does not have"
    );
    assert!(out.join("notes.txt").exists() && out.join("mine.json").exists());
}

/// `profile-registry export DIR --server URL EXTRA...`, with OH_SECRET_KEY set (for `--secrets
/// encrypted`).
async fn export_into(dir: &Path, app: &TestApp, extra: &[&str]) -> Output {
    let mut a = args(&["export", dir.to_str().unwrap(), "--server", &app.url()]);
    a.extend(extra.iter().map(|s| (*s).to_owned()));
    cli(a, vec![("OH_SECRET_KEY", OH_SECRET_KEY.to_owned())]).await
}

/// A re-export rewrites only the files whose bytes or mode differ; a symlink in a profile's place is
/// replaced by a regular file, never followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_export_rewrites_only_what_changed() {
    use std::os::unix::fs::MetadataExt;
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    for name in ["same", "edited", "loose-mode", "linked"] {
        create(&mut c, profile(name, "gpt-4o", Some("sk-re-export"))).await;
    }
    let out = app.dir.path().join("profiles");
    let export = || export_into(&out, &app, &["--secrets", "plaintext"]);
    let first = export().await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("exported 4 profiles (secrets plaintext; 4 written, 0 unchanged, 0 skipped, 0 conflicts)"),
        "{}",
        text(&first)
    );
    let inode = |name: &str| {
        std::fs::metadata(out.join(format!("{name}.json")))
            .unwrap()
            .ino()
    };
    let before: BTreeMap<&str, u64> = ["same", "edited", "loose-mode"]
        .into_iter()
        .map(|n| (n, inode(n)))
        .collect();

    // Arrange: one profile changes on the server, one file loses its mode, one becomes a symlink to
    // a file outside the folder with the same bytes.
    c.update_profile(pb::UpdateProfileRequest {
        profile: Some(profile("edited", "gpt-5", Some("sk-re-export"))),
        allow_missing: false,
        expected_revision: None,
    })
    .await
    .unwrap();
    let loose = out.join("loose-mode.json");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let outside = app.dir.path().join("outside.json");
    std::fs::rename(out.join("linked.json"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("linked.json")).unwrap();
    let outside_bytes = std::fs::read(&outside).unwrap();

    let second = export().await;
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("exported 4 profiles (secrets plaintext; 3 written, 1 unchanged, 0 skipped, 0 conflicts)"),
        "{}",
        text(&second)
    );
    assert_eq!(
        inode("same"),
        before["same"],
        "an identical file is left in place"
    );
    assert_ne!(inode("edited"), before["edited"]);
    assert_ne!(inode("loose-mode"), before["loose-mode"]);
    assert_eq!(
        std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let linked = std::fs::symlink_metadata(out.join("linked.json")).unwrap();
    assert!(linked.file_type().is_file(), "the symlink was replaced");
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        outside_bytes,
        "its target untouched"
    );
    let got = json_files(&out);
    assert!(String::from_utf8_lossy(&got["edited.json"]).contains("gpt-5"));
    assert_eq!(got["linked.json"], outside_bytes);

    let third = export().await;
    assert!(
        text(&third)
            .contains("(secrets plaintext; 0 written, 4 unchanged, 0 skipped, 0 conflicts)"),
        "{}",
        text(&third)
    );
    assert_eq!(json_files(&out), got, "nothing changed");

    // Encrypted: fresh Fernet tokens at every export, yet a file that decrypts to its profile is
    // left as it is, and so is never a conflict; a plaintext file is never taken for it.
    let encrypted = app.dir.path().join("encrypted");
    let fail = ["--secrets", "encrypted", "--on-conflict", "fail"];
    let written = export_into(&encrypted, &app, &fail[..2]).await;
    assert!(
        text(&written).contains("4 written, 0 unchanged"),
        "{}",
        text(&written)
    );
    let files = json_files(&encrypted);
    let again = export_into(&encrypted, &app, &fail).await;
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("0 written, 4 unchanged"),
        "{}",
        text(&again)
    );
    assert_eq!(json_files(&encrypted), files);
    let over_plaintext = export_into(&out, &app, &fail).await;
    assert_eq!(
        over_plaintext.status.code(),
        Some(1),
        "{}",
        text(&over_plaintext)
    );
    assert!(
        text(&over_plaintext).contains("4 conflicts"),
        "{}",
        text(&over_plaintext)
    );
}

/// The folder's files as they are, `*.tmp` included: what a refused or dry-run export must leave.
fn folder_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Export's --dry-run and --on-conflict: a file that differs from its profile is replaced by
/// default, kept with skip, and with fail nothing is written at all (exit code 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_conflicts_and_dry_run() {
    let app = TestApp::spawn().await;
    let mut c = app.profiles().await;
    for name in ["edited-here", "edited-there"] {
        create(&mut c, profile(name, "gpt-4o", None)).await;
    }
    let out = app.dir.path().join("profiles");
    let export = |extra: &'static [&'static str]| export_into(&out, &app, extra);
    let first = export(&[]).await;
    assert!(first.status.success(), "{}", text(&first));

    // Arrange: one file edited by hand, one profile changed in the registry, one new profile, a
    // stray profile file.
    let here = out.join("edited-here.json");
    std::fs::write(&here, "{\"model\": \"hand-edited\"}").unwrap();
    c.update_profile(pb::UpdateProfileRequest {
        profile: Some(profile("edited-there", "gpt-5", None)),
        allow_missing: false,
        expected_revision: None,
    })
    .await
    .unwrap();
    create(&mut c, profile("brand-new", "gpt-4o", None)).await;
    std::fs::write(out.join("stray.json"), "{\"model\": \"x\"}").unwrap();
    let before = folder_bytes(&out);

    let dry = export(&["--dry-run", "--prune"]).await;
    let dry_text = text(&dry);
    assert!(dry.status.success(), "{dry_text}");
    assert!(
        dry_text.contains("dry run, nothing written")
            && dry_text.contains("exported 3 profiles (secrets redacted; 3 written, 0 unchanged")
            && dry_text.contains("stray.json")
            && dry_text.contains("pruned 1"),
        "{dry_text}"
    );
    assert_eq!(folder_bytes(&out), before, "a dry run touches nothing");

    let failed = export(&["--on-conflict", "fail"]).await;
    let failed_text = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{failed_text}");
    for name in ["edited-here.json", "edited-there.json"] {
        assert!(
            failed_text.contains(&format!("CONFLICT {}", out.join(name).display())),
            "{failed_text}"
        );
    }
    assert!(failed_text.contains("2 conflicts"), "{failed_text}");
    assert_eq!(
        folder_bytes(&out),
        before,
        "fail writes nothing, leaves no temp file"
    );

    let skipped = export(&["--on-conflict", "skip"]).await;
    let skipped_text = text(&skipped);
    assert!(skipped.status.success(), "{skipped_text}");
    assert!(
        skipped_text.contains("1 written, 0 unchanged, 2 skipped")
            && skipped_text.contains(&format!("SKIPPED {}", here.display())),
        "{skipped_text}"
    );
    let after_skip = folder_bytes(&out);
    assert_eq!(after_skip["edited-here.json"], before["edited-here.json"]);
    assert_eq!(after_skip["edited-there.json"], before["edited-there.json"]);
    assert!(after_skip.contains_key("brand-new.json"));

    let replaced = export(&[]).await;
    assert!(
        text(&replaced).contains("2 written, 1 unchanged, 0 skipped"),
        "{}",
        text(&replaced)
    );
    let files = json_files(&out);
    assert!(String::from_utf8_lossy(&files["edited-here.json"]).contains("gpt-4o"));
    assert!(String::from_utf8_lossy(&files["edited-there.json"]).contains("gpt-5"));
    assert!(files.contains_key("stray.json"), "no --prune, no deletion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_mode_works_without_a_server_and_refuses_with_one() {
    if sled_only("--data-dir mode is sled's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let source = fixtures().join("1.58.2").join("redacted");
    let direct = cli(
        args(&[
            "import",
            source.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        vec![],
    )
    .await;
    assert!(direct.status.success(), "{}", text(&direct));
    assert!(text(&direct).contains("created 6"), "{}", text(&direct));

    let server = ChildServer::start(&data, &[]);
    let held = cli(
        args(&[
            "import",
            source.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        vec![],
    )
    .await;
    assert!(!held.status.success());
    assert!(
        text(&held).contains("a server holds this data dir"),
        "{}",
        text(&held)
    );
    let mut c = pb::profile_service_client::ProfileServiceClient::new(
        crate::helpers::connect(server.addr).await,
    );
    assert_eq!(full_listing(&mut c).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_on_start_seeds_from_a_mounted_folder() {
    // A Kubernetes ConfigMap volume: name.json -> ..data/name.json, ..data -> a timestamped folder.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mount");
    let stamp = mount.join("..2026_11_25");
    std::fs::create_dir_all(&stamp).unwrap();
    for f in ["minimal.json", "anthropic-full.json"] {
        std::fs::copy(fixtures().join("1.58.2/plaintext").join(f), stamp.join(f)).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(f), mount.join(f)).unwrap();
    }
    std::os::unix::fs::symlink("..2026_11_25", mount.join("..data")).unwrap();
    let outside = dir.path().join("outside.json");
    std::fs::write(&outside, "{\"model\": \"x\"}").unwrap();
    std::os::unix::fs::symlink(&outside, mount.join("escape.json")).unwrap();

    let server = ChildServer::start(
        &dir.path().join("data"),
        &["--import-on-start", mount.to_str().unwrap()],
    );
    let mut c = pb::profile_service_client::ProfileServiceClient::new(
        crate::helpers::connect(server.addr).await,
    );
    let names: Vec<_> = full_listing(&mut c)
        .await
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(
        names,
        ["anthropic-full", "minimal"],
        "a link out of the folder is refused"
    );
    let key = c
        .get_profile(pb::GetProfileRequest {
            name: "anthropic-full".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner()
        .llm
        .unwrap()
        .api_key;
    assert!(key.is_some_and(|k| k.starts_with("sk-")));
    assert!(
        server.log().contains("escape.json"),
        "the refused link is logged"
    );
}

/// Every exported folder (each fixture version and secret form) loads in every real SDK version with
/// the original model and secret values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_files_load_in_the_real_sdk() {
    let pythons = sdk_pythons();
    if skip_without(
        "Python 3.12 with openhands-sdk ($REGISTRY_SDK_PYTHONS)",
        !pythons.is_empty(),
    ) {
        return;
    }
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdk_load_check.py");
    let expected = fixtures().join("expected.json");
    for version in VERSIONS {
        for kind in ["redacted", "plaintext", "encrypted"] {
            let app = TestApp::spawn().await;
            let out = app.dir.path().join("export");
            round_trip(&app, &fixtures().join(version).join(kind), kind, &out).await;
            let mut runs = Vec::new();
            for python in &pythons {
                let mut cmd = Command::new(python);
                cmd.arg(&check)
                    .arg(&out)
                    .arg(&expected)
                    .args(["--select", &format!("versions/{version}/{kind}"), "--copy"])
                    .env("OPENHANDS_SUPPRESS_BANNER", "1")
                    .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                    .env_remove("OH_SECRET_KEY");
                if kind == "encrypted" {
                    cmd.env("OH_SECRET_KEY", OH_SECRET_KEY);
                }
                let python = python.display().to_string();
                runs.push(tokio::task::spawn_blocking(move || {
                    (python, cmd.output().unwrap())
                }));
            }
            for run in runs {
                let (python, o) = run.await.unwrap();
                assert!(
                    o.status.success(),
                    "{version}/{kind} with {python}:\n{}",
                    text(&o)
                );
            }
        }
    }
}
