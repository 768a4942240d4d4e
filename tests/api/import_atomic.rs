//! `import --on-conflict fail` against a server is one atomic request, however large the folder:
//! the other policies go in chunks under the server's request limit, FAIL may not (a conflict in a
//! later chunk would leave the earlier ones written).
use crate::helpers::{create, full_listing, output_text, profile, run_cli, ChildServer};
use profile_registry::pb::profile_service_client::ProfileServiceClient;

/// Files of about 1.3 KiB: 3,000 of them are more than one 3 MiB chunk.
const FILES: usize = 3000;

fn write_folder(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let key = "k".repeat(1200);
    for i in 0..FILES {
        let text = format!(r#"{{"model": "gpt-4o", "api_key": "sk-{i}-{key}"}}"#);
        std::fs::write(dir.join(format!("p{i:05}.json")), text).unwrap();
    }
}

/// The server's ImportProfiles log lines.
fn import_lines(server: &ChildServer) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains("ImportProfiles") && l.contains("documents"))
        .map(str::to_owned)
        .collect()
}

/// The import lines once there are at least `want` (or after 10 s): the server writes a call's
/// line just after its answer, so the CLI can exit before the last line is in the log.
fn import_lines_at_least(server: &ChildServer, want: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines = import_lines(server);
        if lines.len() >= want || std::time::Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_fail_sends_one_request_and_writes_all_or_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = ChildServer::start(data.path(), &["--max-request-bytes", "16777216"]);
    let url = format!("http://{}", server.addr);
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("profiles");
    write_folder(&folder);
    let folder = folder.to_str().unwrap();

    // A name stored already, at the end of the folder: FAIL writes nothing at all.
    let last = format!("p{:05}", FILES - 1);
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ProfileServiceClient::new(channel);
    create(&mut client, profile(&last, "gpt-4o-mini", None)).await;
    let o = run_cli(
        &["import", folder, "--on-conflict", "fail", "--server", &url],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let names: Vec<String> = full_listing(&mut client)
        .await
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(names, vec![last.clone()], "FAIL wrote part of the folder");
    let lines = import_lines_at_least(&server, 1);
    assert_eq!(lines.len(), 1, "one request, not chunks: {lines:#?}");
    assert!(
        lines[0].contains(&format!("{FILES} documents")),
        "{}",
        lines[0]
    );

    // Without the conflict, the same single request writes every profile.
    std::fs::remove_file(std::path::Path::new(folder).join(format!("{last}.json"))).unwrap();
    let o = run_cli(
        &["import", folder, "--on-conflict", "fail", "--server", &url],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", output_text(&o));
    assert_eq!(full_listing(&mut client).await.len(), FILES);
    let lines = import_lines_at_least(&server, 2);
    assert_eq!(lines.len(), 2, "{lines:#?}");

    // SKIP still goes in chunks under the limit (here: at least two requests).
    let o = run_cli(&["import", folder, "--server", &url], &[]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let lines = import_lines_at_least(&server, 4);
    assert!(lines.len() >= 4, "{lines:#?}");

    // Reads that copy data out leave a line at the default level, like writes.
    let out = src.path().join("exported");
    let o = run_cli(&["export", out.to_str().unwrap(), "--server", &url], &[]).await;
    assert!(o.status.success(), "{}", output_text(&o));
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("ExportProfiles")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_fail_over_the_request_limit_is_refused_saying_which_limit() {
    let data = tempfile::tempdir().unwrap();
    // The default limit, 4 MiB: 3,000 files of 1.3 KiB are 3.9 MiB, so a limit of 2 MiB.
    let server = ChildServer::start(data.path(), &["--max-request-bytes", "2097152"]);
    let url = format!("http://{}", server.addr);
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("profiles");
    write_folder(&folder);
    let o = run_cli(
        &[
            "import",
            folder.to_str().unwrap(),
            "--on-conflict",
            "fail",
            "--server",
            &url,
        ],
        &[],
    )
    .await;
    let text = output_text(&o);
    assert_ne!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("--max-request-bytes"), "{text}");
    assert!(text.contains("one atomic request"), "{text}");
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ProfileServiceClient::new(channel);
    assert!(
        full_listing(&mut client).await.is_empty(),
        "nothing written"
    );
    // SKIP goes in chunks of 3 MiB, over this server's limit too: the same message does not
    // blame FAIL for it.
    let o = run_cli(
        &[
            "import",
            folder.to_str().unwrap(),
            "--server",
            &url_of(&server),
        ],
        &[],
    )
    .await;
    assert!(
        !output_text(&o).contains("one atomic request"),
        "{}",
        output_text(&o)
    );
}

fn url_of(server: &ChildServer) -> String {
    format!("http://{}", server.addr)
}
