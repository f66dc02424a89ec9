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
                Err(e) => diagnostics.push(template_error(&e, None, None)),
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

/// `| yaml`: the value in its JSON form, which YAML reads back as the same value. The safe way
/// to splice agent-provided text into a config.
fn yaml_filter(value: Value) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "the value given to `yaml` is undefined (use `| default(...)` if it is optional)",
        ));
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
    let message = match error.kind() {
        ErrorKind::OutOfFuel => format!(
            "template ran out of fuel after {RENDER_FUEL} instructions (a runaway loop or recursion?)"
        ),
        _ => {
            let mut m = error.kind().to_string();
            if let Some(detail) = innermost.detail().or(error.detail()) {
                m = format!("{m}: {detail}");
            }
            m
        }
    };
    let mut d = Diagnostic::error(message);
    if let Some(name) = innermost.name().or(rendering) {
        d = d.in_file(format!("{TEMPLATES_DIR}/{name}"));
    }
    let column = innermost
        .range()
        .zip(innermost.template_source())
        .map(|(range, source)| {
            range.start
                - source[..range.start.min(source.len())]
                    .rfind('\n')
                    .map_or(0, |i| i + 1)
                + 1
        });
    d = d.at(innermost.line(), column);
    if let Some(rule) = rule {
        d = d.for_rule(rule);
    }
    d
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
