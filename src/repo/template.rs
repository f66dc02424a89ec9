//! The minijinja environment of one revision: every file below `templates/` compiled once,
//! strict undefined, no auto-escaping, a `yaml` filter, a fuel limit and an output size limit.
//! Includes and imports can only name templates of the same snapshot below `templates/`. A set of
//! templates that repeats values with `*` renders in the memory-bounded sandbox.

use super::agent::{AgentInfo, ReadLog, TrackedAgent};
use super::sandbox::{self, SandboxFailure, MAX_RENDER_MEMORY};
use super::snapshot::Snapshot;
use crate::diagnostics::Diagnostic;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, OutputSpan, UndefinedBehavior};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;

pub const TEMPLATES_DIR: &str = "templates";

/// Instructions a single render may execute before it is stopped as runaway.
pub const RENDER_FUEL: u64 = 1_000_000;

/// Bytes a single rendered file may have.
pub const MAX_RENDER_BYTES: usize = 4 << 20;

const RECURSION_LIMIT: usize = 64;

pub struct Templates {
    env: Environment<'static>,
    sources: BTreeMap<String, String>,
    /// The first template (name, line, column) that repeats a value with `*`: when there is
    /// one, renders are sandboxed.
    repetition: Option<(String, usize, usize)>,
}

/// What a template sees: the agent, the rule's merged vars and the rule's name.
pub struct RenderContext<'a> {
    pub agent: &'a Arc<AgentInfo>,
    pub vars: &'a serde_json::Value,
    pub rule_name: &'a str,
}

impl Templates {
    /// Compiles every template of the snapshot; syntax errors come back as diagnostics and the
    /// broken templates are left out.
    pub fn compile(snapshot: &Snapshot) -> (Templates, Vec<Diagnostic>) {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.add_filter("yaml", yaml_filter);
        env.set_loader(confined_loader);

        let mut diagnostics = Vec::new();
        let mut sources = BTreeMap::new();
        for (path, body) in snapshot.under(TEMPLATES_DIR) {
            let name = path[TEMPLATES_DIR.len() + 1..].to_owned();
            let source = match String::from_utf8(body.to_vec()) {
                Ok(s) => s,
                Err(_) => {
                    diagnostics
                        .push(Diagnostic::error("template is not valid UTF-8").in_file(path));
                    continue;
                }
            };
            match env.add_template_owned(name.clone(), source.clone()) {
                Ok(()) => {
                    sources.insert(name, source);
                }
                Err(e) => diagnostics.push(syntax_error(&e, &name, &source)),
            }
        }
        let repetition = sources.iter().find_map(|(name, source)| {
            sandbox::first_repetition(source).map(|(line, column)| (name.clone(), line, column))
        });
        (
            Templates {
                env,
                sources,
                repetition,
            },
            diagnostics,
        )
    }

    pub fn contains(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    pub fn source(&self, name: &str) -> Option<&str> {
        self.sources.get(name).map(String::as_str)
    }

    /// Renders `name` for the rule `rule`; the returned log says which agent fields the render
    /// read. Templates that repeat values render in a child process whose memory is bounded.
    pub fn render(
        &self,
        name: &str,
        ctx: &RenderContext,
        rule: &str,
    ) -> Result<(String, ReadLog), Box<Diagnostic>> {
        let render = || {
            self.render_here(name, ctx)
                .map_err(|e| Box::new(template_error(&e, Some(rule), Some(name))))
        };
        let Some(first) = &self.repetition else {
            return render();
        };
        let failure = match sandbox::run(MAX_RENDER_MEMORY, render) {
            Ok(rendered) => return rendered,
            Err(SandboxFailure::OutOfMemory) => format!(
                "rendering `{name}` took more than {} MiB of memory",
                MAX_RENDER_MEMORY >> 20
            ),
            Err(SandboxFailure::TimedOut) => format!(
                "rendering `{name}` did not finish within {:?}",
                sandbox::CHILD_DEADLINE
            ),
            Err(SandboxFailure::Failed(why)) => {
                return Err(Box::new(
                    Diagnostic::error(format!("rendering `{name}` failed: {why}"))
                        .in_file(format!("{TEMPLATES_DIR}/{name}"))
                        .for_rule(rule),
                ))
            }
        };
        // A render runs out of room or time when a repetition builds something huge: point at
        // the `*` of the template rendered, or else the first one of an included template.
        let (template, line, column) = self
            .sources
            .get(name)
            .and_then(|source| sandbox::first_repetition(source))
            .map(|(line, column)| (name, line, column))
            .unwrap_or((first.0.as_str(), first.1, first.2));
        Err(Box::new(
            Diagnostic::error(format!(
                "{failure}: the `*` here repeats a value into something too large"
            ))
            .in_file(format!("{TEMPLATES_DIR}/{template}"))
            .at(Some(line), Some(column))
            .for_rule(rule),
        ))
    }

    fn render_here(&self, name: &str, ctx: &RenderContext) -> Result<(String, ReadLog), Error> {
        let (value, log) = self.context(ctx);
        let template = self.env.get_template(name)?;
        let mut out = LimitedWriter {
            buf: Vec::new(),
            limit: MAX_RENDER_BYTES,
            overflowed: false,
        };
        let rendered = template.render_captured_to(value, &mut out);
        if out.overflowed {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "rendered output is larger than the {} KiB limit",
                    MAX_RENDER_BYTES >> 10
                ),
            ));
        }
        rendered?;
        let text = String::from_utf8(out.buf).map_err(|_| {
            Error::new(ErrorKind::BadSerialization, "render produced invalid UTF-8")
        })?;
        Ok((text, log.take()))
    }

    /// Renders again, recording which template line produced each piece of output. Used only
    /// to point a validation error at its template line.
    pub fn render_with_spans(
        &self,
        name: &str,
        ctx: &RenderContext,
    ) -> Option<(String, Vec<OutputSpan>)> {
        let (value, _) = self.context(ctx);
        self.env
            .get_template(name)
            .ok()?
            .render_with_spans(value)
            .ok()
    }

    fn context(&self, ctx: &RenderContext) -> (Value, Arc<ReadLogCell>) {
        let log = Arc::new(ReadLogCell::default());
        let agent = TrackedAgent::new(ctx.agent.clone(), log.clone());
        let value = minijinja::context! {
            agent => Value::from_object(agent),
            vars => Value::from(minijinja::value::Serde(ctx.vars)),
            rule => minijinja::context! { name => ctx.rule_name },
        };
        (value, log)
    }
}

pub use super::agent::ReadLogCell;

const YAML_UNDEFINED: &str =
    "the value given to `yaml` is undefined (use `| default(...)` if it is optional)";

/// `| yaml`: the value in its JSON form, which YAML reads back as the same value. The safe way
/// to splice agent-provided text into a config.
fn yaml_filter(value: Value) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(Error::new(ErrorKind::UndefinedError, YAML_UNDEFINED));
    }
    serde_json::to_string(&value)
        .map_err(|e| Error::new(ErrorKind::BadSerialization, format!("yaml filter: {e}")))
}

/// Only templates added from the snapshot exist; anything else is not found, and a name that
/// tries to leave `templates/` gets an error that says so.
fn confined_loader(name: &str) -> Result<Option<String>, Error> {
    let leaves = name.starts_with('/')
        || name.contains('\\')
        || name.split('/').any(|segment| segment == "..");
    if leaves {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{name}` is outside templates/: includes and imports may only name templates below templates/"),
        ));
    }
    Ok(None)
}

/// A minijinja error as a diagnostic at its template and line.
/// `rendering` names the template being rendered, for errors that carry no template name.
pub fn template_error(error: &Error, rule: Option<&str>, rendering: Option<&str>) -> Diagnostic {
    // The innermost error names the template where it happened (an include's, a macro's).
    let mut innermost: &Error = error;
    while let Some(source) =
        std::error::Error::source(innermost).and_then(|s| s.downcast_ref::<Error>())
    {
        if source.name().is_none() {
            break;
        }
        innermost = source;
    }
    let detail = innermost.detail().or(error.detail());
    let source = innermost.template_source();
    let range = innermost.range();
    // Where minijinja's span starts is not always where the expression does (an attribute
    // lookup points at its dot, a filter at its name): point at the expression the message
    // names.
    let named = match (error.kind(), detail, source, &range) {
        (ErrorKind::UndefinedError, Some(detail), Some(source), Some(range)) => {
            undefined_expression(detail, source, range.clone())
        }
        _ => None,
    };
    let message = match (error.kind(), &named) {
        (ErrorKind::OutOfFuel, _) => format!(
            "template ran out of fuel after {RENDER_FUEL} instructions (a runaway loop or recursion?)"
        ),
        (_, Some((message, _))) => message.clone(),
        // The detail of an undefined value already says "is undefined".
        (ErrorKind::UndefinedError, None) if detail.is_some() => detail.unwrap_or_default().to_owned(),
        _ => match detail {
            Some(detail) => format!("{}: {detail}", error.kind()),
            None => error.kind().to_string(),
        },
    };
    let mut d = Diagnostic::error(message);
    if let Some(name) = innermost.name().or(rendering) {
        d = d.in_file(format!("{TEMPLATES_DIR}/{name}"));
    }
    let offset = named
        .map(|(_, offset)| offset)
        .or(range.as_ref().map(|r| r.start));
    let position = offset
        .zip(source)
        .map(|(offset, source)| position(source, offset));
    d = match position {
        Some((line, column)) => d.at(Some(line), Some(column)),
        None => d.at(innermost.line(), None),
    };
    if let Some(rule) = rule {
        d = d.for_rule(rule);
    }
    d
}

/// The 1-based line and column of byte `offset` in `source`.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        source[line_start..offset].chars().count() + 1,
    )
}

/// For an undefined value, the message naming the expression and the byte offset where that
/// expression starts: the last occurrence of the named expression that starts within the
/// error's span or before it, or for `| yaml`, the expression the filter is given.
fn undefined_expression(
    detail: &str,
    source: &str,
    range: std::ops::Range<usize>,
) -> Option<(String, usize)> {
    let end = range.end.min(source.len());
    if detail == YAML_UNDEFINED {
        let before = source[..range.start.min(end)]
            .trim_end()
            .strip_suffix('|')?
            .trim_end();
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || "_.[]'\"".contains(c)))
            .map_or(0, |i| i + 1);
        let expression = &before[start..];
        if expression.is_empty() {
            return None;
        }
        return Some((
            format!(
                "`{expression}` is undefined (given to `yaml`; use `| default(...)` if it is optional)"
            ),
            start,
        ));
    }
    let expression = detail.strip_prefix('`')?.split_once("` is undefined")?.0;
    let line_start = source[..range.start.min(end)]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let start = source[line_start..end].rfind(expression)? + line_start;
    Some((detail.to_owned(), start))
}

/// A template that does not compile. An unclosed block is reported at the tag that opened it,
/// not at the end of the template where the parser noticed.
fn syntax_error(error: &Error, name: &str, source: &str) -> Diagnostic {
    let unclosed = error
        .detail()
        .is_some_and(|d| d.contains("unexpected end of input"))
        .then(|| open_block(source))
        .flatten();
    match unclosed {
        Some((keyword, offset)) => {
            let (line, column) = position(source, offset);
            Diagnostic::error(format!(
                "syntax error: `{{% {keyword} %}}` is never closed: `{{% end{keyword} %}}` is missing"
            ))
            .in_file(format!("{TEMPLATES_DIR}/{name}"))
            .at(Some(line), Some(column))
        }
        None => template_error(error, None, None),
    }
}

/// The innermost block tag left open at the end of `source`: its keyword and byte offset.
fn open_block(source: &str) -> Option<(String, usize)> {
    const BLOCKS: &[&str] = &[
        "if",
        "for",
        "macro",
        "call",
        "filter",
        "block",
        "with",
        "autoescape",
        "set",
        "raw",
    ];
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut at = 0;
    while let Some(found) = source[at..].find('{').map(|i| i + at) {
        let rest = &source[found..];
        if rest.starts_with("{#") {
            at = rest.find("#}").map_or(source.len(), |i| found + i + 2);
            continue;
        }
        if !rest.starts_with("{%") {
            at = found + 1;
            continue;
        }
        let Some(close) = rest.find("%}") else {
            break;
        };
        let tag = rest[2..close].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let keyword = tag.split_whitespace().next().unwrap_or_default();
        at = found + close + 2;
        if let Some(ended) = keyword.strip_prefix("end") {
            if open.last().is_some_and(|(k, _)| k == ended) {
                open.pop();
            }
        } else if keyword == "raw" {
            open.push(("raw".into(), found));
            match source[at..].find("endraw") {
                Some(i) => {
                    open.pop();
                    at += i;
                }
                None => break,
            }
        } else if BLOCKS.contains(&keyword) && !(keyword == "set" && tag.contains('=')) {
            open.push((keyword.to_owned(), found));
        }
    }
    open.pop()
}

struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other(format!(
                "rendered output is larger than the {} KiB limit",
                self.limit >> 10
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
