//! The web dashboard: server-rendered pages (fleet, one agent, rules) over the same data as the
//! JSON API, which a small script then polls to keep them live without reloading. Templates and
//! assets are embedded in the binary: there is no build step.
//!
//! Agent-provided strings are untrusted. Templates are `.html`, so minijinja escapes every
//! interpolation; the script only ever writes data with `textContent`; and a strict Content
//! Security Policy (scripts from this origin only, no inline code) backs both up.

use super::{api, listing, AdminState};
use crate::fleet::status::Status;
use crate::fleet::view::AgentSummary;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use minijinja::value::Serde;
use minijinja::{context, Environment, UndefinedBehavior, Value};
use serde::Serialize;
use std::sync::LazyLock;
use std::time::SystemTime;

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

/// Attributes shown first in the agents table, in this order; others fill the remaining places.
const KEY_ATTRIBUTES: [&str; 7] = [
    "host.name",
    "environment",
    "region",
    "role",
    "team",
    "service.name",
    "k8s.namespace.name",
];
/// How many attributes a table row shows (the rest are on the agent page).
const ROW_ATTRIBUTES: usize = 3;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(index))
        .route("/agents/{uid}", get(agent))
        .route("/rules", get(rules))
        .route("/events", get(events))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
}

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // The default callback: HTML escaping for `.html` names, which every page is.
    env.set_auto_escape_callback(minijinja::default_auto_escape_callback);
    env.add_filter("ago", ago);
    env.add_filter("short", short);
    env.add_filter("diff_lines", diff_lines);
    env.add_filter("urlq", |text: &str| {
        form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
    });
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("macros.html", include_str!("templates/macros.html")),
        ("index.html", include_str!("templates/index.html")),
        ("agent.html", include_str!("templates/agent.html")),
        ("rules.html", include_str!("templates/rules.html")),
        ("events.html", include_str!("templates/events.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("dashboard template {name}: {e:#}"));
    }
    env
});

/// A short digest of the assets, appended to their URLs so browsers cache them safely.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(APP_JS);
    digest.update(APP_CSS);
    hex::encode(&digest.finalize()[..6])
});

/// Any serializable data as a template value.
fn ser<T: Serialize>(data: T) -> Value {
    Value::from(Serde(data))
}

/// "12s ago", "3m ago", ... for an RFC 3339 time; the text itself when it does not parse.
fn ago(rfc3339: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339(rfc3339) else {
        return rfc3339.to_owned();
    };
    let secs = SystemTime::now()
        .duration_since(then)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// The first 8 characters of a hash or revision id, after a `kind:` prefix if any
/// (`dir:0123abcd`); a dash for none.
fn short(value: Option<String>) -> String {
    match value {
        Some(v) if !v.is_empty() => {
            let (prefix, rest) = match v.rsplit_once(':') {
                Some((prefix, rest)) => (format!("{prefix}:"), rest),
                None => (String::new(), v.as_str()),
            };
            format!("{prefix}{}", rest.chars().take(8).collect::<String>())
        }
        _ => "—".to_owned(),
    }
}

/// A unified diff as `(kind, line)` pairs, kind being the line's CSS class.
fn diff_lines(diff: &str) -> Vec<(&'static str, String)> {
    diff.lines()
        .map(|line| {
            let kind = if line.starts_with("+++ ") || line.starts_with("--- ") {
                "hdr"
            } else if line.starts_with("@@") {
                "hunk"
            } else if line.starts_with('+') {
                "add"
            } else if line.starts_with('-') {
                "del"
            } else {
                "ctx"
            };
            (kind, line.to_owned())
        })
        .collect()
}

fn page(status: StatusCode, name: &str, ctx: Value) -> Response {
    let ctx = context! { asset_version => &*ASSET_VERSION, ..ctx };
    match TEMPLATES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %format!("{e:#}"), "dashboard template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the dashboard page failed to render; see the server log\n",
            )
                .into_response()
        }
    }
}

fn error_page(state: &AdminState, status: StatusCode, message: impl Into<String>) -> Response {
    page(
        status,
        "error.html",
        context! {
            nav => "",
            revision => ser(state.store.status()),
            code => status.as_u16(),
            reason => status.canonical_reason().unwrap_or(""),
            message => message.into(),
        },
    )
}

/// The attributes a table row shows: the well-known ones first, then the others by name.
fn key_attributes(agent: &AgentSummary) -> (Vec<(&str, &str)>, usize) {
    let mut shown: Vec<(&str, &str)> = KEY_ATTRIBUTES
        .iter()
        .filter_map(|k| agent.attributes.get_key_value(*k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in &agent.attributes {
        if shown.len() >= ROW_ATTRIBUTES {
            break;
        }
        if !KEY_ATTRIBUTES.contains(&k.as_str()) {
            shown.push((k, v));
        }
    }
    shown.truncate(ROW_ATTRIBUTES);
    let more = agent.attributes.len() - shown.len();
    (shown, more)
}

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    agent: &'a AgentSummary,
    /// What names the agent to a person (`host.name`, `service.name`); the uid goes below it.
    label: Option<&'a str>,
    key_attributes: Vec<(&'a str, &'a str)>,
    more_attributes: usize,
}

/// `/?status=&rule=&q=&offset=&limit=` with the given offset.
fn page_href(query: &RawFilters, offset: usize) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("status", query.status.as_str()),
        ("rule", query.rule.as_str()),
        ("q", query.q.as_str()),
        ("sort", query.sort.as_str()),
    ] {
        if !value.is_empty() {
            out.append_pair(key, value);
        }
    }
    if offset > 0 {
        out.append_pair("offset", &offset.to_string());
    }
    if query.limit != listing::DEFAULT_LIMIT {
        out.append_pair("limit", &query.limit.to_string());
    }
    format!("/?{}", out.finish())
}

/// The filters as the user typed them (the search box keeps its case).
#[derive(Serialize, Default)]
struct RawFilters {
    status: String,
    rule: String,
    q: String,
    sort: String,
    limit: usize,
    offset: usize,
}

async fn index(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let query = match listing::AgentQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return error_page(&state, StatusCode::BAD_REQUEST, e),
    };
    let mut filters = RawFilters {
        limit: query.limit,
        offset: query.offset,
        ..RawFilters::default()
    };
    for (key, value) in form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "status" => filters.status = value.into_owned(),
            "rule" => filters.rule = value.into_owned(),
            "q" => filters.q = value.into_owned(),
            "sort" => filters.sort = value.into_owned(),
            _ => {}
        }
    }
    let all = state.fleet.summaries();
    let listed = listing::page(&all, &query);
    let total = listed.total;
    let rows: Vec<Row> = listed
        .agents
        .into_iter()
        .map(|agent| {
            let (key_attributes, more_attributes) = key_attributes(agent);
            Row {
                label: listing::label(agent),
                agent,
                key_attributes,
                more_attributes,
            }
        })
        .collect();
    let first = if rows.is_empty() { 0 } else { query.offset + 1 };
    let last = query.offset + rows.len();
    let prev =
        (query.offset > 0).then(|| page_href(&filters, query.offset.saturating_sub(query.limit)));
    let next = (last < total).then(|| page_href(&filters, last));
    let rules: Vec<String> = state
        .store
        .current()
        .map(|r| r.fleet.rules.iter().map(|rule| rule.name.clone()).collect())
        .unwrap_or_default();
    page(
        StatusCode::OK,
        "index.html",
        context! {
            nav => "fleet",
            revision => ser(state.store.status()),
            counts => ser(crate::fleet::view::counts(&all)),
            statuses => Status::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            rules => rules,
            filters => ser(&filters),
            agents => ser(&rows),
            total => total,
            first => first,
            last => last,
            prev => prev,
            next => next,
        },
    )
}

async fn agent(State(state): State<AdminState>, Path(uid): Path<String>) -> Response {
    // The same data the API serves, so the page shows exactly what `GET /api/agents/{uid}` does.
    let detail = match api::agent_detail(&state, &uid) {
        Ok(d) => d,
        Err(e) => return error_page(&state, e.status, e.message),
    };
    page(
        StatusCode::OK,
        "agent.html",
        context! {
            nav => "fleet",
            revision => ser(state.store.status()),
            agent => ser(&detail),
            history => ser(super::history::agent_history(&state, &uid).unwrap_or_default()),
        },
    )
}

async fn rules(State(state): State<AdminState>) -> Response {
    let rules = api::rule_views(&state);
    page(
        StatusCode::OK,
        "rules.html",
        context! {
            nav => "rules",
            revision => ser(state.store.status()),
            rules => ser(&rules),
        },
    )
}

async fn events(State(state): State<AdminState>) -> Response {
    page(
        StatusCode::OK,
        "events.html",
        context! {
            nav => "events",
            revision => ser(state.store.status()),
            kinds => crate::audit::KINDS,
        },
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for name in [
            "base.html",
            "macros.html",
            "index.html",
            "agent.html",
            "rules.html",
            "error.html",
        ] {
            TEMPLATES.get_template(name).unwrap();
        }
    }

    #[test]
    fn html_templates_escape_what_they_interpolate() {
        let env = &*TEMPLATES;
        let out = env
            .render_named_str("x.html", "{{ v }}", context! { v => "<script>\"'&" })
            .unwrap();
        assert_eq!(out, "&lt;script&gt;&quot;&#x27;&amp;");
    }

    #[test]
    fn ages_read_like_a_human_would_say_them() {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        assert!(ago(&now).ends_with("s ago"));
        assert_eq!(ago("not a time"), "not a time");
        assert_eq!(short(Some("0123456789abcdef".into())), "01234567");
        assert_eq!(short(Some("dir:384ee7b1ad3d".into())), "dir:384ee7b1");
        assert_eq!(short(None), "—");
    }
}
