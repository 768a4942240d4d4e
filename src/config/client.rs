//! How a client command reaches its records: a running server (address, bearer token, TLS), or a
//! data dir opened directly.
use std::path::PathBuf;

use clap::Args;

/// How a client command reaches a running server: its address, the bearer token, TLS.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// The running server: `host:port` or `http://host:port` (plaintext), or `https://host:port`
    /// when it serves TLS.
    #[arg(long, env = "REGISTRY_SERVER", default_value = "127.0.0.1:50051")]
    pub server: String,

    /// The environment variable holding the bearer token to send (when the server requires
    /// tokens). The token is read from the environment, never from a flag, so it stays out of `ps`
    /// and shell history.
    #[arg(long, env = "REGISTRY_TOKEN_ENV", default_value = "REGISTRY_TOKEN")]
    pub token_env: String,

    /// With https://: PEM CA certificates to verify the server's certificate with [default: the
    /// Mozilla root CAs].
    #[arg(long, env = "REGISTRY_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// With https://: PEM client certificate, for a server that requires mutual TLS.
    #[arg(long, env = "REGISTRY_CLIENT_CERT", value_name = "FILE")]
    #[arg(requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// With https://: the PEM private key of --client-cert.
    #[arg(long, env = "REGISTRY_CLIENT_KEY", value_name = "FILE")]
    #[arg(requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// With https://: the name the server's certificate must carry, when it differs from the
    /// --server host (e.g. through `kubectl port-forward` to localhost).
    #[arg(long, env = "REGISTRY_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl ClientArgs {
    /// The server at `url`, no token, no TLS settings.
    pub fn plain(url: &str) -> Self {
        Self {
            server: url.to_owned(),
            token_env: "REGISTRY_TOKEN".to_owned(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
        }
    }
}

/// Where a client command sends its work.
#[derive(Clone, Debug, Args)]
pub struct TargetArgs {
    /// The running server to talk to.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Work on this database folder directly instead of a server (only while no server holds it).
    #[arg(long = "data-dir", env = "REGISTRY_DIRECT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir: the server's key file (`<key id>:<base64>` lines) [default: the data dir's secret.key].
    #[arg(long, env = "REGISTRY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}
