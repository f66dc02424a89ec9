//! Rule selectors: which agents a rule's `match` holds for. Every key must hold (AND); a string
//! is an exact match, or a glob when it contains `*`; a list matches any of its entries; an empty
//! selector matches every agent.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Pattern {
    Exact(String),
    Glob(String),
}

impl Pattern {
    pub fn new(text: impl Into<String>) -> Pattern {
        let text = text.into();
        if text.contains('*') {
            Pattern::Glob(text)
        } else {
            Pattern::Exact(text)
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(expected) => expected == value,
            Pattern::Glob(glob) => glob_matches(glob.as_bytes(), value.as_bytes()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Exact(s) | Pattern::Glob(s) => s,
        }
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            backtrack = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((star, matched)) = backtrack {
            g = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

/// The `match` of a rule: attribute key → any of these patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    terms: BTreeMap<String, Vec<Pattern>>,
}

impl Selector {
    pub fn new(terms: BTreeMap<String, Vec<Pattern>>) -> Selector {
        Selector { terms }
    }

    pub fn matches(&self, attributes: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|(key, patterns)| {
            attributes
                .get(key)
                .is_some_and(|value| patterns.iter().any(|p| p.matches(value)))
        })
    }

    /// The selector as users wrote it: a string for one pattern, a list for several.
    pub fn to_json(&self) -> serde_json::Value {
        let map = self
            .terms
            .iter()
            .map(|(k, patterns)| {
                let v = match patterns.as_slice() {
                    [one] => serde_json::Value::String(one.as_str().to_owned()),
                    many => many
                        .iter()
                        .map(|p| serde_json::Value::String(p.as_str().to_owned()))
                        .collect(),
                };
                (k.clone(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(Pattern::new("eu-*").matches("eu-west-1"));
        assert!(Pattern::new("*-1").matches("eu-west-1"));
        assert!(Pattern::new("eu-*-1").matches("eu-west-1"));
        assert!(Pattern::new("*").matches(""));
        assert!(!Pattern::new("eu-*").matches("us-east-1"));
        assert!(!Pattern::new("eu-*-2").matches("eu-west-1"));
        assert!(!Pattern::new("eu").matches("eu-west-1"));
    }

    #[test]
    fn every_key_must_hold_and_lists_mean_any_of() {
        let mut terms = BTreeMap::new();
        terms.insert("environment".into(), vec![Pattern::new("production")]);
        terms.insert(
            "region".into(),
            vec![Pattern::new("eu-west-1"), Pattern::new("eu-central-1")],
        );
        let s = Selector::new(terms);
        assert!(s.matches(&attrs(&[
            ("environment", "production"),
            ("region", "eu-central-1")
        ])));
        assert!(!s.matches(&attrs(&[
            ("environment", "production"),
            ("region", "us-east-1")
        ])));
        assert!(!s.matches(&attrs(&[("environment", "production")])));
        assert!(Selector::default().matches(&attrs(&[])));
    }
}
