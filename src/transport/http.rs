//! OpAMP over plain HTTP: one `AgentToServer` per `POST`, gzip accepted (one layer, measured
//! after decompression) and answered when allowed, every body byte held under the in-flight
//! budget while the message is handled, and the `OpAMP-Instance-UID` header checked against the
//! body.

use super::budget::Reservation;
use super::{text, OpampState, PROTOBUF};
use crate::fleet::record::Transport;
use crate::fleet::{Connection, Handled};
use crate::opamp::codec::{self, CodecError, Reply};
use crate::opamp::proto::ServerErrorResponseType;
use crate::opamp::session;
use crate::opamp::uid::InstanceUid;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::time::Duration;

pub(super) async fn plain_http(
    state: OpampState,
    request: Request,
    token_name: Option<String>,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.max_message_bytes;
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = content_length(&parts.headers);
    if declared.is_some_and(|n| n > limit) {
        return too_large(limit, "");
    }
    // The header lets a load balancer route by agent; here it lets a full registry refuse a
    // new agent before its body is read, and it must name the agent the body names.
    let header_uid = match header_uid(&parts.headers) {
        Ok(uid) => uid,
        Err(response) => return *response,
    };
    if header_uid.is_some_and(|uid| !state.fleet.has_room_for(&uid)) {
        return full_registry(REGISTRY_RETRY);
    }
    let Some(mut reservation) = state.budget.try_reserve(declared.unwrap_or(0)) else {
        return busy(&state);
    };
    let raw = match tokio::time::timeout(
        state.body_timeout,
        read_body(body, limit, declared, &mut reservation),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => return too_large(limit, ""),
        Ok(Err(BodyError::OverBudget)) => return busy(&state),
        Ok(Err(BodyError::Read)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
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
        let compressed = raw.len();
        match codec::gunzip_limited_with(&raw, limit, |n| reservation.grow_to(compressed + n)) {
            Ok(p) => bytes::Bytes::from(p),
            Err(CodecError::TooLarge { .. }) => return too_large(limit, " after decompression"),
            Err(CodecError::OverBudget) => return busy(&state),
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
    drop(payload);
    if let Some(named) = header_uid {
        if InstanceUid::parse(&message.instance_uid).ok() != Some(named) {
            let reply = session::error_reply(
                message.instance_uid.clone(),
                ServerErrorResponseType::BadRequest,
                format!("the OpAMP-Instance-UID header names {named}, but the message's instance_uid is another agent's"),
                None,
            );
            return protobuf(&state, &parts.headers, reply);
        }
    }
    let fleet = state.fleet.clone();
    let connection = Connection {
        id: fleet.new_connection_id(),
        transport: Transport::Http,
        token_name,
        commands: None,
    };
    let reply = match fleet.handle(message, &connection) {
        Handled::Reply { reply, .. } | Handled::Rejected(reply) => reply,
        Handled::Unavailable { retry_after, .. } => return full_registry(retry_after),
    };
    drop(reservation);
    protobuf(&state, &parts.headers, reply)
}

/// The header a plain-HTTP agent SHOULD send with its uid (OpAMP v0.15).
pub const INSTANCE_UID_HEADER: &str = "opamp-instance-uid";

/// How long an agent refused for a full registry is asked to wait.
const REGISTRY_RETRY: Duration = Duration::from_secs(30);

/// How long a message refused for the in-flight budget is asked to wait: the specification's
/// minimum recommended retry interval.
pub const BUSY_RETRY: Duration = Duration::from_secs(30);

/// The uid the `OpAMP-Instance-UID` header names (a UUID string), if it is sent; a value that is
/// not a UUID is a 400.
fn header_uid(headers: &HeaderMap) -> Result<Option<InstanceUid>, Box<Response>> {
    let Some(value) = headers.get(INSTANCE_UID_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<InstanceUid>().ok())
        .map(Some)
        .ok_or_else(|| {
            Box::new(text(
                StatusCode::BAD_REQUEST,
                "the OpAMP-Instance-UID header must be the agent's instance_uid as a UUID string (8-4-4-4-12)",
            ))
        })
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

enum BodyError {
    TooLarge,
    OverBudget,
    Read,
}

/// Reads the body frame by frame, holding each byte under the in-flight budget before it is
/// kept, and stopping at the size limit.
async fn read_body(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    reservation: &mut Reservation,
) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = out.len() + data.len();
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        if !reservation.grow_to(total) {
            return Err(BodyError::OverBudget);
        }
        out.extend_from_slice(&data);
    }
    Ok(out.freeze())
}

fn too_large(limit: usize, when: &str) -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("message is larger than the {limit}-byte limit{when}"),
    )
}

fn with_retry_after(mut response: Response, retry_after: Duration) -> Response {
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs()),
    );
    response
}

fn full_registry(retry_after: Duration) -> Response {
    with_retry_after(
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server holds its maximum number of agents",
        ),
        retry_after,
    )
}

fn busy(state: &OpampState) -> Response {
    state.metrics.inflight_refused.inc();
    with_retry_after(
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server is receiving its maximum of {} message bytes at once: retry later",
                state.budget.limit()
            ),
        ),
        BUSY_RETRY,
    )
}

/// A protobuf answer, gzipped when the request allows it.
fn protobuf(state: &OpampState, request_headers: &HeaderMap, reply: Reply) -> Response {
    let encoded = reply.encode();
    state.metrics.message_out(encoded.len());
    let mut response = if accepts_gzip(request_headers) {
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
