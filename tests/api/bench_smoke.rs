//! The benchmark completes on a tiny data set and prints every row and target (no timing asserted:
//! the figures mean something only in a release run; see README, Performance).
use std::process::Command;

use crate::helpers::binary;

const ROWS: [&str; 15] = [
    "Health/Check",
    "GetProfile",
    "ListProfiles (page 100)",
    "UpdateProfile (durable)",
    "GetConversation (resolve_llms)",
    "AppendEvents (batch 1)",
    "AppendEvents (batch 100)",
    "ListEvents (page 100)",
    "SDK LLMProfileStore.load",
    "SDK LLMProfileStore.save",
    "etcd Range (serializable)",
    "etcd Put",
    "GetProfile, small store",
    "GetProfile, large store",
    "sync: UpdateProfile to file",
];

const TARGETS: [&str; 11] = [
    "GetProfile c1 calls/s >= 0.9 x Health/Check",
    "GetProfile c64 calls/s >= 0.9 x Health/Check",
    "GetProfile c64 >= 10 x SDK load",
    "GetProfile c64 >= 3 x etcd Range c64",
    "UpdateProfile c64 >= 2 x etcd Put c64",
    "AppendEvents (batch 1) c64 >= 10 x c1",
    "server RSS after the full run <= 64 MiB",
    "start to SERVING on the data set <= 0.5 s",
    "start to SERVING with 300 profiles <= 0.5 s",
    "import of 100 SDK files",
    "sync: change to file p99 < 1 s",
];

#[test]
fn the_benchmark_completes_and_prints_every_row() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");

    // Act
    let out = Command::new(env!("CARGO_BIN_EXE_registry-bench"))
        .args(["--profiles", "100", "--conversations", "4", "--events", "3"])
        .args(["--duration", "200ms", "--connections", "2"])
        .args(["--small-profiles", "100", "--large-profiles", "300"])
        .args(["--sync-changes", "20"])
        .arg("--server-bin")
        .arg(binary())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the benchmark failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ROWS.iter().chain(&TARGETS) {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "no {name:?} line in:\n{stdout}"
        );
    }
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = figures["rows"].as_array().unwrap();
    assert!(rows.len() >= ROWS.len(), "{figures}");
    assert_eq!(figures["setup"]["profiles"], 100);
    // The export's baseline (bare files created in the same run) is printed and recorded.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("export baseline: creating 100 bare files")),
        "no export baseline in:\n{stdout}"
    );
    let created = figures["create_files_seconds"].as_f64().unwrap();
    assert!(created > 0.0, "{figures}");
    // The large store's server was restarted and timed.
    let start = figures["start_to_serving_large_store_seconds"]
        .as_f64()
        .unwrap();
    assert!(start > 0.0, "{figures}");
}
