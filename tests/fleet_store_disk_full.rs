//! The SQLite store on a filesystem that fills up (a small tmpfs of the test's own, mounted as
//! root): agents keep being served, the store says it is degraded, writes are retried, and once
//! there is space again everything held in memory is written.

mod common;

use common::admin::api;
use common::agent::*;
use common::repo::TestRepo;
use common::server::{eventually, start_with};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use opamp_gitops::opamp::proto::{AgentConfigFile, AgentConfigMap, EffectiveConfig};
use opamp_gitops::server::ServeOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PROD: &[(&str, &str)] = &[("environment", "production"), ("service.name", "otel")];
const DEADLINE: Duration = Duration::from_secs(30);

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallFilesystem {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallFilesystem {
    /// `None` where mounting is not allowed (not root, no tmpfs).
    fn mount(size: &str) -> Option<SmallFilesystem> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .ok()?;
        status
            .success()
            .then_some(SmallFilesystem { _dir: dir, path })
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Writes a file until the filesystem is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    // Bounded: a tmpfs of a few MiB fills in far fewer chunks.
    for _ in 0..100_000 {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = file.flush();
    path
}

fn stored_applied(db: &Path, hash: &[u8]) -> usize {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    c.query_row(
        "SELECT count(*) FROM agents WHERE remote_config_status = 'applied' AND reported_hash = ?1",
        [hex::encode(hash)],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
    .unwrap_or(0)
}

/// An agent that reports a large effective config, so that storing it needs new pages.
async fn big_agent(server: &opamp_gitops::server::Server) -> (WsAgent, Vec<u8>) {
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let mut msg = ws.id.full_state(&[], Unset);
    let body = format!("# {}\n", "x".repeat(64 * 1024));
    msg.effective_config = Some(EffectiveConfig {
        config_map: Some(AgentConfigMap {
            config_map: [(
                "collector.yaml".to_owned(),
                AgentConfigFile {
                    body: body.into_bytes().into(),
                    content_type: "text/yaml".into(),
                },
            )]
            .into(),
        }),
    });
    let hash = config_hash(&ws.exchange(msg).await).expect("a config");
    let msg = ws.id.report(&hash, Applied, "");
    ws.exchange(msg).await;
    (ws, hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_sqlite_store_and_nothing_is_lost_once_there_is_space() {
    let Some(fs) = SmallFilesystem::mount("4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let db = fs.path.join("fleet.db");
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.fleet_store.store = Some(format!("sqlite://{}", db.display()));
    options.fleet_store.store_flush_interval = Duration::from_millis(100);
    let server = start_with(options).await;
    let (first, hash) = big_agent(&server).await;
    eventually(DEADLINE, "the first agent stored", || {
        (stored_applied(&db, &hash) == 1).then_some(())
    })
    .await;

    // Act: the filesystem fills up; more agents come and get their configs.
    let filler = fill(&fs.path);
    let mut agents = vec![first];
    for _ in 0..8 {
        let (ws, got) = big_agent(&server).await;
        assert_eq!(got, hash, "served from git while the disk is full");
        agents.push(ws);
    }
    eventually(DEADLINE, "the store reported degraded", || {
        let summary = api(server.admin_addr, "/api/summary");
        (summary["store"]["ok"] == false && summary["store"]["last_error"].is_string())
            .then_some(())
    })
    .await;
    let errors = server.metrics.store_errors.get();
    eventually(DEADLINE, "writes retried", || {
        (server.metrics.store_errors.get() > errors).then_some(())
    })
    .await;
    for ws in &agents {
        let a = common::server::agent(&server, &ws.id.uid_string()).unwrap();
        assert_eq!(a.status.as_str(), "applied", "served from memory meanwhile");
    }

    // Assert: space again; every agent is written.
    std::fs::remove_file(filler).unwrap();
    eventually(DEADLINE, "the store ok again", || {
        server.fleet.store_status().ok.then_some(())
    })
    .await;
    eventually(DEADLINE, "every agent stored", || {
        (stored_applied(&db, &hash) == agents.len()).then_some(())
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
    drop(fs);
}
