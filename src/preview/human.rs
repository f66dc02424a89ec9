//! The report for a terminal: a summary line, then each group with its findings and diffs.
//! Coloured (removed lines red, added green, hunk headers cyan) only when asked to, which the
//! CLI does when stdout is a terminal.

use super::compare::{Comparison, Group};
use std::fmt::Write;

const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

struct Paint {
    color: bool,
}

impl Paint {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }
}

pub fn render(comparison: &Comparison, color: bool) -> String {
    let paint = Paint { color };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        paint.paint(
            BOLD,
            &format!(
                "diff {} → {}",
                comparison.base.label(),
                comparison.head.label()
            )
        )
    );
    if !comparison.base.compiles {
        let _ = writeln!(
            out,
            "{}",
            paint.paint(
                YELLOW,
                &format!(
                    "the base {} does not compile: every agent counts as moving",
                    comparison.base.name
                )
            )
        );
    }
    out.push_str(&summary_line(comparison));
    out.push('\n');
    for group in &comparison.groups {
        out.push('\n');
        write_group(&mut out, group, &paint);
    }
    out
}

/// `12 agents in 5 attribute sets: 4 move in 2 groups, 8 unchanged`.
pub fn summary_line(c: &Comparison) -> String {
    let s = &c.summary;
    let moving = if s.moved == 0 {
        "nothing moves".to_owned()
    } else {
        format!(
            "{} in {}",
            plural(s.moved, "agent moves", "agents move"),
            plural(s.groups, "group", "groups")
        )
    };
    format!(
        "{} in {}: {}, {} unchanged",
        plural(s.agents, "agent", "agents"),
        plural(s.sets, "attribute set", "attribute sets"),
        moving,
        s.unchanged
    )
}

pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_group(out: &mut String, group: &Group, paint: &Paint) {
    let title = format!(
        "{} ({}): {}, {}",
        plural(group.count, "agent", "agents"),
        plural(group.sets, "set", "sets"),
        group.rules_text(),
        group.hashes_text()
    );
    let _ = writeln!(out, "{}", paint.paint(BOLD, &title));
    if !group.attributes.is_empty() {
        let attributes: Vec<String> = group
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "  attributes: {}", attributes.join(", "));
    }
    for finding in &group.findings {
        let _ = writeln!(out, "  {}", paint.paint(YELLOW, &format!("- {finding}")));
    }
    for diff in group.files.values() {
        for line in diff.lines() {
            let code = if line.starts_with("+++") || line.starts_with("---") {
                BOLD
            } else if line.starts_with('+') {
                GREEN
            } else if line.starts_with('-') {
                RED
            } else if line.starts_with("@@") {
                CYAN
            } else {
                ""
            };
            let line = if code.is_empty() {
                line.to_owned()
            } else {
                paint.paint(code, line)
            };
            let _ = writeln!(out, "  {line}");
        }
    }
}
