//! One diagnostic type for everything `check` and `serve` report about a config repository:
//! where (file, line, column, rule, agent), how bad (error or warning) and what. Renderings for
//! humans, for machines (JSON) and for GitHub Actions annotations live here too.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// A time as RFC 3339 (to the second), as every JSON answer writes it.
pub fn rfc3339<S: serde::Serializer>(t: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A finding about a config repository. `file` is relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub rule: Option<String>,
    /// The first of `agents`.
    pub agent: Option<String>,
    /// Every sample agent that has this problem (one diagnostic for all of them).
    #[serde(default)]
    pub agents: Vec<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: None,
            line: None,
            column: None,
            rule: None,
            agent: None,
            agents: Vec::new(),
            message: message.into(),
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn at(mut self, line: Option<usize>, column: Option<usize>) -> Self {
        self.line = line;
        self.column = column;
        self
    }

    pub fn for_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    pub fn for_agent(mut self, agent: impl Into<String>) -> Self {
        let agent = agent.into();
        self.agents = vec![agent.clone()];
        self.agent = Some(agent);
        self
    }

    /// `agent x` or `agents x, y`: the sample agents, for messages.
    fn agents_context(&self) -> Option<String> {
        match self.agents.as_slice() {
            [] => self.agent.as_ref().map(|a| format!("agent {a}")),
            [one] => Some(format!("agent {one}")),
            many => Some(format!("agents {}", many.join(", "))),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The diagnostic with its file path placed under `base` (a path as the user typed it),
    /// so CLI output names files relative to the working directory.
    pub fn relative_to(&self, base: &Path) -> Diagnostic {
        let mut d = self.clone();
        if let Some(file) = &self.file {
            let joined: std::path::PathBuf = base
                .join(file)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            let shown = std::env::current_dir()
                .ok()
                .and_then(|cwd| joined.strip_prefix(&cwd).ok().map(Path::to_path_buf))
                .unwrap_or(joined);
            d.file = Some(shown.to_string_lossy().into_owned());
        }
        d
    }

    /// `file:line:col: error: message`, with the rule and agent when known.
    pub fn human(&self) -> String {
        let mut out = String::new();
        if let Some(file) = &self.file {
            out.push_str(file);
            // The same line and column as the JSON and GitHub forms: none is made up.
            if let Some(line) = self.line {
                out.push_str(&format!(":{line}"));
                if let Some(column) = self.column {
                    out.push_str(&format!(":{column}"));
                }
            }
            out.push_str(": ");
        }
        out.push_str(&format!("{}: {}", self.severity, self.message));
        let mut context = Vec::new();
        if let Some(rule) = &self.rule {
            context.push(format!("rule {rule}"));
        }
        context.extend(self.agents_context());
        if !context.is_empty() {
            out.push_str(&format!(" [{}]", context.join(", ")));
        }
        out
    }

    /// A GitHub Actions workflow command (`::error file=…,line=…::message`).
    pub fn github(&self) -> String {
        let mut props = Vec::new();
        if let Some(file) = &self.file {
            props.push(format!("file={}", escape_github_property(file)));
        }
        if let Some(line) = self.line {
            props.push(format!("line={line}"));
        }
        if let Some(col) = self.column {
            props.push(format!("col={col}"));
        }
        let mut message = self.message.clone();
        if let Some(rule) = &self.rule {
            message.push_str(&format!(" [rule {rule}]"));
        }
        if let Some(agents) = self.agents_context() {
            message.push_str(&format!(" [{agents}]"));
        }
        let props = if props.is_empty() {
            String::new()
        } else {
            format!(" {}", props.join(","))
        };
        format!(
            "::{}{}::{}",
            self.severity,
            props,
            escape_github_data(&message)
        )
    }
}

/// One diagnostic for a problem several sample agents share: diagnostics equal but for their
/// agents become one listing every agent, at the place of the first.
pub fn merge_shared(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut merged: Vec<Diagnostic> = Vec::with_capacity(diagnostics.len());
    for d in diagnostics {
        let same = |m: &Diagnostic| {
            !m.agents.is_empty()
                && !d.agents.is_empty()
                && Diagnostic {
                    agent: None,
                    agents: Vec::new(),
                    ..m.clone()
                } == Diagnostic {
                    agent: None,
                    agents: Vec::new(),
                    ..d.clone()
                }
        };
        match merged.iter_mut().find(|m| same(m)) {
            Some(m) => {
                for agent in d.agents {
                    if !m.agents.contains(&agent) {
                        m.agents.push(agent);
                    }
                }
            }
            None => merged.push(d),
        }
    }
    merged
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.human())
    }
}

fn escape_github_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_github_property(s: &str) -> String {
    escape_github_data(s)
        .replace(':', "%3A")
        .replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_rendering_names_file_line_and_context() {
        let d = Diagnostic::error("unknown key `foo`")
            .in_file("fleet.yaml")
            .at(Some(3), Some(5))
            .for_rule("prod");
        assert_eq!(
            d.human(),
            "fleet.yaml:3:5: error: unknown key `foo` [rule prod]"
        );
    }

    #[test]
    fn a_problem_shared_by_sample_agents_is_reported_once() {
        let problem = |agent: &str| {
            Diagnostic::error("`vars.x` is undefined")
                .in_file("templates/a.j2")
                .at(Some(3), Some(7))
                .for_rule("all")
                .for_agent(agent)
        };
        let merged = merge_shared(vec![
            problem("a"),
            Diagnostic::error("other").for_agent("a"),
            problem("b"),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0].human(),
            "templates/a.j2:3:7: error: `vars.x` is undefined [rule all, agents a, b]"
        );
        assert_eq!(
            merged[0].github(),
            "::error file=templates/a.j2,line=3,col=7::`vars.x` is undefined [rule all] [agents a, b]"
        );
    }

    #[test]
    fn human_rendering_shows_no_column_it_does_not_know() {
        let d = Diagnostic::warning("w")
            .in_file("fleet.yaml")
            .at(Some(5), None);
        assert_eq!(d.human(), "fleet.yaml:5: warning: w");
    }

    #[test]
    fn github_rendering_escapes_newlines_and_properties() {
        let d = Diagnostic::error("a\nb")
            .in_file("dir,x/f.yaml")
            .at(Some(2), None);
        assert_eq!(d.github(), "::error file=dir%2Cx/f.yaml,line=2::a%0Ab");
    }
}
