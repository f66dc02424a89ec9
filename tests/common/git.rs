//! Real git repositories for source tests, made with the git CLI: a bare "remote" and a work
//! tree that commits and pushes to it, optionally served by `git daemon` on loopback.

use super::repo::TestRepo;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub struct GitRemote {
    pub root: tempfile::TempDir,
    /// The work tree: a TestRepo whose directory is a git clone.
    pub work: TestRepo,
}

impl GitRemote {
    /// A bare remote holding the test config repo in one commit on `main`.
    pub fn new() -> GitRemote {
        let root = tempfile::tempdir().expect("temp dir");
        git(root.path(), &["init", "--bare", "-b", "main", "remote.git"]);
        let work = TestRepo::new();
        git(work.path(), &["init", "-b", "main"]);
        git(
            work.path(),
            &[
                "remote",
                "add",
                "origin",
                root.path().join("remote.git").to_str().unwrap(),
            ],
        );
        let remote = GitRemote { root, work };
        remote.commit("initial config");
        remote.push();
        remote
    }

    pub fn bare(&self) -> PathBuf {
        self.root.path().join("remote.git")
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Commits everything in the work tree; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(self.work.path(), &["add", "-A"]);
        git(
            self.work.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(self.work.path(), &["rev-parse", "HEAD"])
    }

    pub fn push(&self) {
        git(self.work.path(), &["push", "-q", "origin", "HEAD:main"]);
    }

    pub fn force_push(&self) {
        git(
            self.work.path(),
            &["push", "-q", "--force", "origin", "HEAD:main"],
        );
    }

    pub fn head(&self) -> String {
        git(self.work.path(), &["rev-parse", "HEAD"])
    }
}

/// `git daemon` serving a directory of repositories on a loopback port.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn serve(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Run git-daemon itself: `git daemon` would leave it running as a child of its own.
        let exec_path = git(base, &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
