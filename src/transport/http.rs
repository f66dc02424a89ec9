//! OpAMP over plain HTTP: one `AgentToServer` per `POST`, gzip accepted (one layer, measured
//! after decompression) and answered when allowed.

use super::{text, OpampState, PROTOBUF};
use crate::fleet::record::Transport;
use crate::fleet::{Connection, Handled};
use crate::opamp::codec::{self, CodecError};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

pub(super) async fn plain_http(
    state: OpampState,
    request: Request,
    token_name: Option<String>,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.max_message_bytes;
    let raw =
        match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("message is larger than the {limit}-byte limit"),
                )
            }
            Err(_) => {
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                )
            }
        };
    let gzipped = match body_encoding(&parts.headers) {
        Ok(gzipped) => gzipped,
        Err(encoding) => {
            let mut response = text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding `{encoding}` is not supported: send the body uncompressed or with `Content-Encoding: gzip`"),
            );
            response
                .headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            return response;
        }
    };
    let payload = if gzipped {
        match codec::gunzip_limited(&raw, limit) {
            Ok(p) => bytes::Bytes::from(p),
            Err(CodecError::TooLarge { .. }) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("message is larger than the {limit}-byte limit after decompression"),
                )
            }
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        }
    } else {
        raw
    };
    state.metrics.message_in(payload.len());
    let message = match codec::decode_agent_message(&payload) {
        Ok(m) => m,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let fleet = state.fleet.clone();
    let connection = Connection {
        id: fleet.new_connection_id(),
        transport: Transport::Http,
        token_name,
        commands: None,
    };
    let reply = match fleet.handle(message, &connection) {
        Handled::Reply { reply, .. } | Handled::Rejected(reply) => reply,
        Handled::Unavailable { retry_after, .. } => {
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server holds its maximum number of agents",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs()),
            );
            return response;
        }
    };
    let encoded = reply.encode();
    state.metrics.message_out(encoded.len());
    let mut response = if accepts_gzip(&parts.headers) {
        let mut r = Response::new(Body::from(codec::gzip(&encoded)));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(Body::from(encoded))
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    response
}

/// Whether the body is gzip-compressed (`Ok(true)`), as is (`Ok(false)`: no `Content-Encoding`,
/// or `identity`), or in an encoding this server does not decode (`Err` with the header's text):
/// one layer of gzip is the only compression OpAMP clients use.
fn body_encoding(headers: &HeaderMap) -> Result<bool, String> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let text = value.to_str().map_err(|_| "(not text)".to_owned())?;
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        _ => Err(text.chars().take(64).collect()),
    }
}

/// Whether `Accept-Encoding` allows gzip (with a non-zero quality, directly or through `*`).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut gzip = None;
    let mut star = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
            })
            .next()
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q > 0.0),
            "*" => star = Some(q > 0.0),
            _ => {}
        }
    }
    gzip.or(star).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn only_identity_and_one_layer_of_gzip_are_decoded() {
        let with_encoding = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            body_encoding(&h)
        };
        assert_eq!(body_encoding(&HeaderMap::new()), Ok(false));
        assert_eq!(with_encoding("identity"), Ok(false));
        assert_eq!(with_encoding("GZIP"), Ok(true));
        for refused in ["deflate", "br", "gzip, gzip", "zstd"] {
            assert_eq!(with_encoding(refused), Err(refused.to_owned()));
        }
    }

    #[test]
    fn accept_encoding_quality_values_are_honoured() {
        assert!(accepts_gzip(&with("gzip")));
        assert!(accepts_gzip(&with("deflate, gzip;q=0.5")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("*, gzip;q=0")));
        assert!(!accepts_gzip(&with("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
