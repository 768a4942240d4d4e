//! Black-box tests: a real server on 127.0.0.1:0 with its own temp data dir, real clients.
mod auth;
mod bad_input;
mod conversation_crash;
mod conversation_files;
mod conversations;
mod deploy;
mod e2e;
mod helpers;
mod leaks;
mod metrics;
mod process;
mod profiles;
mod props;
mod secrets_at_rest;
mod tls;
mod transfer;
mod watch;
