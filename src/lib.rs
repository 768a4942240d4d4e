//! profile-registry: a gRPC registry of OpenHands LLM profiles over an embedded sled database.
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod health;
pub mod metrics;
pub mod openhands;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;

/// Code generated from `proto/` by tonic-prost-build, and the descriptor set served by reflection.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("profileregistry.v1");

    /// The encoded descriptor set of every proto in `proto/`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("profileregistry_descriptor");
}
