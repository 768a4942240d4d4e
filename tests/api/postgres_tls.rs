//! The server reaches PostgreSQL over TLS with libpq's URL parameters (`sslmode`, `sslrootcert`):
//! verified against the CA, every connection encrypted, and a wrong CA refused with an error that
//! names the database and never the password; a role that needs a client certificate logs in with
//! `sslcert`/`sslkey`. Needs `.ci/postgres`'s cluster (TLS on, its CA in `REGISTRY_TEST_POSTGRES_CA`,
//! the client certificate of the role `registry_cert` beside it).
use std::process::Command;
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;

use crate::helpers::{
    binary, connect, create, output_text, postgres_admin, postgres_database, profile, skip_without,
    ChildServer,
};

/// `url` with `password` set and `params` appended as its query.
fn with(url: &str, password: &str, params: &str) -> String {
    let url = url.replacen("://postgres@", &format!("://postgres:{password}@"), 1);
    format!("{url}?{params}")
}

fn psql_value(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The admin URL and the CA certificate of `.ci/postgres`'s cluster (and `beside`, a file that must
/// sit next to the CA, when not empty), or `None` (skipped) without them.
fn tls_cluster(beside: &str) -> Option<(String, std::path::PathBuf)> {
    let admin = postgres_admin();
    let ca = std::env::var_os("REGISTRY_TEST_POSTGRES_CA")
        .map(std::path::PathBuf::from)
        .filter(|ca| ca.is_file() && (beside.is_empty() || ca.with_file_name(beside).is_file()));
    let found = admin.is_some() && ca.is_some();
    if skip_without(
        &format!(
            "PostgreSQL with TLS (.ci/postgres: REGISTRY_TEST_POSTGRES, its CA in REGISTRY_TEST_POSTGRES_CA{})",
            if beside.is_empty() { String::new() } else { format!(", {beside} beside it") }
        ),
        found,
    ) {
        return None;
    }
    admin.zip(ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reaches_postgres_over_verified_tls_and_refuses_a_wrong_ca() {
    let Some((admin, ca)) = tls_cluster("") else {
        return;
    };
    let ca = ca.display().to_string();
    let database = format!("tls_{}", uuid::Uuid::new_v4().simple());
    let url = postgres_database(&admin, &database);
    let password = "pw-never-printed-7731";
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("keys");
    std::fs::write(&key, "t1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let key = key.display().to_string();

    // A server on a verify-full URL serves, and every connection it holds is encrypted.
    let verified = with(
        &url,
        password,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let mut server = ChildServer::start(
        &tmp.path().join("data"),
        &["--store", &verified, "--secret-key-file", &key],
    );
    let mut client = ProfileServiceClient::new(connect(server.addr).await);
    create(&mut client, profile("over-tls", "gpt-4o", Some("sk-tls-1"))).await;
    let got = client
        .get_profile(pb::GetProfileRequest {
            name: "over-tls".into(),
            reveal_secrets: true,
            resolve_connection: false,
            revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.llm.unwrap().api_key.as_deref(), Some("sk-tls-1"));
    let counts = psql_value(
        &admin,
        &format!(
            "SELECT count(*) || ' ' || count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{database}' \
             AND a.application_name = 'profile-registry'"
        ),
    );
    let (all, encrypted) = counts.split_once(' ').unwrap();
    assert!(all.parse::<u32>().unwrap() >= 2, "connections: {counts}");
    assert_eq!(
        all, encrypted,
        "every connection encrypted (all, tls): {counts}"
    );
    server.signal("TERM");
    let (code, _) = server.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(!server.log().contains(password), "{}", server.log());

    // A CA that did not sign the database's certificate: refused before anything is read or
    // written, naming the database, never the password.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let wrong_ca = tmp.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();
    let wrong = with(
        &url,
        password,
        &format!("sslmode=verify-full&sslrootcert={}", wrong_ca.display()),
    );
    for args in [
        vec!["migrate", "--store", &wrong],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &wrong,
            "--secret-key-file",
            &key,
        ],
    ] {
        let out = Command::new(binary()).args(&args).output().unwrap();
        let text = output_text(&out);
        assert!(!out.status.success(), "{args:?}: {text}");
        let target = url.rsplit_once('@').unwrap().1;
        assert!(text.contains(target), "{args:?} names {target}: {text}");
        assert!(
            text.to_lowercase().contains("certificate"),
            "{args:?} says why: {text}"
        );
        assert!(!text.contains(password), "{args:?}: {text}");
    }

    // A CA file that is not there is named as such.
    let missing = tmp.path().join("no-such-ca.pem");
    let out = Command::new(binary())
        .args([
            "migrate",
            "--store",
            &with(
                &url,
                password,
                &format!("sslmode=verify-full&sslrootcert={}", missing.display()),
            ),
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("sslrootcert {}: cannot read", missing.display())),
        "{text}"
    );
    assert!(!text.contains(password), "{text}");

    // sslmode=require encrypts without checking the certificate; the data written over
    // verify-full is there.
    let required = with(&url, password, "sslmode=require");
    let out = Command::new(binary())
        .args(["migrate", "--store", &required])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        psql_value(
            &url,
            "SELECT count(*) FROM profiles WHERE name = 'over-tls'"
        ),
        "1"
    );
}

/// A database role that may log in only with a client certificate (`hostssl ... cert`): the server
/// logs in with `sslcert`/`sslkey` in the URL, and without them is refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_in_to_postgres_with_a_client_certificate() {
    let Some((admin, ca)) = tls_cluster("client.crt") else {
        return;
    };
    let cert = ca.with_file_name("client.crt");
    let ca = ca.display().to_string();
    let key = cert.with_file_name("client.key");
    let database = format!("tls_cert_{}", uuid::Uuid::new_v4().simple());
    let url = postgres_database(&admin, &database).replacen("://postgres@", "://registry_cert@", 1);
    psql_value(
        &admin,
        &format!("ALTER DATABASE {database} OWNER TO registry_cert"),
    );
    let verify = format!("sslmode=verify-full&sslrootcert={ca}");
    let with_cert = format!(
        "{url}?{verify}&sslcert={}&sslkey={}",
        cert.display(),
        key.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::write(&keys, "t1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let keys = keys.display().to_string();

    let without = Command::new(binary())
        .args(["migrate", "--store", &format!("{url}?{verify}")])
        .output()
        .unwrap();
    let text = output_text(&without);
    assert!(!without.status.success(), "{text}");
    assert!(
        text.contains("requires a valid client certificate"),
        "{text}"
    );

    let mut server = ChildServer::start(
        &tmp.path().join("data"),
        &["--store", &with_cert, "--secret-key-file", &keys],
    );
    let mut client = ProfileServiceClient::new(connect(server.addr).await);
    create(&mut client, profile("by-cert", "gpt-4o", None)).await;
    let user = psql_value(
        &admin,
        &format!(
            "SELECT DISTINCT a.usename || ' ' || s.client_dn FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{database}' \
             AND a.application_name = 'profile-registry'"
        ),
    );
    assert_eq!(user, "registry_cert /CN=registry_cert");
    server.signal("TERM");
    let (code, _) = server.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", server.log());
}
