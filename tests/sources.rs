//! GitOps sources with real git: commits reach agents after a webhook or within the poll
//! interval, broken commits are rejected whole, the cache survives an unreachable remote,
//! force pushes are followed; and the watched directory of the dev loop.

mod common;

use common::block;

use common::admin::{get, github_push, post};
use common::agent::{config_file, config_hash, Identity, WsAgent, WAIT};
use common::git::{GitDaemon, GitRemote};
use common::repo::TestRepo;
use common::server::{agent, eventually, start_with};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use opamp_gitops::server::{ServeOptions, Server};
use std::sync::atomic::Ordering;
use std::time::Duration;

const PROD: &[(&str, &str)] = &[("environment", "production")];
const SECRET: &str = "webhook-s3cret";

struct Setup {
    _secrets: tempfile::TempDir,
    cache: tempfile::TempDir,
    options: ServeOptions,
}

/// Options for serving `url` with a webhook secret, an admin token and a private cache.
fn setup(url: &str, poll: Duration) -> Setup {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("webhook"), SECRET).unwrap();
    std::fs::write(secrets.path().join("admin"), "ops:admin-token\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::local(".");
    options.repo = url.to_owned();
    options.poll_interval = poll;
    options.cache_dir = cache.path().to_owned();
    options.webhook_secret_file = Some(secrets.path().join("webhook"));
    options.admin_token_file = Some(secrets.path().join("admin"));
    options.fetch_timeout = Duration::from_secs(20);
    Setup {
        _secrets: secrets,
        cache,
        options,
    }
}

/// A connected agent that has applied its first config; returns it and the hash.
async fn applied_agent(server: &Server) -> (WsAgent, Vec<u8>) {
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    let hash = config_hash(&ws.exchange(msg).await).expect("a config");
    let msg = ws.id.report(&hash, Applied, "");
    ws.exchange(msg).await;
    (ws, hash)
}

async fn commit_reaches_agent_after_webhook(url: String, remote: &GitRemote) {
    let s = setup(&url, Duration::from_secs(3600));
    let server = start_with(s.options.clone()).await;
    let (mut ws, first) = applied_agent(&server).await;
    let revision = block(|| get(server.admin_addr, "/api/revision"))
        .await
        .json();
    assert_eq!(revision["current"]["id"], remote.head());
    assert_eq!(revision["current"]["from_cache"], false);

    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    let commit = remote.commit("slower batches");
    remote.push();
    let answer = block(|| github_push(server.admin_addr, SECRET, "main")).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let pushed = ws.recv().await;
    let second = config_hash(&pushed).expect("the new config, pushed");
    assert_ne!(second, first);
    assert!(config_file(&pushed, "collector.yaml").contains("timeout: 6s"));
    // Until it applies the new config, the agent runs what the first commit rendered.
    let uid = ws.id.uid_string();
    let summary = agent(&server, &uid).unwrap();
    assert_eq!(
        summary.revision.as_deref(),
        Some(revision["current"]["id"].as_str().unwrap())
    );
    let msg = ws.id.report(&second, Applied, "");
    ws.exchange(msg).await;
    eventually(WAIT, "the record names the new commit", || {
        agent(&server, &uid).filter(|a| a.revision.as_deref() == Some(commit.as_str()))
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_reaches_a_websocket_agent_right_after_a_webhook_over_file_url() {
    let remote = GitRemote::new();
    commit_reaches_agent_after_webhook(remote.file_url(), &remote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_reaches_a_websocket_agent_right_after_a_webhook_over_git_daemon() {
    let remote = GitRemote::new();
    let daemon = GitDaemon::serve(remote.root.path());
    commit_reaches_agent_after_webhook(daemon.url("remote.git"), &remote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_reaches_the_agent_within_the_poll_interval_without_a_webhook() {
    let remote = GitRemote::new();
    let daemon = GitDaemon::serve(remote.root.path());
    let s = setup(&daemon.url("remote.git"), Duration::from_millis(500));
    let server = start_with(s.options.clone()).await;
    let (mut ws, first) = applied_agent(&server).await;
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 4s");
    remote.commit("faster batches");
    remote.push();
    let pushed = ws.recv().await;
    assert_ne!(config_hash(&pushed).unwrap(), first);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_commit_is_rejected_with_file_and_line_and_the_fix_converges() {
    let remote = GitRemote::new();
    let s = setup(&remote.file_url(), Duration::from_secs(3600));
    let server = start_with(s.options.clone()).await;
    let (mut ws, first) = applied_agent(&server).await;
    let good = remote.head();

    remote.work.edit(
        "templates/prod.yaml.j2",
        "exporters: [otlp]",
        "exporters: [otlp/missing]",
    );
    let broken = remote.commit("a pipeline naming an undefined exporter");
    remote.push();
    assert!(!server.reload().await || server.store.current().unwrap().id == good);
    let revision = block(|| get(server.admin_addr, "/api/revision"))
        .await
        .json();
    assert_eq!(
        revision["current"]["id"],
        good.as_str(),
        "the broken commit did not replace the current one"
    );
    assert_eq!(revision["rejected"]["id"], broken.as_str());
    let diagnostic = &revision["rejected"]["diagnostics"][0];
    assert_eq!(diagnostic["file"], "templates/prod.yaml.j2");
    assert_eq!(diagnostic["line"], 21);
    assert!(diagnostic["message"]
        .as_str()
        .unwrap()
        .contains("otlp/missing"));
    assert!(
        ws.recv_within(Duration::from_millis(500)).await.is_none(),
        "nothing sent for a rejected commit"
    );
    assert_eq!(
        agent(&server, &ws.id.uid_string()).unwrap().desired_hash,
        Some(hex::encode(&first))
    );

    remote.work.edit(
        "templates/prod.yaml.j2",
        "exporters: [otlp/missing]",
        "exporters: [otlp]",
    );
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 3s");
    let fixed = remote.commit("fix");
    remote.push();
    block(|| {
        post(
            server.admin_addr,
            "/api/refresh",
            &[("Authorization", "Bearer admin-token")],
            b"",
        )
    })
    .await;
    let pushed = ws.recv().await;
    assert!(config_file(&pushed, "collector.yaml").contains("timeout: 3s"));
    let revision = block(|| get(server.admin_addr, "/api/revision"))
        .await
        .json();
    assert_eq!(revision["current"]["id"], fixed.as_str());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_at_restart_serves_the_cached_revision() {
    let remote = GitRemote::new();
    let daemon = GitDaemon::serve(remote.root.path());
    let s = setup(&daemon.url("remote.git"), Duration::from_secs(3600));
    let server = start_with(s.options.clone()).await;
    let (_ws, hash) = applied_agent(&server).await;
    let good = remote.head();
    server.shutdown(Duration::from_secs(5)).await;

    drop(daemon);
    let again = start_with(s.options.clone()).await;
    let revision = block(|| get(again.admin_addr, "/api/revision"))
        .await
        .json();
    assert_eq!(revision["current"]["id"], good.as_str());
    assert_eq!(revision["current"]["from_cache"], true, "{revision}");
    assert!(
        revision["last_sync"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{revision}"
    );
    assert_eq!(block(|| get(again.admin_addr, "/readyz")).await.status, 200);
    let mut ws = WsAgent::connect(again.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    assert_eq!(
        config_hash(&ws.exchange(msg).await).unwrap(),
        hash,
        "the same config from the cache"
    );
    assert!(s.cache.path().read_dir().unwrap().count() > 0);
    again.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_cached_and_no_remote_is_not_ready() {
    let s = setup("git://127.0.0.1:9/nothing.git", Duration::from_secs(3600));
    let server = start_with(s.options.clone()).await;
    assert_eq!(
        block(|| get(server.admin_addr, "/readyz")).await.status,
        503
    );
    assert_eq!(
        block(|| get(server.admin_addr, "/healthz")).await.status,
        200
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_push_is_followed() {
    let remote = GitRemote::new();
    let s = setup(&remote.file_url(), Duration::from_secs(3600));
    let server = start_with(s.options.clone()).await;
    let initial = remote.head();
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    remote.commit("to be rewritten");
    remote.push();
    assert!(server.reload().await);
    common::git::git(remote.work.path(), &["reset", "-q", "--hard", &initial]);
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 2s");
    let rewritten = remote.commit("rewritten history");
    remote.force_push();
    assert!(server.reload().await);
    assert_eq!(server.store.current().unwrap().id, rewritten);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_with_bad_signatures_get_401_and_other_branches_change_nothing() {
    let remote = GitRemote::new();
    let s = setup(&remote.file_url(), Duration::from_secs(3600));
    let server = start_with(s.options.clone()).await;
    let before = server.store.status().last_sync.unwrap().at;
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    remote.commit("change");
    remote.push();

    let bad = block(|| github_push(server.admin_addr, "wrong-secret", "main")).await;
    assert_eq!(bad.status, 401);
    assert!(bad.json()["error"].as_str().unwrap().contains("signature"));
    let missing = block(|| {
        post(
            server.admin_addr,
            "/webhook/git",
            &[("X-GitHub-Event", "push")],
            b"{}",
        )
    })
    .await;
    assert_eq!(missing.status, 401);
    let other = block(|| github_push(server.admin_addr, SECRET, "feature/x")).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.json()["accepted"], false);
    let ping = block(|| {
        post(
            server.admin_addr,
            "/webhook/git",
            &[
                ("X-Gitlab-Token", SECRET),
                ("X-Gitlab-Event", "Tag Push Hook"),
            ],
            b"{}",
        )
    })
    .await;
    assert_eq!(ping.status, 200);
    // Give a wrongly triggered fetch time to happen, then check that none did.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.store.status().last_sync.unwrap().at,
        before,
        "nothing was fetched"
    );
    assert_eq!(server.store.applied.load(Ordering::Relaxed), 1);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_needs_the_admin_token() {
    let remote = GitRemote::new();
    let mut s = setup(&remote.file_url(), Duration::from_secs(3600));
    let server = start_with(s.options.clone()).await;
    assert_eq!(
        block(|| post(server.admin_addr, "/api/refresh", &[], b""))
            .await
            .status,
        401
    );
    let wrong = block(|| {
        post(
            server.admin_addr,
            "/api/refresh",
            &[("Authorization", "Bearer nope")],
            b"",
        )
    })
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"].is_string());
    let ok = block(|| {
        post(
            server.admin_addr,
            "/api/refresh",
            &[("Authorization", "Bearer admin-token")],
            b"",
        )
    })
    .await;
    assert_eq!(ok.status, 202);
    assert_eq!(ok.json()["accepted"], true);
    server.shutdown(Duration::from_secs(5)).await;

    s.options.admin_token_file = None;
    let open = start_with(s.options.clone()).await;
    let disabled = block(|| {
        post(
            open.admin_addr,
            "/api/refresh",
            &[("Authorization", "Bearer admin-token")],
            b"",
        )
    })
    .await;
    assert_eq!(disabled.status, 403);
    assert!(disabled.json()["error"]
        .as_str()
        .unwrap()
        .contains("--admin-token-file"));
    open.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_mode_an_atomic_save_reloads_once_and_a_broken_edit_is_rejected() {
    let repo = TestRepo::new();
    let server = start_with(ServeOptions::local(repo.path())).await;
    let (mut ws, _) = applied_agent(&server).await;
    assert_eq!(server.store.applied.load(Ordering::Relaxed), 1);

    // An editor's atomic save: write a hidden temp file, then rename it over the original.
    let text = repo
        .read("fleet.yaml")
        .replace("timeout: 5s", "timeout: 8s");
    repo.write(".fleet.yaml.tmp", &text);
    std::fs::rename(repo.file(".fleet.yaml.tmp"), repo.file("fleet.yaml")).unwrap();
    let pushed = ws.recv().await;
    assert!(config_file(&pushed, "collector.yaml").contains("timeout: 8s"));
    // Several debounce windows later there was still exactly one reload.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.store.applied.load(Ordering::Relaxed), 2);

    // A broken edit is rejected like a broken commit.
    repo.edit(
        "templates/base.yaml.j2",
        "timeout: {{ vars.timeout }}",
        "timeout: {{ vars.timeout }",
    );
    let rejected = eventually(WAIT, "the rejection", || server.store.status().rejected).await;
    assert_eq!(
        rejected.diagnostics[0].file.as_deref(),
        Some("templates/base.yaml.j2")
    );
    assert_eq!(rejected.diagnostics[0].line, Some(9));
    assert_eq!(server.store.applied.load(Ordering::Relaxed), 2);

    // Deleted and re-created files work.
    repo.remove("templates/base.yaml.j2");
    repo.write(
        "templates/base.yaml.j2",
        &common::repo::BASE_TEMPLATE.replace(
            "exporters:\n  debug:",
            "exporters:\n  debug:\n    verbosity: basic",
        ),
    );
    eventually(WAIT, "the re-created template", || {
        (server.store.applied.load(Ordering::Relaxed) == 3).then_some(())
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}
