//! TLS and mutual TLS with certificates made in the test, certificate reload, and grpcurl -cacert.
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::e2e::tools::grpcurl;
use crate::helpers::{output_text, profile, profiles_folder, run_cli, skip_without, TestApp};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and key (PEM) for `purpose`.
    fn leaf(&self, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        p.extended_key_usages = vec![purpose];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_server_files(dir: &Path, ca: &Ca) {
    let (cert, key) = ca.leaf(ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("server.crt"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &Ca,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn can_create(channel: Channel, name: &str) -> bool {
    ProfileServiceClient::new(channel)
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile(name, "gpt-4o", None)),
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_follows_rotated_certificates() {
    let files = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("ca-one"), Ca::new("ca-two"));
    write_server_files(files.path(), &ca1);
    let (cert, key) = (
        files.path().join("server.crt"),
        files.path().join("server.key"),
    );
    let app = TestApp::spawn_with(|a| {
        a.tls_cert = Some(cert.clone());
        a.tls_key = Some(key.clone());
    })
    .await;

    assert!(can_create(tls_channel(app.addr, &ca1, None).await.unwrap(), "over-tls").await);
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await;
    let plain_ok = match plain {
        Ok(ch) => can_create(ch, "plaintext").await,
        Err(_) => false,
    };
    assert!(!plain_ok, "a plaintext client must not get through");

    // cert-manager replaces the files: new connections get the new certificate.
    write_server_files(files.path(), &ca2);
    let mut rotated = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(ch) = tls_channel(app.addr, &ca2, None).await {
            if can_create(ch, "after-rotation").await {
                rotated = true;
                break;
            }
        }
    }
    assert!(rotated, "the rotated certificate was not picked up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let files = tempfile::tempdir().unwrap();
    let (ca, clients_ca, other_ca) = (
        Ca::new("server-ca"),
        Ca::new("clients-ca"),
        Ca::new("stranger-ca"),
    );
    write_server_files(files.path(), &ca);
    std::fs::write(files.path().join("clients.pem"), clients_ca.pem()).unwrap();
    let app = TestApp::spawn_with(|a| {
        a.tls_cert = Some(files.path().join("server.crt"));
        a.tls_key = Some(files.path().join("server.key"));
        a.tls_client_ca = Some(files.path().join("clients.pem"));
    })
    .await;

    let good = clients_ca.leaf(ExtendedKeyUsagePurpose::ClientAuth);
    assert!(
        can_create(
            tls_channel(app.addr, &ca, Some(good)).await.unwrap(),
            "with-cert"
        )
        .await
    );
    for (case, identity) in [
        ("no client certificate", None),
        (
            "a stranger's certificate",
            Some(other_ca.leaf(ExtendedKeyUsagePurpose::ClientAuth)),
        ),
    ] {
        let ok = match tls_channel(app.addr, &ca, identity).await {
            Ok(ch) => can_create(ch, "refused").await,
            Err(_) => false,
        };
        assert!(!ok, "{case} must be refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_with_cacert_works() {
    let Some(grpcurl) = grpcurl() else {
        skip_without("grpcurl", false);
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("grpcurl-ca");
    write_server_files(files.path(), &ca);
    std::fs::write(files.path().join("ca.pem"), ca.pem()).unwrap();
    let app = TestApp::spawn_with(|a| {
        a.tls_cert = Some(files.path().join("server.crt"));
        a.tls_key = Some(files.path().join("server.key"));
    })
    .await;
    let ca_path = files.path().join("ca.pem");
    let addr = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(grpcurl)
            .arg("-cacert")
            .arg(&ca_path)
            .args([addr.as_str(), "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("profileregistry.v1.ProfileService"),
        "{stdout}"
    );
}

/// Whether the mutual-TLS server at `addr` holds profile `name`.
async fn holds(addr: std::net::SocketAddr, ca: &Ca, clients_ca: &Ca, name: &str) -> bool {
    let identity = clients_ca.leaf(ExtendedKeyUsagePurpose::ClientAuth);
    let channel = tls_channel(addr, ca, Some(identity)).await.unwrap();
    ProfileServiceClient::new(channel)
        .get_profile(pb::GetProfileRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_speak_tls_and_mutual_tls() {
    let files = tempfile::tempdir().unwrap();
    let (ca, clients_ca) = (Ca::new("cli-server-ca"), Ca::new("cli-clients-ca"));
    write_server_files(files.path(), &ca);
    let path = |name: &str| files.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("clients.pem"), clients_ca.pem()).unwrap();
    let (cert, key) = clients_ca.leaf(ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(path("client.crt"), cert).unwrap();
    std::fs::write(path("client.key"), key).unwrap();
    let app = TestApp::spawn_with(|a| {
        a.tls_cert = Some(files.path().join("server.crt"));
        a.tls_key = Some(files.path().join("server.key"));
        a.tls_client_ca = Some(files.path().join("clients.pem"));
    })
    .await;
    let src = profiles_folder(files.path(), "over-tls", "sk-tls-0001");
    let server = format!("https://{}", app.addr);
    let (ca_file, client_cert, client_key) =
        (path("ca.pem"), path("client.crt"), path("client.key"));
    let plain = format!("http://{}", app.addr);
    let src = src.to_str().unwrap();
    let run = |server: &str, extra: &[&str]| {
        let mut args = vec!["import", src, "--server", server];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = run_cli(&args, &[]).await;
            (o.status.success(), output_text(&o))
        }
    };
    let identity = ["--client-cert", &client_cert, "--client-key", &client_key];

    // Refused: the public roots do not know our CA; no client certificate; a name the
    // certificate does not carry; TLS flags on a plaintext URL.
    let (ok, text) = run(&server, &identity).await;
    assert!(!ok && text.to_lowercase().contains("certificate"), "{text}");
    let (ok, text) = run(&server, &["--ca-file", &ca_file]).await;
    assert!(!ok, "no client certificate must be refused: {text}");
    let wrong_name = [
        &identity[..],
        &[
            "--ca-file",
            &ca_file,
            "--tls-server-name",
            "elsewhere.example",
        ],
    ]
    .concat();
    let (ok, text) = run(&server, &wrong_name).await;
    assert!(!ok && text.to_lowercase().contains("certificate"), "{text}");
    let (ok, text) = run(&plain, &["--ca-file", &ca_file]).await;
    assert!(!ok && text.contains("https://"), "{text}");
    assert!(
        !holds(app.addr, &ca, &clients_ca, "over-tls").await,
        "a refused import stored the profile"
    );

    // The CA and the client certificate: imported.
    let good = [&identity[..], &["--ca-file", &ca_file]].concat();
    let (ok, text) = run(&server, &good).await;
    assert!(ok, "{text}");
    assert!(holds(app.addr, &ca, &clients_ca, "over-tls").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_health_port_answers_probes_beside_tls() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("probe-ca");
    write_server_files(files.path(), &ca);
    let app = TestApp::spawn_with(|a| {
        a.tls_cert = Some(files.path().join("server.crt"));
        a.tls_key = Some(files.path().join("server.key"));
        a.health_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let health_addr = app.health_addr.expect("a health port was asked for");
    let plain = crate::helpers::connect(health_addr).await;

    // What the kubelet asks: the overall status, in plaintext.
    let mut health = HealthClient::new(plain.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    let status = health.check(check("")).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);
    // Nothing else is served there, with or without a token.
    let err = ProfileServiceClient::new(plain)
        .get_profile(pb::GetProfileRequest {
            name: "any".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // The main port still speaks only TLS.
    assert!(can_create(tls_channel(app.addr, &ca, None).await.unwrap(), "via-tls").await);

    // At shutdown the probe port says NOT_SERVING before it goes.
    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(first, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(app.stop());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a status change within 10 s")
        .unwrap()
        .map(|m| m.status);
    assert_eq!(next, Some(ServingStatus::NotServing as i32));
    stopping.await.unwrap();
    let after = tokio::time::timeout(Duration::from_secs(5), async {
        let channel = Channel::from_shared(format!("http://{health_addr}"))
            .unwrap()
            .connect()
            .await
            .ok()?;
        HealthClient::new(channel).check(check("")).await.ok()
    })
    .await;
    assert!(
        matches!(after, Ok(None)),
        "the probe port must close once the server has stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_of_a_tls_server_is_told_to_use_https() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("mismatch-ca");
    write_server_files(files.path(), &ca);
    let app = TestApp::spawn_with(|a| {
        a.tls_cert = Some(files.path().join("server.crt"));
        a.tls_key = Some(files.path().join("server.key"));
    })
    .await;
    for server in [app.addr.to_string(), format!("http://{}", app.addr)] {
        let o = run_cli(&["list", "--server", &server], &[]).await;
        assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
        let text = output_text(&o);
        assert!(text.contains("answers TLS"), "{server}: {text}");
        assert!(
            text.contains(&format!("https://{}", app.addr)),
            "{server}: {text}"
        );
    }
    // With https:// and the CA, the same command lists.
    std::fs::write(files.path().join("ca.pem"), ca.pem()).unwrap();
    let ca_file = files.path().join("ca.pem");
    let o = run_cli(
        &[
            "list",
            "--server",
            &format!("https://{}", app.addr),
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--tls-server-name",
            "localhost",
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert!(output_text(&o).starts_with("NAME"), "{}", output_text(&o));
}
