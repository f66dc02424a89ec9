//! OpAMP v0.15–v0.18 on the wire, with our own test agents: the specification's 64 MiB message
//! limit (1009 / 413 above it), the server-wide in-flight byte budget (503 / UNAVAILABLE), the
//! `OpAMP-Instance-UID` header, an HTTP agent's `agent_disconnect`, and a reconnecting agent
//! that leaves out unchanged status.

mod common;

use common::agent::*;
use common::block;
use common::repo::TestRepo;
use common::server::{agent, eventually, start, start_with};
use opamp_gitops::fleet::status::Status;
use opamp_gitops::opamp::proto::{
    AgentDisconnect, AgentToServer, CustomMessage,
    RemoteConfigStatuses::{Applied, Unset},
    ServerErrorResponseType,
};
use opamp_gitops::opamp::FLAG_REPORT_FULL_STATE;
use opamp_gitops::server::ServeOptions;
use prost::Message as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROD: &[(&str, &str)] = &[("environment", "production"), ("service.name", "otel")];
const MIB: usize = 1 << 20;

/// A message carrying `size` bytes of custom-message data.
fn large(id: &mut Identity, size: usize) -> AgentToServer {
    let mut msg = id.full_state(&[], Unset);
    msg.custom_message = Some(CustomMessage {
        capability: "io.opamp-gitops.test".into(),
        r#type: "large".into(),
        data: vec![b'x'; size].into(),
    });
    msg
}

/// Sends a request head (and the start of a body) over a raw connection.
async fn raw_post(addr: SocketAddr, content_length: usize, body_start: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/opamp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body_start).await.expect("write body");
    stream
}

/// The status code and head of the response on a raw connection.
async fn response_head(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let read = tokio::time::timeout(WAIT, async {
        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
            let n = stream.read(&mut buf[got..]).await.expect("read");
            assert!(n > 0, "connection closed before a response head");
            got += n;
        }
    })
    .await;
    assert!(read.is_ok(), "no response in time");
    let head = String::from_utf8_lossy(&buf[..got]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    (status, head)
}

async fn status_of(stream: &mut TcpStream) -> u16 {
    response_head(stream).await.0
}

/// A masked client frame header for a binary message of `len` bytes (the payload is not sent).
fn frame_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend(len.to_be_bytes());
    header.extend([1, 2, 3, 4]);
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_65_mib_message_gets_1009_and_413_while_a_60_mib_one_passes_by_default() {
    let repo = TestRepo::new();
    let server = start(&repo).await;

    // HTTP: a 65 MiB body is refused from its declared length, before it is sent.
    let mut refused = raw_post(server.opamp_addr, 65 * MIB, &[]).await;
    assert_eq!(status_of(&mut refused).await, 413);

    // WebSocket: a frame announcing 65 MiB closes the connection with 1009.
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    ws.send_raw(&frame_header(65 * MIB as u64)).await;
    assert_eq!(ws.closed().await, Some(1009));

    // 60 MiB messages pass the transport limit on both transports and are answered.
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = large(&mut http.id, 60 * MIB);
    let reply = block(|| http.post(msg.encode_to_vec(), &[]))
        .await
        .message();
    assert!(reply.error_response.is_none());
    assert!(
        reply.remote_config.is_some(),
        "a normal reply with the config"
    );
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = large(&mut ws.id, 60 * MIB);
    let reply = ws.exchange(msg).await;
    assert!(reply.error_response.is_none());
    assert!(reply.remote_config.is_some());
    assert_eq!(
        server.metrics.inflight_bytes.get(),
        0,
        "every byte given back"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inflight_budget_refuses_the_excess_with_503_and_unavailable() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.max_message_bytes = MIB;
    options.max_inflight_bytes = MIB;
    let server = start_with(options).await;

    // Arrange: a slow agent's 900 KB body is on its way, holding most of the budget.
    let stalled = raw_post(server.opamp_addr, 900_000, &[0x0a; 100]).await;
    eventually(WAIT, "the slow body to hold the budget", || {
        (server.metrics.inflight_bytes.get() >= 900_000).then_some(())
    })
    .await;

    // Act / assert: a 200 KB message does not fit, over either transport.
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = large(&mut http.id, 200_000);
    let body = msg.encode_to_vec();
    // (Refused from its declared length: the client is answered before it sends the body.)
    let mut refused = raw_post(server.opamp_addr, body.len(), &[]).await;
    let (status, head) = response_head(&mut refused).await;
    assert_eq!(status, 503);
    assert!(head.contains("retry-after: 30"), "{head}");
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = large(&mut ws.id, 200_000);
    let reply = ws.exchange(msg.clone()).await;
    let error = reply.error_response.expect("UNAVAILABLE");
    assert_eq!(error.r#type, ServerErrorResponseType::Unavailable as i32);
    assert!(error.details.is_some(), "with retry_info");
    // A small message still fits.
    let mut small = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg_small = small.id.full_state(&[], Unset);
    assert!(block(|| small.exchange(msg_small))
        .await
        .error_response
        .is_none());
    assert_eq!(server.metrics.inflight_refused.get(), 2);

    // Once the slow body is gone the budget is free again.
    drop(stalled);
    eventually(WAIT, "the budget to be given back", || {
        (server.metrics.inflight_bytes.get() == 0).then_some(())
    })
    .await;
    let accepted = block(|| http.post(body, &[])).await;
    assert_eq!(accepted.status, 200);
    assert!(ws.exchange(msg).await.error_response.is_none());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inflight_budget_below_the_message_limit_is_refused_at_start() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.max_inflight_bytes = options.max_message_bytes - 1;
    let error = opamp_gitops::server::start(options)
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("--max-inflight-bytes"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opamp_instance_uid_header_must_name_the_agent_and_lets_a_full_registry_refuse_early() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.fleet.max_agents = 2;
    let server = start_with(options).await;
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let uid = http.id.uid_string();

    let msg = http.id.full_state(&[], Unset);
    let reply = block(|| http.post(msg.encode_to_vec(), &[("OpAMP-Instance-UID", &uid)])).await;
    assert!(reply.message().error_response.is_none());

    let other = Identity::new(PROD).uid_string();
    let msg = http.id.heartbeat();
    let reply = block(|| http.post(msg.encode_to_vec(), &[("OpAMP-Instance-UID", &other)])).await;
    let error = reply.message().error_response.expect("BAD_REQUEST");
    assert_eq!(error.r#type, ServerErrorResponseType::BadRequest as i32);
    assert!(error.error_message.contains("OpAMP-Instance-UID"));

    let msg = http.id.heartbeat();
    let reply =
        block(|| http.post(msg.encode_to_vec(), &[("OpAMP-Instance-UID", "not-a-uuid")])).await;
    assert_eq!(reply.status, 400);

    // The registry is full: a new agent named by the header is refused before its body is
    // read (this body is not even a message).
    let mut second = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = second.id.full_state(&[], Unset);
    assert!(block(|| second.exchange(msg))
        .await
        .error_response
        .is_none());
    assert_eq!(server.fleet.len(), 2, "a refused message added no agent");
    let reply = block(|| http.post(vec![0xff; 10], &[("OpAMP-Instance-UID", &other)])).await;
    assert_eq!(reply.status, 503);
    assert!(reply.header("retry-after").is_some());
    // The known agent is still served.
    let msg = http.id.heartbeat();
    let reply = block(|| http.post(msg.encode_to_vec(), &[("OpAMP-Instance-UID", &uid)])).await;
    assert!(reply.message().error_response.is_none());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_agents_agent_disconnect_marks_it_disconnected_at_once() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = http.id.full_state(&[], Unset);
    block(|| http.exchange(msg)).await;
    assert!(agent(&server, &http.id.uid_string()).unwrap().connected);
    let mut msg = http.id.heartbeat();
    msg.agent_disconnect = Some(AgentDisconnect {});
    let reply = block(|| http.exchange(msg)).await;
    assert!(reply.error_response.is_none());
    assert!(
        reply.remote_config.is_none(),
        "nothing more for a leaving agent"
    );
    let summary = agent(&server, &http.id.uid_string()).unwrap();
    assert!(
        !summary.connected,
        "disconnected with its last message, not after a timeout"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_agent_that_leaves_out_unchanged_status_is_served_from_the_held_state() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    let hash = config_hash(&ws.exchange(msg).await).unwrap();
    let msg = ws.id.report(&hash, Applied, "");
    ws.exchange(msg).await;
    let id = ws.id.clone();
    drop(ws);
    let uid = id.uid_string();
    eventually(WAIT, "disconnected", || {
        agent(&server, &uid).filter(|a| !a.connected)
    })
    .await;

    // v0.16: the first message of the new connection carries only what changed: nothing.
    let mut again = WsAgent::connect(server.opamp_addr, id).await;
    let msg = again.id.heartbeat();
    let reply = again.exchange(msg).await;
    assert_eq!(
        reply.flags & FLAG_REPORT_FULL_STATE,
        0,
        "the server holds the state"
    );
    assert!(
        reply.remote_config.is_none(),
        "it runs the desired config already"
    );
    let summary = agent(&server, &uid).unwrap();
    assert!(summary.connected);
    assert_eq!(summary.status, Status::Applied);

    // A restarted agent (its sequence starts again) is still known: no full-state request.
    again.id.sequence_num = 0;
    let msg = again.id.heartbeat();
    assert_eq!(again.exchange(msg).await.flags & FLAG_REPORT_FULL_STATE, 0);
    server.shutdown(Duration::from_secs(5)).await;

    // A server that truly lacks the state (a restart without a store) asks for it.
    let fresh = start(&repo).await;
    let mut id = again.id.clone();
    let mut ws = WsAgent::connect(fresh.opamp_addr, id.clone()).await;
    let msg = id.heartbeat();
    let reply = ws.exchange(msg).await;
    assert_eq!(reply.flags & FLAG_REPORT_FULL_STATE, FLAG_REPORT_FULL_STATE);
    assert!(
        reply.remote_config.is_none(),
        "nothing is offered before the state is known"
    );
    fresh.shutdown(Duration::from_secs(5)).await;
}

const STAGING: &[(&str, &str)] = &[("environment", "staging"), ("service.name", "otel")];

fn duplicate_events(server: &opamp_gitops::server::Server, uid: &str) -> usize {
    server
        .audit
        .recent(Some(uid), 100)
        .iter()
        .filter(|e| e.kind.name() == "duplicate_uid")
        .count()
}

/// The new uid a reply assigns, checked to be 16 bytes.
fn assigned_uid(reply: &opamp_gitops::opamp::proto::ServerToAgent) -> bytes::Bytes {
    let new = reply
        .agent_identification
        .as_ref()
        .expect("told to take a new uid")
        .new_instance_uid
        .clone();
    assert_eq!(new.len(), 16);
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_websocket_agent_claiming_a_live_uid_with_other_attributes_gets_a_new_uid() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut first = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = first.id.full_state(&[], Unset);
    first.exchange(msg).await;
    let uid = first.id.uid_string();

    // A cloned VM: the same uid, another agent.
    let mut clone_id = Identity::new(STAGING);
    clone_id.uid = first.id.uid.clone();
    let mut clone = WsAgent::connect(server.opamp_addr, clone_id).await;
    let msg = clone.id.full_state(&[], Unset);
    let reply = clone.exchange(msg).await;
    assert_eq!(
        reply.instance_uid, first.id.uid,
        "the reply names the uid it was sent"
    );
    let new = assigned_uid(&reply);
    assert_ne!(new, first.id.uid);
    assert!(
        reply.remote_config.is_none(),
        "nothing for a uid that is not its own"
    );
    assert_eq!(server.metrics.duplicate_uids.get(), 1);
    assert_eq!(duplicate_events(&server, &uid), 1);

    // The live agent keeps its uid, its session and its attributes.
    let msg = first.id.heartbeat();
    assert!(first.exchange(msg).await.error_response.is_none());
    let held = agent(&server, &uid).unwrap();
    assert!(held.connected);
    assert_eq!(held.attributes["environment"], "production");

    // The clone takes the new uid and is an agent of its own.
    clone.id.uid = new;
    let msg = clone.id.full_state(&[], Unset);
    let reply = clone.exchange(msg).await;
    assert!(reply.agent_identification.is_none());
    assert!(config_hash(&reply).is_some(), "its own config");
    let own = agent(&server, &clone.id.uid_string()).unwrap();
    assert_eq!(own.attributes["environment"], "staging");
    assert_eq!(server.fleet.len(), 2);

    // The same agent reconnecting (same identifying attributes) is no duplicate: the newer
    // session wins.
    let mut again = WsAgent::connect(server.opamp_addr, first.id.clone()).await;
    let msg = again.id.full_state(&[], Unset);
    assert!(again.exchange(msg).await.agent_identification.is_none());
    assert_eq!(first.closed().await, Some(1000));
    assert_eq!(server.metrics.duplicate_uids.get(), 1);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_message_from_another_agent_with_a_live_uid_gets_a_new_uid() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut live = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = live.id.full_state(&[], Unset);
    block(|| live.exchange(msg)).await;
    let uid = live.id.uid_string();

    let mut clone_id = Identity::new(STAGING);
    clone_id.uid = live.id.uid.clone();
    let mut clone = HttpAgent::new(server.opamp_addr, clone_id);
    let msg = clone.id.full_state(&[], Unset);
    let reply = block(|| clone.exchange(msg)).await;
    assert_eq!(assigned_uid(&reply).len(), 16);
    assert!(reply.remote_config.is_none());
    assert_eq!(server.metrics.duplicate_uids.get(), 1);
    assert_eq!(
        agent(&server, &uid).unwrap().attributes["environment"],
        "production"
    );

    // The live agent's own description changes while its sequence continues (a Collector
    // upgraded under its Supervisor): the same agent, not a duplicate.
    live.id
        .attributes
        .push(("service.version".into(), "2".into()));
    let msg = live.id.full_state(&[], Unset);
    let reply = block(|| live.exchange(msg)).await;
    assert!(reply.agent_identification.is_none());
    assert_eq!(
        agent(&server, &uid).unwrap().attributes["service.version"],
        "2"
    );

    // After it said goodbye, the uid is free to take.
    let mut msg = live.id.heartbeat();
    msg.agent_disconnect = Some(AgentDisconnect {});
    block(|| live.exchange(msg)).await;
    let msg = clone.id.full_state(&[], Unset);
    assert!(block(|| clone.exchange(msg))
        .await
        .agent_identification
        .is_none());
    assert_eq!(server.metrics.duplicate_uids.get(), 1);
    server.shutdown(Duration::from_secs(5)).await;
}
