//! The live fleet as `diff --fleet` sees it: the distinct attribute sets of a running server's
//! registry with their agent counts, read page by page from `GET /api/attribute-sets`.

use super::compare::AgentSet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Sets asked for per page (the server's maximum).
const PAGE: usize = 1000;

/// A request that takes longer is abandoned: the fleet "does not answer".
const TIMEOUT: Duration = Duration::from_secs(30);

/// A page is at most a few MiB (the server bounds it); anything larger is not one.
const MAX_PAGE_BODY: u64 = 32 << 20;

/// More sets than any registry holds (its `--max-agents` bounds it): a server answering more is
/// broken, and the client stops instead of paging on.
const MAX_SETS: usize = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the fleet at {url} does not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the fleet at {url} needs an admin token (HTTP {status}: {message}); pass --token-file or set OPAMP_GITOPS_TOKEN_FILE")]
    NeedsToken {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the fleet at {url} refuses the token (HTTP {status}: {message})")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the fleet at {url} answers HTTP {status}: {message}")]
    Failed {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the fleet at {url} does not answer with attribute sets: {reason}")]
    Malformed { url: String, reason: String },
}

#[derive(Deserialize)]
struct Page {
    total: usize,
    sets: Vec<RawSet>,
}

#[derive(Deserialize)]
struct RawSet {
    #[serde(default)]
    identifying: BTreeMap<String, String>,
    #[serde(default)]
    non_identifying: BTreeMap<String, String>,
    count: usize,
}

/// Every attribute set of the fleet behind the admin URL `base` (e.g. `http://opamp:8080`),
/// sending `token` as a bearer token when given.
pub fn fetch(base: &str, token: Option<&str>) -> Result<Vec<AgentSet>, LiveError> {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let base = base.trim_end_matches('/');
    let mut sets = Vec::new();
    loop {
        let url = format!(
            "{base}/api/attribute-sets?limit={PAGE}&offset={}",
            sets.len()
        );
        let page = fetch_page(&http, &url, base, token)?;
        let received = page.sets.len();
        sets.extend(page.sets.into_iter().map(|s| AgentSet {
            identifying: s.identifying,
            non_identifying: s.non_identifying,
            instance_uid: None,
            count: s.count,
        }));
        if received == 0 || sets.len() >= page.total {
            return Ok(sets);
        }
        if sets.len() > MAX_SETS {
            return Err(LiveError::Malformed {
                url: base.to_owned(),
                reason: format!("more than {MAX_SETS} attribute sets"),
            });
        }
    }
}

fn fetch_page(
    http: &ureq::Agent,
    url: &str,
    base: &str,
    token: Option<&str>,
) -> Result<Page, LiveError> {
    let mut request = http.get(url).header("Accept", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().map_err(|e| LiveError::Unreachable {
        url: base.to_owned(),
        reason: e.to_string(),
    })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_PAGE_BODY)
        .read_to_string()
        .map_err(|e| LiveError::Unreachable {
            url: base.to_owned(),
            reason: format!("reading the answer: {e}"),
        })?;
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        let url = base.to_owned();
        return Err(match (status, token) {
            (401 | 403, None) => LiveError::NeedsToken {
                url,
                status,
                message,
            },
            (401 | 403, Some(_)) => LiveError::Refused {
                url,
                status,
                message,
            },
            _ => LiveError::Failed {
                url,
                status,
                message,
            },
        });
    }
    serde_json::from_str(&body).map_err(|e| LiveError::Malformed {
        url: base.to_owned(),
        reason: e.to_string(),
    })
}
