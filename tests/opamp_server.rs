//! The OpAMP server on loopback with our own test agents over WebSocket and plain HTTP: what
//! each agent is sent, and when, as the protocol and design.md say.

mod common;

use common::agent::*;
use common::repo::{expected_hash, TestRepo};
use common::server::{agent, eventually, start, start_with};
use opamp_gitops::fleet::status::Status;
use opamp_gitops::fleet::AgentAction;
use opamp_gitops::opamp::proto::{
    AgentDisconnect,
    RemoteConfigStatuses::{Applied, Failed, Unset},
    ServerErrorResponseType,
};
use opamp_gitops::opamp::{agent_caps, FLAG_REPORT_FULL_STATE, FLAG_REQUEST_INSTANCE_UID};
use opamp_gitops::server::ServeOptions;
use prost::Message as _;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const PROD: &[(&str, &str)] = &[("environment", "production"), ("service.name", "otel")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_agent_gets_capabilities_and_its_config_then_nothing_after_applied() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;

    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    assert_eq!(reply.instance_uid, ws.id.uid);
    assert_eq!(
        reply.capabilities & 0x7,
        0x7,
        "AcceptsStatus | OffersRemoteConfig | AcceptsEffectiveConfig"
    );
    let hash = config_hash(&reply).expect("the first reply carries the config");
    assert_eq!(hash, expected_hash(&repo, PROD));
    let rc = reply.remote_config.as_ref().unwrap();
    let file = &rc.config.as_ref().unwrap().config_map["collector.yaml"];
    assert_eq!(file.content_type, "text/yaml");
    assert!(config_file(&reply, "collector.yaml").contains("tempo-production.monitoring.svc:4317"));

    let msg = ws.id.report(&hash, Applied, "");
    let reply = ws.exchange(msg).await;
    assert!(reply.remote_config.is_none());
    let msg = ws.id.heartbeat();
    assert!(
        ws.exchange(msg).await.remote_config.is_none(),
        "no config after APPLIED"
    );

    let summary = eventually(WAIT, "applied", || {
        agent(&server, &ws.id.uid_string()).filter(|a| a.status == Status::Applied)
    })
    .await;
    assert_eq!(summary.rule.as_deref(), Some("prod"));
    assert_eq!(summary.desired_hash, Some(hex::encode(&hash)));
    assert_eq!(summary.reported_hash, Some(hex::encode(&hash)));
    assert!(summary.connected);
    assert_eq!(summary.attributes["environment"], "production");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_is_pushed_over_websocket_without_the_agent_sending_anything() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    let first = config_hash(&ws.exchange(msg).await).unwrap();
    let msg = ws.id.report(&first, Applied, "");
    ws.exchange(msg).await;

    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
    server.reload().await;
    let pushed = ws.recv().await;
    let second = config_hash(&pushed).expect("a pushed config");
    assert_ne!(first, second);
    assert_eq!(second, expected_hash(&repo, PROD));
    assert!(config_file(&pushed, "collector.yaml").contains("timeout: 7s"));
    assert_eq!(pushed.instance_uid, ws.id.uid);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_agent_gets_its_config_and_a_new_revision_on_its_next_poll() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = http.id.full_state(&[], Unset);
    let reply = tokio::task::block_in_place(|| http.exchange(msg));
    let first = config_hash(&reply).expect("config in the first answer");
    assert_eq!(reply.capabilities & 0x7, 0x7);
    let msg = http.id.report(&first, Applied, "");
    assert!(tokio::task::block_in_place(|| http.exchange(msg))
        .remote_config
        .is_none());
    let summary = agent(&server, &http.id.uid_string()).unwrap();
    assert_eq!(summary.status, Status::Applied);
    assert_eq!(
        summary.transport,
        opamp_gitops::fleet::record::Transport::Http
    );

    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 9s");
    server.reload().await;
    assert_eq!(
        agent(&server, &http.id.uid_string()).unwrap().status,
        Status::Pending,
        "not polled yet"
    );
    let msg = http.id.heartbeat();
    let reply = tokio::task::block_in_place(|| http.exchange(msg));
    assert_eq!(config_hash(&reply).unwrap(), expected_hash(&repo, PROD));
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hash_is_not_sent_again_even_after_a_reconnect() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let id = Identity::new(PROD);
    let mut ws = WsAgent::connect(server.opamp_addr, id.clone()).await;
    let msg = ws.id.full_state(&[], Unset);
    let hash = config_hash(&ws.exchange(msg).await).unwrap();
    let msg = ws
        .id
        .report(&hash, Failed, "exporter otlp: connection refused");
    assert!(ws.exchange(msg).await.remote_config.is_none());
    let summary = agent(&server, &ws.id.uid_string()).unwrap();
    assert_eq!(summary.status, Status::Failed);
    assert_eq!(
        summary.last_error.as_deref(),
        Some("exporter otlp: connection refused")
    );

    // The agent rolls back to what it ran before and reconnects: still nothing.
    let mut again = WsAgent::connect(server.opamp_addr, ws.id.clone()).await;
    drop(ws);
    let msg = again.id.full_state(&[1; 32], Applied);
    assert!(
        again.exchange(msg).await.remote_config.is_none(),
        "a FAILED hash must not be re-sent"
    );
    assert_eq!(
        agent(&server, &again.id.uid_string()).unwrap().status,
        Status::Failed
    );

    // An operator's push sends it again.
    let uid = again.id.uid_string().parse().unwrap();
    server.fleet.act(&uid, AgentAction::Push).unwrap();
    assert_eq!(config_hash(&again.recv().await).unwrap(), hash);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_gap_asks_for_the_full_state_once() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    // A compressed first message, as an agent sends after the server restarted.
    ws.id.sequence_num = 41;
    let msg = ws.id.heartbeat();
    let reply = ws.exchange(msg).await;
    assert_eq!(reply.flags & FLAG_REPORT_FULL_STATE, FLAG_REPORT_FULL_STATE);
    assert!(
        reply.remote_config.is_none(),
        "no config before the server knows who the agent is"
    );
    let msg = ws.id.heartbeat();
    assert_eq!(
        ws.exchange(msg).await.flags,
        0,
        "asked once, not on every reply"
    );
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    assert_eq!(reply.flags, 0);
    assert!(reply.remote_config.is_some());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_instance_uid_gets_a_new_uid_and_the_record_moves() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let mut msg = ws.id.full_state(&[], Unset);
    msg.flags = FLAG_REQUEST_INSTANCE_UID;
    let reply = ws.exchange(msg).await;
    assert_eq!(
        reply.instance_uid, ws.id.uid,
        "the reply still names the uid the agent sent"
    );
    let new_uid = reply
        .agent_identification
        .expect("a new uid")
        .new_instance_uid;
    assert_eq!(new_uid.len(), 16);
    assert_ne!(new_uid, ws.id.uid);
    let old = ws.id.uid_string();
    ws.id.uid = new_uid;
    let msg = ws.id.heartbeat();
    let reply = ws.exchange(msg).await;
    assert_eq!(reply.instance_uid, ws.id.uid);
    assert!(agent(&server, &old).is_none());
    assert_eq!(
        agent(&server, &ws.id.uid_string()).unwrap().rule.as_deref(),
        Some("prod")
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config_for_an_agent_that_does_not_accept_remote_config() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut id = Identity::new(PROD);
    id.capabilities = agent_caps::REPORTS_STATUS | agent_caps::REPORTS_EFFECTIVE_CONFIG;
    let mut ws = WsAgent::connect(server.opamp_addr, id).await;
    let msg = ws.id.full_state(&[], Unset);
    assert!(ws.exchange(msg).await.remote_config.is_none());
    assert_eq!(
        agent(&server, &ws.id.uid_string()).unwrap().status,
        Status::Unsupported
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_matching_no_rule_is_unmanaged_and_gets_nothing() {
    let repo = TestRepo::new();
    repo.edit("fleet.yaml", "match: {}", "match: {environment: dev}");
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(&[("environment", "qa")])).await;
    let msg = ws.id.full_state(&[], Unset);
    assert!(ws.exchange(msg).await.remote_config.is_none());
    assert_eq!(
        agent(&server, &ws.id.uid_string()).unwrap().status,
        Status::Unmanaged
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_error_keeps_the_agent_on_what_it_runs() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/prod.yaml.j2",
        "agent.attributes.environment | yaml",
        "agent.attributes.team | yaml",
    );
    repo.write(
        "agents/prod.yaml",
        "attributes: {environment: production, team: a}\n",
    );
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    assert!(ws.exchange(msg).await.remote_config.is_none());
    let summary = agent(&server, &ws.id.uid_string()).unwrap();
    assert_eq!(summary.status, Status::RenderError);
    assert!(summary
        .last_error
        .unwrap()
        .contains("templates/prod.yaml.j2:11"));
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_uid_length_gets_bad_request_with_the_uid_echoed() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut id = Identity::new(PROD);
    id.uid = bytes::Bytes::from_static(b"short");
    let mut ws = WsAgent::connect(server.opamp_addr, id).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    let error = reply.error_response.expect("an error response");
    assert_eq!(error.r#type, ServerErrorResponseType::BadRequest as i32);
    assert!(error.error_message.contains("16 bytes"));
    assert_eq!(reply.instance_uid.as_ref(), b"short");
    assert!(
        reply.remote_config.is_none() && reply.capabilities == 0,
        "an error response carries nothing else"
    );

    let mut http = HttpAgent::new(server.opamp_addr, ws.id.clone());
    let msg = http.id.heartbeat();
    let reply = tokio::task::block_in_place(|| http.exchange(msg));
    assert!(reply.error_response.is_some());
    assert!(server.fleet.is_empty(), "no agent state for a bad uid");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_ulid_uids_are_accepted_and_echoed() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut id = Identity::new(PROD);
    id.uid = bytes::Bytes::from_static(b"01ARZ3NDEKTSV4RRFFQ69G5FAV");
    let mut ws = WsAgent::connect(server.opamp_addr, id).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    assert_eq!(reply.instance_uid.as_ref(), b"01ARZ3NDEKTSV4RRFFQ69G5FAV");
    assert!(reply.remote_config.is_some());
    assert!(agent(&server, "01563e3a-b5d3-d676-4c61-efb99302bd5b").is_some());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frames_are_malformed_and_header_less_frames_are_accepted() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    ws.send_frame(Message::Text("hello".into())).await;
    let reply = ws.recv().await;
    assert_eq!(
        reply.error_response.unwrap().r#type,
        ServerErrorResponseType::BadRequest as i32
    );

    // A legacy client sends the protobuf without the 0x00 header.
    let msg = ws.id.full_state(&[], Unset);
    ws.send_frame(Message::Binary(msg.encode_to_vec().into()))
        .await;
    let reply = ws.recv().await;
    assert!(reply.error_response.is_none());
    assert!(reply.remote_config.is_some());

    // Garbage after a valid header: BAD_REQUEST, and the session goes on.
    ws.send_frame(Message::Binary(vec![0, 0xff, 0xff, 0xff].into()))
        .await;
    assert!(ws.recv().await.error_response.is_some());
    let msg = ws.id.heartbeat();
    assert!(ws.exchange(msg).await.error_response.is_none());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_accepted_and_gzip_answers_given_when_allowed() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = http.id.full_state(&[], Unset);
    let body = opamp_gitops::opamp::codec::gzip(&msg.encode_to_vec());
    let reply = tokio::task::block_in_place(|| {
        http.post(
            body,
            &[("Content-Encoding", "gzip"), ("Accept-Encoding", "gzip")],
        )
    });
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let plain = opamp_gitops::opamp::codec::gunzip_limited(&reply.body, 1 << 20).unwrap();
    let decoded = opamp_gitops::opamp::proto::ServerToAgent::decode(plain.as_slice()).unwrap();
    assert!(decoded.remote_config.is_some());

    let msg = http.id.heartbeat();
    let reply = tokio::task::block_in_place(|| http.post(msg.encode_to_vec(), &[]));
    assert_eq!(
        reply.header("content-encoding"),
        None,
        "no gzip unless Accept-Encoding allows it"
    );
    reply.message();
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_http_bodies_get_400_and_413() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.max_message_bytes = 64 * 1024;
    let server = start_with(options).await;
    let http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let garbage = tokio::task::block_in_place(|| http.post(vec![0xff; 10], &[]));
    assert_eq!(garbage.status, 400);
    assert!(String::from_utf8_lossy(&garbage.body).contains("AgentToServer"));
    let big = tokio::task::block_in_place(|| http.post(vec![0x0a; 100 * 1024], &[]));
    assert_eq!(big.status, 413);
    let bomb = opamp_gitops::opamp::codec::gzip(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let bombed = tokio::task::block_in_place(|| http.post(bomb, &[("Content-Encoding", "gzip")]));
    assert_eq!(
        bombed.status, 413,
        "a gzip bomb is measured after decompression"
    );
    assert!(server.fleet.is_empty());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_message_closes_with_1009() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.max_message_bytes = 64 * 1024;
    let server = start_with(options).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    ws.send_frame(Message::Binary(vec![0u8; 100 * 1024].into()))
        .await;
    assert_eq!(ws.closed().await, Some(1009));
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_disconnect_marks_the_agent_disconnected() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    ws.exchange(msg).await;
    assert!(agent(&server, &ws.id.uid_string()).unwrap().connected);
    let mut msg = ws.id.heartbeat();
    msg.agent_disconnect = Some(AgentDisconnect {});
    let reply = ws.exchange(msg).await;
    assert!(reply.remote_config.is_none());
    assert!(!agent(&server, &ws.id.uid_string()).unwrap().connected);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_websocket_marks_the_agent_disconnected() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    ws.exchange(msg).await;
    let uid = ws.id.uid_string();
    ws.send_frame(Message::Close(None)).await;
    drop(ws);
    eventually(WAIT, "disconnected", || {
        agent(&server, &uid).filter(|a| !a.connected)
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_session_with_the_same_uid_replaces_the_first() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let id = Identity::new(PROD);
    let mut first = WsAgent::connect(server.opamp_addr, id.clone()).await;
    let msg = first.id.full_state(&[], Unset);
    first.exchange(msg).await;
    let mut second = WsAgent::connect(server.opamp_addr, first.id.clone()).await;
    let msg = second.id.full_state(&[], Unset);
    second.exchange(msg).await;
    assert_eq!(first.closed().await, Some(1000));
    let msg = second.id.heartbeat();
    assert!(second.exchange(msg).await.error_response.is_none());
    assert!(agent(&server, &second.id.uid_string()).unwrap().connected);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_interval_is_offered_only_with_an_advertised_url() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.fleet.advertise_url = Some("ws://opamp.example:4320/v1/opamp".into());
    options.fleet.heartbeat_interval = Duration::from_secs(15);
    let server = start_with(options).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    assert_eq!(reply.capabilities & 0x20, 0x20, "OffersConnectionSettings");
    let offer = reply.connection_settings.expect("an offer");
    assert_eq!(offer.hash.len(), 32);
    let opamp = offer.opamp.unwrap();
    assert_eq!(opamp.heartbeat_interval_seconds, 15);
    assert_eq!(
        opamp.destination_endpoint,
        "ws://opamp.example:4320/v1/opamp"
    );
    let msg = ws.id.heartbeat();
    assert!(
        ws.exchange(msg).await.connection_settings.is_none(),
        "offered only when it changed"
    );
    server.shutdown(Duration::from_secs(5)).await;

    let plain = start(&repo).await;
    let mut ws = WsAgent::connect(plain.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    assert!(reply.connection_settings.is_none());
    assert_eq!(reply.capabilities & 0x20, 0);
    plain.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_registry_answers_unavailable_with_retry_info_and_503() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.fleet.max_agents = 1;
    let server = start_with(options).await;
    let mut one = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = one.id.full_state(&[], Unset);
    assert!(one.exchange(msg).await.error_response.is_none());
    let mut two = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = two.id.full_state(&[], Unset);
    let error = two.exchange(msg).await.error_response.expect("UNAVAILABLE");
    assert_eq!(error.r#type, ServerErrorResponseType::Unavailable as i32);
    assert!(error.details.is_some(), "with retry_info");
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = http.id.heartbeat();
    let reply = tokio::task::block_in_place(|| http.post(msg.encode_to_vec(), &[]));
    assert_eq!(reply.status, 503);
    assert!(reply.header("retry-after").is_some());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_going_away() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    ws.exchange(msg).await;
    let stopped = tokio::spawn(server.shutdown(Duration::from_secs(5)));
    assert_eq!(ws.closed().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("shutdown within its bound")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    ws.send_frame(Message::Ping(b"are you there".to_vec().into()))
        .await;
    let msg = ws.id.full_state(&[], Unset);
    ws.send(msg).await;
    let mut got_pong = false;
    for _ in 0..5 {
        match ws.next_frame(WAIT).await {
            Some(Message::Pong(data)) => {
                assert_eq!(&data[..], b"are you there");
                got_pong = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert!(got_pong);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_silent_for_three_heartbeat_intervals_is_stale() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.fleet.heartbeat_interval = Duration::from_millis(100);
    options.idle_timeout = Duration::from_secs(60);
    let server = start_with(options).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    ws.exchange(msg).await;
    let uid = ws.id.uid_string();
    let stale = eventually(WAIT, "stale", || agent(&server, &uid).filter(|a| a.stale)).await;
    assert!(
        !stale.connected,
        "a stale agent is not counted as connected"
    );
    let msg = ws.id.heartbeat();
    ws.exchange(msg).await;
    assert!(
        !agent(&server, &uid).unwrap().stale,
        "a heartbeat makes it fresh again"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_agents_are_forgotten_after_the_ttl() {
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.fleet.agent_ttl = Duration::from_millis(200);
    let server = start_with(options).await;
    let mut gone = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = gone.id.full_state(&[], Unset);
    gone.exchange(msg).await;
    let mut msg = gone.id.heartbeat();
    msg.agent_disconnect = Some(AgentDisconnect {});
    gone.exchange(msg).await;
    let mut live = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = live.id.full_state(&[], Unset);
    live.exchange(msg).await;
    let until = tokio::time::Instant::now() + WAIT;
    while server.fleet.forget_expired() == 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "the disconnected agent was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(agent(&server, &gone.id.uid_string()).is_none());
    assert!(
        agent(&server, &live.id.uid_string()).is_some(),
        "a connected agent is kept"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_push_reaches_an_http_agent_on_its_next_poll_even_for_a_failed_hash() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut http = HttpAgent::new(server.opamp_addr, Identity::new(PROD));
    let msg = http.id.full_state(&[], Unset);
    let hash = config_hash(&tokio::task::block_in_place(|| http.exchange(msg))).unwrap();
    let msg = http.id.report(&hash, Failed, "refused");
    assert!(tokio::task::block_in_place(|| http.exchange(msg))
        .remote_config
        .is_none());
    let msg = http.id.heartbeat();
    assert!(tokio::task::block_in_place(|| http.exchange(msg))
        .remote_config
        .is_none());

    let uid = http.id.uid_string().parse().unwrap();
    server.fleet.act(&uid, AgentAction::Push).unwrap();
    let msg = http.id.heartbeat();
    let reply = tokio::task::block_in_place(|| http.exchange(msg));
    assert_eq!(
        config_hash(&reply),
        Some(hash),
        "sent again on the next poll"
    );
    let msg = http.id.heartbeat();
    assert!(
        tokio::task::block_in_place(|| http.exchange(msg))
            .remote_config
            .is_none(),
        "once"
    );
    server.shutdown(Duration::from_secs(5)).await;
}
