//! What hostile agents, unauthenticated clients and careless committers tried, answered: silent
//! sockets and half-sent prefaces, slow admin bodies, uids that outlive their connection,
//! oversized agent strings, symlinks and huge files in the repository, a rejected revision that
//! comes back fixed, and compressions the server does not speak.

mod common;

use common::block;

use common::admin::{get, post};
use common::agent::{status_report, Identity, WsAgent, WAIT};
use common::git::GitRemote;
use common::repo::TestRepo;
use common::run_cli;
use common::server::{eventually, start_with};
use opamp_gitops::opamp::proto::{ComponentHealth, RemoteConfigStatuses, ServerErrorResponseType};
use opamp_gitops::server::ServeOptions;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROD: &[(&str, &str)] = &[("environment", "production")];

/// Waits until the server closes `stream` (EOF or reset), or fails after `WAIT`.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a silent connection open");
}

/// The server's options for serving `remote` over git, its mirror in `cache`.
fn git_options(remote: &GitRemote, cache: &tempfile::TempDir) -> ServeOptions {
    let mut options = ServeOptions::local(remote.work.path());
    options.repo = remote.file_url();
    options.cache_dir = cache.path().to_owned();
    options
}

fn connected_agents(server: &opamp_gitops::server::Server) -> usize {
    server
        .fleet
        .summaries()
        .iter()
        .filter(|a| a.connected)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_half_sent_prefaces_are_closed_on_both_listeners() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.limits.max_connections = 20;
    options.limits.header_timeout = Duration::from_millis(800);
    let server = start_with(options).await;

    let mut held = Vec::new();
    for i in 0..20 {
        let mut opamp = TcpStream::connect(server.opamp_addr).await.unwrap();
        if i % 4 == 0 {
            // The HTTP/2 cleartext preface, or only its first line.
            let preface: &[u8] = if i % 8 == 0 {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            } else {
                b"PRI * HTTP/2.0\r\n\r\n"
            };
            opamp.write_all(preface).await.unwrap();
        }
        held.push(opamp);
        held.push(TcpStream::connect(server.admin_addr).await.unwrap());
    }
    for stream in &mut held {
        closed_by_server(stream).await;
    }
    // The slots are free again: an agent is served and the probe says ready.
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], RemoteConfigStatuses::Unset);
    assert!(ws.exchange(msg).await.error_response.is_none());
    assert_eq!(
        block(|| get(server.admin_addr, "/readyz")).await.status,
        200
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_gets_a_new_head_deadline_after_each_answer() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.limits.header_timeout = Duration::from_millis(800);
    let server = start_with(options).await;
    let mut stream = TcpStream::connect(server.admin_addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then silence: the idle keep-alive connection is closed too.
    let started = Instant::now();
    closed_by_server(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_when_the_admin_listener_is_full() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.limits.max_connections = 4;
    options.limits.header_timeout = Duration::from_secs(60);
    let server = start_with(options).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.admin_addr).await.unwrap());
    }
    // The accept loop hands out slots in order: wait until the four are taken.
    let probe = eventually(WAIT, "a reserved probe connection", || {
        let agents = get(server.admin_addr, "/api/agents");
        (agents.status == 503).then_some(agents)
    })
    .await;
    assert!(probe.body.contains("only probes"), "{}", probe.body);
    assert_eq!(
        block(|| get(server.admin_addr, "/readyz")).await.status,
        200
    );
    assert_eq!(
        block(|| get(server.admin_addr, "/healthz")).await.status,
        200
    );
    drop(held);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_admin_body_gets_408_within_the_body_deadline() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.body_timeout = Duration::from_millis(800);
    let server = start_with(options).await;
    let mut stream = TcpStream::connect(server.admin_addr).await.unwrap();
    stream
        .write_all(b"POST /webhook/git HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    // One byte every 100 ms, as the attacker did, until the server answers.
    while started.elapsed() < WAIT {
        let _ = stream.write_all(b"{").await;
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_uid_a_connection_spoke_for_is_released_when_it_closes() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.fleet.agent_ttl = Duration::ZERO;
    let server = start_with(options).await;

    // A proxy speaking for 70 agents on one socket: 64 are taken, the rest refused.
    let mut proxy = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let mut refused = 0;
    for _ in 0..70 {
        let mut id = Identity::new(PROD);
        let reply = proxy
            .exchange(id.full_state(&[], RemoteConfigStatuses::Unset))
            .await;
        if let Some(error) = reply.error_response {
            assert_eq!(error.r#type, ServerErrorResponseType::BadRequest as i32);
            assert!(error.error_message.contains("at most 64"), "{error:?}");
            refused += 1;
        }
    }
    assert_eq!(refused, 6);

    // Agents that take a new uid on their socket, by asking and by being told.
    let mut movers = Vec::new();
    for _ in 0..5 {
        let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
        let mut msg = ws.id.full_state(&[], RemoteConfigStatuses::Unset);
        msg.flags = opamp_gitops::opamp::FLAG_REQUEST_INSTANCE_UID;
        let reply = ws.exchange(msg).await;
        let new_uid = reply
            .agent_identification
            .expect("a new uid is assigned")
            .new_instance_uid;
        ws.id.uid = new_uid;
        let msg = ws.id.heartbeat();
        assert!(ws.exchange(msg).await.error_response.is_none());
        movers.push(ws);
    }
    assert_eq!(connected_agents(&server), 64 + 5);

    // Churn: everyone leaves.
    drop(proxy);
    drop(movers);
    eventually(WAIT, "no agent left connected", || {
        (connected_agents(&server) == 0).then_some(())
    })
    .await;
    assert_eq!(server.fleet.forget_expired(), 64 + 5);
    assert!(server.fleet.is_empty());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_agent_strings_are_truncated_and_the_events_stay_small() {
    let repo = TestRepo::new();
    let server = start_with(ServeOptions::local(repo.path())).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let huge = "e".repeat(1 << 20);
    for i in 0..40u8 {
        let mut msg = ws.id.heartbeat();
        msg.remote_config_status =
            Some(status_report(&[i; 32], RemoteConfigStatuses::Failed, &huge));
        msg.health = Some(ComponentHealth {
            healthy: false,
            last_error: huge.clone(),
            status: huge.clone(),
            ..Default::default()
        });
        assert!(ws.exchange(msg).await.error_response.is_none());
    }
    let uid = ws.id.uid_string();
    let detail = block(|| get(server.admin_addr, &format!("/api/agents/{uid}"))).await;
    assert_eq!(detail.status, 200);
    assert!(detail.body.len() < 64 << 10, "{} bytes", detail.body.len());
    assert!(
        detail.body.contains("more bytes truncated"),
        "{}",
        &detail.body[..2000.min(detail.body.len())]
    );
    let events = block(|| get(server.admin_addr, "/api/events?limit=1000")).await;
    assert_eq!(events.status, 200);
    assert!(
        events.body.len() < 1 << 20,
        "{} bytes of events",
        events.body.len()
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// A template that repeats a string into gigabytes, included by a rule no sample reaches.
const BOMB: &str = "{% set a = \"x\" * 100000 %}{% set b = ([a] * 100000) | join(\"\") %}\n";

#[test]
fn check_reports_a_template_memory_bomb_with_its_line() {
    let repo = TestRepo::new();
    repo.write(
        "templates/base.yaml.j2",
        &format!("# comment\n{BOMB}{}", repo.read("templates/base.yaml.j2")),
    );
    let out = run_cli(repo.path(), &["check", "."]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("templates/base.yaml.j2:2:") && out.stdout.contains("MiB of memory"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_at_the_tip_is_rejected_and_a_restart_serves_the_last_good_revision() {
    let remote = GitRemote::new();
    let good = remote.head();
    let cache = tempfile::tempdir().unwrap();
    let options = || git_options(&remote, &cache);
    let server = start_with(options()).await;
    let base = remote.work.read("templates/base.yaml.j2");
    remote.work.write(
        "templates/base.yaml.j2",
        &format!("# comment\n{BOMB}{base}"),
    );
    let bomb = remote.commit("a template that repeats too much");
    remote.push();
    server.reload().await;
    let status = server.store.status();
    let rejected = status.rejected.expect("the bomb is rejected");
    assert_eq!(rejected.id, bomb);
    assert!(
        rejected
            .diagnostics
            .iter()
            .any(|d| d.line == Some(2) && d.file.as_deref() == Some("templates/base.yaml.j2")),
        "{:?}",
        rejected.diagnostics
    );
    assert_eq!(status.current.unwrap().id, good);
    server.shutdown(Duration::from_secs(5)).await;

    let restarted = start_with(options()).await;
    let status = restarted.store.status();
    let current = status.current.expect("the last good revision is served");
    assert_eq!(current.id, good);
    assert!(current.from_cache);
    assert_eq!(status.rejected.expect("the tip stays rejected").id, bomb);
    restarted.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn a_symlink_out_of_the_repository_is_a_compile_error_in_directory_mode() {
    let repo = TestRepo::new();
    std::os::unix::fs::symlink("/etc/passwd", repo.file("templates/leak.j2")).unwrap();
    std::os::unix::fs::symlink("base.yaml.j2", repo.file("templates/alias.yaml.j2")).unwrap();
    let out = run_cli(repo.path(), &["check", "."]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("templates/leak.j2") && out.stdout.contains("outside the repository"),
        "{out:?}"
    );
    // A link inside the repository is an ordinary file.
    assert!(!out.stdout.contains("alias.yaml.j2: error"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_out_of_the_repository_is_never_followed_in_git_mode() {
    let remote = GitRemote::new();
    std::os::unix::fs::symlink(
        "../../../../etc/passwd",
        remote.work.file("templates/leak.j2"),
    )
    .unwrap();
    let leak = remote.commit("a link out");
    remote.push();
    let cache = tempfile::tempdir().unwrap();
    let options = git_options(&remote, &cache);
    // The first revision seen is the one with the link: nothing may be served from it.
    let server = start_with(options).await;
    let status = server.store.status();
    assert!(status.current.is_none(), "{:?}", status.current);
    let rejected = status.rejected.expect("rejected");
    assert_eq!(rejected.id, leak);
    assert!(
        rejected
            .diagnostics
            .iter()
            .any(|d| d.file.as_deref() == Some("templates/leak.j2")
                && d.message.contains("outside the repository")),
        "{:?}",
        rejected.diagnostics
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_inside_the_repository_is_read_in_git_mode() {
    let remote = GitRemote::new();
    let fleet = remote.work.read("fleet.yaml");
    remote.work.write(
        "fleet.yaml",
        &fleet.replace("template: base.yaml.j2", "template: alias.yaml.j2"),
    );
    std::os::unix::fs::symlink("base.yaml.j2", remote.work.file("templates/alias.yaml.j2"))
        .unwrap();
    let linked = remote.commit("an alias");
    remote.push();
    let cache = tempfile::tempdir().unwrap();
    let options = git_options(&remote, &cache);
    let server = start_with(options).await;
    let status = server.store.status();
    assert_eq!(
        status.current.map(|c| c.id),
        Some(linked),
        "{:?}",
        status.rejected
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// Peak resident memory of a finished child, from wait4's rusage, in KiB.
fn run_and_measure(mut command: std::process::Command) -> (i32, String, i64) {
    use std::os::unix::process::ExitStatusExt;
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // Drain the pipes on threads so the child never blocks on a full one.
    let mut child = child;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    // SAFETY: `pid` is our child; the out-pointers are valid.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let code = std::process::ExitStatus::from_raw(status)
        .code()
        .unwrap_or(-1);
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    (code, text, usage.ru_maxrss)
}

#[test]
fn a_huge_file_is_refused_from_its_size_before_it_is_read() {
    let repo = TestRepo::new();
    let big = std::fs::File::create(repo.file("agents/huge.bin")).unwrap();
    // Sparse: two gigabytes that take no disk.
    big.set_len(2 << 30).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_opamp-gitops"));
    command.args(["check", "."]).current_dir(repo.path());
    let (code, output, peak_kib) = run_and_measure(command);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("larger than 64 MiB"), "{output}");
    assert!(output.contains("huge.bin"), "{output}");
    assert!(peak_kib < 200 * 1024, "check took {peak_kib} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_blob_is_refused_from_its_header_in_git_mode() {
    let remote = GitRemote::new();
    std::fs::write(remote.work.file("agents/huge.bin"), vec![0u8; 70 << 20]).unwrap();
    remote.commit("a huge blob");
    remote.push();
    let cache = tempfile::tempdir().unwrap();
    let options = git_options(&remote, &cache);
    let server = start_with(options).await;
    let status = server.store.status();
    let error = status.last_sync.and_then(|s| s.error).unwrap_or_default();
    assert!(
        error.contains("larger than 64 MiB") && error.contains("agents/huge.bin"),
        "{error}"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_restored_to_the_served_content_clears_its_rejection() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.poll_interval = Duration::from_millis(200);
    let server = start_with(options).await;
    let good = repo.read("fleet.yaml");
    repo.write("fleet.yaml", "rules: [ {name: x\n");
    eventually(WAIT, "the broken fleet.yaml rejected", || {
        server.store.status().rejected
    })
    .await;
    // Many polls of the same broken content: rejected once.
    let failures = || {
        server
            .audit
            .recent(None, 1000)
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    opamp_gitops::audit::AuditKind::RevisionRejected { .. }
                )
            })
            .count()
    };
    for _ in 0..3 {
        assert!(server.reload().await);
    }
    assert_eq!(failures(), 1);
    repo.write("fleet.yaml", &good);
    eventually(WAIT, "the rejection cleared", || {
        server.store.status().rejected.is_none().then_some(())
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn unsupported_content_encodings_get_415_naming_gzip() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = TestRepo::new();
    let server = rt.block_on(start_with(ServeOptions::local(repo.path())));
    let mut id = Identity::new(PROD);
    let body = prost::Message::encode_to_vec(&id.heartbeat());
    for encoding in ["deflate", "br", "gzip, gzip"] {
        let answer = post(
            server.opamp_addr,
            "/v1/opamp",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", encoding),
            ],
            &body,
        );
        assert_eq!(answer.status, 415, "{encoding}: {}", answer.body);
        assert!(answer.body.contains("gzip"), "{}", answer.body);
    }
    rt.block_on(server.shutdown(Duration::from_secs(5)));
}
