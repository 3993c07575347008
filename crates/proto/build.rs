//! Generates the gRPC client and server from `proto/crawler.proto`, and from
//! `proto/compat/crawler.proto` (the original system's package-less API) (needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/crawler.proto");
    println!("cargo:rerun-if-changed=../../proto/compat/crawler.proto");
    tonic_prost_build::configure().compile_protos(&["../../proto/crawler.proto"], &["../../proto"])?;
    let compat = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("compat");
    std::fs::create_dir_all(&compat)?;
    tonic_prost_build::configure()
        .out_dir(&compat)
        .compile_protos(&["../../proto/compat/crawler.proto"], &["../../proto/compat"])?;
    Ok(())
}
