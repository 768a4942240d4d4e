//! How a client command reaches a server: the `--server` address forms, the bearer token, TLS, and
//! errors that say what to fix (an unreachable server, plaintext against TLS, a refusal in words).
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_client::HealthClient;

use crate::config::ClientArgs;

/// How long the first contact (connect and one health check) may take.
const FIRST_CONTACT: Duration = Duration::from_secs(10);

/// A connection to the server that sends the bearer token, when there is one, with every call.
pub type ServerChannel = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to each request (nothing without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// `--server` as a URL: `host:port` is plaintext (`http://host:port`), the form grpcurl and grpcio
/// take; `http://` and `https://` are kept.
pub fn server_url(raw: &str) -> anyhow::Result<String> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    if raw.contains('@') {
        // user:password@host would be echoed in every message about the server.
        return Err(usage(
            "--server must not carry credentials (user@ or user:password@): send a token with \
             REGISTRY_TOKEN instead"
                .to_owned(),
        ));
    }
    let url = if lower.starts_with("http://") || lower.starts_with("https://") {
        let (scheme, rest) = raw.split_once("://").unwrap_or(("http", raw));
        format!("{}://{rest}", scheme.to_ascii_lowercase())
    } else if raw.contains("://") {
        return Err(usage(format!(
            "--server {raw}: the scheme must be http:// or https:// (or none: host:port is plaintext)"
        )));
    } else {
        format!("http://{raw}")
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| usage(format!("--server {raw} is not an address like 127.0.0.1:50051, http://host:port or https://host:port")))?;
    if host_port(&url).matches(':').count() > 1 && !raw.contains('[') {
        return Err(usage(format!(
            "--server {raw}: put an IPv6 address in brackets, e.g. [::1]:50051"
        )));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(usage(format!(
            "--server {raw} names no host: give host:port, e.g. 127.0.0.1:50051"
        )));
    }
    Ok(url)
}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(super::Usage(message))
}

/// `host:port` of a URL that [`server_url`] accepted.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// A connection to the server `client` names (TLS with `https://`), checked with one health call,
/// with errors that say what to fix and never the token.
pub(crate) async fn connect(client: &ClientArgs) -> anyhow::Result<ServerChannel> {
    let server = server_url(&client.server)?;
    let tls = server.starts_with("https://");
    let bearer = bearer(&client.token_env)?;
    let mut endpoint = Channel::from_shared(server.clone())
        .with_context(|| format!("--server {server} is not a URL like http://127.0.0.1:50051"))?
        .connect_timeout(FIRST_CONTACT)
        // A peer that vanishes without a word ends a long watch instead of hanging it.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if tls {
        endpoint = endpoint
            .tls_config(tls_config(client)?)
            .context("cannot set up TLS")?;
    } else if client.ca_file.is_some()
        || client.client_cert.is_some()
        || client.tls_server_name.is_some()
    {
        return Err(usage(format!(
            "--ca-file, --client-cert and --tls-server-name need an https:// --server (got {server})"
        )));
    }
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return Err(unreachable(&server, &error_chain(&e)).await),
    };
    // The first call is where a plaintext client meets a TLS server (or the reverse): make it a
    // health check (always open, no token needed) so that the mismatch is told in words here.
    let mut health = HealthClient::new(channel.clone());
    let mut check = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
    check.set_timeout(FIRST_CONTACT);
    if let Err(status) = health.check(check).await {
        if is_transport_failure(&status) {
            return Err(unreachable(&server, &transport_detail(&status)).await);
        }
    }
    if bearer.0.is_some() && !tls && !is_loopback(&server) {
        eprintln!(
            "warning: sending the token in ${} unencrypted to {server}: anyone on the path can \
             read it; serve TLS and use https://",
            client.token_env
        );
    }
    Ok(InterceptedService::new(channel, bearer))
}

/// Whether a status came from the connection rather than from the server's handler.
fn is_transport_failure(status: &tonic::Status) -> bool {
    use tonic::Code;
    // tonic keeps the transport error as the status' source; a status the server sent has none.
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::DeadlineExceeded
            | Code::Cancelled
    ) && (std::error::Error::source(status).is_some() || status.metadata().is_empty())
}

/// The message of a status with the causes tonic keeps in its source chain.
fn transport_detail(status: &tonic::Status) -> String {
    let chain = error_chain(status);
    if chain.is_empty() {
        code_words(status.code()).to_owned()
    } else {
        chain
    }
}

/// The error for a server that could not be reached at `server`, with what to do about it.
async fn unreachable(server: &str, detail: &str) -> anyhow::Error {
    let addr = host_port(server);
    let lower = detail.to_ascii_lowercase();
    if server.starts_with("https://")
        && (lower.contains("invalidcontenttype") || lower.contains("corrupt message"))
    {
        return anyhow::anyhow!(
            "the server at {addr} answers plaintext; use http://{addr} (or plain {addr}), not https://"
        );
    }
    if !server.starts_with("https://") {
        match probe(&addr).await {
            Some(Answer::Tls) => {
                return anyhow::anyhow!(
                    "the server at {addr} answers TLS; use https://{addr} (with --ca-file when its certificate is not from a public CA)"
                )
            }
            Some(Answer::Closed) => {
                return anyhow::anyhow!(
                    "the server at {addr} answers TLS (it closed a plaintext HTTP/2 connection: {detail}); use https://{addr}"
                )
            }
            _ => {}
        }
    }
    if lower.contains("certificate") || lower.contains("handshake") {
        return anyhow::anyhow!(
            "TLS with the server at {addr} failed: {detail}. Give --ca-file with the CA that signed \
             its certificate, --tls-server-name when the certificate names another host, and \
             --client-cert/--client-key when it requires mutual TLS"
        );
    }
    if lower.contains("connection refused") {
        return anyhow::anyhow!(
            "cannot reach the server at {addr}: connection refused. Is it running? Start one with \
             `profile-registry serve`, or work on a stopped server's data dir with --data-dir DIR"
        );
    }
    anyhow::anyhow!(
        "cannot reach the server at {addr}: {detail}. Is it running there? Start one with \
         `profile-registry serve`, or work on a stopped server's data dir with --data-dir DIR"
    )
}

/// What a server says to the first bytes of plaintext HTTP/2.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// An HTTP/2 frame: a plaintext gRPC server.
    Http2,
    /// A TLS record (an alert, most likely): the server wants TLS.
    Tls,
    /// It closed the connection without a word.
    Closed,
    /// Anything else.
    Other,
}

/// Sends the HTTP/2 connection preface to `addr` and looks at the first bytes that come back;
/// `None` when no connection could be made in time.
async fn probe(addr: &str) -> Option<Answer> {
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
        stream.write_all(&hello).await.ok()?;
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match stream.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Some(classify(&head[..got]))
    };
    tokio::time::timeout(Duration::from_secs(3), talk)
        .await
        .ok()
        .flatten()
}

/// Tells an HTTP/2 frame header from a TLS record header.
fn classify(head: &[u8]) -> Answer {
    match head {
        [] => Answer::Closed,
        // TLS record: content type 20..=24, then version 3.x.
        [20..=24, 3, ..] => Answer::Tls,
        [_, _, _, 4, ..] => Answer::Http2,
        _ => Answer::Other,
    }
}

/// Whether the URL's host is this machine (a token sent there in plaintext stays on it).
fn is_loopback(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(crate::is_loopback_host))
        .unwrap_or(false)
}

/// The token in `$var` (when set and not empty) as an authorization header.
fn bearer(var: &str) -> anyhow::Result<Bearer> {
    let Some(token) = std::env::var(var).ok().filter(|t| !t.is_empty()) else {
        return Ok(Bearer(None));
    };
    let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
        anyhow::anyhow!("the token in ${var} is not valid: it must be printable ASCII")
    })?;
    Ok(Bearer(Some(value)))
}

fn tls_config(client: &ClientArgs) -> anyhow::Result<ClientTlsConfig> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
    };
    let mut tls = match &client.ca_file {
        Some(path) => {
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca-file", path)?))
        }
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (&client.client_cert, &client.client_key) {
        tls = tls.identity(Identity::from_pem(
            read("--client-cert", cert)?,
            read("--client-key", key)?,
        ));
    }
    if let Some(name) = &client.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

/// An error and its causes on one line (tonic's own says only "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A gRPC status code in words, as people say it ("not found", "permission denied").
pub fn code_words(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented by this server",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A refusal by the server: the code in words, then the server's message.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code_words(*.code))]
pub struct Refused {
    /// The gRPC code.
    pub code: tonic::Code,
    /// What the server said.
    pub message: String,
}

/// The error for a call the server refused, e.g. `not found: profile "x" not found`.
pub(crate) fn status_error(s: tonic::Status) -> anyhow::Error {
    let message = if s.message().is_empty() {
        "(no message)".to_owned()
    } else {
        s.message().to_owned()
    };
    anyhow::Error::new(Refused {
        code: s.code(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for url in [
            "http://127.0.0.1:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
            "http://127.8.9.10",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:50051",
            "http://profile-registry:50051",
            "http://[2001:db8::1]:50051",
            "http://localhost.example.com:50051",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn server_addresses_take_three_forms() {
        assert_eq!(
            server_url("localhost:50051").unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(
            server_url("http://10.0.0.5:50051").unwrap(),
            "http://10.0.0.5:50051"
        );
        assert_eq!(
            server_url("https://registry:443").unwrap(),
            "https://registry:443"
        );
        assert_eq!(server_url("[::1]:50051").unwrap(), "http://[::1]:50051");
        assert_eq!(
            server_url("HTTPS://registry:443").unwrap(),
            "https://registry:443"
        );
        for bad in [
            "grpc://host:1",
            "",
            "http://",
            "a b:1",
            "::1:50051",
            "https://user:pw@host:1",
        ] {
            assert!(server_url(bad).is_err(), "{bad}");
        }
        assert_eq!(host_port("https://registry:443/"), "registry:443");
        assert_eq!(host_port("http://registry:443/a/b"), "registry:443");
    }

    #[test]
    fn first_bytes_tell_http2_from_tls() {
        assert_eq!(classify(&[0, 0, 6, 4, 0, 0, 0, 0, 0]), Answer::Http2);
        assert_eq!(classify(&[21, 3, 3, 0, 2, 2, 50]), Answer::Tls);
        assert_eq!(classify(&[]), Answer::Closed);
        assert_eq!(classify(b"HTTP/1.1 400"), Answer::Other);
    }

    #[test]
    fn refusals_name_the_code_in_words() {
        let e = status_error(tonic::Status::not_found("profile \"x\" not found"));
        assert_eq!(e.to_string(), "not found: profile \"x\" not found");
        let e = status_error(tonic::Status::permission_denied(""));
        assert_eq!(e.to_string(), "permission denied: (no message)");
    }
}
