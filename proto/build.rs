//! Generates the tonic/prost code for `proto/switchboard/v1/*.proto`, with
//! protoc from the `protoc-bin-vendored` crate (no system protoc needed), and
//! a file descriptor set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["proto/switchboard/v1/api.proto", "proto/switchboard/v1/raft.proto"];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("switchboard_descriptor.bin"))
        // The CLI prints responses as JSON with the proto field names.
        .type_attribute(".switchboard.v1", "#[derive(serde::Serialize)]")
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // etcd's KV subset, client only: `switchboard bench --compare etcd`.
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/etcd/kv.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/etcd/kv.proto");
    Ok(())
}
