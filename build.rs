//! Compiles proto/ with protox (no system protoc) into a descriptor set for reflection and tonic code.
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/profileregistry/v1/profile.proto",
        "proto/profileregistry/v1/conversation.proto",
        "proto/profileregistry/v1/admin.proto",
        "proto/profileregistry/v1/documents.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds these at compile time but cannot ask for a rebuild itself.
    println!("cargo:rerun-if-changed=src/store/postgres/migrations");
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("profileregistry_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
