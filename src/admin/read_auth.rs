//! `--admin-read-auth`: read-only admin endpoints need an admin token too. Probes, the webhook
//! (signed on its own) and static assets stay open. Browsers cannot send a bearer header when
//! they navigate, so the token is also taken from a same-site cookie that a small sign-in page
//! sets; mutating endpoints keep requiring the header, so the cookie alone changes nothing.

use crate::auth::{bearer, TokenFile};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use std::sync::Arc;

pub const COOKIE: &str = "opamp_gitops_token";

const OPEN_PREFIXES: &[&str] = &["/healthz", "/readyz", "/webhook/", "/assets/"];

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

const SIGN_IN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>opamp-gitops: sign in</title></head>
<body style="font-family: system-ui, sans-serif; margin: 4rem auto; max-width: 28rem">
<h1>opamp-gitops</h1>
<p>This server requires an admin token to read fleet data.</p>
<form id="f"><input id="t" type="password" autocomplete="off" placeholder="admin token" style="width: 100%">
<p><button type="submit">Sign in</button></p></form>
<script>
document.getElementById('f').addEventListener('submit', function (e) {
  e.preventDefault();
  var token = document.getElementById('t').value;
  document.cookie = 'opamp_gitops_token=' + encodeURIComponent(token) + '; path=/; SameSite=Strict';
  try { sessionStorage.setItem('opamp-gitops-admin-token', token); } catch (err) {}
  location.reload();
});
</script></body></html>"#;

pub async fn require_read_token(
    State(tokens): State<Option<Arc<TokenFile>>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let presented = bearer(headers).map(str::to_owned).or_else(|| {
        cookie_token(headers).map(|t| {
            form_urlencoded::parse(format!("t={t}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default()
        })
    });
    let allowed = match (&tokens, presented) {
        (Some(tokens), Some(token)) => tokens.check(&token).is_some(),
        _ => false,
    };
    if allowed {
        return next.run(request).await;
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return (StatusCode::UNAUTHORIZED, Html(SIGN_IN)).into_response();
    }
    crate::admin::error::ApiError::new(
        StatusCode::UNAUTHORIZED,
        "this server requires an admin token for reads too (--admin-read-auth): send Authorization: Bearer <token>",
    )
    .into_response()
}
