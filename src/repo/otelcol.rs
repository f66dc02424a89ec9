//! `--otelcol PATH`: the Collector a team runs validates each distinct render with its own
//! `validate --config` command, which knows exactly which components that distribution has.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A validation that takes longer is treated as a failure.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Otelcol {
    path: PathBuf,
}

impl Otelcol {
    pub fn new(path: impl Into<PathBuf>) -> Otelcol {
        Otelcol { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `otelcol validate` on the files (several `--config` flags, in file-name order, which
    /// the Collector merges as the Supervisor does). `Err` carries the Collector's own message.
    pub fn validate(
        &self,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        // Running a process blocks; tell a multi-threaded runtime to move other work away.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.run(files))
            }
            _ => self.run(files),
        }
    }

    fn run(&self, files: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let mut command = Command::new(&self.path);
        command.arg("validate");
        for (index, (name, body)) in files.iter().enumerate() {
            let file = dir
                .path()
                .join(format!("{index}-{}", name.replace('/', "_")));
            std::fs::write(&file, body)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            command.arg(format!("--config={}", file.display()));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.path.display()))?;
        let mut stderr = child.stderr.take().expect("piped stderr");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "`{} validate` did not finish within {TIMEOUT:?}",
                        self.path.display()
                    ));
                }
                Err(e) => return Err(format!("waiting for {}: {e}", self.path.display())),
            }
        };
        let output = reader.join().unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(collector_message(&output))
        }
    }
}

/// The Collector's error, without its log lines and usage text.
fn collector_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("Usage:") && !l.starts_with("Flags:") && !l.starts_with("-"))
        .collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("Error:"))
        .unwrap_or(0);
    let message = lines[start..].join(" ");
    if message.is_empty() {
        "the Collector refused the config".into()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_line_and_what_follows_is_kept() {
        let stderr = "2026-11-26T01:00:00 info some log\nError: failed to get config: cannot unmarshal the configuration: decoding failed due to the following error(s):\n\n'exporters' unknown type: \"file\" for id: \"file\"\n";
        let m = collector_message(stderr);
        assert!(m.starts_with("Error: failed to get config"), "{m}");
        assert!(m.contains("unknown type: \"file\""));
    }
}
