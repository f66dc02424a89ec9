//! The Go reference peers (opamp-go agent, Collector, Supervisor), built by
//! `tests/reference/build.sh` into a cache keyed by their go.sum files.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

/// The bin directory holding `target`'s binary, building it if needed. Set
/// `OPAMP_GITOPS_REFERENCE_BIN` to use binaries built elsewhere.
pub fn bin_dir(target: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("OPAMP_GITOPS_REFERENCE_BIN") {
        return PathBuf::from(dir);
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dir)) = built.iter().find(|(t, _)| t == target) {
        return dir.clone();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(target)
        .output()
        .expect("run tests/reference/build.sh");
    assert!(
        output.status.success(),
        "tests/reference/build.sh {target} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh prints its bin dir")
            .trim(),
    );
    built.push((target.to_owned(), dir.clone()));
    dir
}

pub fn opampgo_agent() -> PathBuf {
    bin_dir("opampgo-agent").join("opampgo-agent")
}

pub fn collector() -> PathBuf {
    bin_dir("collector").join("otelcol-e2e")
}

pub fn supervisor() -> PathBuf {
    bin_dir("supervisor").join("opampsupervisor")
}
