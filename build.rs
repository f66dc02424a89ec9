//! Compiles the OpAMP protobuf definitions in `proto/` with a pure-Rust protobuf compiler
//! (protox), so no system `protoc` is needed; records the git commit being built for
//! `build_info`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/opamp/v1/opamp.proto",
        "proto/opamp/v1/anyvalue.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rustc-env=OPAMP_GITOPS_COMMIT={}", commit());
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}

/// The commit checked out, from `OPAMP_GITOPS_COMMIT` when set (an image built from a source
/// tarball), else `git rev-parse HEAD`; "unknown" outside a git checkout.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=OPAMP_GITOPS_COMMIT");
    if let Ok(commit) = std::env::var("OPAMP_GITOPS_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|text| text.trim().to_owned())
    };
    // HEAD moves on checkout; the branch ref it points to moves on commit. In a worktree
    // `.git` is a file, so git says where these live. A path that does not exist is not
    // watched: cargo would rerun this script on every build.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}
