//! Rule selectors: which agents a rule's `match` holds for. Every key must hold (AND); a string
//! is an exact match, or a glob when it contains `*`; a list matches any of its entries; a map
//! is one operator: `{not: V}` (absent, or none of V), `{regex: RE}` (anchored, compiled once
//! per revision), `{exists: true|false}`. An empty selector matches every agent.

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

/// What one `match` key asks of its attribute.
#[derive(Debug, Clone)]
pub enum Term {
    /// A string or a list: the attribute is reported and matches any of these.
    AnyOf(Vec<Pattern>),
    /// `{not: V}`: the attribute is absent or matches none of these.
    NoneOf(Vec<Pattern>),
    /// `{regex: RE}`: the attribute is reported and the whole value matches.
    Regex(Regex),
    /// `{exists: true|false}`: the attribute is (or is not) reported.
    Exists(bool),
}

/// An anchored regular expression, compiled once when its revision is, with the text the user
/// wrote.
#[derive(Debug, Clone)]
pub struct Regex {
    source: String,
    compiled: regex::Regex,
}

/// Compiled programs beyond this are refused: a repository writer cannot make every match slow.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Regex {
    /// Compiles `source` anchored at both ends (`^(?:source)$`).
    pub fn new(source: &str) -> Result<Regex, String> {
        regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|compiled| Regex {
                source: source.to_owned(),
                compiled,
            })
            .map_err(|e| match e {
                // The crate's text draws a caret under the (anchored) pattern over several
                // lines; a diagnostic is one line: keep the reason.
                regex::Error::Syntax(text) => text
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: ").map(str::to_owned))
                    .unwrap_or(text),
                regex::Error::CompiledTooBig(limit) => {
                    format!("the compiled pattern is larger than {limit} bytes")
                }
                other => other.to_string(),
            })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.compiled.is_match(value)
    }
}

impl PartialEq for Term {
    fn eq(&self, other: &Term) -> bool {
        match (self, other) {
            (Term::AnyOf(a), Term::AnyOf(b)) | (Term::NoneOf(a), Term::NoneOf(b)) => a == b,
            (Term::Regex(a), Term::Regex(b)) => a.source == b.source,
            (Term::Exists(a), Term::Exists(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Term {}

impl Term {
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Term::AnyOf(patterns) => value.is_some_and(|v| patterns.iter().any(|p| p.matches(v))),
            Term::NoneOf(patterns) => value.is_none_or(|v| !patterns.iter().any(|p| p.matches(v))),
            Term::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            Term::Exists(exists) => value.is_some() == *exists,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        let patterns = |patterns: &[Pattern]| match patterns {
            [one] => Value::String(one.as_str().to_owned()),
            many => many
                .iter()
                .map(|p| Value::String(p.as_str().to_owned()))
                .collect(),
        };
        match self {
            Term::AnyOf(p) => patterns(p),
            Term::NoneOf(p) => json!({ "not": patterns(p) }),
            Term::Regex(re) => json!({ "regex": re.as_str() }),
            Term::Exists(b) => json!({ "exists": b }),
        }
    }

    /// Whether every agent this term holds for, `other` holds for too (a sufficient test:
    /// `false` means "cannot tell", never "no").
    fn implies(&self, other: &Term) -> bool {
        let exact = exact_values;
        match (self, other) {
            (a, b) if a == b => true,
            (_, Term::AnyOf(theirs)) if theirs.iter().any(|p| p.as_str() == "*") => {
                !matches!(self, Term::NoneOf(_) | Term::Exists(false))
            }
            (Term::AnyOf(_) | Term::Regex(_), Term::Exists(true)) => true,
            (Term::Exists(false), Term::NoneOf(_)) => true,
            (Term::AnyOf(mine), Term::AnyOf(theirs)) => exact(mine)
                .is_some_and(|values| values.iter().all(|v| theirs.iter().any(|p| p.matches(v)))),
            (Term::AnyOf(mine), Term::NoneOf(theirs)) => exact(mine)
                .is_some_and(|values| values.iter().all(|v| !theirs.iter().any(|p| p.matches(v)))),
            (Term::AnyOf(mine), Term::Regex(re)) => {
                exact(mine).is_some_and(|values| values.iter().all(|v| re.is_match(v)))
            }
            _ => false,
        }
    }
}

/// The values of patterns that are all exact (no glob), or `None`.
fn exact_values(patterns: &[Pattern]) -> Option<Vec<&str>> {
    patterns
        .iter()
        .map(|p| match p {
            Pattern::Exact(s) => Some(s.as_str()),
            Pattern::Glob(_) => None,
        })
        .collect()
}

/// The `match` of a rule: attribute key → what it asks of that attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    terms: BTreeMap<String, Term>,
}

impl Selector {
    pub fn new(terms: BTreeMap<String, Term>) -> Selector {
        Selector { terms }
    }

    pub fn matches(&self, attributes: &BTreeMap<String, String>) -> bool {
        self.terms
            .iter()
            .all(|(key, term)| term.matches(attributes.get(key).map(String::as_str)))
    }

    /// Whether `self` holds for every agent `earlier` does not miss: every agent this selector
    /// matches is matched by `earlier` too, so a rule with this selector after one with
    /// `earlier` never wins (a sufficient test; `false` means "cannot tell").
    pub fn covered_by(&self, earlier: &Selector) -> bool {
        earlier.terms.iter().all(|(key, theirs)| {
            // A key `self` leaves open can be anything (absent included): no term holds for all.
            self.terms.get(key).is_some_and(|mine| mine.implies(theirs))
        })
    }

    /// The selector as users wrote it: a string for one pattern, a list for several, a map for
    /// an operator.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.terms
                .iter()
                .map(|(k, term)| (k.clone(), term.to_json()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn selector(value: serde_json::Value) -> Selector {
        let serde_json::Value::Object(map) = value else {
            panic!("a map")
        };
        super::super::fleet::parse_selector(map).expect("a valid selector")
    }

    fn refused(value: serde_json::Value) -> String {
        let serde_json::Value::Object(map) = value else {
            panic!("a map")
        };
        super::super::fleet::parse_selector(map).expect_err("an invalid selector")
    }

    #[test]
    fn every_key_must_hold_and_lists_mean_any_of() {
        let s =
            selector(json!({"environment": "production", "region": ["eu-west-1", "eu-central-1"]}));
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

    #[test]
    fn not_holds_for_none_of_its_values_and_for_an_absent_attribute() {
        let one = selector(json!({"environment": {"not": "production"}}));
        assert!(one.matches(&attrs(&[("environment", "staging")])));
        assert!(!one.matches(&attrs(&[("environment", "production")])));
        assert!(one.matches(&attrs(&[])), "absent is not production");
        let many = selector(json!({"region": {"not": ["eu-*", "us-east-1"]}}));
        assert!(many.matches(&attrs(&[("region", "ap-south-1")])));
        assert!(!many.matches(&attrs(&[("region", "eu-west-1")])));
        assert!(!many.matches(&attrs(&[("region", "us-east-1")])));
    }

    #[test]
    fn regex_is_anchored_at_both_ends() {
        let s = selector(json!({"host.name": {"regex": "web-[0-9]+"}}));
        assert!(s.matches(&attrs(&[("host.name", "web-12")])));
        assert!(
            !s.matches(&attrs(&[("host.name", "web-12.example")])),
            "anchored at the end"
        );
        assert!(
            !s.matches(&attrs(&[("host.name", "old-web-12")])),
            "anchored at the start"
        );
        assert!(
            !s.matches(&attrs(&[])),
            "an absent attribute matches no pattern"
        );
        let alternatives = selector(json!({"env": {"regex": "prod|staging"}}));
        assert!(alternatives.matches(&attrs(&[("env", "staging")])));
        assert!(
            !alternatives.matches(&attrs(&[("env", "prod2")])),
            "the anchors hold the whole alternation"
        );
    }

    #[test]
    fn exists_asks_whether_the_attribute_is_reported() {
        let yes = selector(json!({"k8s.pod.name": {"exists": true}}));
        let no = selector(json!({"k8s.pod.name": {"exists": false}}));
        let reported = attrs(&[("k8s.pod.name", "")]);
        assert!(yes.matches(&reported) && !no.matches(&reported));
        assert!(!yes.matches(&attrs(&[])) && no.matches(&attrs(&[])));
    }

    #[test]
    fn malformed_operators_are_refused_with_the_key() {
        assert_eq!(
            refused(json!({"a": {"regex": "("}})),
            "`match.a.regex` is not a valid regular expression: unclosed group"
        );
        assert!(refused(json!({"a": {"like": "x"}})).contains("unknown operator `like`"));
        assert!(
            refused(json!({"a": {"not": "x", "exists": true}})).contains("exactly one operator")
        );
        assert!(refused(json!({"a": {}})).contains("exactly one operator"));
        assert!(refused(json!({"a": {"exists": "yes"}})).contains("true or false"));
        assert!(refused(json!({"a": {"not": []}})).contains("empty list"));
        assert!(refused(json!({"a": {"regex": 5}})).contains("must be a string"));
    }

    #[test]
    fn operators_read_back_as_written() {
        let written = json!({"a": {"not": ["x", "y"]}, "b": {"regex": "v[0-9]"}, "c": {"exists": false}, "d": "e"});
        assert_eq!(selector(written.clone()).to_json(), written);
    }

    #[test]
    fn a_selector_covered_by_an_earlier_one_is_recognised() {
        let covers = |later: serde_json::Value, earlier: serde_json::Value| {
            selector(later).covered_by(&selector(earlier))
        };
        assert!(
            covers(json!({"env": "prod"}), json!({})),
            "match {{}} takes everyone"
        );
        assert!(covers(
            json!({"env": "prod", "region": "eu"}),
            json!({"env": ["prod", "staging"]})
        ));
        assert!(covers(json!({"env": "prod"}), json!({"env": "pr*"})));
        assert!(covers(
            json!({"env": "prod"}),
            json!({"env": {"exists": true}})
        ));
        assert!(covers(
            json!({"env": "prod"}),
            json!({"env": {"regex": "p.*"}})
        ));
        assert!(covers(
            json!({"env": "prod"}),
            json!({"env": {"not": "dev"}})
        ));
        assert!(covers(
            json!({"env": {"exists": false}}),
            json!({"env": {"not": "dev"}})
        ));
        assert!(!covers(json!({"env": "prod"}), json!({"env": "staging"})));
        assert!(!covers(json!({}), json!({"env": "prod"})));
        assert!(
            !covers(json!({"env": "pr*"}), json!({"env": "prod"})),
            "a glob is wider"
        );
        assert!(
            !covers(json!({"env": {"not": "dev"}}), json!({"env": "*"})),
            "not admits an absent attribute"
        );
        assert!(!covers(
            json!({"region": "eu"}),
            json!({"env": {"not": "dev"}})
        ));
    }
}
