//! Talking to the admin listener as users and forges do.

use serde_json::Value;
use std::net::SocketAddr;

pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let http = super::agent::http_client();
    let url = format!("http://{addr}{path}");
    let mut response = if method == "GET" || method == "DELETE" {
        let mut r = if method == "GET" {
            http.get(&url)
        } else {
            http.delete(&url)
        };
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call()
    } else {
        let mut r = http.post(&url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send(body)
    }
    .expect("admin request");
    Answer {
        status: response.status().as_u16(),
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// `GET path` from a multi-threaded tokio test, which must answer 200 with JSON.
pub fn api(addr: SocketAddr, path: &str) -> Value {
    let answer = tokio::task::block_in_place(|| get(addr, path));
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    answer.json()
}

pub fn get(addr: SocketAddr, path: &str) -> Answer {
    request("GET", addr, path, &[], b"")
}

pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    request("POST", addr, path, headers, body)
}

/// A GitHub push webhook for `branch`, signed with `secret`.
pub fn github_push(addr: SocketAddr, secret: &str, branch: &str) -> Answer {
    use hmac::{Hmac, Mac};
    let body = serde_json::json!({"ref": format!("refs/heads/{branch}"), "repository": {"default_branch": "main"}}).to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    post(
        addr,
        "/webhook/git",
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &signature),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}
