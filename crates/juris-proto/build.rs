//! Generates the Rust code for `proto/juris/v1/*.proto` at build time, so the
//! schema files stay the single source of truth (nothing generated is
//! committed). Needs `protoc` (`scripts/install-test-deps` installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("juris/v1/raft.proto"),
        root.join("juris/v1/control.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&files, &[root])?;
    Ok(())
}
