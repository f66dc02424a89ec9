//! Which agents a listing shows: the query of `GET /api/agents` and of the dashboard's fleet
//! page (status, rule, labels, free text, page), and the page it selects.

use crate::fleet::status::Status;
use crate::fleet::view::AgentSummary;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// `?status=&rule=&label=k=v&q=&limit=&offset=` (label may repeat).
#[derive(Debug, Default, Clone)]
pub struct AgentQuery {
    pub status: Option<Status>,
    pub rule: Option<String>,
    pub labels: Vec<(String, String)>,
    pub q: Option<String>,
    pub limit: usize,
    pub offset: usize,
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
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .map_err(|_| format!("limit `{value}` is not a number"))?
                        .min(MAX_LIMIT)
                }
                "offset" => {
                    query.offset = value
                        .parse()
                        .map_err(|_| format!("offset `{value}` is not a number"))?
                }
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
    let matching: Vec<&AgentSummary> = all.iter().filter(|a| query.matches(a)).collect();
    Page {
        total: matching.len(),
        agents: matching
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .collect(),
    }
}
