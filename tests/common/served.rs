//! `opamp-gitops serve` as a child process, for tests that kill it (SIGKILL) and start it again.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct ServeProcess {
    child: Child,
    pub opamp: SocketAddr,
    pub admin: SocketAddr,
    /// Every stderr line after the `listening` one.
    lines: mpsc::Receiver<String>,
}

impl ServeProcess {
    /// Starts `serve` on loopback ports the OS picks, with `args` after them; panics with the
    /// server's output when it does not come up.
    pub fn start(args: &[&std::ffi::OsStr]) -> ServeProcess {
        let mut full: Vec<&std::ffi::OsStr> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
        full.extend_from_slice(args);
        Self::run(&full, &[])
    }

    /// Runs the binary with exactly `args` (the subcommand included) and `env` added to the
    /// environment; the listen addresses must be loopback ones.
    pub fn run(args: &[&std::ffi::OsStr], env: &[(String, String)]) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("OPAMP_GITOPS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start opamp-gitops serve");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let until = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let line = loop {
            let left = until.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("listening opamp=") => break line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("serve did not start: {seen:#?}"),
            }
        };
        let field = |name: &str| -> SocketAddr {
            let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
            line[start..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .and_then(|a| a.parse().ok())
                .expect("an address")
        };
        ServeProcess {
            opamp: field("opamp"),
            admin: field("admin"),
            child,
            lines,
        }
    }

    /// Runs `serve` with `args` and returns its exit code and output when it refuses to start.
    pub fn refused(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run opamp-gitops serve");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The next stderr line containing `text`, waiting at most `deadline`.
    pub fn line_containing(&self, text: &str, deadline: Duration) -> Option<String> {
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// SIGKILL: no shutdown, no last flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of one sample in Prometheus text, 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
