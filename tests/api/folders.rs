//! Folders that change under the CLI: a FIFO or a folder where a profile file should be, files
//! that are not regular. Nothing hangs, every problem names its file, and export writes nothing
//! when any target is in the way.
use std::time::{Duration, Instant};

use crate::helpers::{create, full_listing, output_text, profile, run_cli, TestApp};

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reads_around_a_fifo_and_names_it() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("profiles");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("good.json"), r#"{"model": "gpt-4o"}"#).unwrap();
    mkfifo(&folder.join("stuck.json"));
    let started = Instant::now();
    let o = run_cli(
        &["import", folder.to_str().unwrap(), "--server", &app.url()],
        &[],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "import hung on a FIFO"
    );
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let text = output_text(&o);
    assert!(
        text.contains("INVALID stuck.json: is not a regular file"),
        "{text}"
    );
    let mut profiles = app.profiles().await;
    let names: Vec<String> = full_listing(&mut profiles)
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(names, ["good"], "the regular file was imported");

    // The same in a conversation folder: refused by name, no hang.
    let conversations = dir.path().join("conversations");
    let one = conversations.join("0b5c6f5e1c2d4e8f9a0b1c2d3e4f5a6b");
    std::fs::create_dir_all(one.join("events")).unwrap();
    std::fs::write(
        one.join("base_state.json"),
        r#"{"id": "0b5c6f5e-1c2d-4e8f-9a0b-1c2d3e4f5a6b"}"#,
    )
    .unwrap();
    mkfifo(&one.join("events").join("event-00000-e0.json"));
    let started = Instant::now();
    let o = run_cli(
        &[
            "import-conversations",
            conversations.to_str().unwrap(),
            "--server",
            &app.url(),
        ],
        &[],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "import hung on a FIFO"
    );
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("event-00000-e0.json is not a regular file"),
        "{}",
        output_text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_nothing_when_a_target_is_a_folder() {
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    for name in ["alpha", "bravo", "charlie"] {
        create(&mut profiles, profile(name, "gpt-4o", None)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("bravo.json")).unwrap();
    let o = run_cli(
        &["export", out.to_str().unwrap(), "--server", &app.url()],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("bravo.json: a folder is in the way"),
        "{}",
        output_text(&o)
    );
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".profiles.lock")
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["bravo.json"],
        "nothing was written, no temp file left"
    );
}
