//! The third-party client drivers under tests/clients, installed by tests/clients/install.sh.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The venv's python, installing the clients first (idempotent, fast when done before).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let output = Command::new("bash")
                .arg(root().join("install.sh"))
                .output()
                .expect("run install.sh");
            assert!(
                output.status.success(),
                "tests/clients/install.sh failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            PathBuf::from(
                stdout
                    .lines()
                    .last()
                    .expect("install.sh prints the python path")
                    .trim(),
            )
        })
        .clone()
}

pub fn python_driver() -> Command {
    let mut command = Command::new(python());
    command.arg(root().join("python/driver.py"));
    command
}

pub fn node_driver() -> Command {
    python(); // installs node_modules too
    let mut command = Command::new("node");
    command.arg(root().join("node/driver.js"));
    command
}
