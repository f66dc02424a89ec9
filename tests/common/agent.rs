//! Our own OpAMP test agents: a WebSocket one and a plain-HTTP one, speaking the protocol
//! message by message so tests can say exactly what an agent sends.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use opamp_gitops::opamp::proto::{
    any_value, AgentConfigMap, AgentDescription, AgentToServer, AnyValue, ComponentHealth,
    EffectiveConfig, KeyValue, RemoteConfigStatus, RemoteConfigStatuses, ServerToAgent,
};
use prost::Message as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use opamp_gitops::opamp::SUPERVISED;

/// How long a test waits for a message it expects.
pub const WAIT: Duration = Duration::from_secs(10);

/// The parts of an agent that go into its messages.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: Bytes,
    pub attributes: Vec<(String, String)>,
    pub capabilities: u64,
    pub sequence_num: u64,
}

impl Identity {
    pub fn new(attributes: &[(&str, &str)]) -> Identity {
        Identity {
            uid: Bytes::copy_from_slice(uuid::Uuid::now_v7().as_bytes()),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capabilities: SUPERVISED,
            sequence_num: 0,
        }
    }

    pub fn uid_string(&self) -> String {
        uuid::Uuid::from_slice(&self.uid)
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    fn next(&mut self) -> AgentToServer {
        self.sequence_num += 1;
        AgentToServer {
            instance_uid: self.uid.clone(),
            sequence_num: self.sequence_num,
            capabilities: self.capabilities,
            ..Default::default()
        }
    }

    /// A message with only the uid, sequence number and capabilities.
    pub fn heartbeat(&mut self) -> AgentToServer {
        self.next()
    }

    /// Everything: description, health, effective config and the remote-config status.
    pub fn full_state(&mut self, hash: &[u8], status: RemoteConfigStatuses) -> AgentToServer {
        let mut msg = self.next();
        msg.agent_description = Some(AgentDescription {
            identifying_attributes: self
                .attributes
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v.clone())),
                    }),
                })
                .collect(),
            non_identifying_attributes: vec![],
        });
        msg.health = Some(ComponentHealth {
            healthy: true,
            ..Default::default()
        });
        msg.effective_config = Some(EffectiveConfig {
            config_map: Some(AgentConfigMap::default()),
        });
        msg.remote_config_status = Some(status_report(hash, status, ""));
        msg
    }

    /// A status report for `hash`, as an agent sends after applying (or failing) a config.
    pub fn report(
        &mut self,
        hash: &[u8],
        status: RemoteConfigStatuses,
        error: &str,
    ) -> AgentToServer {
        let mut msg = self.next();
        msg.remote_config_status = Some(status_report(hash, status, error));
        msg
    }
}

pub fn status_report(hash: &[u8], status: RemoteConfigStatuses, error: &str) -> RemoteConfigStatus {
    RemoteConfigStatus {
        last_remote_config_hash: Bytes::copy_from_slice(hash),
        status: status as i32,
        error_message: error.into(),
    }
}

/// The config hash of a reply's remote config, if it carries one.
pub fn config_hash(reply: &ServerToAgent) -> Option<Vec<u8>> {
    reply
        .remote_config
        .as_ref()
        .map(|rc| rc.config_hash.to_vec())
}

/// The body of one file of a reply's remote config.
pub fn config_file(reply: &ServerToAgent, name: &str) -> String {
    let map = &reply
        .remote_config
        .as_ref()
        .expect("a remote config")
        .config
        .as_ref()
        .expect("a config map")
        .config_map;
    String::from_utf8_lossy(
        &map.get(name)
            .unwrap_or_else(|| panic!("no file {name}"))
            .body,
    )
    .into_owned()
}

pub struct WsAgent {
    pub id: Identity,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsAgent {
    pub async fn connect(addr: SocketAddr, id: Identity) -> WsAgent {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/opamp"))
            .await
            .expect("WebSocket connect");
        WsAgent { id, ws }
    }

    /// Connects as a deployed collector does, with `Authorization: Bearer <token>`.
    pub async fn connect_with_token(addr: SocketAddr, id: Identity, token: &str) -> WsAgent {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/v1/opamp")
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a header value"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connect");
        WsAgent { id, ws }
    }

    pub async fn send(&mut self, msg: AgentToServer) {
        let mut frame = vec![0u8];
        frame.extend(msg.encode_to_vec());
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .expect("send");
    }

    pub async fn send_frame(&mut self, frame: Message) {
        self.ws.send(frame).await.expect("send");
    }

    /// Writes raw bytes under the WebSocket framing (a frame header announcing a message the
    /// test never sends, for instance).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let stream = self.ws.get_mut();
        stream.write_all(bytes).await.expect("raw write");
        stream.flush().await.expect("flush");
    }

    /// The next frame of any kind, or None on timeout or close.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            _ => None,
        }
    }

    /// The next `ServerToAgent`, or None when none arrives within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<ServerToAgent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await? {
                Message::Binary(data) => {
                    assert_eq!(
                        data.first(),
                        Some(&0),
                        "every server message starts with the 0x00 header"
                    );
                    return Some(ServerToAgent::decode(&data[1..]).expect("a valid ServerToAgent"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> ServerToAgent {
        self.recv_within(WAIT)
            .await
            .expect("a reply from the server")
    }

    /// Sends a message and returns the reply.
    pub async fn exchange(&mut self, msg: AgentToServer) -> ServerToAgent {
        self.send(msg).await;
        self.recv().await
    }

    /// Waits for the connection to be closed by the server; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code.into()),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("the server did not close the connection"),
            }
        }
    }
}

/// A plain-HTTP agent: every message is one POST.
pub struct HttpAgent {
    pub id: Identity,
    url: String,
    http: ureq::Agent,
}

pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn message(&self) -> ServerToAgent {
        assert_eq!(
            self.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/x-protobuf"));
        ServerToAgent::decode(self.body.as_slice()).expect("a valid ServerToAgent")
    }
}

pub fn http_client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

impl HttpAgent {
    pub fn new(addr: SocketAddr, id: Identity) -> HttpAgent {
        HttpAgent {
            id,
            url: format!("http://{addr}/v1/opamp"),
            http: http_client(),
        }
    }

    /// POSTs raw bytes with extra headers.
    pub fn post(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> HttpReply {
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut response = request.send(&body[..]).expect("HTTP request");
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        HttpReply {
            status: response.status().as_u16(),
            headers,
            body: response.body_mut().read_to_vec().expect("body"),
        }
    }

    pub fn exchange(&self, msg: AgentToServer) -> ServerToAgent {
        self.post(msg.encode_to_vec(), &[]).message()
    }
}
