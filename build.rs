//! Compiles the OpAMP protobuf definitions in `proto/` with a pure-Rust protobuf compiler
//! (protox), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/opamp/v1/opamp.proto",
        "proto/opamp/v1/anyvalue.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
