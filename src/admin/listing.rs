//! Which agents a listing shows: the query of `GET /api/agents` and of the dashboard's fleet
//! page (status, rule, labels, free text, page), and the page it selects.

use crate::fleet::status::Status;
use crate::fleet::view::AgentSummary;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The largest `limit` or `offset` a query takes (the API document's `maximum`, an int32's).
pub const MAX_COUNT: usize = i32::MAX as usize;

/// A `limit` or `offset` parameter: a whole number from 0 to [`MAX_COUNT`].
pub fn count(key: &str, value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_COUNT)
        .ok_or_else(|| format!("{key} `{value}` is not a whole number from 0 to {MAX_COUNT}"))
}

/// `?status=&rule=&label=k=v&q=&sort=&limit=&offset=` (label may repeat).
#[derive(Debug, Default, Clone)]
pub struct AgentQuery {
    pub status: Option<Status>,
    pub rule: Option<String>,
    pub labels: Vec<(String, String)>,
    pub q: Option<String>,
    /// The order of the listing; by instance uid when none is given.
    pub sort: Option<Sort>,
    pub limit: usize,
    pub offset: usize,
}

/// A column to order agents by, ascending unless `descending` (`sort=-last_seen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// The agent's label (`host.name`, else `service.name`), then its uid.
    Agent,
    Rule,
    Status,
    Health,
    Revision,
    LastSeen,
}

impl SortKey {
    pub const NAMES: [&'static str; 6] =
        ["agent", "rule", "status", "health", "revision", "last_seen"];

    fn parse(text: &str) -> Option<SortKey> {
        Some(match text {
            "agent" => SortKey::Agent,
            "rule" => SortKey::Rule,
            "status" => SortKey::Status,
            "health" => SortKey::Health,
            "revision" => SortKey::Revision,
            "last_seen" => SortKey::LastSeen,
            _ => return None,
        })
    }
}

impl Sort {
    fn parse(text: &str) -> Result<Sort, String> {
        let (descending, name) = match text.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, text),
        };
        let key = SortKey::parse(name).ok_or_else(|| {
            format!(
                "unknown sort `{text}` (one of {}, `-` first for descending)",
                SortKey::NAMES.join(", ")
            )
        })?;
        Ok(Sort { key, descending })
    }

    fn order(&self, a: &AgentSummary, b: &AgentSummary) -> std::cmp::Ordering {
        let by_key = match self.key {
            // Agents without a label after those with one.
            SortKey::Agent => {
                let key = |x: &AgentSummary| (label(x).is_none(), label(x).map(str::to_lowercase));
                key(a).cmp(&key(b))
            }
            SortKey::Rule => a.rule.cmp(&b.rule),
            SortKey::Status => a.status.as_str().cmp(b.status.as_str()),
            SortKey::Health => a.healthy.cmp(&b.healthy),
            SortKey::Revision => a.revision.cmp(&b.revision),
            SortKey::LastSeen => a.last_seen.cmp(&b.last_seen),
        };
        let by_key = if self.descending {
            by_key.reverse()
        } else {
            by_key
        };
        by_key.then_with(|| a.instance_uid.cmp(&b.instance_uid))
    }
}

/// What names an agent to a person: its `host.name`, else its `service.name`.
pub fn label(agent: &AgentSummary) -> Option<&str> {
    ["host.name", "service.name"]
        .iter()
        .find_map(|k| agent.attributes.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

impl AgentQuery {
    pub fn parse(raw: Option<&str>) -> Result<AgentQuery, String> {
        let mut query = AgentQuery {
            limit: DEFAULT_LIMIT,
            ..AgentQuery::default()
        };
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "status" if !value.is_empty() => {
                    query.status = Some(
                        Status::parse(&value).ok_or_else(|| format!("unknown status `{value}`"))?,
                    )
                }
                "rule" if !value.is_empty() => query.rule = Some(value),
                "label" if !value.is_empty() => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| format!("label `{value}` is not key=value"))?;
                    query.labels.push((k.to_owned(), v.to_owned()));
                }
                "q" if !value.is_empty() => query.q = Some(value.to_lowercase()),
                "sort" if !value.is_empty() => query.sort = Some(Sort::parse(&value)?),
                "limit" => query.limit = count("limit", &value)?.min(MAX_LIMIT),
                "offset" => query.offset = count("offset", &value)?,
                _ => {}
            }
        }
        Ok(query)
    }

    pub fn matches(&self, agent: &AgentSummary) -> bool {
        self.status.is_none_or(|s| agent.status == s)
            && self
                .rule
                .as_ref()
                .is_none_or(|r| agent.rule.as_ref() == Some(r))
            && self
                .labels
                .iter()
                .all(|(k, v)| agent.attributes.get(k) == Some(v))
            && self.q.as_ref().is_none_or(|q| {
                agent.instance_uid.contains(q.as_str())
                    || agent
                        .rule
                        .as_ref()
                        .is_some_and(|r| r.to_lowercase().contains(q.as_str()))
                    || agent
                        .attributes
                        .values()
                        .any(|v| v.to_lowercase().contains(q.as_str()))
            })
    }
}

/// One page of a listing and how many agents matched in all.
pub struct Page<'a> {
    pub total: usize,
    pub agents: Vec<&'a AgentSummary>,
}

/// The agents of `all` that `query` matches, paged by its offset and limit.
pub fn page<'a>(all: &'a [AgentSummary], query: &AgentQuery) -> Page<'a> {
    let mut matching: Vec<&AgentSummary> = all.iter().filter(|a| query.matches(a)).collect();
    if let Some(sort) = query.sort {
        matching.sort_by(|a, b| sort.order(a, b));
    }
    Page {
        total: matching.len(),
        agents: matching
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .collect(),
    }
}
