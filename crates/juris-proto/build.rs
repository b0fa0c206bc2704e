//! Generates the Rust code for `proto/juris/v1/*.proto` at build time, so the
//! schema files stay the single source of truth (nothing generated is
//! committed). Needs `protoc` (`scripts/install-test-deps` installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with `env!`: cargo may reuse this
    // compiled script for a checkout at another path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
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
