//! `POST /webhook/git`: push notifications from GitHub (`X-Hub-Signature-256`), GitLab
//! (`X-Gitlab-Token`) and Gitea/Forgejo (`X-Gitea-Signature`), checked in constant time against
//! the webhook secret. A push to the tracked branch triggers an immediate fetch.

use super::error::ApiError;
use super::AdminState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Which forge signed the request, and how.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid(&'static str),
    Missing,
    Invalid,
}

fn hmac_matches(secret: &[u8], body: &[u8], hex_signature: &str) -> bool {
    let Ok(signature) = hex::decode(hex_signature.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = secret.as_bytes();
    if let Some(signature) = header("x-hub-signature-256") {
        let valid = signature
            .strip_prefix("sha256=")
            .is_some_and(|hex| hmac_matches(secret, body, hex));
        return if valid {
            Verdict::Valid("github")
        } else {
            Verdict::Invalid
        };
    }
    if let Some(signature) = header("x-gitea-signature").or(header("x-forgejo-signature")) {
        return if hmac_matches(secret, body, signature) {
            Verdict::Valid("gitea")
        } else {
            Verdict::Invalid
        };
    }
    if let Some(token) = header("x-gitlab-token") {
        let equal: bool = token.as_bytes().ct_eq(secret).into();
        return if equal {
            Verdict::Valid("gitlab")
        } else {
            Verdict::Invalid
        };
    }
    Verdict::Missing
}

/// The event name, whichever forge sent it.
fn event(headers: &HeaderMap) -> String {
    [
        "x-github-event",
        "x-gitea-event",
        "x-forgejo-event",
        "x-gitlab-event",
    ]
    .iter()
    .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
    .unwrap_or("push")
    .to_owned()
}

pub async fn receive(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret_file) = &state.webhook_secret_file else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the webhook is disabled: start the server with --webhook-secret-file to enable it",
        )
        .into_response();
    };
    let secret = match std::fs::read_to_string(secret_file) {
        Ok(s) => s.trim().to_owned(),
        Err(e) => {
            tracing::error!(file = %secret_file.display(), error = %e, "cannot read the webhook secret");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the webhook secret cannot be read",
            )
            .into_response();
        }
    };
    let forge = match verify(&headers, &body, &secret) {
        Verdict::Valid(forge) => forge,
        Verdict::Missing => {
            tracing::warn!("webhook without a signature refused");
            return ApiError::new(StatusCode::UNAUTHORIZED, "missing webhook signature (X-Hub-Signature-256, X-Gitlab-Token or X-Gitea-Signature)").into_response();
        }
        Verdict::Invalid => {
            tracing::warn!("webhook with a bad signature refused");
            return ApiError::new(StatusCode::UNAUTHORIZED, "bad webhook signature")
                .into_response();
        }
    };
    let event = event(&headers);
    if !(event.eq_ignore_ascii_case("push") || event.eq_ignore_ascii_case("push hook")) {
        return (
            StatusCode::OK,
            Json(json!({"accepted": false, "ignored": format!("{event} event")})),
        )
            .into_response();
    }
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let pushed = payload["ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("refs/heads/"))
        .map(str::to_owned);
    let default_branch = payload["repository"]["default_branch"]
        .as_str()
        .or(payload["project"]["default_branch"].as_str())
        .map(str::to_owned);
    let tracked = state.tracked_branch.clone().or(default_branch);
    let relevant = match (&pushed, &tracked) {
        (Some(pushed), Some(tracked)) => pushed == tracked,
        // Without a branch to compare, look again: a fetch of an unchanged branch changes nothing.
        _ => true,
    };
    if !relevant {
        tracing::info!(
            forge,
            branch = pushed.as_deref().unwrap_or_default(),
            "webhook push to another branch ignored"
        );
        return (
            StatusCode::OK,
            Json(json!({"accepted": false, "ignored": "push to another branch"})),
        )
            .into_response();
    }
    tracing::info!(
        forge,
        branch = pushed.as_deref().unwrap_or_default(),
        "webhook push: fetching now"
    );
    state.refresh.notify_one();
    (StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn each_forge_signature_is_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut github = HeaderMap::new();
        github.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&format!("sha256={}", sign("s3cret", body))).unwrap(),
        );
        assert_eq!(verify(&github, body, "s3cret"), Verdict::Valid("github"));
        assert_eq!(verify(&github, body, "other"), Verdict::Invalid);
        assert_eq!(verify(&github, b"tampered", "s3cret"), Verdict::Invalid);

        let mut gitea = HeaderMap::new();
        gitea.insert(
            "x-gitea-signature",
            HeaderValue::from_str(&sign("s3cret", body)).unwrap(),
        );
        assert_eq!(verify(&gitea, body, "s3cret"), Verdict::Valid("gitea"));

        let mut gitlab = HeaderMap::new();
        gitlab.insert("x-gitlab-token", HeaderValue::from_static("s3cret"));
        assert_eq!(verify(&gitlab, body, "s3cret"), Verdict::Valid("gitlab"));
        assert_eq!(verify(&gitlab, body, "s3cre"), Verdict::Invalid);

        assert_eq!(verify(&HeaderMap::new(), body, "s3cret"), Verdict::Missing);
    }
}
