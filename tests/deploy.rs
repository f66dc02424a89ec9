//! What a release ships, checked against the binary: the Dockerfile builds with the documented
//! `cargo build --release --locked`, runs as a non-root numeric user and exposes the ports and
//! flags `serve` has; `--version` and `GET /api/version` agree (version, commit, build date);
//! and `cargo install --locked --path .` from a clone needs nothing outside the clone.

mod common;

use common::deploy::{flags, port_of, root, serve_default, serve_flags};
use common::repo::TestRepo;
use common::served::ServeProcess;
use std::ffi::OsStr;
use std::process::Command;

const BUILD_COMMAND: &str = "cargo build --release --locked";

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((word.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

fn all(word: &str) -> Vec<String> {
    instructions()
        .into_iter()
        .filter(|(w, _)| w == word)
        .map(|(_, rest)| rest)
        .collect()
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`{text}` is not an exec-form array: {e}"))
}

#[test]
fn the_image_is_built_with_the_documented_command() {
    let builds: Vec<String> = all("RUN")
        .into_iter()
        .filter(|r| r.contains("cargo"))
        .collect();
    assert_eq!(
        builds,
        [BUILD_COMMAND],
        "the build stage runs exactly the documented command"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(BUILD_COMMAND),
        "the README documents `{BUILD_COMMAND}`"
    );
    let stages = all("FROM");
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].ends_with(" AS build"), "{stages:?}");
    assert!(
        stages[1].starts_with("debian:") && stages[1].contains("-slim"),
        "a small runtime image: {stages:?}"
    );
    let copies = all("COPY");
    assert!(
        copies
            .iter()
            .any(|c| c
                == "--from=build /src/target/release/opamp-gitops /usr/local/bin/opamp-gitops"),
        "the release binary is what the image runs: {copies:?}"
    );
    assert_eq!(
        json_array(&all("ENTRYPOINT")[0]),
        ["/usr/local/bin/opamp-gitops"]
    );
}

#[test]
fn the_image_runs_as_a_non_root_numeric_user() {
    let users = all("USER");
    assert_eq!(users.len(), 1, "{users:?}");
    let (uid, gid) = users[0].split_once(':').expect("uid:gid");
    let (uid, gid): (u32, u32) = (uid.parse().expect("numeric"), gid.parse().expect("numeric"));
    assert!(uid > 0 && gid > 0, "not root: {uid}:{gid}");
    // Kubernetes' runAsUser in deploy/kubernetes is the same user.
    let deployment =
        std::fs::read_to_string(root().join("deploy/kubernetes/base/deployment.yaml")).unwrap();
    assert!(
        deployment.contains(&format!("runAsUser: {uid}")),
        "the Deployment runs as the image's user"
    );
}

#[test]
fn the_image_exposes_and_serves_the_ports_and_flags_serve_has() {
    let exposed: Vec<u16> = all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(|p| p.parse().expect("a port")))
        .collect();
    let opamp = port_of(&serve_default("listen"));
    let admin = port_of(&serve_default("admin-listen"));
    assert_eq!(exposed, [opamp, admin]);

    let cmd = json_array(&all("CMD")[0]);
    assert_eq!(cmd[0], "serve");
    let known = serve_flags();
    let given = flags(&cmd[1..]);
    for (name, _) in &given {
        assert!(known.contains(name), "--{name} is not a serve flag");
    }
    let value = |name: &str| {
        given
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("CMD sets --{name}"))
    };
    assert_eq!(port_of(&value("listen")), opamp);
    assert_eq!(port_of(&value("admin-listen")), admin);
    let volumes = all("VOLUME");
    assert_eq!(
        volumes.iter().map(|v| json_array(v)).collect::<Vec<_>>(),
        [[value("cache-dir")]],
        "--cache-dir is the image's volume"
    );
}

#[test]
fn the_documented_image_tag_is_the_crate_version() {
    // The `-t opamp-gitops:"$(...)"` of the build command in the Dockerfile's header.
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let tag = text
        .lines()
        .find_map(|l| {
            l.trim_start_matches('#')
                .trim()
                .strip_prefix("-t opamp-gitops:")
        })
        .expect("a documented `-t opamp-gitops:` tag");
    let tag = tag.trim_end_matches('.').trim();
    let output = Command::new("bash")
        .args(["-c", &format!("printf '%s' {tag}")])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        env!("CARGO_PKG_VERSION")
    );
    // The manifests deploy that tag.
    let kustomization =
        std::fs::read_to_string(root().join("deploy/kubernetes/base/kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains(&format!("newTag: {}", env!("CARGO_PKG_VERSION"))),
        "deploy/kubernetes/base deploys the crate's version"
    );
}

/// `--version`: `opamp-gitops VERSION`, then `commit: C` and `build date: D`.
fn long_version() -> (String, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let version = lines
        .next()
        .and_then(|l| l.strip_prefix("opamp-gitops "))
        .expect("opamp-gitops VERSION")
        .to_owned();
    let mut field = |name: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("`{name}` in {text}"))
            .to_owned()
    };
    let commit = field("commit: ");
    let date = field("build date: ");
    (version, commit, date)
}

#[test]
fn api_version_agrees_with_dash_dash_version() {
    let (version, commit, build_date) = long_version();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "a git checkout builds with its commit: {commit}"
    );
    let date = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$").unwrap();
    assert!(date.is_match(&build_date), "RFC 3339 UTC: {build_date}");

    let repo = TestRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(&[
        OsStr::new("--repo"),
        repo.path().as_os_str(),
        OsStr::new("--cache-dir"),
        cache.path().as_os_str(),
        OsStr::new("--store"),
        OsStr::new("memory"),
    ]);
    let answer = common::admin::get(server.admin, "/api/version");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        serde_json::json!({"version": version, "commit": commit, "build_date": build_date})
    );
    // The build_info metric says the same.
    let metrics = common::admin::get(server.admin, "/metrics").body;
    assert!(
        metrics.contains(&format!(
            "opamp_gitops_build_info{{version=\"{version}\",commit=\"{commit}\"}} 1"
        )),
        "{metrics}"
    );
}

#[test]
fn cargo_install_from_a_clone_needs_nothing_outside_it() {
    // `cargo install --locked --path .` resolves the package's own dependencies (not the dev
    // ones) from Cargo.lock: each must come from crates.io, none from a path or git outside.
    // Resolved for this host only, from the registry cache the test build filled.
    let rustc = std::path::Path::new(env!("CARGO")).with_file_name("rustc");
    let rustc = Command::new(&rustc).arg("-vV").output().expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "Cargo.lock is complete and current (--locked): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "opamp-gitops" && p["source"].is_null())
        .expect("the package itself");
    assert_eq!(package["name"], "opamp-gitops");
    let deps = package["dependencies"].as_array().unwrap();
    assert!(!deps.is_empty());
    for dep in deps.iter().filter(|d| d["kind"] != "dev") {
        let source = dep["source"].as_str().unwrap_or_default();
        assert!(
            source == "registry+https://github.com/rust-lang/crates.io-index",
            "{} comes from {:?} (path {:?}): `cargo install` from a clone could not fetch it",
            dep["name"],
            dep["source"],
            dep["path"]
        );
    }
    let targets: Vec<&str> = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["opamp-gitops"], "one binary is installed");
    // What the build embeds is tracked by git, so a clone has it.
    let tracked = Command::new("git")
        .args([
            "ls-files",
            "--error-unmatch",
            "build.rs",
            "Cargo.lock",
            "proto",
            "schemas",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        tracked.status.success(),
        "{}",
        String::from_utf8_lossy(&tracked.stderr)
    );
}
