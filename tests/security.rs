//! Letting in only who belongs, and surviving what strangers send: agent and admin tokens, TLS
//! and mTLS with rotation, slowloris, connection limits, idle sessions, oversized attributes.

mod common;

use common::admin::{get, request};
use common::agent::{config_hash, http_client, Identity, WsAgent, WAIT};
use common::repo::TestRepo;
use common::server::{agent, start_with};
use common::tls::{connect, connector, http_get, write_pair, TestCa};
use futures_util::StreamExt;
use opamp_gitops::opamp::proto::RemoteConfigStatuses::Unset;
use opamp_gitops::opamp::proto::{
    any_value, AgentDescription, AnyValue, KeyValue, ServerErrorResponseType,
};
use opamp_gitops::server::ServeOptions;
use prost::Message as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROD: &[(&str, &str)] = &[("environment", "production")];

async fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn ws_request(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/v1/opamp")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        request.headers_mut().insert(name, v.parse().unwrap());
    }
    request
}

fn post_opamp(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    msg: &opamp_gitops::opamp::proto::AgentToServer,
) -> u16 {
    let mut r = http_client()
        .post(format!("http://{addr}/v1/opamp"))
        .header("Content-Type", "application/x-protobuf");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send(&msg.encode_to_vec()[..]).unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_a_valid_token_and_its_name_is_recorded() {
    let repo = TestRepo::new();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(
        secrets.path().join("agents"),
        "# fleet tokens\nedge:edge-token\nlegacy-token\n",
    )
    .unwrap();
    std::fs::write(secrets.path().join("admin"), "ops:admin-token\n").unwrap();
    let mut options = ServeOptions::local(repo.path());
    options.agent_token_file = Some(secrets.path().join("agents"));
    options.admin_token_file = Some(secrets.path().join("admin"));
    let server = start_with(options).await;
    let addr = server.opamp_addr;
    let mut id = Identity::new(PROD);
    let msg = id.full_state(&[], Unset);

    // No token, a wrong one: 401 before the upgrade or the body, and no agent state.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer nope")],
        vec![("X-API-Key", "nope")],
    ] {
        let refused = tokio_tungstenite::connect_async(ws_request(addr, &headers)).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("expected 401, got {other:?}"),
        }
        assert_eq!(block(|| post_opamp(addr, &headers, &msg)).await, 401);
    }
    assert!(
        server.fleet.is_empty(),
        "no agent state for refused requests"
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(
        addr,
        &[("Authorization", "Bearer edge-token")],
    ))
    .await
    .unwrap();
    let mut frame = vec![0u8];
    frame.extend(msg.encode_to_vec());
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Binary(frame.into()),
    )
    .await
    .unwrap();
    assert!(tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        block(|| post_opamp(
            addr,
            &[("X-API-Key", "legacy-token")],
            &Identity::new(PROD).full_state(&[], Unset)
        ))
        .await,
        200
    );

    let detail = block(|| {
        request(
            "GET",
            server.admin_addr,
            &format!("/api/agents/{}", id.uid_string()),
            &[],
            b"",
        )
    })
    .await
    .json();
    assert_eq!(detail["token_name"], "edge");

    // The token file is read again when it changes.
    std::fs::write(
        secrets.path().join("agents"),
        "edge:edge-token\nnew:rotated-token\n",
    )
    .unwrap();
    assert_eq!(
        block(|| post_opamp(
            addr,
            &[("Authorization", "Bearer rotated-token")],
            &Identity::new(PROD).full_state(&[], Unset)
        ))
        .await,
        200
    );
    assert_eq!(
        block(|| post_opamp(
            addr,
            &[("X-API-Key", "legacy-token")],
            &Identity::new(PROD).full_state(&[], Unset)
        ))
        .await,
        401
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reads_need_a_token_with_admin_read_auth() {
    let repo = TestRepo::new();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("admin"), "ops:admin-token\n").unwrap();
    let mut options = ServeOptions::local(repo.path());
    options.admin_token_file = Some(secrets.path().join("admin"));
    options.admin_read_auth = true;
    let server = start_with(options).await;
    let addr = server.admin_addr;
    let denied = block(|| get(addr, "/api/agents")).await;
    assert_eq!(denied.status, 401);
    assert!(denied.json()["error"]
        .as_str()
        .unwrap()
        .contains("--admin-read-auth"));
    let page = block(|| request("GET", addr, "/", &[("Accept", "text/html")], b"")).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("Sign in"));
    let status = |path: &'static str, header: (&'static str, &'static str)| {
        tokio::task::block_in_place(|| request("GET", addr, path, &[header], b"").status)
    };
    assert_eq!(
        status("/api/agents", ("Authorization", "Bearer admin-token")),
        200
    );
    assert_eq!(
        status("/metrics", ("Cookie", "opamp_gitops_token=admin-token")),
        200
    );
    assert_eq!(
        status("/metrics", ("Cookie", "opamp_gitops_token=wrong")),
        401
    );
    assert_eq!(block(|| get(addr, "/healthz")).await.status, 200);
    assert_eq!(block(|| get(addr, "/readyz")).await.status, 200);
    server.shutdown(Duration::from_secs(5)).await;
}

struct TlsServer {
    dir: tempfile::TempDir,
    ca: TestCa,
    server: opamp_gitops::server::Server,
    _repo: TestRepo,
}

async fn tls_server(client_ca: bool) -> TlsServer {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, key) = write_pair(dir.path(), &ca.server());
    let ca_file = dir.path().join("clients-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut options = ServeOptions::local(repo.path());
    options.tls_cert = Some(cert);
    options.tls_key = Some(key);
    options.client_ca = client_ca.then_some(ca_file);
    let server = start_with(options).await;
    TlsServer {
        dir,
        ca,
        server,
        _repo: repo,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_with_the_test_ca_and_plain_tcp_does_not() {
    let t = tls_server(false).await;
    let tls = connector(&t.ca.pem(), None);
    let mut stream = connect(&tls, t.server.admin_addr)
        .await
        .expect("TLS handshake");
    let response = http_get(&mut stream, "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // An OpAMP session over wss.
    let stream = connect(&tls, t.server.opamp_addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/v1/opamp", t.server.opamp_addr.port()),
        stream,
    )
    .await
    .unwrap();
    let mut id = Identity::new(PROD);
    let mut frame = vec![0u8];
    frame.extend(id.full_state(&[], Unset).encode_to_vec());
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Binary(frame.into()),
    )
    .await
    .unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_data();
    let reply = opamp_gitops::opamp::proto::ServerToAgent::decode(&reply[1..]).unwrap();
    assert!(config_hash(&reply).is_some());

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(t.server.admin_addr).await.unwrap();
    let answer = http_get(&mut plain, "/healthz").await.unwrap_or_default();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A client that does not trust the CA fails the handshake.
    let stranger = connector(&TestCa::new("other CA").pem(), None);
    assert!(connect(&stranger, t.server.admin_addr).await.is_err());
    t.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_agents_without_a_client_certificate() {
    let t = tls_server(true).await;
    let anonymous = connector(&t.ca.pem(), None);
    let refused = match connect(&anonymous, t.server.opamp_addr).await {
        Err(_) => true,
        Ok(mut stream) => http_get(&mut stream, "/v1/opamp")
            .await
            .map(|r| r.is_empty())
            .unwrap_or(true),
    };
    assert!(refused, "a client without a certificate must be refused");
    let agent_cert = t.ca.client("agent-1");
    let with_cert = connector(&t.ca.pem(), Some(&agent_cert));
    let mut stream = connect(&with_cert, t.server.opamp_addr)
        .await
        .expect("mTLS handshake");
    let response = http_get(&mut stream, "/v1/opamp").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 "), "{response}");
    // The admin listener does not ask for client certificates.
    assert!(connect(&anonymous, t.server.admin_addr).await.is_ok());
    t.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_is_served_to_new_connections() {
    let t = tls_server(false).await;
    let old = connector(&t.ca.pem(), None);
    let mut before = connect(&old, t.server.admin_addr).await.unwrap();
    let new_ca = TestCa::new("rotated CA");
    write_pair(t.dir.path(), &new_ca.server());
    let rotated = connector(&new_ca.pem(), None);
    let deadline = Instant::now() + WAIT;
    loop {
        if connect(&rotated, t.server.admin_addr).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        connect(&old, t.server.admin_addr).await.is_err(),
        "new connections get the new certificate"
    );
    let response = http_get(&mut before, "/healthz").await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "an existing connection survives the rotation"
    );
    t.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_connection_is_closed_after_its_timeout() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.limits.header_timeout = Duration::from_millis(500);
    let server = start_with(options).await;
    let mut slow = TcpStream::connect(server.opamp_addr).await.unwrap();
    slow.write_all(b"GET /v1/opamp HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed the slow connection");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        block(|| get(server.admin_addr, "/healthz")).await.status,
        200
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503_and_the_server_stays_responsive() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.limits.max_connections = 2;
    let server = start_with(options).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
        let msg = ws.id.full_state(&[], Unset);
        ws.exchange(msg).await;
        held.push(ws);
    }
    let mut third = TcpStream::connect(server.opamp_addr).await.unwrap();
    let answer = http_get(&mut third, "/v1/opamp").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After:"), "{answer}");
    // The held sessions are still served.
    let msg = held[0].id.heartbeat();
    assert!(held[0].exchange(msg).await.error_response.is_none());
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut stream = TcpStream::connect(server.opamp_addr).await.unwrap();
        let answer = http_get(&mut stream, "/v1/opamp").await.unwrap_or_default();
        if !answer.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_connecting_source_gets_429() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.limits.connections_per_second = 3;
    let server = start_with(options).await;
    // Connect all at once (well inside one second), then ask on each.
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(TcpStream::connect(server.admin_addr).await.unwrap());
    }
    let mut statuses = Vec::new();
    for stream in &mut streams {
        let answer = http_get(stream, "/healthz").await.unwrap_or_default();
        statuses.push(answer.lines().next().unwrap_or_default().to_owned());
    }
    assert!(
        statuses.iter().any(|s| s.starts_with("HTTP/1.1 429")),
        "{statuses:?}"
    );
    assert!(statuses[0].starts_with("HTTP/1.1 200"), "{statuses:?}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_is_closed() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.idle_timeout = Duration::from_millis(600);
    options.fleet.heartbeat_interval = Duration::from_millis(200);
    let server = start_with(options).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    ws.exchange(msg).await;
    // The client never reads (so never answers pings) and never writes.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(ws.closed().await, Some(1000));
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_long_attributes_are_refused_without_state() {
    let repo = TestRepo::new();
    let server = start_with(ServeOptions::local(repo.path())).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let attr = |k: String, v: String| KeyValue {
        key: k,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
    };
    let mut msg = ws.id.full_state(&[], Unset);
    msg.agent_description = Some(AgentDescription {
        identifying_attributes: (0..500)
            .map(|i| attr(format!("k{i}"), "v".into()))
            .collect(),
        non_identifying_attributes: vec![],
    });
    let error = ws.exchange(msg).await.error_response.expect("refused");
    assert_eq!(error.r#type, ServerErrorResponseType::BadRequest as i32);
    let mut msg = ws.id.full_state(&[], Unset);
    msg.agent_description = Some(AgentDescription {
        identifying_attributes: vec![attr("host.name".into(), "x".repeat(100_000))],
        non_identifying_attributes: vec![],
    });
    assert!(ws.exchange(msg).await.error_response.is_some());
    assert!(server.fleet.is_empty());
    let msg = ws.id.full_state(&[], Unset);
    assert!(
        ws.exchange(msg).await.error_response.is_none(),
        "the session goes on"
    );
    assert!(agent(&server, &ws.id.uid_string()).is_some());
    server.shutdown(Duration::from_secs(5)).await;
}
