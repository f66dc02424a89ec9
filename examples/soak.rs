//! A hostile-fleet soak against a running server (see `scripts/soak.sh`): for the given time it
//! keeps silent sockets and half-sent HTTP/2 prefaces open, churns WebSocket connections that
//! speak for several uids and ask for new ones, sends 1 MiB error messages and health strings,
//! and checks every few seconds that a well-behaved agent is still served, while sampling the
//! server's resident memory. Loopback only; every loop is bounded in count and time.
//!
//! Usage: soak OPAMP_ADDR ADMIN_ADDR SERVER_PID SECONDS

use futures_util::{SinkExt, StreamExt};
use opamp_gitops::opamp::proto::{
    AgentToServer, ComponentHealth, RemoteConfigStatus, RemoteConfigStatuses, ServerToAgent,
};
use opamp_gitops::opamp::{FLAG_REQUEST_INSTANCE_UID, SUPERVISED};
use prost::Message as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn frame(msg: &AgentToServer) -> Message {
    let mut bytes = vec![0u8];
    bytes.extend(msg.encode_to_vec());
    Message::Binary(bytes.into())
}

fn message(uid: &[u8], seq: u64) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec().into(),
        sequence_num: seq,
        capabilities: SUPERVISED,
        ..Default::default()
    }
}

fn new_uid() -> Vec<u8> {
    uuid::Uuid::now_v7().as_bytes().to_vec()
}

/// One connection speaking for `uids` agents, one of which asks for a new uid, each sending a
/// FAILED status with a 1 MiB error and 1 MiB health strings; then it closes.
async fn churn(opamp: SocketAddr, uids: usize, huge: &str) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{opamp}/v1/opamp"))
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..uids {
        let mut msg = message(&new_uid(), 1);
        if i == 0 {
            msg.flags = FLAG_REQUEST_INSTANCE_UID;
        }
        msg.remote_config_status = Some(RemoteConfigStatus {
            last_remote_config_hash: vec![i as u8; 32].into(),
            status: RemoteConfigStatuses::Failed as i32,
            error_message: huge.to_owned(),
        });
        msg.health = Some(ComponentHealth {
            healthy: false,
            last_error: huge.to_owned(),
            status: huge.to_owned(),
            ..Default::default()
        });
        ws.send(frame(&msg)).await.map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| "no reply".to_owned())?;
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// A well-behaved agent: connects, sends its full state, gets an answer without an error.
async fn served(opamp: SocketAddr) -> bool {
    let probe = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{opamp}/v1/opamp"))
            .await
            .ok()?;
        ws.send(frame(&message(&new_uid(), 1))).await.ok()?;
        match ws.next().await? {
            Ok(Message::Binary(data)) => {
                let reply = ServerToAgent::decode(&data[1..]).ok()?;
                let _ = ws.close(None).await;
                reply.error_response.is_none().then_some(())
            }
            _ => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), probe)
        .await
        .ok()
        .flatten()
        .is_some()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn connected_agents(admin: SocketAddr) -> String {
    std::process::Command::new("curl")
        .args(["-s", &format!("http://{admin}/api/summary")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, opamp, admin, pid, seconds] = &args[..] else {
        eprintln!("usage: soak OPAMP_ADDR ADMIN_ADDR SERVER_PID SECONDS");
        std::process::exit(2);
    };
    let opamp: SocketAddr = opamp.parse().expect("OPAMP_ADDR");
    let admin: SocketAddr = admin.parse().expect("ADMIN_ADDR");
    for addr in [opamp, admin] {
        assert!(addr.ip().is_loopback(), "the soak only targets loopback");
    }
    let pid: u32 = pid.parse().expect("SERVER_PID");
    let duration = Duration::from_secs(seconds.parse().expect("SECONDS"));
    let huge = "e".repeat(1 << 20);
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = Vec::new();
    let (mut churned, mut failures, mut probes_ok, mut probes) = (0u64, 0u64, 0u64, 0u64);
    println!("seconds  rss_kib  silent_open  churned  probes_ok/probes  summary");
    let mut next_sample = Instant::now();
    while started.elapsed() < duration {
        // 50 new silent sockets and prefaces per round, on both listeners; the server closes
        // them after its header timeout, so only the recent ones stay open.
        silent.retain(|s| s.peer_addr().is_ok());
        if silent.len() < 2_000 {
            for i in 0..50 {
                let target = if i % 2 == 0 { opamp } else { admin };
                if let Ok(mut s) = TcpStream::connect(target).await {
                    if i % 5 == 0 {
                        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\n").await;
                    }
                    silent.push(s);
                }
            }
        }
        // Eight connections of 8 uids each, with oversized strings.
        let rounds: Vec<_> = (0..8).map(|_| churn(opamp, 8, &huge)).collect();
        for result in futures_util::future::join_all(rounds).await {
            match result {
                Ok(()) => churned += 1,
                Err(_) => failures += 1,
            }
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(15);
            probes += 1;
            if served(opamp).await {
                probes_ok += 1;
            }
            println!(
                "{:>7}  {:>7}  {:>11}  {:>7}  {:>6}/{:<6}  {}",
                started.elapsed().as_secs(),
                rss_kib(pid),
                silent.len(),
                churned,
                probes_ok,
                probes,
                connected_agents(admin).trim()
            );
        }
    }
    drop(silent);
    println!(
        "churned connections: {churned}, failed: {failures}, probes served: {probes_ok}/{probes}"
    );
    if probes_ok != probes {
        std::process::exit(1);
    }
}
