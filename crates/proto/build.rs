//! Generates the gRPC client and server from `proto/crawler.proto` (needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/crawler.proto");
    tonic_prost_build::configure().compile_protos(&["../../proto/crawler.proto"], &["../../proto"])?;
    Ok(())
}
