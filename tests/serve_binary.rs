//! The `serve` command as users run it: the real binary, the `listening` line with the bound
//! addresses, both log formats, environment variables for flags, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Served {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"));
        command
            .arg("serve")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start opamp-gitops serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Served { child, lines }
    }

    fn line_containing(&self, text: &str) -> String {
        let until = Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line containing `{text}`"),
            }
        }
    }

    /// SIGTERM, then the exit code (bounded).
    fn terminate(&mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addresses(line: &str) -> (String, String) {
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
        line[start..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_owned()
    };
    (field("opamp"), field("admin"))
}

#[test]
fn serve_logs_its_bound_addresses_answers_probes_and_exits_cleanly_on_sigterm() {
    let mut served = Served::start(
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[],
    );
    let line = served.line_containing("listening opamp=");
    let (opamp, admin) = addresses(&line);
    assert!(
        opamp.starts_with("127.0.0.1:") && !opamp.ends_with(":0"),
        "{line}"
    );
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let ready = http.get(format!("http://{admin}/readyz")).call().unwrap();
    assert_eq!(ready.status(), 200, "the example repo is loaded");
    // A first run says where to look and where to point collectors.
    let urls = served.line_containing("dashboard http://");
    assert!(
        urls.contains(&format!("dashboard http://{admin}/")),
        "{urls}"
    );
    assert!(urls.contains(&format!("ws://{opamp}/v1/opamp")), "{urls}");
    assert!(urls.contains(&format!("http://{opamp}/v1/opamp")), "{urls}");
    assert_eq!(served.terminate(), Some(0), "a clean exit on SIGTERM");
}

#[test]
fn json_logs_and_flags_from_the_environment() {
    let mut served = Served::start(
        &[],
        &[
            ("OPAMP_GITOPS_LISTEN", "127.0.0.1:0"),
            ("OPAMP_GITOPS_ADMIN_LISTEN", "127.0.0.1:0"),
            ("OPAMP_GITOPS_LOG_FORMAT", "json"),
        ],
    );
    // Open mode is said loudly, before the server listens.
    let warning = served.line_containing("OPEN MODE");
    let warning: serde_json::Value = serde_json::from_str(&warning).unwrap();
    assert_eq!(warning["level"], "WARN");
    let line = served.line_containing("listening opamp=");
    let event: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(event["level"], "INFO");
    assert!(event["message"]
        .as_str()
        .unwrap()
        .starts_with("listening opamp=127.0.0.1:"));
    assert_eq!(served.terminate(), Some(0));
}

#[test]
fn a_missing_repository_fails_at_start_with_a_clear_message() {
    let mut served = Served::start(
        &[
            "--repo",
            "/nonexistent/config",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let line = served.line_containing("/nonexistent/config");
    assert!(line.contains("neither a directory nor a git URL"), "{line}");
    let until = Instant::now() + WAIT;
    let code = loop {
        if let Ok(Some(status)) = served.child.try_wait() {
            break status.code();
        }
        assert!(Instant::now() < until, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(1));
}

#[test]
fn serve_help_groups_its_flags_and_names_the_log_level_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"))
        .args(["serve", "--help"])
        .output()
        .expect("run serve --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let headings: Vec<usize> = ["Source:", "Listeners:", "Security:", "Limits:", "Logging:"]
        .iter()
        .map(|h| {
            help.find(&format!("\n{h}\n"))
                .unwrap_or_else(|| panic!("no `{h}` group in:\n{help}"))
        })
        .collect();
    // Each flag under its group: the repository with the source, tokens with security.
    let under = |flag: &str| {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("no {flag} in:\n{help}"));
        headings.iter().rposition(|&h| at > h)
    };
    assert_eq!(under("--repo <"), Some(0), "{help}");
    assert_eq!(under("--listen <"), Some(1), "{help}");
    assert_eq!(under("--admin-token-file <"), Some(2), "{help}");
    assert_eq!(under("--max-agents <"), Some(3), "{help}");
    assert_eq!(under("--log-format <"), Some(4), "{help}");
    assert!(
        help.contains("OPAMP_GITOPS_LOG "),
        "the log-level variable is named: {help}"
    );
}
