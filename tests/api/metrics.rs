//! The Prometheus endpoint counts calls by service, method and code, and reports store gauges.
use std::time::Duration;

use profile_registry::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{create, profile, TestApp};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn line_with<'a>(text: &'a str, parts: &[&str]) -> Option<&'a str> {
    text.lines().find(|l| parts.iter().all(|p| l.contains(p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_method_and_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = TestApp::spawn_with(|a| a.metrics_listen = Some(port)).await;
    let mut c = app.profiles().await;
    create(&mut c, profile("scraped", "gpt-4o", None)).await;
    for _ in 0..3 {
        let err = c
            .get_profile(pb::GetProfileRequest {
                name: "missing".into(),
                reveal_secrets: false,
                resolve_connection: false,
                revision: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = scrape(port).await;

    let created = line_with(
        &text,
        &[
            "grpc_server_handled_total{",
            "method=\"CreateProfile\"",
            "code=\"Ok\"",
            "service=\"profileregistry.v1.ProfileService\"",
        ],
    )
    .unwrap_or_else(|| panic!("no CreateProfile counter in:\n{text}"));
    // The recorder is process-wide, so other tests' creates may be counted too.
    let created: f64 = created.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(created >= 1.0, "{created}");
    let missing = line_with(
        &text,
        &[
            "grpc_server_handled_total{",
            "method=\"GetProfile\"",
            "code=\"NotFound\"",
        ],
    )
    .unwrap_or_else(|| panic!("no GetProfile NotFound counter in:\n{text}"));
    let count: f64 = missing.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{missing}");
    assert!(
        line_with(
            &text,
            &[
                "grpc_server_handling_seconds_bucket{",
                "method=\"GetProfile\""
            ]
        )
        .is_some(),
        "a latency histogram"
    );
    assert!(text.contains("registry_flush_seconds"), "flush latency");
    for gauge in [
        "registry_profiles",
        "registry_conversations",
        "registry_database_bytes",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(gauge)),
            "{gauge} missing"
        );
    }
}
