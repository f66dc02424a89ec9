//! Compiles the OpAMP protobuf definitions in `proto/` with a pure-Rust protobuf compiler
//! (protox), so no system `protoc` is needed; records the git commit being built and the build
//! date for `build_info`, `--version` and `GET /api/version`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/opamp/v1/opamp.proto",
        "proto/opamp/v1/anyvalue.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rustc-env=OPAMP_GITOPS_COMMIT={}", commit());
    println!("cargo:rustc-env=OPAMP_GITOPS_BUILD_DATE={}", build_date());
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
    // An empty value (a Dockerfile's unset build argument) counts as unset.
    if let Some(commit) = std::env::var("OPAMP_GITOPS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
    {
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

/// The build date as RFC 3339 UTC: `SOURCE_DATE_EPOCH` when set (reproducible builds, the
/// image's build argument), else now. "Now" is when this script last ran: cargo reruns it when
/// the commit or these variables change, so the date is that of the build of this commit.
fn build_date() -> String {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => text
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("SOURCE_DATE_EPOCH `{text}` is not a number of seconds")),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    rfc3339(epoch)
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`, by Howard Hinnant's `civil_from_days`: a date
/// crate in the build dependencies would cost more than these lines.
fn rfc3339(epoch: u64) -> String {
    let (days, secs) = ((epoch / 86_400) as i64, epoch % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}
