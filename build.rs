//! Compiles proto/ with protox (no system protoc) into a descriptor set for reflection and tonic code.
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/profileregistry/v1/profile.proto",
        "proto/profileregistry/v1/conversation.proto",
        "proto/profileregistry/v1/admin.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
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
