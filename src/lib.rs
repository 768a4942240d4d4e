//! profile-registry: a gRPC registry of OpenHands LLM profiles over an embedded sled database.
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod openhands;
pub mod pb;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;

/// Lower-case hex of `bytes` (digests in files and reports, keys without a readable shape).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Whether `host` (a name or an IP address, IPv6 with or without brackets) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
