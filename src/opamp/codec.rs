//! Bytes on the wire: the WebSocket message header, gzip for plain HTTP, size limits measured
//! after decompression, and encoding replies that share a pre-encoded remote config.

use super::proto::{AgentRemoteConfig, AgentToServer, ServerToAgent};
use bytes::Bytes;
use prost::Message;
use std::io::Read;

/// The default limit on a decompressed inbound message: the specification's recommended 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("WebSocket message header {0} is not 0")]
    NonZeroHeader(u64),
    #[error("malformed WebSocket message header")]
    BadHeader,
    #[error("message is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("the server's in-flight byte budget is spent")]
    OverBudget,
    #[error("body is not valid gzip: {0}")]
    Gzip(String),
    #[error("not a valid AgentToServer message: {0}")]
    Protobuf(String),
}

/// The protobuf payload of a WebSocket binary message. A message that starts with a zero
/// header has it stripped; one that does not start with 0x00 is a legacy header-less message
/// (a protobuf message never starts with 0x00, since field numbers start at 1).
pub fn ws_payload(frame: &[u8]) -> Result<&[u8], CodecError> {
    match frame.first() {
        None => Ok(frame),
        Some(0) => Ok(&frame[1..]),
        Some(&b) if b >= 0x08 => Ok(frame),
        Some(_) => {
            let mut buf = frame;
            match prost::encoding::decode_varint(&mut buf) {
                Ok(header) => Err(CodecError::NonZeroHeader(header)),
                Err(_) => Err(CodecError::BadHeader),
            }
        }
    }
}

pub fn decode_agent_message(payload: &[u8]) -> Result<AgentToServer, CodecError> {
    AgentToServer::decode(payload).map_err(|e| CodecError::Protobuf(e.to_string()))
}

/// Gunzips `body`, refusing to produce more than `limit` bytes (gzip bombs included).
pub fn gunzip_limited(body: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    gunzip_limited_with(body, limit, |_| true)
}

/// Gunzips `body` as `gunzip_limited` does, asking `reserve(total)` before the output grows to
/// `total` bytes: `false` stops with `OverBudget`.
pub fn gunzip_limited_with(
    body: &[u8],
    limit: usize,
    mut reserve: impl FnMut(usize) -> bool,
) -> Result<Vec<u8>, CodecError> {
    const CHUNK: usize = 64 * 1024;
    let mut decoder = flate2::read::GzDecoder::new(body);
    let mut out = Vec::new();
    loop {
        let start = out.len();
        if start > limit {
            return Err(CodecError::TooLarge { limit });
        }
        if !reserve(start + CHUNK) {
            return Err(CodecError::OverBudget);
        }
        out.resize(start + CHUNK, 0);
        let read = decoder
            .read(&mut out[start..])
            .map_err(|e| CodecError::Gzip(e.to_string()))?;
        out.truncate(start + read);
        if read == 0 {
            out.shrink_to_fit();
            return Ok(out);
        }
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(data)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// A remote config encoded once as field 3 of `ServerToAgent`, ready to be appended to the
/// encoding of any reply: protobuf fields may come in any order, so every agent that gets this
/// config shares these bytes instead of encoding the config again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRemoteConfig {
    pub hash: [u8; 32],
    field: Bytes,
}

impl EncodedRemoteConfig {
    pub fn new(config: &AgentRemoteConfig) -> EncodedRemoteConfig {
        let mut field = Vec::with_capacity(config.encoded_len() + 8);
        prost::encoding::message::encode(3, config, &mut field);
        let hash = config.config_hash.as_ref().try_into().unwrap_or([0; 32]);
        EncodedRemoteConfig {
            hash,
            field: field.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.field.len()
    }

    pub fn is_empty(&self) -> bool {
        self.field.is_empty()
    }
}

/// A reply to an agent: the message, plus a shared remote config when one goes with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub message: ServerToAgent,
    pub remote_config: Option<std::sync::Arc<EncodedRemoteConfig>>,
}

impl Reply {
    pub fn encoded_len(&self) -> usize {
        self.message.encoded_len() + self.remote_config.as_ref().map_or(0, |rc| rc.len())
    }

    /// The protobuf encoding, after `prefix` (the WebSocket header, or nothing).
    pub fn encode_with_prefix(&self, prefix: &[u8]) -> Vec<u8> {
        debug_assert!(self.message.remote_config.is_none());
        let mut out = Vec::with_capacity(prefix.len() + self.encoded_len());
        out.extend_from_slice(prefix);
        self.message
            .encode(&mut out)
            .expect("a Vec grows as needed");
        if let Some(rc) = &self.remote_config {
            out.extend_from_slice(&rc.field);
        }
        out
    }

    /// A WebSocket message: the zero header, then the protobuf bytes.
    pub fn encode_ws(&self) -> Vec<u8> {
        self.encode_with_prefix(&[0])
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_prefix(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::proto::{AgentConfigFile, AgentConfigMap};

    #[test]
    fn ws_header_is_stripped_and_legacy_frames_pass() {
        let msg = AgentToServer {
            instance_uid: vec![1; 16].into(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut framed = vec![0];
        framed.extend(&msg);
        assert_eq!(ws_payload(&framed).unwrap(), msg.as_slice());
        assert_eq!(ws_payload(&msg).unwrap(), msg.as_slice());
        assert_eq!(ws_payload(&[0x01, 0x0a]), Err(CodecError::NonZeroHeader(1)));
        assert_eq!(ws_payload(&[0]).unwrap(), &[] as &[u8]);
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let big = vec![b'a'; 10_000];
        let packed = gzip(&big);
        assert_eq!(gunzip_limited(&packed, 20_000).unwrap(), big);
        assert_eq!(
            gunzip_limited(&packed, 9_999),
            Err(CodecError::TooLarge { limit: 9_999 })
        );
        assert!(matches!(
            gunzip_limited(b"not gzip", 100),
            Err(CodecError::Gzip(_))
        ));
    }

    #[test]
    fn a_shared_remote_config_decodes_as_part_of_the_reply() {
        let config = AgentRemoteConfig {
            config: Some(AgentConfigMap {
                config_map: [(
                    "collector.yaml".to_string(),
                    AgentConfigFile {
                        body: Bytes::from_static(b"a: 1\n"),
                        content_type: "text/yaml".into(),
                    },
                )]
                .into(),
            }),
            config_hash: Bytes::from(vec![9; 32]),
        };
        let reply = Reply {
            message: ServerToAgent {
                instance_uid: vec![1; 16].into(),
                capabilities: 7,
                ..Default::default()
            },
            remote_config: Some(std::sync::Arc::new(EncodedRemoteConfig::new(&config))),
        };
        let bytes = reply.encode_ws();
        assert_eq!(bytes[0], 0);
        let decoded = ServerToAgent::decode(&bytes[1..]).unwrap();
        assert_eq!(decoded.remote_config.unwrap(), config);
        assert_eq!(decoded.capabilities, 7);
        assert_eq!(bytes.len(), 1 + reply.encoded_len());
    }
}
